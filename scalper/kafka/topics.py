"""The Kafka topics of SPEC §3 and how each is laid out.

Partitioning follows what each consumer must see in order:

- `bars.<symbol>` has ONE partition per symbol topic: aggregation, duplicate and out-of-order
  checks need each instrument's bars as one ordered stream, and a topic per symbol is what lets
  the dataflow spread instruments over workers (each symbol's state in exactly one place);
- `orders` and `fills` are keyed by symbol over a few partitions: only per-symbol order matters,
  and the count is fixed so a symbol always maps to the same partition;
- `control` has ONE partition: a kill followed by a resume must reach every worker in that
  order, whatever symbols they name;
- `risk-events` and `dead-letter` are low-volume journals, one partition each.

Retention keeps a week of market input and control commands (enough to replay a trading week)
and a month of what the system decided, for audit; the state store, not Kafka, is the record of
orders. Nothing is compacted: every message is an event, not the latest value of a key.
Replication is left to the cluster's default, so the same specs work on the local one-node
broker and on a real cluster.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scalper.errors import ScalperError

ORDERS = "orders"
FILLS = "fills"
RISK_EVENTS = "risk-events"
CONTROL = "control"
DEAD_LETTER = "dead-letter"

DAY_MS = 86_400_000
MARKET_RETENTION_MS = 7 * DAY_MS
AUDIT_RETENTION_MS = 30 * DAY_MS
KEYED_PARTITIONS = 4
# A dead letter carries the raw bad message (up to the broker's 1 MiB default), base64-encoded
# when it is not text, plus the reason: it must fit where the original did.
DEAD_LETTER_MAX_BYTES = 2 * 1024 * 1024

# Kafka allows [a-zA-Z0-9._-] in topic names; symbols are short exchange codes.
_SYMBOL = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True)
class TopicSpec:
    """A topic as it must exist: name, partition count and the configs that differ from defaults."""

    name: str
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)

    def create_request(self) -> dict[str, object]:
        """This topic in kafka-python's `create_topics` form (replication: cluster default)."""
        return {"num_partitions": self.partitions, "configs": dict(self.configs)}


def is_valid_symbol(symbol: object) -> bool:
    """True for a symbol that can name a topic (`bars.<symbol>`) and key a message."""
    return isinstance(symbol, str) and _SYMBOL.fullmatch(symbol) is not None


def bars_topic(symbol: str) -> str:
    """The input topic of one instrument's bars, e.g. `bars.MES`."""
    if not is_valid_symbol(symbol):
        raise ScalperError(
            f"symbol {symbol!r} cannot name a Kafka topic: use 1-32 letters, digits, '_' or '-'"
        )
    return f"bars.{symbol}"


def _retained(ms: int, **extra: str) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(ms), **extra}


def topic_specs(symbols: Iterable[str]) -> list[TopicSpec]:
    """Every topic the stream needs for these symbols, bars topics first."""
    bars = [
        TopicSpec(bars_topic(s), 1, _retained(MARKET_RETENTION_MS)) for s in dict.fromkeys(symbols)
    ]
    return [
        *bars,
        TopicSpec(ORDERS, KEYED_PARTITIONS, _retained(AUDIT_RETENTION_MS)),
        TopicSpec(FILLS, KEYED_PARTITIONS, _retained(AUDIT_RETENTION_MS)),
        TopicSpec(RISK_EVENTS, 1, _retained(AUDIT_RETENTION_MS)),
        TopicSpec(CONTROL, 1, _retained(MARKET_RETENTION_MS)),
        TopicSpec(
            DEAD_LETTER,
            1,
            _retained(AUDIT_RETENTION_MS, **{"max.message.bytes": str(DEAD_LETTER_MAX_BYTES)}),
        ),
    ]


def ensure_topics(bootstrap: str, symbols: Iterable[str]) -> list[str]:
    """Create the missing topics of `topic_specs(symbols)`; returns the names it created.

    Idempotent: existing topics are left as they are (a second call creates nothing), and a
    topic created concurrently by someone else counts as present.
    """
    from kafka.errors import TopicAlreadyExistsError

    from scalper.kafka.clients import admin_client

    specs = topic_specs(symbols)
    admin = admin_client(bootstrap)
    try:
        existing = set(admin.list_topics())
        missing = {s.name: s.create_request() for s in specs if s.name not in existing}
        if missing:
            # Another process may create the same topics between the listing and this request.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing, wait_for_metadata=True)
    finally:
        admin.close()
    return list(missing)
