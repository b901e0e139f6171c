"""The trading day's operations as Prefect flows, one per procedure of `scalper.ops`.

Each flow takes the configuration file (`config`; None: the built-in defaults) and returns a
small JSON summary of what it did, which the Prefect UI shows with the run. Alerts are sent by
the procedures themselves, so a flow run from the UI alerts exactly like a scheduled one.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, time
from typing import Any

from prefect import flow, get_run_logger

from scalper.ops import procedures
from scalper.ops.context import Operations
from scalper.ops.summary import daily_summary
from scalper.ops.supervisor import supervise


@flow(name="session-open")
def session_open(config: str | None = None) -> dict[str, Any]:
    """Reconcile the broker with the ledger, load approved parameters, reset the daily state."""
    result = procedures.session_open(Operations.load(config))
    get_run_logger().info(
        "session %s: %d mismatches, action %s, approved parameters %s",
        result.session, len(result.mismatches), result.action, result.approved_params or "none",
    )  # fmt: skip
    return {
        "session": result.session.isoformat(),
        "mismatches": [str(m) for m in result.mismatches],
        "action": result.action,
        "approved_params": result.approved_params,
    }


@flow(name="eod-watchdog")
def eod_watchdog(config: str | None = None, at: str | None = None) -> dict[str, Any]:
    """After `flatten_at`: verify flat, flatten what is not, alert. `at` ("HH:MM", set by the
    schedules): only if that is today's watch time, which an early close makes earlier."""
    scheduled_at = None if at is None else time.fromisoformat(at)
    result = procedures.eod_check(Operations.load(config), scheduled_at)
    if not result.due:
        get_run_logger().info("EOD: %s is not today's watch time", at)
    else:
        log = "EOD: open before %s, remaining %s"
        get_run_logger().info(log, result.positions, result.remaining)
    return _flattening(result)


@flow(name="kill-switch")
def kill_switch(
    config: str | None = None, reason: str = "kill switch flow", symbols: list[str] | None = None
) -> dict[str, Any]:
    """Halt and flatten `symbols` (default: all): the ledger, the stream and the broker, each
    path on its own (`scalper.ops.procedures.kill`, as `scalper kill`). The run fails when the
    kill is not confirmed, so the UI shows it red."""
    result = procedures.kill(Operations.load(config), reason, symbols)
    for symbol in result.symbols:
        get_run_logger().info("%s: %s", symbol.symbol, symbol.detail)
    get_run_logger().info("halt: %s; stream: %s", result.halt, result.stream)
    summary = {
        "issued_at": None if result.control is None else result.control.issued_at,
        "symbols": {s.symbol: {"flat": s.flat, "detail": s.detail} for s in result.symbols},
        "halt": result.halt,
        "stream": result.stream,
        "confirmed": result.confirmed,
    }
    if not result.confirmed:
        raise KillNotConfirmed(summary)
    return summary


@flow(name="daily-summary")
def daily_summary_flow(config: str | None = None, session: date | None = None) -> dict[str, Any]:
    """P&L, trades, breaker trips, data quality → alert channels and the reports folder
    (`session`: another day's, e.g. to write it again; default: the current session)."""
    summary, page = daily_summary(Operations.load(config), session)
    get_run_logger().info("daily summary of %s written to %s", summary.session, page)
    return {"session": summary.session.isoformat(), "pnl": summary.pnl,
            "trades": summary.trade_count, "page": str(page)}  # fmt: skip


@flow(name="stream-supervisor")
def stream_supervisor(config: str | None = None) -> dict[str, Any]:
    """Start the stream worker, or restart it when it died or stalled; alert."""
    result = supervise(Operations.load(config))
    get_run_logger().info("stream worker: %s (%s)", result.action, result.health.why)
    return {"action": result.action, "pid": result.pid, "health": asdict(result.health)}


FLOWS = {
    f.name: f
    for f in (session_open, eod_watchdog, daily_summary_flow, kill_switch, stream_supervisor)
}
"""Every operations flow by name (`scalper ops run <name>`)."""


class KillNotConfirmed(RuntimeError):
    """The kill switch could not confirm everything (its summary says what): the run fails."""


def _flattening(result: procedures.Flattening) -> dict[str, Any]:
    return {"positions": result.positions, "remaining": result.remaining, "flat": result.flat,
            "flattened_at_broker": bool(result.positions), "due": result.due}  # fmt: skip
