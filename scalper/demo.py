"""`scalper demo`: the main job on embedded defaults, runnable on a fresh machine with no data.

It runs the nightly chain: the data pipeline — simulate, validate (Great Expectations), build the
continuous series — as the real Dagster assets, a backtest of the result with the default
configuration of SPEC §5 in the Rust engine, and the research assets (sweep, walk-forward, gate,
HTML report) when the window holds enough sessions. The sample is fixed (start date and seed), so
every run prints the same numbers.

The library never imports Dagster, so the asset runs come in as a function (`Materialize`): the
command line hands in `assets.demo.materialize_demo`. This module only knows what that step
returns (`DemoData`) and does the backtest and the printout.

**Its own data directory.** Everything the demo writes — simulated bars in the store, research
history, approved parameters, Dagster runs — goes to `demo/` inside the data directory (or
`--home`), never to the data directory the live stack uses: simulated bars or parameters
approved on them must never reach a trading day. Its own files (the bars, the trades, its
configuration) are in `results/` there. A `--home` holding a stream worker's ledger is refused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from scalper import paths
from scalper.backtest import run_backtest
from scalper.bars import iso_utc, write_bars
from scalper.config import load_config
from scalper.errors import ScalperError
from scalper.paths import subdir

DEMO_START = date(2024, 1, 2)


@dataclass(frozen=True)
class DemoData:
    """What the demo's data pipeline produced: the bars to backtest and where its outputs are."""

    bars: pl.DataFrame
    quality: str  # one line: bars validated and quarantined, checks passed
    store: Path  # the continuous series in the bar store
    data_docs: Path
    research: str = ""  # the research run's summary lines, or why it was skipped
    report: Path | None = None  # the research report, when there was a research run


Materialize = Callable[[int, int], DemoData]
"""`(days, seed) -> DemoData`: simulate `days` calendar days of sessions from `DEMO_START`."""

RESULTS = "results"
"""The demo's own files (bars, trades, configuration), in the demo's data directory."""


def demo_home(home: Path | None = None) -> Path:
    """The demo's data directory: `home` (`--home`), else `demo/` in the data directory; an
    absolute path, and never one a stream worker keeps its ledger in."""
    path = home.expanduser().absolute() if home is not None else paths.home() / "demo"
    ledger = path / "stream" / "ledger.sqlite"
    if ledger.exists():
        raise ScalperError(
            f"demo: {path} is a live data directory (it holds {ledger}); the demo's simulated "
            "bars and parameters must stay apart from it: give another --home"
        )
    return path


def run_demo(
    materialize: Materialize, home: Path | None = None, days: int = 60, seed: int = 7
) -> int:
    """Run the data pipeline, backtest its continuous series, print the summary and the paths."""
    os.environ["SCALPER_HOME"] = str(demo_home(home))
    cfg = load_config(None)
    started = time.perf_counter()
    data = materialize(days, seed)
    out = subdir(RESULTS)
    bars_path = out / f"{cfg.instrument.symbol.lower()}_bars.parquet"
    write_bars(data.bars, bars_path)
    result = run_backtest(data.bars, cfg)
    trades_path = out / "trades.csv"
    result.write_trades_csv(trades_path)
    elapsed = time.perf_counter() - started
    first, last = iso_utc(data.bars["ts"][0]), iso_utc(data.bars["ts"][-1])
    print(
        f"scalper demo: {len(data.bars):,} simulated {cfg.instrument.symbol} 1-minute bars over "
        f"{days} days from {DEMO_START} (seed {seed}) through the Dagster assets, "
        "backtested on the default configuration"
    )
    print(data.quality)
    print(result.summary())
    print(f"bars:      {bars_path}  ({first} .. {last})")
    print(f"store:     {data.store}")
    print(f"data docs: {data.data_docs}")
    print(f"trades:    {trades_path}")
    if data.research:
        print(data.research)
    if data.report is not None:
        print(f"report:    {data.report}")
    print(f"done in {elapsed:.2f} s")
    return 0
