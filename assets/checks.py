"""Asset checks of `validated_bars`, backed by the Great Expectations results of its run.

GX runs once, inside `validated_bars` (it must, to quarantine the failing bars); the checks report
its verdict, one check per group of rules, so the UI shows at a glance *what kind* of problem a
run found and how serious it is:

* `schema` (ERROR) — the bar columns exist with their types (suite `bars.schema`);
* `integrity` (ERROR) — values present, OHLC consistent, prices positive and on the tick grid,
  volume ≥ 0, `ts` unique and increasing, no price jump without volume: bad ticks, set aside;
* `calendar` (ERROR) — bars only when the exchange traded, by the hours of each bar's own date
  (`scalper.calendar.GLOBEX_EQUITY_HOURS`: the daily break, the 16:15–16:30 halt until 2021) and
  the configured calendar (`session.calendar`, `session.early_closes`: none on a full holiday,
  none after an early close): such bars are set aside;
* `gaps` (WARN) — no hole longer than `quality.max_gap_minutes` inside a session. A hole is
  missing data, not wrong data (deferred contracts are full of them): it is reported, sets no bar
  aside and leaves the day usable for the continuous series.

Each check's metadata names the failing frames and rules with examples, and links the Data Docs.
A check passes only when every frame of the run was checked by its rules: rules that could not run
(the content suite is skipped when the schema fails) are a failure, not a pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue

from quality import Outcome, QualityResult
from quality.bars_suite import schema_rules

VALIDATED_BARS = AssetKey("validated_bars")


@dataclass(frozen=True)
class RuleGroup:
    """Rules reported by one check; `rules` None means every rule no other group claims."""

    name: str
    severity: AssetCheckSeverity
    description: str
    rules: frozenset[str] | None = None

    def claims(self, rule: str) -> bool:
        return self.rules is None or rule in self.rules


GROUPS = (
    RuleGroup(
        "schema",
        AssetCheckSeverity.ERROR,
        "The bar columns exist with their types (GX suite bars.schema).",
        frozenset(rule.key for rule in schema_rules()),
    ),
    RuleGroup(
        "calendar",
        AssetCheckSeverity.ERROR,
        "Bars only when the exchange traded: inside the Globex week, outside the daily break and "
        "halt of that date's hours, not on a holiday nor after an early close of the calendar.",
        frozenset(
            {
                "session_on_weekday",
                "outside_daily_break",
                "outside_trading_halt",
                "not_on_holiday",
                "before_early_close",
            }
        ),
    ),
    RuleGroup(
        "gaps",
        AssetCheckSeverity.WARN,
        "No hole longer than quality.max_gap_minutes inside a session (a warning: no bar is set "
        "aside, the day stays usable).",
        frozenset({"no_long_gap"}),
    ),
    RuleGroup(
        "integrity",
        AssetCheckSeverity.ERROR,
        "Values present, OHLC consistent, prices positive and on the tick grid, volume >= 0, "
        "ts unique and increasing, no price jump without volume.",
    ),
)
"""In matching order: `integrity` takes whatever the others do not name."""

QUALITY_CHECKS = [
    AssetCheckSpec(group.name, asset=VALIDATED_BARS, description=group.description)
    for group in GROUPS
]


def group_of(rule: str) -> RuleGroup:
    """The group that reports `rule`."""
    return next(group for group in GROUPS if group.claims(rule))


def quality_check_results(
    results: Sequence[QualityResult], data_docs: Path | None
) -> list[AssetCheckResult]:
    """One result per group for the frames validated in a run (none: nothing to judge)."""
    return [_check(group, results, data_docs) for group in GROUPS]


def _check(
    group: RuleGroup, results: Sequence[QualityResult], data_docs: Path | None
) -> AssetCheckResult:
    mine = {r.name: [o for o in r.outcomes if group_of(o.rule) is group] for r in results}
    unchecked = [name for name, outcomes in mine.items() if not outcomes]
    failures = [(name, o) for name, outcomes in mine.items() for o in outcomes if not o.success]
    metadata = {
        "frames": MetadataValue.int(len(results)),
        "expectations": MetadataValue.int(sum(len(o) for o in mine.values())),
        "data_docs": MetadataValue.path(str(data_docs) if data_docs else "none built"),
    }
    if failures or unchecked:
        metadata["failures"] = MetadataValue.md(_failure_table(failures, unchecked))
    return AssetCheckResult(
        asset_key=VALIDATED_BARS,
        check_name=group.name,
        passed=not failures and not unchecked,
        severity=group.severity,
        description=_verdict(group, results, failures, unchecked),
        metadata=metadata,
    )


def _verdict(
    group: RuleGroup,
    results: Sequence[QualityResult],
    failures: list[tuple[str, Outcome]],
    unchecked: list[str],
) -> str:
    if not results:
        return "no bars in this run: nothing to check"
    if unchecked:
        return f"not checked (the schema suite failed): {', '.join(unchecked)}"
    if not failures:
        return f"{group.name}: OK on {len(results)} frame(s)"
    first_name, first = failures[0]
    more = f" and {len(failures) - 1} more" if len(failures) > 1 else ""
    return f"{first_name}: {first.reason} ({first.unexpected_count:,} bars){more}"


def _failure_table(failures: list[tuple[str, Outcome]], unchecked: list[str]) -> str:
    lines = ["| frame | rule | bars | examples |", "|---|---|---:|---|"]
    for name, outcome in failures:
        examples = ", ".join(str(e) for e in outcome.examples)
        lines.append(f"| {name} | {outcome.reason} | {outcome.unexpected_count:,} | {examples} |")
    lines += [f"| {name} | not checked (schema failed) | | |" for name in unchecked]
    return "\n".join(lines)
