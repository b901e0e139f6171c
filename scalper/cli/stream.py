"""`scalper stream run|replay`: the live stream worker, and replays of bars files through it.

`run` prepares the run folder (`stream/` in the data directory: topics, where the input starts,
the recovery store) and then becomes the Bytewax worker process, so a service manager supervises
the worker itself. `replay` publishes a bars file and, with `--trades-out`, runs the session end
to end and writes the paper broker's trades.
"""

from __future__ import annotations

import argparse
import sys

from scalper.errors import ScalperError


def _speed(text: str) -> float | None:
    """`max` (as fast as possible, None) or a positive multiple of real time."""
    if text == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        speed = 0.0
    if not speed > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'max' or a positive number")
    return speed


def _run(args: argparse.Namespace) -> int:
    from scalper.live.settings import LiveSettings, default_run_dir
    from scalper.live.worker import exec_worker, prepare_run, running_workers

    if args.process_id is not None and not args.addresses:
        raise ScalperError("--process-id needs --addresses (host:port of every process)")
    settings = LiveSettings.load(args.config, default_run_dir())
    for warning in settings.cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    running = running_workers(settings.run_dir)
    if running and args.process_id is None:
        raise ScalperError(
            f"a stream worker already runs for {settings.run_dir} (pid {running[0]})"
        )
    processes = len(args.addresses.split(";")) if args.addresses else 1
    prepare_run(settings, processes)
    symbols = ", ".join(settings.symbols)
    print(
        f"stream worker: {symbols} from {settings.bootstrap}, state in {settings.run_dir}",
        file=sys.stderr,
        flush=True,
    )
    exec_worker(
        settings, workers=args.workers, process_id=args.process_id, addresses=args.addresses
    )
    return 0  # not reached: the process is the worker now


def _replay(args: argparse.Namespace) -> int:
    from scalper.live.replay import replay

    result = replay(args.config, args.data, speed=args.speed, trades_out=args.trades_out)
    if result.trades is None:
        print(f"published {result.bars:,} bars to bars.{result.symbol}")
        return 0
    pnl = result.trades["pnl"].sum()
    print(
        f"replayed {result.bars:,} bars of {result.symbol}: {result.trades.height} trades, "
        f"net P&L {pnl:,.2f}; trades written to {args.trades_out} (state in {result.run_dir})"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    stream = sub.add_parser("stream", help="the live stream worker (Kafka -> Bytewax -> broker)")
    actions = stream.add_subparsers(dest="stream_command", required=True, metavar="ACTION")

    run = actions.add_parser("run", help="run a stream worker process (recovers after a crash)")
    run.add_argument("--config", help="configuration YAML (default: the built-in defaults)")
    run.add_argument(
        "--workers", type=int, help="workers in this process (default: stream.workers)"
    )
    run.add_argument("--process-id", type=int, help="this process's index among several (-i)")
    run.add_argument(
        "--addresses", help="host:port of every process, separated by ';' (with --process-id)"
    )
    run.set_defaults(func=_run)

    replay = actions.add_parser(
        "replay", help="publish a bars file to Kafka, optionally end to end"
    )
    replay.add_argument("--config", help="configuration YAML (default: the built-in defaults)")
    replay.add_argument("--data", required=True, help="normalized bars file (CSV or Parquet)")
    replay.add_argument(
        "--speed",
        type=_speed,
        default=None,
        help="N times real time, or 'max' (default): as fast as possible",
    )
    replay.add_argument(
        "--trades-out",
        help="run the session end to end (broker and worker started if none runs) and write "
        "the paper broker's trades to this CSV",
    )
    replay.set_defaults(func=_replay)

    from scalper.cli.ibkr import register_stream  # `ib-bridge`: IB's live bars into Kafka

    register_stream(actions)
