"""Fixtures shared by the test modules (each kept in its own file, exposed here)."""

from tests.kafka_fixtures import kafka_broker as kafka_broker
