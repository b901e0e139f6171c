"""Real history reaches research (issue 10, item 8): every real ES day shipped in
`../shared/data/real` (Lean zips: every contract, 16 UTC days of 2013 and 2020) flows
import → validate → continuous → walk-forward, through the command line and through the Dagster
assets, with the default quality settings.

Before, 14 of the 16 days failed validation: the 16:15–16:30 New York halt of those years was
counted as a hole, a hole made a whole day unusable, the 17:00–17:15 trading of 2013 was judged by
today's 17:00 close, and the change of contract across the six-year hole could not be
back-adjusted. Now the calendar check knows the Globex hours by date, a hole is a warning that
sets nothing aside, and a contract change across a hole is left as the hole's price change.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from assets.demo import materialize_days
from assets.research import RESEARCH_ASSETS
from assets.resources import build_resources
from scalper import store
from scalper.bars import BAR_COLUMNS, read_bars
from scalper.cli import main
from scalper.continuous import read_continuous_bars
from scalper.research import WalkForwardResult
from tests.shared import REAL_DATA

LEAN = REAL_DATA / "lean_es_minute"
FRONT_CSV = REAL_DATA / "es_front_1m_2013_2020.csv"
DAYS = sorted(
    date(int(p.name[10:14]), int(p.name[14:16]), int(p.name[16:18]))
    for p in LEAN.glob("minute_es_*_trade.zip")
)
FIRST, LAST = date(2013, 10, 6), date(2020, 1, 6)

# Defaults but the instrument and a small grid, so the walk-forward is quick. The assets read the
# last `research.walk_forward_sessions` (250) stored sessions: 2013 and 2020 alike.
CONFIG = """\
instrument: {symbol: ES, point_value: 50.0}
research:
  lookback: [10, 20]
  entry_z: [1.5, 2.0]
  exit_z: [0.5]
  stop_loss_ticks: [0]
  take_profit_ticks: [0]
  folds: 3
  min_trades: 1
"""

pytestmark = pytest.mark.skipif(not LEAN.is_dir(), reason="real ES data not available")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "es.yaml"
    path.write_text(CONFIG)
    return path


def assert_every_day_validated_and_continuous() -> None:
    """Each of the 16 days: every contract's bars validated and usable, and the day in the
    stored continuous series, which is the vendor's own front-month file, bar for bar."""
    assert len(DAYS) == 16
    validated = store.stage_root("validated")
    for day in DAYS:
        held = [
            s
            for s in store.stored_series("ES", "validated")
            if day in store.partitions(s, validated)
        ]
        assert held, f"{day}: nothing validated"
        for series in held:
            status = store.partition_status(series, day, validated)
            assert store.is_validated(status), (series, day, status)
    assert store.partitions("ES", store.stage_root("continuous")) == DAYS
    series = read_continuous_bars("ES", FIRST, LAST)
    assert series.select(BAR_COLUMNS).equals(read_bars(FRONT_CSV).select(BAR_COLUMNS))


def test_every_real_day_flows_to_walk_forward_through_the_cli(
    home: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = ["--config", str(config)]
    assert main(["data", "import", str(LEAN), "--format", "lean_zip", "--symbol", "ES", *cfg]) == 0
    assert main(["validate", "--symbol", "ES", *cfg]) == 1  # two bad ticks were set aside:
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if "FAILED" in line] == [
        "ESH4 2013-10-11: FAILED, 1 of 252 bars quarantined; more than 5 min of session missing "
        "before this bar (47), price jump over 40 ticks without volume (1)",
        "ESM4 2013-10-09: FAILED, 1 of 4 bars quarantined; more than 5 min of session missing "
        "before this bar (1), more than 5 min of session missing before this bar; price jump "
        "over 40 ticks without volume (1)",
    ]
    # the thin deferred months are full of holes: warned about, nothing set aside for them
    assert any(line.startswith("ESM4 2013-12-18: OK with warnings") for line in lines)
    span = ["--start", str(FIRST), "--end", str(LAST)]
    assert main(["data", "continuous", "--symbol", "ES", *span, *cfg]) == 0
    assert "built 19,083 continuous ES bars (ESZ3, ESH4, ESH0), 16 days" in capsys.readouterr().out
    assert_every_day_validated_and_continuous()

    assert main(["walk-forward", "--symbol", "ES", *span, *cfg]) == 0
    out = capsys.readouterr().out
    assert "scalper walk-forward: 19 sessions (2013-10-07 .. 2020-01-06)" in out
    assert ": 3 folds, out-of-sample:" in out


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def test_every_real_day_flows_to_walk_forward_through_the_dagster_assets(
    home: Path, config: Path, instance: DagsterInstance
) -> None:
    # The files as the bar source, one run per stretch of history (as two UI backfills).
    source = config.parent / "source.yaml"
    source.write_text(CONFIG + f"data: {{source: file, path: {LEAN}, format: lean_zip}}\n")
    resources = build_resources(str(source))
    for first, last in ((FIRST, date(2013, 12, 20)), (date(2020, 1, 5), LAST)):
        run = materialize_days("ES", first, last, resources=resources, instance=instance)
        checks = {c.check_name: c for c in run.get_asset_check_evaluations()}
        assert checks["calendar"].passed and checks["schema"].passed
        assert not checks["gaps"].passed  # deferred months' holes: a warning only
    assert_every_day_validated_and_continuous()

    research = materialize(RESEARCH_ASSETS, resources=resources, instance=instance)
    assert research.success
    walk_forward = research.output_for_node("walk_forward")
    assert isinstance(walk_forward, WalkForwardResult)
    folds = [result.fold for result in walk_forward.folds]
    assert len(folds) == 3 and walk_forward.out_of_sample.metrics["trades"] > 0
    assert folds[0].in_sample.first.year == 2013 and folds[-1].out_of_sample.last == LAST
    (materialized,) = research.asset_materializations_for_node("walk_forward")
    window = materialized.metadata["sessions"].value
    assert window == "2013-10-07 .. 2020-01-06 (19 sessions)"  # every day, as the CLI read it
