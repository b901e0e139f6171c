"""Replaying a bars file through the live path: Kafka, a stream worker, the paper broker.

`replay` publishes the file to `bars.<symbol>` (paced at N times real time, or as fast as
possible). With `trades_out` it runs the whole session: a Kafka broker and a worker are started
when none runs, the in-band `end_of_data` marker follows the last bar, the worker's completion
event is awaited, and the paper broker's trades are written in SPEC §4's CSV format: a backtest
through the live path, which must equal `scalper backtest`. That needs a configuration of
`broker.kind: paper`: old bars must never trade at Interactive Brokers.

A worker started here gets a run folder of its own (`stream/replays/<symbol>-<time>`), pinned at
the current end of the topics before the first bar is published: it sees exactly this replay,
never a live worker's orders, and a second replay of the same file is a fresh session. A worker
that already runs (`scalper stream run`) is fed instead, and the trades it made within the
file's time span are written.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from kafka import KafkaConsumer, TopicPartition

from scalper import paths
from scalper.backtest import trades_csv_frame, trades_from_records
from scalper.bars import read_bars
from scalper.config import load_config
from scalper.errors import ScalperError
from scalper.kafka.broker import KafkaBroker
from scalper.kafka.clients import publish
from scalper.kafka.messages import Bar, Control, decode, encode_bar, encode_control
from scalper.kafka.topics import ORDERS, RISK_EVENTS, bars_topic, ensure_topics
from scalper.ledger import Ledger
from scalper.live.inbound import END_OF_DATA
from scalper.live.settings import LiveSettings, default_run_dir
from scalper.live.worker import (
    end_offsets,
    prepare_run,
    running_workers,
    start_worker,
    stop_worker,
)
from scalper.progress import Progress

NS_PER_SECOND = 1_000_000_000
WAIT_FLOOR = 120.0  # seconds a worker gets to finish after the last bar, plus ...
WAIT_PER_BAR = 1 / 2_000  # ... this per replayed bar (a slow machine still does 2 k bars/s)


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did: bars published and, end to end, the trades and where they went."""

    symbol: str
    bars: int
    trades: pl.DataFrame | None
    run_dir: Path | None


def source_seconds(bars: pl.DataFrame) -> int:
    """The bar size of a file: the smallest step between two bars (a file of one bar: 1)."""
    step = bars.select(pl.col("ts").diff().min()).item()
    return max(int(step) // NS_PER_SECOND, 1) if step is not None else 1


def bar_messages(bars: pl.DataFrame, symbol: str) -> Iterator[tuple[bytes, bytes]]:
    """The bars as `bars.<symbol>` messages, in file order."""
    for row in bars.select("ts", "open", "high", "low", "close", "volume").iter_rows():
        yield encode_bar(Bar(*row, symbol))


def paced(
    messages: Iterable[tuple[bytes, bytes]], ts: Iterable[int], speed: float | None
) -> Iterator[tuple[bytes, bytes]]:
    """`messages` at `speed` times real time (by their bar times); None: as fast as possible."""
    if speed is None:
        yield from messages
        return
    started = time.monotonic()
    first: int | None = None
    for message, bar_ts in zip(messages, ts, strict=True):
        first = bar_ts if first is None else first
        delay = (bar_ts - first) / NS_PER_SECOND / speed - (time.monotonic() - started)
        if delay > 0:
            time.sleep(delay)
        yield message


def replay(
    config: str | None,
    data: str | Path,
    *,
    speed: float | None = None,
    trades_out: str | Path | None = None,
    progress: bool | None = None,
) -> ReplayResult:
    """Publish `data` for the configured instrument; end to end with `trades_out`."""
    cfg = load_config(config)
    if trades_out is not None and cfg.broker.kind != "paper":  # old bars must never trade at IB
        raise ScalperError(
            f"{cfg.source}: broker.kind = {cfg.broker.kind!r}: a replay runs through the paper "
            "broker only; replay with a configuration of broker.kind: paper"
        )
    bars = read_bars(data)
    symbol = cfg.instrument.symbol
    step = source_seconds(bars)
    if cfg.strategy.bar_seconds % step:
        raise ScalperError(
            f"{data}: {step}-second bars cannot make the strategy's {cfg.strategy.bar_seconds}-"
            "second bars (not a multiple)"
        )
    with _kafka(cfg.kafka.bootstrap):
        ensure_topics(cfg.kafka.bootstrap, [symbol])
        if trades_out is None:
            _publish(cfg.kafka.bootstrap, symbol, bars, speed, progress)
            return ReplayResult(symbol, bars.height, None, None)
        trades, run_dir = _end_to_end(config, symbol, bars, step, speed, progress)
    trades_csv_frame(trades).write_csv(Path(trades_out))
    return ReplayResult(symbol, bars.height, trades, run_dir)


def _end_to_end(
    config: str | None,
    symbol: str,
    bars: pl.DataFrame,
    step: int,
    speed: float | None,
    progress: bool | None,
) -> tuple[pl.DataFrame, Path]:
    """Publish into a running worker, or a worker of its own; wait; the trades it made."""
    running = running_workers(default_run_dir())
    run_dir = default_run_dir() if running else _new_run_dir(symbol)
    settings = LiveSettings.load(config, run_dir, source_seconds=None if running else step)
    if not running:
        prepare_run(settings)
    if running and step % settings.source_seconds:
        raise ScalperError(
            f"the running stream worker takes {settings.source_seconds}-second bars, "
            f"the file has {step}-second bars"
        )
    events_from = end_offsets(settings.bootstrap, [RISK_EVENTS, ORDERS])
    worker = None if running else _start(settings)
    try:
        _publish(settings.bootstrap, symbol, bars, speed, progress)
        end = _publish_end(settings.bootstrap, symbol)
        timeout = WAIT_FLOOR + bars.height * WAIT_PER_BAR
        alive = (lambda: True) if worker is None else (lambda: worker.poll() is None)
        ts = bars["ts"]
        with Progress(bars.height, f"trade {symbol}", unit="bars", enabled=progress) as done:

            def decided_at(bar_ts: int) -> None:  # the worker's progress, from its intents
                done.advance(int(ts.search_sorted(bar_ts, side="right")) - done.done)

            wait_for_end(
                settings.bootstrap, symbol, end.issued_at, events_from, timeout, alive, decided_at
            )
            done.advance(bars.height - done.done)
    finally:
        if worker is not None:
            stop_worker(worker)
    ledger = Ledger(settings.ledger_path)
    try:
        first, last = bars["ts"][0], bars["ts"][-1]
        records = ledger.trades(symbol, since=first, until=last)
    finally:
        ledger.close()
    return trades_from_records(records), run_dir


def _new_run_dir(symbol: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    path = paths.subdir("stream") / "replays" / f"{symbol}-{stamp}"
    path.mkdir(parents=True)
    return path


def _start(settings: LiveSettings) -> subprocess.Popen[bytes]:
    with open(settings.run_dir / "worker.log", "ab") as log:
        return start_worker(settings, log=log)


def _publish(
    bootstrap: str, symbol: str, bars: pl.DataFrame, speed: float | None, progress: bool | None
) -> None:
    with Progress(bars.height, f"publish {symbol}", unit="bars", enabled=progress) as bar:

        def counted() -> Iterator[tuple[bytes, bytes]]:
            for message in paced(bar_messages(bars, symbol), bars["ts"], speed):
                yield message
                bar.advance()

        publish(bootstrap, bars_topic(symbol), counted())


def _publish_end(bootstrap: str, symbol: str) -> Control:
    """The end marker, in-band after the last bar (see `scalper.live.inbound`)."""
    marker = Control(END_OF_DATA, symbol, reason="end of the replayed file")
    publish(bootstrap, bars_topic(symbol), [encode_control(marker)])
    return marker


def wait_for_end(
    bootstrap: str,
    symbol: str,
    issued_at: int,
    start: dict[tuple[str, int], int],
    timeout: float,
    alive: Callable[[], bool],
    decided_at: Callable[[int], None] = lambda bar_ts: None,
) -> dict[str, Any]:
    """The worker's `end_of_data` risk event for the marker `issued_at`, reading the topics of
    `start` from there; `decided_at` hears the bar of every order intent on the way."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, part) for topic, part in start]
        consumer.assign(parts)
        for part in parts:
            consumer.seek(part, start[(part.topic, part.partition)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    event = decode(record.value)
                    if not isinstance(event, dict) or event.get("symbol") != symbol:
                        continue
                    if event.get("event") == "intent":
                        decided_at(event["bar_ts"])
                    elif _is_end(event, issued_at):
                        return event
            if not alive():
                raise ScalperError("the stream worker stopped before the replay was complete")
    finally:
        consumer.close()
    raise ScalperError(f"the stream worker did not finish the replay within {timeout:.0f} s")


def _is_end(event: dict[str, Any], issued_at: int) -> bool:
    return event.get("event") == END_OF_DATA and event.get("issued_at") == issued_at


@contextmanager
def _kafka(bootstrap: str) -> Iterator[None]:
    """A Kafka broker at `bootstrap` for the block: the one answering there, else the data
    directory's local broker, started here and stopped afterwards."""
    if _answers(bootstrap):
        yield
        return
    broker = KafkaBroker.for_bootstrap(bootstrap)
    broker.start(progress=lambda message: print(f"{message} ...", file=sys.stderr, flush=True))
    try:
        yield
    finally:
        broker.stop()


def _answers(bootstrap: str) -> bool:
    """True when something accepts connections at the first `host:port` of `bootstrap`."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
    except OSError:
        return False
    return True
