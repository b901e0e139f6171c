"""The Dagster code location of scalper: `workspace.yaml` loads `defs` from this package.

`ASSET_MODULES` is the one list of modules whose assets and asset checks the location serves;
a new area of work (research, reports) adds its module there, and its schedules to `SCHEDULES`
(a schedule brings its job along). Resources are shared by key: `scalper_config` (the file named
by the `SCALPER_CONFIG` environment variable, else the built-in defaults) and `bar_source`.
"""

from __future__ import annotations

import os

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

from assets import market_data, research
from assets.research import nightly_research
from assets.resources import build_resources
from assets.schedules import nightly_market_data

ASSET_MODULES = [market_data, research]
SCHEDULES = [nightly_market_data, nightly_research]

defs = Definitions(
    assets=load_assets_from_modules(ASSET_MODULES),
    asset_checks=load_asset_checks_from_modules(ASSET_MODULES),
    schedules=SCHEDULES,
    resources=build_resources(os.environ.get("SCALPER_CONFIG")),
)
