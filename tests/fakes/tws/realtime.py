"""Real-time 5-second bars (`reqRealTimeBars`), pushed as the gateway clock advances.

IB streams one bar every 5 seconds per subscription, stamped with the bar's START (epoch
seconds), once the bar has closed; it serves only 5-second bars (any other size is refused) and
never backfills: a subscription starts with the bar in progress, and bars missed while the
connection was down are gone. The gateway calls `publish` on every `tick()` of its clock; the
bars are the market's own, aggregated to 5 seconds (the market must be simulated at 1 or 5 s).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tests.fakes.tws.contracts import NO_SECURITY_DEFINITION, ContractBook
from tests.fakes.tws.market import Listing, in_regular_hours
from tests.fakes.tws.protocol import In, Out, Reader
from tests.fakes.tws.session import Handler, Session

BAR_SECONDS = 5
_NS = 1_000_000_000
_INVALID = "Error validating request.-'bR' : cause - "


@dataclass
class Subscription:
    """One client's stream of bars for one contract."""

    session: Session
    req_id: int
    listing: Listing
    regular_hours: bool
    next_ns: int  # start of the next bar to send


class RealTimeBarService:
    """Answers `reqRealTimeBars` / `cancelRealTimeBars` and publishes the bars."""

    def __init__(self, contracts: ContractBook, clock: Callable[[], float]) -> None:
        self.contracts = contracts
        self.clock = clock
        self.subscriptions: list[Subscription] = []

    def handlers(self) -> Mapping[int, Handler]:
        return {
            In.REQ_REAL_TIME_BARS: self.real_time_bars,
            In.CANCEL_REAL_TIME_BARS: self.cancel_real_time_bars,
        }

    def real_time_bars(self, session: Session, request: Reader) -> str:
        request.skip()  # version
        req_id = request.int()
        listing = self.contracts.listing(request.contract())
        bar_size, what_to_show, use_rth = request.int(), request.text(), request.bool()
        if listing is None:
            return session.error(req_id, *NO_SECURITY_DEFINITION)
        if bar_size != BAR_SECONDS:
            return session.error(req_id, 321, f"{_INVALID}Invalid bar size {bar_size}")
        if what_to_show != "TRADES":
            return session.error(req_id, 321, f"{_INVALID}the fake gateway serves TRADES only")
        step = BAR_SECONDS * _NS
        start = int(self.clock() * _NS) // step * step
        self.subscriptions.append(Subscription(session, req_id, listing, use_rth, start))
        return f"subscribed {listing.local_symbol}"

    def cancel_real_time_bars(self, session: Session, request: Reader) -> str:
        request.skip()  # version
        req_id = request.int()
        self.subscriptions = [
            s for s in self.subscriptions if (s.session, s.req_id) != (session, req_id)
        ]
        return "cancelled"

    def publish(self) -> None:
        """Send every bar that closed since the last call to its subscribers."""
        closed_by = int(self.clock() * _NS) - BAR_SECONDS * _NS
        self.subscriptions = [s for s in self.subscriptions if not s.session.closed]
        for subscription in self.subscriptions:
            self._send_closed(subscription, closed_by)

    def forget(self) -> None:
        """Drop every subscription: IB's 1101 ("data lost") means clients must subscribe again."""
        self.subscriptions.clear()

    def _send_closed(self, subscription: Subscription, closed_by: int) -> None:
        tape = self.contracts.market.tape(subscription.listing, BAR_SECONDS)
        for i in tape.starting(subscription.next_ns, closed_by):
            ts = int(tape.ts[i])
            if subscription.regular_hours and not in_regular_hours(ts):
                continue
            high, low, close = tape.high[i], tape.low[i], tape.close[i]
            wap = round((high + low + close) / 3, 6)
            volume = int(tape.volume[i])
            subscription.session.send(
                Out.REAL_TIME_BARS, 3, subscription.req_id, ts // _NS,
                tape.open[i], high, low, close, volume, wap, volume,
            )  # fmt: skip
        step = BAR_SECONDS * _NS
        subscription.next_ns = max(subscription.next_ns, closed_by // step * step + step)
