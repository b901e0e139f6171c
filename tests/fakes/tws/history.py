"""Historical bars (`reqHistoricalData`), with IB's validation, limits and pacing.

What the service checks, in the order the real gateway reports it:

1. pacing (`pacing.py`) — every request counts, also the ones rejected afterwards;
2. the request itself (error 321): bar size, duration format, `TRADES` only, no `keepUpToDate`;
3. the duration against IB's maximum for the bar size (error 162 "Time length exceed max");
4. the contract (error 200; expired contracts need `includeExpired`); continuous futures must
   leave `endDateTime` empty (error 10339), they only exist up to now;
5. no bars in the window (error 162 "HMDS query returned no data").

The window is `[end - duration, end)`, and only bars that have closed by the gateway's clock
exist. IB counts `D`/`W`/`M` durations in trading sessions; the fake counts them as calendar
spans of 1, 7 and 30 days (seconds are exact in both), so requests that state durations in
seconds, as the project's downloader does, get identical answers from both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from tests.fakes.tws.contracts import NO_SECURITY_DEFINITION, ContractBook, Resolved
from tests.fakes.tws.market import regular_hours
from tests.fakes.tws.pacing import PACING_VIOLATION, broken_rule
from tests.fakes.tws.protocol import ContractFields, In, Out, Reader
from tests.fakes.tws.session import Handler, Session

HMDS = "Historical Market Data Service error message:"
_DAY = 86_400

BAR_SIZES: Mapping[str, int] = {
    "1 secs": 1, "5 secs": 5, "10 secs": 10, "15 secs": 15, "30 secs": 30,
    "1 min": 60, "2 mins": 120, "3 mins": 180, "5 mins": 300, "10 mins": 600,
    "15 mins": 900, "20 mins": 1200, "30 mins": 1800, "1 hour": 3600, "2 hours": 7200,
    "3 hours": 10_800, "4 hours": 14_400, "8 hours": 28_800, "1 day": _DAY,
}  # fmt: skip
"""IB's bar size settings → seconds."""

MAX_DURATION: Mapping[int, int] = {
    1: 1800, 5: 3600, 10: 14_400, 15: 14_400, 30: 28_800, 60: _DAY, 120: 2 * _DAY,
    180: 7 * _DAY, 300: 7 * _DAY, 600: 7 * _DAY, 900: 7 * _DAY, 1200: 7 * _DAY,
    1800: 30 * _DAY, 3600: 30 * _DAY, 7200: 30 * _DAY, 10_800: 30 * _DAY, 14_400: 30 * _DAY,
    28_800: 30 * _DAY, _DAY: 365 * _DAY,
}  # fmt: skip
"""The longest duration IB serves per bar size, seconds (IB's "step sizes" table: 1800 S for
1 secs, 3600 S for 5 secs, 14400 S for 10-15 secs, 28800 S for 30 secs, 1 D for 1 min, 2 D for
2 mins, 1 W for 3-20 mins, 1 M for 30 mins-8 hours, 1 Y for 1 day)."""

_DURATION_UNITS = {"S": 1, "D": _DAY, "W": 7 * _DAY, "M": 30 * _DAY, "Y": 365 * _DAY}
_NS = 1_000_000_000


class RequestRejected(Exception):
    """A request the gateway answers with an error instead of bars."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


@dataclass
class HistoricalRequest:
    """One `reqHistoricalData` as received, for the pacing rules and the tests."""

    at: float
    client_id: int | None
    req_id: int
    contract: ContractFields
    include_expired: bool
    end: str
    bar_size: str
    duration: str
    use_rth: bool
    what_to_show: str
    format_date: int
    keep_up_to_date: bool
    outcome: str = field(default="", compare=False)

    @property
    def contract_key(self) -> Hashable:
        return (self.contract, self.what_to_show)

    @property
    def identity(self) -> Hashable:
        return (
            self.contract, self.include_expired, self.end, self.bar_size, self.duration,
            self.use_rth, self.what_to_show, self.format_date, self.keep_up_to_date,
        )  # fmt: skip

    @property
    def local_symbol(self) -> str:
        return self.contract.local_symbol


class HistoricalDataService:
    """Answers `reqHistoricalData` from the market, enforcing IB's limits and pacing."""

    def __init__(self, book: ContractBook, clock: Callable[[], float], timezone: str) -> None:
        self.book = book
        self.clock = clock
        self.zone = ZoneInfo(timezone)
        self.requests: list[HistoricalRequest] = []

    def handlers(self) -> Mapping[int, Handler]:
        return {
            In.REQ_HISTORICAL_DATA: self.historical_data,
            In.CANCEL_HISTORICAL_DATA: self.cancel_historical_data,
        }

    def historical_data(self, session: Session, request: Reader) -> str:
        query = self._read(session, request)
        earlier = list(self.requests)
        self.requests.append(query)
        try:
            if broken_rule(earlier, query):
                raise RequestRejected(162, PACING_VIOLATION)
            bars = self._bars(query)
        except RequestRejected as rejected:
            query.outcome = session.error(query.req_id, rejected.code, rejected.text)
            return query.outcome
        session.send(Out.HISTORICAL_DATA, query.req_id, *self._bar_fields(query, bars))
        query.outcome = f"{bars.height} bars"
        return query.outcome

    def cancel_historical_data(self, session: Session, request: Reader) -> str:
        return "cancelled"  # answers are immediate, so there is never a request left to cancel

    def _read(self, session: Session, request: Reader) -> HistoricalRequest:
        # Field order of ib_async's `Client.reqHistoricalData` (no version field since v124).
        return HistoricalRequest(
            at=self.clock(),
            client_id=session.client_id,
            req_id=request.int(),
            contract=request.contract(),
            include_expired=request.bool(),
            end=request.text(),
            bar_size=request.text(),
            duration=request.text(),
            use_rth=request.bool(),
            what_to_show=request.text(),
            format_date=request.int(),
            keep_up_to_date=request.bool(),
        )

    def _bars(self, query: HistoricalRequest) -> pl.DataFrame:
        bar_seconds, duration = _validated(query)
        resolved = self._resolve(query)
        if resolved.continuous and query.end:
            raise RequestRejected(10339, "Set 'endDateTime' to empty string for continuous futures")
        end = _parse_end(query.end, self.clock(), self.zone)
        market = self.book.market
        bars = (
            market.continuous_bars(bar_seconds)
            if resolved.continuous
            else market.bars(resolved.listing, bar_seconds)
        )
        closed_by = int(self.clock() * _NS) - bar_seconds * _NS
        window = bars.filter(
            pl.col("ts").is_between(int((end - duration) * _NS), int(end * _NS), closed="left")
            & (pl.col("ts") <= closed_by)
        )
        if query.use_rth:
            window = regular_hours(window)
        if window.height == 0:
            local = resolved.listing.local_symbol
            raise RequestRejected(162, f"{HMDS}HMDS query returned no data: {local}@CME Trades")
        return window

    def _resolve(self, query: HistoricalRequest) -> Resolved:
        found = self.book.resolve(query.contract, query.include_expired)
        if len(found) != 1:
            raise RequestRejected(*NO_SECURITY_DEFINITION)
        return found[0]

    def _bar_fields(self, query: HistoricalRequest, bars: pl.DataFrame) -> list[object]:
        """`historicalData` after the request id: start, end, count, then 8 fields per bar."""
        first, last = bars.get_column("ts")[0], bars.get_column("ts")[-1]
        fields: list[object] = [self._local(first), self._local(last), bars.height]
        for ts, open_, high, low, close, volume in bars.select(
            "ts", "open", "high", "low", "close", "volume"
        ).iter_rows():
            stamp = str(ts // _NS) if query.format_date == 2 else self._local(ts)
            average = round((high + low + close) / 3, 6)
            fields += [stamp, open_, high, low, close, volume, average, volume]
        return fields

    def _local(self, ts: int) -> str:
        """IB's `formatDate=1` time: gateway-local wall clock with the zone's name."""
        local = datetime.fromtimestamp(ts // _NS, UTC).astimezone(self.zone)
        return f"{local:%Y%m%d %H:%M:%S} {self.zone.key}"


def _validated(query: HistoricalRequest) -> tuple[int, int]:
    """Bar seconds and duration seconds of a well-formed request (else error 321 or 162)."""
    invalid = "Error validating request.-'bP' : cause - "
    if query.bar_size not in BAR_SIZES:
        raise RequestRejected(321, f"{invalid}Historical data bar size setting is invalid.")
    match = re.fullmatch(r"(\d+) ([SDWMY])", query.duration)
    if not match or int(match[1]) < 1:
        raise RequestRejected(321, f"{invalid}Historical data query duration is invalid.")
    if query.what_to_show != "TRADES":
        raise RequestRejected(321, f"{invalid}the fake gateway serves TRADES only.")
    if query.keep_up_to_date:
        raise RequestRejected(321, f"{invalid}the fake gateway does not keep bars up to date.")
    bar_seconds = BAR_SIZES[query.bar_size]
    duration = int(match[1]) * _DURATION_UNITS[match[2]]
    if duration > MAX_DURATION[bar_seconds]:
        raise RequestRejected(162, f"{HMDS}Time length exceed max.")
    return bar_seconds, duration


def _parse_end(text: str, now: float, zone: ZoneInfo) -> float:
    """`endDateTime` as epoch seconds, in the formats IB accepts.

    Empty means now; `yyyymmdd-hh:mm:ss` is UTC; `yyyymmdd hh:mm:ss <zone>` names its zone (ib_async
    sends `... UTC`); `yyyymmdd hh:mm:ss` alone is the gateway's local time.
    """
    if not text:
        return now
    match = re.fullmatch(r"(\d{8})([ -])(\d{2}:\d{2}:\d{2})(?: (\S+))?", text)
    if not match:
        raise RequestRejected(321, f"Error validating request.-'bP' : cause - bad end {text!r}")
    wall = datetime.strptime(match[1] + match[3], "%Y%m%d%H:%M:%S")
    if match[2] == "-":
        return wall.replace(tzinfo=UTC).timestamp()
    try:
        named = ZoneInfo(match[4]) if match[4] else zone
    except (ZoneInfoNotFoundError, ValueError):
        raise RequestRejected(
            321, f"Error validating request.-'bP' : cause - bad zone in {text!r}"
        ) from None
    return wall.replace(tzinfo=named).timestamp()
