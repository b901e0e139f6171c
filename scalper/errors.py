"""User-facing errors.

A `ScalperError` is a mistake the user can fix (a bad file, a bad setting, bad data). The CLI prints
it as one line and exits non-zero, never with a traceback: the message must say what and where.
"""

from __future__ import annotations


class ScalperError(Exception):
    """A user mistake: printed as one line by the CLI, exit code `exit_code`."""

    exit_code: int = 2


class ConfigError(ScalperError):
    """The configuration file is invalid: one line per problem (file, key, value and why).

    A file is reported whole, every problem at once, so a trader fixes it in one edit instead of
    one run per mistake; `problems` holds the lines, the message joins them. `warnings` are the
    file's other findings (paper-mode hazards), which `config check` shows alongside.
    """

    def __init__(self, *problems: str, warnings: tuple[str, ...] = ()) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.warnings = warnings


class DataError(ScalperError):
    """A bars file is unreadable or invalid (names file, row and why)."""
