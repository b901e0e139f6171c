"""Properties of the engine over random bar series and configurations (hypothesis).

Parity: the batch backtest, the incremental engine and the incremental engine with an outside
broker are one state machine, and all agree with the independent Python oracle (on drawn series,
and with SPEC §4.9's rules on real minute bars). Invariants: the
position never exceeds its size, no entry while halted or outside the entry window, flat after the
flatten time, no look-ahead, and a snapshot restores the engine exactly.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalper.bars import read_bars, to_engine_columns
from scalper.config import config_from_dict
from scalper.engine import EXIT_REASONS, Engine, backtest_columns, engine_params, replay
from tests.reference_engine import merge_params, run_reference
from tests.shared import REAL_DATA
from tests.strategies import Series, bar_series, make_series, overrides, risk_model, scenario

PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NEW_YORK = ZoneInfo("America/New_York")
FIELDS = ("entry_ts", "exit_ts", "side", "qty", "entry_price", "exit_price", "exit_reason")


def params_of(cfg_overrides: dict[str, Any]) -> dict[str, Any]:
    return engine_params(config_from_dict(cfg_overrides, source="<hypothesis>"))


def batch_trades(series: Series, params: dict[str, Any]) -> list[dict[str, Any]]:
    raw = backtest_columns(series.columns, params)
    reasons = EXIT_REASONS
    return [
        {
            "entry_ts": int(raw["entry_ts"][i]),
            "exit_ts": int(raw["exit_ts"][i]),
            "side": "long" if raw["side"][i] > 0 else "short",
            "qty": int(raw["qty"][i]),
            "entry_price": float(raw["entry_price"][i]),
            "exit_price": float(raw["exit_price"][i]),
            "pnl": float(raw["pnl"][i]),
            "exit_reason": reasons[raw["exit_reason"][i]],
        }
        for i in range(len(raw["pnl"]))
    ]


def local_seconds(ts_ns: int) -> int:
    t = datetime.fromtimestamp(ts_ns / 1e9, UTC).astimezone(NEW_YORK)
    return t.hour * 3600 + t.minute * 60 + t.second


@PROPERTY
@given(scenario())
def test_batch_incremental_and_broker_wiring_are_one_state_machine(case: Any) -> None:
    series, cfg = case
    params = params_of(cfg)
    batch = batch_trades(series, params)
    assert replay(params, series.columns) == batch
    assert replay(params, series.columns, external_fills=True) == batch


@PROPERTY
@given(scenario())
def test_engine_agrees_with_the_python_oracle(case: Any) -> None:
    series, cfg = case
    got = batch_trades(series, params_of(cfg))
    want = run_reference(series.ref_bars(), merge_params(cfg))
    assert [[t[f] for f in FIELDS] for t in got] == [[t[f] for f in FIELDS] for t in want]
    assert [t["pnl"] for t in got] == pytest.approx([t["pnl"] for t in want], abs=1e-9)


@pytest.fixture(scope="module")
def real_es_minutes() -> Series:
    """Real ES front-month minute bars (2013 and 2020), traded as MES (same tick)."""
    return Series(to_engine_columns(read_bars(REAL_DATA / "es_front_1m_2013_2020.csv")), 60)


@st.composite
def risk_model_overrides(draw: st.DrawFn) -> dict[str, Any]:
    """A configuration with SPEC §4.9's rules drawn on, and no account halt to end it early."""
    cfg = draw(overrides(60))
    risk_model(draw, cfg["risk"], cfg["costs"])
    cfg["risk"].update(kill_switch_loss=0, min_account_balance=0)
    return cfg


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(cfg=risk_model_overrides())
def test_engine_agrees_with_the_oracle_on_real_minute_bars(
    real_es_minutes: Series, cfg: dict[str, Any]
) -> None:
    got = batch_trades(real_es_minutes, params_of(cfg))
    want = run_reference(real_es_minutes.ref_bars(), merge_params(cfg))
    assert [[t[f] for f in FIELDS] for t in got] == [[t[f] for f in FIELDS] for t in want]
    assert [t["pnl"] for t in got] == pytest.approx([t["pnl"] for t in want], abs=1e-9)


@PROPERTY
@given(scenario())
def test_position_limits_halt_and_entry_window_hold_at_every_bar(case: Any) -> None:
    series, cfg = case
    params = params_of(cfg)
    engine = Engine(params)
    tiers = params["size_tiers"]
    most = max(q for _, q in tiers) if tiers else params["position_size"]
    for i in range(len(series)):
        halted_before = engine.state()["halted"]
        order = engine.on_bar(*series.bar(i))
        state = engine.state()
        assert abs(state["position"]) <= most
        if order is not None and order["kind"] == "entry":
            assert not halted_before and not state["halted"]
            assert params["entry_start"] <= local_seconds(order["decided_ts"]) < params["entry_end"]
            assert 1 <= order["qty"] <= most


@PROPERTY
@given(st.data())
def test_flat_after_the_fills_of_every_bar_in_the_flatten_window(data: st.DataObject) -> None:
    """With contiguous bars, the EOD exit decided at `flatten_at` fills at the next bar's open."""
    series = data.draw(bar_series(min_bars=300, max_bars=1500, gaps=False))
    params = params_of(data.draw(overrides(series.bar_seconds)))
    engine = Engine(params)
    for i in range(len(series)):
        bar = series.bar(i)
        engine.on_bar(*bar)
        if params["flatten_at"] <= local_seconds(bar[0]) < params["session_end"]:
            assert engine.state()["position"] == 0, f"open position after bar {i}"


@PROPERTY
@given(scenario(min_bars=60), st.integers(10, 2**31), st.floats(0.2, 0.9))
def test_changing_future_bars_never_changes_past_decisions(
    case: Any, other_seed: int, cut_fraction: float
) -> None:
    series, cfg = case
    params = params_of(cfg)
    cut = max(2, int(len(series) * cut_fraction))
    future = make_series(other_seed, len(series), 0, series.bar_seconds, gaps=True, volatility=3.0)
    altered = {k: v.copy() for k, v in series.columns.items()}
    for k in ("open", "high", "low", "close", "volume"):
        altered[k][cut:] = future.columns[k][cut:]
    altered_series = Series(altered, series.bar_seconds)

    def orders_before_cut(s: Series) -> list[Any]:
        engine = Engine(params)
        return [engine.on_bar(*s.bar(i)) for i in range(cut)]

    assert orders_before_cut(series) == orders_before_cut(altered_series)
    cut_ts = int(series.columns["ts"][cut])
    done = lambda trades: [t for t in trades if t["exit_ts"] < cut_ts]  # noqa: E731
    assert done(batch_trades(series, params)) == done(batch_trades(altered_series, params))


@PROPERTY
@given(scenario(), st.floats(0.05, 0.95), st.booleans())
def test_snapshot_restores_the_engine_exactly(case: Any, at: float, via_pickle: bool) -> None:
    series, cfg = case
    params = params_of(cfg)
    cut = int(len(series) * at)

    def feed(engine: Any, lo: int, hi: int) -> list[Any]:
        out = []
        for i in range(lo, hi):
            out.append(engine.on_bar(*series.bar(i)))
            out.extend(engine.take_trades())
        return out

    whole = Engine(params)
    expected = feed(whole, 0, len(series))
    first = Engine(params)
    events = feed(first, 0, cut)
    resumed = pickle.loads(pickle.dumps(first)) if via_pickle else Engine.restore(first.snapshot())
    assert resumed.state() == first.state()
    events += feed(resumed, cut, len(series))
    assert events == expected
    assert resumed.snapshot() == whole.snapshot()


@settings(max_examples=15, deadline=None)
@given(bar_series(min_bars=300, max_bars=2000))
def test_sweep_equals_one_backtest_per_parameter_set(series: Series) -> None:
    """Sharing indicators and calendars across sets and threads must not change any result."""
    grid = [
        {"lookback": lb, "entry_z": ez, "exit_z": xz, "stop_loss_ticks": sl}
        for lb in (5, 12, 30)
        for ez in (1.3, 2.1)
        for xz in (0.0, 0.6)
        for sl in (0, 6)
    ] + [  # SPEC §4.9: the ATR series is shared between sets of one window
        {"stop_atr": sa, "atr_period": n, "trail_ticks": tt, "max_risk_per_trade": mr}
        for sa in (0.7, 1.9)
        for n in (5, 14)
        for tt in (0, 8)
        for mr in (0.0, 7.5)
    ]
    base = params_of({"strategy": {"bar_seconds": series.bar_seconds}})
    sets = [{**base, **g} for g in grid] + [{**base, "strategy": "rsi", "period": 9}]
    from scalper.engine import sweep_columns

    swept = sweep_columns(series.columns, sets, threads=2)
    for j, p in enumerate(sets):
        single = backtest_columns(series.columns, p)["metrics"]
        for name, column in swept.items():
            np.testing.assert_equal(column[j], float(single[name]), err_msg=f"set {j} {name}")
