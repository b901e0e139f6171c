"""A clock that only moves when told to: time-based rules tested without waiting.

It satisfies `scalper.ibkr.pacing.Clock` (`now()`, `await sleep()`), and its `now` is the time
function of the fake gateway. Sharing one instance makes the code under test and the gateway agree
exactly on when each request was made, so IB's pacing windows (2 s, 15 s, 10 min) are checked to
the boundary in milliseconds of test time. `sleep` advances the clock instead of waiting, the
way a test would fast-forward through a pause.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime


class ManualClock:
    """Epoch seconds (UTC) that advance only through `advance` or `sleep`; thread-safe, because
    the fake gateway reads it from its own thread."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self._now = start.timestamp()
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def now(self) -> float:
        """The current time, epoch seconds."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go back ({seconds} s)")
        with self._lock:
            self._now += seconds

    async def sleep(self, seconds: float) -> None:
        """Advance instead of waiting (each pause is recorded in `slept` for the tests)."""
        self.slept.append(seconds)
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)
