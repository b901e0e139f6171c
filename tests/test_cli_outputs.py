"""Ordinary mistakes with output paths, and a reader that stops early, as a user meets them:
one line and a non-zero exit, checked before any work starts (issue 10, item 9)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.shared import CONFORMANCE, SCALPER, assert_one_line_error, run

CASE = CONFORMANCE / "01_signals_only"
BACKTEST = ("backtest", "--config", str(CASE / "config.yaml"))
BARS = str(CONFORMANCE / "bars_week.csv")


@pytest.mark.parametrize(
    ("target", "needle"),
    [("missing/trades.csv", "missing does not exist"), (".", "is a folder; name a file")],
)
def test_trades_out_into_a_missing_folder_or_onto_a_folder(
    target: str, needle: str, tmp_path: Path
) -> None:
    """Checked first: the bars file does not even exist, and the error is about the output."""
    out = str(tmp_path / target)
    proc = run(*BACKTEST, "--data", str(tmp_path / "no-bars.csv"), "--trades-out", out)
    assert_one_line_error(proc, f"--trades-out {out}", needle)


def test_trades_out_replaces_an_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "trades.csv"
    out.write_text("old\n")
    proc = run(*BACKTEST, "--data", BARS, "--trades-out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().startswith("entry_ts,exit_ts,side")


def test_replay_trades_out_is_checked_before_anything_is_published(tmp_path: Path) -> None:
    out = str(tmp_path / "missing" / "t.csv")
    proc = run("stream", "replay", "--data", BARS, "--trades-out", out, home=tmp_path)
    assert_one_line_error(proc, f"--trades-out {out}", "does not exist")


@pytest.mark.parametrize("kind", ["file", "full folder", "missing parent"])
def test_research_out_refuses_a_file_a_used_folder_and_a_missing_parent(
    kind: str, tmp_path: Path
) -> None:
    target = {
        "file": tmp_path / "report.html",
        "full folder": tmp_path / "run",
        "missing parent": tmp_path / "no" / "run",
    }[kind]
    if kind == "file":
        target.write_text("a file of the user's")
    if kind == "full folder":
        target.mkdir()
        (target / "sweep.parquet").write_text("an earlier run's")
    proc = run("optimize", "--data", str(tmp_path / "no-bars.csv"), "--out", str(target))
    why = {"file": "is a file, not a folder", "full folder": "is not empty"}
    assert_one_line_error(proc, f"--out {target}", why.get(kind, "does not exist"))
    if kind == "file":
        assert target.read_text() == "a file of the user's"


def test_output_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`scalper backtest ... | head`: the reader is gone before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [SCALPER, *BACKTEST, "--data", BARS], stdout=write_end, stderr=subprocess.PIPE,
            text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert proc.returncode == 141  # as a shell reports a program ended by SIGPIPE
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert "scalper: error" not in proc.stderr


def test_a_shell_pipe_into_head_exits_quietly() -> None:
    command = f"{SCALPER} {' '.join(BACKTEST)} --data {BARS} | head -n 0"
    proc = subprocess.run(
        ["bash", "-c", f"{command}; echo status ${{PIPESTATUS[0]}} >&2"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1] in ("status 0", "status 141")


def test_trades_out_onto_a_pipe_writes_through_it_and_leaves_it_a_pipe(tmp_path: Path) -> None:
    """A device or a pipe (/dev/stdout, a process substitution) is written as a stream: the
    atomic write's rename over it replaced /dev/full, as root, with a regular file."""
    fifo = tmp_path / "trades.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the writer's open does not block
    try:
        proc = run(*BACKTEST, "--data", BARS, "--trades-out", str(fifo))
        received = os.read(reader, 1 << 16).decode()
    finally:
        os.close(reader)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert received.startswith("entry_ts,exit_ts,side")


def test_trades_out_through_a_symlink_keeps_the_link_and_a_readable_file(tmp_path: Path) -> None:
    target = tmp_path / "trades-2024.csv"
    target.write_text("old\n")
    target.chmod(0o644)
    link = tmp_path / "latest.csv"
    link.symlink_to(target.name)
    proc = run(*BACKTEST, "--data", BARS, "--trades-out", str(link))
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink()
    assert target.read_text().startswith("entry_ts,exit_ts,side")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's private 0600


@pytest.mark.parametrize("command", [BACKTEST, ("stream", "replay")])
def test_an_empty_trades_out_is_refused_not_silently_no_output(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    """`--trades-out "$OUT"` with OUT unset: the run must not finish without the file asked for."""
    proc = run(*command, "--data", BARS, "--trades-out", "", home=tmp_path)
    assert_one_line_error(proc, "--trades-out: an empty path; name a file")


def test_an_empty_symbol_or_config_is_refused_not_the_default(tmp_path: Path) -> None:
    """`--symbol "$SYM"` with SYM unset validated MES, the configured instrument, in its place."""
    proc = run("validate", "--symbol", "", home=tmp_path)
    assert proc.returncode == 2
    assert "argument --symbol: an empty symbol" in proc.stderr.splitlines()[-1]
    proc = run("backtest", "--config", " ", "--data", BARS, home=tmp_path)
    assert_one_line_error(proc, "configuration file: an empty path")


def test_a_folder_the_file_system_refuses_is_one_line() -> None:
    """/proc passes the permission check (as root) but takes no new file."""
    proc = run(*BACKTEST, "--data", BARS, "--trades-out", "/proc/trades.csv")
    assert_one_line_error(proc, "cannot write /proc/trades.csv: No such file or directory")


def test_trades_out_dash_is_refused_not_a_file_named_dash(tmp_path: Path) -> None:
    proc = subprocess.run(
        [SCALPER, *BACKTEST, "--data", BARS, "--trades-out", "-"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(proc, "--trades-out -", "name a file")
    assert not (tmp_path / "-").exists()


def test_a_full_standard_output_is_one_line_not_a_traceback() -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [SCALPER, *BACKTEST, "--data", BARS], stdout=full, stderr=subprocess.PIPE,
            text=True, timeout=120, check=False,
        )  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("warning: ")]
    assert proc.returncode == 1
    assert errors == ["scalper: error: cannot write: No space left on device"]


def test_trades_out_onto_a_full_device_is_one_line_not_a_traceback() -> None:
    """polars' writer reports a full device only in its message ("os error 28"). The device is
    reached as /proc/self/fd/1, never /dev/full itself: the old writer, run as root, renamed a
    file over the device node it was given."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [SCALPER, *BACKTEST, "--data", BARS, "--trades-out", "/proc/self/fd/1"],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, check=False,
        )  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("warning: ")]
    assert proc.returncode == 1
    assert errors == ["scalper: error: cannot write: No space left on device"]


def test_research_into_a_closed_pipe_still_writes_its_report(tmp_path: Path) -> None:
    """`scalper optimize ... | head -0`: the reader going away must not cost the finished run
    its files (report, sweep); they are written before the summary is printed."""
    out = tmp_path / "run"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [SCALPER, "optimize", "--config", str(CASE / "config.yaml"), "--data", BARS,
             "--out", str(out)],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert (out / "report.html").is_file() and (out / "sweep.parquet").is_file()
