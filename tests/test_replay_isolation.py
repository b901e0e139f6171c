"""Issue 10 item 2: history never reaches a live worker.

A paper worker (`scalper stream run`) and a worker trading at IB (the fake gateway) run on the live
topics while `scalper stream replay` replays a file — with the IB worker's own configuration, in
the paper worker's data directory, the two ways it leaked before. The replay trades exactly as
the backtest, in its own namespace and with the paper broker; neither live worker's ledger nor
the gateway sees an order. Then a historical bar published straight to the live `bars.MES` is
dead-lettered by both live workers for its age. Nor does a replay's worker process pass for the
live worker.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scalper.kafka.broker import KafkaBroker, free_port
from scalper.kafka.clients import admin_client, publish, read_topic
from scalper.kafka.messages import (
    Control,
    DeadLetter,
    decode_dead_letter,
    encode_bar,
    encode_control,
)
from scalper.kafka.topics import LIVE, Namespace
from scalper.ledger import Ledger
from scalper.live.settings import LiveSettings
from scalper.live.worker import end_offsets, prepare_run, running_workers, start_worker, stop_worker
from tests.fakes.tws import FakeGateway
from tests.shared import CONFORMANCE, SCALPER, bars_path, expected_rows, first_difference, run
from tests.stream_support import bars_of, case_bars, write_config

CASE = CONFORMANCE / "09_five_minute_bars"  # the shortest file: 5-minute bars
ACCOUNT = "DU7654321"
START_WAIT = 60.0


@pytest.fixture
def gateway_options() -> dict[str, Any]:
    return {"account": ACCOUNT}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The data directory of the paper worker and of the replay; the account from the
    environment, as in production (worker processes inherit both)."""
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IB_ACCOUNT", ACCOUNT)
    return tmp_path / "home"


def eventually(condition: Callable[[], bool], what: str, timeout: float = START_WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.2)


@pytest.fixture
def live_workers(
    kafka_broker: KafkaBroker, gateway: FakeGateway, home: Path, tmp_path: Path
) -> Iterator[tuple[str, LiveSettings]]:
    """The IB configuration, once both live workers run: the paper one (`scalper stream run`
    in `home`) and the IB one (its own run folder), both reading the live `bars.MES`."""
    overrides = yaml.safe_load((CASE / "config.yaml").read_text())
    kafka, stream = {"bootstrap": kafka_broker.bootstrap}, {"source_bar_seconds": 60}
    paper = write_config(tmp_path / "paper.yaml", overrides, kafka=kafka, stream=stream)
    broker = {"kind": "ibkr", "port": gateway.port, "client_id": 31, "account": "${IB_ACCOUNT}"}
    ib = write_config(tmp_path / "ib.yaml", overrides, kafka=kafka, stream=stream, broker=broker)
    ib_live = LiveSettings.load(ib, tmp_path / "ib-run")
    prepare_run(ib_live)
    with open(tmp_path / "paper.log", "wb") as paper_log, open(tmp_path / "ib.log", "wb") as log:
        paper_worker = subprocess.Popen(
            [SCALPER, "stream", "run", "--config", paper], stdout=paper_log, stderr=paper_log
        )
        ib_worker = start_worker(ib_live, log=log)
    try:
        eventually(lambda: running_workers(home / "stream") == [paper_worker.pid], "paper worker")
        assert ib_worker.poll() is None, (tmp_path / "ib.log").read_text()
        yield ib, ib_live
        assert paper_worker.poll() is None and ib_worker.poll() is None, "a live worker died"
    finally:
        paper_worker.terminate()
        paper_worker.wait(30)
        stop_worker(ib_worker)


def ledger_activity(path: Path) -> tuple[list[Any], list[Any]]:
    """(orders, trades) in a worker's ledger."""
    ledger = Ledger(path)
    try:
        return ledger.orders(), ledger.trades("MES")
    finally:
        ledger.close()


def dead_letters(bootstrap: str, offset: int) -> list[DeadLetter]:
    """The dead letters of the live `bars.MES` message at `offset`."""
    letters = [decode_dead_letter(r.value) for r in read_topic(bootstrap, LIVE.dead_letter)]
    return [
        letter
        for letter in letters
        if isinstance(letter, DeadLetter)
        and (letter.topic, letter.offset) == (LIVE.bars("MES"), offset)
    ]


def test_a_replay_reaches_no_live_worker_and_history_is_dead_lettered_for_its_age(
    live_workers: tuple[str, LiveSettings], gateway: FakeGateway, home: Path, tmp_path: Path
) -> None:
    ib_config, ib_live = live_workers
    out = tmp_path / "trades.csv"
    args = ["--config", ib_config, "--data", str(bars_path(CASE)), "--trades-out", str(out)]
    proc = run("stream", "replay", *args, home=home)
    assert proc.returncode == 0, proc.stderr
    assert "a replay trades with the paper broker only" in proc.stderr
    with open(out, newline="") as handle:
        problem = first_difference(list(csv.DictReader(handle)), expected_rows(CASE))
    assert problem is None, problem
    run_dir = Path(proc.stdout.rsplit("state in ", 1)[1].strip())
    assert run_dir.parent == home / "stream" / "replays"
    admin = admin_client(ib_live.bootstrap)
    try:
        assert not [t for t in admin.list_topics() if t.startswith(f"replay.{run_dir.name}.")]
    finally:
        admin.close()

    # History straight to the live topic, and a replay's end marker (which would flatten).
    old_bar = bars_of(case_bars(CASE).head(1), "MES")[0]
    offset = end_offsets(ib_live.bootstrap, [LIVE.bars("MES")])[(LIVE.bars("MES"), 0)]
    end = encode_control(Control("end_of_data", "MES"))
    publish(ib_live.bootstrap, LIVE.bars("MES"), [encode_bar(old_bar), end])
    age = "bar age: the bar at 20"
    limit = "beyond stream.max_bar_age_seconds = 300"
    for at, why in [(offset, (age, limit)), (offset + 1, ("a live market has no end of data",))]:
        eventually(lambda at=at: len(dead_letters(ib_live.bootstrap, at)) == 2, "dead letters")
        for letter in dead_letters(ib_live.bootstrap, at):  # one from each live worker
            assert all(needle in letter.reason for needle in why), letter.reason

    for ledger in (home / "stream" / "ledger.sqlite", ib_live.ledger_path):
        assert ledger_activity(ledger) == ([], []), ledger
    assert gateway.orders.placed == [] and gateway.orders.refs() == []
    assert (run_dir / "ledger.sqlite").is_file()  # the replay's trades are in its own


def test_a_replay_worker_never_passes_for_the_live_worker(tmp_path: Path) -> None:
    """A replay's run folder lies inside the live one's (`stream/replays/...`): a process of
    the replay, found under a stale pid file of the live folder, is not the live worker (which
    `scalper stream run`, `status` and the supervisor would otherwise take as running)."""
    live, replay = tmp_path / "stream", tmp_path / "stream" / "replays" / "MES-1"
    replay.mkdir(parents=True)
    factory = f"streams.live:build(None, {str(replay)!r}, replay='MES-1')"
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "bytewax.run", factory]
    )
    try:
        for folder in (live, replay):
            (folder / "worker-0.pid").write_text(f"{sleeper.pid}\n")
        eventually(lambda: running_workers(replay) == [sleeper.pid], "the replay's worker", 10)
        assert running_workers(live) == []
    finally:
        sleeper.kill()
        sleeper.wait()


def replay_topics(bootstrap: str, run_id: str) -> list[str]:
    """The topics of the replay `run_id` (other tests' replays share the broker)."""
    admin = admin_client(bootstrap)
    try:
        return sorted(name for name in admin.list_topics() if name.startswith(f"replay.{run_id}."))
    finally:
        admin.close()


def started_replay(home: Path, config: str, data: Path) -> tuple[subprocess.Popen[str], int, str]:
    """A paced `scalper stream replay` (minutes long), once its worker runs: the process, its
    worker's pid and its run id."""
    before = set((home / "stream" / "replays").glob("*"))
    proc = subprocess.Popen(
        [SCALPER, "stream", "replay", "--config", config, "--data", str(data), "--speed", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    found: list[tuple[int, str]] = []

    def worker_runs() -> bool:
        assert proc.poll() is None, proc.communicate()
        for folder in set((home / "stream" / "replays").glob("*")) - before:
            found[:] = [(pid, folder.name) for pid in running_workers(folder)]
        return bool(found)

    eventually(worker_runs, "the replay's worker")
    return proc, *found[0]


def gone(pid: int) -> bool:
    return (
        not Path(f"/proc/{pid}").exists()
        or b"bytewax" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    )


def test_a_replay_stopped_or_killed_leaves_no_worker_and_no_topics_behind(
    kafka_broker: KafkaBroker, home: Path, tmp_path: Path
) -> None:
    """A replay stopped (SIGTERM, as a service manager or `kill` does) stops its worker and
    deletes its topics; one killed outright (SIGKILL) cannot, but its worker dies with it and
    the next replay of the data directory deletes the topics it left. Before, the worker
    (in its own session) polled its topics forever and the topics stayed."""
    overrides = yaml.safe_load((CASE / "config.yaml").read_text())
    config = write_config(
        tmp_path / "replay.yaml", overrides, kafka={"bootstrap": kafka_broker.bootstrap}
    )
    killed, killed_worker, killed_id = started_replay(home, config, bars_path(CASE))
    killed.kill()
    killed.communicate()
    eventually(lambda: gone(killed_worker), "the killed replay's worker ends", 15)
    assert replay_topics(kafka_broker.bootstrap, killed_id) != []  # nobody could delete them

    stopped, stopped_worker, stopped_id = started_replay(home, config, bars_path(CASE))
    assert replay_topics(kafka_broker.bootstrap, killed_id) == []  # the next one did
    assert replay_topics(kafka_broker.bootstrap, stopped_id) != []
    stopped.terminate()
    _, err = stopped.communicate(timeout=60)
    assert stopped.returncode == 130 and "Traceback" not in err, err
    assert gone(stopped_worker)
    assert replay_topics(kafka_broker.bootstrap, stopped_id) == []


def test_a_replay_leaves_the_broker_it_started_up_when_the_live_worker_reads_it(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replay starts the data directory's broker when none answers and stops it at the end;
    if the live worker was started meanwhile (it reads that broker now), stopping it would take
    its bars, its end-of-day exit and the kill switch's stream path: the broker stays up."""
    from scalper.live.replay import _answers, _kafka
    from scalper.live.settings import default_run_dir

    bootstrap = f"127.0.0.1:{free_port()}"
    live = default_run_dir(create=True)
    factory = f"streams.live:build(None, {str(live)!r})"
    with _kafka(bootstrap):
        worker = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)", "bytewax.run", factory]
        )
        (live / "worker-0.pid").write_text(f"{worker.pid}\n")
        eventually(lambda: running_workers(live) == [worker.pid], "the live worker", 10)
    try:
        assert _answers(bootstrap)
        assert f"the live stream worker (pid {worker.pid}) reads it" in capsys.readouterr().err
    finally:
        worker.kill()
        worker.wait()
        KafkaBroker.for_bootstrap(bootstrap).stop()


def test_replays_started_in_the_same_microsecond_get_folders_of_their_own(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run folder names the replay's ledger and topics: a second replay of the same
    microsecond ended in a FileExistsError traceback (or, with exist_ok, would share them)."""
    from datetime import UTC, datetime

    from scalper.live import replay

    instant = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return instant

    monkeypatch.setattr(replay, "datetime", Frozen)
    folders = [replay._new_run_dir("MES") for _ in range(3)]
    assert [f.name for f in folders] == [
        "MES-20260102T030405678901",
        "MES-20260102T030405678901-1",
        "MES-20260102T030405678901-2",
    ]
    assert all(Namespace.of_replay(f.name) for f in folders)  # each names topics of its own
