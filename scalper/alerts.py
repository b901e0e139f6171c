"""Alerts to the trader: Telegram (Bot API) and a generic JSON webhook.

Why throttled: the same problem tends to repeat — a supervisor that finds the worker dead every
minute, a gateway flapping between "lost" and "restored" — and a phone that buzzes forty times
gets muted, after which the one alert that matters goes unseen. So a message is sent once per
`throttle_seconds` per key (the text unless a key is given); repeats inside that window are
counted, and the next message sent for the key after the window says how many were held back
("… (4 more since 14:02 UTC)"). `flush()` sends those summaries without waiting for a new
repeat. The bookkeeping lives in a small JSON file under the data directory, because the flows
that alert run as separate processes and must share one memory of what was sent.

Why careful with secrets: a Telegram bot token sits in the request URL and a webhook URL usually
embeds one, and HTTP errors like to quote URLs. Every error text is redacted before it is
logged, returned or raised, and exceptions are re-raised without their chain.

Delivery retries transient failures (network errors, HTTP 5xx, 429 with Telegram's
`retry_after`) with a growing pause; other refusals (a wrong token, a wrong chat) are final.
An alert that cannot be delivered never raises into the caller — a kill switch must finish
even when Telegram is down — but the outcome says which channel failed and why.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from scalper.config import Config
from scalper.files import atomic_write
from scalper.paths import subdir_path

log = logging.getLogger(__name__)

Level = Literal["info", "warning", "critical"]
TELEGRAM_API = "https://api.telegram.org"
TELEGRAM_MAX_CHARS = 4096
REQUEST_TIMEOUT = 10.0
RETRY_PAUSES = (1.0, 3.0, 9.0)
REDACTED = "***"
_ICONS = {"info": "ℹ️", "warning": "⚠️", "critical": "🚨"}


class DeliveryError(Exception):
    """One channel refused or could not take a message; the text is already redacted."""

    def __init__(self, reason: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.transient = transient
        self.retry_after = retry_after


class Channel(Protocol):
    """Somewhere an alert can go."""

    name: str

    def deliver(self, text: str, level: Level) -> None:
        """Send one message or raise `DeliveryError` (redacted)."""


# ---------------------------------------------------------------------------------------------
# Channels


def _post_json(url: str, payload: dict[str, Any], secrets: Sequence[str]) -> bytes:
    """POST `payload` as JSON; HTTP and network failures become redacted `DeliveryError`s."""
    body = json.dumps(payload).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        detail = _redact(_error_body(exc), secrets)
        transient = exc.code >= 500 or exc.code == 429
        reason = f"HTTP {exc.code}" + (f": {detail}" if detail else "")
        raise DeliveryError(reason, transient=transient, retry_after=_retry_after(exc)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(_redact(f"network error: {reason}", secrets), transient=True) from None


def _error_body(exc: urllib.error.HTTPError) -> str:
    """The API's own explanation (Telegram: `description`), else the raw body, shortened."""
    try:
        raw = exc.read().decode(errors="replace")
    except OSError:
        return ""
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(json.loads(raw)["description"])[:300]
    return raw.strip()[:300]


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    header = exc.headers.get("Retry-After") if exc.headers else None
    with contextlib.suppress(TypeError, ValueError):
        return float(header)
    return None


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


@dataclass(frozen=True)
class TelegramChannel:
    """The Telegram Bot API's `sendMessage` (`api` is overridable for tests and proxies)."""

    token: str = field(repr=False)
    chat: str
    api: str = TELEGRAM_API
    name: str = "telegram"

    def deliver(self, text: str, level: Level) -> None:
        url = f"{self.api.rstrip('/')}/bot{self.token}/sendMessage"
        message = f"{_ICONS[level]} {text}"[:TELEGRAM_MAX_CHARS]
        payload = {"chat_id": self.chat, "text": message, "disable_web_page_preview": True}
        _post_json(url, payload, [self.token])


@dataclass(frozen=True)
class WebhookChannel:
    """A JSON POST (`text`, `level`, `source`, `sent_at`) to any URL (Slack-compatible `text`)."""

    url: str = field(repr=False)
    name: str = "webhook"

    def deliver(self, text: str, level: Level) -> None:
        payload = {
            "text": text,
            "level": level,
            "source": "scalper",
            "sent_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        _post_json(self.url, payload, [self.url, urllib.parse.urlsplit(self.url).path])


# ---------------------------------------------------------------------------------------------
# Throttling memory


@dataclass
class _Seen:
    first_sent: float
    held_back: int = 0
    held_since: float | None = None
    text: str = ""
    level: Level = "info"


class _Memory:
    """What was sent when, per key, in a JSON file shared by every process (under a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def open(self) -> Iterator[dict[str, _Seen]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            seen = self._read()
            yield seen
            with atomic_write(self.path) as fh:
                fh.write(json.dumps({k: vars(v) for k, v in seen.items()}).encode())

    def _read(self) -> dict[str, _Seen]:
        try:
            data = json.loads(self.path.read_text())
            return {key: _Seen(**value) for key, value in data.items()}
        except (OSError, ValueError, TypeError):
            return {}  # no memory (first run, or a damaged file): at worst one repeat gets through


# ---------------------------------------------------------------------------------------------
# The alerter


@dataclass(frozen=True)
class Outcome:
    """What became of one alert: sent (to which channels), held back, and failures by channel."""

    sent_to: tuple[str, ...] = ()
    held_back: bool = False
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def delivered(self) -> bool:
        return bool(self.sent_to)


class Alerter:
    """Sends alerts to every configured channel, throttled per key (see the module docstring)."""

    def __init__(
        self,
        channels: Sequence[Channel],
        *,
        throttle_seconds: float = 300.0,
        memory: Path | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        retry_pauses: Sequence[float] = RETRY_PAUSES,
    ) -> None:
        self.channels = tuple(channels)
        self.throttle_seconds = throttle_seconds
        state = subdir_path("state")  # created by the first alert: building one writes nothing
        self._memory = _Memory(memory if memory is not None else state / "alerts.json")
        self._clock = clock
        self._sleep = sleep
        self._retry_pauses = tuple(retry_pauses)

    def send(self, text: str, level: Level = "info", *, key: str | None = None) -> Outcome:
        """Send `text` now, or hold it back as a repeat of `key` inside the throttle window."""
        now = self._clock()
        with self._memory.open() as seen:
            previous = seen.get(key or text)
            if previous is not None and now - previous.first_sent < self.throttle_seconds:
                previous.held_back += 1
                previous.held_since = previous.held_since or now
                previous.text, previous.level = text, level
                return Outcome(held_back=True)
            message = text + (_summary(previous) if previous and previous.held_back else "")
            seen[key or text] = _Seen(first_sent=now, text=text, level=level)
        return self._deliver(message, level)

    def flush(self) -> list[Outcome]:
        """Send the summaries of repeats whose window has passed (a burst said once, in short)."""
        now = self._clock()
        due: list[tuple[str, Level]] = []
        with self._memory.open() as seen:
            for key, entry in seen.items():
                if entry.held_back and now - entry.first_sent >= self.throttle_seconds:
                    due.append((entry.text + _summary(entry), entry.level))
                    seen[key] = _Seen(first_sent=now, text=entry.text, level=entry.level)
        return [self._deliver(text, level) for text, level in due]

    def _deliver(self, text: str, level: Level) -> Outcome:
        sent: list[str] = []
        failures: dict[str, str] = {}
        for channel in self.channels:
            try:
                self._with_retries(channel, text, level)
                sent.append(channel.name)
            except DeliveryError as exc:
                failures[channel.name] = str(exc)
                log.warning("alert not delivered to %s: %s", channel.name, exc)
        return Outcome(sent_to=tuple(sent), failures=failures)

    def _with_retries(self, channel: Channel, text: str, level: Level) -> None:
        for pause in (*self._retry_pauses, None):
            try:
                channel.deliver(text, level)
                return
            except DeliveryError as exc:
                if not exc.transient or pause is None:
                    raise
                self._sleep(max(pause, exc.retry_after or 0.0))


def _summary(entry: _Seen) -> str:
    since = datetime.fromtimestamp(entry.held_since or entry.first_sent, UTC)
    times = "time" if entry.held_back == 1 else "times"
    return f" (repeated {entry.held_back} more {times} since {since:%H:%M} UTC)"


def channels_from_config(cfg: Config) -> list[Channel]:
    """The channels the configuration sets up completely (none is a valid, silent setup)."""
    alerts = cfg.alerts
    found: list[Channel] = []
    if alerts.telegram_token and alerts.telegram_chat:
        api = cfg.ops.telegram_api
        found.append(TelegramChannel(alerts.telegram_token, alerts.telegram_chat, api))
    if alerts.webhook:
        found.append(WebhookChannel(alerts.webhook))
    return found


def alerter_from_config(cfg: Config, **options: Any) -> Alerter:
    """An `Alerter` over the configured channels with the configured throttle."""
    return Alerter(
        channels_from_config(cfg), throttle_seconds=cfg.ops.alert_throttle_seconds, **options
    )
