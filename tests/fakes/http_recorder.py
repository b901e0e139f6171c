"""A local HTTP server that records what it receives: the stand-in for Telegram and webhooks.

The project's real HTTP code (urllib) talks to it over TCP, so a test sees exactly the requests
that would have left the machine: path (where a Telegram token would travel), headers and the
JSON body. Answers are `200 {"ok": true}` unless the test queues others (`respond`), e.g. a
500 to exercise the retries, or a 401 carrying a description as Telegram's API does.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class HttpRecorder:
    """`with HttpRecorder() as server:` serves on `server.url` from a background thread."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._answers: deque[tuple[int, dict[str, Any]]] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def respond(self, status: int, body: dict[str, Any] | None = None, times: int = 1) -> None:
        """Answer the next `times` requests with `status` and `body` (then 200 again)."""
        with self._lock:
            self._answers.extend([(status, body or {"ok": status < 400})] * times)

    def texts(self) -> list[str]:
        """The `text` field of every JSON body received (Telegram and webhook messages)."""
        return [r.json["text"] for r in self.requests]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _answer(self) -> tuple[int, dict[str, Any]]:
        with self._lock:
            return self._answers.popleft() if self._answers else (200, {"ok": True})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with recorder._lock:
                    recorder.requests.append(Recorded("POST", self.path, body))
                status, answer = recorder._answer()
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads `requests`, not the console."""

        return Handler
