"""Reference implementation of the engine semantics of SPEC §4 (with §4.9), in plain Python.

This is the project's independent oracle: the Rust engine (``scalper._engine``) is checked against
it by the conformance cases and by differential property tests, and the benchmark compares the Rust
engine's speed to it. So it favours being obviously right over being fast: one bar at a time, in
exactly the order of SPEC §4, with the state named as in the SPEC. It uses the standard library
only, so that it shares no code (and no bugs) with the engine or its numeric stack.

Readings of SPEC §4 where the text leaves room. "Pinned" means that the other reading makes at
least one case of ``shared/conformance`` fail (checked by mutating this module); "by the text" means
that no case can tell the readings apart, and the SPEC's wording decided. The Rust engine follows
the same readings.

1. Session date: New York local date of the bar START ``ts``; at or after ``session_end`` it is the
   next calendar day (§2 speaks of "a bar", and §3 defines a bar's time as its start). By the text.
2. Session roll before fills: step 1 runs before step 2, so an order decided at the last bar of a
   session and filled at the first bar of the next counts in the NEW session (an entry is a trade of
   the new day; an exit's P&L, loss count and pause belong to the new day). By the text.
3. Time windows (entry ``[entry_start, entry_end)``, flatten ``[flatten_at, session_end)``) use the
   New York time of day of the close ``c = ts + bar_seconds``, half-open, to the second; a window
   whose start is not before its end is empty (no wrap past midnight). Pinned.
4. Loss pause: pause end = ``ts`` of the bar of the losing exit fill + ``loss_pause_minutes``, and
   entries need ``c >= pause end`` (``c``, not ``ts``; inclusive). Pinned. The pause is started by
   the loss that brings the consecutive-loss count to ``max_consecutive_losses`` and restarted by
   every further loss while the count is at or above it (pinned); a trade with ``pnl >= 0`` resets
   the count but does not lift a running pause (unobservable: the engine is flat while paused).
5. A limit of 0 disables its check, ``min_account_balance: 0`` included (no balance floor). The
   kill switch halts at ``cumulative P&L <= -kill_switch_loss`` (inclusive, as written; it fires
   in case 05 but no case lands exactly on the limit), the floor at ``starting_capital +
   cumulative P&L < min_account_balance`` (strict, as written; with the defaults the kill switch
   always fires first, so no case reaches the floor). Halt is permanent.
6. A position closed by its stop or target in a bar leaves the engine flat at that bar's close, so
   the same close may decide a new entry (steps 5 and 6 see the position after step 3). Pinned.
7. The "entry bar" of step 3 is the bar whose open filled the entry: on it stop and target are only
   tested against low/high; the open-gap rules apply from the next bar on (pinned: gap-through stops
   fill at ``open - slip``). The gap rule can only matter on the entry bar when
   ``stop_loss_ticks <= slippage_ticks``; there it does not apply (by the text). The stop is
   tested before the target, so a bar touching both exits at the stop (by the text: no case has
   such a bar).
8. Stops fill with slippage (pinned), targets without; end of data closes at the last close with
   slippage (by the text: no case ends in a position). An entry counts as a trade of the day at its
   fill, not at its decision (equivalent unless a pending entry crosses a session roll).
9. The risk gate is evaluated at the decision only, not again at the fill. Daily loss: entries need
   ``daily P&L > -daily_loss_limit``; drawdown: ``daily peak - daily P&L < daily_drawdown_limit``;
   trades: ``trades today < max_trades_per_day`` (pinned); the peak starts each session at 0.
10. Indicators see every bar's close, the last bar's included; missing bars are not filled in (the
    window is the last ``lookback`` bars present). The z-score uses a two-pass sample std (exactly
    0 for a flat window of quarter-tick prices; a rolling sum of squares near 5000 is not, and would
    turn "undefined" into a huge z). Bollinger enters at ``|z| >= k`` and exits at the mean.
    RSI = 100 whenever the average loss is 0, so a perfectly flat market reads as overbought.
11. Rounding: prices and P&L stay plain floats (quarter-tick prices are exact binary fractions) and
    every limit compares the unrounded values; only output rows round to cents. With a tick value
    of 1.25 and commissions in cents no P&L lies on a half cent, so the rounding is unambiguous.

Readings of SPEC §4.9 (the small account's risk model), checked against ``shared/conformance_risk``:

12. The ATR the decision at bar k reads is the ATR at bar k (its true range included); the ATR at
    bar k−1 of the adaptive slippage is the one the decision at k−1 read. Both are undefined for
    the first ``atr_period − 1`` bars of the data, whatever lies between them (holes, halts).
13. The trailing stop is updated after step 3 at every bar the position is still open, the entry
    bar included, from the highest high (lowest low) of the bars since the entry fill bar; a stop
    moved at bar k is tested first at bar k+1, with the gap rule (bar k+1 is after the entry bar).
    The initial stop (ticks or ATR) is the starting level; the trail replaces it only when
    strictly better, and from then on a stop-out is ``trail``. With no initial stop the trail sets
    the stop at the entry bar's close.
14. Sizing order: tier, then ``reduce_size_at`` (floor of the double product), then the
    ``max_risk_per_trade`` cap (so a reduction below the cap is not raised back). The cap reads the
    initial stop distance only (a trailing stop alone has none, so no cap). Every check of §4's
    gate comes first, then ``atr``, then ``size``: a refused entry leaves nothing behind.
15. Adaptive slippage is per bar: every slipping fill in bar k (the market order at the open, a
    stop, the end-of-data close) slips ``slippage_ticks + a + b`` by bar k−1; targets never slip.
"""

from __future__ import annotations

import copy
import csv
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

NS_PER_SECOND = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_SECOND
STD_EPSILON = 1e-9
"""Below this sample standard deviation the z-score is undefined (a flat window)."""


@dataclass(frozen=True)
class RefBar:
    """One OHLCV bar; ``ts`` is the bar's START time in epoch nanoseconds (UTC)."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: int


def default_params() -> dict[str, dict[str, Any]]:
    """The engine-relevant defaults of SPEC §5, plus the Bollinger and RSI strategy parameters."""
    return {
        "instrument": {
            "symbol": "MES",
            "tick_size": 0.25,
            "point_value": 5.0,
            "roll_days_before_expiry": 8,
        },
        "strategy": {
            "kind": "zscore",
            "bar_seconds": 60,
            "lookback": 20,
            "entry_z": 2.0,
            "exit_z": 0.5,
            "min_volume": 0,
            "k": 2.0,
            "period": 14,
            "oversold": 30.0,
            "overbought": 70.0,
        },
        "risk": {
            "position_size": 1,
            "stop_loss_ticks": 0,
            "take_profit_ticks": 0,
            "daily_loss_limit": 50.0,
            "daily_drawdown_limit": 75.0,
            "max_consecutive_losses": 5,
            "loss_pause_minutes": 30,
            "max_trades_per_day": 50,
            "max_position_minutes": 0,
            "starting_capital": 1000.0,
            "kill_switch_loss": 300.0,
            "min_account_balance": 700.0,
            "size_tiers": [],
            "max_risk_per_trade": 0.0,
            "reduce_size_at": None,
            "reduce_size_factor": 0.5,
            "stop_atr": 0.0,
            "target_atr": 0.0,
            "trail_ticks": 0,
            "atr_period": 14,
        },
        "session": {
            "timezone": "America/New_York",
            "entry_start": "09:30",
            "entry_end": "16:15",
            "flatten_at": "16:25",
            "session_end": "18:00",
            "calendar": None,  # the library calendar is not modelled: early_closes alone
            "early_closes": {},
            "early_entry_end_minutes": 20,
            "early_flatten_minutes": 10,
        },
        "costs": {
            "commission_per_side": 0.42,
            "slippage_ticks": 1,
            "slippage_model": "fixed",
            "low_volume": 0,
            "high_vol_atr": 0.0,
        },
    }


def merge_params(overrides: Mapping) -> dict:
    """Deep-merge ``overrides`` (e.g. a conformance ``config.yaml``) onto :func:`default_params`.

    Sections the reference does not model (broker, kafka, ...) are carried along untouched.
    """

    def merge(base: dict, extra: Mapping) -> dict:
        for key, value in extra.items():
            if isinstance(value, Mapping) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = copy.deepcopy(value)
        return base

    return merge(default_params(), overrides or {})


# --------------------------------------------------------------------------------------------------
# Strategies: each turns the stream of closes into an entry side (+1 long, -1 short, 0 none) and an
# exit flag for a given open side. They see every close; `None` means "not defined yet".


class ZScoreSignal:
    """Z-score of the close over the last ``lookback`` closes (sample std, ddof = 1)."""

    def __init__(self, lookback: int, entry_z: float, exit_z: float) -> None:
        self.lookback = lookback
        self.entry_z = entry_z
        self.exit_z = exit_z
        self.window: deque[float] = deque(maxlen=lookback)
        self.z: float | None = None

    def update(self, close: float) -> None:
        self.window.append(close)
        self.z = None
        if len(self.window) < self.lookback or self.lookback < 2:
            return
        mean = math.fsum(self.window) / self.lookback
        var = math.fsum((x - mean) ** 2 for x in self.window) / (self.lookback - 1)
        std = math.sqrt(var)
        if std >= STD_EPSILON:
            self.z = (close - mean) / std

    def entry_side(self) -> int:
        if self.z is None:
            return 0
        if self.z >= self.entry_z:
            return -1
        if self.z <= -self.entry_z:
            return 1
        return 0

    def should_exit(self, side: int) -> bool:
        if self.z is None:
            return False
        return self.z >= -self.exit_z if side > 0 else self.z <= self.exit_z


class RsiSignal:
    """Wilder RSI(``period``): simple means of the first ``period`` changes, then smoothing."""

    def __init__(self, period: int, oversold: float, overbought: float) -> None:
        self.period = period
        self.oversold = oversold
        self.overbought = overbought
        self.prev_close: float | None = None
        self.seed_gains: list[float] = []
        self.seed_losses: list[float] = []
        self.avg_gain: float | None = None
        self.avg_loss: float | None = None
        self.rsi: float | None = None

    def update(self, close: float) -> None:
        prev, self.prev_close = self.prev_close, close
        if prev is None:
            return
        change = close - prev
        gain, loss = max(change, 0.0), max(-change, 0.0)
        if self.avg_gain is None or self.avg_loss is None:
            self.seed_gains.append(gain)
            self.seed_losses.append(loss)
            if len(self.seed_gains) < self.period:
                return
            self.avg_gain = sum(self.seed_gains) / self.period
            self.avg_loss = sum(self.seed_losses) / self.period
        else:
            self.avg_gain = (self.avg_gain * (self.period - 1) + gain) / self.period
            self.avg_loss = (self.avg_loss * (self.period - 1) + loss) / self.period
        if self.avg_loss == 0:
            self.rsi = 100.0
        else:
            self.rsi = 100.0 - 100.0 / (1.0 + self.avg_gain / self.avg_loss)

    def entry_side(self) -> int:
        if self.rsi is None:
            return 0
        if self.rsi <= self.oversold:
            return 1
        if self.rsi >= self.overbought:
            return -1
        return 0

    def should_exit(self, side: int) -> bool:
        if self.rsi is None:
            return False
        return self.rsi >= 50.0 if side > 0 else self.rsi <= 50.0


class WilderAtr:
    """SPEC §4.9 ATR: true ranges (``high − low`` on the first bar of the data), their plain
    mean over the first ``period`` bars, then Wilder's smoothing."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.prev_close: float | None = None
        self.seed: list[float] = []
        self.atr: float | None = None

    def update(self, bar: RefBar) -> None:
        if self.prev_close is None:
            tr = bar.high - bar.low
        else:
            tr = max(
                bar.high - bar.low, abs(bar.high - self.prev_close), abs(bar.low - self.prev_close)
            )
        self.prev_close = bar.close
        if self.atr is None:
            self.seed.append(tr)
            if len(self.seed) == self.period:
                total = 0.0
                for x in self.seed:  # added in bar order, as the SPEC says
                    total += x
                self.atr = total / self.period
        else:
            self.atr = (self.atr * (self.period - 1) + tr) / self.period


def make_signal(strategy: Mapping[str, Any]) -> ZScoreSignal | RsiSignal:
    """Build the strategy of ``strategy['kind']``; Bollinger is z-score with exit at the mean."""
    kind = strategy["kind"]
    if kind == "zscore":
        return ZScoreSignal(
            int(strategy["lookback"]), float(strategy["entry_z"]), float(strategy["exit_z"])
        )
    if kind == "bollinger":
        return ZScoreSignal(int(strategy["lookback"]), float(strategy["k"]), 0.0)
    if kind == "rsi":
        return RsiSignal(
            int(strategy["period"]), float(strategy["oversold"]), float(strategy["overbought"])
        )
    raise ValueError(f"unknown strategy kind: {kind!r}")


# --------------------------------------------------------------------------------------------------
# Calendar helpers.


def parse_hhmm(text: str) -> int:
    """``"HH:MM"`` → seconds after midnight."""
    hours, minutes = str(text).split(":")
    return int(hours) * 3600 + int(minutes) * 60


def early_close_tod(day: Any, close: str, zone: ZoneInfo) -> int:
    """Early close ``"HH:MM"`` (New York, session ``day``) as seconds of day in ``zone``."""
    hours, minutes = str(close).split(":")
    at = time(int(hours), int(minutes), tzinfo=ZoneInfo("America/New_York"))
    return seconds_of_day(datetime.combine(date.fromisoformat(str(day)), at).astimezone(zone))


def local_time(ts_ns: int, zone: ZoneInfo) -> datetime:
    """Epoch nanoseconds → aware local datetime (whole seconds; bars never carry sub-seconds)."""
    return datetime.fromtimestamp(ts_ns // NS_PER_SECOND, tz=zone)


def seconds_of_day(moment: datetime) -> int:
    return moment.hour * 3600 + moment.minute * 60 + moment.second


def session_date(ts_ns: int, zone: ZoneInfo, session_end_s: int) -> date:
    """CME Globex session date: local date of the bar start, +1 day at or after ``session_end``."""
    moment = local_time(ts_ns, zone)
    day = moment.date()
    if seconds_of_day(moment) >= session_end_s:
        day += timedelta(days=1)
    return day


# --------------------------------------------------------------------------------------------------
# The engine.


@dataclass
class Position:
    side: int  # +1 long, -1 short
    qty: int
    entry_price: float
    entry_ts: int
    entry_index: int
    stop: float | None
    target: float | None
    trailing: bool = False  # the stop was last set or moved by the trailing rule


@dataclass
class PendingOrder:
    """A market order decided at a bar's close, to fill at the next bar's open."""

    side: int  # entries: the position side; exits: the side of the position being closed
    is_entry: bool
    exit_reason: str = ""
    qty: int = 0  # entries: the size decided
    stop_ticks: float = 0  # entries: the stop and target distances decided (0: none)
    target_ticks: float = 0


def run_reference(bars: Sequence[RefBar], params: Mapping) -> list[dict]:
    """Run SPEC §4 over ``bars``; return the closed trades in order of their exit.

    ``params`` may be complete or only overrides: merging onto the defaults is idempotent, and it
    lets property tests pass just the keys they vary.
    """
    params = merge_params(params)
    instrument, strategy = params["instrument"], params["strategy"]
    risk, session, costs = params["risk"], params["session"], params["costs"]

    tick = float(instrument["tick_size"])
    point_value = float(instrument["point_value"])
    bar_ns = int(strategy["bar_seconds"]) * NS_PER_SECOND
    min_volume = int(strategy["min_volume"])
    slippage_ticks = int(costs["slippage_ticks"])
    adaptive = costs.get("slippage_model", "fixed") == "adaptive"
    low_volume = int(costs.get("low_volume", 0))
    high_vol_atr = float(costs.get("high_vol_atr", 0.0))
    commission = float(costs["commission_per_side"])
    size = int(risk["position_size"])
    stop_ticks = float(risk["stop_loss_ticks"])
    target_ticks = float(risk["take_profit_ticks"])
    daily_loss_limit = float(risk["daily_loss_limit"])
    drawdown_limit = float(risk["daily_drawdown_limit"])
    max_losses = int(risk["max_consecutive_losses"])
    pause_ns = int(risk["loss_pause_minutes"]) * NS_PER_MINUTE
    max_trades = int(risk["max_trades_per_day"])
    max_position_ns = int(risk["max_position_minutes"]) * NS_PER_MINUTE
    starting_capital = float(risk["starting_capital"])
    kill_switch_loss = float(risk["kill_switch_loss"])
    min_balance = float(risk["min_account_balance"])
    size_tiers = [(float(b), int(q)) for b, q in risk.get("size_tiers", [])]
    max_risk = float(risk.get("max_risk_per_trade", 0.0))
    reduce_at = risk.get("reduce_size_at")
    reduce_at_s = None if reduce_at is None else parse_hhmm(reduce_at)
    reduce_factor = float(risk.get("reduce_size_factor", 0.5))
    stop_atr = float(risk.get("stop_atr", 0.0))
    target_atr = float(risk.get("target_atr", 0.0))
    trail_ticks = int(risk.get("trail_ticks", 0))
    atr = WilderAtr(int(risk.get("atr_period", 14)))
    atr_at: list[float | None] = []  # the ATR at each bar so far
    zone = ZoneInfo(session["timezone"])
    entry_start = parse_hhmm(session["entry_start"])
    entry_end = parse_hhmm(session["entry_end"])
    flatten_at = parse_hhmm(session["flatten_at"])
    session_end = parse_hhmm(session["session_end"])
    early_closes = {
        date.fromisoformat(str(day)): early_close_tod(day, close, zone)
        for day, close in session["early_closes"].items()
    }
    early_entry_end = int(session["early_entry_end_minutes"]) * 60
    early_flatten = int(session["early_flatten_minutes"]) * 60
    session_entry_end, session_flatten_at = entry_end, flatten_at

    signal = make_signal(strategy)
    trades: list[dict] = []
    position: Position | None = None
    pending: PendingOrder | None = None
    current_session: date | None = None
    daily_pnl = daily_peak = cumulative_pnl = 0.0
    trades_today = consecutive_losses = 0
    pause_end = -(2**63)  # no pause
    halted = False

    def close_position(price: float, fill_ts: int, reason: str) -> None:
        """Step 7: record the trade and update daily / cumulative accounting, pause and halt."""
        nonlocal position, daily_pnl, daily_peak, cumulative_pnl
        nonlocal consecutive_losses, pause_end, halted
        assert position is not None
        pnl = (
            position.side * (price - position.entry_price) * position.qty * point_value
            - 2 * commission * position.qty
        )
        trades.append(
            {
                "entry_ts": position.entry_ts,
                "exit_ts": fill_ts,
                "side": "long" if position.side > 0 else "short",
                "qty": position.qty,
                "entry_price": position.entry_price,
                "exit_price": price,
                "pnl": pnl,
                "exit_reason": reason,
            }
        )
        position = None
        daily_pnl += pnl
        cumulative_pnl += pnl
        daily_peak = max(daily_peak, daily_pnl)
        if pnl < 0:
            consecutive_losses += 1
            if max_losses > 0 and consecutive_losses >= max_losses:
                pause_end = fill_ts + pause_ns
        else:
            consecutive_losses = 0
        if kill_switch_loss > 0 and cumulative_pnl <= -kill_switch_loss:
            halted = True
        if min_balance > 0 and starting_capital + cumulative_pnl < min_balance:
            halted = True

    def risk_gate_allows(close_ts: int, close_tod: int) -> bool:
        """Step 6: every check of the risk gate; a limit of 0 disables its check."""
        if halted:
            return False
        if not entry_start <= close_tod < session_entry_end:
            return False
        if daily_loss_limit > 0 and not daily_pnl > -daily_loss_limit:
            return False
        if drawdown_limit > 0 and not daily_peak - daily_pnl < drawdown_limit:
            return False
        if close_ts < pause_end:
            return False
        return not (max_trades > 0 and trades_today >= max_trades)

    def slippage_in_bar(index: int) -> float:
        """§4.9: the slippage of every slipping fill in bar ``index``, by the bar before it."""
        ticks = slippage_ticks
        if adaptive and index > 0:
            prev, prev_atr = bars[index - 1], atr_at[index - 1]
            if low_volume > 0 and prev.volume < low_volume:
                ticks += 1
            wild = prev_atr is not None and prev.high - prev.low >= high_vol_atr * prev_atr
            if high_vol_atr > 0 and wild:
                ticks += 1
        return ticks * tick

    def atr_distance(multiple: float) -> int:
        assert atr.atr is not None
        return max(1, math.ceil(multiple * atr.atr / tick - 1e-6))

    def entry_size(close_tod: int, stop_distance: float) -> int:
        """§4.9 position size: the balance's tier, reduced late in the day, capped by risk."""
        balance = starting_capital + cumulative_pnl
        if not size_tiers:
            q = size
        else:
            q = 0
            for min_balance_tier, contracts in size_tiers:
                if min_balance_tier <= balance:
                    q = contracts
        if reduce_at_s is not None and reduce_at_s <= close_tod < session_end:
            q = math.floor(q * reduce_factor)
        if max_risk > 0 and stop_distance > 0:
            q = min(q, math.floor(max_risk / (stop_distance * tick * point_value) + 1e-9))
        return q

    last_index = len(bars) - 1
    for index, bar in enumerate(bars):
        slip = slippage_in_bar(index)
        # 1. Session roll.
        bar_session = session_date(bar.ts, zone, session_end)
        if bar_session != current_session:
            current_session = bar_session
            # SPEC §4.9: an early close E moves this session's entry end and flatten time.
            close = early_closes.get(bar_session)
            session_entry_end, session_flatten_at = entry_end, flatten_at
            if close is not None:
                session_entry_end = min(entry_end, close - early_entry_end)
                session_flatten_at = min(flatten_at, close - early_flatten)
            daily_pnl = daily_peak = 0.0
            trades_today = consecutive_losses = 0
            pause_end = -(2**63)

        # 2. Pending market order fills at this bar's open, slippage against us.
        if pending is not None:
            if pending.is_entry:
                price = bar.open + pending.side * slip
                d_stop, d_target = pending.stop_ticks, pending.target_ticks
                position = Position(
                    side=pending.side,
                    qty=pending.qty,
                    entry_price=price,
                    entry_ts=bar.ts,
                    entry_index=index,
                    stop=price - pending.side * d_stop * tick if d_stop > 0 else None,
                    target=price + pending.side * d_target * tick if d_target > 0 else None,
                )
                trades_today += 1
            else:
                close_position(bar.open - pending.side * slip, bar.ts, pending.exit_reason)
            pending = None

        # 3. Protective orders, intrabar.
        if position is not None:
            after_entry_bar = index > position.entry_index
            exit_fill = protective_fill(position, bar, after_entry_bar=after_entry_bar, slip=slip)
            if exit_fill is not None:
                close_position(exit_fill[0], bar.ts, exit_fill[1])

        # 4. Bar close: indicators see every close; no decision at the last bar.
        signal.update(bar.close)
        atr.update(bar)
        atr_at.append(atr.atr)
        if position is not None and trail_ticks > 0:  # §4.9 trailing stop, from the next bar
            since_entry = bars[position.entry_index : index + 1]
            if position.side > 0:
                candidate = max(b.high for b in since_entry) - trail_ticks * tick
                better = position.stop is None or candidate > position.stop
            else:
                candidate = min(b.low for b in since_entry) + trail_ticks * tick
                better = position.stop is None or candidate < position.stop
            if better:
                position.stop, position.trailing = candidate, True
        if index == last_index:
            break
        close_ts = bar.ts + bar_ns
        close_tod = seconds_of_day(local_time(close_ts, zone))

        # 5. Exits, 6. entries: decided now, filled at the next bar's open.
        if position is not None:
            reason = exit_reason(
                halted=halted,
                in_flatten_window=session_flatten_at <= close_tod < session_end,
                over_duration=0 < max_position_ns <= close_ts - position.entry_ts,
                strategy_exit=signal.should_exit(position.side),
            )
            if reason:
                pending = PendingOrder(side=position.side, is_entry=False, exit_reason=reason)
        else:
            side = signal.entry_side() if bar.volume >= min_volume else 0
            if side != 0 and risk_gate_allows(close_ts, close_tod):
                if (stop_atr > 0 or target_atr > 0) and atr.atr is None:
                    continue  # §4.9 gate reason `atr`
                d_stop = atr_distance(stop_atr) if stop_atr > 0 else stop_ticks
                d_target = atr_distance(target_atr) if target_atr > 0 else target_ticks
                qty = entry_size(close_tod, d_stop)
                if qty == 0:
                    continue  # §4.9 gate reason `size`
                pending = PendingOrder(
                    side=side, is_entry=True, qty=qty, stop_ticks=d_stop, target_ticks=d_target
                )

    # 8. End of data.
    if position is not None and bars:
        last = bars[-1]
        close_position(last.close - position.side * slip, last.ts, "end_of_data")
    return trades


def protective_fill(
    position: Position, bar: RefBar, *, after_entry_bar: bool, slip: float
) -> tuple[float, str] | None:
    """Step 3 for a long (a short is mirrored by the side sign): the stop first, then the target.

    The gap rules (fill at the open when it is already through the level) only apply on bars after
    the entry bar: on the entry bar the open is where we bought.
    """
    side = position.side
    if position.stop is not None:
        stop = position.stop
        reason = "trail" if position.trailing else "stop"
        if after_entry_bar and side * (bar.open - stop) <= 0:
            return bar.open - side * slip, reason
        extreme = bar.low if side > 0 else bar.high
        if side * (extreme - stop) <= 0:
            return stop - side * slip, reason
    if position.target is not None:
        target = position.target
        if after_entry_bar and side * (bar.open - target) >= 0:
            return bar.open, "target"
        extreme = bar.high if side > 0 else bar.low
        if side * (extreme - target) >= 0:
            return target, "target"
    return None


def exit_reason(
    *, halted: bool, in_flatten_window: bool, over_duration: bool, strategy_exit: bool
) -> str:
    """Step 5: the first exit rule that applies, or ``""``."""
    if halted:
        return "kill"
    if in_flatten_window:
        return "eod"
    if over_duration:
        return "max_duration"
    if strategy_exit:
        return "signal"
    return ""


# --------------------------------------------------------------------------------------------------
# Conformance file formats.


def parse_ts(text: str) -> int:
    """ISO 8601 (``Z``, offset or naive = UTC) or integer epoch ns → epoch ns."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1000


def load_bars_csv(path: str | Path) -> list[RefBar]:
    """Read a normalized bars CSV (``ts,open,high,low,close,volume``) as the conformance has."""
    with open(path, newline="") as handle:
        return [
            RefBar(
                ts=parse_ts(row["ts"]),
                open=float(row["open"]),
                high=float(row["high"]),
                low=float(row["low"]),
                close=float(row["close"]),
                volume=int(row["volume"]),
            )
            for row in csv.DictReader(handle)
        ]


def format_ts(ts_ns: int) -> str:
    """Epoch ns → ``2024-06-10T13:37:00+00:00`` (the conformance ``trades.csv`` format)."""
    seconds, rest = divmod(ts_ns, NS_PER_SECOND)
    moment = datetime.fromtimestamp(seconds, tz=UTC) + timedelta(microseconds=rest // 1000)
    return moment.isoformat()


def format_trade_row(trade: Mapping[str, Any]) -> dict[str, str]:
    """One trade as a row of the conformance ``trades.csv`` (prices and P&L to the cent)."""
    return {
        "entry_ts": format_ts(trade["entry_ts"]),
        "exit_ts": format_ts(trade["exit_ts"]),
        "side": trade["side"],
        "qty": str(trade["qty"]),
        "entry_price": f"{trade['entry_price']:.2f}",
        "exit_price": f"{trade['exit_price']:.2f}",
        "pnl": f"{trade['pnl']:.2f}",
        "exit_reason": trade["exit_reason"],
    }
