"""The broker a worker thread trades through: the paper broker, or Interactive Brokers.

`broker.kind: paper` is the built-in `PaperBroker`, which lives in the ledger. `broker.kind:
ibkr` is `IbkrBrokers`: one `IbkrBroker` — one IB API connection — per symbol the thread
trades, opened when the symbol's first message arrives. One connection per symbol, and not one
per thread, because IB reports an order only to the client id that placed it: the symbol's
client id (`scalper.ibkr.link.trader_client_id`) is the same whichever worker thread or process
trades the symbol after a restart, so the trader always finds the orders it left working, and a
connection only ever follows (and, after a reconnect, re-sends) its own symbol's orders.

ib_async is imported only when IB is configured: a paper worker never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scalper.brokers import Broker, Fill, OrderIntent
from scalper.brokers.paper import PaperBroker
from scalper.kafka.messages import Bar
from scalper.ledger import Ledger
from scalper.live.settings import LiveSettings

if TYPE_CHECKING:
    from scalper.ibkr.adapter import IbkrBroker


def make_broker(settings: LiveSettings, ledger: Ledger) -> Broker:
    """The broker of `settings.cfg.broker.kind`, on this thread's ledger connection."""
    if settings.cfg.broker.kind == "ibkr":
        return IbkrBrokers(settings, ledger)
    return PaperBroker(ledger, settings.params)


class IbkrBrokers:
    """A `Broker` that hands each call to the IB connection of the call's symbol."""

    def __init__(self, settings: LiveSettings, ledger: Ledger) -> None:
        self.settings = settings
        self.ledger = ledger
        self.brokers: dict[str, IbkrBroker] = {}

    def broker(self, symbol: str) -> IbkrBroker:
        """The symbol's connection, opened on first use (waits up to `CONNECT_WAIT` for IB,
        then keeps trying in the background: entries are refused meanwhile, exits wait)."""
        broker = self.brokers.get(symbol)
        if broker is None:
            from scalper.ibkr.adapter import IbkrBroker
            from scalper.ibkr.link import trader_client_id, trader_status_path

            cfg = self.settings.cfg
            broker = self.brokers[symbol] = IbkrBroker(
                self.ledger,
                {symbol: self.settings.params[symbol]},
                cfg.broker,
                roll_days=cfg.instrument.roll_days_before_expiry,
                client_id=trader_client_id(cfg.broker, symbol),
                status_path=trader_status_path(self.settings.run_dir, symbol),
            )
        return broker

    def submit(self, order: OrderIntent) -> bool:
        return self.broker(order.symbol).submit(order)

    def cancel(self, symbol: str) -> str | None:
        return self.broker(symbol).cancel(symbol)

    def on_bar(self, symbol: str, bar: Bar) -> list[Fill]:
        return self.broker(symbol).on_bar(symbol, bar)

    def close_out(self, symbol: str, ts: int, price: float) -> Fill | None:
        return self.broker(symbol).close_out(symbol, ts, price)

    def position(self, symbol: str) -> int:
        return self.broker(symbol).position(symbol)

    def refusal(self, client_order_id: str) -> str | None:
        """IB's (or the adapter's) reason for refusing an order `submit` returned False for."""
        for broker in self.brokers.values():
            why = broker.refusal(client_order_id)
            if why is not None:
                return why
        return None

    def close(self) -> None:
        """Disconnect every connection (orders and positions stay as they are at IB)."""
        for broker in self.brokers.values():
            broker.close()
        self.brokers.clear()
