"""The account as IB sees it: positions, working orders, and flattening everything.

What the operations flows ask of the broker, over a connection of their own (the trader's client
id is taken by the stream worker, IB allows one connection per id): the positions and working
orders to reconcile with the ledger at session open, and — for the kill switch and the
end-of-day watchdog — `flatten_account`, which cancels every working order of the account (IB's
global cancel, whoever placed them) and closes every position with market orders named
`KILL-<symbol>-<ns>`, so the trader recognises them as kill fills when it reconciles.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ib_async import IB, Contract, MarketOrder, Trade

from scalper.brokers import kill_ref
from scalper.ibkr.orders import TIME_IN_FORCE
from scalper.instruments import INSTRUMENTS

FLATTEN_TIMEOUT = 30.0
_POLL = 0.05


@dataclass(frozen=True)
class WorkingOrder:
    """An order still working at IB, as reconciliation compares it with the ledger."""

    ref: str
    symbol: str
    action: str
    quantity: int
    order_type: str
    status: str


@dataclass(frozen=True)
class AccountSnapshot:
    """Signed positions by symbol (flat ones left out) and the working orders."""

    positions: dict[str, int] = field(default_factory=dict)
    orders: tuple[WorkingOrder, ...] = ()

    @property
    def flat(self) -> bool:
        return not any(self.positions.values())


def open_positions(ib: IB) -> list[tuple[Contract, int]]:
    """The contracts held (signed quantities), ready to trade: IB's position messages may
    leave out the exchange, which an order needs."""
    held = []
    for position in ib.positions():
        if position.position:
            contract = position.contract
            contract.exchange = contract.exchange or _exchange(contract.symbol)
            held.append((contract, int(position.position)))
    return held


def positions(ib: IB) -> dict[str, int]:
    """Signed position per symbol across contracts (flat symbols left out)."""
    held: dict[str, int] = {}
    for position in ib.positions():
        symbol = position.contract.symbol
        held[symbol] = held.get(symbol, 0) + int(position.position)
    return {symbol: qty for symbol, qty in held.items() if qty}


def working_orders(trades: Iterable[Trade]) -> tuple[WorkingOrder, ...]:
    """The working orders among `trades`."""
    return tuple(
        WorkingOrder(
            t.order.orderRef,
            t.contract.symbol,
            t.order.action,
            int(t.order.totalQuantity),
            t.order.orderType,
            t.orderStatus.status,
        )
        for t in trades
    )


async def snapshot(ib: IB) -> AccountSnapshot:
    """Positions and working orders, fresh from the gateway (all clients' orders: the orders
    the gateway lists now, not `ib.openTrades()`, which keeps another client's order open
    after it was cancelled — IB sends its status to its own client only)."""
    trades = await ib.reqAllOpenOrdersAsync()
    await ib.reqPositionsAsync()
    return AccountSnapshot(positions(ib), working_orders(trades))


@dataclass(frozen=True)
class FlattenResult:
    """The orders sent to flatten, and what was still open when the wait ended."""

    orders: tuple[str, ...]
    remaining: dict[str, int]

    @property
    def flat(self) -> bool:
        return not self.remaining


async def flatten_account(
    ib: IB, symbols: Iterable[str] | None = None, *, timeout: float = FLATTEN_TIMEOUT
) -> FlattenResult:
    """Cancel every working order, close the positions (of `symbols`, default all) at market,
    and wait until they are flat or `timeout` passes."""
    deadline = time.monotonic() + timeout
    await cancel_everything(ib, deadline)
    sent = await close_positions(ib, symbols, deadline)
    wanted = None if symbols is None else set(symbols)
    remaining = {s: q for s, q in positions(ib).items() if wanted is None or s in wanted}
    return FlattenResult(sent, remaining)


async def cancel_everything(ib: IB, deadline: float) -> None:
    """IB's global cancel (every working order of the account, whichever client placed it),
    then a wait until none works, or `deadline` (a `time.monotonic()` value)."""
    ib.reqGlobalCancel()
    while await ib.reqAllOpenOrdersAsync() and time.monotonic() < deadline:
        await asyncio.sleep(_POLL)


async def close_positions(
    ib: IB, symbols: Iterable[str] | None, deadline: float
) -> tuple[str, ...]:
    """Close the positions held (of `symbols`, default all) with market orders named
    `KILL-<symbol>-<ns>`; waits until they are done or `deadline`. Their `orderRef`s.

    Only what market orders working already (any client's: a running trader's exit that IB
    has not filled, an earlier kill's close) do not close is sent: on top of them, a close of
    the whole position would reverse it once the market fills both.
    """
    wanted = None if symbols is None else set(symbols)
    working = await ib.reqAllOpenOrdersAsync()
    await ib.reqPositionsAsync()
    sent: list[Trade] = []
    stamp = time.time_ns()
    for contract, held in open_positions(ib):
        if wanted is not None and contract.symbol not in wanted:
            continue
        action = "SELL" if held > 0 else "BUY"
        quantity = abs(held) - _closing_at_market(working, contract, action)
        if quantity <= 0:
            continue
        ref = kill_ref(contract.symbol, stamp)
        order = MarketOrder(action, quantity, orderRef=ref, tif=TIME_IN_FORCE)
        sent.append(ib.placeOrder(contract, order))
    await _until(lambda: all(t.isDone() for t in sent), deadline - time.monotonic())
    return tuple(t.order.orderRef for t in sent)


def _closing_at_market(working: Iterable[Trade], contract: Contract, action: str) -> int:
    """The quantity that working market orders `action` of `contract` have still to fill."""
    return sum(
        int(t.orderStatus.remaining if t.orderStatus.status else t.order.totalQuantity)
        for t in working
        if _same_contract(t.contract, contract)
        and t.order.orderType == "MKT"
        and t.order.action == action
    )


def _same_contract(one: Contract, other: Contract) -> bool:
    if one.conId and other.conId:
        return one.conId == other.conId
    return (one.symbol, one.localSymbol) == (other.symbol, other.localSymbol)


def _exchange(symbol: str) -> str:
    """Where a position's contract trades: IB's position messages may leave it out."""
    known = INSTRUMENTS.get(symbol)
    return known.exchange if known is not None else "SMART"


async def _until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition()` until true or `timeout` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(_POLL)
    return True
