"""Commands around the engine: `demo`, `backtest`, `config check`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from scalper.cli import add_bar_file_options


def _warn(cfg: Any) -> None:
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _config_check(args: argparse.Namespace) -> int:
    from scalper.config import load_config
    from scalper.errors import ConfigError

    try:
        cfg = load_config(args.file)
    except ConfigError as exc:  # the whole file at once: its warnings too
        _warn(exc)
        raise
    _warn(cfg)
    mode = cfg.broker.mode
    print(f"{args.file}: OK ({mode} mode, {cfg.instrument.symbol}, strategy {cfg.strategy.kind})")
    return 0


def _backtest(args: argparse.Namespace) -> int:
    from scalper.backtest import run_backtest
    from scalper.cli import read_bar_file
    from scalper.config import load_config
    from scalper.files import check_output_file

    trades_out = None
    if args.trades_out is not None:
        trades_out = check_output_file(args.trades_out, "--trades-out")
    cfg = load_config(args.config)
    _warn(cfg)
    result = run_backtest(read_bar_file(args.data, args, cfg), cfg)
    if trades_out is not None:
        result.write_trades_csv(trades_out)
    if args.json:
        print(json.dumps({"metrics": result.metrics_json(), "trades": result.metrics["trades"]}))
    else:
        print(result.summary())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from scalper.demo import run_demo
    from scalper.errors import ScalperError

    try:  # the data step is the Dagster assets: the orchestrator is imported here only
        from assets.demo import materialize_demo
    except ImportError as exc:
        raise ScalperError(f"scalper demo needs the platform extras ({exc})") from None
    return run_demo(materialize_demo, home=args.home, days=args.days, seed=args.seed)


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo",
        help="the nightly chain on simulated MES bars and the defaults: data assets (simulate, "
        "validate, continuous), backtest, research assets and report",
    )
    demo.add_argument(
        "--home", type=Path, default=None,
        help="the demo's own data directory (default: demo/ in SCALPER_HOME's)",
    )  # fmt: skip
    demo.add_argument("--days", type=int, default=60, help="calendar days to simulate (default 60)")
    demo.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    demo.set_defaults(func=_demo)

    bt = sub.add_parser("backtest", help="backtest a bars file with a configuration")
    bt.add_argument("--config", required=True, help="configuration YAML")
    bt.add_argument("--data", required=True, help="normalized bars file (CSV or Parquet)")
    bt.add_argument("--trades-out", help="write the trades to this CSV file")
    bt.add_argument("--json", action="store_true", help="print metrics as JSON")
    add_bar_file_options(bt)
    bt.set_defaults(func=_backtest)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate a configuration file")
    check.add_argument("file", help="configuration YAML")
    check.set_defaults(func=_config_check)
