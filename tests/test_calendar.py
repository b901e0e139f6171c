"""Session dates in New York time, across DST, scalar and vectorized (SPEC §2)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalper.calendar import (
    ExchangeSchedule,
    SessionClock,
    exchange_schedule,
    unknown_calendar,
    with_session_columns,
)
from scalper.errors import ScalperError

CLOCK = SessionClock("America/New_York", time(18, 0))
TS_NS = st.integers(
    min_value=int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) * 10**9,
    max_value=int(datetime(2040, 1, 1, tzinfo=UTC).timestamp()) * 10**9,
)


def ns(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    """Epoch nanoseconds of a UTC wall-clock time."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()) * 10**9


# (UTC instant, New York wall clock, session date). EST = UTC-5, EDT = UTC-4;
# 2024 DST starts 2024-03-10 02:00 and ends 2024-11-03 02:00 New York time.
CASES = [
    (ns(2024, 3, 8, 22, 59), "17:59", date(2024, 3, 8)),  # Friday, EST
    (ns(2024, 3, 8, 23, 0), "18:00", date(2024, 3, 9)),
    (ns(2024, 3, 10, 6, 59), "01:59", date(2024, 3, 10)),  # just before spring forward
    (ns(2024, 3, 10, 7, 0), "03:00", date(2024, 3, 10)),  # 02:00 EST is 03:00 EDT
    (ns(2024, 3, 10, 21, 59), "17:59", date(2024, 3, 10)),  # Sunday, now EDT
    (ns(2024, 3, 10, 22, 0), "18:00", date(2024, 3, 11)),  # Globex opens Monday's session
    (ns(2024, 3, 11, 13, 30), "09:30", date(2024, 3, 11)),
    (ns(2024, 11, 1, 21, 59), "17:59", date(2024, 11, 1)),  # Friday, EDT
    (ns(2024, 11, 1, 22, 0), "18:00", date(2024, 11, 2)),
    (ns(2024, 11, 3, 5, 30), "01:30", date(2024, 11, 3)),  # first 01:30 (EDT)
    (ns(2024, 11, 3, 6, 30), "01:30", date(2024, 11, 3)),  # second 01:30 (EST)
    (ns(2024, 11, 3, 22, 59), "17:59", date(2024, 11, 3)),  # Sunday, now EST
    (ns(2024, 11, 3, 23, 0), "18:00", date(2024, 11, 4)),
    (ns(2024, 12, 31, 23, 30), "18:30", date(2025, 1, 1)),  # across the year end
]


@pytest.mark.parametrize(("ts", "wall_clock", "session"), CASES)
def test_session_date_across_dst(ts: int, wall_clock: str, session: date) -> None:
    assert CLOCK.local(ts).strftime("%H:%M") == wall_clock
    assert CLOCK.session_date(ts) == session


def test_local_time_carries_the_dst_offset() -> None:
    assert CLOCK.local(ns(2024, 1, 15, 14, 30)).utcoffset() == timedelta(hours=-5)
    assert CLOCK.local(ns(2024, 7, 15, 13, 30)).utcoffset() == timedelta(hours=-4)


def test_custom_session_end() -> None:
    clock = SessionClock("America/Chicago", time(17, 0))
    assert clock.session_date(ns(2024, 7, 15, 21, 59)) == date(2024, 7, 15)  # 16:59 CDT
    assert clock.session_date(ns(2024, 7, 15, 22, 0)) == date(2024, 7, 16)  # 17:00 CDT


def test_unknown_timezone_is_a_user_error() -> None:
    with pytest.raises(ScalperError, match="unknown timezone 'Mars/Olympus'"):
        SessionClock("Mars/Olympus", time(18))
    with pytest.raises(ScalperError, match="unknown timezone"):
        with_session_columns(pl.DataFrame({"ts": [0]}), tz="America")


def frame(stamps: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"ts": stamps, "close": [1.0] * len(stamps)})


def as_datetime(df: pl.DataFrame, unit: str, tz: str | None) -> pl.DataFrame:
    """`df` with its epoch-ns `ts` turned into a Datetime column of the given unit and zone."""
    ts = pl.from_epoch("ts", time_unit="ns").dt.cast_time_unit(unit).dt.replace_time_zone(tz)
    return df.with_columns(ts)


@pytest.mark.parametrize(
    "convert",
    [
        lambda df: df,
        lambda df: as_datetime(df, "ns", "UTC"),
        lambda df: as_datetime(df, "ns", None),
        lambda df: as_datetime(df, "us", "UTC"),
        lambda df: as_datetime(df, "ms", None),
        lambda df: as_datetime(df, "ns", "UTC").with_columns(
            pl.col("ts").dt.convert_time_zone("Asia/Tokyo")
        ),
    ],
    ids=["int-ns", "utc", "naive-is-utc", "us-utc", "ms-naive", "other-zone"],
)
def test_vectorized_session_columns(convert: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    df = convert(frame([ts for ts, _, _ in CASES]))
    out = with_session_columns(df)
    assert out.schema["session_date"] == pl.Date
    assert out.schema["local_time"] == pl.Time
    assert out["session_date"].to_list() == [session for _, _, session in CASES]
    assert [t.strftime("%H:%M") for t in out["local_time"]] == [clock for _, clock, _ in CASES]
    assert out.select("ts", "close").equals(df)


def test_vectorized_custom_column_and_session_end() -> None:
    df = pl.DataFrame({"start": [ns(2024, 7, 15, 21, 59), ns(2024, 7, 15, 22, 0)]})
    out = with_session_columns(df, ts_col="start", tz="America/Chicago", session_end=time(17))
    assert out["session_date"].to_list() == [date(2024, 7, 15), date(2024, 7, 16)]


def test_wrong_ts_type_is_a_user_error() -> None:
    with pytest.raises(ScalperError, match="column 'ts'"):
        with_session_columns(pl.DataFrame({"ts": ["2024-01-01"]}))


@given(st.lists(TS_NS, min_size=1, max_size=50))
def test_session_date_is_monotone_in_time(stamps: list[int]) -> None:
    ordered = sorted(stamps)
    sessions = [CLOCK.session_date(ts) for ts in ordered]
    assert sessions == sorted(sessions)


@given(TS_NS)
def test_session_date_is_local_date_or_next_day(ts: int) -> None:
    local = CLOCK.local(ts)
    expected = local.date() + timedelta(days=1 if local.time() >= time(18) else 0)
    assert CLOCK.session_date(ts) == expected


@settings(max_examples=50)
@given(st.lists(TS_NS, min_size=1, max_size=200))
def test_vectorized_agrees_with_scalar(stamps: list[int]) -> None:
    ordered = sorted(stamps)
    out = with_session_columns(frame(ordered))
    expected = [CLOCK.session_date(ts) for ts in ordered]
    assert out["session_date"].to_list() == expected
    assert out["session_date"].is_sorted()


# --- the exchange calendar (SPEC §4.9) -------------------------------------------------------

THANKSGIVING_WEEK = (date(2024, 11, 25), date(2024, 12, 31))


def test_cme_equity_schedule_knows_thanksgiving_and_christmas() -> None:
    s = exchange_schedule("CME_Equity", {}, *THANKSGIVING_WEEK)
    assert s.holidays == {date(2024, 12, 25)}
    assert s.close_on(date(2024, 11, 28)) == time(13, 0)  # Thanksgiving, New York time
    assert s.close_on(date(2024, 11, 29)) == time(13, 0)  # the library's (CME: 13:15)
    assert s.close_on(date(2024, 12, 24)) == time(13, 0)
    assert s.close_on(date(2024, 11, 27)) is None


def test_overrides_always_win_also_over_a_holiday_and_outside_the_range() -> None:
    overrides = {date(2024, 11, 29): time(13, 15), date(2024, 12, 25): time(12, 0)}
    s = exchange_schedule("CME_Equity", overrides, *THANKSGIVING_WEEK)
    assert s.close_on(date(2024, 11, 29)) == time(13, 15)
    assert date(2024, 12, 25) not in s.holidays
    assert s.close_on(date(2024, 12, 25)) == time(12, 0)
    far = exchange_schedule("CME_Equity", {date(2030, 1, 2): time(12, 0)}, *THANKSGIVING_WEEK)
    assert far.close_on(date(2030, 1, 2)) == time(12, 0)


def test_no_calendar_is_the_overrides_alone() -> None:
    assert exchange_schedule(None, {}, *THANKSGIVING_WEEK) == ExchangeSchedule()
    s = exchange_schedule(None, {date(2024, 11, 28): time(13, 0)}, *THANKSGIVING_WEEK)
    assert s.holidays == frozenset()
    assert dict(s.early_closes) == {date(2024, 11, 28): time(13, 0)}


def test_calendar_names_are_the_librarys_and_a_near_miss_gets_a_hint() -> None:
    assert unknown_calendar("CME_Equity") is None
    assert "did you mean 'CME_Equity'" in (unknown_calendar("cme_equity") or "")
    assert "e.g. 'CME_Equity'" in (unknown_calendar("Nowhere Exchange") or "")
    with pytest.raises(ScalperError, match="unknown exchange calendar"):
        exchange_schedule("CME_Equty", {}, *THANKSGIVING_WEEK)


def test_another_instruments_bars_are_not_checked_or_simulated_by_this_calendar() -> None:
    """A configuration for MES with CME_Equity, used for 6E: validation set aside 155 real 6E
    bars of January 2024 as "after the early close" (the FX futures trade on past the equity
    futures' 13:00 on Martin Luther King Day), and the simulator made 6E an equity market."""
    from quality.validate import validate_frame
    from scalper.config import config_from_dict
    from scalper.simulate import simulate_bars
    from scalper.sources import simulate_market

    cfg = config_from_dict({"session": {"calendar": "CME_Equity"}}, env={})
    bars = simulate_bars(date(2024, 1, 15), 1, symbol="6E", start_price=1.1, tick_size=0.00005)
    with pytest.raises(ScalperError, match=r"^6E: session.calendar = 'CME_Equity' is the calendar"):
        validate_frame(bars, symbol="6E", cfg=cfg, name="6E")
    with pytest.raises(ScalperError, match="use a configuration for 6E"):
        simulate_market(cfg, "6E", date(2024, 1, 15), 1)
    # the same product group, and a configuration without a calendar, are fine
    assert simulate_market(cfg, "ES", date(2024, 1, 15), 1).height > 0
    plain = config_from_dict({}, env={})
    assert validate_frame(bars, symbol="6E", cfg=plain, name="6E").rows == bars.height
