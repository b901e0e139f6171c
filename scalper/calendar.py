"""Session time and the exchange calendar (SPEC §2, §4.9 "Exchange calendar").

Timestamps are stored in UTC, but a trading day is a New York affair: CME Globex opens at 18:00
New York time for the *next* calendar day's session. Daily risk counters reset when the session
date changes, so this mapping decides when a trader's daily loss limit starts afresh; it must be
DST-correct, and the scalar and vectorized versions must agree.

Which sessions trade at all, and which close early, comes from `pandas_market_calendars`
(`exchange_schedule`). It was chosen over `exchange_calendars` (which it wraps for stock
exchanges) because it maintains the CME's *futures* calendars by product group: `CME_Equity`
knows the equity-index futures' holiday trading days (MLK, Presidents', Memorial, Juneteenth,
Independence, Labor Day: 13:00 New York) and the Thanksgiving and Christmas Eve early closes,
while `exchange_calendars`' single `CMES` calendar misses some of them (2024-06-19, 2024-07-03).
Neither matches the CME's notices everywhere (both put the day after Thanksgiving at 13:00, the
CME's equity futures closed at 13:15), so `session.early_closes` overrides always win.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from scalper.errors import ScalperError

NEW_YORK = "America/New_York"
GLOBEX_SESSION_END = time(18, 0)  # also the Globex open, for the next day's session
GLOBEX_CLOSE = time(17, 0)  # the daily maintenance break is 17:00-18:00 New York
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def zone(name: str) -> ZoneInfo:
    """The IANA timezone `name`; a user error (not a KeyError or OSError) when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScalperError(f"unknown timezone {name!r}") from None


@dataclass(frozen=True)
class SessionClock:
    """Maps single timestamps (ns since epoch, UTC) to local time and session date."""

    timezone: str = NEW_YORK
    session_end: time = GLOBEX_SESSION_END
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_zone", zone(self.timezone))

    def local(self, ts_ns: int) -> datetime:
        """Local wall-clock time of `ts_ns` (microsecond precision, as `datetime` allows)."""
        return (_EPOCH + timedelta(microseconds=ts_ns // 1000)).astimezone(self._zone)

    def session_date(self, ts_ns: int) -> date:
        """The session `ts_ns` belongs to: its local date, or the next day from `session_end` on."""
        local = self.local(ts_ns)
        if local.time() >= self.session_end:
            return local.date() + timedelta(days=1)
        return local.date()


def _local_datetime(df: pl.DataFrame, ts_col: str, tz: str) -> pl.Expr:
    """`ts_col` as a Datetime in `tz`, whether it holds epoch ns or (naive = UTC) datetimes."""
    dtype = df.schema[ts_col]
    ts = pl.col(ts_col)
    if dtype.is_integer():
        ts = pl.from_epoch(ts, time_unit="ns").dt.replace_time_zone("UTC")
    elif isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            ts = ts.dt.replace_time_zone("UTC")
    else:
        raise ScalperError(
            f"column {ts_col!r} has type {dtype}; expected Int64 epoch ns or Datetime"
        )
    return ts.dt.convert_time_zone(tz)


def with_session_columns(
    df: pl.DataFrame,
    ts_col: str = "ts",
    tz: str = NEW_YORK,
    session_end: time = GLOBEX_SESSION_END,
) -> pl.DataFrame:
    """`df` plus `session_date` (pl.Date) and `local_time` (pl.Time, wall clock in `tz`).

    The vectorized twin of `SessionClock.session_date`, for whole bar files at once.
    """
    zone(tz)  # a clear ScalperError for a bad zone, not a polars ComputeError mid-query
    local = _local_datetime(df, ts_col, tz)
    local_date = local.dt.date()
    local_time = local.dt.time()
    session_date = (
        pl.when(local_time >= pl.lit(session_end))
        .then(local_date + pl.duration(days=1))
        .otherwise(local_date)
    )
    return df.with_columns(session_date=session_date, local_time=local_time)


@dataclass(frozen=True)
class ExchangeSchedule:
    """The exchange's departures from its regular week over a range of session dates.

    `holidays` are weekday session dates without any trading; `early_closes` maps a session
    date to the exchange's close that day, New York time. Every other weekday is a normal one.
    """

    holidays: frozenset[date] = frozenset()
    early_closes: Mapping[date, time] = field(default_factory=lambda: MappingProxyType({}))

    def close_on(self, session: date) -> time | None:
        """The early close of `session` (New York time), or None on a normal (or holiday) day."""
        return self.early_closes.get(session)


def calendar_names() -> tuple[str, ...]:
    """The calendar names the library knows, spelled (case-sensitively) as it spells them."""
    import pandas_market_calendars as mcal

    return tuple(mcal.get_calendar_names())


def check_calendar_name(name: str) -> None:
    """A one-line user error, with the closest names, when the library has no calendar `name`."""
    names = calendar_names()
    if name in names:
        return
    by_fold = {n.casefold(): n for n in names}
    close = [by_fold[name.casefold()]] if name.casefold() in by_fold else []
    close += [n for n in difflib.get_close_matches(name, names, n=3) if n not in close]
    hint = f"did you mean {' or '.join(repr(n) for n in close)}?" if close else "e.g. 'CME_Equity'"
    raise ScalperError(f"unknown exchange calendar {name!r}; {hint}")


@functools.cache
def _market_calendar(name: str) -> Any:
    """The library's calendar object; built once per process (building one is slow)."""
    import pandas_market_calendars as mcal

    check_calendar_name(name)
    return mcal.get_calendar(name)


@functools.lru_cache(maxsize=64)
def _library_schedule(
    name: str, start: date, end: date
) -> tuple[frozenset[date], tuple[tuple[date, time], ...]]:
    """Holidays and early closes (New York time) of calendar `name` for sessions in [start, end]."""
    cal = _market_calendar(name)
    sched = cal.schedule(start_date=start.isoformat(), end_date=end.isoformat())
    trading = {ts.date() for ts in sched.index}
    weekdays = (start + timedelta(days=i) for i in range((end - start).days + 1))
    holidays = frozenset(d for d in weekdays if d.weekday() < 5 and d not in trading)
    early = cal.early_closes(sched)
    closes = early["market_close"].dt.tz_convert(NEW_YORK)
    pairs = tuple(
        (day.date(), close.time().replace(tzinfo=None))
        for day, close in zip(early.index, closes, strict=True)
    )
    return holidays, pairs


def exchange_schedule(
    calendar: str | None, early_closes: Mapping[date, time], start: date, end: date
) -> ExchangeSchedule:
    """Holidays and early closes for the session dates `start`..`end` (inclusive).

    From the library's calendar `calendar` (None: no calendar), with `early_closes` (the
    configuration's `session.early_closes`) always winning, also over a library holiday. The
    overrides are kept whatever their date, so a caller's range can never drop one.
    """
    holidays: frozenset[date] = frozenset()
    closes: dict[date, time] = {}
    if calendar is not None and start <= end:
        holidays, pairs = _library_schedule(calendar, start, end)
        closes.update(pairs)
    closes.update(early_closes)
    return ExchangeSchedule(
        holidays=holidays - set(early_closes), early_closes=MappingProxyType(closes)
    )
