"""The live stream against a real Kafka broker: Kafka → Bytewax → paper broker.

Every conformance case replays to exactly its trades; hostile input lands in `dead-letter` and
changes no trade; the kill switch, pause/resume and parameter reloads act where they should;
several workers and two processes trade two symbols, each as its backtest; `scalper stream
replay --trades-out` runs a session end to end. Each run has its own run folder and its own topic
namespace (history is a replay's, never a live worker's: `test_replay_isolation`), whose input
starts at the current end of the topics, so runs never see each other's messages.

Commands are placed exactly by running the dataflow in phases: each phase reads its topics to
the end and stops, and the next resumes from its snapshot, as a restarted worker does.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalper.errors import ScalperError
from scalper.kafka.broker import KafkaBroker, free_port
from scalper.kafka.clients import publish, read_topic
from scalper.kafka.messages import Bar, Control, decode_dead_letter, encode, encode_bar
from scalper.ledger import Ledger
from scalper.live.replay import wait_for_end
from scalper.live.settings import LiveSettings
from scalper.live.worker import (
    claim_worker_slot,
    end_offsets,
    prepare_run,
    start_worker,
    stop_worker,
)
from tests.shared import (
    CASES,
    CONFORMANCE,
    assert_one_line_error,
    bars_path,
    case_ids,
    expected_rows,
    first_difference,
    run,
    write_approved,
)
from tests.stream_support import (
    Rows,
    backtest_rows,
    bars_of,
    case_bars,
    case_config,
    ledger_rows,
    publish_bars,
    replay_settings,
    run_to_end,
    send_command,
    start_run,
    write_config,
)

SIGNALS = CONFORMANCE / "01_signals_only"
MINUTE = 60 * 10**9


def iso(ts: int) -> str:
    """A bar time as the trades CSV writes it."""
    return datetime.fromtimestamp(ts // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def orders_and_risk(live: LiveSettings) -> tuple[list[dict], list[dict]]:
    ledger = Ledger(live.ledger_path)
    try:
        return ledger.orders("MES"), ledger.risk_events("MES")
    finally:
        ledger.close()


# ---------------------------------------------------------------------------------------------
# Live/backtest parity


@pytest.mark.parametrize("case", CASES, ids=case_ids())
def test_a_replay_through_kafka_trades_exactly_as_the_conformance_case(
    case: Path, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    config = case_config(case, tmp_path, kafka_broker.bootstrap)
    live = start_run(config, tmp_path / "run")
    publish_bars(live, bars_of(case_bars(case), "MES"), "MES", end=True)
    run_to_end(live)
    problem = first_difference(ledger_rows(live, "MES"), expected_rows(case))
    assert problem is None, problem


# ---------------------------------------------------------------------------------------------
# Bad input: each maker builds a hostile message from the valid bar before it


Maker = Callable[[Bar], bytes]


def _raw(raw: bytes) -> Maker:
    return lambda prev: raw


def _without(name: str) -> Maker:
    def make(prev: Bar) -> bytes:
        fields = {"v": 1, **prev._asdict()}
        del fields[name]
        return json.dumps(fields).encode()

    return make


def _with(name: str, value: Any) -> Maker:
    return lambda prev: json.dumps({"v": 1, **prev._asdict(), name: value}).encode()


def _nan(name: str) -> Maker:
    def make(prev: Bar) -> bytes:
        fields = {"v": 1, **prev._asdict(), name: "__NaN__"}
        return json.dumps(fields).replace('"__NaN__"', "NaN").encode()

    return make


def _refused(**changes: Any) -> Maker:
    """A well-formed bar the trader refuses (order, grid, range), built from the one before."""

    def make(prev: Bar) -> bytes:
        values = {k: v(prev) if callable(v) else v for k, v in changes.items()}
        return encode_bar(prev._replace(**values))[1]

    return make


FIELDS = Bar._fields
HOSTILE: st.SearchStrategy[Maker] = st.one_of(
    st.binary(max_size=80).map(_raw),
    st.text(max_size=40).map(lambda text: _raw(text.encode())),
    st.sampled_from([b"", b"[]", b"1", b"null", b'"bar"', b"{", b'{"v":1}', b"\xff\xfe"]).map(_raw),
    st.sampled_from(FIELDS).map(_without),
    st.tuples(
        st.sampled_from(FIELDS),
        st.sampled_from(["5000", None, True, [1], {"x": 1}, "", -1, 2**64, 10**400]),
    ).map(lambda change: _with(*change)),
    st.sampled_from(["open", "high", "low", "close"]).map(_nan),
    st.sampled_from([0, 2, None, "1"]).map(lambda v: _with("v", v)),
    st.sampled_from(
        [
            _refused(),  # a duplicate of the bar before
            _refused(ts=lambda p: p.ts - MINUTE),  # out of order
            _refused(ts=lambda p: p.ts - 7 * MINUTE),
            _refused(ts=lambda p: p.ts + 10**9),  # off the minute grid
            _refused(ts=2**63 - 1),  # huge
            _refused(open=-5.0, high=-1.0, low=-9.0, close=-2.0),  # negative prices
            _refused(open=0.0, high=0.0, low=0.0, close=0.0),
            _refused(high=1e300, open=1e300, close=1e300),
            _refused(high=1e9),
            _refused(volume=2**62),
            _refused(high=lambda p: p.low - 1.0),  # high below low
            _refused(symbol="MNQ"),  # another symbol's bar on bars.MES
            _raw(encode({"command": "kill", "symbol": "MES", "reason": "", "issued_at": 1})),
        ]
    ),
)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_hostile_input_lands_in_dead_letter_and_changes_no_trade(
    kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    folder = tmp_path_factory.mktemp("hostile")
    config = case_config(SIGNALS, folder, kafka_broker.bootstrap)
    frame = case_bars(SIGNALS).head(1_500)
    bars = bars_of(frame, "MES")
    places = st.tuples(st.integers(1, len(bars) - 1), HOSTILE)
    hostile = sorted(data.draw(st.lists(places, min_size=1, max_size=30)), key=lambda h: h[0])
    live = start_run(config, folder / "run")
    bars_topic, control = live.namespace.bars("MES"), live.namespace.control
    first = Ledger(live.ledger_path).start_offset(bars_topic, 0)
    assert first is not None
    messages: list[tuple[bytes | None, bytes]] = []
    bad: dict[int, bytes] = {}
    for i, bar in enumerate(bars):
        for make in (m for place, m in hostile if place == i):
            bad[first + len(messages)] = make(bars[i - 1])
            messages.append((b"MES", bad[first + len(messages)]))
        messages.append(encode_bar(bar))
    publish(live.bootstrap, bars_topic, messages)
    publish_bars(live, [], "MES", end=True)
    commands = data.draw(st.lists(JUNK_COMMANDS, max_size=5))
    first_command = Ledger(live.ledger_path).start_offset(control, 0)
    publish(live.bootstrap, control, [(b"*", raw) for raw in commands])
    run_to_end(live)

    assert ledger_rows(live, "MES") == backtest_rows(frame, config)
    assert dead_letters(live, bars_topic) == bad
    assert dead_letters(live, control) == {first_command + i: c for i, c in enumerate(commands)}


JUNK_COMMANDS = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            encode({"command": "flatten", "symbol": "*", "issued_at": 1}),
            encode({"command": "kill", "symbol": "MNQ", "issued_at": 1}),  # not traded here
            encode({"command": "end_of_data", "symbol": "MES", "issued_at": 1}),  # not in-band
            encode({"command": "pause", "symbol": "MES"}),
            encode({"command": "kill", "symbol": "MES", "issued_at": -1}),
        ]
    ),
)


def dead_letters(live: LiveSettings, topic: str) -> dict[int, bytes | None]:
    """The raw messages of `topic` that went to `dead-letter`, by offset, since the run began;
    each with its reason."""
    ledger = Ledger(live.ledger_path)
    start = ledger.start_offset(topic, 0)
    ledger.close()
    assert start is not None
    letters = [
        decode_dead_letter(r.value) for r in read_topic(live.bootstrap, live.namespace.dead_letter)
    ]
    ours = [
        letter
        for letter in letters
        if not isinstance(letter, str)
        and letter.topic == topic
        and letter.offset is not None
        and letter.offset >= start
    ]
    assert all(letter.reason for letter in ours)
    return {letter.offset: letter.raw for letter in ours if letter.offset is not None}


# ---------------------------------------------------------------------------------------------
# Control


@pytest.fixture
def phased(kafka_broker: KafkaBroker, tmp_path: Path) -> LiveSettings:
    """A run folder for phased runs of the signals-only case."""
    config = case_config(SIGNALS, tmp_path, kafka_broker.bootstrap)
    return start_run(config, tmp_path / "run")


def long_trade(trades: Rows, bars: list[Bar], after: int) -> tuple[int, int]:
    """(index of the trade, index of its entry bar) of the first trade after trade `after`
    that stays open for at least four bars."""
    index = {iso(bar.ts): i for i, bar in enumerate(bars)}
    for k, trade in enumerate(trades[after:], after):
        if index[trade["exit_ts"]] - index[trade["entry_ts"]] >= 4:
            return k, index[trade["entry_ts"]]
    raise AssertionError("no long trade")


def test_the_kill_switch_flattens_at_once_and_no_entry_follows(phased: LiveSettings) -> None:
    live = phased
    frame = case_bars(SIGNALS).head(2_000)
    bars = bars_of(frame, "MES")
    trades = backtest_rows(frame, str(live.config_path))
    k, entry = long_trade(trades, bars, after=2)
    publish_bars(live, bars[: entry + 2], "MES")  # the position is open now
    run_to_end(live, recover=True)
    send_command(live, Control("kill", "MES", reason="test"))
    run_to_end(live, recover=True)
    publish_bars(live, bars[entry + 2 :], "MES", end=True)
    run_to_end(live, recover=True)

    got = ledger_rows(live, "MES")
    assert got[:k] == trades[:k]
    assert len(got) == k + 1  # halted: no entry after the kill
    entered, killed = trades[k], got[k]
    assert (killed["entry_ts"], killed["entry_price"]) == (
        entered["entry_ts"],
        entered["entry_price"],
    )
    assert (killed["exit_ts"], killed["exit_reason"]) == (iso(bars[entry + 2].ts), "kill")
    orders, risk = orders_and_risk(live)
    kill_order = next(o for o in orders if o["reason"] == "kill")
    assert not [o for o in orders if o["kind"] == "entry" and o["bar_ts"] > kill_order["bar_ts"]]
    assert "kill" in [e["event"] for e in risk]
    ledger = Ledger(live.ledger_path)
    assert ledger.halt_reason("MES") == "kill switch: test"
    ledger.close()


def test_pause_stops_entries_not_exits_and_resume_restores_them(phased: LiveSettings) -> None:
    live = phased
    frame = case_bars(SIGNALS).head(3_000)
    bars = bars_of(frame, "MES")
    trades = backtest_rows(frame, str(live.config_path))
    k, entry = long_trade(trades, bars, after=3)
    pause_at, resume_at = entry + 1, entry + 600
    publish_bars(live, bars[:pause_at], "MES")
    run_to_end(live, recover=True)
    send_command(live, Control("pause", "MES"))
    run_to_end(live, recover=True)
    publish_bars(live, bars[pause_at:resume_at], "MES")
    run_to_end(live, recover=True)
    send_command(live, Control("resume", "*"))
    run_to_end(live, recover=True)
    publish_bars(live, bars[resume_at:], "MES", end=True)
    run_to_end(live, recover=True)

    assert ledger_rows(live, "MES")[: k + 1] == trades[: k + 1]  # the open trade exited
    orders, risk = orders_and_risk(live)
    paused = range(bars[pause_at].ts, bars[resume_at].ts)
    entries = [o["bar_ts"] for o in orders if o["kind"] == "entry"]
    assert not [ts for ts in entries if ts in paused]
    assert [ts for ts in entries if ts >= bars[resume_at].ts]
    assert [e["event"] for e in risk if e["event"] in ("pause", "resume")] == ["pause", "resume"]


def test_approved_parameters_apply_from_the_next_session(
    phased: LiveSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = phased
    home = tmp_path / "home"
    monkeypatch.setenv("SCALPER_HOME", str(home))
    market = {"data_source": "file", "symbol": "MES"}  # market data, this symbol
    write_approved(home / "research" / "approved_params.yaml", live.config_path, market,
                   risk={"stop_loss_ticks": 8}, strategy={"lookback": 15})  # fmt: skip
    bars = bars_of(case_bars(SIGNALS).head(3_000), "MES")
    publish_bars(live, bars[:700], "MES")  # into the first whole session
    run_to_end(live, recover=True)
    send_command(live, Control("reload_params", "MES"))
    run_to_end(live, recover=True)
    publish_bars(live, bars[700:], "MES", end=True)
    run_to_end(live, recover=True)

    orders, risk = orders_and_risk(live)
    kinds = [e["event"] for e in risk]
    assert kinds.index("reload_pending") < kinds.index("reload_applied")
    applied = next(e for e in risk if e["event"] == "reload_applied")
    session = applied["event_id"].rsplit("-reload-", 1)[1]
    reloaded_in = next(o["session"] for o in orders if o["bar_ts"] >= bars[699].ts)
    assert session > reloaded_in  # not in the session of the command: at the next one
    assert {o["stop_loss_ticks"] for o in orders if o["session"] < session} == {0}
    assert {o["stop_loss_ticks"] for o in orders if o["session"] >= session} == {8}


# ---------------------------------------------------------------------------------------------
# Several workers and processes


def two_symbols(folder: Path, bootstrap: str) -> LiveSettings:
    overrides = yaml.safe_load((SIGNALS / "config.yaml").read_text())
    config = write_config(
        folder / "two.yaml",
        overrides,
        kafka={"bootstrap": bootstrap},
        stream={"symbols": ["MES", "MNQ"], "source_bar_seconds": 60, "workers": 2},
    )
    settings = replay_settings(config, folder / "run")
    prepare_run(settings, processes=2)
    return settings


def trade_both(live: LiveSettings, start: Callable[[], list[Any]]) -> None:
    """Publish SIGNALS' bars as MES and as MNQ, run workers, compare with each backtest."""
    frame = case_bars(SIGNALS)
    since = end_offsets(live.bootstrap, [live.namespace.risk_events])
    for symbol in live.symbols:
        publish_bars(live, bars_of(frame, symbol), symbol, end=True, issued_at=7)
    workers = start()

    def alive() -> bool:
        return all(worker.poll() is None for worker in workers)

    try:
        for symbol in live.symbols:
            wait_for_end(live.bootstrap, symbol, 7, since, 120, alive)
    finally:
        for worker in workers:
            stop_worker(worker)
    for symbol in live.symbols:
        expected = backtest_rows(frame, str(live.config_path), symbol)
        assert ledger_rows(live, symbol) == expected, symbol
    assert ledger_rows(live, "MES") != ledger_rows(live, "MNQ")  # MNQ's point value is $2


def test_two_workers_in_one_process_trade_two_symbols_as_their_backtests(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    live = two_symbols(tmp_path, kafka_broker.bootstrap)
    with open(tmp_path / "worker.log", "wb") as log:
        trade_both(live, lambda: [start_worker(live, workers=2, log=log)])


def test_two_processes_trade_two_symbols_as_their_backtests(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    live = two_symbols(tmp_path, kafka_broker.bootstrap)
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    with ExitStack() as stack:
        logs = [stack.enter_context(open(tmp_path / f"worker-{i}.log", "wb")) for i in range(2)]

        def start() -> list[Any]:
            return [
                start_worker(live, workers=1, process_id=i, addresses=addresses, log=logs[i])
                for i in range(2)
            ]

        trade_both(live, start)


# ---------------------------------------------------------------------------------------------
# The command line


def test_stream_replay_runs_a_session_end_to_end_and_writes_the_backtests_trades(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    case = CONFORMANCE / "09_five_minute_bars"  # the file's 5-minute bars are the source bars
    overrides = yaml.safe_load((case / "config.yaml").read_text())
    config = write_config(
        tmp_path / "c.yaml", overrides, kafka={"bootstrap": kafka_broker.bootstrap}
    )
    out = tmp_path / "trades.csv"
    args = ["--config", config, "--data", str(bars_path(case)), "--trades-out", str(out)]
    proc = run("stream", "replay", *args, home=tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    assert f"{len(expected_rows(case))} trades" in proc.stdout
    with open(out, newline="") as handle:
        problem = first_difference(list(csv.DictReader(handle)), expected_rows(case))
    assert problem is None, problem


def test_stream_commands_report_mistakes_in_one_line(tmp_path: Path) -> None:
    bad_speed = run("stream", "replay", "--data", "x.csv", "--speed", "0", home=tmp_path)
    assert bad_speed.returncode == 2 and "'0' is not 'max' or a positive number" in bad_speed.stderr
    missing = run("stream", "replay", "--data", str(tmp_path / "none.csv"), home=tmp_path)
    assert_one_line_error(missing, "no such file")


def test_one_worker_per_run_folder_even_when_starts_race(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    """The folder's worker lock, not the pid file, decides: a second start is refused before it
    touches the folder, and a SIGKILLed worker leaves no lock behind for its restart."""
    config = case_config(CONFORMANCE / "01_signals_only", tmp_path, kafka_broker.bootstrap)
    live = start_run(config, tmp_path / "run")
    prepare_run(live)
    with open(tmp_path / "worker.log", "wb") as log:
        first = start_worker(live, log=log)
        try:
            (live.run_dir / "worker-0.pid").unlink()  # a lost pid file must not matter
            with pytest.raises(ScalperError, match="already runs"):
                start_worker(live, log=log)
        finally:
            first.kill()
            first.wait(10)
        stop_worker(start_worker(live, log=log))  # the lock died with the killed worker


def test_stream_run_is_refused_while_the_folder_s_worker_lock_is_held(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = write_config(tmp_path / "c.yaml", {}, kafka={"bootstrap": "127.0.0.1:1"})
    run_dir = home / "stream"
    run_dir.mkdir(parents=True)
    held = claim_worker_slot(run_dir, None)  # as a running worker holds it
    try:
        proc = run("stream", "run", "--config", config, home=home)
    finally:
        os.close(held)
    assert_one_line_error(proc, "a stream worker already runs for")
    assert not (run_dir / "recovery").exists()  # refused before preparing anything
