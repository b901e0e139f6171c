"""Fixtures shared by the test modules (each kept in its own file, exposed here), and the
Hypothesis profile.

Property tests judge behaviour, not speed: on a loaded 2-core machine (CI, or a Kafka broker and
a Dagster run beside the tests) Hypothesis' timing health checks and per-example deadline would
fail tests for being slow, so the profile turns exactly those off and nothing else.
"""

from hypothesis import HealthCheck, settings

from tests.kafka_fixtures import kafka_broker as kafka_broker

settings.register_profile(
    "scalper",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("scalper")
