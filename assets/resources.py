"""Resources of the code location: the scalper configuration and the source of raw bars.

Assets never read files or open broker connections on their own: what they read comes from these
two resources, so the UI shows where data comes from and a test or the demo swaps the source by
handing in other resources, not by patching code.

* `ScalperConfig` — the configuration file (SPEC §5), `None` for the built-in defaults. The code
  location takes it from the `SCALPER_CONFIG` environment variable (see `assets/__init__.py`).
* `BarSource` — bars of one product over whole UTC days, from the source `data.source` names
  (`scalper.sources.fetch_bars`: simulator, file or IBKR). Its fields are what the configuration
  file does not say: the simulated window, and the client id downloads use.
"""

from datetime import date
from typing import Any

import polars as pl
from dagster import ConfigurableResource

from scalper.config import Config, load_config
from scalper.demo import DEMO_START
from scalper.sources import fetch_bars

SIMULATION_DAYS = 366
"""Default simulated window: a year of sessions from the demo's first day."""


class ScalperConfig(ConfigurableResource):
    """The scalper configuration file every asset reads; `path: null` means the defaults."""

    path: str | None = None

    def load(self) -> Config:
        """The validated configuration (read at each use, so an edited file applies to the next
        run without restarting the code location)."""
        return load_config(self.path)


class BarSource(ConfigurableResource):
    """Raw bars of a product over UTC days, from the simulator, a file or IBKR (`data.source`).

    The configuration is an argument of `fetch`, not a field: the asset reads it once from
    `ScalperConfig` and every resource of the run sees the same file.
    """

    simulation_start: str = DEMO_START.isoformat()
    simulation_days: int = SIMULATION_DAYS
    ibkr_client_id: int | None = None  # default broker.client_id + 3, the downloads' own

    def fetch(self, cfg: Config, symbol: str, first: date, last: date) -> tuple[pl.DataFrame, str]:
        """Every bar of `symbol` on the UTC days `first` … `last` from the configured source, and
        a line saying where they came from (`scalper.sources.fetch_bars`)."""
        return fetch_bars(
            cfg, symbol, first, last, simulation_start=date.fromisoformat(self.simulation_start),
            simulation_days=self.simulation_days, ibkr_client_id=self.ibkr_client_id,
        )  # fmt: skip


def build_resources(config_path: str | None = None, **bar_source: Any) -> dict[str, Any]:
    """The resources of the code location by key; `bar_source` sets `BarSource` fields (the
    demo's simulation window, a download client id)."""
    return {
        "scalper_config": ScalperConfig(path=config_path),
        "bar_source": BarSource(**bar_source),
    }
