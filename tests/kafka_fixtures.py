"""A real Kafka broker for the tests: one per test session, on free ports, in a temp folder.

The broker's files (data, logs, pid) are temporary; the jars are not: they are fetched once
into the shared cache (`$SCALPER_KAFKA_LIBS`, else `kafka/libs` in the data directory) and
reused by every later run, so only the first test run on a machine pays for the download.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scalper.kafka.broker import KafkaBroker, free_port


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A running single-node broker; `kafka_broker.bootstrap` is its address. No topics yet."""
    root = tmp_path_factory.mktemp("kafka")
    broker = KafkaBroker(root, port=free_port(), exit_with_parent=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
