"""`scalper kafka up|down|status`: the local Kafka broker of the stream driver.

The broker belongs to the data directory (`SCALPER_HOME`): its files live in `kafka/` there, so
`down` and `status` need no configuration; `up` reads `kafka.bootstrap` and the instrument from
the configuration to know the port and the topics to create.
"""

from __future__ import annotations

import argparse
import sys


def _progress(message: str) -> None:
    print(f"{message} ...", file=sys.stderr, flush=True)


def _up(args: argparse.Namespace) -> int:
    from scalper.config import load_config
    from scalper.kafka.broker import KafkaBroker
    from scalper.kafka.topics import ensure_topics

    cfg = load_config(args.config)
    broker = KafkaBroker.for_bootstrap(cfg.kafka.bootstrap)
    started = broker.start(progress=_progress)
    status = broker.status()
    state = "started" if started else "already running"
    print(f"Kafka broker {state} at {status.bootstrap} (pid {status.pid}, files in {broker.root})")
    created = ensure_topics(status.bootstrap, [cfg.instrument.symbol])
    print(f"topics created: {', '.join(created)}" if created else "topics: all present")
    return 0


def _down(args: argparse.Namespace) -> int:
    """Stop the broker, unless the live stream worker reads it (`--force` stops it anyway)."""
    from scalper.errors import ScalperError
    from scalper.kafka.broker import KafkaBroker
    from scalper.live.settings import default_run_dir
    from scalper.live.worker import running_workers

    workers = running_workers(default_run_dir())
    if workers and not args.force:
        raise ScalperError(
            f"the live stream worker (pid {workers[0]}) reads this broker: without it no bar "
            "reaches the engine (no exit, no end-of-day flatten) and `scalper kill` cannot "
            "tell the stream; stop the worker first, or use --force"
        )
    pid = KafkaBroker().stop()
    print("Kafka broker was not running" if pid is None else f"Kafka broker stopped (pid {pid})")
    return 0


def _status(args: argparse.Namespace) -> int:
    from scalper.kafka.broker import KafkaBroker

    broker = KafkaBroker()
    status = broker.status()
    if not status.running:
        print(f"Kafka broker not running (files in {broker.root})")
        return 1
    print(f"Kafka broker running at {status.bootstrap} (pid {status.pid}, files in {broker.root})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    kafka = sub.add_parser("kafka", help="the local Kafka broker (KRaft, from Maven Central jars)")
    actions = kafka.add_subparsers(dest="kafka_command", required=True, metavar="ACTION")

    up = actions.add_parser(
        "up", help="fetch the jars if needed, start the broker, create the topics"
    )
    up.add_argument("--config", help="configuration YAML (default: the built-in defaults)")
    up.set_defaults(func=_up)

    down = actions.add_parser("down", help="stop the broker (not under a live worker)")
    down.add_argument(
        "--force", action="store_true", help="stop it even while the live stream worker runs"
    )
    down.set_defaults(func=_down)

    status = actions.add_parser("status", help="show the broker; exit status 1 when not running")
    status.set_defaults(func=_status)
