"""Helpers of the stream tests: configurations per conformance case, bars as trader input and
as Kafka messages, dataflow runs in this process, and the trades a run left in its ledger.

The conformance cases are history, which a live worker refuses (`stream.max_bar_age_seconds`):
the runs here are replays, each in a topic namespace of its own (`start_run`), so they never see
each other's messages nor a live worker's; the dataflow is the live one."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main

from scalper.backtest import run_backtest, trades_csv_frame, trades_from_records
from scalper.bars import read_bars
from scalper.config import load_config
from scalper.kafka.clients import publish
from scalper.kafka.messages import Bar, Control, encode_bar, encode_control
from scalper.kafka.topics import LIVE, ensure_topics
from scalper.ledger import Ledger
from scalper.live.inbound import Inbound
from scalper.live.replay import source_seconds
from scalper.live.settings import LiveSettings
from scalper.live.worker import pin_start_offsets
from streams.live import build
from tests.shared import bars_path

Rows = list[dict[str, str]]


def write_config(path: Path, overrides: Mapping[str, Any], **sections: Mapping[str, Any]) -> str:
    """A configuration file: `overrides` (a case's file) with `sections` merged in."""
    merged: dict[str, Any] = {name: dict(body or {}) for name, body in overrides.items()}
    for name, body in sections.items():
        merged.setdefault(name, {}).update(body)
    path.write_text(yaml.safe_dump(merged))
    return str(path)


def case_config(case: Path, folder: Path, bootstrap: str, **sections: Mapping[str, Any]) -> str:
    """A conformance case's configuration for the stream: its broker, its bars' size."""
    overrides = yaml.safe_load((case / "config.yaml").read_text()) or {}
    stream = {"source_bar_seconds": source_seconds(case_bars(case)), **sections.pop("stream", {})}
    return write_config(
        folder / f"{case.name}.yaml",
        overrides,
        kafka={"bootstrap": bootstrap},
        stream=stream,
        **sections,
    )


def case_bars(case: Path) -> pl.DataFrame:
    return read_bars(bars_path(case))


def bars_of(frame: pl.DataFrame, symbol: str) -> list[Bar]:
    return [Bar(*row, symbol) for row in frame.select(*Bar._fields[:6]).iter_rows()]


PUBLISHED_AFTER_CLOSE = 1_000_000_000
"""How long after its close a live bar reaches Kafka, in these tests (IB: about a second)."""


def inbound(
    bars: Iterable[Bar], first_offset: int = 0, source_seconds: int = 60
) -> Iterator[Inbound]:
    """Bars as the decoder hands them to a live trader, each published as it closed."""
    lag = source_seconds * 1_000_000_000 + PUBLISHED_AFTER_CLOSE
    for offset, bar in enumerate(bars, first_offset):
        topic = LIVE.bars(bar.symbol)
        yield Inbound(bar.symbol, bar, encode_bar(bar)[1], topic, 0, offset, bar.ts + lag)


def end_marker(symbol: str, offset: int) -> Inbound:
    control = Control("end_of_data", symbol, issued_at=offset)
    return Inbound(symbol, control, encode_control(control)[1], LIVE.bars(symbol), 0, offset)


def rows(trades: list[dict[str, Any]]) -> Rows:
    """Trade records as the text rows of a trades CSV (SPEC §4)."""
    text = trades_csv_frame(trades_from_records(trades)).write_csv()
    return list(csv.DictReader(io.StringIO(text)))


def backtest_rows(bars: pl.DataFrame, config: str, symbol: str | None = None) -> Rows:
    """The batch backtest's trades for `bars` (as `symbol`, with its contract facts)."""
    cfg = load_config(config)
    if symbol is not None and symbol != cfg.instrument.symbol:
        from scalper.instruments import INSTRUMENTS

        spec = INSTRUMENTS[symbol]
        instrument = replace(
            cfg.instrument, symbol=symbol, tick_size=spec.tick_size, point_value=spec.point_value
        )
        cfg = replace(cfg, instrument=instrument)
    text = trades_csv_frame(run_backtest(bars, cfg).trades).write_csv()
    return list(csv.DictReader(io.StringIO(text)))


def ledger_rows(settings: LiveSettings, symbol: str) -> Rows:
    ledger = Ledger(settings.ledger_path)
    try:
        return rows(ledger.trades(symbol))
    finally:
        ledger.close()


def replay_settings(config: str, run_dir: Path) -> LiveSettings:
    """The settings of a replay run in `run_dir`, in a topic namespace of its own."""
    return LiveSettings.load(config, run_dir, replay=f"test-{uuid.uuid4().hex[:12]}")


def start_run(config: str, run_dir: Path) -> LiveSettings:
    """A fresh replay run folder whose input starts at the current end of its topics."""
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = replay_settings(config, run_dir)
    ensure_topics(settings.bootstrap, settings.symbols, settings.namespace)
    pin_start_offsets(settings)
    return settings


def publish_bars(
    live: LiveSettings, bars: Iterable[Bar], symbol: str, *, end: bool = False, issued_at: int = 1
) -> None:
    """Publish bars to the run's `bars.<symbol>` (then, with `end`, the end-of-data marker)."""
    messages = [encode_bar(bar) for bar in bars]
    if end:
        messages.append(encode_control(Control("end_of_data", symbol, issued_at=issued_at)))
    publish(live.bootstrap, live.namespace.bars(symbol), messages)


def send_command(live: LiveSettings, control: Control) -> None:
    """An operator command on the run's `control` topic."""
    publish(live.bootstrap, live.namespace.control, [encode_control(control)])


def run_to_end(settings: LiveSettings, *, recover: bool = False) -> None:
    """Run the dataflow in this process until its topics are read to their end.

    With `recover`, Bytewax recovery is on (initialised on first use), so successive runs
    continue from each other's snapshots, as restarts of a worker do.
    """
    flow = build(
        settings.config_path,
        str(settings.run_dir),
        tail=False,
        replay=settings.namespace.replay,
    )
    if not recover:
        run_main(flow)
        return
    recovery = settings.recovery_dir
    if not recovery.exists():
        recovery.mkdir()
        init_db_dir(recovery, 1)
    config = RecoveryConfig(recovery, backup_interval=timedelta(0))
    run_main(flow, epoch_interval=timedelta(seconds=1), recovery_config=config)
