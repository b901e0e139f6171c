"""`Operations`: what every operation of the trading day needs, built from one configuration.

The flows run as separate processes (Prefect), the CLI commands too; each builds this context
from the configuration file and reaches the same places the stream worker uses: its ledger (in
the run folder `stream/` of the data directory), the `control` topic it obeys, the broker it
trades with (`broker`), and the alert channels.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from time import time_ns
from typing import TYPE_CHECKING

from scalper.alerts import Alerter, alerter_from_config
from scalper.calendar import SessionClock
from scalper.config import Config, load_config
from scalper.errors import ScalperError
from scalper.kafka.messages import ALL_SYMBOLS, Control, ControlCommand
from scalper.ledger import Ledger
from scalper.live.settings import LiveSettings, default_run_dir, symbol_params
from scalper.paths import describe

if TYPE_CHECKING:
    from scalper.ops.broker import BrokerView


@dataclass(frozen=True)
class Operations:
    """One configuration's view of the trading system, for the operations."""

    config_path: str | None
    settings: LiveSettings
    alerter: Alerter

    @classmethod
    def load(cls, config_path: str | None) -> Operations:
        """The context of a configuration file (None: the built-in defaults). The stream's
        settings are built without the worker's own start checks: the operations must work
        whatever state the worker is in."""
        cfg = load_config(config_path)
        symbols = cfg.stream.symbols or (cfg.instrument.symbol,)
        params = {symbol: symbol_params(cfg, symbol) for symbol in symbols}
        source = cfg.stream.source_bar_seconds
        settings = LiveSettings(config_path, cfg, default_run_dir(), source, params)
        return cls(config_path, settings, alerter_from_config(cfg))

    @property
    def cfg(self) -> Config:
        return self.settings.cfg

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.settings.symbols

    def require_ledger(self) -> None:
        """A `ScalperError` naming where it looked, unless the worker's ledger exists.

        The operations never create it: without one no worker has run with this data
        directory, and an empty ledger made here would report "position +0, P&L 0, flat" —
        in `status`, the daily summary, session open and the EOD watchdog — for a worker that
        trades from another data directory.
        """
        path = self.settings.ledger_path
        if not path.is_file():
            raise ScalperError(
                f"no ledger at {path}: no stream worker has run with the data directory "
                f"{describe()}; set SCALPER_HOME (or paths.home) to the worker's"
            )

    @contextmanager
    def ledger(self) -> Iterator[Ledger]:
        """The stream worker's ledger (a connection of our own, closed after the block); never
        created (`require_ledger`). A ledger that cannot be read (not a database, locked past
        the timeout) is a `ScalperError` naming it, in the block too: the kill switch reports
        it and carries on with its other paths, the other commands print one line."""
        self.require_ledger()
        path = self.settings.ledger_path
        try:
            ledger = Ledger(path)
        except sqlite3.Error as exc:
            raise ScalperError(f"the ledger {path} cannot be read: {exc}") from None
        try:
            yield ledger
        except sqlite3.Error as exc:
            raise ScalperError(f"the ledger {path} cannot be read: {exc}") from None
        finally:
            ledger.close()

    def control(
        self,
        command: ControlCommand,
        reason: str,
        symbol: str = ALL_SYMBOLS,
        *,
        timeout: float | None = None,
    ) -> Control:
        """Publish a command on the `control` topic, which every stream worker obeys (within
        `timeout` seconds when given; a `ScalperError` when Kafka does not take it)."""
        from scalper.kafka.clients import send_control

        control = Control(command, symbol, reason)
        send_control(self.cfg.kafka.bootstrap, control, timeout=timeout)
        return control

    def broker(self) -> BrokerView:
        """The broker the stream trades with, as the operations see it."""
        from scalper.ops.broker import broker_view

        return broker_view(self)

    def session_date(self, now_ns: int | None = None) -> date:
        """The trading session (SPEC §2) of `now_ns` (default: now)."""
        session = self.cfg.session
        clock = SessionClock(session.timezone, session.session_end)
        return clock.session_date(time_ns() if now_ns is None else now_ns)
