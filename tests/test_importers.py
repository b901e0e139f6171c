"""Vendor files to normalized bars: the real Lean ES zips, Eastern-time CSVs across both DST
changes, normalized files, and folders of files."""

from __future__ import annotations

import shutil
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from scalper.bars import BAR_COLUMNS, BarFileSpec, read_bars, validate_bars, write_bars
from scalper.errors import DataError, ScalperError
from scalper.importers import import_file
from scalper.simulate import simulate_bars
from tests.shared import REAL_DATA

LEAN = REAL_DATA / "lean_es_minute"
FRONT_CSV = REAL_DATA / "es_front_1m_2013_2020.csv"
MINUTE = 60 * 10**9

needs_real_data = pytest.mark.skipif(not LEAN.is_dir(), reason="real data not available")


def utc_ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 10**9


# ---------------------------------------------------------------------------------------------
# lean_zip


@pytest.fixture(scope="module")
def lean() -> pl.DataFrame:
    return import_file(LEAN, "lean_zip", "ES")


def lean_rows_in_zips() -> int:
    total = 0
    for path in LEAN.glob("*.zip"):
        with zipfile.ZipFile(path) as archive:
            total += sum(len(archive.read(n).splitlines()) for n in archive.namelist())
    return total


@needs_real_data
def test_all_sixteen_lean_days_import(lean: pl.DataFrame) -> None:
    assert len(list(LEAN.glob("*.zip"))) == 16
    assert lean.height == lean_rows_in_zips()
    assert lean.columns == [*BAR_COLUMNS, "contract", "symbol"]
    days = lean.select(pl.from_epoch("ts", time_unit="ns").dt.date().n_unique()).item()
    assert days == 16
    assert set(lean["contract"]) == {"ESZ3", "ESH4", "ESM4", "ESU4", "ESZ4", "ESH0", "ESM0", "ESU0"}
    assert lean.select(pl.struct("ts", "contract").is_unique().all()).item()
    for (contract,), rows in lean.partition_by("contract", as_dict=True).items():
        validate_bars(rows, f"lean {contract}")  # each contract is a valid series


@needs_real_data
def test_lean_prices_are_not_scaled(lean: pl.DataFrame) -> None:
    """Lean scales equity prices by 10000 but not futures: every bar of the derived front file
    (each day's highest-volume contract) is found, with equal prices and volume, among the
    imported bars."""
    front = read_bars(FRONT_CSV)
    assert front.join(lean, on=list(BAR_COLUMNS), how="semi").height == front.height


@needs_real_data
def test_lean_times_are_utc_from_the_file_name(lean: pl.DataFrame) -> None:
    """`20131006_es_minute_trade_201312.csv` starts at 79200000 ms: 22:00 UTC, the Sunday open."""
    first = lean.filter(contract="ESZ3").row(0, named=True)
    assert first["ts"] == utc_ns("2013-10-06T22:00:00")
    assert (first["open"], first["close"], first["volume"]) == (1676.75, 1675.25, 1884)


def lean_zip(folder: Path, day: str, members: dict[str, str]) -> Path:
    path = folder / f"minute_es_{day}_trade.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def test_lean_mistakes_name_the_file(tmp_path: Path) -> None:
    path = lean_zip(tmp_path, "20240102", {"20240102_nq_minute_trade_202403.csv": "0,1,1,1,1,1\n"})
    with pytest.raises(DataError, match=r"20240102_nq_minute_trade_202403.csv: holds NQ bars"):
        import_file(path, "lean_zip", "ES")
    path = lean_zip(
        tmp_path, "20240103", {"20240103_es_minute_trade_202403.csv": "0,1,1,1,1,1\nx,1,1,1,1,1\n"}
    )
    with pytest.raises(DataError, match=r"202403.csv row 2: 'x' is not ms since midnight"):
        import_file(path, "lean_zip", "ES")
    path = lean_zip(
        tmp_path, "20240104", {"20240104_es_minute_trade_202403.csv": "0,1,0.5,1,1,1\n"}
    )
    # a wrong bar (high < low) is imported as delivered, for validation to quarantine
    assert import_file(path, "lean_zip", "ES")["high"].to_list() == [0.5]
    path = lean_zip(tmp_path, "20240105", {"readme.txt": "hello"})
    with pytest.raises(DataError, match=r"readme.txt: not a Lean minute trade file"):
        import_file(path, "lean_zip", "ES")
    (tmp_path / "broken.zip").write_bytes(b"PK nothing")
    with pytest.raises(DataError, match=r"broken.zip: cannot read the zip"):
        import_file(tmp_path / "broken.zip", "lean_zip", "ES")


@needs_real_data
def test_overlapping_files_in_a_folder_are_refused(tmp_path: Path) -> None:
    shutil.copy(LEAN / "minute_es_20131007_trade.zip", tmp_path / "a.zip")
    shutil.copy(LEAN / "minute_es_20131007_trade.zip", tmp_path / "b.zip")
    with pytest.raises(
        DataError, match=r"b.zip: starts at 2013-10-07T00:00:00Z, not after the end of a.zip"
    ):
        import_file(tmp_path, "lean_zip", "ES")


# ---------------------------------------------------------------------------------------------
# eastern_csv


def write_eastern(path: Path, stamps: list[str]) -> Path:
    rows = "".join(f"{stamp},10,11,9,10,1\n" for stamp in stamps)
    path.write_text(f"timestamp,open,high,low,close,volume\n{rows}")
    return path


def wall_minutes(start: str, end: str) -> list[str]:
    """New York wall-clock minutes `start` … `end`, inclusive, as CSV text."""
    first, last = datetime.fromisoformat(start), datetime.fromisoformat(end)
    count = (last - first) // timedelta(minutes=1) + 1
    return [(first + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(count)]


def utc_minutes(start: str, count: int) -> list[int]:
    return [utc_ns(start) + i * MINUTE for i in range(count)]


def test_fall_back_hour_is_read_twice_in_file_order(tmp_path: Path) -> None:
    """2024-11-03: 01:00-01:59 happens in EDT, then again in EST; the minutes stay consecutive."""
    stamps = wall_minutes("2024-11-03 00:30", "2024-11-03 01:59")
    stamps += wall_minutes("2024-11-03 01:00", "2024-11-03 02:30")
    bars = import_file(write_eastern(tmp_path / "fall.csv", stamps), "eastern_csv", "MES")
    assert bars["ts"].to_list() == utc_minutes("2024-11-03T04:30:00", len(stamps))


def test_fall_back_hour_listed_once_is_daylight_time(tmp_path: Path) -> None:
    path = write_eastern(tmp_path / "once.csv", ["2024-11-03 00:59", "2024-11-03 01:30"])
    bars = import_file(path, "eastern_csv", "MES")
    assert bars["ts"].to_list() == [utc_ns("2024-11-03T04:59:00"), utc_ns("2024-11-03T05:30:00")]


def test_spring_forward_skips_an_hour(tmp_path: Path) -> None:
    """2024-03-10: 01:59 EST is followed by 03:00 EDT one minute later."""
    stamps = wall_minutes("2024-03-10 01:00", "2024-03-10 01:59")
    stamps += wall_minutes("2024-03-10 03:00", "2024-03-10 03:30")
    bars = import_file(write_eastern(tmp_path / "spring.csv", stamps), "eastern_csv", "MES")
    assert bars["ts"].to_list() == utc_minutes("2024-03-10T06:00:00", len(stamps))


def test_a_time_skipped_by_dst_is_an_error(tmp_path: Path) -> None:
    path = write_eastern(tmp_path / "bad.csv", ["2024-03-10 01:59:00", "2024-03-10 02:30:00"])
    with pytest.raises(
        DataError, match=r"bad.csv line 3: timestamp '2024-03-10 02:30:00' does not exist"
    ):
        import_file(path, "eastern_csv", "MES")


def to_eastern_csv(bars: pl.DataFrame, path: Path) -> Path:
    wall = pl.from_epoch("ts", time_unit="ns").dt.replace_time_zone("UTC")
    wall = wall.dt.convert_time_zone("America/New_York").dt.strftime("%Y-%m-%dT%H:%M:%S")
    bars.select(wall.alias("timestamp"), *BAR_COLUMNS[1:]).write_csv(path)
    return path


@pytest.mark.parametrize("start", [date(2024, 3, 7), date(2024, 10, 31)])
def test_simulated_sessions_round_trip_across_dst(start: date, tmp_path: Path) -> None:
    """A week of Globex sessions around each DST change, written in New York time, reads back
    to the same UTC bars (sessions open at 22:00 UTC before the change and 23:00 after, or the
    other way round)."""
    bars = simulate_bars(start, 7, seed=5)
    imported = import_file(to_eastern_csv(bars, tmp_path / "et.csv"), "eastern_csv", "MES")
    assert imported.equals(bars)


def test_eastern_mistakes_name_the_line(tmp_path: Path) -> None:
    path = write_eastern(tmp_path / "bad.csv", ["2024-06-10 09:30", "June 10 09:31"])
    with pytest.raises(DataError, match=r"bad.csv line 3: timestamp 'June 10 09:31' is not a date"):
        import_file(path, "eastern_csv", "MES")
    path = write_eastern(tmp_path / "order.csv", ["2024-06-10 09:31", "2024-06-10 09:30"])
    with pytest.raises(DataError, match=r"order.csv line 3: ts 2024-06-10T13:30:00Z is before"):
        import_file(path, "eastern_csv", "MES")
    (tmp_path / "cols.csv").write_text("ts,open,high,low,close,volume\n")
    with pytest.raises(DataError, match=r"cols.csv: missing columns timestamp \(found: ts,"):
        import_file(tmp_path / "cols.csv", "eastern_csv", "MES")


def test_an_end_stamped_eastern_file_is_refused_and_declared_reads_as_starts(
    tmp_path: Path,
) -> None:
    bars = simulate_bars(date(2024, 3, 7), 7, seed=5)
    ends = to_eastern_csv(bars.with_columns(pl.col("ts") + MINUTE), tmp_path / "ends.csv")
    with pytest.raises(DataError, match=r"ends.csv: the times look like bar ends.*--stamped end"):
        import_file(ends, "eastern_csv", "MES")
    declared = BarFileSpec(stamped="end")
    assert import_file(ends, "eastern_csv", "MES", spec=declared).equals(bars)
    renamed = tmp_path / "named.csv"
    renamed.write_text(ends.read_text().replace("timestamp,", "time_et,", 1))
    with pytest.raises(DataError, match=r"missing columns timestamp .*--ts-column\)$"):
        import_file(renamed, "eastern_csv", "MES", spec=declared)
    named = BarFileSpec(ts_column="time_et", stamped="end")
    assert import_file(renamed, "eastern_csv", "MES", spec=named).equals(bars)
    with pytest.raises(DataError, match=r"New York wall-clock text; no --ts-unit"):
        import_file(ends, "eastern_csv", "MES", spec=BarFileSpec(ts_unit="s"))


@needs_real_data
def test_lean_times_are_the_layouts_own_and_its_starts_are_not_taken_for_ends() -> None:
    day = LEAN / "minute_es_20131218_trade.zip"
    for spec in (BarFileSpec(ts_unit="ms"), BarFileSpec(ts_column="ms")):
        with pytest.raises(DataError, match=r"ms since midnight .*; --ts-column and --ts-unit"):
            import_file(day, "lean_zip", "ES", spec=spec)
    with pytest.raises(DataError, match=r"--stamped end, but the times look like bar starts"):
        import_file(LEAN, "lean_zip", "ES", spec=BarFileSpec(stamped="end"))
    for one_day in sorted(LEAN.glob("*.zip")):  # each UTC day alone, 2013's 17:00-17:15 too
        assert import_file(one_day, "lean_zip", "ES").height > 0


# ---------------------------------------------------------------------------------------------
# normalized, folders, formats


@needs_real_data
def test_normalized_file_is_read_bars_with_a_symbol() -> None:
    bars = import_file(FRONT_CSV, "normalized", "ES")
    assert bars.equals(read_bars(FRONT_CSV).with_columns(symbol=pl.lit("ES")))


def test_a_folder_of_files_imports_in_name_order(tmp_path: Path) -> None:
    bars = simulate_bars(date(2024, 6, 10), 4, seed=2)
    half = bars.height // 2
    write_bars(bars.head(half), tmp_path / "2024-06-a.csv")
    write_bars(bars.tail(bars.height - half), tmp_path / "2024-06-b.parquet")
    (tmp_path / "notes.txt").write_text("not bars")
    assert import_file(tmp_path, "normalized", "MES", progress=False).equals(bars)


def test_folder_mistakes(tmp_path: Path) -> None:
    bars = simulate_bars(date(2024, 6, 10), 2, seed=2)
    write_bars(bars, tmp_path / "b.csv")
    write_bars(bars.tail(5), tmp_path / "a.csv")
    with pytest.raises(
        DataError, match=r"b.csv: starts at 2024-06-09T22:00:00Z, not after the end of a.csv"
    ):
        import_file(tmp_path, "normalized", "MES")
    with pytest.raises(DataError, match="no lean_zip files in the folder"):
        import_file(tmp_path, "lean_zip", "MES")
    with pytest.raises(DataError, match="no such file or folder"):
        import_file(tmp_path / "missing", "normalized", "MES")
    with pytest.raises(DataError, match=r"b.csv: holds bars of MES, not MNQ"):
        import_file(tmp_path / "b.csv", "normalized", "MNQ")
    with pytest.raises(ScalperError, match="unknown import format 'csv'"):
        import_file(tmp_path, "csv", "MES")
