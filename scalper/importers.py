"""Vendor bar files to normalized bars (SPEC §3): `import_file`, with one reader per layout.

Layouts (`cfg.data.format`):

* `normalized` — the project's own CSV/Parquet format, read by `scalper.bars.read_bars`.
* `lean_zip` — QuantConnect Lean's futures minute data: one zip per UTC day
  (`minute_es_20131218_trade.zip`) holding one headerless CSV per contract month
  (`20131218_es_minute_trade_201403.csv`), rows `ms_since_midnight,open,high,low,close,volume`,
  bars stamped at their start. Lean keeps *equity* prices in deci-cents (×10000) but futures
  prices as traded: the ES files hold 1780.25, not 17802500, and match the derived
  `es_front_1m_2013_2020.csv` to the bar, so prices are taken as written. The result has one row
  per contract and minute with a `contract` column (IB local symbol, e.g. `ESZ3`), because building
  a continuous series (`scalper.continuous`) means choosing among the contracts.
* `eastern_csv` — `timestamp,open,high,low,close,volume` with `timestamp` the bar start as
  New York wall-clock time (`2024-03-11 09:30:00`, `T` or a space, seconds optional); see
  `_new_york_to_utc_ns` for the DST rules.

`BarFileSpec` says how to read the times where a layout leaves it open: the time column of
`normalized` and `eastern_csv` files, the unit of `normalized` epoch integers, and for every
layout whether the times are bar starts or ends (`scalper.bars.to_bar_starts`, checked on the
whole import). Lean's times are defined by the layout
(ms since midnight of the file's UTC day, bar starts), so a column or a unit given for them is an
error rather than ignored.

A folder imports every matching file in name order (vendors name files by date) with a progress
bar; each series must continue where the previous file stopped, so overlapping downloads are caught
instead of silently duplicated. Every output has passed `validate_bars` (per contract for
`lean_zip`): rows that are no bars (unparseable, out of time order) are refused with the file and
line. Rows that are wrong bars (OHLC out of order, a non-positive price, negative volume: a
vendor's bad tick) are imported as delivered, never dropped, and `scalper validate` quarantines
each with the reason: one bad tick must not refuse a year of history (`BadBars`).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import get_args

import polars as pl

from scalper.bars import (
    BAR_COLUMNS,
    CHECKED_STARTS,
    PRICE_COLUMNS,
    BarFileSpec,
    check_symbol,
    iso_utc,
    read_bars,
    to_bar_starts,
    validate_bars,
)
from scalper.calendar import NEW_YORK
from scalper.config import FileFormat
from scalper.errors import DataError, ScalperError
from scalper.instruments import Contract
from scalper.progress import track

FORMATS: tuple[str, ...] = get_args(FileFormat)

_SUFFIXES: dict[str, tuple[str, ...]] = {
    "normalized": (".csv", ".csv.gz", ".parquet", ".pq"),
    "lean_zip": (".zip",),
    "eastern_csv": (".csv", ".csv.gz"),
}
_LEAN_MEMBER = re.compile(r"^(?P<day>\d{8})_(?P<ticker>[a-z0-9]+)_minute_trade_(?P<ym>\d{6})\.csv$")
_LEAN_COLUMNS = ("ms", *PRICE_COLUMNS, "volume")
_EPOCH = date(1970, 1, 1)
_MS_PER_DAY = 86_400_000
_NS_PER_MS = 1_000_000
_WALL_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")


def import_file(
    path: str | Path,
    fmt: str,
    symbol: str,
    *,
    spec: BarFileSpec = CHECKED_STARTS,
    progress: bool | None = None,
) -> pl.DataFrame:
    """Import one file, or every `fmt` file of a folder, as bars of `symbol`, times read by `spec`.

    Returns `BAR_SCHEMA` columns and `symbol`, plus `contract` for `lean_zip` (rows then ordered by
    `ts`, then `contract`; each contract's rows form a valid series on their own).
    """
    if fmt not in FORMATS:
        raise ScalperError(f"unknown import format {fmt!r} (known: {', '.join(FORMATS)})")
    files = _files(Path(path), fmt)
    reader = _READERS[fmt]
    frames = [
        reader(file, symbol, spec).with_columns(_file=pl.lit(i, dtype=pl.UInt32))
        for i, file in enumerate(track(files, f"import {fmt}", unit="files", enabled=progress))
    ]
    combined = pl.concat(frames, how="vertical")
    series = ["contract"] if fmt == "lean_zip" else []
    _check_files_follow(combined, series, files)
    combined = to_bar_starts(combined, spec.stamped, str(path))
    if series:
        combined = combined.sort("ts", "contract")
    return combined.drop("_file").with_columns(symbol=pl.lit(symbol, dtype=pl.String))


def _files(path: Path, fmt: str) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    suffixes = _SUFFIXES[fmt]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(suffixes))
    if not files:
        raise DataError(f"{path}: no {fmt} files in the folder (looked for {', '.join(suffixes)})")
    return files


def _check_files_follow(bars: pl.DataFrame, series: list[str], files: list[Path]) -> None:
    """Each file is in order (validated), so any step back in time is at a file boundary."""

    def previous(column: str) -> pl.Expr:
        shifted = pl.col(column).shift(1)
        return shifted.over(series) if series else shifted

    clash = bars.with_columns(previous=previous("_file"), end=previous("ts"))
    clash = clash.filter(pl.col("ts") <= pl.col("end"))
    if clash.height:
        row = clash.row(0, named=True)
        raise DataError(
            f"{files[row['_file']]}: starts at {iso_utc(row['ts'])}, not after the end of "
            f"{files[row['previous']].name} ({iso_utc(row['end'])}); files overlap or are out of "
            "order"
        )


def _read_text_csv(
    source: Path | bytes, where: str, columns: tuple[str, ...] | None
) -> pl.DataFrame:
    """A CSV with every column as text (`validate_bars` parses and reports bad values by line).

    `columns` names the columns of a headerless file; None reads the header.
    """
    try:
        if columns is None:
            return pl.read_csv(source, infer_schema=False)
        return pl.read_csv(source, has_header=False, new_columns=list(columns), infer_schema=False)
    except pl.exceptions.NoDataError:
        raise DataError(f"{where}: the file is empty") from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{where}: cannot read CSV: {first}") from None


# ---------------------------------------------------------------------------------------------
# normalized


def _read_normalized(path: Path, symbol: str, spec: BarFileSpec) -> pl.DataFrame:
    bars = read_bars(path, spec, restamp=False, bad_bars="keep")
    check_symbol(bars, symbol, str(path))
    return bars.drop("symbol", strict=False)


# ---------------------------------------------------------------------------------------------
# lean_zip


def _read_lean_zip(path: Path, symbol: str, spec: BarFileSpec) -> pl.DataFrame:
    """Every contract of one Lean day zip, as bars with a `contract` column."""
    if spec.ts_column is not None or spec.ts_unit != "auto":
        raise DataError(
            f"{path}: lean_zip times are ms since midnight of the file's UTC day, by the layout; "
            "--ts-column and --ts-unit do not apply"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: cannot read the zip: {exc}") from None
    if not members:
        raise DataError(f"{path}: the zip is empty")
    frames = [
        _read_lean_member(f"{path}:{name}", name, data, symbol) for name, data in members.items()
    ]
    return pl.concat(frames, how="vertical").sort("ts", "contract")


def _read_lean_member(where: str, name: str, data: bytes, symbol: str) -> pl.DataFrame:
    day, contract = _lean_member_facts(where, Path(name).name, symbol)
    raw = _read_text_csv(data, where, _LEAN_COLUMNS)
    ms = raw.get_column("ms").str.strip_chars().cast(pl.Int64, strict=False)
    bad = (ms.is_null() | (ms < 0) | (ms >= _MS_PER_DAY)).arg_true()
    if bad.len():
        row = bad[0]
        raise DataError(f"{where} row {row + 1}: {raw['ms'][row]!r} is not ms since midnight")
    ts = (ms + (day - _EPOCH).days * _MS_PER_DAY) * _NS_PER_MS
    bars = validate_bars(raw.with_columns(ts=ts).select(BAR_COLUMNS), where, bad_bars="keep")
    return bars.with_columns(contract=pl.lit(contract.local_symbol, dtype=pl.String))


def _lean_member_facts(where: str, name: str, symbol: str) -> tuple[date, Contract]:
    """The UTC day and the contract a Lean member file holds, from its name."""
    match = _LEAN_MEMBER.match(name)
    if match is None:
        raise DataError(
            f"{where}: not a Lean minute trade file (DATE_TICKER_minute_trade_YYYYMM.csv)"
        )
    if match["ticker"] != symbol.lower():
        raise DataError(f"{where}: holds {match['ticker'].upper()} bars, not {symbol}")
    day = datetime.strptime(match["day"], "%Y%m%d").date()
    return day, Contract(symbol, int(match["ym"][:4]), int(match["ym"][4:]))


# ---------------------------------------------------------------------------------------------
# eastern_csv


def _read_eastern_csv(path: Path, symbol: str, spec: BarFileSpec) -> pl.DataFrame:
    where = str(path)
    if spec.ts_unit != "auto":
        raise DataError(f"{where}: eastern_csv times are New York wall-clock text; no --ts-unit")
    raw = _read_text_csv(path, where, None)
    column = spec.column("timestamp")
    missing = [c for c in (column, *BAR_COLUMNS[1:]) if c not in raw.columns]
    if missing:
        found = ", ".join(raw.columns) or "none"
        hint = " (name the time column with --ts-column)" if column in missing else ""
        raise DataError(f"{where}: missing columns {', '.join(missing)} (found: {found}){hint}")
    ts = _new_york_to_utc_ns(raw.get_column(column), where)
    return validate_bars(
        raw.with_columns(ts=ts).select(BAR_COLUMNS), where, csv=True, bad_bars="keep"
    )


def _new_york_to_utc_ns(text: pl.Series, where: str) -> pl.Series:
    """New York wall-clock bar starts (CSV text) as epoch ns UTC, DST-correct.

    * Spring forward (02:00 → 03:00, second Sunday of March): 02:xx does not exist in New York,
      so such a row is an error naming its line (CME is closed then; the stamp is a vendor bug).
    * Fall back (02:00 → 01:00, first Sunday of November): 01:00–01:59 happens twice. A file in
      time order goes through it first in EDT (UTC-4), then again in EST (UTC-5), its clock
      stepping back; so a wall time is read as the *later* instant when the file has already shown
      a later wall time, and as the *earlier* one otherwise. That is deterministic and right for
      every file in time order that lists both passes; a file listing the hour once gets EDT.
    """
    clean = pl.col("text").str.strip_chars().str.replace("T", " ", literal=True)
    wall = pl.coalesce(
        clean.str.to_datetime(fmt, time_unit="ns", strict=False) for fmt in _WALL_FORMATS
    )
    frame = pl.DataFrame({"text": text}).with_columns(wall=wall)
    _raise_first(
        frame,
        pl.col("text").is_not_null() & pl.col("wall").is_null(),
        where,
        "is not a date and time (YYYY-MM-DD HH:MM[:SS])",
    )
    second_pass = pl.col("wall") <= pl.col("wall").shift(1).cum_max()
    ambiguous = pl.when(second_pass).then(pl.lit("latest")).otherwise(pl.lit("earliest"))
    local = pl.col("wall").dt.replace_time_zone(NEW_YORK, ambiguous=ambiguous, non_existent="null")
    frame = frame.with_columns(ts=local.dt.epoch("ns"))
    _raise_first(
        frame,
        pl.col("wall").is_not_null() & pl.col("ts").is_null(),
        where,
        "does not exist in New York (the hour skipped when DST starts)",
    )
    return frame.get_column("ts")


def _raise_first(frame: pl.DataFrame, bad: pl.Expr, where: str, why: str) -> None:
    """A `DataError` for the first row where `bad` holds: CSV line, then `why` with its text."""
    rows = frame.select(bad.arg_true()).to_series()
    if rows.len():
        row = rows[0]
        raise DataError(f"{where} line {row + 2}: timestamp {frame['text'][row]!r} {why}")


# A reader takes the file, the symbol the user says it holds (checked where the file names it)
# and how to read its times.
_READERS: dict[str, Callable[[Path, str, BarFileSpec], pl.DataFrame]] = {
    "normalized": _read_normalized,
    "lean_zip": _read_lean_zip,
    "eastern_csv": _read_eastern_csv,
}
