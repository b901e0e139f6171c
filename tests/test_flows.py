"""The operations flows under a real local Prefect server.

The server is started once for the module (free port, temporary Prefect home, analytics off),
the way `scalper ops serve` starts it, and the flow runs of these tests are recorded there. The
flows meet real components: Kafka (the control topic), the fake IB Gateway through ib_async, the
ledger, a real stream worker process, and Telegram as a local HTTP recorder.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import polars as pl
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.logging.handlers import APILogWorker
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_HOME,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    temporary_settings,
)

from flows.operations import (
    FLOWS,
    KillNotConfirmed,
    daily_summary_flow,
    eod_watchdog,
    kill_switch,
    session_open,
    stream_supervisor,
)
from flows.serve import deployments
from scalper.bars import BAR_SCHEMA
from scalper.cli.ops import FLOW_NAMES
from scalper.config import config_from_dict, load_config
from scalper.errors import ScalperError
from scalper.kafka.broker import KafkaBroker, free_port
from scalper.kafka.messages import Control
from scalper.live.worker import running_workers
from scalper.ops import procedures
from scalper.ops.context import Operations
from scalper.ops.prefect import api_url, server_answers, start_server, stop_process
from scalper.ops.summary import daily_summary, session_window
from scalper.ops.supervisor import supervised_workers
from scalper.store import mark_partition, stage_root, write_bars_partitioned
from tests import ops_support
from tests.fakes.http_recorder import HttpRecorder
from tests.fakes.tws import FakeGateway
from tests.ops_support import (
    ACCOUNT,
    SYMBOL,
    TOKEN,
    OpsWorld,
    make_world,
    trade_by_hand,
    watch_time,
)
from tests.shared import SCALPER, run, write_approved

gateway_options = ops_support.gateway_options
secrets = ops_support.secrets
telegram = ops_support.telegram

pytestmark = pytest.mark.usefixtures("secrets")
NS = 1_000_000_000


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Prefect server for the module; the flows of this process report to it."""
    home = tmp_path_factory.mktemp("prefect-home")
    cfg = config_from_dict({"ops": {"prefect_port": free_port()}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCALPER_HOME", str(home))
        with open(home / "server.log", "wb") as log:
            server = start_server(cfg, log)
    updates = {
        PREFECT_API_URL: api_url(cfg),
        PREFECT_HOME: str(home / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED: False,
    }
    try:
        with temporary_settings(updates=updates):
            yield api_url(cfg)
            APILogWorker.drain_all(timeout=5)  # the runs' logs reach the server before it stops
    finally:
        stop_process(server)


@pytest.fixture
def world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker,
    telegram: HttpRecorder, prefect_server: str,
) -> OpsWorld:  # fmt: skip
    """A paper-broker setup."""
    return make_world(tmp_path, monkeypatch, kafka_broker, telegram)


@pytest.fixture
def ibkr_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker,
    telegram: HttpRecorder, gateway: FakeGateway, prefect_server: str,
) -> OpsWorld:  # fmt: skip
    """An IBKR setup, against the fake gateway."""
    return make_world(tmp_path, monkeypatch, kafka_broker, telegram, gateway)


def published_since(world: OpsWorld, since: int) -> list[Control]:
    return [c for c in world.controls() if c.issued_at >= since]


def risk_events(world: OpsWorld) -> list[str]:
    ops = Operations.load(str(world.config))
    with ops.ledger() as ledger:
        return [e["event"] for e in ledger.risk_events(SYMBOL)]


def test_session_open_halts_on_a_position_mismatch(ibkr_world: OpsWorld) -> None:
    assert ibkr_world.gateway is not None
    trade_by_hand(ibkr_world.gateway, "BUY", 1)
    approved = ibkr_world.home / "research" / "approved_params.yaml"
    write_approved(approved, ibkr_world.config, IBKR_PROVENANCE, strategy={"lookback": 15})
    since = time.time_ns()
    result = session_open(config=str(ibkr_world.config))
    assert result["action"] == "halted"
    assert result["mismatches"] == ["MES position: broker +1, ledger +0"]
    assert result["approved_params"] == str(approved)
    commands = [c.command for c in published_since(ibkr_world, since)]
    assert commands == ["pause", "reload_params"]
    [alert] = ibkr_world.alerts()
    assert "disagree" in alert and "entries are paused" in alert
    assert risk_events(ibkr_world) == ["mismatch_halt"]


def test_session_open_with_kafka_down_alerts_that_entries_are_not_paused(
    ibkr_world: OpsWorld,
) -> None:
    """A mismatch that cannot be paused is not recorded as paused (`scalper status` reads the
    record) and is alerted as such, and the run fails."""
    assert ibkr_world.gateway is not None
    trade_by_hand(ibkr_world.gateway, "BUY", 1)
    config = yaml.safe_load(ibkr_world.config.read_text())
    config["kafka"]["bootstrap"] = f"127.0.0.1:{free_port()}"
    ibkr_world.config.write_text(yaml.safe_dump(config))
    with pytest.raises(ScalperError, match="entries could not be paused: no Kafka broker"):
        procedures.session_open(Operations.load(str(ibkr_world.config)))
    [alert] = ibkr_world.alerts()
    assert "disagree, and entries could NOT be paused" in alert
    assert risk_events(ibkr_world) == ["mismatch_unpaused"]


IBKR_PROVENANCE = {"data_source": "ibkr", "symbol": "MES"}
OTHER_SETTINGS = "approved with other trading settings"


@pytest.mark.parametrize(
    ("provenance", "why"),
    [
        ("none", "no provenance"),
        ({"data_source": "simulator", "symbol": "MES"}, "approved on simulated data"),
        ({"data_source": "ibkr", "symbol": "ES"}, "approved for ES, not for MES"),
        ({**IBKR_PROVENANCE, "config_hash": "0" * 64}, OTHER_SETTINGS),  # another config's
        ({**IBKR_PROVENANCE, "config_hash": None}, OTHER_SETTINGS),  # none recorded
        ("commission changed since", OTHER_SETTINGS),
        ("lookback edited by hand", OTHER_SETTINGS),
    ],
)
def test_session_open_refuses_parameters_not_approved_on_this_market(
    provenance: dict | str, why: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    kafka_broker: KafkaBroker, telegram: HttpRecorder, gateway: FakeGateway,
) -> None:  # fmt: skip
    """Approved on simulated data, for another symbol, of unknown origin, or under trading
    settings other than those the configuration has with them (a cost changed since the
    research, a value edited in the file): not sent to the worker (the current parameters
    stay) and a warning says why. (The procedure itself: the flow above is a shell around it.)"""
    world = make_world(tmp_path, monkeypatch, kafka_broker, telegram, gateway)
    approved = world.home / "research" / "approved_params.yaml"
    recorded = provenance if isinstance(provenance, dict) else IBKR_PROVENANCE
    write_approved(approved, world.config, recorded, strategy={"lookback": 15})
    if provenance == "none":  # written by hand, or before provenance was recorded
        approved.write_text("strategy: {lookback: 15}\n")
    elif provenance == "commission changed since":
        config = yaml.safe_load(world.config.read_text())
        world.config.write_text(yaml.safe_dump({**config, "costs": {"commission_per_side": 0.62}}))
    elif provenance == "lookback edited by hand":
        approved.write_text(approved.read_text().replace("lookback: 15", "lookback: 12"))
    since = time.time_ns()
    result = procedures.session_open(Operations.load(str(world.config)))
    assert result.action == "none" and result.approved_params is None
    assert published_since(world, since) == []
    [alert] = world.alerts()
    assert "Approved parameters not loaded" in alert and why in alert


def test_session_open_adopts_when_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker,
    telegram: HttpRecorder, gateway: FakeGateway, prefect_server: str,
) -> None:  # fmt: skip
    ops = {"telegram_api": telegram.url, "alert_throttle_seconds": 0, "on_mismatch": "adopt"}
    world = make_world(tmp_path, monkeypatch, kafka_broker, telegram, gateway, ops=ops)
    trade_by_hand(gateway, "SELL", 2)
    since = time.time_ns()
    result = session_open(config=str(world.config))
    assert result["action"] == "adopted" and result["approved_params"] is None
    assert published_since(world, since) == []
    [alert] = world.alerts()
    assert "adopted" in alert and "broker -2, ledger +0" in alert
    assert risk_events(world) == ["mismatch_adopted"]


def test_session_open_agrees_when_broker_and_ledger_do(ibkr_world: OpsWorld) -> None:
    result = session_open(config=str(ibkr_world.config))
    assert (result["action"], result["mismatches"]) == ("none", [])
    assert ibkr_world.alerts() == []


def test_the_eod_watchdog_flattens_and_alerts(ibkr_world: OpsWorld) -> None:
    assert ibkr_world.gateway is not None
    trade_by_hand(ibkr_world.gateway, "BUY", 1)
    at = f"{watch_time(ibkr_world.config):%H:%M}"  # as scheduled, whatever the clock says
    result = eod_watchdog(config=str(ibkr_world.config), at=at)
    assert result == {
        "positions": {SYMBOL: 1}, "remaining": {}, "flat": True, "flattened_at_broker": True,
        "due": True,
    }  # fmt: skip
    assert ibkr_world.gateway.position("MESM4") == 0
    [alert] = ibkr_world.alerts()
    assert "EOD watchdog" in alert and "flattened at the broker" in alert
    assert eod_watchdog(config=str(ibkr_world.config), at=at)["positions"] == {}  # all quiet
    assert len(ibkr_world.alerts()) == 1


def test_the_eod_watchdog_and_session_open_alert_when_they_cannot_see_the_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker,
    telegram: HttpRecorder,
) -> None:  # fmt: skip
    """IB unreachable at the watch time: the positions may be open over the close, and the
    failed run alone tells nobody (a red run in a UI nobody watches at 16:27): a critical alert
    says so; likewise a session open that could not reconcile. (The procedures: the flows are
    shells around them.)"""
    broker = {"kind": "ibkr", "port": free_port(), "account": "${IB_ACCOUNT}"}
    world = make_world(tmp_path, monkeypatch, kafka_broker, telegram, broker=broker)
    with pytest.raises(ScalperError, match="connect"):
        procedures.eod_check(Operations.load(str(world.config)), watch_time(world.config))
    with pytest.raises(ScalperError, match="connect"):  # the same at session open
        procedures.session_open(Operations.load(str(world.config)))
    eod, session = world.alerts()
    assert "EOD watchdog could NOT check the positions" in eod and "act now" in eod
    assert "could NOT reconcile with the ibkr broker" in session


def test_no_operation_reports_on_a_data_directory_no_worker_ran_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker,
    telegram: HttpRecorder,
) -> None:  # fmt: skip
    """Flows pointed at a data directory that is not the worker's (no ledger there) made an
    empty ledger and reported "P&L 0 over 0 trades", "no mismatches", "flat": a quiet day,
    while the worker traded from another one. Each refuses now, names where it looked, and
    creates nothing; session open and the EOD watchdog alert."""
    world = make_world(tmp_path, monkeypatch, kafka_broker, telegram)
    shutil.rmtree(world.home / "stream")
    ops = Operations.load(str(world.config))
    watchdog = functools.partial(procedures.eod_check, scheduled_at=watch_time(world.config))
    for operation in (procedures.session_open, watchdog, daily_summary):
        with pytest.raises(ScalperError, match=f"no ledger at {world.home}/stream/ledger.sqlite"):
            operation(ops)
    assert not (world.home / "stream").exists()
    session, eod = world.alerts()
    assert "could NOT reconcile" in session and "EOD watchdog could NOT check" in eod


def test_the_eod_watchdog_watches_an_early_close_before_the_market_closes(
    ibkr_world: OpsWorld,
) -> None:
    """SPEC §4.9: the exchange closes today at 13:00, so the engine flattens at 12:50 and the
    watchdog looks at 12:52, not at 16:27 when the market is shut; the 16:27 run does nothing."""
    assert ibkr_world.gateway is not None
    config = str(ibkr_world.config)
    today = Operations.load(config).session_date()
    data = yaml.safe_load(ibkr_world.config.read_text())
    data["session"] = {"early_closes": {today.isoformat(): "13:00"}}
    ibkr_world.config.write_text(yaml.safe_dump(data))
    watches = procedures.eod_watch_times(load_config(config), today)
    assert [f"{t:%H:%M}" for t in watches] == ["16:27", "12:52"]
    trade_by_hand(ibkr_world.gateway, "BUY", 1)
    assert eod_watchdog(config=config, at="16:27")["due"] is False
    assert ibkr_world.gateway.position("MESM4") == 1 and ibkr_world.alerts() == []
    result = eod_watchdog(config=config, at="12:52")
    assert (result["positions"], result["flat"]) == ({SYMBOL: 1}, True)
    assert ibkr_world.gateway.position("MESM4") == 0
    [alert] = ibkr_world.alerts()
    assert "still open after 12:50" in alert


def test_the_kill_switch_publishes_kill(world: OpsWorld) -> None:
    result = kill_switch(config=str(world.config), reason="flows test kill")
    kills = [c for c in world.controls() if c.reason == "flows test kill"]
    assert [(c.command, c.symbol, c.issued_at) for c in kills] == [
        ("kill", "*", result["issued_at"])
    ]
    assert result["confirmed"] and result["symbols"][SYMBOL]["flat"]
    [alert] = world.alerts()
    assert "Kill switch" in alert and "flows test kill" in alert


def test_the_kill_switch_flow_fails_when_the_kill_is_not_confirmed(ibkr_world: OpsWorld) -> None:
    """The flow runs `scalper kill`'s procedure: IB is flattened with Kafka down, and the run
    fails (red in the UI) because the stream was not told."""
    assert ibkr_world.gateway is not None
    trade_by_hand(ibkr_world.gateway, "BUY", 1)
    config = yaml.safe_load(ibkr_world.config.read_text())
    config["kafka"]["bootstrap"] = f"127.0.0.1:{free_port()}"
    ibkr_world.config.write_text(yaml.safe_dump(config))
    with pytest.raises(KillNotConfirmed, match="NOT told"):
        kill_switch(config=str(ibkr_world.config), reason="flow with kafka down", symbols=["mes"])
    assert ibkr_world.gateway.position("MESM4") == 0


def test_the_daily_summary_writes_its_page_and_alerts_without_secrets(world: OpsWorld) -> None:
    ops = Operations.load(str(world.config))
    session = ops.session_date()
    start, end = session_window(ops, session)
    with ops.ledger() as ledger:
        for i, pnl in enumerate((12.5, -4.0)):
            ledger.record_trade(f"fill-{i}", SYMBOL, _trade(start + i * 120 * NS, pnl))
        ledger.record_risk_event("e1", SYMBOL, "halted", "daily loss limit reached")
    validated = stage_root("validated")
    for day in write_bars_partitioned(_bars(start, end - 60 * NS), SYMBOL, validated):
        mark_partition(SYMBOL, day, {"validated": 10, "failed": 2, "quarantined": 1}, validated)
    result = daily_summary_flow(config=str(world.config))
    assert result["session"] == session.isoformat()
    assert result["pnl"] == pytest.approx(8.5) and result["trades"] == 2
    page = Path(result["page"]).read_text()
    for section in ("summary", "trades", "risk-events", "data-quality"):
        assert f"id='{section}'" in page
    assert "daily loss limit reached" in page and "failed: 2 failures" in page
    [alert] = world.alerts()
    assert "P&L +8.50 over 2 trades" in alert and "Breaker trips and halts: 1" in alert
    assert "failed: 2 failures" in alert and result["page"] in alert
    for text in (page, alert, world.telegram.requests[0].body.decode()):
        assert TOKEN not in text and ACCOUNT not in text


def _bars(*starts: int) -> pl.DataFrame:
    """One bar at each time (the session's first and last UTC day get a stored partition)."""
    n = len(starts)
    return pl.DataFrame(
        {"ts": list(starts), "open": [5000.0] * n, "high": [5000.5] * n, "low": [4999.5] * n,
         "close": [5000.25] * n, "volume": [10] * n},
        schema=BAR_SCHEMA,
    )  # fmt: skip


def _trade(entry_ts: int, pnl: float) -> dict[str, object]:
    return {
        "entry_ts": entry_ts, "exit_ts": entry_ts + 60 * NS, "side": "long", "qty": 1,
        "entry_price": 5000.0, "exit_price": 5002.5, "pnl": pnl, "exit_reason": "signal",
    }  # fmt: skip


def test_the_daily_summary_in_the_evening_is_the_session_that_just_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker,
    telegram: HttpRecorder,
) -> None:  # fmt: skip
    """Run at 19:00 New York (by hand, or an `ops.summary_at` after the close), the summary was
    of the session that began at 18:00 — tomorrow's, empty: "P&L +0.00 over 0 trades"."""
    world = make_world(tmp_path, monkeypatch, kafka_broker, telegram)
    ops = Operations.load(str(world.config))
    ten_am = 1_717_423_200 * NS  # 2024-06-03 10:00 New York
    with ops.ledger() as ledger:
        ledger.record_trade("fill-0", SYMBOL, _trade(ten_am, 7.5))
    summary, page = daily_summary(ops, now_ns=ten_am + 9 * 3600 * NS)  # 19:00 New York
    assert summary.session == date(2024, 6, 3) and summary.trade_count == 1
    assert page.name == "2024-06-03.html"
    assert daily_summary(ops, now_ns=ten_am)[0].session == date(2024, 6, 3)  # during it too


def test_the_stream_supervisor_restarts_a_worker_that_died(world: OpsWorld) -> None:
    run_dir = Operations.load(str(world.config)).settings.run_dir
    try:
        first = stream_supervisor(config=str(world.config))
        assert first["action"] == "started"
        wait_for(lambda: stream_supervisor(config=str(world.config))["action"] == "healthy", 60)
        os.killpg(first["pid"], signal.SIGKILL)
        wait_for(lambda: not running_workers(run_dir), 10)
        second = stream_supervisor(config=str(world.config))
        assert second["action"] == "restarted" and second["pid"] != first["pid"]
        assert running_workers(run_dir) == [second["pid"]]
        started, restarted = world.alerts()
        assert started.endswith(f"Stream worker started (pid {first['pid']})")
        assert f"Stream worker restarted (pid {second['pid']}): no worker process runs" in restarted
    finally:
        for pid in running_workers(run_dir):
            os.killpg(pid, signal.SIGKILL)


def test_the_flows_run_on_the_local_server(world: OpsWorld) -> None:
    kill_switch(config=str(world.config), reason="recorded on the server")
    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        runs = client.read_flow_runs()
    kill_runs = [r for r in runs if flows[r.flow_id] == "kill-switch"
                 and r.parameters.get("reason") == "recorded on the server"]  # fmt: skip
    assert kill_runs and all(r.state is not None and r.state.is_completed() for r in kill_runs)


def test_the_eod_watchdog_is_also_scheduled_at_the_early_closes_of_the_year_ahead() -> None:
    cfg = config_from_dict({"session": {"calendar": "CME_Equity"}}, env={})
    (watchdog,) = [d for d in deployments(cfg, "cfg.yaml") if d.name == "eod-watchdog"]
    at = [(s.schedule.cron, s.parameters["at"]) for s in watchdog.schedules]
    assert at[0] == ("27 16 * * 1-5", "16:27")
    assert ("52 12 * * 1-5", "12:52") in at  # 13:00 closes (Thanksgiving, holiday trading days)


def test_the_schedules_are_weekdays_in_new_york() -> None:
    cfg = config_from_dict({"ops": {"supervise_worker": True}})
    scheduled = {d.name: d for d in deployments(cfg, "cfg.yaml")}
    crons = {name: d.schedules[0].schedule for name, d in scheduled.items() if d.schedules}
    assert crons["session-open"].cron == "0 9 * * 1-5"
    assert crons["eod-watchdog"].cron == "27 16 * * 1-5"  # flatten_at 16:25 + 120 s of grace
    assert crons["daily-summary"].cron == "5 17 * * 1-5"
    assert {crons[name].timezone for name in ("session-open", "eod-watchdog")} == {
        "America/New_York"
    }
    assert crons["stream-supervisor"].interval.total_seconds() == 60
    assert not scheduled["kill-switch"].schedules
    assert scheduled["kill-switch"].parameters == {"config": "cfg.yaml"}


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.5)


def test_scalper_ops_serve_serves_the_deployments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker,
    telegram: HttpRecorder, prefect_server: str,
) -> None:  # fmt: skip
    port = int(prefect_server.rsplit(":", 1)[1].split("/")[0])
    ops = {"telegram_api": telegram.url, "prefect_port": port}
    world = make_world(tmp_path, monkeypatch, kafka_broker, telegram, ops=ops)
    command = [SCALPER, "ops", "serve", "--config", str(world.config)]
    serving = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:

        def served() -> set[str]:
            with get_client(sync_client=True) as client:
                return {d.name for d in client.read_deployments()}

        wanted = {"session-open", "eod-watchdog", "daily-summary", "kill-switch"}
        wait_for(lambda: wanted <= served(), 60)
        assert "stream-supervisor" not in served()  # ops.supervise_worker is off by default
    finally:
        stop_process(serving)


def test_the_stream_worker_is_supervised_only_when_asked() -> None:
    unasked = {d.name for d in deployments(load_config(None), None)}
    asked = {d.name for d in deployments(config_from_dict({"ops": {"supervise_worker": True}}),
                                         None)}  # fmt: skip
    assert asked - unasked == {"stream-supervisor"}


def descendants(pid: int) -> set[int]:
    """The processes below `pid` (children, their children, ...), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_ctrl_c_stops_everything_ops_serve_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker,
    telegram: HttpRecorder,
) -> None:  # fmt: skip
    """`ops serve` with its own Prefect server and worker supervision: after SIGINT (Ctrl-C) no
    process it started runs — the server, the serving process, the supervised stream worker."""
    cfg = {"telegram_api": telegram.url, "prefect_port": free_port(), "supervise_worker": True,
           "supervise_every_seconds": 5}  # fmt: skip
    world = make_world(tmp_path, monkeypatch, kafka_broker, telegram, ops=cfg)
    ops = Operations.load(str(world.config))
    command = [SCALPER, "ops", "serve", "--config", str(world.config)]
    with open(tmp_path / "serve.log", "wb") as log:
        serving = subprocess.Popen(command, start_new_session=True, stdout=log, stderr=log)
    started: set[int] = set()
    try:
        wait_for(lambda: bool(supervised_workers(ops)), 240)
        started = descendants(serving.pid) | supervised_workers(ops)
        assert server_answers(ops.cfg)
        os.kill(serving.pid, signal.SIGINT)
        assert serving.wait(120) == 130  # each stop: SIGTERM, up to 10 s, then SIGKILL
        wait_for(lambda: not any(alive(pid) for pid in started), 30)
        assert not server_answers(ops.cfg) and not running_workers(ops.settings.run_dir)
    finally:
        for pid in {serving.pid, *started}:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
    assert "stream worker supervision on" in (tmp_path / "serve.log").read_text()


def scalper_isolated(world: OpsWorld, user_home: Path, *args: str) -> subprocess.CompletedProcess:
    """A command as a user with Prefect settings of their own (a profile pointing at another
    API, an API URL in the environment), which the operations must neither use nor change."""
    profiles = user_home / ".prefect" / "profiles.toml"
    profiles.parent.mkdir(parents=True)
    profiles.write_text('active = "elsewhere"\n[profiles.elsewhere]\n'
                        'PREFECT_API_URL = "http://127.0.0.1:9/api"\n')  # fmt: skip
    env = {
        **os.environ,
        "HOME": str(user_home),
        "SCALPER_HOME": str(world.home),
        "PREFECT_API_URL": "http://127.0.0.1:9/api",
        "PREFECT_PROFILE": "elsewhere",
    }
    for name in ("PREFECT_HOME", "PREFECT_PROFILES_PATH"):
        env.pop(name, None)
    proc = subprocess.run([SCALPER, *args, "--config", str(world.config)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert sorted(p.name for p in profiles.parent.iterdir()) == ["profiles.toml"]
    assert "elsewhere" in profiles.read_text()
    return proc


def on_the_local_server(world: OpsWorld) -> None:
    """The world's configuration, with the test session's Prefect server as its local one."""
    port = int(PREFECT_API_URL.value().rsplit(":", 1)[1].split("/")[0])
    config = yaml.safe_load(world.config.read_text())
    config["ops"]["prefect_port"] = port
    world.config.write_text(yaml.safe_dump(config))


def test_ops_run_runs_a_flow_once_on_the_local_server(world: OpsWorld, tmp_path: Path) -> None:
    on_the_local_server(world)
    proc = scalper_isolated(world, tmp_path / "user", "ops", "run", "daily-summary")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert Path(summary["page"]).is_file() and Path(summary["page"]).is_relative_to(world.home)
    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        runs = [r for r in client.read_flow_runs() if flows[r.flow_id] == "daily-summary"]
    assert any(r.parameters.get("config") == str(world.config) for r in runs), [
        r.parameters for r in runs
    ]


def test_a_flow_refused_for_a_user_mistake_is_one_line(world: OpsWorld, tmp_path: Path) -> None:
    """`ops run` of a flow that refuses (the summary in a data directory no worker ran in, the
    watchdog by hand outside its window) prints the reason as one line, exit 2, and Prefect's
    log of the failed run carries no traceback."""
    on_the_local_server(world)
    shutil.rmtree(world.home / "stream")
    proc = scalper_isolated(world, tmp_path / "user", "ops", "run", "daily-summary")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("scalper: error: ")]
    [error] = errors
    assert error.startswith(f"scalper: error: no ledger at {world.home}/stream/ledger.sqlite")


@pytest.mark.slow
def test_ops_run_runs_a_flow_once_without_a_server(world: OpsWorld, tmp_path: Path) -> None:
    """No server answers at `ops.prefect_port`: Prefect's temporary one, in the data directory."""
    config = yaml.safe_load(world.config.read_text())
    config["ops"]["prefect_port"] = free_port()
    world.config.write_text(yaml.safe_dump(config))
    proc = scalper_isolated(world, tmp_path / "user", "ops", "run", "session-open")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["action"] == "none"
    assert (world.home / "prefect" / "prefect.db").is_file()
    assert json.loads((world.home / "state" / "ops-day.json").read_text())["worker_restarts"] == 0


def test_ops_run_knows_every_flow() -> None:
    assert set(FLOW_NAMES) == set(FLOWS)
    proc = run("ops", "run", "no-such-flow")
    assert proc.returncode == 2 and "invalid choice: 'no-such-flow'" in proc.stderr
