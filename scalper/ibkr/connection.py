"""Connecting to IB Gateway / TWS with ib_async.

A gateway that is not running, listens on another port or has the API disabled is the most
common first-day problem, and ib_async reports it as a raw socket exception or a bare timeout.
`connect_async` turns every such failure into one `ScalperError` line naming the address and
what to check — including IB's error 326 (the client id is taken by another connection), which
ib_async only reports as a timeout.

A trading connection also checks what the gateway is logged into, not only the port it listens
on (a port number is a convention, IB Gateway can serve a live login on 4002): a live account
behind a paper-mode configuration, a paper login behind a live one, or a gateway that does not
serve `broker.account` is refused before any order can go out.

The account id is a secret: it is never logged or shown by this package, and
`hide_account_in_logs` keeps ib_async's own log lines (which print positions and orders with
their account) from showing it either.
"""

from __future__ import annotations

import asyncio
import logging

from ib_async import IB

from scalper.config import BrokerConfig, is_paper_account
from scalper.errors import ScalperError

CONNECT_TIMEOUT = 10.0
CLIENT_ID_IN_USE = 326
REDACTED = "***"
_IB_ASYNC_LOGGERS = ("ib_async.client", "ib_async.ib", "ib_async.wrapper", "ib_async.Decoder")
"""ib_async's loggers (a filter applies to its own logger only, not to propagated records)."""


async def connect_async(
    broker: BrokerConfig,
    *,
    client_id: int | None = None,
    readonly: bool = True,
    timeout: float = CONNECT_TIMEOUT,
) -> IB:
    """A connected `IB` for `broker.host:port`, or a `ScalperError` saying why not.

    `readonly` (the default) skips ib_async's open-order synchronization and can never place an
    order: what a data download wants. `client_id` defaults to `broker.client_id`; IB allows one
    connection per client id, so a download next to a running trader needs its own.
    """
    ib = IB()
    where = f"{broker.host}:{broker.port}"
    chosen = broker.client_id if client_id is None else client_id
    connecting = asyncio.ensure_future(
        ib.connectAsync(
            broker.host,
            broker.port,
            clientId=chosen,
            timeout=timeout,
            readonly=readonly,
            account=broker.account or "",
        )
    )
    codes: list[int] = []

    def on_error(req_id: int, code: int, text: str, contract: object) -> None:
        codes.append(code)
        if code == CLIENT_ID_IN_USE:  # IB closes the socket; ib_async would wait for a timeout
            connecting.cancel()

    ib.errorEvent += on_error
    try:
        await connecting
    except (TimeoutError, OSError, asyncio.CancelledError) as exc:  # ConnectionError: OSError
        ib.disconnect()
        if isinstance(exc, asyncio.CancelledError) and CLIENT_ID_IN_USE not in codes:
            raise  # our caller was cancelled
        reason = "client id in use" if CLIENT_ID_IN_USE in codes else _reason(exc)
        raise ScalperError(
            f"cannot connect to IB Gateway/TWS at {where} (client id {chosen}): {reason}; "
            "is it running, with the API enabled on that port and the client id free?"
        ) from None
    wrong = None if readonly else _served_account_problem(broker, ib.managedAccounts())
    if wrong:
        ib.disconnect()
        raise ScalperError(f"IB Gateway/TWS at {where} {wrong}; no order was sent")
    return ib


def _served_account_problem(broker: BrokerConfig, accounts: list[str]) -> str | None:
    """Why a trading connection must not use a gateway serving `accounts`, or None."""
    if broker.account and broker.account not in accounts:
        return "does not serve broker.account (it is logged into another account)"
    if not broker.is_live and not all(is_paper_account(a) for a in accounts):
        return "is logged into a live IB account but broker.mode is paper: orders would be real"
    if broker.is_live and all(is_paper_account(a) for a in accounts):
        return "is a paper-trading login but broker.mode is live: orders would not be real"
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class _AccountFilter(logging.Filter):
    """Rewrites log records that mention the account id (ib_async logs whole positions)."""

    def __init__(self, account: str) -> None:
        super().__init__()
        self.account = account

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.account in message:
            record.msg = message.replace(self.account, REDACTED)
            record.args = None
        return True


def hide_account_in_logs(account: str | None) -> None:
    """Redact `account` from every record ib_async logs (idempotent; a no-op without one)."""
    if not account:
        return
    for name in _IB_ASYNC_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _AccountFilter) and f.account == account for f in logger.filters):
            logger.addFilter(_AccountFilter(account))
