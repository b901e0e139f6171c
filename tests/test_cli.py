"""The `scalper` console script as a user runs it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalper.cli import main
from scalper.errors import ScalperError
from scalper.research import read_provenance
from tests.shared import CONFORMANCE, assert_one_line_error, bars_path, run

CASE = CONFORMANCE / "02_stops_targets"


def test_backtest_writes_the_exact_trades_and_prints_json(tmp_path: Path) -> None:
    out = tmp_path / "trades.csv"
    proc = run(
        "backtest", "--config", str(CASE / "config.yaml"), "--data", str(bars_path(CASE)),
        "--trades-out", str(out), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == (CASE / "trades.csv").read_text()
    report = json.loads(proc.stdout)
    expected = json.loads((CASE / "metrics.json").read_text())
    assert report["trades"] == expected["trades"] == report["metrics"]["trades"]
    assert report["metrics"]["net_pnl"] == pytest.approx(expected["net_pnl"], abs=0.005)


def test_backtest_prints_a_summary_without_json() -> None:
    proc = run("backtest", "--config", str(CASE / "config.yaml"), "--data", str(bars_path(CASE)))
    assert proc.returncode == 0, proc.stderr
    assert "trades          151" in proc.stdout
    assert "profit factor" in proc.stdout


def test_bad_bars_are_one_line_naming_the_row(tmp_path: Path) -> None:
    data = tmp_path / "bars.csv"
    lines = bars_path(CASE).read_text().splitlines()[:30]
    lines[17] = lines[17].replace(lines[17].split(",")[2], "4000.00", 1)  # high below low
    data.write_text("\n".join(lines) + "\n")
    proc = run("backtest", "--config", str(CASE / "config.yaml"), "--data", str(data))
    assert_one_line_error(proc, "bars.csv", "line 18")


def test_missing_data_file_is_one_line(tmp_path: Path) -> None:
    proc = run("backtest", "--config", str(CASE / "config.yaml"), "--data", str(tmp_path / "x.csv"))
    assert_one_line_error(proc, "x.csv")


def test_config_check_accepts_a_valid_file_and_reports_warnings() -> None:
    proc = run("config", "check", str(CASE / "config.yaml"))
    assert proc.returncode == 0
    assert "OK (paper mode, MES, strategy zscore)" in proc.stdout
    assert "no daily loss limit" in proc.stderr


def test_config_check_rejects_an_unknown_key_in_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("risk:\n  daily_los_limit: 20\n")
    proc = run("config", "check", str(cfg))
    assert_one_line_error(proc, "bad.yaml", "risk.daily_los_limit", "daily_loss_limit")


def test_live_mode_with_a_paper_port_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "live.yaml"
    cfg.write_text(
        "broker: {kind: ibkr, mode: live, port: 4002, account: U1234567}\n"
        "risk: {stop_loss_ticks: 8}\nalerts: {webhook: 'https://hooks.example.com/x'}\n"
        "session: {calendar: CME_Equity}\n"
    )
    proc = run("config", "check", str(cfg))
    assert_one_line_error(proc, "live.yaml", "broker.port = 4002")


def test_config_check_reports_every_problem_of_a_file_a_line_each(tmp_path: Path) -> None:
    cfg = tmp_path / "live.yaml"
    cfg.write_text(
        "broker: {kind: ibkr, mode: live, port: 4001, account: U1234567}\n"
        "risk: {stop_loss_ticks: 8, max_risk_per_trade: 30, postion_size: 2}\n"
        "alerts: {webhook: 'https://hooks.example.com/x'}\n"
        "session: {calendar: CME_Equity, timezone: America/Chicago}\n"
    )
    proc = run("config", "check", str(cfg))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert all(line.startswith(f"scalper: error: {cfg}: ") for line in lines), proc.stderr
    keys = [line.removeprefix(f"scalper: error: {cfg}: ").split(" ")[0] for line in lines]
    assert keys == [
        "risk.postion_size:",
        "session.entry_end",
        "session.flatten_at",
        "session.session_end",
    ]


def test_config_check_shows_a_refused_file_s_warnings_too(tmp_path: Path) -> None:
    cfg = tmp_path / "est.yaml"
    cfg.write_text("session: {timezone: EST}\n")  # fixed UTC-5: an hour off New York in summer
    proc = run("config", "check", str(cfg))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert [line.split(" =")[0] for line in lines] == [
        f"warning: {cfg}: session.entry_end",
        f"warning: {cfg}: session.flatten_at",
        f"warning: {cfg}: session.session_end",
        f"scalper: error: {cfg}: session.timezone",
    ]
    assert "16:25 EST is 17:25 New York on " in lines[1]


def test_demo_runs_on_embedded_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole chain as a user runs it (10 days: the fewest with enough sessions for the
    walk-forward); then again, in this process to save a start-up, on the same data directory:
    it must print the same (deterministic, and a re-run replaces its data, never adds to it)."""
    proc = run("demo", "--days", "10", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "default configuration" in proc.stdout
    assert "trades" in proc.stdout
    assert "research: 5 folds" in proc.stdout
    demo = tmp_path / "demo"  # the demo's own data directory: nothing in the live one
    assert (demo / "results" / "trades.csv").is_file()
    assert (demo / "results" / "mes_bars.parquet").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    approved = demo / "research" / "approved_params.yaml"
    if approved.exists():  # approved on simulated bars: never tradable
        with pytest.raises(ScalperError, match="simulated data"):
            read_provenance(approved, ["MES"])
    for variable in ("SCALPER_HOME", "DAGSTER_HOME"):  # the demo sets them; undone after
        monkeypatch.setenv(variable, str(tmp_path))
    assert main(["demo", "--days", "10", "--home", str(demo)]) == 0
    again = capsys.readouterr().out
    assert again.split("done in")[0] == proc.stdout.split("done in")[0], "not deterministic"
