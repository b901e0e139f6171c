"""A minimal progress bar on stderr for long work (imports, store writes, downloads, validation).

SPEC §6 asks that long work shows progress, but a bar only helps a person watching a terminal:
in Dagster or Prefect logs, CI output or a pipe it is noise (every redraw is a carriage return
that log collectors turn into a line). So a bar draws only when stderr is a TTY, unless the caller
forces it on (`enabled=True`) or off (`enabled=False`); redraws are throttled so that a tight loop
pays almost nothing for its bar.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sized
from types import TracebackType
from typing import TextIO, TypeVar

T = TypeVar("T")

_WIDTH = 28
_REDRAW_SECONDS = 0.1


def is_enabled(enabled: bool | None, stream: TextIO | None = None) -> bool:
    """Whether a bar draws: as forced by `enabled`, else only when the stream is a terminal."""
    if enabled is not None:
        return enabled
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class Progress:
    """A progress bar as a context manager: `with Progress(n, "import") as bar: bar.advance()`.

    `total` may be None when the amount of work is unknown; the bar then counts only. The final
    state is always drawn and the line ended on exit, also on an error, so an error message
    printed afterwards starts on a line of its own.
    """

    def __init__(
        self,
        total: int | None,
        label: str,
        *,
        unit: str = "",
        enabled: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.done = 0
        self._stream = stream or sys.stderr
        self._enabled = is_enabled(enabled, self._stream)
        self._started = time.perf_counter()
        self._drawn_at = float("-inf")
        self._width = 0

    def __enter__(self) -> Progress:
        self._started = time.perf_counter()
        self._draw(force=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._draw(force=True)
        if self._enabled:
            self._stream.write("\n")
            self._stream.flush()

    def advance(self, n: int = 1) -> None:
        """Count `n` more units of work done (redrawn at most ten times a second)."""
        self.done += n
        self._draw(force=False)

    def line(self) -> str:
        """The bar as text, e.g. `import  [#######.......]  12/40 files  30%  1.2 s`."""
        elapsed = f"{time.perf_counter() - self._started:.1f} s"
        unit = f" {self.unit}" if self.unit else ""
        if not self.total:
            return f"{self.label}  {self.done:,}{unit}  {elapsed}"
        share = min(self.done / self.total, 1.0)
        filled = round(share * _WIDTH)
        bar = "#" * filled + "." * (_WIDTH - filled)
        count = f"{self.done:,}/{self.total:,}{unit}"
        return f"{self.label}  [{bar}]  {count}  {share:4.0%}  {elapsed}"

    def _draw(self, *, force: bool) -> None:
        if not self._enabled:
            return
        now = time.perf_counter()
        if not force and now - self._drawn_at < _REDRAW_SECONDS:
            return
        self._drawn_at = now
        text = self.line()
        self._stream.write("\r" + text.ljust(self._width))  # blank out a longer previous line
        self._width = len(text)
        self._stream.flush()


def track(
    items: Iterable[T],
    label: str,
    *,
    total: int | None = None,
    unit: str = "",
    enabled: bool | None = None,
    stream: TextIO | None = None,
) -> Iterator[T]:
    """Yield `items`, advancing a bar after each one; `total` defaults to `len(items)` if known."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with Progress(total, label, unit=unit, enabled=enabled, stream=stream) as bar:
        for item in items:
            yield item
            bar.advance()
