"""Materializing the market-data assets from Python: the demo's data step and history backfills.

`materialize_days` is one run over a range of UTC days for one product, exactly what a backfill
launched from the UI does for that range (the assets have a single-run backfill policy), with real
Dagster in this process. `materialize_demo` is `scalper demo`'s data step: it simulates the demo
window, validates and stitches it, and records the run in the instance under the demo's own data
directory (`scalper.demo.demo_home`: `<SCALPER_HOME>/demo/dagster`), so `SCALPER_HOME=<that
folder> scalper ui` shows afterwards what the demo did; then it runs the nightly research on that
series (`materialize_research`) when it has enough sessions.
"""

import os
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from dagster import (
    AssetsDefinition,
    DagsterInstance,
    ExecuteInProcessResult,
    MultiPartitionKey,
    materialize,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from assets.market_data import MARKET_DATA_ASSETS
from assets.research import RESEARCH_ASSETS
from assets.resources import build_resources
from scalper.cli.ui import prepare_dagster_home
from scalper.config import Config, load_config
from scalper.continuous import read_continuous_bars
from scalper.demo import DEMO_START, RESULTS, DemoData
from scalper.errors import ScalperError
from scalper.paths import subdir
from scalper.report import LATEST_FILE, runs_root
from scalper.research import min_sessions, session_dates
from scalper.store import stage_root


def materialize_days(
    symbol: str,
    first: date,
    last: date,
    *,
    resources: dict[str, object],
    instance: DagsterInstance,
    selection: Sequence[AssetsDefinition] = MARKET_DATA_ASSETS,
    log_level: str = "ERROR",
) -> ExecuteInProcessResult:
    """Materialize `raw_bars` → `validated_bars` → `continuous_bars` (or the `selection` of
    them, e.g. to validate again under new settings) for `symbol` on the UTC days `first` …
    `last` in one run; a failed run is a `ScalperError` with Dagster's reason.

    `log_level` filters Dagster's console log of the run (the instance keeps the whole log).
    """
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: MultiPartitionKey({"date": str(first), "symbol": symbol}),
        ASSET_PARTITION_RANGE_END_TAG: MultiPartitionKey({"date": str(last), "symbol": symbol}),
    }
    return _materialized(
        f"materializing {symbol} {first} .. {last}",
        MARKET_DATA_ASSETS,
        log_level,
        resources=resources,
        instance=instance,
        tags=tags,
        selection=list(selection),
    )


def materialize_demo(days: int, seed: int) -> DemoData:
    """The demo's sessions (`days` calendar days from `DEMO_START`, simulator seed `seed`)
    through the assets, and the continuous series, back-adjusted, to backtest."""
    config = subdir(RESULTS) / "config.yaml"
    config.write_text(
        f"# written by scalper demo: the defaults, with its seed\ndata:\n  seed: {seed}\n"
    )
    cfg = load_config(config)
    symbol = cfg.instrument.symbol
    first, last = DEMO_START - timedelta(days=1), DEMO_START + timedelta(days=days - 1)
    resources = build_resources(
        str(config), simulation_start=DEMO_START.isoformat(), simulation_days=days
    )
    os.environ["DAGSTER_HOME"] = str(prepare_dagster_home())  # the instance's storage is there
    with DagsterInstance.get() as instance:
        result = materialize_days(
            symbol, first, last, resources=resources, instance=instance, log_level="CRITICAL"
        )
    roll_days = cfg.instrument.roll_days_before_expiry
    bars = read_continuous_bars(symbol, first, last, "back", roll_days=roll_days)
    validated = result.asset_materializations_for_node("validated_bars")[0]
    research, report = _research(cfg, bars, resources)
    return DemoData(
        bars=bars,
        quality=_quality_line(result, validated.metadata),
        store=stage_root("continuous"),
        data_docs=subdir("reports") / "data_docs" / "index.html",
        research=research,
        report=report,
    )


def materialize_research(
    *, resources: dict[str, object], instance: DagsterInstance, log_level: str = "ERROR"
) -> ExecuteInProcessResult:
    """Materialize `backtest`, `param_sweep`, `walk_forward` → `recommended_params` in one run
    (as the nightly schedule does); a failed run is a `ScalperError` with Dagster's reason."""
    return _materialized(
        "the research run", RESEARCH_ASSETS, log_level, resources=resources, instance=instance
    )


def _materialized(
    what: str, assets: Sequence[AssetsDefinition], log_level: str, **options: Any
) -> ExecuteInProcessResult:
    """One in-process run of `assets` (`options` as `materialize` takes them), its console log
    filtered to `log_level`; a failed run is a `ScalperError` naming `what`, with the reason."""
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    result = materialize(assets, run_config=run_config, raise_on_error=False, **options)
    if not result.success:
        raise ScalperError(f"{what} failed: {_reason(result)}")
    return result


def _research(
    cfg: Config, bars: pl.DataFrame, resources: dict[str, object]
) -> tuple[str, Path | None]:
    """The research run on the demo's series: summary lines and the report, or why it was
    skipped (a walk-forward needs a few sessions per fold)."""
    sessions = session_dates(bars, cfg).n_unique()
    need = min_sessions(cfg.research.folds, cfg.research.in_sample_fraction)
    if sessions < need:
        return (
            f"research: skipped, the walk-forward needs {need} sessions (this run has {sessions})",
            None,
        )
    with DagsterInstance.get() as instance:
        result = materialize_research(resources=resources, instance=instance, log_level="CRITICAL")
    (gate,) = result.get_asset_check_evaluations()
    wf = result.output_for_node("walk_forward")
    return f"research: {wf.summary()}\n{gate.description}", runs_root() / LATEST_FILE


def _quality_line(result: ExecuteInProcessResult, metadata: dict) -> str:
    checks = result.get_asset_check_evaluations()
    passed = sum(check.passed for check in checks)
    return (
        f"data quality: {metadata['rows'].value:,} bars validated, "
        f"{metadata['quarantined'].value:,} quarantined; asset checks {passed}/{len(checks)} passed"
    )


def _reason(result: ExecuteInProcessResult) -> str:
    """The first failed step's message: a `Failure`'s description, else the error's first line."""
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            return data.user_failure_data.description
        if data.error:
            return data.error.message.strip().splitlines()[0]
    return "the run failed"
