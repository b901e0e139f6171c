"""Crash-safe file writes (a reader, or a crash, never sees a half-written file), and the checks
of the output paths a user names on the command line, made before any work starts."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from scalper.errors import ScalperError


@contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces `path` only when the block succeeds.

    The data goes to a temporary file in the same folder (same file system, so the final
    `os.replace` is atomic), is fsynced, then moved into place; on any error the temporary file
    is removed and `path` is untouched. A symlink is followed (the file it points to is
    replaced, the link kept); a device or a pipe is written as the stream it is.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode  # of what a symlink points to
    except FileNotFoundError:
        mode = stat.S_IFREG
    if not stat.S_ISREG(mode):
        # A device or a pipe (/dev/stdout, a shell's process substitution, /dev/full): there is
        # no file to replace, and renaming over it would destroy the device node (as root).
        if stat.S_ISDIR(mode):
            raise ScalperError(f"{path}: is a folder, not a file")
        with _cannot_write(path):
            stream = path.open("wb")
        with stream:
            yield stream
        return
    path = Path(os.path.realpath(path))  # through a symlink: the link stays, its file is replaced
    keep = stat.S_IMODE(path.stat().st_mode) if path.exists() else _NEW_FILE_MODE
    with _cannot_write(path):
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, keep)  # mkstemp's 0600 would make a replaced or new file private
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        with _cannot_write(path):
            os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


@contextmanager
def _cannot_write(path: Path) -> Iterator[None]:
    """Where a file cannot be made at all (a folder the checks saw writable but the file system
    refuses: /proc, a read-only mount, a permission): one line naming it, not a traceback."""
    try:
        yield
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        raise ScalperError(f"cannot write {path}: {exc.strerror or exc}") from None


_NEW_FILE_MODE = 0o644
"""A new output file is readable by others, as one a shell redirection makes (umask 022)."""


def make_folder(path: Path) -> Path:
    """Create a folder the system writes into (with its parents); a path that cannot be one (a
    file on the way, no permission, a read-only disk) is one clear error, not a traceback."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScalperError(f"cannot create the folder {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ScalperError(f"cannot write in the folder {path}: permission denied")
    return path


def check_output_file(path: str | Path, option: str) -> Path:
    """The file a user named for output (`option`, e.g. `--trades-out`), checked before the work
    starts, so a typo costs a second, not a finished backtest: its folder must exist and be
    writable (a missing folder is a mistake to report, not to create) and it must not be a
    folder. An existing file is replaced: an output named on the command line is what the
    command makes, and its writer (`atomic_write`) never leaves a half-written file.
    """
    if not str(path).strip():  # `--trades-out "$UNSET"`: not "no output", which would be silent
        raise ScalperError(f"{option}: an empty path; name a file")
    if str(path) == "-":  # not standard output here: the summary is printed there
        raise ScalperError(f"{option} -: name a file (standard output carries the summary)")
    path = Path(path).expanduser()
    if path.is_dir():
        raise ScalperError(f"{option} {path}: is a folder; name a file in it")
    _check_parent(path, option)
    return path


def check_output_folder(path: str | Path, option: str) -> Path:
    """The folder a user named for a run's files (`option`, e.g. `--out`), checked before the
    work starts: an existing file is refused (never replaced by a folder), as is a folder that
    already holds files (two runs' files mixed in one folder would be read as one run); a
    missing folder is created later by the run, inside an existing, writable parent."""
    path = Path(path).expanduser()
    if path.is_dir():
        if any(path.iterdir()):
            raise ScalperError(f"{option} {path}: the folder is not empty; name a new one")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ScalperError(f"{option} {path}: the folder is not writable")
        return path
    if path.exists():
        raise ScalperError(f"{option} {path}: is a file, not a folder")
    _check_parent(path, option)
    return path


def _check_parent(path: Path, option: str) -> None:
    parent = path.absolute().parent
    if not parent.is_dir():
        missing = "is not a folder" if parent.exists() else "does not exist"
        raise ScalperError(f"{option} {path}: the folder {parent} {missing}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ScalperError(f"{option} {path}: the folder {parent} is not writable")
