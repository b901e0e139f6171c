"""Data quality with real Great Expectations: the simulated market passes, every kind of defect
fails exactly its expectation and quarantines exactly the bad bars, the real ES data shows what it
really contains, stored days are validated into the validated stage (`quality.store_days`, behind
the asset and the CLI), and Data Docs, plot and `scalper validate` write below the data
directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quality import QualityResult, build_data_docs, plot_quality, split_quarantine, validate_frame
from quality.bars_suite import with_helper_columns
from quality.store_days import day_summary, validate_stored_days
from scalper import store
from scalper.bars import read_bars, write_bars
from scalper.calendar import ExchangeSchedule, exchange_schedule
from scalper.cli import main
from scalper.config import Config
from scalper.simulate import simulate_bars
from tests.shared import REAL_DATA

CFG = Config()
NEW_YORK = ZoneInfo("America/New_York")
TICK = 0.25
REPO = Path(__file__).resolve().parents[1]
ES_FRONT = REAL_DATA / "es_front_1m_2013_2020.csv"


def check(df: pl.DataFrame, cfg: Config = CFG, symbol: str = "MES") -> QualityResult:
    return validate_frame(df, symbol=symbol, cfg=cfg, name="test")


def new_york_ns(day: date, wall: time) -> int:
    return int(datetime.combine(day, wall, tzinfo=NEW_YORK).timestamp()) * 1_000_000_000


def failed_rules(result: QualityResult) -> set[str]:
    return {o.rule for o in result.failures}


@pytest.fixture(scope="module")
def day() -> pl.DataFrame:
    """The Wednesday 2024-03-13 session (Tuesday 18:00 – Wednesday 17:00 New York), 1-minute."""
    return simulate_bars(date(2024, 3, 13), 1, seed=3)


@pytest.fixture(scope="module")
def week() -> pl.DataFrame:
    """Thursday to the next Wednesday: a weekend, daily breaks and the 2024-03-10 DST change."""
    return simulate_bars(date(2024, 3, 7), 7, seed=5)


# ---------------------------------------------------------------------------------------------
# Clean data


def test_simulated_market_passes_every_expectation(week: pl.DataFrame) -> None:
    result = check(week)
    assert result.success, result.summary()
    assert result.failing_rows.is_empty()
    assert len(result.outcomes) == 36  # 7 schema + 29 content expectations, all evaluated
    good, quarantined = split_quarantine(week, result)
    assert good.equals(week)
    assert quarantined.is_empty() and "reason" in quarantined.columns


def test_one_second_bars_of_a_session_pass(day: pl.DataFrame) -> None:
    seconds = simulate_bars(date(2024, 3, 13), 1, seed=3, bar_seconds=1)
    assert seconds.height == 23 * 3600
    assert check(seconds).success


def test_weekend_and_daily_break_are_not_gaps(week: pl.DataFrame) -> None:
    helpers = with_helper_columns(week, tick_size=TICK, schedule=ExchangeSchedule())
    step = helpers["ts"].diff()
    new_session = step > 60 * 1_000_000_000
    assert new_session.sum() == 4  # three daily breaks and one weekend (DST changed over it)
    assert helpers.filter(new_session)["gap_minutes"].null_count() == 4
    assert helpers["gap_minutes"].drop_nulls().unique().to_list() == [0.0]
    assert check(week, replace(CFG, quality=replace(CFG.quality, max_gap_minutes=1))).success


# ---------------------------------------------------------------------------------------------
# One defect at a time


def _set(df: pl.DataFrame, row: int, **values: float) -> pl.DataFrame:
    at = pl.int_range(pl.len()) == row
    return df.with_columns(
        pl.when(at).then(pl.lit(v)).otherwise(pl.col(c)).cast(df.schema[c]).alias(c)
        for c, v in values.items()
    )


def _first(df: pl.DataFrame, condition: pl.Expr) -> int:
    return int(df.with_row_index("row").filter(condition)["row"][0])


def high_below_close(df: pl.DataFrame) -> tuple[pl.DataFrame, list[int]]:
    # a bar whose open and low are both a tick or more below the close: only high < close breaks
    row = _first(
        df, (pl.col("open") <= pl.col("close") - TICK) & (pl.col("low") <= pl.col("close") - TICK)
    )
    return _set(df, row, high=df["close"][row] - TICK), [row]


def off_grid_close(df: pl.DataFrame) -> tuple[pl.DataFrame, list[int]]:
    row = _first(df, pl.col("high") >= pl.col("close") + TICK)
    return _set(df, row, close=df["close"][row] + 0.1), [row]


def negative_volume(df: pl.DataFrame) -> tuple[pl.DataFrame, list[int]]:
    return _set(df, 100, volume=-5), [100]


def duplicate_ts(df: pl.DataFrame) -> tuple[pl.DataFrame, list[int]]:
    # which copy is right is unknown, so both are set aside
    return pl.concat([df.head(101), df.slice(100)]), [100, 101]


def unsorted_ts(df: pl.DataFrame) -> tuple[pl.DataFrame, list[int]]:
    swapped = pl.concat([df.head(100), df.slice(101, 1), df.slice(100, 1), df.slice(102)])
    return swapped, [101]  # the bar that is earlier than the one before it


def saturday_bar(df: pl.DataFrame) -> tuple[pl.DataFrame, list[int]]:
    friday = simulate_bars(date(2024, 3, 15), 1, seed=3)
    saturday = friday.tail(1).with_columns(ts=pl.lit(new_york_ns(date(2024, 3, 16), time(12))))
    return pl.concat([friday, saturday]), [friday.height]


def bar_in_daily_break(df: pl.DataFrame) -> tuple[pl.DataFrame, list[int]]:
    two = simulate_bars(date(2024, 3, 13), 2, seed=3)
    first_session = two.height // 2
    in_break = two.slice(first_session - 1, 1).with_columns(
        ts=pl.lit(new_york_ns(date(2024, 3, 13), time(17, 30)))
    )
    bars = pl.concat([two.head(first_session), in_break, two.slice(first_session)])
    return bars, [first_session]


def zero_volume_jump(df: pl.DataFrame) -> tuple[pl.DataFrame, list[int]]:
    row = 300
    moved = {c: df[c][row] + 100 * TICK for c in ("open", "high", "low", "close")}
    return _set(df, row, volume=0, **moved), [row]


DEFECTS: dict[str, tuple[Callable[[pl.DataFrame], tuple[pl.DataFrame, list[int]]], str, str]] = {
    "high < close": (high_below_close, "high>=close", "high below close"),
    "off-grid price": (off_grid_close, "close_on_grid", "close is off the tick grid"),
    "negative volume": (negative_volume, "volume_not_negative", "volume is negative"),
    "duplicate ts": (duplicate_ts, "ts_unique", "duplicate ts"),
    "unsorted ts": (unsorted_ts, "ts_increasing", "ts before the previous bar's"),
    "Saturday bar": (saturday_bar, "session_on_weekday", "outside the Globex week"),
    "bar in the break": (bar_in_daily_break, "outside_daily_break", "inside the daily break"),
    "zero-volume jump": (zero_volume_jump, "no_unbacked_jump", "over 40 ticks without volume"),
}


@pytest.mark.parametrize("defect", DEFECTS, ids=list(DEFECTS))
def test_each_defect_fails_its_expectation_and_quarantines_the_bad_bars(
    day: pl.DataFrame, defect: str
) -> None:
    inject, rule, reason = DEFECTS[defect]
    bars, bad_rows = inject(day)
    result = check(bars)
    assert failed_rules(result) == {rule}, result.summary()
    assert result.failing_rows["row"].to_list() == bad_rows
    good, quarantined = split_quarantine(bars, result)
    assert quarantined["ts"].to_list() == bars["ts"].gather(bad_rows).to_list()
    assert all(reason in text for text in quarantined["reason"])
    assert good.height + quarantined.height == bars.height
    assert check(good).success, "what is left after the quarantine is clean"


def test_a_hole_in_the_session_is_a_warning_that_quarantines_nothing(
    day: pl.DataFrame,
) -> None:
    bars = pl.concat([day.head(600), day.slice(620)])  # 20 one-minute bars missing
    result = check(bars)
    assert failed_rules(result) == {"no_long_gap"}
    (gap,) = result.failures
    assert gap.severity == "warning" and result.warnings == (gap,)
    assert gap.examples == (20.0,) and gap.rows == (600,)  # the first bar after the hole
    assert result.success  # missing data is not wrong data: the frame is usable
    assert result.failing_rows["quarantined"].to_list() == [False]
    assert (result.quarantined, result.warned) == (0, 1)
    good, quarantined = split_quarantine(bars, result)
    assert good.equals(bars) and quarantined.is_empty()
    assert result.summary() == (
        "test: OK with warnings, 1,360 bars; more than 5 min of session missing before this bar (1)"
    )


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.sets(st.integers(0, 1379), min_size=1, max_size=30))
def test_exactly_the_broken_bars_are_quarantined(day: pl.DataFrame, rows: set[int]) -> None:
    broken = pl.int_range(pl.len()).is_in(sorted(rows))
    bars = day.with_columns(volume=pl.when(broken).then(-1).otherwise(pl.col("volume")))
    good, quarantined = split_quarantine(bars, check(bars))
    assert sorted(quarantined["ts"]) == sorted(day["ts"].gather(sorted(rows)))
    assert good.height == day.height - len(rows)


def test_missing_values_fail_their_column(day: pl.DataFrame) -> None:
    bars = day.with_columns(
        volume=pl.when(pl.int_range(pl.len()) == 9).then(None).otherwise(pl.col("volume"))
    )
    result = check(bars)
    assert failed_rules(result) == {"volume_present"}
    assert result.failing_rows["row"].to_list() == [9]


def test_wrong_schema_quarantines_the_whole_frame(day: pl.DataFrame) -> None:
    result = check(day.with_columns(pl.col("volume").cast(pl.Float64)))
    assert failed_rules(result) == {"volume_dtype"}
    assert result.quarantined == day.height
    missing = check(day.drop("close"))
    assert "columns" in failed_rules(missing)
    assert missing.quarantined == day.height


def test_tick_grid_is_the_instrument_s(day: pl.DataFrame) -> None:
    # 6E ticks are 0.00005: MES prices in quarters are on that grid, a 0.00001 step is not
    assert check(day, symbol="6E").success
    nudged = day.with_columns(pl.col("close") + 0.00001)
    assert "close_on_grid" in failed_rules(check(nudged, symbol="6E"))


def test_result_as_plain_data_and_one_line_summary(day: pl.DataFrame) -> None:
    bars, _ = negative_volume(day)
    result = check(bars)
    data = json.loads(json.dumps(result.to_dict()))
    assert (data["validated"], data["warned"], data["quarantined"]) == (day.height - 1, 0, 1)
    assert data["failures"] == [
        {
            "rule": "volume_not_negative",
            "severity": "error",
            "reason": "volume is negative",
            "unexpected_count": 1,
            "examples": [-5],
            "first_rows": [100],
            "detail": "",
        }
    ]
    assert "\n" not in result.summary() and "FAILED" in result.summary()
    assert check(day).summary() == "test: OK, 1,380 bars, 36 expectations met"


# ---------------------------------------------------------------------------------------------
# Real ES data


@pytest.mark.skipif(not ES_FRONT.is_file(), reason="real ES data not available")
def test_real_es_data_passes_under_the_hours_of_its_own_dates() -> None:
    """The 2013/2020 ES front-month minutes, checked against the Globex hours of their dates:

    * a 15-minute hole at 16:15–16:30 New York in each of the 14 whole sessions: the daily
      trading halt of those years (until 2021-06-25), not missing data, so not a gap;
    * 195 bars at 17:00–17:14 New York on the 13 sessions of 2013: Globex closed at 17:15 then
      (17:00 since 2021-06-28), so they are real trading, kept;
    * nothing else: OHLC, tick grid, volume, ts order and uniqueness all hold, and no bar moves
      without volume (the file has no zero-volume bar at all).
    """
    bars = read_bars(ES_FRONT)
    result = check(bars, symbol="ES")
    assert result.success and not result.failures, result.summary()
    local = pl.from_epoch(bars["ts"], time_unit="ns").dt.replace_time_zone("UTC")
    local = local.dt.convert_time_zone("America/New_York")
    assert local.filter(local.dt.time().is_between(time(17), time(17, 14))).len() == 195
    assert local.dt.time().is_between(time(16, 15), time(16, 29)).sum() == 0  # the halt

    # The same minutes stamped as if they were of today's hours fail exactly where those differ:
    # the 17:00-17:14 bars fall in today's break; the halt is a 15-minute hole.
    years = pl.duration(days=7 * 52 * 11)  # 2013 + 11 years of whole weeks: same weekdays
    moved = bars.filter(local.dt.year() == 2013).with_columns(
        ts=(pl.from_epoch("ts", time_unit="ns") + years).dt.epoch("ns")
    )
    today = check(moved, symbol="ES")
    assert failed_rules(today) == {"outside_daily_break", "no_long_gap"}
    assert today.quarantined == 195


def _bars_at(day: date, wall: list[time], session: date) -> pl.DataFrame:
    """One simulated bar per New York `wall` time of `day`, all in the session `session`."""
    template = simulate_bars(session, 1, seed=3).head(len(wall))
    return template.with_columns(ts=pl.Series([new_york_ns(day, t) for t in wall]))


@pytest.mark.parametrize(
    ("session", "wall", "verdict"),
    [
        # 2013: Globex traded until 17:15 with a 16:15-16:30 halt
        (date(2013, 12, 3), time(17, 5), None),
        (date(2013, 12, 3), time(16, 20), "outside_trading_halt"),
        (date(2013, 12, 3), time(17, 15), "outside_daily_break"),
        # the last session of the old hours, and the first of the new (trade date 2021-06-28)
        (date(2021, 6, 25), time(16, 20), "outside_trading_halt"),
        (date(2021, 6, 25), time(17, 5), None),
        (date(2021, 6, 28), time(16, 20), None),
        (date(2021, 6, 28), time(17, 5), "outside_daily_break"),
        # until November 2012 the trade date ended at 16:15 and resumed at 16:30 until 17:30,
        # but the week ended Friday 16:15
        (date(2012, 11, 14), time(17, 20), None),
        (date(2012, 11, 14), time(17, 30), "outside_daily_break"),
        (date(2012, 11, 16), time(16, 30), "outside_daily_break"),
        (date(2012, 11, 19), time(17, 20), "outside_daily_break"),
    ],
)
def test_the_calendar_check_knows_the_globex_hours_by_date(
    session: date, wall: time, verdict: str | None
) -> None:
    bars = _bars_at(session, [time(15, 0), wall], session)
    result = check(bars)
    assert failed_rules(result) == ({verdict} if verdict else set()), result.summary()
    assert result.quarantined == (1 if verdict else 0)


def test_the_halt_is_no_gap_but_a_hole_beside_it_is_a_warning() -> None:
    """A 2013 session: the 16:15-16:30 halt is not missing data; ten more minutes are."""
    session = date(2013, 12, 3)
    minutes = [time(h, m) for h in (15, 16) for m in range(60)]
    trading = [t for t in minutes if not time(16, 15) <= t < time(16, 30)]
    assert check(_bars_at(session, trading, session)).success
    holed = [t for t in trading if not time(16, 30) <= t < time(16, 40)]
    result = check(_bars_at(session, holed, session))
    (gap,) = result.failures
    assert (gap.rule, gap.severity, gap.examples) == ("no_long_gap", "warning", (10.0,))
    assert result.success and result.quarantined == 0


@pytest.mark.parametrize(
    "start",
    [
        date(2012, 11, 12),  # the November 2012 change of hours, Thanksgiving 2012
        date(2013, 11, 25),  # Thanksgiving 2013 and the day after
        date(2021, 6, 21),  # the last days of the 16:15-16:30 halt and the first without it
        date(2024, 12, 16),  # Christmas Eve's early close, Christmas
    ],
)
def test_the_simulator_and_the_calendar_check_agree(start: date) -> None:
    """SPEC §4.9: the simulator and the data-quality checks use the same calendar and the same
    hours by date, so a simulated fortnight of any of those years passes the calendar check."""
    cfg = replace(CFG, session=replace(CFG.session, calendar="CME_Equity"))
    schedule = exchange_schedule("CME_Equity", {}, start, start + timedelta(days=13))
    bars = simulate_bars(start, 14, seed=2, schedule=schedule)
    result = check(bars, cfg)
    assert result.success and not result.failures, result.summary()


def test_the_calendar_check_uses_the_configured_exchange_calendar() -> None:
    """SPEC §4.9: no bars on a full holiday, none after an early close, from `session.calendar`
    with `session.early_closes` winning (the CME's equity close of 2024-11-29 was 13:15)."""
    wednesday = simulate_bars(date(2024, 1, 10), 1, seed=3)  # a whole session in winter time

    def moved_to(session: date) -> pl.DataFrame:
        days = (session - date(2024, 1, 10)).days
        return wednesday.with_columns(pl.col("ts") + days * 86_400 * 1_000_000_000)

    calendar = replace(
        CFG,
        session=replace(
            CFG.session, calendar="CME_Equity", early_closes={date(2024, 11, 29): time(13, 15)}
        ),
    )
    black_friday, christmas = moved_to(date(2024, 11, 29)), moved_to(date(2024, 12, 25))
    assert check(black_friday).success and check(christmas).success  # no calendar: no holidays

    early = check(black_friday, calendar)
    assert failed_rules(early) == {"before_early_close"}
    local = pl.from_epoch(black_friday["ts"], time_unit="ns").dt.replace_time_zone("UTC")
    after = (
        local.dt.convert_time_zone("America/New_York")
        .dt.time()
        .is_between(time(13, 15), time(18), closed="left")
    )
    assert early.quarantined == after.sum() == 225  # 13:15-16:59
    assert early.failing_rows["ts"].to_list() == black_friday.filter(after)["ts"].to_list()

    holiday = check(christmas, calendar)
    assert failed_rules(holiday) == {"not_on_holiday"}
    assert holiday.quarantined == christmas.height
    assert holiday.failures[0].examples[0] == "2024-12-25"


# ---------------------------------------------------------------------------------------------
# Outputs: Data Docs, plot, CLI


def test_data_docs_are_built_under_the_data_directory(
    day: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path))
    bars, _ = high_below_close(day)
    index = build_data_docs([check(bars), check(day)])
    assert index == tmp_path / "reports" / "data_docs" / "index.html"
    assert "bars.content" in index.read_text()
    pages = list((index.parent / "validations").rglob("*.html"))
    assert len(pages) == 4  # schema and content, for each of the two runs
    texts = [" ".join(re.sub(r"<[^>]+>", " ", p.read_text()).split()) for p in pages]
    assert sum("high must always be greater than or equal to those in close" in t for t in texts)
    assert all("test" in t and "__none__" not in t for t in texts)  # the run is named
    assert list((tmp_path / "quality" / "validations").rglob("*.json"))
    assert not list(REPO.glob("gx")) and not list(REPO.glob("great_expectations*"))


def test_plot_marks_the_failing_bars(
    day: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path))
    bars, _ = zero_volume_jump(day)
    path = plot_quality(bars, check(bars))
    assert path == tmp_path / "reports" / "quality" / "test.png"
    assert path.read_bytes().startswith(b"\x89PNG")


def test_telemetry_is_off() -> None:
    assert os.environ["GX_ANALYTICS_ENABLED"] == "false"


def test_stored_days_are_validated_into_the_validated_stage(
    day: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raw days of each series of a product, validated in one GX call per series: the bars are
    copied (never dropped), the failing ones quarantined per day with the reason, each day
    recorded; a day no longer in the raw stage is emptied in the validated one."""
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path))
    days = store.days_between(date(2024, 3, 12), date(2024, 3, 13))
    broken, _ = negative_volume(day)
    contracts = pl.concat(
        [day.with_columns(contract=pl.lit("MESM4")), broken.with_columns(contract=pl.lit("MESU4"))]
    )
    store.store_raw(contracts, "MES", days, source="file")
    validated = validate_stored_days({"MES": days}, CFG, data_docs=False)
    assert sorted(validated.results) == ["MESM4", "MESU4"] and not validated.success
    assert validated.results["MESU4"].name == "MESU4 2024-03-12..2024-03-13"
    assert validated.data_docs is None
    root = store.stage_root("validated")
    assert store.read_range("MESU4", days[0], days[1], root).height == broken.height
    # the broken bar (row 100) is at 19:40 New York on the evening the session opens: 03-12 UTC
    assert store.read_quarantine("MESU4", days[0], root)["reason"].to_list() == [
        "volume is negative"
    ]
    assert store.read_quarantine("MESU4", days[1], root).height == 0
    status = validated.statuses["MESU4"][days[0]]
    assert status == store.partition_status("MESU4", days[0], root)
    assert (status["validated"], status["quarantined"], status["failed"]) == (
        status["rows"] - 1, 1, 0,
    )  # fmt: skip
    assert status["problems"] == {"volume is negative": 1}
    rows = {
        (s, d): v["rows"] for s, by_day in validated.statuses.items() for d, v in by_day.items()
    }
    assert validated.day_lines() == [
        f"MESM4 2024-03-12: OK, {rows['MESM4', days[0]]:,} bars",
        f"MESM4 2024-03-13: OK, {rows['MESM4', days[1]]:,} bars",
        f"MESU4 2024-03-12: FAILED, 1 of {rows['MESU4', days[0]]:,} bars quarantined; "
        "volume is negative (1)",
        f"MESU4 2024-03-13: OK, {rows['MESU4', days[1]]:,} bars",
    ]

    gone = day.with_columns(contract=pl.lit("MESM4"))  # MESU4 gone
    store.store_raw(gone, "MES", days, source="file")
    validate_stored_days({"MES": days}, CFG, data_docs=False)
    assert store.partitions("MESU4", root) == [] and store.partitions("MESM4", root) == days


def test_a_day_summary_tells_warnings_from_quarantine() -> None:
    status = {"rows": 1380, "quarantined": 0, "problems": {"a hole": 1}}
    assert day_summary("MES", date(2024, 3, 12), status) == (
        "MES 2024-03-12: OK with warnings, 1,380 bars; a hole (1)"
    )
    status = {"rows": 1380, "quarantined": 2, "problems": {"a hole": 1, "bad tick": 2}}
    assert day_summary("MES", date(2024, 3, 12), status) == (
        "MES 2024-03-12: FAILED, 2 of 1,380 bars quarantined; a hole (1), bad tick (2)"
    )


def test_cli_validates_store_days_and_records_quarantine_and_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path))
    raw, validated = store.stage_root("raw"), store.stage_root("validated")
    bars = simulate_bars(date(2024, 3, 12), 2, seed=3)
    days = store.write_bars_partitioned(bars, "MES", raw, progress=False)
    assert main(["validate", "--symbol", "MES", "--start", "2024-03-12", "--docs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("MES 2024-03-12: OK")
    assert out[1] == f"Data Docs: {tmp_path / 'reports' / 'data_docs' / 'index.html'}"

    day = days[1]
    stored = store.read_range("MES", day, day, raw)
    broken, _ = negative_volume(stored)
    store.write_bars_partitioned(broken, "MES", raw, progress=False)
    assert main(["validate", "--symbol", "MES"]) == 1  # every stored day
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(days)
    assert lines[1].startswith(f"MES {day}: FAILED, 1 of ")
    status = store.partition_status("MES", day, validated)
    assert (status["failed"], status["quarantined"]) == (0, 1)
    assert store.read_quarantine("MES", day, validated)["reason"].to_list() == [
        "volume is negative"
    ]
    usable = store.read_range("MES", day, day, validated, validated_only=True)
    assert usable.height == stored.height - 1
    assert main(["validate", "--symbol", "MES", "--start", "2030-01-01"]) == 2
    assert f"validate: no stored MES bars from 2030-01-01 to 2030-01-01 in {raw}" in (
        capsys.readouterr().err
    )


def test_cli_validates_a_file_and_fails_on_bad_bars(
    day: pl.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path))
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.csv"
    write_bars(day, good)
    write_bars(off_grid_close(day)[0], bad)
    assert main(["validate", "--file", str(good)]) == 0
    assert main(["validate", "--file", str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{good}: OK") and out[1].startswith(f"{bad}: FAILED")
    assert main(["validate", "--end", "2024-03-12"]) == 2
    assert "--end needs --start" in capsys.readouterr().err


def test_cli_validate_file_counts_every_wrong_bar(
    day: pl.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Wrong bars are the suites' to count and name, all of them, not a refusal at the first."""
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path))
    bars, _ = high_below_close(day)
    bars, _ = negative_volume(bars)
    write_bars(_set(bars, 200, volume=-1), tmp_path / "bad.csv")
    assert main(["validate", "--file", str(tmp_path / "bad.csv")]) == 1
    assert capsys.readouterr().out.strip() == (
        f"{tmp_path / 'bad.csv'}: FAILED, 3 of 1,380 bars quarantined; high below close (1), "
        "volume is negative (2)"
    )


def test_cli_imports_great_expectations_only_when_validating() -> None:
    code = (
        "import sys; from scalper.cli import build_parser; build_parser(); "
        "assert 'great_expectations' not in sys.modules and 'quality' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
