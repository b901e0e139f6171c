"""A fake IB Gateway speaking the real TWS API socket protocol (see `gateway.py`).

Layout — one module per concern, so new capabilities arrive as new services, not rewrites:

* `protocol`  framing, message ids, field readers (server version 178);
* `session`   one client connection and the handler/service shapes;
* `gateway`   the TCP server: handshake, `startApi` (one connection per client id), dispatch,
  request log, the clock's `tick`, scripted faults (drops, refused connections, IB's
  connectivity notices), lifecycle;
* `market`    listed contracts and their simulated bars (`Tape`: a contract's bars as arrays);
* `contracts` contract resolution and `reqContractDetails`;
* `history`   `reqHistoricalData` with IB's limits; `pacing` IB's pacing rules (the oracle);
* `orders`    the order book: market, stop, limit, brackets, OCA, fills from the market or by
  hand, rejections, and the open/completed orders and executions replayed at connect;
  `order_messages` the field layouts of the order messages;
* `account`   positions and account values, kept from executions;
* `realtime`  `reqRealTimeBars`: 5-second bars pushed as the clock advances.
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
