"""The trading day's procedures: session open, the end-of-day watchdog, kill and resume.

**Session open** compares the broker with the ledger before trading starts. The IBKR adapter
already repairs what happened while the system was away (missed fills, orders in flight), so a
difference left at session open means something outside the system: a trade by hand, an order
left over. `ops.on_mismatch` decides:

* `halt` (default) — entries are paused on the control topic (`pause`; exits still run) and
  an alert says what differs. Not `kill`: a kill flattens through the engine, and the engine's
  idea of the position is exactly what is in doubt — selling the position the ledger believes
  in could open the opposite one. A person looks, then `scalper resume`.
* `adopt` — the broker's state is taken as it is: the difference is recorded as a risk event and
  alerted, and trading carries on (the system only ever manages its own orders).

It then loads the approved parameters (`research/approved_params.yaml`, validated against the
configuration first) by `reload_params` — the worker applies them at the session roll — and
resets the operations' daily state (`daily_state`: the worker restart budget).

**End of day**: at `flatten_at` + `ops.eod_grace_seconds` the positions must be flat (the engine
exits at `flatten_at`); if not, the broker is flattened — directly at IBKR, through the worker
for the paper broker — and the alert is critical either way.

**Kill switch**: `kill` on the control topic (the worker halts and flattens through its engine),
then a wait for flat; if the positions are still open (a dead worker), IBKR is flattened
directly. **Resume** publishes `resume`, which is also SPEC §4's manual reset of a halt: the
worker lifts a pause and a halt (the kill switch's, or one of the engine's own: the kill-switch
loss, the minimum balance) in the engine and in the ledger, and its `resume` risk event says
what it lifted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

from scalper.errors import ScalperError
from scalper.files import atomic_write
from scalper.ibkr.account import AccountSnapshot, FlattenResult
from scalper.kafka.messages import ALL_SYMBOLS, Control
from scalper.ledger import Ledger
from scalper.ops.broker import BrokerView, wait_flat
from scalper.ops.context import Operations
from scalper.paths import subdir

KILL_WAIT = 30.0
"""Seconds the kill switch gives the worker to flatten before flattening at the broker."""

Action = Literal["none", "halted", "adopted"]


@dataclass(frozen=True)
class Mismatch:
    """One way the broker and the ledger disagree."""

    symbol: str
    what: str
    broker: str
    ledger: str

    def __str__(self) -> str:
        return f"{self.symbol} {self.what}: broker {self.broker}, ledger {self.ledger}"


def reconcile(
    snapshot: AccountSnapshot, ledger: Ledger, symbols: tuple[str, ...]
) -> list[Mismatch]:
    """Positions, and the engine's working orders by client order id, broker against ledger."""
    from scalper.ibkr.orders import PROTECTIVE, parse_ref

    found: list[Mismatch] = []
    for symbol in symbols:
        held, booked = snapshot.positions.get(symbol, 0), ledger.position(symbol)
        if held != booked:
            found.append(Mismatch(symbol, "position", f"{held:+d}", f"{booked:+d}"))
        orders = [o for o in snapshot.orders if o.symbol == symbol]
        at_broker = {o.ref for o in orders if parse_ref(o.ref)[1] not in PROTECTIVE}
        sent = {o["client_order_id"] for o in ledger.orders(symbol) if o["status"] == "sent"}
        found += [
            Mismatch(symbol, "order", f"working {ref or '(no orderRef)'}", "unknown")
            for ref in sorted(at_broker - sent)
        ]
        found += [
            Mismatch(symbol, "order", "not working", f"sent {ref}")
            for ref in sorted(sent - at_broker)
        ]
        protection = ", ".join(o.ref for o in orders if parse_ref(o.ref)[1] in PROTECTIVE)
        if protection and not held:
            found.append(Mismatch(symbol, "order", f"stop/target {protection} working", "flat"))
    return found


@dataclass(frozen=True)
class SessionOpen:
    """What session open found and did."""

    session: date
    mismatches: list[Mismatch]
    action: Action
    approved_params: str | None  # the file sent for reload, None when none (or invalid)


def session_open(ops: Operations, now_ns: int | None = None) -> SessionOpen:
    session = ops.session_date(now_ns)
    snapshot = ops.broker().snapshot()
    with ops.ledger() as ledger:
        mismatches = reconcile(snapshot, ledger, ops.symbols)
        action = _handle_mismatches(ops, ledger, mismatches, session)
    approved = _reload_approved_params(ops)
    reset_daily_state(session)
    return SessionOpen(session, mismatches, action, approved)


def _handle_mismatches(
    ops: Operations, ledger: Ledger, mismatches: list[Mismatch], session: date
) -> Action:
    if not mismatches:
        return "none"
    listing = "\n".join(f"- {m}" for m in mismatches)
    halt = ops.cfg.ops.on_mismatch == "halt"
    event = "mismatch_halt" if halt else "mismatch_adopted"
    for i, mismatch in enumerate(mismatches):
        event_id = f"{mismatch.symbol}-{session}-{event}-{i}"
        ledger.record_risk_event(event_id, mismatch.symbol, event, str(mismatch))
    if halt:
        ops.control("pause", f"session open {session}: broker and ledger disagree")
        ops.alerter.send(
            f"Session open {session}: the broker and the ledger disagree; entries are paused "
            f"until `scalper resume`:\n{listing}",
            "critical",
        )
        return "halted"
    ops.alerter.send(
        f"Session open {session}: the broker and the ledger disagree; the broker's state is "
        f"adopted (ops.on_mismatch: adopt):\n{listing}",
        "warning",
    )
    return "adopted"


def _reload_approved_params(ops: Operations) -> str | None:
    """Ask the worker to load the approved parameters, if there are valid ones."""
    from scalper.config import load_config_with_overrides
    from scalper.research import approved_params_path

    path = approved_params_path()
    if not path.is_file():
        return None
    try:
        load_config_with_overrides(ops.config_path, path)
    except ScalperError as exc:
        ops.alerter.send(f"Approved parameters not loaded: {exc}", "warning")
        return None
    ops.control("reload_params", f"approved parameters {path}")
    return str(path)


# ---------------------------------------------------------------------------------------------
# The operations' daily state


def daily_state_path() -> Path:
    return subdir("state") / "ops-day.json"


def reset_daily_state(session: date) -> dict[str, Any]:
    """A new day: the worker restart budget starts again."""
    state = {"session": session.isoformat(), "worker_restarts": 0}
    write_daily_state(state)
    return state


def read_daily_state() -> dict[str, Any]:
    try:
        return dict(json.loads(daily_state_path().read_text()))
    except (OSError, ValueError):
        return {"session": None, "worker_restarts": 0}


def write_daily_state(state: dict[str, Any]) -> None:
    with atomic_write(daily_state_path()) as fh:
        fh.write(json.dumps(state, indent=2).encode())


# ---------------------------------------------------------------------------------------------
# End of day, kill, resume


@dataclass(frozen=True)
class Flattening:
    """What a watchdog or the kill switch found and did."""

    positions: dict[str, int]  # before acting
    flattened: FlattenResult | None = None  # at the broker directly
    remaining: dict[str, int] = field(default_factory=dict)  # open when done

    @property
    def flat(self) -> bool:
        return not self.remaining


def eod_check(ops: Operations) -> Flattening:
    """At `flatten_at` + grace: flat, or flattened now (and a critical alert)."""
    view = ops.broker()
    before = view.snapshot()
    if before.flat:
        return Flattening({})
    done = _flatten(ops, view, "end-of-day watchdog: positions open after flatten_at")
    flattening = Flattening(before.positions, done.flattened, done.remaining)
    ops.alerter.send(
        f"EOD watchdog: {_positions(before.positions)} still open after "
        f"{ops.cfg.session.flatten_at:%H:%M}; {_outcome(flattening)}",
        "critical",
    )
    return flattening


def _flatten(ops: Operations, view: BrokerView, reason: str) -> Flattening:
    """At the broker directly when it can (IBKR), else through the worker (`kill`)."""
    direct = view.flatten()
    if direct is not None:
        return Flattening({}, direct, direct.remaining)
    ops.control("kill", reason)
    return Flattening({}, None, wait_flat(view, KILL_WAIT).positions)


def kill(
    ops: Operations, reason: str, symbol: str = ALL_SYMBOLS, wait: float = KILL_WAIT
) -> tuple[Control, Flattening]:
    """The kill switch: halt and flatten through the worker, at the broker if it must."""
    control = ops.control("kill", reason, symbol)
    view = ops.broker()
    before = view.snapshot()
    after = wait_flat(view, wait) if not before.flat else before
    direct = None if after.flat else view.flatten()
    remaining = after.positions if direct is None else direct.remaining
    flattening = Flattening(before.positions, direct, remaining)
    ops.alerter.send(f"Kill switch ({symbol}): {reason}; {_outcome(flattening)}", "critical")
    return control, flattening


def resume(ops: Operations, reason: str, symbol: str = ALL_SYMBOLS) -> Control:
    """Lift pauses and halts (the manual reset): entries are allowed again."""
    control = ops.control("resume", reason, symbol)
    ops.alerter.send(f"Entries resumed ({symbol}): {reason}", "info")
    return control


def _positions(positions: dict[str, int]) -> str:
    return ", ".join(f"{s} {q:+d}" for s, q in sorted(positions.items())) or "nothing"


def _outcome(flattening: Flattening) -> str:
    how = "at the broker" if flattening.flattened is not None else "by the worker"
    if flattening.flat:
        return "positions flat" + (f" (flattened {how})" if flattening.positions else "")
    return f"STILL OPEN: {_positions(flattening.remaining)} — act now"
