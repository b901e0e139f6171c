"""Event-time aggregation of source bars (IB sends 5-second bars) to the strategy's bar size.

The live twin of `scalper.resample.resample`, one bar at a time: an output bar with start `S`
covers `[S, S + bar_seconds)` and holds exactly the source bars that start inside it (open of
the first, highest high, lowest low, close of the last, summed volume), with buckets on whole
multiples of `bar_seconds` since the epoch. Both must agree bar for bar, or live trading would
see other bars than the backtest.

Latency matters, so a bucket is emitted as soon as it is known to be complete: when its last
source bar arrives (that bar ends at the bucket's end), or, after a gap, when a bar of a later
bucket arrives. Nothing is waited for by the clock and nothing is invented: a bucket with missing
source bars is emitted as it is, a bucket without any produces nothing. `flush` emits the partial
bucket at the end of the data.

The caller hands in valid bars in time order on the source grid (the trader checks that), so
no source bar can straddle two buckets.
"""

from __future__ import annotations

from dataclasses import dataclass

from scalper.kafka.messages import Bar

NS_PER_SECOND = 1_000_000_000


@dataclass(slots=True)
class BarAggregator:
    """The open bucket of one symbol; small and flat, as it is part of every state snapshot."""

    symbol: str
    bar_ns: int
    source_ns: int
    start: int | None = None
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    close: float = 0.0
    volume: int = 0

    @classmethod
    def of_seconds(cls, symbol: str, bar_seconds: int, source_seconds: int) -> BarAggregator:
        return cls(symbol, bar_seconds * NS_PER_SECOND, source_seconds * NS_PER_SECOND)

    def add(self, bar: Bar) -> tuple[Bar, ...]:
        """The bars completed by `bar`: none, its own bucket, or (after a gap) the previous one
        and possibly its own."""
        if self.bar_ns == self.source_ns:
            return (bar,)
        start = bar.ts - bar.ts % self.bar_ns
        done: tuple[Bar, ...] = ()
        if self.start is not None and self.start != start:
            done = (self._take(self.start),)
        if self.start is None:
            self.start, self.open, self.high, self.low = start, bar.open, bar.high, bar.low
            self.volume = 0
        else:
            self.high = max(self.high, bar.high)
            self.low = min(self.low, bar.low)
        self.close = bar.close
        self.volume += bar.volume
        if bar.ts + self.source_ns == start + self.bar_ns:
            done += (self._take(start),)
        return done

    def flush(self) -> Bar | None:
        """The open bucket as a bar (partial or not), which closes it; None when none is open."""
        return None if self.start is None else self._take(self.start)

    def _take(self, start: int) -> Bar:
        self.start = None
        return Bar(start, self.open, self.high, self.low, self.close, self.volume, self.symbol)
