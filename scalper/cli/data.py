"""`scalper data simulate|import|continuous …`: the bar store's stages from the command line.

The same work the Dagster market-data assets do, through the same library calls and into the same
stores (`scalper.store`'s stages below `<SCALPER_HOME>/bars`), so data made here is what the
assets read and the other way round. The path of the data:

1. `scalper data simulate|import|download` store a source's bars in the `raw` stage, as
   `raw_bars` does (`store_raw`): per contract (`ESZ3`, …) when the source delivers contracts
   (`lean_zip`), else under the product symbol;
2. `scalper validate` validates raw days into the `validated` stage (`quality.store_days`, as
   `validated_bars`);
3. `scalper data continuous` builds the front-contract series into the `continuous` stage
   (`build_continuous`, as `continuous_bars`), which `scalper optimize|walk-forward|report
   --symbol` read, back-adjusted.

Each action ends with one summary line (bars, days, date range, where) and shows progress bars
while it works. Other modules add actions to `scalper data` (e.g. `download`) by listing
themselves in `DATA_ACTION_MODULES` and defining `register_data(actions)`, as commands do in
`COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from scalper.cli import add_bar_file_options, instrument_symbol, iso_date
from scalper.config import FileFormat

if TYPE_CHECKING:
    import polars as pl

# Modules under scalper.cli that add `scalper data` actions (`register_data(actions)`).
DATA_ACTION_MODULES: tuple[str, ...] = ("ibkr",)


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser(
        "data", help="the bar store: raw bars (simulate, import, download), the continuous series"
    )
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    simulate = actions.add_parser("simulate", help="simulate raw bars into the store")
    simulate.add_argument("--days", type=int, required=True, help="calendar days of sessions")
    simulate.add_argument(
        "--start", type=iso_date, help="first session date, YYYY-MM-DD (default: DAYS days ago)"
    )
    simulate.add_argument("--seed", type=int, help="simulator seed (default: data.seed)")
    simulate.add_argument(
        "--symbol", type=instrument_symbol, help="instrument (default: instrument.symbol)"
    )
    _add_config(simulate)
    simulate.set_defaults(func=_simulate)

    imported = actions.add_parser("import", help="import a vendor file or folder as raw bars")
    imported.add_argument("path", type=Path, help="a file, or a folder of files")
    imported.add_argument(
        "--format", choices=get_args(FileFormat), help="file layout (default: data.format)"
    )
    imported.add_argument(
        "--symbol",
        type=instrument_symbol,
        help="instrument the files hold (default: instrument.symbol)",
    )
    imported.add_argument(
        "--bar-seconds", type=int, help="resample to this bar size first (default: keep)"
    )
    _add_config(imported)
    add_bar_file_options(imported)
    imported.set_defaults(func=_import)

    continuous = actions.add_parser(
        "continuous", help="build the continuous series from validated bars (after validate)"
    )
    continuous.add_argument(
        "--symbol", type=instrument_symbol, help="instrument (default: instrument.symbol)"
    )
    continuous.add_argument("--start", type=iso_date, required=True, help="first UTC day")
    continuous.add_argument("--end", type=iso_date, required=True, help="last UTC day (included)")
    _add_config(continuous)
    continuous.set_defaults(func=_continuous)

    for name in DATA_ACTION_MODULES:
        import_module(f"scalper.cli.{name}").register_data(actions)


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="configuration YAML (default: built-in defaults)")


def _simulate(args: argparse.Namespace) -> int:
    from scalper.config import load_config
    from scalper.sources import simulate_market

    cfg = load_config(args.config)
    symbol = args.symbol or cfg.instrument.symbol
    start = args.start or datetime.now(UTC).date() - timedelta(days=args.days)
    bars = simulate_market(cfg, symbol, start, args.days, seed=args.seed)
    print(_stored("simulated", bars, symbol, "simulator"))
    return 0


def _import(args: argparse.Namespace) -> int:
    from scalper.cli import bar_file_spec, warn_about_times
    from scalper.config import load_config
    from scalper.importers import import_file
    from scalper.resample import resample

    cfg = load_config(args.config)
    symbol = args.symbol or cfg.instrument.symbol
    spec = bar_file_spec(args, cfg.data)
    bars = import_file(args.path, args.format or cfg.data.format, symbol, spec=spec)
    warn_about_times(bars, spec, args.path)
    if args.bar_seconds:
        bars = resample(bars, args.bar_seconds)
    print(_stored("imported", bars, symbol, "file"))
    return 0


def _stored(verb: str, bars: pl.DataFrame, product: str, source: str) -> str:
    """Store a source's bars in the raw stage, recording `source`; the summary line."""
    from scalper.store import stage_root, store_raw

    series = store_raw(bars, product, _days(bars), source=source, progress=None)
    contracts = "" if list(series) == [product] else f" of {len(series)} contracts"
    return (
        f"scalper data: {verb} {bars.height:,} {product} bars{contracts}, {_span(bars)}, "
        f"into {stage_root('raw')}"
    )


def _continuous(args: argparse.Namespace) -> int:
    from scalper.config import load_config
    from scalper.continuous import build_continuous
    from scalper.errors import ScalperError
    from scalper.store import days_between, stage_root

    if args.start > args.end:
        raise ScalperError(f"--start {args.start} is after --end {args.end}")
    cfg = load_config(args.config)
    symbol = args.symbol or cfg.instrument.symbol
    roll_days = cfg.instrument.roll_days_before_expiry
    series = build_continuous({symbol: days_between(args.start, args.end)}, roll_days)[symbol]
    if series.height == 0:
        raise ScalperError(
            f"no validated {symbol} bars from {args.start} to {args.end} "
            "(run `scalper data simulate|import|download`, then `scalper validate`)"
        )
    contracts = ", ".join(series.get_column("contract").unique(maintain_order=True))
    print(
        f"scalper data: built {series.height:,} continuous {symbol} bars ({contracts}), "
        f"{_span(series)}, into {stage_root('continuous')}"
    )
    return 0


def _days(bars: pl.DataFrame) -> list[date]:
    """The UTC days `bars` fall on, ascending."""
    from scalper.store import utc_day

    return bars.select(utc_day().unique().sort()).to_series().to_list()


def _span(bars: pl.DataFrame) -> str:
    """`N days (first bar .. last bar)`."""
    from scalper.bars import iso_utc

    first, last = iso_utc(bars["ts"].min()), iso_utc(bars["ts"].max())
    return f"{len(_days(bars))} days ({first} .. {last})"
