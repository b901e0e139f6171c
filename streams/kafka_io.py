"""Kafka input and output of the live dataflow, made for a trading worker.

Input starts where the run's ledger pinned it. Bytewax's own `KafkaSource` begins a partition
without resume state at the beginning or at the end of the topic, and neither fits: the
beginning would trade on last week's bars and obey old kill commands; the end moves, so a worker
killed before its first snapshot would skip what arrived meanwhile. `scalper stream run` pins the
ends once (`scalper.live.worker.pin_start_offsets`); a partition reads from its pin until
Bytewax has a snapshot of its position. Messages enter the dataflow as plain tuples
`(topic, partition, offset, key, value, published_ns)`: at 50 k bars/s per worker, a richer
object per message is a measurable share of the budget. `published_ns` is the time the broker
appended the message (the bars topics stamp so): fixed in the log, so a worker that resumes
after a crash judges the age of a re-read bar exactly as it did the first time. A message
stamped by its producer (a topic altered back to `CreateTime`) has none: its producer could
date an old bar 'now', so the trader judges it by the clock instead.

All topics are those of the run's namespace (`scalper.kafka.topics`): the events the trader
addresses to `orders`, `fills`, ... go to the namespace's own, so a replay's worker writes
nothing where the live system reads.

The client settings favour latency: a fetch returns as soon as one message is there
(`fetch.wait.max.ms` only bounds the wait when none is) and the producer does not linger, as an
order intent should not wait for company.

Output must be at least once: events may repeat after a crash, never go missing. Bytewax's
`KafkaSink` gets that by waiting for the broker's acknowledgement of every batch, in the worker
thread: each wait holds up the bars behind it for milliseconds, and under load the worker polls
its input only every few tens of milliseconds. `KafkaEventSink` sends without waiting and waits
once per epoch instead, in `snapshot`, which Bytewax calls before it commits the epoch's
snapshot: whatever an epoch published is delivered before the epoch counts as done.
"""

from __future__ import annotations

import confluent_kafka
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from scalper.kafka.topics import Namespace
from scalper.ledger import Ledger
from scalper.live.events import Event
from scalper.live.settings import LiveSettings

Message = tuple[str, int, int, bytes | None, bytes | None, int | None]
"""A Kafka message as the dataflow sees it: (topic, partition, offset, key, value,
published_ns), the last None unless the broker stamped it when appending it."""

BATCH_SIZE = 1_000
NS_PER_MS = 1_000_000
CONSUMER_CONFIG = {
    # `group.id` is the namespace's (required by librdkafka; nothing is committed: offsets are
    # state)
    "enable.auto.commit": "false",
    "fetch.wait.max.ms": "10",
    "fetch.error.backoff.ms": "10",
}
PRODUCER_CONFIG = {
    "linger.ms": "0",
    # Not idempotent: a retry may repeat an event, which its id makes harmless, and an
    # idempotent producer first waits for a producer id, stalling the worker's first epoch.
    "enable.idempotence": "false",
    "message.max.bytes": str(2 * 1024 * 1024),  # a dead letter carries a whole bad message
}


class _Partition(StatefulSourcePartition[Message, int]):
    """One topic partition; its snapshot is the offset of the next message to read."""

    def __init__(self, config: dict[str, str], topic: str, index: int, offset: int) -> None:
        self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(topic, index, offset)])
        self._offset = offset
        self._ended = False

    def next_batch(self) -> list[Message]:
        if self._ended:
            raise StopIteration
        batch = []
        # Never wait here: `consume` waits for a full batch until its timeout, which would
        # hold every bar back; Bytewax itself polls again 1 ms after an empty batch.
        for message in self._consumer.consume(BATCH_SIZE, 0):
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"consuming {message.topic()} failed: {error}")
                self._ended = True  # only without tailing: the end of the topic ends the input
                break
            kind, stamp = message.timestamp()
            batch.append(
                (
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    message.key(),
                    message.value(),
                    stamp * NS_PER_MS if kind == TIMESTAMP_LOG_APPEND_TIME else None,
                )
            )
        if batch:
            self._offset = batch[-1][2] + 1
        return batch

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._consumer.close()


class PinnedKafkaSource(FixedPartitionedSource[Message, int]):
    """The worker's topics; a partition without resume state starts at its pinned offset."""

    def __init__(self, settings: LiveSettings, *, tail: bool = True) -> None:
        self._settings = settings
        self._tail = tail

    def list_parts(self) -> list[str]:
        admin = AdminClient({"bootstrap.servers": self._settings.bootstrap})
        metadata = admin.list_topics(timeout=30)
        parts = []
        for topic in self._settings.topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                raise RuntimeError(
                    f"topic {topic} is missing: start workers with `scalper stream run`"
                )
            parts.extend(f"{index}-{topic}" for index in found.partitions)
        return parts

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        index, topic = for_part.split("-", 1)
        offset = resume_state if resume_state is not None else self._pinned(topic, int(index))
        config = {
            **CONSUMER_CONFIG,
            "group.id": self._settings.namespace.consumer_group,
            "bootstrap.servers": self._settings.bootstrap,
            "enable.partition.eof": str(not self._tail).lower(),
        }
        return _Partition(config, topic, int(index), offset)

    def _pinned(self, topic: str, index: int) -> int:
        ledger = Ledger(self._settings.ledger_path)
        try:
            offset = ledger.start_offset(topic, index)
        finally:
            ledger.close()
        if offset is None:
            raise RuntimeError(
                f"no start position pinned for {topic} partition {index} in "
                f"{self._settings.ledger_path}: start workers with `scalper stream run`"
            )
        return offset


class _Publisher(StatefulSinkPartition[Event, None]):
    """Publishes events as they come, to their topics in `namespace`; waits for their delivery
    once per epoch."""

    def __init__(self, bootstrap: str, namespace: Namespace) -> None:
        self._producer = Producer({**PRODUCER_CONFIG, "bootstrap.servers": bootstrap})
        self._namespace = namespace
        self._failures: list[str] = []

    def write_batch(self, values: list[Event]) -> None:
        for base, key, value in values:
            topic = self._namespace.named(base)
            while True:
                try:
                    self._producer.produce(topic, value, key, on_delivery=self._delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self._producer.poll(0.1)
        self._producer.poll(0)

    def _delivered(self, error: KafkaError | None, message: confluent_kafka.Message) -> None:
        if error is not None:
            self._failures.append(f"{message.topic()}: {error}")

    def snapshot(self) -> None:
        """Called before Bytewax commits the epoch: all its events must be delivered by then
        (a failure stops the worker, which then publishes them again after the restart)."""
        self._producer.flush()
        if self._failures:
            raise RuntimeError(f"events not delivered: {'; '.join(self._failures[:3])}")

    def close(self) -> None:
        self.snapshot()


class KafkaEventSink(FixedPartitionedSink[Event, None]):
    """Events to their own topics, through one producer: a single partition, as the events
    (orders, fills, risk events, dead letters) are few next to the bars."""

    def __init__(self, settings: LiveSettings) -> None:
        self._bootstrap = settings.bootstrap
        self._namespace = settings.namespace

    def list_parts(self) -> list[str]:
        return ["events"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Publisher:
        return _Publisher(self._bootstrap, self._namespace)
