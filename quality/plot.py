"""A small PNG of a validation run: bars per hour (or day) with the failing bars marked.

It is what a trader glances at in the Dagster asset metadata and the daily summary: a missing
hour, a burst of bad bars at the open or a session full of quarantined bars shows at once.
Drawn on a bare Agg canvas (no pyplot), so it is safe in worker threads and needs no display.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from quality.validate import QualityResult, slug
from scalper.calendar import NEW_YORK
from scalper.paths import subdir

_HOURLY_UP_TO = timedelta(days=3)  # longer frames are counted per day, or the bars get too thin
_COLOURS = {"bars": "#9aa5b1", "quarantined": "#d64545", "flagged": "#f0a030"}


def plot_quality(
    df: pl.DataFrame, result: QualityResult, path: Path | None = None, *, tz: str = NEW_YORK
) -> Path:
    """Draw bars per hour/day of `df` (local time `tz`) with `result`'s failing bars marked.

    Quarantined bars are red, bars that only mark a problem (after a hole) orange, on their own
    axis. Written to
    `path`, by default `reports/quality/<name>.png` under the data directory; returns the path.
    """
    path = path or subdir("reports") / "quality" / f"{slug(result.name)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(6.4, 2.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    counts = _counts(df, result, tz)
    if counts is None:
        axes.text(0.5, 0.5, "no bar times to plot", ha="center", va="center")
        axes.set_axis_off()
    else:
        _draw(axes, *counts, tz)
    verdict = "OK" if result.success else "FAILED"
    axes.set_title(
        f"{result.name}: {verdict}, {result.rows:,} bars, {result.quarantined:,} quarantined",
        fontsize=9,
    )
    figure.savefig(path, dpi=100)
    return path


def _counts(
    df: pl.DataFrame, result: QualityResult, tz: str
) -> tuple[pl.DataFrame, timedelta] | None:
    """Bars, quarantined and flagged bars per bucket, or None when `ts` is unusable."""
    if df.height == 0 or df.schema.get("ts") != pl.Int64:
        return None
    bars = df.select("ts").with_row_index("row").drop_nulls("ts")
    if bars.height == 0:
        return None
    local = pl.from_epoch("ts", time_unit="ns").dt.replace_time_zone("UTC").dt.convert_time_zone(tz)
    span = timedelta(microseconds=(bars["ts"].max() - bars["ts"].min()) // 1000)
    bucket = timedelta(hours=1) if span <= _HOURLY_UP_TO else timedelta(days=1)
    marked = result.failing_rows.select("row", "quarantined")
    counts = (
        bars.join(marked, on="row", how="left")
        .with_columns(bucket=local.dt.truncate(bucket).dt.replace_time_zone(None))
        .group_by("bucket")
        .agg(
            bars=pl.len(),
            quarantined=pl.col("quarantined").fill_null(False).sum(),
            flagged=(pl.col("quarantined") == False).sum(),  # noqa: E712  (null = not flagged)
        )
        .sort("bucket")
    )
    return counts, bucket


def _draw(axes: Axes, counts: pl.DataFrame, bucket: timedelta, tz: str) -> None:
    """Bars per bucket in grey; failing bars per bucket as narrow bars on their own scale, so a
    single bad bar among thousands still shows."""
    x = counts["bucket"].to_list()
    axes.bar(x, counts["bars"], width=bucket * 0.9, color=_COLOURS["bars"], label="bars")
    axes.set_ylabel("bars", fontsize=8)
    axes.set_xlabel(f"{tz} time", fontsize=8)
    axes.tick_params(labelsize=7)
    failing = counts["quarantined"] + counts["flagged"]
    if failing.sum() == 0:
        return
    marks = axes.twinx()
    marks.bar(x, counts["quarantined"], width=bucket * 0.3, color=_COLOURS["quarantined"])
    marks.bar(
        x,
        counts["flagged"],
        bottom=counts["quarantined"],
        width=bucket * 0.3,
        color=_COLOURS["flagged"],
    )
    marks.set_ylim(0, failing.max() * 1.25)
    marks.set_ylabel("failing bars", fontsize=8, color=_COLOURS["quarantined"])
    marks.tick_params(labelsize=7)
    marks.yaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [
        Patch(color=_COLOURS[kind], label=kind)
        for kind in ("bars", "quarantined", "flagged")
        if kind == "bars" or counts[kind].sum()
    ]
    axes.legend(handles=handles, fontsize=7, loc="lower right")
