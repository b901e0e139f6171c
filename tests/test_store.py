"""The bar store (SPEC §3): day partitions that re-runs replace, atomic writes, pruned reads, the
quarantine and status records that keep unchecked bars away from a backtest, and the pipeline's
stages with the series a product is stored as."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from scalper import store
from scalper.errors import DataError, ScalperError
from scalper.simulate import simulate_bars

# Sessions of Mon 2024-06-10 .. Wed 06-12: bars on the UTC days 06-09 (Sunday evening) .. 06-12.
DAYS = [date(2024, 6, 9), date(2024, 6, 10), date(2024, 6, 11), date(2024, 6, 12)]


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return simulate_bars(date(2024, 6, 10), 3, seed=3)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "bars"


def day_of(df: pl.DataFrame, day: date) -> pl.DataFrame:
    return df.filter(pl.from_epoch("ts", time_unit="ns").dt.date() == day)


def test_round_trip_by_utc_day(bars: pl.DataFrame, root: Path) -> None:
    assert store.write_bars_partitioned(bars, "MES", root) == DAYS
    assert store.partitions("MES", root) == DAYS
    assert (root / "symbol=MES" / "date=2024-06-10" / "bars.parquet").is_file()
    back = store.read_range("MES", DAYS[0], DAYS[-1], root)
    assert back.equals(bars)
    assert store.read_range("MES", DAYS[1], DAYS[1], root).equals(day_of(bars, DAYS[1]))


def test_rewriting_a_day_replaces_it_and_never_duplicates(bars: pl.DataFrame, root: Path) -> None:
    store.write_bars_partitioned(bars, "MES", root)
    store.write_bars_partitioned(bars, "MES", root)  # the same download again
    assert store.read_range("MES", DAYS[0], DAYS[-1], root).equals(bars)

    shorter = day_of(bars, DAYS[1]).head(10)
    assert store.write_bars_partitioned(shorter, "MES", root) == [DAYS[1]]
    assert store.read_range("MES", DAYS[1], DAYS[1], root).equals(shorter)
    assert store.read_range("MES", DAYS[2], DAYS[2], root).equals(day_of(bars, DAYS[2]))


def test_input_order_does_not_matter_but_duplicates_are_refused(
    bars: pl.DataFrame, root: Path
) -> None:
    store.write_bars_partitioned(bars.reverse(), "MES", root)
    assert store.read_range("MES", DAYS[0], DAYS[-1], root).equals(bars)
    twice = pl.concat([bars.head(3), bars.head(1)])
    with pytest.raises(DataError, match=r"store MES: more than one bar at 2024-06-09T22:00:00Z"):
        store.write_bars_partitioned(twice, "MES", root)


def test_replace_is_atomic(bars: pl.DataFrame, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that dies half-way leaves the previous day readable and no stray file."""
    store.write_bars_partitioned(bars, "MES", root)
    folder = store.partition_dir("MES", DAYS[1], root)
    before = sorted(os.listdir(folder))

    def crash(self: pl.DataFrame, file: object, **_: object) -> None:
        file.write(b"PAR1 half a file")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", crash)
    with pytest.raises(OSError, match="disk full"):
        store.write_bars_partitioned(day_of(bars, DAYS[1]).head(5), "MES", root)
    monkeypatch.undo()
    assert sorted(os.listdir(folder)) == before
    assert store.read_range("MES", DAYS[1], DAYS[1], root).equals(day_of(bars, DAYS[1]))


def test_reads_open_only_the_days_asked_for(bars: pl.DataFrame, root: Path) -> None:
    """Partition pruning: a broken file outside the range is never opened."""
    store.write_bars_partitioned(bars, "MES", root)
    (store.partition_dir("MES", DAYS[3], root) / store.BARS_FILE).write_bytes(b"not parquet")
    assert store.read_range("MES", DAYS[0], DAYS[2], root).height == bars.height - len(
        day_of(bars, DAYS[3])
    )
    with pytest.raises(pl.exceptions.PolarsError):
        store.read_range("MES", DAYS[3], DAYS[3], root)


def test_empty_range_and_unknown_symbol_give_empty_frames(bars: pl.DataFrame, root: Path) -> None:
    store.write_bars_partitioned(bars, "MES", root)
    empty = store.read_range("MES", date(2030, 1, 1), date(2030, 1, 2), root)
    assert empty.height == 0
    assert empty.columns == ["ts", "open", "high", "low", "close", "volume", "symbol"]
    assert store.partitions("MNQ", root) == []


def test_extra_columns_are_kept(root: Path) -> None:
    bars = simulate_bars(date(2024, 6, 10), 1).with_columns(contract=pl.lit("MESM4"))
    store.write_bars_partitioned(bars.drop("symbol"), "MESM4", root)
    back = store.read_range("MESM4", DAYS[0], DAYS[-1], root)
    assert back.get_column("contract").unique().to_list() == ["MESM4"]
    assert back.get_column("symbol").unique().to_list() == ["MESM4"]


def test_mistakes_are_one_line_errors(bars: pl.DataFrame, root: Path) -> None:
    with pytest.raises(DataError, match="store MNQ: some bars are for MES"):
        store.write_bars_partitioned(bars, "MNQ", root)
    with pytest.raises(ScalperError, match=r"bad store symbol '\.\./x'"):
        store.write_bars_partitioned(bars, "../x", root)
    with pytest.raises(DataError, match="store MES: missing columns volume"):
        store.write_bars_partitioned(bars.drop("volume"), "MES", root)
    with pytest.raises(DataError, match="column 'date' is reserved"):
        store.write_bars_partitioned(bars.with_columns(date=pl.lit(1)), "MES", root)
    with pytest.raises(DataError, match="do not fit the bar schema"):
        store.write_bars_partitioned(bars.with_columns(volume=pl.lit("many")), "MES", root)


def test_delete_day(bars: pl.DataFrame, root: Path) -> None:
    store.write_bars_partitioned(bars, "MES", root)
    assert store.delete_day("MES", DAYS[1], root)
    assert not store.delete_day("MES", DAYS[1], root)
    assert store.partitions("MES", root) == [DAYS[0], *DAYS[2:]]
    assert not [p for p in (root / "symbol=MES").iterdir() if p.name.startswith(".")]


def test_default_root_is_the_raw_stage_under_the_data_directory(
    bars: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path / "home"))
    store.write_bars_partitioned(bars, "MES")
    assert (tmp_path / "home" / "bars" / "raw" / "symbol=MES" / "date=2024-06-10").is_dir()
    assert store.partitions("MES") == DAYS
    assert store.partitions("MES", store.stage_root("raw")) == DAYS
    assert store.stage_root("continuous") == tmp_path / "home" / "bars" / "continuous"


# ---------------------------------------------------------------------------------------------
# Quarantine and status


def validated_day(bars: pl.DataFrame, root: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Store the bars, quarantine two rows of day 2 and mark it: (day's bars, quarantined)."""
    store.write_bars_partitioned(bars, "MES", root)
    day = day_of(bars, DAYS[1])
    bad = day.slice(5, 2).with_columns(reason=pl.lit("price jump beyond 40 ticks without volume"))
    assert store.quarantine("MES", DAYS[1], bad, root) == 2
    store.mark_partition(
        "MES", DAYS[1], {"validated": day.height - 2, "failed": 0, "quarantined": 2}, root
    )
    return day, bad


def test_quarantine_keeps_rows_with_their_reason(bars: pl.DataFrame, root: Path) -> None:
    day, bad = validated_day(bars, root)
    kept = store.read_quarantine("MES", DAYS[1], root)
    assert kept.select(bad.columns).equals(bad)
    assert store.read_range("MES", DAYS[1], DAYS[1], root).equals(day)  # nothing deleted
    good = store.read_range("MES", DAYS[1], DAYS[1], root, validated_only=True)
    assert good.equals(day.join(bad.select("ts"), on="ts", how="anti", maintain_order="left"))


def test_status_round_trip(bars: pl.DataFrame, root: Path) -> None:
    day, _ = validated_day(bars, root)
    status = store.partition_status("MES", DAYS[1], root)
    assert status is not None
    assert {k: status[k] for k in store.STATUS_COUNTS} == {
        "validated": day.height - 2,
        "failed": 0,
        "quarantined": 2,
    }
    assert status["marked_at"].endswith("+00:00")
    assert store.is_validated(status)
    assert store.partition_status("MES", DAYS[2], root) is None
    assert not store.is_validated(None)


def test_validated_reads_refuse_unchecked_or_failed_days(bars: pl.DataFrame, root: Path) -> None:
    validated_day(bars, root)
    with pytest.raises(DataError, match=r"MES 2024-06-11: bars not validated yet"):
        store.read_range("MES", DAYS[1], DAYS[2], root, validated_only=True)
    store.mark_partition(
        "MES", DAYS[2], {"validated": 0, "failed": 1, "quarantined": 0, "rule": "gap"}, root
    )
    with pytest.raises(DataError, match=r"MES 2024-06-11: failed validation \(1 failures\)"):
        store.read_range("MES", DAYS[1], DAYS[2], root, validated_only=True)
    assert store.partition_status("MES", DAYS[2], root)["rule"] == "gap"


def test_rewriting_a_day_drops_its_quarantine_and_status(bars: pl.DataFrame, root: Path) -> None:
    """A status describes the bars it checked; new bars must be validated again."""
    day, _ = validated_day(bars, root)
    store.write_bars_partitioned(day, "MES", root)
    assert store.partition_status("MES", DAYS[1], root) is None
    assert store.read_quarantine("MES", DAYS[1], root).height == 0


def test_empty_quarantine_clears_it(bars: pl.DataFrame, root: Path) -> None:
    validated_day(bars, root)
    assert store.quarantine("MES", DAYS[1], pl.DataFrame(), root) == 0
    assert store.read_quarantine("MES", DAYS[1], root).height == 0


def test_quarantine_and_status_mistakes(bars: pl.DataFrame, root: Path) -> None:
    store.write_bars_partitioned(bars, "MES", root)
    day = day_of(bars, DAYS[1])
    with pytest.raises(DataError, match="missing columns reason"):
        store.quarantine("MES", DAYS[1], day.head(1), root)
    with pytest.raises(DataError, match="every row needs a reason"):
        store.quarantine("MES", DAYS[1], day.head(1).with_columns(reason=pl.lit(None)), root)
    other_day = day_of(bars, DAYS[2]).head(1).with_columns(reason=pl.lit("x"))
    with pytest.raises(DataError, match=r"the row at 2024-06-11T00:00:00Z is not on that UTC day"):
        store.quarantine("MES", DAYS[1], other_day, root)
    with pytest.raises(DataError, match="MES 2030-01-01: no bars stored"):
        store.mark_partition("MES", date(2030, 1, 1), {}, root)
    with pytest.raises(DataError, match=r"failed must be a whole number ≥ 0 \(got -1\)"):
        store.mark_partition("MES", DAYS[1], {"validated": 1, "failed": -1}, root)
    with pytest.raises(DataError, match="not JSON data"):
        counts = {"validated": 1, "failed": 0, "quarantined": 0}
        store.mark_partition("MES", DAYS[1], {**counts, "when": date(2024, 1, 1)}, root)


# ---------------------------------------------------------------------------------------------
# Stages and series


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path))
    return tmp_path


def test_a_series_names_its_product() -> None:
    assert [store.product_of(s) for s in ("ESZ3", "MESH4", "MES", "6EH4", "XYZZ3", "ES")] == [
        "ES", "MES", "MES", "6E", "XYZZ3", "ES",
    ]  # fmt: skip


def test_a_source_frame_is_stored_per_contract_or_as_the_product(bars: pl.DataFrame) -> None:
    assert list(store.by_series(bars, "MES")) == ["MES"]
    assert "symbol" not in store.by_series(bars, "MES")["MES"].columns
    contracts = pl.concat(
        [bars.with_columns(contract=pl.lit("MESM4")), bars.with_columns(contract=pl.lit("MESU4"))]
    )
    split = store.by_series(contracts, "MES")
    assert sorted(split) == ["MESM4", "MESU4"] and split["MESU4"].height == bars.height
    assert store.by_series(bars.head(0), "MES") == {}


def test_raw_days_hold_exactly_what_the_source_delivered(home: Path, bars: pl.DataFrame) -> None:
    """Storing days again replaces them, and drops a series the source no longer delivers on
    them; days outside those asked for are neither stored nor touched."""
    june = bars.with_columns(contract=pl.lit("MESM4"))
    assert list(store.store_raw(june, "MES", DAYS[:3], source="file")) == ["MESM4"]
    assert store.partitions("MESM4", store.stage_root("raw")) == DAYS[:3]
    store.store_raw(bars.with_columns(contract=pl.lit("MESU4")), "MES", DAYS[1:2], source="file")
    assert store.stored_series("MES", "raw") == ["MESM4", "MESU4"]
    assert store.partitions("MESM4", store.stage_root("raw")) == [DAYS[0], DAYS[2]]
    assert store.read_days("MESU4", DAYS[1:2], "raw").equals(
        store.read_range("MESU4", DAYS[1], DAYS[1], store.stage_root("raw"))
    )
    kept = store.read_days("MESM4", [DAYS[0], DAYS[2]], "raw")
    assert kept.height == day_of(bars, DAYS[0]).height + day_of(bars, DAYS[2]).height
    assert store.stored_series("MES", "validated") == []


def test_raw_days_record_the_source_that_delivered_them(home: Path, bars: pl.DataFrame) -> None:
    """What research records as the provenance of approved parameters: the store's truth, not
    the configuration's, so simulated days never pass for market data."""
    assert store.raw_source("MES", DAYS[0], DAYS[-1]) == "unknown"  # nothing stored
    store.store_raw(bars, "MES", DAYS, source="ibkr")
    assert store.raw_source("MES", DAYS[0], DAYS[-1]) == "ibkr"
    store.store_raw(bars, "MES", DAYS[1:2], source="simulator")  # `scalper data simulate`
    assert store.raw_source("MES", DAYS[0], DAYS[0]) == "ibkr"
    assert store.raw_source("MES", DAYS[0], DAYS[-1]) == "mixed: ibkr, simulator"
    store.write_bars_partitioned(day_of(bars, DAYS[2]), "MES", store.stage_root("raw"))
    assert store.raw_source("MES", DAYS[2], DAYS[2]) == "unknown"  # a writer that did not say


def test_day_labels_and_ranges(bars: pl.DataFrame) -> None:
    assert store.days_between(DAYS[0], DAYS[-1]) == DAYS
    assert store.day_span(bars) == "2024-06-09..2024-06-12"
    assert store.day_span(day_of(bars, DAYS[1])) == "2024-06-10"
