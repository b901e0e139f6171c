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

from scalper.bars import (
    BAR_SCHEMA,
    BarFileSpec,
    is_on_tick,
    off_tick_warning,
    read_bars,
    to_engine_columns,
    validate_bars,
    write_bars,
)
from scalper.errors import DataError
from scalper.resample import resample

SHARED = Path(__file__).resolve().parents[2] / "shared"
HEADER = "ts,open,high,low,close,volume"
GOOD_ROWS = [
    "2024-06-09T22:00:00Z,5000.00,5000.50,4999.75,5000.25,93",
    "2024-06-09T22:01:00Z,5000.25,5000.75,5000.00,5000.50,103",
    "2024-06-09T22:02:00Z,5000.50,5001.00,5000.25,5000.75,101",
]
T0 = 1_717_970_400_000_000_000  # 2024-06-09T22:00:00Z
MINUTE = 60_000_000_000
AS_WRITTEN = BarFileSpec(ts_unit="ns", stamped="start")


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
        f"{path}: column ts has type Date; expected ISO 8601 text, integer epoch times "
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
        # Any int64 time, 1970 included: the unit and the stamping are declared, not inferred.
        assert read_bars(path, AS_WRITTEN).equals(frame)


# --------------------------------------------------------------------------------------------
# Ambiguous time stamps: the unit of epoch integers, the time column, bar starts or ends

REAL = SHARED / "data" / "real"
ES_FRONT = REAL / "es_front_1m_2013_2020.csv"
EURO_FX = REAL / "6EH4_1m_2024-01.csv.gz"  # Nautilus test data: stamped at the bar's end
NS_PER = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


@pytest.fixture(scope="module")
def es_front() -> pl.DataFrame:
    return read_bars(ES_FRONT)


def with_epoch_ts(bars: pl.DataFrame, unit: str, column: str = "ts") -> pl.DataFrame:
    return bars.with_columns((pl.col("ts") // NS_PER[unit]).alias("ts")).rename({"ts": column})


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_epoch_seconds_ms_and_us_give_the_bars_of_nanoseconds(
    tmp_path: Path, es_front: pl.DataFrame, unit: str, suffix: str
) -> None:
    path = tmp_path / f"bars{suffix}"
    frame = with_epoch_ts(es_front, unit)
    frame.write_csv(path) if suffix == ".csv" else frame.write_parquet(path)
    assert read_bars(path).equals(es_front)  # by magnitude
    assert read_bars(path, BarFileSpec(ts_unit=unit)).equals(es_front)  # as given


@pytest.mark.parametrize(
    ("value", "row"),
    [
        ("12345678", "line 3"),  # 1970 in seconds, 1970 in ms: no unit fits a date from 2001
        ("50000000000", "line 3"),  # seconds of the year 3554, or ms of 1971
        ("-1717970400", "line 3"),
    ],
)
def test_an_epoch_value_no_unit_fits_is_refused_with_the_fix(
    tmp_path: Path, value: str, row: str
) -> None:
    path = write_csv(tmp_path, "1717970400,5000,5001,4999,5000,1", f"{value},5000,5001,4999,5000,1")
    message = read_error(path)
    assert message.startswith(f"{path} {row}: ts {value} is not epoch seconds")
    assert message.endswith("give the unit with --ts-unit s|ms|us|ns")


def test_a_column_mixing_units_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "1717970400,5000,5001,4999,5000,1",
        "1717970460000,5000,5001,4999,5000,1",
        header="time,open,high,low,close,volume",
    )
    assert read_error_with(path, BarFileSpec(ts_column="time")) == (
        f"{path}: column time mixes epoch seconds (line 2: 1717970400) and milliseconds "
        "(line 3: 1717970460000); give the unit with --ts-unit s|ms|us|ns"
    )


def test_a_given_unit_reads_what_magnitude_cannot(tmp_path: Path) -> None:
    in_1999 = 915_148_800  # 1999-01-01 in seconds: below the 2001 of the automatic ranges
    path = write_csv(tmp_path, f"{in_1999},5000,5001,4999,5000,1")
    assert "unit is unknown" in read_error(path)
    assert read_bars(path, BarFileSpec(ts_unit="s"))["ts"].to_list() == [in_1999 * 10**9]
    too_far = write_csv(tmp_path, f"{T0},5000,5001,4999,5000,1", name="ns.csv")
    assert "beyond the year 2262" in read_error_with(too_far, BarFileSpec(ts_unit="s"))


def test_a_unit_for_times_that_carry_their_own_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path, *GOOD_ROWS)
    assert read_error_with(path, BarFileSpec(ts_unit="ms")) == (
        f"{path}: --ts-unit ms, but column ts holds no integer epoch times"
    )


def test_the_time_column_is_named_or_the_error_says_how(tmp_path: Path) -> None:
    path = write_csv(tmp_path, *GOOD_ROWS, header="when,open,high,low,close,volume")
    assert read_error(path).endswith("(name the time column with --ts-column)")
    assert read_bars(path, BarFileSpec(ts_column="when")).equals(read_bars(write_csv(
        tmp_path, *GOOD_ROWS, name="ts.csv"
    )))  # fmt: skip
    assert "no column stamp (--ts-column" in read_error_with(path, BarFileSpec(ts_column="stamp"))


def read_error_with(path: Path, spec: BarFileSpec) -> str:
    with pytest.raises(DataError) as caught:
        read_bars(path, spec)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_an_end_stamped_file_is_refused_and_read_back_to_starts_when_declared(
    tmp_path: Path, es_front: pl.DataFrame
) -> None:
    ends = tmp_path / "ends.csv"
    write_bars(es_front.with_columns(pl.col("ts") + MINUTE), ends)
    message = read_error(ends)
    assert "the times look like bar ends" in message
    assert "Give --stamped end" in message
    assert "68 of 68 edges of trading pauses are one bar late" in message
    assert "2013-10-06 18:01 New York" in message  # one bar after the Sunday open
    assert read_bars(ends, BarFileSpec(stamped="end")).equals(es_front)
    assert read_bars(ends, BarFileSpec(stamped="start"))["ts"][0] == es_front["ts"][0] + MINUTE


def test_the_real_end_stamped_euro_fx_file_is_refused_and_reads_when_declared() -> None:
    named = BarFileSpec(ts_column="timestamp_utc")
    message = read_error_with(EURO_FX, named)
    assert "look like bar ends" in message and "2024-01-01 18:01 New York" in message
    bars = read_bars(EURO_FX, BarFileSpec(ts_column="timestamp_utc", stamped="end"))
    new_york = pl.from_epoch(bars["ts"], time_unit="ns").dt.replace_time_zone("UTC")
    local = new_york.dt.convert_time_zone("America/New_York").dt.strftime("%H:%M")
    assert "17:00" not in set(local)  # nothing in the daily break any more ...
    assert local[0] == "18:00"  # ... and the session opens at the open


def test_declaring_end_for_a_start_stamped_file_is_refused(tmp_path: Path) -> None:
    message = read_error_with(ES_FRONT, BarFileSpec(stamped="end"))
    assert "--stamped end, but the times look like bar starts" in message
    one_bar = write_csv(tmp_path, GOOD_ROWS[0])
    assert "needs bars of one length" in read_error_with(one_bar, BarFileSpec(stamped="end"))


def test_start_stamped_real_and_conformance_files_are_not_taken_for_ends(
    es_front: pl.DataFrame,
) -> None:
    assert es_front.height == 19_083  # 2013's 17:00-17:14 trading and 16:15 halt included


def test_off_tick_prices_are_counted_in_one_line() -> None:
    frame = good_frame(4).with_columns(
        pl.Series("close", [5000.0, 5000.1, 5000.25, 5000.3]),
        pl.Series("high", [5001.0, 5001.0, 5001.0, 5001.0]),
        pl.Series("low", [4999.0, 4999.0, 4999.0, 4999.0]),
    )
    assert off_tick_warning(frame, 0.25, "f.csv") == (
        "f.csv: 2 of 4 bars have prices off the 0.25 tick grid (first at 2024-06-09T22:01:00Z); "
        "check instrument.tick_size or the data"
    )
    assert off_tick_warning(frame, 0.05, "f.csv") is None
    assert is_on_tick(1.1076, 0.00005) and is_on_tick(5000.25, 0.25)
    assert not is_on_tick(5000.1, 0.25) and not is_on_tick(float("nan"), 0.25)


def test_five_second_bars_stamped_at_their_end_are_refused_naming_the_second(
    tmp_path: Path, es_front: pl.DataFrame
) -> None:
    """IB's real-time bars are 5 seconds: the example bar is named to the second, since a bar
    at 18:00:05 'one bar late' read as 18:00 contradicts itself."""
    first = es_front["ts"][0]  # the Sunday open; seven hours on, a quarter hour ends the file
    minutes = es_front.filter(pl.col("ts") < first + 420 * MINUTE)
    fives = minutes.with_columns(pl.int_ranges(0, 12).alias("k")).explode("k")
    fives = fives.with_columns(pl.col("ts") + 5 * 10**9 * pl.col("k")).drop("k")
    ends = tmp_path / "ends.csv"
    write_bars(fives.with_columns(pl.col("ts") + 5 * 10**9), ends)
    message = read_error(ends)
    assert "look like bar ends" in message and "2013-10-06 18:00:05 New York" in message
    assert read_bars(ends, BarFileSpec(stamped="end")).equals(fives)


@pytest.mark.parametrize("minutes", [5, 15, 30])
def test_longer_bars_stamped_at_their_end_are_refused_too(
    tmp_path: Path, es_front: pl.DataFrame, minutes: int
) -> None:
    """Bars of 15 minutes or more fill the quarter hours: the Globex open tells instead."""
    bars = resample(es_front, minutes * 60)
    starts, ends = tmp_path / "starts.parquet", tmp_path / "ends.parquet"
    write_bars(bars, starts)
    write_bars(bars.with_columns(pl.col("ts") + minutes * MINUTE), ends)
    assert read_bars(starts).equals(bars)
    assert "look like bar ends" in read_error(ends)
    assert read_bars(ends, BarFileSpec(stamped="end")).equals(bars)
