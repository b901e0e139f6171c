"""The account side of the fake gateway: positions and account values, kept from executions.

ib_async synchronizes positions and account updates when it connects and waits for each
request's END message. The fake keeps one account whose holdings change only through the order
book's executions (`Account.apply`), so what a client reads back is exactly what it traded —
the basis of every reconciliation test. Like IB, the gateway keeps pushing `position` messages
to the clients that asked for positions, and account values to those subscribed to account
updates, whenever an execution changes them.

A futures position's `avgCost` is, as at IB, the average price times the multiplier.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from scalper.instruments import spec
from tests.fakes.tws.contracts import contract_fields
from tests.fakes.tws.market import Listing
from tests.fakes.tws.protocol import In, Out, Reader
from tests.fakes.tws.session import Handler, Session

STARTING_CASH = 100_000.0
CURRENCY = "USD"


@dataclass
class Holding:
    """One contract's position: signed quantity, average price, realized P&L (after fees)."""

    listing: Listing
    position: int = 0
    average_price: float = 0.0
    realized: float = 0.0

    @property
    def multiplier(self) -> float:
        return spec(self.listing.contract.symbol).point_value

    def apply(self, quantity: int, price: float, commission: float) -> None:
        """Book an execution of `quantity` contracts (positive buys) at `price`."""
        self.realized -= commission
        closing = min(abs(quantity), abs(self.position)) if quantity * self.position < 0 else 0
        if closing:
            side = 1 if self.position > 0 else -1
            self.realized += side * (price - self.average_price) * closing * self.multiplier
        opening = abs(quantity) - closing
        new_position = self.position + quantity
        if opening:
            held = abs(self.position) - closing
            self.average_price = (held * self.average_price + opening * price) / (held + opening)
        elif new_position == 0:
            self.average_price = 0.0
        self.position = new_position


class Account:
    """The account's holdings and values; changed only by `apply`."""

    def __init__(self, name: str, starting_cash: float = STARTING_CASH) -> None:
        self.name = name
        self.starting_cash = starting_cash
        self.holdings: dict[int, Holding] = {}

    def apply(self, listing: Listing, quantity: int, price: float, commission: float) -> Holding:
        holding = self.holdings.setdefault(listing.con_id, Holding(listing))
        holding.apply(quantity, price, commission)
        return holding

    def position(self, local_symbol: str) -> int:
        """The signed position in one contract (0 when never traded)."""
        return sum(
            h.position for h in self.holdings.values() if h.listing.local_symbol == local_symbol
        )

    @property
    def realized(self) -> float:
        return sum(h.realized for h in self.holdings.values())

    def values(self) -> list[tuple[str, float]]:
        """(tag, value) of the account values the fake reports, in USD."""
        cash = self.starting_cash + self.realized
        return [("NetLiquidation", cash), ("TotalCashValue", cash), ("RealizedPnL", self.realized)]


class AccountService:
    """Answers position and account-value requests, and pushes changes to subscribers."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self._position_subscribers: set[Session] = set()
        self._value_subscribers: set[Session] = set()

    def handlers(self) -> Mapping[int, Handler]:
        return {
            In.REQ_POSITIONS: self.positions,
            In.REQ_ACCOUNT_UPDATES: self.account_updates,
            In.REQ_ACCOUNT_UPDATES_MULTI: self.account_updates_multi,
            In.REQ_ACCOUNT_SUMMARY: self.account_summary,
        }

    def positions(self, session: Session, request: Reader) -> str:
        self._position_subscribers.add(session)
        held = [h for h in self.account.holdings.values() if h.position]
        for holding in held:
            self._send_position(session, holding)
        session.send(Out.POSITION_END, 1)
        return f"{len(held)} positions"

    def account_updates(self, session: Session, request: Reader) -> str:
        request.skip()  # version
        subscribe = request.bool()
        if not subscribe:
            self._value_subscribers.discard(session)
            return "unsubscribed"
        self._value_subscribers.add(session)
        self._send_values(session)
        session.send(Out.ACCOUNT_DOWNLOAD_END, 1, self.account.name)
        return "subscribed"

    def account_updates_multi(self, session: Session, request: Reader) -> str:
        request.skip()  # version
        session.send(Out.ACCOUNT_UPDATE_MULTI_END, 1, request.int())
        return "no values"

    def account_summary(self, session: Session, request: Reader) -> str:
        request.skip()  # version
        session.send(Out.ACCOUNT_SUMMARY_END, 1, request.int())
        return "no values"

    def on_execution(self, holding: Holding) -> None:
        """Push the changed position and values to the clients subscribed to them."""
        for session in _open(self._position_subscribers):
            self._send_position(session, holding)
        for session in _open(self._value_subscribers):
            self._send_values(session)

    def _send_position(self, session: Session, holding: Holding) -> None:
        fields = contract_fields(holding.listing)
        avg_cost = holding.average_price * holding.multiplier
        session.send(Out.POSITION_DATA, 3, self.account.name, *fields, holding.position, avg_cost)

    def _send_values(self, session: Session) -> None:
        for tag, value in self.account.values():
            session.send(Out.ACCOUNT_VALUE, 2, tag, f"{value:.2f}", CURRENCY, self.account.name)


def _open(sessions: set[Session]) -> list[Session]:
    """The still-connected sessions of a subscriber set (closed ones are forgotten)."""
    closed = {s for s in sessions if s.closed}
    sessions -= closed
    return list(sessions)
