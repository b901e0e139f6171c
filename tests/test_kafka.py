"""The Kafka infrastructure against a real broker: topics, the message envelope, the CLI.

The codec tests need no broker; everything else runs on the session's `kafka_broker` or, for the
CLI, on brokers the `scalper` command itself starts in temporary data directories.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.admin import ConfigResource, ConfigResourceType
from scalper._engine import parse_plain_bar

from scalper.errors import ScalperError
from scalper.kafka import messages
from scalper.kafka.broker import LIBS_ENV, STOP_TIMEOUT, KafkaBroker, default_libs, free_port
from scalper.kafka.clients import admin_client, publish, read_topic, send_control
from scalper.kafka.messages import (
    Bar,
    Control,
    DeadLetter,
    decode,
    decode_bar,
    decode_control,
    decode_dead_letter,
    encode,
    encode_bar,
    encode_dead_letter,
)
from scalper.kafka.topics import (
    CONTROL,
    DEAD_LETTER,
    DEAD_LETTER_MAX_BYTES,
    LIVE,
    Namespace,
    delete_replay_topics,
    ensure_topics,
    topic_specs,
)
from tests.shared import SCALPER, assert_one_line_error, run

MINUTE_NS = 60 * 1_000_000_000
T0 = 1_717_000_000 * 1_000_000_000


def make_bar(i: int, symbol: str = "MES") -> Bar:
    close = 5000.0 + 0.25 * (i % 7)
    return Bar(T0 + i * MINUTE_NS, close - 0.5, close + 1.0, close - 1.25, close, 10 + i, symbol)


def bar_payload(**changes: object) -> bytes:
    payload = {"v": 1, "ts": T0, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5}
    payload |= {"volume": 3, "symbol": "MES", **changes}
    return json.dumps({k: v for k, v in payload.items() if v is not ...}).encode()


# ---------------------------------------------------------------------------------------------
# Topics


def test_topics_are_created_with_their_specs_and_only_once(kafka_broker: KafkaBroker) -> None:
    symbols = ["TOPX", "TOPY"]
    specs = topic_specs(symbols)
    created = ensure_topics(kafka_broker.bootstrap, symbols)
    assert {"bars.TOPX", "bars.TOPY"} <= set(created)
    assert ensure_topics(kafka_broker.bootstrap, symbols) == []

    admin = admin_client(kafka_broker.bootstrap)
    try:
        described = {t["name"]: t for t in admin.describe_topics([s.name for s in specs])}
        resources = [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs]
        modified = admin.describe_configs(resources)["topic"]
    finally:
        admin.close()
    for spec in specs:
        assert len(described[spec.name]["partitions"]) == spec.partitions, spec.name
        configs = {key: entry["value"] for key, entry in modified[spec.name].items()}
        assert configs == spec.configs, spec.name


def test_a_bars_topic_made_before_it_had_to_be_stamped_by_the_broker_is_brought_to_it(
    kafka_broker: KafkaBroker,
) -> None:
    """A bars topic left by an older version (or made by hand) stamps messages with the
    producer's time (CreateTime): a producer could then date old bars 'now' and a live worker
    would trade them. Preparing the topics switches it to the broker's append time."""
    admin = admin_client(kafka_broker.bootstrap)
    try:
        admin.create_topics({"bars.OLDT": {"num_partitions": 1, "configs": {}}})
    finally:
        admin.close()
    ensure_topics(kafka_broker.bootstrap, ["OLDT"])
    week_ago_ms = int(time.time() * 1000) - 7 * 86_400_000
    publish(kafka_broker.bootstrap, "bars.OLDT", [(b"OLDT", bar_payload(symbol="OLDT"))])
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    producer.send("bars.OLDT", b"backdated", key=b"OLDT", timestamp_ms=week_ago_ms).get(10)
    producer.close()
    stamps = [record.timestamp for record in read_topic(kafka_broker.bootstrap, "bars.OLDT")]
    assert len(stamps) == 2
    assert min(stamps) > week_ago_ms + 86_400_000  # the broker's clock, not the producer's


def test_a_dead_letter_topic_made_before_it_had_to_hold_a_full_message_is_brought_to_it(
    kafka_broker: KafkaBroker,
) -> None:
    """A dead letter carries a whole bad message: on a dead-letter topic with the broker's
    default size limit it cannot be published, and the worker stops on it at every restart."""
    namespace = Namespace.of_replay("oldletters")
    admin = admin_client(kafka_broker.bootstrap)
    try:
        admin.create_topics({namespace.dead_letter: {"num_partitions": 1, "configs": {}}})
    finally:
        admin.close()
    ensure_topics(kafka_broker.bootstrap, [], namespace)
    admin = admin_client(kafka_broker.bootstrap)
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, namespace.dead_letter)
        configs = admin.describe_configs([resource])["topic"][namespace.dead_letter]
    finally:
        admin.close()
    assert configs["max.message.bytes"]["value"] == str(DEAD_LETTER_MAX_BYTES)


def test_bars_topics_hold_one_ordered_partition_and_control_one_total_order() -> None:
    specs = {s.name: s for s in topic_specs(["MES", "MES", "ES"])}
    assert list(specs)[:2] == ["bars.MES", "bars.ES"]  # duplicates dropped, order kept
    assert specs["bars.MES"].partitions == specs[CONTROL].partitions == 1
    assert specs["orders"].partitions > 1


@pytest.mark.parametrize("symbol", ["", "M ES", "bars.MES", "MES/1", "X" * 33])
def test_a_symbol_that_cannot_name_a_topic_is_refused(symbol: str) -> None:
    with pytest.raises(ScalperError, match="cannot name a Kafka topic"):
        LIVE.bars(symbol)


def test_a_replay_namespace_shares_no_topic_and_no_consumer_group_with_the_live_one() -> None:
    replay = Namespace.of_replay("MES-20240610T000000")
    live_names = {spec.name for spec in topic_specs(["MES", "ES"])}
    names = {spec.name for spec in topic_specs(["MES", "ES"], replay)}
    assert len(names) == len(live_names) and not names & live_names
    assert all(name.startswith("replay.MES-20240610T000000.") for name in names)
    assert replay.bars("MES") == "replay.MES-20240610T000000.bars.MES"
    assert replay.consumer_group != LIVE.consumer_group and not replay.is_live
    for bad in ["", "a.b", "x" * 65, "../live"]:
        with pytest.raises(ScalperError, match="cannot name Kafka topics"):
            Namespace.of_replay(bad)
    with pytest.raises(ValueError, match="never deleted"):
        delete_replay_topics("127.0.0.1:9", LIVE)


# ---------------------------------------------------------------------------------------------
# Messages through the broker


def test_bars_round_trip_through_the_broker_keyed_by_symbol(kafka_broker: KafkaBroker) -> None:
    ensure_topics(kafka_broker.bootstrap, ["RTRIP"])
    bars = [make_bar(i, "RTRIP") for i in range(500)]
    assert publish(kafka_broker.bootstrap, LIVE.bars("RTRIP"), map(encode_bar, bars)) == 500
    records = read_topic(kafka_broker.bootstrap, LIVE.bars("RTRIP"), at_least=500)
    assert [decode_bar(r.value) for r in records] == bars
    assert {r.key for r in records} == {b"RTRIP"}


def test_control_commands_round_trip(kafka_broker: KafkaBroker) -> None:
    ensure_topics(kafka_broker.bootstrap, [])
    sent = [Control("kill", "MES", reason="manual"), Control("resume"), Control("reload_params")]
    for control in sent:
        send_control(kafka_broker.bootstrap, control)
    records = read_topic(kafka_broker.bootstrap, CONTROL, at_least=len(sent))
    received = [(r.key, decode_control(r.value)) for r in records]
    assert [(c.symbol.encode(), c) for c in sent] == received[-len(sent) :]


def test_dead_letters_keep_any_raw_payload_up_to_a_full_size_message(
    kafka_broker: KafkaBroker,
) -> None:
    ensure_topics(kafka_broker.bootstrap, [])
    letters = [
        DeadLetter("not JSON", b"\xff\xfe garbage", "bars.MES", partition=0, offset=41),
        DeadLetter("empty message (no value)", None, "bars.MES"),
        DeadLetter("too big", os.urandom(1_000_000), "bars.MES", partition=0, offset=42),
    ]
    publish(kafka_broker.bootstrap, DEAD_LETTER, (encode_dead_letter(d, b"MES") for d in letters))
    records = read_topic(kafka_broker.bootstrap, DEAD_LETTER, at_least=len(letters))
    assert [decode_dead_letter(r.value) for r in records][-3:] == letters


# ---------------------------------------------------------------------------------------------
# Decoding never raises and never passes a bad bar


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty message"),
        (b"", "not JSON"),
        (b"\xff\x00", "not UTF-8"),
        (b'{"v": 1, "ts": 1', "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "not usable JSON"),
        (b'{"v": 1, "ts": ' + b"9" * 5000 + b"}", "not usable JSON"),
        (bar_payload(v=2), "version 2"),
        (bar_payload(v=True), "version True"),
        (bar_payload(v=...), "version None"),
        (bar_payload(close=...), "no 'close'"),
        (bar_payload(close="1.5"), "close '1.5' is not a finite number"),
        (bar_payload(close=True), "close True is not a finite number"),
        (b'{"v": 1, "close": NaN}', "NaN is not a number"),
        (bar_payload().replace(b'"high": 2.0', b'"high": 1e400'), "high inf"),
        (bar_payload(ts=1.5e18), "ts 1.5e+18 is not a non-negative 64-bit integer"),
        (bar_payload(ts=-1), "ts -1"),
        (bar_payload(ts=2**63), "ts 9223372036854775808"),
        (bar_payload(volume=-3), "volume -3"),
        (bar_payload(symbol="x" * 1000), "symbol 'xxxx"),
        (bar_payload(symbol=None), "symbol None"),
        (bar_payload(high=0.9), "high 0.9 is below"),
        (bar_payload(low=1.2), "low 1.2 is above"),
    ],
)
def test_bad_bars_decode_to_a_reason(value: bytes | None, reason: str) -> None:
    decoded = decode_bar(value)
    assert isinstance(decoded, str)
    assert reason in decoded
    assert len(decoded) < 200  # hostile values are quoted short


def test_a_valid_bar_payload_decodes_and_integers_are_prices() -> None:
    assert decode_bar(bar_payload(open=1, extra="ignored")) == Bar(T0, 1.0, 2.0, 0.5, 1.5, 3, "MES")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"command": "flatten", "issued_at": 1}, "not one of kill, pause, resume, reload_params"),
        ({"command": "kill", "symbol": "MES"}, "no 'issued_at'"),
        ({"command": "kill", "issued_at": 1}, "no 'symbol'"),
        ({"command": "kill", "issued_at": 1, "symbol": "**"}, "symbol '**'"),
        ({"command": "pause", "symbol": "*", "issued_at": 1, "reason": 5}, "reason 5 is not a"),
        ({"command": "pause", "symbol": "*", "issued_at": 1, "reason": "\ud800"}, "not a Unicode"),
    ],
)
def test_bad_control_commands_decode_to_a_reason(payload: dict[str, object], reason: str) -> None:
    decoded = decode_control(encode(payload))
    assert isinstance(decoded, str)
    assert reason in decoded


@given(st.binary())
def test_arbitrary_bytes_never_raise(value: bytes) -> None:
    for decoder in (decode, decode_bar, decode_control, decode_dead_letter):
        decoder(value)


any_text = st.text(st.characters(exclude_categories=()), max_size=20)  # lone surrogates too
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
message_fields = st.sampled_from(
    sorted({*Bar._fields, *(f.name for k in (Control, DeadLetter) for f in fields(k)), "encoding"})
)


@given(st.dictionaries(message_fields, json_values))
def test_arbitrary_json_objects_never_raise(payload: dict[str, object]) -> None:
    value = json.dumps({"v": 1, **payload}).encode()  # NaN and Infinity included
    for decoder in (decode_bar, decode_control, decode_dead_letter):
        decoded = decoder(value)
        assert isinstance(decoded, str | Bar | Control | DeadLetter)


finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)


@given(
    st.integers(0, 2**63 - 1), finite, finite, finite, finite, st.integers(0, 2**63 - 1),
    st.sampled_from(["MES", "ES", "MNQ", "NQ"]),
)  # fmt: skip
def test_valid_bars_round_trip_exactly(
    ts: int, a: float, b: float, c: float, d: float, volume: int, symbol: str
) -> None:
    low, open_, close, high = sorted((a, b, c, d))
    bar = Bar(ts, open_, high, low, close, volume, symbol)
    key, value = encode_bar(bar)
    assert key == symbol.encode()
    assert decode_bar(value) == bar
    assert parse_plain_bar(value) is not None  # what the encoder writes takes the fast path
    assert exactly(python_decoded(value)) == exactly(bar)


def python_decoded(value: bytes | None) -> Bar | str:
    """The Python decoder alone, without the engine's fast path for the common form."""
    return messages._decoded(value, messages._bar)


def exactly(decoded: Bar | str) -> object:
    """What must match to the bit: types and float representations (-0.0 is not 0.0)."""
    return decoded if isinstance(decoded, str) else [(type(x), repr(x)) for x in decoded]


# Numbers as JSON text in every spelling a sender may use: Python's repr, exponents, long
# decimal expansions (rounding), integers, negative zero, out-of-range and non-finite ones.
number_text = st.one_of(
    finite.map(repr),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**64), 2**64).map(str),
    st.tuples(st.integers(0, 10**6), st.text("0123456789", min_size=1, max_size=30)).map(
        lambda t: f"{t[0]}.{t[1]}"
    ),
    st.tuples(finite, st.integers(-320, 320)).map(lambda t: f"{t[0]!r}e{t[1]}"),
    st.sampled_from(["-0.0", "0.0", "1e400", "-1e400", "NaN", "true", "null", '"1.5"', "5000"]),
)
symbol_text = st.sampled_from(['"MES"', '"M\\u0045S"', '"bars.MES"', '""', '"ES"', "1", '"x' * 2])
bar_keys = ("v", "ts", "open", "high", "low", "close", "volume", "symbol")


@given(
    st.lists(
        st.tuples(st.sampled_from([*bar_keys, "extra"]), number_text | symbol_text),
        max_size=12,
    ),
    st.booleans(),
)
def test_the_fast_path_decodes_exactly_as_the_python_decoder(
    fields_: list[tuple[str, str]], plain_first: bool
) -> None:
    """Whatever the message, the engine's fast path and the Python decoder agree to the bit:
    same bar or a refusal (then the Python decoder's reason). Keys may repeat or be missing."""
    plain = [("v", "1"), ("ts", str(T0)), ("open", "1.0"), ("high", "2.0"), ("low", "0.5"),
             ("close", "1.5"), ("volume", "3"), ("symbol", '"MES"')]  # fmt: skip
    pairs = [*plain, *fields_] if plain_first else fields_
    value = ("{" + ",".join(f'"{k}": {v}' for k, v in pairs) + "}").encode()
    assert exactly(decode_bar(value)) == exactly(python_decoded(value))


@given(st.binary(max_size=2000), st.text(max_size=50))
def test_dead_letters_restore_the_exact_raw_bytes(raw: bytes, reason: str) -> None:
    letter = DeadLetter(reason, raw, "bars.MES", partition=0, offset=7)
    assert decode_dead_letter(encode_dead_letter(letter)[1]) == letter


# ---------------------------------------------------------------------------------------------
# The broker's life cycle and the CLI


def write_config(path: Path, port: int) -> Path:
    path.write_text(f'kafka: {{bootstrap: "127.0.0.1:{port}"}}\n')
    return path


@pytest.fixture
def shared_jars(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let `scalper` processes in temporary data directories use the shared jar cache."""
    monkeypatch.setenv(LIBS_ENV, str(default_libs()))


@pytest.mark.usefixtures("shared_jars")
def test_cli_up_status_down_and_a_warm_restart(tmp_path: Path) -> None:
    port = free_port()
    config = str(write_config(tmp_path / "config.yaml", port))
    home = tmp_path / "home"
    try:
        up = run("kafka", "up", "--config", config, home=home)
        assert up.returncode == 0, up.stderr
        assert f"started at 127.0.0.1:{port}" in up.stdout
        assert "topics created: bars.MES, orders, fills, risk-events, control, dead-letter" in (
            up.stdout
        )
        status = run("kafka", "status", home=home)
        assert status.returncode == 0
        assert f"running at 127.0.0.1:{port}" in status.stdout

        again = run("kafka", "up", "--config", config, home=home)
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
        assert "topics: all present" in again.stdout

        down = run("kafka", "down", home=home)
        assert down.returncode == 0
        assert "stopped (pid" in down.stdout
        assert run("kafka", "status", home=home).returncode == 1

        warm = run("kafka", "up", "--config", config, home=home)
        assert warm.returncode == 0, warm.stderr
        assert "started" in warm.stdout
        assert "topics: all present" in warm.stdout  # the data survived the restart
    finally:
        run("kafka", "down", home=home)
    assert "was not running" in run("kafka", "down", home=home).stdout


@pytest.mark.usefixtures("shared_jars")
def test_two_first_starts_at_once_both_succeed_with_one_broker(tmp_path: Path) -> None:
    """Two commands that start the data directory's broker at once (two replays, a replay and
    `kafka up`): both formatted the storage and the second failed with a Java trace about the
    cluster id. They take turns: one starts it, the other finds it running."""
    port = free_port()
    config = str(write_config(tmp_path / "config.yaml", port))
    home = tmp_path / "home"
    env = {**os.environ, "SCALPER_HOME": str(home)}
    command = [SCALPER, "kafka", "up", "--config", config]
    try:
        ups = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)]
        ups.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True))
        outputs = [up.communicate(timeout=120)[0] for up in ups]
        assert [up.returncode for up in ups] == [0, 0], outputs
        assert sorted("already running" in out for out in outputs) == [False, True], outputs
    finally:
        run("kafka", "down", home=home)


def test_up_on_a_taken_port_is_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = str(write_config(tmp_path / "c.yaml", port))
        proc = run("kafka", "up", "--config", config, home=tmp_path)
    assert_one_line_error(proc, f"127.0.0.1:{port}", "the port is in use")


def test_missing_maven_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LIBS_ENV, str(tmp_path / "no-jars-yet"))
    monkeypatch.setenv("PATH", str(tmp_path))
    config = str(write_config(tmp_path / "c.yaml", free_port()))
    proc = run("kafka", "up", "--config", config, home=tmp_path)
    assert_one_line_error(proc, "Maven (mvn) is needed", "not on PATH")


def test_a_broker_that_dies_while_starting_is_reported_with_its_log(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path, port=free_port())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.properties").write_text("version=1\nnode.id=7\n")  # foreign data
    with pytest.raises(ScalperError) as failure:
        broker.start(timeout=60)
    message = str(failure.value)
    assert "exited during start" in message
    assert str(broker.log_path) in message
    assert "\n" not in message
    assert not broker.status().running


def test_a_test_broker_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    starter = (
        "import sys, time; from pathlib import Path;"
        "from scalper.kafka.broker import KafkaBroker, free_port;"
        "KafkaBroker(Path(sys.argv[1]), port=free_port(), exit_with_parent=True).start();"
        "print('up', flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", starter, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None and parent.stdout.readline() == "up\n"
    broker = KafkaBroker(tmp_path)
    assert broker.status().running
    parent.kill()  # SIGKILL: no teardown runs
    parent.wait()
    deadline = time.monotonic() + STOP_TIMEOUT
    while broker.status().running and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not broker.status().running


def test_a_stale_pid_file_is_never_signalled(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path)
    broker.pid_path.write_text(f"{os.getpid()}\n")  # this test process: alive, not a broker
    assert broker.status().running is False
    assert broker.stop() is None
    assert not broker.pid_path.exists()


def test_several_bootstrap_servers_cannot_be_one_local_broker() -> None:
    with pytest.raises(ScalperError, match="several brokers"):
        KafkaBroker.for_bootstrap("127.0.0.1:9092,127.0.0.1:9093")


def test_the_worker_takes_only_the_brokers_stamp_as_a_bars_publication_time(
    kafka_broker: KafkaBroker,
) -> None:
    """A bar stamped by its producer (a topic altered back to CreateTime behind the worker's
    back) carries no publication time into the dataflow: its producer could date an old bar
    'now'. The trader then judges it by the clock. A broker's stamp is taken as it is."""
    from kafka import KafkaProducer

    from streams.kafka_io import CONSUMER_CONFIG, _Partition

    admin = admin_client(kafka_broker.bootstrap)
    try:
        admin.create_topics({"bars.CTIME": {"num_partitions": 1, "configs": {}}})
    finally:
        admin.close()
    ensure_topics(kafka_broker.bootstrap, ["LATIME"])
    week_ago_ms = int(time.time() * 1000) - 7 * 86_400_000
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    for topic in ("bars.CTIME", "bars.LATIME"):
        producer.send(topic, b"bar", key=b"K", timestamp_ms=week_ago_ms).get(10)
    producer.close()
    stamps = {}
    for topic in ("bars.CTIME", "bars.LATIME"):
        config = {**CONSUMER_CONFIG, "group.id": "stamps", "enable.partition.eof": "true"}
        part = _Partition({**config, "bootstrap.servers": kafka_broker.bootstrap}, topic, 0, 0)
        deadline = time.monotonic() + 10
        batch: list = []
        while not batch and time.monotonic() < deadline:
            batch = part.next_batch()
        part.close()
        (stamps[topic],) = [message[5] for message in batch]
    assert stamps["bars.CTIME"] is None
    assert stamps["bars.LATIME"] > (week_ago_ms + 86_400_000) * 1_000_000
