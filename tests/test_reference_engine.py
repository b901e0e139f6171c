"""The reference engine against the conformance cases, and its trickiest rules on tiny bar series.

The conformance cases are read in place from ``shared/conformance`` beside the repository (never
copied), so a change to a case shows up here at once.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.reference_engine import (
    RefBar,
    format_trade_row,
    load_bars_csv,
    merge_params,
    parse_ts,
    run_reference,
)
from tests.shared import CASES, CONFORMANCE, bars_path


@cache
def conformance_bars(path: Path) -> tuple[RefBar, ...]:
    """Several cases share one bars file; parse each once."""
    return tuple(load_bars_csv(path))


def row(rows: Sequence[dict[str, str]], index: int) -> dict[str, str] | None:
    """The row at ``index``, or None past the end (so a missing trade shows as a difference)."""
    return rows[index] if index < len(rows) else None


def test_conformance_cases_are_present() -> None:
    """An empty parametrization would pass silently; the cases must be there."""
    assert len(CASES) >= 10, f"expected the conformance cases in {CONFORMANCE}"


@pytest.mark.parametrize("case", CASES, ids=[p.name for p in CASES])
def test_conformance_case(case: Path) -> None:
    overrides = yaml.safe_load((case / "config.yaml").read_text()) or {}
    bars = conformance_bars(bars_path(case))
    trades = run_reference(bars, merge_params(overrides))

    with open(case / "trades.csv", newline="") as handle:
        expected = list(csv.DictReader(handle))
    got = [format_trade_row(trade) for trade in trades]
    first_difference = next(
        (i for i in range(max(len(got), len(expected))) if row(got, i) != row(expected, i)), None
    )
    if first_difference is not None:
        pytest.fail(
            f"{case.name}: {len(got)} trades, expected {len(expected)}; row {first_difference} "
            f"differs:\n  got      {row(got, first_difference)}\n"
            f"  expected {row(expected, first_difference)}"
        )

    metrics = json.loads((case / "metrics.json").read_text())
    assert len(trades) == metrics["trades"]
    assert round(math.fsum(t["pnl"] for t in trades), 2) == round(metrics["net_pnl"], 2)


# --------------------------------------------------------------------------------------------------
# Hand-made series. With lookback 5 and entry_z 1.5, five flat closes at 5000 followed by a close at
# 4990 give z = -1.79 (a long signal); unless a test says so, no other bar reaches |z| = 1.5. exit_z
# of -10 means "long exits when z >= 10", i.e. never on the signal, so only stops, targets and the
# risk gate decide. Times are UTC (New York is EDT = UTC-4 in June); 14:00Z is inside the default
# entry window.

Ohlc = tuple[float, float, float, float]
TICK = 0.25
MINUTE_NS = 60 * 1_000_000_000
QUIET: dict[str, Any] = {
    "strategy": {"lookback": 5, "entry_z": 1.5, "exit_z": -10.0},
    "risk": {
        "daily_loss_limit": 0,
        "daily_drawdown_limit": 0,
        "max_consecutive_losses": 0,
        "max_trades_per_day": 0,
        "kill_switch_loss": 0,
        "min_account_balance": 0,
    },
}


def params(**sections: dict[str, Any]) -> dict:
    """QUIET merged with per-test overrides, section by section."""
    merged = merge_params(QUIET)
    for section, values in sections.items():
        merged[section].update(values)
    return merged


def flat(price: float) -> Ohlc:
    return (price, price, price, price)


def minute_bars(start: str, ohlc: Sequence[Ohlc]) -> list[RefBar]:
    """Consecutive 1-minute bars from ``start`` (ISO 8601, UTC)."""
    t0 = parse_ts(start)
    return [
        RefBar(ts=t0 + i * MINUTE_NS, open=o, high=h, low=lo, close=c, volume=100)
        for i, (o, h, lo, c) in enumerate(ohlc)
    ]


def long_signal_then(*after: Ohlc) -> list[Ohlc]:
    """Five flat bars, the signal bar (close 4990), then ``after``: the entry fills at its open."""
    return [*[flat(5000.0)] * 5, flat(4990.0), *after]


def test_signal_series_enters_long_at_next_open_with_slippage() -> None:
    bars = minute_bars("2024-06-10T14:00:00Z", long_signal_then((4990, 4990, 4990, 4990)))
    (trade,) = run_reference(bars, params())
    assert trade["side"] == "long"
    assert trade["entry_ts"] == bars[6].ts
    assert trade["entry_price"] == 4990.0 + TICK
    assert trade["exit_reason"] == "end_of_data"
    assert trade["exit_price"] == 4990.0 - TICK


def test_stop_gapped_through_on_a_bar_after_entry_fills_at_the_open() -> None:
    # Entry 4990.25, stop 8 ticks below = 4988.25; the next bar opens at 4986, through the stop.
    bars = minute_bars(
        "2024-06-10T14:00:00Z",
        long_signal_then((4990, 4990.5, 4989.5, 4990), (4986, 4987, 4985, 4986)),
    )
    (trade,) = run_reference(bars, params(risk={"stop_loss_ticks": 8}))
    assert trade["exit_reason"] == "stop"
    assert trade["exit_ts"] == bars[7].ts
    assert trade["exit_price"] == 4986.0 - TICK  # open - slip, not stop - slip (4988.0)
    assert trade["pnl"] == pytest.approx((4985.75 - 4990.25) * 5.0 - 0.84)


def test_stop_on_the_entry_bar_ignores_the_gap_rule() -> None:
    # With 2 ticks of slippage and a 1-tick stop, the entry fill 4990.5 puts the stop (4990.25)
    # above the entry bar's own open. On the entry bar the gap rule does not apply: the stop fills
    # at stop - slip = 4989.75, not at open - slip = 4989.5.
    bars = minute_bars("2024-06-10T14:00:00Z", long_signal_then((4990, 4990.5, 4989.5, 4990)))
    (trade,) = run_reference(bars, params(risk={"stop_loss_ticks": 1}, costs={"slippage_ticks": 2}))
    assert trade["entry_price"] == 4990.5
    assert trade["exit_ts"] == trade["entry_ts"] == bars[6].ts
    assert (trade["exit_reason"], trade["exit_price"]) == ("stop", 4989.75)


def test_stop_wins_when_stop_and_target_are_both_touched() -> None:
    # Entry 4990.25: stop 4988.25, target 4992.25; the entry bar spans both.
    bars = minute_bars("2024-06-10T14:00:00Z", long_signal_then((4990, 4993, 4988, 4990)))
    (trade,) = run_reference(bars, params(risk={"stop_loss_ticks": 8, "take_profit_ticks": 8}))
    assert (trade["exit_reason"], trade["exit_price"]) == ("stop", 4988.0)


def test_a_protective_exit_leaves_the_bar_close_free_for_a_new_entry() -> None:
    # The entry bar hits the target (4992.25) and then closes at 4970, a new long signal.
    bars = minute_bars(
        "2024-06-10T14:00:00Z", long_signal_then((4990, 4993, 4970, 4970), flat(4970.0))
    )
    first, second = run_reference(bars, params(risk={"take_profit_ticks": 8}))
    assert (first["exit_reason"], first["exit_ts"]) == ("target", bars[6].ts)
    assert (second["entry_ts"], second["entry_price"]) == (bars[7].ts, 4970.0 + TICK)


def test_target_gapped_through_after_entry_fills_at_the_open_without_slippage() -> None:
    bars = minute_bars(
        "2024-06-10T14:00:00Z",
        long_signal_then((4990, 4990.5, 4989.5, 4990), (4994, 4995, 4993.5, 4994)),
    )
    (trade,) = run_reference(bars, params(risk={"stop_loss_ticks": 8, "take_profit_ticks": 8}))
    assert (trade["exit_reason"], trade["exit_price"]) == ("target", 4994.0)


def episodes(*starts: str, entry_bar: Ohlc) -> list[RefBar]:
    """One signal-entry-exit episode at each start time (UTC); the entry bar hits a target/stop."""
    return [bar for start in starts for bar in minute_bars(start, long_signal_then(entry_bar))]


WIN_BAR = (4990.0, 4993.0, 4990.0, 4991.0)  # target 4992.25 touched on the entry bar
LOSS_BAR = (4990.0, 4990.5, 4988.0, 4989.0)  # stop 4988.25 touched on the entry bar
# Monday 2024-06-10, New York: the first episode signals at 10:05, the second at 17:59 (the last
# bar of Monday's session: its close is 18:00, but a bar's session is that of its start), the third
# at 18:10, in Tuesday's session.
SESSION_STARTS = ("2024-06-10T14:00:00Z", "2024-06-10T21:54:00Z", "2024-06-10T22:05:00Z")
LATE_ENTRIES = {"entry_start": "00:00", "entry_end": "23:59"}


@pytest.mark.parametrize(
    ("entry_bar", "risk"),
    [
        pytest.param(WIN_BAR, {"max_trades_per_day": 1}, id="trades_per_day"),
        pytest.param(LOSS_BAR, {"daily_loss_limit": 10.0}, id="daily_loss"),
        pytest.param(
            LOSS_BAR, {"max_consecutive_losses": 1, "loss_pause_minutes": 600}, id="loss_pause"
        ),
    ],
)
def test_session_roll_at_session_end_resets_the_daily_counters(
    entry_bar: Ohlc, risk: dict[str, Any]
) -> None:
    sl_tp = {"stop_loss_ticks": 8, "take_profit_ticks": 8}
    bars = episodes(*SESSION_STARTS, entry_bar=entry_bar)
    unlimited = run_reference(bars, params(session=LATE_ENTRIES, risk=sl_tp))
    assert len(unlimited) == 3, "every episode trades when no limit applies"

    limited = run_reference(bars, params(session=LATE_ENTRIES, risk={**sl_tp, **risk}))
    # The second episode is blocked by the first one's day; the third is a new session.
    assert [t["entry_ts"] for t in limited] == [unlimited[0]["entry_ts"], unlimited[2]["entry_ts"]]


def test_an_exit_filled_at_the_first_bar_of_a_session_counts_in_the_new_session() -> None:
    # Entry 17:51 New York; max_duration fires at the 17:59 bar's close (18:00), so the exit fills
    # at the open of the 18:00 bar, the first of Tuesday's session. The roll (step 1) precedes the
    # fill (step 2): the loss is Tuesday's and blocks Tuesday's next entry at the daily loss limit.
    monday = minute_bars("2024-06-10T21:45:00Z", long_signal_then(*[flat(4990.0)] * 9))
    first_tuesday_bar = RefBar(parse_ts("2024-06-10T22:00:00Z"), 4985, 4990, 4985, 4990, 100)
    tuesday = minute_bars("2024-06-10T22:05:00Z", long_signal_then(flat(4990.0)))
    bars = [*monday, first_tuesday_bar, *tuesday]
    session = {"entry_start": "00:00", "entry_end": "23:59", "flatten_at": "18:00"}

    unlimited = run_reference(bars, params(session=session, risk={"max_position_minutes": 9}))
    assert [t["exit_reason"] for t in unlimited] == ["max_duration", "end_of_data"]
    assert unlimited[0]["exit_ts"] == first_tuesday_bar.ts
    assert unlimited[0]["pnl"] == pytest.approx((4984.75 - 4990.25) * 5.0 - 0.84)

    risk = {"max_position_minutes": 9, "daily_loss_limit": 10.0}
    assert run_reference(bars, params(session=session, risk=risk)) == unlimited[:1]
