"""The local Prefect server the operations flows run against: its environment and processes.

Prefect is the operations' orchestrator, but the library never imports it (ARCHITECTURE): this
module only knows how to start Prefect's own command line. Everything Prefect keeps (its
database, its settings profile) goes to `prefect/` in the data directory; the server listens on
localhost at `ops.prefect_port` and nothing is sent anywhere else: analytics are off and no
Prefect Cloud is configured, so the flows' API is that local server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from scalper.config import Config
from scalper.errors import ScalperError
from scalper.live.worker import stop_worker as stop_process
from scalper.paths import subdir

HOST = "127.0.0.1"
START_TIMEOUT = 90.0
_POLL = 0.25


def api_url(cfg: Config) -> str:
    return f"http://{HOST}:{cfg.ops.prefect_port}/api"


def prefect_env(cfg: Config, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every Prefect process: local server, local files, no analytics, and
    none of the user's own Prefect profiles (a profile could point the flows elsewhere)."""
    env = dict(os.environ if base is None else base)
    home = subdir("prefect")
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_PROFILES_PATH=str(home / "profiles.toml"),
        PREFECT_API_URL=api_url(cfg),
        PREFECT_SERVER_API_HOST=HOST,
        PREFECT_SERVER_API_PORT=str(cfg.ops.prefect_port),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    env.pop("PREFECT_API_KEY", None)  # never Prefect Cloud
    env.pop("PREFECT_PROFILE", None)
    return env


def run_once_env(cfg: Config, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of one flow run from the command line (`scalper ops run`): against the
    local server when it answers, so the run shows in its UI; else Prefect's temporary server
    for the run's duration, on the same database in the data directory."""
    env = prefect_env(cfg, base)
    if not server_answers(cfg):
        del env["PREFECT_API_URL"]
        # Prefect's 20 s are too short for a loaded VPS; ours are the local server's
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = f"{START_TIMEOUT:g}"
    return env


def server_command(cfg: Config) -> list[str]:
    prefect = str(Path(sys.executable).with_name("prefect"))
    return [prefect, "server", "start", "--host", HOST, "--port", str(cfg.ops.prefect_port)]


def serve_command(config_path: str | None) -> list[str]:
    """The process that serves the flows' deployments on their schedules (`flows.serve`)."""
    config = ["--config", str(Path(config_path).resolve())] if config_path else []
    return [sys.executable, "-m", "flows.serve", *config]


def server_answers(cfg: Config) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url(cfg)}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_server(cfg: Config, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start the server in its own session and wait until it answers; a server that does not
    answer in time, or whose wait is interrupted (Ctrl-C), is stopped, not left behind."""
    process = subprocess.Popen(
        server_command(cfg),
        env=prefect_env(cfg),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while not server_answers(cfg):
            if process.poll() is not None:
                code = process.returncode
                raise ScalperError(f"the Prefect server exited at start (code {code})")
            if time.monotonic() > deadline:
                raise ScalperError(f"the Prefect server did not answer within {START_TIMEOUT:g} s")
            time.sleep(_POLL)
    except BaseException:
        stop_process(process)
        raise
    return process
