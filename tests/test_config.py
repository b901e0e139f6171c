"""Configuration loading: defaults, overrides, env substitution, precise errors, safety rules."""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Mapping
from datetime import date, time
from pathlib import Path
from typing import Any

import pytest

from scalper.config import (
    DEFAULT_SOURCE,
    DEFAULTS,
    Config,
    config_from_dict,
    load_config,
    load_config_with_overrides,
)
from scalper.engine import engine_params
from scalper.errors import ConfigError
from scalper.instruments import INSTRUMENTS

REPO = Path(__file__).resolve().parents[1]
CONFORMANCE = REPO.parent / "shared" / "conformance"
CONFORMANCE_CONFIGS = sorted(CONFORMANCE.glob("*/config.yaml"))

SPEC_DEFAULTS = {
    "instrument": {
        "symbol": "MES",
        "tick_size": 0.25,
        "point_value": 5.0,
        "roll_days_before_expiry": 8,
    },
    "strategy": {
        "kind": "zscore",
        "bar_seconds": 60,
        "lookback": 20,
        "entry_z": 2.0,
        "exit_z": 0.5,
        "min_volume": 0,
        "k": 2.0,
        "period": 14,
        "oversold": 30.0,
        "overbought": 70.0,
    },
    "risk": {
        "position_size": 1,
        "stop_loss_ticks": 0,
        "take_profit_ticks": 0,
        "daily_loss_limit": 50.0,
        "daily_drawdown_limit": 75.0,
        "max_consecutive_losses": 5,
        "loss_pause_minutes": 30,
        "max_trades_per_day": 50,
        "max_position_minutes": 0,
        "starting_capital": 1000.0,
        "kill_switch_loss": 300.0,
        "min_account_balance": 700.0,
        "size_tiers": [],
        "max_risk_per_trade": 0.0,
        "reduce_size_at": None,
        "reduce_size_factor": 0.5,
        "stop_atr": 0.0,
        "target_atr": 0.0,
        "trail_ticks": 0,
        "atr_period": 14,
    },
    "session": {
        "timezone": "America/New_York",
        "entry_start": "09:30",
        "entry_end": "16:15",
        "flatten_at": "16:25",
        "session_end": "18:00",
        "calendar": None,
        "early_closes": {},
        "early_entry_end_minutes": 20,
        "early_flatten_minutes": 10,
    },
    "costs": {
        "commission_per_side": 0.42,
        "slippage_ticks": 1,
        "slippage_model": "fixed",
        "low_volume": 0,
        "high_vol_atr": 0.0,
    },
    "broker": {
        "kind": "paper",
        "mode": "paper",
        "host": "127.0.0.1",
        "port": 4002,
        "client_id": 1,
        "account": "${IB_ACCOUNT}",
    },
    "kafka": {"bootstrap": "127.0.0.1:9092"},
    "alerts": {
        "telegram_token": "${TELEGRAM_BOT_TOKEN}",
        "telegram_chat": "${TELEGRAM_CHAT_ID}",
        "webhook": None,
    },
}

ACCOUNT = "U7654321"
TOKEN = "123456789:AAE-very-secret-token"
WEBHOOK = "https://hooks.example.com/services/T000/B000/secretpart"

# A complete, safe live configuration; each live test breaks exactly one thing in it.
LIVE: dict[str, dict[str, Any]] = {
    "broker": {"kind": "ibkr", "mode": "live", "port": 4001, "account": ACCOUNT},
    "risk": {"stop_loss_ticks": 8, "max_risk_per_trade": 50.0},
    "alerts": {"webhook": WEBHOOK},
    "session": {"calendar": "CME_Equity"},
}


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied section by section (test helper)."""
    out = {name: dict(body) for name, body in base.items()}
    for name, body in overrides.items():
        out.setdefault(name, {}).update(body)
    return out


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), env=env or {})


def error_of(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, env)
    message = str(info.value)
    assert "\n" not in message, "errors must be one line"
    assert message.startswith(f"{tmp_path / 'config.yaml'}: "), "errors must name the file"
    return message


def error_from_dict(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "c.yaml", env=env or {})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("c.yaml: ")
    return message


# --- defaults -----------------------------------------------------------------------------------


def test_defaults_match_spec_section_5() -> None:
    """The SPEC's sections come first and exactly as written; later issues add sections after."""
    assert list(DEFAULTS)[: len(SPEC_DEFAULTS)] == list(SPEC_DEFAULTS)
    assert {name: dict(DEFAULTS[name]) for name in SPEC_DEFAULTS} == SPEC_DEFAULTS


def test_defaults_are_a_valid_paper_config_without_warnings() -> None:
    cfg = load_config(None, env={})
    assert cfg.warnings == ()
    assert cfg.source == DEFAULT_SOURCE
    assert cfg.broker.mode == "paper"
    assert cfg.broker.account is None
    assert cfg.alerts.telegram_token is None
    assert cfg.session.entry_start == time(9, 30)
    assert cfg.session.session_end == time(18, 0)
    assert cfg.risk.daily_loss_limit == 50.0
    assert cfg.strategy.kind == "zscore"


def test_defaults_with_paper_credentials_in_env_have_no_warnings() -> None:
    env = {"IB_ACCOUNT": "DU1234567", "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "-1001"}
    cfg = load_config(None, env=env)
    assert cfg.warnings == ()
    assert cfg.broker.account == "DU1234567"
    assert cfg.alerts.telegram_chat == "-1001"


@pytest.mark.parametrize(
    "env", [{}, {"IB_ACCOUNT": "DU1", "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "5"}]
)
def test_default_yaml_file_equals_code_defaults(env: dict[str, str]) -> None:
    from_file = load_config(REPO / "infra" / "config" / "default.yaml", env=env)
    assert dataclasses.replace(from_file, source=DEFAULT_SOURCE) == load_config(None, env=env)


def test_seconds_of_day() -> None:
    session = load_config(None, env={}).session
    assert session.seconds_of_day("entry_start") == 9 * 3600 + 30 * 60
    assert session.seconds_of_day("session_end") == 18 * 3600


def test_config_is_frozen() -> None:
    cfg = load_config(None, env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.risk.position_size = 5  # type: ignore[misc]


# --- files and overrides ------------------------------------------------------------------------


def test_conformance_configs_exist() -> None:
    assert len(CONFORMANCE_CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFORMANCE_CONFIGS, ids=lambda p: p.parent.name)
def test_conformance_configs_load(path: Path) -> None:
    cfg = load_config(path, env={})
    assert cfg.source == str(path)
    assert cfg.broker.mode == "paper"


def test_conformance_overrides_are_applied() -> None:
    five = load_config(CONFORMANCE / "09_five_minute_bars" / "config.yaml", env={})
    assert five.strategy.bar_seconds == 300
    assert five.session.entry_start == time(3, 0)
    assert five.risk.daily_loss_limit == 0.0
    dst = load_config(CONFORMANCE / "06_dst_eod_duration" / "config.yaml", env={})
    assert dst.session.entry_start == time(0, 0)
    assert dst.risk.position_size == 2
    assert dst.risk.max_position_minutes == 25


def test_partial_file_is_deep_merged_onto_defaults(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "strategy: {lookback: 15}\n")
    defaults = load_config(None, env={})
    assert cfg.strategy.lookback == 15
    assert dataclasses.replace(cfg.strategy, lookback=20) == defaults.strategy
    assert cfg.risk == defaults.risk
    assert cfg.source == str(tmp_path / "config.yaml")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "risk:\n"])
def test_empty_file_or_section_gives_defaults(tmp_path: Path, text: str) -> None:
    cfg = load_text(tmp_path, text)
    assert dataclasses.replace(cfg, source=DEFAULT_SOURCE) == load_config(None, env={})


def test_ints_are_accepted_where_floats_are_expected(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "risk: {daily_loss_limit: 40}\nstrategy: {entry_z: 3}\n")
    assert cfg.risk.daily_loss_limit == 40.0
    assert isinstance(cfg.risk.daily_loss_limit, float)
    assert isinstance(cfg.strategy.entry_z, float)


@pytest.mark.parametrize(
    ("written", "expected"),
    [("09:30", time(9, 30)), ('"09:30"', time(9, 30)), ("'9:45:30'", time(9, 45, 30))],
)
def test_times_quoted_or_not(tmp_path: Path, written: str, expected: time) -> None:
    # YAML 1.1 would read unquoted 09:30 as the sexagesimal integer 570.
    cfg = load_text(tmp_path, f"session: {{entry_start: {written}}}\n")
    assert cfg.session.entry_start == expected


def test_float_with_exponent_is_a_number(tmp_path: Path) -> None:
    assert load_text(tmp_path, "strategy: {entry_z: 2.5e0}\n").strategy.entry_z == 2.5


def test_other_instruments_with_matching_specs_load(tmp_path: Path) -> None:
    es = load_text(tmp_path, "instrument: {symbol: ES, point_value: 50}\nrisk: {position_size: 1}")
    assert es.instrument.point_value == 50.0
    fx = load_text(tmp_path, "instrument: {symbol: 6E, tick_size: 0.00005, point_value: 125000}")
    assert fx.instrument.symbol == "6E"


def test_to_dict_round_trips_without_secrets() -> None:
    cfg = config_from_dict({"strategy": {"kind": "rsi", "period": 9}}, env={})
    again = config_from_dict(cfg.to_dict(), env={})
    assert again == cfg
    assert cfg.to_dict()["session"]["entry_start"] == "09:30"


def test_path_may_be_str_or_path(tmp_path: Path) -> None:
    path = write(tmp_path, "risk: {position_size: 2}\n")
    assert load_config(str(path), env={}) == load_config(path, env={})


# --- errors -------------------------------------------------------------------------------------


def test_error_names_file_key_value_and_reason(tmp_path: Path) -> None:
    message = error_of(tmp_path, "risk: {position_size: -1}\n")
    expected = "risk.position_size = -1: must be an integer >= 1"
    assert message == f"{tmp_path / 'config.yaml'}: {expected}"


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("risk: {position_size: true}", ["risk.position_size = true", "integer >= 1"]),
        ("risk: {position_size: 1.5}", ["risk.position_size = 1.5", "integer >= 1"]),
        ("risk: {daily_loss_limit: -5}", ["risk.daily_loss_limit = -5", "number >= 0"]),
        ("risk: {kill_switch_loss: -1}", ["risk.kill_switch_loss = -1", ">= 0"]),
        ("risk: {starting_capital: lots}", ["risk.starting_capital = 'lots'", "number > 0"]),
        ("risk: {stop_loss_ticks: -2}", ["risk.stop_loss_ticks = -2", ">= 0"]),
        ("strategy: {lookback: 1}", ["strategy.lookback = 1", "integer >= 2"]),
        ("strategy: {entry_z: 0}", ["strategy.entry_z = 0", "number > 0"]),
        ("strategy: {exit_z: 2.5}", ["strategy.exit_z = 2.5", "exit_z must be below entry_z"]),
        ("strategy: {exit_z: 2.0}", ["strategy.exit_z = 2.0", "exit_z must be below entry_z"]),
        ("strategy: {kind: zscor}", ["strategy.kind = 'zscor'", "one of", "'zscore'"]),
        ("strategy: {bar_seconds: 7}", ["strategy.bar_seconds = 7", "divide 86400"]),
        ("strategy: {bar_seconds: 0}", ["strategy.bar_seconds = 0", "integer >= 1"]),
        ("strategy: {oversold: 70}", ["strategy.oversold = 70.0", "below overbought"]),
        ("strategy: {overbought: 101}", ["strategy.overbought = 101", "between 0 and 100"]),
        ("strategy: {period: 1}", ["strategy.period = 1", ">= 2"]),
        ("strategy: {k: 0}", ["strategy.k = 0", "> 0"]),
        ("session: {entry_start: '25:00'}", ["session.entry_start = '25:00'", "time"]),
        ("session: {entry_start: 570}", ["session.entry_start = 570", "time"]),
        ("session: {entry_start: '16:15'}", ["session.entry_start = '16:15'", "before entry_end"]),
        ("session: {entry_end: '16:30'}", ["session.entry_end = '16:30'", "after flatten_at"]),
        ("session: {flatten_at: '18:30'}", ["session.flatten_at = '18:30'", "after session_end"]),
        (
            "session: {timezone: America/NewYork}",
            ["session.timezone = 'America/NewYork'", "unknown timezone", "America/New_York"],
        ),
        ("session: {timezone: Mars/Olympus}", ["session.timezone", "unknown timezone"]),
        ("instrument: {tick_size: 0}", ["instrument.tick_size = 0", "number > 0"]),
        ("instrument: {point_value: -5}", ["instrument.point_value = -5", "number > 0"]),
        ("instrument: {point_value: 50}", ["instrument.point_value = 50.0", "MES", "5.0"]),
        ("instrument: {tick_size: 0.5}", ["instrument.tick_size = 0.5", "MES", "0.25"]),
        ("instrument: {symbol: MNQ}", ["instrument.point_value = 5.0", "MNQ", "2.0"]),
        ("instrument: {symbol: mes}", ["instrument.symbol = 'mes'", "wrong case", "'MES'"]),
        ("stream: {symbols: [MES, mnq]}", ["stream.symbols", "'mnq' is MNQ", "write 'MNQ'"]),
        ("costs: {commission_per_side: -0.1}", ["costs.commission_per_side = -0.1", ">= 0"]),
        ("broker: {kind: tws}", ["broker.kind = 'tws'", "paper, ibkr"]),
        ("broker: {mode: real}", ["broker.mode = 'real'", "paper, live"]),
        ("broker: {port: 70000}", ["broker.port = 70000", "between 1 and 65535"]),
        ("kafka: {bootstrap: localhost}", ["kafka.bootstrap = 'localhost'", "host:port"]),
        ("risk: 5", ["risk = 5", "mapping"]),
        ("- risk", ["mapping of sections"]),
    ],
)
def test_invalid_values_are_reported_precisely(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    message = error_of(tmp_path, text + "\n")
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("risk: {postion_size: 2}", ["risk.postion_size: unknown key", "'position_size'"]),
        ("stratgy: {lookback: 5}", ["stratgy: unknown section", "'strategy'"]),
        ("session: {flaten_at: '16:00'}", ["session.flaten_at: unknown key", "'flatten_at'"]),
        ("broker: {colour: blue}", ["broker.colour: unknown key"]),
    ],
)
def test_unknown_keys_are_errors_with_a_suggestion(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    message = error_of(tmp_path, text + "\n")
    for fragment in fragments:
        assert fragment in message


def test_unknown_key_does_not_echo_its_value(tmp_path: Path) -> None:
    # A misspelt secret key must not leak the secret.
    message = error_of(tmp_path, f"alerts: {{telegram_tokn: '{TOKEN}'}}\n")
    assert "alerts.telegram_tokn: unknown key" in message
    assert "'telegram_token'" in message
    assert TOKEN not in message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "risk:\n  position_size: 1\n  stop_loss_ticks: [8\n")
    assert ": line 4, column 1: invalid YAML" in message
    assert "invalid YAML" in message


def test_yaml_syntax_error_exact_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "strategy:\n  lookback: 5\n bad: indentation\n")
    assert "line 3" in message


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    message = error_of(tmp_path, "risk: {position_size: 1}\nrisk: {position_size: 2}\n")
    assert "line 2" in message
    assert "duplicate key 'risk'" in message


def test_a_merged_anchor_may_be_overridden_but_not_a_key_twice(tmp_path: Path) -> None:
    """`<<: *base` then a key of its own is YAML's way to override a shared block, not a
    duplicate; the same key written twice by hand still is one."""
    text = """
        risk: &base {daily_loss_limit: 60.0}
        strategy:
          <<: {lookback: 30, entry_z: 2.5}
          lookback: 40
        """
    cfg = load_text(tmp_path, text)
    assert (cfg.strategy.lookback, cfg.strategy.entry_z) == (40, 2.5)
    message = error_of(tmp_path, "strategy:\n  <<: {entry_z: 2.5}\n  lookback: 4\n  lookback: 5\n")
    assert "line 4" in message and "duplicate key 'lookback'" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file"):
        load_config(tmp_path / "nope.yaml")


def test_directory_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


# --- environment substitution -------------------------------------------------------------------


def test_env_variable_is_substituted(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "broker: {host: '${IB_HOST}'}\n", env={"IB_HOST": "10.0.0.5"})
    assert cfg.broker.host == "10.0.0.5"


def test_env_default_is_used_when_unset_and_ignored_when_set(tmp_path: Path) -> None:
    text = "broker: {host: '${IB_HOST:-gateway}', port: '${IB_PORT:-4003}'}\n"
    unset = load_text(tmp_path, text)
    assert (unset.broker.host, unset.broker.port) == ("gateway", 4003)
    set_ = load_text(tmp_path, text, env={"IB_HOST": "h", "IB_PORT": "4010"})
    assert (set_.broker.host, set_.broker.port) == ("h", 4010)


def test_env_inside_a_longer_string(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "kafka: {bootstrap: '${KAFKA_HOST}:9093'}\n", {"KAFKA_HOST": "k1"})
    assert cfg.kafka.bootstrap == "k1:9093"


def test_unset_env_for_optional_setting_is_null(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "alerts: {webhook: '${ALERT_HOOK}'}\n")
    assert cfg.alerts.webhook is None
    assert cfg.warnings == ()


def test_unset_env_for_required_setting_names_the_variable(tmp_path: Path) -> None:
    message = error_of(tmp_path, "broker: {host: '${IB_HOST}'}\n")
    assert "broker.host = ${IB_HOST}: must be set" in message
    assert "environment variable IB_HOST" in message


def test_partially_unset_env_is_named_in_the_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, "kafka: {bootstrap: '${KAFKA_HOST}:9092'}\n")
    assert "kafka.bootstrap = ':9092'" in message
    assert "KAFKA_HOST" in message


def test_malformed_placeholder_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, "broker: {host: '${IB_HOST'}\n")
    assert "broker.host" in message
    assert "malformed placeholder" in message


def test_numeric_chat_id_from_env_is_a_string(tmp_path: Path) -> None:
    env = {"TELEGRAM_CHAT_ID": "-1001234567890", "TELEGRAM_BOT_TOKEN": TOKEN}
    cfg = load_config(None, env=env)
    assert cfg.alerts.telegram_chat == "-1001234567890"


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IB_ACCOUNT", "DU5550001")
    assert load_config(None).broker.account == "DU5550001"


def test_unset_live_account_names_the_variable() -> None:
    live = merged(LIVE, {"broker": {"account": "${IB_ACCOUNT}"}})
    message = error_from_dict(live)
    assert "broker.account = ${IB_ACCOUNT}" in message
    assert "IB_ACCOUNT is unset" in message
    ok = config_from_dict(live, env={"IB_ACCOUNT": ACCOUNT})
    assert ok.broker.account == ACCOUNT


# --- safety: live errors, paper warnings --------------------------------------------------------


def test_safe_live_config_loads_without_warnings() -> None:
    cfg = config_from_dict(LIVE, "live.yaml", env={})
    assert cfg.broker.is_live
    assert cfg.warnings == ()


HAZARDS = [
    pytest.param({"risk": {"daily_loss_limit": 0}}, "risk.daily_loss_limit", id="no-daily-limit"),
    pytest.param({"risk": {"kill_switch_loss": 0}}, "risk.kill_switch_loss", id="no-kill-switch"),
    # 40 ticks x $1.25 + 2 x $0.42 = $50.84 > $50
    pytest.param({"risk": {"stop_loss_ticks": 40}}, "risk.stop_loss_ticks", id="stop-beyond-limit"),
    pytest.param({"risk": {"position_size": 3}}, "risk.position_size", id="oversized"),
    pytest.param(
        {"risk": {"min_account_balance": 1000}}, "risk.min_account_balance", id="min-balance"
    ),
    pytest.param({"session": {"flatten_at": "17:00"}}, "session.flatten_at", id="flatten-in-halt"),
    pytest.param(
        {"session": {"flatten_at": "18:00"}}, "session.flatten_at", id="flatten-after-close"
    ),
    pytest.param(
        {"session": {"session_end": "19:00"}}, "session.session_end", id="roll-off-the-open"
    ),
    pytest.param(
        {"session": {"entry_start": "08:30"}}, "ops.session_open_at", id="open-after-entries"
    ),
    pytest.param(
        {"session": {"flatten_at": "16:55"}, "ops": {"eod_grace_seconds": 600}},
        "ops.eod_grace_seconds = 600",
        id="watchdog-after-close",
    ),
    pytest.param(
        {"session": {"timezone": "America/Chicago", "session_end": "17:00", "entry_end": "15:15"}},
        "session.flatten_at",
        id="chicago-flatten-in-halt",
    ),
    pytest.param({"instrument": {"symbol": "XYZ"}}, "instrument.symbol", id="unknown-instrument"),
    pytest.param(
        {"alerts": {"telegram_token": TOKEN}}, "alerts.telegram_chat = ${", id="token-no-chat"
    ),
    pytest.param(
        {"alerts": {"telegram_chat": 42}}, "alerts.telegram_token = ${", id="chat-no-token"
    ),
]


@pytest.mark.parametrize(("overrides", "key"), HAZARDS)
def test_hazard_is_a_warning_in_paper_mode(overrides: dict[str, Any], key: str) -> None:
    cfg = config_from_dict(overrides, "paper.yaml", env={})
    assert len(cfg.warnings) == 1
    (warning,) = cfg.warnings
    assert warning.startswith(f"paper.yaml: {key}")
    assert "error in live mode" in warning


@pytest.mark.parametrize(("overrides", "key"), HAZARDS)
def test_hazard_is_an_error_in_live_mode(overrides: dict[str, Any], key: str) -> None:
    message = error_from_dict(merged(LIVE, overrides))
    assert message.startswith(f"c.yaml: {key}")
    assert "refused in live mode" in message
    assert TOKEN not in message


def test_stop_exactly_within_daily_limit_is_accepted() -> None:
    # 39 ticks x $1.25 + $0.84 = $49.59 <= $50
    cfg = config_from_dict(merged(LIVE, {"risk": {"stop_loss_ticks": 39}}), env={})
    assert cfg.warnings == ()


# --- session times, judged in the exchange's own time -------------------------------------------


def problems_of(data: Mapping[str, Any]) -> tuple[str, ...]:
    """Every problem line of a refused configuration (each names the file)."""
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "c.yaml", env={})
    assert all(line.startswith("c.yaml: ") for line in info.value.problems)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def test_default_times_in_chicago_are_refused_live_in_new_york_time() -> None:
    # 16:15 / 16:25 / 18:00 Chicago are 17:15 / 17:25 / 19:00 New York, every day of the year.
    lines = problems_of(merged(LIVE, {"session": {"timezone": "America/Chicago"}}))
    assert [line.split(" =")[0] for line in lines] == [
        "c.yaml: session.entry_end",
        "c.yaml: session.flatten_at",
        "c.yaml: session.session_end",
    ]
    assert "16:25 America/Chicago is 17:25 New York every day" in lines[1]
    assert "CME daily halt" in lines[1]
    assert "Globex open" in lines[2]
    assert all(line.endswith("refused in live mode") for line in lines)


def test_chicago_times_that_match_the_exchange_day_are_accepted_live() -> None:
    chicago = {
        "timezone": "America/Chicago",
        "entry_start": "08:30",
        "entry_end": "15:15",
        "flatten_at": "15:25",
        "session_end": "17:00",
    }
    late_open = problems_of(merged(LIVE, {"session": chicago}))  # ops.session_open_at 09:00
    assert late_open == (
        "c.yaml: ops.session_open_at = '09:00': not before entry_start (08:30): the day trades "
        "before session open has reconciled with the broker and loaded its parameters; refused "
        "in live mode",
    )
    cfg = config_from_dict(
        merged(LIVE, {"session": chicago, "ops": {"session_open_at": "08:00"}}), env={}
    )
    assert cfg.warnings == ()


def test_a_zone_whose_dst_differs_is_checked_on_every_day_of_the_year() -> None:
    # 21:25 London is 16:25 New York most of the year, but 17:25 in the weeks of March and
    # October/November when one city has changed its clocks and the other not yet.
    london = {
        "timezone": "Europe/London",
        "entry_start": "14:30",
        "entry_end": "20:45",
        "flatten_at": "21:25",
        "session_end": "23:00",
    }
    cfg = config_from_dict({"session": london}, "paper.yaml", env={})
    flatten, roll = cfg.warnings
    assert flatten.startswith("paper.yaml: session.flatten_at = '21:25': in the CME daily halt")
    assert "21:25 Europe/London is 17:25 New York on " in flatten
    assert "days a year" in flatten
    assert roll.startswith("paper.yaml: session.session_end = '23:00'")


@pytest.mark.parametrize(
    ("timezone", "fragments"),
    [
        ("EST", ["fixed offset (UTC-05:00)", "'America/New_York'"]),
        ("MST", ["fixed offset (UTC-07:00)"]),
        ("HST", ["fixed offset (UTC-10:00)"]),
        ("UTC", ["fixed offset (UTC+00:00)"]),
        ("Etc/GMT+5", ["fixed offset (UTC-05:00)"]),
        ("EST5EDT", ["POSIX rule name", "'America/New_York'"]),
        ("CST6CDT", ["POSIX rule name", "'America/Chicago'"]),
        ("US/Eastern", ["legacy alias", "'America/New_York'"]),
        ("US/Central", ["legacy alias", "'America/Chicago'"]),
        ("Canada/Eastern", ["legacy alias", "'America/Toronto'"]),
        ("+05:00", ["a UTC offset, not a zone", "'America/New_York'"]),
        ("UTC-5", ["a UTC offset, not a zone"]),
        ("us/eastern", ["unknown timezone", "did you mean 'America/New_York'"]),
    ],
)
def test_fixed_offset_and_legacy_zone_names_are_errors(timezone: str, fragments: list[str]) -> None:
    message = error_from_dict({"session": {"timezone": timezone}})
    assert message.startswith(f"c.yaml: session.timezone = {timezone!r}: ")
    for fragment in fragments:
        assert fragment in message


def test_a_legacy_zone_is_still_judged_in_exchange_time() -> None:
    # The case: US/Eastern with flatten_at 17:30 passed silently.
    lines = problems_of(
        merged(LIVE, {"session": {"timezone": "US/Eastern", "flatten_at": "17:30"}})
    )
    assert lines[0].startswith("c.yaml: session.timezone = 'US/Eastern': a legacy alias")
    assert lines[1].startswith("c.yaml: session.flatten_at = '17:30': in the CME daily halt")


def test_flatten_at_session_end_off_the_roll_reports_both() -> None:
    cfg = config_from_dict({"session": {"session_end": "16:25"}}, "paper.yaml", env={})
    roll, flatten = cfg.warnings
    assert roll.startswith("paper.yaml: session.session_end = '16:25'")
    assert flatten.startswith("paper.yaml: session.flatten_at = '16:25': equals session_end")


# --- every problem of a file at once ------------------------------------------------------------


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        risk: {position_size: x, stop_loss_ticks: 0, daily_los_limit: 5}
        strategy: {exit_z: 3.0}
        session: {timezone: EST}
        broker: {kind: ibkr, mode: live, port: 4002, account: U1234567}
        alerts: {webhook: "${HOOK"}
        colour: blue
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    lines = info.value.problems
    keys = [line.removeprefix(f"{path}: ").split(" ")[0].rstrip(":") for line in lines]
    assert keys == [
        "risk.daily_los_limit",
        "colour",
        "alerts.webhook",
        "strategy.exit_z",
        "risk.position_size",
        "session.timezone",
        "broker.port",
        "risk.stop_loss_ticks",
        "session.calendar",
        # 16:15, 16:25 and 18:00 in the fixed UTC-5 are an hour later in New York all summer
        "session.entry_end",
        "session.flatten_at",
        "session.session_end",
    ]
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_a_file_and_its_overrides_report_their_problems_together(tmp_path: Path) -> None:
    base, overrides = tmp_path / "base.yaml", tmp_path / "approved.yaml"
    base.write_text("risk: {stopp: 8}\n")
    overrides.write_text("strategy: {lookbak: 30}\n")
    with pytest.raises(ConfigError) as info:
        load_config_with_overrides(base, overrides, env={})
    assert info.value.problems == (
        f"{base}: risk.stopp: unknown key (did you mean 'stop_atr'?)",
        f"{overrides}: strategy.lookbak: unknown key (did you mean 'lookback'?)",
    )


LIVE_REQUIREMENTS = [
    pytest.param({"broker": {"kind": "paper"}}, "broker.kind", id="paper-broker"),
    pytest.param({"broker": {"port": 4002}}, "broker.port = 4002", id="gateway-paper-port"),
    pytest.param({"broker": {"port": 7497}}, "broker.port = 7497", id="tws-paper-port"),
    pytest.param({"broker": {"account": None}}, "broker.account", id="no-account"),
    pytest.param({"broker": {"account": ""}}, "broker.account", id="empty-account"),
    pytest.param({"broker": {"account": "DU1234567"}}, "broker.account = ***", id="du-account"),
    pytest.param({"risk": {"stop_loss_ticks": 0}}, "risk.stop_loss_ticks = 0", id="no-stop"),
    pytest.param({"alerts": {"webhook": None}}, "alerts", id="no-alerts"),
    pytest.param({"session": {"calendar": None}}, "session.calendar = null", id="no-calendar"),
]


def test_live_mode_takes_a_stop_in_ticks_or_in_atrs() -> None:
    # An ATR stop's loss is bounded by max_risk_per_trade alone: 40 + 0.84 <= 50. (A trailing
    # stop is a stop too, but live means IB, which cannot trail yet: see the test below.)
    risk = {"stop_loss_ticks": 0, "max_risk_per_trade": 40, "stop_atr": 1.5}
    cfg = config_from_dict(merged(LIVE, {"risk": risk}), env={})
    assert cfg.warnings == ()


def test_live_mode_without_max_risk_per_trade_warns() -> None:
    cfg = config_from_dict(merged(LIVE, {"risk": {"max_risk_per_trade": 0}}), "c.yaml", env={})
    assert cfg.warnings == (
        "c.yaml: risk.max_risk_per_trade = 0.0: no max_risk_per_trade: an entry's loss at its "
        "stop is capped in contracts, not in dollars",
    )
    paper = config_from_dict({"risk": {"stop_loss_ticks": 8}}, env={})
    assert paper.warnings == ()


def test_an_atr_stop_whose_dollar_cap_exceeds_the_daily_limit_is_a_hazard() -> None:
    lines = problems_of(merged(LIVE, {"risk": {"stop_loss_ticks": 0, "stop_atr": 1.5}}))
    assert lines == (
        "c.yaml: risk.stop_atr = 1.5: one stopped-out trade of 1 contract(s) loses 50.84 with "
        "commissions, more than daily_loss_limit (50); refused in live mode",
    )


@pytest.mark.parametrize(
    ("risk", "line"),
    [
        (
            {"stop_loss_ticks": 8, "stop_atr": 1.5},
            "c.yaml: risk.stop_atr = 1.5: a stop in ATRs and in ticks (stop_loss_ticks 8): set one",
        ),
        (
            {"take_profit_ticks": 16, "target_atr": 2.0},
            "c.yaml: risk.target_atr = 2.0: a target in ATRs and in ticks (take_profit_ticks 16): "
            "set one",
        ),
        (
            {"size_tiers": [[0, 1], [1500, 2], [1500, 3]]},
            "c.yaml: risk.size_tiers = [[0.0, 1], [1500.0, 2], [1500.0, 3]]: min_balance must "
            "ascend strictly: 1500 after 1500",
        ),
    ],
    ids=["stop-twice", "target-twice", "tiers-not-ascending"],
)
def test_risk_model_conflicts_are_errors_naming_key_and_value(
    risk: dict[str, Any], line: str
) -> None:
    assert problems_of({"risk": risk}) == (line,)


@pytest.mark.parametrize(
    ("risk", "line"),
    [
        (
            {"size_tiers": [[0]]},
            "c.yaml: risk.size_tiers = [[0]]: must be a list of [min_balance, contracts] pairs, "
            "e.g. [[0, 1], [1500, 2]]",
        ),
        (
            {"reduce_size_factor": 1.5},
            "c.yaml: risk.reduce_size_factor = 1.5: must be a number > 0 and <= 1",
        ),
        (
            {"reduce_size_at": "25:00"},
            "c.yaml: risk.reduce_size_at = '25:00': must be a time \"HH:MM\"",
        ),
    ],
    ids=["tier-shape", "factor-above-one", "reduce-at-not-a-time"],
)
def test_risk_model_values_are_checked(risk: dict[str, Any], line: str) -> None:
    assert problems_of({"risk": risk}) == (line,)


def test_risk_model_settings_reach_the_engine() -> None:
    cfg = config_from_dict(
        {
            "risk": {
                "size_tiers": [[0, 1], [1200, 2]],
                "reduce_size_at": "14:00",
                "stop_atr": 1.5,
                "trail_ticks": 10,
            },
            "costs": {"slippage_model": "adaptive", "low_volume": 100, "high_vol_atr": 2.0},
        },
        env={},
    )
    params = engine_params(cfg)
    assert params["size_tiers"] == [[0.0, 1], [1200.0, 2]]
    assert params["reduce_size_at"] == 14 * 3600
    assert (params["stop_atr"], params["trail_ticks"], params["atr_period"]) == (1.5, 10, 14)
    assert (params["slippage_model"], params["low_volume"], params["high_vol_atr"]) == (
        "adaptive",
        100,
        2.0,
    )
    assert cfg.to_dict()["risk"]["size_tiers"] == [[0.0, 1], [1200.0, 2]]


@pytest.mark.parametrize(("overrides", "key"), LIVE_REQUIREMENTS)
def test_live_requirement_is_an_error_in_live_mode(overrides: dict[str, Any], key: str) -> None:
    message = error_from_dict(merged(LIVE, overrides))
    assert message.startswith(f"c.yaml: {key}")
    assert "refused in live mode" in message
    assert "DU1234567" not in message


@pytest.mark.parametrize(("overrides", "key"), LIVE_REQUIREMENTS)
def test_live_requirement_is_silent_in_paper_mode(overrides: dict[str, Any], key: str) -> None:
    # The same setting in a paper configuration (paper broker, default port) is legitimate.
    paper_safe = {"broker": {"port": 4002, "account": "DU1"}, "risk": {"stop_loss_ticks": 8}}
    cfg = config_from_dict(merged(paper_safe, overrides), env={})
    assert cfg.warnings == ()


@pytest.mark.parametrize(
    ("broker", "key"),
    [
        ({"kind": "ibkr", "port": 4001}, "broker.port = 4001"),
        ({"kind": "ibkr", "port": 7496}, "broker.port = 7496"),
        ({"kind": "ibkr", "account": ACCOUNT}, "broker.account = ***"),
    ],
)
def test_paper_mode_reaching_real_money_is_refused(broker: dict[str, Any], key: str) -> None:
    message = error_from_dict({"broker": broker})
    assert message.startswith(f"c.yaml: {key}")
    assert "broker.mode: live" in message
    assert ACCOUNT not in message


def test_paper_mode_with_ibkr_paper_gateway_is_fine() -> None:
    cfg = config_from_dict({"broker": {"kind": "ibkr", "account": "DU1"}}, env={})
    assert cfg.warnings == ()


def test_live_mode_needs_explicit_setting() -> None:
    live_without_mode = merged(LIVE, {"broker": {"mode": "paper"}})
    with pytest.raises(ConfigError, match=r"broker\.mode is paper"):
        config_from_dict(live_without_mode, env={})


# --- secrets ------------------------------------------------------------------------------------


def test_to_dict_redacts_set_secrets_only() -> None:
    cfg = config_from_dict(LIVE, env={"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "42"})
    plain = cfg.to_dict()
    assert plain["broker"]["account"] == "***"
    assert plain["alerts"]["telegram_token"] == "***"
    assert plain["alerts"]["webhook"] == "***"
    assert plain["alerts"]["telegram_chat"] == "42"
    defaults = load_config(None, env={}).to_dict()
    assert defaults["broker"]["account"] is None
    for secret in (ACCOUNT, TOKEN, WEBHOOK):
        assert secret not in str(plain)
        assert secret not in repr(cfg)


def test_secrets_never_appear_in_errors_or_warnings() -> None:
    bad_hook = {"alerts": {"webhook": "ftp://user:" + TOKEN}}
    message = error_from_dict(bad_hook)
    assert "alerts.webhook = ***" in message
    assert TOKEN not in message
    paper = config_from_dict({"alerts": {"telegram_token": TOKEN}}, env={})
    assert paper.warnings
    assert all(TOKEN not in w for w in paper.warnings)


# --- research section ---------------------------------------------------------------------------


def test_research_defaults() -> None:
    research = load_config(None, env={}).research
    assert research.backtest_sessions == 60
    assert research.lookback == (10, 20, 30, 40, 60)
    assert research.exit_z == (0.0, 0.5, 1.0)
    assert (research.folds, research.in_sample_fraction) == (5, 0.7)
    assert (research.fold_mode, research.objective) == ("rolling", "sharpe")
    assert DEFAULTS["research"]["stop_loss_ticks"] == [0, 8, 16]


def test_research_grid_axes_are_lists_or_one_value(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        """
        research:
          lookback: [15, 30]
          entry_z: 2.5
          exit_z: [-0.5, 0]
          fold_mode: anchored
          objective: net_pnl
        """,
    )
    assert cfg.research.lookback == (15, 30)
    assert cfg.research.entry_z == (2.5,)
    assert cfg.research.exit_z == (-0.5, 0.0)
    assert isinstance(cfg.research.exit_z[1], float)
    assert cfg.to_dict()["research"]["lookback"] == [15, 30]


@pytest.mark.parametrize(
    ("research", "message"),
    [
        ({"lookback": [20, 1]}, "research.lookback = [20, 1]: must be an integer >= 2"),
        ({"entry_z": [2.0, 0]}, "research.entry_z = [2.0, 0]: must be a number > 0"),
        ({"lookback": []}, "research.lookback = []: must list at least one value"),
        ({"lookback": [20, 20]}, "research.lookback = (20, 20): lists a value twice"),
        ({"in_sample_fraction": 1.0}, "research.in_sample_fraction = 1.0: must be a number"),
        ({"fold_mode": "expanding"}, "research.fold_mode = 'expanding': must be one of rolling"),
        ({"objective": "sharp"}, "did you mean 'sharpe'?"),
        ({"gate_max_drawdown_pct": 20}, "research.gate_max_drawdown_pct = 20: must be a number"),
        ({"folds": 0}, "research.folds = 0: must be an integer between 1 and 50"),
        ({"lookback_": [1]}, "research.lookback_: unknown key (did you mean 'lookback'?)"),
    ],
)
def test_research_settings_are_checked(research: dict[str, Any], message: str) -> None:
    assert message in error_from_dict({"research": research})


def test_live_mode_requires_a_bar_age_limit_and_paper_mode_warns_without_one() -> None:
    # Issue 10 item 2: with no limit a live worker trades on any history published to it.
    no_limit = {"stream": {"max_bar_age_seconds": 0}}
    message = error_from_dict(merged(LIVE, no_limit))
    assert "stream.max_bar_age_seconds = 0" in message and "trade on history" in message
    paper = config_from_dict(no_limit, "c.yaml", env={})
    assert any("stream.max_bar_age_seconds" in warning for warning in paper.warnings)
    assert config_from_dict({}, "c.yaml", env={}).stream.max_bar_age_seconds == 300


# --- the exchange calendar (SPEC §4.9) ----------------------------------------------------------


def test_early_closes_take_unquoted_and_quoted_dates(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        """
        session:
          calendar: CME_Equity
          early_closes: {2024-11-28: "13:00", '2024-11-29': '13:15'}
          early_flatten_minutes: 15
        """,
    )
    assert dict(cfg.session.early_closes) == {
        date(2024, 11, 28): time(13, 0),
        date(2024, 11, 29): time(13, 15),
    }
    assert cfg.session.calendar == "CME_Equity"
    assert cfg.session.to_dict()["early_closes"] == {"2024-11-28": "13:00", "2024-11-29": "13:15"}
    again = config_from_dict({"session": cfg.session.to_dict()}, env={})  # round trip
    assert again.session == cfg.session


@pytest.mark.parametrize(
    ("session", "expected"),
    [
        ("{calendar: cme_equity}", "session.calendar = 'cme_equity': unknown exchange calendar; "
         "did you mean 'CME_Equity'?"),
        ("{early_closes: {'2024-02-30': '13:00'}}", "key '2024-02-30' must be a date"),
        ("{early_closes: {'28.11.2024': '13:00'}}", "key '28.11.2024' must be a date"),
        ("{early_closes: {2024-11-28 13:00: '13:00'}}", "must be a date"),
        ("{early_closes: {'2024-11-28': '25:00'}}", "'2024-11-28': '25:00' must be a time"),
        ("{early_closes: {'2024-11-28': 1300}}", "'2024-11-28': 1300 must be a time"),
        ("{early_closes: ['2024-11-28']}", 'must be a mapping of "YYYY-MM-DD": "HH:MM"'),
        ("{early_closes: {'2024-11-28': '00:05'}}", "close 00:05 is not 20 minutes after midnight"),
        ("{early_entry_end_minutes: 5}", "must not be below early_flatten_minutes (10)"),
        ("{early_flatten_minutes: -1}", "must be an integer between 0 and 1440"),
    ],
)  # fmt: skip
def test_calendar_settings_are_checked(tmp_path: Path, session: str, expected: str) -> None:
    message = error_of(tmp_path, f"session: {session}\n")
    assert expected in message


@pytest.mark.parametrize(
    ("session", "ops", "key"),
    [
        ({"early_flatten_minutes": 0, "early_entry_end_minutes": 0}, {},
         "session.early_flatten_minutes = 0: less than one 60-second bar before an early close"),
        ({"early_flatten_minutes": 2, "early_entry_end_minutes": 5}, {},
         "ops.eod_grace_seconds = 120: not below session.early_flatten_minutes (2 min)"),
        ({}, {"eod_grace_seconds": 600},
         "ops.eod_grace_seconds = 600: not below session.early_flatten_minutes (10 min)"),
    ],
)  # fmt: skip
def test_a_flatten_or_watch_after_an_early_close_is_a_hazard(
    session: dict[str, Any], ops: dict[str, Any], key: str
) -> None:
    overrides = {"session": {"calendar": "CME_Equity", **session}, "ops": ops}
    (warning,) = config_from_dict(overrides, "paper.yaml", env={}).warnings
    assert warning.startswith(f"paper.yaml: {key}")
    message = error_from_dict(merged(LIVE, overrides))
    assert key in message and "refused in live mode" in message


@pytest.mark.parametrize("calendar", ["XNYS", "NYSE", "CME_Bond", "CMES", "us_futures"])
def test_a_calendar_of_another_market_is_a_hazard(calendar: str) -> None:
    """A name the library knows is not therefore the instrument's: XNYS has no 13:00 close on
    Martin Luther King Day (it is closed), so MES would be flattened at 16:25, after the close."""
    overrides = {"session": {"calendar": calendar}}
    (warning,) = config_from_dict(overrides, "paper.yaml", env={}).warnings
    assert warning.startswith(f"paper.yaml: session.calendar = {calendar!r}: the calendar of ")
    assert "not of MES ('CME_Equity' or 'CME Globex Equity')" in warning
    message = error_from_dict(merged(LIVE, overrides))
    assert f"session.calendar = {calendar!r}" in message and "refused in live mode" in message


@pytest.mark.parametrize(
    ("symbol", "calendar"),
    [("MES", "CBOT_Equity"), ("NQ", "CME Globex Equity"), ("ES", "CME_Equity")],
)
def test_the_instruments_own_calendars_and_their_aliases_are_accepted(
    symbol: str, calendar: str
) -> None:
    spec = INSTRUMENTS[symbol]
    instrument = {"symbol": symbol, "tick_size": spec.tick_size, "point_value": spec.point_value}
    overrides = {"instrument": instrument, "session": {"calendar": calendar}}
    cfg = config_from_dict(overrides, env={})
    assert not [w for w in cfg.warnings if "session.calendar" in w]


@pytest.mark.parametrize(("day", "weekday"), [("2024-11-30", "Saturday"), ("2024-12-01", "Sunday")])
def test_an_early_close_on_a_weekend_is_an_error(tmp_path: Path, day: str, weekday: str) -> None:
    """No session is dated on a weekend (Sunday evening trades Monday's session): the date is a
    typo, and the day the trader meant would go without the correction."""
    message = error_of(tmp_path, f"session: {{early_closes: {{{day}: '13:15'}}}}\n")
    assert f"{day} is a {weekday}: no session has this date" in message


def test_dates_in_messages_are_written_as_in_yaml(tmp_path: Path) -> None:
    message = error_of(tmp_path, "session: {early_closes: [2024-11-29]}\n")
    assert "= ['2024-11-29']: must be a mapping" in message and "datetime" not in message


@pytest.mark.parametrize("value", ["yes", 1, "true", 0])
def test_a_switch_takes_yaml_true_or_false_only(value: object) -> None:
    with pytest.raises(ConfigError, match=r"ops\.supervise_worker = .*: must be true or false"):
        config_from_dict({"ops": {"supervise_worker": value}}, env={})
    assert config_from_dict({"ops": {"supervise_worker": True}}, env={}).ops.supervise_worker
    assert not config_from_dict({}, env={}).ops.supervise_worker  # opt-in: it starts a trader


@pytest.mark.parametrize("mode", ["paper", "live"])
def test_a_trailing_stop_at_ib_is_refused_in_every_mode(mode: str) -> None:
    # The IB adapter places fixed brackets only: a trailed position would have no stop at IB.
    overrides = merged(LIVE, {"risk": {"trail_ticks": 12}}) if mode == "live" else {
        "broker": {"kind": "ibkr", "account": "DU1"}, "risk": {"trail_ticks": 12}}  # fmt: skip
    with pytest.raises(ConfigError) as refused:
        config_from_dict(overrides, source="c.yaml", env={})
    assert any(
        line.startswith("c.yaml: risk.trail_ticks = 12: the IB adapter does not move stop orders")
        for line in refused.value.problems
    ), refused.value.problems
    # The paper broker trails in its own simulator: the same rule is legitimate there.
    assert config_from_dict({"risk": {"trail_ticks": 12}}, env={}).risk.trail_ticks == 12
