"""Where raw bars come from (`scalper.sources`): the configured source over whole UTC days, the
simulator's one fixed window, and the contracts an IBKR download fetches for each day."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from scalper.calendar import with_session_columns
from scalper.config import Config, config_from_dict
from scalper.errors import ScalperError
from scalper.simulate import simulate_bars
from scalper.sources import contract_days, fetch_bars, simulate_market, simulated_days
from scalper.store import utc_day

WEEK = date(2024, 1, 8)  # a Monday


def test_each_utc_day_downloads_the_fronts_of_both_sessions_it_touches() -> None:
    days = contract_days("MES", date(2024, 3, 4), date(2024, 3, 8), roll_days=8)
    assert days == {
        "MESH4": (date(2024, 3, 4), date(2024, 3, 6)),
        "MESM4": (date(2024, 3, 6), date(2024, 3, 8)),
    }


def test_simulated_days_are_slices_of_one_market() -> None:
    """Each day is cut from the whole window's market, never simulated on its own (which would
    restart the price every day); a day outside the window is an error, not invented data."""
    window = {"simulation_start": WEEK, "simulation_days": 5}
    assert simulated_days(WEEK, 5) == (WEEK - timedelta(days=1), WEEK + timedelta(days=4))
    market = simulate_bars(WEEK, 5)
    tuesday, origin = fetch_bars(Config(), "MES", date(2024, 1, 9), date(2024, 1, 9), **window)
    assert tuesday.equals(market.filter(utc_day() == date(2024, 1, 9)))
    assert origin == "simulator (seed 7, sessions from 2024-01-08)"
    with pytest.raises(ScalperError, match=r"covers the UTC days 2024-01-07 \.\. 2024-01-12"):
        fetch_bars(Config(), "MES", date(2024, 1, 13), date(2024, 1, 13), **window)


def test_the_simulator_takes_the_configuration_and_the_instrument() -> None:
    cfg = config_from_dict({"data": {"seed": 3, "bar_seconds": 300, "start_price": 1.1}}, env={})
    bars = simulate_market(cfg, "6E", WEEK, 2)
    expected = simulate_bars(
        WEEK, 2, seed=3, bar_seconds=300, symbol="6E", start_price=1.1, tick_size=0.00005
    )
    assert bars.equals(expected)
    assert simulate_market(cfg, "6E", WEEK, 2, seed=4).select(pl.col("close").sum()).item() != (
        bars.select(pl.col("close").sum()).item()
    )


def test_the_simulated_market_follows_the_configured_calendar() -> None:
    """The demo's and the assets' simulated market has the configured exchange's holidays."""
    cfg = config_from_dict({"session": {"calendar": "CME_Equity"}}, env={})
    christmas = date(2024, 12, 23)  # Monday; Wednesday 12-25 is a holiday
    with_calendar = simulate_market(cfg, "MES", christmas, 4)
    days = set(with_session_columns(with_calendar)["session_date"].to_list())
    assert days == {date(2024, 12, 23), date(2024, 12, 24), date(2024, 12, 26)}
    assert simulate_market(Config(), "MES", christmas, 4).height > with_calendar.height


def test_a_file_source_reads_its_times_as_the_configuration_declares(tmp_path: Path) -> None:
    """The Dagster path (`data.source: file`) answers the time-stamp questions from `data:`, as
    the CLI's options do: an end-stamped file in epoch seconds is refused, then read as starts."""
    market = simulate_bars(WEEK, 3)
    path = tmp_path / "vendor.csv"
    ends_s = (pl.col("ts") + 60 * 10**9) // 10**9
    market.with_columns(ends_s).rename({"ts": "t"}).drop("symbol").write_csv(path)
    window = {"simulation_start": WEEK, "simulation_days": 3}
    data = {"source": "file", "path": str(path), "ts_column": "t"}
    with pytest.raises(ScalperError, match=r"vendor.csv: the times look like bar ends"):
        fetch_bars(config_from_dict({"data": data}), "MES", WEEK, WEEK, **window)
    declared = config_from_dict({"data": {**data, "ts_unit": "s", "stamped": "end"}})
    bars, _ = fetch_bars(declared, "MES", WEEK, WEEK, **window)
    assert bars.select(market.columns).equals(market.filter(utc_day() == WEEK))
