"""Research: parameter sweep, walk-forward validation, the go-live gate and the results history.

What the trader reads every morning is only worth something if the numbers are honest, so the
design choices here are all about not fooling ourselves:

**Folds by session date.** Sessions (CME Globex days, SPEC §2) are the unit: a fold never splits
one. Each fold has an in-sample range (where the grid is optimized) followed by an out-of-sample
range (where the winner is evaluated); the out-of-sample ranges are consecutive, never overlap and
tile the end of the data, so their results stitch into one out-of-sample equity curve. `rolling`
folds keep the in-sample length fixed; `anchored` ones start every in-sample range at the first
session.

**Warm-up.** The z-score needs `lookback` closes before it exists. Two options: prepend the last
`lookback` in-sample bars to the out-of-sample slice, with trading suppressed on them, or let the
out-of-sample slice warm itself up. We do the latter: every out-of-sample (and in-sample) run
starts with a fresh engine on exactly its own sessions' bars. The warm-up bars are therefore the
first `lookback` bars of the range itself; they feed the indicator only, and no trade can be
taken in them because the strategy has no signal until `lookback` closes are seen (SPEC §4). On
Globex data it costs nothing: a session opens at 18:00 New York and entries start at 09:30, so the
overnight bars (930 one-minute bars) warm the indicator before the first allowed entry for any
`lookback` up to that; on regular-hours-only data a fold gives up its first `lookback` bars. In
exchange "out-of-sample never sees in-sample bars" is literally true: each fold's out-of-sample
result depends only on its own bars and the chosen parameters. (Prepending warm-up bars would
need the engine to accept a "no decision before" time, which it does not.)

**Selection and ties.** A parameter set is eligible in-sample when it made at least `min_trades`
trades and its objective is a finite number (an undefined Sharpe, or the infinite profit factor of
a set that never lost, cannot be ranked honestly). The winner has the highest objective; ties go to
the set with more trades (more evidence), then to the first in grid order, so a run is
reproducible.

**Gate.** The walk-forward's recommendation is the last fold's winner: it was chosen on the most
recent in-sample window and its out-of-sample result is the latest evidence. It goes live only if
the stitched out-of-sample results pass every threshold of the `research` section: every fold found
an eligible set, every fold traded enough out-of-sample, Sharpe and profit factor are high enough,
the drawdown small enough, and the objective did not degrade too much from in-sample to
out-of-sample. Every check is reported, passed or not, so the verdict always says why.

**The configuration's own rules.** A set is only worth researching if the trading day can load
it: the grid leaves out every combination the configuration would refuse in its mode, by the
loader's own rules (`config.refusals`: in live mode no stop, a stop beyond the daily loss limit,
...), and reports which and why; the gate checks its recommendation against them once more.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from scalper.backtest import BacktestResult, result_from_engine, run_backtest
from scalper.bars import to_engine_columns
from scalper.calendar import with_session_columns
from scalper.config import (
    GRID_AXES,
    PROVENANCE_KEY,
    Config,
    DataSource,
    StrategyConfig,
    load_config_with_overrides,
    refusals,
)
from scalper.continuous import read_continuous_bars
from scalper.engine import backtest_columns, engine_params, sweep_columns
from scalper.errors import DataError, ScalperError
from scalper.files import atomic_write
from scalper.instruments import canonical_symbol
from scalper.live.settings import symbol_config
from scalper.paths import subdir, subdir_path
from scalper.progress import Progress
from scalper.store import raw_source

METRICS = (
    "trades", "net_pnl", "win_rate", "profit_factor", "max_drawdown", "max_drawdown_pct",
    "sharpe", "sortino", "calmar", "expectancy", "avg_trade", "avg_win", "avg_loss", "exposure",
    "sessions", "return_pct",
)  # fmt: skip
"""The engine's metrics (SPEC §4), in the order of the sweep table's columns."""

_COUNTS = ("trades", "sessions")
_TRADING_DAYS = 252
_STRATEGY_AXES = frozenset(f.name for f in fields(StrategyConfig)) & frozenset(GRID_AXES)

# ---------------------------------------------------------------------------------------------
# The grid and the sweep


@dataclass(frozen=True)
class Excluded:
    """A grid set the configuration refuses, and why (`config.refusals`, one line per rule)."""

    point: dict[str, Any]
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Grid:
    """The sweep's parameter sets: `points` holds each set's grid values, `params` the full engine
    parameters; `excluded` the combinations the configuration's rules refuse, with the reasons."""

    points: tuple[dict[str, Any], ...]
    params: tuple[dict[str, Any], ...]
    excluded: tuple[Excluded, ...]

    def __len__(self) -> int:
        return len(self.points)


def grid_params(cfg: Config) -> Grid:
    """The cartesian product of the `research` grid axes, in axis order, as engine parameters.

    A combination is excluded when the configuration with it would be refused where it is
    loaded: by the rules between settings (exit_z >= entry_z would exit at once) and by the
    safety rules of the configuration's mode (live: no stop, a stop beyond the daily loss limit,
    ...), the very rules of `load_config` (`config.refusals`). So research never chooses, and the
    gate never approves, a set that session open would then refuse.
    """
    if cfg.strategy.kind != "zscore":
        raise ScalperError(
            f"research sweeps the z-score strategy's parameters; strategy.kind is "
            f"{cfg.strategy.kind!r}"
        )
    axes = [getattr(cfg.research, axis) for axis in GRID_AXES]
    points = [dict(zip(GRID_AXES, values, strict=True)) for values in itertools.product(*axes)]
    judged = [(point, refusals(with_point(cfg, point), cfg)) for point in points]
    valid = [point for point, reasons in judged if not reasons]
    excluded = tuple(Excluded(point, reasons) for point, reasons in judged if reasons)
    if not valid:
        raise ScalperError(
            f"research grid: all {len(points)} combinations are refused by {cfg.source}'s "
            f"{cfg.broker.mode}-mode rules: " + "; ".join(exclusion_lines(excluded)[:3])
        )
    return Grid(
        points=tuple(valid),
        params=tuple(engine_params(cfg, point) for point in valid),
        excluded=excluded,
    )


def exclusion_groups(
    excluded: Sequence[Excluded],
) -> list[tuple[tuple[str, ...], list[dict[str, Any]]]]:
    """The excluded sets grouped by their reasons, the largest group first."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for item in excluded:
        groups.setdefault(item.reasons, []).append(item.point)
    return sorted(groups.items(), key=lambda group: -len(group[1]))


def exclusion_lines(excluded: Sequence[Excluded]) -> list[str]:
    """One line per group of excluded sets (`N sets: reasons`): what the CLI prints and the
    Dagster metadata shows (the report lists the sets too)."""
    return [
        f"{len(points)} set{'s' if len(points) > 1 else ''}: {'; '.join(reasons)}"
        for reasons, points in exclusion_groups(excluded)
    ]


def with_point(cfg: Config, point: Mapping[str, Any]) -> Config:
    """`cfg` with a grid point's settings, unchecked (`refusals` judges the result)."""
    overrides = config_overrides(point)
    return replace(
        cfg,
        strategy=replace(cfg.strategy, **overrides["strategy"]),
        risk=replace(cfg.risk, **overrides["risk"]),
    )


def config_overrides(point: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A grid point as configuration sections (`strategy` and `risk` settings)."""
    return {
        "strategy": {k: v for k, v in point.items() if k in _STRATEGY_AXES},
        "risk": {k: v for k, v in point.items() if k not in _STRATEGY_AXES},
    }


def run_sweep(bars: pl.DataFrame, cfg: Config, *, progress: bool | None = None) -> pl.DataFrame:
    """Every grid set over `bars`: one row per set (`set`, the grid values, every metric)."""
    grid = grid_params(cfg)
    return sweep_grid(to_engine_columns(bars), grid, cfg.research.threads, progress=progress)


def sweep_grid(
    columns: Mapping[str, np.ndarray],
    grid: Grid,
    threads: int = 0,
    *,
    progress: bool | None = None,
) -> pl.DataFrame:
    """The engine's parallel sweep of `grid` over bar columns, as a table.

    The sets go to the engine in batches of one lookback each: a batch shares one indicator series
    (as the engine would within a single call), and the batches give the progress bar its steps.
    """
    lookbacks = [point["lookback"] for point in grid.points]
    batches = [
        [i for i, lb in enumerate(lookbacks) if lb == lookback]
        for lookback in dict.fromkeys(lookbacks)
    ]
    metrics: dict[str, np.ndarray] = {name: np.empty(len(grid)) for name in METRICS}
    with Progress(len(grid), "sweep", unit="sets", enabled=progress) as bar:
        for batch in batches:
            result = sweep_columns(columns, [grid.params[i] for i in batch], threads or None)
            for name in METRICS:
                metrics[name][batch] = result[name]
            bar.advance(len(batch))
    table = pl.DataFrame(list(grid.points), schema=_grid_schema())
    return table.with_columns(
        *(pl.Series(name, values) for name, values in metrics.items()),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("set"),
    ).select(
        "set",
        *GRID_AXES,
        *(pl.col(m).cast(pl.Int64) if m in _COUNTS else pl.col(m) for m in METRICS),
    )


def _grid_schema() -> dict[str, pl.DataType]:
    ints = {"lookback", "stop_loss_ticks", "take_profit_ticks", "trail_ticks"}
    return {axis: pl.Int64() if axis in ints else pl.Float64() for axis in GRID_AXES}


def eligible_sets(sweep: pl.DataFrame, cfg: Config) -> pl.DataFrame:
    """The sets that may be chosen, best first (see the module notes on selection and ties)."""
    objective = cfg.research.objective
    return sweep.filter(
        (pl.col("trades") >= cfg.research.min_trades) & pl.col(objective).is_finite()
    ).sort([objective, "trades", "set"], descending=[True, True, False])


def best_set(sweep: pl.DataFrame, cfg: Config) -> dict[str, Any] | None:
    """The chosen set's row (grid values and metrics), or None when no set is eligible."""
    ranked = eligible_sets(sweep, cfg)
    return ranked.row(0, named=True) if ranked.height else None


def grid_point(row: Mapping[str, Any]) -> dict[str, Any]:
    """The grid values of a sweep row."""
    return {axis: row[axis] for axis in GRID_AXES}


# ---------------------------------------------------------------------------------------------
# Sessions and folds


@dataclass(frozen=True)
class SessionRange:
    """Consecutive sessions present in the data, `first` … `last` inclusive."""

    first: date
    last: date
    sessions: int

    def __str__(self) -> str:
        return f"{self.first} .. {self.last} ({self.sessions} sessions)"


@dataclass(frozen=True)
class Fold:
    """One walk-forward step: optimize on `in_sample`, then trade the winner on `out_of_sample`."""

    index: int  # 1-based
    in_sample: SessionRange
    out_of_sample: SessionRange


def session_dates(bars: pl.DataFrame, cfg: Config) -> pl.Series:
    """The session date (SPEC §2, with the configured timezone and session end) of every bar."""
    with_sessions = with_session_columns(
        bars.select("ts"), tz=cfg.session.timezone, session_end=cfg.session.session_end
    )
    return with_sessions.get_column("session_date")


def last_sessions(bars: pl.DataFrame, sessions: int, cfg: Config) -> pl.DataFrame:
    """The bars of the last `sessions` sessions in `bars` (all of them when there are fewer)."""
    dates = session_dates(bars, cfg)
    kept = dates.unique().sort().tail(sessions)
    return bars.filter(dates >= kept.min()) if kept.len() else bars


def fold_ranges(
    sessions: Sequence[date], folds: int, in_sample_fraction: float, mode: str
) -> list[Fold]:
    """Walk-forward folds over the sorted, distinct `sessions`.

    Out-of-sample ranges have equal length `oos` and tile the last `folds * oos` sessions; a fold's
    in-sample range is the `is_` sessions before its out-of-sample range (`rolling`) or every
    session before it (`anchored`), where `is_ / (is_ + oos)` is about `in_sample_fraction`.
    Leading sessions that do not fit a whole fold are used by anchored folds only.
    """
    n = len(sessions)
    if n < min_sessions(folds, in_sample_fraction):
        raise DataError(
            f"walk-forward needs at least {min_sessions(folds, in_sample_fraction)} sessions for "
            f"{folds} folds with in_sample_fraction {in_sample_fraction:g}; the data has {n}"
        )
    ratio = in_sample_fraction / (1 - in_sample_fraction)
    oos = math.floor(n / (folds + ratio))
    in_len = min(max(1, round(oos * ratio)), n - folds * oos)
    start = n - (in_len + folds * oos)
    result = []
    for i in range(folds):
        oos_start = start + in_len + i * oos
        in_start = 0 if mode == "anchored" else oos_start - in_len
        result.append(
            Fold(
                index=i + 1,
                in_sample=_range(sessions, in_start, oos_start),
                out_of_sample=_range(sessions, oos_start, oos_start + oos),
            )
        )
    return result


def min_sessions(folds: int, in_sample_fraction: float) -> int:
    """The fewest sessions `fold_ranges` can split into `folds` folds (one out-of-sample
    session each, with the in-sample share `in_sample_fraction`)."""
    return math.ceil(folds + in_sample_fraction / (1 - in_sample_fraction))


def _range(sessions: Sequence[date], start: int, stop: int) -> SessionRange:
    return SessionRange(first=sessions[start], last=sessions[stop - 1], sessions=stop - start)


def folds(bars: pl.DataFrame, cfg: Config) -> list[Fold]:
    """The walk-forward folds of `bars` by the `research` settings."""
    r = cfg.research
    sessions = session_dates(bars, cfg).unique().sort().to_list()
    return fold_ranges(sessions, r.folds, r.in_sample_fraction, r.fold_mode)


def bars_in(bars: pl.DataFrame, dates: pl.Series, sessions: SessionRange) -> pl.DataFrame:
    """The bars whose session date (`dates`, one per bar) lies in `sessions`."""
    return bars.filter(dates.is_between(sessions.first, sessions.last))


# ---------------------------------------------------------------------------------------------
# Walk-forward


@dataclass(frozen=True)
class FoldResult:
    """A fold's outcome: the winner (None when no set was eligible) and its metrics both sides."""

    fold: Fold
    eligible: int
    winner: dict[str, Any] | None
    in_sample: dict[str, Any] | None
    out_of_sample: dict[str, Any] | None
    out_of_sample_bars: int


@dataclass(frozen=True)
class WalkForwardResult:
    """Every fold, the stitched out-of-sample run, and how much the objective degraded."""

    folds: tuple[FoldResult, ...]
    objective: str
    out_of_sample: BacktestResult
    in_sample_score: float
    out_of_sample_score: float
    degradation: float
    grid_size: int
    excluded: tuple[Excluded, ...]

    @property
    def recommended(self) -> dict[str, Any] | None:
        """The last fold's winner: optimized on the latest in-sample window (module notes)."""
        return self.folds[-1].winner if self.folds else None

    @property
    def span(self) -> tuple[date, date]:
        """The first in-sample session and the last out-of-sample one."""
        return self.folds[0].fold.in_sample.first, self.folds[-1].fold.out_of_sample.last

    def summary(self) -> str:
        """One line: folds, out-of-sample headline metrics, degradation, recommendation."""
        excluded = f"; {len(self.excluded)} grid sets excluded" if self.excluded else ""
        return (
            f"{len(self.folds)} folds, out-of-sample: {headline(self.out_of_sample.metrics)}; "
            f"{self.objective} degradation {_pct(self.degradation)}; "
            f"recommended {format_point(self.recommended)}{excluded}"
        )


def folds_table(wf: WalkForwardResult) -> pl.DataFrame:
    """One row per fold: its session ranges, eligible sets, winner, the objective on both sides
    and the out-of-sample trades and P&L (the report's table and the asset's metadata)."""
    rows = []
    for f in wf.folds:
        is_m, oos_m = f.in_sample or {}, f.out_of_sample or {}
        rows.append(
            {
                "fold": f.fold.index,
                "in-sample": f"{f.fold.in_sample.first} .. {f.fold.in_sample.last}",
                "out-of-sample": f"{f.fold.out_of_sample.first} .. {f.fold.out_of_sample.last}",
                "eligible sets": f.eligible,
                "winner": format_point(f.winner),
                f"IS {wf.objective}": is_m.get(wf.objective, math.nan),
                f"OOS {wf.objective}": oos_m.get(wf.objective, math.nan),
                "OOS trades": oos_m.get("trades", 0),
                "OOS net P&L": oos_m.get("net_pnl", math.nan),
            }
        )
    return pl.DataFrame(rows)


def walk_forward(
    bars: pl.DataFrame, cfg: Config, *, progress: bool | None = None
) -> WalkForwardResult:
    """Optimize on each fold's in-sample sessions, trade the winner on its out-of-sample ones."""
    grid = grid_params(cfg)
    dates = session_dates(bars, cfg)
    fold_list = folds(bars, cfg)
    results: list[FoldResult] = []
    runs: list[BacktestResult] = []
    with Progress(len(fold_list) * len(grid), "walk-forward", unit="sets", enabled=progress) as bar:
        for fold in fold_list:
            in_sample = to_engine_columns(bars_in(bars, dates, fold.in_sample))
            sweep = sweep_grid(in_sample, grid, cfg.research.threads, progress=False)
            bar.advance(len(grid))
            result, run = _evaluate(fold, sweep, bars_in(bars, dates, fold.out_of_sample), cfg)
            results.append(result)
            if run is not None:
                runs.append(run)
    return _walk_forward_result(results, runs, cfg, grid)


def _evaluate(
    fold: Fold, sweep: pl.DataFrame, oos_bars: pl.DataFrame, cfg: Config
) -> tuple[FoldResult, BacktestResult | None]:
    """The fold's in-sample winner traded on its out-of-sample bars (a fresh engine, see notes)."""
    eligible = eligible_sets(sweep, cfg)
    if eligible.height == 0:
        return FoldResult(fold, 0, None, None, None, oos_bars.height), None
    best = eligible.row(0, named=True)
    winner = grid_point(best)
    columns = to_engine_columns(oos_bars)
    run = result_from_engine(backtest_columns(columns, engine_params(cfg, winner)), columns["ts"])
    in_sample = {name: best[name] for name in METRICS}
    result = FoldResult(fold, eligible.height, winner, in_sample, run.metrics, oos_bars.height)
    return result, run


def _walk_forward_result(
    results: list[FoldResult], runs: list[BacktestResult], cfg: Config, grid: Grid
) -> WalkForwardResult:
    objective = cfg.research.objective
    chosen = [r for r in results if r.winner is not None]
    in_score = _mean(_comparable(r.in_sample, objective) for r in chosen)
    oos_score = _mean(_comparable(r.out_of_sample, objective) for r in chosen)
    weights = [r.out_of_sample_bars for r in chosen]
    return WalkForwardResult(
        folds=tuple(results),
        objective=objective,
        out_of_sample=stitch(runs, cfg.risk.starting_capital, weights),
        in_sample_score=in_score,
        out_of_sample_score=oos_score,
        degradation=1 - oos_score / in_score if in_score > 0 else math.nan,
        grid_size=len(grid),
        excluded=grid.excluded,
    )


def _comparable(metrics: Mapping[str, Any] | None, objective: str) -> float:
    """The objective on a scale comparable between ranges of different length: net P&L per
    session; the ratios (Sharpe, Sortino, Calmar are annualized) as they are."""
    assert metrics is not None
    value = float(metrics[objective])
    return value / max(metrics["sessions"], 1) if objective == "net_pnl" else value


def _mean(values: Any) -> float:
    items = list(values)
    return math.fsum(items) / len(items) if items else math.nan


def stitch(runs: Sequence[BacktestResult], capital: float, bars: Sequence[int]) -> BacktestResult:
    """Consecutive runs as one: trades and sessions appended, equity carried across the joins.

    Each run started at `capital`; the stitched equity continues from where the previous run
    ended. `bars` (bars per run) weights the exposure.
    """
    offset = 0.0
    equities = []
    for run in runs:
        equities.append(run.equity.with_columns(pl.col("equity") + offset))
        offset += run.metrics["net_pnl"]
    empty = result_from_engine(_NO_TRADES, np.empty(0, np.int64))
    trades = pl.concat([empty.trades, *(r.trades for r in runs)])
    sessions = pl.concat([empty.sessions, *(r.sessions for r in runs)])
    exposure = sum(r.metrics["exposure"] * n for r, n in zip(runs, bars, strict=True))
    metrics = metrics_from(
        trades.get_column("pnl").to_numpy(),
        sessions.get_column("pnl").to_numpy(),
        capital,
        exposure / sum(bars) if sum(bars) else math.nan,
    )
    equity = pl.concat([empty.equity, *equities])
    refusals: dict[str, int] = {}
    for run in runs:
        for why, n in run.gate_refusals.items():
            refusals[why] = refusals.get(why, 0) + n
    return BacktestResult(trades, equity, sessions, metrics, refusals)


# An engine result over no bars: `result_from_engine` turns it into empty frames of the right
# schema, which a stitch starts from (so a walk-forward where no fold had a winner still has one).
_NO_TRADES: dict[str, Any] = {
    **{k: np.empty(0, np.int64) for k in ("entry_ts", "exit_ts", "side", "qty", "exit_reason")},
    **{k: np.empty(0) for k in ("entry_price", "exit_price", "pnl", "equity", "session_pnl")},
    "session_day": np.empty(0, np.int32),
    "metrics": {},
}


def metrics_from(
    trade_pnl: np.ndarray, session_pnl: np.ndarray, capital: float, exposure: float
) -> dict[str, Any]:
    """SPEC §4 metrics from trade and session P&L, as the engine computes them (`metrics.rs`).

    Needed for stitched out-of-sample runs, which no single engine run produces; a test holds it
    equal to the engine's metrics on ordinary runs.
    """
    wins, losses = trade_pnl[trade_pnl > 0], trade_pnl[trade_pnl < 0]
    gross_win, gross_loss = float(wins.sum()), float(-losses.sum())
    net = float(trade_pnl.sum())
    equity = capital + np.cumsum(trade_pnl)
    peak = np.maximum.accumulate(np.concatenate(([capital], equity)))[1:]
    drawdown = peak - equity
    returns = session_pnl / capital
    n, days = trade_pnl.size, returns.size
    mean = float(returns.mean()) if days else math.nan
    std = float(returns.std(ddof=1)) if days > 1 else math.nan
    downside = math.sqrt(float((returns[returns < 0] ** 2).sum()) / days) if days else math.nan
    avg_loss = gross_loss / losses.size if losses.size else math.nan
    avg_trade = net / n if n else math.nan
    max_dd_pct = float((drawdown / peak)[peak > 0].max()) if n else 0.0
    return {
        "trades": n,
        "net_pnl": net,
        "win_rate": wins.size / n if n else math.nan,
        "profit_factor": _ratio(gross_win, gross_loss),
        "max_drawdown": float(drawdown.max()) if n else 0.0,
        "max_drawdown_pct": max(max_dd_pct, 0.0),
        "sharpe": _ratio_or_nan(mean, std) * math.sqrt(_TRADING_DAYS),
        "sortino": _ratio_or_nan(mean, downside) * math.sqrt(_TRADING_DAYS),
        "calmar": _ratio_or_nan(mean * _TRADING_DAYS, max_dd_pct),
        "expectancy": _ratio_or_nan(avg_trade, avg_loss),
        "avg_trade": avg_trade,
        "avg_win": float(wins.mean()) if wins.size else math.nan,
        "avg_loss": -avg_loss,
        "exposure": exposure,
        "sessions": days,
        "return_pct": net / capital,
    }


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return math.inf if a > 0 else math.nan


def _ratio_or_nan(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(b) else math.nan


# ---------------------------------------------------------------------------------------------
# The go-live gate


@dataclass(frozen=True)
class GateCheck:
    """One rule of the gate and how the walk-forward fared on it."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateVerdict:
    """Whether the recommended set may trade, with every check (passed or failed) explained."""

    passed: bool
    checks: tuple[GateCheck, ...]
    params: dict[str, Any] | None

    @property
    def reasons(self) -> list[str]:
        """Why the gate refused (empty when it passed)."""
        return [c.detail for c in self.checks if not c.passed]

    def summary(self) -> str:
        """One line: the decision and its reasons."""
        if self.passed:
            return f"gate PASSED for {format_point(self.params)}"
        return "gate FAILED: " + "; ".join(self.reasons)


def go_live_gate(wf: WalkForwardResult, cfg: Config) -> GateVerdict:
    """Judges the walk-forward's recommendation by the `research.gate_*` thresholds."""
    r = cfg.research
    m = wf.out_of_sample.metrics
    checks: tuple[GateCheck, ...] = (
        _every_fold(
            "winners",
            [f for f in wf.folds if f.winner is None],
            f"every fold found a set with at least {r.min_trades} in-sample trades",
            f"no set reached {r.min_trades} in-sample trades",
        ),
        _every_fold(
            "trades_per_fold",
            [
                f
                for f in wf.folds
                if f.out_of_sample is None or f.out_of_sample["trades"] < r.gate_min_trades_per_fold
            ],
            f"every fold made at least {r.gate_min_trades_per_fold} out-of-sample trades",
            f"fewer than {r.gate_min_trades_per_fold} out-of-sample trades",
        ),
        _threshold(
            "sharpe", "out-of-sample Sharpe", m["sharpe"], r.gate_min_sharpe, _fmt, at_least=True
        ),
        _threshold(
            "profit_factor",
            "out-of-sample profit factor",
            m["profit_factor"],
            r.gate_min_profit_factor,
            _fmt,
            at_least=True,
        ),
        _threshold(
            "max_drawdown",
            "out-of-sample max drawdown",
            m["max_drawdown_pct"],
            r.gate_max_drawdown_pct,
            _pct,
            at_least=False,
        ),
        _threshold(
            "degradation",
            f"{wf.objective} degradation from in-sample to out-of-sample",
            wf.degradation,
            r.gate_max_degradation,
            _pct,
            at_least=False,
            undefined=_why_no_degradation(wf),
        ),
    )
    if wf.recommended is not None:
        checks += (_safety_check(wf.recommended, cfg),)
    passed = all(c.passed for c in checks)
    return GateVerdict(passed=passed, checks=checks, params=wf.recommended)


def _safety_check(point: Mapping[str, Any], cfg: Config) -> GateCheck:
    """The recommendation under the rules session open will load it with (`config.refusals`).

    The walk-forward chose among allowed sets only, but the gate may judge it with a newer
    configuration (each Dagster asset loads its own), so the gate checks again.
    """
    rules = f"the {cfg.broker.mode}-mode rules of {cfg.source}"
    reasons = refusals(with_point(cfg, point), cfg)
    if reasons:
        return GateCheck("safety", False, f"refused by {rules}: " + "; ".join(reasons))
    return GateCheck("safety", True, f"the set passes {rules}")


def _every_fold(name: str, failing: list[FoldResult], ok: str, why: str) -> GateCheck:
    if not failing:
        return GateCheck(name, True, ok)
    which = ", ".join(str(f.fold.index) for f in failing)
    return GateCheck(name, False, f"fold{'s' if len(failing) > 1 else ''} {which}: {why}")


def _threshold(
    name: str,
    label: str,
    value: float,
    limit: float,
    show: Callable[[float], str],
    *,
    at_least: bool,
    undefined: str = "no trades, or too few sessions to measure",
) -> GateCheck:
    bound = "minimum" if at_least else "maximum"
    if not math.isfinite(value):
        return GateCheck(name, False, f"{label} is undefined ({undefined}); {bound} {show(limit)}")
    passed = value >= limit if at_least else value <= limit
    sign = (">=" if passed else "<") if at_least else ("<=" if passed else ">")
    return GateCheck(name, passed, f"{label} {show(value)} {sign} {show(limit)} ({bound})")


def _why_no_degradation(wf: WalkForwardResult) -> str:
    if not wf.in_sample_score > 0:
        return f"the in-sample {wf.objective} {_fmt(wf.in_sample_score)} is not positive"
    return f"the out-of-sample {wf.objective} is undefined"


def headline(m: Mapping[str, Any]) -> str:
    """The metrics a trader looks at first, on one line."""
    return (
        f"{m['trades']} trades, net {m['net_pnl']:,.2f}, Sharpe {_fmt(m['sharpe'])}, "
        f"profit factor {_fmt(m['profit_factor'])}, max drawdown {_pct(m['max_drawdown_pct'])}"
    )


def _fmt(x: float) -> str:
    return f"{x:,.2f}" if math.isfinite(x) else ("inf" if x > 0 else "n/a")


def _pct(x: float) -> str:
    return f"{100 * x:,.1f}%" if math.isfinite(x) else "n/a"


def format_point(point: Mapping[str, Any] | None) -> str:
    """A grid point as `lookback=20 entry_z=2.0 ...` (or `none`)."""
    if point is None:
        return "none"
    return " ".join(f"{k}={v:g}" for k, v in point.items())


# ---------------------------------------------------------------------------------------------
# Approved parameters


def approved_params_path() -> Path:
    """Where the nightly run publishes the parameters the trading day loads."""
    return subdir_path("research") / "approved_params.yaml"  # read by session open: not created


def write_approved_params(
    verdict: GateVerdict,
    wf: WalkForwardResult,
    cfg: Config,
    path: str | Path,
    *,
    symbol: str,
    data_source: str | None,
    run_id: str | None = None,
) -> bool:
    """Writes `path` (configuration overrides) only when the gate passed; returns whether it did.

    A refused run leaves an earlier approved file in place: the last set that passed stays the
    one to trade (its header says when and on what it was approved). The file opens with its
    `provenance` (`approval_provenance`), which session open checks before trading it.
    """
    if not verdict.passed or verdict.params is None:
        return False
    header = [
        f"Approved by the go-live gate on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        + (f" (research run {run_id})" if run_id else ""),
        f"Symbol {symbol}, walk-forward {len(wf.folds)} {cfg.research.fold_mode} "
        f"folds over sessions {wf.span[0]} .. {wf.span[1]}, objective {wf.objective}",
        f"Out-of-sample: {headline(wf.out_of_sample.metrics)}",
        "Configuration overrides: these strategy and risk settings replace the trader's.",
    ]
    traded = with_point(cfg, verdict.params)  # as researched: the contract facts it ran with
    provenance = approval_provenance(wf, traded, symbol, data_source, run_id)
    document = {PROVENANCE_KEY: provenance, **config_overrides(verdict.params)}
    body = yaml.safe_dump(document, sort_keys=False)
    text = "".join(f"# {line}\n" for line in header) + body
    with atomic_write(Path(path)) as fh:
        fh.write(text.encode())
    return True


def stored_data_source(symbol: str, wf: WalkForwardResult) -> str:
    """The source that delivered the raw days behind the walk-forward's sessions (recorded by
    the store as each day was stored, `scalper.store.raw_source`), whatever the configuration
    says now; a session opens the evening before its date, so its first UTC day is that one."""
    first, last = wf.span
    return raw_source(symbol, first - timedelta(days=1), last)


TRADABLE_SOURCES: tuple[DataSource, ...] = ("file", "ibkr")
"""Data sources whose approvals may be traded: market data, never the simulator."""


def approval_provenance(
    wf: WalkForwardResult,
    cfg: Config,
    symbol: str,
    data_source: str | None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Where an approval came from: the data (source, symbol, first and last session), the
    trading settings it was validated with (`config_hash` of `cfg`, the configuration with the
    approved set in it), when."""
    first, last = wf.span
    return {
        "data_source": data_source or "unknown",
        "symbol": symbol,
        "first_session": first.isoformat(),
        "last_session": last.isoformat(),
        "config_hash": config_hash(cfg),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": run_id,
    }


TRADING_SECTIONS = ("instrument", "strategy", "risk", "session", "costs")
"""The settings a backtest's decisions and P&L depend on (SPEC §4): what an approval vouches for."""


def config_hash(cfg: Config) -> str:
    """SHA-256 of the trading settings (`TRADING_SECTIONS`) of the validated configuration.

    Only those: the walk-forward validated the parameters under these contract facts, session
    hours, calendar, costs and risk limits, and under no others. The rest (broker, Kafka,
    alerts, operations, research) may differ between the research's configuration file and the
    worker's, and may change, without making the approval say less; secrets are not in it.
    """
    settings = cfg.to_dict()
    text = json.dumps({k: settings[k] for k in TRADING_SECTIONS}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def read_provenance(path: Path, symbols: Sequence[str]) -> dict[str, Any]:
    """The provenance of the approved file at `path` when it may be traded by a worker of
    `symbols`; otherwise `ScalperError` saying why not: no provenance (written by hand, or
    before provenance was recorded), simulated or unknown data, another symbol."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ScalperError(f"{path}: cannot read the approved parameters: {exc}") from None
    provenance = document.get(PROVENANCE_KEY) if isinstance(document, Mapping) else None
    if not isinstance(provenance, Mapping):
        raise ScalperError(
            f"{path}: no provenance (data source, symbol, sessions): not written by the "
            "research run; refused, run the research again"
        )
    source = provenance.get("data_source")
    if source not in TRADABLE_SOURCES:
        what = "simulated data" if source == "simulator" else f"data of source {source!r}"
        raise ScalperError(
            f"{path}: approved on {what}; only parameters approved on market data "
            f"({' or '.join(TRADABLE_SOURCES)}) are traded"
        )
    symbol = str(provenance.get("symbol", ""))
    if symbol.upper() not in {s.upper() for s in symbols}:
        raise ScalperError(
            f"{path}: approved for {symbol or 'no symbol'}, not for {', '.join(symbols)}"
        )
    return dict(provenance)


def load_approved_params(config_path: str | None, path: Path, *symbols: str) -> Config:
    """The configuration at `config_path` with the approved parameters of `path` (for one of
    `symbols`), after their provenance is checked (`read_provenance`): what session open and
    the worker load, so neither can trade parameters approved on simulated data or for another
    symbol, nor under other trading settings than the result's.

    The result's trading settings, as it trades the approved symbol (`symbol_config`: a worker
    of several symbols trades each with its contract facts), must be the ones the research
    validated (`config_hash`): a
    commission, a session time, a calendar, a risk limit changed in the configuration since the
    approval — or a value of the file edited by hand — means the walk-forward's verdict is not
    about what would be traded. Such a file is refused (the current parameters stay) until the
    research runs again with this configuration; the nightly run does that.
    """
    provenance = read_provenance(path, symbols)
    cfg = load_config_with_overrides(config_path, path)
    traded = symbol_config(cfg, canonical_symbol(str(provenance["symbol"])))
    if provenance.get("config_hash") != config_hash(traded):
        settings = ", ".join(TRADING_SECTIONS)
        raise ScalperError(
            f"{path}: approved with other trading settings ({settings}) than "
            f"{config_path or 'the built-in defaults'} has with them: changed since the research "
            "run, or the file was edited; refused, run the research with this configuration"
        )
    return cfg


# ---------------------------------------------------------------------------------------------
# The results history


HISTORY_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "created_at": pl.Datetime("us", "UTC"),
    "origin": pl.String(),
    "symbol": pl.String(),
    "first_session": pl.Date(),
    "last_session": pl.Date(),
    "objective": pl.String(),
    "fold_mode": pl.String(),
    "folds": pl.Int64(),
    "oos_trades": pl.Int64(),
    "oos_net_pnl": pl.Float64(),
    "oos_sharpe": pl.Float64(),
    "oos_profit_factor": pl.Float64(),
    "oos_max_drawdown_pct": pl.Float64(),
    "in_sample_score": pl.Float64(),
    "out_of_sample_score": pl.Float64(),
    "degradation": pl.Float64(),
    "gate_passed": pl.Boolean(),
    "gate_reasons": pl.String(),
    "params": pl.String(),
    "report": pl.String(),
}
"""One row per research run: what the index page lists and the trend of out-of-sample quality."""


def history_path() -> Path:
    return subdir("research") / "history.parquet"


def history_row(
    run_id: str, run: ResearchRun, cfg: Config, *, report: str | Path, origin: str
) -> dict[str, Any]:
    """The history record of one run (walk-forward columns empty when the run had none)."""
    row: dict[str, Any] = dict.fromkeys(HISTORY_SCHEMA)
    row.update(
        run_id=run_id,
        created_at=datetime.now(UTC),
        origin=origin,
        symbol=run.symbol,
        objective=cfg.research.objective,
        fold_mode=cfg.research.fold_mode,
        report=str(report),
    )
    wf, verdict = run.walk_forward, run.verdict
    if wf is not None:
        m = wf.out_of_sample.metrics
        row.update(
            first_session=wf.span[0],
            last_session=wf.span[1],
            folds=len(wf.folds),
            oos_trades=m["trades"],
            oos_net_pnl=m["net_pnl"],
            oos_sharpe=m["sharpe"],
            oos_profit_factor=m["profit_factor"],
            oos_max_drawdown_pct=m["max_drawdown_pct"],
            in_sample_score=wf.in_sample_score,
            out_of_sample_score=wf.out_of_sample_score,
            degradation=wf.degradation,
        )
    if verdict is not None:
        row.update(
            gate_passed=verdict.passed,
            gate_reasons="; ".join(verdict.reasons),
            params=json.dumps(verdict.params),
        )
    return row


def read_history(path: str | Path | None = None) -> pl.DataFrame:
    """Every recorded run, oldest first (an empty table when there is none yet)."""
    path = Path(path) if path is not None else history_path()
    if not path.is_file():
        return pl.DataFrame(schema=HISTORY_SCHEMA)
    return pl.read_parquet(path)


def append_history(row: Mapping[str, Any], path: str | Path | None = None) -> pl.DataFrame:
    """Adds one run to the history (rewritten atomically: a crash never loses earlier runs)."""
    path = Path(path) if path is not None else history_path()
    history = pl.concat([read_history(path), pl.DataFrame([row], schema=HISTORY_SCHEMA)])
    with atomic_write(path) as fh:
        history.write_parquet(fh)
    return history


# ---------------------------------------------------------------------------------------------
# Reading bars and running the whole research


DayReader = Callable[[date, date], pl.DataFrame]
"""Validated bars of the UTC days `first` … `last` from some store."""


def continuous_reader(symbol: str, cfg: Config) -> DayReader:
    """What research reads, from the Dagster assets and the CLI alike: the stored continuous
    series of `symbol`, back-adjusted over the window read (`read_continuous_bars`), so a window
    spanning a roll has no jump at it."""
    roll_days = cfg.instrument.roll_days_before_expiry

    def read(first: date, last: date) -> pl.DataFrame:
        return read_continuous_bars(symbol, first, last, "back", roll_days=roll_days)

    return read


def read_sessions(read: DayReader, first: date, last: date, cfg: Config) -> pl.DataFrame:
    """The bars of the sessions `first` … `last`, whole sessions only.

    Stores are partitioned by UTC day and a session starts the evening before its date (18:00
    New York is 22:00 or 23:00 UTC of the previous day), so the UTC day before `first` is read
    too and the bars are then cut by session date.
    """
    bars = read(first - timedelta(days=1), last)
    if bars.height:
        bars = bars.filter(session_dates(bars, cfg).is_between(first, last))
    if bars.height == 0:
        raise DataError(f"no validated bars for the sessions {first} .. {last}")
    return bars


def read_recent_sessions(
    read: DayReader, stored_days: Sequence[date], sessions: int, cfg: Config
) -> pl.DataFrame:
    """The last `sessions` whole sessions of the store, whose UTC days are `stored_days`
    (ascending, as `store.partitions` lists them).

    The window is counted in stored days, not calendar days, so history with holes (a vendor's
    scattered days, years apart) gives as many sessions as one without: a session spans at most
    two UTC days, its date being the later one. The session opening on the evening of the newest
    day has only begun, so it is left out.
    """
    first = stored_days[max(0, len(stored_days) - 2 * sessions - 1)]
    bars = read_sessions(read, first, stored_days[-1], cfg)
    return last_sessions(bars, sessions, cfg)


@dataclass(frozen=True)
class ResearchRun:
    """Everything one research run produced; a report shows whichever parts are present."""

    symbol: str
    backtest: BacktestResult | None = None
    backtest_label: str = "current configuration"
    sweep: pl.DataFrame | None = None
    walk_forward: WalkForwardResult | None = None
    verdict: GateVerdict | None = None
    data_source: str | None = None  # where the bars came from (`stored_data_source`; None: unknown)
    excluded: tuple[Excluded, ...] = ()  # grid sets the configuration's rules refused


def run_research(
    bars: pl.DataFrame, cfg: Config, symbol: str, *, progress: bool | None = None
) -> ResearchRun:
    """The nightly research on `bars` of `symbol`: backtest and sweep of the recent window,
    walk-forward of the longer one, and the gate (the Dagster assets run the same steps one
    asset each)."""
    r = cfg.research
    recent = last_sessions(bars, r.backtest_sessions, cfg)
    wf = walk_forward(last_sessions(bars, r.walk_forward_sessions, cfg), cfg, progress=progress)
    return ResearchRun(
        symbol=symbol,
        backtest=run_backtest(recent, cfg),
        sweep=run_sweep(recent, cfg, progress=progress),
        walk_forward=wf,
        verdict=go_live_gate(wf, cfg),
        excluded=wf.excluded,
    )
