"""The incremental engine's contract with its drivers: orders, outside fills, operator controls,
invalid input, snapshots. These are the calls the live stream and the IBKR adapter build on."""

from __future__ import annotations

import pickle
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from scalper.backtest import run_backtest
from scalper.bars import read_bars, to_engine_columns
from scalper.config import config_from_dict
from scalper.engine import Engine, FillSimulator, backtest_columns, engine_params
from tests.shared import CONFORMANCE_RISK
from tests.strategies import Series, make_series

MONDAY_0930_EDT = 1_718_026_200_000_000_000  # 2024-06-10 13:30 UTC
MIN = 60_000_000_000


def params(**risk: Any) -> dict[str, Any]:
    """Entries allowed all day, small lookback: decisions come quickly on short series."""
    overrides = {
        "strategy": {"lookback": 5, "entry_z": 1.0, "exit_z": 0.0},
        "session": {"entry_start": "00:00", "entry_end": "16:15"},
        "risk": {"daily_loss_limit": 0, "daily_drawdown_limit": 0, "kill_switch_loss": 0,
                 "min_account_balance": 0, "max_consecutive_losses": 0, **risk},
    }  # fmt: skip
    return engine_params(config_from_dict(overrides, source="<test>"))


def series(n: int = 400, seed: int = 3) -> Series:
    return make_series(seed, n, MONDAY_0930_EDT - 200 * MIN, 60, gaps=False, volatility=2.0)


def feed_until_order(engine: Any, s: Series, start: int = 0, kind: str | None = None) -> int:
    """Feeds bars until the engine decides an order (of `kind`); returns that bar's index."""
    for i in range(start, len(s)):
        order = engine.on_bar(*s.bar(i))
        if order is not None and (kind is None or order["kind"] == kind):
            return i
    raise AssertionError("no order decided")


def test_order_carries_what_a_broker_and_a_client_order_id_need() -> None:
    engine = Engine(params(), simulate_fills=False)
    s = series()
    for i in range(len(s)):
        order = engine.on_bar(*s.bar(i))
        if order is not None:
            break
    assert engine.state()["order_in_flight"] is True
    assert order["action"] in {"BUY", "SELL"}
    assert order["kind"] == "entry" and order["reason"] is None
    assert order["qty"] == 1
    assert order["seq"] == 1
    assert order["session"] == "2024-06-10"
    assert order["bar_ts"] == s.bar(i)[0]
    assert order["decided_ts"] == s.bar(i)[0] + MIN


def test_no_new_decision_while_an_order_is_in_flight_and_a_reject_releases_it() -> None:
    engine = Engine(params(), simulate_fills=False)
    s = series()
    i = feed_until_order(engine, s)
    assert all(engine.on_bar(*s.bar(j)) is None for j in range(i + 1, i + 30))
    assert engine.order_in_flight() is True  # the trader's per-bar question, without state()
    assert engine.on_reject() is True
    assert engine.state()["order_in_flight"] is False
    assert engine.order_in_flight() is False
    assert engine.on_reject() is False


def test_outside_fills_open_and_close_the_position_with_spec_accounting() -> None:
    p = params()
    engine = Engine(p, simulate_fills=False)
    assert engine.on_fill(MONDAY_0930_EDT, "SELL", 1, 5000.0) is None
    assert engine.state()["position"] == -1
    assert engine.state()["trades_today"] == 1
    trade = engine.on_fill(MONDAY_0930_EDT + 5 * MIN, "BUY", 1, 4998.0, "stop")
    assert trade["side"] == "short" and trade["exit_reason"] == "stop"
    assert trade["pnl"] == pytest.approx(2.0 * p["point_value"] - 2 * p["commission_per_side"])
    assert engine.state()["position"] == 0
    assert engine.state()["daily_pnl"] == pytest.approx(trade["pnl"])
    # What `on_fill` returns is the caller's already: the queues do not report it a second time.
    assert engine.take_trades() == [] and engine.take_fills() == []


def test_a_fill_that_does_not_match_the_position_is_refused() -> None:
    engine = Engine(params(), simulate_fills=False)
    engine.on_fill(MONDAY_0930_EDT, "BUY", 1, 5000.0)
    with pytest.raises(ValueError, match="does not match the position"):
        engine.on_fill(MONDAY_0930_EDT + MIN, "BUY", 1, 5001.0)
    with pytest.raises(ValueError, match="does not match the position"):
        engine.on_fill(MONDAY_0930_EDT + MIN, "SELL", 2, 5001.0)
    assert engine.state()["position"] == 1


def test_halt_flattens_at_the_next_decision_blocks_entries_until_reset() -> None:
    engine = Engine(params())
    s = series()
    i = feed_until_order(engine, s, kind="entry")
    engine.on_bar(*s.bar(i + 1))  # the entry fills at this bar's open
    assert engine.state()["position"] != 0
    engine.halt()
    order = engine.on_bar(*s.bar(i + 2))
    assert order["kind"] == "exit" and order["reason"] == "kill"
    engine.on_bar(*s.bar(i + 3))
    assert engine.state()["position"] == 0
    trades = engine.take_trades()
    assert trades[-1]["exit_reason"] == "kill"
    assert all(engine.on_bar(*s.bar(j)) is None for j in range(i + 4, len(s)))
    engine.reset_halt()
    assert engine.state()["halted"] is False


def test_paused_entries_still_let_exits_run() -> None:
    engine = Engine(params())
    s = series()
    i = feed_until_order(engine, s, kind="entry")
    engine.pause_entries(True)
    exit_at = feed_until_order(engine, s, i + 1)
    assert engine.state()["entries_paused"] is True
    engine.on_bar(*s.bar(exit_at + 1))
    assert engine.state()["position"] == 0
    assert all(engine.on_bar(*s.bar(j)) is None for j in range(exit_at + 2, len(s)))


@pytest.mark.parametrize(
    ("bar", "why"),
    [
        ((MONDAY_0930_EDT, float("nan"), 1.0, 1.0, 1.0, 1), "finite and positive"),
        ((MONDAY_0930_EDT, 5000.0, 4999.0, 4998.0, 5000.0, 1), "high/low"),
        ((MONDAY_0930_EDT, 5000.0, 5001.0, 4999.0, 5000.0, -1), "negative volume"),
        ((MONDAY_0930_EDT, -5.0, 5001.0, -5.0, 5000.0, 1), "finite and positive"),
    ],
)
def test_invalid_bars_are_refused_and_change_nothing(bar: tuple, why: str) -> None:
    engine = Engine(params())
    engine.on_bar(MONDAY_0930_EDT - MIN, 5000.0, 5001.0, 4999.0, 5000.0, 10)
    before = engine.snapshot()
    with pytest.raises(ValueError, match=why):
        engine.on_bar(*bar)
    assert engine.snapshot() == before


def test_out_of_order_and_duplicate_bars_are_refused() -> None:
    engine = Engine(params())
    engine.on_bar(MONDAY_0930_EDT, 5000.0, 5001.0, 4999.0, 5000.0, 10)
    with pytest.raises(ValueError, match="not after the previous bar"):
        engine.on_bar(MONDAY_0930_EDT, 5000.0, 5001.0, 4999.0, 5000.0, 10)
    with pytest.raises(ValueError, match="not after the previous bar"):
        engine.on_bar(MONDAY_0930_EDT - MIN, 5000.0, 5001.0, 4999.0, 5000.0, 10)


def test_parameters_are_checked_by_name() -> None:
    p = params()
    with pytest.raises(ValueError, match=r"unknown engine parameter .lookbak."):
        Engine({**p, "lookbak": 3})
    missing = dict(p)
    del missing["tick_size"]
    with pytest.raises(ValueError, match=r".tick_size. is missing"):
        Engine(missing)
    with pytest.raises(ValueError, match="unknown time zone"):
        Engine({**p, "timezone": "Mars/Olympus"})
    with pytest.raises(KeyError, match="lookbak"):
        engine_params(config_from_dict({}), {"lookbak": 3})


def test_snapshots_are_versioned_and_corruption_is_an_error() -> None:
    engine = Engine(params())
    snap = engine.snapshot()
    with pytest.raises(ValueError, match="version"):
        Engine.restore(b"\x63" + snap[1:])
    with pytest.raises(ValueError, match="corrupt"):
        Engine.restore(snap[:5])
    with pytest.raises(ValueError, match="empty"):
        Engine.restore(b"")


def test_fill_simulator_is_the_backtest_broker_and_pickles() -> None:
    p = params(stop_loss_ticks=4, take_profit_ticks=6)
    sim = FillSimulator(p)
    sim.submit("BUY", 1, "entry")
    assert sim.has_pending()
    fills = sim.on_bar(MONDAY_0930_EDT, 5000.0, 5001.0, 4998.5)
    # Entry at open + 1 tick slippage, then the stop (entry - 4 ticks) is touched intrabar.
    assert [(f["kind"], f["price"], f["reason"]) for f in fills] == [
        ("entry", 5000.25, None),
        ("exit", 4999.25 - 0.25, "stop"),
    ]
    assert sim.position() == 0
    sim.submit("SELL", 1, "entry")
    clone = pickle.loads(pickle.dumps(sim))
    assert clone.has_pending() and clone.snapshot() == sim.snapshot()
    with pytest.raises(ValueError, match="BUY or SELL"):
        sim.submit("HOLD", 1, "entry")


def test_batch_equity_ends_at_capital_plus_net_pnl() -> None:
    s = series(2000, seed=9)
    p = params()
    out = backtest_columns(s.columns, p)
    assert len(out["equity"]) == len(s)
    assert out["equity"][-1] == pytest.approx(p["starting_capital"] + out["metrics"]["net_pnl"])
    assert out["session_pnl"].sum() == pytest.approx(out["metrics"]["net_pnl"])


def test_arrow_columns_reach_the_engine_without_copies(tmp_path: Path) -> None:
    """A Parquet file read with pyarrow feeds the engine its own buffers (SPEC: zero-copy)."""
    s = series(3000, seed=5)
    table = pa.table(s.columns)
    pq.write_table(table, tmp_path / "bars.parquet")
    loaded = pq.read_table(tmp_path / "bars.parquet")
    columns = to_engine_columns(loaded)
    for name, array in columns.items():
        buffer = loaded.column(name).chunk(0).buffers()[1]
        assert array.ctypes.data == buffer.address, f"{name} was copied"
    p = params()
    assert (
        backtest_columns(columns, p)["pnl"].tolist()
        == backtest_columns(s.columns, p)["pnl"].tolist()
    )


def test_kill_flattens_now_and_drops_a_working_entry() -> None:
    s = series()
    engine = Engine(params())
    i = feed_until_order(engine, s, kind="entry")
    assert engine.kill() is None, "flat with a working entry: nothing to flatten"
    assert engine.state()["order_in_flight"] is False and engine.state()["halted"] is True
    engine.on_bar(*s.bar(i + 1))
    assert engine.state()["position"] == 0, "the cancelled entry must not fill"

    engine = Engine(params())
    i = feed_until_order(engine, s, kind="entry")
    engine.on_bar(*s.bar(i + 1))
    side = engine.state()["position"]
    order = engine.kill()
    assert order["kind"] == "exit" and order["reason"] == "kill"
    assert order["action"] == ("SELL" if side > 0 else "BUY")
    assert engine.kill() is None, "the exit is already working"
    engine.on_bar(*s.bar(i + 2))
    assert engine.state()["position"] == 0
    assert engine.take_trades()[-1]["exit_reason"] == "kill"


def test_reload_with_the_same_parameters_changes_nothing() -> None:
    """Rebuilding the indicator from the closes and carrying the book over is exact."""
    s = series(1200, seed=4)
    p = params(stop_loss_ticks=8)
    whole, reloaded = Engine(p), Engine(p)
    half = len(s) // 2
    for i in range(half):
        assert whole.on_bar(*s.bar(i)) == reloaded.on_bar(*s.bar(i))
    reloaded.reload(p, s.columns["close"][:half].tolist())
    assert reloaded.state() == whole.state()
    for i in range(half, len(s)):
        assert whole.on_bar(*s.bar(i)) == reloaded.on_bar(*s.bar(i))
    assert whole.take_trades() == reloaded.take_trades()


def test_reloaded_parameters_take_effect_and_the_account_stays() -> None:
    s = series(1200, seed=4)
    p = params()
    engine = Engine(p)
    half = len(s) // 2
    for i in range(half):
        engine.on_bar(*s.bar(i))
    before = engine.state()
    engine.reload({**p, "lookback": 12, "entry_z": 50.0}, s.columns["close"][:half].tolist())
    assert engine.state() == before
    orders = [engine.on_bar(*s.bar(i)) for i in range(half, len(s))]
    assert not [o for o in orders if o is not None and o["kind"] == "entry"]
    with pytest.raises(ValueError, match="unknown time zone"):
        engine.reload({**p, "timezone": "Nowhere/City"}, [])


# --- the exchange calendar reaches the engine as data (SPEC §4.9) --------------------------------

THANKSGIVING = (date(2024, 11, 25), date(2024, 12, 2))
DAY_20241128 = (date(2024, 11, 28) - date(1970, 1, 1)).days


def calendar_params(session: dict[str, Any], sessions: Any = THANKSGIVING) -> dict[str, Any]:
    return engine_params(config_from_dict({"session": session}, env={}), sessions=sessions)


def test_the_library_calendar_and_the_overrides_become_engine_data() -> None:
    p = calendar_params({"calendar": "CME_Equity", "early_closes": {"2024-11-29": "13:15"}})
    assert p["early_closes"] == [(DAY_20241128, 13 * 3600), (DAY_20241128 + 1, 13 * 3600 + 900)]
    assert (p["early_entry_end_minutes"], p["early_flatten_minutes"]) == (20, 10)
    assert calendar_params({})["early_closes"] == []


def test_early_closes_are_new_york_times_whatever_the_session_zone() -> None:
    chicago = calendar_params({"calendar": "CME_Equity", "timezone": "America/Chicago"})
    assert chicago["early_closes"][0] == (DAY_20241128, 12 * 3600)  # 13:00 New York


def test_a_stream_knows_the_early_closes_of_history_and_of_the_year_ahead() -> None:
    p = calendar_params({"calendar": "CME_Equity"}, sessions=None)
    days = {date(1970, 1, 1) + timedelta(d) for d, _ in p["early_closes"]}
    assert date(2005, 11, 25) in days  # the day after Thanksgiving 2005: a replay of history
    ahead = datetime.now(UTC).date() + timedelta(days=365)
    assert any(d.year == ahead.year and d.month == 11 for d in days)  # next Thanksgiving


def test_engine_mappings_without_the_calendar_keys_still_work_and_bad_ones_are_refused() -> None:
    p = params()
    legacy = {k: v for k, v in p.items() if not k.startswith("early_")}
    s = series()
    assert backtest_columns(s.columns, legacy)["pnl"].tolist() == (
        backtest_columns(s.columns, p)["pnl"].tolist()
    )
    with pytest.raises(ValueError, match="session day 20055 twice"):
        Engine({**p, "early_closes": [(20055, 46800), (20055, 47700)]})
    with pytest.raises(ValueError, match="not a time of day"):
        Engine({**p, "early_closes": [(20055, 90000)]})


def test_a_backtest_flattens_before_the_librarys_early_closes() -> None:
    """Thanksgiving week bars with `calendar: CME_Equity` alone: the eod exits of Thursday and
    Friday are decided at 12:50 (13:00 − 10 minutes) and fill in the 12:50 bar."""
    overrides = yaml.safe_load((CONFORMANCE_RISK / "16_early_close" / "config.yaml").read_text())
    overrides["session"] = {"entry_start": "00:00", "calendar": "CME_Equity"}
    cfg = config_from_dict(overrides, env={})
    trades = run_backtest(read_bars(CONFORMANCE_RISK / "bars_thanksgiving.csv"), cfg).trades
    eod = trades.filter(pl.col("exit_reason") == "eod").select(
        pl.col("exit_ts").dt.convert_time_zone("America/New_York").dt.strftime("%m-%d %H:%M")
    )
    assert {"11-28 12:50", "11-29 12:50"} <= set(eod.to_series().to_list())


# --- SPEC §4.9: the small account's risk model at the engine's boundary ------------------------

RISK_MODEL_KEYS = (
    "atr_period", "stop_atr", "target_atr", "trail_ticks", "size_tiers", "max_risk_per_trade",
    "reduce_size_at", "reduce_size_factor", "slippage_model", "low_volume", "high_vol_atr",
)  # fmt: skip


def test_engine_mappings_without_the_risk_model_keys_mean_the_defaults() -> None:
    p = params(stop_loss_ticks=6)
    legacy = {k: v for k, v in p.items() if k not in RISK_MODEL_KEYS}
    s = series()
    assert backtest_columns(s.columns, legacy)["pnl"].tolist() == (
        backtest_columns(s.columns, p)["pnl"].tolist()
    )


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"stop_loss_ticks": 4, "stop_atr": 1.0}, "a stop in ticks and in ATRs"),
        ({"take_profit_ticks": 4, "target_atr": 1.0}, "a target in ticks and in ATRs"),
        ({"size_tiers": [[1000, 1], [900, 2]]}, "must ascend strictly"),
        ({"reduce_size_factor": 0.0}, "reduce_size_factor"),
        ({"slippage_model": "linear"}, "unknown slippage model"),
        ({"size_tiers": [[1000, 1, 2]]}, "pair"),
    ],
)
def test_risk_model_parameters_are_checked_at_the_boundary(extra: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Engine({**params(), **extra})


def test_an_entry_carries_its_atr_distances_and_size_and_refusals_are_counted() -> None:
    engine = Engine(
        params(stop_atr=1.5, target_atr=2.25, atr_period=30, size_tiers=[[0, 2]]),
        simulate_fills=False,
    )
    s = series()
    order = None
    for i in range(len(s)):
        order = engine.on_bar(*s.bar(i))
        if order is not None:
            break
    assert order is not None and order["kind"] == "entry" and order["qty"] == 2
    assert order["stop_loss_ticks"] >= 1 and order["take_profit_ticks"] > order["stop_loss_ticks"]
    assert i >= 29, "no entry before the ATR(30) is defined"
    refused = engine.state()["gate_refusals"]
    assert refused["atr"] > 0 and refused["size"] == 0


def test_the_fill_simulator_trails_slips_adaptively_and_snapshots_all_of_it() -> None:
    adaptive = {"slippage_model": "adaptive", "low_volume": 100, "high_vol_atr": 1.0}
    sim = FillSimulator({**params(trail_ticks=4), **adaptive})
    with pytest.raises(ValueError, match="close and volume"):
        sim.on_bar(MONDAY_0930_EDT, 5000.0, 5001.0, 4999.0)
    sim.on_bar(MONDAY_0930_EDT - MIN, 5000.0, 5001.0, 4999.0, 5000.0, 10)  # thin: +1 tick
    sim.submit("BUY", 1, "entry", None, 0, 0)
    (entry,) = sim.on_bar(MONDAY_0930_EDT, 5000.0, 5003.0, 5000.0, 5002.0, 500)
    assert entry["price"] == 5000.5
    clone = FillSimulator.restore(sim.snapshot())
    assert clone.snapshot() == sim.snapshot()
    fills = clone.on_bar(MONDAY_0930_EDT + MIN, 5001.5, 5001.5, 5001.0, 5001.0, 500)
    assert [(f["price"], f["reason"]) for f in fills] == [(5001.25, "trail")]  # 5001.5 − 1 tick
    with pytest.raises(ValueError, match="another version"):
        FillSimulator.restore(sim.snapshot()[3:])


@pytest.mark.parametrize(
    ("case", "refused"),
    [
        ("12_trailing_stop", {"atr": 15, "size": 0}),  # while ATR(480) is undefined
        ("14_reduce_size_late", {"atr": 0, "size": 145}),  # 1 contract x 0.5 after 14:00
    ],
)
def test_a_backtest_counts_the_entries_refused_for_atr_and_size(
    case: str, refused: dict[str, int]
) -> None:
    """The counts the conformance README states for these cases (SPEC §4.9 gate reasons)."""
    folder = CONFORMANCE_RISK / case
    bars = read_bars(folder.parent / (folder / "data").read_text().strip())
    result = run_backtest(
        bars, config_from_dict(yaml.safe_load((folder / "config.yaml").read_text()))
    )
    assert result.gate_refusals == refused
    assert "refused entries" in result.summary()
