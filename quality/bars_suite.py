"""The expectations a bars frame must meet, and the polars helper columns they run on.

Great Expectations' built-in expectations check single columns and column pairs; the bar rules
that need time or neighbours (is this bar inside the Globex week? how long was the hole before
it? did the price jump without a trade?) are turned into plain helper columns with polars first,
so GX only ever compares values with bounds and the custom logic stays in one fast, tested place.

Two suites, because a frame with missing or mistyped bar columns cannot have helper columns:

* `bars.schema` — the bar columns exist with the `BAR_SCHEMA` dtypes;
* `bars.content` — one expectation per defect, each naming the defect in its `meta`.

Values that come from the configuration (`max_gap_minutes`, `max_jump_ticks`, the session length)
are GX suite parameters, so the suites are built once per process and the values passed per run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import time

import great_expectations as gx
import great_expectations.expectations as gxe
import polars as pl

from scalper.bars import BAR_COLUMNS, BAR_SCHEMA, PRICE_COLUMNS
from scalper.calendar import GLOBEX_CLOSE, with_session_columns
from scalper.config import SessionConfig

SCHEMA_SUITE = "bars.schema"
CONTENT_SUITE = "bars.content"
MAX_GAP = "max_gap_minutes"
MAX_JUMP = "max_jump_ticks"
SESSION_MINUTES = "session_minutes"

GRID_TOLERANCE_TICKS = 1e-6
"""How far (in ticks) a float price may sit from the grid: prices like 1.0925 / 0.00005 carry
binary rounding noise near 1e-12 ticks, a real off-grid price is off by a sizeable fraction."""

_NS_PER_MINUTE = 60 * 1_000_000_000
_NS_PER_DAY = 24 * 60 * _NS_PER_MINUTE
_TRADING_WEEKDAYS = [1, 2, 3, 4, 5]  # ISO: Monday … Friday sessions


@dataclass(frozen=True)
class Rule:
    """One expectation and what its failure means for the rows it flags.

    `reason` describes a flagged bar; `{max_gap_minutes}`-style fields are filled from the suite
    parameters of the run. `quarantines` is False when the flagged row is itself a good bar that
    only marks where a problem is (the bar after a hole): the run fails, the bar is not set aside.
    """

    key: str
    reason: str
    expectation: gxe.Expectation
    quarantines: bool = True


def _rule(key: str, reason: str, expectation: gxe.Expectation, *, quarantines: bool = True) -> Rule:
    expectation.meta = {"rule": key}
    return Rule(key, reason, expectation, quarantines)


# ---------------------------------------------------------------------------------------------
# Helper columns (polars)


def off_grid_column(price: str) -> str:
    """Name of the helper column holding how far `price` is from the tick grid, in ticks."""
    return f"{price}_off_grid_ticks"


def session_minutes(session: SessionConfig) -> float:
    """Length of a Globex trading day in minutes: from the open (`session_end`, 18:00 New York)
    to the 17:00 close of the next day, i.e. 23 hours for the default calendar."""
    open_minute = session.session_end.hour * 60 + session.session_end.minute
    close_minute = GLOBEX_CLOSE.hour * 60 + GLOBEX_CLOSE.minute
    return float((close_minute - open_minute) % (24 * 60))


def with_helper_columns(
    bars: pl.DataFrame, *, tick_size: float, session: SessionConfig
) -> pl.DataFrame:
    """The bar columns plus the helper columns the content suite checks.

    * `session_weekday` — ISO weekday of the session date (Saturday/Sunday = weekend bar);
    * `minutes_into_session` — minutes since the session opened (≥ 23 h = the 17:00–18:00 break);
    * `gap_minutes` — session time missing before an in-session bar since the previous in-session
      bar of the same session (null across the break, the weekend and out-of-session bars);
    * `unbacked_jump_ticks` — for a bar without volume, its farthest price from the previous
      close, in ticks (null for bars with volume);
    * `<price>_off_grid_ticks` — distance from the tick grid (infinite for NaN, inf or null).
    """
    frame = with_session_columns(
        bars.select(BAR_COLUMNS), "ts", session.timezone, session.session_end
    )
    frame = frame.with_columns(
        session_weekday=pl.col("session_date").dt.weekday(),
        minutes_into_session=_minutes_into_session(session.session_end),
        unbacked_jump_ticks=_unbacked_jump_ticks(tick_size),
        **{off_grid_column(p): _off_grid_ticks(pl.col(p), tick_size) for p in PRICE_COLUMNS},
    )
    in_session = pl.col("session_weekday").is_in(_TRADING_WEEKDAYS) & (
        pl.col("minutes_into_session") < session_minutes(session)
    )
    return frame.with_columns(gap_minutes=_gap_minutes(in_session, _bar_ns(bars))).drop(
        "session_date", "local_time"
    )


def _minutes_into_session(session_open: time) -> pl.Expr:
    """Minutes since the last `session_open` wall-clock time: from the New York time of day alone,
    because a session starts at the open on the previous day (DST changes happen on Sunday
    morning, when the market is closed, so wall-clock and elapsed time agree within a session)."""
    open_ns = (session_open.hour * 60 + session_open.minute) * _NS_PER_MINUTE
    since_midnight = pl.col("local_time").cast(pl.Int64)
    return ((since_midnight - open_ns) % _NS_PER_DAY) / _NS_PER_MINUTE


def _bar_ns(bars: pl.DataFrame) -> int:
    """The bar length: the smallest step between consecutive bar starts (0 with < 2 distinct)."""
    step = bars.select(pl.col("ts").diff().filter(pl.col("ts").diff() > 0).min()).item()
    return int(step or 0)


def _gap_minutes(in_session: pl.Expr, bar_ns: int) -> pl.Expr:
    """Missing session time before each in-session bar, compared with the previous in-session bar.

    Out-of-session bars are skipped (they fail the calendar expectations, not this one), and a new
    session starts afresh, so the daily break and the weekend are never gaps.
    """
    previous_ts = pl.when(in_session).then(pl.col("ts")).shift(1).forward_fill()
    previous_session = pl.when(in_session).then(pl.col("session_date")).shift(1).forward_fill()
    missing = (pl.col("ts") - previous_ts - bar_ns) / _NS_PER_MINUTE
    return pl.when(in_session & (previous_session == pl.col("session_date"))).then(missing)


def _unbacked_jump_ticks(tick_size: float) -> pl.Expr:
    previous_close = pl.col("close").shift(1)
    farthest = pl.max_horizontal(
        (pl.col("high") - previous_close).abs(), (pl.col("low") - previous_close).abs()
    )
    return pl.when(pl.col("volume") == 0).then(farthest / tick_size)


def _off_grid_ticks(price: pl.Expr, tick_size: float) -> pl.Expr:
    ticks = price / tick_size
    return pl.when(ticks.is_finite()).then((ticks - ticks.round()).abs()).otherwise(float("inf"))


# ---------------------------------------------------------------------------------------------
# The suites (Great Expectations)


def schema_rules() -> list[Rule]:
    """The bar columns exist with their `BAR_SCHEMA` dtypes (pandas names: int64, float64)."""
    columns = _rule(
        "columns",
        f"missing some of the bar columns {', '.join(BAR_COLUMNS)}",
        gxe.ExpectTableColumnsToMatchSet(column_set=list(BAR_COLUMNS), exact_match=False),
    )
    dtypes = [
        _rule(
            f"{name}_dtype",
            f"{name} is not {str(dtype).lower()}",
            gxe.ExpectColumnValuesToBeOfType(column=name, type_=str(dtype).lower()),
        )
        for name, dtype in BAR_SCHEMA.items()
    ]
    return [columns, *dtypes]


def content_rules() -> list[Rule]:
    """One expectation per kind of bad bar, in the order their reasons are listed."""
    return [
        *(
            _rule(f"{c}_present", f"{c} has no value", gxe.ExpectColumnValuesToNotBeNull(column=c))
            for c in BAR_COLUMNS
        ),
        *_ohlc_rules(),
        *(
            _rule(
                f"{p}_positive",
                f"{p} is not positive",
                gxe.ExpectColumnValuesToBeBetween(column=p, min_value=0, strict_min=True),
            )
            for p in PRICE_COLUMNS
        ),
        *(
            _rule(
                f"{p}_on_grid",
                f"{p} is off the tick grid",
                gxe.ExpectColumnValuesToBeBetween(
                    column=off_grid_column(p), max_value=GRID_TOLERANCE_TICKS
                ),
            )
            for p in PRICE_COLUMNS
        ),
        _rule(
            "volume_not_negative",
            "volume is negative",
            gxe.ExpectColumnValuesToBeBetween(column="volume", min_value=0),
        ),
        _rule("ts_unique", "duplicate ts", gxe.ExpectColumnValuesToBeUnique(column="ts")),
        _rule(
            "ts_increasing",
            "ts before the previous bar's",
            gxe.ExpectColumnValuesToBeIncreasing(column="ts"),
        ),
        *_calendar_rules(),
    ]


def _ohlc_rules() -> list[Rule]:
    pairs = [
        ("high", "open"),
        ("high", "close"),
        ("high", "low"),
        ("open", "low"),
        ("close", "low"),
    ]
    return [
        _rule(
            f"{a}>={b}",
            f"{a} below {b}",
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=a, column_B=b, or_equal=True),
        )
        for a, b in pairs
    ]


def _calendar_rules() -> list[Rule]:
    return [
        _rule(
            "session_on_weekday",
            "outside the Globex week (Sunday 18:00 – Friday 17:00 New York)",
            gxe.ExpectColumnValuesToBeInSet(column="session_weekday", value_set=_TRADING_WEEKDAYS),
        ),
        _rule(
            "outside_daily_break",
            "inside the daily 17:00–18:00 New York break",
            gxe.ExpectColumnValuesToBeBetween(
                column="minutes_into_session",
                min_value=0,
                max_value={"$PARAMETER": SESSION_MINUTES},
                strict_max=True,
            ),
        ),
        _rule(
            "no_long_gap",
            "more than {max_gap_minutes} min of session missing before this bar",
            gxe.ExpectColumnValuesToBeBetween(
                column="gap_minutes", max_value={"$PARAMETER": MAX_GAP}
            ),
            quarantines=False,
        ),
        _rule(
            "no_unbacked_jump",
            "price jump over {max_jump_ticks} ticks without volume",
            gxe.ExpectColumnValuesToBeBetween(
                column="unbacked_jump_ticks", max_value={"$PARAMETER": MAX_JUMP}
            ),
        ),
    ]


def build_suite(name: str, rules: list[Rule]) -> gx.ExpectationSuite:
    """A GX suite holding copies of the rules' expectations (tagged with the rule key in `meta`);
    copies, because GX binds an expectation to one suite and each context needs its own."""
    return gx.ExpectationSuite(name=name, expectations=[copy.copy(r.expectation) for r in rules])
