"""Market data as Dagster assets: `raw_bars` → `validated_bars` → `continuous_bars`.

The assets are shells around the library, which the CLI calls too (`scalper data simulate|import|
download`, `scalper validate`, `scalper data continuous`), so data made by either is the other's:

* `raw_bars` stores what the `bar_source` resource fetches (`scalper.store.store_raw`) in the
  store's `raw` stage;
* `validated_bars` validates those days into the `validated` stage (`quality.store_days`), and
  its asset checks report the suites' verdicts;
* `continuous_bars` builds the front-contract series into the `continuous` stage
  (`scalper.continuous.build_continuous`); research reads it with `read_continuous_bars`.

The stages, series naming and refusal rules are described in `scalper.store` and
`scalper.continuous`; what stays here is Dagster's part: partitions, resources, metadata.

**Partitions.** One per UTC day and product (`MARKET_PARTITIONS`: `date` × `symbol`), because the
bar store (SPEC §3) is partitioned by UTC day: a partition is exactly one store day, and
materializing it again replaces that day, so re-runs are idempotent. Saturdays are partitions
too, and never hold bars (Globex is closed from Friday 17:00 to Sunday 18:00 New York).

**Runs and backfills.** The assets use a single-run backfill policy: a range of partitions is one
run, and each series is validated with one Great Expectations call for the whole range (a call
costs ~0.3 s whatever its size; per day, a year of history would spend minutes in GX overhead).
The nightly schedule materializes one day per run. History: in the UI select the assets →
Materialize → a date range and symbol(s) → Launch backfill (one run per symbol and range), or in
Python `assets.demo.materialize_days(symbol, first, last, ...)`, or from the CLI. The asset checks
of a run judge the days of that run.
"""

import base64
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    BetaWarning,
    DailyPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    asset,
)
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from assets.checks import QUALITY_CHECKS, quality_check_results
from assets.resources import BarSource, ScalperConfig
from quality import QualityResult, plot_quality
from quality.store_days import validate_stored_days
from quality.validate import slug
from scalper.bars import iso_utc
from scalper.continuous import UnvalidatedBars, build_continuous, read_continuous_bars
from scalper.errors import ScalperError
from scalper.instruments import INSTRUMENTS
from scalper.paths import subdir
from scalper.store import Stage, day_span, stage_root, store_raw, utc_day

# The single-run backfill policy is a deliberate choice (see above); without this, every import
# of the code location (each `scalper demo`, each CLI run) would print Dagster's beta notice.
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=BetaWarning)

HISTORY_START = "2013-01-01"
"""First partition: before the oldest real data the project uses (ES minutes from 2013-10)."""

GROUP = "market_data"

MARKET_PARTITIONS = MultiPartitionsDefinition(
    {
        "date": DailyPartitionsDefinition(start_date=HISTORY_START),
        "symbol": StaticPartitionsDefinition(list(INSTRUMENTS)),
    }
)
"""UTC day × product (every product of the instruments table)."""

# ---------------------------------------------------------------------------------------------
# Assets


@asset(
    partitions_def=MARKET_PARTITIONS,
    backfill_policy=BackfillPolicy.single_run(),
    group_name=GROUP,
    kinds={"polars", "parquet"},
)
def raw_bars(
    context: AssetExecutionContext, scalper_config: ScalperConfig, bar_source: BarSource
) -> MaterializeResult:
    """Bars as the source delivers them (simulator, file or IBKR), one store day per partition.

    Materializing a day again replaces it, and drops series the source no longer delivers.
    """
    frames: dict[str, pl.DataFrame] = {}
    origins = []
    with user_errors():
        cfg = scalper_config.load()
        for product, days in requested_days(context).items():
            bars, origin = bar_source.fetch(cfg, product, days[0], days[-1])
            frames.update(store_raw(bars, product, days, source=cfg.data.source))
            origins.append(origin)
    metadata = bars_metadata(frames, "raw", context)
    metadata["source"] = MetadataValue.text("; ".join(origins))
    return MaterializeResult(metadata=metadata)


@asset(
    partitions_def=MARKET_PARTITIONS,
    backfill_policy=BackfillPolicy.single_run(),
    group_name=GROUP,
    kinds={"great_expectations", "parquet"},
    deps=[raw_bars],
    check_specs=QUALITY_CHECKS,
)
def validated_bars(
    context: AssetExecutionContext, scalper_config: ScalperConfig
) -> MaterializeResult:
    """Raw bars checked by the Great Expectations suites, one store day per partition.

    Bars failing an ERROR check are quarantined with the reason (kept, never dropped) and every
    day gets a status record; a hole inside a session is a warning (the `gaps` check) that sets
    nothing aside, so the day stays usable downstream. The asset checks report the suites'
    verdicts, the Data Docs hold the details.
    """
    with user_errors():
        validated = validate_stored_days(requested_days(context), scalper_config.load())
    frames, results, docs = validated.frames, validated.results, validated.data_docs
    metadata = bars_metadata(frames, "validated", context)
    metadata.update(verdict_metadata(frames, results, docs))
    checks = quality_check_results(list(results.values()), docs)
    return MaterializeResult(metadata=metadata, check_results=checks)


@asset(
    partitions_def=MARKET_PARTITIONS,
    backfill_policy=BackfillPolicy.single_run(),
    group_name=GROUP,
    kinds={"polars", "parquet"},
    deps=[validated_bars],
)
def continuous_bars(
    context: AssetExecutionContext, scalper_config: ScalperConfig
) -> MaterializeResult:
    """The front-contract series of each product by the roll rule (SPEC §2), from validated bars
    only; it refuses (fails, writing nothing) if a day it needs is not validated.

    Stored unadjusted, each bar naming its contract; read it with `read_continuous_bars`, which
    also back-adjusts a window (difference method).
    """
    with user_errors():
        roll_days = scalper_config.load().instrument.roll_days_before_expiry
        try:
            frames = build_continuous(requested_days(context), roll_days)
        except UnvalidatedBars as refused:
            raise Failure(
                description=f"continuous_bars refuses unvalidated bars: {refused.shown}",
                metadata={"refused": MetadataValue.json(refused.refusals)},
                allow_retries=False,
            ) from refused
    metadata = bars_metadata(frames, "continuous", context)
    metadata.update(adjustment_metadata(frames, roll_days))
    return MaterializeResult(metadata=metadata)


MARKET_DATA_ASSETS = (raw_bars, validated_bars, continuous_bars)


# ---------------------------------------------------------------------------------------------
# Partitions and failures


def requested_days(context: AssetExecutionContext) -> dict[str, list[date]]:
    """The run's partitions as UTC days per product, ascending (a run may cover a range)."""
    days: dict[str, list[date]] = {}
    for key in context.partition_keys:
        dims = MARKET_PARTITIONS.get_partition_key_from_str(key).keys_by_dimension
        days.setdefault(dims["symbol"], []).append(date.fromisoformat(dims["date"]))
    return {product: sorted(found) for product, found in days.items()}


@contextmanager
def user_errors() -> Iterator[None]:
    """A user's mistake (bad file, unreachable gateway, day outside the simulation) fails the
    run with its one-line message instead of a traceback."""
    try:
        yield
    except ScalperError as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc


# ---------------------------------------------------------------------------------------------
# Metadata


def bars_metadata(
    frames: Mapping[str, pl.DataFrame], stage: Stage, context: AssetExecutionContext
) -> dict[str, Any]:
    """Row counts, date range, a per-series table, a price plot and the store's path."""
    non_empty = {name: bars for name, bars in frames.items() if bars.height}
    days = [d for found in requested_days(context).values() for d in found]
    metadata: dict[str, Any] = {
        "rows": MetadataValue.int(sum(b.height for b in non_empty.values())),
        "days": MetadataValue.text(f"{min(days)} .. {max(days)} ({len(days)} partitions)"),
        "store": MetadataValue.path(str(stage_root(stage))),
    }
    if not non_empty:
        metadata["note"] = MetadataValue.text("no bars on these days (market closed?)")
        return metadata
    first = min(b["ts"].min() for b in non_empty.values())
    last = max(b["ts"].max() for b in non_empty.values())
    metadata["date_range"] = MetadataValue.text(f"{iso_utc(first)} .. {iso_utc(last)}")
    metadata["series"] = MetadataValue.md(_series_table(non_empty))
    closes = dict(sorted(non_empty.items()))
    plot = line_plot(closes, f"{stage} bars, close", _plot_path(stage, non_empty))
    metadata.update(image_metadata(plot))
    return metadata


def verdict_metadata(
    frames: Mapping[str, pl.DataFrame], results: Mapping[str, QualityResult], docs: Path | None
) -> dict[str, Any]:
    """Quarantine counts, the verdict per series, the quality plot and the Data Docs."""
    if not results:
        return {}
    verdicts = [r.to_dict() for r in results.values()]
    rows = ["| series | verdict |", "|---|---|"] + [
        f"| {s} | {r.summary()} |" for s, r in results.items()
    ]
    main = max(results, key=lambda s: frames[s].height)  # the front contract, usually
    plot = plot_quality(frames[main], results[main])
    return {
        "quarantined": MetadataValue.int(sum(v["quarantined"] for v in verdicts)),
        "warned": MetadataValue.int(sum(v["warned"] for v in verdicts)),
        "verdicts": MetadataValue.md("\n".join(rows)),
        "data_docs": MetadataValue.path(str(docs)),
        **image_metadata(plot, "quality_plot"),
    }


def adjustment_metadata(frames: Mapping[str, pl.DataFrame], roll_days: int) -> dict[str, Any]:
    """The window back-adjusted as research will read it, plotted against the unadjusted series;
    a roll whose gap cannot be measured is reported, not hidden."""
    metadata: dict[str, Any] = {}
    for product, series in frames.items():
        if series.height == 0:
            continue
        first, last = series.select(
            utc_day().min().alias("first"), utc_day().max().alias("last")
        ).row(0)
        try:
            back = read_continuous_bars(product, first, last, "back", roll_days=roll_days)
        except ScalperError as exc:
            metadata[f"{product}_back_adjusted"] = MetadataValue.text(f"not possible: {exc}")
            continue
        lines = {"unadjusted": series, "back-adjusted": back}
        title = f"{product} continuous close"
        plot = line_plot(lines, title, _plot_path("adjustment", {product: series}))
        metadata.update(image_metadata(plot, f"{product}_adjustment_plot"))
    return metadata


def _series_table(frames: Mapping[str, pl.DataFrame]) -> str:
    lines = ["| series | bars | first bar | last bar |", "|---|---:|---|---|"]
    for name, bars in sorted(frames.items()):
        first, last = iso_utc(bars["ts"].min()), iso_utc(bars["ts"].max())
        lines.append(f"| {name} | {bars.height:,} | {first} | {last} |")
    return "\n".join(lines)


def _plot_path(kind: str, frames: Mapping[str, pl.DataFrame]) -> Path:
    """`reports/market_data/<kind>_<series>_<days>.png`: one file per asset, series and days."""
    names = sorted(frames)
    label = "_".join(names[:3]) + ("_etc" if len(names) > 3 else "")
    span = day_span(pl.concat([bars.select("ts") for bars in frames.values()]))
    return subdir("reports") / "market_data" / f"{kind}_{slug(f'{label}_{span}')}.png"


def line_plot(lines: Mapping[str, pl.DataFrame], title: str, path: Path) -> Path:
    """Close prices of a few series over time (UTC) as a small PNG at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(6.4, 2.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for label, bars in lines.items():
        ordered = bars.sort("ts")
        when = ordered.select(pl.from_epoch("ts", time_unit="ns")).to_series()
        axes.plot(when, ordered["close"], linewidth=0.7, label=label)
    axes.set_title(title, fontsize=9)
    axes.set_xlabel("UTC", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=7, loc="best")
    figure.savefig(path, dpi=100)
    return path


def image_metadata(path: Path, key: str = "plot") -> dict[str, Any]:
    """A PNG shown inline in the Dagster UI (a Markdown data URI) and its path on disk."""
    encoded = base64.b64encode(path.read_bytes()).decode()
    return {
        key: MetadataValue.md(f"![{path.stem}](data:image/png;base64,{encoded})"),
        f"{key}_path": MetadataValue.path(str(path)),
    }
