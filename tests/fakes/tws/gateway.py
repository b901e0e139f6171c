"""`FakeGateway`: an asyncio TCP server that speaks the TWS API like IB Gateway.

The real ib_async client connects to it unchanged. The gateway owns what every connection
shares — the market, the clock, the request log, scripted faults — and routes each client message
to the service that handles its id (`contracts`, `history`, `account`, `orders`). The handshake
and `startApi` belong to the gateway itself, because they set up the session every service
replies through.

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

from tests.fakes.tws.account import AccountService
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
from tests.fakes.tws.session import Handler, Service, Session

DEFAULT_ACCOUNT = "DU1234567"
FARM_STATUS = (
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
)
"""The status warnings IB Gateway sends every client after `startApi`."""

FIRST_ORDER_ID = 1
"""`nextValidId` at connect (an order service will count on from it)."""

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
        book = ContractBook(market, clock)
        self.history = HistoricalDataService(book, clock, timezone)
        self.services: tuple[Service, ...] = (
            ContractService(book),
            self.history,
            AccountService(account),
            OrderService(),
        )
        self._handlers = _merged({In.START_API: self._start_api}, self.services)
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
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        self._drop_all()
        await self._server.wait_closed()

    def _raise_failures(self, pending: BaseException | None) -> None:
        if self.failures and pending is None:
            raise AssertionError(f"the fake gateway failed: {self.failures[0]!r}") from (
                self.failures[0]
            )

    def _in_gateway_loop(self, action: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or _running_loop() is loop:
            action()
            return

        async def run() -> None:
            action()

        asyncio.run_coroutine_threadsafe(run(), loop).result(_STOP_TIMEOUT)

    def _drop_all(self) -> None:
        for session in list(self.sessions):
            session.drop()

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
        session.flush()

    def _start_api(self, session: Session, request: Reader) -> str:
        request.skip()  # version
        session.client_id = request.int()
        session.send(Out.MANAGED_ACCOUNTS, 1, self.account)
        session.send(Out.NEXT_VALID_ID, 1, FIRST_ORDER_ID)
        for code, text in FARM_STATUS:
            session.error(-1, code, text)
        return f"client {session.client_id} started"


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
