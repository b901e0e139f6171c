"""`scalper validate`: run the bar expectations (Great Expectations) from the command line.

Two sources, one verdict line each:

* `--file F` — a normalized bars file (read by `read_bars`, which already rejects structurally
  broken rows with their line number); nothing is written.
* the bar store — every stored UTC day of `--start … --end` (all days without `--start`). Each day
  gets its quarantine (failing bars with the reason) and its status record written to the store,
  which is what lets downstream readers (`read_range(..., validated_only=True)`) use the day.

The exit code is 1 when any file or day fails, so scripts and cron jobs can act on it. Great
Expectations is imported inside the handler: `scalper --help` and the other commands stay fast.
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from scalper.cli import iso_date

if TYPE_CHECKING:
    from quality import QualityResult
    from scalper.config import Config


def register(sub: argparse._SubParsersAction) -> None:
    validate = sub.add_parser("validate", help="check bars with the data-quality expectations")
    validate.add_argument("--symbol", help="instrument (default: instrument.symbol)")
    source = validate.add_mutually_exclusive_group()
    source.add_argument("--file", type=Path, help="validate this bars file instead of the store")
    source.add_argument("--start", type=iso_date, help="first stored UTC day, YYYY-MM-DD")
    validate.add_argument("--end", type=iso_date, help="last stored UTC day (default: --start)")
    validate.add_argument("--docs", action="store_true", help="also build the GX Data Docs")
    validate.add_argument("--config", help="configuration YAML (default: built-in defaults)")
    validate.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    from quality import build_data_docs
    from scalper.config import load_config
    from scalper.errors import ScalperError

    if args.end and not args.start:
        raise ScalperError("validate: --end needs --start")
    cfg = load_config(args.config)
    symbol = args.symbol or cfg.instrument.symbol
    if args.file:
        results = [_validate_file(args.file, symbol, cfg)]
    else:
        results = _validate_store(symbol, args.start, args.end or args.start, cfg)
    if args.docs:
        print(f"Data Docs: {build_data_docs(results)}")
    return 0 if all(r.success for r in results) else 1


def _validate_file(path: Path, symbol: str, cfg: Config) -> QualityResult:
    from quality import validate_frame
    from scalper.bars import read_bars

    result = validate_frame(read_bars(path), symbol=symbol, cfg=cfg, name=str(path))
    print(result.summary())
    return result


def _validate_store(
    symbol: str, start: date | None, end: date | None, cfg: Config
) -> list[QualityResult]:
    """Validate each stored day, record its quarantine and status, print its verdict."""
    from quality import split_quarantine, validate_frame
    from scalper import store
    from scalper.errors import ScalperError
    from scalper.progress import track

    days = [d for d in store.partitions(symbol) if start is None or start <= d <= end]
    if not days:
        span = "" if start is None else f" from {start} to {end}"
        raise ScalperError(f"validate: no stored {symbol} bars{span} in {store.root_dir()}")
    results = []
    for day in track(days, f"validate {symbol}", unit="days"):
        bars = store.read_range(symbol, day, day)
        result = validate_frame(bars, symbol=symbol, cfg=cfg, name=f"{symbol} {day}")
        store.quarantine(symbol, day, split_quarantine(bars, result)[1])
        store.mark_partition(symbol, day, result.to_dict())
        print(result.summary())
        results.append(result)
    return results
