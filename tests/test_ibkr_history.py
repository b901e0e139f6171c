"""The IBKR historical download: chunking, pacing, resuming, and the bars it returns.

The plan and the pacer are pure and tested on their own (the pacer by property: no schedule it
produces breaks one of IB's rules, checked by the fake gateway's independent oracle). The download
runs the real ib_async client against the fake gateway over TCP, with one manual clock for both,
so pacing waits and IB's 15-second / 10-minute windows cost no real time.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ib_async import IB, Future

from scalper.bars import BAR_COLUMNS
from scalper.config import BrokerConfig
from scalper.errors import ScalperError
from scalper.ibkr.history import (
    BAR_SIZE_SETTINGS,
    NS,
    RETRY_PAUSES,
    Chunk,
    chunk_seconds,
    chunks,
    download_history,
    duration_text,
    plan,
)
from scalper.ibkr.pacing import HistoricalPacer
from scalper.store import read_range
from tests.fakes.clock import ManualClock
from tests.fakes.tws import PACING_VIOLATION, FakeGateway, FakeMarket, In, broken_rule
from tests.fakes.tws.history import BAR_SIZES, MAX_DURATION
from tests.shared import SCALPER

JUNE = datetime(2024, 6, 1, tzinfo=UTC)
MARCH_5, MARCH_12 = date(2024, 3, 5), date(2024, 3, 12)  # a week across the MESH4 → MESM4 roll


def utc_ns(day: date, hour: int = 0) -> int:
    return int(datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp()) * NS


# ---------------------------------------------------------------------------------------------
# Chunking


@pytest.mark.parametrize(
    ("bar_seconds", "seconds"),
    [(1, 1800), (5, 3600), (10, 14_400), (15, 14_400), (30, 28_800), (60, 86_400)]
    + [(size, 86_400) for size in (120, 180, 300, 900, 1800, 3600)],
)
def test_chunks_are_ibs_maximum_duration_up_to_a_day(bar_seconds: int, seconds: int) -> None:
    assert chunk_seconds(bar_seconds) == seconds
    assert seconds <= MAX_DURATION[BAR_SIZES[BAR_SIZE_SETTINGS[bar_seconds]]]  # the fake's table


def test_a_week_of_minute_bars_is_one_request_per_utc_day() -> None:
    week = chunks(utc_ns(MARCH_5), utc_ns(MARCH_12), 60)
    assert [c.start_ns for c in week] == [utc_ns(MARCH_5 + timedelta(days=i)) for i in range(7)]
    assert {c.request(utc_ns(MARCH_12) + 1)[1] for c in week} == {"86400 S"}
    assert week[0].request(utc_ns(MARCH_12))[0] == datetime(2024, 3, 6, tzinfo=UTC)


def test_a_chunk_reaching_into_the_present_ends_now() -> None:
    chunk = Chunk(utc_ns(MARCH_5), utc_ns(MARCH_5 + timedelta(days=1)))
    now = utc_ns(MARCH_5, hour=5) + NS // 2
    assert chunk.request(now) == ("", "18001 S")
    assert not chunk.is_final(now) and chunk.is_final(chunk.end_ns)


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 3 * 86_400 * NS),
    length=st.integers(1, 10 * 86_400 * NS),
    bar_seconds=st.sampled_from(sorted(BAR_SIZE_SETTINGS)),
)
def test_chunks_tile_the_window_within_ibs_limits(
    start: int, length: int, bar_seconds: int
) -> None:
    origin = utc_ns(MARCH_5)
    found = chunks(origin + start, origin + start + length, bar_seconds)
    width = chunk_seconds(bar_seconds) * NS
    assert found[0].start_ns <= origin + start < found[0].end_ns
    assert found[-1].end_ns >= origin + start + length > found[-1].start_ns
    assert all(a.end_ns == b.start_ns for a, b in itertools.pairwise(found))
    assert all(c.start_ns % width == 0 and c.end_ns - c.start_ns == width for c in found)
    seconds = int(found[0].request(found[0].end_ns)[1].split()[0])
    assert seconds * NS == width <= MAX_DURATION[BAR_SIZES[BAR_SIZE_SETTINGS[bar_seconds]]] * NS


def test_durations_are_whole_seconds_rounded_up() -> None:
    assert (duration_text(1), duration_text(NS), duration_text(NS + 1)) == ("1 S", "1 S", "2 S")
    assert duration_text(86_400 * NS) == "86400 S"


# ---------------------------------------------------------------------------------------------
# The plan: which contracts over which windows


def test_front_plan_rolls_at_the_session_open_of_the_roll_date() -> None:
    pieces = plan("MES", MARCH_5, MARCH_12, "front")
    assert [p.name for p in pieces] == ["MESH4", "MESM4"]
    roll = utc_ns(date(2024, 3, 6), hour=23)  # session of March 7 = expiry March 15 - 8 days
    assert (pieces[0].start_ns, pieces[0].end_ns) == (utc_ns(MARCH_5), roll)
    assert (pieces[1].start_ns, pieces[1].end_ns) == (roll, utc_ns(date(2024, 3, 13)))
    wanted = pieces[0].wanted
    assert (wanted.lastTradeDateOrContractMonth, wanted.includeExpired) == ("202403", True)


def test_one_contract_or_ibs_continuous_future() -> None:
    [one] = plan("MES", MARCH_5, MARCH_12, "MESH4")
    assert (one.name, one.wanted.localSymbol, one.wanted.includeExpired) == ("MESH4", "MESH4", True)
    [continuous] = plan("MES", MARCH_5, MARCH_5, "continuous")
    assert (continuous.name, continuous.wanted.secType) == ("CONTFUT", "CONTFUT")
    assert len(continuous.chunks(60)) == 1


@pytest.mark.parametrize("contract", ["next", "ESH4", "MESH", "MESA4"])
def test_a_bad_contract_is_a_user_error(contract: str) -> None:
    with pytest.raises(ScalperError, match="not front, continuous or a local symbol of MES"):
        plan("MES", MARCH_5, MARCH_12, contract)


# ---------------------------------------------------------------------------------------------
# The pacer on its own


@dataclass(frozen=True)
class Sent:
    at: float
    contract_key: object
    identity: object


async def schedule(
    pacer: HistoricalPacer, clock: ManualClock, asks: list[tuple[float, int, int]]
) -> list[tuple[Sent, float]]:
    """Ask for each (pause, contract, variant) in turn; the sent requests and the time waited."""
    sent = []
    for pause, contract, variant in asks:
        clock.advance(pause)
        waited = await pacer.acquire(contract, (contract, variant))
        sent.append((Sent(clock.now(), contract, (contract, variant)), waited))
    return sent


def test_the_pacer_waits_exactly_as_long_as_a_rule_requires() -> None:
    clock = ManualClock(JUNE)
    pacer = HistoricalPacer(clock, margin=0.5)
    asks = [(0.0, contract, variant) for contract in range(12) for variant in range(5)]
    asks += [(0.0, 99, 0), (0.0, 99, 0)] + [(0.0, 100, variant) for variant in range(5)]
    waits = [waited for _, waited in asyncio.run(schedule(pacer, clock, asks))]
    assert waits[:60] == [0.0] * 60  # 5 per contract at once is allowed
    assert waits[60] == 600.5  # the 61st waits for the first to leave the 10-minute window
    assert waits[61] == 15.5  # an identical request waits 15 s
    assert waits[62:] == [0.0] * 5
    assert pacer.delay(100, 5) == 2.5  # a sixth for one contract waits 2 s


def test_the_margin_keeps_requests_off_the_windows_edge() -> None:
    """IB times a request when it arrives, a little after it was sent: the pacer keeps clear."""
    clock = ManualClock(JUNE)
    pacer = HistoricalPacer(clock, margin=0.5)
    asyncio.run(schedule(pacer, clock, [(0.0, contract, 0) for contract in range(60)]))
    clock.advance(600.25)  # the window has passed, but not by the margin
    assert pacer.delay(99, 0) == 0.25


@pytest.mark.parametrize("margin", [0.0, 0.5])
@settings(max_examples=60, deadline=None)
@given(
    asks=st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 4.0, 15.0, 120.0]),
            st.integers(0, 2),
            st.integers(0, 2),
        ),
        max_size=150,
    )
)
def test_no_schedule_of_the_pacer_breaks_ibs_rules(
    margin: float, asks: list[tuple[float, int, int]]
) -> None:
    clock = ManualClock(JUNE)
    sent = asyncio.run(schedule(HistoricalPacer(clock, margin=margin), clock, asks))
    requests = [request for request, _ in sent]
    for i, (request, waited) in enumerate(sent):
        assert broken_rule(requests[:i], request) is None
        if waited > margin + 0.01:  # it waited because sending sooner would have broken a rule
            sooner = Sent(request.at - margin - 0.001, request.contract_key, request.identity)
            assert broken_rule(requests[:i], sooner) is not None


# ---------------------------------------------------------------------------------------------
# Downloads through ib_async from the fake gateway


@pytest.fixture(scope="module")
def market() -> FakeMarket:
    return FakeMarket(date(2024, 3, 4), 12)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(JUNE)


def connect(gateway: FakeGateway, client_id: int = 5) -> IB:
    ib = IB()
    ib.connect("127.0.0.1", gateway.port, clientId=client_id, timeout=5)
    return ib


@pytest.fixture
def ib(gateway: FakeGateway) -> Iterator[IB]:
    client = connect(gateway)
    yield client
    client.disconnect()


def download(
    ib: IB, clock: ManualClock, cache: Path, start: date, end: date, **options: object
) -> pl.DataFrame:
    return download_history(
        ib, "MES", start, end, cache_dir=cache, clock=clock, pacer=HistoricalPacer(clock),
        progress=False, **options,
    )  # fmt: skip


def front_bars(market: FakeMarket, start: date, end: date, bar_seconds: int = 60) -> pl.DataFrame:
    """The market's bars of the front contract of each session, in the UTC days given."""
    window = (utc_ns(start), utc_ns(end + timedelta(days=1)))
    return market.continuous_bars(bar_seconds).filter(pl.col("ts").is_between(*window, "left"))


def served(gateway: FakeGateway) -> list[tuple[str, str]]:
    """(contract, end) of every historical request the gateway answered with bars or no data."""
    return [
        (r.local_symbol, r.end)
        for r in gateway.historical_requests
        if r.outcome.endswith("bars") or "no data" in r.outcome
    ]


def test_a_week_across_a_roll_is_the_markets_front_series(
    ib: IB, clock: ManualClock, market: FakeMarket, gateway: FakeGateway, tmp_path: Path
) -> None:
    bars = download(ib, clock, tmp_path, MARCH_5, MARCH_12)
    expected = front_bars(market, MARCH_5, MARCH_12)
    assert bars.select(BAR_COLUMNS).equals(expected)
    assert bars["ts"][0] == utc_ns(MARCH_5)  # stamped at the bar's start, UTC
    roll = utc_ns(date(2024, 3, 6), hour=23)
    contracts = bars.select(pl.col("ts") < roll, "contract").unique().sort("ts")
    assert contracts.rows() == [(False, "MESM4"), (True, "MESH4")]
    assert set(bars["symbol"]) == {"MES"}
    assert len(gateway.historical_requests) == 9  # 2 days of MESH4, 7 of MESM4 (UTC days)
    assert {r.duration for r in gateway.historical_requests} == {"86400 S"}
    assert not list(tmp_path.rglob("*.parquet"))  # resume files go once the download is done


def test_one_expired_contract_by_its_local_symbol(
    ib: IB, clock: ManualClock, market: FakeMarket, tmp_path: Path
) -> None:
    bars = download(ib, clock, tmp_path, MARCH_5, MARCH_12, contract="MESH4")
    h4 = next(x for x in market.listings if x.local_symbol == "MESH4")
    window = (utc_ns(MARCH_5), utc_ns(MARCH_12 + timedelta(days=1)))
    assert bars.select(BAR_COLUMNS).equals(
        market.bars(h4, 60).filter(pl.col("ts").is_between(*window, "left"))
    )
    assert set(bars["symbol"]) == set(bars["contract"]) == {"MESH4"}


def test_five_second_bars_paced_without_a_violation(tmp_path: Path) -> None:
    market = FakeMarket(date(2024, 3, 5), 1, bar_seconds=5)
    clock = ManualClock(JUNE)
    with FakeGateway(market, clock=clock.now) as gateway:
        ib = connect(gateway)
        bars = download(ib, clock, tmp_path, MARCH_5, MARCH_5, bar_seconds=5)
        ib.disconnect()
    assert bars.select(BAR_COLUMNS).equals(front_bars(market, MARCH_5, MARCH_5, 5))
    requests = gateway.historical_requests
    assert len(requests) == 24 and {r.duration for r in requests} == {"3600 S"}
    assert not any(PACING_VIOLATION in r.outcome for r in requests)
    assert clock.slept  # six requests for one contract within 2 s would be a violation


def test_an_interrupted_download_resumes_without_asking_twice(
    gateway: FakeGateway, clock: ManualClock, market: FakeMarket, tmp_path: Path
) -> None:
    first = connect(gateway)
    gateway.drop_on(In.REQ_HISTORICAL_DATA, nth=4)
    with pytest.raises(ScalperError, match=r"lost the connection .* run the same download again"):
        download(first, clock, tmp_path, MARCH_5, MARCH_12)
    done = served(gateway)
    assert len(done) == 3 and len(list(tmp_path.rglob("*.parquet"))) == 3
    clock.advance(60.0)
    second = connect(gateway, client_id=6)
    bars = download(second, clock, tmp_path, MARCH_5, MARCH_12)
    second.disconnect()
    again = served(gateway)[3:]
    assert len(again) == 6 and not set(again) & set(done)
    assert bars["ts"].is_unique().all()
    assert bars.select(BAR_COLUMNS).equals(front_bars(market, MARCH_5, MARCH_12))


def test_a_pacing_violation_is_retried_after_a_pause(
    ib: IB, gateway: FakeGateway, clock: ManualClock, market: FakeMarket, tmp_path: Path
) -> None:
    # Another program made the download's first request a moment ago: IB refuses the identical
    # request, the download pauses 15 s and asks again.
    [details] = ib.reqContractDetails(Future("MES", "202403", exchange="CME", includeExpired=True))
    march = details.contract
    march.includeExpired = True
    ib.reqHistoricalData(
        march, datetime(2024, 3, 6, tzinfo=UTC), "86400 S", "1 min", "TRADES", False, 2
    )
    bars = download(ib, clock, tmp_path, MARCH_5, MARCH_5)
    outcomes = [r.outcome for r in gateway.historical_requests]
    assert outcomes[1].endswith(PACING_VIOLATION) and outcomes[2] == "1380 bars"
    assert RETRY_PAUSES[0] in clock.slept
    assert bars.select(BAR_COLUMNS).equals(front_bars(market, MARCH_5, MARCH_5))


def test_ibs_continuous_future_up_to_now(market: FakeMarket, tmp_path: Path) -> None:
    clock = ManualClock(datetime(2024, 3, 8, 23, tzinfo=UTC))
    with FakeGateway(market, clock=clock.now) as gateway:
        ib = connect(gateway)
        day = date(2024, 3, 8)
        bars = download(ib, clock, tmp_path, day, day, contract="continuous")
        with pytest.raises(ScalperError, match="continuous future only up to now"):
            download(ib, clock, tmp_path, day - timedelta(days=2), day, contract="continuous")
        ib.disconnect()
    assert [(r.end, r.duration) for r in gateway.historical_requests] == [("", "82800 S")]
    assert bars.select(BAR_COLUMNS).equals(front_bars(market, day, day))
    assert set(bars["contract"]) == {"CONTFUT"}


def test_weekend_only_downloads_nothing(ib: IB, clock: ManualClock, tmp_path: Path) -> None:
    saturday = date(2024, 3, 9)
    assert download(ib, clock, tmp_path, saturday, saturday).height == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"contract": "MESZ9"}, "IB has no contract MESZ9"),
        ({"bar_seconds": 7}, "bar_seconds must be one of 1, 5, 10"),
        ({"start": MARCH_12, "end": MARCH_5}, "start 2024-03-12 is after end 2024-03-05"),
    ],
)
def test_mistakes_are_one_line_errors(
    ib: IB, clock: ManualClock, tmp_path: Path, options: dict, message: str
) -> None:
    span = {"start": MARCH_5, "end": MARCH_5, **options}
    with pytest.raises(ScalperError, match=message) as caught:
        download(ib, clock, tmp_path, span.pop("start"), span.pop("end"), **span)
    assert "\n" not in str(caught.value)


def free_port() -> int:
    """A port nothing listens on (the probe that found it is closed again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_gateway_is_one_clear_line() -> None:
    port = free_port()
    with pytest.raises(ScalperError) as caught:
        download_history(BrokerConfig(port=port), "MES", MARCH_5, MARCH_5, progress=False)
    message = str(caught.value)
    assert f"cannot connect to IB Gateway/TWS at 127.0.0.1:{port}" in message
    assert "connection refused" in message and "\n" not in message


# ---------------------------------------------------------------------------------------------
# The command line, as a user runs it (a real process: its stderr is what the user sees)

REPO = Path(__file__).resolve().parents[1]


def scalper(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCALPER, "data", "download", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
        env={**os.environ, "SCALPER_HOME": str(home)},
    )  # fmt: skip


def test_scalper_data_download_stores_the_front_series(
    market: FakeMarket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    with FakeGateway(market) as gateway:  # the system clock: every 2024 contract has expired
        config.write_text(f"broker:\n  port: {gateway.port}\n  client_id: 9\n")
        done = scalper(
            tmp_path, "--config", str(config), "--start", "2024-03-06", "--end", "2024-03-09"
        )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # IB's "no data" for Saturday is no news to the user
    assert done.stdout.startswith("scalper data: downloaded 4,080 MES bars (MESH4, MESM4), 3 days")
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path))
    stored = read_range("MES", date(2024, 3, 6), date(2024, 3, 9))
    assert stored.select(BAR_COLUMNS).equals(front_bars(market, date(2024, 3, 6), date(2024, 3, 9)))
    assert set(stored["contract"]) == {"MESH4", "MESM4"}
    # The downloads' own client id (broker.client_id + 3): a download never takes the trader's.
    assert {r.client_id for r in gateway.historical_requests} == {12}
    assert not list((tmp_path / "downloads").rglob("*.parquet"))


def test_scalper_data_download_without_a_gateway_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"broker:\n  port: {port}\n")
    done = scalper(
        tmp_path, "--config", str(config), "--start", "2024-03-06", "--end", "2024-03-06"
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"scalper: error: cannot connect to IB Gateway/TWS at 127.0.0.1:{port} (client id 4): "
        "connection refused; is it running, with the API enabled on that port and the client "
        "id free?"
    ]
