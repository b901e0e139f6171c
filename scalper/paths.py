"""Where runtime files live: one data directory, the same from every working directory.

Bar store, state database, reports, Kafka data and Dagster/Prefect homes all sit below it, never in
the source tree, so a checkout stays clean and a VPS keeps everything in one place to back up.

**Which folder.** The first of: the environment variable `SCALPER_HOME`; `paths.home` of the
loaded configuration (`use_configured_home`); the platform's user data folder
(`$XDG_DATA_HOME/scalper`, else `~/.local/share/scalper`; `~/Library/Application Support/scalper`
on macOS). Every one of them must be absolute (`~` is expanded): a relative home would name a
different folder from every working directory, which is how `scalper status` run from another
folder once reported an empty, invented home ("position +0") while the worker traded elsewhere.
Resolving a relative value once would not help — the worker, the flows and a trader's shell each
start from their own folder — so it is refused with the fix.

**Reading and writing.** `home()` and `subdir_path()` only name folders: commands that read
(`status`, `kafka status`, lookups of state files) use them and never leave a folder behind.
`subdir()` is the write path: it creates the folder (and the data directory) and turns a home
that is a file or not writable into one clear error instead of a traceback deep in a write.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from scalper.errors import ScalperError
from scalper.files import make_folder

ENV = "SCALPER_HOME"
APP = "scalper"

_configured: tuple[Path, str] | None = None
"""The loaded configuration's `paths.home` and where it was written (for messages)."""


def use_configured_home(home: str | None, source: str) -> None:
    """Make `home` (from the configuration `source`) the data directory, unless `SCALPER_HOME`
    is set; `None` leaves the choice as it was. `scalper.config.load_config` calls this."""
    global _configured
    if home is not None:
        _configured = (absolute_path(home, f"{source}: paths.home"), f"{source}: paths.home")


def home() -> Path:
    """The data directory, NOT created: a command that only reads must not invent one.

    Raises `ScalperError` when the chosen path exists and is not a folder.
    """
    path, origin = _chosen()
    if path.exists() and not path.is_dir():
        raise ScalperError(f"data directory {path} ({origin}) is not a folder")
    return path


def subdir_path(name: str) -> Path:
    """The path of a named folder under the data directory, not created: for readers."""
    return home() / name


def subdir(name: str) -> Path:
    """A named folder under the data directory (`bars`, `reports`, `state`, `kafka`, ...),
    created with the data directory if needed: the write path."""
    try:
        return make_folder(subdir_path(name))
    except ScalperError as exc:
        raise ScalperError(f"data directory {describe()}: {exc}") from None


def describe() -> str:
    """Where the data directory is and why (`SCALPER_HOME`, the configuration, the default)."""
    path, origin = _chosen()
    return f"{path} ({origin})"


def platform_home() -> Path:
    """The platform's user data folder for scalper (XDG on Linux; a relative
    `$XDG_DATA_HOME` is ignored, as the XDG specification says)."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / APP


def _chosen() -> tuple[Path, str]:
    """The data directory's path and its origin, by the precedence of the module notes.

    The path is the folder's real one (symbolic links resolved): every process must name the
    run folder alike, because a running worker is recognised by the folder its command line
    names (`scalper.live.worker.running_workers`); through a link, `status` reported a running
    worker dead, the kill switch did not wait for its fills and the supervisor would start another.
    """
    value = os.environ.get(ENV, "").strip()
    if value:
        path, origin = absolute_path(value, ENV), ENV
    elif _configured is not None:
        path, origin = _configured
    else:
        path, origin = platform_home(), "the default, the user data folder"
    return Path(os.path.realpath(path)), origin


def absolute_path(value: str, origin: str) -> Path:
    """`value` (`~` expanded) as an absolute path; a relative one is an error naming `origin`
    (an environment variable, a setting): it would differ from one working directory to the
    next, and each process of the system starts in its own."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ScalperError(
            f"{origin} = {value!r} is a relative path; give an absolute one (a relative path "
            "would differ from one working directory to the next)"
        )
    return Path(os.path.normpath(path))
