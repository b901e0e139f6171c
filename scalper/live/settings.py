"""What a stream worker runs with: the configuration, its instruments and its run folder.

A run folder (`stream/` in the data directory for `scalper stream run`, one per replay session)
holds everything a worker must find again after a crash: the ledger and Bytewax's recovery
partitions (and, trading at IB, the links' state files). Two runs never share a folder, so a
replay can never see a live worker's orders.

`broker.kind` picks where orders go: the built-in paper broker, or Interactive Brokers
(`ibkr`: `scalper.live.brokers`). Whether the IB settings are safe for the trading mode is
`scalper.config`'s check, done when the configuration is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scalper import paths
from scalper.config import Config, load_config
from scalper.engine import engine_params
from scalper.errors import ConfigError
from scalper.instruments import INSTRUMENTS
from scalper.kafka.topics import CONTROL, bars_topic


def default_run_dir() -> Path:
    """The run folder of `scalper stream run`: `stream/` in the data directory."""
    return paths.subdir("stream")


def symbol_params(cfg: Config, symbol: str) -> dict[str, Any]:
    """Engine parameters for `symbol`: the configuration with that instrument's contract facts.

    The configured instrument keeps its (validated) section; any other symbol must be in the
    instruments table, because a guessed point value would corrupt every P&L.
    """
    if symbol == cfg.instrument.symbol:
        return engine_params(cfg)
    spec = INSTRUMENTS.get(symbol)
    if spec is None:
        known = ", ".join(INSTRUMENTS)
        raise ConfigError(
            f"{cfg.source}: stream.symbols: {symbol!r} is not in the instruments table ({known})"
        )
    instrument = replace(
        cfg.instrument, symbol=symbol, tick_size=spec.tick_size, point_value=spec.point_value
    )
    return engine_params(replace(cfg, instrument=instrument))


@dataclass(frozen=True)
class LiveSettings:
    """A validated configuration as the worker needs it, per symbol."""

    config_path: str | None
    cfg: Config
    run_dir: Path
    source_seconds: int
    params: Mapping[str, Mapping[str, Any]]

    @classmethod
    def load(
        cls, config_path: str | None, run_dir: Path, *, source_seconds: int | None = None
    ) -> LiveSettings:
        """Settings from a configuration file; `source_seconds` overrides the configured size
        of the incoming bars (a replayed file brings its own)."""
        cfg = load_config(config_path)  # also the live-mode checks (port, account, ...)
        source = source_seconds or cfg.stream.source_bar_seconds
        if cfg.strategy.bar_seconds % source:
            raise ConfigError(
                f"{cfg.source}: stream.source_bar_seconds = {source}: strategy.bar_seconds "
                f"({cfg.strategy.bar_seconds}) must be a multiple of it"
            )
        symbols = cfg.stream.symbols or (cfg.instrument.symbol,)
        if cfg.broker.kind == "ibkr":
            unknown = [s for s in symbols if s not in INSTRUMENTS]
            if unknown:  # IB needs the contract facts, and the client ids follow the table
                raise ConfigError(
                    f"{cfg.source}: broker.kind = 'ibkr': {unknown[0]!r} is not in the "
                    f"instruments table ({', '.join(INSTRUMENTS)}), so it cannot trade at IB"
                )
        params = {symbol: symbol_params(cfg, symbol) for symbol in symbols}
        return cls(config_path, cfg, run_dir, source, params)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self.params)

    @property
    def topics(self) -> list[str]:
        """The worker's input: one bars topic per symbol and the control topic."""
        return [*(bars_topic(s) for s in self.symbols), CONTROL]

    @property
    def bootstrap(self) -> str:
        return self.cfg.kafka.bootstrap

    @property
    def max_position(self) -> int:
        """The sink's position limit in contracts: the configured size, whatever params say."""
        return self.cfg.risk.position_size

    @property
    def ledger_path(self) -> Path:
        return self.run_dir / "ledger.sqlite"

    @property
    def recovery_dir(self) -> Path:
        return self.run_dir / "recovery"
