"""Continuous series from per-contract bars (SPEC §2): per session, the roll rule's contract.

For each session date (CME Globex: from 18:00 New York the bars belong to the next day) the series
takes the bars of `scalper.instruments.front_contract` for that date: the same rule live trading
uses, so a backtest on the series rolls when the trader would. A session whose front contract has no
bars in the input has no bars in the series (nothing is borrowed from another contract).

`adjust="none"` keeps traded prices, with a jump at each roll (the spread between the contracts).
`adjust="back"` removes the jumps by the difference method: at each roll the gap `new - old` is
measured and added to every earlier bar, so the latest contract keeps its real prices and returns
across a roll are the returns a held-and-rolled position earned. The gap is measured on the close
of one bar time at which both contracts traded: the one nearest to the first bar of the new
contract (the earlier one on a tie), i.e. the spread where the roll happened. Adjusted prices are
for signals and P&L differences only; after many rolls with a growing gap they can even fall
to zero or below, which `validate_bars` rejects rather than letting a strategy trade on them.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

import polars as pl

from scalper.bars import BAR_COLUMNS, PRICE_COLUMNS, iso_utc, validate_bars
from scalper.calendar import with_session_columns
from scalper.errors import DataError, ScalperError
from scalper.instruments import DEFAULT_ROLL_DAYS, front_contract

Adjustment = Literal["none", "back"]


def continuous(
    bars: pl.DataFrame,
    symbol: str,
    roll_days_before_expiry: int = DEFAULT_ROLL_DAYS,
    adjust: Adjustment = "none",
) -> pl.DataFrame:
    """The continuous `symbol` series from `bars` of several contracts (a `contract` column).

    Returns the bar columns, `symbol` and `contract` (the contract each bar comes from), one bar
    per `ts`, validated.
    """
    if adjust not in ("none", "back"):
        raise ScalperError(f"continuous: adjust must be 'none' or 'back' (got {adjust!r})")
    if "contract" not in bars.columns:
        raise DataError(f"continuous {symbol}: the bars need a contract column (e.g. ESZ3)")
    series = _front_bars(bars, symbol, roll_days_before_expiry)
    if adjust == "back":
        series = _back_adjusted(series, bars, symbol)
    series = series.select(
        *BAR_COLUMNS, pl.lit(symbol, dtype=pl.String).alias("symbol"), "contract"
    )
    return validate_bars(series, f"continuous {symbol}")


def _front_bars(bars: pl.DataFrame, symbol: str, roll_days: int) -> pl.DataFrame:
    """The bars of each session's front contract, in time order."""
    sessions = with_session_columns(bars.select("ts", "contract")).get_column("session_date")
    dates = sessions.unique().sort()
    fronts = pl.DataFrame(
        {
            "session_date": dates,
            "front": [_front(symbol, d, roll_days) for d in dates.to_list()],
        }
    )
    chosen = (
        bars.with_columns(session_date=sessions)
        .join(fronts, on="session_date", how="left", maintain_order="left")
        .filter(pl.col("contract") == pl.col("front"))
        .drop("session_date", "front")
        .sort("ts", maintain_order=True)
    )
    if chosen.height == 0:
        held = ", ".join(bars.get_column("contract").unique().sort().to_list())
        raise DataError(
            f"continuous {symbol}: no bars of the front contracts (the bars hold {held})"
        )
    return chosen


def _front(symbol: str, day: date, roll_days: int) -> str:
    return front_contract(symbol, day, roll_days).local_symbol


def _back_adjusted(series: pl.DataFrame, bars: pl.DataFrame, symbol: str) -> pl.DataFrame:
    """Add to every bar the gaps of all the rolls after it (difference method)."""
    changes = pl.col("contract") != pl.col("contract").shift(1)
    series = series.with_columns(segment=changes.fill_null(True).cum_sum() - 1)
    segments = series.group_by("segment", maintain_order=True).agg(
        pl.col("contract").first(), pl.col("ts").first().alias("start")
    )
    contracts, starts = segments["contract"].to_list(), segments["start"].to_list()
    gaps = [
        _roll_gap(bars, symbol, contracts[i], contracts[i + 1], starts[i + 1])
        for i in range(len(contracts) - 1)
    ]
    later_gaps = pl.Series([*gaps, 0.0]).reverse().cum_sum().reverse()  # segment i: gaps i, i+1…
    shift = later_gaps.gather(series["segment"])
    return series.with_columns(pl.col(c) + shift for c in PRICE_COLUMNS).drop("segment")


def _roll_gap(bars: pl.DataFrame, symbol: str, old: str, new: str, switch_ts: int) -> float:
    """`new - old` close at the bar time both traded that is nearest to the switch."""
    closes = [
        bars.filter(pl.col("contract") == name).select("ts", pl.col("close").alias(name))
        for name in (old, new)
    ]
    both = closes[0].join(closes[1], on="ts")
    if both.height == 0:
        raise DataError(
            f"continuous {symbol}: cannot back-adjust the roll {old} → {new} at "
            f"{iso_utc(switch_ts)}: no bar time at which both contracts traded"
        )
    nearest = both.sort((pl.col("ts") - switch_ts).abs(), "ts").row(0, named=True)
    return nearest[new] - nearest[old]
