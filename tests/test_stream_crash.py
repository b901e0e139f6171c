"""SPEC §7's restart requirement: a stream worker killed with SIGKILL at any point resumes with
no lost and no duplicated order.

A conformance case is published to Kafka at a steady pace while a real worker process is killed
at seeded random moments (during start-up, recovery, catching up, or idling) and started again.
The final trades must be the case's, each order must have been handed to the paper broker once,
and the broker must have received each client order id once.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

from scalper.brokers.paper import PaperBroker
from scalper.kafka.broker import KafkaBroker
from scalper.kafka.clients import read_topic
from scalper.kafka.messages import decode
from scalper.ledger import Ledger
from scalper.live.replay import wait_for_end
from scalper.live.settings import LiveSettings
from scalper.live.worker import end_offsets, prepare_run, start_worker, stop_worker
from tests.shared import CONFORMANCE, expected_rows, first_difference
from tests.stream_support import (
    bars_of,
    case_bars,
    case_config,
    ledger_rows,
    publish_bars,
    replay_settings,
)

CASE = CONFORMANCE / "02_stops_targets"
KILLS = 12
SEED = 20_240_610
PUBLISH_SECONDS = 16.0  # the bars trickle in for about as long as the kills take
CHUNKS = 160


def publish_slowly(live: LiveSettings, case: Path) -> None:
    bars = bars_of(case_bars(case), "MES")
    size = len(bars) // CHUNKS + 1
    for start in range(0, len(bars), size):
        publish_bars(live, bars[start : start + size], "MES")
        time.sleep(PUBLISH_SECONDS / CHUNKS)
    publish_bars(live, [], "MES", end=True, issued_at=SEED)


def test_a_worker_killed_at_random_points_loses_and_repeats_no_order(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    config = case_config(CASE, tmp_path, kafka_broker.bootstrap)
    live = replay_settings(config, tmp_path / "run")
    orders_topic, risk_events = live.namespace.orders, live.namespace.risk_events
    prepare_run(live)
    since = end_offsets(live.bootstrap, [risk_events, orders_topic])
    publisher = threading.Thread(target=publish_slowly, args=(live, CASE))
    rng = random.Random(SEED)
    with open(tmp_path / "worker.log", "wb") as log:
        publisher.start()
        worker = start_worker(live, log=log)
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 2.4))
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            worker = start_worker(live, log=log)
        publisher.join()
        try:
            end_from = {(risk_events, 0): since[(risk_events, 0)]}
            wait_for_end(live.bootstrap, "MES", SEED, end_from, 120, lambda: worker.poll() is None)
        finally:
            stop_worker(worker)

    problem = first_difference(ledger_rows(live, "MES"), expected_rows(CASE))
    assert problem is None, problem
    ledger = Ledger(live.ledger_path)
    orders = ledger.orders("MES")
    received = PaperBroker(ledger, live.params).received()  # what reached the exchange
    ledger.close()
    sent = {o["client_order_id"] for o in orders if o["send_count"]}
    assert all(o["send_count"] <= 1 for o in orders)
    assert set(received) == sent and set(received.values()) == {1}
    replayed = [
        event
        for record in read_topic(live.bootstrap, orders_topic)
        if record.offset >= since[(orders_topic, record.partition)]
        and isinstance(event := decode(record.value), dict)
        and event.get("replayed")
    ]
    assert replayed, "no kill fell while orders were being decided again: the test proved little"
