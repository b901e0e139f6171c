"""Backtest of one configuration over one bars frame, and how its results are written.

The trades table is SPEC §4's: `entry_ts, exit_ts` as UTC ISO 8601, `side, qty, entry_price,
exit_price, pnl, exit_reason`. Prices and P&L are written to the cent, as a broker statement is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from scalper.bars import to_engine_columns
from scalper.config import Config
from scalper.engine import EXIT_REASONS, backtest_columns, engine_params, session_span
from scalper.files import atomic_write

TRADE_COLUMNS = (
    "entry_ts",
    "exit_ts",
    "side",
    "qty",
    "entry_price",
    "exit_price",
    "pnl",
    "exit_reason",
)


@dataclass(frozen=True)
class BacktestResult:
    """Trades (polars), per-bar equity, per-session P&L and the metrics of one run, with the
    entries the risk gate refused for the reasons of SPEC §4.9 (`atr`, `size`)."""

    trades: pl.DataFrame
    equity: pl.DataFrame
    sessions: pl.DataFrame
    metrics: dict[str, Any]
    gate_refusals: dict[str, int] = field(default_factory=dict)

    def write_trades_csv(self, path: str | Path) -> None:
        write_trades_csv(self.trades, path)

    def summary(self) -> str:
        """A few lines a trader reads first."""
        m = self.metrics
        lines = [
            f"trades          {m['trades']}",
            f"net P&L         {m['net_pnl']:,.2f}",
            f"win rate        {_pct(m['win_rate'])}",
            f"profit factor   {_num(m['profit_factor'])}",
            f"max drawdown    {m['max_drawdown']:,.2f} ({_pct(m['max_drawdown_pct'])})",
            f"sharpe          {_num(m['sharpe'])}",
            f"sortino         {_num(m['sortino'])}",
            f"avg trade       {_num(m['avg_trade'])}",
            f"exposure        {_pct(m['exposure'])}",
            f"sessions        {m['sessions']}",
        ]
        refused = ", ".join(f"{why} {n}" for why, n in self.gate_refusals.items() if n)
        if refused:
            lines.append(f"refused entries {refused}")
        return "\n".join(lines)

    def metrics_json(self) -> dict[str, Any]:
        """Metrics with undefined values as None (strict JSON has no NaN or infinity)."""
        return {
            k: (v if not isinstance(v, float) or math.isfinite(v) else None)
            for k, v in self.metrics.items()
        }


def write_trades_csv(trades: pl.DataFrame, path: str | Path) -> None:
    """The SPEC §4 trades CSV at `path`; an interrupted write never leaves half a file."""
    with atomic_write(path) as fh:
        trades_csv_frame(trades).write_csv(fh)


def trades_csv_frame(trades: pl.DataFrame) -> pl.DataFrame:
    """Trades as the text columns of the SPEC §4 CSV (times to the second, money to the cent)."""
    iso = "%Y-%m-%dT%H:%M:%S+00:00"
    return trades.select(
        pl.col("entry_ts").dt.strftime(iso),
        pl.col("exit_ts").dt.strftime(iso),
        "side",
        "qty",
        *(
            pl.col(c).map_elements(lambda x: f"{x:.2f}", return_dtype=pl.String)
            for c in ("entry_price", "exit_price", "pnl")
        ),
        "exit_reason",
    )


def trades_from_records(trades: list[dict[str, Any]]) -> pl.DataFrame:
    """The trades table from the incremental engine's trade records."""
    utc = pl.Datetime("ns", "UTC")
    schema = {
        "entry_ts": pl.Int64,
        "exit_ts": pl.Int64,
        "side": pl.String,
        "qty": pl.Int64,
        "entry_price": pl.Float64,
        "exit_price": pl.Float64,
        "pnl": pl.Float64,
        "exit_reason": pl.String,
    }
    frame = pl.DataFrame(trades, schema=schema, orient="row" if not trades else None)
    return frame.with_columns(pl.col("entry_ts", "exit_ts").cast(utc))


def _num(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:,.2f}"


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.1f}%"


def run_backtest(bars: pl.DataFrame, cfg: Config) -> BacktestResult:
    """Backtests `bars` (normalized, validated) with `cfg` in the Rust engine."""
    columns = to_engine_columns(bars)
    params = engine_params(cfg, sessions=session_span(cfg, columns["ts"]))
    raw = backtest_columns(columns, params)
    return result_from_engine(raw, columns["ts"])


def result_from_engine(raw: dict[str, Any], ts: np.ndarray) -> BacktestResult:
    """Wraps the engine's arrays in frames (no copies of the large equity column)."""
    utc = pl.Datetime("ns", "UTC")
    reasons = np.asarray(EXIT_REASONS, dtype=object)
    trades = pl.DataFrame(
        {
            "entry_ts": pl.Series(raw["entry_ts"]).cast(utc),
            "exit_ts": pl.Series(raw["exit_ts"]).cast(utc),
            "side": pl.Series(np.where(raw["side"] > 0, "long", "short"), dtype=pl.String),
            "qty": raw["qty"],
            "entry_price": raw["entry_price"],
            "exit_price": raw["exit_price"],
            "pnl": raw["pnl"],
            "exit_reason": pl.Series(reasons[raw["exit_reason"]].tolist(), dtype=pl.String),
        }
    )
    equity = pl.DataFrame({"ts": pl.Series(ts).cast(utc), "equity": raw["equity"]})
    sessions = pl.DataFrame(
        {
            "session_date": pl.Series(raw["session_day"]).cast(pl.Date),
            "pnl": raw["session_pnl"],
        }
    )
    return BacktestResult(
        trades=trades,
        equity=equity,
        sessions=sessions,
        metrics=raw["metrics"],
        gate_refusals=dict(raw.get("gate_refusals", {})),
    )
