"""The market-data assets with real Dagster, real Great Expectations and real Parquet stores.

Each test materializes `raw_bars` → `validated_bars` → `continuous_bars` in process (one run over
a range of partitions, as a UI backfill does) from one of the three sources: the simulator, the
real ES minutes of `../shared/data/real` (Lean zips, with the ESZ3 → ESH4 roll of December 2013)
and the fake IB gateway through the real ib_async client. Then it checks what landed in the stores,
the status records, the asset checks and the metadata, and that unvalidated days never reach the
continuous series. The last tests load the code location as Dagster does: its definitions, and
the web UI started by `scalper ui`, queried over GraphQL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time as clock
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from dagster import (
    AssetCheckSeverity,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    MultiPartitionKey,
    build_schedule_context,
)

import assets
from assets.checks import GROUPS, group_of
from assets.demo import materialize_days, materialize_demo
from assets.market_data import MARKET_DATA_ASSETS, continuous_bars, raw_bars
from assets.resources import build_resources
from quality.bars_suite import content_rules, schema_rules
from scalper import store
from scalper.bars import BAR_COLUMNS, PRICE_COLUMNS, write_bars
from scalper.continuous import continuous, read_continuous_bars
from scalper.demo import run_demo
from scalper.errors import ScalperError
from scalper.importers import import_file
from scalper.simulate import simulate_bars
from scalper.store import stage_root
from tests.fakes.tws import FakeGateway, FakeMarket
from tests.shared import REAL_DATA, SCALPER

NEW_YORK = ZoneInfo("America/New_York")
REPO = Path(__file__).resolve().parents[1]
LEAN = REAL_DATA / "lean_es_minute"
WEEK = date(2024, 1, 8)  # a Monday: sessions Monday to Friday, UTC days Sunday to Saturday


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def config(home: Path, text: str) -> str:
    path = home / "config.yaml"
    path.write_text(text)
    return str(path)


def run(
    instance: DagsterInstance,
    symbol: str,
    first: date,
    last: date,
    config_path: str | None = None,
    **options: object,
) -> ExecuteInProcessResult:
    selection = options.pop("selection", MARKET_DATA_ASSETS)
    resources = build_resources(config_path, **options)
    return materialize_days(
        symbol, first, last, resources=resources, instance=instance, selection=selection
    )


def utc_day(day: date) -> pl.Expr:
    return pl.from_epoch("ts", time_unit="ns").dt.date() == day


def new_york_ns(day: date, wall: time) -> int:
    return int(datetime.combine(day, wall, tzinfo=NEW_YORK).timestamp()) * 1_000_000_000


def checks(result: ExecuteInProcessResult) -> dict[str, object]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def metadata(result: ExecuteInProcessResult, asset: str) -> dict[str, object]:
    return {
        k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()
    }


# ---------------------------------------------------------------------------------------------
# (a) The simulator, the default source


def test_a_simulated_week_goes_through_every_asset(home: Path, instance: DagsterInstance) -> None:
    first, last = WEEK - timedelta(days=1), WEEK + timedelta(days=5)  # Sunday .. Saturday
    result = run(instance, "MES", first, last, simulation_start=str(WEEK), simulation_days=6)
    market = simulate_bars(WEEK, 6)

    keys = {m.partition for m in result.asset_materializations_for_node("continuous_bars")}
    assert len(keys) == 7 and MultiPartitionKey({"date": str(first), "symbol": "MES"}) in keys
    raw_days = store.partitions("MES", stage_root("raw"))
    assert raw_days == [first + timedelta(days=i) for i in range(6)]  # Saturday has no bars
    raw = store.read_range("MES", first, last, stage_root("raw"))
    assert raw.select(BAR_COLUMNS).equals(market.select(BAR_COLUMNS))

    for day in raw_days:
        status = store.partition_status("MES", day, stage_root("validated"))
        rows = raw.filter(utc_day(day)).height
        assert (status["validated"], status["quarantined"], status["failed"]) == (rows, 0, 0)
        assert Path(status["data_docs"]).is_file()

    evaluations = checks(result)
    assert set(evaluations) == {"schema", "integrity", "calendar", "gaps"}
    assert all(e.passed for e in evaluations.values())
    assert evaluations["gaps"].severity == AssetCheckSeverity.WARN
    assert evaluations["integrity"].severity == AssetCheckSeverity.ERROR
    docs = evaluations["schema"].metadata["data_docs"].value
    assert docs == str(home / "reports" / "data_docs" / "index.html") and Path(docs).is_file()

    for asset in ("raw_bars", "validated_bars", "continuous_bars"):
        shown = metadata(result, asset)
        assert shown["rows"] == market.height
        assert shown["date_range"] == "2024-01-07T23:00:00Z .. 2024-01-12T21:59:00Z"
        assert "data:image/png;base64," in shown["plot"] and Path(shown["plot_path"]).is_file()
    assert metadata(result, "validated_bars")["quarantined"] == 0
    assert metadata(result, "raw_bars")["source"].startswith("simulator (seed 7")

    series = read_continuous_bars("MES", first, last)
    assert series.select(BAR_COLUMNS).equals(market.select(BAR_COLUMNS))
    assert set(series["contract"]) == {"MES"}  # one series as delivered: no roll to adjust
    assert read_continuous_bars("MES", first, last, "back").equals(series)


def test_a_day_materialized_again_is_replaced_not_duplicated(
    home: Path, instance: DagsterInstance
) -> None:
    window = {"simulation_start": str(WEEK), "simulation_days": 3}
    first, last = WEEK - timedelta(days=1), WEEK + timedelta(days=2)
    run(instance, "MES", first, last, **window)
    before = read_continuous_bars("MES", first, last)
    run(instance, "MES", WEEK, WEEK, **window)  # the nightly shape: one partition
    assert read_continuous_bars("MES", first, last).equals(before)
    assert store.read_range("MES", first, last, stage_root("raw"))["ts"].is_unique().all()


def test_a_day_outside_the_simulated_market_is_a_clear_failure(
    home: Path, instance: DagsterInstance
) -> None:
    with pytest.raises(ScalperError, match=r"simulated market covers the UTC days 2024-01-07"):
        run(instance, "MES", date(2026, 1, 6), date(2026, 1, 6), simulation_start=str(WEEK))


# ---------------------------------------------------------------------------------------------
# (b) Real ES minutes: per-contract Lean zips across the ESZ3 → ESH4 roll

ES_CONFIG = f"""\
instrument: {{symbol: ES, point_value: 50.0}}
data: {{source: file, path: {LEAN}, format: lean_zip}}
"""


@pytest.mark.skipif(not LEAN.is_dir(), reason="real ES data not available")
def test_real_es_minutes_across_the_december_2013_roll(
    home: Path, instance: DagsterInstance
) -> None:
    first, last = date(2013, 12, 1), date(2013, 12, 20)
    result = run(instance, "ES", first, last, config(home, ES_CONFIG))

    validated = stage_root("validated")
    for series in ("ESZ3", "ESH4", "ESM4"):  # every contract of the files is kept and checked
        assert store.partitions(series, validated)
    deferred = store.partition_status("ESM4", date(2013, 12, 18), validated)
    assert deferred["warned"] > 0 and store.is_validated(deferred)  # a thin month's holes ...
    assert checks(result)["gaps"].passed is False  # ... which the WARN check reports
    # 2013's 17:00-17:14 bars and the 16:15-16:30 halt are those years' Globex hours
    assert store.read_quarantine("ESZ3", date(2013, 12, 3), validated).height == 0
    assert checks(result)["calendar"].passed

    # The unadjusted series is the library's continuous series of the vendor files.
    lean = import_file(LEAN, "lean_zip", "ES", progress=False)
    in_window = pl.from_epoch("ts", time_unit="ns").dt.date().is_between(first, last)
    expected = continuous(lean.filter(in_window), "ES")
    series = read_continuous_bars("ES", first, last)
    assert series.select(*BAR_COLUMNS, "contract").equals(expected.select(*BAR_COLUMNS, "contract"))
    switch = datetime(2013, 12, 18, tzinfo=UTC)
    old = series.filter(pl.col("contract") == "ESZ3")
    assert (
        old["ts"].max()
        < int(switch.timestamp()) * 10**9
        == series.filter(contract="ESH4")["ts"].min()
    )

    # Back-adjusted: ESZ3 moves by the gap measured where both traded, so no jump at the roll.
    back = read_continuous_bars("ES", first, last, "back", roll_days=8)
    both = lean.filter(ts=int(switch.timestamp()) * 10**9).select("contract", "close").rows()
    gap = dict(both)["ESH4"] - dict(both)["ESZ3"]
    assert gap == -6.25
    assert back.filter(contract="ESH4").equals(series.filter(contract="ESH4"))
    shifted = old.with_columns(pl.col(PRICE_COLUMNS) + gap)
    assert back.filter(contract="ESZ3").equals(shifted)
    assert dict(both)["ESZ3"] + gap == dict(both)["ESH4"]


# ---------------------------------------------------------------------------------------------
# (c) IBKR: the fake gateway, through the real ib_async client


def test_ibkr_download_across_a_roll_through_the_fake_gateway(
    home: Path, instance: DagsterInstance
) -> None:
    market = FakeMarket(date(2024, 3, 4), 5)  # the MESH4 → MESM4 roll: session of 2024-03-07
    first, last = date(2024, 3, 5), date(2024, 3, 7)
    with FakeGateway(market) as gateway:  # the system clock: these contracts have expired
        path = config(home, f"data: {{source: ibkr}}\nbroker: {{port: {gateway.port}}}\n")
        result = run(instance, "MES", first, last, path, ibkr_client_id=11)
    served = [(r.local_symbol, r.outcome, r.client_id) for r in gateway.historical_requests]
    assert served == [(c, "1380 bars", 11) for c in ("MESH4", "MESH4", "MESM4", "MESM4")]
    assert "IBKR 127.0.0.1" in metadata(result, "raw_bars")["source"]

    raw = stage_root("raw")  # the roll's UTC day holds both contracts, whole
    assert store.partitions("MESH4", raw) == [first, date(2024, 3, 6)]
    assert store.partitions("MESM4", raw) == [date(2024, 3, 6), last]

    window = pl.from_epoch("ts", time_unit="ns").dt.date().is_between(first, last)
    series = read_continuous_bars("MES", first, last)
    assert series.select(BAR_COLUMNS).equals(market.continuous_bars(60).filter(window))
    roll = new_york_ns(date(2024, 3, 6), time(18))  # the session of the roll date opens
    assert series.filter(pl.col("ts") < roll)["contract"].unique().to_list() == ["MESH4"]

    # The contracts move together at a constant carry: back-adjusted, the old contract trades
    # exactly where the new one did, so the series has no jump at the roll.
    back = read_continuous_bars("MES", first, last, "back")
    june = next(x for x in market.listings if x.local_symbol == "MESM4")
    assert back.select(BAR_COLUMNS).equals(
        market.bars(june, 60).filter(pl.col("ts").is_in(series["ts"].implode()))
    )


# ---------------------------------------------------------------------------------------------
# (d) Bad bars: quarantined with reasons, the day flagged, and continuous_bars refuses it


@pytest.fixture
def damaged(home: Path) -> dict[str, object]:
    """A normalized file of the simulated week with defects a vendor file really has: on Tuesday
    a zero-volume price spike and a bar inside the daily break (both set aside), on Wednesday a
    20-minute hole in the session (which no quarantine can fix)."""
    bars = simulate_bars(WEEK, 5, seed=3).drop("symbol")
    spike = new_york_ns(date(2024, 1, 9), time(3))
    moved = {
        c: pl.when(pl.col("ts") == spike).then(pl.col(c) + 25.0).otherwise(pl.col(c))
        for c in PRICE_COLUMNS
    }
    volume = pl.when(pl.col("ts") == spike).then(0).otherwise(pl.col("volume"))
    bars = bars.with_columns(**moved, volume=volume)
    in_break = bars.filter(pl.col("ts") < new_york_ns(date(2024, 1, 9), time(17))).tail(1)
    in_break = in_break.with_columns(ts=pl.lit(new_york_ns(date(2024, 1, 9), time(17, 30))))
    hole = pl.col("ts").is_between(
        new_york_ns(date(2024, 1, 10), time(11)), new_york_ns(date(2024, 1, 10), time(11, 19))
    )
    bars = pl.concat([bars, in_break]).sort("ts").filter(~hole)
    path = home / "vendor.parquet"
    write_bars(bars, path)
    return {"config": config(home, f"data: {{source: file, path: {path}}}\n"), "spike": spike}


def test_bad_bars_are_quarantined_and_a_hole_is_only_a_warning(
    home: Path, instance: DagsterInstance, damaged: dict[str, object]
) -> None:
    tuesday, wednesday = date(2024, 1, 9), date(2024, 1, 10)
    result = run(instance, "MES", tuesday, wednesday, damaged["config"])
    evaluations = checks(result)
    assert not evaluations["integrity"].passed and not evaluations["calendar"].passed
    assert "price jump over 40 ticks" in evaluations["integrity"].metadata["failures"].value
    gaps = evaluations["gaps"]  # Wednesday's 19-minute hole: reported, as a warning
    assert not gaps.passed and gaps.severity == AssetCheckSeverity.WARN

    validated = stage_root("validated")
    set_aside = store.read_quarantine("MES", tuesday, validated).sort("ts")
    assert set_aside["ts"].to_list() == [damaged["spike"], new_york_ns(tuesday, time(17, 30))]
    assert set_aside["reason"].to_list() == [
        "price jump over 40 ticks without volume",
        "inside the daily break (after the Globex close of that date, before 18:00 New York)",
    ]
    tuesday_status = store.partition_status("MES", tuesday, validated)
    assert (tuesday_status["quarantined"], tuesday_status["failed"]) == (2, 0)
    wednesday_status = store.partition_status("MES", wednesday, validated)
    assert (wednesday_status["quarantined"], wednesday_status["warned"]) == (0, 1)
    assert store.is_validated(wednesday_status)  # a hole does not make the day unusable
    assert store.read_quarantine("MES", wednesday, validated).height == 0

    # Both days reach the continuous series: every bar but the two set aside.
    series = read_continuous_bars("MES", tuesday, wednesday)
    raw = store.read_range("MES", tuesday, wednesday, stage_root("raw"))
    assert series.height == raw.height - 2
    assert not series["ts"].is_in(set_aside["ts"].implode()).any()
    assert series.filter(utc_day(wednesday)).height == raw.filter(utc_day(wednesday)).height


def test_continuous_bars_refuse_a_day_never_validated(
    home: Path, instance: DagsterInstance, damaged: dict[str, object]
) -> None:
    thursday = date(2024, 1, 11)
    run(instance, "MES", thursday, thursday, damaged["config"], selection=[raw_bars])
    with pytest.raises(ScalperError, match="MES 2024-01-11 is not validated"):
        run(instance, "MES", thursday, thursday, damaged["config"], selection=[continuous_bars])


# ---------------------------------------------------------------------------------------------
# (e) The code location as Dagster loads it


# Dagster's own tags for a multi-partition run request (`dagster/partition/date`) trip its own
# tag-name deprecation check; nothing a schedule author can change.
@pytest.mark.filterwarnings("ignore:Non-compliant tag keys:DeprecationWarning")
def test_the_definitions_load_with_the_schedule_in_new_york_time() -> None:
    Definitions.validate_loadable(assets.defs)
    repository = assets.defs.get_repository_def()
    keys = {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()}
    assert {"raw_bars", "validated_bars", "continuous_bars"} <= keys
    check_names = {key.name for key in repository.asset_graph.asset_check_keys}
    assert {"schema", "integrity", "calendar", "gaps"} <= check_names

    schedule = repository.get_schedule_def("nightly_market_data")
    assert (schedule.cron_schedule, schedule.execution_timezone) == (
        "30 20 * * 0-5",
        "America/New_York",
    )
    job = repository.get_job("market_data")
    partitions = job.partitions_def.get_partition_keys(datetime(2024, 1, 3, tzinfo=UTC))
    assert {"2013-01-01|MES", "2024-01-02|6E", "2024-01-02|NQ"} <= set(partitions)

    friday_night = datetime(2024, 3, 8, 20, 30, tzinfo=NEW_YORK)  # 01:30 UTC on Saturday
    with build_schedule_context(
        scheduled_execution_time=friday_night,
        resources=build_resources(None),
        repository_def=repository,
    ) as tick:
        [request] = schedule.evaluate_tick(tick).run_requests
    assert request.partition_key == "2024-03-08|MES"  # the UTC day that has just ended


def test_every_rule_has_one_check_and_the_checks_name_real_rules() -> None:
    keys = [rule.key for rule in (*schema_rules(), *content_rules())]
    assert {group_of(key).name for key in keys} == {g.name for g in GROUPS}
    named = {rule for group in GROUPS if group.rules for rule in group.rules}
    assert named <= set(keys)


# ---------------------------------------------------------------------------------------------
# (f) The web UI, as `scalper ui` starts it, shows the demo's materializations


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


def loaded_assets(port: int, timeout: float = 120.0) -> dict:
    """The answer to `ASSETS_QUERY` once the webserver answers and has loaded the code location."""
    deadline = clock.monotonic() + timeout
    while clock.monotonic() < deadline:
        try:
            data = graphql(port, ASSETS_QUERY)
            if data["assetNodes"]:
                return data
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet
        clock.sleep(0.5)
    raise TimeoutError("the Dagster UI did not come up")


ASSETS_QUERY = """{
  assetNodes { assetKey { path } }
  assetOrError(assetKey: {path: ["continuous_bars"]}) {
    ... on Asset { assetMaterializations(limit: 1) { partition } }
  }
}"""


def test_scalper_ui_serves_the_workspace_and_stops_on_sigint(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))  # the demo sets it; undo after
    assert run_demo(materialize_demo, days=2) == 0
    assert "asset checks 4/4 passed" in capsys.readouterr().out
    port = free_port()
    ui = subprocess.Popen(
        [SCALPER, "ui", "--port", str(port)],
        cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        data = loaded_assets(port)
        keys = {"/".join(node["assetKey"]["path"]) for node in data["assetNodes"]}
        assert keys >= {"raw_bars", "validated_bars", "continuous_bars"}
        [latest] = data["assetOrError"]["assetMaterializations"]
        assert latest["partition"].endswith("|MES")  # the demo's run, in <SCALPER_HOME>/dagster
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert '"telemetryEnabled": false' in page.read().decode()  # what the server uses
        os.killpg(ui.pid, signal.SIGINT)
        assert ui.wait(timeout=60) == 0, ui.stderr.read().decode()
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
    assert not list(REPO.glob(".tmp_dagster_home_*"))  # nothing in the source tree
