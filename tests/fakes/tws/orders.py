"""The order side of the fake gateway: an order book that accepts, fills and reports orders.

What it models, as IB does for CME futures:

* `placeOrder` of market (`MKT`), stop (`STP`) and limit (`LMT`) orders, the `orderRef` a client
  tags them with, brackets (children with `parentId` are held until their parent fills; a
  bracket is transmitted by its last order's `transmit` flag) and OCA groups (a fill of one
  member cancels the others). Placing an existing order id again modifies the order.
* `cancelOrder` and `reqGlobalCancel`.
* Fills from the market, driven by the gateway clock (`match`): a market order fills at the open
  of the first bar starting at or after it began working, once the clock reaches that bar; a
  stop or limit fills within the first closed bar that reaches its price, at its price or at a
  better open (stops before limits within one bar, as the engine rules). Every execution books
  into the account (`Account`) and costs `commission` per contract.
* Scripted behaviour for tests: `hold_fills()` stops automatic fills so a test fills by hand
  (`fill`, with a quantity for partial fills), `reject_next` refuses the next new order.
* The connect-time replies: `reqOpenOrders` (this client's working orders), `reqCompletedOrders`
  (filled, cancelled and rejected orders), `reqExecutions` (every execution of the account with
  its commission report), so a client that reconnects sees everything that happened meanwhile.

Messages about an order go to the connection(s) of the client id that placed it, like IB's.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from tests.fakes.tws import order_messages as wire
from tests.fakes.tws.account import Account, AccountService
from tests.fakes.tws.contracts import NO_SECURITY_DEFINITION, ContractBook
from tests.fakes.tws.market import Listing, Tape
from tests.fakes.tws.protocol import In, Out, Reader
from tests.fakes.tws.session import Handler, Session

COMMISSION_PER_CONTRACT = 0.62
"""IB's all-in fee per MES contract and side (commission, exchange and regulatory fees)."""

FIRST_ORDER_ID = 1
FIRST_PERM_ID = 1_000_001
REJECTED = 201
CANCELLED = (202, "Order Canceled - reason:")
NOT_CANCELLABLE = 161
UNKNOWN_ORDER = 135
NOT_MODIFIABLE = 104
WORKING = frozenset({"PreSubmitted", "Submitted"})
_NS = 1_000_000_000

Clients = Callable[[int], list[Session]]
"""The open, started connections of a client id."""


@dataclass(eq=False)
class FakeOrder:
    """One order as the gateway holds it."""

    client_id: int
    order_id: int
    perm_id: int
    listing: Listing
    action: str
    quantity: int
    order_type: str
    limit_price: float | None
    stop_price: float | None
    tif: str
    oca_group: str
    oca_type: int
    account: str
    order_ref: str
    parent_id: int
    transmitted: bool
    status: str = "PreSubmitted"
    working_since_ns: int | None = None
    checked_ns: int = -1
    why_held: str = ""
    completed_status: str = ""
    completed_at: float = 0.0
    executions: list[Execution] = field(default_factory=list)

    @property
    def filled(self) -> int:
        return sum(e.shares for e in self.executions)

    @property
    def remaining(self) -> int:
        return 0 if self.done else self.quantity - self.filled

    @property
    def average_price(self) -> float:
        filled = self.filled
        return sum(e.shares * e.price for e in self.executions) / filled if filled else 0.0

    @property
    def done(self) -> bool:
        return self.status not in WORKING

    @property
    def working(self) -> bool:
        return not self.done and self.working_since_ns is not None

    @property
    def side(self) -> int:
        return 1 if self.action == "BUY" else -1


@dataclass(frozen=True)
class Execution:
    """One fill of (part of) an order."""

    exec_id: str
    order: FakeOrder
    at: float
    shares: int
    price: float
    cumulative: int
    average_price: float
    commission: float


class OrderService:
    """The order book and its messages; the `hold_fills`/`fill`/`reject_next` controls."""

    def __init__(
        self,
        contracts: ContractBook,
        account: Account,
        account_service: AccountService,
        clients: Clients,
        clock: Callable[[], float],
        timezone: str,
        commission: float = COMMISSION_PER_CONTRACT,
    ) -> None:
        self.contracts = contracts
        self.account = account
        self.account_service = account_service
        self.clients = clients
        self.clock = clock
        self.zone = ZoneInfo(timezone)
        self.commission = commission
        self.orders: dict[tuple[int, int], FakeOrder] = {}
        self.placed: list[FakeOrder] = []
        self.executions: list[Execution] = []
        self.automatic = True
        self._rejections: deque[str] = deque()
        self._perm_ids = itertools.count(FIRST_PERM_ID)

    def handlers(self) -> Mapping[int, Handler]:
        return {
            In.PLACE_ORDER: self.place_order,
            In.CANCEL_ORDER: self.cancel_order,
            In.REQ_GLOBAL_CANCEL: self.global_cancel,
            In.REQ_OPEN_ORDERS: self.open_orders,
            In.REQ_AUTO_OPEN_ORDERS: self.auto_open_orders,
            In.REQ_ALL_OPEN_ORDERS: self.all_open_orders,
            In.REQ_COMPLETED_ORDERS: self.completed_orders,
            In.REQ_EXECUTIONS: self.execution_history,
        }

    # -----------------------------------------------------------------------------------------
    # Test controls (called in the gateway's loop)

    def hold_fills(self, held: bool = True) -> None:
        """Stop (or restart) filling from the market: orders rest until `fill` is called."""
        self.automatic = not held

    def reject_next(self, reason: str = "Margin requirement not met") -> None:
        """Refuse the next new order with error 201 and this reason."""
        self._rejections.append(reason)

    def fill(self, order_ref: str, quantity: int | None = None, price: float | None = None) -> None:
        """Execute (part of) the working order tagged `order_ref`, at `price` or the market."""
        order = next((o for o in self.placed if o.order_ref == order_ref and o.working), None)
        if order is None:
            raise LookupError(f"no working order with orderRef {order_ref!r}")
        now_ns = int(self.clock() * _NS)
        at_price = price if price is not None else self._market_price(order.listing, now_ns)
        self._execute(order, quantity or order.remaining, at_price, self.clock())

    def match(self) -> None:
        """Fill what the market reached by now (automatic mode only)."""
        if not self.automatic:
            return
        now_ns = int(self.clock() * _NS)
        for order in [o for o in self.placed if o.working and o.order_type == "MKT"]:
            self._fill_market(order, now_ns)
        self._fill_resting(now_ns)

    def refs(self) -> list[str]:
        """The `orderRef` of every new order received, in order (repeats are duplicates)."""
        return [order.order_ref for order in self.placed]

    # -----------------------------------------------------------------------------------------
    # Placing, modifying, cancelling

    def place_order(self, session: Session, request: Reader) -> str:
        assert session.client_id is not None
        order_id = request.int()
        listing = self.contracts.listing(request.contract())
        request.skip(2)  # secIdType, secId
        if listing is None:
            return session.error(order_id, *NO_SECURITY_DEFINITION)
        order = self._read_order(session.client_id, order_id, listing, request)
        existing = self.orders.get((session.client_id, order_id))
        if existing is not None:
            return self._modify(session, existing, order)
        self.orders[(order.client_id, order_id)] = order
        self.placed.append(order)
        if self._rejections:
            return self._reject(session, order, self._rejections.popleft())
        if self._group_filled(order):
            return self._reject(session, order, "its OCA group has already been filled")
        self._transmit(order)
        self.match()
        return f"order {order_id} {order.order_ref!r}: {order.status}"

    def _read_order(
        self, client_id: int, order_id: int, listing: Listing, request: Reader
    ) -> FakeOrder:
        """The fields of ib_async's `Client.placeOrder` the fake uses, in wire order."""
        action, quantity, order_type = request.text(), int(request.float() or 0), request.text()
        limit_price, stop_price, tif = request.float(), request.float(), request.text()
        oca_group, account = request.text(), request.text()
        request.skip(2)  # openClose, origin
        order_ref, transmit, parent_id = request.text(), request.bool(), request.int()
        request.skip(17)  # blockOrder .. exemptCode
        return FakeOrder(
            client_id, order_id, next(self._perm_ids), listing, action, quantity, order_type,
            limit_price, stop_price, tif, oca_group, request.int(), account, order_ref,
            parent_id, transmitted=transmit,
        )  # fmt: skip

    def _modify(self, session: Session, order: FakeOrder, change: FakeOrder) -> str:
        if order.done:
            return session.error(order.order_id, NOT_MODIFIABLE, "Can't modify a filled order")
        order.quantity = change.quantity
        order.limit_price = change.limit_price
        order.stop_price = change.stop_price
        self._report(order)
        self.match()
        return f"order {order.order_id} modified"

    def _reject(self, session: Session, order: FakeOrder, reason: str) -> str:
        """IB answers a rejected order with error 201 alone (no order status)."""
        self._close(order, "Cancelled", f"Rejected: {reason}")
        return session.error(order.order_id, REJECTED, f"Order rejected - reason:{reason}")

    def _group_filled(self, order: FakeOrder) -> bool:
        """IB refuses a new order into an OCA group one of whose orders already filled."""
        return bool(order.oca_group) and any(
            o.oca_group == order.oca_group and o.status == "Filled" for o in self.placed
        )

    def _transmit(self, order: FakeOrder) -> None:
        """Send the order, and its held bracket, to the market (or keep it staged)."""
        if not order.transmitted:
            self._report(order)
            return
        family = order.parent_id or order.order_id
        for member in self._bracket(order.client_id, family):
            member.transmitted = True
            self._activate(member)

    def _bracket(self, client_id: int, parent_id: int) -> list[FakeOrder]:
        return [
            o
            for o in self.placed
            if o.client_id == client_id and parent_id in (o.order_id, o.parent_id) and not o.done
        ]

    def _activate(self, order: FakeOrder, since_ns: int | None = None) -> None:
        parent = self.orders.get((order.client_id, order.parent_id)) if order.parent_id else None
        if parent is not None and parent.done and parent.status != "Filled":
            self._complete(order, "Cancelled", "Cancelled with its parent")
            return
        if parent is None or parent.status == "Filled":
            order.status = "Submitted"
            order.working_since_ns = since_ns if since_ns is not None else self._now_ns()
        self._report(order)

    def cancel_order(self, session: Session, request: Reader) -> str:
        assert session.client_id is not None
        request.skip()  # version
        order_id = request.int()
        order = self.orders.get((session.client_id, order_id))
        if order is None:
            return session.error(order_id, UNKNOWN_ORDER, f"Can't find order with id ={order_id}")
        if order.done:
            text = f"Cancel attempted when order is not in a cancellable state ({order.status})"
            return session.error(order_id, NOT_CANCELLABLE, text)
        self._cancel(order)
        return f"order {order_id} cancelled"

    def global_cancel(self, session: Session, request: Reader) -> str:
        live = [o for o in self.placed if not o.done]
        for order in live:
            if not order.done:  # a parent's cancel took its children along
                self._cancel(order)
        return f"{len(live)} orders cancelled"

    def _cancel(self, order: FakeOrder) -> None:
        self._complete(order, "Cancelled", "Cancelled by Trader")
        for session in self.clients(order.client_id):
            session.error(order.order_id, *CANCELLED)
        for child in self._children(order):
            self._cancel(child)

    def _children(self, order: FakeOrder) -> list[FakeOrder]:
        return [
            o
            for o in self.placed
            if o.client_id == order.client_id and o.parent_id == order.order_id and not o.done
        ]

    def _complete(self, order: FakeOrder, status: str, completed: str) -> None:
        self._close(order, status, completed)
        self._report(order)

    def _close(self, order: FakeOrder, status: str, completed: str) -> None:
        order.status = status
        order.completed_status = completed
        order.completed_at = self.clock()

    def _report(self, order: FakeOrder) -> None:
        for session in self.clients(order.client_id):
            session.send(*wire.open_order(order))
            session.send(*wire.order_status(order))

    # -----------------------------------------------------------------------------------------
    # Fills

    def _fill_market(self, order: FakeOrder, now_ns: int) -> None:
        assert order.working_since_ns is not None
        tape = self.contracts.market.tape(order.listing)
        bars = tape.starting(order.working_since_ns, now_ns)
        if bars:
            first = bars[0]
            self._execute(order, order.remaining, float(tape.open[first]), tape.ts[first] / _NS)

    def _fill_resting(self, now_ns: int) -> None:
        """Stops and limits against the closed bars since each was last checked."""
        resting = [o for o in self.placed if o.working and o.order_type in ("STP", "LMT")]
        resting.sort(key=lambda o: o.order_type != "STP")  # within one bar, stops come first
        for listing in {o.listing for o in resting}:
            tape = self.contracts.market.tape(listing)
            mine = [o for o in resting if o.listing is listing]
            first = min(max(o.working_since_ns or 0, o.checked_ns + 1) for o in mine)
            for i in tape.starting(first, now_ns - tape.bar_seconds * _NS):
                for order in mine:
                    self._check(order, tape, i)

    def _check(self, order: FakeOrder, tape: Tape, i: int) -> None:
        ts = int(tape.ts[i])
        if not order.working or ts < (order.working_since_ns or 0) or ts <= order.checked_ns:
            return
        order.checked_ns = ts
        price = _touched(order, float(tape.open[i]), float(tape.high[i]), float(tape.low[i]))
        if price is not None:
            self._execute(order, order.remaining, price, ts / _NS)

    def _execute(self, order: FakeOrder, shares: int, price: float, at: float) -> None:
        shares = min(shares, order.remaining)
        cumulative = order.filled + shares
        average = (order.filled * order.average_price + shares * price) / cumulative
        exec_id = f"0000{order.perm_id:x}.{len(self.executions) + 1:08x}.01.01"
        commission = round(self.commission * shares, 2)
        execution = Execution(exec_id, order, at, shares, price, cumulative, average, commission)
        order.executions.append(execution)
        self.executions.append(execution)
        if order.remaining == 0:
            order.status = "Filled"
            order.completed_status = "Filled"
            order.completed_at = at
        holding = self.account.apply(order.listing, order.side * shares, price, commission)
        for session in self.clients(order.client_id):
            session.send(*wire.execution_details(-1, execution, self._time_text(at)))
            session.send(*wire.order_status(order))
            session.send(*wire.commission_report(execution))
        self.account_service.on_execution(holding)
        if order.status == "Filled":
            self._after_fill(order, int(at * _NS))

    def _after_fill(self, order: FakeOrder, at_ns: int) -> None:
        """A filled parent releases its children; a filled OCA member cancels its group."""
        for child in self._children(order):
            self._activate(child, since_ns=at_ns)
        if order.oca_group:
            for other in self.placed:
                if other.oca_group == order.oca_group and other is not order and not other.done:
                    self._complete(other, "Cancelled", "Cancelled by OCA group")

    def _market_price(self, listing: Listing, now_ns: int) -> float:
        """The open of the bar in progress at `now_ns` (the last close when the market is shut)."""
        tape = self.contracts.market.tape(listing)
        bars = tape.starting(now_ns - tape.bar_seconds * _NS + 1, now_ns)
        if bars:
            return float(tape.open[bars[0]])
        earlier = tape.starting(0, now_ns)
        return float(tape.close[earlier[-1]]) if earlier else 0.0

    # -----------------------------------------------------------------------------------------
    # The connect-time replies

    def next_order_id(self, client_id: int) -> int:
        """Past every order id this client has used, as IB's `nextValidId` is."""
        used = [order_id for (client, order_id) in self.orders if client == client_id]
        return max(used, default=FIRST_ORDER_ID - 1) + 1

    def open_orders(self, session: Session, request: Reader) -> str:
        return self._send_open(
            session, [o for o in self.placed if o.client_id == session.client_id]
        )

    def all_open_orders(self, session: Session, request: Reader) -> str:
        """Every client's working orders (the orders of other clients are not kept in sync)."""
        return self._send_open(session, self.placed)

    def _send_open(self, session: Session, orders: list[FakeOrder]) -> str:
        live = [o for o in orders if not o.done]
        for order in live:
            session.send(*wire.open_order(order))
            session.send(*wire.order_status(order))
        session.send(Out.OPEN_ORDER_END, 1)
        return f"{len(live)} open orders"

    def auto_open_orders(self, session: Session, request: Reader) -> str:
        return "bound"  # client 0 adopts manual TWS orders; there are none

    def completed_orders(self, session: Session, request: Reader) -> str:
        done = [o for o in self.placed if o.done]
        for order in done:
            session.send(*wire.completed_order(order, self._time_text(order.completed_at)))
        session.send(Out.COMPLETED_ORDERS_END)
        return f"{len(done)} completed orders"

    def execution_history(self, session: Session, request: Reader) -> str:
        request.skip()  # version
        req_id, client_filter = request.int(), request.int()
        chosen = [e for e in self.executions if client_filter in (0, e.order.client_id)]
        for execution in chosen:
            session.send(*wire.execution_details(req_id, execution, self._time_text(execution.at)))
            session.send(*wire.commission_report(execution))
        session.send(Out.EXECUTION_DATA_END, 1, req_id)
        return f"{len(chosen)} executions"

    # -----------------------------------------------------------------------------------------

    def _now_ns(self) -> int:
        return int(self.clock() * _NS)

    def _time_text(self, at: float) -> str:
        local = datetime.fromtimestamp(at, UTC).astimezone(self.zone)
        return f"{local:%Y%m%d %H:%M:%S} {self.zone.key}"


def _touched(order: FakeOrder, open_: float, high: float, low: float) -> float | None:
    """The fill price of a stop or limit within one bar, or None when the bar misses it."""
    if order.order_type == "STP":
        stop = order.stop_price or 0.0
        if order.side > 0:
            return max(open_, stop) if high >= stop else None
        return min(open_, stop) if low <= stop else None
    limit = order.limit_price or 0.0
    if order.side > 0:
        return min(open_, limit) if low <= limit else None
    return max(open_, limit) if high >= limit else None
