"""What a stream worker runs with: the configuration, its instruments and its run folder.

A run folder (`stream/` in the data directory for `scalper stream run`, one per replay session)
holds everything a worker must find again after a crash: the ledger and Bytewax's recovery
partitions (and, trading at IB, the links' state files). Two runs never share a folder, so a
replay can never see a live worker's orders.

A replay's worker also runs in the replay's own topic namespace (`scalper.kafka.topics`): it
reads and writes no topic a live worker reads, it trades through the paper broker whatever
`broker.kind` says (its settings carry a paper broker, so no code path can reach IB), and it
takes bars by their event time with no age limit. A live worker refuses bars older than
`stream.max_bar_age_seconds` (`scalper.live.trader`).

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
from scalper.config import Config, load_config, paper_trading_warnings
from scalper.engine import engine_params
from scalper.errors import ConfigError
from scalper.instruments import INSTRUMENTS
from scalper.kafka.topics import LIVE, Namespace


def default_run_dir(*, create: bool = False) -> Path:
    """The run folder of `scalper stream run`: `stream/` in the data directory, created only
    for the worker itself (`create`); the operations read it and must not invent one."""
    return paths.subdir("stream") if create else paths.subdir_path("stream")


def symbol_config(cfg: Config, symbol: str) -> Config:
    """The configuration as it trades `symbol`: with that instrument's contract facts.

    The configured instrument keeps its (validated) section; any other symbol must be in the
    instruments table, because a guessed point value would corrupt every P&L.
    """
    if symbol == cfg.instrument.symbol:
        return cfg
    spec = INSTRUMENTS.get(symbol)
    if spec is None:
        known = ", ".join(INSTRUMENTS)
        raise ConfigError(
            f"{cfg.source}: stream.symbols: {symbol!r} is not in the instruments table ({known})"
        )
    instrument = replace(
        cfg.instrument, symbol=symbol, tick_size=spec.tick_size, point_value=spec.point_value
    )
    return replace(cfg, instrument=instrument)


def symbol_params(cfg: Config, symbol: str) -> dict[str, Any]:
    """Engine parameters for `symbol` (`symbol_config`)."""
    return engine_params(symbol_config(cfg, symbol))


@dataclass(frozen=True)
class LiveSettings:
    """A validated configuration as the worker needs it, per symbol."""

    config_path: str | None
    cfg: Config
    run_dir: Path
    source_seconds: int
    params: Mapping[str, Mapping[str, Any]]
    namespace: Namespace = LIVE

    def __post_init__(self) -> None:
        if not self.namespace.is_live and self.cfg.broker.kind != "paper":
            raise ValueError("a replay's worker trades through the paper broker only")

    @classmethod
    def load(
        cls,
        config_path: str | None,
        run_dir: Path,
        *,
        source_seconds: int | None = None,
        replay: str | None = None,
    ) -> LiveSettings:
        """Settings from a configuration file; `source_seconds` overrides the configured size
        of the incoming bars (a replayed file brings its own); `replay` (a run id) puts the
        worker in that replay's namespace, with the paper broker."""
        cfg = load_config(config_path)  # also the live-mode checks (port, account, ...)
        namespace = LIVE if replay is None else Namespace.of_replay(replay)
        if not namespace.is_live:  # history never trades at a real broker; the replayed file
            # is the configured instrument's, whatever else the live workers trade
            stream = replace(cfg.stream, symbols=None)
            cfg = replace(
                cfg, broker=replace(cfg.broker, kind="paper", mode="paper"), stream=stream
            )
        else:  # live mode refused these already; paper trading is warned
            cfg = replace(cfg, warnings=cfg.warnings + paper_trading_warnings(cfg))
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
        return cls(config_path, cfg, run_dir, source, params, namespace)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self.params)

    @property
    def topics(self) -> list[str]:
        """The worker's input: one bars topic per symbol and the control topic."""
        return [*(self.namespace.bars(s) for s in self.symbols), self.namespace.control]

    @property
    def max_bar_age_seconds(self) -> int:
        """How old a bar may be when it reaches Kafka; 0 (a replay: event time) for no limit."""
        return self.cfg.stream.max_bar_age_seconds if self.namespace.is_live else 0

    @property
    def bootstrap(self) -> str:
        return self.cfg.kafka.bootstrap

    @property
    def max_position(self) -> int:
        """The sink's position limit in contracts: the configured size (the top size tier's,
        SPEC §4.9), whatever params say."""
        return self.cfg.risk.max_contracts

    @property
    def ledger_path(self) -> Path:
        return self.run_dir / "ledger.sqlite"

    @property
    def recovery_dir(self) -> Path:
        return self.run_dir / "recovery"
