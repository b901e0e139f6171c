"""The ledger: the live trader's durable record, in SQLite under the data directory.

Why it exists: the stream worker keeps its decision state in Bytewax snapshots, and after a crash
Bytewax resumes from the last snapshot and processes the input since then again. The engine is
deterministic, so it decides the same orders again, under the same client order ids. The ledger
is what remembers, outside the snapshots, which of them already went to the broker, so that each
order reaches the broker exactly once. It also holds what the sink's independent risk check
trusts (the position from recorded fills, the halted flag), the order in which control commands
were applied (so a replay applies them at the same place), and the fills and trades that
`--trades-out` writes.

The database runs in WAL mode with `synchronous=NORMAL`: a committed transaction survives the
process being killed (SPEC §7's restart requirement) and readers never block the worker; it
may be lost on a power cut, which a broker-side reconciliation by client order id covers.
Transactions are explicit (`transaction()`), so an order and its send are one atomic step.
A worker's connection leaves WAL checkpoints (which copy the log into the database and fsync)
to a background thread: done in the committing thread, they stall an order for milliseconds.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from scalper.brokers import Fill, OrderIntent

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (  -- the fields of OrderIntent, in its order, then the fate
    client_order_id TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    session TEXT NOT NULL,
    seq INTEGER NOT NULL,
    action TEXT NOT NULL,
    qty INTEGER NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT,
    bar_ts INTEGER NOT NULL,
    decided_ts INTEGER NOT NULL,
    stop_loss_ticks INTEGER NOT NULL,   -- the bracket sent with an entry
    take_profit_ticks INTEGER NOT NULL,
    status TEXT NOT NULL,            -- sent | refused | rejected | filled | cancelled
    detail TEXT,                     -- why refused or rejected
    send_count INTEGER NOT NULL,     -- times handed to the broker: exactly-once means 1
    recorded_at INTEGER NOT NULL     -- wall clock, ns
);
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (symbol, status);
CREATE TABLE IF NOT EXISTS fills (
    fill_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    ts INTEGER NOT NULL,
    action TEXT NOT NULL,
    qty INTEGER NOT NULL,
    price REAL NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS fills_by_bar ON fills (symbol, ts);
CREATE TABLE IF NOT EXISTS trades (
    exit_fill_id TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    entry_ts INTEGER NOT NULL,
    exit_ts INTEGER NOT NULL,
    side TEXT NOT NULL,
    qty INTEGER NOT NULL,
    entry_price REAL NOT NULL,
    exit_price REAL NOT NULL,
    pnl REAL NOT NULL,
    exit_reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trades_by_exit ON trades (symbol, exit_ts);
CREATE TABLE IF NOT EXISTS symbols (
    symbol TEXT PRIMARY KEY,
    position INTEGER NOT NULL DEFAULT 0,   -- signed contracts, from recorded fills
    halt_reason TEXT                       -- set: no entries (kill switch, risk limit)
);
CREATE TABLE IF NOT EXISTS risk_events (
    event_id TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    event TEXT NOT NULL,
    detail TEXT,
    recorded_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS control_journal (
    symbol TEXT NOT NULL,
    control_offset INTEGER NOT NULL,  -- the command's offset in the `control` topic
    after_offset INTEGER NOT NULL,    -- applied after this offset of bars.<symbol> (-1: first)
    command TEXT NOT NULL,
    payload TEXT NOT NULL,            -- JSON: what applying it needs (e.g. the resolved params)
    PRIMARY KEY (symbol, control_offset)
);
CREATE TABLE IF NOT EXISTS dropped_orders (  -- orders the broker dropped after accepting them
    client_order_id TEXT PRIMARY KEY,
    bar_ts INTEGER NOT NULL           -- the bar before whose decision the engine learned it
);
CREATE TABLE IF NOT EXISTS start_offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    start INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""

CHECKPOINT_SECONDS = 5.0  # each ends with an fsync, which other writes to the disk queue behind
RESTART_FRAMES = 10_000  # about 40 MB of log: then the log starts over (see `_checkpoint_forever`)
ACCEPTED_STATUSES = frozenset({"sent", "filled", "cancelled"})
"""Statuses of orders the broker took (a cancelled order was working first)."""

_TRADE_COLUMNS = "entry_ts, exit_ts, side, qty, entry_price, exit_price, pnl, exit_reason"


class JournalEntry(NamedTuple):
    """A control command as first applied to one symbol: where, and with what effect."""

    offset: int  # in `control`
    after_offset: int  # applied after the message at this offset of `bars.<symbol>`
    command: str
    payload: dict[str, Any]


class Ledger:
    """One connection to the ledger database; not shared between threads (SQLite's rule).

    Several connections (worker threads, processes, the replay command reading trades) may
    use the same file at once: writers queue behind each other for up to `timeout` seconds.
    """

    def __init__(
        self, path: Path, timeout: float = 30.0, *, background_checkpoints: bool = False
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.connection = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        self.connection.row_factory = sqlite3.Row
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.executescript(SCHEMA)
        self._in_transaction = False
        if background_checkpoints:
            self.connection.execute("PRAGMA wal_autocheckpoint=0")
            _start_checkpointer(path)

    def close(self) -> None:
        self.connection.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all; nested blocks join the outer one.

        `BEGIN IMMEDIATE` takes the write lock at once, so two writers never both read and then
        collide on the write.
        """
        if self._in_transaction:
            yield
            return
        self.connection.execute("BEGIN IMMEDIATE")
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        else:
            self.connection.execute("COMMIT")
        finally:
            self._in_transaction = False

    def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self.connection.execute(sql, args)

    # -- orders ----------------------------------------------------------------------------------

    def order(self, client_order_id: str) -> sqlite3.Row | None:
        """The recorded order with this id, or None."""
        return self._execute(
            "SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,)
        ).fetchone()

    def record_order(
        self, order: OrderIntent, status: str, detail: str | None = None, *, sent: bool = False
    ) -> None:
        """Record a new intent with its fate; `sent` counts its hand-over to the broker."""
        self._execute(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                *order,
                status,
                detail,
                int(sent),
                time.time_ns(),
            ),
        )

    def set_order_status(
        self, client_order_id: str, status: str, detail: str | None = None
    ) -> None:
        self._execute(
            "UPDATE orders SET status = ?, detail = coalesce(?, detail) WHERE client_order_id = ?",
            (status, detail, client_order_id),
        )

    def drop_learned_at(self, client_order_id: str, bar_ts: int) -> int:
        """The bar at which the trader first learned that the broker dropped this order: `bar_ts`
        when this is the first time. A replay after a crash must give the engine the news at
        that same bar, not at the first replayed bar that finds the order dropped."""
        self._execute(
            "INSERT OR IGNORE INTO dropped_orders VALUES (?, ?)", (client_order_id, bar_ts)
        )
        row = self._execute(
            "SELECT bar_ts FROM dropped_orders WHERE client_order_id = ?", (client_order_id,)
        ).fetchone()
        return int(row[0])

    def working_order(self, symbol: str) -> str | None:
        """The id of an order of `symbol` sent and neither filled nor cancelled yet."""
        row = self._execute(
            "SELECT client_order_id FROM orders WHERE symbol = ? AND status = 'sent' LIMIT 1",
            (symbol,),
        ).fetchone()
        return None if row is None else str(row[0])

    def orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Every recorded order (of `symbol`), in the order they were recorded."""
        where, args = ("WHERE symbol = ?", (symbol,)) if symbol else ("", ())
        rows = self._execute(f"SELECT * FROM orders {where} ORDER BY rowid", args)
        return [dict(row) for row in rows]

    # -- fills, positions and trades ---------------------------------------------------------

    def record_fill(self, fill: Fill) -> bool:
        """Record an execution and move the symbol's position; False if it was known already."""
        inserted = self._execute(
            "INSERT OR IGNORE INTO fills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", tuple(fill)
        ).rowcount
        if inserted:
            signed = fill.qty if fill.action == "BUY" else -fill.qty
            self._execute(
                "INSERT INTO symbols (symbol, position) VALUES (?, ?) "
                "ON CONFLICT (symbol) DO UPDATE SET position = position + excluded.position",
                (fill.symbol, signed),
            )
        return bool(inserted)

    def fills_at(self, symbol: str, ts: int) -> list[Fill]:
        """The fills recorded for the bar starting at `ts`, in the order they happened."""
        rows = self._execute(
            "SELECT * FROM fills WHERE symbol = ? AND ts = ? ORDER BY rowid", (symbol, ts)
        )
        return [Fill(*row) for row in rows]

    def position(self, symbol: str) -> int:
        """The signed position of `symbol` according to the recorded fills."""
        row = self._execute("SELECT position FROM symbols WHERE symbol = ?", (symbol,)).fetchone()
        return 0 if row is None else int(row[0])

    def exposed_symbols(self) -> list[str]:
        """The symbols holding a position or an order still working, by the records: what a
        worker trades, whatever the configuration of whoever asks says."""
        rows = self._execute(
            "SELECT symbol FROM symbols WHERE position != 0 "
            "UNION SELECT symbol FROM orders WHERE status = 'sent' ORDER BY symbol"
        )
        return [str(row[0]) for row in rows]

    def record_trade(self, exit_fill_id: str, symbol: str, trade: Mapping[str, Any]) -> None:
        """Record a round trip closed by the fill `exit_fill_id` (once, however often reported)."""
        self._execute(
            f"INSERT OR IGNORE INTO trades (exit_fill_id, symbol, {_TRADE_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (exit_fill_id, symbol, *(trade[c] for c in _TRADE_COLUMNS.split(", "))),
        )

    def trades(
        self, symbol: str, *, since: int | None = None, until: int | None = None
    ) -> list[dict[str, Any]]:
        """Closed trades of `symbol` entered at or after `since` and exited at or before `until`,
        in SPEC §4's fields and order (by exit)."""
        rows = self._execute(
            f"SELECT {_TRADE_COLUMNS} FROM trades WHERE symbol = ? "
            "AND entry_ts >= coalesce(?, entry_ts) AND exit_ts <= coalesce(?, exit_ts) "
            "ORDER BY exit_ts, rowid",
            (symbol, since, until),
        )
        return [dict(row) for row in rows]

    # -- halts and risk events ---------------------------------------------------------------

    def halt_reason(self, symbol: str) -> str | None:
        """Why `symbol` is halted, None when it is not."""
        row = self._execute(
            "SELECT halt_reason FROM symbols WHERE symbol = ?", (symbol,)
        ).fetchone()
        return None if row is None else row[0]

    def set_halt(self, symbol: str, reason: str) -> None:
        """Halt entries of `symbol` (the first reason stays: it is the one that matters)."""
        self._execute(
            "INSERT INTO symbols (symbol, halt_reason) VALUES (?, ?) "
            "ON CONFLICT (symbol) DO UPDATE SET halt_reason = coalesce(halt_reason, ?)",
            (symbol, reason, reason),
        )

    def halted_symbols(self) -> list[str]:
        """Every symbol halted now (a kill of all halts what any configuration traded)."""
        rows = self._execute(
            "SELECT symbol FROM symbols WHERE halt_reason IS NOT NULL ORDER BY symbol"
        )
        return [row[0] for row in rows.fetchall()]

    def clear_halt(self, symbol: str) -> None:
        """Lift the halt of `symbol` (`resume`, the manual reset): entries pass the sink again."""
        self._execute("UPDATE symbols SET halt_reason = NULL WHERE symbol = ?", (symbol,))

    def record_risk_event(self, event_id: str, symbol: str, event: str, detail: str) -> None:
        self._execute(
            "INSERT OR IGNORE INTO risk_events VALUES (?, ?, ?, ?, ?)",
            (event_id, symbol, event, detail, time.time_ns()),
        )

    def risk_events(self, symbol: str) -> list[dict[str, Any]]:
        rows = self._execute("SELECT * FROM risk_events WHERE symbol = ? ORDER BY rowid", (symbol,))
        return [dict(row) for row in rows]

    # -- the control journal -----------------------------------------------------------------

    def journal_control(self, symbol: str, entry: JournalEntry) -> None:
        self._execute(
            "INSERT OR IGNORE INTO control_journal VALUES (?, ?, ?, ?, ?)",
            (symbol, entry.offset, entry.after_offset, entry.command, json.dumps(entry.payload)),
        )

    def control_journal(self) -> dict[str, list[JournalEntry]]:
        """Every journaled command, per symbol, in the order they were applied."""
        journal: dict[str, list[JournalEntry]] = {}
        rows = self._execute("SELECT * FROM control_journal ORDER BY symbol, control_offset")
        for symbol, offset, after_offset, command, payload in rows:
            journal.setdefault(symbol, []).append(
                JournalEntry(offset, after_offset, command, json.loads(payload))
            )
        return journal

    # -- input positions ---------------------------------------------------------------------

    def pin_start_offsets(self, ends: Mapping[tuple[str, int], int]) -> None:
        """Fix where this run first reads each (topic, partition); pins that exist stay.

        A worker that starts afresh must not trade on stale bars or obey old commands, so it
        begins at the end of its topics, but that end moves: a worker killed before its first
        snapshot must begin at the SAME place when restarted, or input would be skipped. So the
        launcher pins the ends once, before the first start, and workers only read the pins.
        """
        with self.transaction():
            for (topic, partition), start in ends.items():
                self._execute(
                    "INSERT OR IGNORE INTO start_offsets VALUES (?, ?, ?)",
                    (topic, partition, start),
                )

    def start_offset(self, topic: str, partition: int) -> int | None:
        """The pinned first offset of (topic, partition), None if it was never pinned."""
        row = self._execute(
            "SELECT start FROM start_offsets WHERE topic = ? AND partition = ?", (topic, partition)
        ).fetchone()
        return None if row is None else int(row[0])

    def start_offsets(self) -> dict[tuple[str, int], int]:
        rows = self._execute("SELECT topic, partition, start FROM start_offsets")
        return {(str(topic), int(partition)): int(start) for topic, partition, start in rows}


_checkpointed: set[Path] = set()
_checkpointed_lock = threading.Lock()


def _start_checkpointer(path: Path) -> None:
    """One daemon thread per database and process checkpoints the WAL every few seconds.

    PASSIVE checkpoints never wait for the writer and never block it; the fsync they end with
    runs here, with the GIL released, instead of in a committing worker thread.
    """
    with _checkpointed_lock:
        if path in _checkpointed:
            return
        _checkpointed.add(path)
    threading.Thread(target=_checkpoint_forever, args=(path,), daemon=True).start()


def _checkpoint_forever(path: Path) -> None:
    """PASSIVE checkpoints copy the log into the database while the worker writes on; but the
    log itself starts over only when a checkpoint catches up with the last commit, which a
    worker that never pauses never lets happen. So once the log is long, a RESTART checkpoint
    holds the writers back for the few frames left and the fsync, and the log starts over
    (TRUNCATE: the file shrinks too)."""
    connection = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    while True:
        time.sleep(CHECKPOINT_SECONDS)
        _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames > RESTART_FRAMES:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
