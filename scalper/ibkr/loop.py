"""An asyncio loop on a thread of its own: where ib_async lives for synchronous callers.

ib_async is asyncio; the stream worker (Bytewax) and the Kafka producer loop are not. Giving IB
its own loop keeps its socket served while the caller blocks, and makes the hand-over explicit:
the caller `run`s a coroutine on the loop and waits for its result, nothing else crosses.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from scalper.errors import ScalperError

T = TypeVar("T")
STOP_TIMEOUT = 30.0


class LoopThread:
    """A running event loop on a daemon thread named `name`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, work: Coroutine[Any, Any, T]) -> Future[T]:
        """Start `work` on the loop without waiting for it."""
        return asyncio.run_coroutine_threadsafe(work, self.loop)

    def run(self, work: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `work` on the loop and wait for its result (a `ScalperError` after `timeout`)."""
        future = self.submit(work)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise ScalperError("IB Gateway did not answer in time") from None

    def stop(self, last: Coroutine[Any, Any, None] | None = None) -> None:
        """Run `last` (e.g. a disconnect), then stop and close the loop; idempotent."""
        if self.loop.is_closed():
            if last is not None:
                last.close()
            return
        if last is not None:
            self.run(last, STOP_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(STOP_TIMEOUT)
        self.loop.close()
