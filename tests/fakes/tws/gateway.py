"""`FakeGateway`: an asyncio TCP server that speaks the TWS API like IB Gateway.

The real ib_async client connects to it unchanged. The gateway owns what every connection
shares — the market, the clock, the request log, the account and order book, scripted faults —
and routes each client message to the service that handles its id (`contracts`, `history`,
`account`, `orders`, `realtime`). The handshake and `startApi` belong to the gateway itself,
because they set up the session every service replies through; so does IB's rule of one
connection per client id (error 326).

Time only moves with the clock: `tick()` publishes what happened up to the clock's now (closed
real-time bars, fills of resting orders), so a test with a manual clock decides exactly when the
market moves. What tests script besides: fills held and made by hand (`hold_fills`, `fill`),
a rejected order (`reject_next`), IB's connectivity notices (`notify`, `lose_ib_connection`,
`restore_ib_connection`), and the gateway going away and coming back (`drop_connections`,
`refuse_connections`, `restore_connections`).

Two ways to run it:

* `with FakeGateway(market) as gateway:` serves from a background thread, for synchronous tests
  that use ib_async's blocking API (`IB().connect(...)`);
* `async with FakeGateway(market) as gateway:` serves on the running event loop, for async tests.

A handler that raises is a bug in the fake: the gateway records it in `failures`, drops the
connection, and the `with` block re-raises it on exit, so a broken fake never passes a test.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self
from zoneinfo import ZoneInfo

from tests.fakes.tws.account import Account, AccountService
from tests.fakes.tws.contracts import ContractBook, ContractService
from tests.fakes.tws.history import HistoricalDataService, HistoricalRequest
from tests.fakes.tws.market import FakeMarket
from tests.fakes.tws.orders import OrderService
from tests.fakes.tws.protocol import (
    HANDSHAKE_PREFIX,
    SERVER_VERSION,
    In,
    Out,
    Reader,
    client_versions,
    message_name,
    split_fields,
    unpack_length,
)
from tests.fakes.tws.realtime import RealTimeBarService
from tests.fakes.tws.session import Handler, Service, Session

DEFAULT_ACCOUNT = "DU1234567"
FARM_STATUS = (
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
)
"""The status warnings IB Gateway sends every client after `startApi`."""

NOTICES = {
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    2103: "Market data farm connection is broken:usfarm",
    2104: "Market data farm connection is OK:usfarm",
    2105: "HMDS data farm connection is broken:ushmds",
    2106: "HMDS data farm connection is OK:ushmds",
    2107: "HMDS data farm connection is inactive but should be available upon demand.ushmds",
    2108: "Market data farm connection is inactive but should be available upon demand.usfarm",
    2110: "Connectivity between Trader Workstation and server is broken. It will be restored "
    "automatically.",
    2157: "Sec-def data farm connection is broken:secdefnj",
    2158: "Sec-def data farm connection is OK:secdefnj",
}
"""IB's connectivity notices (error messages with request id -1), by code."""

CLIENT_ID_IN_USE = (326, "Unable to connect as the client id is already in use. Retry with a "
                    "unique client id.")  # fmt: skip

_STOP_TIMEOUT = 10.0


@dataclass
class Received:
    """One client message as the gateway received it, with what it did about it."""

    at: float
    client_id: int | None
    message: str
    fields: tuple[str, ...]
    outcome: str = ""


class FakeGateway:
    """A TWS-protocol server over `market`, with time from `clock` (epoch seconds)."""

    def __init__(
        self,
        market: FakeMarket,
        *,
        clock: Callable[[], float] = time.time,
        account: str = DEFAULT_ACCOUNT,
        timezone: str = "America/New_York",
        host: str = "127.0.0.1",
    ) -> None:
        self.market = market
        self.clock = clock
        self.account = account
        self.zone = ZoneInfo(timezone)
        self.host = host
        self.port = 0
        self.log: list[Received] = []
        self.failures: list[BaseException] = []
        self.sessions: set[Session] = set()
        self.ib_connected = True
        book = ContractBook(market, clock)
        self.history = HistoricalDataService(book, clock, timezone)
        self.account_book = Account(account)
        accounts = AccountService(self.account_book)
        self.orders = OrderService(
            book, self.account_book, accounts, self._clients, clock, timezone
        )
        self.realtime = RealTimeBarService(book, clock)
        self.services: tuple[Service, ...] = (
            ContractService(book), self.history, accounts, self.orders, self.realtime,
        )  # fmt: skip
        own = {In.START_API: self._start_api, In.REQ_CURRENT_TIME: self._current_time}
        self._handlers = _merged(own, self.services)
        self._drops: dict[int, int] = {}
        self._seen: Counter[int] = Counter()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -----------------------------------------------------------------------------------------
    # What tests inspect and control

    @property
    def historical_requests(self) -> list[HistoricalRequest]:
        """Every `reqHistoricalData` received, in order, with its outcome."""
        return self.history.requests

    def received(self, message: In) -> list[Received]:
        """The logged messages of one kind."""
        return [entry for entry in self.log if entry.message == message.name]

    def drop_on(self, message: In, nth: int = 1) -> None:
        """Drop the connection that sends the `nth` next message of this kind, unanswered."""
        self._drops[message] = self._seen[message] + nth

    def drop_connections(self) -> None:
        """Close every client connection now (callable from the test's thread)."""
        self._in_gateway_loop(self._drop_all)

    def refuse_connections(self) -> None:
        """Stop listening and drop every connection, as a gateway that went down: connecting
        is refused until `restore_connections`."""
        self._in_gateway_loop(self._stop_listening)

    def restore_connections(self) -> None:
        """Listen again, on the same port (the threaded gateway only: opening a server needs
        the gateway's loop to run while the caller waits)."""
        if self._loop is None or _running_loop() is self._loop:
            raise RuntimeError("restore_connections needs `with FakeGateway(...)` (threaded)")
        if self._server is None:
            asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(_STOP_TIMEOUT)

    def tick(self) -> None:
        """Publish what happened up to the clock's now: fills, then closed real-time bars.

        While the gateway has lost its own connection to IB (`lose_ib_connection`) nothing
        happens: no fills, no bars (the bars of that time are never sent).
        """
        self._in_gateway_loop(self._tick)

    def hold_fills(self, held: bool = True) -> None:
        """Stop (or restart) filling orders from the market: they rest until `fill`."""
        self._in_gateway_loop(lambda: self.orders.hold_fills(held))

    def fill(self, order_ref: str, quantity: int | None = None, price: float | None = None) -> None:
        """Execute (part of) the working order tagged `order_ref` now, at `price` or the market."""
        self._in_gateway_loop(lambda: self.orders.fill(order_ref, quantity, price))

    def reject_next(self, reason: str = "Margin requirement not met") -> None:
        """Refuse the next new order (error 201)."""
        self._in_gateway_loop(lambda: self.orders.reject_next(reason))

    def notify(self, code: int) -> None:
        """Send one of IB's connectivity notices (`NOTICES`) to every connected client."""
        self._in_gateway_loop(lambda: self._broadcast(code))

    def lose_ib_connection(self) -> None:
        """The gateway loses IB's servers (1100): clients stay connected, the market stops."""

        def lose() -> None:
            self.ib_connected = False
            self._broadcast(1100)

        self._in_gateway_loop(lose)

    def restore_ib_connection(self, data_lost: bool = False) -> None:
        """IB's servers are back (1102; 1101 with `data_lost`, which ends every real-time bar
        subscription)."""

        def restore() -> None:
            self.ib_connected = True
            if data_lost:
                self.realtime.forget()
            self._broadcast(1101 if data_lost else 1102)

        self._in_gateway_loop(restore)

    def position(self, local_symbol: str) -> int:
        """The account's signed position in one contract."""
        return self.account_book.position(local_symbol)

    # -----------------------------------------------------------------------------------------
    # Lifecycle

    def __enter__(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-ib-gateway", daemon=True
        )
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(_STOP_TIMEOUT)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._loop is not None and self._thread is not None
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(_STOP_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_STOP_TIMEOUT)
        self._loop.close()
        self._raise_failures(exc)

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._close()
        self._raise_failures(exc)

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._drop_all()
            await self._server.wait_closed()

    def _raise_failures(self, pending: BaseException | None) -> None:
        if self.failures and pending is None:
            raise AssertionError(f"the fake gateway failed: {self.failures[0]!r}") from (
                self.failures[0]
            )

    def _in_gateway_loop(self, action: Callable[[], None]) -> None:
        """Run a control in the gateway's loop (the services are not thread-safe), then send
        what it queued."""

        def run() -> None:
            action()
            self._flush_all()

        loop = self._loop
        if loop is None or _running_loop() is loop:
            run()
            return

        async def in_loop() -> None:
            run()

        asyncio.run_coroutine_threadsafe(in_loop(), loop).result(_STOP_TIMEOUT)

    def _drop_all(self) -> None:
        for session in list(self.sessions):
            session.drop()

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._drop_all()

    def _tick(self) -> None:
        if self.ib_connected:
            self.orders.match()
            self.realtime.publish()

    def _broadcast(self, code: int) -> None:
        for session in self.sessions:
            if session.client_id is not None:
                session.error(-1, code, NOTICES[code])

    def _clients(self, client_id: int) -> list[Session]:
        return [s for s in self.sessions if s.client_id == client_id and not s.closed]

    def _flush_all(self) -> None:
        for session in self.sessions:
            session.flush()

    # -----------------------------------------------------------------------------------------
    # Serving one connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(writer)
        self.sessions.add(session)
        try:
            if await self._handshake(session, reader):
                while not session.closed:
                    header = await reader.readexactly(4)
                    payload = await reader.readexactly(unpack_length(header))
                    self._dispatch(session, split_fields(payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away (or the gateway dropped it)
        finally:
            self.sessions.discard(session)
            session.drop()

    async def _handshake(self, session: Session, reader: asyncio.StreamReader) -> bool:
        """Read `API\\0` + version range, answer with the server version and connection time."""
        if await reader.readexactly(len(HANDSHAKE_PREFIX)) != HANDSHAKE_PREFIX:
            return False
        header = await reader.readexactly(4)
        text = (await reader.readexactly(unpack_length(header))).decode()
        low, high = client_versions(text)
        if not low <= SERVER_VERSION <= high:
            return False  # the fake speaks only the message layouts of SERVER_VERSION
        now = datetime.fromtimestamp(self.clock(), UTC).astimezone(self.zone)
        session.send(SERVER_VERSION, f"{now:%Y%m%d %H:%M:%S} {now.tzname()}")
        session.flush()
        return True

    def _dispatch(self, session: Session, fields: list[str]) -> None:
        message_id = int(fields[0])
        entry = Received(self.clock(), session.client_id, message_name(message_id), tuple(fields))
        self.log.append(entry)
        self._seen[message_id] += 1
        if self._drops.get(message_id) == self._seen[message_id]:
            entry.outcome = "dropped the connection"
            session.drop()
            return
        handler = self._handlers.get(message_id)
        if handler is None:
            entry.outcome = "unhandled"
            return
        try:
            entry.outcome = handler(session, Reader(fields)) or "ok"
        except Exception as exc:
            entry.outcome = f"failed: {exc!r}"
            self.failures.append(exc)
            session.drop()
        self._flush_all()  # a request may concern other connections too (orders, positions)

    def _start_api(self, session: Session, request: Reader) -> str:
        request.skip()  # version
        client_id = request.int()
        if self._clients(client_id):
            outcome = session.error(-1, *CLIENT_ID_IN_USE)
            session.flush()
            session.drop()
            return outcome
        session.client_id = client_id
        session.send(Out.MANAGED_ACCOUNTS, 1, self.account)
        session.send(Out.NEXT_VALID_ID, 1, self.orders.next_order_id(client_id))
        for code, text in FARM_STATUS:
            session.error(-1, code, text)
        return f"client {session.client_id} started"

    def _current_time(self, session: Session, request: Reader) -> str:
        session.send(Out.CURRENT_TIME, 1, int(self.clock()))
        return "time"


def _merged(own: Mapping[int, Handler], services: tuple[Service, ...]) -> dict[int, Handler]:
    """One handler table; two services claiming one message id is a bug in the fake."""
    handlers = dict(own)
    for service in services:
        for message_id, handler in service.handlers().items():
            if message_id in handlers:
                raise ValueError(f"two handlers for {message_name(message_id)}")
            handlers[message_id] = handler
    return handlers


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
