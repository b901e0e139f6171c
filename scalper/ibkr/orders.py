"""From the engine's order intents to IB orders, and from IB executions back to the engine's fills.

The pure half of the IBKR adapter (`adapter.py` is the other), kept free of connections so the
rules are plain to read and test:

* **Names.** Every IB order carries a name in `orderRef`, the only field IB keeps for us across
  connections and client ids: the intent's client order id (`MES-2024-06-10-0003`) for the
  engine's market orders, `<entry id>-stop` / `<entry id>-target` for the protective orders of
  an entry, and `KILL-<symbol>-<ns>` for the kill switch's flattening orders. Reconciliation
  matches IB's records to ours by these names alone. The fill of a protective order is named
  like the paper broker names it, so the ledger sees one naming whatever the broker.
* **Brackets.** An entry with a stop and/or target is a bracket: the market parent, then the
  stop and target as children in one OCA group (one filled cancels the other), the last one
  transmitting the whole. The children are priced from the decision bar's close, because the
  fill price is not known yet, and moved to the engine's exact levels (fill ∓ stop ticks,
  fill ± target ticks, SPEC §4) once the parent has filled.
* **Exits** of a protected position join its OCA group, so IB cancels the stop and target when
  the exit fills (and the exit, should the stop fill first).
* **Fills.** IB may fill an order in parts; the engine takes one fill per order, so the parts
  are summed into one with the average price and the total commission.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ib_async import LimitOrder, MarketOrder, Order, StopOrder

from scalper.brokers import KILL_PREFIX, Fill, OrderIntent

Role = Literal["order", "stop", "target", "kill"]
PROTECTIVE: tuple[Role, ...] = ("stop", "target")
TIME_IN_FORCE = "DAY"  # an order never outlives the session it was decided in


def child_ref(entry_id: str, role: Role) -> str:
    """The `orderRef` of an entry's stop or target."""
    return f"{entry_id}-{role}"


def parse_ref(ref: str) -> tuple[str, Role]:
    """(the engine order a ref belongs to, its role): `MES-...-0003-stop` → (`MES-...-0003`,
    `stop`); a kill ref is its own order."""
    if ref.startswith(KILL_PREFIX):
        return ref, "kill"
    for role in PROTECTIVE:
        if ref.endswith(f"-{role}"):
            return ref[: -len(role) - 1], role
    return ref, "order"


def ref_symbol(ref: str) -> str:
    """The symbol a ref trades (`MES-2024-...` and `KILL-MES-...` → `MES`)."""
    return ref.removeprefix(KILL_PREFIX).split("-", 1)[0]


def oca_group(entry_id: str) -> str:
    return f"OCA-{entry_id}"


def protective_prices(
    action: str, fill_price: float, intent: OrderIntent, tick_size: float
) -> dict[Role, float]:
    """The engine's stop and target levels for an entry filled at `fill_price` (SPEC §4.2)."""
    side = 1 if action == "BUY" else -1
    levels: dict[Role, float] = {}
    if intent.stop_loss_ticks:
        levels["stop"] = fill_price - side * intent.stop_loss_ticks * tick_size
    if intent.take_profit_ticks:
        levels["target"] = fill_price + side * intent.take_profit_ticks * tick_size
    return levels


def opposite(action: str) -> str:
    return "SELL" if action == "BUY" else "BUY"


def entry_orders(
    intent: OrderIntent,
    reference_price: float,
    tick_size: float,
    next_id: Callable[[], int],
    account: str = "",
) -> list[tuple[Role, Order]]:
    """The orders of an entry in sending order: the market parent, then its protective children
    priced from `reference_price`; only the last one transmits."""
    parent = MarketOrder(
        intent.action, intent.qty, orderRef=intent.client_order_id, tif=TIME_IN_FORCE,
        account=account, orderId=next_id(),
    )  # fmt: skip
    levels = protective_prices(intent.action, reference_price, intent, tick_size)
    orders: list[tuple[Role, Order]] = [("order", parent)]
    for role, price in levels.items():
        child = _protective(role, opposite(intent.action), intent.qty, price)
        child.orderRef = child_ref(intent.client_order_id, role)
        child.parentId = parent.orderId
        child.ocaGroup, child.ocaType = oca_group(intent.client_order_id), 1
        child.tif, child.account, child.orderId = "GTC", account, next_id()
        orders.append((role, child))
    for _, order in orders:
        order.transmit = order is orders[-1][1]
    return orders


def _protective(role: Role, action: str, qty: int, price: float) -> Order:
    if role == "stop":
        return StopOrder(action, qty, price)
    return LimitOrder(action, qty, price)


def exit_order(intent: OrderIntent, group: str | None, account: str = "") -> Order:
    """A market exit; with `group`, a member of the protected position's OCA group."""
    order = MarketOrder(
        intent.action, intent.qty, orderRef=intent.client_order_id, tif=TIME_IN_FORCE,
        account=account,
    )  # fmt: skip
    if group:
        order.ocaGroup, order.ocaType = group, 1
    return order


def reprice(order: Order, role: Role, price: float) -> bool:
    """Move a stop or target to `price`; False when it is there already."""
    current = order.auxPrice if role == "stop" else order.lmtPrice
    if abs(current - price) < 1e-9:
        return False
    if role == "stop":
        order.auxPrice = price
    else:
        order.lmtPrice = price
    return True


@dataclass(frozen=True)
class Execution:
    """One IB execution of one of our orders."""

    exec_id: str
    ref: str
    action: str
    shares: int
    price: float
    ts: int  # ns, IB's execution time
    commission: float | None = None


@dataclass
class OrderFills:
    """The executions of one IB order, summed into the engine's single fill.

    `kind` and `reason` are what the fill means to the engine: an engine order's own (entry, or
    exit with its reason), `exit`/`stop` for a stop, `exit`/`kill` for a kill-switch order.
    """

    ref: str
    symbol: str
    action: str
    quantity: int
    kind: str
    reason: str | None
    executions: dict[str, Execution] = field(default_factory=dict)

    @classmethod
    def for_intent(cls, intent: OrderIntent) -> OrderFills:
        return cls(
            intent.client_order_id, intent.symbol, intent.action, intent.qty, intent.kind,
            intent.reason,
        )  # fmt: skip

    @classmethod
    def for_ib_order(cls, ref: str, action: str, quantity: int) -> OrderFills:
        """An order we did not decide ourselves: a protective child or a kill-switch order."""
        _, role = parse_ref(ref)
        reason = "kill" if role == "kill" else role
        return cls(ref, ref_symbol(ref), action, quantity, "exit", reason)

    def add(self, execution: Execution) -> bool:
        """Record an execution; True when it is new (again, it only brings its commission)."""
        known = self.executions.get(execution.exec_id)
        if known is None or execution.commission is not None:
            self.executions[execution.exec_id] = execution
        return known is None

    def commission(self, exec_id: str, amount: float) -> None:
        known = self.executions.get(exec_id)
        if known is not None:
            self.executions[exec_id] = Execution(
                known.exec_id, known.ref, known.action, known.shares, known.price, known.ts,
                amount,
            )  # fmt: skip

    @property
    def filled(self) -> int:
        return sum(e.shares for e in self.executions.values())

    @property
    def complete(self) -> bool:
        """All shares executed and every commission known."""
        return self.filled >= self.quantity and all(
            e.commission is not None for e in self.executions.values()
        )

    @property
    def average_price(self) -> float:
        filled = self.filled
        return sum(e.shares * e.price for e in self.executions.values()) / filled

    @property
    def total_commission(self) -> float:
        return sum(e.commission or 0.0 for e in self.executions.values())

    @property
    def last_ts(self) -> int:
        return max(e.ts for e in self.executions.values())

    def as_fill(self, ts: int) -> Fill:
        """The engine's fill, stamped with the start `ts` of the bar that reports it; a stop or
        target fill belongs to the entry it protects (`order_id`), as at the paper broker."""
        order_id, _ = parse_ref(self.ref)
        return Fill(
            self.ref, order_id, self.symbol, ts, self.action, self.filled, self.average_price,
            self.kind, self.reason,
        )  # fmt: skip
