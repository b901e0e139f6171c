"""`scalper kill` (and `resume`) as real processes: three independent paths, honest exit codes.

The kill switch halts the symbols in the ledger, tells the stream (`kill` on `control`) and
flattens at the broker directly; a failure of one path must not stop the others. Kafka "down" is
an address nobody listens on; IB down is a closed port; the IB account is the fake gateway's.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ib_async import IB, Future, LimitOrder, MarketOrder

from scalper.brokers import OrderIntent
from scalper.brokers.paper import PaperBroker
from scalper.errors import ScalperError
from scalper.kafka.broker import KafkaBroker, free_port
from scalper.kafka.messages import Bar
from scalper.ledger import Ledger
from scalper.live.settings import LiveSettings, symbol_params
from scalper.live.trader import Desk
from scalper.ops import procedures
from scalper.ops.context import Operations
from scalper.ops.supervisor import start_worker
from tests import ops_support, stream_support
from tests.fakes.http_recorder import HttpRecorder
from tests.fakes.tws import FakeGateway
from tests.ops_support import (
    ACCOUNT,
    CLIENT_ID,
    SYMBOL,
    TOKEN,
    OpsWorld,
    make_world,
    trade_by_hand,
    write_config,
)
from tests.shared import CONFORMANCE, assert_one_line_error, run
from tests.stream_support import case_bars

gateway_options = ops_support.gateway_options
secrets = ops_support.secrets
telegram = ops_support.telegram

pytestmark = pytest.mark.usefixtures("secrets")
NS = 1_000_000_000
MINUTE = 60 * NS
T0 = 1_717_421_400 * NS  # 2024-06-03 13:30 UTC, a bar start


def scalper(world: OpsWorld, *args: str) -> tuple[int, str]:
    """Run a command; its exit code and output (stdout, then stderr), free of secrets."""
    proc = run(*args, "--config", str(world.config), home=world.home)
    output = proc.stdout + proc.stderr
    assert ACCOUNT not in output and TOKEN not in output
    assert "Traceback" not in output, output
    return proc.returncode, output


def kafka_down(world: OpsWorld, **sections: dict) -> None:
    """The world's configuration (with `sections`), Kafka at an address nobody listens on."""
    write_config(world.config, world.kafka, world.telegram, **sections)
    config = yaml.safe_load(world.config.read_text())
    config["kafka"]["bootstrap"] = f"127.0.0.1:{free_port()}"
    world.config.write_text(yaml.safe_dump(config))


def ibkr(gateway_port: int, **extra: object) -> dict[str, object]:
    return {"kind": "ibkr", "port": gateway_port, "client_id": CLIENT_ID,
            "account": "${IB_ACCOUNT}", **extra}  # fmt: skip


@pytest.fixture
def paper_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker,
    telegram: HttpRecorder,
) -> OpsWorld:  # fmt: skip
    return make_world(tmp_path, monkeypatch, kafka_broker, telegram)


@pytest.fixture
def ib_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_broker: KafkaBroker,
    telegram: HttpRecorder, gateway: FakeGateway,
) -> OpsWorld:  # fmt: skip
    return make_world(tmp_path, monkeypatch, kafka_broker, telegram, gateway)


@pytest.fixture
def by_hand(ib_world: OpsWorld) -> Iterator[IB]:
    """A client of the account that stays connected (as a running trader would)."""
    assert ib_world.gateway is not None
    ib = IB()
    ib.connect("127.0.0.1", ib_world.gateway.port, clientId=77, timeout=5)
    yield ib
    ib.disconnect()


def working_order_by_hand(gateway: FakeGateway, client_id: int) -> None:
    """A buy limit far below the market, left working by a client that then disconnects."""
    ib = IB()
    ib.connect("127.0.0.1", gateway.port, clientId=client_id, timeout=5)
    try:
        [contract] = ib.qualifyContracts(Future(SYMBOL, "202406", exchange="CME"))
        ib.placeOrder(contract, LimitOrder("BUY", 1, 4000.0, orderRef="by-hand"))
        ib.sleep(0.2)
    finally:
        ib.disconnect()


def open_orders(gateway: FakeGateway) -> list[str]:
    ib = IB()
    ib.connect("127.0.0.1", gateway.port, clientId=98, timeout=5)
    try:
        return [t.order.orderRef for t in ib.reqAllOpenOrders()]
    finally:
        ib.disconnect()


def paper_long(world: OpsWorld, symbol: str = SYMBOL) -> None:
    """The paper exchange holds one long `symbol` (an entry filled at a bar), as a worker
    leaves it (a worker of another configuration, for a symbol this one does not name)."""
    ops = Operations.load(str(world.config))
    entry = OrderIntent(f"{symbol}-2024-06-03-0001", symbol, "2024-06-03", 1, "BUY", 1, "entry",
                        None, T0, T0 + MINUTE, 0, 0)  # fmt: skip
    with ops.ledger() as ledger:
        exchange = PaperBroker(ledger, {symbol: symbol_params(ops.cfg, symbol)})
        ledger.record_order(entry, "sent", sent=True)
        assert exchange.submit(entry)
        [fill] = exchange.on_bar(symbol, bar(T0 + MINUTE, symbol=symbol))
        assert fill.action == "BUY" and ledger.position(symbol) == 1


def bar(ts: int, price: float = 5000.0, symbol: str = SYMBOL) -> Bar:
    return Bar(ts, price, price + 1, price - 1, price, 10, symbol)


# -- IB ------------------------------------------------------------------------------------------


def test_kafka_down_kill_still_cancels_and_flattens_at_ib_and_exits_non_zero(
    ib_world: OpsWorld,
) -> None:
    gateway = ib_world.gateway
    assert gateway is not None
    kafka_down(ib_world, broker=ibkr(gateway.port))
    trade_by_hand(gateway, "BUY", 2)
    working_order_by_hand(gateway, 99)
    code, output = scalper(ib_world, "kill", "--reason", "kafka is down")
    assert code == 1, output
    assert gateway.position("MESM4") == 0 and open_orders(gateway) == []
    assert f"{SYMBOL}: flat — was +2, confirmed flat at the ibkr broker; stream NOT told" in output
    assert "stream: NOT told: no Kafka broker answers" in output
    assert "kill NOT confirmed" in output
    [alert] = ib_world.alerts()
    assert "Kill switch (MES): kafka is down" in alert and "NOT CONFIRMED" in alert


def test_kill_reports_confirmed_flat_and_exits_zero_when_everything_worked(
    ib_world: OpsWorld,
) -> None:
    assert ib_world.gateway is not None
    trade_by_hand(ib_world.gateway, "SELL", 1)
    code, output = scalper(ib_world, "kill", "--all", "--reason", "all good")
    assert code == 0, output
    assert f"{SYMBOL}: flat — was -1, confirmed flat at the ibkr broker; stream told" in output
    assert "stream: told (kill on control)" in output
    kills = [c for c in ib_world.controls() if c.reason == "all good"]
    assert [(c.command, c.symbol) for c in kills] == [("kill", "*")]


def test_ib_down_is_not_confirmed_but_the_stream_is_told(
    ib_world: OpsWorld, kafka_broker: KafkaBroker
) -> None:
    closed = free_port()
    write_config(ib_world.config, kafka_broker, ib_world.telegram, broker=ibkr(closed))
    code, output = scalper(ib_world, "kill", "--symbol", "mes", "--reason", "ib is down")
    assert code == 1, output
    assert f"{SYMBOL}: NOT FLAT — NOT confirmed: the ibkr broker did not answer" in output
    assert "stream: told (kill on control)" in output
    kills = [c for c in ib_world.controls() if c.reason == "ib is down"]
    assert [(c.command, c.symbol) for c in kills] == [("kill", SYMBOL)]


def test_a_kill_of_one_symbol_cancels_its_orders_but_not_by_global_cancel(
    ib_world: OpsWorld, kafka_broker: KafkaBroker, by_hand: IB
) -> None:
    """With MES and MNQ configured, `--symbol mes` cancels MES's orders of a client that is
    gone (connecting as it) and reports those of a connected one, which it cannot cancel:
    IB's global cancel would have stripped every other symbol of its stops too."""
    gateway = ib_world.gateway
    assert gateway is not None
    write_config(ib_world.config, kafka_broker, ib_world.telegram, broker=ibkr(gateway.port),
                 stream={"symbols": [SYMBOL, "MNQ"]})  # fmt: skip
    working_order_by_hand(gateway, 99)
    [contract] = by_hand.qualifyContracts(Future(SYMBOL, "202406", exchange="CME"))
    by_hand.placeOrder(contract, LimitOrder("BUY", 1, 4001.0, orderRef="live-trader"))
    by_hand.sleep(0.2)
    code, output = scalper(ib_world, "kill", "--symbol", "mes", "--wait", "1")
    assert code == 1, output
    assert open_orders(gateway) == ["live-trader"]
    assert f"{SYMBOL}: NOT FLAT — held nothing, NOT confirmed: order live-trader working" in output
    assert "MNQ" not in output.split("halt:")[0]  # only the named symbol is reported


def test_a_kill_adds_no_close_to_a_close_already_working(
    ib_world: OpsWorld, kafka_broker: KafkaBroker, by_hand: IB
) -> None:
    """The gateway takes orders but fills none (a halted market): a connected trader's market
    exit of the position works already, and it cannot be cancelled from here (a kill of one
    symbol of two). A closing order of the kill's own on top would reverse the position when
    the market fills both: the kill sends none, and reports the exit still working."""
    gateway = ib_world.gateway
    assert gateway is not None
    write_config(ib_world.config, kafka_broker, ib_world.telegram, broker=ibkr(gateway.port),
                 stream={"symbols": [SYMBOL, "MNQ"]})  # fmt: skip
    trade_by_hand(gateway, "BUY", 1)
    gateway.hold_fills()
    [contract] = by_hand.qualifyContracts(Future(SYMBOL, "202406", exchange="CME"))
    by_hand.placeOrder(contract, MarketOrder("SELL", 1, orderRef="trader-exit"))
    by_hand.sleep(0.2)
    code, output = scalper(ib_world, "kill", "--symbol", "MES", "--wait", "1")
    assert code == 1, output
    assert f"{SYMBOL}: NOT FLAT — was +1, NOT confirmed: position +1, order trader-exit " in output
    assert open_orders(gateway) == ["trader-exit"]  # one close, not two
    gateway.hold_fills(False)
    gateway.fill("trader-exit")
    assert gateway.position("MESM4") == 0


# -- paper ---------------------------------------------------------------------------------------


def test_kafka_down_kill_halts_and_closes_a_paper_position_through_the_ledger(
    paper_world: OpsWorld,
) -> None:
    """The order closing the position waits at the paper exchange (in the ledger) for the next
    bar; the worker's exchange, whose books were loaded before the kill, fills it there, and
    the halt survives anything the worker does (the sink reads it from the ledger)."""
    kafka_down(paper_world)
    paper_long(paper_world)
    ops = Operations.load(str(paper_world.config))
    worker_ledger = Ledger(ops.settings.ledger_path)
    worker_exchange = PaperBroker(worker_ledger, ops.settings.params)
    assert worker_exchange.position(SYMBOL) == 1  # its book is in memory now
    try:
        code, output = scalper(paper_world, "kill", "--symbol", "MES", "--reason", "paper kill")
        assert code == 1, output
        assert f"{SYMBOL}: NOT FLAT — was +1, NOT confirmed: position +1, order KILL-MES-" in output
        assert "waits at the paper exchange for the next bar" in output
        assert "halt: recorded in the ledger" in output
        assert "stream: NOT told" in output
        assert worker_ledger.halt_reason(SYMBOL) == "kill switch: paper kill"
        [fill] = worker_exchange.on_bar(SYMBOL, bar(T0 + 2 * MINUTE, 5003.0))
        assert (fill.action, fill.qty, fill.kind, fill.reason) == ("SELL", 1, "exit", "kill")
        assert fill.fill_id.startswith("KILL-MES-") and fill.price == 5003.0 - 0.25  # slipped
        assert worker_ledger.position(SYMBOL) == 0
        assert worker_ledger.working_order(SYMBOL) is None
    finally:
        worker_ledger.close()


def test_a_paper_kill_without_a_ledger_confirms_nothing(paper_world: OpsWorld) -> None:
    """The paper exchange lives in the worker's ledger: with none in this data directory the
    kill cannot see a position (a worker of another one may hold it), so it is not "flat"."""
    shutil.rmtree(paper_world.home / "stream")
    code, output = scalper(paper_world, "kill", "--all", "--reason", "wrong home")
    assert code == 1, output
    assert f"{SYMBOL}: NOT FLAT — NOT confirmed: no paper ledger at {paper_world.home}" in output
    assert "stream: told (kill on control)" in output and "kill NOT confirmed" in output
    assert not (paper_world.home / "stream").exists()


def test_a_kill_with_an_unreadable_ledger_still_tells_the_stream(paper_world: OpsWorld) -> None:
    """A ledger that is not a database (a bad restore, a disk fault) stopped the kill with a
    traceback before anything was done; now its paths that need the ledger say why not, and
    the stream is told. `status` says it in one line."""
    ledger = paper_world.home / "stream" / "ledger.sqlite"
    ledger.write_bytes(b"not a database " * 100)
    code, output = scalper(paper_world, "kill", "--all", "--reason", "bad ledger")
    assert code == 1, output
    assert f"halt: NOT recorded in the ledger (the ledger {ledger} cannot be read" in output
    assert f"{SYMBOL}: NOT FLAT — NOT confirmed" in output
    assert "stream: told (kill on control)" in output
    code, output = scalper(paper_world, "status")
    assert code == 2 and output.strip() == (
        f"scalper: error: the ledger {ledger} cannot be read: file is not a database"
    )


def test_a_paper_kill_cancels_a_working_entry(paper_world: OpsWorld) -> None:
    ops = Operations.load(str(paper_world.config))
    entry = OrderIntent(f"{SYMBOL}-2024-06-03-0001", SYMBOL, "2024-06-03", 1, "BUY", 1, "entry",
                        None, T0, T0 + MINUTE, 0, 0)  # fmt: skip
    with ops.ledger() as ledger:
        ledger.record_order(entry, "sent", sent=True)
        assert PaperBroker(ledger, ops.settings.params).submit(entry)
    code, output = scalper(paper_world, "kill", "--reason", "cancel the entry")
    assert code == 0, output
    assert f"{SYMBOL}: flat — held nothing, confirmed flat at the paper broker" in output
    with ops.ledger() as ledger:
        assert ledger.order(entry.client_order_id)["status"] == "cancelled"
        assert PaperBroker(ledger, ops.settings.params).on_bar(SYMBOL, bar(T0 + MINUTE)) == []
        assert ledger.position(SYMBOL) == 0


# -- symbols -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--symbol", "ZZZ"), "'ZZZ' is not traded by this configuration (MES"),
        (("--symbol", "*"), "use --all"),
        (("--symbol", "MES", "--symbol", "NQ"), "'NQ' is not traded"),
    ],
)
@pytest.mark.parametrize("command", ["kill", "resume"])
def test_a_symbol_nobody_trades_is_refused_and_nothing_is_done(
    paper_world: OpsWorld, command: str, args: tuple[str, ...], needle: str
) -> None:
    paper_long(paper_world)
    proc = run(command, *args, "--reason", f"refused {command}", "--config",
               str(paper_world.config), home=paper_world.home)  # fmt: skip
    assert_one_line_error(proc, needle)
    assert not [c for c in paper_world.controls() if c.reason == f"refused {command}"]
    with Operations.load(str(paper_world.config)).ledger() as ledger:
        assert ledger.halt_reason(SYMBOL) is None and ledger.working_order(SYMBOL) is None
    assert paper_world.alerts() == []


def test_resume_takes_a_symbol_in_any_case(paper_world: OpsWorld) -> None:
    code, output = scalper(paper_world, "resume", "--symbol", "mes", "--reason", "lower case")
    assert code == 0, output
    resumed = [c for c in paper_world.controls() if c.reason == "lower case"]
    assert [(c.command, c.symbol) for c in resumed] == [("resume", SYMBOL)]


def test_the_eod_watchdog_flattens_paper_without_halting_the_worker(
    paper_world: OpsWorld,
) -> None:
    """It used to send `kill` on `control`, which halts the worker until a manual resume: the
    next day would not trade. It now closes at the paper exchange, as at IB, and halts nothing."""
    paper_long(paper_world)
    since = time.time_ns()
    ops = Operations.load(str(paper_world.config))
    result = procedures.eod_check(ops, ops_support.watch_time(paper_world.config))
    assert result.positions == {SYMBOL: 1}
    assert result.remaining == {SYMBOL: 1}  # no worker, no bar: the order waits, alerted
    assert not [c for c in paper_world.controls() if c.issued_at >= since]
    with ops.ledger() as ledger:
        assert ledger.halt_reason(SYMBOL) is None
        assert ledger.working_order(SYMBOL).startswith("KILL-MES-")
        [fill] = PaperBroker(ledger, ops.settings.params).on_bar(SYMBOL, bar(T0 + 2 * MINUTE))
        assert fill.reason == "kill" and ledger.position(SYMBOL) == 0
    [alert] = paper_world.alerts()
    assert "EOD watchdog: MES +1 still open" in alert and "STILL OPEN" in alert


def test_the_eod_watchdog_run_by_hand_waits_for_its_watch_time(paper_world: OpsWorld) -> None:
    """By hand at 11:00 New York the watchdog would cancel every order and close the positions
    the engine holds mid-session: refused, nothing sent. From the watch time on, it checks."""
    paper_long(paper_world)
    ops = Operations.load(str(paper_world.config))
    eleven = T0 + 90 * MINUTE  # 2024-06-03 11:00 New York
    with pytest.raises(ScalperError, match=r"watches from 16:27 to 18:00 .* not at 11:00"):
        procedures.eod_check(ops, now_ns=eleven)
    with ops.ledger() as ledger:
        assert ledger.working_order(SYMBOL) is None and ledger.position(SYMBOL) == 1
    assert paper_world.alerts() == []
    assert procedures.eod_check(ops, now_ns=eleven + 330 * MINUTE).positions == {SYMBOL: 1}


def test_a_running_paper_worker_books_the_kill_switchs_close_as_a_kill_exit(
    tmp_path: Path,
) -> None:
    """The worker's exchange, its books in memory, takes the order the kill switch placed from
    another connection; its engine books the fill as a `kill` exit (no desync), and the halt in
    the ledger keeps it from entering again."""
    case = CONFORMANCE / "02_stops_targets"
    overrides = yaml.safe_load((case / "config.yaml").read_text()) or {}
    stream = {"source_bar_seconds": 60, "max_bar_age_seconds": 0}
    settings = LiveSettings.load(
        stream_support.write_config(tmp_path / "config.yaml", overrides, stream=stream),
        tmp_path / "run",
    )
    desk = Desk(settings)
    messages = list(stream_support.inbound(stream_support.bars_of(case_bars(case), SYMBOL)))
    at = 0
    state, _ = desk.step(None, messages[at])

    def holding() -> bool:  # a position open and no order working
        engine = state.engine.state()
        return bool(engine["position"]) and not engine["order_in_flight"]

    while not holding():
        at += 1
        state, _ = desk.step(state, messages[at])
    outside = Ledger(settings.ledger_path)  # the kill switch's own connection
    try:
        PaperBroker(outside, settings.params).kill(SYMBOL, "2024-06-10", time.time_ns())
        outside.set_halt(SYMBOL, "kill switch: test")
    finally:
        outside.close()
    for message in messages[at + 1 :]:
        state, _ = desk.step(state, message)
    trades = desk.ledger.trades(SYMBOL)
    assert [t["exit_reason"] for t in trades].count("kill") == 1
    assert trades[-1]["exit_reason"] == "kill"  # nothing entered after it
    assert desk.ledger.position(SYMBOL) == 0 and state.engine.state()["position"] == 0
    assert "desync" not in {e["event"] for e in desk.ledger.risk_events(SYMBOL)}
    desk.close()


def test_kafka_down_refuses_while_the_live_worker_reads_it(paper_world: OpsWorld) -> None:
    """Stopping Kafka under a live worker stops its bars (no exit, no end-of-day flatten) and
    the kill switch's stream path: `kafka down` says so instead, unless forced."""
    ops = Operations.load(str(paper_world.config))
    pid = start_worker(ops)
    try:
        proc = run("kafka", "down", home=paper_world.home)
        assert_one_line_error(proc, f"the live stream worker (pid {pid}) reads this broker")
        forced = run("kafka", "down", "--force", home=paper_world.home)
        assert forced.returncode == 0 and "was not running" in forced.stdout  # none in this home
    finally:
        os.killpg(pid, signal.SIGKILL)


def test_resume_lifts_the_halt_a_kill_recorded_while_the_stream_was_down(
    paper_world: OpsWorld,
) -> None:
    paper_long(paper_world)
    bootstrap = yaml.safe_load(paper_world.config.read_text())["kafka"]["bootstrap"]
    kafka_down(paper_world)
    code, output = scalper(paper_world, "kill", "--reason", "down")
    assert code == 1 and "halt: recorded in the ledger" in output, output
    config = yaml.safe_load(paper_world.config.read_text())
    config["kafka"]["bootstrap"] = bootstrap  # Kafka is back
    paper_world.config.write_text(yaml.safe_dump(config))
    code, output = scalper(paper_world, "resume", "--symbol", "mes", "--reason", "back")
    assert code == 0, output
    with Operations.load(str(paper_world.config)).ledger() as ledger:
        assert ledger.halt_reason(SYMBOL) is None


def test_all_also_kills_what_a_worker_of_another_configuration_holds(
    paper_world: OpsWorld,
) -> None:
    """The ledger is the running system's record: a kill of all halts and closes MNQ too,
    which a worker started with another configuration traded, though this one names MES."""
    paper_long(paper_world, "MNQ")
    code, output = scalper(paper_world, "kill", "--reason", "everything")
    assert code == 1, output  # no worker runs here: the closing order waits for a bar
    assert f"{SYMBOL}: flat — held nothing" in output
    assert "MNQ: NOT FLAT — was +1, NOT confirmed: position +1, order KILL-MNQ-" in output
    ops = Operations.load(str(paper_world.config))
    with ops.ledger() as ledger:
        assert ledger.halt_reason("MNQ") == "kill switch: everything"
        exchange = PaperBroker(ledger, {"MNQ": symbol_params(ops.cfg, "MNQ")})
        [fill] = exchange.on_bar("MNQ", bar(T0 + 2 * MINUTE, symbol="MNQ"))
        assert fill.reason == "kill" and ledger.position("MNQ") == 0
    # ... and a resume of all lifts what the kill of all halted: MNQ, now flat, too (else a
    # worker started for it later stays halted with no command that names it)
    code, output = scalper(paper_world, "resume", "--all", "--reason", "all clear")
    assert code == 0, output
    with ops.ledger() as ledger:
        assert ledger.halt_reason(SYMBOL) is None and ledger.halt_reason("MNQ") is None
