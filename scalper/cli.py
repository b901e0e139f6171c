"""The `scalper` command line.

Every sub-command is a thin shell over the library. User mistakes raise `ScalperError`, which `main`
prints as a single line (`scalper: error: ...`) with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from scalper.errors import ScalperError

Handler = Callable[[argparse.Namespace], int]


def _cmd_config_check(args: argparse.Namespace) -> int:
    from scalper.config import load_config

    cfg = load_config(args.file)
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    mode = cfg.broker.mode
    print(f"{args.file}: OK ({mode} mode, {cfg.instrument.symbol}, strategy {cfg.strategy.kind})")
    return 0


def _cmd_backtest(args: argparse.Namespace) -> int:
    from scalper.backtest import run_backtest
    from scalper.bars import read_bars
    from scalper.config import load_config

    cfg = load_config(args.config)
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    bars = read_bars(args.data)
    result = run_backtest(bars, cfg)
    if args.trades_out:
        result.write_trades_csv(args.trades_out)
    if args.json:
        print(json.dumps({"metrics": result.metrics, "trades": result.metrics["trades"]}))
    else:
        print(result.summary())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from scalper.demo import run_demo

    return run_demo(out_dir=args.out)


def build_parser() -> argparse.ArgumentParser:
    """The full command tree; each leaf stores its handler in `func`."""
    parser = argparse.ArgumentParser(
        prog="scalper", description="Systematic intraday trading of CME micro futures."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="simulate MES bars and backtest them on the defaults")
    demo.add_argument(
        "--out", type=Path, default=None, help="output folder (default: SCALPER_HOME)"
    )
    demo.set_defaults(func=_cmd_demo)

    bt = sub.add_parser("backtest", help="backtest a bars file with a configuration")
    bt.add_argument("--config", required=True, help="configuration YAML")
    bt.add_argument("--data", required=True, help="normalized bars file (CSV or Parquet)")
    bt.add_argument("--trades-out", help="write the trades to this CSV file")
    bt.add_argument("--json", action="store_true", help="print metrics as JSON")
    bt.set_defaults(func=_cmd_backtest)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate a configuration file")
    check.add_argument("file", help="configuration YAML")
    check.set_defaults(func=_cmd_config_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `scalper` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ScalperError as exc:
        print(f"scalper: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("scalper: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
