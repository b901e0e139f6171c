"""Pacing of historical-data requests: IB's three rules, never broken.

IB Gateway answers a request that breaks its pacing rules with error 162 ("pacing violation"),
and repeated violations get the connection throttled or cut, so a downloader must schedule its
requests rather than react to errors. The rules (TWS API, "Historical Data Limitations",
https://interactivebrokers.github.io/tws-api/historical_limitations.html):

1. no identical request within 15 seconds of another;
2. no sixth request for the same contract, exchange and tick type within 2 seconds (IB: "six or
   more ... within two seconds" is a violation, so at most five);
3. no more than 60 requests within any 10 minutes.

IB documents them for bars of 30 seconds or less and paces larger bars "softly"; the pacer
applies them to every request, which costs nothing at one request per day of 1-minute bars and
is always safe. Each rule is a sliding window over the times of requests already sent: a request
may go when fewer than `limit` requests of its scope (all, same contract, identical) were sent
less than `window` seconds before. The pacer waits until that holds for all three, plus a small
`margin`, because the gateway times a request when it receives it, a little after we send it.

The clock is injected (`Clock`): production uses the system clock, tests a manual clock that
fast-forwards through waits, so a 10-minute window is tested in microseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    """Epoch seconds and a way to wait for them."""

    def now(self) -> float:
        """The current time, epoch seconds."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class SlidingWindow:
    """At most `limit` requests of one scope within any `window` seconds."""

    limit: int
    window: float


IDENTICAL = SlidingWindow(limit=1, window=15.0)
SAME_CONTRACT = SlidingWindow(limit=5, window=2.0)
ANY_REQUEST = SlidingWindow(limit=60, window=600.0)


@dataclass(frozen=True)
class _Sent:
    at: float
    contract: Hashable
    identity: Hashable


class HistoricalPacer:
    """Decides when the next historical-data request may be sent, and records it when it is.

    `contract` names the contract, exchange and tick type of a request; `identity` all its
    parameters (two requests with equal identities are identical to IB).
    """

    def __init__(self, clock: Clock | None = None, *, margin: float = 0.5) -> None:
        self.clock = clock or SystemClock()
        self.margin = margin
        self._sent: deque[_Sent] = deque()
        self._horizon = max(w.window for w in (IDENTICAL, SAME_CONTRACT, ANY_REQUEST))

    def delay(self, contract: Hashable, identity: Hashable) -> float:
        """Seconds to wait before a request may be sent now (0 when it may go at once)."""
        now = self.clock.now()
        self._forget_before(now - self._horizon - self.margin)
        sent = self._sent
        waits = (
            self._wait(now, IDENTICAL, (s.at for s in sent if s.identity == identity)),
            self._wait(now, SAME_CONTRACT, (s.at for s in sent if s.contract == contract)),
            self._wait(now, ANY_REQUEST, (s.at for s in sent)),
        )
        return max(0.0, *waits)

    async def acquire(self, contract: Hashable, identity: Hashable) -> float:
        """Wait until the request may be sent, record it as sent now; returns the seconds waited."""
        waited = 0.0
        while (pause := self.delay(contract, identity)) > 0:
            await self.clock.sleep(pause)
            waited += pause
        self._sent.append(_Sent(self.clock.now(), contract, identity))
        return waited

    def _wait(self, now: float, rule: SlidingWindow, times: Iterable[float]) -> float:
        """Until the `limit`-th most recent of `times` is `window` (+ margin) in the past."""
        recent = [t for t in times if now - t < rule.window + self.margin]
        if len(recent) < rule.limit:
            return 0.0
        return recent[-rule.limit] + rule.window + self.margin - now

    def _forget_before(self, cutoff: float) -> None:
        while self._sent and self._sent[0].at < cutoff:
            self._sent.popleft()
