"""IB's historical-data pacing rules, as the fake gateway enforces them.

From IB's "Historical Data Limitations" (TWS API documentation,
https://interactivebrokers.github.io/tws-api/historical_limitations.html), a request causes a
pacing violation (error 162) when it is

* an identical historical data request made within 15 seconds of another;
* the sixth (or later) request for the same contract, exchange and tick type within two seconds;
* more than 60 requests within any ten-minute period.

IB states these for bars of 30 seconds or less and paces larger bars more softly; the fake applies
them to every bar size, so code that passes the fake also passes the real gateway. Every request
the gateway receives counts, including the ones it rejected.

This module is the tests' oracle for pacing: the gateway rejects what `broken_rule` reports, and
the downloader's pacer is checked against the same function, independently of the pacer's own
bookkeeping.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

PACING_VIOLATION = (
    "Historical Market Data Service error message:Historical data request pacing violation"
)


class Query(Protocol):
    """What the rules need to know about a request."""

    @property
    def at(self) -> float:
        """When the gateway received it (epoch seconds)."""

    @property
    def contract_key(self) -> Hashable:
        """Contract, exchange and tick type."""

    @property
    def identity(self) -> Hashable:
        """Every parameter of the request (two requests are identical when these are equal)."""


@dataclass(frozen=True)
class PacingRule:
    """Violated by a request when `limit` or more earlier requests in its `scope` were made less
    than `window` seconds before it."""

    description: str
    limit: int
    window: float
    scope: Literal["all", "contract", "identical"]

    def counts(self, earlier: Query, query: Query) -> bool:
        """Whether `earlier` is one of the requests this rule counts against `query`."""
        if not 0 <= query.at - earlier.at < self.window:
            return False
        if self.scope == "contract":
            return earlier.contract_key == query.contract_key
        if self.scope == "identical":
            return earlier.identity == query.identity
        return True


IB_PACING_RULES = (
    PacingRule("identical request within 15 seconds", 1, 15.0, "identical"),
    PacingRule("6 or more requests for one contract within 2 seconds", 5, 2.0, "contract"),
    PacingRule("more than 60 requests within 10 minutes", 60, 600.0, "all"),
)


def broken_rule(
    earlier: Sequence[Query], query: Query, rules: Sequence[PacingRule] = IB_PACING_RULES
) -> PacingRule | None:
    """The first rule `query` violates given the `earlier` requests, or None when it is allowed."""
    for rule in rules:
        if sum(rule.counts(e, query) for e in earlier) >= rule.limit:
            return rule
    return None
