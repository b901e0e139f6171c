"""One data directory, the same from every folder; read-only commands never create one; `status`
says when there is nothing healthy to report (issue 10, item 3)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalper import paths
from scalper.config import load_config
from scalper.demo import demo_home
from scalper.errors import ScalperError
from scalper.ledger import Ledger
from tests.shared import SCALPER, assert_one_line_error, run


@pytest.fixture
def no_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No SCALPER_HOME and no configured home: the default, in a user data folder of its own."""
    monkeypatch.delenv("SCALPER_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(paths, "_configured", None)
    return tmp_path / "xdg" / "scalper"


def scalper_in(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A command run from `folder` (its working directory) with `env` added."""
    folder.mkdir(parents=True, exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if k != "SCALPER_HOME"}
    return subprocess.run(
        [SCALPER, *args], cwd=folder, env={**environment, **env},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_default_home_is_the_user_data_folder_from_every_folder(
    no_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for folder in (tmp_path / "a", tmp_path / "b"):
        folder.mkdir()
        monkeypatch.chdir(folder)
        assert paths.home() == no_home
    assert not no_home.exists()  # naming it creates nothing


def test_configured_home_is_used_and_scalper_home_wins(
    no_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"paths: {{home: {tmp_path / 'configured'}}}\n")
    load_config(config)
    assert paths.home() == tmp_path / "configured"
    assert str(config) in paths.describe()
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path / "env"))
    assert paths.home() == tmp_path / "env"


def test_a_relative_home_is_a_one_line_error(tmp_path: Path) -> None:
    proc = scalper_in(tmp_path / "cwd", "status", SCALPER_HOME="var")
    assert_one_line_error(proc, "SCALPER_HOME = 'var' is a relative path")
    assert not (tmp_path / "cwd" / "var").exists()
    config = tmp_path / "c.yaml"
    config.write_text("paths: {home: var}\n")
    assert_one_line_error(run("config", "check", str(config)), "paths.home", "absolute")


def test_status_from_another_folder_creates_nothing_and_fails(tmp_path: Path) -> None:
    """The issue's case: status elsewhere invented an empty home, said "position +0", exit 0."""
    xdg = tmp_path / "xdg"
    proc = scalper_in(tmp_path / "elsewhere", "status", XDG_DATA_HOME=str(xdg))
    assert_one_line_error(proc, "no ledger at", str(xdg / "scalper"), "no stream worker has run")
    assert "position" not in proc.stdout
    assert not xdg.exists() and list((tmp_path / "elsewhere").iterdir()) == []


def test_read_only_commands_create_no_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run("kafka", "status", home=home).returncode == 1
    assert run("status", home=home).returncode == 2
    assert not home.exists()


def with_ledger(home: Path) -> Path:
    run_dir = home / "stream"
    Ledger(run_dir / "ledger.sqlite").close()
    return run_dir


def test_status_exits_1_when_the_worker_is_not_healthy(tmp_path: Path) -> None:
    with_ledger(tmp_path)
    proc = run("status", home=tmp_path)
    assert proc.returncode == 1
    assert "stream worker: UNHEALTHY (no worker process runs)" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == (
        "scalper: stream worker unhealthy: no worker process runs"
    )


@pytest.mark.parametrize("through", ["the folder", "a link to it", "a trailing slash"])
def test_status_exits_0_when_the_worker_is_healthy(through: str, tmp_path: Path) -> None:
    """A process the worker check recognises (its command line names `bytewax.run` and the run
    folder, as `running_workers` reads it) that just committed to its recovery store. The
    home may be named through a symbolic link (the worker's command line has the real folder:
    a link made `status` call the running worker dead, and the supervisor start another)."""
    home = tmp_path / "home"
    run_dir = with_ledger(home)
    (tmp_path / "link").symlink_to(home)
    named = {"the folder": home, "a link to it": tmp_path / "link"}.get(through, f"{home}/")
    worker = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "bytewax.run", repr(str(run_dir))]
    )
    try:
        (run_dir / "worker-0.pid").write_text(str(worker.pid))
        (run_dir / "recovery").mkdir()
        (run_dir / "recovery" / "part-0.sqlite3").write_text("")
        time.sleep(0.2)
        proc = run("status", home=named)
    finally:
        worker.kill()
        worker.wait()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "stream worker: healthy" in proc.stdout


@pytest.mark.parametrize("kind", ["file", "under a file", "read-only"])
def test_an_unusable_home_is_a_one_line_error(kind: str, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    home = {"file": afile, "under a file": afile / "home", "read-only": Path("/sys/scalper")}
    proc = run("data", "simulate", "--days", "2", home=home[kind])
    why = {"file": "is not a folder", "under a file": "Not a directory"}
    assert_one_line_error(proc, str(home[kind]), why.get(kind, "cannot create"))


def test_the_demo_has_its_own_home(no_home: Path, tmp_path: Path) -> None:
    assert demo_home() == no_home / "demo"
    assert demo_home(tmp_path / "mine") == tmp_path / "mine"
    live = tmp_path / "live"
    with_ledger(live)
    with pytest.raises(ScalperError, match="is a live data directory"):
        demo_home(live)


def test_a_relative_data_path_is_the_config_files_not_the_working_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI, the Dagster code server (run in the repository) and the flows read one file."""
    folder = tmp_path / "configs"
    folder.mkdir()
    config = folder / "c.yaml"
    config.write_text("data: {source: file, path: bars/es.csv}\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("configs/c.yaml").data.path == str(folder / "bars" / "es.csv")
    config.write_text("data: {source: file, path: ~/es.csv}\n")
    assert load_config(config).data.path == str(Path.home() / "es.csv")


def test_scalper_ui_reads_scalper_config_from_the_users_folder(tmp_path: Path) -> None:
    """`SCALPER_CONFIG=c.yaml scalper ui`: the code server runs in the repository, so the path
    is made absolute first, and the file's `paths.home` is read before the UI starts (a broken
    one stops it with one line, before Dagster)."""
    (tmp_path / "c.yaml").write_text("paths: {home: relative/home}\n")
    proc = scalper_in(tmp_path, "ui", SCALPER_CONFIG="c.yaml")
    assert_one_line_error(proc, str(tmp_path / "c.yaml"), "paths.home", "absolute")
