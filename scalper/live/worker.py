"""Starting stream workers: their input positions, their recovery store, their processes.

A worker is `python -m bytewax.run "streams.live:build(...)"` with Bytewax recovery on, started as
its own process (this module imports no Bytewax; the library never does). Before the first start
of a run folder, `prepare_run` creates the topics, pins where the worker begins reading (the
current ends of its topics, see `Ledger.pin_start_offsets`) and initialises the recovery
partitions. Later starts of the same folder resume from the last snapshot.

Each worker process writes `worker-<process id>.pid` in its run folder; a pid counts as running
only while its command line names that folder, so a stale pid file is never trusted. The pid file
informs; what makes a worker the only one of its folder is `worker-<process id>.lock`, which the
worker process holds (an exclusive `flock`) for its whole life: two starts that race past the pid
check would otherwise both trade the same symbols from the same ledger, and every order twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from kafka import TopicPartition
from kafka.admin import OffsetSpec

from scalper.errors import ScalperError
from scalper.kafka.broker import terminate_with_parent
from scalper.kafka.clients import admin_client
from scalper.kafka.topics import ensure_topics
from scalper.ledger import Ledger
from scalper.live.settings import LiveSettings

STOP_TIMEOUT = 10.0
_BACKUP_SECONDS = 0  # keep no older snapshots than needed to resume: nobody backs them up


def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """The current end (next offset to be written) of every partition of `topics`."""
    admin = admin_client(bootstrap)
    try:
        described = admin.describe_topics(list(topics))
        specs = {
            TopicPartition(topic["name"], part["partition_index"]): OffsetSpec.LATEST
            for topic in described
            for part in topic["partitions"]
        }
        found = admin.list_partition_offsets(specs)
    finally:
        admin.close()
    return {(tp.topic, tp.partition): int(offset.offset) for tp, offset in found.items()}


def pin_start_offsets(settings: LiveSettings) -> None:
    """Pin the run's first read of every input partition at its current end (once: a
    partition pinned before keeps its place)."""
    ends = end_offsets(settings.bootstrap, settings.topics)
    ledger = Ledger(settings.ledger_path)
    try:
        ledger.pin_start_offsets(ends)
    finally:
        ledger.close()


def prepare_run(settings: LiveSettings, processes: int = 1) -> None:
    """Topics, start positions and recovery partitions of a run folder (idempotent)."""
    ensure_topics(settings.bootstrap, settings.symbols, settings.namespace)
    pin_start_offsets(settings)
    recovery = settings.recovery_dir
    if not recovery.exists():
        partitions = max(1, settings.cfg.stream.workers * processes)
        staging = recovery.with_name(recovery.name + ".init")
        shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted earlier attempt
        staging.mkdir(parents=True)
        _run_python("-m", "bytewax.recovery", str(staging), str(partitions))
        staging.rename(recovery)  # a half-initialised store is never taken for a real one


def _run_python(*args: str) -> None:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ScalperError(f"python {' '.join(args)} failed: {last}")


def worker_command(
    settings: LiveSettings,
    *,
    workers: int | None = None,
    process_id: int | None = None,
    addresses: str | None = None,
) -> list[str]:
    """The command line of one worker process (`addresses`: `host:port;host:port` of all)."""
    factory = (
        f"streams.live:build({settings.config_path!r}, {str(settings.run_dir)!r}, "
        f"source_seconds={settings.source_seconds}, replay={settings.namespace.replay!r})"
    )
    command = [
        sys.executable,
        "-m",
        "bytewax.run",
        factory,
        "-w",
        str(workers or settings.cfg.stream.workers),
        "-r",
        str(settings.recovery_dir),
        "-s",
        str(settings.cfg.stream.snapshot_seconds),
        "-b",
        str(_BACKUP_SECONDS),
    ]
    if process_id is not None:
        command += ["-i", str(process_id), "-a", addresses or ""]
    return command


def pid_path(run_dir: Path, process_id: int | None) -> Path:
    return run_dir / f"worker-{process_id or 0}.pid"


def claim_worker_slot(run_dir: Path, process_id: int | None) -> int:
    """An open descriptor holding the exclusive lock of worker `process_id` of `run_dir`.

    The kernel drops the lock when the last descriptor of it closes, i.e. when the worker
    process that inherited it dies however it dies (SIGKILL included), so a crash never leaves
    a stale lock behind for the restart to trip over.
    """
    fd = os.open(run_dir / f"worker-{process_id or 0}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        running = running_workers(run_dir)
        holder = f" (pid {running[0]})" if running else ""
        raise ScalperError(f"a stream worker already runs for {run_dir}{holder}") from None
    return fd


def running_workers(run_dir: Path) -> list[int]:
    """Pids of the worker processes running for `run_dir`.

    The folder must be the one quoted in the worker's factory argument: a replay's folder
    (`stream/replays/...`) contains the live one's path, and a replay worker that took over a
    stale pid must not pass for the live worker."""
    quoted = repr(str(run_dir)).encode()
    pids = []
    for path in sorted(run_dir.glob("worker-*.pid")):
        with contextlib.suppress(OSError, ValueError):
            pid = int(path.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"bytewax.run" in cmdline and quoted in cmdline:
                pids.append(pid)
    return pids


def start_worker(
    settings: LiveSettings,
    *,
    workers: int | None = None,
    process_id: int | None = None,
    addresses: str | None = None,
    log: IO[bytes] | None = None,
    exit_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start one worker process of a prepared run folder, in its own process group; it holds
    the folder's worker lock (`claim_worker_slot`) from its first instruction.

    `exit_with_parent`: the worker ends when the starting process dies, however it dies (a
    replay's worker serves its replay only; orphaned, it would poll its topics forever)."""
    command = worker_command(settings, workers=workers, process_id=process_id, addresses=addresses)
    lock = claim_worker_slot(settings.run_dir, process_id)
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(lock,),
            preexec_fn=terminate_with_parent if exit_with_parent else None,
        )
    finally:
        os.close(lock)  # the child's copy keeps the lock for as long as it lives
    pid_path(settings.run_dir, process_id).write_text(f"{process.pid}\n")
    return process


def exec_worker(
    settings: LiveSettings,
    *,
    workers: int | None = None,
    process_id: int | None = None,
    addresses: str | None = None,
    lock: int | None = None,
) -> None:
    """Become the worker process (for `scalper stream run` under a service manager).

    `lock` is the descriptor from `claim_worker_slot`, taken before the run folder was
    prepared; it is claimed here when not given. It survives the exec, so the worker holds it.
    """
    command = worker_command(settings, workers=workers, process_id=process_id, addresses=addresses)
    if lock is None:
        lock = claim_worker_slot(settings.run_dir, process_id)
    os.set_inheritable(lock, True)
    pid_path(settings.run_dir, process_id).write_text(f"{os.getpid()}\n")
    os.execv(command[0], command)


def stop_worker(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """Stop a worker started here: SIGTERM (its state is durable, no shutdown is needed),
    SIGKILL if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
