"""The live trader's parts without Kafka: the aggregator against `resample`, the ledger, the
paper broker's replay rule, the sink's exactly-once and independent check, the decoder's routing,
and the trader replaying after crashes (with commands read at other places than the first time).
"""

from __future__ import annotations

import pickle
import random
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalper.brokers import Fill, OrderIntent
from scalper.brokers.paper import PaperBroker
from scalper.config import load_config
from scalper.engine import engine_params
from scalper.kafka.messages import Bar, Control, encode_bar, encode_control
from scalper.kafka.topics import DEAD_LETTER, LIVE, Namespace
from scalper.ledger import Ledger
from scalper.live.aggregator import BarAggregator
from scalper.live.inbound import Decoder, Inbound
from scalper.live.settings import LiveSettings
from scalper.live.sink import OrderSink
from scalper.live.trader import Desk, TraderState
from scalper.resample import resample
from scalper.simulate import simulate_bars
from tests.shared import CONFORMANCE, expected_rows, write_approved
from tests.stream_support import bars_of, case_bars, end_marker, inbound, rows, write_config

NS = 10**9
BASE = 1_717_977_600 * NS  # 2024-06-10T00:00:00Z, a Monday
CASE = CONFORMANCE / "02_stops_targets"  # stops, targets and signals all fire


# ---------------------------------------------------------------------------------------------
# The aggregator


def aggregate(frame: pl.DataFrame, bar_seconds: int, source: int) -> list[tuple]:
    aggregator = BarAggregator.of_seconds("MES", bar_seconds, source)
    out = [done for bar in bars_of(frame, "MES") for done in aggregator.add(bar)]
    last = aggregator.flush()
    return [tuple(bar[:6]) for bar in [*out, *([last] if last else [])]]


@st.composite
def source_bars(draw: st.DrawFn) -> tuple[pl.DataFrame, int, int]:
    """Source bars on their grid at random slots (gaps anywhere), valid OHLCV on ticks."""
    source, bar_seconds = draw(st.sampled_from([(5, 60), (5, 15), (60, 300), (60, 60)]))
    slots = sorted(draw(st.sets(st.integers(0, 3_000), min_size=1, max_size=150)))
    n = len(slots)
    opens = draw(st.lists(st.integers(4000, 4100), min_size=n, max_size=n))
    closes = draw(st.lists(st.integers(4000, 4100), min_size=n, max_size=n))
    spread = draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    frame = pl.DataFrame(
        {
            "ts": [BASE + slot * source * NS for slot in slots],
            "open": [o * 0.25 for o in opens],
            "high": [(max(o, c) + s) * 0.25 for o, c, s in zip(opens, closes, spread, strict=True)],
            "low": [(min(o, c) - s) * 0.25 for o, c, s in zip(opens, closes, spread, strict=True)],
            "close": [c * 0.25 for c in closes],
            "volume": draw(st.lists(st.integers(0, 900), min_size=n, max_size=n)),
        }
    )
    return frame, bar_seconds, source


@settings(max_examples=200, deadline=None)
@given(series=source_bars())
def test_the_aggregator_makes_the_bars_resample_makes(
    series: tuple[pl.DataFrame, int, int],
) -> None:
    frame, bar_seconds, source = series
    expected = resample(frame, bar_seconds, source_seconds=source).rows()
    assert aggregate(frame, bar_seconds, source) == expected


def test_five_second_bars_make_the_one_minute_bars_of_resample() -> None:
    five = simulate_bars(date(2024, 6, 10), 1, bar_seconds=5)
    expected = resample(five.drop("symbol"), 60, source_seconds=5).rows()
    assert len(expected) == 1_380  # a whole Globex session: 23 hours of 1-minute bars
    assert aggregate(five, 60, 5) == expected


def test_a_bucket_is_emitted_with_its_last_source_bar_and_a_gap_emits_the_partial_one() -> None:
    aggregator = BarAggregator.of_seconds("MES", 60, 5)
    bar = Bar(BASE, 100.0, 101.0, 99.0, 100.5, 3, "MES")
    assert aggregator.add(bar) == ()
    done = aggregator.add(bar._replace(ts=BASE + 55 * NS, close=100.0))  # ends at :60
    assert [tuple(b[:6]) for b in done] == [(BASE, 100.0, 101.0, 99.0, 100.0, 6)]
    assert aggregator.add(bar._replace(ts=BASE + 60 * NS)) == ()
    after_gap = aggregator.add(bar._replace(ts=BASE + 235 * NS))  # the last bar of :180-:240
    assert [b.ts for b in after_gap] == [BASE + 60 * NS, BASE + 180 * NS]
    assert aggregator.flush() is None


# ---------------------------------------------------------------------------------------------
# Ledger, paper broker and sink


def params() -> dict:
    return engine_params(load_config(None))


def intent(seq: int, action: str = "BUY", kind: str = "entry", bar_ts: int = BASE) -> OrderIntent:
    order = {
        "session": "2024-06-10",
        "seq": seq,
        "action": action,
        "qty": 1,
        "kind": kind,
        "reason": None if kind == "entry" else "signal",
        "bar_ts": bar_ts,
        "decided_ts": bar_ts + 60 * NS,
        "stop_loss_ticks": 12,  # 3 points: outside `minute`'s range, not `minute(2, 4990)`
        "take_profit_ticks": 0,
    }
    return OrderIntent.from_engine("MES", order)


def minute(i: int, price: float = 5000.0) -> Bar:
    return Bar(BASE + i * 60 * NS, price, price + 1.0, price - 2.0, price, 10, "MES")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    yield ledger
    ledger.close()


def test_the_sink_sends_an_intent_once_and_answers_it_again_with_the_first_decision(
    ledger: Ledger,
) -> None:
    broker = PaperBroker(ledger, {"MES": params()})
    sink = OrderSink(ledger, broker, max_position=1)
    first = sink.submit(intent(1))
    again = sink.submit(intent(1))
    assert (first.accepted, first.status, first.replayed) == (True, "sent", False)
    assert (again.accepted, again.status, again.replayed) == (True, "sent", True)
    assert [o["send_count"] for o in ledger.orders()] == [1]
    assert broker.received() == {"MES-2024-06-10-0001": 1}


def test_the_sink_refuses_an_id_already_used_by_another_order(ledger: Ledger) -> None:
    sink = OrderSink(ledger, PaperBroker(ledger, {"MES": params()}), max_position=1)
    sink.submit(intent(1))
    other = sink.submit(intent(1, action="SELL"))
    assert not other.accepted
    assert "already names a different order" in (other.detail or "")


def test_the_sinks_independent_check_refuses_entries_but_never_exits(ledger: Ledger) -> None:
    broker = PaperBroker(ledger, {"MES": params()})
    sink = OrderSink(ledger, broker, max_position=1)
    assert sink.submit(intent(1)).accepted
    working = sink.submit(intent(2, bar_ts=BASE + 1))
    assert working.status == "refused" and "still working" in (working.detail or "")
    broker.on_bar("MES", minute(1))  # the entry fills: the ledger holds +1
    holding = sink.submit(intent(3, bar_ts=BASE + 2))
    assert "holds +1" in (holding.detail or "")
    ledger.set_halt("MES", "kill switch: test")
    assert "halted" in (sink.submit(intent(4, bar_ts=BASE + 3)).detail or "")
    assert sink.submit(intent(5, action="SELL", kind="exit", bar_ts=BASE + 4)).accepted


def test_the_sink_refuses_entries_beyond_the_configured_size(ledger: Ledger) -> None:
    sink = OrderSink(ledger, PaperBroker(ledger, {"MES": params()}), max_position=1)
    too_big = sink.submit(intent(1)._replace(qty=2))
    assert too_big.status == "refused" and "position limit of 1" in (too_big.detail or "")


def test_the_paper_broker_answers_bars_it_has_seen_from_its_records(ledger: Ledger) -> None:
    broker = PaperBroker(ledger, {"MES": params()})
    broker.submit(intent(1))
    entry = broker.on_bar("MES", minute(1))
    stopped = broker.on_bar("MES", minute(2, price=4990.0))  # through the 4-tick stop
    assert [f.reason for f in entry + stopped] == [None, "stop"]
    assert broker.on_bar("MES", minute(3)) == []
    restarted = PaperBroker(ledger, {"MES": params()})  # as after a crash: state from SQLite
    assert restarted.on_bar("MES", minute(1)) == entry
    assert restarted.on_bar("MES", minute(2, price=4990.0)) == stopped
    assert restarted.on_bar("MES", minute(3)) == []
    assert restarted.position("MES") == 0
    assert ledger.position("MES") == 0


def test_the_paper_broker_writes_nothing_for_quiet_bars(ledger: Ledger) -> None:
    broker = PaperBroker(ledger, {"MES": params()})
    broker.on_bar("MES", minute(1))
    assert ledger.connection.execute("SELECT count(*) FROM paper_books").fetchone()[0] == 0
    changes = ledger.connection.total_changes
    for i in range(2, 50):
        broker.on_bar("MES", minute(i))
    assert ledger.connection.total_changes == changes


def test_the_paper_broker_counts_a_repeated_order_and_executes_it_once(ledger: Ledger) -> None:
    broker = PaperBroker(ledger, {"MES": params()})
    assert broker.submit(intent(1))
    assert broker.submit(intent(1))
    broker.on_bar("MES", minute(1))
    assert broker.position("MES") == 1
    assert broker.received() == {"MES-2024-06-10-0001": 2}


def test_a_workers_ledger_checkpoints_its_log_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committing thread never copies the log into the database (that stalls an order for
    milliseconds); a background thread does, so the database file grows while it writes."""
    monkeypatch.setattr("scalper.ledger.CHECKPOINT_SECONDS", 0.1)
    worker = Ledger(tmp_path / "worker.sqlite", background_checkpoints=True)
    empty = (tmp_path / "worker.sqlite").stat().st_size
    for i in range(200):
        worker.record_risk_event(f"e{i}", "MES", "test", "x" * 2_000)
    deadline = time.monotonic() + 10
    while (tmp_path / "worker.sqlite").stat().st_size == empty and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "worker.sqlite").stat().st_size > empty
    worker.close()


def test_a_fill_is_recorded_once_and_moves_the_position_once(ledger: Ledger) -> None:
    fill = Fill("X-1", "X-1", "MES", BASE, "SELL", 2, 5000.0, "entry", None)
    assert ledger.record_fill(fill)
    assert not ledger.record_fill(fill)
    assert ledger.position("MES") == -2


# ---------------------------------------------------------------------------------------------
# The decoder


def test_commands_for_all_symbols_fan_out_and_misplaced_ones_are_dead_letters() -> None:
    decode = Decoder(["MES", "MNQ"], LIVE)
    kill = encode_control(Control("kill", "*"))[1]
    assert [m.symbol for m in decode(LIVE.control, 0, 7, b"*", kill)] == ["MES", "MNQ"]
    for topic, value in [
        (LIVE.control, encode_control(Control("end_of_data", "MES"))[1]),
        (LIVE.control, encode_control(Control("pause", "ES"))[1]),
        (LIVE.bars("MES"), encode_control(Control("kill", "MES"))[1]),
        (LIVE.bars("MES"), encode_bar(minute(1)._replace(symbol="MNQ"))[1]),
        (LIVE.bars("MES"), b"\xff"),
    ]:
        (out,) = decode(topic, 0, 1, b"MES", value)
        assert out[0] == DEAD_LETTER, value
    end = encode_control(Control("end_of_data", "MES"))[1]
    replay = Namespace.of_replay("r1")
    (marker,) = Decoder(["MES"], replay)(replay.bars("MES"), 0, 3, b"MES", end)
    assert isinstance(marker, Inbound)
    (letter,) = decode(LIVE.bars("MES"), 0, 3, b"MES", end)  # a live market never ends
    assert letter[0] == DEAD_LETTER and b"a live market has no end of data" in letter[2]


def test_a_price_too_large_for_a_float_is_a_dead_letter_not_a_crash() -> None:
    huge = b'{"v":1,"ts":1,"open":1' + b"0" * 400 + b',"high":1,"low":1,"close":1,"volume":1,'
    (letter,) = Decoder(["MES"], LIVE)(LIVE.bars("MES"), 0, 1, b"MES", huge + b'"symbol":"MES"}')
    assert letter[0] == DEAD_LETTER and b"not a finite number" in letter[2]


# ---------------------------------------------------------------------------------------------
# The trader


def settings_for(
    folder: Path, case: Path = CASE, max_bar_age_seconds: int = 0, **sections: dict
) -> LiveSettings:
    """A live worker's settings for `case`. The trading-logic tests feed it June 2024 in-process
    and compare with the backtest, so by default no age limit stops entries decided then (the
    sink judges those by the wall clock); the age tests set one."""
    overrides = yaml.safe_load((case / "config.yaml").read_text()) or {}
    stream = {"source_bar_seconds": 60, "max_bar_age_seconds": max_bar_age_seconds}
    config = write_config(folder / "config.yaml", overrides, stream=stream, **sections)
    return LiveSettings.load(config, folder / "run")


def feed(
    desk: Desk, state: TraderState | None, messages: list[Inbound]
) -> tuple[TraderState, list]:
    events = []
    for message in messages:
        state, out = desk.step(state, message)
        events.extend(out)
    assert state is not None
    return state, events


def test_the_trader_refuses_bad_bars_with_a_reason_and_keeps_going(tmp_path: Path) -> None:
    desk = Desk(settings_for(tmp_path))
    good = [minute(i) for i in range(3)]
    state, _ = feed(desk, None, list(inbound(good)))
    bad = [
        (minute(2), "duplicate"),
        (minute(1), "out of order"),
        (minute(3)._replace(ts=BASE + 3 * 60 * NS + NS), "grid"),
        (minute(3)._replace(low=-1.0, open=-1.0, close=-1.0), "prices outside"),
        (minute(3)._replace(high=1e300), "prices outside"),
        (minute(3)._replace(volume=2**62), "volume"),
        (minute(3)._replace(ts=2**63 - 60 * NS), "beyond the year 2200"),
    ]
    unchanged = pickle.dumps(state)
    for offset, (bar, why) in enumerate(bad, 3):
        (letter,) = desk.step(state, next(inbound([bar], offset)))[1]
        assert letter[0] == DEAD_LETTER and why in letter[2].decode(), letter
        assert pickle.dumps(replace(state, bars_offset=2)) == unchanged  # read, not used


def test_a_bar_from_the_future_is_refused_and_the_market_goes_on(tmp_path: Path) -> None:
    """A bar is published once it closed: one that closes minutes after Kafka took it (a
    producer's wrong clock, a mangled time) is no market data. Taken within the history limit,
    it made every real bar behind it 'out of order' until the clock caught up: minutes without
    an exit or an end-of-day flatten."""
    desk = Desk(settings_for(tmp_path, max_bar_age_seconds=300))
    now = minute(3).ts + 60 * NS  # the wall clock when minute 3 closed
    state, _ = feed(desk, None, [published(minute(i), i, now) for i in range(3)])
    (letter,) = desk.step(state, published(minute(5), 3, now))[1]  # closes two minutes ahead
    assert "closes 120 s after it was published" in letter[2].decode()
    state, events = desk.step(state, published(minute(3), 4, now + NS))
    assert state.last_ts == minute(3).ts and not events
    state, events = desk.step(state, published(minute(4), 5, now + 60 * NS - 2 * NS))  # skew
    assert state.last_ts == minute(4).ts and not events
    # A feed of 5-second bars to a worker told they last a minute: each bar on the minute
    # grid was taken as a whole minute; published 5 s after its start, it is refused instead.
    (letter,) = desk.step(state, published(minute(5), 6, minute(5).ts + 5 * NS))[1]
    assert "closes 55 s after it was published" in letter[2].decode()
    assert "or bars shorter than stream.source_bar_seconds = 60" in letter[2].decode()


def published(bar: Bar, offset: int, at: int | None) -> Inbound:
    """`bar` as the decoder hands it on, taken by Kafka at `at` (epoch ns; None: unknown)."""
    return next(inbound([bar], offset))._replace(published_ns=at)


def test_a_live_trader_dead_letters_history_by_the_time_kafka_took_the_bar(
    tmp_path: Path,
) -> None:
    """Issue 10 item 2: old bars published to a live worker's topic are never traded."""
    desk = Desk(settings_for(tmp_path, max_bar_age_seconds=300))
    state, _ = feed(desk, None, list(inbound([minute(i) for i in range(3)])))
    closed = minute(3).ts + 60 * NS
    unchanged = pickle.dumps(state)
    for at, why in [
        (closed + 301 * NS, "closed 301 s before it was published"),
        (closed - 6 * NS, "closes 6 s after it was published"),  # a bar from the future
        (None, "before it was published"),  # no Kafka time: judged by the clock, June 2024 is old
    ]:
        for _ in range(2):  # read again after a crash: decided the same way
            (letter,) = desk.step(state, published(minute(3), 3, at))[1]
            reason = letter[2].decode()
            assert letter[0] == DEAD_LETTER and "bar age: " in reason and why in reason, reason
            assert "stream.max_bar_age_seconds = 300" in reason or "from the future" in reason
            assert pickle.dumps(replace(state, bars_offset=2)) == unchanged
    state, events = desk.step(state, published(minute(3), 3, closed + 299 * NS))
    assert state.last_ts == minute(3).ts and not events


def test_a_live_worker_catching_up_opens_no_position_on_an_old_decision(tmp_path: Path) -> None:
    """Bars published live while the worker was down pass the age check (Kafka took them in
    time), but an entry decided at their close, long ago by the wall clock, is refused and
    recorded, so a restart that decides it again gets the same answer and sends nothing."""
    settings = settings_for(tmp_path, max_bar_age_seconds=300)
    bars = list(inbound(bars_of(case_bars(CASE).head(1_500), "MES")))
    for _ in range(2):  # the second time: a restart from no snapshot, the ledger kept
        desk = Desk(settings)
        feed(desk, None, bars)
        entries = [o for o in desk.ledger.orders("MES") if o["kind"] == "entry"]
        assert entries and all(o["status"] == "refused" for o in entries)
        assert all(o["detail"].startswith("stale: decided at 2024-") for o in entries)
        assert desk.broker.received() == {} and desk.ledger.trades("MES") == []
        desk.close()


def test_a_replay_worker_takes_history_and_cannot_trade_at_ib(tmp_path: Path) -> None:
    ibkr = {"broker": {"kind": "ibkr", "port": 4002, "account": "DU1234567"}}
    settings = LiveSettings.load(
        write_config(tmp_path / "ib.yaml", ibkr), tmp_path / "run", replay="r1"
    )
    assert settings.cfg.broker.kind == "paper" and settings.max_bar_age_seconds == 0
    assert all(topic.startswith("replay.r1.") for topic in settings.topics)
    desk = Desk(settings)
    assert isinstance(desk.broker, PaperBroker)
    bar = minute(0)
    message = Inbound("MES", bar, encode_bar(bar)[1], settings.namespace.bars("MES"), 0, 0)
    state, events = desk.step(None, message)  # published now, two years after it closed
    assert state.last_ts == bar.ts and not events
    desk.close()
    live_ib = LiveSettings.load(write_config(tmp_path / "ib.yaml", ibkr), tmp_path / "live")
    with pytest.raises(ValueError, match="paper broker only"):
        replace(live_ib, namespace=Namespace.of_replay("r2"))


def test_a_replay_worker_trades_the_replayed_instrument_whatever_stream_symbols_lists(
    tmp_path: Path,
) -> None:
    """A replay publishes the configured instrument's file; a worker reading only the other
    symbols of `stream.symbols` made it wait a minute for a topic nobody created."""
    others = write_config(tmp_path / "mnq.yaml", {"stream": {"symbols": ["MNQ", "NQ"]}})
    settings = LiveSettings.load(others, tmp_path / "run", replay="r1")
    assert settings.symbols == ("MES",)
    assert settings.topics == ["replay.r1.bars.MES", "replay.r1.control"]
    assert LiveSettings.load(others, tmp_path / "live").symbols == ("MNQ", "NQ")


def test_a_trader_with_its_data_complete_trades_exactly_as_the_backtest(tmp_path: Path) -> None:
    desk = Desk(settings_for(tmp_path))
    bars = bars_of(case_bars(CASE), "MES")
    feed(desk, None, [*inbound(bars), end_marker("MES", len(bars))])
    assert rows(desk.ledger.trades("MES")) == expected_rows(CASE)


def control(command: str, offset: int, symbol: str = "MES") -> Inbound:
    message = Control(command, symbol, reason="test", issued_at=offset)
    return Inbound(symbol, message, encode_control(message)[1], LIVE.control, 0, offset)


def reorder_journaled(
    messages: list[Inbound], journaled: set[int], rng: random.Random
) -> list[Inbound]:
    """The remaining input as a replay may read it: commands applied before the crash come at
    other places among the bars (Bytewax does not repeat the interleaving of two topics)."""
    moved = [m for m in messages if m.topic == LIVE.control and m.offset in journaled]
    kept = [m for m in messages if m not in moved]
    for message in moved:
        kept.insert(rng.randint(0, len(kept)), message)
    return kept


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_trader_replaying_after_crashes_trades_the_same_and_sends_nothing_twice(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Crash anywhere, resume from any earlier snapshot: the same trades, each order sent once."""
    bars = bars_of(case_bars(CASE).head(2_500), "MES")
    n = len(bars)
    commands = data.draw(st.sampled_from([["pause", "resume"], ["kill"], ["kill", "resume"], []]))
    places = sorted(
        data.draw(st.lists(st.integers(0, n), min_size=len(commands), max_size=len(commands)))
    )
    messages: list[Inbound] = list(inbound(bars))
    for offset, (command, place) in reversed(list(enumerate(zip(commands, places, strict=True)))):
        messages.insert(place, control(command, offset))
    messages.append(end_marker("MES", n))

    reference = Desk(settings_for(tmp_path_factory.mktemp("reference")))
    feed(reference, None, messages)

    desk = Desk(settings_for(tmp_path_factory.mktemp("crashed")))
    crashes = sorted(data.draw(st.lists(st.integers(1, len(messages) - 1), min_size=1, max_size=4)))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    snapshots: list[tuple[int, bytes | None]] = [(0, None)]
    state: TraderState | None = None
    position = 0
    for crash in [*crashes, len(messages)]:
        while position < crash:
            state, _ = desk.step(state, messages[position])
            position += 1
            if rng.random() < 0.01:  # Bytewax snapshots now and then
                snapshots.append((position, pickle.dumps(state)))
        if crash == len(messages):
            break
        desk.ledger.close()  # the crash: everything since the last snapshot is lost ...
        settings = desk.settings
        desk = Desk(settings)  # ... but the ledger and the paper exchange keep theirs
        position, snapshot = snapshots[-1]
        state = None if snapshot is None else pickle.loads(snapshot)
        journaled = {e.offset for e in desk.journal.get("MES", [])}
        messages[position:] = reorder_journaled(messages[position:], journaled, rng)

    assert desk.ledger.trades("MES") == reference.ledger.trades("MES")
    sent = [o for o in desk.ledger.orders() if o["status"] != "refused"]
    assert all(o["send_count"] == 1 for o in sent)
    assert set(desk.broker.received().values()) <= {1}
    assert [o["client_order_id"] for o in desk.ledger.orders()] == [
        o["client_order_id"] for o in reference.ledger.orders()
    ]


def test_commands_from_the_journal_apply_where_they_first_did(tmp_path: Path) -> None:
    """A kill read at another place on a replay acts where it acted the first time."""
    settings = settings_for(tmp_path)
    bars = list(inbound(bars_of(case_bars(CASE).head(600), "MES")))
    first = Desk(settings)
    state, _ = feed(first, None, bars[:300])
    snapshot = pickle.dumps(state)
    state, _ = feed(first, state, [control("kill", 0), *bars[300:]])
    halted_at = first.ledger.risk_events("MES")
    trades = first.ledger.trades("MES")
    first.ledger.close()

    again = Desk(settings)  # restart from the snapshot; the kill now comes before bar 350
    state, _ = feed(
        again, pickle.loads(snapshot), [*bars[300:350], control("kill", 0), *bars[350:]]
    )
    assert again.ledger.trades("MES") == trades
    assert again.ledger.risk_events("MES") == halted_at
    assert state.engine.state()["halted"]


def test_resume_is_the_manual_reset_of_a_halt_and_lifts_a_pause(tmp_path: Path) -> None:
    """`resume` after a kill: the engine and the ledger are no longer halted, entries come
    again, and the risk event says what was lifted; after a pause it lifts the pause."""
    desk = Desk(settings_for(tmp_path))
    bars = list(inbound(bars_of(case_bars(CASE).head(1_500), "MES")))
    state, _ = feed(desk, None, [*bars[:300], control("kill", 0), *bars[300:600]])
    assert state.engine.state()["halted"]
    assert desk.ledger.halt_reason("MES") == "kill switch: test"
    halted_entries = [o for o in desk.ledger.orders("MES") if o["kind"] == "entry"]
    state, events = feed(desk, state, [control("resume", 1)])
    assert not state.engine.state()["halted"] and desk.ledger.halt_reason("MES") is None
    [resumed] = [e for e in desk.ledger.risk_events("MES") if e["event"] == "resume"]
    assert resumed["detail"] == "test: lifted the halt (kill switch: test)"
    assert [e for e in events if b"resume" in e[2]], "the resume is published"
    state, _ = feed(desk, state, [*bars[600:1_000], control("pause", 2), control("resume", 3)])
    entries = [o for o in desk.ledger.orders("MES") if o["kind"] == "entry"]
    assert len(entries) > len(halted_entries), "no entry after the reset"
    assert all(o["status"] != "refused" for o in entries[len(halted_entries) :])
    details = [e["detail"] for e in desk.ledger.risk_events("MES") if e["event"] == "resume"]
    assert details[-1] == "test: lifted the pause"
    desk.close()


def test_a_payload_decodes_alike_by_the_quick_path_and_field_by_field() -> None:
    """`decode_bar`'s quick check of the common case agrees with the checks that name reasons."""
    from scalper.kafka.messages import _checked_bar, _is_plain_bar

    rng = random.Random(5)
    values = [0, 1, -1.5, 2.5, 1e308, float("inf"), "1", None, True, 2**63, 5000.25]
    for _ in range(3_000):
        payload = {f: rng.choice(values) for f in ("open", "high", "low", "close")}
        payload |= {"ts": rng.choice([BASE, -1, 2**63, 1.0]), "volume": rng.choice([0, 5, -1])}
        payload["symbol"] = rng.choice(["MES", "**", 5])
        try:
            checked = _checked_bar(payload)
        except ValueError:
            checked = None
        bar = Bar._make(payload[f] for f in Bar._fields)
        if _is_plain_bar(bar):
            assert checked == bar, payload


def test_a_decoder_that_raises_makes_a_dead_letter_not_a_poison_pill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(value: bytes | None) -> Bar:
        raise RuntimeError("a bug in a codec")

    monkeypatch.setattr("scalper.live.inbound.decode_bar", broken)
    (letter,) = Decoder(["MES"], LIVE)(LIVE.bars("MES"), 0, 1, b"MES", encode_bar(minute(1))[1])
    assert letter[0] == DEAD_LETTER and b"undecodable: RuntimeError" in letter[2]


def test_a_live_bar_off_the_tick_grid_or_in_another_time_unit_is_a_dead_letter(
    tmp_path: Path,
) -> None:
    """Issue 10 item 7: no order fills at a price off the instrument's grid (a feed or an
    instrument mix-up), and a time in ms is not 1970: such bars are refused with the reason."""
    desk = Desk(settings_for(tmp_path))  # MES: tick 0.25
    state, _ = feed(desk, None, list(inbound([minute(i) for i in range(3)])))
    unchanged = pickle.dumps(state)
    off = [
        (minute(3, 5000.1), "off the 0.25 tick grid: open 5000.1, high 5001.1, low 4998.1, "),
        (minute(3)._replace(high=5001.3), "off the 0.25 tick grid: high 5001.3"),
        # The same class: a time in another unit, which read as ns lands in 1970.
        (minute(3)._replace(ts=minute(3).ts // 10**6), "before 2001: epoch seconds or ms"),
    ]
    for offset, (bar, why) in enumerate(off, 3):
        (letter,) = desk.step(state, next(inbound([bar], offset)))[1]
        reason = letter[2].decode()
        assert letter[0] == DEAD_LETTER and why in reason, reason
        assert pickle.dumps(replace(state, bars_offset=2)) == unchanged  # read, not used
    state, events = desk.step(state, next(inbound([minute(3, 5000.25)], 5)))
    assert state.last_ts == minute(3).ts and not events
    (tmp_path / "live").mkdir()
    live = Desk(settings_for(tmp_path / "live", max_bar_age_seconds=300))  # the age limit on
    in_ms = published(minute(0)._replace(ts=minute(0).ts // 10**6), 0, minute(1).ts)
    (letter,) = live.step(None, in_ms)[1]
    assert "before 2001: epoch seconds or ms" in letter[2].decode()  # the cause, not its age


def test_paper_trading_without_an_exchange_calendar_is_warned_and_the_calendar_reaches_it(
    tmp_path: Path,
) -> None:
    """SPEC §4.9: live mode refuses no calendar at load; a paper worker warns; a replay (history,
    in its own namespace) does not; the worker's engine gets the calendar's early closes."""
    plain = write_config(tmp_path / "plain.yaml", {})
    (warning,) = LiveSettings.load(plain, tmp_path / "a").cfg.warnings
    assert "session.calendar = null: no exchange calendar" in warning
    assert "an error in live mode" in warning
    assert LiveSettings.load(plain, tmp_path / "b", replay="r1").cfg.warnings == ()
    cme = write_config(tmp_path / "cme.yaml", {"session": {"calendar": "CME_Equity"}})
    settings = LiveSettings.load(cme, tmp_path / "c")
    assert settings.cfg.warnings == ()
    thanksgiving = (date(2024, 11, 28) - date(1970, 1, 1)).days
    assert (thanksgiving, 13 * 3600) in settings.params["MES"]["early_closes"]


@pytest.mark.parametrize(
    ("provenance", "event", "why"),
    [
        ({"data_source": "file", "symbol": "MES"}, "reload_pending", "next session"),
        ({"data_source": "simulator", "symbol": "MES"}, "reload_refused", "simulated"),
        ({"data_source": "ibkr", "symbol": "MNQ"}, "reload_refused", "for MNQ, not"),
        (None, "reload_refused", "no provenance"),
        ({"data_source": "file", "symbol": "MES", "config_hash": "0" * 64}, "reload_refused",
         "approved with other trading settings"),
    ],
)  # fmt: skip
def test_a_worker_loads_only_parameters_approved_on_market_data_for_its_symbol(
    provenance: dict | None, event: str, why: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The worker checks the provenance again, per symbol: a reload sent by hand (or for a
    worker trading several symbols) cannot bring simulated or another symbol's parameters,
    nor parameters approved under other trading settings."""
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path / "home"))
    approved = tmp_path / "home" / "research" / "approved_params.yaml"
    settings = settings_for(tmp_path)
    write_approved(approved, settings.config_path, provenance or {}, strategy={"lookback": 15})
    if provenance is None:
        approved.write_text("strategy: {lookback: 15}\n")
    desk = Desk(settings)
    feed(desk, None, [control("reload_params", 0)])
    [reload] = [e for e in desk.ledger.risk_events("MES") if e["event"].startswith("reload")]
    desk.close()
    assert reload["event"] == event and why in reload["detail"]
