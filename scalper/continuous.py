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

**The stored series** (the store's `continuous` stage) is built by `build_continuous`, for the
`continuous_bars` asset and `scalper data continuous` alike, day by day from validated bars only:
each day from the contracts the roll rule makes front in the sessions touching it. If one of them
was never validated, or failed validation, it refuses (`UnvalidatedBars`, naming every such day)
and writes nothing: unvalidated bars never reach a backtest. Deferred contracts (thinly traded,
full of holes) are validated and reported, but do not block the front series. A product stored as
one series (simulator, a vendor file of front-month bars, IBKR's front series) is its own
continuous series; the simulator's has no roll gaps by construction, a vendor file keeps whatever
roll jumps it has.

Back-adjustment is a property of a window, not of a day: every roll adds its gap to all earlier
prices, so a stored day would change with every later roll. The stored series is therefore
unadjusted, and `read_continuous_bars(..., adjust="back")` adjusts a window on read, from the same
validated per-contract bars. It is what every research run reads (assets and CLI).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Literal

import polars as pl

from scalper import store
from scalper.bars import BAR_COLUMNS, PRICE_COLUMNS, iso_utc, validate_bars
from scalper.calendar import with_session_columns
from scalper.errors import DataError, ScalperError
from scalper.instruments import DEFAULT_ROLL_DAYS, MONTH_CODES, expiry, front_contract
from scalper.store import stage_root, utc_day

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
    _check_adjustment(adjust)
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
    """Add to every bar the gaps of all the rolls after it (difference method).

    A change of contract across a hole in the history that outlasts the old contract (history
    of 2013, then of 2020) is no roll that can be measured: nothing traded both at one time. Like
    the price change over any hole, it is left as it is (gap 0), not refused.
    """
    changes = pl.col("contract") != pl.col("contract").shift(1)
    series = series.with_columns(segment=changes.fill_null(True).cum_sum() - 1)
    segments = series.group_by("segment", maintain_order=True).agg(
        pl.col("contract").first(),
        pl.col("ts").first().alias("start"),
        pl.col("ts").last().alias("end"),
    )
    contracts, starts = segments["contract"].to_list(), segments["start"].to_list()
    ends = segments["end"].to_list()
    gaps = [
        0.0
        if _expired_before(contracts[i], _utc_date(ends[i]), _utc_date(starts[i + 1]))
        else _roll_gap(bars, symbol, contracts[i], contracts[i + 1], starts[i + 1])
        for i in range(len(contracts) - 1)
    ]
    later_gaps = pl.Series([*gaps, 0.0]).reverse().cum_sum().reverse()  # segment i: gaps i, i+1…
    shift = later_gaps.gather(series["segment"])
    return series.with_columns(pl.col(c) + shift for c in PRICE_COLUMNS).drop("segment")


def _expired_before(contract: str, seen: date, day: date) -> bool:
    """Whether `contract` (`ESH4`), which traded on `seen`, expired before `day`: its year digit
    names the first such year from `seen` on."""
    month = MONTH_CODES.index(contract[-2]) + 1
    year = seen.year + (int(contract[-1]) - seen.year) % 10
    if expiry(year, month) < seen:
        year += 10
    return expiry(year, month) < day


def _utc_date(ts: int) -> date:
    return (datetime(1970, 1, 1) + timedelta(microseconds=ts // 1000)).date()


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


def _check_adjustment(adjust: str) -> None:
    if adjust not in ("none", "back"):
        raise ScalperError(f"continuous: adjust must be 'none' or 'back' (got {adjust!r})")


# ---------------------------------------------------------------------------------------------
# The stored series


class UnvalidatedBars(DataError):
    """`build_continuous` refused: days it needs are not validated, or failed validation.

    `refusals` names every such day (series, day, why); shells show them (Dagster metadata).
    """

    def __init__(self, product: str, refusals: Sequence[str]) -> None:
        self.refusals = list(refusals)
        super().__init__(f"continuous {product} refuses unvalidated bars: {self.shown}")

    @property
    def shown(self) -> str:
        """The first few refusals, and how many more."""
        more = len(self.refusals) - 5
        return "; ".join(self.refusals[:5]) + (f"; and {more} more" if more > 0 else "")


def build_continuous(
    requested: Mapping[str, Sequence[date]], roll_days: int
) -> dict[str, pl.DataFrame]:
    """Build the stored continuous series of each product on its UTC `days` from validated bars,
    replacing those days of the `continuous` stage; returns each product's series (unadjusted).

    Refuses (`UnvalidatedBars`, nothing written) unless every day it needs is validated and
    usable. `roll_days` is the roll rule, `instrument.roll_days_before_expiry`.
    """
    inputs = {
        product: {day: front_inputs(product, day, roll_days) for day in days}
        for product, days in requested.items()
    }
    for product, by_day in inputs.items():
        refusals = [
            why
            for day, names in by_day.items()
            for name in names
            if (why := _refusal(name, day)) is not None
        ]
        if refusals:
            raise UnvalidatedBars(product, refusals)
    frames = {}
    for product, by_day in inputs.items():
        series = front_series(product, by_day, roll_days)
        built = {product: series} if series.height else {}
        store.replace_days(built, product, list(by_day), "continuous")
        mark_continuous(product, series, by_day)
        frames[product] = series
    return frames


def front_inputs(product: str, day: date, roll_days: int) -> list[str]:
    """The raw series the continuous series takes a day's bars from: the product's single series,
    or the roll rule's front contracts of the two sessions touching the UTC day."""
    raw = [
        s
        for s in store.stored_series(product, "raw")
        if day in store.partitions(s, stage_root("raw"))
    ]
    if raw == [product]:
        return raw
    fronts = {_front(product, day + timedelta(days=n), roll_days) for n in (0, 1)}
    return [s for s in raw if s in fronts]


def _refusal(series: str, day: date) -> str | None:
    """Why a validated day may not be used, or None when it may."""
    status = store.partition_status(series, day, stage_root("validated"))
    if status is None:
        return f"{series} {day} is not validated yet"
    if store.is_validated(status):
        return None
    problems = ", ".join(f"{reason} ({n})" for reason, n in status.get("problems", {}).items())
    return (
        f"{series} {day} failed validation with {status['failed']} unfixable problem(s): "
        f"{problems} (a record of an older version: `scalper validate` the day again)"
    )


def front_series(product: str, inputs: Mapping[date, list[str]], roll_days: int) -> pl.DataFrame:
    """The unadjusted continuous series over the days of `inputs`, day by day (the front contract
    of a bar depends only on its session, so days are independent)."""
    root = stage_root("validated")
    days = []
    for day, names in inputs.items():
        bars = [store.read_range(n, day, day, root, validated_only=True) for n in names]
        bars = [b for b in bars if b.height]
        if not bars:
            continue
        if names == [product]:  # one series as delivered: it is the continuous series
            series = bars[0]
            if "contract" not in series.columns:  # an IBKR front series names its contracts
                series = series.with_columns(contract=pl.lit(product))
        else:
            series = continuous(pl.concat(bars), product, roll_days)
        days.append(series.select(*BAR_COLUMNS, "symbol", "contract"))
    return pl.concat(days) if days else pl.DataFrame()


def mark_continuous(product: str, series: pl.DataFrame, inputs: Mapping[date, list[str]]) -> None:
    """A status record per built day: made only of validated bars, so readers asking for validated
    data (`read_range(..., validated_only=True)`) may use it."""
    if series.height == 0:
        return
    counts = series.group_by(day=utc_day()).agg(
        rows=pl.len(), contracts=pl.col("contract").unique()
    )
    for day, rows, contracts in counts.iter_rows():
        status = {
            "validated": rows, "failed": 0, "quarantined": 0,
            "contracts": sorted(contracts), "built_from": inputs[day],
        }  # fmt: skip
        store.mark_partition(product, day, status, stage_root("continuous"))


def read_continuous_bars(
    symbol: str,
    start: date,
    end: date,
    adjust: Adjustment = "none",
    *,
    roll_days: int = DEFAULT_ROLL_DAYS,
) -> pl.DataFrame:
    """The stored continuous `symbol` series for the UTC days `start` … `end`: bar columns,
    `symbol` and `contract`, in time order.

    Days not built are absent (a closed market and a missing day look alike: check what was
    built). `adjust="back"` back-adjusts the window by the difference method, anchored at its last
    contract, from the validated per-contract bars (`roll_days` must be the rule the series was
    built with, `instrument.roll_days_before_expiry`).
    """
    _check_adjustment(adjust)
    series = store.read_range(symbol, start, end, stage_root("continuous"), validated_only=True)
    if series.height == 0:
        series = series.with_columns(contract=pl.lit(None, dtype=pl.String))
    if adjust == "back" and series.get_column("contract").n_unique() > 1:  # a roll to adjust
        inputs = [_validated_day(symbol, contract, day) for contract, day in roll_inputs(series)]
        series = continuous(pl.concat(inputs), symbol, roll_days, adjust="back")
    return series.select(*BAR_COLUMNS, "symbol", "contract")


def roll_inputs(series: pl.DataFrame) -> list[tuple[str, date]]:
    """(contract, UTC day) of the validated bars a back-adjustment of `series` reads: each day of
    each contract in the series, plus the day of each roll for the contract rolled from, since
    the gap is measured at a bar time both contracts traded (SPEC §2); not when the contract
    rolled from had expired by then (the history has a hole there, see `_back_adjusted`)."""
    days = series.select("contract", day=utc_day())
    changes = days.with_columns(
        previous=pl.col("contract").shift(1), previous_day=pl.col("day").shift(1)
    ).filter(pl.col("contract") != pl.col("previous"))
    rolled_from = changes.filter(
        [
            not _expired_before(old, seen, day)
            for old, seen, day in changes.select("previous", "previous_day", "day").iter_rows()
        ]
    ).select(contract="previous", day="day")
    return sorted(pl.concat([days, rolled_from]).unique().iter_rows())


def _validated_day(symbol: str, contract: str, day: date) -> pl.DataFrame:
    """One validated day of one contract, which a back-adjustment cannot do without."""
    root = stage_root("validated")
    if day not in store.partitions(contract, root):
        raise DataError(
            f"continuous {symbol}: cannot back-adjust without the validated {contract} bars of "
            f"{day} (a front-only series, e.g. an IBKR front download, has no per-contract bars)"
        )
    return store.read_range(contract, day, day, root, validated_only=True)
