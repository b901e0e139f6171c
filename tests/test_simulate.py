"""The bar simulator behind `scalper demo`: deterministic, on the CME calendar, and realistic in
the ways the strategies care about (tick grid, intraday profile, volatility clustering, gaps)."""

from __future__ import annotations

from datetime import date, time, timedelta

import numpy as np
import polars as pl
import pytest

from scalper.bars import BAR_SCHEMA, validate_bars
from scalper.calendar import NEW_YORK, exchange_schedule, with_session_columns
from scalper.errors import ScalperError
from scalper.simulate import simulate_bars

# 2024-03-10 (spring forward) and 2024-11-03 (fall back) are both inside these ranges.
SPRING = date(2024, 3, 4)
AUTUMN = date(2024, 10, 28)


@pytest.fixture(scope="module")
def spring() -> pl.DataFrame:
    return simulate_bars(SPRING, 14)


@pytest.fixture(scope="module")
def season() -> pl.DataFrame:
    return simulate_bars(date(2024, 1, 1), 60, seed=11)


def new_york(bars: pl.DataFrame) -> pl.DataFrame:
    local = pl.from_epoch("ts", time_unit="ns").dt.replace_time_zone("UTC")
    local = local.dt.convert_time_zone("America/New_York")
    return bars.with_columns(local.alias("local")).with_columns(
        minute=pl.col("local").dt.hour().cast(pl.Int32) * 60
        + pl.col("local").dt.minute().cast(pl.Int32),
        weekday=pl.col("local").dt.weekday(),  # Monday = 1 … Sunday = 7
    )


def test_same_seed_same_frame_other_seed_other_frame() -> None:
    first = simulate_bars(SPRING, 3, seed=3)
    assert first.equals(simulate_bars(SPRING, 3, seed=3))
    other = simulate_bars(SPRING, 3, seed=4)
    assert other["ts"].equals(first["ts"])
    assert not other["close"].equals(first["close"])


def test_output_is_valid_normalized_bars(spring: pl.DataFrame) -> None:
    assert spring.schema == pl.Schema({**BAR_SCHEMA, "symbol": pl.String})
    assert validate_bars(spring, "simulated").equals(spring)
    assert spring["symbol"].unique().to_list() == ["MES"]


@pytest.mark.parametrize("start", [SPRING, AUTUMN])
def test_globex_hours_across_dst(start: date) -> None:
    bars = new_york(simulate_bars(start, 14, bar_seconds=300))
    assert bars.filter(pl.col("minute").is_between(17 * 60, 18 * 60 - 1)).is_empty()
    assert bars.filter(pl.col("weekday") == 6).is_empty()
    assert bars.filter((pl.col("weekday") == 5) & (pl.col("minute") >= 17 * 60)).is_empty()
    assert bars.filter((pl.col("weekday") == 7) & (pl.col("minute") < 18 * 60)).is_empty()
    sessions = bars.filter(pl.col("ts").diff().fill_null(0) != 300 * 10**9)
    assert sessions["minute"].to_list() == [18 * 60] * 10  # each session opens at 18:00 New York
    assert bars.height == 10 * 23 * 12


def test_sessions_follow_the_session_date() -> None:
    monday = new_york(simulate_bars(date(2024, 3, 11), 1))  # the Monday after spring forward
    assert monday["local"][0].isoformat() == "2024-03-10T18:00:00-04:00"
    assert monday["local"][-1].isoformat() == "2024-03-11T16:59:00-04:00"
    assert monday.height == 23 * 60


def test_prices_on_the_tick_grid_and_opens_near_the_previous_close(spring: pl.DataFrame) -> None:
    for column in ("open", "high", "low", "close"):
        ticks = spring[column].to_numpy() / 0.25
        assert np.array_equal(ticks, np.rint(ticks)), column
    step = (spring["open"] - spring["close"].shift(1)).abs().to_numpy()[1:]
    same_session = np.diff(spring["ts"].to_numpy()) == 60 * 10**9
    assert step[same_session].max() <= 0.25
    assert step[~same_session].max() > 2.0  # session opens gap now and then


def test_other_tick_size_and_symbol() -> None:
    bars = simulate_bars(SPRING, 2, symbol="MNQ", start_price=18000.0, tick_size=0.5, seed=1)
    assert (bars["close"] % 0.5 == 0).all()
    assert bars["symbol"][0] == "MNQ"


def test_volume_is_u_shaped_over_the_regular_session(season: pl.DataFrame) -> None:
    bars = new_york(season)

    def mean_volume(start: int, end: int) -> float:
        return bars.filter(pl.col("minute").is_between(start, end - 1))["volume"].mean()

    midday = mean_volume(12 * 60, 14 * 60)
    assert mean_volume(9 * 60 + 30, 10 * 60) > 2 * midday
    assert mean_volume(15 * 60 + 30, 16 * 60) > 2 * midday
    assert mean_volume(1 * 60, 3 * 60) < midday / 3  # the night is quiet
    assert season["volume"].min() >= 0


def test_absolute_returns_cluster(season: pl.DataFrame) -> None:
    """|returns| stay autocorrelated after dividing out the intraday profile: that is GARCH, not
    the deterministic U-shape."""
    bars = new_york(season)
    size = np.abs(np.diff(np.log(bars["close"].to_numpy())))
    minute = bars["minute"].to_numpy()[1:]
    counts = np.bincount(minute, minlength=1440)
    typical = np.bincount(minute, weights=size, minlength=1440) / np.maximum(counts, 1)
    relative = size / typical[minute]
    for lag in (1, 5, 30):
        assert np.corrcoef(relative[:-lag], relative[lag:])[0, 1] > 0.05, lag


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(ScalperError, match="days must be at least 1"):
        simulate_bars(SPRING, 0)
    with pytest.raises(ScalperError, match="bar_seconds must divide 3600"):
        simulate_bars(SPRING, 1, bar_seconds=7)
    with pytest.raises(ScalperError, match="no trading sessions from 2024-03-09 to 2024-03-10"):
        simulate_bars(date(2024, 3, 9), 2)


def session_ends(bars: pl.DataFrame) -> dict[date, str]:
    """Per session date, the New York time at which its last bar ends."""
    sessions = with_session_columns(bars).group_by("session_date").agg(pl.col("ts").max())
    ends = with_session_columns(sessions.with_columns(pl.col("ts") + 60 * 10**9), tz=NEW_YORK)
    return {d: t.strftime("%H:%M") for d, t in ends.select("session_date", "local_time").rows()}


def test_the_exchange_calendar_removes_holidays_and_cuts_early_closes() -> None:
    """SPEC §4.9: no bars on a full holiday, none after an early close (Thanksgiving and
    Christmas 2024 on CME_Equity, the day after Thanksgiving at the CME's real 13:15)."""
    start, days = date(2024, 11, 25), 37  # Monday 2024-11-25 .. Tuesday 2024-12-31
    schedule = exchange_schedule(
        "CME_Equity", {date(2024, 11, 29): time(13, 15)}, start, start + timedelta(days - 1)
    )
    ends = session_ends(simulate_bars(start, days, schedule=schedule))
    assert date(2024, 12, 25) not in ends  # Christmas: no session at all
    assert ends[date(2024, 11, 28)] == "13:00"  # Thanksgiving
    assert ends[date(2024, 11, 29)] == "13:15"  # the override wins over the library's 13:00
    assert ends[date(2024, 12, 24)] == "13:00"  # Christmas Eve
    assert ends[date(2024, 11, 27)] == ends[date(2024, 12, 26)] == "17:00"
    # Without a calendar, as before: every weekday in full.
    plain = session_ends(simulate_bars(start, days))
    assert plain[date(2024, 12, 25)] == plain[date(2024, 11, 28)] == "17:00"


def test_a_window_of_holidays_only_is_refused() -> None:
    schedule = exchange_schedule("CME_Equity", {}, date(2024, 12, 25), date(2024, 12, 25))
    with pytest.raises(ScalperError, match="weekend or holidays only"):
        simulate_bars(date(2024, 12, 25), 1, schedule=schedule)
