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
import errno
import os
import re
import select
import signal
import sys
from collections.abc import Sequence
from datetime import date
from importlib import import_module
from typing import TYPE_CHECKING

from scalper.errors import ScalperError

if TYPE_CHECKING:
    from pathlib import Path

    import polars as pl

    from scalper.bars import BarFileSpec
    from scalper.config import Config, DataConfig

# Modules under scalper.cli that register commands, in the order `--help` lists them.
COMMAND_MODULES = ("engine", "data", "kafka", "quality", "research", "ui", "stream", "ops")


def iso_date(text: str) -> date:
    """An argparse type for YYYY-MM-DD dates (a bad one is a usage error, not a traceback)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def instrument_symbol(text: str) -> str:
    """An argparse type for `--symbol`: a known instrument in any case, as the table spells it
    (`mes` -> `MES`), so stores, topics and ledgers are looked up under the right name."""
    from scalper.instruments import canonical_symbol

    if not text.strip():  # `--symbol "$SYM"` unset: not the configured instrument in its place
        raise argparse.ArgumentTypeError("an empty symbol; name an instrument, e.g. MES")
    return canonical_symbol(text)


def add_bar_file_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how to read a bars file's times, for every command that reads one.

    One helper, so every such command answers the same questions the same way; `bar_file_spec`
    turns them (over the configuration's `data:` answers) into `scalper.bars.BarFileSpec`.
    """
    from typing import get_args

    from scalper.config import Stamped, TsUnit

    group = parser.add_argument_group(
        "time stamps of the bars file (defaults: data.ts_column, data.ts_unit, data.stamped)"
    )
    group.add_argument(
        "--ts-column", metavar="NAME", help="the column of bar times (default: ts; eastern_csv: "
        "timestamp)",
    )  # fmt: skip
    group.add_argument(
        "--ts-unit", choices=get_args(TsUnit), help="unit of integer epoch times (default auto: "
        "s, ms, us or ns by their size, refused when that cannot tell)",
    )  # fmt: skip
    group.add_argument(
        "--stamped", choices=get_args(Stamped), help="the times are bar starts or bar ends "
        "(end: moved back one bar). Default: starts, and a file that looks stamped at bar ends "
        "is refused",
    )  # fmt: skip


def bar_file_spec(args: argparse.Namespace, data: DataConfig) -> BarFileSpec:
    """The reading of `add_bar_file_options`' options, each over the configuration's own."""
    from scalper.bars import BarFileSpec

    return BarFileSpec.configured(data, args.ts_column, args.ts_unit, args.stamped)


def read_bar_file(path: str | Path, args: argparse.Namespace, cfg: Config) -> pl.DataFrame:
    """A bars file as a backtest reads it: the times as the options (over `cfg.data`) say.

    Prices off the instrument's tick grid are a warning of one line with the count: no order
    fills there, so the results are optimistic, but the data is not wrong as such. So are
    times that may be read wrong (`warn_about_times`). Bars of another instrument (the file's
    `symbol` column) are refused: they would be judged with this one's point value and rules.
    """
    from scalper.bars import check_symbol, off_tick_warning, read_bars

    spec = bar_file_spec(args, cfg.data)
    bars = read_bars(path, spec)
    check_symbol(bars, cfg.instrument.symbol, str(path))
    warn_about_times(bars, spec, path)
    warning = off_tick_warning(bars, cfg.instrument.tick_size, str(path))
    if warning is not None:
        print(f"warning: {warning}", file=sys.stderr)
    return bars


def warn_about_times(bars: pl.DataFrame, spec: BarFileSpec, path: str | Path) -> None:
    """Print what may be wrong with the times of bars read from `path` by `spec`: stamps that
    nothing confirms as bar starts, times of another zone read as UTC (one line each)."""
    from scalper.bars import time_warnings

    for warning in time_warnings(bars, spec.stamped, str(path)):
        print(f"warning: {warning}", file=sys.stderr)


def refuse_bar_file_options(args: argparse.Namespace, why: str) -> None:
    """Options of `add_bar_file_options` given where no file is read are an error, not ignored."""
    given = [f"--{name.replace('_', '-')}" for name in _BAR_FILE_OPTIONS if getattr(args, name)]
    if given:
        raise ScalperError(f"{', '.join(given)}: {why}")


_BAR_FILE_OPTIONS = ("ts_column", "ts_unit", "stamped")


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
    except OSError as exc:
        if _os_errno(exc) not in _NO_ROOM:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        why = exc.strerror or os.strerror(_os_errno(exc) or 0)
        print(f"scalper: error: cannot write{where}: {why}", file=sys.stderr)
        try:
            sys.stdout.flush()
        except OSError:  # standard output is what is full: its buffer would fail at exit too
            _discard_stdout()
        return 1
    except KeyboardInterrupt:
        print("scalper: interrupted", file=sys.stderr)
        return 130


_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
"""Write errors of the machine, not of the code (a full disk or device, a quota, a read-only
file system): one line that says so, not a traceback, whatever was being written."""


def _os_errno(exc: OSError) -> int | None:
    """The error number of `exc`; the Rust writers of polars and pyarrow give it only in the
    message (`... (os error 28)`)."""
    if exc.errno is not None:
        return exc.errno
    found = re.search(r"\(os error (\d+)\)", str(exc))
    return int(found[1]) if found else None


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
