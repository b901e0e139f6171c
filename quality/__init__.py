"""Data quality of bars: Great Expectations suites, quarantine, Data Docs and a summary plot.

Every bar that reaches a backtest or the continuous series has passed these expectations; bars
that fail are kept aside with the reason (`split_quarantine`), never silently dropped.

Telemetry: Great Expectations must not phone home from a trading server. `GX_ANALYTICS_ENABLED`
is forced to `false` here, before any module of this package imports GX, and the data context is
built with `analytics_enabled=False` as well (GX 1.24 ships no analytics client, but the setting
keeps the promise for the versions that do). GX never writes into the source tree: validation
runs in an in-memory context, and only `build_data_docs` writes, below the data directory.
"""

from __future__ import annotations

import os

os.environ["GX_ANALYTICS_ENABLED"] = "false"  # before the imports below load GX

from quality.plot import plot_quality
from quality.validate import (
    Outcome,
    QualityResult,
    build_data_docs,
    split_quarantine,
    validate_frame,
)

__all__ = [
    "Outcome",
    "QualityResult",
    "build_data_docs",
    "plot_quality",
    "split_quarantine",
    "validate_frame",
]
