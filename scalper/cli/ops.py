"""`scalper kill|resume|status` and `scalper ops server|serve`: the trading day's operations.

`kill`, `resume` and `status` run the operations' procedures directly (`scalper.ops`), so they
work whether or not the Prefect server runs — a kill switch must never depend on one more
service. `resume` is also the manual reset of a halt: the worker lifts pauses and halts alike.
`ops server` runs the local Prefect server in the foreground; `ops serve` starts it
(unless one answers already) and serves the scheduled flows (`flows.serve`) until stopped, then
stops what it started; `ops run <flow>` runs one flow once, now.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by the handlers: `scalper --help` stays fast
    from scalper.ops.context import Operations

FLOW_NAMES = ("session-open", "eod-watchdog", "daily-summary", "kill-switch", "stream-supervisor")
"""The operations flows (`flows.operations.FLOWS`, which imports Prefect: too slow for `--help`)."""


def _ops(args: argparse.Namespace) -> Operations:
    from scalper.ops.context import Operations

    return Operations.load(args.config)


def _kill(args: argparse.Namespace) -> int:
    """One line per symbol (flat at the broker or not), the halt and the stream; exit 0 only
    when every symbol is confirmed flat and the stream was told (`Kill.confirmed`)."""
    from scalper.ops.procedures import kill

    result = kill(_ops(args), args.reason, None if args.all else args.symbol, wait=args.wait)
    told = "stream told" if result.stream_told else "stream NOT told"
    for symbol in result.symbols:
        flat = "flat" if symbol.flat else "NOT FLAT"
        print(f"{symbol.symbol}: {flat} — {symbol.detail}; {told}")
    print(f"halt: {result.halt}")
    print(f"stream: {result.stream}")
    if result.confirmed:
        return 0
    print("scalper: kill NOT confirmed: act now (see above)", file=sys.stderr)
    return 1


def _resume(args: argparse.Namespace) -> int:
    from scalper.ops.procedures import resolve_symbols, resume

    ops = _ops(args)
    symbols = None if args.all else args.symbol
    resume(ops, args.reason, symbols)
    print(f"resume published on control ({', '.join(resolve_symbols(ops, symbols))}): "
          f"{args.reason}")  # fmt: skip
    return 0


def _add_symbols(parser: argparse.ArgumentParser, what: str) -> None:
    """`--symbol S` (repeatable, any case) or `--all`; neither means all."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--symbol", action="append", metavar="SYMBOL",
        help=f"{what} this configured symbol (any case; repeat for more)",
    )  # fmt: skip
    which.add_argument("--all", action="store_true", help=f"{what} every configured symbol "
                       "(the default; a worker trading other symbols is told too)")  # fmt: skip


def _status(args: argparse.Namespace) -> int:
    from scalper.ops.status import gather, render

    status = gather(_ops(args))
    print(json.dumps(status, indent=2) if args.json else render(status), flush=True)
    if not status["worker"]["healthy"]:  # scripts and monitors act on the exit status
        print(f"scalper: stream worker unhealthy: {status['worker']['why']}", file=sys.stderr)
        return 1
    return 0


def _server(args: argparse.Namespace) -> int:
    from scalper.config import load_config
    from scalper.ops.prefect import prefect_env, server_command

    cfg = load_config(args.config)
    command = server_command(cfg)
    os.execve(command[0], command, prefect_env(cfg))
    return 0  # not reached: the process is the server now


def _serve(args: argparse.Namespace) -> int:
    """Serve the flows until stopped (Ctrl-C, SIGTERM); then stop everything started here: the
    serving process (in a session of its own, so the signal reaches it only through us), the
    stream workers its supervisor started (with `ops.supervise_worker`), the Prefect server."""
    from scalper.ops.prefect import (
        api_url,
        prefect_env,
        serve_command,
        server_answers,
        start_server,
        stop_process,
    )
    from scalper.ops.supervisor import stop_workers, supervised_workers
    from scalper.paths import subdir

    ops = _ops(args)
    cfg = ops.cfg
    earlier = supervised_workers(ops)  # started before this serve: not ours to stop
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored (`&`)
        signal.signal(sig, signal.default_int_handler)
    server = serving = None
    try:
        if not server_answers(cfg):
            print(f"starting the Prefect server at {api_url(cfg)} ...", flush=True)
            with open(subdir("logs") / "prefect-server.log", "ab") as log:
                server = start_server(cfg, log)
        supervision = "on" if cfg.ops.supervise_worker else "off (ops.supervise_worker: false)"
        print(f"serving the operations flows; stream worker supervision {supervision}", flush=True)
        serving = subprocess.Popen(
            serve_command(args.config), env=prefect_env(cfg), start_new_session=True
        )
        return serving.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut this short
            signal.signal(sig, signal.SIG_IGN)
        if serving is not None:
            stop_process(serving)
        if cfg.ops.supervise_worker:  # else its supervisor never ran: no worker is ours
            stop_workers(supervised_workers(ops) - earlier)
        if server is not None:
            stop_process(server)


def _run(args: argparse.Namespace) -> int:
    """One flow, once, in this process, with the operations' Prefect environment (set before
    Prefect is imported: its settings are read then); prints the flow's summary as JSON."""
    from scalper.config import load_config
    from scalper.errors import ScalperError
    from scalper.ops.prefect import run_once_env

    env = run_once_env(load_config(args.config))
    os.environ.clear()
    os.environ.update(env)
    from flows.operations import FLOWS, KillNotConfirmed

    logging.getLogger("prefect.flow_runs").addFilter(_no_traceback_for_user_errors)
    try:
        result = FLOWS[args.flow](config=args.config)
    except KillNotConfirmed as exc:
        result = exc.args[0]
        print(json.dumps(result, indent=2, default=str))
        print("scalper: kill NOT confirmed: act now (see above)", file=sys.stderr)
        return 1
    except ScalperError:
        raise
    except Exception as exc:  # the flow failed; Prefect has logged how, with its traceback
        print(f"scalper: error: flow {args.flow} failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str))
    return 0


def _no_traceback_for_user_errors(record: logging.LogRecord) -> bool:
    """A flow run's log of its failure keeps its line but loses the traceback when the cause is
    a user mistake (`ScalperError`): `ops run` prints that as its one-line error."""
    from scalper.errors import ScalperError

    if record.exc_info and isinstance(record.exc_info[1], ScalperError):
        record.exc_info = record.exc_text = None
    return True


def register(sub: argparse._SubParsersAction) -> None:
    kill = sub.add_parser(
        "kill", help="kill switch: flatten at the broker, halt, tell the stream (exit 0: all done)"
    )
    kill.add_argument("--reason", default="manual kill switch", help="why (logged and alerted)")
    _add_symbols(kill, "halt and flatten")
    kill.add_argument(
        "--wait", type=float,
        help="seconds the broker gets to show the positions flat (default 30; on paper 30 "
             "more than a bar, as paper fills come with the next bar)",
    )  # fmt: skip
    kill.add_argument("--config", help="configuration YAML (default: built-in defaults)")
    kill.set_defaults(func=_kill)

    resume = sub.add_parser(
        "resume", help="lift a pause or a halt (kill switch, loss limits): entries resume"
    )
    resume.add_argument("--reason", default="manual resume", help="why (logged and alerted)")
    _add_symbols(resume, "resume")
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
    run = actions.add_parser(
        "run", help="run one operations flow once, now (no server needed, no Prefect profile)"
    )
    run.add_argument("flow", choices=FLOW_NAMES, help="the flow")
    run.add_argument("--config", help="configuration YAML (default: built-in defaults)")
    run.set_defaults(func=_run)
