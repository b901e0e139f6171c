"""The fake IB Gateway's trading side against the real ib_async client over TCP.

The adapter's tests trust these messages; ib_async drops a message it cannot decode with no more
than a log line, so every test here also checks that its decoder never complained.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date

import pytest
from ib_async import IB, Future, LimitOrder, MarketOrder, StopOrder

from tests.fakes.clock import ManualClock
from tests.fakes.tws import FakeGateway, FakeMarket, In
from tests.fakes.tws.realtime import BAR_SECONDS
from tests.shared import TRADING_START

NS = 1_000_000_000
START = TRADING_START


@pytest.fixture
def ib(gateway: FakeGateway, caplog: pytest.LogCaptureFixture) -> Iterator[IB]:
    caplog.set_level(logging.ERROR, logger="ib_async")  # other tests may have quietened it
    client = IB()
    client.connect("127.0.0.1", gateway.port, clientId=3, timeout=5)
    yield client
    client.disconnect()
    decoder_errors = [r for r in caplog.records if r.name == "ib_async.Decoder"]
    assert not decoder_errors, decoder_errors[0].getMessage()


def front(ib: IB) -> Future:
    [contract] = ib.qualifyContracts(Future("MES", "202406", exchange="CME"))
    return contract


def tick(clock: ManualClock, gateway: FakeGateway, seconds: int) -> None:
    for _ in range(seconds // BAR_SECONDS):
        clock.advance(BAR_SECONDS)
        gateway.tick()


def test_a_bracket_fills_and_its_oca_sibling_is_cancelled(
    ib: IB, gateway: FakeGateway, clock: ManualClock
) -> None:
    contract = front(ib)
    parent = MarketOrder("BUY", 2, orderRef="entry", transmit=False, orderId=ib.client.getReqId())
    stop = StopOrder("SELL", 2, 4990.0, orderRef="entry-stop", parentId=parent.orderId,
                     ocaGroup="g", ocaType=1, transmit=False)  # fmt: skip
    target = LimitOrder("SELL", 2, 5001.5, orderRef="entry-target", parentId=parent.orderId,
                        ocaGroup="g", ocaType=1)  # fmt: skip
    trades = [ib.placeOrder(contract, order) for order in (parent, stop, target)]
    ib.sleep(0.2)
    assert trades[0].orderStatus.status == "Filled"
    assert trades[0].fills[0].commissionReport.commission == 1.24  # 2 contracts at 0.62
    assert ib.positions()[0].position == 2
    tick(clock, gateway, 3600)
    ib.sleep(0.2)
    assert sorted(t.orderStatus.status for t in trades[1:]) == ["Cancelled", "Filled"]
    assert not ib.positions()


def test_reconnecting_replays_orders_executions_and_the_next_order_id(
    ib: IB, gateway: FakeGateway
) -> None:
    contract = front(ib)
    ib.placeOrder(contract, MarketOrder("SELL", 1, orderRef="first"))
    ib.sleep(0.1)
    gateway.hold_fills()
    working = ib.placeOrder(contract, MarketOrder("BUY", 1, orderRef="second"))
    ib.sleep(0.2)
    used = working.order.orderId
    ib.disconnect()
    ib.connect("127.0.0.1", gateway.port, clientId=3, timeout=5)
    refs = {t.order.orderRef: t.orderStatus.status for t in ib.trades()}
    assert refs == {"first": "Filled", "second": "Submitted"}
    assert [f.execution.orderRef for f in ib.fills()] == ["first"]
    assert ib.client.getReqId() > used


def test_partial_fills_and_a_rejection(ib: IB, gateway: FakeGateway) -> None:
    contract = front(ib)
    gateway.hold_fills()
    trade = ib.placeOrder(contract, MarketOrder("BUY", 3, orderRef="big"))
    ib.sleep(0.1)
    gateway.fill("big", 1, 5000.0)
    ib.sleep(0.1)
    assert (trade.orderStatus.filled, trade.orderStatus.remaining) == (1, 2)
    gateway.fill("big", 2, 5001.0)
    ib.sleep(0.1)
    assert trade.orderStatus.avgFillPrice == pytest.approx(5000 + 2 / 3)
    gateway.reject_next("no margin")
    refused = ib.placeOrder(contract, MarketOrder("BUY", 1, orderRef="refused"))
    ib.sleep(0.1)
    assert refused.orderStatus.status == "Cancelled"
    assert [entry.errorCode for entry in refused.log if entry.errorCode] == [201]


def test_real_time_bars_are_five_seconds_from_the_bar_in_progress(
    ib: IB, gateway: FakeGateway, clock: ManualClock, market: FakeMarket
) -> None:
    contract = front(ib)
    clock.advance(2)  # mid-bar: the bar in progress is the first one sent
    bars = ib.reqRealTimeBars(contract, 5, "TRADES", False)
    ib.sleep(0.1)
    tick(clock, gateway, 30)
    ib.sleep(0.1)
    tape = market.tape(market.front(date(2024, 6, 3)), 5)
    first = int(START.timestamp()) * NS
    expected = [int(tape.ts[i]) for i in tape.starting(first, first + 25 * NS)]
    assert [int(b.time.timestamp()) * NS for b in bars] == expected
    gateway.restore_ib_connection(data_lost=True)  # 1101: subscriptions are gone
    tick(clock, gateway, 30)
    ib.sleep(0.1)
    assert len(bars) == len(expected)
    ib.reqRealTimeBars(contract, 60, "TRADES", False)
    ib.sleep(0.1)
    assert "Invalid bar size 60" in gateway.received(In.REQ_REAL_TIME_BARS)[-1].outcome


def test_one_connection_per_client_id(
    ib: IB, gateway: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    second = IB()
    with pytest.raises(TimeoutError):
        second.connect("127.0.0.1", gateway.port, clientId=3, timeout=2)
    assert "Error 326" in caplog.text


def test_connections_are_refused_until_restored(gateway: FakeGateway) -> None:
    client = IB()
    gateway.refuse_connections()
    with pytest.raises(ConnectionRefusedError):
        client.connect("127.0.0.1", gateway.port, clientId=4, timeout=2)
    gateway.restore_connections()
    client.connect("127.0.0.1", gateway.port, clientId=4, timeout=5)
    assert client.isConnected()
    client.disconnect()
