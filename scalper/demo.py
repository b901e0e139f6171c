"""`scalper demo`: the main job on embedded defaults, runnable on a fresh machine with no data.

It simulates a deterministic sample of MES bars (fixed start date and seed, so every run prints the
same numbers), stores them in the data directory and backtests them with the default configuration
of SPEC §5 in the Rust engine.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, date, datetime
from pathlib import Path

from scalper.backtest import run_backtest
from scalper.bars import write_bars
from scalper.config import load_config
from scalper.paths import subdir
from scalper.simulate import simulate_bars

DEMO_START = date(2024, 1, 2)


def run_demo(home: Path | None = None, days: int = 60, seed: int = 7) -> int:
    """Simulate `days` calendar days, store and backtest; prints the summary and the file paths."""
    if home is not None:
        os.environ["SCALPER_HOME"] = str(home)
    cfg = load_config(None)
    started = time.perf_counter()
    bars = simulate_bars(DEMO_START, days, seed=seed, symbol=cfg.instrument.symbol)
    out = subdir("demo")
    bars_path = out / f"{cfg.instrument.symbol.lower()}_bars.parquet"
    write_bars(bars, bars_path)
    result = run_backtest(bars, cfg)
    trades_path = out / "trades.csv"
    result.write_trades_csv(trades_path)
    elapsed = time.perf_counter() - started
    first, last = bars["ts"][0], bars["ts"][-1]
    print(
        f"scalper demo: {len(bars):,} simulated {cfg.instrument.symbol} 1-minute bars over "
        f"{days} days from {DEMO_START} (seed {seed}), default configuration"
    )
    print(result.summary())
    print(f"bars:   {bars_path}  ({_iso(first)} .. {_iso(last)})")
    print(f"trades: {trades_path}")
    print(f"done in {elapsed:.2f} s")
    return 0


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M UTC")
