"""Validate a bars frame with the GX suites, set failing bars aside, and publish Data Docs.

The hot path (`validate_frame`) must take well under a second for a day of 1-second bars, so
everything GX needs (context, data source, suites) is built once per process and reused, one
batch goes through each suite, and nothing is written to disk. `build_data_docs` is the slow,
separate step that persists results and renders HTML.

Row positions are the currency between GX and polars: the frame goes to pandas with a plain
0…n-1 index, so GX's `unexpected_index_list` are the polars row numbers of the failing bars.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import great_expectations as gx
import polars as pl
from great_expectations.core import ExpectationSuiteValidationResult
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)

from quality.bars_suite import (
    CONTENT_SUITE,
    MAX_GAP,
    MAX_JUMP,
    SCHEMA_SUITE,
    Rule,
    Severity,
    build_suite,
    content_rules,
    schema_rules,
    with_helper_columns,
)
from scalper.calendar import (
    ExchangeSchedule,
    exchange_schedule,
    refuse_other_market,
    with_session_columns,
)
from scalper.config import Config
from scalper.instruments import spec
from scalper.paths import subdir

REASON = "reason"
EXAMPLES = 5
"""Unexpected values kept per expectation: enough to see what is wrong, small enough to log."""

_RESULT_FORMAT = {"result_format": "COMPLETE", "partial_unexpected_count": EXAMPLES}
# COMPLETE is needed for the failing rows' indices; measured, it costs ~0.1 s more than BASIC on
# a day of 1-second bars, which keeps validation well inside its one-second budget.
_BULKY_KEYS = ("unexpected_list", "unexpected_index_list", "unexpected_index_query")


@dataclass(frozen=True)
class Outcome:
    """What one expectation found: `rows` are the 0-based positions of the bars it flags."""

    rule: str
    expectation: str
    reason: str
    success: bool
    unexpected_count: int
    examples: tuple[Any, ...]
    rows: tuple[int, ...]
    severity: Severity
    detail: str = ""


@dataclass(frozen=True)
class QualityResult:
    """The verdict on one frame (a day, a file): per-expectation outcomes and the flagged bars.

    `failing_rows` has one row per flagged bar: `row` (position), `ts` and `reason` (every
    failed rule's reason, `; `-separated) and `quarantined` (False for bars only a warning
    flags, e.g. the first bar after a hole: sound bars marking where something is missing).
    """

    name: str
    symbol: str
    rows: int
    outcomes: tuple[Outcome, ...]
    failing_rows: pl.DataFrame
    validated_at: datetime
    seconds: float
    gx_results: tuple[ExpectationSuiteValidationResult, ...] = field(repr=False)

    @property
    def success(self) -> bool:
        """True when every `error` expectation held (warnings may have been raised)."""
        return not any(o.severity == "error" for o in self.failures)

    @property
    def failures(self) -> tuple[Outcome, ...]:
        """The expectations that did not hold, warnings included, in suite order."""
        return tuple(o for o in self.outcomes if not o.success)

    @property
    def warnings(self) -> tuple[Outcome, ...]:
        """The `warning` expectations that did not hold."""
        return tuple(o for o in self.failures if o.severity == "warning")

    @property
    def quarantined(self) -> int:
        """How many bars `split_quarantine` sets aside."""
        return int(self.failing_rows["quarantined"].sum())

    @property
    def warned(self) -> int:
        """How many bars only a warning flags (kept: they are sound)."""
        return self.failing_rows.height - self.quarantined

    def summary(self) -> str:
        """One line for logs and the CLI: verdict, size and what failed or warned how often."""
        rows = bars_label(self.rows)
        found = ", ".join(f"{o.reason} ({o.unexpected_count:,})" for o in self.failures)
        if not self.success:
            return f"{self.name}: FAILED, {self.quarantined:,} of {rows} quarantined; {found}"
        if self.warnings:
            return f"{self.name}: OK with warnings, {rows}; {found}"
        return f"{self.name}: OK, {rows}, {len(self.outcomes)} expectations met"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-safe) for Dagster metadata and reports (`validated` bars kept,
        `quarantined` bars set aside, `warned` bars flagged by a warning and kept)."""
        return {
            "name": self.name,
            "symbol": self.symbol,
            "success": self.success,
            "summary": self.summary(),
            "rows": self.rows,
            "validated": self.rows - self.quarantined,
            "quarantined": self.quarantined,
            "warned": self.warned,
            "validated_at": self.validated_at.isoformat(),
            "seconds": round(self.seconds, 4),
            "failures": [
                {
                    "rule": o.rule,
                    "severity": o.severity,
                    "reason": o.reason,
                    "unexpected_count": o.unexpected_count,
                    "examples": list(o.examples),
                    "first_rows": list(o.rows[:EXAMPLES]),
                    "detail": o.detail,
                }
                for o in self.failures
            ],
        }


def validate_frame(df: pl.DataFrame, *, symbol: str, cfg: Config, name: str) -> QualityResult:
    """Run the bar suites over `df` (`BAR_SCHEMA` columns, extra columns ignored).

    The tick grid is `symbol`'s (from the instruments table); the gap and jump limits and the
    exchange calendar (`session.calendar`, `session.early_closes`: holidays, early closes) come
    from `cfg`, the regular hours of each date from `scalper.calendar`. A frame whose bar
    columns are missing or mistyped fails the schema suite and is quarantined whole, since none
    of its bars can be checked.
    """
    started = time.perf_counter()
    if symbol != cfg.instrument.symbol:  # the configuration's own: its warning was given at load
        refuse_other_market(cfg.session.calendar, symbol)
    tick_size = spec(symbol).tick_size
    parameters = _parameters(cfg)
    # dtypes are column facts: an empty slice shows them without the nulls that would turn an
    # Int64 column into float64 on the way to pandas (nulls are the content suite's business)
    gx_schema = _run(SCHEMA_SUITE, df.head(0), parameters)
    results = [gx_schema]
    if gx_schema.success:
        schedule = _schedule(df, cfg)
        helpers = with_helper_columns(df, tick_size=tick_size, schedule=schedule)
        results.append(_run(CONTENT_SUITE, helpers, parameters))
    outcomes = tuple(o for r in results for o in _outcomes(r, df.height, parameters))
    return QualityResult(
        name=name,
        symbol=symbol,
        rows=df.height,
        outcomes=outcomes,
        failing_rows=_failing_rows(df, outcomes),
        validated_at=datetime.now(UTC),
        seconds=time.perf_counter() - started,
        gx_results=tuple(results),
    )


def split_quarantine(df: pl.DataFrame, result: QualityResult) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`(good, quarantined)`: the bars of `df` that passed, and those that did not plus `reason`.

    Together they hold every bar exactly once; bars that only mark a problem (the first bar after
    a hole) stay with the good ones, because the bar itself is sound.
    """
    if df.height != result.rows:
        raise ValueError(f"{result.name}: validated {result.rows} rows, got a frame of {df.height}")
    bad = result.failing_rows.filter("quarantined").select("row", REASON)
    indexed = df.with_row_index("row").join(bad, on="row", how="left", maintain_order="left")
    good = indexed.filter(pl.col(REASON).is_null()).drop("row", REASON)
    return good, indexed.filter(pl.col(REASON).is_not_null()).drop("row")


def build_data_docs(results: Iterable[QualityResult]) -> Path:
    """Persist `results` and render GX Data Docs; returns the path of the site's `index.html`.

    Results are kept below the data directory (`quality/validations`), so the site lists every
    run so far, not just these; the site is `reports/data_docs`. Only the new result pages and
    the index are rendered, so the cost grows with the results given, not with history.
    """
    context = _docs_context()
    identifiers = [
        _store(context, gx_result, result) for result in results for gx_result in result.gx_results
    ]
    context.build_data_docs(resource_identifiers=identifiers)
    return subdir("reports") / "data_docs" / "index.html"


# ---------------------------------------------------------------------------------------------
# GX plumbing


def _parameters(cfg: Config) -> dict[str, float]:
    return {MAX_GAP: cfg.quality.max_gap_minutes, MAX_JUMP: cfg.quality.max_jump_ticks}


def _schedule(df: pl.DataFrame, cfg: Config) -> ExchangeSchedule:
    """The configured calendar's holidays and early closes over the sessions of `df`: the same
    calendar the engine and the simulator use, so validation flags what they would not trade."""
    sessions = with_session_columns(df.select("ts").drop_nulls())["session_date"]
    if sessions.is_empty():
        return ExchangeSchedule()
    session = cfg.session
    return exchange_schedule(session.calendar, session.early_closes, sessions.min(), sessions.max())


def _context_config(stores: Any, docs_dir: Path | None = None) -> DataContextConfig:
    """Analytics off, progress bars off (they would garble CLI output), our own stores."""
    sites = {} if docs_dir is None else {"local_site": _site(docs_dir)}
    return DataContextConfig(
        store_backend_defaults=stores,
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )


def _site(docs_dir: Path) -> dict[str, Any]:
    return {
        "class_name": "SiteBuilder",
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(docs_dir),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


@cache
def _validation_context() -> tuple[Any, dict[str, gx.ExpectationSuite]]:
    """The in-memory context and the registered suites, built once per process (~50 ms)."""
    context = gx.get_context(
        mode="ephemeral", project_config=_context_config(InMemoryStoreBackendDefaults())
    )
    batch = (
        context.data_sources.add_pandas("bars")
        .add_dataframe_asset("bars")
        .add_batch_definition_whole_dataframe("frame")
    )
    return batch, _add_suites(context)


def _add_suites(context: Any) -> dict[str, gx.ExpectationSuite]:
    return {name: context.suites.add(build_suite(name, rules)) for name, rules in _suites().items()}


@cache
def _suites() -> dict[str, list[Rule]]:
    """The rules of each suite, by suite name, in the order their outcomes are reported."""
    return {SCHEMA_SUITE: schema_rules(), CONTENT_SUITE: content_rules()}


@cache
def _rules_by_key() -> Mapping[str, Rule]:
    return {rule.key: rule for rules in _suites().values() for rule in rules}


def _run(
    suite: str, frame: pl.DataFrame, parameters: Mapping[str, float]
) -> ExpectationSuiteValidationResult:
    """One GX validation of `frame` (as pandas, 0…n-1 index) against the named suite."""
    batch_definition, suites = _validation_context()
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame.to_pandas()})
    return batch.validate(
        suites[suite], result_format=dict(_RESULT_FORMAT), expectation_parameters=dict(parameters)
    )


def _outcomes(
    gx_result: ExpectationSuiteValidationResult, height: int, parameters: Mapping[str, float]
) -> list[Outcome]:
    rules = _rules_by_key()
    order = {key: i for i, key in enumerate(rules)}
    outcomes = [
        _outcome(evr, rules[evr.expectation_config.meta["rule"]], height, parameters)
        for evr in gx_result.results
    ]
    return sorted(outcomes, key=lambda o: order[o.rule])


def _outcome(evr: Any, rule: Rule, height: int, parameters: Mapping[str, float]) -> Outcome:
    """An `Outcome` from one GX expectation result.

    A failure that names no rows (a table-level expectation, or an expectation that raised)
    flags the whole frame: what could not be checked cannot pass.
    """
    result = evr.result or {}
    error = evr.exception_info.get("exception_message") if evr.exception_info else None
    rows: tuple[int, ...] = ()
    if not evr.success:
        indices = result.get("unexpected_index_list")
        rows = tuple(int(i) for i in indices) if indices is not None else tuple(range(height))
    detail = error or ("" if evr.success else _observed(result))
    return Outcome(
        rule=rule.key,
        expectation=evr.expectation_config.type,
        reason=rule.reason.format(**parameters),
        success=bool(evr.success),
        unexpected_count=int(result.get("unexpected_count", len(rows))),
        examples=tuple(_plain(v) for v in result.get("partial_unexpected_list", ())),
        rows=rows,
        severity=rule.severity,
        detail=detail or "",
    )


def _observed(result: Mapping[str, Any]) -> str:
    observed = result.get("observed_value")
    return "" if observed is None else f"observed {observed}"


def _failing_rows(df: pl.DataFrame, outcomes: Iterable[Outcome]) -> pl.DataFrame:
    """One row per flagged bar, its reasons in suite order, and whether it is set aside (an
    error flagged it)."""
    flagged = [
        pl.DataFrame(
            {"row": o.rows, REASON: _row_reason(o), "quarantined": o.severity == "error"},
            schema={"row": pl.UInt32, REASON: pl.String, "quarantined": pl.Boolean},
        )
        for o in outcomes
        if o.rows
    ]
    if not flagged:
        return pl.DataFrame(
            schema={"row": pl.UInt32, "ts": pl.Int64, REASON: pl.String, "quarantined": pl.Boolean}
        )
    per_row = (
        pl.concat(flagged)
        .group_by("row", maintain_order=True)
        .agg(pl.col(REASON).str.join("; "), pl.col("quarantined").any())
        .sort("row")
    )
    return per_row.with_columns(ts=_ts_at(df, per_row["row"])).select(
        "row", "ts", REASON, "quarantined"
    )


def _row_reason(outcome: Outcome) -> str:
    return f"{outcome.reason} ({outcome.detail})" if outcome.detail else outcome.reason


def _ts_at(df: pl.DataFrame, rows: pl.Series) -> pl.Series:
    """The `ts` of the flagged rows, or nulls when the frame has no usable `ts` column."""
    if df.schema.get("ts") != pl.Int64:
        return pl.repeat(None, rows.len(), dtype=pl.Int64, eager=True)
    return df["ts"].gather(rows)


def _plain(value: Any) -> Any:
    """JSON-safe form of an unexpected value (GX gives numpy scalars and tuples)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def bars_label(count: int) -> str:
    """`1 bar`, `1,380 bars`: counts in verdict lines."""
    return f"{count:,} bar" if count == 1 else f"{count:,} bars"


# ---------------------------------------------------------------------------------------------
# Data Docs


def _docs_context() -> Any:
    """An ephemeral context whose results store and docs site live under the data directory
    (suites stay in memory: the code is their source of truth).

    Built per call (not cached), so a changed `SCALPER_HOME` (tests, several deployments) is
    honoured; that costs ~50 ms, a fraction of the rendering.
    """
    stores = InMemoryStoreBackendDefaults()
    stores.stores[stores.validation_results_store_name]["store_backend"] = {
        "class_name": "TupleFilesystemStoreBackend",
        "base_directory": str(subdir("quality") / "validations"),
    }
    context = gx.get_context(
        mode="ephemeral",
        project_config=_context_config(stores, subdir("reports") / "data_docs"),
    )
    _add_suites(context)
    return context


def _store(
    context: Any, gx_result: ExpectationSuiteValidationResult, result: QualityResult
) -> ValidationResultIdentifier:
    """Save a slim copy of one GX result (full row lists would bloat the HTML); return its key."""
    run_id = RunIdentifier(run_name=result.name, run_time=result.validated_at)
    identifier = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=gx_result.suite_name),
        run_id=run_id,
        batch_identifier=slug(result.name),
    )
    slim = copy.deepcopy(gx_result)
    slim.meta.update(run_id=run_id, validation_time=result.validated_at, symbol=result.symbol)
    for evr in slim.results:
        for key in _BULKY_KEYS:
            (evr.result or {}).pop(key, None)
    context.validation_results_store.set(identifier, slim)
    return identifier


def slug(name: str) -> str:
    """A name usable as one path component of the results store."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "bars"
