"""Engine benchmark: batch backtest, parameter sweep and incremental API, with baselines.

Prints figures for the quality bars of SPEC §7 and issue 2:

- batch backtest throughput on one core with the full risk gate (z-score, 1-minute bars), with
  the defaults and with every rule of SPEC §4.9 switched on (`ALL_RISK_RULES`), and the former's
  ratio to the straightforward pure-Python implementation of SPEC §4
  (`tests/reference_engine.py`) run on the same bars in the same process;
- a sweep of 1,000 parameter sets (lookback x entry_z x exit_z) over one year of 1-minute bars;
- the per-bar cost of the incremental API called from Python (what the live stream pays).

Usage: python bench/bench_engine.py [--days 365] [--repeat 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from datetime import date

from bench.timing import best_of
from scalper.bars import to_engine_columns
from scalper.config import load_config
from scalper.engine import Engine, backtest_columns, engine_params, sweep_columns
from scalper.simulate import simulate_bars
from tests.reference_engine import RefBar, default_params, run_reference

ALL_RISK_RULES = {
    "stop_atr": 1.5,
    "target_atr": 2.0,
    "atr_period": 14,
    "trail_ticks": 10,
    "starting_capital": 100_000.0,
    "size_tiers": [[0, 1], [90_000, 2], [99_000, 3], [100_500, 4]],
    "max_risk_per_trade": 45.0,
    "reduce_size_at": 14 * 3600,
    "reduce_size_factor": 0.5,
    "slippage_model": "adaptive",
    "low_volume": 140,
    "high_vol_atr": 1.5,
    "stop_loss_ticks": 0,
    "take_profit_ticks": 0,
    "kill_switch_loss": 0.0,
    "min_account_balance": 0.0,
}
"""SPEC §4.9 all on: ATR stop and target, trailing stop, size tiers, late reduction, risk cap and
adaptive slippage (engine parameters, over the defaults). The account is large and its halts are
off so that the run trades all year (1 to 3 contracts), as the defaults' run does; the daily
limits of the gate stay on."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365, help="calendar days of 1-minute bars")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    bars = simulate_bars(date(2024, 1, 1), args.days, seed=11)
    cols = to_engine_columns(bars)
    n = len(bars)
    cfg = load_config(None)
    params = engine_params(cfg)
    print(f"bars: {n:,} simulated MES 1-minute bars ({args.days} days); default config, full gate")

    # 1. Batch backtest, one core.
    result = backtest_columns(cols, params)
    t_batch = best_of(args.repeat, lambda: backtest_columns(cols, params))
    print(
        f"batch backtest:     {t_batch * 1e3:8.2f} ms  {n / t_batch / 1e6:8.1f} M bars/s"
        f"  ({result['metrics']['trades']} trades)"
    )
    risky = {**params, **ALL_RISK_RULES}
    risky_result = backtest_columns(cols, risky)
    t_risky = best_of(args.repeat, lambda: backtest_columns(cols, risky))
    print(
        f"  §4.9 all rules on: {t_risky * 1e3:7.2f} ms  {n / t_risky / 1e6:8.1f} M bars/s"
        f"  ({risky_result['metrics']['trades']} trades)"
    )

    # 2. The pure-Python baseline of SPEC §4 on the same bars.
    ref_bars = [
        RefBar(int(t), float(o), float(h), float(lo), float(c), int(v))
        for t, o, h, lo, c, v in zip(
            cols["ts"], cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"],
            strict=True,
        )
    ]  # fmt: skip
    ref_params = default_params()
    started = time.perf_counter()
    ref_trades = run_reference(ref_bars, ref_params)
    t_ref = time.perf_counter() - started
    assert len(ref_trades) == result["metrics"]["trades"], "baseline and engine disagree"
    print(
        f"pure Python (§4):   {t_ref * 1e3:8.2f} ms  {n / t_ref / 1e6:8.3f} M bars/s"
        f"  -> engine is {t_ref / t_batch:,.0f}x faster"
    )

    # 3. Sweep: 10 lookbacks x 10 entry_z x 10 exit_z = 1,000 sets.
    grid = [
        {**params, "lookback": lb, "entry_z": ez, "exit_z": xz}
        for lb, ez, xz in itertools.product(
            range(10, 60, 5),
            [1.0 + 0.2 * i for i in range(10)],
            [0.05 * i for i in range(10)],
        )
    ]
    sweep_times = []
    for threads in sorted({1, args.threads}):
        t = best_of(max(1, args.repeat // 3), lambda th=threads: sweep_columns(cols, grid, th))
        sweep_times.append((threads, t))
        bar_steps = n * len(grid)
        print(
            f"sweep {len(grid):,} sets, {threads} thread(s): {t:6.2f} s"
            f"  {bar_steps / t / 1e6:8.1f} M bar-steps/s"
        )
    if len(sweep_times) == 2:
        speed_up = sweep_times[0][1] / sweep_times[1][1]
        print(f"sweep speed-up on {args.threads} threads: {speed_up:.2f}x")

    # 4. Incremental API through Python, per bar (what the stream pays per bar).
    rows = list(
        zip(
            cols["ts"].tolist(), cols["open"].tolist(), cols["high"].tolist(),
            cols["low"].tolist(), cols["close"].tolist(), cols["volume"].tolist(),
            strict=True,
        )
    )  # fmt: skip

    def incremental() -> None:
        engine = Engine(params)
        on_bar = engine.on_bar
        for row in rows:
            on_bar(*row)

    def python_call_baseline() -> None:
        def on_bar(*_row: object) -> None:
            return None

        for row in rows:
            on_bar(*row)

    t_inc = best_of(3, incremental)
    t_call = best_of(3, python_call_baseline)
    print(
        f"incremental on_bar: {t_inc / n * 1e9:8.0f} ns/bar"
        f"  (an empty Python function call with the same arguments: {t_call / n * 1e9:.0f} ns)"
    )
    print(f"(best of repeated runs; Python {sys.version.split()[0]}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
