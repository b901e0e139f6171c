"""The face of the Rust engine (`scalper._engine`).

Every driver goes through here: the backtest, the sweep and the live stream build their engine
parameters with `engine_params`, so a setting means the same thing everywhere. The engine itself
(SPEC §4) lives in `rust/`; this module only translates configuration and columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np

from scalper import _engine
from scalper.calendar import NEW_YORK, SessionClock, exchange_schedule, zone
from scalper.config import Config

Engine = _engine.Engine
FillSimulator = _engine.FillSimulator
EXIT_REASONS: tuple[str, ...] = tuple(_engine.EXIT_REASONS)
PARAM_KEYS: frozenset[str] = frozenset(_engine.PARAM_KEYS)

# Sweepable keys whose values are integers in the engine.
_INT_KEYS = frozenset(
    {
        "bar_seconds", "lookback", "period", "min_volume", "position_size", "stop_loss_ticks",
        "take_profit_ticks", "max_consecutive_losses", "loss_pause_minutes", "max_trades_per_day",
        "max_position_minutes", "entry_start", "entry_end", "flatten_at", "session_end",
        "slippage_ticks", "early_entry_end_minutes", "early_flatten_minutes", "trail_ticks",
        "atr_period", "low_volume",
    }
)  # fmt: skip

STREAM_SESSIONS_FROM = date(2000, 1, 1)
"""First session a stream's parameters know the early closes of: a replay brings history."""
_EPOCH_DAY = date(1970, 1, 1)


def session_span(cfg: Config, ts: np.ndarray) -> tuple[date, date] | None:
    """First and last session date of the bars stamped `ts` (epoch ns, sorted); None if none."""
    if len(ts) == 0:
        return None
    clock = SessionClock(cfg.session.timezone, cfg.session.session_end)
    return clock.session_date(int(ts[0])), clock.session_date(int(ts[-1]))


def early_closes(cfg: Config, sessions: tuple[date, date] | None) -> list[tuple[int, int]]:
    """The engine's `early_closes`: (session day since 1970-01-01, close in seconds of day of
    `session.timezone`) for the sessions in `sessions` (None: a stream's, from
    `STREAM_SESSIONS_FROM` to a year and a month past today), from the exchange calendar.

    The exchange states its closes in New York time; they are converted to the configured zone
    on their own date, so a Chicago configuration flattens at the same instant.
    """
    first, last = sessions or (STREAM_SESSIONS_FROM, datetime.now(UTC).date() + timedelta(400))
    s = cfg.session
    schedule = exchange_schedule(s.calendar, s.early_closes, first, last)
    local, new_york = zone(s.timezone), zone(NEW_YORK)
    out = []
    for day, close in sorted(schedule.early_closes.items()):
        at = datetime.combine(day, close, tzinfo=new_york).astimezone(local)
        out.append(((day - _EPOCH_DAY).days, at.hour * 3600 + at.minute * 60 + at.second))
    return out


def session_times(cfg: Config, session: date) -> tuple[time, time]:
    """`entry_end` and `flatten_at` of `session` (in `session.timezone`) as the engine applies
    them: `min(entry_end, E − early_entry_end_minutes)` and `min(flatten_at, E −
    early_flatten_minutes)` when the exchange closes early at `E` that day (SPEC §4.9), else as
    configured. For the operations that must act when the engine does (the EOD watchdog)."""
    s = cfg.session
    entry_end, flatten_at = s.seconds_of_day("entry_end"), s.seconds_of_day("flatten_at")
    close = dict(early_closes(cfg, (session, session))).get((session - _EPOCH_DAY).days)
    if close is not None:
        entry_end = min(entry_end, close - s.early_entry_end_minutes * 60)
        flatten_at = min(flatten_at, close - s.early_flatten_minutes * 60)
    return _time_of_day(entry_end), _time_of_day(flatten_at)


def _seconds(t: time | None) -> int | None:
    """A local time of day in the engine's unit, seconds since midnight."""
    return None if t is None else t.hour * 3600 + t.minute * 60 + t.second


def _time_of_day(seconds: int) -> time:
    return time(seconds // 3600, seconds // 60 % 60, seconds % 60)


def engine_params(
    cfg: Config,
    overrides: Mapping[str, Any] | None = None,
    *,
    sessions: tuple[date, date] | None = None,
) -> dict[str, Any]:
    """The flat parameter mapping the engine takes, from a validated configuration.

    `overrides` replaces single values (a sweep's grid point); unknown names are an error rather
    than silently ignored, because a typo in a sweep grid would otherwise test nothing.
    `sessions` (first and last session date of the bars, `session_span`) bounds the exchange
    calendar's early closes that go to the engine; None, for a stream that runs on, covers
    every session from 2000 to a year past today (`early_closes`).
    """
    s = cfg.strategy
    r = cfg.risk
    params: dict[str, Any] = {
        "tick_size": cfg.instrument.tick_size,
        "point_value": cfg.instrument.point_value,
        "bar_seconds": s.bar_seconds,
        "strategy": s.kind,
        "lookback": s.lookback,
        "entry_z": s.entry_z,
        "exit_z": s.exit_z,
        "k": s.k,
        "period": s.period,
        "oversold": s.oversold,
        "overbought": s.overbought,
        "min_volume": s.min_volume,
        "position_size": r.position_size,
        "stop_loss_ticks": r.stop_loss_ticks,
        "take_profit_ticks": r.take_profit_ticks,
        "daily_loss_limit": r.daily_loss_limit,
        "daily_drawdown_limit": r.daily_drawdown_limit,
        "max_consecutive_losses": r.max_consecutive_losses,
        "loss_pause_minutes": r.loss_pause_minutes,
        "max_trades_per_day": r.max_trades_per_day,
        "max_position_minutes": r.max_position_minutes,
        "starting_capital": r.starting_capital,
        "kill_switch_loss": r.kill_switch_loss,
        "min_account_balance": r.min_account_balance,
        "timezone": cfg.session.timezone,
        "entry_start": cfg.session.seconds_of_day("entry_start"),
        "entry_end": cfg.session.seconds_of_day("entry_end"),
        "flatten_at": cfg.session.seconds_of_day("flatten_at"),
        "session_end": cfg.session.seconds_of_day("session_end"),
        "commission_per_side": cfg.costs.commission_per_side,
        "slippage_ticks": cfg.costs.slippage_ticks,
        "early_closes": early_closes(cfg, sessions),
        "early_entry_end_minutes": cfg.session.early_entry_end_minutes,
        "early_flatten_minutes": cfg.session.early_flatten_minutes,
        "atr_period": r.atr_period,
        "stop_atr": r.stop_atr,
        "target_atr": r.target_atr,
        "trail_ticks": r.trail_ticks,
        "size_tiers": [list(tier) for tier in r.size_tiers],
        "max_risk_per_trade": r.max_risk_per_trade,
        "reduce_size_at": _seconds(r.reduce_size_at),
        "reduce_size_factor": r.reduce_size_factor,
        "slippage_model": cfg.costs.slippage_model,
        "low_volume": cfg.costs.low_volume,
        "high_vol_atr": cfg.costs.high_vol_atr,
    }
    for key, value in (overrides or {}).items():
        if key not in PARAM_KEYS:
            raise KeyError(f"unknown engine parameter {key!r}")
        params[key] = int(value) if key in _INT_KEYS else value
    return params


def backtest_columns(
    columns: Mapping[str, np.ndarray], params: Mapping[str, Any]
) -> dict[str, Any]:
    """Runs the engine's batch backtest over bar columns (`ts, open, high, low, close, volume`)."""
    return _engine.backtest(columns, dict(params))


def sweep_columns(
    columns: Mapping[str, np.ndarray],
    param_sets: Sequence[Mapping[str, Any]],
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """Runs many parameter sets over the same bars in parallel; one metrics column per field."""
    return _engine.sweep(columns, [dict(p) for p in param_sets], threads)


def replay(
    params: Mapping[str, Any], columns: Mapping[str, np.ndarray], *, external_fills: bool = False
) -> list[dict[str, Any]]:
    """Runs bars one at a time through the incremental engine, as the live stream does.

    With `external_fills` the engine fills nothing itself: a separate `FillSimulator` plays the
    broker, receiving the engine's orders and reporting fills back, which is the paper-trading
    wiring of the stream. Either way the trades must equal the batch backtest's (SPEC §4 parity).
    """
    engine = Engine(dict(params), simulate_fills=not external_fills)
    broker = FillSimulator(dict(params)) if external_fills else None
    trades: list[dict[str, Any]] = []
    names = ("ts", "open", "high", "low", "close", "volume")
    bars = zip(*(columns[k].tolist() for k in names), strict=True)
    last: tuple[int, float] | None = None
    for ts, open_, high, low, close, volume in bars:
        if broker is not None:
            for fill in broker.on_bar(ts, open_, high, low, close, volume):
                _report(engine, fill, trades)
        order = engine.on_bar(ts, open_, high, low, close, volume)
        if broker is not None and order is not None:
            broker.submit(
                order["action"],
                order["qty"],
                order["kind"],
                order["reason"],
                order["stop_loss_ticks"],
                order["take_profit_ticks"],
            )
        trades.extend(engine.take_trades())
        last = (ts, close)
    if broker is not None and last is not None:
        fill = broker.close_out(*last)
        if fill is not None:
            _report(engine, fill, trades)
    else:
        engine.finish()
        trades.extend(engine.take_trades())
    return trades


def _report(engine: Any, fill: Mapping[str, Any], trades: list[dict[str, Any]]) -> None:
    """Hands a broker fill to the engine; an exit fill closes a trade."""
    trade = engine.on_fill(fill["ts"], fill["action"], fill["qty"], fill["price"], fill["reason"])
    if trade is not None:
        trades.append(trade)
