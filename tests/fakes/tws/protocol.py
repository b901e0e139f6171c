"""The TWS API socket protocol, as far as the fake gateway speaks it.

The wire format (the same for TWS and IB Gateway):

* the client opens with `b"API\\0"` and one length-prefixed text `v<min>..<max>[ options]`, the
  range of client protocol versions it supports;
* every later message, both ways, is a 4-byte big-endian length followed by that many bytes of
  NUL-terminated text fields; the first field is the message id;
* the server's first message is `[server version, connection time]`; the client then sends
  `startApi` and waits for `nextValidId` and `managedAccounts` before it considers itself ready.

Which fields a message carries depends on the negotiated server version. The fake announces
`SERVER_VERSION` (178, the highest ib_async 2.x asks for), so the layouts below are those of
version 178: errors carry an `advancedOrderRejectJson` field (≥ 166), contract details have no
version field and carry min size / size increment (≥ 164), and historical bars arrive in one
message that holds the start and end strings and the bar count (the separate
`historicalDataEnd` message only exists from version 196 on).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

SERVER_VERSION = 178
MIN_CLIENT_VERSION = 157
HANDSHAKE_PREFIX = b"API\0"
_LENGTH = struct.Struct(">I")


class In(IntEnum):
    """Ids of the messages a client sends (`EClient` / ib_async `Client`)."""

    PLACE_ORDER = 3
    CANCEL_ORDER = 4
    REQ_OPEN_ORDERS = 5
    REQ_ACCOUNT_UPDATES = 6
    REQ_EXECUTIONS = 7
    REQ_CONTRACT_DETAILS = 9
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_ALL_OPEN_ORDERS = 16
    REQ_HISTORICAL_DATA = 20
    CANCEL_HISTORICAL_DATA = 25
    REQ_CURRENT_TIME = 49
    REQ_REAL_TIME_BARS = 50
    CANCEL_REAL_TIME_BARS = 51
    REQ_GLOBAL_CANCEL = 58
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    START_API = 71
    REQ_ACCOUNT_UPDATES_MULTI = 76
    REQ_COMPLETED_ORDERS = 99


class Out(IntEnum):
    """Ids of the messages the gateway sends (`EDecoder` / ib_async `Decoder`)."""

    ORDER_STATUS = 3
    ERROR = 4
    OPEN_ORDER = 5
    ACCOUNT_VALUE = 6
    NEXT_VALID_ID = 9
    CONTRACT_DATA = 10
    EXECUTION_DATA = 11
    MANAGED_ACCOUNTS = 15
    HISTORICAL_DATA = 17
    CURRENT_TIME = 49
    REAL_TIME_BARS = 50
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCOUNT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    COMMISSION_REPORT = 59
    POSITION_DATA = 61
    POSITION_END = 62
    ACCOUNT_SUMMARY_END = 64
    ACCOUNT_UPDATE_MULTI_END = 74
    COMPLETED_ORDER = 101
    COMPLETED_ORDERS_END = 102


def message_name(message_id: int) -> str:
    """A readable name for a client message id (`REQ_HISTORICAL_DATA`, or `#42` if unknown)."""
    try:
        return In(message_id).name
    except ValueError:
        return f"#{message_id}"


def frame(fields: Iterable[object]) -> bytes:
    """One length-prefixed message: each field as text, NUL-terminated."""
    payload = b"".join(_text(field).encode() + b"\0" for field in fields)
    return _LENGTH.pack(len(payload)) + payload


def unpack_length(header: bytes) -> int:
    """The payload length announced by a 4-byte message header."""
    return _LENGTH.unpack(header)[0]


def split_fields(payload: bytes) -> list[str]:
    """The text fields of a message payload (the trailing NUL ends the last field)."""
    fields = payload.decode(errors="backslashreplace").split("\0")
    return fields[:-1] if fields and fields[-1] == "" else fields


def client_versions(text: str) -> tuple[int, int]:
    """The (min, max) of a handshake's `v157..178 +OPTIONS` version range."""
    versions = text.split(" ", 1)[0].removeprefix("v")
    low, _, high = versions.partition("..")
    return int(low), int(high or low)


def _text(field: object) -> str:
    if isinstance(field, bool):
        return "1" if field else "0"
    if field is None:
        return ""
    if isinstance(field, float):
        return repr(float(field))  # numpy's float64 is a float whose repr names its type
    return str(field)


@dataclass(frozen=True)
class ContractFields:
    """The 12 contract fields ib_async serializes in requests (its `Contract` formatter)."""

    con_id: int
    symbol: str
    sec_type: str
    last_trade_date_or_contract_month: str
    strike: str
    right: str
    multiplier: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str


class Reader:
    """Reads a client message's fields in order, the way `EDecoder` reads the server's.

    Handlers pull exactly the fields their message has (`int()`, `text()`, `contract()`, ...); a
    layout mistake then fails loudly at the field it concerns instead of shifting every later one.
    """

    def __init__(self, fields: list[str]) -> None:
        self.fields = fields
        self._next = 1  # field 0 is the message id

    def text(self) -> str:
        value = self.fields[self._next]
        self._next += 1
        return value

    def int(self) -> int:
        value = self.text()
        return int(value) if value else 0

    def bool(self) -> bool:
        return self.int() != 0

    def float(self) -> float | None:
        """A price or size; empty (ib_async's "unset") is None."""
        value = self.text()
        return float(value) if value else None

    def skip(self, count: int = 1) -> None:
        self._next += count

    def contract(self) -> ContractFields:
        con_id = self.int()
        symbol, sec_type, last_trade, strike, right, multiplier = (self.text() for _ in range(6))
        exchange, primary, currency, local, trading_class = (self.text() for _ in range(5))
        return ContractFields(
            con_id, symbol, sec_type, last_trade, strike, right, multiplier,
            exchange, primary, currency, local, trading_class,
        )  # fmt: skip
