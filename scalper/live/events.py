"""What the trader publishes: order intents and acknowledgements, fills, risk events, dead letters.

Each event is a Kafka message `(topic, key, value)` in the JSON envelope of SPEC §3, keyed by
symbol. Kafka output is at least once: after a crash the worker processes the input since its
last snapshot again and publishes those events again. That is harmless because every event
carries a deterministic `id` (the client order id, the fill id, the risk event's cause), so a
consumer keeps the first of equal ids. The ledger, not Kafka, is the record of what happened.
`at` is the wall-clock time the worker produced the event (epoch ns), for latency monitoring.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from scalper.brokers import Fill, OrderIntent
from scalper.kafka.messages import DeadLetter, encode, encode_dead_letter
from scalper.kafka.topics import DEAD_LETTER, FILLS, ORDERS, RISK_EVENTS
from scalper.live.sink import Decision

Event = tuple[str, bytes | None, bytes]
"""A message for the output: (topic, key, value); the topic's base name (`orders`, ...), which
the output publishes in the worker's namespace (`scalper.kafka.topics.Namespace.named`)."""


def order_event(order: OrderIntent, decision: Decision) -> Event:
    """An intent with what the sink did with it (`status`: sent, refused, rejected, ...)."""
    payload = {
        "event": "intent",
        "id": order.client_order_id,
        **order._asdict(),
        "status": decision.status,
        "detail": decision.detail,
        "replayed": decision.replayed,
        "at": time.time_ns(),
    }
    return ORDERS, order.symbol.encode(), encode(payload)


def cancel_event(symbol: str, client_order_id: str, why: str) -> Event:
    """The broker's acknowledgement that a working order was cancelled."""
    payload = {"event": "cancelled", "id": client_order_id, "symbol": symbol, "detail": why}
    return ORDERS, symbol.encode(), encode({**payload, "at": time.time_ns()})


def fill_event(fill: Fill, trade: Mapping[str, Any] | None) -> Event:
    """A fill; an exit fill carries the round trip it closed (SPEC §4's trade fields)."""
    payload = {"id": fill.fill_id, **fill._asdict(), "trade": trade, "at": time.time_ns()}
    return FILLS, fill.symbol.encode(), encode(payload)


def risk_event(event_id: str, symbol: str, event: str, detail: str, **extra: Any) -> Event:
    """A halt, a kill, a pause, a refused order, a parameter reload, the end of a replay."""
    payload = {"id": event_id, "symbol": symbol, "event": event, "detail": detail, **extra}
    return RISK_EVENTS, symbol.encode(), encode({**payload, "at": time.time_ns()})


def dead_letter(
    reason: str,
    raw: bytes | None,
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None = None,
) -> Event:
    """Input that was not used, with why and the exact bytes (SPEC §3), under its own key."""
    letter = DeadLetter(reason, raw, topic, partition, offset)
    return (DEAD_LETTER, *encode_dead_letter(letter, key))
