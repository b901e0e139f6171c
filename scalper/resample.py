"""Coarser bars from finer ones (1 s / 5 s / 1 min → any multiple), without look-ahead.

An output bar with start `S` covers `[S, S + bar_seconds)` (SPEC §3) and aggregates exactly the
input bars that start inside it: open of the first, highest high, lowest low, close of the last,
summed volume. Buckets are whole multiples of `bar_seconds` since the epoch (so, as `bar_seconds`
divides a day, they tile every UTC day and hour), which gives the usual stamps (5-minute bars at
:00, :05, …) for every source. A bucket that holds only part of its bars — the first minutes after
the Globex open, the last before the break, a quiet spell — is kept as it is; a bucket without
input bars produces nothing, so no bar is ever invented.

No look-ahead: an input bar must end inside its output bar, or the output bar (known at its close)
would contain trades from after it. That holds when the input bars sit on their own grid and the
output size is a multiple of the input size, which `resample` checks.
"""

from __future__ import annotations

import polars as pl

from scalper.bars import BAR_COLUMNS, iso_utc
from scalper.errors import DataError, ScalperError

SERIES_KEYS = ("symbol", "contract")
"""Columns that name a series: bars of different series are never merged, and the keys are kept."""

_NS = 1_000_000_000


def resample(
    df: pl.DataFrame, bar_seconds: int, *, source_seconds: int | None = None
) -> pl.DataFrame:
    """`df` (bars in time order per series) as `bar_seconds` bars.

    `source_seconds` is the input bar size; by default the smallest step between two bars of a
    series (right whenever some bars follow each other; give it for sparse data). Returns the bar
    columns and the series keys present (`symbol`, `contract`); other columns, which describe
    single input bars, are dropped.
    """
    if bar_seconds <= 0 or 86_400 % bar_seconds:
        raise ScalperError(f"resample: bar_seconds must divide 86400 (got {bar_seconds})")
    keys = [c for c in SERIES_KEYS if c in df.columns]
    _check_time_order(df, keys)
    source = source_seconds or _smallest_step_seconds(df, keys)
    if source is not None:
        _check_grid(df, source, bar_seconds)
    bar_ns = bar_seconds * _NS
    return (
        df.group_by(*keys, (pl.col("ts") // bar_ns * bar_ns).alias("ts"), maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .select(*BAR_COLUMNS, *keys)
    )


def _per_series(expr: pl.Expr, keys: list[str]) -> pl.Expr:
    return expr.over(keys) if keys else expr


def _check_time_order(df: pl.DataFrame, keys: list[str]) -> None:
    back = df.select(_per_series(pl.col("ts").diff(), keys).le(0).arg_true()).to_series()
    if back.len():
        raise DataError(
            f"resample: bars must be in time order; the bar at {iso_utc(df['ts'][back[0]])} "
            "does not follow the previous one"
        )


def _smallest_step_seconds(df: pl.DataFrame, keys: list[str]) -> int | None:
    step = df.select(_per_series(pl.col("ts").diff(), keys).min()).item()
    return None if step is None else max(step // _NS, 1)


def _check_grid(df: pl.DataFrame, source: int, bar_seconds: int) -> None:
    if bar_seconds % source:
        raise DataError(
            f"resample: {bar_seconds}-second bars cannot be made from {source}-second bars "
            "(not a multiple)"
        )
    off_grid = df.select((pl.col("ts") % (source * _NS) != 0).arg_true()).to_series()
    if off_grid.len():
        raise DataError(
            f"resample: the bar at {iso_utc(df['ts'][off_grid[0]])} is not on the "
            f"{source}-second grid, so it would straddle two {bar_seconds}-second bars"
        )
