"""`scalper stream run|replay`: the live stream worker, and replays of bars files through it.

`run` prepares the run folder (`stream/` in the data directory: topics, where the input starts,
the recovery store) and then becomes the Bytewax worker process, so a service manager supervises
the worker itself. `replay` runs a bars file through a worker of its own, in its own topic
namespace and run folder, with the paper broker (never a live worker's topics, never IB), and
writes the trades with `--trades-out`.
"""

from __future__ import annotations

import argparse
import signal
import sys

from scalper.cli import add_bar_file_options
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
    from scalper.live.worker import claim_worker_slot, exec_worker, prepare_run

    if args.process_id is not None and not args.addresses:
        raise ScalperError("--process-id needs --addresses (host:port of every process)")
    settings = LiveSettings.load(args.config, default_run_dir(create=True))
    for warning in settings.cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    # Claimed before the folder is prepared: a second start, racing or not, changes nothing.
    lock = claim_worker_slot(settings.run_dir, args.process_id)
    processes = len(args.addresses.split(";")) if args.addresses else 1
    prepare_run(settings, processes)
    symbols = ", ".join(settings.symbols)
    print(
        f"stream worker: {symbols} from {settings.bootstrap}, state in {settings.run_dir}",
        file=sys.stderr,
        flush=True,
    )
    exec_worker(
        settings,
        workers=args.workers,
        process_id=args.process_id,
        addresses=args.addresses,
        lock=lock,
    )
    return 0  # not reached: the process is the worker now


def _replay(args: argparse.Namespace) -> int:
    from scalper.cli import bar_file_spec
    from scalper.config import load_config
    from scalper.files import check_output_file
    from scalper.live.replay import replay

    if args.trades_out is not None:  # before a session is replayed end to end
        check_output_file(args.trades_out, "--trades-out")
    spec = bar_file_spec(args, load_config(args.config).data)
    # A stop (SIGTERM) ends it like Ctrl-C: its worker stopped, its topics deleted.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    result = replay(args.config, args.data, speed=args.speed, trades_out=args.trades_out, spec=spec)
    if result.paper_instead_of is not None:
        print(
            f"note: broker.kind is {result.paper_instead_of}: a replay trades with the paper "
            "broker only",
            file=sys.stderr,
        )
    pnl = result.trades["pnl"].sum()
    written = f"trades written to {args.trades_out}; " if args.trades_out else ""
    print(
        f"replayed {result.bars:,} bars of {result.symbol} with the paper broker: "
        f"{result.trades.height} trades, net P&L {pnl:,.2f}; {written}state in {result.run_dir}"
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
        "replay",
        help="trade a bars file through a stream worker of its own (own topics, paper broker)",
    )
    replay.add_argument("--config", help="configuration YAML (default: the built-in defaults)")
    replay.add_argument("--data", required=True, help="normalized bars file (CSV or Parquet)")
    add_bar_file_options(replay)
    replay.add_argument(
        "--speed",
        type=_speed,
        default=None,
        help="N times real time, or 'max' (default): as fast as possible",
    )
    replay.add_argument(
        "--trades-out",
        help="write the replay's trades (SPEC §4's CSV) to this file",
    )
    replay.set_defaults(func=_replay)

    from scalper.cli.ibkr import register_stream  # `ib-bridge`: IB's live bars into Kafka

    register_stream(actions)
