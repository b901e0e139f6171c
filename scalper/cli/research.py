"""`scalper optimize | walk-forward | report`: the nightly research from the command line.

The same library calls the Dagster research assets make, for a trader at a shell. Bars come from a
normalized file (`--data`) or from the store's continuous series (`--symbol`: what `scalper data
continuous` or the `continuous_bars` asset built, back-adjusted as the research assets read it),
with `--start`/`--end` or, without them, the configured window of recent sessions. `optimize` and
`walk-forward` use all the bars given; `report` runs the whole nightly chain, which cuts its own
windows (`research.backtest_sessions`, `research.walk_forward_sessions`).

Each command writes a report folder (`reports/research/<run-id>/` or `--out`), prints one-line
summaries and the report's path. An approved parameter file from the CLI stays in that folder:
only the nightly run publishes the file the trading day loads.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from scalper.cli import add_bar_file_options, instrument_symbol, iso_date

if TYPE_CHECKING:
    from collections.abc import Sequence

    import polars as pl

    from scalper.config import Config
    from scalper.report import Published
    from scalper.research import Excluded, ResearchRun


def register(sub: argparse._SubParsersAction) -> None:
    commands = (
        ("optimize", "sweep the research grid and backtest the best set", _optimize),
        ("walk-forward", "walk-forward validation and the go-live gate", _walk_forward),
        ("report", "the whole nightly research: backtest, sweep, walk-forward, gate", _report),
    )
    for name, text, handler in commands:
        parser = sub.add_parser(name, help=text, description=text)
        _add_inputs(parser)
        parser.set_defaults(func=handler)


def _add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="configuration YAML (default: built-in defaults)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="normalized bars file (CSV or Parquet)")
    add_bar_file_options(parser)
    source.add_argument(
        "--symbol", type=instrument_symbol, help="the continuous series of SYMBOL from the store"
    )
    parser.add_argument("--start", type=iso_date, help="first session date (with --symbol)")
    parser.add_argument("--end", type=iso_date, help="last session date (with --symbol)")
    parser.add_argument(
        "--out", type=Path, help="folder for the report and files (default: reports/research/ID)"
    )


def _inputs(args: argparse.Namespace, *windows: str) -> tuple[Config, pl.DataFrame, str]:
    """The configuration, the bars and their symbol. `--symbol` without dates reads the longest
    of the `research` windows named by `windows` (e.g. `backtest_sessions`)."""
    from scalper.cli import read_bar_file, refuse_bar_file_options
    from scalper.config import load_config
    from scalper.errors import ScalperError
    from scalper.files import check_output_folder
    from scalper.research import continuous_reader, read_recent_sessions, read_sessions
    from scalper.store import partitions, stage_root

    if args.out is not None:  # before any work: a bad --out must not cost a sweep
        check_output_folder(args.out, "--out")
    cfg = load_config(args.config)
    if args.data is not None:
        if args.start or args.end:
            raise ScalperError("--start and --end select stored sessions; use them with --symbol")
        # A file of another instrument is refused there: these are the configured one's bars
        return cfg, read_bar_file(args.data, args, cfg), cfg.instrument.symbol
    refuse_bar_file_options(args, "they say how to read a --data file, not the store")
    if args.symbol != cfg.instrument.symbol:  # its point value, costs and risk rules decide
        raise ScalperError(
            f"--symbol {args.symbol}: the configuration trades {cfg.instrument.symbol} "
            f"(instrument.symbol): {args.symbol}'s bars would be researched, and their sets "
            f"judged, with {cfg.instrument.symbol}'s point value and risk rules; give a "
            f"configuration for {args.symbol}"
        )
    if (args.start is None) != (args.end is None):
        raise ScalperError("give both --start and --end, or neither (the configured window)")
    read = continuous_reader(args.symbol, cfg)
    if args.start is None:
        continuous = stage_root("continuous")
        stored = partitions(args.symbol, continuous)
        if not stored:
            raise ScalperError(
                f"{args.symbol}: no bars in the store's continuous stage {continuous} "
                "(run `scalper data continuous` after `scalper validate`)"
            )
        sessions = max(getattr(cfg.research, window) for window in windows)
        bars = read_recent_sessions(read, stored, sessions, cfg)
    elif args.start > args.end:
        raise ScalperError(f"--start {args.start} is after --end {args.end}")
    else:
        bars = read_sessions(read, args.start, args.end, cfg)
    return cfg, bars, args.symbol


def _optimize(args: argparse.Namespace) -> int:
    from scalper.backtest import run_backtest
    from scalper.research import (
        ResearchRun,
        best_set,
        format_point,
        grid_params,
        grid_point,
        headline,
        run_sweep,
        with_point,
    )

    cfg, bars, symbol = _inputs(args, "backtest_sessions")
    started = time.perf_counter()
    sweep = run_sweep(bars, cfg)
    grid = grid_params(cfg)
    lines = [
        f"scalper optimize: {sweep.height} sets ({len(grid.excluded)} excluded) over "
        f"{_span(bars, cfg)} in {time.perf_counter() - started:.1f} s",
        *_exclusions(grid.excluded),
    ]
    best = best_set(sweep, cfg)
    backtest, label = None, ""
    if best is None:
        objective = cfg.research.objective
        lines.append(f"no set made {cfg.research.min_trades} trades with a finite {objective}")
    else:
        point = grid_point(best)
        label = f"best set {format_point(point)}"
        backtest = run_backtest(bars, with_point(cfg, point))
        lines.append(
            f"best by {cfg.research.objective}: {format_point(point)}: {headline(backtest.metrics)}"
        )
    run = ResearchRun(
        symbol, backtest=backtest, backtest_label=label, sweep=sweep, excluded=grid.excluded
    )
    return _publish(run, cfg, args, lines)


def _walk_forward(args: argparse.Namespace) -> int:
    from scalper.research import ResearchRun, go_live_gate, walk_forward

    cfg, bars, symbol = _inputs(args, "walk_forward_sessions")
    started = time.perf_counter()
    wf = walk_forward(bars, cfg)
    verdict = go_live_gate(wf, cfg)
    elapsed = time.perf_counter() - started
    lines = [
        f"scalper walk-forward: {_span(bars, cfg)} in {elapsed:.1f} s: {wf.summary()}",
        *_exclusions(wf.excluded),
        verdict.summary(),
    ]
    run = ResearchRun(symbol, walk_forward=wf, verdict=verdict, excluded=wf.excluded)
    return _publish(run, cfg, args, lines)


def _report(args: argparse.Namespace) -> int:
    from scalper.research import headline, run_research

    cfg, bars, symbol = _inputs(args, "backtest_sessions", "walk_forward_sessions")
    started = time.perf_counter()
    run = run_research(bars, cfg, symbol)
    elapsed = time.perf_counter() - started
    assert run.backtest is not None and run.walk_forward is not None and run.verdict is not None
    lines = [
        f"scalper report: research of {symbol} in {elapsed:.1f} s",
        f"backtest: {headline(run.backtest.metrics)}",
        f"walk-forward: {run.walk_forward.summary()}",
        *_exclusions(run.excluded),
        run.verdict.summary(),
    ]
    return _publish(run, cfg, args, lines)


def _exclusions(excluded: Sequence[Excluded]) -> list[str]:
    """Which grid sets the configuration's rules kept out of the research, and why."""
    from scalper.research import exclusion_lines

    return [f"excluded {line}" for line in exclusion_lines(excluded)]


def _publish(run: ResearchRun, cfg: Config, args: argparse.Namespace, lines: list[str]) -> int:
    """Writes the run's files, then prints `lines` and where the files are: the files first, so
    a reader that stops early (`| head`) or a full standard output cannot lose a finished run."""
    from dataclasses import replace

    from scalper.report import publish
    from scalper.research import stored_data_source

    wf = run.walk_forward  # only a walk-forward approves parameters, and records their source
    if args.data is not None:
        run = replace(run, data_source="file")
    elif wf is not None:
        run = replace(run, data_source=stored_data_source(run.symbol, wf))
    published: Published = publish(run, cfg, origin="cli", directory=args.out)
    print("\n".join(lines))
    if published.approved is not None:
        print(f"approved parameters: {published.approved}")
    print(f"report: {published.report}")
    return 0


def _span(bars: pl.DataFrame, cfg: Config) -> str:
    from scalper.research import session_dates

    dates = session_dates(bars, cfg).unique().sort()
    return f"{dates.len()} sessions ({dates[0]} .. {dates[-1]})"
