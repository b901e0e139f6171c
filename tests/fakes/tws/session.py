"""One client connection to the fake gateway, and the shape of a message handler.

A service (contracts, historical data, account, orders, ...) is a set of handlers keyed by the
client message id they answer. A handler reads the request's fields, replies through the
`Session`, and returns a short outcome for the gateway's request log ("12 bars", "error 162").
Adding a capability to the fake means writing a service; the server, the framing and the log stay
as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Protocol

from tests.fakes.tws.protocol import Out, Reader, frame

Handler = Callable[["Session", Reader], str | None]


class Service(Protocol):
    """A group of message handlers sharing state (the market, the account, the order book)."""

    def handlers(self) -> Mapping[int, Handler]:
        """Client message id → handler."""


class Session:
    """The server side of one client connection.

    Messages are queued by `send` and written by `flush`, which the gateway calls once it has
    logged the request they answer: a test that reads the log right after ib_async returned
    then always finds the request's outcome there.
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._queued: list[bytes] = []
        self.client_id: int | None = None  # known once the client sent startApi

    def send(self, *fields: object) -> None:
        """Queue one message (fields as the protocol's text)."""
        self._queued.append(frame(fields))

    def flush(self) -> None:
        """Write the queued messages (dropped if the connection is closing)."""
        if not self._writer.is_closing():
            self._writer.writelines(self._queued)
        self._queued.clear()

    def error(self, req_id: int, code: int, text: str) -> str:
        """Send an error (or, for codes 2100-2199, a warning) and return it as an outcome."""
        self.send(Out.ERROR, 2, req_id, code, text, "")
        return f"error {code}: {text}"

    def drop(self) -> None:
        """Close the connection from the gateway's side, as a network failure or restart would."""
        self._writer.close()

    @property
    def closed(self) -> bool:
        return self._writer.is_closing()
