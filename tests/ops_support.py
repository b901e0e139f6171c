"""What the operations tests share: a data directory, a configuration, the fakes at the edges.

The operations talk to the real Kafka broker (the session fixture), to the fake IB Gateway over
TCP with the real ib_async client, and to Telegram — a local HTTP server that records what would
have been sent. Secrets come from the environment, as in production, so the tests can check
they never show.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from ib_async import IB, Future, MarketOrder

from scalper.kafka.broker import KafkaBroker
from scalper.kafka.clients import read_topic
from scalper.kafka.messages import Control, decode_control
from scalper.kafka.topics import CONTROL, ensure_topics
from scalper.ledger import Ledger
from scalper.ops.context import Operations
from scalper.ops.procedures import eod_watch_at
from tests.fakes.http_recorder import HttpRecorder
from tests.fakes.tws import FakeGateway

ACCOUNT = "DU5550001"
TOKEN = "987654:TOKEN-never-shown"
CHAT = "-1001234"
SYMBOL = "MES"
CLIENT_ID = 21


@dataclass
class OpsWorld:
    """A data directory with a configuration file, and the services it points at."""

    home: Path
    config: Path
    kafka: KafkaBroker
    telegram: HttpRecorder
    gateway: FakeGateway | None = None

    def controls(self) -> list[Control]:
        """Every command on the `control` topic (shared by the tests: filter by reason)."""
        records = read_topic(self.kafka.bootstrap, CONTROL)
        return [
            c for c in map(decode_control, (r.value for r in records)) if isinstance(c, Control)
        ]

    def alerts(self) -> list[str]:
        return self.telegram.texts()


def write_config(path: Path, kafka: KafkaBroker, telegram: HttpRecorder, **sections: dict) -> Path:
    """A configuration whose secrets are `${...}` placeholders filled from the environment."""
    data = {
        "kafka": {"bootstrap": kafka.bootstrap},
        "alerts": {
            "telegram_token": "${TELEGRAM_BOT_TOKEN}",
            "telegram_chat": "${TELEGRAM_CHAT_ID}",
        },
        "ops": {"telegram_api": telegram.url, "alert_throttle_seconds": 0},
        **sections,
    }
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def telegram() -> Iterator[HttpRecorder]:
    with HttpRecorder() as recorder:
        yield recorder


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IB_ACCOUNT", ACCOUNT)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_CHAT_ID", CHAT)


@pytest.fixture
def gateway_options() -> dict[str, Any]:
    """conftest's fake gateway, reporting this account."""
    return {"account": ACCOUNT}


def make_world(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kafka: KafkaBroker,
    telegram: HttpRecorder,
    gateway: FakeGateway | None = None,
    **sections: dict,
) -> OpsWorld:
    """A fresh data directory (SCALPER_HOME) with a configuration and the worker's ledger,
    empty, as a worker that has run leaves it (the operations never create one); IBKR when
    `gateway`."""
    home = tmp_path / "home"
    Ledger(home / "stream" / "ledger.sqlite").close()
    monkeypatch.setenv("SCALPER_HOME", str(home))
    if gateway is not None:
        broker = {"kind": "ibkr", "port": gateway.port, "client_id": CLIENT_ID,
                  "account": "${IB_ACCOUNT}"}  # fmt: skip
        sections = {"broker": broker, **sections}
    ensure_topics(kafka.bootstrap, [SYMBOL])
    config = write_config(home / "scalper.yaml", kafka, telegram, **sections)
    return OpsWorld(home, config, kafka, telegram, gateway)


def trade_by_hand(gateway: FakeGateway, action: str, quantity: int) -> None:
    """A trade the system did not make (TWS, another program): no orderRef of ours."""
    ib = IB()
    ib.connect("127.0.0.1", gateway.port, clientId=99, timeout=5)
    try:
        [contract] = ib.qualifyContracts(Future(SYMBOL, "202406", exchange="CME"))
        trade = ib.placeOrder(contract, MarketOrder(action, quantity))
        while not trade.isDone():
            ib.sleep(0.02)
    finally:
        ib.disconnect()


def watch_time(config: Path) -> time:
    """Today's EOD watch time of `config`: a run scheduled then checks whatever the clock says
    (a run by hand checks only from then to the session's end)."""
    ops = Operations.load(str(config))
    return eod_watch_at(ops.cfg, ops.session_date())
