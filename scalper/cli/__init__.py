"""The `scalper` command line: the outermost shell of the system.

Each area registers its sub-commands from its own module (`register(subparsers)`), so the parser
is assembled in one place and every command lives beside its kind. Handlers import their heavy
dependencies (Dagster, Great Expectations, Bytewax, Kafka clients) lazily, inside the handler: the
library modules never import an orchestrator, and `scalper --help` stays fast.

User mistakes raise `ScalperError`, which `main` prints as one line (`scalper: error: ...`) with a
non-zero exit, never a traceback. Output piped into a reader that stops early (`| head`) ends the
command quietly.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
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
        code = int(args.func(args))
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # a socket's, not ours to hide
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except ScalperError as exc:
        for line in str(exc).splitlines() or [""]:  # a ConfigError lists every problem
            print(f"scalper: error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("scalper: interrupted", file=sys.stderr)
        return 130


EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
"""What a shell reports for a program ended by SIGPIPE (`scalper backtest ... | head`)."""


def _stdout_closed() -> bool:
    """True when standard output is a pipe whose reader is gone (`| head` has exited).

    The standard SIGPIPE default (die at once) is not used: it would also kill a command at the
    first write to a closed socket (IB, Kafka), where an error must be handled, not a silence.
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced (tests) or closed
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _discard_stdout() -> None:
    """Point standard output at /dev/null, so the interpreter's last flush of what is still
    buffered cannot print "Exception ignored ... BrokenPipeError" on the way out."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
