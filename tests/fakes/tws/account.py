"""The account side of the fake gateway: positions and account values.

ib_async synchronizes positions and account updates when it connects and waits for each
request's END message; the account is flat and holds no values yet, so each request is answered
by its END message alone. Issue 6 fills in positions (`position` / `updatePortfolio` before the
END messages) once the fake executes orders.
"""

from __future__ import annotations

from collections.abc import Mapping

from tests.fakes.tws.protocol import In, Out, Reader
from tests.fakes.tws.session import Handler, Session


class AccountService:
    """Answers position and account-value requests for one account."""

    def __init__(self, account: str) -> None:
        self.account = account

    def handlers(self) -> Mapping[int, Handler]:
        return {
            In.REQ_POSITIONS: self.positions,
            In.REQ_ACCOUNT_UPDATES: self.account_updates,
            In.REQ_ACCOUNT_UPDATES_MULTI: self.account_updates_multi,
            In.REQ_ACCOUNT_SUMMARY: self.account_summary,
        }

    def positions(self, session: Session, request: Reader) -> str:
        session.send(Out.POSITION_END, 1)
        return "no positions"

    def account_updates(self, session: Session, request: Reader) -> str:
        request.skip()  # version
        subscribe = request.bool()
        if subscribe:
            session.send(Out.ACCOUNT_DOWNLOAD_END, 1, self.account)
        return "subscribed" if subscribe else "unsubscribed"

    def account_updates_multi(self, session: Session, request: Reader) -> str:
        request.skip()  # version
        session.send(Out.ACCOUNT_UPDATE_MULTI_END, 1, request.int())
        return "no values"

    def account_summary(self, session: Session, request: Reader) -> str:
        request.skip()  # version
        session.send(Out.ACCOUNT_SUMMARY_END, 1, request.int())
        return "no values"
