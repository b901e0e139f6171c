"""Resampling: OHLCV aggregation per bucket, stamps at bucket starts, nothing invented, no bar
reaching past its bucket, and the same result in one step or two."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalper.errors import DataError, ScalperError
from scalper.resample import resample
from scalper.simulate import simulate_bars

NS = 10**9
BASE = 1_717_977_600 * NS  # 2024-06-10T00:00:00Z
SOURCES = (1, 5, 60)
# Bar sizes that divide a day, by source size they are a multiple of.
TARGETS = {
    s: [t for t in (5, 10, 15, 30, 60, 120, 300, 900, 3600, 7200) if t % s == 0] for s in SOURCES
}


@st.composite
def bar_series(draw: st.DrawFn) -> tuple[pl.DataFrame, int]:
    """Bars of `source` seconds at random (sorted, distinct) grid positions, valid OHLCV."""
    source = draw(st.sampled_from(SOURCES))
    slots = sorted(draw(st.sets(st.integers(0, 20_000), min_size=1, max_size=200)))
    n = len(slots)
    ticks = st.lists(st.integers(4000, 4100), min_size=n, max_size=n)
    opens, closes = draw(ticks), draw(ticks)
    ups = draw(st.lists(st.integers(0, 8), min_size=n, max_size=n))
    downs = draw(st.lists(st.integers(0, 8), min_size=n, max_size=n))
    volumes = draw(st.lists(st.integers(0, 5_000), min_size=n, max_size=n))
    frame = pl.DataFrame(
        {
            "ts": [BASE + slot * source * NS for slot in slots],
            "open": [o * 0.25 for o in opens],
            "high": [(max(o, c) + u) * 0.25 for o, c, u in zip(opens, closes, ups, strict=True)],
            "low": [(min(o, c) - d) * 0.25 for o, c, d in zip(opens, closes, downs, strict=True)],
            "close": [c * 0.25 for c in closes],
            "volume": volumes,
        }
    )
    return frame, source


def brute_force(df: pl.DataFrame, seconds: int) -> list[tuple]:
    """The expected bars, by a plain loop over the input rows."""
    buckets: dict[int, list[dict]] = {}
    for row in df.iter_rows(named=True):
        buckets.setdefault(row["ts"] // (seconds * NS) * seconds * NS, []).append(row)
    return [
        (
            start,
            rows[0]["open"],
            max(r["high"] for r in rows),
            min(r["low"] for r in rows),
            rows[-1]["close"],
            sum(r["volume"] for r in rows),
        )
        for start, rows in buckets.items()
    ]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), series=bar_series())
def test_each_bar_aggregates_exactly_the_bars_inside_it(
    data: st.DataObject, series: tuple[pl.DataFrame, int]
) -> None:
    df, source = series
    seconds = data.draw(st.sampled_from(TARGETS[source]))
    out = resample(df, seconds, source_seconds=source)
    assert out.rows() == brute_force(df, seconds)
    assert out["volume"].sum() == df["volume"].sum()
    assert out["ts"].is_sorted() and out["ts"].n_unique() == out.height
    # No look-ahead: every input bar ends by the close of the bar it went into.
    starts = df["ts"] // (seconds * NS) * (seconds * NS)
    assert ((df["ts"] + source * NS) <= starts + seconds * NS).all()


@settings(max_examples=100, deadline=None)
@given(data=st.data(), series=bar_series())
def test_two_steps_equal_one(data: st.DataObject, series: tuple[pl.DataFrame, int]) -> None:
    df, source = series
    first = data.draw(st.sampled_from(TARGETS[source]))
    second = data.draw(st.sampled_from([t for t in TARGETS[source] if t % first == 0]))
    two_steps = resample(resample(df, first, source_seconds=source), second, source_seconds=first)
    assert two_steps.equals(resample(df, second, source_seconds=source))


def test_resampling_to_the_same_size_changes_nothing() -> None:
    bars = simulate_bars(date(2024, 6, 10), 2)
    assert resample(bars, 60).equals(bars)


def test_five_second_bars_to_minutes() -> None:
    fine = simulate_bars(date(2024, 6, 10), 1, bar_seconds=5, seed=4)
    minutes = resample(fine, 60)  # source size inferred: 5 s
    assert minutes.height == fine.height // 12
    assert minutes["volume"].sum() == fine["volume"].sum()
    assert minutes.columns == [*fine.columns]
    assert minutes.row(0) == resample(fine.head(12), 60).row(0)


def test_partial_bars_at_session_edges_are_kept_not_filled() -> None:
    """In winter Globex opens at 23:00 UTC: the 2-hour bar from 22:00 holds only the first hour,
    and the break (22:00-23:00 UTC) adds no bars."""
    bars = simulate_bars(date(2024, 1, 9), 1, seed=4)  # session Mon 18:00 .. Tue 17:00 New York
    two_hours = resample(bars, 7200)
    first = two_hours.row(0, named=True)
    assert first["ts"] == bars["ts"][0] - 3600 * NS  # stamped at the bucket start, 22:00
    assert first["open"] == bars["open"][0]
    assert first["volume"] == bars.head(60)["volume"].sum()
    assert two_hours.height == 12  # 23:00 .. 22:00 UTC: 1 partial + 11 whole buckets


def test_contracts_are_never_merged() -> None:
    bars = simulate_bars(date(2024, 6, 10), 1)
    both = pl.concat(
        [bars.with_columns(contract=pl.lit("MESM4")), bars.with_columns(contract=pl.lit("MESU4"))]
    ).sort("ts", "contract")
    out = resample(both, 300)
    assert out.columns == [*bars.columns, "contract"]
    alone = resample(bars, 300)
    for contract in ("MESM4", "MESU4"):
        assert out.filter(contract=contract).drop("contract").equals(alone)


def test_mistakes() -> None:
    bars = simulate_bars(date(2024, 6, 10), 1)
    with pytest.raises(ScalperError, match=r"bar_seconds must divide 86400 \(got 7\)"):
        resample(bars, 7)
    with pytest.raises(DataError, match="90-second bars cannot be made from 60-second bars"):
        resample(bars, 90)
    shifted = bars.with_columns(pl.col("ts") + 30 * NS)
    with pytest.raises(DataError, match="is not on the 60-second grid"):
        resample(shifted, 300)
    with pytest.raises(DataError, match="bars must be in time order"):
        resample(bars.reverse(), 300)
