"""`scalper data simulate|import …`: fill the bar store (SPEC §3, §6) from the command line.

The same work the Dagster assets do, for a trader at a shell: each action ends with one summary
line (bars, days, date range, where) and shows progress bars while it works. Per-contract vendor
data (`lean_zip`) is stored per contract (`ESZ3`, …) and, under the product symbol, as the
unadjusted front-contract series of the roll rule, which is what a backtest of `ES` reads.

Other modules add actions to `scalper data` (e.g. `download`) by listing themselves in
`DATA_ACTION_MODULES` and defining `register_data(actions)`, as commands do in `COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from scalper.cli import iso_date
from scalper.config import FileFormat

if TYPE_CHECKING:
    import polars as pl

# Modules under scalper.cli that add `scalper data` actions (`register_data(actions)`).
DATA_ACTION_MODULES: tuple[str, ...] = ("ibkr",)


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="fill the bar store: simulate, import, …")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    simulate = actions.add_parser("simulate", help="simulate bars into the store")
    simulate.add_argument("--days", type=int, required=True, help="calendar days of sessions")
    simulate.add_argument(
        "--start", type=iso_date, help="first session date, YYYY-MM-DD (default: DAYS days ago)"
    )
    simulate.add_argument("--seed", type=int, help="simulator seed (default: data.seed)")
    simulate.add_argument("--symbol", help="instrument (default: instrument.symbol)")
    _add_config(simulate)
    simulate.set_defaults(func=_simulate)

    imported = actions.add_parser("import", help="import a vendor file or folder into the store")
    imported.add_argument("path", type=Path, help="a file, or a folder of files")
    imported.add_argument(
        "--format", choices=get_args(FileFormat), help="file layout (default: data.format)"
    )
    imported.add_argument("--symbol", help="instrument the files hold (default: instrument.symbol)")
    imported.add_argument(
        "--bar-seconds", type=int, help="resample to this bar size first (default: keep)"
    )
    _add_config(imported)
    imported.set_defaults(func=_import)

    for name in DATA_ACTION_MODULES:
        import_module(f"scalper.cli.{name}").register_data(actions)


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="configuration YAML (default: built-in defaults)")


def _simulate(args: argparse.Namespace) -> int:
    from scalper.config import load_config
    from scalper.instruments import spec
    from scalper.simulate import simulate_bars
    from scalper.store import root_dir, write_bars_partitioned

    cfg = load_config(args.config)
    symbol = args.symbol or cfg.instrument.symbol
    start = args.start or datetime.now(UTC).date() - timedelta(days=args.days)
    bars = simulate_bars(
        start,
        args.days,
        seed=cfg.data.seed if args.seed is None else args.seed,
        bar_seconds=cfg.data.bar_seconds,
        symbol=symbol,
        start_price=cfg.data.start_price,
        tick_size=spec(symbol).tick_size,
    )
    days = write_bars_partitioned(bars, symbol)
    print(_summary("simulated", bars, symbol, days, root_dir()))
    return 0


def _import(args: argparse.Namespace) -> int:
    from scalper.config import load_config
    from scalper.importers import import_file
    from scalper.resample import resample
    from scalper.store import root_dir, write_bars_partitioned

    cfg = load_config(args.config)
    symbol = args.symbol or cfg.instrument.symbol
    bars = import_file(args.path, args.format or cfg.data.format, symbol)
    if args.bar_seconds:
        bars = resample(bars, args.bar_seconds)
    if "contract" in bars.columns:
        _store_contracts(bars, symbol, cfg.instrument.roll_days_before_expiry)
    else:
        days = write_bars_partitioned(bars, symbol)
        print(_summary("imported", bars, symbol, days, root_dir()))
    return 0


def _store_contracts(bars: pl.DataFrame, symbol: str, roll_days: int) -> None:
    """Each contract under its own symbol, then the front-contract series under `symbol`."""
    from scalper.continuous import continuous
    from scalper.progress import track
    from scalper.store import root_dir, write_bars_partitioned

    contracts = bars.get_column("contract").unique().sort().to_list()
    for contract in track(contracts, "store contracts", unit="contracts"):
        per_contract = bars.filter(contract=contract).drop("symbol")
        write_bars_partitioned(per_contract, contract, progress=False)
    front = continuous(bars, symbol, roll_days)
    days = write_bars_partitioned(front, symbol)
    print(
        _summary("imported", front, symbol, days, root_dir())
        + f" (front contract by the roll rule; all {bars.height:,} bars of the "
        f"{len(contracts)} contracts stored per contract too)"
    )


def _summary(verb: str, bars: pl.DataFrame, symbol: str, days: list[date], where: Path) -> str:
    from scalper.bars import iso_utc

    first, last = iso_utc(bars["ts"][0]), iso_utc(bars["ts"][-1])
    return (
        f"scalper data: {verb} {bars.height:,} {symbol} bars, {len(days)} days "
        f"({first} .. {last}), into {where}"
    )
