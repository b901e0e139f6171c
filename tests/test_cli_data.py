"""`scalper data simulate|import|continuous` (with `scalper validate` between) into a temporary
data directory: the store's raw and continuous stages, and the progress bars shown."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from scalper import store
from scalper.bars import BAR_COLUMNS, read_bars, write_bars
from scalper.cli import main
from scalper.progress import Progress, track
from scalper.simulate import simulate_bars
from tests.shared import REAL_DATA, assert_one_line_error, run

LEAN = REAL_DATA / "lean_es_minute"
FRONT_CSV = REAL_DATA / "es_front_1m_2013_2020.csv"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_simulate_fills_the_store_and_reruns_replace(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["data", "simulate", "--days", "3", "--start", "2024-06-10", "--seed", "4"]
    assert main(args) == 0
    line = capsys.readouterr().out.strip()
    assert line == (
        f"scalper data: simulated 4,140 MES bars, 4 days (2024-06-09T22:00:00Z .. "
        f"2024-06-12T20:59:00Z), into {home / 'bars' / 'raw'}"
    )
    raw = store.stage_root("raw")
    stored = store.read_range("MES", date(2024, 6, 9), date(2024, 6, 12), raw)
    assert stored.equals(simulate_bars(date(2024, 6, 10), 3, seed=4))
    assert main(args) == 0
    assert store.read_range("MES", date(2024, 6, 9), date(2024, 6, 12), raw).equals(stored)


def test_simulate_another_symbol_uses_its_tick(home: Path) -> None:
    assert main(["data", "simulate", "--days", "1", "--start", "2024-06-10", "--symbol", "6E"]) == 0
    bars = store.read_range("6E", date(2024, 6, 9), date(2024, 6, 10))
    assert bars.height > 0
    assert ((bars["close"] / 0.00005).round() * 0.00005 - bars["close"]).abs().max() < 1e-9


def test_import_normalized_with_resampling(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bars = simulate_bars(date(2024, 6, 10), 2)
    write_bars(bars, tmp_path / "mes.csv")
    args = ["data", "import", str(tmp_path / "mes.csv"), "--format", "normalized"]
    assert main([*args, "--bar-seconds", "300"]) == 0
    assert "imported 552 MES bars, 3 days" in capsys.readouterr().out
    stored = store.read_range("MES", date(2024, 6, 9), date(2024, 6, 11))
    assert stored.height == bars.height // 5
    assert stored["volume"].sum() == bars["volume"].sum()


@pytest.mark.skipif(not LEAN.is_dir(), reason="real data not available")
def test_import_lean_stores_contracts_then_validate_and_continuous_build_the_front_series(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "import", str(LEAN), "--format", "lean_zip", "--symbol", "ES"]) == 0
    out = capsys.readouterr().out
    assert (
        "imported 23,948 ES bars of 8 contracts, 16 days "
        "(2013-10-06T22:00:00Z .. 2020-01-06T23:59:00Z)"
    ) in out
    raw = store.stage_root("raw")
    assert store.stored_series("ES", "raw") == [
        "ESH0", "ESH4", "ESM0", "ESM4", "ESU0", "ESU4", "ESZ3", "ESZ4",
    ]  # fmt: skip
    assert store.partitions("ESH4", raw)[0] == date(2013, 10, 6)
    in_2013 = store.read_range("ESZ3", date(2013, 1, 1), date(2013, 12, 31), raw)
    assert set(in_2013["symbol"]) == {"ESZ3"}

    config = tmp_path / "es.yaml"
    config.write_text("instrument: {symbol: ES, point_value: 50.0}\n")
    assert main(["validate", "--config", str(config)]) == 1  # 2 bad ticks of deferred months
    continuous = ["data", "continuous", "--start", "2013-10-06", "--end", "2020-01-06"]
    assert main([*continuous, "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()[-1]
    assert out == (
        "scalper data: built 19,083 continuous ES bars (ESZ3, ESH4, ESH0), 16 days "
        f"(2013-10-06T22:00:00Z .. 2020-01-06T23:59:00Z), into {home / 'bars' / 'continuous'}"
    )
    # The front file of the vendor's contracts, every bar: 2013's 17:00-17:14 New York bars are
    # trading of those years' hours (Globex closed at 17:15 until 2021), not a bad bar.
    front = store.read_range(
        "ES", date(2013, 1, 1), date(2020, 12, 31), store.stage_root("continuous")
    )
    assert front.select(BAR_COLUMNS).equals(read_bars(FRONT_CSV).select(BAR_COLUMNS))


def test_a_symbol_in_any_case_is_the_instrument(home: Path) -> None:
    # `mes` names MES: simulated into MES's partitions, validated and built as MES, not
    # "unknown instrument" nor "no stored mes bars".
    assert (
        main(["data", "simulate", "--days", "1", "--start", "2024-06-10", "--symbol", "mes"]) == 0
    )
    assert store.read_range("MES", date(2024, 6, 9), date(2024, 6, 10)).height > 0
    assert main(["validate", "--symbol", "Mes", "--start", "2024-06-10"]) == 0
    continuous = ["data", "continuous", "--symbol", "mes", "--start", "2024-06-10"]
    assert main([*continuous, "--end", "2024-06-10"]) == 0
    assert store.stored_series("MES", "continuous")


def test_a_vendor_s_bad_tick_is_imported_then_quarantined_not_the_file_refused(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One wrong bar (high below low) in a vendor file: the import keeps it, `validate` sets it
    aside with the reason, and every other bar of the day reaches the continuous series."""
    bars = simulate_bars(date(2024, 6, 11), 1)
    row = 700
    broken = bars.with_columns(
        high=pl.when(pl.int_range(pl.len()) == row).then(pl.col("low") - 1).otherwise("high")
    )
    write_bars(broken, tmp_path / "vendor.csv")
    assert main(["data", "import", str(tmp_path / "vendor.csv"), "--format", "normalized"]) == 0
    assert main(["validate", "--start", "2024-06-10", "--end", "2024-06-11"]) == 1
    out = capsys.readouterr().out
    assert "MES 2024-06-11: FAILED, 1 of " in out and "high below low (1)" in out
    quarantined = store.read_quarantine("MES", date(2024, 6, 11), store.stage_root("validated"))
    assert quarantined["ts"].to_list() == [bars["ts"][row]]
    assert main(["data", "continuous", "--start", "2024-06-10", "--end", "2024-06-11"]) == 0
    series = store.read_range(
        "MES", date(2024, 6, 10), date(2024, 6, 11), store.stage_root("continuous")
    )
    assert series.select(BAR_COLUMNS).equals(
        bars.filter(pl.int_range(pl.len()) != row).select(BAR_COLUMNS)
    )


def test_continuous_refuses_days_not_validated(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "simulate", "--days", "2", "--start", "2024-06-10"]) == 0
    week = ["data", "continuous", "--start", "2024-06-09", "--end", "2024-06-11"]
    assert main(week) == 2
    assert capsys.readouterr().err.strip() == (
        "scalper: error: continuous MES refuses unvalidated bars: MES 2024-06-09 is not validated "
        "yet; MES 2024-06-10 is not validated yet; MES 2024-06-11 is not validated yet"
    )
    assert not store.stored_series("MES", "continuous")
    assert main(["validate", "--start", "2024-06-10"]) == 0
    assert main(["data", "continuous", "--start", "2024-06-10", "--end", "2024-06-10"]) == 0
    assert "built 1,380 continuous MES bars (MES), 1 days" in capsys.readouterr().out
    assert main(["data", "continuous", "--start", "2024-06-12", "--end", "2024-06-13"]) == 2
    assert "no validated MES bars from 2024-06-12 to 2024-06-13" in capsys.readouterr().err
    assert main(["data", "continuous", "--start", "2024-06-12", "--end", "2024-06-11"]) == 2
    assert "--start 2024-06-12 is after --end 2024-06-11" in capsys.readouterr().err


def test_the_console_script_reports_mistakes_in_one_line(tmp_path: Path) -> None:
    proc = run(
        "data", "import", str(tmp_path / "none.csv"), "--format", "normalized", home=tmp_path
    )
    assert_one_line_error(proc, "none.csv: no such file or folder")
    proc = run("data", "simulate", "--days", "0", home=tmp_path)
    assert_one_line_error(proc, "days must be at least 1")


def test_console_script_prints_no_progress_when_not_a_terminal(tmp_path: Path) -> None:
    proc = run("data", "simulate", "--days", "2", "--start", "2024-06-10", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("scalper data: simulated 2,760 MES bars")


# ---------------------------------------------------------------------------------------------
# Progress bars


def test_track_draws_when_forced_and_ends_the_line() -> None:
    stream = io.StringIO()
    assert list(track([1, 2, 3], "import", unit="files", enabled=True, stream=stream)) == [1, 2, 3]
    text = stream.getvalue()
    assert text.endswith("\n")
    assert "import  [" in text
    assert "3/3 files  100%" in text.rsplit("\r", 1)[-1]


def test_progress_is_silent_off_a_terminal_unless_forced() -> None:
    stream = io.StringIO()  # not a TTY
    assert list(track(range(5), "quiet", stream=stream)) == list(range(5))
    with Progress(None, "quiet", stream=stream) as bar:
        bar.advance(3)
    assert stream.getvalue() == ""


def test_progress_without_a_total_counts() -> None:
    stream = io.StringIO()
    with Progress(None, "download", unit="bars", enabled=True, stream=stream) as bar:
        bar.advance(1_500)
    assert "download  1,500 bars" in stream.getvalue()


def test_progress_ends_its_line_on_an_error() -> None:
    stream = io.StringIO()
    with pytest.raises(RuntimeError), Progress(2, "store", enabled=True, stream=stream) as bar:
        bar.advance()
        raise RuntimeError("boom")
    assert stream.getvalue().endswith("\n")
    assert "1/2" in stream.getvalue()


def test_the_store_write_shows_days(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    bars = simulate_bars(date(2024, 6, 10), 2)
    store.write_bars_partitioned(bars, "MES", tmp_path, progress=True)
    assert "store MES  [" in stream.getvalue()
    assert "3/3 days" in stream.getvalue()
    assert pl.read_parquet(tmp_path / "symbol=MES" / "date=2024-06-10" / "bars.parquet").height
