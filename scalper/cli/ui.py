"""`scalper ui`: the Dagster UI (webserver and daemon) on this project's code location.

Dagster keeps its state (runs, event log, schedule ticks) in `DAGSTER_HOME`; here that is
`<SCALPER_HOME>/dagster`, prepared with the shipped `infra/dagster/dagster.yaml` (telemetry off,
SQLite storage, two concurrent runs). So nothing is written to the source tree, the UI shows the
runs of `scalper demo` too, and the schedules run while the UI does (the daemon is part of it).

`dagster dev` starts child processes (webserver, daemon, code server) and shuts them down cleanly
only on a SIGINT to its whole process group. It therefore runs in a session of its own, and an
interrupt of this command (Ctrl-C, or SIGTERM from a service manager) is forwarded to that group as
a SIGINT, then this command waits for it to finish.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from types import FrameType

from scalper.errors import ScalperError
from scalper.files import atomic_write
from scalper.paths import home, subdir

REPO = Path(__file__).resolve().parents[2]
WORKSPACE = REPO / "workspace.yaml"
SHIPPED_CONFIG = REPO / "infra" / "dagster" / "dagster.yaml"
STOP_SECONDS = 30.0
CONFIG_ENV = "SCALPER_CONFIG"  # the configuration the code location reads (assets/__init__.py)
_DEV_NOTICE = "Function `dev_command` is superseded"  # points to `dg dev`, a tool we do not use


def register(sub: argparse._SubParsersAction) -> None:
    ui = sub.add_parser("ui", help="the Dagster UI: assets, partitions, checks, schedules")
    ui.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1: on a VPS, use an SSH tunnel)",
    )
    ui.add_argument("--port", type=int, default=3000, help="web port (default 3000)")
    ui.set_defaults(func=_ui)


def prepare_dagster_home() -> Path:
    """`<SCALPER_HOME>/dagster` holding the shipped `dagster.yaml` (replaced when it changed)."""
    if not SHIPPED_CONFIG.is_file():
        raise ScalperError(f"{SHIPPED_CONFIG}: missing; run scalper from a checkout of the project")
    folder = subdir("dagster")
    target = folder / "dagster.yaml"
    shipped = SHIPPED_CONFIG.read_bytes()
    if not target.is_file() or target.read_bytes() != shipped:
        with atomic_write(target) as fh:
            fh.write(shipped)
    return folder


def _ui(args: argparse.Namespace) -> int:
    if find_spec("dagster") is None or find_spec("dagster_webserver") is None:
        raise ScalperError("the Dagster UI needs the platform extras: pip install -e '.[platform]'")
    from scalper.config import load_config

    env = dict(os.environ)
    if env.get(CONFIG_ENV):  # the code server runs in the repository: a relative path moves
        env[CONFIG_ENV] = str(Path(env[CONFIG_ENV]).expanduser().absolute())
        load_config(env[CONFIG_ENV])  # its paths.home, if any, is the data directory
    env |= {"DAGSTER_HOME": str(prepare_dagster_home()), "SCALPER_HOME": str(home())}
    command = [sys.executable, "-W", f"ignore:{_DEV_NOTICE}", "-m", "dagster", "dev"]
    command += ["-w", str(WORKSPACE), "--host", args.host, "--port", str(args.port)]
    print(f"scalper ui: http://{args.host}:{args.port}  (Ctrl-C stops it)", file=sys.stderr)
    # Interrupts stop the UI even when started with SIGINT ignored (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    dagster = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True)
    try:
        return dagster.wait()
    except KeyboardInterrupt:
        return _stop(dagster)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop(dagster: subprocess.Popen[bytes]) -> int:
    """SIGINT to the group, as `dagster dev` wants; SIGKILL if it has not stopped in time."""
    os.killpg(dagster.pid, signal.SIGINT)
    try:
        dagster.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(dagster.pid, signal.SIGKILL)
        dagster.wait()
        raise ScalperError(
            f"dagster dev did not stop within {STOP_SECONDS:.0f} s; killed"
        ) from None
    return 0
