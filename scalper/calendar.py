"""Session time: which trading session a UTC timestamp belongs to (SPEC §2).

Timestamps are stored in UTC, but a trading day is a New York affair: CME Globex opens at 18:00
New York time for the *next* calendar day's session. Daily risk counters reset when the session
date changes, so this mapping decides when a trader's daily loss limit starts afresh; it must be
DST-correct, and the scalar and vectorized versions must agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
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
