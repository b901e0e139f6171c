"""The normalized bars format (SPEC §3): one schema, one reader, one writer.

Every source of bars (vendor files, IBKR downloads, the simulator) ends up as a frame of
`BAR_SCHEMA`: `ts` is the bar START as epoch nanoseconds UTC, prices are float64 and volume is
int64. Keeping `ts` as a plain integer lets the Rust engine take the column as a zero-copy
`int64` array and keeps time-zone handling in one place (`America/New_York` session logic works
on these UTC nanoseconds).

Bad data is never dropped or repaired: `validate_bars` stops at the first offending row and raises
a one-line `DataError` naming the file, the line and the reason, because a backtest on silently
"fixed" data gives numbers nobody can trust. All checks are polars expressions evaluated in one
pass, so a year of 1-minute bars validates in a few tens of milliseconds.

Files from elsewhere are ambiguous in two ways a reader must never guess silently, because both
give bars that look fine and trade wrong (`BarFileSpec` says how to read a file):

* **the unit of integer epoch times** — seconds, milliseconds, microseconds or nanoseconds. The
  unit is known from the size of the numbers for the dates this system can meet: 2001-09-09 to
  2286-11-20 is 1e9 to 1e10 in seconds, 1e12 to 1e13 in ms, 1e15 to 1e16 in us, and from 1e18
  in ns (int64 nanoseconds end in 2262). A value outside those ranges, or a column mixing two of
  them, is refused with the fix (`--ts-unit`), never read as nanoseconds of 1970.
* **whether a bar is stamped at its start (SPEC §3) or its end** — an end-stamped file read as
  starts shifts every bar one bar early: the engine would trade on a bar before it closed. See
  `to_bar_starts`: a file that looks end-stamped is refused unless declared (`--stamped end`
  shifts it back one bar).
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pyarrow as pa

from scalper.calendar import GLOBEX_SESSION_END, NEW_YORK
from scalper.config import DataConfig, Stamped, TsUnit
from scalper.errors import DataError
from scalper.files import atomic_write

BAR_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Int64(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Int64(),
}
BAR_COLUMNS: tuple[str, ...] = tuple(BAR_SCHEMA)
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")

_CSV_SUFFIXES = (".csv", ".csv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")

# ISO 8601 date and time: `T` or a space between them, seconds optional, up to 9 fraction
# digits, then `Z`, an offset (+05, +0530, +05:30) or nothing (naive means UTC).
_ISO_8601 = (
    r"^(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<hm>\d{2}:\d{2})(?P<sec>:\d{2})?"
    r"(?:\.(?P<frac>\d{1,9}))?(?P<tz>Z|[+-]\d{2}(?::?\d{2})?)?$"
)
_NS_PER_SECOND = 1_000_000_000

TS_UNITS: tuple[str, ...] = get_args(TsUnit)
_NS_PER_UNIT = {"s": _NS_PER_SECOND, "ms": 1_000_000, "us": 1_000, "ns": 1}
# The integers each unit gives for the dates 2001-09-09 .. 2286-11-20 (ns: to the int64 end).
_UNIT_RANGES = {"s": (10**9, 10**10), "ms": (10**12, 10**13), "us": (10**15, 10**16)}
_UNIT_RANGES["ns"] = (10**18, 2**63 - 1)
_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}

TICK_TOLERANCE = 1e-6
"""How far (in ticks) a float price may sit from the tick grid and still be on it: prices like
1.0925 / 0.00005 carry binary rounding noise near 1e-12 ticks, a real off-tick price is off by a
sizeable fraction of a tick."""


@dataclass(frozen=True)
class BarFileSpec:
    """How to read the time stamps of a bars file: the answers a reader must not guess.

    `ts_column` is the column holding the times (None: the layout's own, `ts` for normalized
    files); `ts_unit` the unit of integer epoch times (`auto`: by magnitude, refused when
    ambiguous); `stamped` whether a time is the bar's start or its end (None: start, and a file
    that looks end-stamped is refused; `start` declares it, skipping that check).
    """

    ts_column: str | None = None
    ts_unit: TsUnit = "auto"
    stamped: Stamped | None = None

    @classmethod
    def configured(
        cls,
        data: DataConfig,
        ts_column: str | None = None,
        ts_unit: TsUnit | None = None,
        stamped: Stamped | None = None,
    ) -> BarFileSpec:
        """The configuration's `data` answers, each overridden by one given here (the CLI's)."""
        return cls(ts_column or data.ts_column, ts_unit or data.ts_unit, stamped or data.stamped)

    def column(self, default: str) -> str:
        """The column to read the times from, for a layout whose own column is `default`."""
        return self.ts_column or default


CHECKED_STARTS = BarFileSpec()
"""The default reading: the layout's time column, the unit by magnitude, bar starts (checked)."""


# ---------------------------------------------------------------------------------------------
# Reading and writing


def read_bars(
    path: str | Path,
    spec: BarFileSpec = CHECKED_STARTS,
    *,
    restamp: bool = True,
    bad_bars: BadBars = "refuse",
) -> pl.DataFrame:
    """Read and validate a normalized bars file (CSV, CSV.gz or Parquet, chosen by suffix).

    Returns the bar columns in `BAR_SCHEMA` order followed by any extra columns (such as
    `symbol`) unchanged, in file order: an unsorted file is an error, never re-sorted. `spec`
    says how to read the times; `restamp=False` leaves `to_bar_starts` to a caller that reads
    several files of one series (the check needs the whole series); `bad_bars` as in
    `validate_bars`.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise DataError(f"{source}: no such file" if not path.exists() else f"{source}: not a file")
    kind = _file_kind(path)
    ts_column = spec.column("ts")
    text_columns = dict.fromkeys((ts_column, *BAR_COLUMNS[1:]), pl.String)
    try:
        if kind == "csv":
            raw = _drop_trailing_blank_rows(pl.read_csv(path, schema_overrides=text_columns))
        else:
            raw = pl.read_parquet(path)
    except pl.exceptions.NoDataError:
        raise DataError(f"{source}: the file is empty") from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"{source}: cannot read {kind.upper()}: {_first_line(exc)}") from None
    raw = with_ts_column(raw, ts_column, source)
    bars = validate_bars(
        raw, source, csv=kind == "csv", ts_unit=spec.ts_unit, ts_name=ts_column, bad_bars=bad_bars
    )
    return to_bar_starts(bars, spec.stamped, source) if restamp else bars


def with_ts_column(raw: pl.DataFrame, ts_column: str, source: str) -> pl.DataFrame:
    """`raw` with the times of `ts_column` as its `ts` column (a file's own name for them)."""
    if ts_column == "ts":
        return raw
    if ts_column not in raw.columns:
        found = ", ".join(raw.columns) or "none"
        raise DataError(f"{source}: no column {ts_column} (--ts-column; found: {found})")
    if "ts" in raw.columns:
        raise DataError(
            f"{source}: has a ts column besides {ts_column}; which one holds the bar times is "
            "ambiguous (rename or drop one)"
        )
    return raw.rename({ts_column: "ts"})


def check_symbol(bars: pl.DataFrame, symbol: str, source: str) -> None:
    """A `DataError` when the file's `symbol` column (if it has one) names another instrument
    than `symbol` (in any case): its bars would be traded or stored as `symbol`'s, with that
    instrument's point value and rules."""
    if "symbol" not in bars.columns:
        return
    named = set(bars.get_column("symbol").drop_nulls().cast(pl.String).to_list())
    others = sorted(name for name in named if name.upper() != symbol.upper())
    if others:
        raise DataError(f"{source}: holds bars of {', '.join(others)}, not {symbol}")


def write_bars(df: pl.DataFrame, path: str | Path) -> None:
    """Write bars as CSV (`ts` as ISO 8601 UTC with `Z`), CSV.gz or Parquet, chosen by suffix.

    The file is written to a temporary file in the same folder and moved into place with
    `os.replace`, so a reader (or a crash) never sees a half-written file.
    """
    path = Path(path)
    kind = _file_kind(path)
    frame = _bar_order(df)
    with atomic_write(path) as fh:
        if kind == "parquet":
            frame.write_parquet(fh)
        elif path.name.endswith(".gz"):
            with gzip.GzipFile(fileobj=fh, mode="wb") as gz:
                _with_iso_ts(frame).write_csv(gz)
        else:
            _with_iso_ts(frame).write_csv(fh)


def to_engine_columns(bars: pl.DataFrame | pa.Table) -> dict[str, np.ndarray]:
    """The bar columns as contiguous numpy arrays for the Rust engine, from polars or Arrow.

    Single-chunk columns of the right type are shared without copying (the engine reads the very
    buffers Parquet was decoded into); a multi-chunk column (e.g. after `pl.concat`) has to be
    copied once into one buffer, because the engine needs contiguous memory.
    """
    if isinstance(bars, pa.Table):
        return {name: _arrow_column(bars, name, dtype) for name, dtype in BAR_SCHEMA.items()}
    arrays = {}
    for name, dtype in BAR_SCHEMA.items():
        column = bars.get_column(name).cast(dtype).rechunk()
        arrays[name] = np.ascontiguousarray(column.to_numpy())
    return arrays


def _arrow_column(table: pa.Table, name: str, dtype: pl.DataType) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        raise DataError(f"column {name} has {column.null_count} missing values")
    target = pa.int64() if dtype == pl.Int64() else pa.float64()
    if column.type != target:
        column = column.cast(target)
    chunk = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return np.ascontiguousarray(chunk.to_numpy(zero_copy_only=False))


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    raise DataError(
        f"{path}: unknown bars file type; expected a name ending in .csv, .csv.gz or .parquet"
    )


def _bar_order(df: pl.DataFrame) -> pl.DataFrame:
    """Bar columns first in schema order, then the extras as they were."""
    return df.select(*BAR_COLUMNS, *(c for c in df.columns if c not in BAR_SCHEMA))


def _with_iso_ts(df: pl.DataFrame) -> pl.DataFrame:
    # `%.f` prints the fraction only when there is one, with 3, 6 or 9 digits: exact for ns.
    iso = pl.from_epoch("ts", time_unit="ns").dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ")
    return df.with_columns(iso.alias("ts"))


def _drop_trailing_blank_rows(df: pl.DataFrame) -> pl.DataFrame:
    """Blank lines at the end of a CSV are formatting, not bars; blank lines inside are errors."""
    filled = df.select(pl.any_horizontal(pl.all().is_not_null()).arg_true().last()).item()
    return df.head(0 if filled is None else filled + 1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Bar starts or bar ends


_NEW_YORK = ZoneInfo(NEW_YORK)
_NS_PER_MINUTE = 60 * _NS_PER_SECOND
_NS_PER_DAY = 1440 * _NS_PER_MINUTE
_PAUSE_GRID_NS = 15 * 60 * _NS_PER_SECOND
_RESUME_AFTER_NS = 45 * _NS_PER_MINUTE  # a pause this long is the daily break or longer
_CLEAR_VOTES = 2  # at least this many edges ...
_CLEAR_RATIO = 3  # ... and this many times as many as the other way


@dataclass(frozen=True)
class _StampVotes:
    """How a series' trading pauses line up with the quarter hours (see `to_bar_starts`)."""

    bar_ns: int | None
    start: int = 0
    end: int = 0
    end_example: int | None = None  # a bar placed as only a bar end would be
    start_example: int | None = None

    def clearly(self, stamped: Stamped) -> bool:
        mine, other = (self.start, self.end) if stamped == "start" else (self.end, self.start)
        return mine >= _CLEAR_VOTES and mine >= _CLEAR_RATIO * other


def to_bar_starts(bars: pl.DataFrame, stamped: Stamped | None, source: str) -> pl.DataFrame:
    """Bars stamped at their start (SPEC §3), from a file stamped as `stamped` says.

    Exchanges pause and resume trading on the quarter hour (CME Globex: the 17:00-18:00 New
    York daily break, the weekend, the old 16:15-16:30 halt and 17:15 close, the 13:00/13:15
    early closes). In a file stamped at bar starts the first bar after a pause is stamped on
    the quarter hour (18:00) and the last bar before one a bar earlier (16:59); stamped at bar
    ends, the last bar sits on the quarter hour (17:00, inside the daily break) and the first
    one a bar after it (18:01). Every bar next to a pause of 15 minutes or more (and the file's
    first and last bar) votes so; the quarter hours make the rule independent of the schedule
    of a given year. Bars of 15 minutes or more fill the quarter hours, so for them only the
    first bar after a pause votes: at the Globex open (18:00 New York, in every year) for a
    start, a bar after it for an end. Daily bars are taken as declared.

    * `stamped` None: starts are expected; a file that clearly looks end-stamped is refused
      with the fix (`--stamped end`), because read as starts it trades each bar a bar early.
    * `end`: the times are moved back by one bar (the smallest step between bars), unless the
      file clearly looks start-stamped (that shift would itself be a look-ahead).
    * `start`: declared by the user; taken as it is.

    The votes are taken on the times at which any series of the file has a bar (several
    contracts interleaved): the market pauses when all of them do, whereas a thin contract
    alone pauses anywhere.
    """
    if stamped == "start":
        return bars
    votes = _stamp_votes(bars.get_column("ts").unique().sort())
    edges = votes.start + votes.end
    if stamped is None:
        if votes.clearly("end"):
            raise DataError(
                f"{source}: the times look like bar ends, not bar starts: {votes.end} of "
                f"{edges} edges of trading pauses are one bar late (e.g. a bar at "
                f"{_new_york(votes.end_example)} New York); read as starts every bar would be "
                "used a bar before it closed. Give --stamped end to move them back one bar (or "
                "--stamped start if they are starts)"
            )
        return bars
    if votes.bar_ns is None:
        raise DataError(
            f"{source}: --stamped end needs bars of one length to move them back by (the steps "
            "between bars are not all multiples of one bar, or there is only one bar)"
        )
    if votes.clearly("start"):
        raise DataError(
            f"{source}: --stamped end, but the times look like bar starts: {votes.start} of "
            f"{edges} edges of trading pauses fit starts (e.g. a bar at "
            f"{_new_york(votes.start_example)} New York); moved back one bar, every bar would "
            "be used before it closed"
        )
    return bars.with_columns(pl.col("ts") - votes.bar_ns)


def unconfirmed_starts_warning(
    bars: pl.DataFrame, stamped: Stamped | None, source: str
) -> str | None:
    """One line when `bars`, read as bar starts by default (`stamped` None), show no sign of
    being starts (`to_bar_starts`' votes: none, or not clearly), else None.

    A file without a trading pause (one day cut anywhere, a stretch of a session) cannot be
    told from an end-stamped one, and refusing it would refuse good files; taken silently, an
    end-stamped one would trade every bar a bar before it closed. So the user hears it."""
    if stamped is not None:
        return None
    votes = _stamp_votes(bars.get_column("ts").unique().sort())
    if votes.bar_ns is None or votes.bar_ns % _NS_PER_DAY == 0 or votes.clearly("start"):
        return None
    edges = votes.start + votes.end
    return (
        f"{source}: nothing shows whether the times are bar starts or bar ends ({edges} "
        f"bar{'' if edges == 1 else 's'} at a trading pause to tell by); read as starts, and if "
        "they are ends every bar is used a bar before it closed: say which with --stamped "
        "start|end (data.stamped)"
    )


def time_warnings(bars: pl.DataFrame, stamped: Stamped | None, source: str) -> list[str]:
    """What may be wrong with the times of `bars` as read (bar starts) from a file that said
    `stamped`: `unconfirmed_starts_warning` and `shifted_zone_warning`, one line each."""
    found = (unconfirmed_starts_warning(bars, stamped, source), shifted_zone_warning(bars, source))
    return [warning for warning in found if warning is not None]


def shifted_zone_warning(bars: pl.DataFrame, source: str) -> str | None:
    """One line when the trading days of `bars` (bar starts) open at a New York time a whole
    number of hours from the Globex open (18:00 in every year), and never at it, else None.

    That is the mark of times written in another zone without their offset (New York or
    Chicago wall clock), which are read as UTC (SPEC §3): every bar lands hours away from its
    session, and the entry window, the flatten and the daily counters act on the wrong bars.
    Bar lengths and stamping do not move a session's first bar off the hour; a file of regular
    trading hours (09:30) is not an hour off and casts no doubt."""
    times = bars.get_column("ts").unique().sort()
    resumes = times.filter(times.diff() >= _RESUME_AFTER_NS)
    if resumes.len() < _CLEAR_VOTES:
        return None
    minutes = resumes.to_frame("ts").select(_new_york_minute(pl.col("ts"))).to_series()
    opens = _minute_of(GLOBEX_SESSION_END)
    if (minutes == opens).any():
        return None
    counted = minutes.drop_nulls().value_counts(sort=True)
    if counted.height == 0:
        return None
    minute, count = counted.row(0)
    hours = ((minute - opens) // 60 + 12) % 24 - 12
    if count < _CLEAR_VOTES or (minute - opens) % 60 or hours == 0:
        return None
    return (
        f"{source}: the trading days open at {minute // 60:02d}:{minute % 60:02d} New York here "
        f"({count} times), the CME's at 18:00: are the times wall clock of a zone at "
        f"UTC{hours:+03d}:00 written without the offset? Times without one are read as UTC; "
        "write them in UTC or with their offset"
    )


def _stamp_votes(times: pl.Series) -> _StampVotes:
    """The votes of `times` (distinct, ascending), and the bar length (the smallest step)."""
    steps = times.diff().drop_nulls()
    if steps.len() == 0:
        return _StampVotes(None)
    bar_ns = int(steps.min())  # type: ignore[arg-type]
    if (steps % bar_ns != 0).any():
        return _StampVotes(None)  # no single bar length: nothing to infer or shift by
    grid = _PAUSE_GRID_NS
    ts = pl.col("ts")
    pause = grid + bar_ns  # a step this long leaves 15 minutes or more without a bar
    resumes = ts.diff().fill_null(pause) >= pause
    if bar_ns < grid and grid % bar_ns == 0 and 2 * bar_ns != grid:
        phase = ts % grid
        pauses = ts.diff(-1).fill_null(-pause) <= -pause
        start = (resumes & (phase == 0)) | (pauses & (phase == grid - bar_ns))
        end = (resumes & (phase == bar_ns)) | (pauses & (phase == 0))
    elif bar_ns % _NS_PER_DAY:
        # Longer bars fill the quarter hours; the Globex open (18:00 New York, every day and in
        # every year) still tells: the first bar after a pause is stamped at it, or a bar later.
        # A file cut at UTC midnight resumes there: no vote (19:00 New York is 00:00 UTC).
        resumes = resumes & (ts % _NS_PER_DAY != 0)
        opens = _minute_of(GLOBEX_SESSION_END)
        start = resumes & (_new_york_minute(ts) == opens)
        end = resumes & (_new_york_minute(ts - bar_ns) == opens)
    else:
        return _StampVotes(bar_ns)
    edges = times.to_frame("ts").select(ts, start=start, end=end)
    return _StampVotes(
        bar_ns,
        start=int(edges.get_column("start").sum()),
        end=int(edges.get_column("end").sum()),
        end_example=edges.filter("end").get_column("ts").first(),  # type: ignore[arg-type]
        start_example=edges.filter("start").get_column("ts").first(),  # type: ignore[arg-type]
    )


def _new_york_minute(ns: pl.Expr) -> pl.Expr:
    """The New York minute of the day (0 .. 1439) of epoch-ns times, to the exact second."""
    local = pl.from_epoch(ns, time_unit="ns").dt.replace_time_zone("UTC")
    local = local.dt.convert_time_zone(NEW_YORK)
    on_minute = local.dt.second() == 0
    return pl.when(on_minute).then(local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute())


def _minute_of(when: time) -> int:
    return when.hour * 60 + when.minute


def _new_york(ns: int | None) -> str:
    """`ns` as New York time to the minute, or to the second when it is not on one (a 5-second
    bar at 18:00:05 is not one at 18:00)."""
    if ns is None:
        return "?"
    shown = "%Y-%m-%d %H:%M" if ns % _NS_PER_MINUTE == 0 else "%Y-%m-%d %H:%M:%S"
    return datetime.fromtimestamp(ns // _NS_PER_SECOND, _NEW_YORK).strftime(shown)


# ---------------------------------------------------------------------------------------------
# Prices on the tick grid


def off_tick_ticks(price: pl.Expr, tick_size: float) -> pl.Expr:
    """How far `price` is from the tick grid, in ticks (infinite for NaN, inf or null)."""
    ticks = price / tick_size
    return pl.when(ticks.is_finite()).then((ticks - ticks.round()).abs()).otherwise(float("inf"))


def is_on_tick(price: float, tick_size: float) -> bool:
    """The scalar form of `off_tick_ticks` within `TICK_TOLERANCE`, for one live bar."""
    ticks = price / tick_size
    return math.isfinite(ticks) and abs(ticks - round(ticks)) <= TICK_TOLERANCE


def off_tick_warning(bars: pl.DataFrame, tick_size: float, source: str) -> str | None:
    """One line counting the bars with a price off the `tick_size` grid, or None.

    Such a bar is not invalid as data (a vendor's average price, a wrong instrument in the
    configuration), but no order ever fills there, so a backtest on it is optimistic.
    """
    off = pl.any_horizontal(
        off_tick_ticks(pl.col(p), tick_size) > TICK_TOLERANCE for p in PRICE_COLUMNS
    )
    flagged = bars.select(off.alias("off"), pl.col("ts")).filter("off")
    if flagged.height == 0:
        return None
    first = iso_utc(flagged.get_column("ts")[0])
    return (
        f"{source}: {flagged.height:,} of {bars.height:,} bars have prices off the {tick_size:g} "
        f"tick grid (first at {first}); check instrument.tick_size or the data"
    )


# ---------------------------------------------------------------------------------------------
# Validation


@dataclass(frozen=True)
class _Locator:
    """Names a row as the user sees it: the CSV line (header = line 1) or the 1-based row."""

    source: str
    csv: bool

    def label(self, index: int) -> str:
        return f"line {index + 2}" if self.csv else f"row {index + 1}"


@dataclass(frozen=True)
class _Check:
    """One rule: `bad` marks offending rows, `why` explains one of them (given its row values
    and the label of the previous row). `of_a_bar`: the row is a bar, but a wrong one (a
    non-positive price, OHLC out of order, negative volume), which the quality suites find too
    and quarantine; the other rules find rows that cannot be stored as bars at all."""

    bad: pl.Expr
    why: Callable[[dict[str, Any], str], str]
    of_a_bar: bool = False


BadBars = Literal["refuse", "keep"]
"""What `validate_bars` does with a row that parses but is a wrong bar: `refuse` the data (what a
backtest reads must be right), or `keep` it for validation to quarantine (the raw stage: one bad
tick must not refuse a vendor's year of history)."""


def validate_bars(
    df: pl.DataFrame,
    source: str,
    *,
    csv: bool = False,
    ts_unit: TsUnit = "ns",
    ts_name: str = "ts",
    bad_bars: BadBars = "refuse",
) -> pl.DataFrame:
    """Parse and check raw bar columns; return them as `BAR_SCHEMA` (+ extras) or raise.

    `df` may hold the bar columns as text (as read from CSV) or typed (Parquet, in-memory frames).
    `source` names the data in messages; `csv=True` reports CSV line numbers instead of rows.
    Integer times are in `ts_unit` (`auto`: by magnitude, for files; frames made in this system
    hold ns); `ts_name` is what the file calls the time column, for messages. `bad_bars="keep"`
    keeps rows that are wrong bars (`BadBars`); rows that are no bars are always refused.
    The first offending row in data order is reported, so fixing errors top to bottom works.
    """
    missing = [c for c in BAR_COLUMNS if c not in df.columns]
    if missing:
        found = ", ".join(df.columns) or "none"
        hint = " (name the time column with --ts-column)" if "ts" in missing else ""
        raise DataError(f"{source}: missing columns {', '.join(missing)} (found: {found}){hint}")
    if df.height == 0:
        raise DataError(f"{source}: no bars (no data rows)")
    locator = _Locator(source, csv)
    parsed = pl.DataFrame(
        [
            _parse_ts(df.get_column("ts"), locator, ts_unit, ts_name),
            *(_parse_number(df.get_column(c), source) for c in (*PRICE_COLUMNS, "volume")),
        ]
    )
    raw = df.select(pl.col(c).alias(_raw(c)) for c in BAR_COLUMNS)
    work = pl.concat([parsed, raw], how="horizontal").with_columns(
        pl.col("ts").shift(1).alias("previous ts")
    )
    _raise_first_problem(
        work, locator, [c for c in _checks() if bad_bars == "refuse" or not c.of_a_bar]
    )
    bars = parsed.with_columns(_whole_volume(df.get_column("volume"), parsed.get_column("volume")))
    return pl.concat([bars, df.drop(BAR_COLUMNS)], how="horizontal")


def _raise_first_problem(work: pl.DataFrame, locator: _Locator, checks: list[_Check]) -> None:
    firsts = work.select(
        check.bad.fill_null(False).arg_true().first().alias(str(i))
        for i, check in enumerate(checks)
    ).row(0)
    found = [(index, order) for order, index in enumerate(firsts) if index is not None]
    if not found:
        return
    index, order = min(found)
    row = work.row(index, named=True)
    why = checks[order].why(row, locator.label(index - 1))
    raise DataError(f"{locator.source} {locator.label(index)}: {why}")


def _checks() -> list[_Check]:
    """The rules in the order a row's problems are reported (most basic first)."""
    return [
        *_ts_parse_checks(),
        *(check for c in (*PRICE_COLUMNS, "volume") for check in _number_checks(c)),
        *_volume_checks(),
        *_ohlc_checks(),
        *_order_checks(),
    ]


def _ts_parse_checks() -> list[_Check]:
    def missing(row: dict[str, Any], _: str) -> str:
        if all(row[_raw(c)] is None for c in BAR_COLUMNS):
            return "blank line"
        return "ts has no value"

    def unparseable(row: dict[str, Any], _: str) -> str:
        return f"ts {row[_raw('ts')]!r} is not an ISO 8601 time or an integer epoch time"

    raw_ts = pl.col(_raw("ts"))
    return [
        _Check(raw_ts.is_null(), missing),
        _Check(raw_ts.is_not_null() & pl.col("ts").is_null(), unparseable),
    ]


def _number_checks(column: str) -> list[_Check]:
    value, raw = pl.col(column), pl.col(_raw(column))
    checks = [
        _Check(raw.is_null(), lambda row, _: f"{column} has no value"),
        _Check(
            raw.is_not_null() & value.is_null(),
            lambda row, _: f"{column} {row[_raw(column)]!r} is not a number",
        ),
    ]
    if column in PRICE_COLUMNS:
        checks += [
            _Check(
                ~value.is_finite(), lambda row, _: f"{column} {_shown(row, column)} is not finite"
            ),
            _Check(
                value <= 0,
                lambda row, _: f"{column} {_shown(row, column)} is not positive",
                of_a_bar=True,
            ),
        ]
    return checks


def _volume_checks() -> list[_Check]:
    volume = pl.col("volume")
    return [
        _Check(
            ~volume.is_finite() | (volume != volume.floor()),
            lambda row, _: f"volume {_shown(row, 'volume')} is not a whole number",
        ),
        _Check(
            volume < 0,
            lambda row, _: f"volume {_shown(row, 'volume')} is negative",
            of_a_bar=True,
        ),
    ]


def _ohlc_checks() -> list[_Check]:
    high, low, open_, close = (pl.col(c) for c in ("high", "low", "open", "close"))

    def above(row: dict[str, Any], _: str) -> str:
        side = "open" if row["open"] >= row["close"] else "close"
        return f"high {_shown(row, 'high')} < {side} {_shown(row, side)}"

    def below(row: dict[str, Any], _: str) -> str:
        side = "open" if row["open"] <= row["close"] else "close"
        return f"low {_shown(row, 'low')} > {side} {_shown(row, side)}"

    return [
        _Check(
            high < low,
            lambda row, _: f"high {_shown(row, 'high')} < low {_shown(row, 'low')}",
            of_a_bar=True,
        ),
        _Check(high < pl.max_horizontal(open_, close), above, of_a_bar=True),
        _Check(low > pl.min_horizontal(open_, close), below, of_a_bar=True),
    ]


def _order_checks() -> list[_Check]:
    ts, previous = pl.col("ts"), pl.col("previous ts")

    def duplicate(row: dict[str, Any], previous_label: str) -> str:
        return f"duplicate ts {iso_utc(row['ts'])} (same as {previous_label})"

    def unsorted(row: dict[str, Any], previous_label: str) -> str:
        return (
            f"ts {iso_utc(row['ts'])} is before the previous ts "
            f"{iso_utc(row['previous ts'])} ({previous_label}); bars must be in time order"
        )

    return [_Check(ts == previous, duplicate), _Check(ts < previous, unsorted)]


def _raw(column: str) -> str:
    return f"raw {column}"


def _shown(row: dict[str, Any], column: str) -> str:
    """A value as the file wrote it (CSV text), or its Python form for typed sources."""
    raw = row[_raw(column)]
    return raw if isinstance(raw, str) else str(raw)


def iso_utc(ns: int) -> str:
    seconds, fraction = divmod(ns, _NS_PER_SECOND)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{fraction:09d}Z" if fraction else f"{text}Z"


# ---------------------------------------------------------------------------------------------
# Parsing the raw columns


def _parse_ts(ts: pl.Series, locator: _Locator, unit: TsUnit, name: str) -> pl.Series:
    """`ts` as Int64 epoch ns UTC; null where the text is not a time (reported by the checks)."""
    if ts.dtype == pl.String:
        text = ts.str.strip_chars()
        integers = text.cast(pl.Int64, strict=False)
        return _text_to_epoch_ns(text, _epoch_to_ns(integers, locator, unit, name))
    if ts.dtype.is_integer() or ts.dtype == pl.Null:
        return _epoch_to_ns(ts.cast(pl.Int64, strict=False), locator, unit, name)
    if isinstance(ts.dtype, pl.Datetime):
        _no_epoch_unit(unit, locator, name, f"holds datetimes ({ts.dtype})")
        utc = ts.dt.convert_time_zone("UTC") if ts.dtype.time_zone else ts
        return utc.dt.epoch("ns")
    raise DataError(
        f"{locator.source}: column {name} has type {ts.dtype}; expected ISO 8601 text, integer "
        "epoch times or a datetime"
    )


def _epoch_to_ns(integers: pl.Series, locator: _Locator, unit: TsUnit, name: str) -> pl.Series:
    """Integer epoch times (null where a row holds none) as ns: in `unit`, or by magnitude."""
    if integers.null_count() == integers.len():
        _no_epoch_unit(unit, locator, name, "holds no integer epoch times")
        return integers
    if unit == "auto":
        unit = _unit_by_magnitude(integers, locator, name)
    factor = _NS_PER_UNIT[unit]
    if factor == 1:
        return integers
    limit = (2**63 - 1) // factor
    beyond = ((integers > limit) | (integers < -limit)).fill_null(False).arg_true()
    if beyond.len():
        index = beyond[0]
        raise DataError(
            f"{locator.source} {locator.label(index)}: {name} {integers[index]} in "
            f"{_UNIT_NAMES[unit]} is beyond the year 2262; check --ts-unit"
        )
    return integers * factor


def _unit_by_magnitude(integers: pl.Series, locator: _Locator, name: str) -> TsUnit:
    """The one unit whose range (`_UNIT_RANGES`) holds every value, else a `DataError` with the
    fix: a guess would put the bars in another decade without any other error."""
    units = (
        pl.DataFrame({"v": integers})
        .with_row_index("index")
        .with_columns(
            pl.coalesce(
                pl.when(pl.col("v").is_between(low, high, closed="left")).then(pl.lit(unit))
                for unit, (low, high) in _UNIT_RANGES.items()
            ).alias("unit")
        )
    )
    fix = "give the unit with --ts-unit s|ms|us|ns"
    unknown = units.filter(pl.col("v").is_not_null() & pl.col("unit").is_null())
    if unknown.height:
        index, value = unknown.row(0)[:2]
        raise DataError(
            f"{locator.source} {locator.label(index)}: {name} {value} is not epoch "
            "seconds (1e9..1e10), milliseconds (1e12..1e13), microseconds (1e15..1e16) or "
            f"nanoseconds (1e18..) of a date from 2001 to 2262, so its unit is unknown; {fix}"
        )
    found = units.drop_nulls("unit").unique("unit", keep="first", maintain_order=True)
    if found.height > 1:
        (i, v, u), (j, w, t) = found.head(2).rows()
        raise DataError(
            f"{locator.source}: column {name} mixes epoch {_UNIT_NAMES[u]} ({locator.label(i)}: "
            f"{v}) and {_UNIT_NAMES[t]} ({locator.label(j)}: {w}); {fix}"
        )
    return found["unit"][0]


def _no_epoch_unit(unit: TsUnit, locator: _Locator, name: str, what: str) -> None:
    """A unit given for times that carry their own (text, datetimes) would be ignored: refuse."""
    if unit in ("s", "ms", "us"):
        raise DataError(f"{locator.source}: --ts-unit {unit}, but column {name} {what}")


def _text_to_epoch_ns(text: pl.Series, epoch_ns: pl.Series) -> pl.Series:
    """Epoch ns from integer text (already converted: `epoch_ns`) or ISO 8601.

    Each parser only sees the rows the previous ones could not read, so the usual file (one
    uniform format) pays for one fast pass and only unusual rows go through the general regex.
    """
    ts = epoch_ns
    for parse in (_canonical_iso_to_epoch_ns, _iso_to_epoch_ns):
        todo = ts.is_null() & text.is_not_null()
        if not todo.any():
            break
        ts = ts.scatter(todo.arg_true(), parse(text.filter(todo)))
    return ts


def _canonical_iso_to_epoch_ns(text: pl.Series) -> pl.Series:
    """The common `2024-06-09T22:00:00Z` form, which polars parses on a fast path."""
    wall = text.str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_unit="ns", strict=False)
    return wall.dt.epoch("ns")


def _iso_to_epoch_ns(text: pl.Series) -> pl.Series:
    """ISO 8601 text to epoch ns, exactly (to the nanosecond) and for mixed offsets in one column.

    The text is split once by a regex (the parts are materialized, as re-deriving them per use
    would run the regex five times), so `Z`, numeric offsets, naive times (UTC) and fractions of
    any length need no separate parsing passes.
    """
    parts = text.str.extract_groups(_ISO_8601).struct.unnest()
    wall = pl.concat_str("date", pl.lit("T"), "hm", pl.col("sec").fill_null(":00"))
    wall_ns = wall.str.to_datetime("%Y-%m-%dT%H:%M:%S", time_unit="ns", strict=False).dt.epoch("ns")
    fraction_ns = pl.col("frac").str.pad_end(9, "0").cast(pl.Int64).fill_null(0)
    return parts.select((wall_ns + fraction_ns - _utc_offset_ns(pl.col("tz"))).alias("ts"))["ts"]


def _utc_offset_ns(tz: pl.Expr) -> pl.Expr:
    digits = tz.str.replace(":", "", literal=True).str.slice(1)
    hours = digits.str.slice(0, 2).cast(pl.Int64, strict=False).fill_null(0)
    minutes = digits.str.slice(2, 2).cast(pl.Int64, strict=False).fill_null(0)
    sign = pl.when(tz.str.starts_with("-")).then(-1).otherwise(1)
    return sign * (hours * 3600 + minutes * 60) * _NS_PER_SECOND


def _parse_number(value: pl.Series, source: str) -> pl.Series:
    """A price or volume column as Float64, the form the checks work on (NaN, whole, sign)."""
    if value.dtype == pl.String:
        return value.str.strip_chars().cast(pl.Float64, strict=False)
    if value.dtype.is_numeric() or value.dtype == pl.Null:
        return value.cast(pl.Float64)
    raise DataError(f"{source}: column {value.name} has type {value.dtype}; expected numbers")


def _whole_volume(raw: pl.Series, checked: pl.Series) -> pl.Series:
    """The checked volume as Int64, taken from the integers themselves where the source has them
    (a float64 detour would round volumes above 2**53)."""
    if raw.dtype.is_integer():
        return raw.cast(pl.Int64)
    whole = checked.cast(pl.Int64)
    if raw.dtype == pl.String:
        return raw.str.strip_chars().cast(pl.Int64, strict=False).fill_null(whole)
    return whole
