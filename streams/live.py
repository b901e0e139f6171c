"""The live dataflow: bars and commands from Kafka, one trader per instrument, orders out.

    bars.<symbol> ─┐                    ┌ trader of <symbol>: ─┬─► orders       intents, cancels
                   ├─► decode ─► by symbol  the broker's fills, ├─► fills        with trades
    control ───────┘      │             └ engine, risk sink ────┼─► risk-events  halts, reloads
                          └─► undecodable ──────────────────────┴─► dead-letter

Each symbol's trader state lives in exactly one worker (Bytewax keyed state), however many
workers and processes run; it is snapshotted with the input offsets for recovery.

Delivery: exactly once to the broker, at least once to Kafka. After a crash Bytewax resumes from
the last snapshot and processes the input since then again; the deterministic engine decides the
same orders under the same client order ids, and the ledger recognises them, so nothing is sent
twice (`scalper.live.sink`). The events of that stretch are published again, which is harmless:
each carries its deterministic id, and consumers keep the first of equal ids.

Run it with `scalper stream run` (or `scalper stream replay`), which prepares the run folder and
starts `python -m bytewax.run "streams.live:build(config, run_dir, source_seconds=N)"` with
recovery flags; `tail=False` stops at the end of the topics (tests). A replay adds
`replay=<run id>`: the same dataflow in the replay's own topic namespace, with the paper broker.
"""

from __future__ import annotations

from operator import attrgetter
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from scalper.kafka.topics import DEAD_LETTER
from scalper.live.inbound import Decoder, Inbound
from scalper.live.settings import LiveSettings
from scalper.live.trader import trader_step
from streams.kafka_io import KafkaEventSink, PinnedKafkaSource


def build(
    config: str | None,
    run_dir: str,
    source_seconds: int | None = None,
    tail: bool = True,
    replay: str | None = None,
) -> Dataflow:
    """The dataflow for a configuration file and a run folder (see the module docstring)."""
    settings = LiveSettings.load(
        config, Path(run_dir), source_seconds=source_seconds, replay=replay
    )
    decode = Decoder(settings.symbols, settings.namespace)
    flow = Dataflow("scalper_live")
    messages = op.input("kafka_in", flow, PinnedKafkaSource(settings, tail=tail))
    decoded = op.flat_map("decode", messages, lambda message: decode(*message))
    routed = op.branch("tradeable", decoded, _is_inbound)
    by_symbol = op.key_on("by_symbol", routed.trues, attrgetter("symbol"))
    events = op.stateful_flat_map("trader", by_symbol, trader_step(settings))
    dead_letters = op.key_on("dead_letters", routed.falses, lambda letter: DEAD_LETTER)
    op.output("kafka_out", op.merge("events", events, dead_letters), KafkaEventSink(settings))
    return flow


def _is_inbound(item: object) -> bool:
    """Trader input, as opposed to an event ready to publish (a dead letter)."""
    return isinstance(item, Inbound)
