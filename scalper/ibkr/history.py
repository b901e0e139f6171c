"""Historical bars from Interactive Brokers: chunked, paced, resumable, stamped at bar start.

**What is downloaded.** `contract` picks the series:

* `"front"` — the front contract of each session by the project's roll rule (SPEC §2), each
  contract qualified by its expiry month with `includeExpired`, so past rolls download the
  contracts that were traded then. The series is named after the product (`symbol` = `MES`) and
  every bar records its `contract` (`MESH4`), which back-adjustment needs.
* a local symbol such as `"MESH4"` — that one contract over the whole range, named after itself.
* `"continuous"` — IB's own continuous future (`CONTFUT`). IB only serves it up to *now*: its
  `endDateTime` must be empty (error 10339), so the range must end within one request's maximum
  duration of the present. For history, use `"front"`.

`start` and `end` are UTC dates, inclusive, because the bar store partitions by UTC day: a
download then covers whole store days, and re-storing a day replaces it exactly.

**IB's limits** (TWS API, "Historical Data Limitations" and "Duration and bar size",
https://interactivebrokers.github.io/tws-api/historical_limitations.html,
https://www.interactivebrokers.com/campus/ibkr-api-page/twsapi-doc/#hist-step-size). The longest
duration one request may ask for, per bar size: 1 secs → 1800 S, 5 secs → 3600 S, 10–15 secs →
14400 S, 30 secs → 28800 S, 1 min → 1 D, 2 mins → 2 D, 3–20 mins → 1 W, 30 mins–1 hour → 1 M.
Bars of 30 seconds or less are only kept for about six months, and expired futures for two years
after expiry. The pacing rules are in `pacing.py`.

**Chunks.** Requests are cut into chunks of `min(max duration, 1 day)`, aligned to multiples of
the chunk length since the epoch (so to UTC midnight) and stated in seconds (`86400 S`). Seconds
are exact: IB counts `D`/`W`/`M` durations in trading sessions, whose 18:00 New York boundaries
never line up with a UTC window, so a longer chunk could be covered short without any error.
Bar sizes above one minute thus use one request per day, as 1-minute bars must anyway. Each bar
is kept by the one chunk whose window holds its start, so chunks never overlap.

**Resume.** Every finished chunk is written (atomically, validated) to a file under
`<data dir>/downloads/ibkr/`, empty chunks included; a re-run skips chunks whose file exists, so
an interrupted download continues where it stopped and never stores a bar twice. Chunks that
reach into the present are not kept (their bars are not final). The files of a download are
removed when it completes, so running it again later fetches fresh data.

**Time stamps.** Requests ask for `formatDate=2`: IB then sends each bar's START as epoch seconds
(UTC), which become `ts` in nanoseconds unchanged (SPEC §3: a bar with `ts = T` covers
`[T, T + bar_seconds)`).

**Errors.** A pacing violation or a request IB leaves unanswered is retried after a growing pause
(15 s, 30 s, ... 8 min: together longer than IB's 10-minute window); "HMDS query returned no data"
is an empty chunk (a weekend, a holiday); any other IB error, or a lost connection, stops with one
line, and the finished chunks remain for the re-run.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Self

import polars as pl
from ib_async import IB, BarData, ContFuture, Contract, Future, util

from scalper.bars import BAR_SCHEMA, validate_bars, write_bars
from scalper.calendar import GLOBEX_SESSION_END, SessionClock
from scalper.config import BrokerConfig
from scalper.errors import ScalperError
from scalper.ibkr.connection import connect_async
from scalper.ibkr.link import role_client_id
from scalper.ibkr.pacing import Clock, HistoricalPacer, SystemClock
from scalper.instruments import DEFAULT_ROLL_DAYS, MONTH_CODES, front_contract, spec
from scalper.instruments import Contract as InstrumentContract
from scalper.paths import subdir
from scalper.progress import Progress
from scalper.simulate import NEW_YORK

log = logging.getLogger(__name__)

DAY = 86_400
NS = 1_000_000_000

BAR_SIZE_SETTINGS: Mapping[int, str] = {
    1: "1 secs", 5: "5 secs", 10: "10 secs", 15: "15 secs", 30: "30 secs", 60: "1 min",
    120: "2 mins", 180: "3 mins", 300: "5 mins", 600: "10 mins", 900: "15 mins",
    1200: "20 mins", 1800: "30 mins", 3600: "1 hour",
}  # fmt: skip
"""Bar seconds → IB's `barSizeSetting`, for the bar sizes the downloader supports."""

MAX_DURATION: Mapping[int, int] = {
    1: 1800, 5: 3600, 10: 14_400, 15: 14_400, 30: 28_800, 60: DAY, 120: 2 * DAY,
    180: 7 * DAY, 300: 7 * DAY, 600: 7 * DAY, 900: 7 * DAY, 1200: 7 * DAY,
    1800: 28 * DAY, 3600: 28 * DAY,  # IB's "1 M", which is never shorter than 28 days
}  # fmt: skip
"""Bar seconds → the longest duration (seconds) IB serves in one request."""

RETRY_PAUSES = (15.0, 30.0, 60.0, 120.0, 240.0, 480.0)
"""Pauses before retrying a paced or unanswered request; the sum exceeds IB's 10-minute window."""

REQUEST_TIMEOUT = 120.0
WHAT_TO_SHOW = "TRADES"

_LOCAL_SYMBOL = re.compile(rf"^(?P<symbol>[A-Z0-9]+)[{MONTH_CODES}]\d$")


# ---------------------------------------------------------------------------------------------
# The plan: which contracts, which windows, which requests


def chunk_seconds(bar_seconds: int) -> int:
    """The length of one request for `bar_seconds` bars (see the module docstring)."""
    return min(MAX_DURATION[bar_seconds], DAY)


@dataclass(frozen=True)
class Chunk:
    """The bars starting in `[start_ns, end_ns)` of one contract: one request."""

    start_ns: int
    end_ns: int

    def request(self, now_ns: int) -> tuple[datetime | str, str]:
        """IB's `endDateTime` and `durationStr` for this chunk; a chunk reaching into the
        present ends "now" (an empty end), which IB always accepts."""
        if self.end_ns <= now_ns:
            return _utc(self.end_ns), duration_text(self.end_ns - self.start_ns)
        return "", duration_text(now_ns - self.start_ns)

    def is_final(self, now_ns: int) -> bool:
        """Whether every bar of the chunk has closed, so its content can no longer change."""
        return self.end_ns <= now_ns


def chunks(start_ns: int, end_ns: int, bar_seconds: int) -> list[Chunk]:
    """The aligned chunks covering `[start_ns, end_ns)`, in time order."""
    width = chunk_seconds(bar_seconds) * NS
    first = start_ns // width * width
    return [Chunk(t, t + width) for t in range(first, end_ns, width)]


def duration_text(duration_ns: int) -> str:
    """IB's `durationStr` covering at least `duration_ns`, in whole seconds (exact; IB takes
    up to 86400 S, and no chunk is longer than a day)."""
    return f"{max(1, math.ceil(duration_ns / NS))} S"


@dataclass(frozen=True)
class Piece:
    """One contract's share of a download: its bars starting in `[start_ns, end_ns)`.

    `wanted` is the contract as asked of IB (qualified later); `name` labels its bars (`contract`
    column) and its resume files.
    """

    name: str
    wanted: Contract
    start_ns: int
    end_ns: int

    @property
    def continuous(self) -> bool:
        return self.wanted.secType == "CONTFUT"

    def chunks(self, bar_seconds: int) -> list[Chunk]:
        """The requests of this piece: aligned chunks; one request for the continuous future,
        since IB serves it only as "the last N seconds or days up to now"."""
        if self.continuous:
            return [Chunk(self.start_ns, self.end_ns)]
        return chunks(self.start_ns, self.end_ns, bar_seconds)


def plan(
    symbol: str, start: date, end: date, contract: str, roll_days: int = DEFAULT_ROLL_DAYS
) -> list[Piece]:
    """The pieces of a download of the UTC days `start` … `end` (see the module docstring)."""
    product = spec(symbol)
    start_ns, end_ns = _utc_day_ns(start), _utc_day_ns(end + timedelta(days=1))
    listed = {"exchange": product.exchange, "currency": product.currency}
    if contract == "continuous":
        return [Piece("CONTFUT", ContFuture(symbol, **listed), start_ns, end_ns)]
    if contract != "front":
        local = _local_symbol(symbol, contract)
        wanted = Future(symbol, localSymbol=local, includeExpired=True, **listed)
        return [Piece(local, wanted, start_ns, end_ns)]
    return [
        Piece(
            name=front.local_symbol,
            wanted=Future(symbol, f"{front.year}{front.month:02d}", includeExpired=True, **listed),
            start_ns=max(start_ns, _session_open_ns(first)),
            end_ns=min(end_ns, _session_open_ns(last + timedelta(days=1))),
        )
        for front, first, last in _front_runs(symbol, start_ns, end_ns, roll_days)
    ]


def _front_runs(
    symbol: str, start_ns: int, end_ns: int, roll_days: int
) -> list[tuple[InstrumentContract, date, date]]:
    """(front contract, its first and last session date) for the sessions in the window."""
    clock = SessionClock()
    day, last_day = clock.session_date(start_ns), clock.session_date(end_ns - 1)
    runs: list[tuple[InstrumentContract, date, date]] = []
    while day <= last_day:
        front = front_contract(symbol, day, roll_days)
        if runs and runs[-1][0] == front:
            runs[-1] = (front, runs[-1][1], day)
        else:
            runs.append((front, day, day))
        day += timedelta(days=1)
    return runs


def _session_open_ns(session: date) -> int:
    """When the session dated `session` opens: 18:00 New York on the day before."""
    opens = datetime.combine(session - timedelta(days=1), GLOBEX_SESSION_END, tzinfo=NEW_YORK)
    return int(opens.timestamp()) * NS


def _local_symbol(symbol: str, contract: str) -> str:
    match = _LOCAL_SYMBOL.match(contract)
    if not match or match["symbol"] != symbol:
        raise ScalperError(
            f"contract {contract!r} is not front, continuous or a local symbol of {symbol} "
            f"(e.g. {symbol}H4)"
        )
    return contract


# ---------------------------------------------------------------------------------------------
# Downloading


def download_history(
    source: IB | BrokerConfig,
    symbol: str,
    start: date,
    end: date,
    *,
    bar_seconds: int = 60,
    contract: str = "front",
    roll_days: int = DEFAULT_ROLL_DAYS,
    client_id: int | None = None,
    cache_dir: Path | None = None,
    clock: Clock | None = None,
    pacer: HistoricalPacer | None = None,
    progress: bool | None = None,
) -> pl.DataFrame:
    """Download bars of the UTC days `start` … `end` (inclusive); blocking.

    `source` is a connected `IB`, or broker settings to connect with (`client_id` overrides
    theirs) and disconnect afterwards. Returns `BAR_SCHEMA` columns plus `symbol` (the series
    name) and `contract` (where each bar came from), validated, in time order; empty when IB has
    no bars in the range. The other arguments are those of `download_history_async`.
    """
    # A user's mistake is reported before connecting, not after a slow connection failure.
    _checked_plan(symbol, start, end, contract, roll_days, bar_seconds)
    options = {
        "bar_seconds": bar_seconds, "contract": contract, "roll_days": roll_days,
        "cache_dir": cache_dir, "clock": clock, "pacer": pacer, "progress": progress,
    }  # fmt: skip
    if isinstance(source, IB):
        return util.run(download_history_async(source, symbol, start, end, **options))

    async def connected() -> pl.DataFrame:
        # Its own client id by default: a download must not take the trader's connection.
        chosen = role_client_id(source, "history") if client_id is None else client_id
        ib = await connect_async(source, client_id=chosen)
        try:
            return await download_history_async(ib, symbol, start, end, **options)
        finally:
            ib.disconnect()

    return util.run(connected())


async def download_history_async(
    ib: IB,
    symbol: str,
    start: date,
    end: date,
    *,
    bar_seconds: int = 60,
    contract: str = "front",
    roll_days: int = DEFAULT_ROLL_DAYS,
    cache_dir: Path | None = None,
    clock: Clock | None = None,
    pacer: HistoricalPacer | None = None,
    progress: bool | None = None,
) -> pl.DataFrame:
    """`download_history` on a connected `IB`, inside its event loop.

    `cache_dir` holds the resume files (default `<data dir>/downloads/ibkr`); `clock` and `pacer`
    default to the system clock and a fresh `HistoricalPacer` on it (share one pacer between
    downloads that run back to back); `progress` forces the progress bar on or off.
    """
    pieces = _checked_plan(symbol, start, end, contract, roll_days, bar_seconds)
    clock = clock or SystemClock()
    fetcher = _Fetcher(ib, pacer or HistoricalPacer(clock), clock, bar_seconds)
    cache = _ChunkCache(cache_dir or subdir("downloads") / "ibkr", bar_seconds)
    series = contract if contract not in ("front", "continuous") else symbol
    work = [(piece, chunk) for piece in pieces for chunk in piece.chunks(bar_seconds)]
    try:
        with fetcher:
            qualified = {piece.name: await _qualify(ib, piece) for piece in pieces}
            frames = []
            label = f"download {series}"
            with Progress(len(work), label, unit=" requests", enabled=progress) as bar:
                for piece, chunk in work:
                    bars = await _chunk_bars(fetcher, cache, piece, qualified[piece.name], chunk)
                    frames.append(bars)
                    bar.advance()
    except ConnectionError:
        raise ScalperError(
            "lost the connection to IB Gateway/TWS; run the same download again to resume "
            "(finished requests are kept)"
        ) from None
    result = _assemble(frames, series)
    cache.forget((piece.name, chunk) for piece, chunk in work)
    return result


def _checked_plan(
    symbol: str, start: date, end: date, contract: str, roll_days: int, bar_seconds: int
) -> list[Piece]:
    """The download's plan, or a `ScalperError` naming the user's mistake."""
    if start > end:
        raise ScalperError(f"download: start {start} is after end {end}")
    if bar_seconds not in BAR_SIZE_SETTINGS:
        sizes = ", ".join(str(s) for s in BAR_SIZE_SETTINGS)
        raise ScalperError(f"download: bar_seconds must be one of {sizes} (got {bar_seconds})")
    return plan(symbol, start, end, contract, roll_days)


async def _qualify(ib: IB, piece: Piece) -> Contract:
    """The contract IB knows for `piece`, with `includeExpired` kept: IB's details come back
    with the flag off, and without it an expired contract has no historical data."""
    details = await ib.reqContractDetailsAsync(piece.wanted)
    if not details:
        raise ScalperError(
            f"IB has no contract {piece.name} for {piece.wanted.symbol} (a typo, or expired more "
            "than two years ago, beyond IB's history?)"
        )
    if len(details) > 1:
        names = ", ".join(sorted(d.contract.localSymbol for d in details if d.contract))
        raise ScalperError(f"{piece.name} is ambiguous at IB: {names}")
    found = details[0].contract
    assert found is not None
    found.includeExpired = piece.wanted.includeExpired
    return found


async def _chunk_bars(
    fetcher: _Fetcher, cache: _ChunkCache, piece: Piece, contract: Contract, chunk: Chunk
) -> pl.DataFrame:
    """One chunk's bars inside the piece's window, from its resume file or from IB."""
    bars = cache.read(piece.name, chunk)
    if bars is None:
        now_ns = int(fetcher.clock.now() * NS)
        bars = await _download_chunk(fetcher, piece, contract, chunk, now_ns)
        if chunk.is_final(now_ns) and not piece.continuous:
            cache.write(piece.name, chunk, bars)
    return _within(bars, piece.start_ns, piece.end_ns).with_columns(
        contract=pl.lit(piece.name, pl.String)
    )


async def _download_chunk(
    fetcher: _Fetcher, piece: Piece, contract: Contract, chunk: Chunk, now_ns: int
) -> pl.DataFrame:
    """The validated bars IB has for one chunk (nothing to ask for a chunk in the future)."""
    if chunk.start_ns >= now_ns:
        return pl.DataFrame(schema=BAR_SCHEMA)
    if piece.continuous:
        end, duration = "", _continuous_duration(now_ns - chunk.start_ns, fetcher.bar_seconds)
    else:
        end, duration = chunk.request(now_ns)
    bars = await fetcher.fetch(contract, end, duration, piece.name)
    bars = _within(bars, chunk.start_ns, chunk.end_ns)
    if bars.height:  # wrong bars are kept for validation to quarantine (`BadBars`)
        where = f"IB {piece.name} bars from {_utc(chunk.start_ns):%Y-%m-%d %H:%M}"
        validate_bars(bars, where, bad_bars="keep")
    return bars


def _continuous_duration(reach_ns: int, bar_seconds: int) -> str:
    """A duration ending now that reaches back `reach_ns`, within IB's maximum for the bar size.

    Beyond a day IB wants days, which it counts in trading sessions, the current one included
    even when it has just begun: one day more makes sure the reach is covered.
    """
    seconds = max(1, math.ceil(reach_ns / NS))
    days = math.ceil(seconds / DAY) + 1
    duration, length = (f"{seconds} S", seconds) if seconds <= DAY else (f"{days} D", days * DAY)
    if length > MAX_DURATION[bar_seconds]:
        limit = timedelta(seconds=MAX_DURATION[bar_seconds])
        raise ScalperError(
            f"IB serves its continuous future only up to now, at most {limit} of "
            f"{BAR_SIZE_SETTINGS[bar_seconds]} bars ({duration} needed); "
            "use --contract front for history"
        )
    return duration


def _within(bars: pl.DataFrame, start_ns: int, end_ns: int) -> pl.DataFrame:
    return bars.filter(pl.col("ts").is_between(start_ns, end_ns, closed="left"))


def _assemble(frames: list[pl.DataFrame], series: str) -> pl.DataFrame:
    """The pieces' bars as one checked series (pieces are disjoint and in time order); a wrong
    bar IB served is kept, as from any source, for `scalper validate` to quarantine."""
    empty = pl.DataFrame(schema={**BAR_SCHEMA, "contract": pl.String()})
    bars = pl.concat([empty, *frames]).with_columns(symbol=pl.lit(series, pl.String))
    if bars.height == 0:
        return bars
    return validate_bars(bars, f"IB {series} download", bad_bars="keep")


# ---------------------------------------------------------------------------------------------
# One request, with pacing, retries and IB's error codes


class _Fetcher:
    """Sends historical-data requests one at a time and interprets IB's answers.

    IB reports a request's failure as an error message for its request id, which ib_async turns
    into an empty result (and a log line). The fetcher listens to `ib.errorEvent` while it is
    open (`with fetcher:`) to tell "no data", "pacing violation" and real errors apart.
    """

    def __init__(self, ib: IB, pacer: HistoricalPacer, clock: Clock, bar_seconds: int) -> None:
        self.ib = ib
        self.pacer = pacer
        self.clock = clock
        self.bar_seconds = bar_seconds
        self._errors: dict[int, tuple[int, str]] = {}

    def __enter__(self) -> Self:
        self.ib.errorEvent += self._on_error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.ib.errorEvent -= self._on_error

    def _on_error(self, req_id: int, code: int, text: str, contract: Contract | None) -> None:
        if not 2100 <= code < 2200:  # 21xx are warnings about the connection, not the request
            self._errors[req_id] = (code, text)

    async def fetch(
        self, contract: Contract, end: datetime | str, duration: str, name: str
    ) -> pl.DataFrame:
        """The bars IB returns for one request; retried on pacing violations and silence."""
        bar_size = BAR_SIZE_SETTINGS[self.bar_seconds]
        request = f"{name} {bar_size} bars, {duration} ending {end or 'now'}"
        for pause in (*RETRY_PAUSES, None):
            await self.pacer.acquire(
                (contract.conId, contract.secType, WHAT_TO_SHOW),
                (contract.conId, contract.secType, str(end), duration, bar_size, WHAT_TO_SHOW),
            )
            bars, error = await self._request(contract, end, duration, bar_size)
            if bars:
                return _bars_frame(bars)
            if error and "returned no data" in error[1]:
                return pl.DataFrame(schema=BAR_SCHEMA)
            if error and "pacing violation" not in error[1].lower():
                raise ScalperError(f"IB refused {request}: error {error[0]}: {error[1]}")
            if pause is None:
                break
            why = "pacing violation" if error else "no answer"
            log.warning("IB %s for %s; retrying in %.0f s", why, request, pause)
            await self.clock.sleep(pause)
        raise ScalperError(
            f"IB kept refusing {request} (pacing violations or no answer for "
            f"{sum(RETRY_PAUSES) / 60:.0f} minutes; is another program using this IB login's "
            "data allowance?); run the command again later to resume"
        )

    async def _request(
        self, contract: Contract, end: datetime | str, duration: str, bar_size: str
    ) -> tuple[list[BarData], tuple[int, str] | None]:
        bars = await self.ib.reqHistoricalDataAsync(
            contract, end, duration, bar_size, WHAT_TO_SHOW, useRTH=False, formatDate=2,
            timeout=REQUEST_TIMEOUT,
        )  # fmt: skip
        return list(bars), self._errors.pop(bars.reqId, None)


def _bars_frame(bars: list[BarData]) -> pl.DataFrame:
    """IB bars (times are bar starts, UTC, with `formatDate=2`) as `BAR_SCHEMA`."""
    return pl.DataFrame(
        {
            "ts": [_start_ns(bar.date) for bar in bars],
            "open": [bar.open for bar in bars],
            "high": [bar.high for bar in bars],
            "low": [bar.low for bar in bars],
            "close": [bar.close for bar in bars],
            "volume": [round(bar.volume) for bar in bars],
        },
        schema=BAR_SCHEMA,
    )


def _start_ns(when: object) -> int:
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise ScalperError(f"IB sent bar time {when!r}; expected epoch seconds (formatDate=2)")
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


# ---------------------------------------------------------------------------------------------
# Resume files


class _ChunkCache:
    """Finished chunks as Parquet files: `<root>/<contract>/<bar seconds>s/<chunk start>.parquet`.

    A file exists only for a chunk that was downloaded completely (written atomically), so its
    presence is the resume record; an empty file means IB had no bars there.
    """

    def __init__(self, root: Path, bar_seconds: int) -> None:
        self.root = root
        self.bar_seconds = bar_seconds

    def read(self, name: str, chunk: Chunk) -> pl.DataFrame | None:
        path = self._path(name, chunk)
        return pl.read_parquet(path) if path.is_file() else None

    def write(self, name: str, chunk: Chunk, bars: pl.DataFrame) -> None:
        path = self._path(name, chunk)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bars(bars, path)

    def forget(self, keys: Iterable[tuple[str, Chunk]]) -> None:
        """Remove the files of a finished download, so running it again fetches fresh data."""
        for name, chunk in keys:
            self._path(name, chunk).unlink(missing_ok=True)

    def _path(self, name: str, chunk: Chunk) -> Path:
        start = f"{_utc(chunk.start_ns):%Y%m%dT%H%M%SZ}"
        return self.root / name / f"{self.bar_seconds}s" / f"{start}.parquet"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(ts_ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ts_ns // 1000)


def _utc_day_ns(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp()) * NS
