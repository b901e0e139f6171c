"""The local Kafka broker: one KRaft node run from Maven Central jars with the machine's Java.

Why this way: the stream must be tested against a real broker, and a trader's VPS should not
need Docker or a hand-unpacked Kafka tarball. Maven fetches the exact jars `infra/kafka/pom.xml`
names (once; the cache is keyed by the pom's content), and the broker runs as an ordinary JVM
process in its own process group with a bounded heap, because the same two-core machine also
runs Dagster and the Bytewax workers.

Everything lives in one folder, `kafka/` under the data directory unless told otherwise:

    libs/               the jars (or $SCALPER_KAFKA_LIBS: a cache shared by data directories)
    server.properties   infra/kafka/server.properties with this broker's ports and paths
    data/               topic data and the KRaft metadata log, formatted on first start
    logs/server.log     the broker's log; logs/console.log: JVM output (crashes, bad flags)
    broker.pid          the JVM's pid, also its process group id

A broker is recognised by its pid AND its command line naming this folder's server.properties,
so a stale pid file whose number now belongs to another process is never signalled. Process
inspection goes through /proc: the broker runs on Linux.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scalper import paths
from scalper.errors import ScalperError

INFRA = Path(__file__).resolve().parents[2] / "infra" / "kafka"
POM = INFRA / "pom.xml"
SERVER_TEMPLATE = INFRA / "server.properties"
LOG_CONFIG = INFRA / "log4j2.properties"
LIBS_ENV = "SCALPER_KAFKA_LIBS"

HOST = "127.0.0.1"
PORT = 9092
HEAP = "1g"
# ZGC rather than Kafka's default G1: a bar waits in the broker while the JVM is paused, and G1
# stopped this broker for 7-11 ms every ~3 s at 1 k bars/s (young collections), which alone put
# Kafka's own p99.9 near 10 ms (the baseline of bench/bench_stream.py). ZGC collects concurrently,
# with pauses well under a millisecond; it wants some headroom, hence a 1 GiB heap (still
# bounded: the machine runs Dagster and the workers too).
JVM_OPTIONS = (
    "-XX:+UseZGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
KILL_WAIT = 10.0
_POLL = 0.2
_STAMP = ".pom-sha256"
_LOG_TAIL_BYTES = 64 * 1024
_PR_SET_PDEATHSIG = 1  # prctl(2) option, <linux/prctl.h>

Progress = Callable[[str], None]


def _silent(_: str) -> None:
    """The default progress reporter: says nothing."""


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (the OS picks it), for tests and the controller."""
    with socket.create_server((host, 0)) as probe:
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# Jars


def default_libs() -> Path:
    """Where the jars are cached: `$SCALPER_KAFKA_LIBS` (absolute, as every path the system
    shares between processes), else `kafka/libs` in the data directory."""
    shared = os.environ.get(LIBS_ENV)
    return paths.absolute_path(shared, LIBS_ENV) if shared else paths.subdir_path("kafka") / "libs"


def fetch_jars(libs: Path | None = None, progress: Progress = _silent) -> Path:
    """Make sure `libs` holds the jars of the current pom; fetches with Maven only when not.

    A second call (or a concurrent one, from another test worker) does nothing: the folder is
    filled in a staging folder under a file lock and carries the pom's digest once complete.
    """
    libs = libs if libs is not None else default_libs()
    if _jars_current(libs):
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    mvn = _require("mvn", "Maven (mvn) is needed once to fetch the Kafka jars")
    with _locked(libs.with_name(libs.name + ".lock")):
        if not _jars_current(libs):
            progress("fetching the Kafka jars from Maven Central (first run only, about a minute)")
            _download(mvn, libs)
    return libs


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def _jars_current(libs: Path) -> bool:
    stamp = libs / _STAMP
    return stamp.is_file() and stamp.read_text().strip() == _pom_digest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _download(mvn: str, libs: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{libs.name}-", dir=libs.parent))
    try:
        command = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies"]
        result = _run([*command, f"-DoutputDirectory={staging}"])
        if result.returncode != 0:
            raise ScalperError(
                f"fetching the Kafka jars with Maven failed: {_key_line(result.stdout)}"
            )
        (staging / _STAMP).write_text(_pom_digest())
        if libs.exists():
            shutil.rmtree(libs)
        staging.rename(libs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _require(tool: str, why: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise ScalperError(
            f"{why}, but `{tool}` is not on PATH: install it (e.g. apt-get install "
            f"{'maven' if tool == 'mvn' else 'openjdk-17-jre-headless'})"
        )
    return found


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion with its output (stdout and stderr together) captured."""
    return subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


# A Java exception message (`...ConfigException: Missing required configuration`).
_EXCEPTION = re.compile(r"\w+(Exception|Error): ")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _key_line(text: str) -> str:
    """The one line of a tool's output or log that says what went wrong.

    The last Java exception message names the root cause of a failed start; without one, the
    first ERROR line is Maven's or log4j's own summary; failing both, the last line.
    """
    lines = [line.strip() for line in _ANSI.sub("", text).splitlines() if line.strip()]
    exceptions = [line for line in lines if _EXCEPTION.search(line)]
    errors = [line for line in lines if "ERROR" in line or "FATAL" in line]
    chosen = exceptions[-1:] or errors[:1] or lines[-1:] or ["no output"]
    return chosen[0][:400]


# ---------------------------------------------------------------------------------------------
# The broker


@dataclass(frozen=True)
class BrokerStatus:
    """Whether a broker runs for a data directory, its pid, and where clients reach it."""

    running: bool
    pid: int | None
    bootstrap: str


class KafkaBroker:
    """One local broker whose files live in `root` (default: `kafka/` in the data directory)."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        host: str = HOST,
        port: int = PORT,
        libs: Path | None = None,
        heap: str = HEAP,
        exit_with_parent: bool = False,
    ) -> None:
        """`exit_with_parent` ties the JVM to the starting process (for test fixtures: a test
        run killed mid-way leaves no broker behind); `scalper kafka up` leaves it off, since
        the broker must outlive the command."""
        self.root = (root if root is not None else paths.subdir_path("kafka")).resolve()
        self.host = host
        self.port = port
        self.libs = libs if libs is not None else default_libs()
        self.heap = heap
        self.exit_with_parent = exit_with_parent
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_bootstrap(cls, bootstrap: str, root: Path | None = None) -> KafkaBroker:
        """The broker that serves `bootstrap` (a single local `host:port`, as in the config)."""
        servers = [server.strip() for server in bootstrap.split(",")]
        if len(servers) != 1:
            raise ScalperError(
                f"kafka.bootstrap {bootstrap!r} names several brokers; the local broker is one node"
            )
        host, _, port = servers[0].rpartition(":")
        return cls(root, host=host, port=int(port))

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.root / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "logs" / "server.log"

    @property
    def console_path(self) -> Path:
        return self.root / "logs" / "console.log"

    @property
    def pid_path(self) -> Path:
        return self.root / "broker.pid"

    # -- commands ------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT, progress: Progress = _silent) -> bool:
        """Fetch the jars if needed, format storage on first start, start and wait until ready.

        Returns False, doing nothing, when this data directory's broker already runs. Ready
        means a client gets cluster metadata with this broker unfenced, so topics can be
        created at once. Starts of one data directory's broker take turns (two replays, or a
        replay and `scalper kafka up`, at once): both formatting the storage broke the second.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(self.root / "start.lock"):
            if self.status().running:
                return False
            _check_listenable(self.host, self.port)
            fetch_jars(self.libs, progress)
            java = _require("java", "Java 17 runs the Kafka broker")
            self._write_config()
            if not (self.data_dir / "meta.properties").exists():
                progress("formatting the broker's storage (first start)")
                self._format(java)
            progress(f"starting the Kafka broker at {self.bootstrap}")
            self._launch(java)
            try:
                self._wait_ready(timeout)
            except BaseException:  # a failed or interrupted start leaves no JVM behind
                self.stop()
                raise
        return True

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Stop the broker (SIGTERM, SIGKILL after `timeout`); returns its pid, None if none ran."""
        pid = self._running_pid()
        if pid is not None:
            _signal_group(pid, signal.SIGTERM)
            if not self._gone(pid, timeout):
                _signal_group(pid, signal.SIGKILL)
                self._gone(pid, KILL_WAIT)
        self.pid_path.unlink(missing_ok=True)
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(KILL_WAIT)  # reap our own child
            self._process = None
        return pid

    def status(self) -> BrokerStatus:
        """Whether this data directory's broker runs, and the address it listens on."""
        pid = self._running_pid()
        bootstrap = self._listening_on() if pid is not None else self.bootstrap
        return BrokerStatus(running=pid is not None, pid=pid, bootstrap=bootstrap)

    # -- steps ---------------------------------------------------------------------------------

    def _write_config(self) -> None:
        """Render the template; the controller port is picked free at every start."""
        text = string.Template(SERVER_TEMPLATE.read_text()).substitute(
            host=self.host,
            port=self.port,
            controller_port=free_port(self.host),
            log_dir=self.data_dir,
        )
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(text)

    def _java(self, java: str, main_class: str, *args: str) -> list[str]:
        return [
            java,
            f"-Xmx{self.heap}",
            *JVM_OPTIONS,
            f"-Dkafka.logs.dir={self.log_path.parent}",
            f"-Dlog4j2.configurationFile={LOG_CONFIG}",
            "-cp",
            str(self.libs / "*"),
            main_class,
            *args,
        ]

    def _format(self, java: str) -> None:
        """`kafka-storage format`: writes the cluster id and node id into the data folder."""
        tool = self._java(java, "kafka.tools.StorageTool", "format", "-t", _cluster_id())
        result = _run([*tool, "-c", str(self.config_path)])
        if result.returncode != 0:
            raise ScalperError(
                f"formatting Kafka storage in {self.data_dir} failed: {_key_line(result.stdout)}"
            )

    def _launch(self, java: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.console_path, "ab") as console:
            self._process = subprocess.Popen(
                self._java(java, "kafka.Kafka", str(self.config_path)),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: `stop` signals the whole JVM
                preexec_fn=terminate_with_parent if self.exit_with_parent else None,
            )
        self.pid_path.write_text(f"{self._process.pid}\n")

    def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while not _answers(self.host, self.port):
            code = self._process.poll()
            if code is not None:
                raise ScalperError(
                    f"the Kafka broker exited during start (code {code}): {self._log_summary()}"
                )
            if time.monotonic() > deadline:
                raise ScalperError(
                    f"the Kafka broker did not answer at {self.bootstrap} within {timeout:g} s: "
                    f"{self._log_summary()}"
                )
            time.sleep(_POLL)

    def _log_summary(self) -> str:
        tail = "".join(_tail(path) for path in (self.log_path, self.console_path))
        return f"{_key_line(tail)} (log: {self.log_path})"

    # -- process inspection --------------------------------------------------------------------

    def _running_pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text())
        except (OSError, ValueError):
            return None
        return pid if self._is_broker(pid) else None

    def _is_broker(self, pid: int) -> bool:
        """True while `pid` is this folder's broker (a zombie has an empty command line)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return str(self.config_path).encode() in cmdline.split(b"\0")

    def _gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._is_broker(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL / 2)
        return True

    def _listening_on(self) -> str:
        """The client address in the running broker's rendered config."""
        for line in self.config_path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "advertised.listeners":
                return value.strip().removeprefix("PLAINTEXT://")
        return self.bootstrap


def _check_listenable(host: str, port: int) -> None:
    """Fail early, in one line, when the broker could not bind its client port."""
    try:
        # create_server sets SO_REUSEADDR like the JVM does, so only a listener counts as taken.
        socket.create_server((host, port)).close()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = "the port is in use (stop what uses it or set kafka.bootstrap to another port)"
        else:
            why = (
                f"{os.strerror(exc.errno or 0)} (set kafka.bootstrap to an address of this machine)"
            )
        raise ScalperError(f"cannot start Kafka at {host}:{port}: {why}") from None


def _answers(host: str, port: int) -> bool:
    """True once the broker serves metadata and is unfenced (accepts produce and admin)."""
    from kafka.errors import KafkaError

    from scalper.kafka.clients import admin_client

    try:
        socket.create_connection((host, port), timeout=1.0).close()
        admin = admin_client(f"{host}:{port}")
    except (OSError, ScalperError):
        return False
    try:
        brokers = admin.describe_cluster()["brokers"]
    except KafkaError:
        return False
    finally:
        admin.close()
    return any(not broker.get("is_fenced") for broker in brokers)


def terminate_with_parent() -> None:
    """Runs in the child before `exec` (`preexec_fn`): Linux sends it SIGTERM when its parent
    dies, however it dies (SIGKILL included), so a helper process is never orphaned."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - _LOG_TAIL_BYTES))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in unpadded base64url, as `kafka-storage random-uuid`.

    Like Kafka, skip ids starting with '-', which a command line would read as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id
