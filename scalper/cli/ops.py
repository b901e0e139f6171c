"""`scalper kill|resume|status` and `scalper ops server|serve`: the trading day's operations.

`kill`, `resume` and `status` run the operations' procedures directly (`scalper.ops`), so they
work whether or not the Prefect server runs — a kill switch must never depend on one more
service. `resume` is also the manual reset of a halt: the worker lifts pauses and halts alike.
`ops server` runs the local Prefect server in the foreground; `ops serve` starts it
(unless one answers already) and serves the scheduled flows (`flows.serve`) until stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by the handlers: `scalper --help` stays fast
    from scalper.ops.context import Operations


def _ops(args: argparse.Namespace) -> Operations:
    from scalper.ops.context import Operations

    return Operations.load(args.config)


def _kill(args: argparse.Namespace) -> int:
    from scalper.ops.procedures import kill

    ops = _ops(args)
    _, result = kill(ops, args.reason, args.symbol, wait=args.wait)
    print(f"kill published on control ({args.symbol}): {args.reason}")
    if result.flat:
        print("positions: flat")
        return 0
    open_ = ", ".join(f"{s} {q:+d}" for s, q in result.remaining.items())
    print(f"positions STILL OPEN: {open_}")
    return 1


def _resume(args: argparse.Namespace) -> int:
    from scalper.ops.procedures import resume

    resume(_ops(args), args.reason, args.symbol)
    print(f"resume published on control ({args.symbol}): {args.reason}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from scalper.ops.status import gather, render

    status = gather(_ops(args))
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0


def _server(args: argparse.Namespace) -> int:
    from scalper.config import load_config
    from scalper.ops.prefect import prefect_env, server_command

    cfg = load_config(args.config)
    command = server_command(cfg)
    os.execve(command[0], command, prefect_env(cfg))
    return 0  # not reached: the process is the server now


def _serve(args: argparse.Namespace) -> int:
    from scalper.config import load_config
    from scalper.ops.prefect import (
        api_url,
        prefect_env,
        serve_command,
        server_answers,
        start_server,
        stop_process,
    )
    from scalper.paths import subdir

    cfg = load_config(args.config)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server = None
    if not server_answers(cfg):
        print(f"starting the Prefect server at {api_url(cfg)} ...", flush=True)
        with open(subdir("logs") / "prefect-server.log", "ab") as log:
            server = start_server(cfg, log)
    serving = subprocess.Popen(serve_command(args.config), env=prefect_env(cfg))
    try:
        return serving.wait()
    finally:
        stop_process(serving)
        if server is not None:
            stop_process(server)


def register(sub: argparse._SubParsersAction) -> None:
    kill = sub.add_parser("kill", help="kill switch: halt the stream, flatten everything, alert")
    kill.add_argument("--reason", default="manual kill switch", help="why (logged and alerted)")
    kill.add_argument("--symbol", default="*", help="one symbol, or * for all (default)")
    kill.add_argument(
        "--wait", type=float, default=30.0,
        help="seconds the worker gets to flatten before the broker is flattened directly",
    )  # fmt: skip
    kill.add_argument("--config", help="configuration YAML (default: built-in defaults)")
    kill.set_defaults(func=_kill)

    resume = sub.add_parser(
        "resume", help="lift a pause or a halt (kill switch, loss limits): entries resume"
    )
    resume.add_argument("--reason", default="manual resume", help="why (logged and alerted)")
    resume.add_argument("--symbol", default="*", help="one symbol, or * for all (default)")
    resume.add_argument("--config", help="configuration YAML (default: built-in defaults)")
    resume.set_defaults(func=_resume)

    status = sub.add_parser(
        "status", help="links, positions, today's P&L, breakers, last bar, worker health"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--config", help="configuration YAML (default: built-in defaults)")
    status.set_defaults(func=_status)

    ops = sub.add_parser("ops", help="the operations' Prefect server and scheduled flows")
    actions = ops.add_subparsers(dest="ops_command", required=True, metavar="ACTION")
    server = actions.add_parser("server", help="run the local Prefect server (foreground)")
    server.add_argument("--config", help="configuration YAML (default: built-in defaults)")
    server.set_defaults(func=_server)
    serve = actions.add_parser(
        "serve", help="start the Prefect server if needed and serve the scheduled flows"
    )
    serve.add_argument("--config", help="configuration YAML (default: built-in defaults)")
    serve.set_defaults(func=_serve)
