"""The fake IB Gateway against the real ib_async client over TCP.

These tests pin the fake to the protocol and to IB's documented behaviour (contract lookup with
expired contracts, historical limits, the three pacing rules), because every IBKR test of the
project trusts it: a fake that drifted from the real gateway would make those tests worthless.
The manual clock makes the pacing windows exact to the boundary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from ib_async import IB, ContFuture, Contract, Future

from tests.fakes.clock import ManualClock
from tests.fakes.tws import PACING_VIOLATION, FakeGateway, FakeMarket, In, Listing
from tests.fakes.tws.protocol import SERVER_VERSION

NS = 1_000_000_000
NEW_YORK = ZoneInfo("America/New_York")
JUNE = datetime(2024, 6, 1, tzinfo=UTC)  # March 2024 contracts have expired, June ones trade
MARCH_6 = datetime(2024, 3, 6, tzinfo=UTC)
CONNECT_SYNC = [
    "START_API",
    "REQ_POSITIONS",
    "REQ_OPEN_ORDERS",
    "REQ_COMPLETED_ORDERS",
    "REQ_ACCOUNT_UPDATES",
    "REQ_ACCOUNT_UPDATES_MULTI",
    "REQ_EXECUTIONS",
]


@pytest.fixture(scope="module")
def market() -> FakeMarket:
    return FakeMarket(date(2024, 3, 4), 12)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(JUNE)


@pytest.fixture
def ib(gateway: FakeGateway) -> Iterator[IB]:
    client = IB()
    client.connect("127.0.0.1", gateway.port, clientId=7, timeout=5)
    yield client
    client.disconnect()


def details(ib: IB, contract: Contract) -> list[Contract]:
    return [d.contract for d in ib.reqContractDetails(contract) if d.contract]


def expired_march(ib: IB) -> Contract:
    """MESH4, qualified with `includeExpired`, and the flag set again (IB's details drop it)."""
    [contract] = details(ib, Future("MES", "202403", exchange="CME", includeExpired=True))
    contract.includeExpired = True
    return contract


def history(ib: IB, contract: Contract, end: object = MARCH_6, **options: object) -> list:
    request = {
        "durationStr": "1800 S", "barSizeSetting": "1 min", "whatToShow": "TRADES",
        "useRTH": False, "formatDate": 2, **options,
    }  # fmt: skip
    return list(ib.reqHistoricalData(contract, end, **request))


def as_frame(bars: list) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": [int(b.date.timestamp()) * NS for b in bars],
            "open": [b.open for b in bars],
            "high": [b.high for b in bars],
            "low": [b.low for b in bars],
            "close": [b.close for b in bars],
            "volume": [int(b.volume) for b in bars],
        }
    )


def window(bars: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    span = (int(start.timestamp()) * NS, int(end.timestamp()) * NS)
    return bars.filter(pl.col("ts").is_between(*span, closed="left"))


def listed(market: FakeMarket, local_symbol: str) -> Listing:
    return next(x for x in market.listings if x.local_symbol == local_symbol)


def last_outcome(gateway: FakeGateway) -> str:
    return gateway.historical_requests[-1].outcome


# ---------------------------------------------------------------------------------------------
# Connection


def test_ib_async_connects_and_synchronizes(gateway: FakeGateway, ib: IB) -> None:
    assert ib.isConnected()
    assert ib.client.serverVersion() == SERVER_VERSION
    assert ib.managedAccounts() == [gateway.account]
    assert [entry.message for entry in gateway.log] == CONNECT_SYNC
    assert all(entry.outcome and entry.outcome != "unhandled" for entry in gateway.log)
    assert {entry.client_id for entry in gateway.log[1:]} == {7}


def test_serves_an_async_client_on_the_running_loop(market: FakeMarket, clock: ManualClock) -> None:
    async def scenario() -> int:
        async with FakeGateway(market, clock=clock.now) as gateway:
            client = IB()
            await client.connectAsync("127.0.0.1", gateway.port, clientId=1, timeout=5)
            found = await client.reqContractDetailsAsync(Future(localSymbol="MESM4"))
            client.disconnect()
            return len(found)

    assert asyncio.run(scenario()) == 1


def test_drop_on_cuts_the_connection_at_that_request(gateway: FakeGateway, ib: IB) -> None:
    gateway.drop_on(In.REQ_CONTRACT_DETAILS, nth=2)
    assert details(ib, Future(localSymbol="MESM4"))
    with pytest.raises(ConnectionError):
        details(ib, Future(localSymbol="MESU4"))
    assert not ib.isConnected()
    assert gateway.received(In.REQ_CONTRACT_DETAILS)[-1].outcome == "dropped the connection"


def test_a_broken_handler_fails_the_test(market: FakeMarket, clock: ManualClock) -> None:
    gateway = FakeGateway(market, clock=clock.now)
    with pytest.raises(AssertionError, match="the fake gateway failed"), gateway:
        gateway.history.book = None  # type: ignore[assignment]
        client = IB()
        client.connect("127.0.0.1", gateway.port, clientId=2, timeout=5)
        with pytest.raises(ConnectionError):
            history(client, Future(localSymbol="MESM4", conId=1))
        client.disconnect()


# ---------------------------------------------------------------------------------------------
# Contracts


@pytest.mark.parametrize(
    "wanted",
    [
        Future(localSymbol="MESM4", exchange="CME"),
        Future("MES", "202406", exchange="CME"),
        Future("MES", "20240621", exchange="CME", currency="USD", multiplier="5"),
    ],
    ids=["local symbol", "contract month", "last trade date"],
)
def test_contract_details_of_a_future(ib: IB, market: FakeMarket, wanted: Future) -> None:
    [found] = details(ib, wanted)
    listing = listed(market, "MESM4")
    assert (found.conId, found.secType, found.localSymbol) == (listing.con_id, "FUT", "MESM4")
    assert found.lastTradeDateOrContractMonth == "20240621"
    assert (found.multiplier, found.exchange, found.tradingClass) == ("5", "CME", "MES")
    [by_id] = details(ib, Contract(conId=listing.con_id))
    assert by_id == found


def test_expired_contracts_are_found_only_with_include_expired(ib: IB) -> None:
    assert details(ib, Future("MES", "202403", exchange="CME")) == []
    [found] = details(ib, Future("MES", "202403", exchange="CME", includeExpired=True))
    assert found.localSymbol == "MESH4"
    live = {c.localSymbol for c in details(ib, Future("MES", exchange="CME"))}
    every = {c.localSymbol for c in details(ib, Future("MES", includeExpired=True))}
    assert every == live | {"MESH4"} and "MESH4" not in live


def test_unknown_contracts_have_no_definition(ib: IB) -> None:
    assert details(ib, Future(localSymbol="MESZ9")) == []
    assert details(ib, Future("ES", "202406")) == []  # the market lists MES only


def test_the_continuous_future_is_the_front_contract(ib: IB, market: FakeMarket) -> None:
    [found] = details(ib, ContFuture("MES", "CME"))
    front = market.front(JUNE.date())
    assert (found.secType, found.conId, found.localSymbol) == ("CONTFUT", front.con_id, "MESM4")


# ---------------------------------------------------------------------------------------------
# Historical bars


def test_bars_are_the_simulated_market_stamped_at_their_start(ib: IB, market: FakeMarket) -> None:
    march = expired_march(ib)
    bars = as_frame(history(ib, march, durationStr="86400 S"))
    listing = listed(market, "MESH4")
    assert bars.equals(window(market.bars(listing, 60), MARCH_6 - timedelta(days=1), MARCH_6))
    five = as_frame(history(ib, march, durationStr="86400 S", barSizeSetting="5 mins"))
    assert five.equals(window(market.bars(listing, 300), MARCH_6 - timedelta(days=1), MARCH_6))
    assert five.height == bars.height / 5


@pytest.mark.parametrize(
    "end",
    [
        "20240306-00:00:00",
        "20240306 00:00:00 UTC",
        "20240305 19:00:00 America/New_York",
        "20240305 19:00:00",  # the gateway's time zone (New York)
        MARCH_6,  # ib_async formats datetimes as "... UTC"
    ],
)
def test_end_times_in_every_format_ib_accepts(ib: IB, end: object) -> None:
    bars = history(ib, expired_march(ib), end)
    assert len(bars) == 30
    assert bars[-1].date == MARCH_6 - timedelta(minutes=1)


def test_format_date_1_gives_local_times_of_the_same_bars(ib: IB) -> None:
    march = expired_march(ib)
    local, utc = history(ib, march, formatDate=1), history(ib, march)
    assert [b.date for b in local] == [b.date for b in utc]
    assert {b.date.tzinfo for b in local} == {NEW_YORK}


def test_regular_trading_hours_only(ib: IB) -> None:
    bars = history(ib, expired_march(ib), durationStr="86400 S", useRTH=True)
    local = [b.date.astimezone(NEW_YORK) for b in bars]
    assert len(bars) == 390
    assert (local[0].hour, local[0].minute, local[-1].hour, local[-1].minute) == (9, 30, 15, 59)


def test_expired_contract_history_needs_include_expired(ib: IB, gateway: FakeGateway) -> None:
    march = expired_march(ib)
    march.includeExpired = False
    assert history(ib, march) == []
    assert last_outcome(gateway).startswith("error 200")


def test_no_bars_is_error_162(ib: IB, gateway: FakeGateway) -> None:
    saturday = datetime(2024, 3, 10, tzinfo=UTC)
    assert history(ib, expired_march(ib), saturday, durationStr="86400 S") == []
    assert "HMDS query returned no data: MESH4@CME Trades" in last_outcome(gateway)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"durationStr": "86401 S"}, "error 162: Historical Market Data Service error message:"),
        ({"durationStr": "2 D"}, "Time length exceed max"),
        ({"durationStr": "1 W", "barSizeSetting": "5 mins"}, "bars"),  # 1 W is allowed there
        ({"durationStr": "8 D", "barSizeSetting": "5 mins"}, "Time length exceed max"),
        ({"durationStr": "1801 S", "barSizeSetting": "1 secs"}, "Time length exceed max"),
        ({"barSizeSetting": "7 mins"}, "error 321"),
        ({"durationStr": "30 minutes"}, "error 321"),
        ({"whatToShow": "MIDPOINT"}, "error 321"),
    ],
)
def test_ibs_request_limits(ib: IB, gateway: FakeGateway, options: dict, error: str) -> None:
    # ib_async takes error 321 for a warning and waits for its timeout, as with IB itself
    history(ib, expired_march(ib), timeout=0.5, **options)
    assert error in last_outcome(gateway)


def test_continuous_bars_end_now(ib: IB, gateway: FakeGateway) -> None:
    [cont] = details(ib, ContFuture("MES", "CME"))
    assert history(ib, cont) == []
    assert last_outcome(gateway).startswith("error 10339")
    assert history(ib, cont, "") == []  # now is June: no bars in the last 30 minutes
    assert "no data" in last_outcome(gateway)


def test_continuous_bars_follow_the_roll_rule(market: FakeMarket) -> None:
    friday_night = ManualClock(datetime(2024, 3, 8, 23, tzinfo=UTC))
    with FakeGateway(market, clock=friday_night.now) as gateway:
        ib = IB()
        ib.connect("127.0.0.1", gateway.port, clientId=1, timeout=5)
        [cont] = details(ib, ContFuture("MES", "CME"))
        bars = as_frame(history(ib, cont, "", durationStr="86400 S"))
        ib.disconnect()
    continuous = market.continuous_bars(60)
    since = datetime(2024, 3, 7, 23, tzinfo=UTC)
    assert bars.equals(window(continuous, since, since + timedelta(days=1)))
    roll = datetime(2024, 3, 6, 23, tzinfo=UTC)  # the session of March 7 opens: MESH4 → MESM4
    for contract, start, end in [
        ("MESH4", roll - timedelta(hours=2), roll),
        ("MESM4", roll, since),
    ]:
        own = market.bars(listed(market, contract), 60)
        assert window(continuous, start, end).equals(window(own, start, end))
        assert window(own, start, end).height > 0


# ---------------------------------------------------------------------------------------------
# Pacing, with the manual clock (steps are exact binary fractions, so boundaries are exact)


def ask(ib: IB, contract: Contract, minute: int) -> None:
    """A distinct one-minute request for `contract` (its end is `minute` minutes later)."""
    history(ib, contract, MARCH_6 + timedelta(minutes=minute), durationStr="60 S")


def violations(gateway: FakeGateway) -> list[bool]:
    """Per historical request: was it refused for pacing?"""
    return [r.outcome.endswith(PACING_VIOLATION) for r in gateway.historical_requests]


def test_identical_requests_within_15_seconds(
    ib: IB, gateway: FakeGateway, clock: ManualClock
) -> None:
    march = expired_march(ib)
    history(ib, march)
    history(ib, march)  # identical, at once
    history(ib, march, durationStr="1799 S")  # a different request is fine
    clock.advance(14.75)
    history(ib, march)  # within 15 s of the first two
    clock.advance(0.25)
    history(ib, march)  # 15 s after the first two, but 0.25 s after the refused one: it counts
    clock.advance(15.0)
    history(ib, march)  # exactly 15 s after the last identical one
    assert violations(gateway) == [False, True, False, True, True, False]


def test_six_requests_for_one_contract_within_2_seconds(
    ib: IB, gateway: FakeGateway, clock: ManualClock
) -> None:
    march, [june] = expired_march(ib), details(ib, Future(localSymbol="MESM4"))
    for minute in range(5):
        ask(ib, march, minute)  # at 0, 0.25, ... 1.0
        clock.advance(0.25)
    ask(ib, june, 0)  # another contract is not counted
    ask(ib, march, 5)  # the sixth within 2 s
    clock.advance(0.75)
    ask(ib, march, 6)  # at 2.0: the first has left the window, the refused sixth took its place
    clock.advance(1.25)
    ask(ib, march, 7)  # at 3.25: only the two refused ones are left in the window
    assert violations(gateway) == [False] * 6 + [True, True, False]


def test_more_than_60_requests_within_10_minutes(
    ib: IB, gateway: FakeGateway, clock: ManualClock
) -> None:
    march = expired_march(ib)
    for minute in range(60):
        ask(ib, march, minute)  # at 0, 1, ... 59 s
        clock.advance(1.0)
    ask(ib, march, 60)  # the 61st, at 60 s
    clock.advance(540.0)
    ask(ib, march, 61)  # at 600 s: the first has left the window, the refused 61st is in it
    clock.advance(60.0)
    ask(ib, march, 62)  # at 660 s: the window holds only the two refused requests
    assert violations(gateway) == [False] * 60 + [True, True, False]
