"""The trader: one instrument's live state, and what it does with each message.

Per completed bar, in SPEC §4's order: the broker reports the bar's fills first (the market order
decided at the previous close fills at this bar's open, stops and targets intrabar), the engine
books them, and only then decides at the bar's close; a decision goes through the risk-gated
sink to the broker. The broker is called here, synchronously, and not from a later dataflow
step: otherwise the fills of bar N+1 could reach the engine after its decision at N+1's close,
and live trading would diverge from the backtest.

State and resources are kept apart for recovery:

- `TraderState` is what Bytewax snapshots per symbol: the engine (a compact binary snapshot),
  the open aggregation bucket, the last source bar, recent closes (to warm up reloaded
  parameters), approved parameters waiting for the next session, and the last control command
  applied. It pickles small and fast, as it is copied at every snapshot.
- `Desk` holds one worker thread's connections: the ledger, the broker (paper, or IB with
  `broker.kind: ibkr`, see `scalper.live.brokers`) and the sink. They are not state: what they
  know is durable in the ledger, which is what makes a replay after a crash safe (intents
  already sent are recognised, fills already made are reported as made).

A real broker may also drop an order after `submit` accepted it: IB rejects or cancels it later,
or it never arrived because the connection died with it. The broker writes that to the ledger
when it reports the next bar, and the trader, before the engine decides at that bar, gives the
engine `on_reject` for it, as it does for an order refused at once: otherwise the engine would
wait for the fill of an order that no longer exists and never decide again. The paper broker
drops an order when the kill switch cancels it from outside the worker.

A live trader (not a replay's) also refuses history: a bar that closed more than
`stream.max_bar_age_seconds` before Kafka took it is a dead letter, whoever published it (a
replay into the live topic, a backfill, a test tool). So is a bar from the future, one that
closes more than a clock's skew (`MAX_CLOCK_SKEW_SECONDS`) after Kafka took it: a feed publishes
a bar once it closed, and taken as the market it would make every real bar behind it a
duplicate or out of order until the clock caught up. The age is
measured against the message's Kafka timestamp, not the clock at processing, because the input
since the last snapshot is processed again after a crash, possibly minutes later, and must be
decided exactly as the first time (orders already sent are only recognised if decided again).

`resume` is also SPEC §4's manual reset of a halt: it lifts a pause and a halt (the kill switch,
the kill-switch loss, the minimum balance, a broker desync) in the engine and in the ledger.

Control commands need one more thing. Bytewax resumes each input at its snapshot position, but
the interleaving of `control` with the bars is not repeated: a kill applied after bar 100 could
be read after bar 60 on the replay, and the replayed decisions would differ from those already
sent. So the first application of a command is journaled with its place (after which source
bar) and its resolved effect (the parameters as read then); a replay applies it from the journal
at that same place and skips the copy that comes from Kafka.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import time
from time import time_ns
from typing import Any

from scalper.bars import PRICE_COLUMNS, is_on_tick, iso_utc
from scalper.brokers import Fill, OrderIntent
from scalper.calendar import SessionClock
from scalper.engine import Engine
from scalper.errors import ScalperError
from scalper.kafka.messages import Bar, Control, encode_bar
from scalper.ledger import JournalEntry, Ledger
from scalper.live.aggregator import NS_PER_SECOND, BarAggregator
from scalper.live.brokers import make_broker
from scalper.live.events import (
    Event,
    cancel_event,
    dead_letter,
    fill_event,
    order_event,
    risk_event,
)
from scalper.live.inbound import END_OF_DATA, Inbound
from scalper.live.settings import LiveSettings, symbol_params
from scalper.live.sink import OrderSink

DROPPED_STATUSES = ("rejected", "cancelled")
"""Ledger statuses of an order the broker will never fill (after `submit` accepted it)."""

RECENT_CLOSES = 1_000
"""Closes kept to warm up reloaded parameters: more than any lookback or RSI period in use."""

# Limits no real bar reaches: beyond them a value is garbage that would overflow the engine's
# 64-bit arithmetic or poison its rolling sums for good.
LATEST_TS = 7_258_118_400 * NS_PER_SECOND  # 2200-01-01
EARLIEST_TS = 10**18  # 2001-09-09: below it, epoch seconds or ms were sent as nanoseconds
MAX_CLOCK_SKEW_SECONDS = 5
"""How much earlier than a bar's close Kafka may stamp it: the feed's and the broker's clocks
disagree by that much at most (NTP keeps them within a second)."""
MAX_PRICE = 1e9
MAX_VOLUME = 10**12


@dataclass
class TraderState:
    """One symbol's state in the Bytewax snapshot."""

    symbol: str
    engine: Engine
    aggregator: BarAggregator
    last_ts: int | None = None  # the last source bar accepted
    bars_offset: int = -1  # the last message of `bars.<symbol>` processed
    control_offset: int = -1  # the last command applied, as its offset in `control`
    recent_closes: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_CLOSES))
    pending_params: dict[str, Any] | None = None  # approved, for the next session
    last_order_id: str | None = None  # the last order the broker accepted


class Desk:
    """One worker thread's ledger, broker and sink, and the trading logic that uses them."""

    def __init__(self, settings: LiveSettings) -> None:
        self.settings = settings
        self.ledger = Ledger(settings.ledger_path, background_checkpoints=True)
        self.broker = make_broker(settings, self.ledger)
        self.sink = OrderSink(
            self.ledger, self.broker, settings.max_position, settings.max_bar_age_seconds
        )
        self.journal = self.ledger.control_journal()
        self._source_ns = settings.source_seconds * NS_PER_SECOND
        self._max_age_ns = settings.max_bar_age_seconds * NS_PER_SECOND
        self._control = settings.namespace.control

    def close(self) -> None:
        """Disconnect the broker and close the ledger (a worker process just dies instead:
        everything that matters is in the ledger and at the broker already)."""
        close = getattr(self.broker, "close", None)
        if close is not None:
            close()
        self.ledger.close()

    def new_state(self, symbol: str) -> TraderState:
        params = self.settings.params[symbol]
        engine = Engine(dict(params), simulate_fills=False)
        aggregator = BarAggregator.of_seconds(
            symbol, params["bar_seconds"], self.settings.source_seconds
        )
        return TraderState(symbol, engine, aggregator)

    def step(self, state: TraderState | None, message: Inbound) -> tuple[TraderState, list[Event]]:
        """The dataflow's step for one symbol: its state after `message`, and what to publish.

        Messages of `bars.<symbol>` (bars, the end marker) are where commands are placed: a
        command journaled at this place but not applied yet (a replay) is applied around it.
        """
        if state is None:
            state = self.new_state(message.symbol)
        item = message.item
        if message.topic == self._control and isinstance(item, Control):
            return state, self.on_control(state, message, item)
        events: list[Event] = []
        journal = self.journal.get(state.symbol, ())
        unapplied = bool(journal) and journal[-1].offset > state.control_offset
        if unapplied:
            self._apply_journaled(state, message.offset, events, inclusive=False)
        state.bars_offset = message.offset
        if isinstance(item, Bar):
            self.on_bar(state, message, item, events)
        else:
            self.on_end(state, item, events)
        if unapplied:
            self._apply_journaled(state, message.offset, events, inclusive=True)
        return state, events

    # -- bars ------------------------------------------------------------------------------------

    def on_bar(self, state: TraderState, message: Inbound, bar: Bar, events: list[Event]) -> None:
        why = _wrong_unit(bar) or self._too_old(bar, message.published_ns)
        why = why or self._refusal(state, bar)
        if why is not None:
            key = state.symbol.encode()
            where = (message.topic, message.partition, message.offset)
            events.append(dead_letter(why, message.raw, *where, key))
            return
        state.last_ts = bar.ts
        for done in state.aggregator.add(bar):
            self._trade(state, done, events)

    def _too_old(self, bar: Bar, published_ns: int | None) -> str | None:
        """Why a live trader must not take this bar as the market now, or None (see the module
        docstring; a message without a Kafka timestamp is judged against the clock)."""
        if not self._max_age_ns:
            return None
        now = time_ns() if published_ns is None else published_ns
        age = now - (bar.ts + self._source_ns)
        if -MAX_CLOCK_SKEW_SECONDS * NS_PER_SECOND <= age <= self._max_age_ns:
            return None
        if age < 0:
            return (
                f"bar age: the bar at {_when(bar)} closes {-age / NS_PER_SECOND:,.0f} s after it "
                f"was published ({iso_utc(now)}): a bar from the future, not the market (a "
                "wrong clock or time at the producer, or bars shorter than "
                f"stream.source_bar_seconds = {self.settings.source_seconds})"
            )
        limit = self._max_age_ns // NS_PER_SECOND
        return (
            f"bar age: the bar at {_when(bar)} closed {age / NS_PER_SECOND:,.0f} s before "
            f"it was published ({iso_utc(now)}), beyond stream.max_bar_age_seconds = {limit}: a "
            "live worker trades no history (replay files with `scalper stream replay`)"
        )

    def _refusal(self, state: TraderState, bar: Bar) -> str | None:
        """Why a well-formed bar must not be used, or None (the decoder checked its form)."""
        if state.last_ts is not None and bar.ts <= state.last_ts:
            kind = "duplicate" if bar.ts == state.last_ts else "out of order"
            previous = iso_utc(state.last_ts)
            return f"{kind}: the bar at {_when(bar)} does not follow the previous one at {previous}"
        if bar.ts >= LATEST_TS:
            return f"bar ts {bar.ts} is beyond the year 2200"
        if bar.ts % self._source_ns:
            seconds = self.settings.source_seconds
            return f"the bar at {_when(bar)} is not on the {seconds}-second grid of source bars"
        if not 0 < bar.low <= bar.high < MAX_PRICE:
            return f"the bar at {_when(bar)} has prices outside (0, {MAX_PRICE:g})"
        tick = self.settings.params[state.symbol]["tick_size"]
        prices = (bar.open, bar.high, bar.low, bar.close)
        if not (  # spelt out: this runs for every bar, and all four are on the grid
            is_on_tick(prices[0], tick)
            and is_on_tick(prices[1], tick)
            and is_on_tick(prices[2], tick)
            and is_on_tick(prices[3], tick)
        ):  # no order fills there: a feed or instrument mix-up, never a real trade
            named = zip(PRICE_COLUMNS, prices, strict=True)
            off_tick = ", ".join(f"{n} {p!r}" for n, p in named if not is_on_tick(p, tick))
            return f"the bar at {_when(bar)} has prices off the {tick:g} tick grid: {off_tick}"
        if bar.volume >= MAX_VOLUME:
            return f"the bar at {_when(bar)} has a volume of {bar.volume}, beyond any real bar"
        return None

    def _trade(self, state: TraderState, bar: Bar, events: list[Event]) -> None:
        """One completed bar through the broker (fills first) and the engine (decision last)."""
        if state.pending_params is not None:
            self._reload_at_roll(state, state.pending_params, bar, events)
        for fill in self.broker.on_bar(state.symbol, bar):
            self._book_fill(state, fill, events)
        self._check_dropped(state, bar, events)
        try:
            order = state.engine.on_bar(bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume)
        except ValueError as exc:  # the engine's own bar check; the trader's should catch all
            why, raw = f"the engine refused the bar: {exc}", encode_bar(bar)[1]
            topic = self.settings.namespace.bars(state.symbol)
            events.append(dead_letter(why, raw, topic, None, None))
            return
        state.recent_closes.append(bar.close)
        if order is not None:
            self._send(state, order, events)

    def _check_dropped(self, state: TraderState, bar: Bar, events: list[Event]) -> None:
        """The order in flight was rejected or cancelled at the broker after `submit` took it
        (the broker has written that to the ledger): the engine stops waiting for its fill, at
        the bar where it first learned that, also when the bars are replayed after a crash."""
        order_id = state.last_order_id
        if order_id is None or not state.engine.order_in_flight():
            return
        row = self.ledger.order(order_id)
        if row is None or row["status"] not in DROPPED_STATUSES:
            return
        if self.ledger.drop_learned_at(order_id, bar.ts) > bar.ts:
            return  # a replayed bar before the news: the engine waited here the first time
        state.engine.on_reject()
        detail = f"{row['status']} by the broker: {row['detail'] or 'no reason given'}"
        events.append(self._risk(state.symbol, f"{order_id}-dropped", "order_rejected", detail))

    def _book_fill(self, state: TraderState, fill: Fill, events: list[Event]) -> None:
        engine = state.engine
        was_halted = engine.state()["halted"]
        try:
            trade = engine.on_fill(fill.ts, fill.action, fill.qty, fill.price, fill.reason)
        except ValueError as exc:  # broker and engine disagree: stop opening positions
            engine.halt()
            why = f"fill {fill.fill_id} does not match the engine's position: {exc}"
            self._halt(state.symbol, f"{fill.fill_id}-desync", "desync", why, events)
            return
        events.append(fill_event(fill, trade))
        if trade is None:
            return
        self.ledger.record_trade(fill.fill_id, state.symbol, trade)
        if not was_halted and engine.state()["halted"]:
            why = "the kill-switch loss or the minimum account balance was reached"
            self._halt(state.symbol, f"{fill.fill_id}-halted", "halted", why, events)

    def _send(self, state: TraderState, order: dict[str, Any], events: list[Event]) -> None:
        intent = OrderIntent.from_engine(state.symbol, order)
        decision = self.sink.submit(intent)
        events.append(order_event(intent, decision))
        if decision.accepted:
            state.last_order_id = intent.client_order_id
            return
        state.engine.on_reject()
        detail = decision.detail or decision.status
        refusal = getattr(self.broker, "refusal", None)  # IB says why it rejected an order
        why = refusal(intent.client_order_id) if refusal is not None else None
        if why is not None and decision.status == "rejected" and not decision.replayed:
            detail = f"{detail}: {why}"
        event_id = f"{intent.client_order_id}-refused"
        events.append(self._risk(state.symbol, event_id, "order_refused", detail))

    def _halt(self, symbol: str, event_id: str, event: str, why: str, events: list[Event]) -> None:
        self.ledger.set_halt(symbol, why)
        events.append(self._risk(symbol, event_id, event, why))

    def _risk(self, symbol: str, event_id: str, event: str, detail: str, **extra: Any) -> Event:
        """A risk event, recorded in the ledger for the operations flows and published."""
        self.ledger.record_risk_event(event_id, symbol, event, detail)
        return risk_event(event_id, symbol, event, detail, **extra)

    # -- end of a replayed file ------------------------------------------------------------------

    def on_end(self, state: TraderState, control: Control, events: list[Event]) -> None:
        """The last bucket, then SPEC §4.8: the position closes at the last close."""
        partial = state.aggregator.flush()
        if partial is not None:
            self._trade(state, partial, events)
        before = state.engine.state()
        last_ts = before["last_bar_ts"]
        if last_ts is not None:
            fill = self.broker.close_out(state.symbol, last_ts, state.recent_closes[-1])
            if before["order_in_flight"] and state.last_order_id is not None:
                events.append(cancel_event(state.symbol, state.last_order_id, END_OF_DATA))
            if fill is not None:
                self._book_fill(state, fill, events)
            if state.engine.state()["order_in_flight"]:  # an entry decided at the last bar
                state.engine.on_reject()
        event_id = f"{state.symbol}-{END_OF_DATA}-{control.issued_at}"
        done = self._risk(
            state.symbol,
            event_id,
            END_OF_DATA,
            "the replayed data is complete",
            issued_at=control.issued_at,
            last_bar_ts=last_ts,
        )
        events.append(done)

    # -- control commands ------------------------------------------------------------------------

    def on_control(self, state: TraderState, message: Inbound, control: Control) -> list[Event]:
        if message.offset <= state.control_offset:
            return []
        entries = self.journal.setdefault(state.symbol, [])
        entry = next((e for e in reversed(entries) if e.offset == message.offset), None)
        if entry is None:
            payload = self._resolve(state.symbol, control)
            entry = JournalEntry(message.offset, state.bars_offset, control.command, payload)
            self.ledger.journal_control(state.symbol, entry)
            entries.append(entry)
        elif entry.after_offset != state.bars_offset:
            return []  # a replay: the journal applies it among the bars where it first acted
        events: list[Event] = []
        self._apply(state, entry, events)
        return events

    def _apply_journaled(
        self, state: TraderState, offset: int, events: list[Event], *, inclusive: bool
    ) -> None:
        """Apply the journaled commands due before (or, `inclusive`, right after) the message
        of `bars.<symbol>` at `offset`."""
        for entry in self.journal[state.symbol]:
            if entry.offset <= state.control_offset:
                continue
            if entry.after_offset > offset or (entry.after_offset == offset and not inclusive):
                return
            self._apply(state, entry, events)

    def _resolve(self, symbol: str, control: Control) -> dict[str, Any]:
        """What applying `control` needs, fixed now so that a replay does exactly the same."""
        payload: dict[str, Any] = {"reason": control.reason, "issued_at": control.issued_at}
        if control.command == "reload_params":
            payload |= self._approved_params(symbol)
        return payload

    def _approved_params(self, symbol: str) -> dict[str, Any]:
        """The approved parameters for `symbol` (`params`), or why they cannot be used (`error`)."""
        from scalper.research import approved_params_path, load_approved_params

        path = approved_params_path()
        try:  # approved on market data for this symbol (its provenance), else refused
            cfg = load_approved_params(self.settings.config_path, path, symbol)
            params = symbol_params(cfg, symbol)
        except ScalperError as exc:
            return {"error": str(exc)}
        if params["bar_seconds"] != self.settings.params[symbol]["bar_seconds"]:
            return {"error": f"{path}: a running worker cannot change strategy.bar_seconds"}
        return {"params": params, "source": str(path)}

    def _apply(self, state: TraderState, entry: JournalEntry, events: list[Event]) -> None:
        state.control_offset = entry.offset
        symbol, command, payload = state.symbol, entry.command, entry.payload
        event_id = f"{symbol}-{command}-{entry.offset}"
        reason = payload["reason"] or command
        if command == "kill":
            self._kill(state, event_id, reason, events)
        elif command == "pause":
            state.engine.pause_entries(True)
            events.append(self._risk(symbol, event_id, command, reason))
        elif command == "resume":
            self._resume(state, event_id, reason, events)
        elif "error" in payload:
            events.append(self._risk(symbol, event_id, "reload_refused", payload["error"]))
        else:
            state.pending_params = payload["params"]
            detail = f"{payload['source']} applies at the next session roll"
            events.append(self._risk(symbol, event_id, "reload_pending", detail))

    def _kill(self, state: TraderState, event_id: str, reason: str, events: list[Event]) -> None:
        """Halt, cancel a working entry at the broker, and flatten at once through the sink."""
        before = state.engine.state()
        working_entry = before["order_in_flight"] and before["position"] == 0
        exit_order = state.engine.kill()
        self._halt(state.symbol, event_id, "kill", f"kill switch: {reason}", events)
        if working_entry and state.last_order_id is not None:
            self.broker.cancel(state.symbol)
            events.append(cancel_event(state.symbol, state.last_order_id, "kill switch"))
        if exit_order is not None:
            self._send(state, exit_order, events)

    def _resume(self, state: TraderState, event_id: str, reason: str, events: list[Event]) -> None:
        """Lift a pause and a halt: SPEC §4's manual reset, in the engine and in the ledger
        (whose halt the sink checks on its own). The event says what was lifted."""
        before = state.engine.state()
        halt = self.ledger.halt_reason(state.symbol)
        lifted = ["the pause"] if before["entries_paused"] else []
        if before["halted"] or halt is not None:
            lifted.append(f"the halt ({halt})" if halt is not None else "the halt")
        state.engine.pause_entries(False)
        state.engine.reset_halt()
        self.ledger.clear_halt(state.symbol)
        what = " and ".join(lifted) if lifted else "nothing (neither paused nor halted)"
        events.append(self._risk(state.symbol, event_id, "resume", f"{reason}: lifted {what}"))

    def _reload_at_roll(
        self, state: TraderState, params: dict[str, Any], bar: Bar, events: list[Event]
    ) -> None:
        """Approved parameters take over at the first bar of a new session (SPEC §4.1's roll)."""
        session = _session_of(params, bar.ts)
        if session == state.engine.state()["session"]:
            return
        state.engine.reload(params, list(state.recent_closes))
        state.pending_params = None
        detail = f"approved parameters in force from session {session}"
        event_id = f"{state.symbol}-reload-{session}"
        events.append(self._risk(state.symbol, event_id, "reload_applied", detail))


def _wrong_unit(bar: Bar) -> str | None:
    """Why the bar's time is in another unit than ns, or None: checked before its age, which
    would only say '54 years old' where the cause is a unit."""
    if bar.ts < EARLIEST_TS:
        return f"bar ts {bar.ts} is before 2001: epoch seconds or ms sent as nanoseconds?"
    return None


def _when(bar: Bar) -> str:
    return iso_utc(bar.ts)


def _session_of(params: dict[str, Any], ts: int) -> str:
    """The session date of `ts` under `params`' calendar, as the engine writes it."""
    seconds = params["session_end"]
    clock = SessionClock(
        params["timezone"], time(seconds // 3600, seconds // 60 % 60, seconds % 60)
    )
    return clock.session_date(ts).isoformat()


def trader_step(
    settings: LiveSettings,
) -> Callable[[TraderState | None, Inbound], tuple[TraderState, list[Event]]]:
    """The dataflow's stateful step; each worker thread opens its own desk on first use, as
    SQLite connections must stay in the thread that opened them."""
    local = threading.local()

    def step(state: TraderState | None, message: Inbound) -> tuple[TraderState, list[Event]]:
        desk = getattr(local, "desk", None)
        if desk is None:
            desk = local.desk = Desk(settings)
        return desk.step(state, message)

    return step
