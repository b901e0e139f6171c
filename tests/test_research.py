"""Research: the grid, the sweep, walk-forward folds, selection, the gate, approved parameters,
the history and the `scalper optimize | walk-forward | report` commands."""

from __future__ import annotations

import itertools
import math
from datetime import date, time, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from scalper import research, store
from scalper.backtest import run_backtest
from scalper.bars import write_bars
from scalper.calendar import with_session_columns
from scalper.config import (
    GRID_AXES,
    Config,
    config_from_dict,
    load_config,
    load_config_with_overrides,
)
from scalper.errors import DataError, ScalperError
from scalper.report import publish
from scalper.research import (
    ResearchRun,
    best_set,
    eligible_sets,
    fold_ranges,
    go_live_gate,
    grid_params,
    load_approved_params,
    metrics_from,
    read_history,
    read_provenance,
    run_sweep,
    session_dates,
    walk_forward,
    with_point,
    write_approved_params,
)
from scalper.simulate import simulate_bars
from tests.shared import assert_one_line_error, run

SMALL_GRID = {
    "lookback": [10, 20],
    "entry_z": [1.5, 2.0],
    "exit_z": [0.0, 0.5],
    "stop_loss_ticks": [0],
    "take_profit_ticks": [0, 8],
}
# Without the account-level brakes, so a losing parameter set keeps trading (and keeps losing)
# instead of being halted by the kill switch before it has made any trades to judge.
NO_BRAKES = {
    "kill_switch_loss": 0,
    "min_account_balance": 0,
    "daily_loss_limit": 0,
    "daily_drawdown_limit": 0,
    "max_consecutive_losses": 0,
}


def small_config(**research_settings: Any) -> Config:
    return config_from_dict({"research": {**SMALL_GRID, **research_settings}}, env={})


@cache
def simulated(days: int = 120, seed: int = 3) -> pl.DataFrame:
    return simulate_bars(date(2024, 1, 2), days, seed=seed)


def with_closes(points: np.ndarray, seed: int) -> pl.DataFrame:
    """Simulated bar times and volumes with the given close path (in index points, on ticks)."""
    base = simulate_bars(date(2024, 1, 2), 120, seed=seed)
    close = np.round(points[: base.height] * 4) / 4
    open_ = np.concatenate(([close[0]], close[:-1]))
    return base.with_columns(
        open=pl.Series(open_),
        high=pl.Series(np.maximum(open_, close) + 0.25),
        low=pl.Series(np.minimum(open_, close) - 0.25),
        close=pl.Series(close),
    )


@cache
def reverting_bars() -> pl.DataFrame:
    """Prices that snap back: an AR(1) deviation around a fixed level. Fading z-score extremes
    is profitable by design."""
    shocks = np.random.default_rng(1).normal(0, 1.5, 200_000)
    deviation = np.zeros_like(shocks)
    for i in range(1, shocks.size):
        deviation[i] = 0.6 * deviation[i - 1] + shocks[i]
    return with_closes(5000 + deviation, seed=1)


@cache
def trending_bars() -> pl.DataFrame:
    """Prices with momentum: returns follow returns. Fading extremes loses by design."""
    shocks = np.random.default_rng(1).normal(0, 0.3, 200_000)
    returns = np.zeros_like(shocks)
    for i in range(1, shocks.size):
        returns[i] = 0.9 * returns[i - 1] + shocks[i]
    return with_closes(5000 + np.cumsum(returns), seed=1)


# --- grid ---------------------------------------------------------------------------------------


def test_default_grid_is_the_full_product() -> None:
    grid = grid_params(load_config(None, env={}))
    assert len(grid) == 5 * 4 * 3 * 3 * 3
    assert grid.excluded == ()
    assert len(grid.params) == len(grid)
    assert grid.params[0]["lookback"] == 10
    assert grid.params[0]["strategy"] == "zscore"


def test_grid_skips_and_counts_exit_at_or_above_entry() -> None:
    cfg = small_config(entry_z=[1.0, 2.0], exit_z=[0.5, 1.0, 1.5], take_profit_ticks=[0])
    grid = grid_params(cfg)
    # Valid (entry, exit) pairs: (1.0, 0.5), (2.0, 0.5), (2.0, 1.0), (2.0, 1.5); two lookbacks.
    assert len(grid) == 4 * 2
    assert len(grid.excluded) == 2 * 2
    assert {r for e in grid.excluded for r in e.reasons} == {
        "strategy.exit_z = 1.0: exit_z must be below entry_z (1.0)",
        "strategy.exit_z = 1.5: exit_z must be below entry_z (1.0)",
    }
    assert all(p["exit_z"] < p["entry_z"] for p in grid.params)


def test_grid_of_only_refused_combinations_is_an_error() -> None:
    with pytest.raises(ScalperError, match="all 2 combinations are refused"):
        grid_params(
            small_config(lookback=[20], entry_z=[1.0], exit_z=[1.0, 2.0], take_profit_ticks=[0])
        )


def test_grid_needs_the_zscore_strategy() -> None:
    cfg = config_from_dict({"strategy": {"kind": "rsi"}}, env={})
    with pytest.raises(ScalperError, match=r"strategy\.kind is 'rsi'"):
        grid_params(cfg)


# --- sweep --------------------------------------------------------------------------------------


def test_sweep_has_one_row_per_set_with_every_metric_equal_to_a_backtest() -> None:
    cfg = small_config()
    bars = simulated(30)
    sweep = run_sweep(bars, cfg)
    assert sweep.height == len(grid_params(cfg))
    assert sweep.columns == ["set", *GRID_AXES, *research.METRICS]
    assert sweep.get_column("set").to_list() == list(range(sweep.height))
    row = sweep.row(5, named=True)
    metrics = run_backtest(bars, with_point(cfg, research.grid_point(row))).metrics
    for name in research.METRICS:
        assert row[name] == pytest.approx(metrics[name], nan_ok=True), name


def test_best_set_is_the_highest_eligible_objective_with_ties_to_more_trades() -> None:
    cfg = small_config(min_trades=5)
    sweep = pl.DataFrame(
        {
            "set": [0, 1, 2, 3, 4],
            "trades": [100, 3, 20, 40, 50],
            "sharpe": [1.0, 9.0, 2.0, 2.0, float("nan")],
        }
    )
    assert best_set(sweep, cfg)["set"] == 3  # set 1 has too few trades, set 4 no Sharpe
    assert eligible_sets(sweep, cfg).get_column("set").to_list() == [3, 2, 0]
    assert best_set(sweep.filter(pl.col("trades") < 5), cfg) is None


# --- folds --------------------------------------------------------------------------------------


def weekdays(n: int) -> list[date]:
    days, day = [], date(2024, 1, 1)
    while len(days) < n:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 400),
    folds=st.integers(1, 12),
    fraction=st.floats(0.05, 0.95),
    mode=st.sampled_from(["rolling", "anchored"]),
)
def test_folds_tile_the_end_and_out_of_sample_follows_in_sample(
    n: int, folds: int, fraction: float, mode: str
) -> None:
    sessions = weekdays(n)
    try:
        result = fold_ranges(sessions, folds, fraction, mode)
    except DataError as exc:
        assert n < folds + fraction / (1 - fraction)
        assert f"the data has {n}" in str(exc)
        return
    assert [f.index for f in result] == list(range(1, folds + 1))
    assert result[-1].out_of_sample.last == sessions[-1]
    oos_lengths = {f.out_of_sample.sessions for f in result}
    assert len(oos_lengths) == 1 and min(oos_lengths) >= 1
    for previous, fold in itertools.pairwise(result):
        # consecutive, never overlapping out-of-sample ranges
        assert (
            sessions.index(fold.out_of_sample.first)
            == sessions.index(previous.out_of_sample.last) + 1
        )
    for fold in result:
        in_sample, oos = fold.in_sample, fold.out_of_sample
        assert in_sample.last < oos.first  # never precedes, never overlaps its in-sample
        assert sessions.index(oos.first) == sessions.index(in_sample.last) + 1
        assert (
            in_sample.sessions
            == sessions.index(in_sample.last) - sessions.index(in_sample.first) + 1
        )
        if mode == "anchored":
            assert in_sample.first == sessions[0]
    if mode == "rolling":
        assert len({f.in_sample.sessions for f in result}) == 1
        first = result[0]
        share = first.in_sample.sessions / (first.in_sample.sessions + first.out_of_sample.sessions)
        assert abs(share - fraction) <= 0.5 / (first.out_of_sample.sessions + 1) + 1e-9 or (
            first.in_sample.sessions == 1
        )


@settings(max_examples=25, deadline=None)
@given(
    folds=st.integers(1, 6),
    fraction=st.floats(0.3, 0.9),
    mode=st.sampled_from(["rolling", "anchored"]),
)
def test_out_of_sample_bars_never_include_in_sample_bars(
    folds: int, fraction: float, mode: str
) -> None:
    cfg = small_config(folds=folds, in_sample_fraction=fraction, fold_mode=mode)
    bars = simulated(60)
    dates = session_dates(bars, cfg)
    for fold in research.folds(bars, cfg):
        in_sample = research.bars_in(bars, dates, fold.in_sample)
        oos = research.bars_in(bars, dates, fold.out_of_sample)
        assert oos.height and in_sample.height
        assert in_sample["ts"].max() < oos["ts"].min()
        assert oos.join(in_sample, on="ts", how="semi").height == 0
        oos_dates = session_dates(oos, cfg)
        assert oos_dates.min() == fold.out_of_sample.first
        assert oos_dates.max() == fold.out_of_sample.last


# --- walk-forward -------------------------------------------------------------------------------


@cache
def simulated_walk_forward() -> tuple[Config, research.WalkForwardResult]:
    cfg = small_config(min_trades=10)
    return cfg, walk_forward(simulated(), cfg)


def test_walk_forward_picks_the_in_sample_best_of_each_fold() -> None:
    cfg, wf = simulated_walk_forward()
    bars = simulated()
    dates = session_dates(bars, cfg)
    assert len(wf.folds) == cfg.research.folds
    for result in wf.folds:
        sweep = run_sweep(research.bars_in(bars, dates, result.fold.in_sample), cfg)
        best = best_set(sweep, cfg)
        assert best is not None and result.winner == research.grid_point(best)
        assert result.in_sample is not None
        assert result.in_sample["sharpe"] == best["sharpe"]
        assert result.in_sample["sharpe"] == eligible_sets(sweep, cfg)["sharpe"].max()
    assert wf.recommended == wf.folds[-1].winner


def test_out_of_sample_runs_trade_only_after_their_warm_up() -> None:
    """Each fold's engine starts fresh on its own bars: the first `lookback` bars only warm the
    indicator, so no entry fills before the bar after them. Regular-hours bars (09:30-16:15 New
    York) make the warm-up bite: there, entries are allowed from a session's very first bar."""
    cfg = small_config(min_trades=10)
    local = with_session_columns(simulated())["local_time"]
    bars = simulated().filter(local.is_between(time(9, 30), time(16, 15), closed="left"))
    wf = walk_forward(bars, cfg)
    dates = session_dates(bars, cfg)
    for result in wf.folds:
        assert result.winner is not None and result.out_of_sample is not None
        oos_ts = research.bars_in(bars, dates, result.fold.out_of_sample)["ts"]
        warm_up_end = oos_ts[result.winner["lookback"] - 1]  # the close completing the window
        in_fold = wf.out_of_sample.trades.filter(
            pl.col("entry_ts").dt.epoch("ns").is_between(oos_ts.min(), oos_ts.max())
        )
        assert in_fold.height == result.out_of_sample["trades"] > 0
        first_entry = in_fold["entry_ts"].dt.epoch("ns").min()
        assert first_entry > warm_up_end
        assert first_entry - oos_ts.min() < 86_400 * 10**9  # yet it trades on its first day


def test_walk_forward_stitches_the_out_of_sample_runs() -> None:
    cfg, wf = simulated_walk_forward()
    oos = wf.out_of_sample
    per_fold = [r.out_of_sample for r in wf.folds if r.out_of_sample is not None]
    assert oos.metrics["trades"] == sum(m["trades"] for m in per_fold) == oos.trades.height
    assert oos.metrics["net_pnl"] == pytest.approx(sum(m["net_pnl"] for m in per_fold))
    assert oos.metrics["sessions"] == sum(m["sessions"] for m in per_fold)
    assert oos.equity["ts"].is_sorted()
    capital = cfg.risk.starting_capital
    assert oos.equity["equity"][-1] == pytest.approx(capital + oos.metrics["net_pnl"], abs=20)
    in_score = np.mean([r.in_sample["sharpe"] for r in wf.folds])
    out_score = np.mean([r.out_of_sample["sharpe"] for r in wf.folds])
    assert wf.degradation == pytest.approx(1 - out_score / in_score)


def test_metrics_from_trades_and_sessions_equal_the_engines() -> None:
    result = run_backtest(simulated(40), load_config(None, env={}))
    m = result.metrics
    mine = metrics_from(
        result.trades["pnl"].to_numpy(),
        result.sessions["pnl"].to_numpy(),
        1000.0,
        m["exposure"],
    )
    assert mine.keys() == m.keys()
    for key, value in m.items():
        assert mine[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key


def test_anchored_folds_grow_their_in_sample() -> None:
    cfg = small_config(fold_mode="anchored", folds=3)
    fold_list = research.folds(simulated(), cfg)
    assert {f.in_sample.first for f in fold_list} == {session_dates(simulated(), cfg).min()}
    lengths = [f.in_sample.sessions for f in fold_list]
    assert lengths == sorted(lengths) and len(set(lengths)) == 3


# --- gate ---------------------------------------------------------------------------------------


def gated(bars: pl.DataFrame) -> tuple[Config, research.WalkForwardResult, research.GateVerdict]:
    cfg = config_from_dict({"research": SMALL_GRID, "risk": NO_BRAKES}, env={})
    wf = walk_forward(bars, cfg)
    return cfg, wf, go_live_gate(wf, cfg)


def test_gate_accepts_a_set_profitable_by_design() -> None:
    _, wf, verdict = gated(reverting_bars())
    assert verdict.passed, verdict.summary()
    assert verdict.reasons == []
    assert verdict.params == wf.recommended
    assert [c.name for c in verdict.checks] == [
        "winners", "trades_per_fold", "sharpe", "profit_factor", "max_drawdown", "degradation",
        "safety",
    ]  # fmt: skip
    assert verdict.summary().startswith("gate PASSED for lookback=")


def test_gate_refuses_a_set_losing_by_design_and_says_why() -> None:
    _, wf, verdict = gated(trending_bars())
    assert not verdict.passed
    failed = {c.name for c in verdict.checks if not c.passed}
    assert {"sharpe", "profit_factor", "max_drawdown", "degradation"} <= failed
    assert wf.out_of_sample.metrics["net_pnl"] < 0
    summary = verdict.summary()
    assert summary.startswith("gate FAILED: ")
    assert "out-of-sample Sharpe" in summary and "(minimum)" in summary
    assert "in-sample sharpe" in summary and "is not positive" in summary


def test_gate_names_the_folds_that_trade_too_little() -> None:
    cfg = small_config(min_trades=10, gate_min_trades_per_fold=10**6)
    _, wf = simulated_walk_forward()
    verdict = go_live_gate(wf, cfg)
    assert not verdict.passed
    assert "folds 1, 2, 3, 4, 5: fewer than 1000000 out-of-sample trades" in verdict.reasons


# --- the grid and the gate apply the configuration's own rules ----------------------------------

# A safe live configuration whose research grid holds sets live mode refuses: no stop, and a stop
# beyond the daily loss limit (48 ticks x $1.25 + 2 x $0.42 = $60.84 > $50). The gate's
# thresholds are lax: what is tested is which sets it may approve, not how good they are.
LIVE_RESEARCH: dict[str, Any] = {
    "broker": {"kind": "ibkr", "mode": "live", "port": 4001, "account": "U1234567"},
    "alerts": {"webhook": "https://hooks.example.com/research"},
    "session": {"calendar": "CME_Equity"},
    "risk": {"stop_loss_ticks": 8},
    "research": {
        **SMALL_GRID,
        "stop_loss_ticks": [0, 8, 48],
        "min_trades": 5,
        "gate_min_sharpe": -1000.0,
        "gate_min_profit_factor": 0.0,
        "gate_max_drawdown_pct": 1.0,
        "gate_min_trades_per_fold": 0,
        "gate_max_degradation": 1000.0,
    },
}
NO_STOP = "risk.stop_loss_ticks = 0: no protective stop"
STOP_BEYOND_LIMIT = "risk.stop_loss_ticks = 48: one stopped-out trade of 1 contract(s) loses 60.84"


@pytest.fixture
def live_config(tmp_path: Path) -> Path:
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(LIVE_RESEARCH))
    return path


def test_live_grid_holds_exactly_the_sets_session_open_accepts(
    live_config: Path, tmp_path: Path
) -> None:
    cfg = load_config(live_config, env={})
    grid = grid_params(cfg)
    assert {p["stop_loss_ticks"] for p in grid.points} == {8}
    lines = research.exclusion_lines(grid.excluded)
    assert len(lines) == 2
    assert lines[0].startswith(f"16 sets: {NO_STOP}")
    assert lines[1].startswith(f"16 sets: {STOP_BEYOND_LIMIT}")
    assert all(line.endswith("refused in live mode") for line in lines)
    # Every combination, as an approved file loaded onto the live file the way session open
    # loads it: those in the grid load, those excluded are refused, for the reasons given.
    overrides = tmp_path / "overrides.yaml"
    for point in grid.points:
        overrides.write_text(yaml.safe_dump(research.config_overrides(point)))
        load_config_with_overrides(live_config, overrides, env={})
    for excluded in grid.excluded:
        overrides.write_text(yaml.safe_dump(research.config_overrides(excluded.point)))
        with pytest.raises(ScalperError) as info:
            load_config_with_overrides(live_config, overrides, env={})
        assert [line.split(": ", 1)[1] for line in str(info.value).splitlines()] == list(
            excluded.reasons
        )


def test_a_paper_grid_keeps_the_trader_s_hazards_but_adds_none() -> None:
    # Paper mode: no stop is legitimate; a stop beyond the daily loss limit is a hazard this
    # configuration does not have, so research must not bring it in.
    cfg = config_from_dict({"research": {**SMALL_GRID, "stop_loss_ticks": [0, 48]}}, env={})
    grid = grid_params(cfg)
    assert {p["stop_loss_ticks"] for p in grid.points} == {0}
    (line,) = research.exclusion_lines(grid.excluded)
    assert line.startswith(f"16 sets: {STOP_BEYOND_LIMIT}")
    assert line.endswith("a hazard the configuration does not have (an error in live mode)")
    # The same hazard chosen by the trader in the file is theirs to keep.
    limitless = config_from_dict(
        {"research": {**SMALL_GRID, "stop_loss_ticks": [48]}, "risk": {"daily_loss_limit": 0}},
        env={},
    )
    assert grid_params(limitless).excluded == ()


def test_gate_with_a_live_config_approves_only_what_session_open_loads(
    live_config: Path, tmp_path: Path
) -> None:
    cfg = load_config(live_config, env={})
    wf = walk_forward(reverting_bars(), cfg)
    assert len(wf.excluded) == 32 and "32 grid sets excluded" in wf.summary()
    assert {f.winner["stop_loss_ticks"] for f in wf.folds if f.winner} == {8}
    verdict = go_live_gate(wf, cfg)
    assert verdict.passed, verdict.summary()
    safety = verdict.checks[-1]
    assert safety.name == "safety" and safety.passed
    assert safety.detail == f"the set passes the live-mode rules of {live_config}"
    approved = tmp_path / "approved_params.yaml"
    assert write_approved_params(verdict, wf, cfg, approved, symbol="MES", data_source="file")
    loaded = load_approved_params(str(live_config), approved, "MES")
    assert loaded.broker.is_live and loaded.risk.stop_loss_ticks == 8


def test_gate_refuses_a_recommendation_its_configuration_refuses(live_config: Path) -> None:
    # A walk-forward run with a paper configuration (no stop), judged for the live one.
    _, wf, paper_verdict = gated(reverting_bars())
    assert paper_verdict.passed and wf.recommended is not None
    verdict = go_live_gate(wf, load_config(live_config, env={}))
    assert not verdict.passed
    (reason,) = verdict.reasons
    assert reason.startswith(f"refused by the live-mode rules of {live_config}: {NO_STOP}")


def test_cli_and_report_list_the_excluded_sets_and_why(live_config: Path, tmp_path: Path) -> None:
    data = tmp_path / "bars.parquet"
    write_bars(simulated(), data)
    proc = run("walk-forward", "--config", str(live_config), "--data", str(data), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    excluded = [line for line in proc.stdout.splitlines() if line.startswith("excluded ")]
    assert [line.split(":")[0] for line in excluded] == ["excluded 16 sets"] * 2
    assert NO_STOP in excluded[0] and STOP_BEYOND_LIMIT in excluded[1]
    report = Path(proc.stdout.strip().splitlines()[-1].removeprefix("report: "))
    page = report.read_text()
    assert 'id="excluded"' in page
    assert NO_STOP in page and "60.84" in page
    assert "lookback=10 entry_z=1.5 exit_z=0 stop_loss_ticks=0 take_profit_ticks=0" in page


# --- approved parameters and history ------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def approve(path: Path, **provenance: Any) -> tuple[Config, research.WalkForwardResult]:
    """A passing gate's approved file at `path` (from the file source, for MES by default)."""
    cfg, wf, verdict = gated(reverting_bars())
    how = {"symbol": "MES", "data_source": "file", **provenance}
    assert write_approved_params(verdict, wf, cfg, path, run_id="r1", **how)
    return cfg, wf


def test_approved_params_written_only_on_pass_and_load_as_config(tmp_path: Path) -> None:
    cfg, wf, verdict = gated(reverting_bars())
    path = tmp_path / "approved_params.yaml"
    assert write_approved_params(
        verdict, wf, cfg, path, symbol="MES", data_source="ibkr", run_id="r1"
    )
    loaded = load_config_with_overrides(None, path, env={})
    assert loaded.warnings == ()
    point = verdict.params
    assert point is not None
    assert loaded.strategy.lookback == point["lookback"]
    assert loaded.strategy.entry_z == point["entry_z"]
    assert loaded.strategy.exit_z == point["exit_z"]
    assert loaded.risk.stop_loss_ticks == point["stop_loss_ticks"]
    assert loaded.risk.take_profit_ticks == point["take_profit_ticks"]
    assert "research run r1" in path.read_text()

    bad_cfg, bad_wf, refused = gated(trending_bars())
    other = tmp_path / "refused.yaml"
    how: dict[str, Any] = {"symbol": "MES", "data_source": "ibkr"}
    assert not write_approved_params(refused, bad_wf, bad_cfg, other, **how)
    assert not other.exists()
    before = path.read_text()
    assert not write_approved_params(refused, bad_wf, bad_cfg, path, **how)
    assert path.read_text() == before  # the last approved set stays in force


def test_approved_params_record_their_provenance(tmp_path: Path) -> None:
    path = tmp_path / "approved_params.yaml"
    cfg, wf = approve(path, data_source="ibkr")
    provenance = read_provenance(path, ["MES"])
    assert provenance["data_source"] == "ibkr" and provenance["symbol"] == "MES"
    assert provenance["first_session"] == wf.span[0].isoformat()
    assert provenance["last_session"] == wf.span[1].isoformat()
    assert provenance["created_at"] and provenance["run_id"] == "r1"
    assert provenance["config_hash"] == research.config_hash(
        research.with_point(cfg, wf.recommended)
    )
    changed = config_from_dict({"strategy": {"lookback": 21}})
    assert research.config_hash(changed) != research.config_hash(cfg)
    one, other = ({"broker": {"account": account}} for account in ("U999", "U111"))
    assert research.config_hash(config_from_dict(one)) == research.config_hash(
        config_from_dict(other)
    )  # the secret's value neither shows nor counts


@pytest.mark.parametrize(
    ("provenance", "symbols", "needle"),
    [
        ({"data_source": "simulator"}, ["MES"], "approved on simulated data"),
        ({"data_source": None}, ["MES"], "approved on data of source 'unknown'"),
        ({"symbol": "ES"}, ["MES", "MNQ"], "approved for ES, not for MES, MNQ"),
    ],
)
def test_approved_params_from_simulation_or_another_symbol_are_refused(
    provenance: dict[str, Any], symbols: list[str], needle: str, tmp_path: Path
) -> None:
    path = tmp_path / "approved_params.yaml"
    approve(path, **provenance)
    with pytest.raises(ScalperError, match=needle):
        read_provenance(path, symbols)
    with pytest.raises(ScalperError, match=needle.split(", MNQ")[0]):  # the worker: per symbol
        load_approved_params(None, path, symbols[0])


def test_approved_params_without_provenance_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "approved_params.yaml"
    path.write_text("strategy: {lookback: 15}\n")  # written by hand, or before provenance
    with pytest.raises(ScalperError, match="no provenance"):
        read_provenance(path, ["MES"])
    approve(path)
    config = tmp_path / "research.yaml"
    config.write_text(yaml.safe_dump({"research": SMALL_GRID, "risk": NO_BRAKES}))
    assert load_approved_params(str(config), path, "mes").strategy.lookback > 0  # any case


def test_approved_params_are_refused_under_other_trading_settings(tmp_path: Path) -> None:
    """The approval vouches for the trading settings the walk-forward ran with (contract, session,
    calendar, costs, risk), the approved set in them; other sections may differ or change."""
    path = tmp_path / "approved_params.yaml"
    approve(path)
    config = tmp_path / "live.yaml"
    same = {"research": SMALL_GRID, "risk": NO_BRAKES}
    elsewhere = {
        "kafka": {"bootstrap": "10.0.0.9:9092"},
        "ops": {"summary_at": "17:05"},
        "research": {"folds": 3},
        "alerts": {"webhook": "http://127.0.0.1:1/hook"},
    }
    config.write_text(yaml.safe_dump({**same, **elsewhere}))
    assert load_approved_params(str(config), path, "MES").strategy.lookback > 0
    other = "approved with other trading settings"
    changes = [{"costs": {"commission_per_side": 0.62}}, {"session": {"flatten_at": "16:20"}},
               {"risk": {**NO_BRAKES, "position_size": 2}}]  # fmt: skip
    for change in changes:
        config.write_text(yaml.safe_dump({**same, **change}))
        with pytest.raises(ScalperError, match=other):
            load_approved_params(str(config), path, "MES")
    config.write_text(yaml.safe_dump(same))
    path.write_text(path.read_text().replace("lookback: 10", "lookback: 12"))  # edited by hand
    with pytest.raises(ScalperError, match=other):
        load_approved_params(str(config), path, "MES")
    with pytest.raises(ScalperError, match=other):  # the defaults' risk limits are other ones
        load_approved_params(None, path, "MES")


def test_approved_params_of_another_symbol_are_checked_with_its_contract_facts(
    tmp_path: Path,
) -> None:
    """A worker of MES and ES trades ES with ES's point value: an approval for ES researched
    with ES's facts loads there; one researched on ES bars with MES's ($5 a point, a tenth of
    ES's: every dollar limit judged ten times too loose) is refused."""
    settings = {"research": SMALL_GRID, "risk": NO_BRAKES}
    es = config_from_dict({**settings, "instrument": {"symbol": "ES", "point_value": 50.0}})
    wf = walk_forward(reverting_bars(), es)
    verdict = go_live_gate(wf, es)
    assert verdict.passed, verdict.summary()
    live = tmp_path / "live.yaml"
    live.write_text(yaml.safe_dump({**settings, "stream": {"symbols": ["MES", "ES"]}}))
    path = tmp_path / "approved_params.yaml"
    write_approved_params(verdict, wf, es, path, symbol="ES", data_source="ibkr")
    assert load_approved_params(str(live), path, "ES").instrument.symbol == "MES"
    mes = config_from_dict(settings)  # MES's facts on ES's bars
    write_approved_params(verdict, wf, mes, path, symbol="ES", data_source="ibkr")
    with pytest.raises(ScalperError, match="approved with other trading settings"):
        load_approved_params(str(live), path, "ES")


def test_history_appends_one_row_per_run(home: Path) -> None:
    cfg, wf = simulated_walk_forward()
    run_ = ResearchRun("MES", walk_forward=wf, verdict=go_live_gate(wf, cfg))
    first = publish(run_, cfg, origin="test")
    second = publish(run_, cfg, origin="test")
    history = read_history()
    assert history.height == 2
    assert history["run_id"].to_list() == [first.run_id, second.run_id]
    assert first.run_id != second.run_id
    row = history.row(1, named=True)
    assert row["symbol"] == "MES" and row["origin"] == "test"
    assert row["oos_trades"] == wf.out_of_sample.metrics["trades"]
    assert row["oos_sharpe"] == pytest.approx(wf.out_of_sample.metrics["sharpe"])
    assert row["report"] == str(second.report)
    assert row["first_session"] == wf.span[0] and row["last_session"] == wf.span[1]
    assert research.history_path() == home / "research" / "history.parquet"


# --- reading the store --------------------------------------------------------------------------


def store_continuous(bars: pl.DataFrame, *, validated: bool = True) -> list[date]:
    """`bars` as the stored continuous MES series (one series as delivered: contract `MES`), its
    days marked validated as `build_continuous` marks them unless `validated` is False."""
    root = store.stage_root("continuous")
    days = store.write_bars_partitioned(bars.with_columns(contract=pl.lit("MES")), "MES", root)
    for day in days if validated else ():
        store.mark_partition("MES", day, {"validated": 1, "failed": 0, "quarantined": 0}, root)
    return days


def test_read_sessions_gives_whole_validated_sessions(home: Path) -> None:
    cfg = load_config(None, env={})
    bars = simulated(14)
    days = store_continuous(bars, validated=False)
    read = research.continuous_reader("MES", cfg)
    with pytest.raises(DataError, match="not validated"):
        research.read_sessions(read, date(2024, 1, 3), date(2024, 1, 5), cfg)
    store_continuous(bars)
    got = research.read_sessions(read, date(2024, 1, 3), date(2024, 1, 5), cfg)
    dates = session_dates(bars, cfg)
    expected = bars.filter(dates.is_between(date(2024, 1, 3), date(2024, 1, 5)))
    assert got.select(expected.columns).equals(expected)
    recent = research.read_recent_sessions(read, days, 4, cfg)
    assert session_dates(recent, cfg).unique().len() == 4
    assert session_dates(recent, cfg).max() == dates.max()
    with pytest.raises(DataError, match="no validated bars for the sessions 2023-01-02"):
        research.read_sessions(read, date(2023, 1, 2), date(2023, 1, 5), cfg)


def test_recent_sessions_are_counted_in_stored_days_not_calendar_days(home: Path) -> None:
    """History with holes (scattered vendor days, years apart) gives as many sessions as one
    without: a week of 2023 and three sessions of 2024 are the last 8 sessions of the store."""
    cfg = load_config(None, env={})
    older = simulate_bars(date(2023, 1, 9), 5, seed=1)
    newer = simulate_bars(date(2024, 1, 9), 3, seed=2)
    days = store_continuous(pl.concat([older, newer]))
    recent = research.read_recent_sessions(research.continuous_reader("MES", cfg), days, 8, cfg)
    sessions = session_dates(recent, cfg).unique().sort().to_list()
    assert len(sessions) == 8
    assert sessions[0] == date(2023, 1, 9) and sessions[-1] == date(2024, 1, 11)


# --- command line -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cli")
    data = folder / "bars.parquet"
    write_bars(simulated(), data)
    config = folder / "config.yaml"
    grid = "\n".join(f"  {k}: {v}" for k, v in SMALL_GRID.items())
    config.write_text(f"research:\n{grid}\n  min_trades: 10\n  backtest_sessions: 20\n")
    return data, config


@pytest.mark.parametrize("command", ["optimize", "walk-forward", "report"])
def test_cli_commands_write_a_report(
    command: str, cli_inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    data, config = cli_inputs
    proc = run(command, "--config", str(config), "--data", str(data), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(f"scalper {command}: ")
    assert lines[-1].startswith("report: ")
    report = Path(lines[-1].removeprefix("report: "))
    assert report.is_file() and report.is_relative_to(tmp_path / "reports" / "research")
    assert (report.parent.parent / "index.html").is_file()
    if command != "optimize":
        assert any(line.startswith("gate ") for line in lines)


def test_cli_reads_stored_sessions_and_writes_to_out(
    cli_inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, config = cli_inputs
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path))
    store_continuous(simulated())
    out = tmp_path / "mine"
    args = ("optimize", "--config", str(config), "--symbol", "MES")
    proc = run(*args, "--start", "2024-02-01", "--end", "2024-02-29", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "over 21 sessions (2024-02-01 .. 2024-02-29)" in proc.stdout
    assert (out / "report.html").is_file() and (out / "sweep.parquet").is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--data", "missing.parquet"), "missing.parquet: no such file"),
        (("--symbol", "MES"), "MES: no bars in the store"),
        (("--symbol", "MES", "--start", "2024-01-05", "--end", "2024-01-02"), "is after --end"),
        (("--symbol", "MES", "--start", "2024-01-02"), "give both --start and --end"),
        (("--data", "x.csv", "--end", "2024-01-02"), "use them with --symbol"),
        # ES's bars judged with the default MES point value ($5, not $50) and MES's risk rules
        (("--symbol", "es"), "--symbol ES: the configuration trades MES (instrument.symbol)"),
    ],
)
def test_cli_mistakes_are_one_line_errors(
    args: tuple[str, ...], needle: str, tmp_path: Path
) -> None:
    assert_one_line_error(run("walk-forward", *args, home=tmp_path), needle)


def test_nan_safe_headline() -> None:
    line = research.headline(metrics_from(np.empty(0), np.empty(0), 1000.0, math.nan))
    assert line == "0 trades, net 0.00, Sharpe n/a, profit factor n/a, max drawdown 0.0%"


# --- §4.9 grid axes -----------------------------------------------------------------------------


def test_grid_ranges_over_the_atr_trail_and_risk_axes_with_the_config_rules() -> None:
    cfg = small_config(
        lookback=[20],
        entry_z=[2.0],
        exit_z=[0.5],
        stop_loss_ticks=[0, 8],
        take_profit_ticks=[0],
        stop_atr=[0.0, 2.0],
        trail_ticks=[0, 12],
        max_risk_per_trade=[0.0, 30.0],
    )
    grid = grid_params(cfg)
    # stop_loss_ticks 8 with stop_atr 2 is refused by the risk section's own rule, with its reason.
    assert len(grid) == 3 * 2 * 2
    assert len(grid.excluded) == 2 * 2
    assert all(
        e.point["stop_loss_ticks"] == 8 and e.point["stop_atr"] == 2.0 for e in grid.excluded
    )
    assert all(any("stop_atr" in r for r in e.reasons) for e in grid.excluded)
    assert {(p["stop_atr"], p["trail_ticks"], p["max_risk_per_trade"]) for p in grid.params} == {
        (a, t, m) for a in (0.0, 2.0) for t in (0, 12) for m in (0.0, 30.0)
    }


def test_a_sweep_over_trail_ticks_trails_only_the_sets_with_a_trail() -> None:
    cfg = small_config(
        lookback=[20], entry_z=[1.5], exit_z=[0.0], take_profit_ticks=[0], trail_ticks=[0, 12]
    )
    bars = simulated(30)
    sweep = run_sweep(bars, cfg)
    assert sweep.get_column("trail_ticks").to_list() == [0, 12]
    reasons = {
        row["trail_ticks"]: set(
            run_backtest(bars, with_point(cfg, research.grid_point(row)))
            .trades.get_column("exit_reason")
            .to_list()
        )
        for row in sweep.iter_rows(named=True)
    }
    assert "trail" not in reasons[0]
    assert "trail" in reasons[12]


def test_an_approved_set_with_atr_stops_loads_as_session_open_loads_it(tmp_path: Path) -> None:
    point = {"lookback": 20, "entry_z": 2.0, "exit_z": 0.5, "stop_loss_ticks": 0}
    point |= {"take_profit_ticks": 0, "stop_atr": 1.5, "target_atr": 3.0}
    point |= {"trail_ticks": 6, "max_risk_per_trade": 40.0}
    assert set(point) == set(GRID_AXES)
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(yaml.safe_dump(research.config_overrides(point)))
    loaded = load_config_with_overrides(None, overrides, env={})
    assert (loaded.risk.stop_atr, loaded.risk.target_atr) == (1.5, 3.0)
    assert (loaded.risk.trail_ticks, loaded.risk.max_risk_per_trade) == (6, 40.0)
