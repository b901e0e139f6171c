"""The IBKR adapter against the fake gateway, with the real ib_async client over TCP.

Bars come from IB's real-time bars (the bar bridge), orders go out through the ledger's sink and
`IbkrBroker`, fills come back from the gateway's order book. Time is a manual clock shared with
the gateway, so the market moves exactly when a test says, and every fill is deterministic: a
market order fills at the open of the bar in progress, as the engine's model has it.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scalper.brokers import Fill, OrderIntent
from scalper.config import BrokerConfig, config_from_dict
from scalper.engine import Engine, backtest_columns, engine_params
from scalper.errors import ScalperError
from scalper.ibkr.account import flatten_account
from scalper.ibkr.adapter import IbkrBroker
from scalper.ibkr.bridge import BarBridge, BridgeThread
from scalper.ibkr.connectivity import Connectivity
from scalper.ibkr.link import IbLink
from scalper.ibkr.loop import LoopThread
from scalper.kafka.broker import KafkaBroker
from scalper.kafka.clients import admin_client, publish, read_topic
from scalper.kafka.messages import Bar, decode_bar
from scalper.kafka.topics import TopicSpec
from scalper.ledger import Ledger
from scalper.live.aggregator import BarAggregator
from scalper.live.sink import OrderSink
from tests.fakes.clock import ManualClock
from tests.fakes.tws import FakeGateway, FakeMarket, In
from tests.shared import TRADING_START

SYMBOL = "MES"
NS = 1_000_000_000
START = TRADING_START
ACCOUNT = "DU7654321"
SESSION_SETTINGS = {
    "strategy": {"bar_seconds": 15, "lookback": 8, "entry_z": 1.2, "exit_z": 0.3},
    "costs": {"slippage_ticks": 0},  # IB's fills carry no simulated slippage
    "risk": {"max_consecutive_losses": 0, "max_trades_per_day": 0},
}


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runtime files (the links' status files) under a temporary data directory."""
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def gateway_options() -> dict[str, Any]:
    """The gateway reports this account (conftest's `gateway` fixture)."""
    return {"account": ACCOUNT}


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    yield ledger
    ledger.close()


def broker_config(gateway: FakeGateway, **changes: Any) -> BrokerConfig:
    return BrokerConfig(kind="ibkr", port=gateway.port, client_id=11, account=ACCOUNT, **changes)


def session_params(**risk: Any) -> dict[str, Any]:
    settings = {**SESSION_SETTINGS, "risk": {**SESSION_SETTINGS["risk"], **risk}}
    return engine_params(config_from_dict(settings))


@pytest.fixture
def make_broker(
    gateway: FakeGateway, ledger: Ledger, tmp_path: Path
) -> Iterator[Callable[..., IbkrBroker]]:
    made: list[IbkrBroker] = []

    def make(**params: Any) -> IbkrBroker:
        broker = IbkrBroker(
            ledger,
            {SYMBOL: session_params(**params)},
            broker_config(gateway),
            pauses=(0.05,),
            status_path=tmp_path / "ibkr-trader.json",
        )
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


def intent(seq: int, action: str, kind: str, *, reason: str | None = None, qty: int = 1,
           stop: int = 0, target: int = 0) -> OrderIntent:  # fmt: skip
    decided = int(START.timestamp()) * NS
    return OrderIntent(
        f"{SYMBOL}-2024-06-03-{seq:04d}", SYMBOL, "2024-06-03", seq, action, qty, kind, reason,
        decided - 15 * NS, decided, stop, target,
    )  # fmt: skip


def send(ledger: Ledger, broker: IbkrBroker, order: OrderIntent) -> bool:
    """What the sink does: record the intent as sent, then hand it to the broker."""
    ledger.record_order(order, "sent", sent=True)
    return broker.submit(order)


def bar_at(clock: ManualClock, close: float = 5000.0) -> Bar:
    """A bar that ends now (what the trader hands to `on_bar` at its close)."""
    end = int(clock.now()) * NS
    return Bar(end - 15 * NS, close, close, close, close, 1, SYMBOL)


def advance(clock: ManualClock, gateway: FakeGateway, seconds: int) -> None:
    for _ in range(seconds // 5):
        clock.advance(5)
        gateway.tick()


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def reported(broker: IbkrBroker, clock: ManualClock, count: int = 1) -> list[Fill]:
    """The fills of the next bars, until `count` came (IB's messages take a moment to arrive)."""
    fills: list[Fill] = []

    def poll() -> bool:
        new = broker.on_bar(SYMBOL, bar_at(clock))
        if new:
            fills.extend(new)
            clock.advance(15)  # a bar that reported is done: the next poll is the next bar
        return len(fills) >= count

    eventually(poll)
    return fills


def executions(ledger: Ledger) -> list[tuple[Any, ...]]:
    rows = ledger.connection.execute(
        "SELECT exec_id, fill_id, shares, commission FROM ibkr_executions"
    )
    return [tuple(row) for row in rows]


# ---------------------------------------------------------------------------------------------
# A live session: IB bars in, the engine decides, orders out through the sink, fills back


@dataclass
class LiveSession:
    """The trader's loop (see `scalper.live.trader`) around an `IbkrBroker`, fed by the bridge."""

    clock: ManualClock
    gateway: FakeGateway
    ledger: Ledger
    broker: IbkrBroker
    params: dict[str, Any]
    bars: queue.Queue[Bar] = field(default_factory=queue.Queue)
    last_order: str | None = None
    seen: list[Bar] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = Engine(dict(self.params), simulate_fills=False)
        self.sink = OrderSink(self.ledger, self.broker, max_position=1)
        self.aggregator = BarAggregator.of_seconds(SYMBOL, self.params["bar_seconds"], 5)

    def run(self, seconds: int, *, bars_flow: bool = True) -> None:
        for _ in range(seconds // 5):
            self.clock.advance(5)
            self.gateway.tick()
            if bars_flow:
                for done in self.aggregator.add(self.bars.get(timeout=10)):
                    self.trade(done)

    def settle(self, bars: int = 20) -> None:
        """Trade on until no order is in flight: IB's last fills are reported, like all others."""
        for _ in range(bars):
            if not self.engine.state()["order_in_flight"]:
                return
            self.run(self.params["bar_seconds"])
        raise AssertionError("an order stayed in flight")

    def trade(self, bar: Bar) -> None:
        self.seen.append(bar)
        for fill in self.broker.on_bar(SYMBOL, bar):
            trade = self.engine.on_fill(fill.ts, fill.action, fill.qty, fill.price, fill.reason)
            self.trades.extend([trade] if trade else [])
        if self.engine.state()["order_in_flight"] and self._dropped():
            self.engine.on_reject()  # IB refused or cancelled it after `submit` returned
        order = self.engine.on_bar(*bar[:6])
        self.engine.take_trades()
        if order is not None:
            intent = OrderIntent.from_engine(SYMBOL, order)
            if self.sink.submit(intent).accepted:
                self.last_order = intent.client_order_id
            else:
                self.engine.on_reject()

    def _dropped(self) -> bool:
        row = self.ledger.order(self.last_order) if self.last_order else None
        return row is not None and row["status"] in ("rejected", "cancelled")


@pytest.fixture
def live(
    gateway: FakeGateway, clock: ManualClock, make_broker: Callable[..., IbkrBroker],
    ledger: Ledger,
) -> Iterator[Callable[..., LiveSession]]:  # fmt: skip
    loops: list[tuple[LoopThread, BarBridge]] = []

    def start(**risk: Any) -> LiveSession:
        session = LiveSession(clock, gateway, ledger, make_broker(**risk), session_params(**risk))
        bridge = BarBridge(broker_config(gateway), SYMBOL, 8, session.bars.put, pauses=(0.05,),
                           client_id=12)  # fmt: skip
        loop = LoopThread("bridge")
        loop.run(bridge.start(attempts=1))
        loops.append((loop, bridge))
        eventually(lambda: streaming(gateway))
        return session

    yield start
    for loop, bridge in loops:
        loop.stop(bridge.stop())


def streaming(gateway: FakeGateway) -> bool:
    """Whether a connected client has real-time bars subscribed (so no bar is missed)."""
    return any(not s.session.closed for s in gateway.realtime.subscriptions)


def backtest_trades(bars: list[Bar], params: dict[str, Any]) -> list[dict[str, Any]]:
    columns = {
        name: np.array([getattr(b, name) for b in bars])
        for name in ("ts", "open", "high", "low", "close", "volume")
    }
    trades = backtest_columns(columns, params)
    keys = ("entry_ts", "exit_ts", "entry_price", "exit_price", "qty")
    return [
        dict(zip(keys, row, strict=True)) for row in zip(*(trades[k] for k in keys), strict=True)
    ]


def test_a_session_through_ib_trades_as_the_backtest(
    live: Callable[..., LiveSession], gateway: FakeGateway, ledger: Ledger
) -> None:
    session = live()
    session.run(45 * 60)
    session.settle()
    assert len(session.trades) >= 4, "the session must trade to prove anything"
    expected = backtest_trades(session.seen, session.params)
    got = [
        {k: t[k] for k in ("entry_ts", "exit_ts", "entry_price", "exit_price", "qty")}
        for t in session.trades
    ]
    assert got == expected[: len(got)] and len(expected) - len(got) <= 1  # the last may be open
    assert max(Counter(gateway.orders.refs()).values()) == 1
    assert all(commission == 0.62 for *_, commission in executions(ledger))
    assert (
        ledger.position(SYMBOL) == gateway.position("MESM4") == session.engine.state()["position"]
    )


def test_the_gateway_drops_mid_session_and_comes_back(
    live: Callable[..., LiveSession], gateway: FakeGateway, ledger: Ledger
) -> None:
    session = live(stop_loss_ticks=3, take_profit_ticks=3)
    session.run(10 * 60)
    while session.engine.state()["position"] == 0:  # go down while a bracket protects a position
        session.run(15)
    gateway.refuse_connections()
    session.run(5 * 60, bars_flow=False)  # the market moves on: the stop or target fills
    assert gateway.position("MESM4") == 0
    gateway.restore_connections()
    eventually(lambda: session.broker.connectivity.api and streaming(gateway))
    session.run(15 * 60)
    session.settle()
    refs = gateway.orders.refs()
    assert max(Counter(refs).values()) == 1, "an order reached IB twice"
    filled = {e.exec_id for e in gateway.orders.executions}
    assert {row[0] for row in executions(ledger)} == filled, "a fill was missed or invented"
    assert (
        ledger.position(SYMBOL) == gateway.position("MESM4") == session.engine.state()["position"]
    )
    assert any(t["exit_reason"] in ("stop", "target") for t in session.trades)


# ---------------------------------------------------------------------------------------------
# Orders, one behaviour at a time


def test_a_protected_entry_is_a_bracket_at_the_engines_levels(
    make_broker: Callable[..., IbkrBroker], gateway: FakeGateway, ledger: Ledger,
    clock: ManualClock,
) -> None:  # fmt: skip
    broker = make_broker()
    assert broker.on_bar(SYMBOL, bar_at(clock, close=5010.0)) == []  # the reference price
    entry = intent(1, "BUY", "entry", stop=4, target=6)
    assert send(ledger, broker, entry)
    parent, stop, target = gateway.orders.placed
    assert (parent.order_type, stop.order_type, target.order_type) == ("MKT", "STP", "LMT")
    assert stop.parent_id == target.parent_id == parent.order_id
    assert stop.oca_group == target.oca_group != ""
    fill_price = parent.average_price
    eventually(
        lambda: stop.stop_price == fill_price - 1.0 and target.limit_price == fill_price + 1.5
    )
    clock.advance(15)
    [fill] = broker.on_bar(SYMBOL, bar_at(clock))
    assert (fill.fill_id, fill.kind, fill.price) == (entry.client_order_id, "entry", fill_price)
    advance(clock, gateway, 30 * 60)
    exits = broker.on_bar(SYMBOL, bar_at(clock))
    [protective] = exits
    assert protective.reason in ("stop", "target")
    assert protective.fill_id == f"{entry.client_order_id}-{protective.reason}"
    assert protective.order_id == entry.client_order_id and protective.kind == "exit"
    assert sorted(o.status for o in (stop, target)) == ["Cancelled", "Filled"]
    assert ledger.position(SYMBOL) == gateway.position("MESM4") == 0


def test_partial_fills_are_one_fill_at_the_average_price(
    make_broker: Callable[..., IbkrBroker], gateway: FakeGateway, ledger: Ledger,
    clock: ManualClock,
) -> None:  # fmt: skip
    broker = make_broker()
    broker.on_bar(SYMBOL, bar_at(clock))
    gateway.hold_fills()
    entry = intent(1, "SELL", "entry", qty=3)
    assert send(ledger, broker, entry)
    gateway.fill(entry.client_order_id, 1, 5000.0)
    time.sleep(0.2)
    assert broker.on_bar(SYMBOL, bar_at(clock)) == []  # 1 of 3: not the engine's fill yet
    gateway.fill(entry.client_order_id, 2, 5001.0)
    clock.advance(15)
    [fill] = reported(broker, clock)
    assert (fill.qty, fill.action) == (3, "SELL")
    assert fill.price == pytest.approx((5000.0 + 2 * 5001.0) / 3)
    assert sorted(row[2:] for row in executions(ledger)) == [(1, 0.62), (2, 1.24)]
    assert ledger.order(entry.client_order_id)["status"] == "filled"


def test_a_rejection_refuses_the_order_with_ibs_reason(
    make_broker: Callable[..., IbkrBroker], gateway: FakeGateway, ledger: Ledger,
    clock: ManualClock,
) -> None:  # fmt: skip
    broker = make_broker()
    broker.on_bar(SYMBOL, bar_at(clock))
    gateway.reject_next("Margin requirement not met")
    entry = intent(1, "BUY", "entry")
    assert not send(ledger, broker, entry)
    assert "Margin requirement not met" in (broker.refusal(entry.client_order_id) or "")
    assert gateway.position("MESM4") == 0


def test_connectivity_notices_block_entries_but_never_exits(
    make_broker: Callable[..., IbkrBroker], gateway: FakeGateway, ledger: Ledger,
    clock: ManualClock, tmp_path: Path,
) -> None:  # fmt: skip
    broker = make_broker()
    broker.on_bar(SYMBOL, bar_at(clock))
    assert send(ledger, broker, intent(1, "BUY", "entry"))
    gateway.notify(2103)  # market data farm broken
    eventually(lambda: not broker.connectivity.entries_allowed)
    refused = intent(2, "BUY", "entry")
    assert not send(ledger, broker, refused)
    assert "market_data" in (broker.refusal(refused.client_order_id) or "")
    assert send(ledger, broker, intent(3, "SELL", "exit", reason="signal"))  # exits go out
    eventually(lambda: gateway.position("MESM4") == 0)
    gateway.notify(2104)
    eventually(lambda: broker.connectivity.entries_allowed)
    gateway.lose_ib_connection()  # 1100
    eventually(lambda: '"ib_servers": false' in (tmp_path / "ibkr-trader.json").read_text())
    assert not broker.connectivity.orders_ok
    gateway.restore_ib_connection()  # 1102
    eventually(lambda: broker.connectivity.entries_allowed)
    assert send(ledger, broker, intent(4, "BUY", "entry"))


def test_an_exit_decided_while_disconnected_goes_out_once_after_reconnect(
    make_broker: Callable[..., IbkrBroker], gateway: FakeGateway, ledger: Ledger,
    clock: ManualClock,
) -> None:  # fmt: skip
    broker = make_broker()
    broker.on_bar(SYMBOL, bar_at(clock))
    assert send(ledger, broker, intent(1, "BUY", "entry"))
    gateway.refuse_connections()
    eventually(lambda: not broker.connectivity.api)
    exit_ = intent(2, "SELL", "exit", reason="eod")
    assert send(ledger, broker, exit_)  # accepted: it waits for the link
    assert not send(ledger, broker, intent(3, "BUY", "entry"))  # no entries meanwhile
    clock.advance(15)
    gateway.restore_connections()
    eventually(lambda: gateway.position("MESM4") == 0)
    assert gateway.orders.refs().count(exit_.client_order_id) == 1
    clock.advance(15)
    fills = broker.on_bar(SYMBOL, bar_at(clock))
    assert [f.fill_id for f in fills] == [intent(1, "BUY", "entry").client_order_id,
                                         exit_.client_order_id]  # fmt: skip


def test_orders_lost_in_flight_exits_resent_entries_rejected(
    make_broker: Callable[..., IbkrBroker], gateway: FakeGateway, ledger: Ledger,
    clock: ManualClock,
) -> None:  # fmt: skip
    broker = make_broker()
    broker.on_bar(SYMBOL, bar_at(clock))
    assert send(ledger, broker, intent(1, "BUY", "entry"))
    gateway.drop_on(In.PLACE_ORDER)  # the next order dies with the connection, unseen by IB
    lost_exit = intent(2, "SELL", "exit", reason="signal")
    assert send(ledger, broker, lost_exit)
    eventually(lambda: gateway.position("MESM4") == 0)  # resent after the reconnect, once
    assert gateway.orders.refs().count(lost_exit.client_order_id) == 1
    gateway.drop_on(In.PLACE_ORDER)
    lost_entry = intent(3, "BUY", "entry")
    assert send(ledger, broker, lost_entry)
    eventually(lambda: broker.connectivity.api and broker.connects >= 3)
    clock.advance(15)
    broker.on_bar(SYMBOL, bar_at(clock))
    assert ledger.order(lost_entry.client_order_id)["status"] == "rejected"
    assert lost_entry.client_order_id not in gateway.orders.refs()


def test_a_restarted_trader_reports_what_happened_while_it_was_down(
    make_broker: Callable[..., IbkrBroker], gateway: FakeGateway, ledger: Ledger,
    clock: ManualClock,
) -> None:  # fmt: skip
    first = make_broker()
    first.on_bar(SYMBOL, bar_at(clock))
    entry = intent(1, "BUY", "entry", stop=3, target=3)
    assert send(ledger, first, entry)
    clock.advance(15)
    assert [f.fill_id for f in first.on_bar(SYMBOL, bar_at(clock))] == [entry.client_order_id]
    exit_ = intent(2, "SELL", "exit", reason="signal")
    gateway.hold_fills()
    assert send(ledger, first, exit_)
    first.close()  # the worker dies; its exit and the bracket keep working at IB
    gateway.hold_fills(False)
    advance(clock, gateway, 15)
    second = make_broker()  # a new worker process, the same ledger
    assert second.submit(exit_)  # a replayed submission is recognised, not sent again
    clock.advance(15)
    [fill] = second.on_bar(SYMBOL, bar_at(clock))
    assert fill.fill_id == exit_.client_order_id and fill.kind == "exit"
    assert max(Counter(gateway.orders.refs()).values()) == 1
    assert ledger.position(SYMBOL) == gateway.position("MESM4") == 0
    assert second.on_bar(SYMBOL, bar_at(clock)) == [fill]  # a replayed bar: the same fills


def test_an_order_ib_has_but_the_ledger_missed_is_followed_not_sent_again(
    make_broker: Callable[..., IbkrBroker], gateway: FakeGateway, ledger: Ledger,
    clock: ManualClock,
) -> None:  # fmt: skip
    """The worker dies after IB took an order and before its ledger recorded the send (the sink
    commits once `submit` returns); restarted, it decides the order again."""
    first = make_broker()
    first.on_bar(SYMBOL, bar_at(clock))
    entry = intent(1, "BUY", "entry")
    assert first.submit(entry)  # IB has it; the ledger never will from this process
    first.close()
    second = make_broker()
    assert send(ledger, second, entry)  # the same decision after the restart
    clock.advance(15)
    [fill] = reported(second, clock)
    assert fill.fill_id == entry.client_order_id and fill.kind == "entry"
    assert gateway.orders.refs() == [entry.client_order_id]
    assert ledger.position(SYMBOL) == gateway.position("MESM4") == 1


def test_flatten_all_cancels_and_closes_everything(
    make_broker: Callable[..., IbkrBroker], gateway: FakeGateway, ledger: Ledger,
    clock: ManualClock,
) -> None:  # fmt: skip
    broker = make_broker()
    broker.on_bar(SYMBOL, bar_at(clock))
    assert send(ledger, broker, intent(1, "SELL", "entry", stop=8, target=8))
    result = broker.flatten_all()
    assert result.flat and len(result.orders) == 1 and result.orders[0].startswith("KILL-MES-")
    assert gateway.position("MESM4") == 0
    assert all(o.done for o in gateway.orders.placed)


def test_a_kill_by_another_client_reaches_the_trader_as_a_kill_exit(
    make_broker: Callable[..., IbkrBroker], gateway: FakeGateway, ledger: Ledger,
    clock: ManualClock,
) -> None:  # fmt: skip
    broker = make_broker()
    broker.on_bar(SYMBOL, bar_at(clock))
    assert send(ledger, broker, intent(1, "BUY", "entry", stop=8))
    ops = LoopThread("ops")
    link = IbLink(broker_config(gateway), client_id=13)
    try:
        ops.run(link.start())
        result = ops.run(flatten_account(link.ib, [SYMBOL]))
    finally:
        ops.stop(link.close())
    assert result.flat
    clock.advance(15)
    fills = reported(broker, clock, count=2)
    assert [(f.kind, f.reason) for f in fills] == [("entry", None), ("exit", "kill")]
    assert fills[1].fill_id == result.orders[0]
    assert ledger.position(SYMBOL) == 0


def test_no_account_id_or_secret_in_logs_or_status(
    make_broker: Callable[..., IbkrBroker], gateway: FakeGateway, ledger: Ledger,
    clock: ManualClock, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="ib_async"):
        broker = make_broker()
        broker.on_bar(SYMBOL, bar_at(clock))
        send(ledger, broker, intent(1, "BUY", "entry"))
        gateway.reject_next("no")
        send(ledger, broker, intent(2, "SELL", "exit", reason="signal"))
        gateway.drop_connections()
        eventually(lambda: broker.connectivity.api and broker.connects >= 2)
    assert "account='***'" in caplog.text  # ib_async logged the account, redacted
    assert ACCOUNT not in caplog.text
    assert ACCOUNT not in (tmp_path / "ibkr-trader.json").read_text()


def test_a_trader_started_before_the_gateway_trades_once_it_is_up(
    gateway: FakeGateway, ledger: Ledger, clock: ManualClock
) -> None:
    gateway.refuse_connections()
    broker = IbkrBroker(
        ledger, {SYMBOL: session_params()}, broker_config(gateway), pauses=(0.05,),
        connect_wait=0.1,
    )  # fmt: skip
    try:
        broker.on_bar(SYMBOL, bar_at(clock))
        assert not send(ledger, broker, intent(1, "BUY", "entry"))  # not connected yet
        gateway.restore_connections()
        eventually(lambda: broker.connectivity.entries_allowed)
        assert send(ledger, broker, intent(2, "BUY", "entry"))
    finally:
        broker.close()


def test_a_client_id_in_use_is_one_clear_error(
    make_broker: Callable[..., IbkrBroker], gateway: FakeGateway, ledger: Ledger
) -> None:
    make_broker()
    with pytest.raises(ScalperError, match="client id in use"):
        IbkrBroker(ledger, {SYMBOL: session_params()}, broker_config(gateway), connect_attempts=1)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"mode": "live"}, "is a paper-trading login but broker.mode is live"),
        ({"account": "DU0000001"}, "does not serve broker.account"),
    ],
)
def test_a_trader_refuses_a_gateway_logged_into_the_wrong_account(
    changes: dict[str, Any], needle: str, gateway: FakeGateway, ledger: Ledger
) -> None:
    # The port says nothing about the login behind it: the gateway's accounts decide.
    config = replace(broker_config(gateway), **changes)
    with pytest.raises(ScalperError, match=re.escape(needle)) as info:
        IbkrBroker(ledger, {SYMBOL: session_params()}, config, connect_attempts=1)
    assert ACCOUNT not in str(info.value)


def test_paper_mode_refuses_a_gateway_logged_into_a_live_account(
    market: FakeMarket, clock: ManualClock, ledger: Ledger
) -> None:
    with FakeGateway(market, clock=clock.now, account="U7654321") as live_login:
        paper = BrokerConfig(kind="ibkr", port=live_login.port, client_id=11)
        with pytest.raises(ScalperError, match=r"live IB account but broker\.mode is paper"):
            IbkrBroker(ledger, {SYMBOL: session_params()}, paper, connect_attempts=1)
        assert live_login.received(In.PLACE_ORDER) == []


def test_connectivity_codes_as_states() -> None:
    state = Connectivity().connected()
    assert state.entries_allowed
    assert not state.apply(1100).orders_ok
    assert state.apply(1100).apply(1102).entries_allowed
    assert not state.apply(2103).entries_allowed and state.apply(2103).orders_ok
    assert state.apply(2103).apply(2108).entries_allowed  # inactive farm: available on demand
    assert state.apply(2105).entries_allowed  # historical data does not gate trading
    assert state.apply(2110).down() == ["ib_servers"]
    assert not state.disconnected().orders_ok
    assert state.apply(9999) == state


# ---------------------------------------------------------------------------------------------
# The live-bars bridge into a real Kafka broker


def test_the_bridge_publishes_ibs_bars_stamped_at_their_start(
    kafka_broker: KafkaBroker, gateway: FakeGateway, clock: ManualClock, market: FakeMarket
) -> None:
    topic = f"bars.bridge-{uuid.uuid4().hex[:8]}"
    admin = admin_client(kafka_broker.bootstrap)
    admin.create_topics({topic: TopicSpec(topic, 1).create_request()}, wait_for_metadata=True)
    admin.close()
    bridge = BridgeThread(
        lambda emit: BarBridge(broker_config(gateway), SYMBOL, 8, emit, pauses=(0.05,))
    )
    bridge.start(attempts=1)
    sent: list[int] = []
    publisher = threading.Thread(
        target=lambda: sent.append(publish(kafka_broker.bootstrap, topic, bridge.messages()))
    )
    publisher.start()
    eventually(lambda: streaming(gateway))
    advance(clock, gateway, 60)
    gateway.drop_connections()  # the bridge reconnects and subscribes again
    eventually(lambda: streaming(gateway) and bridge.bridge.link.connects == 2)
    advance(clock, gateway, 60)
    eventually(lambda: bridge.bridge.last_ts == int(clock.now()) * NS - 5 * NS)
    bridge.stop()
    publisher.join(10)
    bars = [decode_bar(record.value) for record in read_topic(kafka_broker.bootstrap, topic)]
    assert sent == [len(bars)] and len(bars) == 24
    tape = market.tape(market.front(date(2024, 6, 3)), 5)
    first = int(START.timestamp()) * NS
    expected = [
        Bar(int(tape.ts[i]), *(float(x[i]) for x in (tape.open, tape.high, tape.low, tape.close)),
            int(tape.volume[i]), SYMBOL)
        for i in tape.starting(first, first + 115 * NS)
    ]  # fmt: skip
    assert bars == expected
