"""The `scalper` command line: the outermost shell of the system.

Each area registers its sub-commands from its own module (`register(subparsers)`), so the parser
is assembled in one place and every command lives beside its kind. Handlers import their heavy
dependencies (Dagster, Great Expectations, Bytewax, Kafka clients) lazily, inside the handler: the
library modules never import an orchestrator, and `scalper --help` stays fast.

User mistakes raise `ScalperError`, which `main` prints as one line (`scalper: error: ...`) with a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date
from importlib import import_module

from scalper.errors import ScalperError

# Modules under scalper.cli that register commands, in the order `--help` lists them.
COMMAND_MODULES = ("engine", "data", "kafka", "quality", "research", "ui", "stream", "ops")


def iso_date(text: str) -> date:
    """An argparse type for YYYY-MM-DD dates (a bad one is a usage error, not a traceback)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def build_parser() -> argparse.ArgumentParser:
    """The full command tree; each leaf stores its handler in `func`."""
    parser = argparse.ArgumentParser(
        prog="scalper", description="Systematic intraday trading of CME micro futures."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        import_module(f"scalper.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `scalper` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ScalperError as exc:
        print(f"scalper: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("scalper: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
