"""The daily summary: the session's P&L, trades, breaker trips and data-quality verdicts.

Sent to the alert channels as a short text, and written as a self-contained HTML page (inline
CSS, no scripts) to `reports/daily/<session>.html` in the data directory, next to the research
reports. Everything comes from the ledger (trades, risk events, positions), the IBKR adapter's
execution records (the commissions IB actually charged, when trading at IBKR) and the bar
store's validation records (`scalper.store.partition_status`) of the UTC days the session
touches. Nothing secret is in it: no account id, no token.
"""

from __future__ import annotations

import html
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from scalper.files import atomic_write
from scalper.ledger import Ledger
from scalper.ops.context import Operations
from scalper.paths import subdir
from scalper.store import partition_status, stage_root

NS = 1_000_000_000


@dataclass(frozen=True)
class DailySummary:
    """One session's results, per symbol where it matters."""

    session: date
    trades: dict[str, list[dict[str, Any]]]
    risk_events: list[dict[str, Any]]
    quality: dict[str, dict[str, dict[str, Any] | None]]  # symbol → UTC day → status
    positions: dict[str, int]
    commissions: float | None  # IB's, when trading at IBKR

    @property
    def pnl(self) -> float:
        return sum(t["pnl"] for trades in self.trades.values() for t in trades)

    @property
    def trade_count(self) -> int:
        return sum(len(trades) for trades in self.trades.values())

    @property
    def win_rate(self) -> float | None:
        pnls = [t["pnl"] for trades in self.trades.values() for t in trades]
        return sum(p > 0 for p in pnls) / len(pnls) if pnls else None

    def verdicts(self) -> list[str]:
        """One line per stored UTC day: validated, failed, or not validated."""
        lines = []
        for symbol, days in self.quality.items():
            for day, status in days.items():
                lines.append(f"{symbol} {day}: {_verdict(status)}")
        return lines

    def text(self) -> str:
        """The alert: a few lines a phone shows in full."""
        rate = "n/a" if self.win_rate is None else f"{self.win_rate:.0%}"
        lines = [
            f"Daily summary, session {self.session}",
            f"P&L {self.pnl:+,.2f} over {self.trade_count} trades (win rate {rate})",
        ]
        if self.commissions is not None:
            lines.append(f"IB commissions {self.commissions:,.2f}")
        open_ = {s: q for s, q in self.positions.items() if q}
        lines.append("Positions: " + (", ".join(f"{s} {q:+d}" for s, q in open_.items()) or "flat"))
        trips = [e for e in self.risk_events if e["event"] not in _ROUTINE]
        lines.append(f"Breaker trips and halts: {len(trips)}")
        lines += [f"- {e['symbol']} {e['event']}: {e['detail']}" for e in trips[:5]]
        failed = [v for v in self.verdicts() if "failed" in v]
        lines.append("Data quality: " + ("; ".join(failed) if failed else "no failures"))
        return "\n".join(lines)

    def html(self) -> str:
        headline = "".join(f"<p>{_e(line)}</p>" for line in self.text().splitlines()[1:])
        events = _table(self.risk_events_rows())
        sections = [
            _section("summary", "Summary", headline),
            _section("trades", "Trades", _table(_trade_rows(self.trades))),
            _section("risk-events", "Breaker trips, halts and other risk events", events),
            _section("data-quality", "Data quality", _table([{"day": v} for v in self.verdicts()])),
        ]
        title = f"scalper — session {self.session}"
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body><main><h1>{_e(title)}</h1>"
            + "".join(sections)
            + "</main></body></html>"
        )

    def risk_events_rows(self) -> list[dict[str, Any]]:
        return [
            {"time (UTC)": _utc(e["recorded_at"]), "symbol": e["symbol"], "event": e["event"],
             "detail": e["detail"]}
            for e in self.risk_events
        ]  # fmt: skip


_ROUTINE = frozenset({"reload_pending", "reload_applied", "resume", "end_of_data"})
"""Risk events that are not trips: parameter reloads, resumes, the end of a replay."""

_CSS = (
    "body{font-family:system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1d232a}"
    "main{max-width:1000px;margin:0 auto;padding:24px}section{background:#fff;padding:16px;"
    "margin:16px 0;border-radius:8px}table{border-collapse:collapse;width:100%}"
    "td,th{border-bottom:1px solid #e3e6ea;padding:4px 8px;text-align:left;font-size:14px}"
)


def session_window(ops: Operations, session: date) -> tuple[int, int]:
    """[start, end) of a session in epoch ns: from `session_end` on the day before to it."""
    cfg = ops.cfg.session
    zone = ZoneInfo(cfg.timezone)
    end = datetime.combine(session, cfg.session_end, tzinfo=zone)
    start = datetime.combine(session - timedelta(days=1), cfg.session_end, tzinfo=zone)
    return int(start.timestamp()) * NS, int(end.timestamp()) * NS


def build_summary(ops: Operations, session: date) -> DailySummary:
    start, end = session_window(ops, session)
    days = sorted({datetime.fromtimestamp(t / NS, UTC).date() for t in (start, end - 1)})
    with ops.ledger() as ledger:
        trades = {s: ledger.trades(s, since=start, until=end - 1) for s in ops.symbols}
        events = [
            e for s in ops.symbols for e in ledger.risk_events(s) if start <= e["recorded_at"] < end
        ]
        positions = {s: ledger.position(s) for s in ops.symbols}
        commissions = _ib_commissions(ledger, start, end)
    validated = stage_root("validated")
    quality = {
        s: {d.isoformat(): partition_status(s, d, validated) for d in days} for s in ops.symbols
    }
    return DailySummary(session, trades, events, quality, positions, commissions)


def daily_summary(
    ops: Operations, session: date | None = None, now_ns: int | None = None
) -> tuple[DailySummary, Path]:
    """Build the summary of `session`, write its page, alert.

    The default is the session of today's date in the session's time zone: the one trading
    now, or — from `session_end` on, when the next one has begun with nothing traded yet — the
    one that just ended, which is what a summary run in the evening (by hand, or at an
    `ops.summary_at` after the close) is about; not tomorrow's, empty ("P&L 0 over 0 trades").
    """
    local = ZoneInfo(ops.cfg.session.timezone)
    today = datetime.fromtimestamp((now_ns or time.time_ns()) / NS, local).date()
    summary = build_summary(ops, session or today)
    page = subdir("reports") / "daily" / f"{summary.session}.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(page) as fh:
        fh.write(summary.html().encode())
    ops.alerter.send(f"{summary.text()}\nReport: {page}", "info")
    return summary, page


def _ib_commissions(ledger: Ledger, start: int, end: int) -> float | None:
    """What IB charged for the session's executions (None when not trading at IBKR)."""
    try:
        row = ledger.connection.execute(
            "SELECT sum(commission) FROM ibkr_executions WHERE ts >= ? AND ts < ?", (start, end)
        ).fetchone()
    except sqlite3.OperationalError:  # no such table: the paper broker trades
        return None
    return float(row[0] or 0.0)


def _verdict(status: dict[str, Any] | None) -> str:
    if status is None:
        return "not validated (no stored bars, or not checked yet)"
    if status["failed"]:
        return f"failed: {status['failed']} failures, {status['quarantined']} rows quarantined"
    return f"validated ({status['validated']} rows, {status['quarantined']} quarantined)"


def _trade_rows(trades: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [
        {"symbol": s, "entry (UTC)": _utc(t["entry_ts"]), "exit (UTC)": _utc(t["exit_ts"]),
         "side": t["side"], "qty": t["qty"], "entry": t["entry_price"], "exit": t["exit_price"],
         "P&L": f"{t['pnl']:+,.2f}", "reason": t["exit_reason"]}
        for s, rows in trades.items()
        for t in rows
    ]  # fmt: skip


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{_e(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(str(v))}</td>" for v in row.values()) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(section_id: str, title: str, body: str) -> str:
    return f"<section id='{section_id}'><h2>{_e(title)}</h2>{body}</section>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
