"""A deterministic, realistic simulator of CME micro equity-index futures bars (MES by default).

It is the embedded data source of `scalper demo`, so the demo, the tests and the benchmarks run
without a data vendor. Realism matters because the strategies react to exactly the features that
make intraday futures data hard: volatility that clusters, trends that persist and ranges that
revert, a quiet night and a busy open and close, gaps when the market reopens.

The model, per bar `t` (all times New York, log prices, parameters are the constants below):

* **Calendar** — CME Globex: each trading day (Monday–Friday session date, SPEC §2) runs from
  18:00 on the previous day to the close of that date's hours (`scalper.calendar.globex_hours`:
  17:00 since 2021-06-28, 17:15 with a 16:15–16:30 halt before), so the week opens Sunday 18:00
  and closes Friday at the close, with the maintenance break and no Saturday bars. Session
  bounds are converted to UTC with `zoneinfo`, so DST is exact; US clocks change at 02:00 on
  Sundays, when the market is closed, so a session's wall-clock time is its open plus the
  elapsed time. Given the exchange calendar (`ExchangeSchedule`, SPEC §4.9), a holiday has no
  session and an early close ends its session at the close: no bar starts on a holiday and none
  ends after an early close.
* **Volatility clustering** — GARCH(1,1) on a unit-variance multiplier:
  `h[t] = omega + alpha * z[t-1]**2 * h[t-1] + beta * h[t-1]`, shocks `sqrt(h[t]) * z[t]`,
  `z ~ N(0, 1)`. `GARCH_ALPHA`, `GARCH_BETA` are per minute; for other bar sizes the persistence
  `alpha + beta` is rescaled so the half-life in clock time stays the same (`omega` keeps E[h] = 1).
* **Intraday profile** — bar volatility `sigma[t] = BASE_VOLATILITY * sqrt(bar minutes) *
  volatility_shape(time of day) * sqrt(h[t])`: U-shaped over the regular session (09:30–16:00) with
  a burst at the open, a livelier 08:30 data window and European morning, a quiet night.
* **Regimes** — a Markov chain over range / trend-up / trend-down with geometric durations (means
  `RANGE_MINUTES`, `TREND_MINUTES`). The log price is `fair + deviation`: `fair` is a random walk
  with drift `±TREND_DRIFT * sigma` in trends, and `deviation` an AR(1) that pulls the price back
  to `fair` (time constant `RANGE_REVERSION_MINUTES` in ranges) — in ranges most of the noise goes
  into the mean-reverting deviation, in trends into the drifting walk.
* **Gaps** — the first bar of a session opens, with probability `GAP_PROBABILITY`, away from the
  last close by `N(0, GAP_VOLATILITY)` (`WEEKEND_GAP_VOLATILITY` after a weekend).
* **Bars** — closes are the path rounded to the tick grid; each open is the previous close (plus
  the gap, and a one-tick jitter with probability `OPEN_JITTER_PROBABILITY`); high and low extend
  beyond open and close by exponential excursions of mean `EXCURSION * sigma`. Volume is Poisson
  around `BASE_VOLUME * bar minutes * volume_shape(time of day) * sqrt(h[t])` (more in trends) with
  lognormal noise, so busy bars are also volatile ones.

Everything is drawn from one `np.random.default_rng(seed)` in a fixed order and computed with
array operations (the GARCH and AR(1) recursions as blocked linear recurrences), so the same
arguments give the identical frame and a year of 1-minute bars takes a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from scalper.calendar import GLOBEX_SESSION_END, ExchangeSchedule, globex_hours
from scalper.errors import ScalperError

NEW_YORK = ZoneInfo("America/New_York")
SESSION_OPEN = GLOBEX_SESSION_END  # previous calendar day, New York

BASE_VOLATILITY = 2.6e-4  # log-return std of a 1-minute bar where the volatility shape is 1
GARCH_ALPHA = 0.07
GARCH_BETA = 0.92  # per minute: persistence 0.99, a half-life of about 70 minutes
RANGE_MINUTES = 120.0
TREND_MINUTES = 45.0
TREND_TO_RANGE_PROBABILITY = 0.7  # a trend ends in a range, otherwise it reverses
TREND_DRIFT = 0.15  # drift per 1-minute bar, in units of that bar's sigma
RANGE_REVERSION_MINUTES = 15.0
TREND_REVERSION_MINUTES = 5.0
RANGE_WEIGHTS = (0.3, 1.0)  # share of sigma in (fair walk, mean-reverting deviation)
TREND_WEIGHTS = (1.0, 0.3)
GAP_PROBABILITY = 0.5
GAP_VOLATILITY = 0.0015
WEEKEND_GAP_VOLATILITY = 0.004
OPEN_JITTER_PROBABILITY = 0.3  # half a tick up, half down
EXCURSION = 0.6
BASE_VOLUME = 2000.0  # contracts per minute where the volume shape is 1
TREND_VOLUME = 1.3
VOLUME_NOISE = 0.5  # lognormal sigma of the volume multiplier

_RANGE, _UP, _DOWN = 0, 1, 2
_NS = 1_000_000_000
_MAX_LOG_SPAN = 300.0  # keeps exp(±span) far from float64 overflow in the blocked recurrence


@dataclass(frozen=True)
class _Grid:
    """Bar start times and what the model needs to know about each of them."""

    ts: np.ndarray  # int64 epoch ns UTC
    minute: np.ndarray  # New York wall-clock minute of the day, float
    session_open: np.ndarray  # first bar of a session
    after_weekend: np.ndarray  # first bar of a Monday session (opened Sunday)


def simulate_bars(
    start: date,
    days: int,
    *,
    seed: int = 7,
    bar_seconds: int = 60,
    symbol: str = "MES",
    start_price: float = 5000.0,
    tick_size: float = 0.25,
    schedule: ExchangeSchedule | None = None,
) -> pl.DataFrame:
    """Simulate the bars of the trading sessions dated `start` … `start + days - 1`.

    A session date is the CME trading day (SPEC §2): Monday's session starts Sunday 18:00 New York,
    so the first bars may precede `start`. Returns `BAR_SCHEMA` columns plus `symbol`, prices on
    the `tick_size` grid. `bar_seconds` must divide an hour so bars align with the session bounds.
    `schedule` (the exchange calendar, `scalper.calendar.exchange_schedule`) removes holidays and
    cuts early-close sessions short; None simulates every weekday in full.
    """
    _check_arguments(days, bar_seconds, start_price, tick_size)
    grid = _session_grid(start, days, bar_seconds, schedule or ExchangeSchedule())
    if grid.ts.size == 0:
        end = start + timedelta(days=days - 1)
        raise ScalperError(
            f"simulate: no trading sessions from {start} to {end} (weekend or holidays only)"
        )
    rng = np.random.default_rng(seed)
    minutes_per_bar = bar_seconds / 60
    variance = _garch_variance(rng.standard_normal(grid.ts.size), minutes_per_bar)
    sigma = BASE_VOLATILITY * np.sqrt(minutes_per_bar * variance) * _volatility_shape(grid.minute)
    regime = _regimes(rng, grid.ts.size, minutes_per_bar)
    gaps = _gaps(rng, grid)
    log_close = np.log(start_price) + _log_path(rng, sigma, regime, gaps, minutes_per_bar)
    open_, high, low, close = _ohlc_ticks(rng, log_close, sigma, gaps, start_price, tick_size)
    volume = _volume(rng, grid.minute, variance, regime, minutes_per_bar)
    return pl.DataFrame(
        {
            "ts": grid.ts,
            "open": open_ * tick_size,
            "high": high * tick_size,
            "low": low * tick_size,
            "close": close * tick_size,
            "volume": volume,
        }
    ).with_columns(symbol=pl.lit(symbol, dtype=pl.String))


def _check_arguments(days: int, bar_seconds: int, start_price: float, tick_size: float) -> None:
    if days < 1:
        raise ScalperError(f"simulate: days must be at least 1 (got {days})")
    if bar_seconds <= 0 or 3600 % bar_seconds:
        raise ScalperError(f"simulate: bar_seconds must divide 3600 (got {bar_seconds})")
    if start_price <= 0 or tick_size <= 0:
        raise ScalperError(
            f"simulate: start_price and tick_size must be positive (got {start_price}, {tick_size})"
        )


# ---------------------------------------------------------------------------------------------
# Calendar


def _session_grid(start: date, days: int, bar_seconds: int, schedule: ExchangeSchedule) -> _Grid:
    sessions = [
        d
        for d in (start + timedelta(days=i) for i in range(days))
        if d.weekday() < 5 and d not in schedule.holidays
    ]
    opens = np.array(
        [_new_york_ns(d - timedelta(days=1), SESSION_OPEN) for d in sessions], np.int64
    )
    hours = [globex_hours(d) for d in sessions]
    closes = np.array(
        [
            _new_york_ns(d, schedule.close_on(d) or h.close_of(d))
            for d, h in zip(sessions, hours, strict=True)
        ],
        np.int64,
    )
    bar_ns = bar_seconds * _NS
    counts = (closes - opens) // bar_ns
    first_bar = np.cumsum(counts) - counts
    position = np.arange(counts.sum()) - np.repeat(first_bar, counts)
    session_open = position == 0
    mondays = np.array([d.weekday() == 0 for d in sessions], dtype=bool)
    open_minute = SESSION_OPEN.hour * 60 + SESSION_OPEN.minute
    ts = np.repeat(opens, counts) + position * bar_ns
    trading = np.ones(ts.size, dtype=bool)  # not inside a daily halt of that date's hours
    for d, h, first, count in zip(sessions, hours, first_bar, counts, strict=True):
        day = ts[first : first + count]
        for start, end in h.halts:
            halted = (day >= _new_york_ns(d, start)) & (day < _new_york_ns(d, end))
            trading[first : first + count] &= ~halted
    return _Grid(
        ts=ts[trading],
        minute=((open_minute + position * (bar_seconds / 60)) % 1440)[trading],
        session_open=session_open[trading],
        after_weekend=(session_open & np.repeat(mondays, counts))[trading],
    )


def _new_york_ns(day: date, wall: time) -> int:
    return int(datetime.combine(day, wall, tzinfo=NEW_YORK).timestamp()) * _NS


# ---------------------------------------------------------------------------------------------
# Intraday shapes (1 = typical regular-session level)


def _volatility_shape(minute: np.ndarray) -> np.ndarray:
    regular, pre_open, europe, after_close = _windows(minute)
    u = (minute - 570) / 390  # 0 at 09:30, 1 at 16:00
    return np.select(
        [regular, pre_open, europe, after_close],
        [
            0.7 + 1.3 * (2 * u - 1) ** 2 + 1.5 * np.exp(-(minute - 570) / 10),
            0.8 + 0.8 * np.exp(-(minute - 510) / 5),
            0.5,
            0.5,
        ],
        default=0.35 + 0.5 * np.exp(-_minutes_since_open(minute) / 20),
    )


def _volume_shape(minute: np.ndarray) -> np.ndarray:
    regular, pre_open, europe, after_close = _windows(minute)
    u = (minute - 570) / 390
    return np.select(
        [regular, pre_open, europe, after_close],
        [
            0.6 + 2.4 * (2 * u - 1) ** 2 + 2.0 * np.exp(-(minute - 570) / 10),
            0.35 + 0.5 * np.exp(-(minute - 510) / 5),
            0.15,
            0.25,
        ],
        default=0.07 + 0.15 * np.exp(-_minutes_since_open(minute) / 20),
    )


def _windows(minute: np.ndarray) -> tuple[np.ndarray, ...]:
    """Regular session 09:30–16:00, pre-open 08:30–09:30 (US data), Europe 03:00–08:30 and the
    hour after the cash close; everything else is the quiet Asian night."""
    return (
        (minute >= 570) & (minute < 960),
        (minute >= 510) & (minute < 570),
        (minute >= 180) & (minute < 510),
        (minute >= 960) & (minute < 1020),
    )


def _minutes_since_open(minute: np.ndarray) -> np.ndarray:
    return (minute - (SESSION_OPEN.hour * 60 + SESSION_OPEN.minute)) % 1440


# ---------------------------------------------------------------------------------------------
# Stochastic parts


def _garch_variance(z: np.ndarray, minutes_per_bar: float) -> np.ndarray:
    """The GARCH(1,1) variance multiplier `h` (mean 1) driven by the standard normals `z`.

    `h[t] = omega + (alpha z[t-1]^2 + beta) h[t-1]` is linear in `h`, hence vectorizable.
    """
    persistence = (GARCH_ALPHA + GARCH_BETA) ** minutes_per_bar
    alpha = persistence * GARCH_ALPHA / (GARCH_ALPHA + GARCH_BETA)
    beta = persistence - alpha
    previous_z = np.concatenate(([1.0], z[:-1]))  # h[0] starts at the unconditional level 1
    return _linear_recurrence(alpha * previous_z**2 + beta, np.full(z.size, 1 - persistence), 1.0)


def _regimes(rng: np.random.Generator, n: int, minutes_per_bar: float) -> np.ndarray:
    """Per-bar regime from the Markov chain: durations are geometric in bars."""
    states, lengths, covered, state = [], [], 0, _RANGE
    while covered < n:
        mean_minutes = RANGE_MINUTES if state == _RANGE else TREND_MINUTES
        length = int(rng.geometric(min(1.0, minutes_per_bar / mean_minutes)))
        states.append(state)
        lengths.append(length)
        covered += length
        state = _next_regime(rng, state)
    return np.repeat(np.array(states, dtype=np.int8), lengths)[:n]


def _next_regime(rng: np.random.Generator, state: int) -> int:
    if state == _RANGE:
        return _UP if rng.random() < 0.5 else _DOWN
    if rng.random() < TREND_TO_RANGE_PROBABILITY:
        return _RANGE
    return _DOWN if state == _UP else _UP


def _log_path(
    rng: np.random.Generator,
    sigma: np.ndarray,
    regime: np.ndarray,
    gaps: np.ndarray,
    minutes_per_bar: float,
) -> np.ndarray:
    """Log price relative to the start: a drifting fair-value walk plus an AR(1) deviation."""
    trending = regime != _RANGE
    fair_weight = np.where(trending, TREND_WEIGHTS[0], RANGE_WEIGHTS[0])
    deviation_weight = np.where(trending, TREND_WEIGHTS[1], RANGE_WEIGHTS[1])
    direction = np.select([regime == _UP, regime == _DOWN], [1.0, -1.0], default=0.0)
    drift = direction * TREND_DRIFT * sigma * np.sqrt(minutes_per_bar)
    fair_steps = drift + fair_weight * sigma * rng.standard_normal(sigma.size) + gaps
    reversion = np.where(trending, TREND_REVERSION_MINUTES, RANGE_REVERSION_MINUTES)
    deviation = _linear_recurrence(
        np.exp(-minutes_per_bar / reversion),
        deviation_weight * sigma * rng.standard_normal(sigma.size),
        0.0,
    )
    return np.cumsum(fair_steps) + deviation


def _gaps(rng: np.random.Generator, grid: _Grid) -> np.ndarray:
    """Log jumps at session opens (zero elsewhere)."""
    scale = np.where(grid.after_weekend, WEEKEND_GAP_VOLATILITY, GAP_VOLATILITY)
    happens = grid.session_open & (rng.random(grid.ts.size) < GAP_PROBABILITY)
    return np.where(happens, scale * rng.standard_normal(grid.ts.size), 0.0)


def _ohlc_ticks(
    rng: np.random.Generator,
    log_close: np.ndarray,
    sigma: np.ndarray,
    gaps: np.ndarray,
    start_price: float,
    tick_size: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Open, high, low, close as whole numbers of ticks (all at least one tick).

    The open is the previous close moved by the session gap, so the gap shows between bars and
    not inside the first bar's range, plus the occasional one-tick jitter of a new first trade.
    """
    close_price = np.exp(log_close)
    close = np.maximum(np.rint(close_price / tick_size), 1).astype(np.int64)
    previous = np.concatenate(([round(start_price / tick_size)], close[:-1]))
    gap = np.rint(previous * np.expm1(gaps)).astype(np.int64)
    jitter_p = OPEN_JITTER_PROBABILITY / 2
    jitter = rng.choice([-1, 0, 1], size=close.size, p=[jitter_p, 1 - 2 * jitter_p, jitter_p])
    open_ = np.maximum(previous + gap + jitter, 1)
    excursion_ticks = EXCURSION * sigma * close_price / tick_size
    high = np.maximum(open_, close) + np.floor(rng.exponential(excursion_ticks)).astype(np.int64)
    low = np.minimum(open_, close) - np.floor(rng.exponential(excursion_ticks)).astype(np.int64)
    return open_, high, np.maximum(low, 1), close


def _volume(
    rng: np.random.Generator,
    minute: np.ndarray,
    variance: np.ndarray,
    regime: np.ndarray,
    minutes_per_bar: float,
) -> np.ndarray:
    """Contracts per bar: Poisson around the intraday volume shape, busier when volatile."""
    activity = np.where(regime != _RANGE, TREND_VOLUME, 1.0) * np.sqrt(variance)
    mean = BASE_VOLUME * minutes_per_bar * _volume_shape(minute) * activity
    noise = rng.lognormal(-(VOLUME_NOISE**2) / 2, VOLUME_NOISE, size=minute.size)
    return rng.poisson(mean * noise).astype(np.int64)


def _linear_recurrence(a: np.ndarray, b: np.ndarray, x0: float) -> np.ndarray:
    """`x[t] = a[t] * x[t-1] + b[t]` with `x[-1] = x0`, for `a > 0`, without a Python loop per bar.

    Within a block, `x[t] = P[t] * carry + P[t] * cumsum(b / P)[t]` with `P` the running product
    of `a`; blocks are short enough that `P` stays within float64 range, and only the carry
    between blocks is a (short) Python loop.
    """
    a = np.broadcast_to(a, b.shape)
    log_a = np.log(a)
    widest = float(np.abs(log_a).max(initial=0.0))
    block = int(np.clip(_MAX_LOG_SPAN / max(widest, 1e-12), 1, 256))
    blocks = -(-b.size // block)
    padding = (0, blocks * block - b.size)
    log_product = np.cumsum(np.pad(log_a, padding).reshape(blocks, block), axis=1)
    product = np.exp(log_product)
    from_zero = product * np.cumsum(np.pad(b, padding).reshape(blocks, block) / product, axis=1)
    carry = np.empty(blocks)
    x = x0
    for i in range(blocks):
        carry[i] = x
        x = product[i, -1] * x + from_zero[i, -1]
    return (product * carry[:, None] + from_zero).ravel()[: b.size]
