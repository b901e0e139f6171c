"""The research assets with real Dagster, on a small simulated window stored by the data assets;
and the CLI and the assets reading and writing the same stores."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from dagster import (
    DagsterInstance,
    ExecuteInProcessResult,
    RunRequest,
    SkipReason,
    build_schedule_context,
    materialize,
)

from assets import defs
from assets.demo import materialize_days, materialize_demo
from assets.research import RESEARCH_ASSETS, nightly_research
from assets.research import walk_forward as walk_forward_asset
from assets.resources import ScalperConfig, build_resources
from scalper.cli import main
from scalper.config import load_config_with_overrides
from scalper.continuous import read_continuous_bars
from scalper.demo import run_demo
from scalper.errors import ScalperError
from scalper.research import read_history, read_provenance

START = date(2024, 1, 2)
DAYS = 45
LAST = START + timedelta(days=DAYS - 1)  # 2024-02-15, a Thursday
GRID = """\
research:
  lookback: [10, 20]
  entry_z: [1.5, 2.0]
  exit_z: [0.0, 0.5]
  stop_loss_ticks: [0, 48]
  take_profit_ticks: [0, 8]
  min_trades: 10
  backtest_sessions: 15
"""
# 48 ticks of MES lose $60.84 with commissions, more than the default daily loss limit ($50): a
# hazard the configuration does not have, so those 16 sets are excluded (and reported).
EXCLUDED_WHY = (
    "- 16 sets: risk.stop_loss_ticks = 48: one stopped-out trade of 1 contract(s) loses 60.84 "
    "with commissions, more than daily_loss_limit (50); a hazard the configuration does not have "
    "(an error in live mode)"
)


@dataclass(frozen=True)
class Stored:
    """A data directory with the simulated window stored by the data assets."""

    home: Path
    instance: DagsterInstance

    def research(self, config: str) -> ExecuteInProcessResult:
        path = self.home / f"config-{abs(hash(config))}.yaml"
        path.write_text(config)
        resources = build_resources(
            str(path), simulation_start=START.isoformat(), simulation_days=DAYS
        )
        return materialize(RESEARCH_ASSETS, resources=resources, instance=self.instance)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    home = tmp_path_factory.mktemp("home")
    # A persistent instance: schedule contexts under test can only reach one by its reference.
    (home / "dagster").mkdir()
    instance = DagsterInstance.local_temp(str(home / "dagster"))
    with pytest.MonkeyPatch.context() as patch, instance:
        patch.setenv("SCALPER_HOME", str(home))
        resources = build_resources(None, simulation_start=START.isoformat(), simulation_days=DAYS)
        materialize_days(
            "MES", START - timedelta(days=1), LAST, resources=resources, instance=instance
        )
        yield Stored(home, instance)


@pytest.fixture(scope="module")
def nightly(stored: Stored) -> ExecuteInProcessResult:
    return stored.research(GRID)


def metadata(result: ExecuteInProcessResult, node: str) -> dict[str, object]:
    event = result.asset_materializations_for_node(node)[0]
    return {key: value.value for key, value in event.metadata.items()}


def test_research_assets_materialize_with_headline_metadata(
    nightly: ExecuteInProcessResult,
) -> None:
    assert nightly.success
    backtest = metadata(nightly, "backtest")
    assert backtest["sessions"] == "2024-01-26 .. 2024-02-15 (15 sessions)"
    assert backtest["trades"] > 0 and "sharpe" in backtest and "net_pnl" in backtest
    sweep = metadata(nightly, "param_sweep")
    assert sweep["sets"] == 16 and sweep["excluded"] == 16
    assert sweep["excluded_why"] == EXCLUDED_WHY
    assert Path(str(sweep["table"])).is_file()
    walk = metadata(nightly, "walk_forward")
    assert walk["sessions"].startswith("2024-01-02 .. 2024-02-15 (")  # type: ignore[union-attr]
    for key in ("oos_sharpe", "oos_profit_factor", "oos_max_drawdown_pct", "degradation"):
        assert key in walk
    assert walk["excluded"] == 16 and walk["excluded_why"] == EXCLUDED_WHY
    recommended = metadata(nightly, "recommended_params")
    assert recommended["gate"] in ("PASSED", "FAILED")
    assert recommended["excluded"] == 16 and recommended["excluded_why"] == EXCLUDED_WHY
    assert Path(str(recommended["report"])).is_file()


def test_walk_forward_output_folds_never_overlap(nightly: ExecuteInProcessResult) -> None:
    wf = nightly.output_for_node("walk_forward")
    folds = [f.fold for f in wf.folds]
    assert len(folds) == 5
    for fold in folds:
        assert fold.in_sample.last < fold.out_of_sample.first
    for earlier, later in itertools.pairwise(folds):
        assert earlier.out_of_sample.last < later.out_of_sample.first
    assert wf.recommended == wf.folds[-1].winner


def test_report_from_the_assets_has_every_plot(nightly: ExecuteInProcessResult) -> None:
    report = Path(str(metadata(nightly, "recommended_params")["report"]))
    text = report.read_text()
    assert re.findall(r'<section id="([^"]+)"', text) == [
        "summary", "verdict", "equity", "pnl-distribution", "time-of-day", "heatmaps", "folds",
        "oos-equity", "excluded", "trades",
    ]  # fmt: skip
    assert text.count('src="data:image/png;base64,') == 6
    assert (report.parent.parent / "index.html").is_file()


def test_gate_verdict_is_a_check_and_decides_the_approved_file(
    stored: Stored, nightly: ExecuteInProcessResult
) -> None:
    recommended = metadata(nightly, "recommended_params")
    (check,) = nightly.get_asset_check_evaluations()
    assert check.check_name == "go_live_gate"
    assert check.passed == (recommended["gate"] == "PASSED")
    approved = stored.home / "research" / "approved_params.yaml"
    assert approved.is_file() == check.passed
    if check.passed:
        assert recommended["approved_params"] == str(approved)
        params = recommended["params"]
        loaded = load_config_with_overrides(None, approved, env={})
        assert loaded.strategy.lookback == params["lookback"]  # type: ignore[index]
        provenance = yaml.safe_load(approved.read_text())["provenance"]  # as the CLI's (report.py)
        assert provenance["data_source"] == "simulator" and provenance["symbol"] == "MES"
        assert provenance["run_id"] == recommended["run_id"]
        assert provenance["first_session"] <= provenance["last_session"]
        with pytest.raises(ScalperError, match="approved on simulated data"):
            read_provenance(approved, ["MES"])  # so session open refuses it


def test_a_refused_run_writes_no_approved_file_and_says_why(stored: Stored) -> None:
    strict = GRID + "  gate_min_sharpe: 1000\n  gate_min_trades_per_fold: 100000\n"
    approved = stored.home / "research" / "approved_params.yaml"
    before = approved.read_bytes() if approved.exists() else None
    result = stored.research(strict)
    assert result.success  # a refusal is a verdict, not a failed run
    recommended = metadata(result, "recommended_params")
    assert recommended["gate"] == "FAILED"
    assert "approved_params" not in recommended
    assert (approved.read_bytes() if approved.exists() else None) == before
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    assert "out-of-sample Sharpe" in check.description and "1,000.00 (minimum)" in check.description
    assert "fewer than 100000 out-of-sample trades" in check.description


def test_every_run_is_a_history_row(stored: Stored, nightly: ExecuteInProcessResult) -> None:
    history = read_history(stored.home / "research" / "history.parquet")
    assert history.height >= 1
    assert set(history["origin"]) == {"dagster"}
    assert metadata(nightly, "recommended_params")["run_id"] in history["run_id"].to_list()


def test_nightly_schedule_waits_for_the_days_continuous_bars(stored: Stored) -> None:
    def tick(day: date) -> RunRequest | SkipReason:
        when = datetime(day.year, day.month, day.day, 21, 0, tzinfo=ZoneInfo("America/New_York"))
        context = build_schedule_context(
            instance=stored.instance,
            scheduled_execution_time=when,
            resources={"scalper_config": ScalperConfig(path=None)},
        )
        return nightly_research(context)

    ready = tick(LAST)
    assert isinstance(ready, RunRequest) and ready.run_key == f"research|MES|{LAST}"
    waiting = tick(LAST + timedelta(days=1))
    assert isinstance(waiting, SkipReason)
    assert "no MES 2024-02-16 partition yet" in (waiting.skip_message or "")


def test_code_location_serves_the_research_assets_and_schedule() -> None:
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"backtest", "param_sweep", "walk_forward", "recommended_params"} <= keys
    schedule = defs.resolve_schedule_def("nightly_research")
    assert schedule.execution_timezone == "America/New_York"
    assert schedule.cron_schedule == "*/15 21-23 * * 1-5"
    assert schedule.job_name == "research"


def test_research_before_any_data_fails_with_a_clear_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path))
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            RESEARCH_ASSETS[:1],
            resources=build_resources(None),
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert description == "no continuous MES bars yet: materialize continuous_bars first"


def test_demo_runs_the_nightly_chain_and_prints_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))  # the demo sets it; undo after
    assert run_demo(materialize_demo, days=20) == 0
    out = capsys.readouterr().out
    assert "research: 5 folds, out-of-sample: " in out
    assert re.search(r"^gate (PASSED|FAILED)", out, re.MULTILINE)
    report = Path(re.findall(r"^report: +(\S+)$", out, re.MULTILINE)[0])
    demo = tmp_path / "demo"  # the demo's own data directory
    assert report == demo / "reports" / "research" / "latest.html"
    assert report.read_text().count('src="data:image/png;base64,') == 6
    assert read_history(demo / "research" / "history.parquet")["origin"].to_list() == ["dagster"]


def test_demo_too_short_for_a_walk_forward_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    assert run_demo(materialize_demo, days=5) == 0
    out = capsys.readouterr().out
    assert "research: skipped, the walk-forward needs 8 sessions (this run has 4)" in out
    assert "report:" not in out


def test_data_made_by_the_cli_is_the_data_the_assets_read_and_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`scalper data simulate` → `validate` → `data continuous` fill the stores the research
    assets read; the data assets fill the ones `scalper report --symbol` reads. Both ways the
    stores hold the same series and the walk-forward sees the same bars."""
    config = tmp_path / "grid.yaml"
    config.write_text(GRID)
    days = 14
    first, last = START - timedelta(days=1), START + timedelta(days=days - 1)
    resources = build_resources(str(config), simulation_start=str(START), simulation_days=days)

    monkeypatch.setenv("SCALPER_HOME", str(tmp_path / "cli"))
    assert main(["data", "simulate", "--days", str(days), "--start", str(START)]) == 0
    assert main(["validate"]) == 0
    assert main(["data", "continuous", "--start", str(first), "--end", str(last)]) == 0
    assert main(["walk-forward", "--symbol", "MES", "--config", str(config)]) == 0
    cli_walk = next(
        line for line in capsys.readouterr().out.splitlines() if line.startswith("scalper walk")
    )
    with DagsterInstance.ephemeral() as instance:
        result = materialize([walk_forward_asset], resources=resources, instance=instance)
    wf = result.output_for_node("walk_forward")
    assert cli_walk.endswith(f": {wf.summary()}")
    made_by_cli = read_continuous_bars("MES", first, last, "back")

    monkeypatch.setenv("SCALPER_HOME", str(tmp_path / "assets"))
    with DagsterInstance.ephemeral() as instance:
        materialize_days("MES", first, last, resources=resources, instance=instance)
    assert read_continuous_bars("MES", first, last, "back").equals(made_by_cli)
    assert main(["report", "--symbol", "MES", "--config", str(config)]) == 0
    assert f"walk-forward: {wf.summary()}" in capsys.readouterr().out.splitlines()
