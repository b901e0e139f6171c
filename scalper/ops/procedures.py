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
configuration first, and refused — the current ones stay, an alert says why — when their
provenance is missing, names simulated data or another symbol, or was approved under other
trading settings than the configuration's) by `reload_params` — the
worker applies them at the session roll, checking the provenance again per symbol — and
resets the operations' daily state (`daily_state`: the worker restart budget).

**End of day**: at `flatten_at` + `ops.eod_grace_seconds` the positions must be flat (the engine
exits at `flatten_at`); if not, the broker is flattened directly (`BrokerView.flatten`: at IB,
or at the paper exchange in the ledger) — without halting anything — and the alert is critical
either way. On a session the exchange closes early, `flatten_at` is the engine's earlier one
(SPEC §4.9, `scalper.engine.session_times`), so the watch comes before the market closes:
`eod_watch_at` gives each session's time, and a scheduled run at another session's time does
nothing.

**Kill switch** (`kill`, the one procedure behind `scalper kill` and the `kill-switch` flow): the
named symbols (validated against the configuration) are halted in the ledger, the stream is told
(`kill` on `control`) and the broker is flattened directly, each path independent of the others:
Kafka down does not stop the broker being flattened, IB down does not stop the stream being told.
The result says per symbol whether the broker itself shows it flat (no position, no working
order), and whether the stream was told. **Resume** publishes `resume`, which is also SPEC §4's
manual reset of a halt: the worker lifts a pause and a halt (the kill switch's, or one of the
engine's own: the kill-switch loss, the minimum balance) in the engine and in the ledger, and
its `resume` risk event says what it lifted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from time import time_ns
from typing import Any, Literal

from scalper.calendar import SessionClock
from scalper.config import Config
from scalper.engine import early_closes, session_times
from scalper.errors import ScalperError
from scalper.files import atomic_write
from scalper.ibkr.account import AccountSnapshot
from scalper.kafka.messages import ALL_SYMBOLS, Control, ControlCommand
from scalper.ledger import Ledger
from scalper.ops.broker import is_flat, wait_flat
from scalper.ops.context import Operations
from scalper.paths import describe, subdir, subdir_path

KILL_WAIT = 30.0
"""Seconds the broker gets to show the positions flat once flattening was sent."""

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


@contextmanager
def _alert_on_failure(ops: Operations, alert: Callable[[Exception], str]) -> Iterator[None]:
    """A critical alert (`alert(cause)`) when the block fails on the broker or the data
    directory, then the failure as it was: a failed scheduled run alone tells nobody."""
    try:
        yield
    except (ScalperError, OSError) as exc:
        ops.alerter.send(alert(exc), "critical")
        raise


def session_open(ops: Operations, now_ns: int | None = None) -> SessionOpen:
    session = ops.session_date(now_ns)
    with _alert_on_failure(
        ops,
        lambda exc: (
            f"Session open {session}: could NOT reconcile with the "
            f"{ops.cfg.broker.kind} broker ({exc}); the approved parameters are not loaded; act "
            "before the session trades"
        ),
    ):
        ops.require_ledger()  # nothing to reconcile with: the data directory is not the worker's
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
    unpaused = None
    if halt:  # the worker pauses; recorded as paused only when it was told (status reads it)
        try:
            why = f"session open {session}: broker and ledger disagree"
            ops.control("pause", why, timeout=STREAM_TIMEOUT)
        except ScalperError as exc:
            unpaused = str(exc)
    if not halt:
        event = "mismatch_adopted"
    else:
        event = "mismatch_halt" if unpaused is None else "mismatch_unpaused"
    for i, mismatch in enumerate(mismatches):
        event_id = f"{mismatch.symbol}-{session}-{event}-{i}"
        ledger.record_risk_event(event_id, mismatch.symbol, event, str(mismatch))
    if unpaused is not None:
        ops.alerter.send(
            f"Session open {session}: the broker and the ledger disagree, and entries could "
            f"NOT be paused ({unpaused}): act now:\n{listing}",
            "critical",
        )
        raise ScalperError(f"session open {session}: entries could not be paused: {unpaused}")
    if halt:
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
    """Ask the worker to load the approved parameters, if there are valid ones: approved on
    market data for a symbol the worker trades, under the trading settings the configuration
    has with them, and valid with it (`scalper.research.load_approved_params`, which the worker
    applies again per symbol). Otherwise the current parameters stay, and an alert says why."""
    from scalper.research import approved_params_path, load_approved_params

    path = approved_params_path()
    if not path.is_file():
        return None
    try:
        load_approved_params(ops.config_path, path, *ops.symbols)
    except ScalperError as exc:
        ops.alerter.send(f"Approved parameters not loaded: {exc}", "warning")
        return None
    ops.control("reload_params", f"approved parameters {path}")
    return str(path)


# ---------------------------------------------------------------------------------------------
# The operations' daily state


def daily_state_path() -> Path:
    return subdir_path("state") / "ops-day.json"


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
    subdir("state")  # the write path: created here, never by a reader
    with atomic_write(daily_state_path()) as fh:
        fh.write(json.dumps(state, indent=2).encode())


# ---------------------------------------------------------------------------------------------
# End of day, kill, resume


@dataclass(frozen=True)
class Flattening:
    """What the end-of-day watchdog found and did."""

    positions: dict[str, int]  # before acting
    remaining: dict[str, int] = field(default_factory=dict)  # open when done
    due: bool = True  # False: a scheduled run at another session's watch time, nothing checked

    @property
    def flat(self) -> bool:
        return not self.remaining


def eod_watch_at(cfg: Config, session: date) -> time:
    """When the watchdog checks `session`: its `flatten_at` (earlier on an early close) + grace,
    local time in `session.timezone`."""
    return _after_grace(cfg, session_times(cfg, session)[1])


def _after_grace(cfg: Config, flatten_at: time) -> time:
    """`flatten_at` + grace, to the minute (the schedules are cron)."""
    grace = timedelta(seconds=cfg.ops.eod_grace_seconds)
    return (datetime.combine(date.min, flatten_at) + grace).time().replace(second=0)


def eod_watch_times(cfg: Config, today: date, days: int = 400) -> list[time]:
    """Every watch time of the sessions from `today` on, the regular one first (the schedules)."""
    regular = _after_grace(cfg, cfg.session.flatten_at)
    upcoming = early_closes(cfg, (today, today + timedelta(days)))
    sessions = (date(1970, 1, 1) + timedelta(day) for day, _ in upcoming)
    return [regular, *sorted({eod_watch_at(cfg, s) for s in sessions} - {regular})]


def eod_check(
    ops: Operations, scheduled_at: time | None = None, now_ns: int | None = None
) -> Flattening:
    """At `flatten_at` + grace: flat, or flattened at the broker now (and a critical alert).

    `scheduled_at` (a scheduled run's time): nothing is done unless it is today's session's watch
    time. A run by hand (None) checks from today's watch time to `session_end`, and is refused
    before: during the session the positions are the engine's to hold, and the watchdog would
    cancel every order at the broker and close them (`scalper kill` is the way to flatten now).
    """
    session = ops.session_date(now_ns)
    watch_at = eod_watch_at(ops.cfg, session)
    if scheduled_at is not None and scheduled_at != watch_at:
        return Flattening({}, due=False)
    if scheduled_at is None:
        cfg = ops.cfg.session
        now = SessionClock(cfg.timezone, cfg.session_end).local(now_ns or time_ns()).time()
        if not watch_at <= now < cfg.session_end:
            raise ScalperError(
                f"the EOD watchdog watches from {watch_at:%H:%M} to {cfg.session_end:%H:%M} "
                f"({cfg.timezone}) today, not at {now:%H:%M}: the session's positions are the "
                "engine's until then; use `scalper kill` to flatten now"
            )
    view = ops.broker()
    with _alert_on_failure(
        ops,
        lambda exc: (
            f"EOD watchdog could NOT check the positions at the {ops.cfg.broker.kind} "
            f"broker ({exc}): they may stay open over the close; act now"
        ),
    ):
        before = view.snapshot()
        if before.flat:
            return Flattening({})
        after = view.flatten(ops.symbols, everything=True, timeout=KILL_WAIT)
    flattening = Flattening(before.positions, after.positions)
    ops.alerter.send(
        f"EOD watchdog: {_positions(before.positions)} still open after "
        f"{session_times(ops.cfg, session)[1]:%H:%M}; {_outcome(flattening)}",
        "critical",
    )
    return flattening


def resolve_symbols(ops: Operations, names: Sequence[str] | None) -> tuple[str, ...]:
    """The configured symbols `names` means, whatever their case; None: all of them.

    A kill or resume of a symbol nobody trades would report success while nothing happens,
    and a shell's `*` expands to file names: both are refused, before anything is done.
    """
    if names is None:
        return ops.symbols
    configured = {s.upper(): s for s in ops.symbols}
    resolved: list[str] = []
    for name in names:
        if name.strip() in (ALL_SYMBOLS, ""):
            raise ScalperError(f"--symbol {name!r} is not a symbol: use --all for every symbol")
        symbol = configured.get(name.strip().upper())
        if symbol is None:
            raise ScalperError(
                f"--symbol {name!r} is not traded by this configuration "
                f"({', '.join(ops.symbols)}; stream.symbols or instrument.symbol)"
            )
        if symbol not in resolved:
            resolved.append(symbol)
    return tuple(resolved)


@dataclass(frozen=True)
class SymbolKill:
    """One symbol after the kill switch: confirmed flat at the broker, or why not."""

    symbol: str
    flat: bool  # no position and no working order, as the broker itself reports
    detail: str  # what was found and done, or why flat could not be confirmed


@dataclass(frozen=True)
class Kill:
    """What the kill switch did: per symbol at the broker, the halt, the stream."""

    reason: str
    symbols: tuple[SymbolKill, ...]
    halt: str  # the halt in the ledger: recorded, or why not
    stream_told: bool
    stream: str  # the command on `control`, or why it could not be sent
    control: Control | None

    @property
    def confirmed(self) -> bool:
        """Everything done: every symbol flat at the broker and the stream told (a worker not
        told trades on with its own idea of the position: a person must look)."""
        return self.stream_told and all(s.flat for s in self.symbols)


STREAM_TIMEOUT = 5.0
"""Seconds Kafka gets to take the kill command: the broker is flattened whatever happens."""

WORKER_GRACE = 10.0
"""Seconds a running IB worker that was told gets to flatten through its engine, before the
broker is flattened directly: two closing orders at once could reverse the position."""


def kill(
    ops: Operations,
    reason: str,
    symbols: Sequence[str] | None = None,
    wait: float | None = None,
) -> Kill:
    """The kill switch: halt and flatten `symbols` (None: all), by three independent paths.

    1. The halt, in the ledger: the sink refuses entries from now on, also after a restart.
    2. The stream: `kill` on `control` (bounded by `STREAM_TIMEOUT`): the worker halts its
       engine and exits through it.
    3. The broker, directly (`BrokerView.flatten`): cancel the working orders, close the
       positions, and wait up to `wait` seconds for the broker to show them flat (default:
       `KILL_WAIT` at IB; on paper one bar more, since its fills come with the next bar).

    A failure of one path is reported and the others still run: the broker is flattened with
    Kafka down, the stream is told with IB down.
    """
    targets = resolve_symbols(ops, symbols)
    everything = symbols is None or set(targets) == set(ops.symbols)
    if symbols is None:  # all: also what the records show traded under another configuration
        targets += _exposed_elsewhere(ops, targets)
    if wait is None:
        paper = ops.cfg.broker.kind == "paper"
        wait = KILL_WAIT + (ops.cfg.strategy.bar_seconds if paper else 0)
    halt = _record_halt(ops, targets, reason)
    control, stream = _tell_stream(ops, "kill", reason, None if symbols is None else targets)
    outcome = _flatten_for_kill(ops, targets, everything, wait, told=control is not None)
    result = Kill(reason, outcome, halt, control is not None, stream, control)
    lines = "\n".join(f"{s.symbol}: {'flat' if s.flat else 'NOT FLAT'}, {s.detail}"
                      for s in outcome)  # fmt: skip
    ops.alerter.send(
        f"Kill switch ({', '.join(targets)}): {reason}\n{lines}\nstream: {stream}"
        + ("" if result.confirmed else "\nNOT CONFIRMED — act now"),
        "critical",
    )
    return result


def _exposed_elsewhere(ops: Operations, configured: tuple[str, ...]) -> tuple[str, ...]:
    """Symbols the ledger shows holding a position or a working order that this configuration
    does not name (a worker started with another one trades them): `--all` means all."""
    from scalper.instruments import INSTRUMENTS

    if not ops.settings.ledger_path.is_file():
        return ()
    try:
        with ops.ledger() as ledger:
            exposed = ledger.exposed_symbols()
    except ScalperError:  # reported by the halt's path; the configured symbols are killed
        return ()
    return tuple(s for s in exposed if s not in configured and s in INSTRUMENTS)


def _record_halt(ops: Operations, symbols: tuple[str, ...], reason: str) -> str:
    """Halt the symbols in the worker's ledger (the sink's own check); never creates one."""
    if not ops.settings.ledger_path.is_file():
        return f"no ledger at {ops.settings.ledger_path} (no worker has run here): none to halt"
    try:
        with ops.ledger() as ledger, ledger.transaction():
            for symbol in symbols:
                ledger.set_halt(symbol, f"kill switch: {reason}")
                ledger.record_risk_event(
                    f"{symbol}-kill-{time_ns()}", symbol, "kill", f"kill switch: {reason}"
                )
    except (OSError, sqlite3.Error, ScalperError) as exc:
        return f"NOT recorded in the ledger ({exc})"
    return "recorded in the ledger"


def _tell_stream(
    ops: Operations, command: ControlCommand, reason: str, symbols: tuple[str, ...] | None
) -> tuple[Control | None, str]:
    """Publish `command` for `symbols` (None: `*`, every worker whatever it trades); the last
    command sent, and what to say about it."""
    control = None
    try:
        for symbol in symbols or (ALL_SYMBOLS,):
            control = ops.control(command, reason, symbol, timeout=STREAM_TIMEOUT)
    except ScalperError as exc:
        return None, f"NOT told: {exc}"
    return control, f"told ({command} on control)"


def _flatten_for_kill(
    ops: Operations, symbols: tuple[str, ...], everything: bool, wait: float, *, told: bool
) -> tuple[SymbolKill, ...]:
    """Path 3 of `kill`: each symbol flat at the broker, or why not."""
    from scalper.live.worker import running_workers

    if ops.cfg.broker.kind == "paper" and not ops.settings.ledger_path.is_file():
        # the paper exchange is the worker's ledger: none here, nothing can be seen, and a
        # worker of another data directory may hold a position (told through the stream only)
        why = (f"NOT confirmed: no paper ledger at {ops.settings.ledger_path}: no worker has run "
               f"with the data directory {describe()}")  # fmt: skip
        return tuple(SymbolKill(s, False, why) for s in symbols)
    view = ops.broker()
    try:
        before = view.snapshot(symbols)
        after = before
        worker_runs = bool(running_workers(ops.settings.run_dir))
        if told and worker_runs and ops.cfg.broker.kind == "ibkr" and not before.flat:
            after = wait_flat(view, min(wait, WORKER_GRACE), symbols=symbols)
        if not all(is_flat(after, s) for s in symbols):
            after = view.flatten(symbols, everything=everything, timeout=wait)
    except (ScalperError, OSError) as exc:
        why = f"NOT confirmed: the {ops.cfg.broker.kind} broker did not answer ({exc})"
        return tuple(SymbolKill(s, False, why) for s in symbols)
    return tuple(_symbol_kill(s, before, after, ops.cfg.broker.kind) for s in symbols)


def _symbol_kill(
    symbol: str, before: AccountSnapshot, after: AccountSnapshot, kind: str
) -> SymbolKill:
    held = before.positions.get(symbol, 0)
    was = f"was {held:+d}" if held else "held nothing"
    if is_flat(after, symbol):
        return SymbolKill(symbol, True, f"{was}, confirmed flat at the {kind} broker")
    left = [f"position {after.positions[symbol]:+d}"] if after.positions.get(symbol) else []
    left += [f"order {o.ref or '(no ref)'} working" for o in after.orders if o.symbol == symbol]
    waits = " (waits at the paper exchange for the next bar)" if kind == "paper" else ""
    return SymbolKill(symbol, False, f"{was}, NOT confirmed: {', '.join(left)}{waits}")


def resume(ops: Operations, reason: str, symbols: Sequence[str] | None = None) -> Control:
    """Lift pauses and halts (the manual reset): entries are allowed again. Only the worker
    can lift its engine's halt, so this needs the stream: a failure is the caller's error, and
    nothing is lifted then. Once the stream is told, the halts in the ledger are lifted here
    too — the kill switch may have written them with no worker to lift them (Kafka down, or
    none running) — so a worker started afresh does not stay halted by them."""
    targets = resolve_symbols(ops, symbols)
    control = None
    for symbol in (ALL_SYMBOLS,) if symbols is None else targets:
        control = ops.control("resume", reason, symbol)
    assert control is not None
    if ops.settings.ledger_path.is_file():
        with ops.ledger() as ledger, ledger.transaction():
            # all: also what a kill of all halted under another configuration's symbols
            lifted = set(targets) | set(ledger.halted_symbols() if symbols is None else ())
            for symbol in lifted:
                ledger.clear_halt(symbol)
    ops.alerter.send(f"Entries resumed ({', '.join(targets)}): {reason}", "info")
    return control


def _positions(positions: dict[str, int]) -> str:
    return ", ".join(f"{s} {q:+d}" for s, q in sorted(positions.items())) or "nothing"


def _outcome(flattening: Flattening) -> str:
    if flattening.flat:
        return "positions flat" + (" (flattened at the broker)" if flattening.positions else "")
    return f"STILL OPEN: {_positions(flattening.remaining)} — act now"
