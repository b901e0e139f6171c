"""Stream benchmark (SPEC §7): throughput of one worker, and bar-to-order latency at 1 k bars/s.

Both parts run a real worker process (`python -m bytewax.run streams.live:build(...)`, recovery
on, one Bytewax worker) against a real local Kafka broker, started here on a free port.

Throughput: ~500 k simulated 1-minute MES bars are loaded into `bars.MES` first, followed by
the end-of-data marker; then the worker starts. The rate is measured by the worker's own clock:
bars between its first order intent and its end-of-data event, divided by the time between the
two events' `at` stamps, so process start-up and Kafka connection are excluded and what remains
is the sustained path Kafka → decode → trader (paper broker, engine) → risk-gated sink (ledger
commit) → Kafka output.

Decoding: the loaded messages decoded by the worker's decoder (the engine's fast path for the
common form) and by the Python decoder alone, its baseline, in this process.

Latency: bars are produced at 1 k bars/s (one every millisecond, paced by the clock, from a
process of its own) into a running worker, each stamped with the wall clock just before
`produce`. The first `--warm-up-seconds` (20) are not measured: a live broker and worker run
for days, while a JVM broker started a moment ago needs about ten seconds of JIT warm-up, during
which even Kafka alone (producer to plain consumer, no worker) shows a p99 near one second.
For every order intent after the warm-up two latencies are reported:

- *to the sink*: from the bar's produce to the intent's `at` stamp, taken by the worker right
  after the risk-gated sink committed the intent to the ledger and handed it to the paper
  broker (SPEC §7's "bar-to-order, excluding the broker": the paper broker is an in-process
  SQLite write, so it is included, not excluded);
- *on `orders`*: from the produce to this process receiving the intent event from the `orders`
  topic, i.e. including the worker's Kafka producer and a consumer hop.

Every process (broker JVM, worker, this producer/consumer) shares the machine's cores. The bars
are simulated history, which a live worker refuses (`stream.max_bar_age_seconds`): the workers
run as replays, each in its own topic namespace; the dataflow is the live one.

Baseline: the same paced production into a topic of its own, read by a plain consumer in this
process (no worker). It is what Kafka alone costs on this machine, measured in the same run: the
worker's figures are reported next to it, and what the worker adds is the difference.

Usage: python bench/bench_stream.py [--days 500] [--latency-seconds 60] [--only latency]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.timing import best_of
from scalper.kafka import messages
from scalper.kafka.broker import KafkaBroker, free_port
from scalper.kafka.clients import admin_client
from scalper.kafka.messages import Bar, Control, decode, decode_bar, encode_bar, encode_control
from scalper.kafka.topics import TopicSpec
from scalper.live.replay import wait_for_end
from scalper.live.settings import LiveSettings
from scalper.live.worker import end_offsets, prepare_run, start_worker, stop_worker
from scalper.paths import subdir
from scalper.simulate import simulate_bars

# Throughput: SPEC §5's defaults (the full risk gate); 1-minute bars are the source bars.
DEFAULTS: dict[str, Any] = {"stream": {"source_bar_seconds": 60}}
# Latency: a busy strategy with the risk limits off, for many order intents to time.
BUSY: dict[str, Any] = {
    **DEFAULTS,
    "strategy": {"lookback": 20, "entry_z": 1.0, "exit_z": 0.5},
    "risk": {
        "daily_loss_limit": 0,
        "daily_drawdown_limit": 0,
        "max_consecutive_losses": 0,
        "max_trades_per_day": 0,
        "kill_switch_loss": 0,
        "min_account_balance": 0,
    },
}


def run_folder(folder: Path, name: str, bootstrap: str, config: dict[str, Any]) -> LiveSettings:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**config, "kafka": {"bootstrap": bootstrap}}))
    settings = LiveSettings.load(str(path), folder / name, replay=name)
    prepare_run(settings)
    return settings


def producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "enable.idempotence": True})


def produce(out: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            out.produce(topic, value, key)
            out.poll(0)
            return
        except BufferError:
            out.poll(0.05)


def read_events(bootstrap: str, topic: str, since: dict[tuple[str, int], int]) -> list[dict]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench", "enable.partition.eof": True}
    )
    parts = [TopicPartition(t, p, o) for (t, p), o in since.items() if t == topic]
    consumer.assign(parts)
    events, ended = [], 0
    while ended < len(parts):
        message = consumer.poll(5)
        if message is None:
            break
        if message.error():
            ended += 1
            continue
        payload = decode(message.value())
        if isinstance(payload, dict):
            events.append(payload)
    consumer.close()
    return events


def decoding(values: list[bytes]) -> None:
    """The worker's bar decoding, with the engine's fast path and with the Python decoder alone
    (its baseline, on the same messages in this process)."""
    fast = best_of(3, lambda: [decode_bar(v) for v in values])
    python = best_of(3, lambda: [messages._decoded(v, messages._bar) for v in values])
    per_bar = [seconds / len(values) * 1e6 for seconds in (fast, python)]
    print(
        f"decoding a bar: {per_bar[0]:.2f} µs (engine fast path), {per_bar[1]:.2f} µs (Python "
        f"decoder alone): {python / fast:.1f}× faster"
    )


def throughput(folder: Path, bootstrap: str, days: int) -> None:
    bars = simulate_bars(date(2023, 1, 2), days, seed=11)
    live = run_folder(folder, "throughput", bootstrap, DEFAULTS)
    topic, orders, risk_events = (
        live.namespace.bars("MES"),
        live.namespace.orders,
        live.namespace.risk_events,
    )
    since = end_offsets(bootstrap, [risk_events, orders])
    out = producer(bootstrap)
    started = time.perf_counter()
    values = []
    for row in bars.select("ts", "open", "high", "low", "close", "volume").iter_rows():
        key, value = encode_bar(Bar(*row, "MES"))
        produce(out, topic, key, value)
        values.append(value)
    end = Control("end_of_data", "MES")
    produce(out, topic, *encode_control(end))
    out.flush()
    loading = time.perf_counter() - started
    print(f"loaded {bars.height:,} bars into {topic} in {loading:.1f} s")
    decoding(values[:100_000])
    with open(folder / "throughput.log", "wb") as log:
        worker = start_worker(live, log=log)
        try:
            wait_for_end(
                bootstrap,
                "MES",
                end.issued_at,
                {(risk_events, 0): since[(risk_events, 0)]},
                900,
                lambda: worker.poll() is None,
            )
        finally:
            stop_worker(worker)
    intents = [e for e in read_events(bootstrap, orders, since) if e.get("event") == "intent"]
    done = next(
        e for e in read_events(bootstrap, risk_events, since) if e.get("event") == "end_of_data"
    )
    first = min(intents, key=lambda e: e["at"])
    processed = int((bars["ts"] > first["bar_ts"]).sum())
    seconds = (done["at"] - first["at"]) / 1e9
    print(
        f"throughput: {processed:,} bars in {seconds:.2f} s = {processed / seconds:,.0f} bars/s "
        f"through one worker ({len(intents):,} order intents)"
    )


def produce_paced(bootstrap: str, rows: list[tuple], rate: int, stamps: Any, topic: str) -> None:
    """In a process of its own, so that no other thread of the benchmark delays a bar between
    its time stamp and its hand-over to the producer: `stamps[i]` is bar i's produce time."""
    out = producer(bootstrap)
    started = time.perf_counter()
    for i, row in enumerate(rows):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:  # sleeping, not spinning: the worker needs the cores
            time.sleep(delay)
        key, value = encode_bar(Bar(*row, "MES"))
        stamps[i] = time.time_ns()
        produce(out, topic, key, value)
    out.flush()
    print(f"produced {len(rows):,} bars at {len(rows) / (time.perf_counter() - started):,.0f}/s")


def paced_rows(seconds: float, warm_up: float, rate: int) -> list[tuple]:
    bars = simulate_bars(date(2023, 1, 2), 120, seed=5).head(int((warm_up + seconds) * rate))
    return bars.select("ts", "open", "high", "low", "close", "volume").rows()


def report(name: str, values_ms: np.ndarray, baseline: np.ndarray | None = None) -> None:
    """Percentiles of one latency series; with `baseline`, what it adds to Kafka alone."""
    qs = np.percentile(values_ms, [50, 99, 99.9])
    line = (
        f"latency {name:22s} over {values_ms.size:>6,}: p50 {qs[0]:6.2f} ms, p99 {qs[1]:6.2f} ms, "
        f"p99.9 {qs[2]:6.2f} ms, max {values_ms.max():7.2f} ms"
    )
    if baseline is not None:
        base = np.percentile(baseline, [50, 99])
        line += f"  (Kafka alone + {qs[0] - base[0]:.2f} ms at p50, + {qs[1] - base[1]:.2f} at p99)"
    print(line)


def kafka_baseline(bootstrap: str, seconds: float, warm_up: float, rate: int = 1_000) -> np.ndarray:
    """Produce → a plain consumer, paced as the worker's bars are: Kafka's own share."""
    topic = "bench.baseline"
    admin = admin_client(bootstrap)
    admin.create_topics({topic: TopicSpec(topic, 1).create_request()}, wait_for_metadata=True)
    admin.close()
    rows = paced_rows(seconds, warm_up, rate)
    stamps = multiprocessing.Array("q", len(rows), lock=False)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench", "fetch.wait.max.ms": 10}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    arrived = np.zeros(len(rows), dtype=np.int64)
    paced = multiprocessing.Process(
        target=produce_paced, args=(bootstrap, rows, rate, stamps, topic)
    )
    paced.start()
    received, deadline = 0, time.monotonic() + warm_up + seconds + 30
    while received < len(rows) and time.monotonic() < deadline:
        message = consumer.poll(0.05)
        if message is not None and not message.error():
            arrived[message.offset()] = time.time_ns()
            received += 1
    paced.join()
    consumer.close()
    measured = slice(int(warm_up * rate), received)
    return (arrived[measured] - np.array(stamps[measured])) / 1e6


def latency(
    folder: Path,
    bootstrap: str,
    seconds: float,
    warm_up: float,
    baseline: np.ndarray,
    rate: int = 1_000,
) -> None:
    live = run_folder(folder, "latency", bootstrap, BUSY)
    rows = paced_rows(seconds, warm_up, rate)
    measured_from = rows[int(warm_up * rate)][0]
    since = end_offsets(bootstrap, [live.namespace.orders])
    received: list[tuple[int, Any]] = []
    stop = threading.Event()

    def listen() -> None:
        settings = {"bootstrap.servers": bootstrap, "group.id": "bench", "fetch.wait.max.ms": 5}
        consumer = Consumer(settings)
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in since.items()])
        while not stop.is_set():
            message = consumer.poll(0.05)
            if message is not None and not message.error():
                received.append((time.time_ns(), decode(message.value())))
        consumer.close()

    listener = threading.Thread(target=listen)
    listener.start()
    stamps = multiprocessing.Array("q", len(rows), lock=False)
    with open(folder / "latency.log", "wb") as log:
        worker = start_worker(live, log=log)
        time.sleep(5)  # the worker is up and its consumer waits at the end of the topic
        paced = multiprocessing.Process(
            target=produce_paced,
            args=(bootstrap, rows, rate, stamps, live.namespace.bars("MES")),
        )
        paced.start()
        paced.join()
        time.sleep(3)
        stop.set()
        listener.join()
        stop_worker(worker)
    produced = {row[0]: stamps[i] for i, row in enumerate(rows)}
    intents = [
        (at, e)
        for at, e in received
        if isinstance(e, dict) and e.get("event") == "intent" and e["bar_ts"] >= measured_from
    ]
    to_sink = np.array([e["at"] - produced[e["bar_ts"]] for _, e in intents]) / 1e6
    on_topic = np.array([at - produced[e["bar_ts"]] for at, e in intents]) / 1e6
    report("bar → intent past sink", to_sink, baseline)
    report("bar → intent on orders", on_topic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=500, help="days of 1-minute bars (~985/day)")
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument(
        "--warm-up-seconds", type=float, default=20.0, help="at the same rate, not measured"
    )
    parser.add_argument("--only", choices=("throughput", "latency"), help="run one part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=subdir("bench")) as folder:
        broker = KafkaBroker(Path(folder) / "kafka", port=free_port(), exit_with_parent=True)
        broker.start()
        try:
            if args.only != "latency":
                throughput(Path(folder), broker.bootstrap, args.days)
            if args.only != "throughput":
                timing = (args.latency_seconds, args.warm_up_seconds)
                baseline = kafka_baseline(broker.bootstrap, *timing)
                report("Kafka alone (baseline)", baseline)
                latency(Path(folder), broker.bootstrap, *timing, baseline)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
