"""The live-bars bridge: IB real-time 5-second bars of the front contract → Kafka `bars.<symbol>`.

IB streams one bar every 5 seconds per subscription (`reqRealTimeBars`, trades), stamped with
its START in epoch seconds — exactly SPEC §3's `ts` (UTC, bar start), so a bar is published as
IB sent it, in nanoseconds. The stream worker aggregates them to the strategy's bar size.

What keeps the feed right through a trading week:

* the contract is the front one by the roll rule for the session IB's clock is in; the first
  bar of each new session resolves it again and moves the subscription when the front rolled;
* the subscription is renewed after every reconnect and after IB's 1101 ("restored, data
  lost"), the two moments IB forgets it; bars missed meanwhile are gone, as at IB;
* a bar is published once: one that is not newer than the last published is dropped (the
  worker would dead-letter it anyway).

The IB side runs on an asyncio loop in a thread of its own; the caller's thread publishes
(`scalper.kafka.clients.publish`, fed from a queue), so a slow broker never stalls IB's socket.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Callable, Iterator
from datetime import date

from ib_async import IB, Contract, RealTimeBarList

from scalper.calendar import SessionClock
from scalper.config import BrokerConfig
from scalper.ibkr.connectivity import DATA_LOST, Connectivity
from scalper.ibkr.link import RECONNECT_PAUSES, IbLink
from scalper.ibkr.loop import LoopThread
from scalper.kafka.messages import Bar, encode_bar

log = logging.getLogger(__name__)

BAR_SECONDS = 5
WHAT_TO_SHOW = "TRADES"
_NS = 1_000_000_000


class BarBridge:
    """Subscribes to `symbol`'s front contract and hands every new bar to `emit`."""

    def __init__(
        self,
        broker: BrokerConfig,
        symbol: str,
        roll_days: int,
        emit: Callable[[Bar], None],
        *,
        client_id: int | None = None,
        pauses: tuple[float, ...] = RECONNECT_PAUSES,
    ) -> None:
        self.symbol = symbol
        self.roll_days = roll_days
        self.emit = emit
        self.link = IbLink(broker, client_id=client_id, readonly=True, pauses=pauses, role="bridge")
        self.link.on_ready.append(self._subscribe)
        self.link.on_change.append(self._on_change)
        self.last_ts: int | None = None
        self.session: date | None = None
        self.contract: Contract | None = None
        self._bars: RealTimeBarList | None = None
        self._clock = SessionClock()

    async def start(self, attempts: int | None = None) -> None:
        """Connect (retrying `attempts` times, None: until it works) and subscribe."""
        await self.link.start(attempts=attempts)

    async def stop(self) -> None:
        await self.link.close()

    async def _subscribe(self, ib: IB) -> None:
        now = await ib.reqCurrentTimeAsync()
        self.session = self._clock.session_date(int(now.timestamp()) * _NS)
        await self._stream(await self._front(self.session))

    async def _front(self, session: date) -> Contract:
        return await self.link.front_contract(self.symbol, session, self.roll_days)

    async def _stream(self, contract: Contract) -> None:
        """Subscribe to `contract`'s bars, ending the previous subscription of this connection."""
        ib = self.link.ib
        if self._bars is not None and ib.isConnected():
            ib.cancelRealTimeBars(self._bars)
        self.contract = contract
        self._bars = ib.reqRealTimeBars(contract, BAR_SECONDS, WHAT_TO_SHOW, useRTH=False)
        self._bars.updateEvent += self._on_bars
        log.info("streaming %s 5-second bars", contract.localSymbol)

    def _on_change(self, connectivity: Connectivity, code: int | None) -> None:
        if code == DATA_LOST and self.link.connected and self.contract is not None:
            asyncio.get_running_loop().create_task(self._stream(self.contract))

    async def _roll(self, session: date) -> None:
        """A new session began: follow the front contract if it changed."""
        front = await self._front(session)
        if self.contract is None or front.conId != self.contract.conId:
            await self._stream(front)

    def _on_bars(self, bars: RealTimeBarList, has_new_bar: bool) -> None:
        if not has_new_bar or not bars:
            return
        raw = bars[-1]
        bar = Bar(
            int(raw.time.timestamp()) * _NS, float(raw.open_), float(raw.high), float(raw.low),
            float(raw.close), int(raw.volume), self.symbol,
        )  # fmt: skip
        if self.last_ts is not None and bar.ts <= self.last_ts:
            return
        self.last_ts = bar.ts
        self.emit(bar)
        session = self._clock.session_date(bar.ts)
        if session != self.session:
            self.session = session
            asyncio.get_running_loop().create_task(self._roll(session))


class BridgeThread:
    """A `BarBridge` on its own loop thread; `messages()` yields what it receives, until `stop`."""

    def __init__(self, make: Callable[[Callable[[Bar], None]], BarBridge]) -> None:
        self._queue: queue.Queue[Bar | None] = queue.Queue()
        self.bridge = make(self._queue.put)
        self._loop = LoopThread("ib-bridge")

    def start(self, attempts: int | None = None) -> None:
        """Connect and subscribe (retrying `attempts` times, None: until it works)."""
        self._loop.run(self.bridge.start(attempts))

    def messages(self) -> Iterator[tuple[bytes, bytes]]:
        """The bars as `bars.<symbol>` messages (key, value), for `publish`, until `stop`."""
        return map(encode_bar, iter(self._queue.get, None))

    def stop(self) -> None:
        """Disconnect and end `messages()` (callable from any thread)."""
        self._loop.stop(self.bridge.stop())
        self._queue.put(None)
