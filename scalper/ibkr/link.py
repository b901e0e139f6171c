"""A self-healing connection to IB Gateway: connect with backoff, reconnect on loss.

A trading process must outlive the gateway's bad moments: the nightly restart IB imposes, a
network blip, a gateway that is not up yet when the worker starts. `IbLink` keeps trying with a
growing pause (`RECONNECT_PAUSES`, the last one repeating) and, after every successful connect,
runs its `on_ready` callbacks — the order adapter reconciles there, the bar bridge subscribes
again. Every connection is a fresh `IB` object (ib_async clears its order and fill records on a
disconnect anyway), synchronized by ib_async with the gateway's positions, open and completed
orders and the day's executions before `on_ready` runs.

Besides the socket, IB reports the health of its own links as notices (1100, 1102, 2103, ...);
`connectivity` keeps them (`scalper.ibkr.connectivity`), and `on_change` callbacks hear every
change with the notice's code (None for the socket itself): the bridge resubscribes after 1101
("data lost"), the trader records the state for `scalper status`.

Everything here runs on one asyncio loop, the one `start` was awaited on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from ib_async import IB, Contract, Future

from scalper.config import BrokerConfig
from scalper.errors import ScalperError
from scalper.files import atomic_write
from scalper.ibkr.connection import CONNECT_TIMEOUT, connect_async, hide_account_in_logs
from scalper.ibkr.connectivity import NOTICES, Connectivity
from scalper.instruments import INSTRUMENTS, front_contract, spec
from scalper.paths import subdir, subdir_path

log = logging.getLogger(__name__)

RECONNECT_PAUSES = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Pauses between connection attempts; the last one repeats for as long as it takes."""

CLIENT_ID_OFFSETS = {"trader": 0, "bridge": 1, "ops": 2, "history": 3}
"""IB allows one connection per client id: the trader uses `broker.client_id`, the bar bridge,
the operations flows and history downloads the ids after it (see `trader_client_id` for the
stream's traders of other symbols)."""

ReadyCallback = Callable[[IB], Awaitable[None]]
ChangeCallback = Callable[[Connectivity, int | None], None]


def write_status(path: Path, role: str, link: IbLink, code: int | None) -> None:
    """A link's state for `scalper status` (`read_status`); never the account id."""
    record = {
        "role": role,
        "client_id": link.client_id,
        "links": link.connectivity.as_dict(),
        "entries_allowed": link.connectivity.entries_allowed,
        "last_notice": code,
        "pid": os.getpid(),
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with atomic_write(path) as fh:
        fh.write(json.dumps(record, indent=2).encode())


def read_status(role: str, path: Path | None = None) -> dict[str, Any] | None:
    """The last state written by the `role` connection (None when it never ran here), from
    `path` or the default place of that role's file."""
    try:
        return json.loads((path or subdir_path("state") / f"ibkr-{role}.json").read_text())
    except (OSError, ValueError):
        return None


def role_client_id(broker: BrokerConfig, role: str) -> int:
    """The client id of one of the system's IB connections (`CLIENT_ID_OFFSETS`)."""
    return broker.client_id + CLIENT_ID_OFFSETS[role]


def trader_client_id(broker: BrokerConfig, symbol: str) -> int:
    """The client id of the stream's IB connection for `symbol`: one connection per symbol.

    Why per symbol and not per worker thread: IB reports an order's statuses and executions to
    the client id that placed it, and after a restart the trader must see the orders it left
    working. Bytewax routes each symbol to exactly one worker, so a symbol is only ever traded
    by one thread of one process (ids are unique across all workers of all processes of a run),
    and an id derived from the symbol stays the same whichever thread, process or start order
    picks the symbol up after a crash or with another `--workers`/`--process-id` layout — an id
    numbered by thread start order would not.

    The scheme, with `c = broker.client_id` and `n` the symbol's place in the instruments table
    (`scalper.instruments.INSTRUMENTS`, an order that no configuration edit changes):
    the first symbol of the table (MES) trades as `c` (the `trader` role, as before there were
    several), the bar bridge is `c + 1`, the operations flows `c + 2`, history downloads `c + 3`
    (`CLIENT_ID_OFFSETS`), and every other symbol `c + 3 + n` (`ES` → `c + 4`, `MNQ` → `c + 5`,
    ...). No two connections of the system ever share an id, so a download can run while the
    stream trades.
    """
    table = list(INSTRUMENTS)
    if symbol not in table:
        raise ScalperError(f"{symbol} is not in the instruments table: IB cannot trade it here")
    place = table.index(symbol)
    offset = CLIENT_ID_OFFSETS["trader"] if place == 0 else max(CLIENT_ID_OFFSETS.values()) + place
    return broker.client_id + offset


def trader_status_path(run_dir: Path, symbol: str) -> Path:
    """Where the stream's connection for `symbol` writes its state (`scalper status` reads the
    run folder's `ibkr-trader-*.json`)."""
    return run_dir / f"ibkr-trader-{symbol}.json"


class IbLink:
    """One client id's connection to the gateway of `broker`, kept up until `close`."""

    def __init__(
        self,
        broker: BrokerConfig,
        *,
        client_id: int | None = None,
        readonly: bool = False,
        pauses: Sequence[float] = RECONNECT_PAUSES,
        timeout: float = CONNECT_TIMEOUT,
        role: str | None = None,
        status_path: Path | None = None,
    ) -> None:
        """`role` names the connection in its status file (`status_path`, default
        `state/ibkr-<role>.json` in the data directory; no role, no file)."""
        self.broker = broker
        self.client_id = broker.client_id if client_id is None else client_id
        self.readonly = readonly
        self.pauses = tuple(pauses)
        self.timeout = timeout
        self.connectivity = Connectivity()
        self.on_ready: list[ReadyCallback] = []
        self.on_change: list[ChangeCallback] = []
        self.connects = 0
        self._ib: IB | None = None
        self._closing = False
        self._reconnecting: asyncio.Task[None] | None = None
        if role is not None:
            path = status_path or subdir("state") / f"ibkr-{role}.json"
            self.on_change.append(lambda state, code: write_status(path, role, self, code))
        hide_account_in_logs(broker.account)

    @property
    def ib(self) -> IB:
        """The current connection (raises when there has never been one)."""
        if self._ib is None:
            raise ScalperError("not connected to IB Gateway/TWS yet")
        return self._ib

    @property
    def connected(self) -> bool:
        return self._ib is not None and self._ib.isConnected() and self.connectivity.api

    async def start(self, attempts: int | None = 1) -> None:
        """Connect, trying `attempts` times (None: until it works) with the backoff pauses.

        The last failure is raised as a one-line `ScalperError`; once connected, losses are
        repaired in the background until `close`.
        """
        for attempt in range(attempts) if attempts is not None else itertools.count():
            if self._closing:
                raise ScalperError("the IB link was closed before it connected")
            try:
                await self._connect()
                return
            except ScalperError as exc:
                if self._closing or (attempts is not None and attempt == attempts - 1):
                    raise
                log.warning("connecting to IB Gateway failed (attempt %d): %s", attempt + 1, exc)
            await asyncio.sleep(self._pause(attempt))

    async def close(self) -> None:
        """Disconnect for good (no reconnect)."""
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._ib is not None:
            self._ib.disconnect()
        self.connectivity = self.connectivity.disconnected()

    async def front_contract(self, symbol: str, on: date, roll_days: int) -> Contract:
        """The front contract of `symbol` on session date `on` (the roll rule), qualified."""
        front = front_contract(symbol, on, roll_days)
        product = spec(symbol)
        wanted = Future(
            symbol,
            f"{front.year}{front.month:02d}",
            exchange=product.exchange,
            currency=product.currency,
        )
        qualified = await self.ib.qualifyContractsAsync(wanted)
        if not qualified or qualified[0] is None:
            raise ScalperError(f"IB does not know {front.local_symbol} (the front {symbol} future)")
        contract = qualified[0]
        assert isinstance(contract, Contract)
        return contract

    # -----------------------------------------------------------------------------------------

    async def _connect(self) -> None:
        """Connect, then run the `on_ready` callbacks; the link counts as up only after them
        (an order sent meanwhile could race the reconciliation)."""
        ib = await connect_async(
            self.broker, client_id=self.client_id, readonly=self.readonly, timeout=self.timeout
        )
        ib.errorEvent += self._on_error
        self._ib = ib
        try:
            for callback in self.on_ready:
                await callback(ib)
        except Exception as exc:
            ib.disconnect()
            raise ScalperError(f"synchronizing with IB Gateway failed: {exc!r}") from None
        if not ib.isConnected():
            raise ScalperError("the connection to IB Gateway dropped while synchronizing")
        ib.disconnectedEvent += self._on_disconnected
        self.connects += 1
        self._changed(self.connectivity.connected(), None)
        log.info("connected to IB Gateway at %s:%s", self.broker.host, self.broker.port)

    def _on_error(self, req_id: int, code: int, text: str, contract: object) -> None:
        if req_id != -1 or code not in NOTICES:
            return
        self._changed(self.connectivity.apply(code), code)
        log.warning("IB notice %s: %s (%s)", code, text, self.connectivity.describe())

    def _on_disconnected(self) -> None:
        self._changed(self.connectivity.disconnected(), None)
        if self._closing:
            return
        log.warning("lost the connection to IB Gateway; reconnecting")
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        attempt = 0
        while not self._closing:
            await asyncio.sleep(self._pause(attempt))
            try:
                await self._connect()
                return
            except ScalperError as exc:
                log.warning("reconnect attempt %d failed: %s", attempt + 1, exc)
            attempt += 1

    def _changed(self, connectivity: Connectivity, code: int | None) -> None:
        self.connectivity = connectivity
        for callback in self.on_change:
            callback(connectivity, code)

    def _pause(self, attempt: int) -> float:
        return self.pauses[min(attempt, len(self.pauses) - 1)]
