"""The stream worker's supervision: is it alive and making progress; start it, restart it.

**Alive** is a worker process for the run folder (`scalper.live.worker.running_workers`: its pid
file, checked against the process's command line). **Progress** is Bytewax's recovery store:
the worker commits an epoch to it every `stream.snapshot_seconds` (one second by default),
bars or not, so its newest file time is a heartbeat of the dataflow itself — a worker stuck in
a call (a broker that never answers) stops committing and goes stale while its process lives
on. A worker younger than `ops.stale_after_seconds` counts as starting, not stale.

A dead worker is started again (`scalper stream run`, which resumes from the last snapshot,
SPEC §7), a stale one is stopped first; each restart is alerted, and after `MAX_RESTARTS` in one
day the supervisor stops trying and says so loudly: a worker that keeps dying needs a person.

Supervision is opt-in (`ops.supervise_worker`): a worker trades, so `scalper ops serve` only
starts one when asked to. Every worker the supervisor starts is listed (`supervised_workers`), so
that `ops serve` stops, when it stops, exactly the workers it caused and no other.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from scalper.ops.context import Operations
from scalper.ops.procedures import read_daily_state, write_daily_state
from scalper.paths import subdir

MAX_RESTARTS = 5
"""Restarts per day before the supervisor gives up (and alerts)."""

START_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0
_POLL = 0.2

Action = Literal["healthy", "started", "restarted", "gave_up"]


@dataclass(frozen=True)
class WorkerHealth:
    """The worker processes of the run folder and when the dataflow last made progress."""

    pids: tuple[int, ...]
    last_progress: float | None  # epoch seconds
    healthy: bool
    why: str


def worker_health(ops: Operations, now: float | None = None) -> WorkerHealth:
    from scalper.live.worker import running_workers

    now = time.time() if now is None else now
    pids = tuple(running_workers(ops.settings.run_dir))
    progress = last_progress(ops.settings.recovery_dir)
    if not pids:
        return WorkerHealth(pids, progress, False, "no worker process runs")
    stale_after = ops.cfg.ops.stale_after_seconds
    newest = max(filter(None, (progress, *(_started(pid) for pid in pids))), default=None)
    if newest is None or now - newest > stale_after:
        age = "never" if progress is None else f"{now - progress:.0f} s ago"
        return WorkerHealth(pids, progress, False, f"no progress (last {age})")
    return WorkerHealth(pids, progress, True, "running")


def last_progress(recovery_dir: Path) -> float | None:
    """When the dataflow last committed to its recovery store (None before its first run)."""
    times = [f.stat().st_mtime for f in recovery_dir.glob("*") if f.is_file()]
    return max(times, default=None)


@dataclass(frozen=True)
class Supervision:
    action: Action
    health: WorkerHealth  # as found
    pid: int | None = None  # the worker started now


def supervise(ops: Operations, command: list[str] | None = None) -> Supervision:
    """Check the worker; start, restart or leave it (see the module docstring)."""
    health = worker_health(ops)
    if health.healthy:
        return Supervision("healthy", health)
    if health.last_progress is None and not health.pids:  # it never ran here: a first start
        pid = start_worker(ops, command)
        ops.alerter.send(f"Stream worker started (pid {pid})", "info")
        return Supervision("started", health, pid)
    state = read_daily_state()
    restarts = state.get("worker_restarts", 0)
    if restarts >= MAX_RESTARTS:
        ops.alerter.send(
            f"Stream worker down ({health.why}) after {MAX_RESTARTS} restarts today: no more "
            f"restarts until a person looks (log: {worker_log()})",
            "critical",
            key="supervisor-gave-up",
        )
        return Supervision("gave_up", health)
    for pid in health.pids:
        _stop(pid)
    pid = start_worker(ops, command)
    write_daily_state({**state, "worker_restarts": restarts + 1})
    ops.alerter.send(
        f"Stream worker restarted (pid {pid}): {health.why}; restart {restarts + 1} of "
        f"{MAX_RESTARTS} today",
        "warning",
    )
    return Supervision("restarted", health, pid)


def worker_command(ops: Operations) -> list[str]:
    """`scalper stream run` for this configuration (the console script beside this Python)."""
    scalper = str(Path(sys.executable).with_name("scalper"))
    config = ["--config", str(Path(ops.config_path).resolve())] if ops.config_path else []
    return [scalper, "stream", "run", *config]


def worker_log() -> Path:
    return subdir("logs") / "stream-worker.log"


def _supervised_path() -> Path:
    return subdir("state") / "supervised-workers"


def supervised_workers(ops: Operations) -> set[int]:
    """The workers running now that the supervisor started (its list, checked against the
    running processes: a pid reused by another process does not count)."""
    from scalper.live.worker import running_workers

    try:
        listed = {int(line) for line in _supervised_path().read_text().split()}
    except (OSError, ValueError):
        return set()
    return listed & set(running_workers(ops.settings.run_dir))


def stop_workers(pids: Iterable[int]) -> None:
    """Stop these workers (their state is durable: SIGTERM, SIGKILL if they linger)."""
    for pid in pids:
        _stop(pid)


def start_worker(ops: Operations, command: list[str] | None = None) -> int:
    """Start the worker in its own session, logging to `logs/stream-worker.log`; its pid once
    it runs (the command may prepare the run folder first)."""
    from scalper.errors import ScalperError
    from scalper.live.worker import running_workers

    with open(worker_log(), "ab") as log:
        process = subprocess.Popen(
            command or worker_command(ops),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while process.pid not in running_workers(ops.settings.run_dir):
        if process.poll() is not None:
            raise ScalperError(
                f"the stream worker exited at start (code {process.returncode}); see {worker_log()}"
            )
        if time.monotonic() > deadline:
            raise ScalperError(f"the stream worker did not start in {START_TIMEOUT:g} s")
        time.sleep(_POLL)
    with open(_supervised_path(), "a") as listed:
        listed.write(f"{process.pid}\n")
    return process.pid


def _stop(pid: int) -> None:
    """Stop a hung worker and its process group: SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(_POLL)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _started(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
