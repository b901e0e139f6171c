"""Validate stored days: the store's `raw` stage → its `validated` stage.

One implementation behind the `validated_bars` asset and `scalper validate`, so a day validated
by either is the same day for everything downstream. For each product it copies the raw days to
the validated stage (validation copies bars, never drops them), runs the GX suites over each
series (one call for the whole range: a call costs ~0.3 s whatever its size, so per day a year of
history would spend minutes in GX overhead), quarantines the failing bars of each day with the
reason and writes each day's status record. `read_range(..., validated_only=True)` then leaves the
quarantined bars out. A hole inside a session is a warning: recorded, and the day stays usable.

It lives here, not in `scalper`, because the library never imports Great Expectations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from quality.validate import (
    QualityResult,
    bars_label,
    build_data_docs,
    split_quarantine,
    validate_frame,
)
from scalper import store
from scalper.config import Config
from scalper.progress import track
from scalper.store import day_span, product_of, stage_root, utc_day


@dataclass(frozen=True)
class ValidatedDays:
    """What one validation of stored days did, per series (`MES`, `ESZ3`, ...).

    `frames` are the bars validated as stored (quarantined bars included), `results` the GX
    verdicts on them, `statuses` the status record written for each of their days.
    """

    frames: dict[str, pl.DataFrame]
    results: dict[str, QualityResult]
    statuses: dict[str, dict[date, dict[str, Any]]]
    data_docs: Path | None

    @property
    def success(self) -> bool:
        """True when every expectation held on every series."""
        return all(result.success for result in self.results.values())

    def day_lines(self) -> list[str]:
        """One verdict line per stored day, series by series."""
        return [
            day_summary(series, day, status)
            for series, by_day in self.statuses.items()
            for day, status in by_day.items()
        ]


def validate_stored_days(
    requested: Mapping[str, Sequence[date]],
    cfg: Config,
    *,
    data_docs: bool = True,
    progress: bool | None = False,
) -> ValidatedDays:
    """Validate the raw days of each product (`requested`: product → UTC days) into the
    validated stage, replacing those days there (a day without raw bars is emptied).

    `data_docs` also renders the GX Data Docs (the slow step) and records their path in the
    status records; `progress` shows a bar per series validated.
    """
    frames: dict[str, pl.DataFrame] = {}
    for product, days in requested.items():
        series = {s: store.read_days(s, days, "raw") for s in store.stored_series(product, "raw")}
        series = {s: bars for s, bars in series.items() if bars.height}
        store.replace_days(series, product, days, "validated")
        frames.update(series)
    results = {
        s: validate_frame(bars, symbol=product_of(s), cfg=cfg, name=f"{s} {day_span(bars)}")
        for s, bars in track(frames.items(), "validate", unit="series", enabled=progress)
    }
    docs = build_data_docs(results.values()) if results and data_docs else None
    statuses = {s: record_verdict(s, frames[s], result, docs) for s, result in results.items()}
    return ValidatedDays(frames, results, statuses, docs)


def record_verdict(
    series: str, bars: pl.DataFrame, result: QualityResult, docs: Path | None
) -> dict[date, dict[str, Any]]:
    """Quarantine the failing bars of each day of `bars` and write the day's status record;
    returns the records by day."""
    root = stage_root("validated")
    set_aside = split_quarantine(bars, result)[1].drop("symbol", strict=False)
    statuses = {}
    for day in bars.select(utc_day().unique().sort()).to_series():
        store.quarantine(series, day, set_aside.filter(utc_day() == day), root)
        status = day_status(result, bars, day, docs)
        statuses[day] = store.mark_partition(series, day, status, root)
    return statuses


def day_status(
    result: QualityResult, bars: pl.DataFrame, day: date, docs: Path | None
) -> dict[str, Any]:
    """One day's share of a validation that may have covered several days.

    The counts are `QualityResult.to_dict`'s, restricted to the day: `validated` bars kept,
    `quarantined` bars set aside (an error flagged them), `warned` sound bars a warning flagged
    (the first bar after a hole); `problems` counts the flagged bars by reason. `failed`, the
    store's count of problems that setting bars aside cannot fix, is 0: every error sets its bars
    aside and a warning needs nothing set aside, so validation never makes a whole day unusable.
    """
    flagged = result.failing_rows.filter(utc_day() == day)
    quarantined = flagged.filter("quarantined").height
    rows = bars.filter(utc_day() == day).height
    problems = flagged.group_by("reason").len().sort("reason").rows()
    return {
        "rows": rows,
        "validated": rows - quarantined,
        "quarantined": quarantined,
        "warned": flagged.height - quarantined,
        "failed": 0,
        "problems": dict(problems),
        "validation": result.name,
        "validated_at": result.validated_at.isoformat(timespec="seconds"),
        "data_docs": str(docs) if docs else None,
    }


def day_summary(series: str, day: date, status: Mapping[str, Any]) -> str:
    """One line for the CLI: the day's verdict, what was set aside or warned about, and why."""
    name, rows = f"{series} {day}", bars_label(status["rows"])
    if not status["problems"]:
        return f"{name}: OK, {rows}"
    problems = ", ".join(f"{reason} ({n:,})" for reason, n in status["problems"].items())
    if not status["quarantined"]:
        return f"{name}: OK with warnings, {rows}; {problems}"
    return f"{name}: FAILED, {status['quarantined']:,} of {rows} quarantined; {problems}"
