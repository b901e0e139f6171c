"""The broker as the operations see it: positions, working orders, and flattening.

* **IBKR** — a short connection of the operations' own (client id `broker.client_id + 2`; the
  trader and the bar bridge hold theirs) reads the account (`scalper.ibkr.account.snapshot`)
  and can flatten it directly: cancel every working order, close the positions at market.
* **Paper** — the paper broker lives inside the stream worker and keeps its state in the
  ledger, so its positions and working orders are read from there; it cannot be flattened from
  outside (`flatten` is None): the worker must be told (`kill` on the control topic).

Only the configured symbols' positions and orders are reported and closed: the account may
hold other things the system does not manage. Flattening cancels every working order of the
account, though: IB's global cancel is the only way one API client cancels another's orders
(the trader's), and a kill switch must stop everything that could still trade.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from scalper.ibkr.account import AccountSnapshot, FlattenResult, WorkingOrder

if TYPE_CHECKING:
    from ib_async import IB

    from scalper.ops.context import Operations

T = TypeVar("T")
IB_TIMEOUT = 60.0
WAIT_POLL = 1.0


class BrokerView(Protocol):
    """What the operations ask of a broker."""

    def snapshot(self) -> AccountSnapshot:
        """The positions and working orders of the configured symbols."""
        ...

    def flatten(self) -> FlattenResult | None:
        """Cancel and close everything at the broker itself; None when the broker cannot."""
        ...


class IbkrView:
    """Interactive Brokers, over a connection opened for each question."""

    def __init__(self, ops: Operations) -> None:
        self.broker = ops.cfg.broker
        self.symbols = ops.symbols

    def snapshot(self) -> AccountSnapshot:
        from scalper.ibkr.account import snapshot

        found = self._with_ib(snapshot)
        return AccountSnapshot(
            {s: q for s, q in found.positions.items() if s in self.symbols},
            tuple(o for o in found.orders if o.symbol in self.symbols),
        )

    def flatten(self) -> FlattenResult:
        from scalper.ibkr.account import flatten_account

        return self._with_ib(lambda ib: flatten_account(ib, self.symbols))

    def _with_ib(self, work: Callable[[IB], Awaitable[T]]) -> T:
        from scalper.ibkr.link import IbLink, role_client_id
        from scalper.ibkr.loop import LoopThread

        link = IbLink(self.broker, client_id=role_client_id(self.broker, "ops"))

        async def connected() -> T:
            await link.start(attempts=1)
            return await work(link.ib)

        loop = LoopThread("ibkr-ops")
        try:
            return loop.run(connected(), IB_TIMEOUT)
        finally:
            loop.stop(link.close())


class PaperView:
    """The paper broker's state, as it keeps it in the ledger."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    def snapshot(self) -> AccountSnapshot:
        from scalper.brokers.paper import PaperBroker

        with self.ops.ledger() as ledger:
            exchange = PaperBroker(ledger, self.ops.settings.params)
            held = {s: exchange.position(s) for s in self.ops.symbols}
            working = tuple(
                WorkingOrder(o["client_order_id"], s, o["action"], o["qty"], "MKT", o["status"])
                for s in self.ops.symbols
                for o in ledger.orders(s)
                if o["status"] == "sent"
            )
        return AccountSnapshot({s: q for s, q in held.items() if q}, working)

    def flatten(self) -> None:
        return None


def broker_view(ops: Operations) -> BrokerView:
    return IbkrView(ops) if ops.cfg.broker.kind == "ibkr" else PaperView(ops)


def wait_flat(view: BrokerView, timeout: float, poll: float = WAIT_POLL) -> AccountSnapshot:
    """The broker's state once flat, or as it is when `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    found = view.snapshot()
    while not found.flat and time.monotonic() < deadline:
        time.sleep(poll)
        found = view.snapshot()
    return found
