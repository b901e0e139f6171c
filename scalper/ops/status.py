"""What `scalper status` shows: links, positions, today's P&L, breakers, last bar, worker health.

Read from where each fact lives, without disturbing anything: the IB links' state files (written
by the trader and the bar bridge on every change), the ledger (positions, trades, halts, risk
events), the last message on `bars.<symbol>` (the newest bar the system received; the broker may
be down, then it says so) and the worker's process and recovery store. No broker connection is
opened: status must answer instantly, also while IB is unreachable.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from scalper.ops.context import Operations
from scalper.ops.summary import build_summary
from scalper.ops.supervisor import worker_health

LAST_BAR_TIMEOUT_MS = 3_000
_PAUSE_EVENTS = ("pause", "resume", "mismatch_halt")


@dataclass(frozen=True)
class SymbolStatus:
    symbol: str
    position: int
    pnl_today: float
    trades_today: int
    entries: str  # allowed | paused | halted: <why>
    last_bar: str | None  # UTC ISO time of the newest bar received


def gather(ops: Operations) -> dict[str, Any]:
    """The status as plain data (what `--json` prints).

    Without a ledger there is nothing to report, and saying "position +0" would be a lie: the
    worker may trade from another data directory. That is an error naming where it looked;
    status never creates the ledger (or any folder) it reads.
    """
    ops.require_ledger()
    summary = build_summary(ops, ops.session_date())
    with ops.ledger() as ledger:
        halts = {s: ledger.halt_reason(s) for s in ops.symbols}
        events = {s: ledger.risk_events(s) for s in ops.symbols}
    symbols = [
        SymbolStatus(
            s,
            summary.positions[s],
            sum(t["pnl"] for t in summary.trades[s]),
            len(summary.trades[s]),
            _entries(halts[s], events[s]),
            _last_bar(ops, s),
        )
        for s in ops.symbols
    ]
    health = worker_health(ops)
    return {
        "session": summary.session.isoformat(),
        "broker": ops.cfg.broker.kind,
        "links": _links(ops) if ops.cfg.broker.kind == "ibkr" else {},
        "symbols": [asdict(s) for s in symbols],
        "risk_events_today": len(summary.risk_events),
        "worker": {
            "healthy": health.healthy,
            "pids": list(health.pids),
            "why": health.why,
            "progress_seconds_ago": None
            if health.last_progress is None
            else round(time.time() - health.last_progress, 1),
        },
    }


def render(status: dict[str, Any]) -> str:
    """The status as lines for a terminal."""
    lines = [f"session {status['session']}, broker {status['broker']}"]
    for role, link in status["links"].items():
        lines.append(f"IB {role} link: {_link_text(link)}")
    for s in status["symbols"]:
        bar = s["last_bar"] or "none received"
        lines.append(
            f"{s['symbol']}: position {s['position']:+d}, P&L today {s['pnl_today']:+,.2f} "
            f"({s['trades_today']} trades), entries {s['entries']}, last bar {bar}"
        )
    lines.append(f"risk events today: {status['risk_events_today']}")
    worker = status["worker"]
    state = "healthy" if worker["healthy"] else f"UNHEALTHY ({worker['why']})"
    pids = ", ".join(map(str, worker["pids"])) or "none"
    ago = worker["progress_seconds_ago"]
    progress = "never" if ago is None else f"{ago:g} s ago"
    lines.append(f"stream worker: {state}, pid {pids}, last progress {progress}")
    return "\n".join(lines)


def _links(ops: Operations) -> dict[str, Any]:
    """The stream worker's IB connections (one per symbol, in its run folder; else a trader
    that wrote the default `trader` file) and the bar bridge's."""
    from scalper.ibkr.link import read_status, trader_status_path

    run_dir = ops.settings.run_dir
    links = {
        f"trader {symbol}": read_status("trader", path)
        for symbol in ops.symbols
        if (path := trader_status_path(run_dir, symbol)).exists()
    }
    return (links or {"trader": read_status("trader")}) | {"bridge": read_status("bridge")}


def _link_text(link: dict[str, Any] | None) -> str:
    if link is None:
        return "never ran here"
    down = [name for name, up in link["links"].items() if not up]
    state = "all links up" if not down else "down: " + ", ".join(down)
    entries = "entries allowed" if link["entries_allowed"] else "NO new entries"
    return f"{state}, {entries} (as of {link['updated_at']}, pid {link['pid']})"


def _entries(halt: str | None, events: list[dict[str, Any]]) -> str:
    """Whether the sink takes entries: halted (ledger), paused (the last pause/resume), or not."""
    if halt is not None:
        return f"halted: {halt}"
    switches = [e["event"] for e in events if e["event"] in _PAUSE_EVENTS]
    return "paused" if switches and switches[-1] != "resume" else "allowed"


def _last_bar(ops: Operations, symbol: str) -> str | None:
    """The start time of the newest bar on `bars.<symbol>` (None: none, or Kafka is down)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from scalper.kafka.messages import Bar, decode_bar
    from scalper.kafka.topics import LIVE

    try:
        consumer = KafkaConsumer(
            bootstrap_servers=ops.cfg.kafka.bootstrap,
            enable_auto_commit=False,
            bootstrap_timeout_ms=LAST_BAR_TIMEOUT_MS,
        )
    except KafkaError:
        return None
    try:
        topic = LIVE.bars(symbol)
        if not consumer.partitions_for_topic(topic):
            return None
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        end = consumer.end_offsets([partition])[partition]
        if not end:
            return None
        consumer.seek(partition, end - 1)
        records = consumer.poll(timeout_ms=LAST_BAR_TIMEOUT_MS).get(partition, [])
    finally:
        consumer.close()
    bar = decode_bar(records[-1].value) if records else None
    if not isinstance(bar, Bar):
        return None
    return datetime.fromtimestamp(bar.ts / 1e9, UTC).isoformat(timespec="seconds")
