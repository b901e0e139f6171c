"""Research benchmark: the sweep and the walk-forward over one year of 1-minute bars.

Prints the figures of issue 4's speed bars (SPEC §7):

- a sweep of 1,000 parameter sets (lookback x entry_z x exit_z x stop) through `run_sweep`, the
  library call the `param_sweep` asset makes (bound: 10 s on the 2-core machine);
- a full walk-forward with the default grid and folds through `walk_forward` (bound: 60 s);
- the report of that run (plots and HTML), and the process's peak resident memory.

Usage: python bench/bench_research.py [--days 365] [--repeat 3] [--threads 0]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from datetime import date
from typing import TypeVar

from scalper.backtest import run_backtest
from scalper.config import config_from_dict
from scalper.report import render_report
from scalper.research import ResearchRun, go_live_gate, grid_params, run_sweep, walk_forward
from scalper.simulate import simulate_bars

T = TypeVar("T")

SWEEP_1000 = {
    "lookback": [10, 15, 20, 25, 30, 40, 50, 60, 80, 100],
    "entry_z": [1.5, 2.0, 2.5, 3.0, 3.5],
    "exit_z": [-0.5, 0.0, 0.5, 1.0],
    "stop_loss_ticks": [0, 4, 8, 12, 16],
    "take_profit_ticks": [0],
}


def best_of(repeat: int, fn: Callable[[], T]) -> tuple[float, T]:
    """Best wall time of `repeat` runs (the least disturbed by the rest of the machine)."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    assert result is not None
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365, help="calendar days of 1-minute bars")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="sweep threads (0 = all cores)")
    args = parser.parse_args()

    bars = simulate_bars(date(2024, 1, 1), args.days, seed=11)
    print(f"bars: {bars.height:,} simulated MES 1-minute bars ({args.days} days)")

    sweep_cfg = config_from_dict({"research": {**SWEEP_1000, "threads": args.threads}}, env={})
    sets = len(grid_params(sweep_cfg))
    t_sweep, sweep = best_of(args.repeat, lambda: run_sweep(bars, sweep_cfg, progress=False))
    rate = sets * bars.height / t_sweep / 1e6
    print(
        f"sweep:        {t_sweep:7.2f} s  {sets:,} sets, {rate:.0f} M set-bars/s "
        f"(bound 10 s; {sweep['trades'].sum():,} trades in all)"
    )

    cfg = config_from_dict({"research": {"threads": args.threads}}, env={})
    grid = len(grid_params(cfg))
    t_wf, wf = best_of(args.repeat, lambda: walk_forward(bars, cfg, progress=False))
    r = cfg.research
    print(
        f"walk-forward: {t_wf:7.2f} s  {r.folds} {r.fold_mode} folds x {grid} sets, default grid "
        f"(bound 60 s); {go_live_gate(wf, cfg).summary()}"
    )

    run = ResearchRun("MES", backtest=run_backtest(bars, cfg), sweep=sweep, walk_forward=wf)
    t_report, html = best_of(1, lambda: render_report(run, cfg, run_id="bench"))
    print(f"report:       {t_report:7.2f} s  {len(html.encode()) / 1e6:.1f} MB of HTML")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory:  {peak_mb:7.0f} MB resident (whole process, bars and report included)")


if __name__ == "__main__":
    main()
