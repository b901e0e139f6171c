"""Brokers: where orders go and where fills come from, behind one small interface.

The live trader (`scalper.live`) talks to a broker only through `Broker`, so the built-in paper
broker (`scalper.brokers.paper`) and Interactive Brokers are interchangeable. Every order carries a
deterministic client order id, `SYMBOL-SESSION-SEQ`: the engine numbers its decisions per
session, so after a restart the same decision gets the same id, and the ledger and the broker both
recognise an order they have already seen instead of sending it twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from scalper.kafka.messages import Bar


def client_order_id(symbol: str, session: str, seq: int) -> str:
    """The order's id at the broker, e.g. `MES-2024-06-10-0003` (IB's `orderRef`)."""
    return f"{symbol}-{session}-{seq:04d}"


KILL_PREFIX = "KILL-"


def kill_ref(symbol: str, stamp_ns: int) -> str:
    """The id of a kill-switch flattening order, at IB (`orderRef`) and at the paper broker."""
    return f"{KILL_PREFIX}{symbol}-{stamp_ns}"


class OrderIntent(NamedTuple):
    """A market order the engine decided at a bar's close, for the next bar's open.

    The fields are the engine's order record plus the symbol and the client order id; the
    protective distances travel with the entry, as a bracket order does at a real broker.
    """

    client_order_id: str
    symbol: str
    session: str
    seq: int
    action: str  # BUY | SELL
    qty: int
    kind: str  # entry | exit
    reason: str | None  # the exit reason; None for entries
    bar_ts: int  # start of the bar at whose close it was decided
    decided_ts: int  # that close: bar_ts + bar_seconds
    stop_loss_ticks: int
    take_profit_ticks: int

    @classmethod
    def from_engine(cls, symbol: str, order: Mapping[str, Any]) -> OrderIntent:
        """The intent of an order dict returned by `Engine.on_bar` or `Engine.kill`."""
        return cls(client_order_id(symbol, order["session"], order["seq"]), symbol, **order)


class Fill(NamedTuple):
    """An execution reported by a broker; `ts` is the start of the bar in which it happened.

    `fill_id` is deterministic too: a market order's fill has the order's id, a stop or target
    fill is named after the entry it protects (`<entry id>-stop`), so a fill reported again
    after a restart is recognised by the ledger.
    """

    fill_id: str
    order_id: str
    symbol: str
    ts: int
    action: str  # BUY | SELL
    qty: int
    price: float
    kind: str  # entry | exit
    reason: str | None  # exit reason (signal, stop, target, ..., end_of_data); None for entries


class Broker(Protocol):
    """What the trader needs from a broker (the paper broker now, IBKR in issue 6).

    Fills are pulled per bar (`on_bar`) rather than pushed, because the engine must see the fills
    of a bar before it decides at that bar's close: that ordering is what makes the live path
    decide exactly as the backtest.
    """

    def submit(self, order: OrderIntent) -> bool:
        """Accept a market order (idempotent by client order id); False when refused."""
        ...

    def cancel(self, symbol: str) -> str | None:
        """Cancel the symbol's working order; returns its client order id, None if none works."""
        ...

    def on_bar(self, symbol: str, bar: Bar) -> list[Fill]:
        """The fills that happened during `bar`, in the order they happened."""
        ...

    def close_out(self, symbol: str, ts: int, price: float) -> Fill | None:
        """End of data: drop the working order and close the position at `price`."""
        ...

    def position(self, symbol: str) -> int:
        """Signed position in contracts, as the broker holds it."""
        ...
