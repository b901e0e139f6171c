"""Small kafka-python clients for the edges of the stream: admin, publishing, reading back.

The dataflow talks to Kafka through Bytewax's own connectors; these helpers serve everything
around it: creating topics, sending an operator's control command, publishing bars from a file,
and letting tests read what a topic holds. An unreachable broker is a user-facing problem (the
broker is not started, or `kafka.bootstrap` is wrong), so it raises `ScalperError`, not a
client library timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaTimeoutError

from scalper.errors import ScalperError
from scalper.kafka.messages import Control, encode_control
from scalper.kafka.topics import CONTROL, DEAD_LETTER_MAX_BYTES

if TYPE_CHECKING:
    from kafka.consumer.fetcher import ConsumerRecord

CONNECT_TIMEOUT_MS = 10_000
CLIENT_ID = "scalper"
Client = TypeVar("Client", KafkaAdminClient, KafkaConsumer, KafkaProducer)


def _connected(
    factory: Callable[..., Client],
    bootstrap: str,
    timeout_ms: int = CONNECT_TIMEOUT_MS,
    **options: Any,
) -> Client:
    """A client that has reached the cluster, or a one-line error saying nobody answers."""
    try:
        return factory(
            bootstrap_servers=bootstrap,
            client_id=CLIENT_ID,
            bootstrap_timeout_ms=timeout_ms,
            **options,
        )
    except KafkaTimeoutError:
        raise ScalperError(
            f"no Kafka broker answers at {bootstrap} (start the local one with `scalper kafka up`"
            " or check kafka.bootstrap)"
        ) from None


def admin_client(bootstrap: str) -> KafkaAdminClient:
    """An admin client connected to the cluster at `bootstrap`."""
    return _connected(KafkaAdminClient, bootstrap)


def publish(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes]],
    *,
    timeout: float | None = None,
) -> int:
    """Send (key, value) messages to `topic` and wait until all are acknowledged; returns count.

    The producer is idempotent with `acks=all` (kafka-python's defaults), so messages of one key
    arrive once and in order. Its request limit is the largest topic limit (`dead-letter`'s);
    each topic's own limit is enforced by the broker. With `timeout` (seconds) every wait —
    connecting, metadata, acknowledgements — is bounded by it, and running out is a
    `ScalperError`: a caller with something else to do (the kill switch) is never held up.
    """
    bounded: dict[str, Any] = {}
    if timeout is not None:
        bounded = {"timeout_ms": int(timeout * 1000), "max_block_ms": int(timeout * 1000)}
    producer = _connected(
        KafkaProducer, bootstrap, max_request_size=DEAD_LETTER_MAX_BYTES, **bounded
    )
    try:
        sent = 0
        for key, value in messages:
            producer.send(topic, key=key, value=value)
            sent += 1
        producer.flush(timeout)
        return sent
    except KafkaTimeoutError:
        raise ScalperError(f"Kafka at {bootstrap} did not take the messages in time") from None
    finally:
        producer.close(0 if timeout is not None else None)


def send_control(bootstrap: str, control: Control, *, timeout: float | None = None) -> None:
    """Publish an operator command (kill, pause, resume, reload_params) on `control`, within
    `timeout` seconds when given (see `publish`)."""
    publish(bootstrap, CONTROL, [encode_control(control)], timeout=timeout)


def read_topic(
    bootstrap: str, topic: str, *, at_least: int = 0, timeout: float = 10.0
) -> list[ConsumerRecord]:
    """Everything `topic` holds, from the start to its end, sorted by (partition, offset).

    With `at_least`, waits until that many messages are there (for tests that wait on a
    worker's output). Reads without a consumer group, so it commits nothing and disturbs no
    other consumer.
    """
    consumer = _connected(KafkaConsumer, bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            raise ScalperError(f"topic {topic!r} does not exist at {bootstrap}")
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        records = _read_to_end(consumer, partitions, at_least, time.monotonic() + timeout)
    finally:
        consumer.close()
    return sorted(records, key=lambda r: (r.partition, r.offset))


def _read_to_end(
    consumer: KafkaConsumer, partitions: list[TopicPartition], at_least: int, deadline: float
) -> list[ConsumerRecord]:
    records: list[ConsumerRecord] = []
    while True:
        ends = consumer.end_offsets(partitions)
        if len(records) >= at_least and all(consumer.position(p) >= ends[p] for p in partitions):
            return records
        if time.monotonic() > deadline:
            topic = partitions[0].topic
            raise ScalperError(
                f"{topic!r} held {len(records)} messages when the wait ended, "
                f"expected at least {at_least}"
            )
        for batch in consumer.poll(timeout_ms=100).values():
            records.extend(batch)
