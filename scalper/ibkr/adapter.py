"""`IbkrBroker`: the live trader's broker (`scalper.brokers.Broker`) at Interactive Brokers.

**Shape.** The trader calls a broker synchronously, from its worker thread, once per bar;
ib_async is asyncio. So the broker runs ib_async on a loop of its own (a daemon thread), where an
`_IbSession` owns the connection and every IB object, and the broker's methods hand work to that
loop and wait for the answer. Only the worker thread touches the ledger (SQLite's rule).

**Orders** (`scalper.ibkr.orders`): market orders named by their client order id in `orderRef`;
an entry with a stop/target is a bracket, re-priced to the engine's exact levels once filled;
exits join the protection's OCA group. `submit` waits for IB's acknowledgement, so a rejection
(error 201: margin, a closed market) is the `False` the sink records as `rejected`; the reason
is kept for it (`refusal`).

**Connectivity** (`scalper.ibkr.connectivity`). While the order link or the market data farm is
down, `submit` refuses entries. Exits are never refused: one decided while the link is down
waits and is sent as soon as the link is back.

**Fills** are pulled per bar (`on_bar`), as the protocol wants: the executions IB reported
before the bar's end, each order's parts summed into one fill (average price), stamped with the
bar's start. The IB executions behind them, with IB's commissions, are kept in the ledger
database (`ibkr_executions`), which is also how an execution is never reported twice. Like
the paper broker, the broker remembers the last bar it reported on (`ibkr_books`): after a
worker crash, bars replayed from the last snapshot are answered from the recorded fills, so the
restored engine sees exactly what it saw before.

**Statuses** the trader did not cause — IB cancelling an order, a stop's fill cancelling a
working exit through OCA, a rejection that came after `submit` returned — are written to the
ledger (`set_order_status`) on the next `on_bar`; the ledger is where the trader learns them.

**Reconnect and restart.** After every (re)connect, ib_async has the gateway's open and
completed orders and the day's executions; `_IbSession.reconcile` matches them by `orderRef`
with what the broker follows — which after a restart is the ledger's working orders: an
execution missed while away becomes a fill, an order IB has is never sent again, an order IB
never received is sent (exits) or reported rejected (entries: a late entry is a different
trade). An order IB already has under its `orderRef` — sent by a worker that died before its
ledger recorded the send — is followed, not sent again, when the restarted worker decides it
anew. Together with the ledger's exactly-once send this gives no duplicate and no missed fill.
Orders of other clients — the kill switch's and the EOD watchdog's `KILL-` orders — are not
reported to this client by IB; a change of position makes the broker read the account's
executions, so they reach the engine as `kill` exits, and the stop and target of the position
they closed are cancelled (only this client can: a kill of one symbol does not cancel globally).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from ib_async import IB, Contract, OrderStatus, Trade
from ib_async import Fill as IbFill

from scalper.brokers import Fill, OrderIntent
from scalper.calendar import SessionClock
from scalper.config import BrokerConfig
from scalper.ibkr import orders as ib_orders
from scalper.ibkr.account import FlattenResult, flatten_account, open_positions, positions
from scalper.ibkr.connectivity import Connectivity
from scalper.ibkr.link import RECONNECT_PAUSES, IbLink
from scalper.ibkr.loop import LoopThread
from scalper.ibkr.orders import Execution, OrderFills, Role
from scalper.instruments import DEFAULT_ROLL_DAYS
from scalper.kafka.messages import Bar
from scalper.ledger import Ledger

log = logging.getLogger(__name__)

ACK_TIMEOUT = 5.0
"""How long `submit` waits for IB to acknowledge an order (then it counts as sent)."""

COMMISSION_WAIT = 3.0
"""A filled order waits this long (seconds) for IB's commission reports before it is reported
without the missing ones."""

CONNECT_WAIT = 10.0
"""Seconds the broker waits for its first connection before going on without it."""

CALL_TIMEOUT = 30.0
_NS = 1_000_000_000
_POLL = 0.01

SCHEMA = """
CREATE TABLE IF NOT EXISTS ibkr_books (
    symbol TEXT PRIMARY KEY,
    last_ts INTEGER NOT NULL          -- the last bar that reported fills
);
CREATE TABLE IF NOT EXISTS ibkr_executions (
    exec_id TEXT PRIMARY KEY,         -- IB's execution id
    ref TEXT NOT NULL,                -- the order's orderRef
    fill_id TEXT NOT NULL,            -- the ledger fill it is part of
    symbol TEXT NOT NULL,
    ts INTEGER NOT NULL,              -- IB's execution time, ns
    action TEXT NOT NULL,
    shares INTEGER NOT NULL,
    price REAL NOT NULL,
    commission REAL NOT NULL          -- as IB charged it
);
"""

T = TypeVar("T")


@dataclass(frozen=True)
class StatusChange:
    """An order status the trader did not cause, for the ledger."""

    ref: str
    status: str  # rejected | cancelled
    detail: str


@dataclass
class _Track:
    """One IB order the session follows, with its executions."""

    fills: OrderFills
    role: Role
    intent: OrderIntent | None = None
    trade: Trade | None = None
    waiting: bool = False  # decided while the order link was down: send when it is back
    acking: bool = False  # `submit` is waiting for IB's answer: a refusal is its to report
    settled: bool = False  # reported (or given up) — nothing more to say about it
    filled_at: float | None = None  # monotonic time all shares executed

    @property
    def ref(self) -> str:
        return self.fills.ref

    @property
    def working(self) -> bool:
        return self.trade is not None and not self.trade.isDone()


@dataclass
class _Taken:
    fills: list[OrderFills] = field(default_factory=list)
    changes: list[StatusChange] = field(default_factory=list)


class _IbSession:
    """The asyncio half: connection, contracts, orders and executions. Runs on one loop."""

    def __init__(
        self,
        link: IbLink,
        params: Mapping[str, Mapping[str, Any]],
        roll_days: int,
        known_executions: set[str],
    ) -> None:
        self.link = link
        self.params = params
        self.roll_days = roll_days
        self.known_executions = known_executions
        self.contracts: dict[str, Contract] = {}
        self.session_dates: dict[str, date] = {}
        self.tracks: dict[str, _Track] = {}
        self.refusals: dict[str, str] = {}
        self.changes: list[StatusChange] = []
        self.expected: dict[str, int] = {}  # positions our executions explain
        self.fetching = False
        link.on_ready.append(self._on_ready)

    # -- connection --------------------------------------------------------------------------

    async def _on_ready(self, ib: IB) -> None:
        ib.execDetailsEvent += self._on_execution
        ib.commissionReportEvent += self._on_commission
        ib.orderStatusEvent += self._on_status
        ib.positionEvent += self._on_position
        now = await ib.reqCurrentTimeAsync()
        for symbol in self.params:
            await self.contract(symbol, SessionClock().session_date(int(now.timestamp()) * _NS))
        self.reconcile(ib)
        self.expected = positions(ib)
        for track in [t for t in self.tracks.values() if t.waiting]:
            self._send_waiting(track)

    async def contract(self, symbol: str, session: date) -> Contract:
        """The front contract of `symbol` for `session` (qualified once per session date)."""
        if self.session_dates.get(symbol) != session:
            self.contracts[symbol] = await self.link.front_contract(symbol, session, self.roll_days)
            self.session_dates[symbol] = session
        return self.contracts[symbol]

    # -- placing -----------------------------------------------------------------------------

    async def submit(self, intent: OrderIntent, reference: float | None) -> bool:
        ref = intent.client_order_id
        if ref in self.tracks:
            return ref not in self.refusals
        track = _Track(OrderFills.for_intent(intent), "order", intent)
        self.tracks[ref] = track
        if self.link.connected and self._arrived_before(track):
            return ref not in self.refusals
        if intent.kind == "exit" and not self.link.connectivity.orders_ok:
            track.waiting = True  # sent as soon as the link is back
            return True
        refusal = self._refusal(intent, reference)
        if refusal is not None:
            return self._refuse(track, refusal)
        if intent.kind == "exit":
            self._send_exit(track)
            return await self._acknowledged(track, [track])
        assert reference is not None
        return await self._acknowledged(track, self._send_entry(track, reference))

    def _arrived_before(self, track: _Track) -> bool:
        """Whether IB has this order already: a worker sent it and died before its ledger
        recorded the send (the sink commits once `submit` returns), and the restarted worker
        decided it again. It is followed like any order — its executions, its fate — and never
        sent twice."""
        ib = self.link.ib
        trade = next((t for t in ib.trades() if t.order.orderRef == track.ref), None)
        if trade is None:
            return False
        log.warning("order %s is at IB already (sent before a restart): not sent again", track.ref)
        track.trade = trade
        for fill in ib.fills():
            if fill.execution.orderRef == track.ref:
                self._record(fill)
        status = trade.orderStatus.status
        if status in OrderStatus.DoneStates and status != OrderStatus.Filled and not trade.fills:
            self._refuse(track, _why_done(trade))
        return True

    def _refusal(self, intent: OrderIntent, reference: float | None) -> str | None:
        """Why the broker will not send this order now, or None. The last check before IB:
        an entry needs the links up and a flat position at IB; an exit must reduce the
        position IB holds — never open or reverse one (a stale exit resent after a kill).
        Exits only come here with the order link up."""
        state = self.link.connectivity
        if intent.kind == "entry" and not state.entries_allowed:
            return f"no new entries while the IB link is down ({state.describe()})"
        held = positions(self.link.ib).get(intent.symbol, 0)
        if intent.kind == "exit":
            side = 1 if intent.action == "BUY" else -1
            if held * side >= 0 or abs(held) < intent.qty:
                return f"nothing to exit: IB holds {held:+d} {intent.symbol}"
            return None
        if held:
            return f"no entry while IB holds {held:+d} {intent.symbol}"
        if reference is None:
            return "no price seen yet to place the protective orders from"
        return None

    def _refuse(self, track: _Track, reason: str) -> bool:
        track.settled = True
        self.refusals[track.ref] = reason
        log.warning("order %s refused: %s", track.ref, reason)
        return False

    def _send_entry(self, entry: _Track, reference: float) -> list[_Track]:
        """Place the entry (a bracket when protected); the tracks of the orders placed."""
        assert entry.intent is not None
        ib = self.link.ib
        contract = self.contracts[entry.intent.symbol]
        tick = float(self.params[entry.intent.symbol]["tick_size"])
        account = self.link.broker.account or ""
        placed = ib_orders.entry_orders(entry.intent, reference, tick, ib.client.getReqId, account)
        tracks = []
        for role, order in placed:
            track = entry if role == "order" else self._child(order.orderRef, order, role)
            track.trade = ib.placeOrder(contract, order)
            tracks.append(track)
        return tracks

    def _child(self, ref: str, order: Any, role: Role) -> _Track:
        fills = OrderFills.for_ib_order(ref, order.action, int(order.totalQuantity))
        track = self.tracks[ref] = _Track(fills, role)
        return track

    def _send_waiting(self, track: _Track) -> None:
        """An exit decided while the link was down, now that it is back (if still an exit)."""
        assert track.intent is not None
        track.waiting = False
        if self._arrived_before(track):
            return
        refusal = self._refusal(track.intent, None)
        if refusal is None:
            self._send_exit(track)
            return
        track.waiting, track.settled = False, True
        self.changes.append(StatusChange(track.ref, "rejected", refusal))

    def _send_exit(self, track: _Track) -> None:
        """Place an exit, in the OCA group of the position's protection if any."""
        assert track.intent is not None
        track.waiting = False
        group = next(
            (t.trade.order.ocaGroup for t in self._protection(track.fills.symbol) if t.trade),
            None,
        )
        account = self.link.broker.account or ""
        order = ib_orders.exit_order(track.intent, group, account)
        track.trade = self.link.ib.placeOrder(self._exit_contract(track.intent.symbol), order)

    def _protection(self, symbol: str) -> list[_Track]:
        """The working stop and target orders of `symbol`."""
        return [
            t for t in self.tracks.values()
            if t.role in ib_orders.PROTECTIVE and t.working and t.fills.symbol == symbol
        ]  # fmt: skip

    def _exit_contract(self, symbol: str) -> Contract:
        """The contract the position is in (it may predate a roll), else the front one."""
        held = [c for c, _ in open_positions(self.link.ib) if c.symbol == symbol]
        return held[0] if held else self.contracts[symbol]

    async def _acknowledged(self, track: _Track, placed: list[_Track]) -> bool:
        """Wait until IB took the order — every order of a bracket, which the last one
        transmits — (True) or refused it (False). No answer (a timeout, the connection lost)
        is True: the order may have arrived, and reconciliation will tell."""
        deadline = time.monotonic() + ACK_TIMEOUT
        trades = [t.trade for t in placed if t.trade is not None]
        track.acking = True
        try:
            while any(t.orderStatus.status in ("", OrderStatus.PendingSubmit) for t in trades):
                if time.monotonic() > deadline or not self.link.connected:
                    return True
                await asyncio.sleep(_POLL)
        finally:
            track.acking = False
        trade = track.trade
        assert trade is not None
        if trade.orderStatus.status in OrderStatus.DoneStates and not trade.fills:
            return self._refuse(track, _why_done(trade))
        return True

    async def cancel(self, symbol: str) -> str | None:
        """Cancel the symbol's working engine order; its id once IB confirms, else None."""
        working = [
            t for t in self.tracks.values()
            if t.role == "order" and t.fills.symbol == symbol and not t.settled
        ]  # fmt: skip
        for track in working:
            if track.waiting:
                track.waiting, track.settled = False, True
                return track.ref
            if track.working and track.trade is not None:
                return await self._cancel(track, track.trade)
        return None

    async def _cancel(self, track: _Track, trade: Trade) -> str | None:
        """Cancel at IB and wait for the answer: the id when cancelled, None when it filled
        first (the fill, whole or partial, is reported as usual)."""
        self.link.ib.cancelOrder(trade.order)
        deadline = time.monotonic() + ACK_TIMEOUT
        track.acking = True
        try:
            while not trade.isDone() and time.monotonic() < deadline:
                await asyncio.sleep(_POLL)
        finally:
            track.acking = False
        if trade.orderStatus.status == OrderStatus.Filled or track.fills.filled:
            self._on_status(trade)
            return None
        track.settled = True
        return track.ref

    # -- what IB reports ---------------------------------------------------------------------

    def _on_execution(self, trade: Trade, fill: IbFill) -> None:
        self._record(fill)

    def _on_commission(self, trade: Trade, fill: IbFill, report: Any) -> None:
        track = self.tracks.get(fill.execution.orderRef)
        if track is not None:
            track.fills.commission(report.execId, report.commission)
            self._progress(track)

    def _on_position(self, position: Any) -> None:
        """A position our own executions do not explain: another client traded (the kill
        switch, the EOD watchdog), and since IB reports fills to the placing client only, the
        account's executions must be read."""
        symbol = position.contract.symbol
        held = positions(self.link.ib).get(symbol, 0)
        if symbol in self.params and held != self.expected.get(symbol, 0) and not self.fetching:
            self.fetching = True
            asyncio.get_running_loop().create_task(self._fetch_executions())

    async def _fetch_executions(self) -> None:
        try:
            fills = await self.link.ib.reqExecutionsAsync()
        except ConnectionError:
            return  # the reconciliation after the reconnect reads them
        finally:
            self.fetching = False
        for fill in fills:
            self._record(fill)
        self.expected = positions(self.link.ib)

    def _on_status(self, trade: Trade) -> None:
        track = self.tracks.get(trade.order.orderRef)
        if track is None or track.settled or track.acking:
            return
        track.trade = trade
        if trade.orderStatus.status not in OrderStatus.DoneStates:
            return
        if trade.orderStatus.status == OrderStatus.Filled or track.fills.filled:
            if trade.orderStatus.status != OrderStatus.Filled:  # partly filled, then cancelled
                track.fills.quantity = track.fills.filled
            self._progress(track)
        elif track.role == "order":
            status = "rejected" if _rejected(trade) else "cancelled"
            self.changes.append(StatusChange(track.ref, status, _why_done(trade)))
            track.settled = True
        else:
            track.settled = True  # a protective order cancelled with its group: nothing to say

    def _record(self, fill: IbFill) -> None:
        execution = fill.execution
        if execution.execId in self.known_executions:
            return
        track = self.tracks.get(execution.orderRef) or self._adopt(execution.orderRef, fill)
        if track is None:
            return
        report = fill.commissionReport
        shares = int(execution.shares)
        new = track.fills.add(
            Execution(
                execution.execId, execution.orderRef, track.fills.action, shares,
                execution.price, int(execution.time.timestamp() * _NS),
                report.commission if report.execId else None,
            )
        )  # fmt: skip
        if new:
            side = 1 if track.fills.action == "BUY" else -1
            symbol = track.fills.symbol
            self.expected[symbol] = self.expected.get(symbol, 0) + side * shares
        self._progress(track)

    def _adopt(self, ref: str, fill: IbFill) -> _Track | None:
        """A protective or kill order we did not place in this process (a restart, the kill
        switch's flows) — ours if it trades one of our symbols."""
        _, role = ib_orders.parse_ref(ref)
        if role == "order" or ib_orders.ref_symbol(ref) not in self.params:
            return None
        action = "BUY" if fill.execution.side == "BOT" else "SELL"
        shares = int(fill.execution.cumQty or fill.execution.shares)
        track = self.tracks[ref] = _Track(OrderFills.for_ib_order(ref, action, shares), role)
        return track

    def _progress(self, track: _Track) -> None:
        """Note a fully executed order; re-price the protection of a filled entry, cancel that
        of a position the kill switch closed (a stop left working would open a new one)."""
        if track.fills.filled >= track.fills.quantity and track.filled_at is None:
            track.filled_at = time.monotonic()
            if track.intent is not None and track.intent.kind == "entry":
                self._reprice_protection(track)
            elif track.role == "kill":
                for protective in self._protection(track.fills.symbol):
                    assert protective.trade is not None
                    self.link.ib.cancelOrder(protective.trade.order)

    def _reprice_protection(self, entry: _Track) -> None:
        assert entry.intent is not None
        tick = float(self.params[entry.intent.symbol]["tick_size"])
        levels = ib_orders.protective_prices(
            entry.intent.action, entry.fills.average_price, entry.intent, tick
        )
        for role, price in levels.items():
            child = self.tracks.get(ib_orders.child_ref(entry.ref, role))
            trade = child.trade if child is not None and child.working else None
            if trade is not None and ib_orders.reprice(trade.order, role, price):
                self.link.ib.placeOrder(trade.contract, trade.order)

    # -- reconciliation ----------------------------------------------------------------------

    def follow(self, intent: OrderIntent) -> None:
        """Follow an order the ledger says was sent (after a restart), before connecting."""
        self.tracks[intent.client_order_id] = _Track(OrderFills.for_intent(intent), "order", intent)

    def reconcile(self, ib: IB) -> None:
        """Match IB's orders and executions with the tracked orders by `orderRef`."""
        by_ref = {t.order.orderRef: t for t in ib.trades() if t.order.orderRef}
        for ref, trade in by_ref.items():  # first: the fills below may re-price protection
            track = self.tracks.get(ref)
            if track is None and not trade.isDone():
                track = self._adopt_working(ref, trade)
            if track is not None:
                track.trade = trade
        for fill in ib.fills():
            self._record(fill)
        for trade in by_ref.values():
            self._on_status(trade)
        for track in list(self.tracks.values()):
            if track.settled or track.waiting or track.ref in by_ref or track.fills.filled:
                continue
            if track.role == "order" and track.intent is not None:
                self._never_arrived(track)

    def _adopt_working(self, ref: str, trade: Trade) -> _Track | None:
        """A working protective order of one of our symbols, placed before a restart."""
        _, role = ib_orders.parse_ref(ref)
        if role not in ib_orders.PROTECTIVE or ib_orders.ref_symbol(ref) not in self.params:
            return None
        fills = OrderFills.for_ib_order(ref, trade.order.action, int(trade.order.totalQuantity))
        track = self.tracks[ref] = _Track(fills, role, trade=trade)
        return track

    def _never_arrived(self, track: _Track) -> None:
        """IB does not know an order we sent: the connection died with it in flight."""
        assert track.intent is not None
        if track.intent.kind == "exit":
            track.waiting = True  # sent right after the reconciliation
            return
        track.settled = True
        detail = "never reached IB (the connection was lost while sending); not sent again late"
        self.changes.append(StatusChange(track.ref, "rejected", detail))

    # -- handing over to the worker thread ----------------------------------------------------

    async def take(self, symbol: str, until_ns: int) -> _Taken:
        """The complete fills of `symbol` executed before `until_ns`, and status changes."""
        taken = _Taken()
        now = time.monotonic()
        for track in self.tracks.values():
            if track.settled or track.fills.symbol != symbol or track.filled_at is None:
                continue
            waited = now - track.filled_at >= COMMISSION_WAIT
            if track.fills.last_ts < until_ns and (track.fills.complete or waited):
                track.settled = True
                taken.fills.append(track.fills)
        taken.fills.sort(key=lambda f: f.last_ts)
        mine = [c for c in self.changes if ib_orders.ref_symbol(c.ref) == symbol]
        self.changes = [c for c in self.changes if c not in mine]
        taken.changes = mine
        return taken

    async def position(self, symbol: str) -> int:
        """IB's position; while disconnected, the last one known."""
        if not self.link.connected:
            return self.expected.get(symbol, 0)
        return positions(self.link.ib).get(symbol, 0)

    async def flatten(self) -> FlattenResult:
        return await flatten_account(self.link.ib, self.params)


def _rejected(trade: Trade) -> bool:
    return any(entry.errorCode == 201 for entry in trade.log)


def _why_done(trade: Trade) -> str:
    """IB's reason for a cancelled or rejected order (the last error in the trade's log)."""
    errors = [entry.message for entry in trade.log if entry.errorCode]
    return errors[-1] if errors else f"IB reports the order {trade.orderStatus.status}"


class IbkrBroker:
    """The `Broker` of the live trader at IB, for the symbols in `params` (engine parameters).

    Connects at construction: with `connect_attempts` None (the default) it waits up to
    `connect_wait` seconds for the first connection and keeps trying in the background after
    that (a worker started before the gateway is up trades as soon as it is: entries are
    refused meanwhile, exits wait); with a number, it tries that often and raises the last
    error. Afterwards the connection repairs itself. `close()` disconnects.
    """

    def __init__(
        self,
        ledger: Ledger,
        params: Mapping[str, Mapping[str, Any]],
        broker: BrokerConfig,
        *,
        roll_days: int = DEFAULT_ROLL_DAYS,
        client_id: int | None = None,
        pauses: tuple[float, ...] = RECONNECT_PAUSES,
        connect_attempts: int | None = None,
        connect_wait: float = CONNECT_WAIT,
        status_path: Path | None = None,
    ) -> None:
        self._ledger = ledger
        self._params = params
        ledger.connection.executescript(SCHEMA)
        self._last_close: dict[str, float] = {}
        self._loop = LoopThread("ibkr")
        self._link = IbLink(
            broker, client_id=client_id, pauses=pauses, role="trader", status_path=status_path
        )
        known = {row[0] for row in ledger.connection.execute("SELECT exec_id FROM ibkr_executions")}
        self._session = _IbSession(self._link, params, roll_days, known)
        for intent in self._working_intents():
            self._session.follow(intent)
        starting = self._loop.submit(self._link.start(attempts=connect_attempts))
        try:
            starting.result(connect_wait if connect_attempts is None else None)
        except TimeoutError:
            log.warning("IB Gateway not reachable yet; connecting in the background")
        except BaseException:
            self.close()
            raise

    # -- the Broker protocol -----------------------------------------------------------------

    def submit(self, order: OrderIntent) -> bool:
        """Send a market order (a bracket for a protected entry) and wait for IB's answer."""
        reference = self._last_close.get(order.symbol)
        return self._call(self._session.submit(order, reference))

    def cancel(self, symbol: str) -> str | None:
        cancelled = self._call(self._session.cancel(symbol))
        if cancelled is not None:
            self._ledger.set_order_status(cancelled, "cancelled")
        return cancelled

    def on_bar(self, symbol: str, bar: Bar) -> list[Fill]:
        """The fills IB reported for executions before this bar's end (see the module doc)."""
        self._last_close[symbol] = bar.close
        last = self._last_ts(symbol)
        if last is not None and bar.ts <= last:
            return self._ledger.fills_at(symbol, bar.ts)
        bar_ns = int(self._params[symbol]["bar_seconds"]) * _NS
        taken = self._call(self._session.take(symbol, bar.ts + bar_ns))
        if not taken.fills and not taken.changes:
            return []
        with self._ledger.transaction():
            fills = [self._book(order_fills, bar.ts) for order_fills in taken.fills]
            for change in taken.changes:
                self._ledger.set_order_status(change.ref, change.status, change.detail)
            if fills:
                self._ledger.connection.execute(
                    "INSERT OR REPLACE INTO ibkr_books VALUES (?, ?)", (symbol, bar.ts)
                )
        return fills

    def close_out(self, symbol: str, ts: int, price: float) -> Fill | None:
        """A live broker has no end of data: positions are never closed at a simulated price
        (and never on shutdown). The engine's `eod` exit and the watchdog flatten for real."""
        return None

    def position(self, symbol: str) -> int:
        """The signed position IB holds in `symbol`'s contracts."""
        return self._call(self._session.position(symbol))

    # -- beyond the protocol -----------------------------------------------------------------

    @property
    def connectivity(self) -> Connectivity:
        """The link state (entries are refused unless `entries_allowed`)."""
        return self._link.connectivity

    @property
    def connects(self) -> int:
        """Successful connections so far (1 + reconnects)."""
        return self._link.connects

    def refusal(self, client_order_id: str) -> str | None:
        """Why `submit` returned False for this order (IB's rejection text or ours)."""
        return self._session.refusals.get(client_order_id)

    def flatten_all(self) -> FlattenResult:
        """Cancel every working order and close every position of our symbols at market."""
        return self._loop.run(self._session.flatten())

    def close(self) -> None:
        """Disconnect and stop the loop (positions and orders stay as they are at IB)."""
        self._loop.stop(self._link.close())

    # -- internals ---------------------------------------------------------------------------

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(work, CALL_TIMEOUT)

    def _book(self, fills: OrderFills, ts: int) -> Fill:
        """Record one fill, its IB executions and the order's status (in the open transaction)."""
        fill = fills.as_fill(ts)
        self._ledger.record_fill(fill)
        for execution in fills.executions.values():
            self._ledger.connection.execute(
                "INSERT OR IGNORE INTO ibkr_executions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    execution.exec_id, execution.ref, fill.fill_id, fill.symbol, execution.ts,
                    execution.action, execution.shares, execution.price,
                    execution.commission or 0.0,
                ),
            )  # fmt: skip
        if ib_orders.parse_ref(fills.ref)[1] == "order":
            self._ledger.set_order_status(fills.ref, "filled")
        return fill

    def _last_ts(self, symbol: str) -> int | None:
        row = self._ledger.connection.execute(
            "SELECT last_ts FROM ibkr_books WHERE symbol = ?", (symbol,)
        ).fetchone()
        return None if row is None else int(row[0])

    def _working_intents(self) -> list[OrderIntent]:
        """The ledger's orders of our symbols that were sent and have not finished."""
        intents = []
        for symbol in self._params:
            for row in self._ledger.orders(symbol):
                if row["status"] == "sent":
                    intents.append(_intent_of(row))
        return intents


def _intent_of(row: Mapping[str, Any]) -> OrderIntent:
    """The intent of a ledger order row (its protective distances are IB's business now)."""
    return OrderIntent(
        row["client_order_id"], row["symbol"], row["session"], row["seq"], row["action"],
        row["qty"], row["kind"], row["reason"], row["bar_ts"], row["decided_ts"], 0, 0,
    )  # fmt: skip
