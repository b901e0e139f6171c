"""The paper broker: a simulated exchange that keeps its own durable state, as a real one does.

It fills with the engine's `FillSimulator`, the backtest's broker model (SPEC §4: market orders
at the next bar's open with slippage against us, stops and targets intrabar, the stop winning a
tie), so replaying a bars file through the live path is a backtest through the live path.

Why its state lives in the ledger database and not in the worker's snapshots: a real broker does
not rewind when our worker crashes. After a restart the worker processes the bars since its last
snapshot again; the exchange has already seen them. So the simulator's state and the fills it
produced are committed to SQLite with every change, and a bar the exchange has already processed
(its ts not after the last one it simulated) is answered from the recorded fills instead of
being simulated again. Writes happen only when something changed (an order arrived, filled or
was cancelled): between those the exchange is a pure function of the bars, so simulating a
quiet stretch again gives the same nothing, and the hot path does no I/O.

Orders are idempotent by client order id, and every submission is counted (`received`), so a
duplicate that ever reached the exchange would show.

The kill switch reaches this exchange from outside the worker, as it reaches IB: `kill`, from
another process, cancels the working order and places a market order closing the position
(`KILL-<symbol>-<ns>`), which fills at the next bar's open and reaches the engine as a `kill`
exit, like any fill. The worker's exchange keeps its books in memory, so such a change bumps the
book's `revision`: the worker notices another connection's commit (SQLite's `data_version`: at
every order and cancel, and every `REVISION_POLL` seconds while simulating bars, since the
pragma costs microseconds), loads a revised book again, and a bar simulated on a book revised
meanwhile is simulated again on the new one instead of overwriting it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scalper.brokers import Fill, OrderIntent, kill_ref
from scalper.engine import FillSimulator
from scalper.kafka.messages import Bar
from scalper.ledger import Ledger

END_OF_DATA = "end_of_data"
REVISION_POLL = 0.05
"""Seconds between two looks for outside revisions from the hot path (one costs a pragma)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS paper_books (
    symbol TEXT PRIMARY KEY,
    last_ts INTEGER,     -- the last bar simulated (stored when something changed)
    closed_ts INTEGER,   -- the bar of the last end-of-data close-out
    working_id TEXT,     -- client order id of the working market order
    entry_id TEXT,       -- client order id of the entry that opened the position
    simulator BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS paper_revisions (
    symbol TEXT PRIMARY KEY,
    revision INTEGER NOT NULL  -- changes of the book from outside the worker (the kill switch)
);
CREATE TABLE IF NOT EXISTS paper_orders (
    client_order_id TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    accepted INTEGER NOT NULL,
    received INTEGER NOT NULL   -- submissions of this id; more than 1 is a duplicate
);
"""


@dataclass
class _Book:
    """One symbol at the exchange: the simulator and the ids of what it holds."""

    simulator: FillSimulator
    last_ts: int | None = None
    closed_ts: int | None = None
    working_id: str | None = None
    entry_id: str | None = None
    revision: int = 0


class _Revised(Exception):
    """The book was changed from outside while this exchange worked on its old copy."""


class PaperBroker:
    """The simulated exchange for the symbols in `params` (their engine parameters)."""

    def __init__(self, ledger: Ledger, params: Mapping[str, Mapping[str, Any]]) -> None:
        self._ledger = ledger
        self._params = params
        self._books: dict[str, _Book] = {}
        ledger.connection.executescript(SCHEMA)
        self._version = self._data_version()
        self._checked = time.monotonic()

    # -- the Broker interface ------------------------------------------------------------------

    def submit(self, order: OrderIntent) -> bool:
        """Accept a market order for the next bar, unless it does not fit the position.

        One order works at a time; an entry needs a flat position, an exit must close it
        exactly. A repeated id is not executed again: the first answer is returned.
        """
        with self._ledger.transaction():
            known = self._receive_again(order.client_order_id)
            if known is not None:
                return known
            book = self._book(order.symbol)
            accepted = _fits(book, order)
            if accepted:
                # An entry brings its own bracket (fixed at the decision, SPEC §4.9); the
                # simulator lives on, because adaptive slippage reads the bars before the fill.
                book.simulator.submit(
                    order.action,
                    order.qty,
                    order.kind,
                    order.reason,
                    order.stop_loss_ticks,
                    order.take_profit_ticks,
                )
                book.working_id = order.client_order_id
                self._save(order.symbol, book)
            self._ledger.connection.execute(
                "INSERT INTO paper_orders VALUES (?, ?, ?, 1)",
                (order.client_order_id, order.symbol, int(accepted)),
            )
        return accepted

    def cancel(self, symbol: str, why: str | None = None) -> str | None:
        """Cancel the working order; its id, None when none works."""
        with self._ledger.transaction():
            book = self._book(symbol)
            if not book.simulator.has_pending():
                return None
            book.simulator.cancel()
            cancelled, book.working_id = book.working_id, None
            if cancelled is not None:
                self._ledger.set_order_status(cancelled, "cancelled", why)
            self._save(symbol, book)
        return cancelled

    def kill(self, symbol: str, session: str, stamp_ns: int) -> str | None:
        """The kill switch, from outside the worker: cancel the working order, then place a
        market order that closes the position at the next bar's open. Its id (None when flat).

        The order is recorded in the ledger as sent, like the sink's, so the sink refuses
        entries while it works; the book's revision tells the worker's exchange to load it.
        """
        with self._ledger.transaction():
            self.cancel(symbol, "kill switch")
            book = self._book(symbol)
            position = book.simulator.position()
            order_id = None
            if position:
                order_id = kill_ref(symbol, stamp_ns)
                action = "SELL" if position > 0 else "BUY"
                intent = OrderIntent(order_id, symbol, session, 0, action, abs(position), "exit",
                                     "kill", book.last_ts or 0, stamp_ns, 0, 0)  # fmt: skip
                self._ledger.record_order(intent, "sent", sent=True)
                book.simulator.submit(action, abs(position), "exit", "kill")
                book.working_id = order_id
                self._ledger.connection.execute(
                    "INSERT INTO paper_orders VALUES (?, ?, 1, 1)", (order_id, symbol)
                )
            book.revision = self._ledger.connection.execute(
                "INSERT INTO paper_revisions VALUES (?, 1) ON CONFLICT (symbol) "
                "DO UPDATE SET revision = revision + 1 RETURNING revision",
                (symbol,),
            ).fetchone()[0]
            self._save(symbol, book)
        return order_id

    def on_bar(self, symbol: str, bar: Bar) -> list[Fill]:
        """Fills during `bar`: simulated, or as recorded when the exchange has seen it already."""
        try:
            return self._on_bar(symbol, bar)
        except _Revised:  # the kill switch changed the book meanwhile: this bar on the new one
            self._books.pop(symbol, None)
            return self._on_bar(symbol, bar)

    def _on_bar(self, symbol: str, bar: Bar) -> list[Fill]:
        book = self._book(symbol, exact=False)
        if book.last_ts is not None and bar.ts <= book.last_ts:
            return [f for f in self._ledger.fills_at(symbol, bar.ts) if f.reason != END_OF_DATA]
        working = book.working_id if book.simulator.has_pending() else None
        book.last_ts = bar.ts
        raw = book.simulator.on_bar(bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume)
        if not raw:
            return []
        fills = []
        if working is not None:  # a working market order always fills first, at the open
            market = raw.pop(0)
            fills.append(_fill(working, working, symbol, market))
            if market["kind"] == "entry":
                book.entry_id = working
        for bracket in raw:  # then a stop or target protecting the entry, named after it
            entry = book.entry_id or ""
            fills.append(_fill(f"{entry}-{bracket['reason']}", entry, symbol, bracket))
        self._commit(symbol, book, fills, filled=working)
        return fills

    def close_out(self, symbol: str, ts: int, price: float) -> Fill | None:
        """End of data (SPEC §4.8): the working order is dropped, the position closed at `price`
        with slippage; a close-out already done for this bar is reported again, not redone."""
        book = self._book(symbol)
        if book.closed_ts is not None and ts <= book.closed_ts:
            return next(
                (f for f in self._ledger.fills_at(symbol, ts) if f.reason == END_OF_DATA), None
            )
        cancelled = book.working_id if book.simulator.has_pending() else None
        raw = book.simulator.close_out(ts, price)
        book.working_id = None
        book.closed_ts = ts
        book.last_ts = max(ts, book.last_ts or ts)
        fill = (
            None
            if raw is None
            else _fill(f"{book.entry_id}-{END_OF_DATA}", book.entry_id or "", symbol, raw)
        )
        with self._ledger.transaction():
            if cancelled is not None:
                self._ledger.set_order_status(cancelled, "cancelled")
            self._commit(symbol, book, [] if fill is None else [fill], filled=None)
        return fill

    def position(self, symbol: str) -> int:
        return int(self._book(symbol).simulator.position())

    # -- the exchange's records --------------------------------------------------------------

    def received(self) -> dict[str, int]:
        """How often each client order id was submitted (exactly once means 1 everywhere)."""
        rows = self._ledger.connection.execute("SELECT client_order_id, received FROM paper_orders")
        return {str(cid): int(n) for cid, n in rows}

    def _receive_again(self, client_order_id: str) -> bool | None:
        """Counts a repeated submission; returns its first answer, None for a new id."""
        db = self._ledger.connection
        row = db.execute(
            "SELECT accepted FROM paper_orders WHERE client_order_id = ?", (client_order_id,)
        ).fetchone()
        if row is None:
            return None
        db.execute(
            "UPDATE paper_orders SET received = received + 1 WHERE client_order_id = ?",
            (client_order_id,),
        )
        return bool(row[0])

    def _data_version(self) -> int:
        return int(self._ledger.connection.execute("PRAGMA data_version").fetchone()[0])

    def _revision(self, symbol: str) -> int:
        row = self._ledger.connection.execute(
            "SELECT revision FROM paper_revisions WHERE symbol = ?", (symbol,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def _book(self, symbol: str, *, exact: bool = True) -> _Book:
        """The symbol's book, loaded again when revised from outside. `exact=False` (a bar's
        simulation, the hot path) looks for revisions at most every `REVISION_POLL` seconds:
        a bar simulated on a stale book is simulated again if it changes anything (`_commit`),
        and a quiet one only delays the kill order to the next bar."""
        now = time.monotonic()
        if exact or now - self._checked >= REVISION_POLL:
            self._checked = now
            version = self._data_version()
            if version != self._version:  # another connection committed: a revised book?
                self._version = version
                self._books = {
                    s: b for s, b in self._books.items() if self._revision(s) == b.revision
                }
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = self._load(symbol)
        return book

    def _load(self, symbol: str) -> _Book:
        row = self._ledger.connection.execute(
            "SELECT last_ts, closed_ts, working_id, entry_id, simulator FROM paper_books "
            "WHERE symbol = ?",
            (symbol,),
        ).fetchone()
        revision = self._revision(symbol)
        if row is None:
            return _Book(FillSimulator(dict(self._params[symbol])), revision=revision)
        last_ts, closed_ts, working_id, entry_id, simulator = row
        return _Book(
            FillSimulator.restore(simulator), last_ts, closed_ts, working_id, entry_id, revision
        )

    def _commit(self, symbol: str, book: _Book, fills: list[Fill], filled: str | None) -> None:
        """Fills, the filled order's status and the new exchange state, in one transaction."""
        if filled is not None:
            book.working_id = None
        with self._ledger.transaction():
            if self._revision(symbol) != book.revision:
                raise _Revised
            for fill in fills:
                self._ledger.record_fill(fill)
            if filled is not None:
                self._ledger.set_order_status(filled, "filled")
            self._save(symbol, book)

    def _save(self, symbol: str, book: _Book) -> None:
        self._ledger.connection.execute(
            "INSERT OR REPLACE INTO paper_books VALUES (?, ?, ?, ?, ?, ?)",
            (
                symbol,
                book.last_ts,
                book.closed_ts,
                book.working_id,
                book.entry_id,
                book.simulator.snapshot(),
            ),
        )


def _fits(book: _Book, order: OrderIntent) -> bool:
    """One working order at a time; entries from flat; exits close the position exactly."""
    if book.simulator.has_pending():
        return False
    position = book.simulator.position()
    signed = order.qty if order.action == "BUY" else -order.qty
    return position == 0 if order.kind == "entry" else position + signed == 0


def _fill(fill_id: str, order_id: str, symbol: str, raw: Mapping[str, Any]) -> Fill:
    return Fill(
        fill_id,
        order_id,
        symbol,
        raw["ts"],
        raw["action"],
        raw["qty"],
        raw["price"],
        raw["kind"],
        raw["reason"],
    )
