"""Replaying a bars file through the stream path: Kafka, a stream worker, the paper broker.

`replay` runs a whole session: a Kafka broker is started when none answers, a worker of the
replay's own starts, the file is published (paced at N times real time, or as fast as possible)
and followed by the in-band `end_of_data` marker, the worker's completion event is awaited, and
the paper broker's trades are returned (and written in SPEC §4's CSV format with `trades_out`):
a backtest through the stream path, which must equal `scalper backtest`.

History must never reach a live worker, whatever is running and whatever the configuration
says. So a replay is isolated by construction, not by checks:

- its run folder is its own (`stream/replays/<symbol>-<time>`): its ledger, its recovery store;
- its topics are its own namespace (`replay.<run id>.bars.MES`, `replay.<run id>.orders`, ...,
  `scalper.kafka.topics.Namespace`), deleted when it is done; nothing here names a live topic;
- its worker trades through the paper broker even with `broker.kind: ibkr`
  (`LiveSettings.load(..., replay=...)`): old bars never trade at Interactive Brokers.

Nor does it leave anything behind: its worker dies with it however it ends, a stopped replay
(Ctrl-C, SIGTERM) deletes its topics, and the topics of one killed outright are deleted by the
data directory's next replay. A broker it started is stopped afterwards only if no worker of the
data directory reads it by then.
"""

from __future__ import annotations

import contextlib
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
from kafka.errors import KafkaError

from scalper import paths
from scalper.backtest import trades_from_records, write_trades_csv
from scalper.bars import BarFileSpec, check_symbol, off_tick_warning, read_bars, time_warnings
from scalper.config import load_config
from scalper.errors import ScalperError
from scalper.kafka.broker import KafkaBroker
from scalper.kafka.clients import admin_client, publish
from scalper.kafka.messages import Bar, Control, decode, encode_bar, encode_control
from scalper.kafka.topics import REPLAY_PREFIX, Namespace, delete_replay_topics
from scalper.ledger import Ledger
from scalper.live.inbound import END_OF_DATA
from scalper.live.settings import LiveSettings, default_run_dir
from scalper.live.worker import (
    end_offsets,
    pid_path,
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
    """What a replay did: bars published, the trades, and the run folder that holds its state."""

    symbol: str
    bars: int
    trades: pl.DataFrame
    run_dir: Path
    paper_instead_of: str | None  # the configured broker.kind the replay did not use


def source_seconds(bars: pl.DataFrame) -> int:
    """The bar size of a file: the smallest step between two bars (a file of one bar: 1)."""
    step = bars.select(pl.col("ts").diff().min()).item()
    return max(int(step) // NS_PER_SECOND, 1) if step is not None else 1


def bar_messages(bars: pl.DataFrame, symbol: str) -> Iterator[tuple[bytes, bytes]]:
    """The bars as messages of a bars topic, in file order."""
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
    spec: BarFileSpec | None = None,
) -> ReplayResult:
    """Replay `data` for the configured instrument in a namespace of its own (see the module
    docstring); its trades also go to `trades_out`. `spec` says how to read the file's times
    (default: the configuration's `data:` answers).

    Prices off the instrument's tick grid are refused before anything is published: the live
    worker dead-letters such bars, so the replay would quietly trade on what is left.
    """
    cfg = load_config(config)
    spec = spec or BarFileSpec.configured(cfg.data)
    bars = read_bars(data, spec)
    check_symbol(bars, cfg.instrument.symbol, str(data))
    for warning in time_warnings(bars, spec.stamped, str(data)):
        print(f"warning: {warning}", file=sys.stderr)
    off_tick = off_tick_warning(bars, cfg.instrument.tick_size, str(data))
    if off_tick is not None:
        raise ScalperError(f"{off_tick}; the live worker refuses such bars")
    symbol = cfg.instrument.symbol
    step = source_seconds(bars)
    if cfg.strategy.bar_seconds % step:
        raise ScalperError(
            f"{data}: {step}-second bars cannot make the strategy's {cfg.strategy.bar_seconds}-"
            "second bars (not a multiple)"
        )
    run_dir = _new_run_dir(symbol)
    settings = LiveSettings.load(config, run_dir, source_seconds=step, replay=run_dir.name)
    with _kafka(cfg.kafka.bootstrap):
        try:
            trades = _end_to_end(settings, symbol, bars, speed, progress)
        finally:  # housekeeping: it must not hide what went wrong in the replay itself
            with contextlib.suppress(ScalperError, KafkaError):
                delete_replay_topics(settings.bootstrap, settings.namespace)
    if trades_out is not None:
        write_trades_csv(trades, trades_out)
    ignored = cfg.broker.kind if cfg.broker.kind != "paper" else None
    return ReplayResult(symbol, bars.height, trades, run_dir, ignored)


def _end_to_end(
    settings: LiveSettings,
    symbol: str,
    bars: pl.DataFrame,
    speed: float | None,
    progress: bool | None,
) -> pl.DataFrame:
    """Start the replay's worker, publish into its namespace, wait; the trades it made."""
    namespace = settings.namespace
    prepare_run(settings)
    events_from = end_offsets(settings.bootstrap, [namespace.risk_events, namespace.orders])
    worker = _start(settings)
    try:
        _publish(settings.bootstrap, namespace, symbol, bars, speed, progress)
        end = _publish_end(settings.bootstrap, namespace, symbol)
        timeout = WAIT_FLOOR + bars.height * WAIT_PER_BAR
        ts = bars["ts"]
        with Progress(bars.height, f"trade {symbol}", unit="bars", enabled=progress) as done:

            def decided_at(bar_ts: int) -> None:  # the worker's progress, from its intents
                done.advance(int(ts.search_sorted(bar_ts, side="right")) - done.done)

            wait_for_end(
                settings.bootstrap,
                symbol,
                end.issued_at,
                events_from,
                timeout,
                lambda: worker.poll() is None,
                decided_at,
            )
            done.advance(bars.height - done.done)
    finally:
        stop_worker(worker)
    ledger = Ledger(settings.ledger_path)
    try:
        records = ledger.trades(symbol)
    finally:
        ledger.close()
    return trades_from_records(records)


def _new_run_dir(symbol: str) -> Path:
    """A run folder no other replay has: named by the time, and by a count after it when
    another replay started in the same microsecond (its folder, ledger and topics are its own)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    replays = paths.subdir("stream") / "replays"
    replays.mkdir(exist_ok=True)
    attempt = 0
    while True:
        path = replays / (f"{symbol}-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            path.mkdir()
        except FileExistsError:
            attempt += 1
            continue
        return path


def _start(settings: LiveSettings) -> subprocess.Popen[bytes]:
    with open(settings.run_dir / "worker.log", "ab") as log:
        return start_worker(settings, log=log, exit_with_parent=True)


def _publish(
    bootstrap: str,
    namespace: Namespace,
    symbol: str,
    bars: pl.DataFrame,
    speed: float | None,
    progress: bool | None,
) -> None:
    with Progress(bars.height, f"publish {symbol}", unit="bars", enabled=progress) as bar:

        def counted() -> Iterator[tuple[bytes, bytes]]:
            for message in paced(bar_messages(bars, symbol), bars["ts"], speed):
                yield message
                bar.advance()

        publish(bootstrap, namespace.bars(symbol), counted())


def _publish_end(bootstrap: str, namespace: Namespace, symbol: str) -> Control:
    """The end marker, in-band after the last bar (see `scalper.live.inbound`)."""
    marker = Control(END_OF_DATA, symbol, reason="end of the replayed file")
    publish(bootstrap, namespace.bars(symbol), [encode_control(marker)])
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
    directory's local broker, started here and stopped afterwards unless a worker of the data
    directory reads it by then (a live one started meanwhile, another replay that found it
    answering): stopping it would leave them without bars."""
    broker = None
    if not _answers(bootstrap):
        local = KafkaBroker.for_bootstrap(bootstrap)
        if local.start(progress=_starting):  # not when another start got there first
            broker = local
    try:
        with contextlib.suppress(KafkaError):  # housekeeping must not stop the replay
            _delete_abandoned_topics(bootstrap)
        yield
    finally:
        readers = _running_workers() if broker is not None else []
        if readers:
            print(
                f"note: the Kafka broker this replay started stays up: {readers[0]} reads it",
                file=sys.stderr,
            )
        elif broker is not None:
            broker.stop()


def _starting(message: str) -> None:
    print(f"{message} ...", file=sys.stderr, flush=True)


def _running_workers() -> list[str]:
    """The stream workers of the data directory that run now, described."""
    live = default_run_dir()
    found = [f"the live stream worker (pid {pid})" for pid in running_workers(live)]
    for folder in sorted((live / "replays").glob("*")):
        found += [f"replay {folder.name} (pid {pid})" for pid in running_workers(folder)]
    return found


def _delete_abandoned_topics(bootstrap: str) -> None:
    """Delete the topics of this data directory's replays whose worker ran and is gone: a
    replay killed outright (SIGKILL, a power cut) had no chance to. A replay whose worker has
    not started yet (no pid file) is being prepared, and replays of another data directory on
    the same broker are not this one's to judge."""
    replays = default_run_dir() / "replays"
    admin = admin_client(bootstrap)
    try:
        names = admin.list_topics()
    finally:
        admin.close()
    run_ids = {
        n[len(REPLAY_PREFIX) :].split(".", 1)[0] for n in names if n.startswith(REPLAY_PREFIX)
    }
    for run_id in sorted(run_ids):
        folder = replays / run_id
        if pid_path(folder, None).is_file() and not running_workers(folder):
            delete_replay_topics(bootstrap, Namespace.of_replay(run_id))


def _answers(bootstrap: str) -> bool:
    """True when something accepts connections at the first `host:port` of `bootstrap`."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
    except OSError:
        return False
    return True
