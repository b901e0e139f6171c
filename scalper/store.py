"""The bar store (SPEC §3): Parquet partitioned by symbol and UTC date under the data directory.

Layout, below a stage's root (`stage_root`) or an explicit root (Hive style, so polars, pyarrow
and DuckDB read it as one dataset and prune partitions from a date filter)::

    symbol=MES/date=2024-06-10/bars.parquet         the day's bars (BAR_SCHEMA + extras)
    symbol=MES/date=2024-06-10/quarantine.parquet   rows set aside by validation, with `reason`
    symbol=MES/date=2024-06-10/status.json          the validation record of the day
    symbol=MES/date=2024-06-10/origin.json          raw stage: the source that delivered the day

A "symbol" is a series name: a product (`MES`, a continuous series) or one contract (`ESZ3`).
A day is the UTC date of the bars' `ts`, so a partition never depends on session rules that might
change, and re-downloading a day maps to exactly one file.

Writes are whole days: writing a day replaces it (re-runs are idempotent and never duplicate a
bar) through a temporary file and an atomic rename, so readers see the old day or the new one,
never a mix. The store assumes one writer at a time (a Dagster run or a CLI command); readers are
safe at any time. Replacing a day's bars also drops its quarantine and status, because they
described the old bars: stale "validated" flags on new data are how bad bars reach a backtest.

Validation never deletes bars. It copies offending rows to the quarantine with a reason and records
counts in the status; `read_range(..., validated_only=True)` is what downstream code uses to get
only checked data (see `is_validated`).

**Stages.** The data pipeline keeps one store per stage, below `<SCALPER_HOME>/bars`, and the
Dagster assets and the CLI read and write the same ones (so data made by either is the other's):

* `raw/` — what a source delivered (simulator, vendor file, IBKR), untouched, so a day can be
  validated again under new quality settings without fetching it again. It is the default root:
  what the functions below store when given no root.
* `validated/` — each validated day: its bars, `quarantine.parquet` and `status.json`
  (`quality.store_days` writes them);
* `continuous/` — the front-contract series of each product, unadjusted, each bar naming its
  `contract`, marked like validated days (`scalper.continuous.build_continuous`).

**Series.** A product's bars are stored as one series named after the product (`MES`) when the
source delivers a single series (simulator, normalized or Eastern-time files, IBKR's front
series), or as one series per contract (`ESZ3`, `ESH4`, ...) when it delivers contracts (Lean
zips, IBKR per contract); `product_of` maps a series back to its product. Only per-contract bars
can be back-adjusted: the roll gap is measured where the old and new contract both traded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import polars as pl

from scalper.bars import BAR_COLUMNS, BAR_SCHEMA, iso_utc, write_bars
from scalper.errors import DataError, ScalperError
from scalper.files import atomic_write, make_folder
from scalper.instruments import INSTRUMENTS, MONTH_CODES
from scalper.paths import subdir_path
from scalper.progress import track

BARS_FILE = "bars.parquet"
QUARANTINE_FILE = "quarantine.parquet"
STATUS_FILE = "status.json"
ORIGIN_FILE = "origin.json"
"""Which source delivered a raw day (`simulator`, `file`, `ibkr`): what research records as the
provenance of the parameters it approves, so simulated days can never pass for market data."""
STATUS_COUNTS = ("validated", "failed", "quarantined")
"""Counts every status record holds (rows that passed, problems not set aside, rows set aside)."""

_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RESERVED = ("date",)  # Hive-aware readers (pyarrow, DuckDB) take `date` from the folder name


Stage = Literal["raw", "validated", "continuous"]


def stage_root(stage: Stage) -> Path:
    """The store of one stage of the data pipeline: `<SCALPER_HOME>/bars/<stage>`."""
    return subdir_path("bars") / stage  # writers create their day's folder (`_replace_day`)


def root_dir(root: str | Path | None = None) -> Path:
    """The store's root folder: `root` if given, else the raw stage's."""
    return Path(root) if root is not None else stage_root("raw")


def partition_dir(symbol: str, day: date, root: str | Path | None = None) -> Path:
    """The folder of one day of one symbol (it may not exist)."""
    return _symbol_dir(symbol, root) / f"date={day.isoformat()}"


# ---------------------------------------------------------------------------------------------
# Bars


def write_bars_partitioned(
    df: pl.DataFrame,
    symbol: str,
    root: str | Path | None = None,
    *,
    progress: bool | None = None,
    source: str | None = None,
) -> list[date]:
    """Store `df` as `symbol`, one file per UTC day; each day in `df` replaces that stored day.

    `df` holds `BAR_SCHEMA` columns and any extras (e.g. `contract`); a `symbol` column, if any,
    must equal `symbol` and is not stored (it is the partition). Pass whole days: a day's file
    becomes exactly the rows given for it. `source` (raw days) is recorded as the day's origin
    (`ORIGIN_FILE`). Returns the days written, ascending.
    """
    frame = _storable(df, symbol)
    by_day = frame.with_columns(utc_day().alias("date")).partition_by("date", as_dict=True)
    days = sorted(by_day)
    for key in track(days, f"store {symbol}", unit="days", enabled=progress):
        folder = partition_dir(symbol, key[0], root)
        _replace_day(folder, by_day[key].drop("date"))
        if source is not None:
            with atomic_write(folder / ORIGIN_FILE) as fh:
                fh.write(json.dumps({"source": source}).encode())
    return [key[0] for key in days]


def raw_source(product: str, first: date, last: date) -> str:
    """The source that delivered the raw days `first` … `last` of `product` (its contracts
    too): one name, `unknown` (nothing recorded: stored before origins were, or none stored)
    or `mixed: a, b`. Research records it in the provenance of what it approves."""
    root = stage_root("raw")
    found = set()
    for series in stored_series(product, "raw"):
        for day in partitions(series, root):
            if first <= day <= last:
                found.add(_origin(partition_dir(series, day, root)))
    if len(found) == 1:
        return found.pop()
    return f"mixed: {', '.join(sorted(found))}" if found else "unknown"


def _origin(folder: Path) -> str:
    try:
        return str(json.loads((folder / ORIGIN_FILE).read_text())["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def read_range(
    symbol: str,
    start: date,
    end: date,
    root: str | Path | None = None,
    *,
    validated_only: bool = False,
) -> pl.DataFrame:
    """The stored bars of `symbol` for the UTC days `start` … `end` (inclusive), in time order.

    Only the files of those days are opened: the lazy scan is given just their paths, in day
    order. Returns the bar columns, stored extras and `symbol`. With `validated_only`, every
    stored day in the range must be validated (else a `DataError` names the first one that is
    not) and quarantined rows are left out.
    """
    days = [d for d in partitions(symbol, root) if start <= d <= end]
    if not days:
        return pl.DataFrame(schema={**BAR_SCHEMA, "symbol": pl.String()})
    scan = pl.scan_parquet([partition_dir(symbol, d, root) / BARS_FILE for d in days])
    if validated_only:
        _require_validated(symbol, days, root)
        set_aside = [read_quarantine(symbol, d, root).select("ts") for d in days]
        scan = scan.join(pl.concat(set_aside).lazy(), on="ts", how="anti", maintain_order="left")
    return scan.with_columns(symbol=pl.lit(symbol, dtype=pl.String)).collect()


def partitions(symbol: str, root: str | Path | None = None) -> list[date]:
    """The UTC days stored for `symbol`, ascending (empty when there are none)."""
    found = []
    for path in _symbol_dir(symbol, root).glob(f"date=*/{BARS_FILE}"):
        text = path.parent.name.removeprefix("date=")
        try:
            found.append(date.fromisoformat(text))
        except ValueError:
            raise DataError(f"{path.parent}: not a store partition (bad date {text!r})") from None
    return sorted(found)


def delete_day(symbol: str, day: date, root: str | Path | None = None) -> bool:
    """Remove a stored day with its quarantine and status; False when there was nothing stored.

    The folder is first renamed out of the dataset (atomic), so a reader never sees half of it.
    """
    folder = partition_dir(symbol, day, root)
    if not folder.exists():
        return False
    doomed = folder.with_name(f".deleting-{folder.name}-{os.getpid()}")
    folder.rename(doomed)
    shutil.rmtree(doomed)
    return True


# ---------------------------------------------------------------------------------------------
# Stages and series


def utc_day() -> pl.Expr:
    """The UTC date of `ts`: the store's partition of a bar."""
    return pl.from_epoch("ts", time_unit="ns").dt.date()


def days_between(first: date, last: date) -> list[date]:
    """Every UTC day `first` … `last` (inclusive): the partitions a range of days asks for."""
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def day_span(bars: pl.DataFrame) -> str:
    """The UTC days of `bars` as a short label: `2024-01-08`, or `2024-01-07..2024-01-13`."""
    first, last = bars.select(utc_day().min().alias("first"), utc_day().max().alias("last")).row(0)
    return str(first) if first == last else f"{first}..{last}"


def product_of(series: str) -> str:
    """`ESZ3` → `ES` (a contract: product, month code, year digit); a product is its own."""
    is_contract = len(series) > 2 and series[-2] in MONTH_CODES and series[-1].isdigit()
    return series[:-2] if is_contract and series[:-2] in INSTRUMENTS else series


def stored_series(product: str, stage: Stage) -> list[str]:
    """The series of `product` in a stage: the product itself, or its contracts (`ESZ3`)."""
    names = (p.name.removeprefix("symbol=") for p in stage_root(stage).glob("symbol=*"))
    return sorted(name for name in names if product_of(name) == product)


def by_series(bars: pl.DataFrame, product: str) -> dict[str, pl.DataFrame]:
    """A source's frame as the series it is stored as: per contract, or the product's one."""
    bars = bars.drop("symbol", strict=False)
    if "contract" not in bars.columns:
        return {product: bars} if bars.height else {}
    return {name: part for (name,), part in bars.partition_by("contract", as_dict=True).items()}


def read_days(series: str, days: Sequence[date], stage: Stage) -> pl.DataFrame:
    """The stored bars of `series` on exactly `days` (as stored: quarantined bars included)."""
    bars = read_range(series, min(days), max(days), stage_root(stage))
    return bars.filter(utc_day().is_in(days))


def replace_days(
    frames: Mapping[str, pl.DataFrame],
    product: str,
    days: Sequence[date],
    stage: Stage,
    *,
    progress: bool | None = False,
    source: str | None = None,
) -> None:
    """Make `days` of `product` in a stage hold exactly `frames` (series → bars): each series'
    days are replaced, and the days a series no longer has are deleted, so a re-run never leaves
    stale bars (or a stale "validated" flag) behind. `source`: as `write_bars_partitioned`."""
    root = stage_root(stage)
    written = {
        name: set(write_bars_partitioned(bars, name, root, progress=progress, source=source))
        for name, bars in frames.items()
    }
    for name in stored_series(product, stage):
        for day in set(days) - written.get(name, set()):
            delete_day(name, day, root)


def store_raw(
    bars: pl.DataFrame,
    product: str,
    days: Sequence[date],
    *,
    source: str,
    progress: bool | None = False,
) -> dict[str, pl.DataFrame]:
    """Store a source's bars of `product` as the raw stage's `days` (the bars outside them are
    not stored), recording `source` (`simulator`, `file`, `ibkr`) as each day's origin; returns
    the series stored. The one way bars enter the pipeline, from the `raw_bars` asset and from
    `scalper data simulate|import` alike."""
    series = by_series(bars.filter(utc_day().is_in(days)), product)
    replace_days(series, product, days, "raw", progress=progress, source=source)
    return series


# ---------------------------------------------------------------------------------------------
# Quarantine and status


def quarantine(symbol: str, day: date, rows: pl.DataFrame, root: str | Path | None = None) -> int:
    """Set `rows` of a stored day aside, each with its `reason`; replaces the day's quarantine.

    The rows stay in the day's bars too (validation never deletes data); readers asking for
    validated bars skip them. Empty `rows` clears the quarantine. Returns the number of rows kept.
    """
    target = _existing_partition(symbol, day, root) / QUARANTINE_FILE
    if rows.height == 0:
        target.unlink(missing_ok=True)
        return 0
    where = f"quarantine {symbol} {day}"
    _require_columns(rows, (*BAR_COLUMNS, "reason"), where)
    if rows.get_column("reason").null_count():
        raise DataError(f"{where}: every row needs a reason")
    typed = _typed(rows, where)
    outside = typed.filter(utc_day() != day).get_column("ts")
    if outside.len():
        raise DataError(f"{where}: the row at {iso_utc(outside[0])} is not on that UTC day")
    write_bars(typed, target)
    return rows.height


def read_quarantine(symbol: str, day: date, root: str | Path | None = None) -> pl.DataFrame:
    """The rows set aside for a day, with `reason` (an empty frame when there are none)."""
    path = partition_dir(symbol, day, root) / QUARANTINE_FILE
    if not path.is_file():
        return pl.DataFrame(schema={**BAR_SCHEMA, "reason": pl.String()})
    return pl.read_parquet(path)


def mark_partition(
    symbol: str, day: date, status: Mapping[str, Any], root: str | Path | None = None
) -> dict[str, Any]:
    """Record the validation result of a stored day; returns the record as written.

    `status` must hold the counts `validated`, `failed` and `quarantined` (whole numbers ≥ 0) and
    may hold more JSON values (suite name, Data Docs path, …). `marked_at` (UTC) is added.
    """
    folder = _existing_partition(symbol, day, root)
    where = f"status of {symbol} {day}"
    for key in STATUS_COUNTS:
        value = status.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DataError(f"{where}: {key} must be a whole number ≥ 0 (got {value!r})")
    record = {**status, "marked_at": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        text = json.dumps(record, indent=2, sort_keys=True)
    except TypeError as exc:
        raise DataError(f"{where}: not JSON data ({exc})") from None
    with atomic_write(folder / STATUS_FILE) as fh:
        fh.write(text.encode())
    return record


def partition_status(
    symbol: str, day: date, root: str | Path | None = None
) -> dict[str, Any] | None:
    """The validation record of a stored day, or None if it was never validated since written."""
    path = partition_dir(symbol, day, root) / STATUS_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def is_validated(status: Mapping[str, Any] | None) -> bool:
    """Whether downstream work may use a day: validated, and every failure set aside.

    Rows in the quarantine are excluded by `read_range`; a failure that is not a row could not be
    set aside and would make the whole day unusable. Validation (`quality.store_days`) records
    none (a hole in a session is a warning, bad bars are set aside), but a record written by an
    older version that refused days with holes may: validating the day again replaces it.
    """
    return status is not None and status["failed"] == 0


def _require_validated(symbol: str, days: list[date], root: str | Path | None) -> None:
    for day in days:
        status = partition_status(symbol, day, root)
        if status is None:
            raise DataError(f"{symbol} {day}: bars not validated yet (run `scalper validate`)")
        if not is_validated(status):
            raise DataError(f"{symbol} {day}: failed validation ({status['failed']} failures)")


# ---------------------------------------------------------------------------------------------
# Helpers


def _symbol_dir(symbol: str, root: str | Path | None) -> Path:
    _check_symbol(symbol)
    return root_dir(root) / f"symbol={symbol}"


def _check_symbol(symbol: str) -> None:
    """A symbol is a folder name: nothing that could climb out of the store or nest in it."""
    if not _SYMBOL.match(symbol):
        raise ScalperError(
            f"bad store symbol {symbol!r}: use letters, digits, '.', '_' or '-' (e.g. MES, ESZ3)"
        )


def _existing_partition(symbol: str, day: date, root: str | Path | None) -> Path:
    folder = partition_dir(symbol, day, root)
    if not (folder / BARS_FILE).is_file():
        raise DataError(f"{symbol} {day}: no bars stored for that day in {root_dir(root)}")
    return folder


def _require_columns(df: pl.DataFrame, columns: tuple[str, ...], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing columns {', '.join(missing)}")


def _typed(df: pl.DataFrame, where: str) -> pl.DataFrame:
    """The bar columns cast to `BAR_SCHEMA` (a lossless cast, else a `DataError`)."""
    try:
        return df.with_columns(pl.col(c).cast(t, strict=True) for c, t in BAR_SCHEMA.items())
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{where}: bar columns do not fit the bar schema ({exc})") from None


def _storable(df: pl.DataFrame, symbol: str) -> pl.DataFrame:
    """`df` as it is stored: typed, without `symbol`, in time order, one bar per `ts`."""
    where = f"store {symbol}"
    _check_symbol(symbol)
    _require_columns(df, BAR_COLUMNS, where)
    reserved = [c for c in _RESERVED if c in df.columns]
    if reserved:
        raise DataError(f"{where}: column {reserved[0]!r} is reserved for the partition")
    if "symbol" in df.columns:
        others = sorted(set(df.get_column("symbol").drop_nulls().to_list()) - {symbol})
        if others:
            raise DataError(f"{where}: some bars are for {', '.join(map(str, others))}")
        df = df.drop("symbol")
    frame = _typed(df, where)
    if frame.get_column("ts").null_count():
        raise DataError(f"{where}: a bar has no ts")
    frame = frame.sort("ts", maintain_order=True)
    repeated = frame.filter(pl.col("ts").is_duplicated())
    if repeated.height:
        raise DataError(f"{where}: more than one bar at {iso_utc(repeated['ts'][0])}")
    return frame


def _replace_day(folder: Path, bars: pl.DataFrame) -> None:
    """Status first, then quarantine, then the bars: a crash leaves a day unvalidated, never a
    stale "validated" record over new bars."""
    make_folder(folder)  # the first write creates the store: a bad data directory is one line
    (folder / STATUS_FILE).unlink(missing_ok=True)
    (folder / ORIGIN_FILE).unlink(missing_ok=True)  # its writer records the new bars' source
    (folder / QUARANTINE_FILE).unlink(missing_ok=True)
    write_bars(bars, folder / BARS_FILE)
