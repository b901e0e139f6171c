"""Fixtures shared by the test modules (each kept in its own file, exposed here), and the
Hypothesis profile.

Property tests judge behaviour, not speed: on a loaded 2-core machine (CI, or a Kafka broker and
a Dagster run beside the tests) Hypothesis' timing health checks and per-example deadline would
fail tests for being slow, so the profile turns exactly those off and nothing else.
"""

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.fakes.clock import ManualClock
from tests.fakes.tws import FakeGateway, FakeMarket
from tests.kafka_fixtures import kafka_broker as kafka_broker
from tests.shared import TRADING_START

settings.register_profile(
    "scalper",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("scalper")


@pytest.fixture(autouse=True, scope="session")
def user_data_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The platform's user data folder, the default data directory, for this test session: a
    test (or a command it runs) that sets no SCALPER_HOME never writes into the real user's.
    The Kafka jars, fetched once with Maven, stay in the user's cache folder between runs."""
    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get("SCALPER_KAFKA_LIBS"):
            cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
            patch.setenv("SCALPER_KAFKA_LIBS", str(cache.absolute() / "scalper" / "kafka-libs"))
        patch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
        yield


@pytest.fixture(scope="module")
def market() -> FakeMarket:
    """The fake gateway's market: one trading day of 5-second bars (IB's real-time bar size);
    the download tests override it with months of history."""
    return FakeMarket(date(2024, 6, 3), 1, bar_seconds=5)


@pytest.fixture
def clock() -> ManualClock:
    """The gateway's clock, at `TRADING_START`: the market moves when a test advances it."""
    return ManualClock(TRADING_START)


@pytest.fixture
def gateway_options() -> dict[str, Any]:
    """Extra `FakeGateway` settings; a test module overrides this fixture to change them."""
    return {}


@pytest.fixture
def gateway(
    market: FakeMarket, clock: ManualClock, gateway_options: dict[str, Any]
) -> Iterator[FakeGateway]:
    """The fake IB Gateway on a free port, serving the test module's `market` on its `clock`."""
    with FakeGateway(market, clock=clock.now, **gateway_options) as gateway:
        yield gateway
