"""SPEC §4 to the cent and the second: every conformance case through every driver of the engine.

The batch backtest, the incremental engine with its own fills, and the incremental engine driven by
a separate simulated broker (the live stream's paper wiring) must all reproduce `trades.csv`.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from scalper.backtest import run_backtest, trades_csv_frame, trades_from_records
from scalper.bars import read_bars, to_engine_columns
from scalper.config import load_config
from scalper.engine import engine_params, replay
from tests.shared import CASES, bars_path, expected_metrics, expected_rows, first_difference


def test_all_cases_are_present() -> None:
    assert len(CASES) >= 10, "the conformance cases must be beside the repository in ../shared"


def _rows(trades: pl.DataFrame) -> list[dict[str, str]]:
    """Trades as the text rows of the conformance `trades.csv`."""
    frame = trades_csv_frame(trades)
    return [{k: str(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_batch_backtest_reproduces_case(case: Path) -> None:
    result = run_backtest(read_bars(bars_path(case)), load_config(case / "config.yaml"))
    difference = first_difference(_rows(result.trades), expected_rows(case))
    assert difference is None, difference


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_batch_metrics_match_case(case: Path) -> None:
    result = run_backtest(read_bars(bars_path(case)), load_config(case / "config.yaml"))
    want = expected_metrics(case)
    got = result.metrics
    assert got["trades"] == want["trades"]
    assert got["net_pnl"] == pytest.approx(want["net_pnl"], abs=0.005)
    assert got["win_rate"] == pytest.approx(want["win_rate"], rel=1e-12)
    assert got["profit_factor"] == pytest.approx(want["profit_factor"], rel=1e-9)
    assert got["max_drawdown"] == pytest.approx(want["max_drawdown"], abs=0.005)


@pytest.mark.parametrize("external_fills", [False, True], ids=["own-fills", "broker-fills"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_incremental_engine_reproduces_case(case: Path, external_fills: bool) -> None:
    columns = to_engine_columns(read_bars(bars_path(case)))
    params = engine_params(load_config(case / "config.yaml"))
    trades = replay(params, columns, external_fills=external_fills)
    difference = first_difference(_rows(trades_from_records(trades)), expected_rows(case))
    assert difference is None, difference
