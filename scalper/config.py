"""Configuration: one YAML file, validated completely at load (SPEC §5).

Why so strict: in a trading system a typo does not crash, it silently trades. A misspelt
`daily_los_limit` would leave the default in force, a wrong point value corrupts every P&L, and a
paper port in a "live" setup means orders go nowhere while the trader believes they are protected.
So every key is known, every value is typed and bounded, and every problem is one line naming the
file, the key, the value and why. Secrets (account id, tokens) never appear in messages, `repr` or
`to_dict()`.

Safety rules come in three strengths:

- settings that would make *paper* mode send real orders are refused in every mode;
- requirements of live trading (a live port, an account, a stop, an alert channel) are checked in
  live mode only, because they are meaningless for a simulation;
- risk hazards (no daily loss limit, a stop beyond it, ...) are errors in live mode and warnings in
  paper mode, where experimenting with them is legitimate.

Adding a section: write a frozen dataclass subclassing `Section` whose fields carry their defaults
(and bounds, via `setting`), then add it as a field of `Config`. Loading, `DEFAULTS`, unknown-key
detection and `to_dict()` follow from the dataclass.
"""

from __future__ import annotations

import difflib
import itertools
import math
import os
import re
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from datetime import date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml
from yaml.constructor import ConstructorError

from scalper.calendar import (
    GLOBEX_CLOSE,
    GLOBEX_SESSION_END,
    NEW_YORK,
    calendar_mismatch,
    unknown_calendar,
    zone,
    zone_problem,
)
from scalper.errors import ConfigError, ScalperError
from scalper.instruments import INSTRUMENTS, canonical_symbol
from scalper.kafka.topics import is_valid_symbol
from scalper.paths import use_configured_home

DEFAULT_SOURCE = "<defaults>"
PROVENANCE_KEY = "provenance"
"""The top-level key of an overrides file (approved parameters) recording where it came from
(`scalper.research.read_provenance`): not settings, so `load_config_with_overrides` skips it."""
REDACTED = "***"

StrategyKind = Literal["zscore", "bollinger", "rsi"]
SlippageModel = Literal["fixed", "adaptive"]
SizeTiers = tuple[tuple[float, int], ...]
"""`risk.size_tiers`: (min_balance, contracts) pairs, min_balance strictly ascending."""
BrokerKind = Literal["paper", "ibkr"]
TradingMode = Literal["paper", "live"]
SessionTime = Literal["entry_start", "entry_end", "flatten_at", "session_end"]
DataSource = Literal["simulator", "file", "ibkr"]
FileFormat = Literal["normalized", "lean_zip", "eastern_csv"]
TsUnit = Literal["auto", "s", "ms", "us", "ns"]  # of integer epoch times in a bars file
Stamped = Literal["start", "end"]  # a bars file's times are the bar's start or its end
FoldMode = Literal["rolling", "anchored"]
Objective = Literal["sharpe", "sortino", "net_pnl", "profit_factor", "calmar"]
ReconcilePolicy = Literal["halt", "adopt"]


def setting(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    secret: bool = False,
    env: str | None = None,
) -> Any:
    """A section field with its bounds.

    `secret` keeps the value out of messages, `repr` and `to_dict()`; `env` names the environment
    variable the default is read from (`${env}` in `DEFAULTS`), the dataclass default then being
    what an unset variable resolves to.
    """
    metadata = {"ge": ge, "gt": gt, "le": le, "secret": secret, "env": env}
    return field(default=default, repr=not secret, metadata=metadata)


def _format_time(value: time) -> str:
    return value.strftime("%H:%M:%S" if value.second else "%H:%M")


@dataclass(frozen=True)
class Section:
    """Base of the configuration sections: a frozen dataclass of defaulted, bounded settings."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """Violations of rules between fields, as (field name, why); every one is reported."""
        yield from ()

    def to_dict(self) -> dict[str, Any]:
        """Plain data (times as "HH:MM", secrets redacted) as it could be written in the file."""
        return {f.name: _plain(getattr(self, f.name), f.metadata) for f in fields(self)}


def _plain(value: Any, metadata: Mapping[str, Any]) -> Any:
    if value is not None and metadata.get("secret"):
        return REDACTED
    if isinstance(value, tuple):
        return [_plain(v, {}) for v in value]
    if isinstance(value, Mapping):  # session.early_closes: {"YYYY-MM-DD": "HH:MM"}
        return {_plain(k, {}): _plain(v, {}) for k, v in value.items()}
    if isinstance(value, date):
        return value.isoformat()
    return _format_time(value) if isinstance(value, time) else value


@dataclass(frozen=True)
class InstrumentConfig(Section):
    """The traded product; checked against the instruments table when the symbol is in it."""

    symbol: str = "MES"
    tick_size: float = setting(0.25, gt=0)
    point_value: float = setting(5.0, gt=0)
    roll_days_before_expiry: int = setting(8, ge=0, le=60)

    def problems(self) -> Iterator[tuple[str, str]]:
        miscased = _miscased_symbol(self.symbol)
        if miscased:
            yield "symbol", miscased
        known = INSTRUMENTS.get(self.symbol)
        if known is None:
            return
        if not math.isclose(self.tick_size, known.tick_size):
            yield "tick_size", f"{self.symbol} trades in ticks of {known.tick_size}"
        if not math.isclose(self.point_value, known.point_value):
            why = f"{self.symbol} is worth {known.point_value} per point; a wrong one corrupts P&L"
            yield "point_value", why


def _miscased_symbol(symbol: str) -> str | None:
    """Why `symbol` is a known instrument in the wrong case (`mes`), or None.

    A symbol is used as written: it names the Kafka topic, the ledger's rows and the IB contract,
    and `mes` would pass none of the checks the instruments table gives `MES`.
    """
    known = canonical_symbol(symbol)
    if known == symbol:
        return None
    return f"{symbol!r} is {known} in the wrong case; write {known!r}"


@dataclass(frozen=True)
class StrategyConfig(Section):
    """Signal generation (SPEC §4): z-score, Bollinger (bands at `k` std) or Wilder RSI."""

    kind: StrategyKind = "zscore"
    bar_seconds: int = setting(60, ge=1)
    lookback: int = setting(20, ge=2)
    entry_z: float = setting(2.0, gt=0)
    exit_z: float = 0.5
    min_volume: int = setting(0, ge=0)
    k: float = setting(2.0, gt=0)
    period: int = setting(14, ge=2)
    oversold: float = setting(30.0, ge=0, le=100)
    overbought: float = setting(70.0, ge=0, le=100)

    def problems(self) -> Iterator[tuple[str, str]]:
        if 86_400 % self.bar_seconds:
            yield "bar_seconds", "must divide 86400 (one day) evenly, e.g. 5, 60 or 300"
        if self.exit_z >= self.entry_z:
            yield "exit_z", f"exit_z must be below entry_z ({self.entry_z})"
        if self.oversold >= self.overbought:
            yield "oversold", f"must be below overbought ({self.overbought})"


@dataclass(frozen=True)
class RiskConfig(Section):
    """Position sizing and the limits of the risk gate (SPEC §4); a limit of 0 disables it.

    The small account's risk model (SPEC §4.9), every rule off by default: contracts by balance
    (`size_tiers`), fewer late in the day (`reduce_size_at`, `reduce_size_factor`), a dollar cap
    on the initial stop's loss (`max_risk_per_trade`), stops and targets in Wilder ATRs of
    `atr_period` bars (`stop_atr`, `target_atr`) and a trailing stop (`trail_ticks`).
    """

    position_size: int = setting(1, ge=1)
    stop_loss_ticks: int = setting(0, ge=0)
    take_profit_ticks: int = setting(0, ge=0)
    daily_loss_limit: float = setting(50.0, ge=0)
    daily_drawdown_limit: float = setting(75.0, ge=0)
    max_consecutive_losses: int = setting(5, ge=0)
    loss_pause_minutes: int = setting(30, ge=0)
    max_trades_per_day: int = setting(50, ge=0)
    max_position_minutes: int = setting(0, ge=0)
    starting_capital: float = setting(1000.0, gt=0)
    kill_switch_loss: float = setting(300.0, ge=0)
    min_account_balance: float = setting(700.0, ge=0)
    size_tiers: SizeTiers = ()
    max_risk_per_trade: float = setting(0.0, ge=0)
    reduce_size_at: time | None = None
    reduce_size_factor: float = setting(0.5, gt=0, le=1)
    stop_atr: float = setting(0.0, ge=0)
    target_atr: float = setting(0.0, ge=0)
    trail_ticks: int = setting(0, ge=0)
    atr_period: int = setting(14, ge=1)

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.stop_loss_ticks and self.stop_atr:
            why = f"a stop in ATRs and in ticks (stop_loss_ticks {self.stop_loss_ticks}): set one"
            yield "stop_atr", why
        if self.take_profit_ticks and self.target_atr:
            ticks = self.take_profit_ticks
            why = f"a target in ATRs and in ticks (take_profit_ticks {ticks}): set one"
            yield "target_atr", why
        balances = [tier[0] for tier in self.size_tiers]
        for before, after in itertools.pairwise(balances):
            if after <= before:
                why = f"min_balance must ascend strictly: {after:g} after {before:g}"
                yield "size_tiers", why
                break

    @property
    def max_contracts(self) -> int:
        """The most contracts an entry can have: the top size tier's, else position_size."""
        return max((tier[1] for tier in self.size_tiers), default=self.position_size)

    @property
    def has_stop(self) -> bool:
        """Whether every entry gets a protective stop, in ticks, in ATRs or trailing."""
        return bool(self.stop_loss_ticks or self.stop_atr or self.trail_ticks)


@dataclass(frozen=True)
class SessionConfig(Section):
    """The trading day in local time: entry window, end-of-day flatten, session roll."""

    timezone: str = "America/New_York"
    entry_start: time = time(9, 30)
    entry_end: time = time(16, 15)
    flatten_at: time = time(16, 25)
    session_end: time = time(18, 0)
    # SPEC §4.9 "Exchange calendar": the library's calendar (e.g. CME_Equity; null: none) and
    # early closes (session date -> New York close) that always win over it.
    calendar: str | None = None
    early_closes: Mapping[date, time] = field(default_factory=lambda: types.MappingProxyType({}))
    early_entry_end_minutes: int = setting(20, ge=0, le=1440)
    early_flatten_minutes: int = setting(10, ge=0, le=1440)

    def seconds_of_day(self, which: SessionTime) -> int:
        """One of the session times as seconds since local midnight, the engine's unit."""
        t: time = getattr(self, which)
        return t.hour * 3600 + t.minute * 60 + t.second

    def problems(self) -> Iterator[tuple[str, str]]:
        bad_zone = zone_problem(self.timezone)  # unknown, or not a place's zone
        if bad_zone:
            yield "timezone", bad_zone
        if self.entry_start >= self.entry_end:
            yield "entry_start", f"must be before entry_end ({_format_time(self.entry_end)!r})"
        if self.entry_end > self.flatten_at:
            yield "entry_end", f"must not be after flatten_at ({_format_time(self.flatten_at)!r})"
        if self.flatten_at > self.session_end:
            why = f"must not be after session_end ({_format_time(self.session_end)!r})"
            yield "flatten_at", why
        unknown = None if self.calendar is None else unknown_calendar(self.calendar)
        if unknown:
            yield "calendar", unknown
        if self.early_entry_end_minutes < self.early_flatten_minutes:
            why = f"must not be below early_flatten_minutes ({self.early_flatten_minutes})"
            yield "early_entry_end_minutes", why
        lead = max(self.early_entry_end_minutes, self.early_flatten_minutes)
        for day, close in self.early_closes.items():
            if day.weekday() >= 5:  # Sunday evening's trading is Monday's session
                yield "early_closes", f"{day} is a {day:%A}: no session has this date"
            elif close.hour * 60 + close.minute < lead:
                why = f"{day}: close {_format_time(close)} is not {lead} minutes after midnight"
                yield "early_closes", why


@dataclass(frozen=True)
class CostsConfig(Section):
    """Costs charged by the backtest's fill simulator."""

    commission_per_side: float = setting(0.42, ge=0)
    slippage_ticks: int = setting(1, ge=0)
    # SPEC §4.9: `adaptive` adds a tick after a bar with volume below `low_volume` (0: never)
    # and one after a bar whose range is at least `high_vol_atr` ATRs (0: never).
    slippage_model: SlippageModel = "fixed"
    low_volume: int = setting(0, ge=0)
    high_vol_atr: float = setting(0.0, ge=0)


@dataclass(frozen=True)
class BrokerConfig(Section):
    """Where orders go. `mode: live` is the one explicit switch that allows real money."""

    kind: BrokerKind = "paper"
    mode: TradingMode = "paper"
    host: str = "127.0.0.1"
    port: int = setting(4002, ge=1, le=65_535)
    client_id: int = setting(1, ge=0)
    account: str | None = setting(None, secret=True, env="IB_ACCOUNT")

    @property
    def is_live(self) -> bool:
        """True when orders may spend real money."""
        return self.mode == "live"


@dataclass(frozen=True)
class KafkaConfig(Section):
    """The Kafka cluster of the stream driver."""

    bootstrap: str = "127.0.0.1:9092"

    def problems(self) -> Iterator[tuple[str, str]]:
        if not all(_is_host_port(server) for server in self.bootstrap.split(",")):
            yield "bootstrap", "must be host:port, comma-separated for several brokers"


def _is_host_port(server: str) -> bool:
    host, _, port = server.strip().rpartition(":")
    return bool(host) and port.isdigit() and 1 <= int(port) <= 65_535


@dataclass(frozen=True)
class StreamConfig(Section):
    """The live stream worker: the instruments it trades and how it keeps its state.

    `source_bar_seconds` is the size of the bars arriving on `bars.<symbol>` (IB real-time bars
    are 5 seconds); the worker aggregates them in event time to `strategy.bar_seconds`.
    `snapshot_seconds` is Bytewax's snapshot interval: after a crash at most that much input is
    processed again (the ledger recognises the repeated orders), so a short one buys a quick
    resume for a little throughput.
    `max_bar_age_seconds`: a live worker dead-letters a bar that closed more than this long
    before it reached Kafka (the broker's append time, fixed in the log, so a resumed worker
    judges a re-read bar as it did the first time): history (a replay, a backfill) never trades.
    A bar that closes more than a few seconds after it reached Kafka (a wrong clock) is refused
    too while the check is on. IB's real-time bars arrive about a second after their
    close; 300 s leaves room for a congested link and none for yesterday. 0 disables the check,
    which live mode refuses.
    """

    symbols: tuple[str, ...] | None = None  # null: instrument.symbol alone
    source_bar_seconds: int = setting(5, ge=1)
    workers: int = setting(1, ge=1)  # Bytewax workers per process
    snapshot_seconds: int = setting(1, ge=1)
    max_bar_age_seconds: int = setting(300, ge=0)

    def problems(self) -> Iterator[tuple[str, str]]:
        symbols = self.symbols or ()
        bad = [s for s in symbols if not is_valid_symbol(s)]
        if bad:
            yield "symbols", f"{bad[0]!r} cannot name a Kafka topic (1-32 letters, digits, _ or -)"
        miscased = next(filter(None, map(_miscased_symbol, symbols)), None)
        if miscased:
            yield "symbols", miscased
        if len({s.upper() for s in symbols}) < len(symbols):
            yield "symbols", "lists a symbol twice"
        if 86_400 % self.source_bar_seconds:
            yield "source_bar_seconds", "must divide 86400 (one day) evenly, e.g. 5 or 60"


@dataclass(frozen=True)
class AlertsConfig(Section):
    """Where halts, kill-switch trips and daily summaries are sent."""

    telegram_token: str | None = setting(None, secret=True, env="TELEGRAM_BOT_TOKEN")
    telegram_chat: str | None = setting(None, env="TELEGRAM_CHAT_ID")
    webhook: str | None = setting(None, secret=True)  # webhook URLs usually embed a token

    @property
    def has_channel(self) -> bool:
        """True when at least one alert channel is fully configured."""
        return bool(self.telegram_token and self.telegram_chat) or bool(self.webhook)

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.webhook and not self.webhook.startswith(("http://", "https://")):
            yield "webhook", "must be an http:// or https:// URL"


@dataclass(frozen=True)
class DataConfig(Section):
    """Where historical bars come from: the simulator (the embedded default), files, or IBKR."""

    source: DataSource = "simulator"
    path: str | None = None  # file source: one file or a folder of files
    format: FileFormat = "normalized"
    # How to read the files' times (`scalper.bars.BarFileSpec`): the column (null: the format's
    # own), the unit of epoch integers (auto: by magnitude), bar start or end (null: start, checked)
    ts_column: str | None = None
    ts_unit: TsUnit = "auto"
    stamped: Stamped | None = None
    bar_seconds: int = setting(60, ge=1)  # the bar size kept in the store
    seed: int = setting(7, ge=0)  # simulator
    start_price: float = setting(5000.0, gt=0)  # simulator

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.source == "file" and not self.path:
            yield "path", "is required when source is file"
        if 86_400 % self.bar_seconds:
            yield "bar_seconds", "must divide 86400 (one day) evenly, e.g. 5, 60 or 300"


@dataclass(frozen=True)
class QualityConfig(Section):
    """Data-quality thresholds of the bar expectations (Great Expectations suites)."""

    max_gap_minutes: int = setting(5, ge=1)  # longest hole allowed inside a session
    max_jump_ticks: int = setting(40, ge=1)  # a larger move between bars needs volume behind it


@dataclass(frozen=True)
class ResearchConfig(Section):
    """Nightly research: the windows, the sweep grid, walk-forward and the go-live gate.

    The grid axes are lists; every combination is run except those this configuration would
    refuse in its mode (`refusals`: exit_z >= entry_z, in live mode no stop, ...), which are
    excluded and reported with the reason. The gate thresholds apply to out-of-sample results
    only, because the in-sample figures of an optimized set flatter it by construction.
    """

    backtest_sessions: int = setting(60, ge=1)  # nightly backtest and sweep: the last N sessions
    walk_forward_sessions: int = setting(250, ge=2)  # walk-forward history: the last N sessions
    lookback: tuple[int, ...] = setting((10, 20, 30, 40, 60), ge=2)
    entry_z: tuple[float, ...] = setting((1.5, 2.0, 2.5, 3.0), gt=0)
    exit_z: tuple[float, ...] = (0.0, 0.5, 1.0)
    stop_loss_ticks: tuple[int, ...] = setting((0, 8, 16), ge=0)
    take_profit_ticks: tuple[int, ...] = setting((0, 8, 16), ge=0)
    # §4.9 axes; one value each by default, so the default grid is the one before them
    stop_atr: tuple[float, ...] = setting((0.0,), ge=0)
    target_atr: tuple[float, ...] = setting((0.0,), ge=0)
    trail_ticks: tuple[int, ...] = setting((0,), ge=0)
    max_risk_per_trade: tuple[float, ...] = setting((0.0,), ge=0)
    folds: int = setting(5, ge=1, le=50)
    in_sample_fraction: float = setting(0.7, gt=0, le=0.95)
    fold_mode: FoldMode = "rolling"
    objective: Objective = "sharpe"
    min_trades: int = setting(30, ge=1)  # in-sample trades a set needs to be chosen
    gate_min_sharpe: float = 0.5  # stitched out-of-sample Sharpe at least
    gate_min_profit_factor: float = setting(1.1, ge=0)  # stitched out-of-sample
    gate_max_drawdown_pct: float = setting(0.2, gt=0, le=1)  # stitched out-of-sample, of peak
    gate_min_trades_per_fold: int = setting(10, ge=0)  # out-of-sample trades in every fold
    gate_max_degradation: float = setting(0.5, ge=0)  # 1 - out-of-sample / in-sample objective
    threads: int = setting(0, ge=0)  # sweep threads; 0 = all cores

    def problems(self) -> Iterator[tuple[str, str]]:
        for axis in GRID_AXES:
            values = getattr(self, axis)
            if len(set(values)) < len(values):
                yield axis, "lists a value twice (every grid point would run twice)"


GRID_AXES = (
    "lookback",
    "entry_z",
    "exit_z",
    "stop_loss_ticks",
    "take_profit_ticks",
    "stop_atr",
    "target_atr",
    "trail_ticks",
    "max_risk_per_trade",
)
"""The sweepable settings, named as in the engine (and as in the strategy and risk sections)."""


@dataclass(frozen=True)
class OpsConfig(Section):
    """The trading day's operations: Prefect flows, stream supervision and alert throttling.

    Times are local to `session.timezone` (New York by default) and the flows run on weekdays.
    `on_mismatch` decides what session open does when the broker and the ledger disagree about
    positions or open orders: `halt` stops trading until a person looks (the safe default),
    `adopt` takes the broker's position as the truth and carries on. `supervise_worker` is
    opt-in: the stream worker trades money, so `ops serve` starts and restarts it only when asked
    to (and stops what it started when it stops).
    """

    on_mismatch: ReconcilePolicy = "halt"
    session_open_at: time = time(9, 0)
    eod_grace_seconds: int = setting(120, ge=0, le=3600)  # watchdog runs at flatten_at + grace
    summary_at: time = time(17, 5)
    supervise_every_seconds: int = setting(60, ge=5)
    stale_after_seconds: int = setting(180, ge=10)  # worker unhealthy without progress this long
    alert_throttle_seconds: int = setting(300, ge=0)  # the same alert at most once per window
    telegram_api: str = "https://api.telegram.org"
    prefect_port: int = setting(4200, ge=1, le=65_535)  # the local Prefect server
    supervise_worker: bool = False  # `ops serve` starts (and restarts) the stream worker

    def problems(self) -> Iterator[tuple[str, str]]:
        if not self.telegram_api.startswith(("http://", "https://")):
            yield "telegram_api", "must be an http:// or https:// URL"


@dataclass(frozen=True)
class PathsConfig(Section):
    """Where the data directory is (`scalper.paths`): `home`, absolute (`~` allowed), or null
    for the platform's user data folder; the environment variable `SCALPER_HOME` wins over it."""

    home: str | None = None

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.home is not None and not Path(self.home).expanduser().is_absolute():
            yield "home", "must be an absolute path (a relative one differs per working directory)"


@dataclass(frozen=True)
class Config:
    """The validated configuration. Build it with `load_config` or `config_from_dict`.

    `Config()` is the defaults without environment substitution, handy as a base for `replace`.
    """

    instrument: InstrumentConfig = field(default_factory=InstrumentConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    costs: CostsConfig = field(default_factory=CostsConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    research: ResearchConfig = field(default_factory=ResearchConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    ops: OpsConfig = field(default_factory=OpsConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    source: str = DEFAULT_SOURCE
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every section as plain data, secrets redacted: safe to print or log."""
        return {name: getattr(self, name).to_dict() for name in SECTIONS}


def _section_types() -> Mapping[str, type[Section]]:
    hints = get_type_hints(Config)
    return types.MappingProxyType(
        {
            f.name: hints[f.name]
            for f in fields(Config)
            if isinstance(hints[f.name], type) and issubclass(hints[f.name], Section)
        }
    )


SECTIONS: Mapping[str, type[Section]] = _section_types()
"""The sections of `Config`, by name, in file order."""


def _raw_default(f: Field[Any]) -> Any:
    if f.metadata.get("env"):
        return "${" + f.metadata["env"] + "}"
    default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
    return _plain(default, {})


DEFAULTS: Mapping[str, Mapping[str, Any]] = types.MappingProxyType(
    {
        name: types.MappingProxyType({f.name: _raw_default(f) for f in fields(section)})
        for name, section in SECTIONS.items()
    }
)
"""The defaults of SPEC §5 as they would be written in YAML, placeholders unresolved."""

_SECRET_KEYS = frozenset(
    f"{name}.{f.name}"
    for name, s in SECTIONS.items()
    for f in fields(s)
    if f.metadata.get("secret")
)


# ---------------------------------------------------------------------------------------------
# Reading YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader with the surprises of YAML 1.1 removed.

    `09:30` stays the string "09:30" instead of the sexagesimal integer 570, `010` is not octal 8,
    `1e-3` is a float, and a duplicated key is an error instead of silently dropping one value.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: list[Any] = []
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:  # `<<: *base`, whose keys the mapping may override
                    continue
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.append(key)
            self.flatten_mapping(node)
        return super().construct_mapping(node, deep=deep)


_MERGE_TAG = "tag:yaml.org,2002:merge"


_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _INT_TAG, re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9_]+|[0-9][0-9_]*(?=[eE]))(?:[eE][-+]?[0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def _read_yaml(path: Path, source: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not a UTF-8 text file") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{source}: {where}invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {' '.join(str(exc).split())}") from None


def _yaml_scalar(text: str) -> Any:
    """`text` read as a YAML scalar would be in the file (number, null), else `text` itself."""
    try:
        value = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return value if value is None or is_number else text


# ---------------------------------------------------------------------------------------------
# Problems and how they are reported

_NO_VALUE = object()
"""Marks an issue reported without a value (unknown keys: a misspelt secret key would leak)."""


@dataclass(frozen=True)
class _Issue:
    path: str
    value: Any
    why: str


@dataclass(frozen=True)
class _Unset:
    raw: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class _Reporter:
    """Formats issues as `file: key = value: why`, redacting secrets and naming unset variables,
    and collects the problems of a file so that all of them are reported at once (`check`).

    A key is reported once: a value that failed its type is not judged again by the rules between
    fields or the safety rules, which saw its default in its place (`reported`).
    """

    source: str
    unset: Mapping[str, _Unset]
    problems: list[str] = field(default_factory=list)
    reported: set[str] = field(default_factory=set)

    def describe(self, issue: _Issue, suffix: str = "") -> str:
        """`key = value: why`, without the file."""
        unset = self.unset.get(issue.path)
        note = (
            f" (environment variable {', '.join(unset.names)} is unset or empty)" if unset else ""
        )
        if issue.value is _NO_VALUE:
            return f"{issue.path}: {issue.why}{suffix}"
        if unset and issue.value in (None, ""):
            shown = unset.raw
        elif issue.value is not None and issue.path in _SECRET_KEYS:
            shown = REDACTED
        else:
            shown = _show(issue.value)
        return f"{issue.path} = {shown}: {issue.why}{note}{suffix}"

    def line(self, issue: _Issue, suffix: str = "") -> str:
        return f"{self.source}: {self.describe(issue, suffix)}"

    def add(self, issue: _Issue, suffix: str = "") -> None:
        """Records a problem, unless its key already has one."""
        if issue.path not in self.reported:
            self.reported.add(issue.path)
            self.problems.append(self.line(issue, suffix))

    def check(self, warnings: tuple[str, ...] = ()) -> None:
        """Raises every problem recorded so far as one `ConfigError`, a line each."""
        if self.problems:
            raise ConfigError(*self.problems, warnings=warnings)


def _show(value: Any) -> str:
    nested = isinstance(value, tuple) and bool(value) and isinstance(value[0], tuple)
    if isinstance(value, Mapping) or nested:  # early_closes, size_tiers: as in the file
        value = _plain(value, {})
    if isinstance(value, list):  # YAML's dates and times in it as written, not Python's repr
        return f"[{', '.join(_show(v) for v in value)}]"
    if isinstance(value, date) and not isinstance(value, datetime):
        value = value.isoformat()
    if isinstance(value, time):
        value = _format_time(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _suggestion(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------------------------
# From raw data to a typed Config


def _check_keys(data: Any, report: _Reporter) -> dict[str, Mapping[str, Any]]:
    """The overrides per section; unknown sections and keys are errors, `section:` alone is {}."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{report.source}: must be a mapping of sections ({', '.join(SECTIONS)})")
    overrides: dict[str, Mapping[str, Any]] = {}
    for name, body in data.items():
        if name not in SECTIONS:
            why = "unknown section" + _suggestion(str(name), tuple(SECTIONS))
            report.add(_Issue(str(name), _NO_VALUE, why))
            continue
        if body is not None and not isinstance(body, Mapping):
            report.add(_Issue(name, body, "must be a mapping of settings"))
            continue
        valid = tuple(f.name for f in fields(SECTIONS[name]))
        for key in body or {}:
            if key not in valid:
                why = "unknown key" + _suggestion(str(key), valid)
                report.add(_Issue(f"{name}.{key}", _NO_VALUE, why))
        overrides[name] = {k: v for k, v in (body or {}).items() if k in valid}
    return overrides


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            merged[key] = _deep_merge(base[key], value)
        else:
            merged[key] = value
    return merged


_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(
    value: Any, env: Mapping[str, str], path: str, unset: dict[str, _Unset], report: _Reporter
) -> Any:
    """`value` with `${VAR}` / `${VAR:-default}` resolved in every string, recursively.

    A string that is exactly one placeholder is read as if its text were written in the file, so
    `port: ${IB_PORT:-4002}` is a number; an unset variable without default gives an empty value,
    i.e. null for optional settings.
    """
    if isinstance(value, Mapping):
        return {
            k: _substitute(v, env, f"{path}.{k}" if path else str(k), unset, report)
            for k, v in value.items()
        }
    if not isinstance(value, str) or "${" not in value:
        return value
    missing = tuple(
        m[1] for m in _PLACEHOLDER.finditer(value) if not env.get(m[1]) and m[2] is None
    )
    resolved = _PLACEHOLDER.sub(lambda m: env.get(m[1]) or m[2] or "", value)
    if missing:
        unset[path] = _Unset(value, missing)
    if "${" in resolved:
        why = "malformed placeholder; write ${VAR} or ${VAR:-default}"
        report.add(_Issue(path, value, why))
    return _yaml_scalar(resolved) if _PLACEHOLDER.fullmatch(value) else resolved


class _Invalid(Exception):
    """A value that does not fit its field; the caller knows which field and reports it."""


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid
    return value


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Invalid
    return float(value)


def _to_str(value: Any) -> str:
    # Telegram chat ids are numbers in YAML unless quoted; any other non-string is a mistake.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Invalid
    return str(value)


_TIME = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?$")


def _to_time(value: Any) -> time:
    if isinstance(value, time):
        return value
    match = _TIME.match(value) if isinstance(value, str) else None
    if match is None:
        raise _Invalid
    return time(int(match[1]), int(match[2]), int(match[3] or 0))


def _to_bool(value: Any) -> bool:
    # Only YAML's own true/false: a 0, 1 or "no" string in a switch is a mistake to report.
    if not isinstance(value, bool):
        raise _Invalid
    return value


_CONVERTERS = {int: _to_int, float: _to_float, str: _to_str, time: _to_time, bool: _to_bool}
_NOUNS = {
    int: "an integer",
    float: "a number",
    str: "a string",
    time: 'a time "HH:MM"',
    bool: "true or false",
}


def _bounds_text(metadata: Mapping[str, Any]) -> str:
    ge, gt, le = metadata.get("ge"), metadata.get("gt"), metadata.get("le")
    if ge is not None and le is not None:
        return f" between {ge:g} and {le:g}"
    if ge is not None:
        return f" >= {ge:g}"
    if gt is not None and le is not None:
        return f" > {gt:g} and <= {le:g}"
    return f" > {gt:g}" if gt is not None else ""


def _within_bounds(value: float, metadata: Mapping[str, Any]) -> bool:
    ge, gt, le = metadata.get("ge"), metadata.get("gt"), metadata.get("le")
    return (
        (ge is None or value >= ge) and (gt is None or value > gt) and (le is None or value <= le)
    )


def _split_optional(hint: Any) -> tuple[Any, bool]:
    if get_origin(hint) in (Union, types.UnionType):
        (inner,) = (arg for arg in get_args(hint) if arg is not type(None))
        return inner, True
    return hint, False


def _convert(value: Any, hint: Any, metadata: Mapping[str, Any]) -> Any:
    """`value` as the field's type, or `_Invalid(why)`."""
    kind, optional = _split_optional(hint)
    if value is None or value == "":
        if optional:
            return None
        raise _Invalid("must be set")
    if kind == SizeTiers:
        return _convert_size_tiers(value)
    if get_origin(kind) is tuple:
        return _convert_sequence(value, get_args(kind)[0], metadata)
    if get_origin(kind) is Mapping:
        return _convert_mapping(value, *get_args(kind))
    if get_origin(kind) is Literal:
        choices = get_args(kind)
        if value not in choices:
            raise _Invalid(
                f"must be one of {', '.join(choices)}" + _suggestion(str(value), choices)
            )
        return value
    expected = f"must be {_NOUNS[kind]}{_bounds_text(metadata)}"
    try:
        converted = _CONVERTERS[kind](value)
    except _Invalid:
        raise _Invalid(expected) from None
    if isinstance(converted, int | float) and not _within_bounds(converted, metadata):
        raise _Invalid(expected)
    return converted


def _convert_sequence(value: Any, item: Any, metadata: Mapping[str, Any]) -> tuple[Any, ...]:
    """A `tuple[T, ...]` field (a sweep grid axis): a YAML list, or one value for a list of one."""
    items = value if isinstance(value, list | tuple) else [value]
    if not items:
        raise _Invalid("must list at least one value")
    return tuple(_convert(v, item, metadata) for v in items)


def _convert_size_tiers(value: Any) -> SizeTiers:
    """`risk.size_tiers`: a list of [min_balance, contracts] (the order is a rule of the
    section, checked with the others)."""
    shape = "must be a list of [min_balance, contracts] pairs, e.g. [[0, 1], [1500, 2]]"
    if not isinstance(value, list | tuple):
        raise _Invalid(shape)
    tiers = []
    for tier in value:
        if not (isinstance(tier, list | tuple) and len(tier) == 2):
            raise _Invalid(shape)
        try:
            balance, contracts = _to_float(tier[0]), _to_int(tier[1])
        except _Invalid:
            raise _Invalid(shape) from None
        if contracts < 0:
            raise _Invalid(f"{shape}; contracts must be >= 0, not {contracts}")
        tiers.append((balance, contracts))
    return tuple(tiers)


_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _to_date(value: Any) -> date:
    # YAML reads an unquoted 2024-11-28 as a date, a quoted one as a string: both mean the same.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not (isinstance(value, str) and _DATE.match(value)):
        raise _Invalid
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _Invalid from None


def _convert_mapping(value: Any, key: Any, item: Any) -> types.MappingProxyType[Any, Any]:
    """A `Mapping[date, time]` field (`session.early_closes`), read-only; errors name the key."""
    if not isinstance(value, Mapping):
        raise _Invalid('must be a mapping of "YYYY-MM-DD": "HH:MM"')
    converters = {date: (_to_date, 'a date "YYYY-MM-DD"'), time: (_to_time, _NOUNS[time])}
    (to_key, key_noun), (to_item, item_noun) = converters[key], converters[item]
    out = {}
    for k, v in value.items():
        try:
            converted = to_key(k)
        except _Invalid:
            raise _Invalid(f"key {_show(k)} must be {key_noun}") from None
        try:
            out[converted] = to_item(v)
        except _Invalid:
            raise _Invalid(f"{_show(k)}: {_show(v)} must be {item_noun}") from None
    return types.MappingProxyType(dict(sorted(out.items())))


@cache
def _hints(section: type[Section]) -> dict[str, Any]:
    return get_type_hints(section)


def _build_section(
    name: str, section: type[Section], values: Mapping[str, Any], report: _Reporter
) -> Section:
    """The section from its merged values; a value that does not fit is reported and its default
    takes its place, so that the rest of the file is still checked."""
    hints = _hints(section)
    kwargs = {}
    for f in fields(section):
        try:
            kwargs[f.name] = _convert(values[f.name], hints[f.name], f.metadata)
        except _Invalid as exc:
            report.add(_Issue(f"{name}.{f.name}", values[f.name], str(exc)))
    built = section(**kwargs)
    for key, why in built.problems():
        report.add(_Issue(f"{name}.{key}", getattr(built, key), why))
    return built


# ---------------------------------------------------------------------------------------------
# Safety rules

_IB_PAPER_PORTS = {4002: "IB Gateway paper-trading", 7497: "TWS paper-trading"}
_IB_LIVE_PORTS = {4001: "IB Gateway live-trading", 7496: "TWS live-trading"}
_IB_PAPER_ACCOUNT_PREFIXES = ("DU", "DF")  # individual and advisor paper accounts
_CAPITAL_TICKS_PER_CONTRACT = 400
"""Capital per contract, in ticks of adverse move it must absorb: 400 ticks is 100 points on MES
(about 2% of the S&P 500, a bad day), i.e. $500 per MES contract."""


def is_paper_account(account: str) -> bool:
    """True for an IB paper-trading account id (DU..., DF...): no real money behind it."""
    return account.upper().startswith(_IB_PAPER_ACCOUNT_PREFIXES)


def _real_money_from_paper_mode(cfg: Config) -> Iterator[_Issue]:
    """Settings with which `mode: paper` would reach a live IB account: refused in every mode."""
    broker = cfg.broker
    if broker.is_live or broker.kind != "ibkr":
        return
    live_switch = "; set broker.mode: live to trade real money"
    if broker.port in _IB_LIVE_PORTS:
        why = f"is the {_IB_LIVE_PORTS[broker.port]} port but broker.mode is paper"
        yield _Issue("broker.port", broker.port, why + live_switch)
    if broker.account and not is_paper_account(broker.account):
        why = "is a live IB account (paper accounts start with DU) but broker.mode is paper"
        yield _Issue("broker.account", broker.account, why + live_switch)


def _unsupported_at_the_broker(cfg: Config) -> Iterator[_Issue]:
    """Engine rules the configured broker cannot carry out: refused in every mode.

    A trailing stop lives in the engine and, with the paper broker, in its simulator; the IB
    adapter places fixed brackets only, so at IB a trailed position would have no stop order
    at all (and with a fixed stop too, one the engine believes has moved). Until IB's stop
    follows the engine's, an IB configuration cannot trail.
    """
    if cfg.broker.kind == "ibkr" and cfg.risk.trail_ticks:
        why = (
            "the IB adapter does not move stop orders yet: at IB the position would have no "
            "trailing stop; use stop_loss_ticks or stop_atr with broker.kind ibkr"
        )
        yield _Issue("risk.trail_ticks", cfg.risk.trail_ticks, why)


def _live_requirements(cfg: Config) -> Iterator[_Issue]:
    """What real-money trading needs beyond sound risk limits; meaningless in paper mode."""
    broker = cfg.broker
    if broker.kind == "paper":
        why = "the built-in paper broker sends no real orders; live mode needs kind ibkr"
        yield _Issue("broker.kind", broker.kind, why)
    if broker.port in _IB_PAPER_PORTS:
        why = f"is the {_IB_PAPER_PORTS[broker.port]} port; live ports are 4001 and 7496"
        yield _Issue("broker.port", broker.port, why)
    if not broker.account:
        why = "live mode needs the IB account id, so orders cannot land in another account"
        yield _Issue("broker.account", broker.account, why)
    elif is_paper_account(broker.account):
        yield _Issue("broker.account", broker.account, "is an IB paper account (DU...)")
    if not cfg.risk.has_stop:
        why = (
            "no protective stop (stop_loss_ticks, stop_atr or trail_ticks): an open position's "
            "loss is unbounded between bars"
        )
        yield _Issue("risk.stop_loss_ticks", cfg.risk.stop_loss_ticks, why)
    if not cfg.alerts.has_channel:
        why = "no alert channel (telegram_token with telegram_chat, or webhook): halts go unseen"
        yield _Issue("alerts", _NO_VALUE, why)
    yield from _no_calendar(cfg)


def _no_calendar(cfg: Config) -> Iterator[_Issue]:
    """Trading without the exchange calendar (SPEC §4.9): an error live, a warning when paper
    trading starts (`paper_trading_warnings`); backtests and research without one are §4's."""
    if cfg.session.calendar is None:
        why = (
            "no exchange calendar (e.g. CME_Equity): on an early-close day the market closes "
            "before flatten_at and a position rides over the holiday"
        )
        yield _Issue("session.calendar", None, why)


def paper_trading_warnings(cfg: Config) -> tuple[str, ...]:
    """What a paper-trading worker warns about beyond `cfg.warnings`: the settings live mode
    refuses that only matter once bars arrive in real time (the exchange calendar)."""
    report = _Reporter(cfg.source, {})
    return tuple(report.line(issue, "; an error in live mode") for issue in _no_calendar(cfg))


def _risk_hazards(cfg: Config) -> Iterator[_Issue]:
    """Unsafe risk, session and instrument settings: errors live, warnings in paper mode."""
    risk = cfg.risk
    if cfg.stream.max_bar_age_seconds == 0:
        why = "no bar age limit: the live worker would trade on history published to bars.<symbol>"
        yield _Issue("stream.max_bar_age_seconds", 0, why)
    if risk.daily_loss_limit == 0:
        yield _Issue("risk.daily_loss_limit", risk.daily_loss_limit, "no daily loss limit")
    if risk.kill_switch_loss == 0:
        yield _Issue("risk.kill_switch_loss", risk.kill_switch_loss, "no kill switch")
    yield from _stop_beyond_daily_limit(cfg)
    yield from _oversized_position(cfg)
    if risk.min_account_balance >= risk.starting_capital:
        why = (
            f"not below starting_capital ({risk.starting_capital:g}): "
            "the account halts before its first trade"
        )
        yield _Issue("risk.min_account_balance", risk.min_account_balance, why)
    yield from _session_hazards(cfg.session, cfg.ops)
    if cfg.instrument.symbol not in INSTRUMENTS:
        why = "not in the instruments table: tick_size and point_value are unverified"
        yield _Issue("instrument.symbol", cfg.instrument.symbol, why)
    other_market = cfg.session.calendar and calendar_mismatch(
        cfg.session.calendar, cfg.instrument.symbol
    )
    if other_market:
        yield _Issue("session.calendar", cfg.session.calendar, other_market)
    yield from _half_telegram(cfg.alerts)
    yield from _early_flatten_too_late(cfg)


def _early_flatten_too_late(cfg: Config) -> Iterator[_Issue]:
    """On an early close `E` the engine decides the flatten at `E − early_flatten_minutes` and it
    fills at the next bar's open, and the watchdog looks `ops.eod_grace_seconds` later: both must
    come before `E`, or the position rides over the holiday (SPEC §4.9)."""
    s = cfg.session
    if s.calendar is None and not s.early_closes:
        return
    lead = s.early_flatten_minutes * 60
    if lead < cfg.strategy.bar_seconds:
        why = (
            f"less than one {cfg.strategy.bar_seconds}-second bar before an early close: the "
            "flatten would fill after the market closed"
        )
        yield _Issue("session.early_flatten_minutes", s.early_flatten_minutes, why)
    elif cfg.ops.eod_grace_seconds >= lead:
        why = (
            f"not below session.early_flatten_minutes ({s.early_flatten_minutes} min): on an "
            "early close the EOD watchdog would look after the market closed"
        )
        yield _Issue("ops.eod_grace_seconds", cfg.ops.eod_grace_seconds, why)


def _half_telegram(alerts: AlertsConfig) -> Iterator[_Issue]:
    """Telegram needs both the bot token and the chat; one without the other sends nothing."""
    if bool(alerts.telegram_token) != bool(alerts.telegram_chat):
        missing = "telegram_chat" if alerts.telegram_token else "telegram_token"
        why = "telegram_token and telegram_chat must be set together, or Telegram alerts are lost"
        yield _Issue(f"alerts.{missing}", None, why)


def _stop_beyond_daily_limit(cfg: Config) -> Iterator[_Issue]:
    """A single stop-out would breach the daily loss limit, so the limit cannot hold.

    The stop in any of its forms (SPEC §4.9): in ticks, in ATRs (its loss bounded only by
    max_risk_per_trade), or trailing alone (its first level `trail_ticks` from the entry bar's
    extreme); the size is the largest the entries can have (`size_tiers`' top, else
    position_size), capped by max_risk_per_trade.
    """
    risk = cfg.risk
    if not (risk.has_stop and risk.daily_loss_limit):
        return
    size = risk.max_contracts
    tick_value = cfg.instrument.tick_size * cfg.instrument.point_value
    key, value = (
        ("stop_loss_ticks", risk.stop_loss_ticks)
        if risk.stop_loss_ticks
        else ("stop_atr", risk.stop_atr)
        if risk.stop_atr
        else ("trail_ticks", risk.trail_ticks)
    )
    ticks = risk.stop_loss_ticks or (0 if risk.stop_atr else risk.trail_ticks)
    losses = [ticks * tick_value * size] if ticks else []
    if risk.max_risk_per_trade:
        losses.append(risk.max_risk_per_trade)
    if not losses:  # an ATR stop without a dollar cap: its loss is not known in advance
        return
    loss = min(losses) + 2 * cfg.costs.commission_per_side * size
    if loss > risk.daily_loss_limit:
        why = (
            f"one stopped-out trade of {size} contract(s) loses {loss:.2f} with commissions, "
            f"more than daily_loss_limit ({risk.daily_loss_limit:g})"
        )
        yield _Issue(f"risk.{key}", value, why)


def _live_advice(cfg: Config) -> Iterator[_Issue]:
    """Live settings that are allowed but deserve a second look: warnings, in live mode only."""
    if cfg.broker.is_live and not cfg.risk.max_risk_per_trade:
        why = (
            "no max_risk_per_trade: an entry's loss at its stop is capped in contracts, "
            "not in dollars"
        )
        yield _Issue("risk.max_risk_per_trade", cfg.risk.max_risk_per_trade, why)


def _oversized_position(cfg: Config) -> Iterator[_Issue]:
    """More contracts than the capital can carry through a bad day (see the constant)."""
    tick_value = cfg.instrument.tick_size * cfg.instrument.point_value
    per_contract = _CAPITAL_TICKS_PER_CONTRACT * tick_value
    cap = int(cfg.risk.starting_capital // per_contract)
    if cfg.risk.position_size > cap:
        why = (
            f"more than the {cap} contract(s) starting_capital {cfg.risk.starting_capital:g} "
            f"supports ({per_contract:g} per contract: a {_CAPITAL_TICKS_PER_CONTRACT}-tick "
            "adverse move)"
        )
        yield _Issue("risk.position_size", cfg.risk.position_size, why)


def _session_hazards(session: SessionConfig, ops: OpsConfig) -> Iterator[_Issue]:
    """Session times the exchange's day defeats, judged in the exchange's own time.

    The CME's day is New York's: Globex closes at 17:00 (the daily halt, nothing can be
    flattened until 18:00) and opens the next session at 18:00. Times written in another zone are
    converted on every day of the year ahead, because a zone's distance from New York changes on
    the days their DST rules differ (London: twice a year); a time that breaks a rule on any of
    those days is a hazard. The end-of-day watchdog (flatten_at + ops.eod_grace_seconds) is the
    last line of defence and must act before the close too. An unknown zone (an error of its
    own) cannot be judged.
    """
    try:
        zone(session.timezone)
    except ScalperError:
        return
    clashes = _exchange_clashes(
        session.timezone,
        session.entry_start,
        session.entry_end,
        session.flatten_at,
        session.session_end,
        ops.eod_grace_seconds,
        date.today(),
    )
    for key, why in clashes:
        value = ops.eod_grace_seconds if key == "eod_watchdog" else getattr(session, key)
        path = "ops.eod_grace_seconds" if key == "eod_watchdog" else f"session.{key}"
        yield _Issue(path, value, why)
    if "flatten_at" not in dict(clashes) and session.flatten_at == session.session_end:
        why = "equals session_end: no end-of-day flatten, positions are carried overnight"
        yield _Issue("session.flatten_at", session.flatten_at, why)
    if session.entry_start <= ops.session_open_at < session.session_end:
        why = (
            f"not before entry_start ({_format_time(session.entry_start)}): the day trades "
            "before session open has reconciled with the broker and loaded its parameters"
        )
        yield _Issue("ops.session_open_at", ops.session_open_at, why)


_EXCHANGE_CLOSE = f"the CME daily close ({_format_time(GLOBEX_CLOSE)} New York)"


@cache
def _exchange_clashes(
    timezone: str,
    entry_start: time,
    entry_end: time,
    flatten_at: time,
    session_end: time,
    grace_seconds: int,
    first_day: date,
) -> tuple[tuple[str, str], ...]:
    """(key, why) for each session time that, on some day of the 366 from `first_day`, lets an
    entry in after the exchange's close, flattens at or after it (the engine, or the watchdog
    `grace_seconds` later: key `eod_watchdog`), or rolls the session date elsewhere than at the
    Globex open. Cached: research checks hundreds of parameter sets."""
    local, new_york = zone(timezone), zone(NEW_YORK)
    watchdog = datetime.combine(first_day, flatten_at) + timedelta(seconds=grace_seconds)
    times = {
        "entry_start": entry_start,
        "entry_end": entry_end,
        "flatten_at": flatten_at,
        "session_end": session_end,
        "eod_watchdog": watchdog.time(),
    }
    failing: dict[str, list[datetime]] = {}  # key -> its New York time on each failing day
    for offset in range(366):
        day = first_day + timedelta(days=offset)
        at = {
            k: datetime.combine(day, t, tzinfo=local).astimezone(new_york) for k, t in times.items()
        }
        opened = at["entry_start"]
        next_close_day = opened.date() + timedelta(days=opened.time() >= GLOBEX_SESSION_END)
        close = datetime.combine(next_close_day, GLOBEX_CLOSE, tzinfo=new_york)
        if at["entry_end"] > close:
            failing.setdefault("entry_end", []).append(at["entry_end"])
        if at["flatten_at"] >= close:
            failing.setdefault("flatten_at", []).append(at["flatten_at"])
        elif at["eod_watchdog"] >= close:
            failing.setdefault("eod_watchdog", []).append(at["eod_watchdog"])
        if at["session_end"].time() != GLOBEX_SESSION_END:
            failing.setdefault("session_end", []).append(at["session_end"])
    clashes = []
    for key, seen in failing.items():
        if key == "entry_end":
            why = f"entries are allowed after {_EXCHANGE_CLOSE}"
        elif key == "flatten_at" and seen[0].time() >= GLOBEX_SESSION_END:
            why = f"after {_EXCHANGE_CLOSE}: positions are carried through the close"
        elif key == "flatten_at":
            halt = f"{_format_time(GLOBEX_CLOSE)}-{_format_time(GLOBEX_SESSION_END)} New York"
            why = f"in the CME daily halt ({halt}): positions are never flattened"
        elif key == "eod_watchdog":
            why = (
                f"the end-of-day watchdog runs at flatten_at + {grace_seconds} s = "
                f"{_format_time(watchdog.time())}, at or after {_EXCHANGE_CLOSE}: it cannot "
                "flatten what the engine left open"
            )
        else:
            why = (
                f"the session date rolls away from the Globex open "
                f"({_format_time(GLOBEX_SESSION_END)} New York): session dates and daily "
                "limits reset at the wrong time"
            )
        clashes.append((key, why + _in_new_york(times[key], timezone, seen)))
    return tuple(clashes)


def _in_new_york(written: time, timezone: str, seen: list[datetime]) -> str:
    """Where a local time falls in New York on the failing days `seen`, for a message."""
    if all(t.time() == written for t in seen):
        return ""  # written in New York time (or in a zone that agrees on these days)
    first = seen[0]
    days = "every day" if len(seen) >= 366 else f"on {len(seen)} days a year, e.g. {first:%Y-%m-%d}"
    return f" ({_format_time(written)} {timezone} is {first:%H:%M} New York {days})"


def _mode_issues(cfg: Config) -> tuple[list[tuple[_Issue, str]], list[_Issue]]:
    """The safety rules of `cfg`'s mode: its errors (each with what makes it one) and warnings.

    The one place that says what a mode refuses: the loader applies it to a file, research to
    every parameter set it may approve (`refusals`), so the gate never approves what the trading
    day's loader will refuse.
    """
    errors = [(issue, "") for issue in _real_money_from_paper_mode(cfg)]
    errors += [(issue, "") for issue in _unsupported_at_the_broker(cfg)]
    if cfg.broker.is_live:
        live = itertools.chain(_live_requirements(cfg), _risk_hazards(cfg))
        return errors + [(issue, "; refused in live mode") for issue in live], []
    return errors, list(_risk_hazards(cfg))


def _apply_safety_rules(cfg: Config, report: _Reporter) -> Config:
    """`cfg` with its warnings; its errors go to `report`."""
    errors, warnings = _mode_issues(cfg)
    for issue, suffix in errors:
        report.add(issue, suffix)
    lines = tuple(
        report.line(i, "; an error in live mode") for i in warnings if i.path not in report.reported
    )
    advice = tuple(report.line(i, "") for i in _live_advice(cfg))
    return replace(cfg, warnings=lines + advice)


def refusals(candidate: Config, base: Config | None = None) -> tuple[str, ...]:
    """Why the loader would refuse `candidate` in its mode (`key = value: why`), empty if never.

    `candidate` is a validated configuration with some settings replaced, e.g. a research
    parameter set applied to the trader's file: the rules between a section's fields and the
    safety rules of the mode are checked exactly as `load_config` checks a file. With `base` (the
    file the candidate came from), a paper-mode candidate is also refused for a hazard `base`
    does not have: paper mode tolerates a hazard the trader chose, but research must not bring in
    a new one, which would be an error the day the configuration goes live.
    """
    report = _Reporter(candidate.source, {})
    found = [
        (_Issue(f"{name}.{key}", getattr(getattr(candidate, name), key), why), "")
        for name in SECTIONS
        for key, why in getattr(candidate, name).problems()
    ]
    errors, warnings = _mode_issues(candidate)
    found += errors
    if base is not None and warnings:
        tolerated = {issue.path for issue in _mode_issues(base)[1]}
        new = "; a hazard the configuration does not have (an error in live mode)"
        found += [(issue, new) for issue in warnings if issue.path not in tolerated]
    return tuple(report.describe(issue, suffix) for issue, suffix in found)


# ---------------------------------------------------------------------------------------------
# Public entry points


def config_from_dict(
    data: Mapping[str, Any],
    source: str = DEFAULT_SOURCE,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Validate overrides (a parsed YAML document) on top of `DEFAULTS`.

    `source` names the origin in messages; `env` (default `os.environ`) resolves placeholders.
    """
    unset: dict[str, _Unset] = {}  # filled in by _substitute, read by the reporter
    report = _Reporter(source, unset)
    overrides = _check_keys(data, report)
    environment = os.environ if env is None else env
    merged = _substitute(_deep_merge(DEFAULTS, overrides), environment, "", unset, report)
    sections = {
        name: _build_section(name, section, merged[name], report)
        for name, section in SECTIONS.items()
    }
    cfg = _apply_safety_rules(Config(**sections, source=source), report)
    report.check(cfg.warnings)
    return cfg


def load_config(path: str | Path | None, *, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate a configuration file; `None` gives the defaults of SPEC §5.

    The file may give only overrides (e.g. `strategy: {lookback: 15}`); every problem raises
    `ConfigError` with one line naming the file, the key, the value and why.
    """
    if path is None:
        return config_from_dict({}, env=env)
    if not str(path).strip():  # `--config "$CFG"` unset: neither a file nor the defaults
        raise ConfigError("configuration file: an empty path; name a YAML file")
    source = str(path)
    data = _read_yaml(Path(path), source)
    cfg = _anchored(config_from_dict({} if data is None else data, source=source, env=env), path)
    use_configured_home(cfg.paths.home, source)  # the process's data directory (scalper.paths)
    return cfg


def _anchored(cfg: Config, path: str | Path) -> Config:
    """`data.path` as written (`~` expanded), relative to the folder of the configuration file
    `path`, not to the working directory: the CLI, the Dagster code server (which runs in the
    repository) and a flow must all read the same bars."""
    if cfg.data.path is None:
        return cfg
    data = Path(path).absolute().parent / Path(cfg.data.path).expanduser()
    return replace(cfg, data=replace(cfg.data, path=str(data)))


def load_config_with_overrides(
    path: str | Path | None, overrides: str | Path, *, env: Mapping[str, str] | None = None
) -> Config:
    """The configuration at `path` with the settings of the file `overrides` replacing its own.

    This is how approved parameters reach a running trader. Each file's sections and keys are
    checked against its own name, then the merged whole is validated as one file, because a value
    can be valid alone and unsafe in combination (a stop beyond the trader's daily loss limit).
    """
    parts, problems = [], []
    for name in (path, overrides):
        source = DEFAULT_SOURCE if name is None else str(name)
        data = None if name is None else _read_yaml(Path(name), source)
        if name is overrides and isinstance(data, Mapping):  # where approved params came from
            data = {k: v for k, v in data.items() if k != PROVENANCE_KEY}
        report = _Reporter(source, {})
        parts.append(_check_keys({} if data is None else data, report))
        problems += report.problems
    if problems:
        raise ConfigError(*problems)
    source = f"{path if path is not None else DEFAULT_SOURCE} with {overrides}"
    cfg = config_from_dict(_deep_merge(*parts), source=source, env=env)
    return cfg if path is None else _anchored(cfg, path)
