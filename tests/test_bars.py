"""The normalized bars reader and writer (SPEC §3).

The reader is the gate between user files and the engine, so every way a file can be wrong must
give one line that names the file, the line and the reason, and every valid spelling of a time
must give the same nanoseconds.
"""

from __future__ import annotations

import datetime as dt
import gzip
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalper.bars import BAR_SCHEMA, read_bars, to_engine_columns, validate_bars, write_bars
from scalper.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared"
HEADER = "ts,open,high,low,close,volume"
GOOD_ROWS = [
    "2024-06-09T22:00:00Z,5000.00,5000.50,4999.75,5000.25,93",
    "2024-06-09T22:01:00Z,5000.25,5000.75,5000.00,5000.50,103",
    "2024-06-09T22:02:00Z,5000.50,5001.00,5000.25,5000.75,101",
]
T0 = 1_717_970_400_000_000_000  # 2024-06-09T22:00:00Z
MINUTE = 60_000_000_000


def write_csv(tmp_path: Path, *rows: str, header: str = HEADER, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def read_error(path: Path) -> str:
    with pytest.raises(DataError) as caught:
        read_bars(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def good_frame(n: int = 3) -> pl.DataFrame:
    close = 5000.0 + 0.25 * np.arange(n)
    return pl.DataFrame(
        {
            "ts": T0 + MINUTE * np.arange(n, dtype=np.int64),
            "open": close - 0.25,
            "high": close + 0.5,
            "low": close - 0.5,
            "close": close,
            "volume": np.arange(n, dtype=np.int64) * 10,
        },
        schema=BAR_SCHEMA,
    )


# --------------------------------------------------------------------------------------------
# Failure modes: one line, right place, right reason


@pytest.mark.parametrize(
    ("bad_row", "why"),
    [
        ("2024-13-01T00:00:00Z,1,1,1,1,1", "ts '2024-13-01T00:00:00Z' is not an ISO 8601 time"),
        ("yesterday,1,1,1,1,1", "ts 'yesterday' is not an ISO 8601 time"),
        (",5000,5001,4999,5000,1", "ts has no value"),
        ("", "blank line"),
        ("2024-06-09T22:03:00Z,abc,5001,4999,5000,1", "open 'abc' is not a number"),
        ("2024-06-09T22:03:00Z,5000,,4999,5000,1", "high has no value"),
        ("2024-06-09T22:03:00Z,5000,5001,4999,nan,1", "close nan is not finite"),
        ("2024-06-09T22:03:00Z,5000,inf,4999,5000,1", "high inf is not finite"),
        ("2024-06-09T22:03:00Z,5000,5001,0,5000,1", "low 0 is not positive"),
        ("2024-06-09T22:03:00Z,-1,5001,4999,5000,1", "open -1 is not positive"),
        ("2024-06-09T22:03:00Z,5001.50,5001.25,5002.00,5001.50,1", "high 5001.25 < low 5002.00"),
        ("2024-06-09T22:03:00Z,5000.75,5001.00,5000.50,5001.50,1", "high 5001.00 < close 5001.50"),
        ("2024-06-09T22:03:00Z,5001.50,5001.00,5000.50,5000.75,1", "high 5001.00 < open 5001.50"),
        ("2024-06-09T22:03:00Z,5000.75,5001.50,5001.00,5001.25,1", "low 5001.00 > open 5000.75"),
        ("2024-06-09T22:03:00Z,5000,5001,4999,5000,-3", "volume -3 is negative"),
        ("2024-06-09T22:03:00Z,5000,5001,4999,5000,1.5", "volume 1.5 is not a whole number"),
        ("2024-06-09T22:03:00Z,5000,5001,4999,5000,x", "volume 'x' is not a number"),
        (
            "2024-06-09T22:02:00Z,5000,5001,4999,5000,1",
            "duplicate ts 2024-06-09T22:02:00Z (same as line 4)",
        ),
        (
            "2024-06-09T22:01:30Z,5000,5001,4999,5000,1",
            "ts 2024-06-09T22:01:30Z is before the previous ts 2024-06-09T22:02:00Z (line 4); "
            "bars must be in time order",
        ),
    ],
)
def test_bad_row_names_file_line_and_reason(tmp_path: Path, bad_row: str, why: str) -> None:
    path = write_csv(tmp_path, *GOOD_ROWS, bad_row, *_later_rows())
    assert read_error(path).startswith(f"{path} line 5: {why}")


def _later_rows() -> list[str]:
    return ["2024-06-09T22:10:00Z,5000,5001,4999,5000,1"]


def test_example_from_the_spec_line_17(tmp_path: Path) -> None:
    rows = [
        f"2024-06-09T{22 + i // 60:02d}:{i % 60:02d}:00Z,5000,5001,4999,5000,1" for i in range(15)
    ]
    path = write_csv(tmp_path, *rows, "2024-06-09T22:15:00Z,5001.50,5001.25,5002.00,5001.50,1")
    assert read_error(path) == f"{path} line 17: high 5001.25 < low 5002.00"


def test_the_first_offending_row_is_reported(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        GOOD_ROWS[0],
        "2024-06-09T22:01:00Z,5000,5001,4999,5000,-1",
        "garbage,5000,5001,4999,5000,1",
    )
    assert read_error(path) == f"{path} line 3: volume -1 is negative"


def test_the_most_basic_problem_of_a_row_is_reported(tmp_path: Path) -> None:
    path = write_csv(tmp_path, GOOD_ROWS[0], "2024-06-09T22:01:00Z,abc,5001,4999,5000,-1")
    assert read_error(path) == f"{path} line 3: open 'abc' is not a number"


def test_missing_columns_are_listed(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "2024-06-09T22:00:00Z,1,1,1", header="ts,open,high,close")
    assert read_error(path) == (
        f"{path}: missing columns low, volume (found: ts, open, high, close)"
    )


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_text("")
    assert read_error(path) == f"{path}: the file is empty"


def test_header_without_rows(tmp_path: Path) -> None:
    assert read_error(write_csv(tmp_path)) == f"{tmp_path / 'bars.csv'}: no bars (no data rows)"


def test_missing_file_and_unknown_type(tmp_path: Path) -> None:
    assert read_error(tmp_path / "nope.csv") == f"{tmp_path / 'nope.csv'}: no such file"
    assert read_error(tmp_path) == f"{tmp_path}: not a file"
    text = write_csv(tmp_path, *GOOD_ROWS, name="bars.txt")
    assert read_error(text).startswith(f"{text}: unknown bars file type")


def test_unreadable_csv(tmp_path: Path) -> None:
    path = write_csv(tmp_path, GOOD_ROWS[0], GOOD_ROWS[1] + ",7")
    assert read_error(path).startswith(f"{path}: cannot read CSV: ")


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "bars.parquet"
    path.write_bytes(b"not parquet at all")
    assert read_error(path).startswith(f"{path}: cannot read PARQUET: ")


def test_parquet_errors_name_the_row(tmp_path: Path) -> None:
    frame = good_frame(4).with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(-5).otherwise("volume").alias("volume")
    )
    path = tmp_path / "bars.parquet"
    frame.write_parquet(path)
    assert read_error(path) == f"{path} row 3: volume -5 is negative"


def test_parquet_ts_of_the_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "bars.parquet"
    good_frame().with_columns(pl.lit(dt.date(2024, 6, 9)).alias("ts")).write_parquet(path)
    assert read_error(path) == (
        f"{path}: column ts has type Date; expected ISO 8601 text, integer epoch nanoseconds "
        "or a datetime"
    )


def test_nothing_is_repaired_in_memory() -> None:
    frame = good_frame().with_columns(pl.Series("close", [5000.0, float("nan"), 5001.0]))
    with pytest.raises(DataError, match=r"^memory row 2: close nan is not finite$"):
        validate_bars(frame, "memory")


# --------------------------------------------------------------------------------------------
# Accepted spellings


def test_every_time_spelling_gives_the_same_nanoseconds(tmp_path: Path) -> None:
    spellings = [
        "2024-06-09T22:00:00Z",
        "2024-06-09T22:00:00",
        "2024-06-09 22:00:00",
        "2024-06-09T22:00Z",
        "2024-06-09T22:00:00.000Z",
        "2024-06-09T18:00:00-04:00",
        "2024-06-09T18:00:00-0400",
        "2024-06-10T03:30:00+05:30",
        "2024-06-10T00:00:00+02",
        str(T0),
        "  2024-06-09T22:00:00Z ",
    ]
    for i, spelling in enumerate(spellings):
        path = write_csv(tmp_path, f"{spelling},5000,5001,4999,5000,1", name=f"b{i}.csv")
        assert read_bars(path)["ts"].to_list() == [T0], spelling


def test_fractions_and_mixed_spellings_in_one_file(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "2024-06-09T22:00:00.123456789Z,5000,5001,4999,5000,1",
        "2024-06-09T18:00:01.5-04:00,5000,5001,4999,5000,1",
        f"{T0 + 2_000_000_000},5000,5001,4999,5000,1",
        "2024-06-09 22:00:03.25,5000,5001,4999,5000,1",
    )
    assert read_bars(path)["ts"].to_list() == [
        T0 + 123_456_789,
        T0 + 1_500_000_000,
        T0 + 2_000_000_000,
        T0 + 3_250_000_000,
    ]


@pytest.mark.parametrize("unit", ["ms", "us", "ns"])
@pytest.mark.parametrize("zone", [None, "UTC", "America/New_York"])
def test_parquet_with_datetime_ts(tmp_path: Path, unit: str, zone: str | None) -> None:
    frame = good_frame()
    utc = pl.from_epoch(frame["ts"], time_unit="ns").dt.cast_time_unit(unit)
    ts = utc if zone is None else utc.dt.replace_time_zone("UTC").dt.convert_time_zone(zone)
    path = tmp_path / "bars.parquet"
    frame.with_columns(ts.alias("ts")).write_parquet(path)
    assert read_bars(path).equals(frame)


def test_gzipped_csv_and_extra_columns_are_kept_in_file_order(tmp_path: Path) -> None:
    text = "\n".join(["symbol," + HEADER, *("MES," + row for row in GOOD_ROWS)]) + "\n"
    path = tmp_path / "bars.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    bars = read_bars(path)
    assert bars.columns == [*BAR_SCHEMA, "symbol"]
    assert bars["symbol"].to_list() == ["MES"] * 3
    assert bars["close"].to_list() == [5000.25, 5000.5, 5000.75]


def test_trailing_blank_lines_are_not_bars(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_text("\n".join([HEADER, *GOOD_ROWS]) + "\n\n\n")
    assert read_bars(path).height == 3


def test_large_integer_volumes_are_exact(tmp_path: Path) -> None:
    big = 2**60 + 1
    path = write_csv(tmp_path, f"2024-06-09T22:00:00Z,5000,5001,4999,5000,{big}")
    assert read_bars(path)["volume"].to_list() == [big]


# --------------------------------------------------------------------------------------------
# Real and conformance data


def test_real_es_minute_bars_read_cleanly() -> None:
    bars = read_bars(SHARED / "data" / "real" / "es_front_1m_2013_2020.csv")
    assert bars.schema == pl.Schema(BAR_SCHEMA)
    assert bars.height > 19_000
    assert bars["ts"].diff().drop_nulls().min() > 0


@pytest.mark.parametrize("path", sorted((SHARED / "conformance").glob("bars_*.csv")), ids=str)
def test_conformance_bars_read_cleanly(path: Path) -> None:
    bars = read_bars(path)
    assert bars.height > 1_000
    assert bars.schema == pl.Schema(BAR_SCHEMA)


# --------------------------------------------------------------------------------------------
# Writing and the engine hand-off


@pytest.mark.parametrize("name", ["bars.csv", "bars.csv.gz", "bars.parquet"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    frame = good_frame(5).with_columns(pl.lit("MES").alias("symbol"))
    write_bars(frame, tmp_path / name)
    assert read_bars(tmp_path / name).equals(frame)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind


def test_csv_is_written_withiso_utc_times(tmp_path: Path) -> None:
    write_bars(good_frame(1), tmp_path / "bars.csv")
    assert (tmp_path / "bars.csv").read_text().splitlines() == [
        HEADER,
        "2024-06-09T22:00:00Z,4999.75,5000.5,4999.5,5000.0,0",
    ]


def test_write_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "bars.parquet"
    write_bars(good_frame(2), path)
    write_bars(good_frame(4), path)
    assert read_bars(path).height == 4


def test_engine_columns_are_contiguous_views() -> None:
    frame = good_frame(10)
    arrays = to_engine_columns(frame)
    assert list(arrays) == list(BAR_SCHEMA)
    assert arrays["ts"].dtype == np.int64 and arrays["volume"].dtype == np.int64
    assert arrays["close"].dtype == np.float64
    assert all(a.flags.c_contiguous for a in arrays.values())
    assert np.shares_memory(arrays["close"], frame["close"].to_numpy())


@st.composite
def valid_frames(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(1, 30))
    start = draw(st.integers(0, 7_000_000_000_000_000_000))
    steps = draw(st.lists(st.integers(1, 10**12), min_size=n - 1, max_size=n - 1))
    prices = st.floats(1e-6, 1e9, allow_nan=False, allow_infinity=False)
    quads = [sorted(draw(st.lists(prices, min_size=4, max_size=4))) for _ in range(n)]
    flips = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return pl.DataFrame(
        {
            "ts": np.cumsum([start, *steps]),
            "open": [q[2] if flip else q[1] for q, flip in zip(quads, flips, strict=True)],
            "high": [q[3] for q in quads],
            "low": [q[0] for q in quads],
            "close": [q[1] if flip else q[2] for q, flip in zip(quads, flips, strict=True)],
            "volume": draw(st.lists(st.integers(0, 2**62), min_size=n, max_size=n)),
            "symbol": draw(st.lists(st.sampled_from(["MES", "ES"]), min_size=n, max_size=n)),
        },
        schema={**BAR_SCHEMA, "symbol": pl.String},
    )


@settings(max_examples=60, deadline=None)
@given(frame=valid_frames(), name=st.sampled_from(["b.csv", "b.csv.gz", "b.parquet"]))
def test_valid_frames_round_trip(frame: pl.DataFrame, name: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        write_bars(frame, path)
        assert read_bars(path).equals(frame)
