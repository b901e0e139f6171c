"""Data benchmark: import a year of 1-minute bars into the bar store (issue 3: ≤ 5 s).

A year of simulated MES 1-minute bars is written once as a normalized CSV, a normalized Parquet
file and an Eastern-time CSV; each is then imported (`scalper.importers.import_file`, which
parses and validates every bar) and written to a fresh bar store (`write_bars_partitioned`, one
Parquet file per UTC day), with progress bars off. Times are the best of `--repeat` runs. Files
live in a temporary folder under the data directory and are removed afterwards.

Usage: python bench/bench_data.py [--days 365] [--repeat 5]
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import date
from pathlib import Path

import polars as pl

from bench.timing import best_of
from scalper.bars import BAR_COLUMNS, write_bars
from scalper.importers import import_file
from scalper.paths import subdir
from scalper.simulate import simulate_bars
from scalper.store import write_bars_partitioned


def write_eastern_csv(bars: pl.DataFrame, path: Path) -> None:
    """The bars with `timestamp` as New York wall-clock bar starts (the `eastern_csv` layout)."""
    wall = pl.from_epoch("ts", time_unit="ns").dt.replace_time_zone("UTC")
    wall = wall.dt.convert_time_zone("America/New_York").dt.strftime("%Y-%m-%d %H:%M:%S")
    bars.select(wall.alias("timestamp"), *BAR_COLUMNS[1:]).write_csv(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365, help="calendar days of 1-minute bars")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    bars = simulate_bars(date(2024, 1, 1), args.days, seed=11)
    print(f"bars: {bars.height:,} simulated MES 1-minute bars ({args.days} days)")
    with tempfile.TemporaryDirectory(dir=subdir("bench")) as folder:
        files = [
            ("normalized", Path(folder, "mes.csv")),
            ("normalized", Path(folder, "mes.parquet")),
            ("eastern_csv", Path(folder, "mes_eastern.csv")),
        ]
        for fmt, path in files:
            if fmt == "eastern_csv":
                write_eastern_csv(bars, path)
            else:
                write_bars(bars, path)
        for fmt, path in files:
            print(bench_one(bars, fmt, path, args.repeat))


def bench_one(bars: pl.DataFrame, fmt: str, path: Path, repeat: int) -> str:
    """Import `path` and store it (after checking the import gives the bars back): one line."""
    root = path.with_name(f"store-{path.stem}")
    imported = import_file(path, fmt, "MES", progress=False)
    assert imported.equals(bars), f"{path.name} does not import to the simulated bars"
    t_import = best_of(repeat, lambda: import_file(path, fmt, "MES", progress=False))
    t_store = best_of(repeat, lambda: write_bars_partitioned(imported, "MES", root, progress=False))
    total = t_import + t_store
    file = f"{fmt:11s} {path.suffix:8s} {path.stat().st_size / 1e6:5.1f} MB"
    times = f"import {t_import:6.3f} s   store {t_store:6.3f} s   total {total:6.3f} s"
    return f"{file}   {times}   {bars.height / total / 1e6:5.2f} M bars/s   (target: total ≤ 5 s)"


if __name__ == "__main__":
    main()
