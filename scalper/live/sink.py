"""The risk-gated order sink: the last gate between a decision and the broker.

Three jobs, all about money:

- **Exactly once.** The intent is recorded in the ledger under its client order id in the same
  transaction that hands it to the broker. An intent the ledger already knows (the engine
  deciding it again while the worker replays input after a crash) is not sent again; the sink
  answers with the decision it took the first time, so the replayed engine continues exactly as
  the original one did.
- **An independent check.** The engine's risk gate decided the entry, but a bug there, or a
  state restored wrongly, must not open a position. The sink checks entries against what the
  ledger knows independently of the engine: the halted flag, an order still working, and the
  position from recorded fills against the configured size. Exits are never blocked: refusing
  to close a position never reduces risk.
- **No entry on an old decision.** A live worker that restarts after an outage catches up on
  the bars published meanwhile: they are live bars (their age is judged when Kafka took them,
  see `scalper.live.trader`), but a position opened now on a decision taken at a close minutes
  ago would trade a market that has moved on. So an entry decided longer ago than
  `stream.max_bar_age_seconds` by the wall clock is refused. The refusal is recorded like any
  other, so a crash-resume that decides the intent again gets the same answer from the ledger.
"""

from __future__ import annotations

import sqlite3
from time import time_ns
from typing import NamedTuple

from scalper.bars import iso_utc
from scalper.brokers import Broker, OrderIntent
from scalper.ledger import ACCEPTED_STATUSES, Ledger

_IDENTITY = ("action", "qty", "kind", "reason", "bar_ts")


class Decision(NamedTuple):
    """What became of an intent: `accepted` by the broker or not, and why."""

    accepted: bool
    status: str  # sent | refused | rejected, or for a replayed intent its recorded status
    detail: str | None = None
    replayed: bool = False  # the ledger knew the intent: nothing was sent this time


class OrderSink:
    """Sends the engine's orders to `broker`, at most once each, entries only within limits."""

    def __init__(
        self, ledger: Ledger, broker: Broker, max_position: int, max_decision_age_seconds: int = 0
    ) -> None:
        """`max_decision_age_seconds`: entries decided longer ago are refused (0: no limit, for
        a replay, whose clock is the bars')."""
        self._ledger = ledger
        self._broker = broker
        self._max_position = max_position
        self._max_age_ns = max_decision_age_seconds * 1_000_000_000

    def submit(self, order: OrderIntent) -> Decision:
        with self._ledger.transaction():
            known = self._ledger.order(order.client_order_id)
            if known is not None:
                return _replayed(order, known)
            refusal = None if order.kind == "exit" else self._entry_refusal(order)
            if refusal is not None:
                self._ledger.record_order(order, "refused", refusal)
                return Decision(False, "refused", refusal)
            self._ledger.record_order(order, "sent", sent=True)
            if self._broker.submit(order):
                return Decision(True, "sent")
            detail = "the broker refused the order"
            self._ledger.set_order_status(order.client_order_id, "rejected", detail)
            return Decision(False, "rejected", detail)

    def _entry_refusal(self, order: OrderIntent) -> str | None:
        """Why the ledger forbids this entry, or None."""
        halt = self._ledger.halt_reason(order.symbol)
        if halt is not None:
            return f"{order.symbol} is halted: {halt}"
        working = self._ledger.working_order(order.symbol)
        if working is not None:
            return f"order {working} is still working"
        position = self._ledger.position(order.symbol)
        if position != 0:
            return f"entry while the ledger holds {position:+d} contract(s)"
        if order.qty > self._max_position:
            return f"{order.qty} contracts exceed the position limit of {self._max_position}"
        age = time_ns() - order.decided_ts
        if self._max_age_ns and age > self._max_age_ns:
            return (
                f"stale: decided at {iso_utc(order.decided_ts)}, {age // 1_000_000_000:,} s ago, "
                f"beyond stream.max_bar_age_seconds = {self._max_age_ns // 1_000_000_000}"
            )
        return None


def _replayed(order: OrderIntent, known: sqlite3.Row) -> Decision:
    """The first decision on an intent decided again, unless the id now names another order
    (the replay diverged: never send under a used id)."""
    if any(known[name] != getattr(order, name) for name in _IDENTITY):
        detail = f"client order id {order.client_order_id} already names a different order"
        return Decision(False, "refused", detail)
    status = str(known["status"])
    return Decision(status in ACCEPTED_STATUSES, status, known["detail"], replayed=True)
