"""Alerts against a local HTTP server standing in for Telegram and a webhook receiver.

The real urllib code sends over TCP; the recorder shows what would have left the machine. Time is
a manual clock, so throttle windows are exact and retries do not wait.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scalper.alerts import (
    Alerter,
    TelegramChannel,
    WebhookChannel,
    alerter_from_config,
    channels_from_config,
)
from scalper.config import Config, config_from_dict
from scalper.kafka.broker import free_port
from tests.fakes.clock import ManualClock
from tests.fakes.http_recorder import HttpRecorder

TOKEN = "123456:SECRET-bot-token"
CHAT = "-100777"


@pytest.fixture
def server() -> Iterator[HttpRecorder]:
    with HttpRecorder() as recorder:
        yield recorder


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2024, 6, 3, 14, 0, tzinfo=UTC))


def alerter(
    server: HttpRecorder, clock: ManualClock, tmp_path: Path, **options: object
) -> tuple[Alerter, list[float]]:
    slept: list[float] = []
    channel = TelegramChannel(TOKEN, CHAT, api=server.url)
    built = Alerter(
        [channel],
        throttle_seconds=300,
        memory=tmp_path / "alerts.json",
        clock=clock.now,
        sleep=slept.append,
        **options,  # type: ignore[arg-type]
    )
    return built, slept


def test_telegram_message_goes_to_the_bot_api(
    server: HttpRecorder, clock: ManualClock, tmp_path: Path
) -> None:
    sender, _ = alerter(server, clock, tmp_path)
    outcome = sender.send("kill switch tripped", "critical")
    assert outcome.sent_to == ("telegram",)
    [request] = server.requests
    assert request.path == f"/bot{TOKEN}/sendMessage"
    assert request.json["chat_id"] == CHAT
    assert request.json["text"].endswith("kill switch tripped")


def test_webhook_posts_json(server: HttpRecorder, tmp_path: Path) -> None:
    sender = Alerter([WebhookChannel(f"{server.url}/hooks/T0/B0/XYZ")], memory=tmp_path / "a.json")
    assert sender.send("daily summary", "info").delivered
    [request] = server.requests
    assert request.path == "/hooks/T0/B0/XYZ"
    assert request.json["text"] == "daily summary"
    assert request.json["level"] == "info"
    assert request.json["source"] == "scalper"


def test_repeats_inside_the_window_are_held_and_summarized(
    server: HttpRecorder, clock: ManualClock, tmp_path: Path
) -> None:
    sender, _ = alerter(server, clock, tmp_path)
    assert sender.send("worker died").delivered
    clock.advance(10)
    for _ in range(3):
        assert sender.send("worker died").held_back
    assert sender.send("gateway lost").delivered  # another message is not throttled
    assert len(server.requests) == 2
    clock.advance(300)
    assert sender.send("worker died").delivered
    assert server.texts()[-1].endswith("worker died (repeated 3 more times since 14:00 UTC)")


def test_flush_sends_a_burst_once_in_short(
    server: HttpRecorder, clock: ManualClock, tmp_path: Path
) -> None:
    sender, _ = alerter(server, clock, tmp_path)
    sender.send("data farm broken", key="farm")
    sender.send("data farm broken again", key="farm")
    assert sender.flush() == []  # the window is still open
    clock.advance(301)
    [outcome] = sender.flush()
    assert outcome.delivered
    summary = "data farm broken again (repeated 1 more time since 14:00 UTC)"
    assert server.texts()[-1].endswith(summary)
    assert sender.flush() == []


def test_the_memory_is_shared_between_processes(
    server: HttpRecorder, clock: ManualClock, tmp_path: Path
) -> None:
    first, _ = alerter(server, clock, tmp_path)
    second, _ = alerter(server, clock, tmp_path)  # another flow run, same data directory
    first.send("position mismatch")
    assert second.send("position mismatch").held_back
    assert len(server.requests) == 1


def test_transient_failures_are_retried_with_growing_pauses(
    server: HttpRecorder, clock: ManualClock, tmp_path: Path
) -> None:
    sender, slept = alerter(server, clock, tmp_path, retry_pauses=(1.0, 3.0, 9.0))
    server.respond(500, times=2)
    assert sender.send("halted").delivered
    assert len(server.requests) == 3
    assert slept == [1.0, 3.0]


def test_telegrams_retry_after_is_respected(
    server: HttpRecorder, clock: ManualClock, tmp_path: Path
) -> None:
    sender, slept = alerter(server, clock, tmp_path, retry_pauses=(1.0,))
    server.respond(429, {"ok": False, "description": "Too Many Requests: retry after 7"})
    assert sender.send("halted").delivered
    assert slept == [1.0]  # no Retry-After header: the pause is ours


def test_a_refusal_is_final_and_the_token_never_shows(
    server: HttpRecorder, clock: ManualClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sender, slept = alerter(server, clock, tmp_path)
    server.respond(401, {"ok": False, "description": f"Unauthorized: bad token {TOKEN}"})
    with caplog.at_level(logging.DEBUG):
        outcome = sender.send("halted")
    assert not outcome.delivered
    assert slept == [] and len(server.requests) == 1
    assert "401" in outcome.failures["telegram"] and "Unauthorized" in outcome.failures["telegram"]
    assert TOKEN not in outcome.failures["telegram"] and TOKEN not in caplog.text
    assert TOKEN not in repr(sender.channels)


def test_an_unreachable_channel_fails_quietly_without_secrets(
    clock: ManualClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    webhook = f"http://127.0.0.1:{free_port()}/hooks/T0/B0/SECRETPATH"
    sender = Alerter([WebhookChannel(webhook)], memory=tmp_path / "a.json", sleep=lambda _: None)
    with caplog.at_level(logging.DEBUG):
        outcome = sender.send("halted")
    assert not outcome.delivered
    assert "network error" in outcome.failures["webhook"]
    assert "SECRETPATH" not in outcome.failures["webhook"] and "SECRETPATH" not in caplog.text


def test_channels_come_from_the_configuration(server: HttpRecorder) -> None:
    assert channels_from_config(Config()) == []
    cfg = config_from_dict(
        {
            "alerts": {"telegram_token": TOKEN, "telegram_chat": CHAT, "webhook": server.url},
            "ops": {"telegram_api": server.url, "alert_throttle_seconds": 60},
        }
    )
    telegram, webhook = channels_from_config(cfg)
    assert telegram == TelegramChannel(TOKEN, CHAT, api=server.url)
    assert webhook == WebhookChannel(server.url)
    assert alerter_from_config(replace(cfg)).throttle_seconds == 60
