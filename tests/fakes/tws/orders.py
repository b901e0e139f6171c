"""The order side of the fake gateway: open orders, completed orders and executions.

ib_async requests all three when it connects (executions after the orders) and waits for each
END message. The book is empty until issue 6 teaches the fake to accept, fill and report orders;
these handlers are where that state will be reported from.
"""

from __future__ import annotations

from collections.abc import Mapping

from tests.fakes.tws.protocol import In, Out, Reader
from tests.fakes.tws.session import Handler, Session


class OrderService:
    """Answers order and execution queries (an empty book for now)."""

    def handlers(self) -> Mapping[int, Handler]:
        return {
            In.REQ_OPEN_ORDERS: self.open_orders,
            In.REQ_AUTO_OPEN_ORDERS: self.auto_open_orders,
            In.REQ_COMPLETED_ORDERS: self.completed_orders,
            In.REQ_EXECUTIONS: self.executions,
        }

    def open_orders(self, session: Session, request: Reader) -> str:
        session.send(Out.OPEN_ORDER_END, 1)
        return "no open orders"

    def auto_open_orders(self, session: Session, request: Reader) -> str:
        return "bound"  # client 0 adopts manual TWS orders; there are none

    def completed_orders(self, session: Session, request: Reader) -> str:
        session.send(Out.COMPLETED_ORDERS_END)
        return "no completed orders"

    def executions(self, session: Session, request: Reader) -> str:
        request.skip()  # version
        session.send(Out.EXECUTION_DATA_END, 1, request.int())
        return "no executions"
