"""`scalper kill`, `scalper resume` and `scalper status` as real processes.

They run the operations without Prefect (a kill switch must not depend on one more service),
against the real Kafka broker, the fake IB Gateway and a recording Telegram. Secrets come from
the environment and must never appear in what the commands print.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalper.brokers import Fill
from scalper.ibkr.adapter import IbkrBroker
from scalper.kafka.broker import KafkaBroker
from scalper.kafka.clients import publish
from scalper.kafka.messages import Bar, encode_bar
from scalper.kafka.topics import LIVE
from scalper.ledger import Ledger
from scalper.live.settings import symbol_params
from scalper.ops.context import Operations
from tests import ops_support
from tests.fakes.http_recorder import HttpRecorder
from tests.fakes.tws import FakeGateway
from tests.ops_support import ACCOUNT, SYMBOL, TOKEN, OpsWorld, make_world, trade_by_hand
from tests.shared import assert_one_line_error, run

gateway_options = ops_support.gateway_options
secrets = ops_support.secrets
telegram = ops_support.telegram

pytestmark = pytest.mark.usefixtures("secrets")
NS = 1_000_000_000


@pytest.fixture
def world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker,
    telegram: HttpRecorder, gateway: FakeGateway,
) -> OpsWorld:  # fmt: skip
    return make_world(tmp_path, monkeypatch, kafka_broker, telegram, gateway)


def scalper(world: OpsWorld, *args: str) -> tuple[int, str]:
    """Run a command; its exit code and output, checked free of secrets."""
    proc = run(*args, "--config", str(world.config), home=world.home)
    output = proc.stdout + proc.stderr
    assert ACCOUNT not in output and TOKEN not in output
    return proc.returncode, output


def test_kill_flattens_at_the_broker_when_no_worker_does(world: OpsWorld) -> None:
    assert world.gateway is not None
    trade_by_hand(world.gateway, "BUY", 2)
    code, output = scalper(world, "kill", "--reason", "cli kill test", "--wait", "1")
    assert code == 0, output
    assert f"{SYMBOL}: flat — was +2, confirmed flat at the ibkr broker" in output
    assert "stream: told (kill on control)" in output
    assert world.gateway.position("MESM4") == 0
    assert any(c.command == "kill" and c.reason == "cli kill test" for c in world.controls())
    [alert] = world.alerts()
    assert f"Kill switch ({SYMBOL}): cli kill test" in alert and "was +2" in alert


def test_resume_publishes_resume(world: OpsWorld) -> None:
    code, output = scalper(world, "resume", "--symbol", SYMBOL, "--reason", "cli resume test")
    assert code == 0, output
    resumed = [c for c in world.controls() if c.reason == "cli resume test"]
    assert [(c.command, c.symbol) for c in resumed] == [("resume", SYMBOL)]
    assert world.alerts() == [f"ℹ️ Entries resumed ({SYMBOL}): cli resume test"]


def test_status_shows_links_positions_pnl_breakers_last_bar_and_worker(
    world: OpsWorld, tmp_path: Path
) -> None:
    assert world.gateway is not None
    ops = Operations.load(str(world.config))
    with ops.ledger() as ledger:
        record_entry(ledger, ops.session_date())
        ledger.set_halt(SYMBOL, "kill switch: test")
        trader = IbkrBroker(ledger, {SYMBOL: symbol_params(ops.cfg, SYMBOL)}, ops.cfg.broker)
    last_bar = 1_924_992_000 * NS  # 2031-01-01, newer than any other test's bar
    publish(world.kafka.bootstrap, LIVE.bars(SYMBOL), [encode_bar(_bar(last_bar))])
    try:
        code, output = scalper(world, "status")
    finally:
        trader.close()
    assert code == 1, output  # the worker does not run: not a healthy state
    assert "scalper: stream worker unhealthy: no worker process runs" in output
    assert "IB trader link: all links up, entries allowed" in output
    assert "IB bridge link: never ran here" in output
    assert f"{SYMBOL}: position +1" in output and "entries halted: kill switch: test" in output
    assert "last bar 2031-01-01T00:00:00+00:00" in output
    assert "stream worker: UNHEALTHY (no worker process runs)" in output
    proc = run("status", "--json", "--config", str(world.config), home=world.home)
    assert proc.returncode == 1  # stdout is the JSON alone, the why is on stderr
    status = json.loads(proc.stdout)
    assert status["broker"] == "ibkr" and status["symbols"][0]["position"] == 1
    assert status["worker"]["healthy"] is False


def record_entry(ledger: Ledger, session: object) -> None:
    """The ledger holds a long position (an entry filled in this session)."""
    fill = Fill(f"{SYMBOL}-{session}-0001", f"{SYMBOL}-{session}-0001", SYMBOL, 0, "BUY", 1,
                5000.0, "entry", None)  # fmt: skip
    ledger.record_fill(fill)


def _bar(ts: int) -> Bar:
    return Bar(ts, 5000.0, 5000.5, 4999.5, 5000.25, 10, SYMBOL)


def test_a_user_mistake_is_one_line(world: OpsWorld) -> None:
    proc = run("kill", "--config", str(world.home / "missing.yaml"), home=world.home)
    assert_one_line_error(proc, "missing.yaml", "no such file")
