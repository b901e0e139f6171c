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

Every name lives in a **namespace**: `LIVE` (the names above, read by the live workers) or one
replay's (`replay.<run-id>.bars.MES`, `replay.<run-id>.orders`, ...). A replay's worker reads
and writes its own namespace only, and this module is the one place that builds a name: no code
can reach a live worker's topics without naming `LIVE`. The bars topics stamp each message with
the broker's clock when it is appended (`LogAppendTime`): the live worker judges a bar's age by
that stamp (`stream.max_bar_age_seconds`), which no producer can backdate or forge. That holds
only if the topic really stamps so: a bars topic made before this rule (or by hand) stamps with
the producer's time, so `ensure_topics` brings an existing topic to the configs its safety rests
on (`ENFORCED_CONFIGS`), and refuses to go on when the cluster will not let it.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scalper.errors import ScalperError

if TYPE_CHECKING:
    from kafka.admin import KafkaAdminClient

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

# Topic configs the worker's safety rests on, enforced on topics that already exist (the others,
# such as retention, are the topic owner's to tune), each with what goes wrong without it.
ENFORCED_CONFIGS = {
    "message.timestamp.type": "a live worker would judge bars by the producer's clock",
    "max.message.bytes": "a dead letter of a full-size bad message would not fit, and the "
    "worker would stop on it at every restart",
}
CONFIG_WAIT_SECONDS = 10.0

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


_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
REPLAY_PREFIX = "replay."


@dataclass(frozen=True)
class Namespace:
    """The topic names of one namespace: the live system's (`LIVE`), or one replay run's."""

    replay: str | None = None  # the replay's run id; None: the live namespace

    @classmethod
    def of_replay(cls, run_id: str) -> Namespace:
        """The namespace of the replay run `run_id` (its run folder's name)."""
        if _RUN_ID.fullmatch(run_id) is None:
            raise ScalperError(
                f"replay run id {run_id!r} cannot name Kafka topics: use 1-64 letters, digits, "
                "'_' or '-'"
            )
        return cls(run_id)

    @property
    def is_live(self) -> bool:
        """True for the topics live workers read: bars there are judged by their age."""
        return self.replay is None

    @property
    def prefix(self) -> str:
        return "" if self.replay is None else f"{REPLAY_PREFIX}{self.replay}."

    def named(self, base: str) -> str:
        """`base` (ORDERS, FILLS, RISK_EVENTS, CONTROL, DEAD_LETTER) in this namespace."""
        return self.prefix + base

    def bars(self, symbol: str) -> str:
        """The input topic of one instrument's bars, e.g. `bars.MES` (live)."""
        if not is_valid_symbol(symbol):
            raise ScalperError(
                f"symbol {symbol!r} cannot name a Kafka topic: use 1-32 letters, digits, '_' or '-'"
            )
        return self.named(f"bars.{symbol}")

    @property
    def control(self) -> str:
        return self.named(CONTROL)

    @property
    def orders(self) -> str:
        return self.named(ORDERS)

    @property
    def fills(self) -> str:
        return self.named(FILLS)

    @property
    def risk_events(self) -> str:
        return self.named(RISK_EVENTS)

    @property
    def dead_letter(self) -> str:
        return self.named(DEAD_LETTER)

    @property
    def consumer_group(self) -> str:
        """The consumer group id of this namespace's workers (they commit nothing, but two
        namespaces never share a group)."""
        return "scalper-live" if self.replay is None else f"scalper-{self.prefix}worker"


LIVE = Namespace()
"""The live namespace: what `scalper stream run` reads and the IB bridge and `scalper kill`
write. Nothing that replays history may name it."""


def _retained(ms: int, **extra: str) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(ms), **extra}


def topic_specs(symbols: Iterable[str], namespace: Namespace = LIVE) -> list[TopicSpec]:
    """Every topic the stream needs for these symbols in `namespace`, bars topics first."""
    market = _retained(MARKET_RETENTION_MS, **{"message.timestamp.type": "LogAppendTime"})
    bars = [TopicSpec(namespace.bars(s), 1, market) for s in dict.fromkeys(symbols)]
    return [
        *bars,
        TopicSpec(namespace.orders, KEYED_PARTITIONS, _retained(AUDIT_RETENTION_MS)),
        TopicSpec(namespace.fills, KEYED_PARTITIONS, _retained(AUDIT_RETENTION_MS)),
        TopicSpec(namespace.risk_events, 1, _retained(AUDIT_RETENTION_MS)),
        TopicSpec(namespace.control, 1, _retained(MARKET_RETENTION_MS)),
        TopicSpec(
            namespace.dead_letter,
            1,
            _retained(AUDIT_RETENTION_MS, **{"max.message.bytes": str(DEAD_LETTER_MAX_BYTES)}),
        ),
    ]


def ensure_topics(bootstrap: str, symbols: Iterable[str], namespace: Namespace = LIVE) -> list[str]:
    """Create the missing topics of `topic_specs(symbols, namespace)`; returns the names it
    created.

    Idempotent: a second call creates nothing, and a topic created concurrently by someone else
    counts as present. An existing topic keeps its partitions and its other configs, but is
    brought to its spec's `ENFORCED_CONFIGS` (a `ScalperError` when the cluster refuses).
    """
    from kafka.errors import TopicAlreadyExistsError

    from scalper.kafka.clients import admin_client

    specs = topic_specs(symbols, namespace)
    admin = admin_client(bootstrap)
    try:
        existing = set(admin.list_topics())
        missing = {s.name: s.create_request() for s in specs if s.name not in existing}
        if missing:
            # Another process may create the same topics between the listing and this request.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing, wait_for_metadata=True)
        _enforce_configs(admin, specs)  # also on a topic someone else created meanwhile
    finally:
        admin.close()
    return list(missing)


def _enforce_configs(admin: KafkaAdminClient, specs: list[TopicSpec]) -> None:
    """Set the `ENFORCED_CONFIGS` of `specs` where the existing topics differ (incrementally:
    the topics' other configs stay as they are), and wait until the broker applies them: a bar
    published right after must already be stamped the new way."""
    wanted = {s.name: {k: v for k, v in s.configs.items() if k in ENFORCED_CONFIGS} for s in specs}
    changes = _config_differences(admin, {name: c for name, c in wanted.items() if c})
    if not changes:
        return
    from kafka.admin import ConfigResource, ConfigResourceType

    altered = admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, n, configs=c) for n, c in changes.items()],
        raise_on_unknown=False,  # the broker judges; a topic made a moment ago lists no configs
        incremental=True,  # the plain form would reset every other config of the topic
    )["topic"]
    deadline = time.monotonic() + CONFIG_WAIT_SECONDS
    for name, result in altered.items():
        if result != "OK":
            key, value = next(iter(changes[name].items()))
            raise ScalperError(
                f"topic {name} must have {key}={value} and the cluster refused to change it "
                f"({result}): {ENFORCED_CONFIGS[key]}"
            )
    while _config_differences(admin, changes):
        if time.monotonic() > deadline:
            raise ScalperError(f"the broker did not apply the configs of {', '.join(changes)}")
        time.sleep(0.05)


def _config_differences(
    admin: KafkaAdminClient, wanted: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """The part of `wanted` (topic -> configs) that the topics do not have yet."""
    if not wanted:
        return {}
    from kafka.admin import ConfigResource, ConfigResourceType

    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, configs=dict.fromkeys(configs))
        for name, configs in wanted.items()
    ]
    found = admin.describe_configs(resources, config_filter="all")["topic"]
    differences = {
        name: {k: v for k, v in configs.items() if found[name].get(k, {}).get("value") != v}
        for name, configs in wanted.items()
    }
    return {name: configs for name, configs in differences.items() if configs}


def delete_replay_topics(bootstrap: str, namespace: Namespace) -> None:
    """Delete the topics of a finished replay (its ledger keeps what it did); never live ones."""
    if namespace.is_live:
        raise ValueError("the live namespace's topics are never deleted")
    from scalper.kafka.clients import admin_client

    admin = admin_client(bootstrap)
    try:
        ours = [name for name in admin.list_topics() if name.startswith(namespace.prefix)]
        if ours:
            admin.delete_topics(ours)
    finally:
        admin.close()
