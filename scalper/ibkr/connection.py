"""Connecting to IB Gateway / TWS with ib_async.

A gateway that is not running, listens on another port or has the API disabled is the most
common first-day problem, and ib_async reports it as a raw socket exception or a bare timeout.
`connect_async` turns every such failure into one `ScalperError` line naming the address and
what to check. The account id the gateway reports is never logged or shown.
"""

from __future__ import annotations

from ib_async import IB

from scalper.config import BrokerConfig
from scalper.errors import ScalperError

CONNECT_TIMEOUT = 10.0


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
    try:
        await ib.connectAsync(
            broker.host, broker.port, clientId=chosen, timeout=timeout, readonly=readonly
        )
    except (TimeoutError, OSError) as exc:  # ConnectionError is an OSError
        ib.disconnect()
        raise ScalperError(
            f"cannot connect to IB Gateway/TWS at {where} (client id {chosen}): {_reason(exc)}; "
            "is it running, with the API enabled on that port and the client id free?"
        ) from None
    return ib


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
