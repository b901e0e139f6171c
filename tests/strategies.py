"""Hypothesis strategies for engine tests: random but plausible MES bar series and configurations.

A series is generated from a drawn seed (numpy), not element by element: hundreds of bars per
example stay fast, and the seed still shrinks. Series start near the 2024 DST changes and session
rolls so that every calendar rule is exercised. Thresholds get odd decimals so that an indicator
value landing exactly on one (where two correct implementations may round differently) is
practically impossible; the exact ties that matter (z = 0 at the mean) are exact in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from hypothesis import strategies as st

from tests.reference_engine import RefBar

TICK = 0.25
NS_PER_MIN = 60_000_000_000
NEW_YORK = ZoneInfo("America/New_York")

# Series start early in a New York trading day (so entry windows are crossed) around the 2024 DST
# changes, on a regular Monday, and before a Sunday session open.
ANCHORS = [
    datetime(2024, 3, 8, 9, 0, tzinfo=UTC),  # Friday 04:00 EST, before spring-forward
    datetime(2024, 3, 11, 8, 0, tzinfo=UTC),  # Monday 04:00 EDT, after it
    datetime(2024, 11, 1, 8, 0, tzinfo=UTC),  # Friday 04:00 EDT, before fall-back
    datetime(2024, 11, 4, 9, 0, tzinfo=UTC),  # Monday 04:00 EST, after it
    datetime(2024, 6, 10, 8, 0, tzinfo=UTC),  # a regular Monday
    datetime(2024, 6, 9, 21, 0, tzinfo=UTC),  # Sunday 17:00 EDT: crosses the session roll
]


EARLY_CLOSE_SESSIONS = [
    "2024-03-08", "2024-03-11", "2024-03-12", "2024-11-01", "2024-11-04", "2024-11-05",
    "2024-06-10", "2024-06-11",
]  # fmt: skip
"""The sessions the anchored series can reach, for drawn early closes."""


@dataclass(frozen=True)
class Series:
    """Bar columns plus the same bars as reference-engine objects."""

    columns: dict[str, np.ndarray]
    bar_seconds: int

    def __len__(self) -> int:
        return len(self.columns["ts"])

    def ref_bars(self) -> list[RefBar]:
        c = self.columns
        return [
            RefBar(int(t), float(o), float(h), float(lo), float(cl), int(v))
            for t, o, h, lo, cl, v in zip(
                c["ts"], c["open"], c["high"], c["low"], c["close"], c["volume"], strict=True
            )
        ]

    def bar(self, i: int) -> tuple[int, float, float, float, float, int]:
        """Bar `i` as the arguments of `Engine.on_bar`."""
        c = self.columns
        return (
            int(c["ts"][i]),
            float(c["open"][i]),
            float(c["high"][i]),
            float(c["low"][i]),
            float(c["close"][i]),
            int(c["volume"][i]),
        )

    def head(self, n: int) -> Series:
        return Series({k: v[:n].copy() for k, v in self.columns.items()}, self.bar_seconds)


def make_series(
    seed: int, n: int, start_ns: int, bar_seconds: int, *, gaps: bool, volatility: float
) -> Series:
    """A random walk on the tick grid with clustered moves, opening gaps and (optionally) holes."""
    rng = np.random.default_rng(seed)
    step = bar_seconds * 1_000_000_000
    spacing = np.ones(n, dtype=np.int64)
    if gaps:
        holes = rng.random(n) < 0.04
        spacing[holes] += rng.integers(1, 40, holes.sum())
    spacing[0] = 0
    ts = start_ns + np.cumsum(spacing) * step
    scale = volatility * (1.0 + 2.0 * (rng.random(n) < 0.1))
    moves = np.rint(rng.normal(0.0, scale, n)).astype(np.int64)
    gaps_at_open = np.where(rng.random(n) < 0.05, rng.integers(-12, 13, n), 0)
    close_ticks = 20_000 + np.cumsum(moves + gaps_at_open)
    open_ticks = np.concatenate([[close_ticks[0] - moves[0]], close_ticks[:-1]]) + gaps_at_open
    open_ticks[0] = close_ticks[0] - moves[0]
    high_ticks = np.maximum(open_ticks, close_ticks) + rng.integers(0, 5, n)
    low_ticks = np.minimum(open_ticks, close_ticks) - rng.integers(0, 5, n)
    columns = {
        "ts": ts.astype(np.int64),
        "open": open_ticks * TICK,
        "high": high_ticks * TICK,
        "low": low_ticks * TICK,
        "close": close_ticks * TICK,
        "volume": rng.integers(0, 1200, n).astype(np.int64),
    }
    return Series(columns, bar_seconds)


@st.composite
def bar_series(
    draw: st.DrawFn, *, min_bars: int = 60, max_bars: int = 900, gaps: bool | None = None
) -> Series:
    anchor = draw(st.sampled_from(ANCHORS))
    bar_seconds = draw(st.sampled_from([60, 60, 60, 300]))
    offset_min = draw(st.integers(0, 6 * 60))
    start_ns = int(anchor.timestamp()) * 1_000_000_000 + offset_min * NS_PER_MIN
    start_ns -= start_ns % (bar_seconds * 1_000_000_000)
    return make_series(
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(min_bars, max_bars)),
        start_ns,
        bar_seconds,
        gaps=draw(st.booleans()) if gaps is None else gaps,
        volatility=draw(st.sampled_from([0.6, 1.5, 3.0])),
    )


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _odd(low: int, high: int, scale: float, offset: float) -> st.SearchStrategy[float]:
    return st.integers(low, high).map(lambda i: round(i * scale + offset, 6))


@st.composite
def overrides(
    draw: st.DrawFn, bar_seconds: int = 60, near_minute: int | None = None
) -> dict[str, Any]:
    """A valid configuration (as YAML-shaped overrides) exercising every rule of SPEC §4.

    `near_minute` (New York minute of day of the first bar) puts the entry window near the data,
    so that most examples trade.
    """
    kind = draw(st.sampled_from(["zscore", "zscore", "bollinger", "rsi"]))
    entry_z = draw(_odd(50, 250, 0.01, 0.0031))
    exit_z = draw(st.one_of(st.just(0.0), _odd(0, 100, 0.01, 0.0007).filter(lambda x: x < entry_z)))
    strategy = {
        "kind": kind,
        "bar_seconds": bar_seconds,
        "lookback": draw(st.integers(2, 40)),
        "entry_z": entry_z,
        "exit_z": exit_z,
        "k": draw(_odd(80, 300, 0.01, 0.0029)),
        "period": draw(st.integers(2, 20)),
        "oversold": draw(_odd(10, 45, 1.0, 0.37)),
        "overbought": draw(_odd(55, 90, 1.0, 0.41)),
        "min_volume": draw(st.sampled_from([0, 0, 200, 600])),
    }
    zero_or = lambda s: st.one_of(st.just(0), s)  # noqa: E731
    risk = {
        "position_size": draw(st.integers(1, 2)),
        "stop_loss_ticks": draw(zero_or(st.integers(1, 16))),
        "take_profit_ticks": draw(zero_or(st.integers(1, 24))),
        "daily_loss_limit": draw(zero_or(_odd(5, 100, 1.0, 0.5))),
        "daily_drawdown_limit": draw(zero_or(_odd(5, 150, 1.0, 0.25))),
        "max_consecutive_losses": draw(st.integers(0, 4)),
        "loss_pause_minutes": draw(st.integers(0, 60)),
        "max_trades_per_day": draw(st.integers(0, 20)),
        "max_position_minutes": draw(zero_or(st.integers(1, 60))),
        "kill_switch_loss": draw(zero_or(_odd(10, 120, 1.0, 0.5))),
        "min_account_balance": draw(zero_or(_odd(850, 995, 1.0, 0.0))),
    }
    if near_minute is None:
        start = draw(st.integers(0, 10 * 60)) // 5 * 5
    else:
        start = min(max(0, near_minute + draw(st.integers(-60, 180))), 12 * 60) // 5 * 5
    end = draw(st.integers(start + 120, 16 * 60 + 55)) // 5 * 5
    flatten = draw(st.integers(end, 16 * 60 + 55)) // 5 * 5
    early_flatten = draw(st.integers(0, 30))
    session = {
        "entry_start": _hhmm(start),
        "entry_end": _hhmm(max(end, start + 5)),
        "flatten_at": _hhmm(max(flatten, end, start + 5)),
        "session_end": "18:00",
        # SPEC §4.9: early closes on some of the anchors' sessions, at any time of the day.
        "early_closes": draw(
            st.dictionaries(
                st.sampled_from(EARLY_CLOSE_SESSIONS),
                st.integers(6 * 12, 17 * 12).map(lambda five: _hhmm(five * 5)),
                max_size=len(EARLY_CLOSE_SESSIONS),
            )
        ),
        "early_entry_end_minutes": early_flatten + draw(st.integers(0, 30)),
        "early_flatten_minutes": early_flatten,
    }
    costs = {
        "commission_per_side": draw(st.sampled_from([0.0, 0.25, 0.42, 0.85])),
        "slippage_ticks": draw(st.integers(0, 2)),
    }
    if draw(st.booleans()):  # half the examples switch on some of SPEC §4.9's rules
        risk_model(draw, risk, costs)
    return {"strategy": strategy, "risk": risk, "session": session, "costs": costs}


def risk_model(draw: st.DrawFn, risk: dict[str, Any], costs: dict[str, Any]) -> None:
    """SPEC §4.9's rules, each on or off, into the drawn `risk` and `costs`: stops and targets in
    ATRs (instead of ticks), a trailing stop, size tiers around the starting capital, a late
    size reduction, a dollar cap per trade and adaptive slippage. ATR windows are short, so the
    ATR is defined (and `atr` refusals happen) within the drawn series."""
    risk["atr_period"] = draw(st.integers(1, 30))
    if draw(st.booleans()):
        risk["stop_loss_ticks"] = 0
        risk["stop_atr"] = draw(_odd(20, 300, 0.01, 0.0013))
    if draw(st.booleans()):
        risk["take_profit_ticks"] = 0
        risk["target_atr"] = draw(_odd(20, 400, 0.01, 0.0017))
    if draw(st.booleans()):
        risk["trail_ticks"] = draw(st.integers(1, 20))
    if draw(st.booleans()):
        balances = draw(st.lists(_odd(900, 1100, 1.0, 0.37), min_size=1, max_size=4, unique=True))
        contracts = st.lists(st.integers(0, 4), min_size=len(balances), max_size=len(balances))
        risk["size_tiers"] = [
            [b, q] for b, q in zip(sorted(balances), draw(contracts), strict=True)
        ]
    if draw(st.booleans()):
        risk["reduce_size_at"] = _hhmm(draw(st.integers(6 * 12, 17 * 12)) * 5)
        risk["reduce_size_factor"] = draw(st.sampled_from([0.5, 0.7, 1.0, 0.34]))
    if draw(st.booleans()):
        risk["max_risk_per_trade"] = draw(_odd(2, 80, 1.0, 0.5))
    if draw(st.booleans()):
        costs["slippage_model"] = "adaptive"
        costs["low_volume"] = draw(st.sampled_from([0, 100, 400]))
        costs["high_vol_atr"] = draw(st.sampled_from([0.0, 0.8, 1.5]))


@st.composite
def scenario(draw: st.DrawFn, **series_kwargs: Any) -> tuple[Series, dict[str, Any]]:
    """A bar series and a configuration that fits it (same bar length)."""
    series = draw(bar_series(**series_kwargs))
    first = datetime.fromtimestamp(int(series.columns["ts"][0]) / 1e9, UTC).astimezone(NEW_YORK)
    near = first.hour * 60 + first.minute if first.hour < 12 else None
    return series, draw(overrides(series.bar_seconds, near))
