"""Where runtime files live: one data directory, `SCALPER_HOME` (default `./var`).

Bar store, state database, reports, Kafka data and Dagster/Prefect homes all sit below it, never in
the source tree, so a checkout stays clean and a VPS keeps everything in one place to back up.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The data directory (created on first use)."""
    path = Path(os.environ.get("SCALPER_HOME", "var")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def subdir(name: str) -> Path:
    """A named folder under the data directory, e.g. `bars`, `reports`, `state`, `kafka`."""
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path
