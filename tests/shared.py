"""Where the tests find the project's shared material: `../shared` beside the repository.

The conformance cases and the real market data are read in place, never copied, so a change to a
case shows up in the tests at once.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

TRADING_START = datetime(2024, 6, 3, 14, 0, tzinfo=UTC)
"""Monday 10:00 New York, entries allowed: where the fake gateway's trading tests begin."""

SHARED = Path(__file__).resolve().parents[2] / "shared"
CONFORMANCE = SHARED / "conformance"
REAL_DATA = SHARED / "data" / "real"
CONFORMANCE_RISK = SHARED / "conformance_risk"
RISK_CASES_BUILT = (
    "11_atr_stops_targets",
    "12_trailing_stop",
    "13_size_tiers_and_risk",
    "14_reduce_size_late",
    "15_adaptive_slippage",
    "16_early_close",
    "17_early_close_trail_size",
)
"""The SPEC §4.9 cases, run beside §4's by every driver: 11 ATR stops and targets, 12 the
trailing stop, 13 size tiers and the risk cap, 14 reduce_size_at, 15 adaptive slippage, 16 the
exchange calendar's early closes, and 17 the early close together with the trailing stop and
reduce_size_at."""
_SPEC4_CASES = (
    sorted(p for p in CONFORMANCE.iterdir() if p.is_dir()) if CONFORMANCE.is_dir() else []
)
CASES = _SPEC4_CASES + [
    CONFORMANCE_RISK / n for n in RISK_CASES_BUILT if (CONFORMANCE_RISK / n).is_dir()
]
"""Every conformance case with expected trades that the engine must reproduce (§4, then §4.9)."""


def bars_path(case: Path) -> Path:
    """The bars file a case names (several cases share one), beside the case's folder."""
    return case.parent / (case / "data").read_text().strip()


def expected_rows(case: Path) -> list[dict[str, str]]:
    """The exact trades of a case, as the text rows of its `trades.csv`."""
    with open(case / "trades.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def expected_metrics(case: Path) -> dict[str, Any]:
    return json.loads((case / "metrics.json").read_text())


@cache
def case_ids() -> list[str]:
    return [p.name for p in CASES]


def first_difference(got: list[dict[str, str]], want: list[dict[str, str]]) -> str | None:
    """A message naming the first differing row, or None when the rows are equal."""
    for i in range(max(len(got), len(want))):
        g = got[i] if i < len(got) else None
        w = want[i] if i < len(want) else None
        if g != w:
            return f"trade {i + 1} differs:\n  got      {g}\n  expected {w}"
    return None


SCALPER = str(Path(sys.executable).with_name("scalper"))


def run(*args: str, home: Path | str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if home is not None:
        env["SCALPER_HOME"] = str(home)
    return subprocess.run(
        [SCALPER, *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("scalper: error: ")
    for needle in needles:
        assert needle in lines[0]


def write_approved(
    path: Path, config: Path | str | None, provenance: dict[str, Any], **sections: dict[str, Any]
) -> Path:
    """An approved parameters file (`sections`: strategy, risk) at `path`, its provenance's
    `config_hash` that of `config` with these sections in it, as a research run records it
    (unless `provenance` names one); `provenance` None-valued keys are left out."""
    import yaml

    from scalper.config import load_config_with_overrides
    from scalper.research import config_hash

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(sections))
    config = None if config is None else str(config)
    recorded = {"config_hash": config_hash(load_config_with_overrides(config, path)), **provenance}
    recorded = {k: v for k, v in recorded.items() if v is not None}
    path.write_text(yaml.safe_dump({"provenance": recorded, **sections}, sort_keys=False))
    return path
