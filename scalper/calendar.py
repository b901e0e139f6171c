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
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from importlib import resources
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from scalper.errors import ScalperError

NEW_YORK = "America/New_York"
GLOBEX_SESSION_END = time(18, 0)  # also the Globex open, for the next day's session
GLOBEX_CLOSE = time(17, 0)  # the daily maintenance break is 17:00-18:00 New York
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class GlobexHours:
    """The regular CME Globex hours of the US equity-index futures (ES, MES, NQ, MNQ) for the
    sessions from `since` (a session date, SPEC §2) on, New York time.

    A session opens at 18:00 the evening before, trades until `close` (`friday_close` at the end
    of the week; the market reopens Sunday 18:00) and pauses for each of `halts` (start, end).
    Holidays and early closes are the exchange calendar's (`exchange_schedule`), not these.
    """

    since: date
    close: time
    friday_close: time
    halts: tuple[tuple[time, time], ...] = ()

    def close_of(self, session: date) -> time:
        """The regular close of the session dated `session` (the week ends on Friday)."""
        return self.friday_close if session.weekday() == 4 else self.close


GLOBEX_EQUITY_HOURS = (
    # Until trade date 2012-11-16 the Globex trade date ended at 16:15 (15:15 CT) and the next one
    # began at 16:30, with maintenance 17:30-18:00; by the 18:00 session convention used here the
    # 16:30-17:30 hour ends the session. The week closed Friday 16:15. (These hours held since
    # September 2005; older history is checked against them too.)
    GlobexHours(date.min, time(17, 30), time(16, 15), ((time(16, 15), time(16, 30)),)),
    # CME, effective Sunday 2012-11-18 for trade date 2012-11-19: close 17:15 (16:15 CT) on every
    # day including Friday, a 16:15-16:30 halt (15:15-15:30 CT), break 17:15-18:00.
    GlobexHours(date(2012, 11, 19), time(17, 15), time(17, 15), ((time(16, 15), time(16, 30)),)),
    # CME Globex notice 20210621, effective trade date 2021-06-28: the 15:15-15:30 CT pause is
    # gone; trading runs 17:00-16:00 CT, i.e. 18:00-17:00 New York, break 17:00-18:00.
    GlobexHours(date(2021, 6, 28), GLOBEX_CLOSE, GLOBEX_CLOSE),
)
"""The Globex hours by date, oldest first: each entry holds until the next one's `since`. This is
the one place that knows them; the data-quality calendar check and its gap rule (via
`with_exchange_hours`) and the simulator (`globex_hours`) read them, so history is simulated and
checked with the hours of its own day, not today's."""


def globex_hours(session: date) -> GlobexHours:
    """The `GLOBEX_EQUITY_HOURS` entry in force for the session dated `session`."""
    return next(hours for hours in reversed(GLOBEX_EQUITY_HOURS) if hours.since <= session)


def zone(name: str) -> ZoneInfo:
    """The IANA timezone `name`; a user error (not a KeyError or OSError) when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScalperError(f"unknown timezone {name!r}") from None


@functools.cache
def _tz_database() -> tuple[frozenset[str], Mapping[str, str]]:
    """The zones of places (`zone.tab`, `zone1970.tab`) and the aliases (alias -> zone, the `L`
    lines of `tzdata.zi`), read from the `tzdata` package: the maintained IANA database itself,
    not a copy of it in this code."""
    data = resources.files("tzdata") / "zoneinfo"
    places = {
        line.split("\t")[2]
        for table in ("zone.tab", "zone1970.tab")
        for line in (data / table).read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    }
    links = {}
    for line in (data / "tzdata.zi").read_text(encoding="utf-8").splitlines():
        if line.startswith("L "):
            _, target, alias = line.split()
            links[alias] = target
    return frozenset(places), MappingProxyType(links)


_UTC_OFFSET = re.compile(r"(?:UTC|GMT)?\s*[+-]\s*\d{1,2}(?::?\d{2})?", re.IGNORECASE)


def zone_problem(name: str) -> str | None:
    """Why `name` cannot carry session times, or None for the zone of a place.

    Session times are a place's wall-clock times, DST included. A fixed offset (`EST`, `UTC`,
    `Etc/GMT+5`, `+05:00`) ignores daylight saving time, so its 16:25 is 17:25 New York all
    summer; a POSIX rule name (`EST5EDT`) or a legacy alias (`US/Eastern`) follows today's rules
    only by accident of the database. Either way the canonical name of the place is what to
    write, and what a suggestion offers.
    """
    places, links = _tz_database()
    if name in places:
        return None
    spelt = {n.casefold(): links.get(n, n) for n in (*places, *links)}.get(name.casefold())
    try:
        tz = zone(name)
    except ScalperError:
        if _UTC_OFFSET.fullmatch(name.strip()):
            return f"a UTC offset, not a zone: it ignores daylight saving time; write {_PLACE_HINT}"
        close = spelt or next(iter(difflib.get_close_matches(name, sorted(places), n=1)), None)
        return "unknown timezone" + (f" (did you mean {close!r}?)" if close else "")
    target = links.get(name, name)
    if "/" not in name or name.startswith("Etc/") or target.startswith("Etc/"):
        offsets = {tz.utcoffset(datetime(2001, month, 15)) for month in (1, 7)}
        if len(offsets) == 1:
            offset = datetime(2001, 1, 15, tzinfo=tz).strftime("%z")
            what = f"a fixed offset (UTC{offset[:3]}:{offset[3:]}) without daylight saving time"
            return f"{what}; write {_PLACE_HINT}"
        if target in places:
            return f"a POSIX rule name, not the zone of a place; write {target!r}"
        return f"a POSIX rule name, not the zone of a place; write {_PLACE_HINT}"
    if target in places:
        return f"a legacy alias of {target!r}; write {target!r}"
    if spelt in places:  # a case-insensitive file system found the zone under another spelling
        return f"not the IANA spelling; write {spelt!r}"
    return "not the zone of a place in the IANA database (zone.tab)"


_PLACE_HINT = f"the zone of a place, e.g. {NEW_YORK!r} (the exchange's own time)"


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


def unknown_calendar(name: str) -> str | None:
    """Why `name` is no calendar of the library, with the closest names; None when it is one.

    Names are case-sensitive, as in the library, but a wrong case is pointed out.
    """
    names = calendar_names()
    if name in names:
        return None
    by_fold = {n.casefold(): n for n in names}
    close = [by_fold[name.casefold()]] if name.casefold() in by_fold else []
    close += [n for n in difflib.get_close_matches(name, names, n=3) if n not in close]
    hint = f"did you mean {' or '.join(repr(n) for n in close)}?" if close else "e.g. 'CME_Equity'"
    return f"unknown exchange calendar; {hint}"


PRODUCT_CALENDARS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        **dict.fromkeys(("MES", "ES", "MNQ", "NQ"), ("CME_Equity", "CME Globex Equity")),
        **dict.fromkeys(("6E", "M6E"), ("CMEGlobex_FX",)),
    }
)
"""The library's calendars of each instrument's product group (any alias of them will do).

The library holds calendars of every market, and a name that exists is not therefore the
instrument's: a stock exchange's (`XNYS`) is closed all day on Martin Luther King Day, when the
equity-index futures trade until 13:00, so the engine would know no early close and flatten at
16:25, after the market closed; a bond calendar (`CME_Bond`) knows no 09:15 Good Friday close."""


def calendar_mismatch(name: str, symbol: str) -> str | None:
    """Why calendar `name` is not one of `symbol`'s product group, or None when it is (or when
    the name is unknown, an error of its own, or the instrument has no known group)."""
    fitting = PRODUCT_CALENDARS.get(symbol)
    if fitting is None or unknown_calendar(name):
        return None
    kinds = {type(_market_calendar(n)) for n in fitting}
    if type(_market_calendar(name)) in kinds:
        return None
    return (
        f"the calendar of another market, not of {symbol} ({' or '.join(map(repr, fitting))}): "
        "its holidays and early closes are not the instrument's, so a close it does not know "
        "would find a position open"
    )


def refuse_other_market(calendar: str | None, symbol: str) -> None:
    """Raises when `calendar` (a configuration's, written for another instrument) is not
    `symbol`'s: checking or simulating `symbol`'s bars by another market's holidays and early
    closes would quarantine its real bars (6E trades on past the equity futures' 13:00 closes)
    or simulate a market it is not."""
    why = calendar_mismatch(calendar, symbol) if calendar else None
    if why:
        raise ScalperError(
            f"{symbol}: session.calendar = {calendar!r} is {why}; use a configuration for {symbol}"
        )


@functools.cache
def _market_calendar(name: str) -> Any:
    """The library's calendar object; built once per process (building one is slow)."""
    import pandas_market_calendars as mcal

    unknown = unknown_calendar(name)
    if unknown:
        raise ScalperError(f"{name!r}: {unknown}")
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
    if sched.empty:  # only holidays and weekends (the library fails on an empty schedule)
        return holidays, ()
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


_MINUTES_PER_DAY = 24 * 60
_NS_PER_MINUTE = 60 * 1_000_000_000


def _session_minute(wall: time) -> int:
    """Minutes from the Globex open (18:00 New York the evening before) to `wall` New York."""
    open_minute = GLOBEX_SESSION_END.hour * 60 + GLOBEX_SESSION_END.minute
    return (wall.hour * 60 + wall.minute - open_minute) % _MINUTES_PER_DAY


def _by_era(session_date: pl.Expr, value: Callable[[GlobexHours], int | None]) -> pl.Expr:
    """`value(hours)` of the `GLOBEX_EQUITY_HOURS` entry in force on each `session_date`."""
    expr = pl.lit(value(GLOBEX_EQUITY_HOURS[0]))
    for hours in GLOBEX_EQUITY_HOURS[1:]:
        expr = pl.when(session_date >= pl.lit(hours.since)).then(value(hours)).otherwise(expr)
    return expr


def with_exchange_hours(bars: pl.DataFrame, schedule: ExchangeSchedule) -> pl.DataFrame:
    """`bars` plus where each bar starts relative to its session's exchange hours (minutes).

    The session and the hours are the exchange's, New York time whatever zone a configuration
    writes its own times in: the 18:00 Globex open, the `GLOBEX_EQUITY_HOURS` of the session's
    date, and `schedule`'s holidays and early closes.

    * `session_date`, `session_weekday` — the Globex session (Saturday/Sunday: outside the week);
    * `minutes_into_session` — minutes since the session opened;
    * `minutes_after_close` — since the regular close (≥ 0: in the daily break);
    * `minutes_into_halt` — since the start of a daily halt the bar starts in (null: none);
    * `halted_minutes` — halt time of the session before the bar (so a halt is never a gap);
    * `holiday` — the session date when it is an exchange holiday (null: a trading day);
    * `minutes_after_early_close` — since the session's early close (null: no early close).
    """
    frame = with_session_columns(bars, "ts", NEW_YORK, GLOBEX_SESSION_END)
    session = pl.col("session_date")
    open_ns = _session_minute(time(0)) * _NS_PER_MINUTE  # midnight, in session minutes
    into = (
        (pl.col("local_time").cast(pl.Int64) + open_ns) % (_MINUTES_PER_DAY * _NS_PER_MINUTE)
    ) / _NS_PER_MINUTE
    friday = session.dt.weekday() == 5
    close = (
        pl.when(friday)
        .then(_by_era(session, lambda h: _session_minute(h.friday_close)))
        .otherwise(_by_era(session, lambda h: _session_minute(h.close)))
    )

    def halt_bound(k: int, end: int) -> pl.Expr:
        """Start (`end` 0) or end (1) of each session's k-th halt, null if it has none."""
        return _by_era(
            session, lambda h: _session_minute(h.halts[k][end]) if k < len(h.halts) else None
        )

    slots = max(len(h.halts) for h in GLOBEX_EQUITY_HOURS)
    halts = [(halt_bound(k, 0), halt_bound(k, 1)) for k in range(slots)]
    minutes = pl.col("minutes_into_session")
    early = pl.DataFrame(
        {
            "session_date": list(schedule.early_closes),
            "early_close": [_session_minute(t) for t in schedule.early_closes.values()],
        },
        schema={"session_date": pl.Date, "early_close": pl.Int64},
    )
    return (
        frame.with_columns(minutes_into_session=into, session_weekday=session.dt.weekday())
        .join(early, on="session_date", how="left", maintain_order="left")
        .with_columns(
            minutes_after_close=minutes - close,
            minutes_into_halt=pl.coalesce(
                pl.when((minutes >= start) & (minutes < end)).then(minutes - start)
                for start, end in halts
            ),
            halted_minutes=pl.sum_horizontal(
                pl.min_horizontal(pl.max_horizontal(minutes - start, 0), end - start).fill_null(0)
                for start, end in halts
            ),
            holiday=pl.when(session.is_in(sorted(schedule.holidays))).then(session),
            minutes_after_early_close=minutes - pl.col("early_close"),
        )
        .drop("early_close")
    )
