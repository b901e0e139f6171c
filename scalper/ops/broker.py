"""The broker as the operations see it: positions, working orders, and flattening.

* **IBKR** — a short connection of the operations' own (client id `broker.client_id + 2`; the
  trader and the bar bridge hold theirs) reads the account (`scalper.ibkr.account.snapshot`)
  and flattens it directly: cancel the working orders, close the positions at market, then
  read the account again until it shows them flat or the time is up.
* **Paper** — the paper broker keeps its state in the ledger, and the operations flatten it
  there (`PaperBroker.kill`): the working order is cancelled and a market order closing the
  position fills at the next bar's open, in the stream worker that runs the exchange. Without a
  running worker no bar arrives, so nothing is waited for: the order waits at the exchange.

Only the named symbols' positions and orders are reported and closed: the account may hold
other things the system does not manage. Cancelling is the delicate part at IB: a client can
cancel only its own orders, and the trader's are another client's. Flattening every configured
symbol (`everything`: the kill switch for all, the end-of-day watchdog) uses IB's global
cancel, the one way to stop every order of the account. Flattening some symbols only must not
strip the others of their stops, so it cancels the named symbols' orders one by one: its own,
and those of a client whose connection is free (the trader of a dead worker) by connecting as
that client. An order whose client is connected — a running trader — stays; that trader is told
on the control topic, and what still works when the time is up is reported, never hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from scalper.errors import ScalperError
from scalper.ibkr.account import AccountSnapshot, WorkingOrder

if TYPE_CHECKING:
    from ib_async import IB

    from scalper.ops.context import Operations

T = TypeVar("T")
IB_TIMEOUT = 60.0
WAIT_POLL = 1.0
_IB_POLL = 0.1


class BrokerView(Protocol):
    """What the operations ask of a broker."""

    def snapshot(self, symbols: Collection[str] | None = None) -> AccountSnapshot:
        """The positions and working orders of `symbols` (default: the configured ones)."""
        ...

    def flatten(
        self, symbols: Collection[str], *, everything: bool, timeout: float
    ) -> AccountSnapshot:
        """Cancel the symbols' working orders and close their positions at the broker itself;
        wait up to `timeout` seconds for the broker to show them flat. The symbols' state when
        done (`everything`: the symbols are all the configured ones)."""
        ...


def is_flat(snapshot: AccountSnapshot, symbol: str) -> bool:
    """No position and no working order of `symbol`: nothing of it can trade any more."""
    return not snapshot.positions.get(symbol) and not any(
        o.symbol == symbol for o in snapshot.orders
    )


def _only(snapshot: AccountSnapshot, symbols: Collection[str]) -> AccountSnapshot:
    return AccountSnapshot(
        {s: q for s, q in snapshot.positions.items() if s in symbols and q},
        tuple(o for o in snapshot.orders if o.symbol in symbols),
    )


class IbkrView:
    """Interactive Brokers, over a connection opened for each question."""

    def __init__(self, ops: Operations) -> None:
        self.broker = ops.cfg.broker
        self.symbols = ops.symbols

    def snapshot(self, symbols: Collection[str] | None = None) -> AccountSnapshot:
        from scalper.ibkr.account import snapshot

        return _only(self._with_ib(snapshot, IB_TIMEOUT), symbols or self.symbols)

    def flatten(
        self, symbols: Collection[str], *, everything: bool, timeout: float
    ) -> AccountSnapshot:
        from scalper.ibkr.account import cancel_everything, close_positions, snapshot

        async def work(ib: IB) -> AccountSnapshot:
            deadline = time.monotonic() + timeout
            if everything:
                await cancel_everything(ib, deadline)
            else:
                await self._cancel_orders(ib, symbols)
            await close_positions(ib, symbols, deadline)
            found = _only(await snapshot(ib), symbols)
            while not all(is_flat(found, s) for s in symbols) and time.monotonic() < deadline:
                await asyncio.sleep(_IB_POLL)
                found = _only(await snapshot(ib), symbols)
            return found

        return self._with_ib(work, timeout + IB_TIMEOUT)

    async def _cancel_orders(self, ib: IB, symbols: Collection[str]) -> None:
        """Cancel the symbols' working orders that can be cancelled from here (the module
        docstring): this client's, and those of clients not connected now."""
        trades = [t for t in await ib.reqAllOpenOrdersAsync() if t.contract.symbol in symbols]
        own = ib.client.clientId
        for client_id in {t.order.clientId for t in trades}:
            if client_id == own:
                for trade in trades:
                    if trade.order.clientId == own:
                        ib.cancelOrder(trade.order)
                continue
            # connected elsewhere: its owner is alive, and told on the control topic
            with contextlib.suppress(ScalperError, OSError, TimeoutError):
                await self._as_client(client_id, symbols)

    async def _as_client(self, client_id: int, symbols: Collection[str]) -> None:
        """Cancel `client_id`'s orders of `symbols` as that client, if its connection is free
        (ib_async's own complaint about a client id in use is expected, so not logged)."""
        from scalper.ibkr.link import IbLink

        link = IbLink(self.broker, client_id=client_id)
        quiet = logging.getLogger("ib_async.client")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            await link.start(attempts=1)
        finally:
            quiet.setLevel(level)
        try:
            for trade in link.ib.openTrades():
                if trade.contract.symbol in symbols:
                    link.ib.cancelOrder(trade.order)
            await link.ib.reqOpenOrdersAsync()  # the cancels have reached the gateway
        finally:
            await link.close()

    def _with_ib(self, work: Callable[[IB], Awaitable[T]], timeout: float) -> T:
        from scalper.ibkr.link import IbLink, role_client_id
        from scalper.ibkr.loop import LoopThread

        link = IbLink(self.broker, client_id=role_client_id(self.broker, "ops"))

        async def connected() -> T:
            await link.start(attempts=1)
            return await work(link.ib)

        loop = LoopThread("ibkr-ops")
        try:
            return loop.run(connected(), timeout)
        finally:
            loop.stop(link.close())


class PaperView:
    """The paper broker's state, as it keeps it in the ledger."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    def _params(self, symbols: Collection[str]) -> dict[str, Mapping[str, Any]]:
        """Engine parameters of `symbols`: configured, or from the instruments table for a
        symbol a worker of another configuration traded (`Ledger.exposed_symbols`)."""
        from scalper.live.settings import symbol_params

        known = self.ops.settings.params
        return {s: known[s] if s in known else symbol_params(self.ops.cfg, s) for s in symbols}

    def snapshot(self, symbols: Collection[str] | None = None) -> AccountSnapshot:
        from scalper.brokers.paper import PaperBroker

        symbols = symbols or self.ops.symbols
        with self.ops.ledger() as ledger:
            exchange = PaperBroker(ledger, self._params(symbols))
            held = {s: exchange.position(s) for s in symbols}
            working = tuple(
                WorkingOrder(o["client_order_id"], s, o["action"], o["qty"], "MKT", o["status"])
                for s in symbols
                for o in ledger.orders(s)
                if o["status"] == "sent"
            )
        return AccountSnapshot({s: q for s, q in held.items() if q}, working)

    def flatten(
        self, symbols: Collection[str], *, everything: bool, timeout: float
    ) -> AccountSnapshot:
        from scalper.brokers.paper import PaperBroker
        from scalper.live.worker import running_workers

        session = self.ops.session_date().isoformat()
        with self.ops.ledger() as ledger:
            exchange = PaperBroker(ledger, self._params(symbols))
            for symbol in symbols:
                exchange.kill(symbol, session, time.time_ns())
        if not running_workers(self.ops.settings.run_dir):
            timeout = 0.0  # no worker, no bar: the closing orders wait at the exchange
        return _only(wait_flat(self, timeout, symbols=symbols), symbols)


def broker_view(ops: Operations) -> BrokerView:
    return IbkrView(ops) if ops.cfg.broker.kind == "ibkr" else PaperView(ops)


def wait_flat(
    view: BrokerView,
    timeout: float,
    poll: float = WAIT_POLL,
    *,
    symbols: Collection[str] | None = None,
) -> AccountSnapshot:
    """The broker's state once flat (of `symbols`: no position, no working order; default:
    no position at all), or as it is when `timeout` seconds have passed."""

    def done(found: AccountSnapshot) -> bool:
        if symbols is None:
            return found.flat
        return all(is_flat(found, s) for s in symbols)

    deadline = time.monotonic() + timeout
    found = view.snapshot(symbols)
    while not done(found) and time.monotonic() < deadline:
        time.sleep(poll)
        found = view.snapshot(symbols)
    return found
