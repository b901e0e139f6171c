"""Nightly research as Dagster assets, downstream of `continuous_bars`.

`backtest` (the current configuration), `param_sweep` (the `research` grid) and `walk_forward`
read the sessions they need from the continuous series, back-adjusted as `read_continuous_bars`
gives it; `recommended_params` passes the walk-forward winner through the go-live gate and
publishes the run: the HTML report, `approved_params.yaml` (only when the gate passed), the
history row and the index of runs. Every decision is made by `scalper.research`; these assets
only read, call and record.

**Not partitioned.** Each asset is one view of the latest history: it reads the window of
sessions it needs (`research.backtest_sessions`, `research.walk_forward_sessions`) ending at the
newest UTC day `continuous_bars` has built for `instrument.symbol`. The session opening on the
evening of that day has only begun and is left out, so a window holds whole sessions only.

**When.** `nightly_research` polls every 15 minutes from 21:00 to 23:45 New York time, Monday to
Friday, and starts the research job once per night as soon as `continuous_bars` holds that day's
partition: chained after the data job (20:30, `assets.schedules`) however long that one takes.
"""

from collections.abc import Iterator, Sequence
from typing import Any

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    Failure,
    MetadataValue,
    MultiPartitionKey,
    Output,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    asset,
    define_asset_job,
    schedule,
)

from assets.market_data import continuous_bars, user_errors
from assets.resources import ScalperConfig
from scalper import store
from scalper.backtest import BacktestResult, run_backtest
from scalper.config import Config
from scalper.paths import subdir
from scalper.report import publish
from scalper.research import (
    Excluded,
    ResearchRun,
    WalkForwardResult,
    approved_params_path,
    best_set,
    continuous_reader,
    exclusion_lines,
    folds_table,
    format_point,
    go_live_gate,
    grid_params,
    grid_point,
    headline,
    read_recent_sessions,
    run_sweep,
    session_dates,
    stored_data_source,
)
from scalper.research import walk_forward as run_walk_forward

GROUP = "research"
RESEARCH_CRON = "*/15 21-23 * * 1-5"
RESEARCH_TIMEZONE = "America/New_York"
HEADLINE = ("trades", "net_pnl", "sharpe", "profit_factor", "max_drawdown_pct", "win_rate")


# ---------------------------------------------------------------------------------------------
# Assets


@asset(group_name=GROUP, deps=[continuous_bars], kinds={"polars"})
def backtest(context: AssetExecutionContext, scalper_config: ScalperConfig) -> Output:
    """The current configuration over the last `research.backtest_sessions` sessions."""
    with user_errors():
        cfg = scalper_config.load()
        bars = research_bars(cfg, cfg.research.backtest_sessions)
        result = run_backtest(bars, cfg)
    context.log.info(headline(result.metrics))
    metadata = {**window_metadata(bars, cfg), **metrics_metadata(result.metrics)}
    metadata["summary"] = MetadataValue.md(f"```\n{result.summary()}\n```")
    return Output(result, metadata=metadata)


@asset(group_name=GROUP, deps=[continuous_bars], kinds={"polars", "parquet"})
def param_sweep(context: AssetExecutionContext, scalper_config: ScalperConfig) -> Output:
    """Every set of the `research` grid over the backtest window, by the engine's parallel
    sweep: one row per set with every metric, also written as `research/param_sweep.parquet`."""
    with user_errors():
        cfg = scalper_config.load()
        bars = research_bars(cfg, cfg.research.backtest_sessions)
        sweep = run_sweep(bars, cfg, progress=False)
    path = subdir("research") / "param_sweep.parquet"
    sweep.write_parquet(path)
    objective = cfg.research.objective
    best = best_set(sweep, cfg)
    best_text = "none eligible" if best is None else format_point(grid_point(best))
    context.log.info(f"{sweep.height} sets; best by {objective}: {best_text}")
    top = sweep.sort(objective, descending=True, nulls_last=True).head(10)
    metadata = {
        **window_metadata(bars, cfg),
        "sets": MetadataValue.int(sweep.height),
        **exclusions_metadata(grid_params(cfg).excluded),
        "best": MetadataValue.text(best_text),
        f"best_{objective}": MetadataValue.float(float(best[objective]) if best else float("nan")),
        "top_10": MetadataValue.md(markdown_table(top.drop("set"))),
        "table": MetadataValue.path(str(path)),
    }
    return Output(sweep, metadata=metadata)


@asset(group_name=GROUP, deps=[continuous_bars], kinds={"polars"})
def walk_forward(context: AssetExecutionContext, scalper_config: ScalperConfig) -> Output:
    """Walk-forward over the last `research.walk_forward_sessions` sessions: optimize each fold
    in-sample, trade the winner out-of-sample, stitch the out-of-sample runs."""
    with user_errors():
        cfg = scalper_config.load()
        bars = research_bars(cfg, cfg.research.walk_forward_sessions)
        wf = run_walk_forward(bars, cfg, progress=False)
    context.log.info(wf.summary())
    metadata = {
        **window_metadata(bars, cfg),
        **metrics_metadata(wf.out_of_sample.metrics, "oos_"),
        "degradation": MetadataValue.float(wf.degradation),
        "recommended": MetadataValue.text(format_point(wf.recommended)),
        "folds": MetadataValue.md(markdown_table(folds_table(wf))),
        **exclusions_metadata(wf.excluded),
    }
    return Output(wf, metadata=metadata)


@asset(
    group_name=GROUP,
    kinds={"html", "yaml"},
    check_specs=[
        AssetCheckSpec(
            "go_live_gate",
            asset="recommended_params",
            description="The walk-forward winner passed every go-live threshold.",
        )
    ],
)
def recommended_params(
    context: AssetExecutionContext,
    scalper_config: ScalperConfig,
    backtest: BacktestResult,
    param_sweep: pl.DataFrame,
    walk_forward: WalkForwardResult,
) -> Iterator[Output | AssetCheckResult]:
    """The walk-forward winner through the go-live gate, and the run published: the report,
    `approved_params.yaml` (written only when the gate passes; otherwise the last approved set
    stays in force), the history row and the index of runs. The `go_live_gate` check shows the
    verdict in the UI, as a warning when it refuses (the data are fine, the strategy is not)."""
    cfg = scalper_config.load()
    verdict = go_live_gate(walk_forward, cfg)
    run = ResearchRun(
        cfg.instrument.symbol,
        backtest=backtest,
        sweep=param_sweep,
        walk_forward=walk_forward,
        verdict=verdict,
        data_source=stored_data_source(cfg.instrument.symbol, walk_forward),
        excluded=walk_forward.excluded,
    )
    published = publish(run, cfg, origin="dagster", approved_to=approved_params_path())
    context.log.info(verdict.summary())
    checks = "\n".join(f"- {'✓' if c.passed else '✗'} {c.detail}" for c in verdict.checks)
    metadata = {
        "gate": MetadataValue.text("PASSED" if verdict.passed else "FAILED"),
        "verdict": MetadataValue.md(checks),
        "params": MetadataValue.json(verdict.params or {}),
        "report": MetadataValue.path(str(published.report)),
        "run_id": MetadataValue.text(published.run_id),
        **exclusions_metadata(walk_forward.excluded),
        **metrics_metadata(walk_forward.out_of_sample.metrics, "oos_"),
    }
    if published.approved is not None:
        metadata["approved_params"] = MetadataValue.path(str(published.approved))
    value = {"passed": verdict.passed, "params": verdict.params, "report": str(published.report)}
    yield Output(value, metadata=metadata)
    yield AssetCheckResult(
        check_name="go_live_gate",
        passed=verdict.passed,
        severity=AssetCheckSeverity.WARN,
        description=verdict.summary(),
    )


RESEARCH_ASSETS = (backtest, param_sweep, walk_forward, recommended_params)

# ---------------------------------------------------------------------------------------------
# Job and schedule

research_job = define_asset_job(
    "research",
    selection=AssetSelection.assets(*RESEARCH_ASSETS),
    description="backtest, param_sweep, walk_forward → recommended_params (gate, report).",
)


@schedule(
    job=research_job,
    cron_schedule=RESEARCH_CRON,
    execution_timezone=RESEARCH_TIMEZONE,
    default_status=DefaultScheduleStatus.STOPPED,  # like the data job's: the default is simulated
    description="Weekday nights, once the day's continuous bars are built: the research run.",
)
def nightly_research(
    context: ScheduleEvaluationContext, scalper_config: ScalperConfig
) -> RunRequest | SkipReason:
    """One research run per weekday night, after `continuous_bars` has that day's partition; the
    run key makes the night's later ticks no-ops."""
    day = context.scheduled_execution_time.date().isoformat()  # the tick's New York date
    symbol = scalper_config.load().instrument.symbol
    built = context.instance.get_materialized_partitions(AssetKey("continuous_bars"))
    if MultiPartitionKey({"date": day, "symbol": symbol}) not in built:
        return SkipReason(f"continuous_bars has no {symbol} {day} partition yet")
    return RunRequest(run_key=f"research|{symbol}|{day}")


# ---------------------------------------------------------------------------------------------
# Reading bars and metadata


def research_bars(cfg: Config, sessions: int) -> pl.DataFrame:
    """The last `sessions` whole sessions of the back-adjusted continuous series."""
    symbol = cfg.instrument.symbol
    built = store.partitions(symbol, store.stage_root("continuous"))
    if not built:
        raise Failure(
            description=f"no continuous {symbol} bars yet: materialize continuous_bars first",
            allow_retries=False,
        )
    return read_recent_sessions(continuous_reader(symbol, cfg), built, sessions, cfg)


def window_metadata(bars: pl.DataFrame, cfg: Config) -> dict[str, Any]:
    """Which sessions an asset used."""
    dates = session_dates(bars, cfg).unique().sort()
    return {
        "symbol": MetadataValue.text(cfg.instrument.symbol),
        "sessions": MetadataValue.text(f"{dates[0]} .. {dates[-1]} ({dates.len()} sessions)"),
        "bars": MetadataValue.int(bars.height),
    }


def exclusions_metadata(excluded: Sequence[Excluded]) -> dict[str, Any]:
    """How many grid sets the configuration's rules refused, and why (a line per group)."""
    lines = "\n".join(f"- {line}" for line in exclusion_lines(excluded)) or "none"
    return {
        "excluded": MetadataValue.int(len(excluded)),
        "excluded_why": MetadataValue.md(lines),
    }


def metrics_metadata(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Headline metrics as numbers, which the UI charts across materializations."""
    return {f"{prefix}{k}": MetadataValue.float(float(metrics[k])) for k in HEADLINE}


def markdown_table(frame: pl.DataFrame) -> str:
    """A small frame as a Markdown table (numbers to 2 decimals)."""
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.width]
    for row in frame.iter_rows():
        cells = (f"{v:,.2f}" if isinstance(v, float) else str(v) for v in row)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
