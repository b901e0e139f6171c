"""IB's connectivity notices as a state: may the trader enter a new position right now?

IB Gateway reports the health of its links as error messages with request id -1: its link to
IB's servers (1100 lost, 1101 restored with market data subscriptions lost, 1102 restored with
them kept, 2110 broken from the server side) and to its data farms (2103/2104/2108/2119 market
data, 2105/2106/2107 historical data, 2157/2158 security definitions). Add to that the API
socket between this process and the gateway. An entry needs every link it depends on: orders
must reach the exchange (socket and server link up) and the price that triggered the signal must
be live (market data farm up); exits are never blocked here, they wait in the adapter until the
order link is back.

This module is the functional core: `Connectivity.apply(code)` is pure state-keeping, so the
rules are tested without a gateway, and `scalper status` shows the same state the adapter uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

Link = Literal["api", "ib_servers", "market_data", "historical_data", "security_definitions"]

# code → (link, up?)
NOTICES: dict[int, tuple[Link, bool]] = {
    1100: ("ib_servers", False),
    1101: ("ib_servers", True),
    1102: ("ib_servers", True),
    1300: ("api", False),  # the gateway's API port was reset: the socket is gone
    2103: ("market_data", False),
    2104: ("market_data", True),
    2108: ("market_data", True),  # inactive, available on demand: not a problem
    2119: ("market_data", False),  # "market data farm is connecting"
    2105: ("historical_data", False),
    2106: ("historical_data", True),
    2107: ("historical_data", True),
    2110: ("ib_servers", False),
    2157: ("security_definitions", False),
    2158: ("security_definitions", True),
}
DATA_LOST = 1101
"""Restored, but every market data subscription is gone and must be requested again."""


@dataclass(frozen=True)
class Connectivity:
    """Which links are up. A fresh state has no API connection and assumes the rest healthy
    (IB only reports farms that change or are checked at connect)."""

    api: bool = False
    ib_servers: bool = True
    market_data: bool = True
    historical_data: bool = True
    security_definitions: bool = True

    def apply(self, code: int) -> Connectivity:
        """The state after IB's notice `code` (unchanged for codes that are not notices)."""
        if code not in NOTICES:
            return self
        link, up = NOTICES[code]
        return replace(self, **{link: up})

    def connected(self) -> Connectivity:
        """A new API connection: the server link is up (IB says so by accepting us)."""
        return replace(self, api=True, ib_servers=True)

    def disconnected(self) -> Connectivity:
        return replace(self, api=False)

    @property
    def orders_ok(self) -> bool:
        """Orders reach the exchange."""
        return self.api and self.ib_servers

    @property
    def entries_allowed(self) -> bool:
        """A new position may be opened: orders go out and the prices behind the signal are live."""
        return self.orders_ok and self.market_data

    def down(self) -> list[str]:
        """The links that are down, by name (empty when all is well)."""
        return [name for name, up in self.as_dict().items() if not up]

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)

    def describe(self) -> str:
        """One line for logs and `scalper status`."""
        down = self.down()
        return "all links up" if not down else "down: " + ", ".join(down)
