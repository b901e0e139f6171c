"""A fake IB Gateway speaking the real TWS API socket protocol (see `gateway.py`).

Layout — one module per concern, so new capabilities arrive as new services, not rewrites:

* `protocol`  framing, message ids, field readers (server version 178);
* `session`   one client connection and the handler/service shapes;
* `gateway`   the TCP server: handshake, `startApi`, dispatch, request log, faults, lifecycle;
* `market`    listed contracts and their simulated bars;
* `contracts` contract resolution and `reqContractDetails`;
* `history`   `reqHistoricalData` with IB's limits; `pacing` IB's pacing rules (the oracle);
* `account`, `orders`  the connect-time synchronization (empty account and book for now).
"""

from tests.fakes.tws.gateway import FakeGateway, Received
from tests.fakes.tws.history import HistoricalRequest
from tests.fakes.tws.market import FakeMarket, Listing
from tests.fakes.tws.pacing import IB_PACING_RULES, PACING_VIOLATION, PacingRule, broken_rule
from tests.fakes.tws.protocol import In, Out

__all__ = [
    "IB_PACING_RULES",
    "PACING_VIOLATION",
    "FakeGateway",
    "FakeMarket",
    "HistoricalRequest",
    "In",
    "Listing",
    "Out",
    "PacingRule",
    "Received",
    "broken_rule",
]
