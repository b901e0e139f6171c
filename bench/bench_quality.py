"""Validation benchmark: one day of 1-second bars through the GX suites (SPEC §7: ≤ 1 s).

One simulated MES session of 1-second bars (23 h = 82,800 bars) is validated end to end with
`quality.validate_frame` (polars helper columns, pandas conversion, both GX suites with the
failing rows' indices), best of `--repeat`, after one warm-up call that builds the cached GX
context. Also printed: that first call (what a fresh process pays once, GX import excluded), a
run over a day with one defect of every kind (the failure path), and building Data Docs for one
result, which is deliberately kept off the validation path. Data Docs go to the data directory
(`scalper.paths`: `SCALPER_HOME`, default the user data folder).

Usage: python bench/bench_quality.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import date
from typing import TypeVar

import polars as pl

from bench.timing import best_of
from quality import build_data_docs, validate_frame
from scalper.config import Config
from scalper.simulate import simulate_bars

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def with_defects(bars: pl.DataFrame) -> pl.DataFrame:
    """One defect of every kind, spread over the day: high below low, off-grid close, negative
    volume, a duplicated bar, a 20-minute hole, a 100-tick move without volume."""

    def change(frame: pl.DataFrame, row: int, **values: float) -> pl.DataFrame:
        at = pl.int_range(pl.len()) == row
        return frame.with_columns(
            pl.when(at).then(pl.lit(v)).otherwise(pl.col(c)).cast(frame.schema[c]).alias(c)
            for c, v in values.items()
        )

    broken = change(bars, 1_000, high=bars["low"][1_000] - 1)
    broken = change(broken, 2_000, close=bars["close"][2_000] + 0.1)
    broken = change(broken, 3_000, volume=-1)
    jump = {c: bars[c][5_000] + 25.0 for c in ("open", "high", "low", "close")}
    broken = change(broken, 5_000, volume=0, **jump)
    duplicate, hole = 4_000, slice(30_000, 31_200)
    return pl.concat(
        [
            broken.head(duplicate + 1),
            broken.slice(duplicate, hole.start - duplicate),
            broken.slice(hole.stop),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    cfg = Config()
    bars = simulate_bars(date(2024, 3, 13), 1, bar_seconds=1)

    def validate(frame: pl.DataFrame = bars) -> object:
        return validate_frame(frame, symbol="MES", cfg=cfg, name="MES 2024-03-13 1s")

    first, result = timed(validate)
    assert result.success, result.summary()
    best = best_of(args.repeat, validate)
    broken = with_defects(bars)
    failing, failed = timed(lambda: validate(broken))
    docs, index = timed(lambda: build_data_docs([result]))

    print(f"validate one day of 1-second bars ({bars.height:,} bars):")
    print(f"  best of {args.repeat}:        {best:.3f} s   (target ≤ 1 s)")
    print(f"  first call:        {first:.3f} s   (builds the cached GX context)")
    print(f"  with defects:      {failing:.3f} s   {failed.summary()}")
    print(f"build Data Docs:     {docs:.3f} s   {index}")


if __name__ == "__main__":
    main()
