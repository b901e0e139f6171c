"""Continuous series: the roll rule's contract for each session, unadjusted and back-adjusted, on
the real ES data (it holds the ESZ3 → ESH4 roll of December 2013) and on synthetic contracts; and
the stored series, built from validated days only and back-adjusted on read."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from scalper import store
from scalper.bars import BAR_COLUMNS, PRICE_COLUMNS, read_bars
from scalper.continuous import (
    UnvalidatedBars,
    build_continuous,
    continuous,
    read_continuous_bars,
    roll_inputs,
)
from scalper.errors import DataError, ScalperError
from scalper.importers import import_file
from scalper.simulate import simulate_bars
from tests.shared import REAL_DATA

LEAN = REAL_DATA / "lean_es_minute"
FRONT_CSV = REAL_DATA / "es_front_1m_2013_2020.csv"

needs_real_data = pytest.mark.skipif(not LEAN.is_dir(), reason="real data not available")


def utc_ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 10**9


def utc_day(day: date) -> pl.Expr:
    return pl.from_epoch("ts", time_unit="ns").dt.date() == day


@pytest.fixture(scope="module")
def lean() -> pl.DataFrame:
    return import_file(LEAN, "lean_zip", "ES")


@pytest.fixture(scope="module")
def lean_2013(lean: pl.DataFrame) -> pl.DataFrame:
    """The 2013 days: ESZ3 then ESH4, with no data gap a back-adjustment cannot bridge."""
    return lean.filter(pl.col("ts") < utc_ns("2014-01-01T00:00:00"))


# ---------------------------------------------------------------------------------------------
# Real ES data


@needs_real_data
def test_unadjusted_series_equals_the_front_file(lean: pl.DataFrame) -> None:
    """`es_front_1m_2013_2020.csv` takes each UTC day's highest-volume contract; the roll rule
    (SPEC §2) takes, per session date, the contract whose roll date — 8 calendar days before its
    expiry, the third Friday — is still ahead. They can disagree in the days around a roll, when
    volume moves to the next contract earlier or later than the calendar rule. On these 16 days
    they agree everywhere: the last ESZ3 day of the data (2013-12-03) comes before ESZ3's roll
    date (2013-12-12) and volume had moved to ESH4 by the next one (2013-12-18), so the series
    are equal bar for bar (the test below shows a roll rule that does disagree)."""
    series = continuous(lean, "ES")
    assert series.select(BAR_COLUMNS).equals(read_bars(FRONT_CSV))
    assert series.columns == [*BAR_COLUMNS, "symbol", "contract"]
    by_contract = series.group_by("contract", maintain_order=True).len().rows()
    assert by_contract == [("ESZ3", 15_002), ("ESH4", 2_656), ("ESH0", 1_425)]


@needs_real_data
def test_a_later_roll_disagrees_with_volume_exactly_where_expected(lean: pl.DataFrame) -> None:
    """Rolling on the expiry day itself (0 days before) keeps ESZ3 for the sessions of 12-18 and
    12-19, which cover the UTC day 2013-12-18, where the front file already has ESH4 by volume.
    Everywhere else the rules agree, so the series equal the front file there."""
    late = continuous(lean, "ES", roll_days_before_expiry=0)
    front = read_bars(FRONT_CSV)
    disputed = utc_day(date(2013, 12, 18))
    assert late.filter(~disputed).select(BAR_COLUMNS).equals(front.filter(~disputed))
    assert late.filter(disputed)["contract"].unique().to_list() == ["ESZ3"]
    expected = lean.filter(disputed & (pl.col("contract") == "ESZ3")).select(BAR_COLUMNS)
    assert late.filter(disputed).select(BAR_COLUMNS).equals(expected)


@needs_real_data
def test_back_adjusted_real_roll(lean_2013: pl.DataFrame) -> None:
    """The gap is measured where the roll happened: ESH4 and ESZ3 both traded the first minute
    of ESH4 in the series (2013-12-18 00:00 UTC), at 1773.75 and 1780.00: a gap of -6.25. Every
    ESZ3 bar moves by it; after the last roll the series is the traded ESH4 prices."""
    unadjusted = continuous(lean_2013, "ES")
    back = continuous(lean_2013, "ES", adjust="back")
    switch = utc_ns("2013-12-18T00:00:00")
    assert unadjusted.filter(contract="ESH4")["ts"][0] == switch
    at_switch = lean_2013.filter(ts=switch).select("contract", "close").rows()
    closes = dict(at_switch)
    gap = closes["ESH4"] - closes["ESZ3"]
    assert gap == -6.25
    assert back.filter(contract="ESH4").equals(unadjusted.filter(contract="ESH4"))
    old = unadjusted.filter(contract="ESZ3").with_columns(pl.col(PRICE_COLUMNS) + gap)
    assert back.filter(contract="ESZ3").equals(old)
    # No jump: the old contract, adjusted, trades where the new one does at the roll.
    assert closes["ESZ3"] + gap == closes["ESH4"]


@needs_real_data
def test_a_contract_change_across_a_hole_in_the_history_is_left_as_it_is(
    lean: pl.DataFrame,
) -> None:
    """Between 2013-12-20 (ESH4, expired 2014-03-21) and 2020-01-05 (ESH0) there is no data:
    nothing traded at one time, so there is no roll gap to measure; the change is the hole's
    price change, like a weekend's, and the ESZ3 → ESH4 roll of 2013 is adjusted as before."""
    unadjusted = continuous(lean, "ES")
    back = continuous(lean, "ES", adjust="back")
    for later in ("ESH0", "ESH4"):
        assert back.filter(contract=later).equals(unadjusted.filter(contract=later))
    old = unadjusted.filter(contract="ESZ3").with_columns(pl.col(PRICE_COLUMNS) - 6.25)
    assert back.filter(contract="ESZ3").equals(old)


@needs_real_data
def test_back_adjustment_needs_both_contracts_at_a_roll(lean_2013: pl.DataFrame) -> None:
    """ESZ3 still trading at the switch, but no bar time at which both have bars: the gap
    cannot be measured, and an unadjusted jump is no answer while ESZ3 had not expired."""
    switch = pl.col("ts") >= utc_ns("2013-12-18T00:00:00")
    apart = pl.when(pl.col("contract") == "ESZ3").then(~switch).otherwise(switch)
    without = lean_2013.filter(apart | ~pl.col("contract").is_in(["ESZ3", "ESH4"]))
    with pytest.raises(DataError, match="cannot back-adjust the roll ESZ3 → ESH4 at 2013-12-18"):
        continuous(without, "ES", adjust="back")


# ---------------------------------------------------------------------------------------------
# Synthetic contracts: one path, each contract at a constant spread to it


@pytest.fixture(scope="module")
def path() -> pl.DataFrame:
    """5-minute MES bars from February to July 2024: the rolls of March (03-07) and June (06-13)."""
    return simulate_bars(date(2024, 2, 20), 150, bar_seconds=300, seed=9)


def contracts(path: pl.DataFrame, spreads: dict[str, float]) -> pl.DataFrame:
    frames = [
        path.with_columns(pl.col(PRICE_COLUMNS) + spread, contract=pl.lit(name))
        for name, spread in spreads.items()
    ]
    return pl.concat(frames).sort("ts", "contract")


def test_rolls_at_the_session_boundary(path: pl.DataFrame) -> None:
    """MESH4 expires 2024-03-15, so MESM4 is front from the session of 03-07, which opens at
    18:00 New York on 03-06 (23:00 UTC, before DST)."""
    series = continuous(contracts(path, {"MESH4": 0.0, "MESM4": 12.5}), "MES")
    first_m4 = series.filter(contract="MESM4")["ts"][0]
    assert first_m4 == utc_ns("2024-03-06T23:00:00")
    assert series.filter(pl.col("ts") < first_m4)["contract"].unique().to_list() == ["MESH4"]
    assert series.height == path.filter(pl.col("ts") < utc_ns("2024-06-12T22:00:00")).height


def test_back_adjusted_series_has_no_jumps(path: pl.DataFrame) -> None:
    """Each contract is the path plus a spread, so rolling makes a jump of the spread difference
    in the unadjusted series; back-adjusted, the series is the last contract's prices throughout
    (earlier bars moved by the sum of the later gaps), so its bar-to-bar moves are the path's."""
    bars = contracts(path, {"MESH4": 0.0, "MESM4": 12.5, "MESU4": 20.0})
    unadjusted = continuous(bars, "MES")
    back = continuous(bars, "MES", adjust="back")
    assert back["contract"].unique(maintain_order=True).to_list() == ["MESH4", "MESM4", "MESU4"]
    assert back["ts"].equals(path["ts"])
    assert back.select(PRICE_COLUMNS).equals(path.select(pl.col(PRICE_COLUMNS) + 20.0))
    assert back["close"].diff().equals(path["close"].diff())
    jumps = (unadjusted["close"].diff() - path["close"].diff()).drop_nulls()
    assert jumps.value_counts(sort=True).rows() == [(0.0, path.height - 3), (12.5, 1), (7.5, 1)]
    assert back.filter(contract="MESU4").equals(unadjusted.filter(contract="MESU4"))


def test_mistakes(path: pl.DataFrame) -> None:
    with pytest.raises(DataError, match="continuous MES: the bars need a contract column"):
        continuous(path, "MES")
    with pytest.raises(ScalperError, match="adjust must be 'none' or 'back'"):
        continuous(contracts(path, {"MESH4": 0.0}), "MES", adjust="forward")  # type: ignore[arg-type]
    far = contracts(path.head(100), {"MESZ4": 0.0})
    with pytest.raises(DataError, match=r"no bars of the front contracts \(the bars hold MESZ4\)"):
        continuous(far, "MES")


# ---------------------------------------------------------------------------------------------
# The stored series: the `continuous` stage, built from the `validated` one

ROLL_WEEK = store.days_between(date(2024, 3, 4), date(2024, 3, 8))  # MESM4 front from 03-06 23:00


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path))
    return tmp_path


def mark_validated(product: str, days: list[date], skip: Collection[tuple[str, date]] = ()) -> None:
    """Copy the raw days to the validated stage with clean status records, as a validation that
    found nothing would (`quality.store_days` does it with GX); days in `skip` stay unmarked."""
    frames = {s: store.read_days(s, days, "raw") for s in store.stored_series(product, "raw")}
    store.replace_days(frames, product, days, "validated")
    root = store.stage_root("validated")
    for series, bars in frames.items():
        for day in store.partitions(series, root):
            if (series, day) not in skip:
                counts = {"validated": bars.height, "failed": 0, "quarantined": 0}
                store.mark_partition(series, day, counts, root)


def test_the_stored_series_is_built_from_validated_days_only(
    home: Path, path: pl.DataFrame
) -> None:
    bars = contracts(path, {"MESH4": 0.0, "MESM4": 12.5})
    store.store_raw(bars, "MES", ROLL_WEEK, source="file")
    with pytest.raises(UnvalidatedBars) as refused:
        build_continuous({"MES": ROLL_WEEK}, 8)
    assert str(refused.value).startswith(
        "continuous MES refuses unvalidated bars: MESH4 2024-03-04 is not validated yet; "
    )
    assert refused.value.refusals[-1] == "MESM4 2024-03-08 is not validated yet"
    assert "MESM4 2024-03-05" not in str(refused.value)  # deferred that day: not needed
    assert store.stored_series("MES", "continuous") == []  # nothing written

    # A deferred contract's unvalidated day does not block; a front's failed day does.
    mark_validated("MES", ROLL_WEEK, skip={("MESM4", date(2024, 3, 4))})
    failed = {"validated": 1, "failed": 1, "quarantined": 0, "problems": {"a hole": 1}}
    store.mark_partition("MESM4", date(2024, 3, 7), failed, store.stage_root("validated"))
    with pytest.raises(UnvalidatedBars) as refused:
        build_continuous({"MES": ROLL_WEEK}, 8)
    assert refused.value.refusals == [
        "MESM4 2024-03-07 failed validation with 1 unfixable problem(s): a hole (1) "
        "(a record of an older version: `scalper validate` the day again)"
    ]

    mark_validated("MES", ROLL_WEEK, skip={("MESM4", date(2024, 3, 4))})
    in_week = bars.filter(pl.from_epoch("ts", time_unit="ns").dt.date().is_in(ROLL_WEEK))
    built = build_continuous({"MES": ROLL_WEEK}, 8)["MES"]
    assert built.equals(continuous(in_week, "MES"))
    assert store.partition_status("MES", ROLL_WEEK[2], store.stage_root("continuous"))[
        "built_from"
    ] == ["MESH4", "MESM4"]
    assert read_continuous_bars("MES", ROLL_WEEK[0], ROLL_WEEK[-1]).equals(built)
    back = read_continuous_bars("MES", ROLL_WEEK[0], ROLL_WEEK[-1], "back")
    assert back.equals(continuous(in_week, "MES", adjust="back"))
    old = pl.col("contract") == "MESH4"  # moves by the roll's gap; MESM4 keeps its prices
    shifted = (pl.when(old).then(pl.col(c) + 12.5).otherwise(pl.col(c)) for c in PRICE_COLUMNS)
    assert back.equals(built.with_columns(shifted))


def test_a_back_adjustment_reads_the_contract_rolled_from_on_the_roll_day(
    home: Path, path: pl.DataFrame
) -> None:
    bars = contracts(path, {"MESH4": 0.0, "MESM4": 12.5})
    store.store_raw(bars, "MES", ROLL_WEEK, source="file")
    mark_validated("MES", ROLL_WEEK)
    series = build_continuous({"MES": ROLL_WEEK}, 8)["MES"]
    roll_day = date(2024, 3, 6)
    assert ("MESH4", roll_day) in roll_inputs(series) and ("MESM4", roll_day) in roll_inputs(series)
    assert ("MESM4", date(2024, 3, 5)) not in roll_inputs(series)
    store.delete_day("MESH4", roll_day, store.stage_root("validated"))
    with pytest.raises(DataError, match="cannot back-adjust without the validated MESH4 bars of"):
        read_continuous_bars("MES", ROLL_WEEK[0], ROLL_WEEK[-1], "back")


def test_a_single_series_is_its_own_continuous_series(home: Path, path: pl.DataFrame) -> None:
    """A product stored as one series (the simulator) is its own series, contract `MES`; a
    front series that names its contracts (an IBKR front download) keeps their names."""
    store.store_raw(path, "MES", ROLL_WEEK, source="file")
    mark_validated("MES", ROLL_WEEK)
    series = build_continuous({"MES": ROLL_WEEK}, 8)["MES"]
    assert set(series["contract"]) == {"MES"}
    assert read_continuous_bars("MES", ROLL_WEEK[0], ROLL_WEEK[-1], "back").equals(series)

    front = continuous(contracts(path, {"MESH4": 0.0, "MESM4": 12.5}), "MES")
    store.write_bars_partitioned(front, "MES", store.stage_root("raw"))  # as downloaded
    mark_validated("MES", ROLL_WEEK)
    series = build_continuous({"MES": ROLL_WEEK}, 8)["MES"]
    assert series["contract"].unique(maintain_order=True).to_list() == ["MESH4", "MESM4"]
    with pytest.raises(DataError, match="a front-only series"):
        read_continuous_bars("MES", ROLL_WEEK[0], ROLL_WEEK[-1], "back")
    with pytest.raises(ScalperError, match="adjust must be 'none' or 'back'"):
        read_continuous_bars("MES", ROLL_WEEK[0], ROLL_WEEK[-1], "forward")  # type: ignore[arg-type]
