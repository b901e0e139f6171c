"""The stream worker trading at Interactive Brokers (`broker.kind: ibkr`), end to end.

IB's real-time bars → the bar bridge → Kafka `bars.MES` → a real stream worker process →
`IbkrBroker` → the fake gateway, whose order book fills the worker's market orders from the same
market the bars come from. The gateway's clock is a manual one that this test moves bar by bar;
where the backtest decides an order, the clock waits until the worker's order has reached the
gateway, so that it fills at the next bar's open, as in the backtest. The worker's trades must then
be the backtest's, every order must reach IB once, and ledger, gateway and engine must agree on
the position — also when the worker is killed with SIGKILL mid-session and started again.

A trader in this process (a `Desk` on the same gateway) shows the other half of issue 6: an order
IB drops after `submit` accepted it reaches the engine as a rejection.
"""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from scalper.brokers import client_order_id
from scalper.config import BrokerConfig
from scalper.engine import Engine
from scalper.ibkr.bridge import BarBridge, BridgeThread
from scalper.ibkr.link import role_client_id, trader_client_id
from scalper.instruments import INSTRUMENTS
from scalper.kafka.broker import KafkaBroker
from scalper.kafka.clients import publish
from scalper.kafka.messages import Bar
from scalper.kafka.topics import LIVE
from scalper.ledger import Ledger
from scalper.live.aggregator import BarAggregator
from scalper.live.settings import LiveSettings, default_run_dir
from scalper.live.trader import Desk, TraderState
from scalper.live.worker import prepare_run, start_worker, stop_worker
from scalper.ops import procedures
from scalper.ops.context import Operations
from tests.fakes.clock import ManualClock
from tests.fakes.tws import FakeGateway, FakeMarket, In
from tests.shared import TRADING_START
from tests.stream_support import Rows, backtest_rows, inbound, ledger_rows, write_config

SYMBOL = "MES"
CONTRACT = "MESM4"
NS = 1_000_000_000
SOURCE_SECONDS = 5
BAR_SECONDS = 15
START = TRADING_START
ACCOUNT = "DU7654321"
CLIENT_ID = 11
SESSION_MINUTES = 15
ORDER_WAIT = 45.0  # a restarted worker resumes, reconnects to IB and catches up within this
# The fake gateway's market trades in June 2024, on its own clock, while Kafka stamps the bars with
# today's: the live worker's bar age limit must admit that (its guard against history is proven
# in test_replay_isolation, with the default limit).
FAKE_MARKET_AGE = int((datetime.now(UTC) - START).total_seconds()) + 86_400
SETTINGS = {
    "strategy": {"bar_seconds": BAR_SECONDS, "lookback": 8, "entry_z": 1.2, "exit_z": 0.3},
    "costs": {"slippage_ticks": 0},  # IB's fills carry no simulated slippage
    "risk": {"max_consecutive_losses": 0, "max_trades_per_day": 0},
}


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runtime files under a temporary data directory; the account from the environment, as
    in production (the worker process inherits both)."""
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IB_ACCOUNT", ACCOUNT)
    return tmp_path / "home"


@pytest.fixture
def gateway_options() -> dict[str, Any]:
    return {"account": ACCOUNT}


def ib_config(folder: Path, bootstrap: str, gateway: FakeGateway) -> str:
    broker = {"kind": "ibkr", "port": gateway.port, "client_id": CLIENT_ID,
              "account": "${IB_ACCOUNT}"}  # fmt: skip
    stream = {"source_bar_seconds": SOURCE_SECONDS, "snapshot_seconds": 1,
              "max_bar_age_seconds": FAKE_MARKET_AGE}  # fmt: skip
    return write_config(
        folder / "ib.yaml", SETTINGS, kafka={"bootstrap": bootstrap}, broker=broker, stream=stream
    )


def eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# What the backtest says about the session


@dataclass(frozen=True)
class Plan:
    """The session as the backtest sees it: its bars, and the orders it decides, by the time
    (ns) of the close they are decided at."""

    source: list[Bar]  # the 5-second bars IB streams
    bars: list[Bar]  # the strategy's 15-second bars
    orders: dict[int, str]  # decided at → client order id
    position: int  # the engine's position at the end


def plan(market: FakeMarket, params: dict[str, Any], minutes: int) -> Plan:
    """The bars of `minutes` from START, extended until no order is in flight (so every order
    the backtest decides has filled within the session), and the backtest's decisions."""
    tape = market.tape(market.front(START.date()), SOURCE_SECONDS)
    first = int(START.timestamp()) * NS
    engine = Engine(dict(params), simulate_fills=True)
    aggregator = BarAggregator.of_seconds(SYMBOL, BAR_SECONDS, SOURCE_SECONDS)
    source: list[Bar] = []
    bars: list[Bar] = []
    orders: dict[int, str] = {}
    for i in tape.starting(first, first + 2 * minutes * 60 * NS):
        bar = Bar(int(tape.ts[i]), *(float(x[i]) for x in (tape.open, tape.high, tape.low,
                  tape.close)), int(tape.volume[i]), SYMBOL)  # fmt: skip
        assert not source or bar.ts == source[-1].ts + SOURCE_SECONDS * NS, "a gap in the tape"
        source.append(bar)
        for done in aggregator.add(bar):
            bars.append(done)
            order = engine.on_bar(*done[:6])
            if order is not None:
                decided = done.ts + BAR_SECONDS * NS
                orders[decided] = client_order_id(SYMBOL, order["session"], order["seq"])
        long_enough = bar.ts + SOURCE_SECONDS * NS >= first + minutes * 60 * NS
        if long_enough and aggregator.start is None and not engine.state()["order_in_flight"]:
            return Plan(source, bars, orders, engine.state()["position"])
    raise AssertionError("the session never settles")


def expected_rows(plan: Plan, config: str) -> Rows:
    frame = pl.DataFrame([b[:6] for b in plan.bars], schema=list(Bar._fields[:6]), orient="row")
    rows = backtest_rows(frame, config)
    if rows and rows[-1]["exit_reason"] == "end_of_data":  # open at the end: no live exit
        rows.pop()
    return rows


# ---------------------------------------------------------------------------------------------
# The session: bridge, worker, clock


@dataclass
class Session:
    """A stream worker trading at the fake gateway, and the hands that drive it."""

    live: LiveSettings
    gateway: FakeGateway
    clock: ManualClock
    log: Path
    worker: Any = None
    restarts: int = 0

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.worker = start_worker(self.live, log=log)

    def kill(self) -> None:
        """SIGKILL, then a new worker process on the same run folder at once."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()
        self.restarts += 1
        self.start()

    def wait_for_order(self, ref: str) -> None:
        """Hold the clock until the worker's market order `ref` is at the gateway and filled
        there (at the open of the bar starting now: an order merely received could still read
        the clock after the test moved it on)."""

        def filled() -> bool:
            return any(
                o.order_ref == ref and o.status == "Filled" for o in self.gateway.orders.placed
            )

        eventually(filled, ORDER_WAIT, self._why(ref))

    def _why(self, ref: str) -> str:
        alive = self.worker.poll() is None
        tail = self.log.read_text(errors="replace")[-2_000:]
        return f"order {ref} filled at the gateway (worker alive: {alive}; log tail:\n{tail})"


@pytest.fixture
def session(
    kafka_broker: KafkaBroker, gateway: FakeGateway, clock: ManualClock, tmp_path: Path
) -> Iterator[Session]:
    config = ib_config(tmp_path, kafka_broker.bootstrap, gateway)
    live = LiveSettings.load(config, tmp_path / "run")
    prepare_run(live)  # the worker reads from here on: before the first bar is published
    cfg = live.cfg
    bridge = BridgeThread(
        lambda emit: BarBridge(
            cfg.broker, SYMBOL, cfg.instrument.roll_days_before_expiry, emit,
            client_id=role_client_id(cfg.broker, "bridge"), pauses=(0.05,),
        )
    )  # fmt: skip
    bridge.start(attempts=1)
    publisher = threading.Thread(
        target=publish, args=(live.bootstrap, LIVE.bars(SYMBOL), bridge.messages()), daemon=True
    )
    publisher.start()
    eventually(lambda: any(not s.session.closed for s in gateway.realtime.subscriptions), 10,
               "the bridge subscribed")  # fmt: skip
    running = Session(live, gateway, clock, tmp_path / "worker.log")
    running.start()
    try:
        yield running
    finally:
        stop_worker(running.worker)
        bridge.stop()
        publisher.join(10)


def trade(session: Session, plan: Plan, kills: dict[int, bool] | None = None) -> None:
    """Move the market bar by bar through the plan; SIGKILL the worker at the clock times of
    `kills` (after the order decided then, if any, has reached IB) — at once (False), or once
    the worker has booked every fill due by then (True)."""
    for bar in plan.source:
        session.clock.advance(SOURCE_SECONDS)
        session.gateway.tick()  # IB streams the bar that just closed; resting orders match
        now = bar.ts + SOURCE_SECONDS * NS
        if now in plan.orders:
            session.wait_for_order(plan.orders[now])
        if kills and now in kills:
            if kills[now]:
                due = [at for at in plan.orders if at + BAR_SECONDS * NS <= now]
                wait_booked(session, len(due), f"the fills due at {now}")
            session.kill()


def wait_booked(session: Session, fills: int, what: str, position: int | None = None) -> None:
    """Wait until the worker's ledger holds `fills` fills (and `position`)."""
    ledger = Ledger(session.live.ledger_path)
    try:

        def booked() -> bool:
            count = ledger.connection.execute("SELECT count(*) FROM fills").fetchone()[0]
            return count == fills and position in (None, ledger.position(SYMBOL))

        eventually(booked, ORDER_WAIT, f"the worker booked {what}")
    finally:
        ledger.close()


def settle(session: Session, plan: Plan) -> None:
    """Wait until the worker booked every fill of the session (the last bars' included)."""
    wait_booked(session, len(plan.orders), "the session's fills", plan.position)


def worker_engine(run_dir: Path) -> dict[str, Any]:
    """The worker's engine state, from its last Bytewax snapshot (the trader's state is
    snapshotted pickled, per symbol)."""
    states: list[tuple[int, TraderState]] = []
    for part in sorted((run_dir / "recovery").glob("*.sqlite3")):
        with sqlite3.connect(part) as db:
            rows = db.execute(
                "SELECT snap_epoch, ser_change FROM snaps WHERE step_id LIKE '%trader%' "
                "AND state_key = ? AND ser_change IS NOT NULL",
                (SYMBOL,),
            ).fetchall()
        states += [(epoch, pickle.loads(blob)) for epoch, blob in rows]
    assert states, "no snapshot of the trader"
    return max(states, key=lambda s: s[0])[1].engine.state()


def check(session: Session, plan: Plan, config: str) -> None:
    """Trades as the backtest's, each order at IB once, no missed or invented execution, and
    one position everywhere."""
    settle(session, plan)
    time.sleep(1.5)  # a snapshot (every second) after the last bar
    stop_worker(session.worker)
    got, expected = ledger_rows(session.live, SYMBOL), expected_rows(plan, config)
    assert len(expected) >= 4, "the session must trade to prove anything"
    assert got == expected
    refs = session.gateway.orders.refs()
    assert refs == list(plan.orders.values()), "orders at IB are not the backtest's, once each"
    assert max(Counter(refs).values()) == 1
    ledger = Ledger(session.live.ledger_path)
    try:
        booked = {
            row[0] for row in ledger.connection.execute("SELECT exec_id FROM ibkr_executions")
        }
        position = ledger.position(SYMBOL)
        sent = [o for o in ledger.orders(SYMBOL) if o["send_count"]]
    finally:
        ledger.close()
    assert booked == {e.exec_id for e in session.gateway.orders.executions}
    assert {o["client_order_id"] for o in sent} == set(refs)
    assert all(o["status"] == "filled" and o["send_count"] == 1 for o in sent)
    engine = worker_engine(session.live.run_dir)
    assert position == session.gateway.position(CONTRACT) == engine["position"] == plan.position
    assert not engine["order_in_flight"]


def test_the_worker_trades_at_ib_as_the_backtest(session: Session) -> None:
    live = session.live
    assert trader_client_id(live.cfg.broker, SYMBOL) == CLIENT_ID  # the bridge has CLIENT_ID + 1
    the_plan = plan(session.gateway.market, dict(live.params[SYMBOL]), SESSION_MINUTES)
    trade(session, the_plan)
    check(session, the_plan, str(live.config_path))
    status = (live.run_dir / f"ibkr-trader-{SYMBOL}.json").read_text()
    assert f'"client_id": {CLIENT_ID}' in status and ACCOUNT not in status


def test_a_worker_killed_mid_session_at_ib_loses_and_repeats_nothing(session: Session) -> None:
    live = session.live
    the_plan = plan(session.gateway.market, dict(live.params[SYMBOL]), SESSION_MINUTES)
    decided = sorted(the_plan.orders)
    kills = {
        # right after an entry reached IB: the worker may not even have recorded the send yet
        decided[2]: False,
        # a position open, the entry booked, nothing in flight: a replay from the snapshot
        (decided[6] + decided[7]) // 2 // (5 * NS) * (5 * NS): True,
        decided[11]: False,  # right after an exit reached IB
    }
    trade(session, the_plan, kills)
    assert session.restarts == 3
    check(session, the_plan, str(live.config_path))


# ---------------------------------------------------------------------------------------------
# A rejection after `submit` returned, in a trader of this process


def wait_for_reconnect(desk: Desk) -> None:
    broker = desk.broker.broker(SYMBOL)  # type: ignore[attr-defined]
    eventually(lambda: broker.connects >= 2 and broker.connectivity.api, 10, "the reconnect")


def test_an_order_ib_drops_after_accepting_it_reaches_the_engine_as_a_rejection(
    gateway: FakeGateway, clock: ManualClock, tmp_path: Path
) -> None:
    """The connection dies with the entry in flight: `submit` could not know, IB never got it;
    after the reconnect the broker reports it rejected, and at the next bar the trader takes the
    engine out of waiting, so it decides again."""
    config = ib_config(tmp_path, "127.0.0.1:9", gateway)  # no Kafka: the desk is driven here
    live = LiveSettings.load(config, tmp_path / "run")
    the_plan = plan(gateway.market, dict(live.params[SYMBOL]), SESSION_MINUTES)
    first = min(the_plan.orders)
    desk = Desk(live)
    state: TraderState | None = None
    snapshot, waiting = b"", []  # the state as the entry went out; then in flight, bar by bar
    reconnected, decided, sent_at = False, 0, 0
    try:
        for offset, bar in enumerate(the_plan.source):
            clock.advance(SOURCE_SECONDS)
            now = bar.ts + SOURCE_SECONDS * NS
            if now == first:
                gateway.drop_on(In.PLACE_ORDER)
            state, _ = desk.step(state, next(inbound([bar], offset)))
            engine = state.engine.state()
            if now == first:
                assert engine["order_in_flight"]
                snapshot, sent_at, decided = pickle.dumps(state), offset, engine["bars_seen"]
            elif now > first:
                waiting.append(engine["order_in_flight"])
                if engine["bars_seen"] == decided + 1 and not reconnected:
                    # The engine decided once more without news: IB is away for a second yet.
                    assert engine["order_in_flight"]
                    wait_for_reconnect(desk)
                    reconnected = True
                if not waiting[-1]:
                    break
        assert state is not None and not state.engine.state()["order_in_flight"]
        # A crash, and the bars since the snapshot replayed: the engine learns of the rejection
        # at the very bar it did the first time, not at the first replayed bar that finds it.
        replayed = pickle.loads(snapshot)
        again = []
        for offset in range(sent_at + 1, sent_at + 1 + len(waiting)):
            bar = the_plan.source[offset]
            replayed, _ = desk.step(replayed, next(inbound([bar], offset)))
            again.append(replayed.engine.state()["order_in_flight"])
        assert again == waiting
        dropped = desk.ledger.order(the_plan.orders[first])
        assert dropped is not None and dropped["status"] == "rejected"
        [event] = [e for e in desk.ledger.risk_events(SYMBOL) if e["event"] == "order_rejected"]
        assert "never reached IB" in event["detail"]
        assert the_plan.orders[first] not in gateway.orders.refs()
    finally:
        desk.close()


def test_client_ids_are_one_per_symbol_and_never_those_of_the_bridge_or_the_operations() -> None:
    broker = BrokerConfig(kind="ibkr", client_id=20)
    traders = [trader_client_id(broker, symbol) for symbol in INSTRUMENTS]
    others = [role_client_id(broker, role) for role in ("bridge", "ops", "history")]
    assert trader_client_id(broker, "MES") == role_client_id(broker, "trader") == 20
    assert trader_client_id(broker, "ES") == 24 and others == [21, 22, 23]
    assert len(set(traders + others)) == len(INSTRUMENTS) + 3


def test_a_kill_at_ib_reaches_the_worker_as_a_kill_exit_and_reverses_nothing(
    gateway: FakeGateway, clock: ManualClock, tmp_path: Path
) -> None:
    """`scalper kill` with Kafka down closes the position at IB directly (the stream cannot be
    told). The worker's engine learns the close from IB as a `kill` exit at its next bar, sends
    no second close (which would open the opposite position), and the halt the kill recorded in
    the ledger keeps it from entering again."""
    config = ib_config(tmp_path, "127.0.0.1:9", gateway)  # no Kafka: the desk is driven here
    live = LiveSettings.load(config, default_run_dir(create=True))
    the_plan = plan(gateway.market, dict(live.params[SYMBOL]), SESSION_MINUTES)
    desk = Desk(live)
    state: TraderState | None = None
    try:
        bars = iter(enumerate(the_plan.source))
        for offset, bar in bars:  # until the engine holds a position, no order working
            clock.advance(SOURCE_SECONDS)
            state, _ = desk.step(state, next(inbound([bar], offset)))
            engine = state.engine.state()
            if engine["position"] and not engine["order_in_flight"]:
                break
        assert state is not None and state.engine.state()["position"]
        result = procedures.kill(Operations.load(config), "kill at IB", wait=10)
        [symbol] = result.symbols
        assert symbol.flat and not result.stream_told and not result.confirmed
        assert gateway.position(CONTRACT) == 0
        for offset, bar in bars:
            clock.advance(SOURCE_SECONDS)
            state, _ = desk.step(state, next(inbound([bar], offset)))
        assert state.engine.state()["position"] == 0 and gateway.position(CONTRACT) == 0
        trades = desk.ledger.trades(SYMBOL)
        assert trades[-1]["exit_reason"] == "kill"  # and nothing entered after it
        events = {e["event"] for e in desk.ledger.risk_events(SYMBOL)}
        assert "kill" in events and "desync" not in events
    finally:
        desk.close()


def test_a_kill_of_one_symbol_at_ib_leaves_no_stop_of_the_worker_working(
    gateway: FakeGateway, clock: ManualClock, tmp_path: Path
) -> None:
    """A kill of MES alone (MNQ is configured too) cancels no other symbol's orders, so it
    cannot cancel the running trader's stop and target either (IB lets only their client do
    that): it closes the position, and the trader, learning of the close, cancels them itself.
    Otherwise a stop left working would open a new position later."""
    broker = {"kind": "ibkr", "port": gateway.port, "client_id": CLIENT_ID,
              "account": "${IB_ACCOUNT}"}  # fmt: skip
    stream = {"symbols": [SYMBOL, "MNQ"], "source_bar_seconds": SOURCE_SECONDS,
              "max_bar_age_seconds": FAKE_MARKET_AGE}  # fmt: skip
    risk = {**SETTINGS["risk"], "stop_loss_ticks": 40, "take_profit_ticks": 40}
    config = write_config(tmp_path / "ib.yaml", {**SETTINGS, "risk": risk}, broker=broker,
                          stream=stream, kafka={"bootstrap": "127.0.0.1:9"})  # fmt: skip
    live = LiveSettings.load(config, default_run_dir(create=True))
    the_plan = plan(gateway.market, dict(live.params[SYMBOL]), SESSION_MINUTES)
    desk = Desk(live)
    state: TraderState | None = None

    def protection() -> list[str]:
        return [o.order_ref for o in gateway.orders.placed
                if o.working and o.order_ref.endswith(("-stop", "-target"))]  # fmt: skip

    try:
        bars = iter(enumerate(the_plan.source))
        for offset, bar in bars:  # until a position is held under its stop and target
            clock.advance(SOURCE_SECONDS)
            state, _ = desk.step(state, next(inbound([bar], offset)))
            engine = state.engine.state()
            if engine["position"] and not engine["order_in_flight"] and protection():
                break
        assert state is not None and protection()
        result = procedures.kill(Operations.load(config), "one symbol", ["mes"], wait=10)
        [symbol] = result.symbols
        assert symbol.flat, symbol.detail
        assert gateway.position(CONTRACT) == 0 and protection() == []
        for offset, bar in bars:
            clock.advance(SOURCE_SECONDS)
            state, _ = desk.step(state, next(inbound([bar], offset)))
        assert state.engine.state()["position"] == 0 and gateway.position(CONTRACT) == 0
        assert desk.ledger.trades(SYMBOL)[-1]["exit_reason"] == "kill"
    finally:
        desk.close()
