"""`scalper validate`: run the bar expectations (Great Expectations) from the command line.

Two sources:

* `--file F` — a normalized bars file (read by `read_bars`, which already rejects rows that are
  no bars with their line number, and keeps wrong bars for the suites to count and name); one
  verdict line, nothing is written.
* the bar store — the raw days of `--symbol` (a product: its contracts too), `--start … --end`
  or every stored day, validated into the `validated` stage by `quality.store_days`, the function
  behind the `validated_bars` asset: each day gets its quarantine (failing bars with the reason)
  and its status record, which is what lets `scalper data continuous` and every reader of
  validated bars use the day. One verdict line per day.

The exit code is 1 when any file or day fails, so scripts and cron jobs can act on it. Great
Expectations is imported inside the handler: `scalper --help` and the other commands stay fast.
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from scalper.cli import add_bar_file_options, instrument_symbol, iso_date

if TYPE_CHECKING:
    from scalper.bars import BarFileSpec
    from scalper.config import Config


def register(sub: argparse._SubParsersAction) -> None:
    validate = sub.add_parser(
        "validate", help="validate raw bars into the store's validated stage (or check a file)"
    )
    validate.add_argument(
        "--symbol", type=instrument_symbol, help="product (default: instrument.symbol)"
    )
    source = validate.add_mutually_exclusive_group()
    source.add_argument("--file", type=Path, help="validate this bars file instead of the store")
    source.add_argument("--start", type=iso_date, help="first stored UTC day, YYYY-MM-DD")
    validate.add_argument("--end", type=iso_date, help="last stored UTC day (default: --start)")
    validate.add_argument("--docs", action="store_true", help="also build the GX Data Docs")
    validate.add_argument("--config", help="configuration YAML (default: built-in defaults)")
    add_bar_file_options(validate)
    validate.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    from scalper.cli import bar_file_spec, refuse_bar_file_options
    from scalper.config import load_config
    from scalper.errors import ScalperError

    if args.end and not args.start:
        raise ScalperError("validate: --end needs --start")
    cfg = load_config(args.config)
    symbol = args.symbol or cfg.instrument.symbol
    if args.file:
        return _validate_file(args.file, bar_file_spec(args, cfg.data), symbol, cfg, docs=args.docs)
    refuse_bar_file_options(args, "they say how to read a --file, not the store")
    return _validate_store(symbol, args.start, args.end or args.start, cfg, docs=args.docs)


def _validate_file(path: Path, spec: BarFileSpec, symbol: str, cfg: Config, *, docs: bool) -> int:
    from quality import build_data_docs, validate_frame
    from scalper.bars import read_bars
    from scalper.cli import warn_about_times

    bars = read_bars(path, spec, bad_bars="keep")  # every wrong bar in the verdict, not the first
    warn_about_times(bars, spec, path)
    result = validate_frame(bars, symbol=symbol, cfg=cfg, name=str(path))
    print(result.summary())
    if docs:
        print(f"Data Docs: {build_data_docs([result])}")
    return 0 if result.success else 1


def _validate_store(
    symbol: str, start: date | None, end: date | None, cfg: Config, *, docs: bool
) -> int:
    """Validate the stored raw days into the validated stage; print each day's verdict."""
    from quality.store_days import validate_stored_days
    from scalper import store
    from scalper.errors import ScalperError

    raw = store.stage_root("raw")
    stored = sorted(
        {day for s in store.stored_series(symbol, "raw") for day in store.partitions(s, raw)}
    )
    in_range = [d for d in stored if start is None or start <= d <= end]
    if not in_range:
        span = "" if start is None else f" from {start} to {end}"
        raise ScalperError(f"validate: no stored {symbol} bars{span} in {raw}")
    # A range is validated whole, so a day whose raw bars are gone is emptied, as the asset does.
    days = in_range if start is None else store.days_between(start, end)
    validated = validate_stored_days({symbol: days}, cfg, data_docs=docs, progress=None)
    for line in validated.day_lines():
        print(line)
    if validated.data_docs:
        print(f"Data Docs: {validated.data_docs}")
    return 0 if validated.success else 1
