"""The expectations a bars frame must meet, and the polars helper columns they run on.

Great Expectations' built-in expectations check single columns and column pairs; the bar rules
that need time or neighbours (is this bar inside the Globex week? how long was the hole before
it? did the price jump without a trade?) are turned into plain helper columns with polars first,
so GX only ever compares values with bounds and the custom logic stays in one fast, tested place.

Two suites, because a frame with missing or mistyped bar columns cannot have helper columns:

* `bars.schema` — the bar columns exist with the `BAR_SCHEMA` dtypes;
* `bars.content` — one expectation per defect, each naming the defect in its `meta`.

Values that come from the configuration (`max_gap_minutes`, `max_jump_ticks`) are GX suite
parameters, so the suites are built once per process and the values passed per run; the exchange's
hours of each bar's own date (historical halts and closes, holidays, early closes) are helper
columns, from `scalper.calendar`, the one place that knows them.

**Severity.** An `error` rule flags a bar that is wrong (a bad tick, a bar when the exchange was
closed): it is quarantined and the rest of its day stays usable. A `warning` flags a place where
something is missing, not wrong (a hole inside a session: the bars around it are sound): it is
reported, in the verdict, the status and the `gaps` asset check, and sets nothing aside, because
no bar is bad and a day with a hole is still a day of real prices.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import great_expectations as gx
import great_expectations.expectations as gxe
import polars as pl

from scalper.bars import BAR_COLUMNS, BAR_SCHEMA, PRICE_COLUMNS, TICK_TOLERANCE, off_tick_ticks
from scalper.calendar import ExchangeSchedule, with_exchange_hours

SCHEMA_SUITE = "bars.schema"
CONTENT_SUITE = "bars.content"
MAX_GAP = "max_gap_minutes"
MAX_JUMP = "max_jump_ticks"

_NS_PER_MINUTE = 60 * 1_000_000_000
_TRADING_WEEKDAYS = [1, 2, 3, 4, 5]  # ISO: Monday … Friday sessions


Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Rule:
    """One expectation and what its failure means for the rows it flags.

    `reason` describes a flagged bar; `{max_gap_minutes}`-style fields are filled from the suite
    parameters of the run. `severity` says what happens to a flagged bar (see the module
    docstring): an `error` sets it aside, a `warning` only reports it.
    """

    key: str
    reason: str
    expectation: gxe.Expectation
    severity: Severity = "error"


def _rule(
    key: str, reason: str, expectation: gxe.Expectation, *, severity: Severity = "error"
) -> Rule:
    expectation.meta = {"rule": key}
    return Rule(key, reason, expectation, severity)


# ---------------------------------------------------------------------------------------------
# Helper columns (polars)


def off_grid_column(price: str) -> str:
    """Name of the helper column holding how far `price` is from the tick grid, in ticks."""
    return f"{price}_off_grid_ticks"


def with_helper_columns(
    bars: pl.DataFrame, *, tick_size: float, schedule: ExchangeSchedule
) -> pl.DataFrame:
    """The bar columns plus the helper columns the content suite checks.

    * the exchange hours of each bar's session (`scalper.calendar.with_exchange_hours`):
      `session_weekday`, `minutes_after_close`, `minutes_into_halt`, `holiday`,
      `minutes_after_early_close` — the hours of the bar's own date, so 2013's 17:00–17:15
      trading is in the session and its 16:15–16:30 halt is not, and `schedule`'s holidays and
      early closes are the configured calendar's;
    * `gap_minutes` — trading time missing before an in-session bar since the previous in-session
      bar of the same session, a daily halt between them not counted (null across the break, the
      weekend and for bars outside the exchange's hours);
    * `unbacked_jump_ticks` — for a bar without volume, its farthest price from the previous
      close, in ticks (null for bars with volume);
    * `<price>_off_grid_ticks` — distance from the tick grid (infinite for NaN, inf or null).
    """
    frame = with_exchange_hours(bars.select(BAR_COLUMNS), schedule).with_columns(
        pl.col("holiday").cast(pl.String),  # plain text in GX's examples and the JSON verdicts
        unbacked_jump_ticks=_unbacked_jump_ticks(tick_size),
        **{off_grid_column(p): off_tick_ticks(pl.col(p), tick_size) for p in PRICE_COLUMNS},
    )
    in_session = (
        pl.col("session_weekday").is_in(_TRADING_WEEKDAYS)
        & (pl.col("minutes_after_close") < 0)
        & pl.col("minutes_into_halt").is_null()
        & pl.col("holiday").is_null()
        & ~(pl.col("minutes_after_early_close") >= 0).fill_null(False)
    )
    return frame.with_columns(gap_minutes=_gap_minutes(in_session, _bar_ns(bars))).drop(
        "session_date", "local_time", "minutes_into_session", "halted_minutes"
    )


def _bar_ns(bars: pl.DataFrame) -> int:
    """The bar length: the smallest step between consecutive bar starts (0 with < 2 distinct)."""
    step = bars.select(pl.col("ts").diff().filter(pl.col("ts").diff() > 0).min()).item()
    return int(step or 0)


def _gap_minutes(in_session: pl.Expr, bar_ns: int) -> pl.Expr:
    """Missing session time before each in-session bar, compared with the previous in-session bar.

    Out-of-session bars are skipped (they fail the calendar expectations, not this one), a new
    session starts afresh, so the daily break and the weekend are never gaps, and the minutes of
    a daily halt between the two bars are not missing: the market was not trading.
    """

    def previous(column: str) -> pl.Expr:
        return pl.when(in_session).then(pl.col(column)).shift(1).forward_fill()

    halted = pl.col("halted_minutes") - previous("halted_minutes")
    missing = (pl.col("ts") - previous("ts") - bar_ns) / _NS_PER_MINUTE - halted
    return pl.when(in_session & (previous("session_date") == pl.col("session_date"))).then(missing)


def _unbacked_jump_ticks(tick_size: float) -> pl.Expr:
    previous_close = pl.col("close").shift(1)
    farthest = pl.max_horizontal(
        (pl.col("high") - previous_close).abs(), (pl.col("low") - previous_close).abs()
    )
    return pl.when(pl.col("volume") == 0).then(farthest / tick_size)


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
                    column=off_grid_column(p), max_value=TICK_TOLERANCE
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
    """Bars only when the exchange traded, by the hours of the bar's own date; holes inside a
    session are a warning."""
    return [
        _rule(
            "session_on_weekday",
            "outside the Globex week (Sunday 18:00 New York to the Friday close)",
            gxe.ExpectColumnValuesToBeInSet(column="session_weekday", value_set=_TRADING_WEEKDAYS),
        ),
        _rule(
            "outside_daily_break",
            "inside the daily break (after the Globex close of that date, before 18:00 New York)",
            gxe.ExpectColumnValuesToBeBetween(
                column="minutes_after_close", max_value=0, strict_max=True
            ),
        ),
        _rule(
            "outside_trading_halt",
            "inside the daily trading halt of that date (16:15–16:30 New York until 2021-06-25)",
            gxe.ExpectColumnValuesToBeNull(column="minutes_into_halt"),
        ),
        _rule(
            "not_on_holiday",
            "on an exchange holiday (session.calendar)",
            gxe.ExpectColumnValuesToBeNull(column="holiday"),
        ),
        _rule(
            "before_early_close",
            "after the session's early close (session.calendar, session.early_closes)",
            gxe.ExpectColumnValuesToBeBetween(
                column="minutes_after_early_close", max_value=0, strict_max=True
            ),
        ),
        _rule(
            "no_long_gap",
            "more than {max_gap_minutes} min of session missing before this bar",
            gxe.ExpectColumnValuesToBeBetween(
                column="gap_minutes", max_value={"$PARAMETER": MAX_GAP}
            ),
            severity="warning",
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
