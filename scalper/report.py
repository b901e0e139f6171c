"""The research report: one self-contained HTML page per run, and an index of past runs.

The trader reads this in the morning, possibly offline on a laptop, so a report is a single file
with nothing to fetch: inline CSS, plots as embedded PNG (drawn on a bare Agg canvas, no pyplot,
so it is safe inside Dagster's worker threads), no scripts. Every section has a stable `id`, which
the tests use to check that nothing is missing.

`publish` is what both drivers (the CLI and the Dagster `recommended_params` asset) call at the
end of a run: it writes the report and the run's files into `reports/research/<run-id>/`, writes
`approved_params.yaml` when the gate passed, appends the run to the history, rewrites the index
and refreshes `latest.html`, a copy of the newest report.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from scalper.backtest import BacktestResult, trades_csv_frame
from scalper.config import GRID_AXES, Config
from scalper.files import atomic_write
from scalper.paths import subdir
from scalper.research import (
    Excluded,
    ResearchRun,
    WalkForwardResult,
    append_history,
    eligible_sets,
    exclusion_groups,
    folds_table,
    format_point,
    history_row,
    read_history,
    write_approved_params,
)

REPORT_FILE = "report.html"
INDEX_FILE = "index.html"
LATEST_FILE = "latest.html"  # a copy of the newest run's report: one address to bookmark
TRADE_ROWS = 500  # the table shows the most recent trades; trades.csv has them all
HEATMAPS = (
    ("lookback", "entry_z"),
    ("exit_z", "entry_z"),
    ("stop_loss_ticks", "take_profit_ticks"),
)

_GREEN, _RED, _BLUE, _GREY, _ORANGE = "#2e8540", "#c0392b", "#2f6db5", "#8a939c", "#e08a1e"
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232a;
background:#f5f6f8}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:0 0 12px}
section{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:16px 20px;margin:16px 0}
table{border-collapse:collapse;font-size:13px}
th,td{padding:4px 10px;border-bottom:1px solid #eceff2;text-align:right;white-space:nowrap}
th{background:#f0f2f5;font-weight:600}td.l,th.l{text-align:left}
img{max-width:100%;height:auto}.muted{color:#66707a;font-size:13px}
.badge{display:inline-block;padding:4px 12px;border-radius:4px;color:#fff;font-weight:700}
.pass{background:#2e8540}.fail{background:#c0392b}.ok{color:#2e8540}.no{color:#c0392b}
.scroll{max-height:600px;overflow:auto}.wide{overflow-x:auto}
"""

# ---------------------------------------------------------------------------------------------
# Publishing a run


@dataclass(frozen=True)
class Published:
    """Where a run's outputs went; `approved` is None when the gate refused (or did not run)."""

    run_id: str
    directory: Path
    report: Path
    approved: Path | None


def runs_root() -> Path:
    """The folder of every research run's folder, and of the index page."""
    path = subdir("reports") / "research"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_run_id() -> str:
    """A sortable, unique-per-second run id such as `20240612T220501Z`."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _run_directory(run_id: str) -> tuple[str, Path]:
    """A fresh folder for the run (a suffix when the id was used within the same second)."""
    root = runs_root()
    candidate, n = run_id, 1
    while (root / candidate).exists():
        n += 1
        candidate = f"{run_id}-{n}"
    (root / candidate).mkdir(parents=True)
    return candidate, root / candidate


def publish(
    run: ResearchRun,
    cfg: Config,
    *,
    origin: str,
    directory: Path | None = None,
    approved_to: Path | None = None,
) -> Published:
    """Writes the run's report and files, its approved parameters if the gate passed, its history
    row and the index. `approved_to` is a second place for the approved file (the nightly run
    publishes to the one the trading day loads; CLI runs keep theirs in the run folder)."""
    if directory is None:
        run_id, directory = _run_directory(new_run_id())
    else:
        run_id = directory.name
        directory.mkdir(parents=True, exist_ok=True)
    approved = _write_run_files(run, cfg, directory, run_id)
    if approved is not None and approved_to is not None:
        approved_to.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(approved_to) as fh:  # the trading day may be reading it right now
            fh.write(approved.read_bytes())
        approved = approved_to
    report = directory / REPORT_FILE
    page = render_report(run, cfg, run_id=run_id, approved=approved)
    report.write_text(page, encoding="utf-8")
    (runs_root() / LATEST_FILE).write_text(page, encoding="utf-8")
    history = append_history(history_row(run_id, run, cfg, report=report, origin=origin))
    write_index(history)
    return Published(run_id, directory, report, approved)


def _write_run_files(run: ResearchRun, cfg: Config, directory: Path, run_id: str) -> Path | None:
    """The run's tables beside the report; returns the approved parameters file if written."""
    if run.sweep is not None:
        run.sweep.write_parquet(directory / "sweep.parquet")
    if run.backtest is not None:
        trades_csv_frame(run.backtest.trades).write_csv(directory / "trades.csv")
    if run.walk_forward is not None:
        trades_csv_frame(run.walk_forward.out_of_sample.trades).write_csv(
            directory / "out_of_sample_trades.csv"
        )
    if run.walk_forward is None or run.verdict is None:
        return None
    path = directory / "approved_params.yaml"
    written = write_approved_params(
        run.verdict,
        run.walk_forward,
        cfg,
        path,
        symbol=run.symbol,
        data_source=run.data_source,
        run_id=run_id,
    )
    return path if written else None


# ---------------------------------------------------------------------------------------------
# The report page


def render_report(
    run: ResearchRun, cfg: Config, *, run_id: str, approved: Path | None = None
) -> str:
    """The report as one HTML document; sections appear for the parts the run has."""
    trades_run = _primary(run)
    parts = [_summary_section(run, cfg, run_id)]
    if run.verdict is not None:
        parts.append(_verdict_section(run, approved))
    if trades_run is not None:
        label, result = trades_run
        parts += [
            _figure_section("equity", f"Equity and drawdown — {label}", _equity_figure(result)),
            _figure_section(
                "pnl-distribution", f"Trade P&L distribution — {label}", _pnl_figure(result)
            ),
            _figure_section(
                "time-of-day",
                f"P&L by time of day ({cfg.session.timezone}) — {label}",
                _time_of_day_figure(result, cfg.session.timezone),
            ),
        ]
    if run.sweep is not None:
        parts.append(_sweep_section(run.sweep, cfg))
    if run.walk_forward is not None:
        parts += [_folds_section(run.walk_forward), _oos_equity_section(run.walk_forward)]
    if run.excluded:
        parts.append(_excluded_section(run.excluded, cfg))
    if trades_run is not None:
        parts.append(_trades_section(*trades_run, cfg.session.timezone))
    title = f"Research {run.symbol} {run_id}"
    return _page(title, f"<h1>{_e(title)}</h1>" + "".join(parts))


def _primary(run: ResearchRun) -> tuple[str, BacktestResult] | None:
    """The run whose trades the trade sections show: the backtest, else the stitched
    out-of-sample walk-forward."""
    if run.backtest is not None:
        sessions = run.backtest.metrics["sessions"]
        return f"{run.backtest_label}, {sessions} sessions", run.backtest
    if run.walk_forward is not None:
        return "stitched out-of-sample", run.walk_forward.out_of_sample
    return None


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def _section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{section_id}"><h2>{_e(title)}</h2>{body}</section>'


def _figure_section(section_id: str, title: str, figure: Figure | None) -> str:
    body = _img(figure, title) if figure is not None else '<p class="muted">No trades.</p>'
    return _section(section_id, title, body)


def _summary_section(run: ResearchRun, cfg: Config, run_id: str) -> str:
    columns: list[tuple[str, dict[str, Any]]] = []
    if run.backtest is not None:
        columns.append((f"Backtest ({run.backtest_label})", run.backtest.metrics))
    if run.walk_forward is not None:
        columns.append(("Walk-forward, out-of-sample", run.walk_forward.out_of_sample.metrics))
    rows = [
        ("trades", "Trades", "{:,.0f}"),
        ("sessions", "Sessions", "{:,.0f}"),
        ("net_pnl", "Net P&L", "{:,.2f}"),
        ("win_rate", "Win rate", "{:.1%}"),
        ("profit_factor", "Profit factor", "{:.2f}"),
        ("max_drawdown", "Max drawdown", "{:,.2f}"),
        ("max_drawdown_pct", "Max drawdown %", "{:.1%}"),
        ("sharpe", "Sharpe", "{:.2f}"),
        ("sortino", "Sortino", "{:.2f}"),
        ("calmar", "Calmar", "{:.2f}"),
        ("avg_trade", "Average trade", "{:,.2f}"),
        ("exposure", "Exposure", "{:.1%}"),
    ]
    head = "".join(f"<th>{_e(name)}</th>" for name, _ in columns)
    body = "".join(
        f'<tr><td class="l">{label}</td>'
        + "".join(f"<td>{_num(m[key], fmt)}</td>" for _, m in columns)
        + "</tr>"
        for key, label, fmt in rows
    )
    info = (
        f"Run {_e(run_id)} · {_e(run.symbol)} · configuration {_e(cfg.source)} · objective "
        f"{_e(cfg.research.objective)} · generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    table = f'<table><tr><th class="l">Metric</th>{head}</tr>{body}</table>' if columns else ""
    return _section("summary", "Summary", f'<p class="muted">{info}</p>{table}')


def _verdict_section(run: ResearchRun, approved: Path | None) -> str:
    verdict = run.verdict
    assert verdict is not None
    badge = (
        '<span class="badge pass">GATE PASSED</span>'
        if verdict.passed
        else '<span class="badge fail">GATE FAILED</span>'
    )
    checks = "".join(
        f'<li class="{"ok" if c.passed else "no"}">{"✓" if c.passed else "✗"} {_e(c.detail)}</li>'
        for c in verdict.checks
    )
    if approved is not None:
        outcome = f"Approved parameters written to <code>{_e(str(approved))}</code>."
    else:
        outcome = "No parameters approved; the last approved set (if any) stays in force."
    return _section(
        "verdict",
        "Go-live gate",
        f"<p>{badge} recommended: <code>{_e(format_point(verdict.params))}</code></p>"
        f"<ul>{checks}</ul><p>{outcome}</p>",
    )


def _sweep_section(sweep: pl.DataFrame, cfg: Config) -> str:
    objective = cfg.research.objective
    top = eligible_sets(sweep, cfg).head(10)
    note = (
        f'<p class="muted">{sweep.height} parameter sets; each cell is the best {objective} over '
        f"the other axes. Top sets (at least {cfg.research.min_trades} trades):</p>"
    )
    columns = ["set", *GRID_AXES, "trades", "net_pnl", "sharpe", "profit_factor", "max_drawdown"]
    figure = _heatmap_figure(sweep, objective)
    return _section(
        "heatmaps",
        f"Parameter sweep — {objective}",
        _img(figure, "parameter heat maps") + note + _table(top.select(columns)),
    )


def _folds_section(wf: WalkForwardResult) -> str:
    note = (
        f'<p class="muted">{len(wf.folds)} folds; grid of {wf.grid_size} sets '
        f"({len(wf.excluded)} excluded); mean {wf.objective} in-sample "
        f"{_num(wf.in_sample_score)}, out-of-sample "
        f"{_num(wf.out_of_sample_score)}, degradation {_num(wf.degradation, '{:.1%}')}.</p>"
    )
    return _section(
        "folds",
        "Walk-forward folds: in-sample vs out-of-sample",
        _img(_folds_figure(wf), "walk-forward folds") + note + _table(folds_table(wf)),
    )


def _excluded_section(excluded: Sequence[Excluded], cfg: Config) -> str:
    """The grid sets the configuration's rules refused, grouped by why, each group's sets
    listed: a set missing from the sweep is never a mystery."""
    groups = "".join(
        f"<li><b>{len(points)} set{'s' if len(points) > 1 else ''}</b>: "
        f"{'<br>'.join(_e(reason) for reason in reasons)}"
        f"<details><summary>which</summary><code>"
        f"{'<br>'.join(_e(format_point(point)) for point in points)}</code></details></li>"
        for reasons, points in exclusion_groups(excluded)
    )
    note = (
        f'<p class="muted">{len(excluded)} combinations of the research grid are not run: '
        f"{_e(cfg.source)} with them would be refused in {_e(cfg.broker.mode)} mode, so the "
        "gate could not approve them.</p>"
    )
    return _section(
        "excluded",
        "Parameter sets excluded by the configuration's rules",
        note + f"<ul>{groups}</ul>",
    )


def _oos_equity_section(wf: WalkForwardResult) -> str:
    figure = _oos_equity_figure(wf) if wf.out_of_sample.equity.height else None
    return _figure_section("oos-equity", "Stitched out-of-sample equity", figure)


def _trades_section(label: str, result: BacktestResult, tz: str) -> str:
    trades = result.trades
    shown = trades.tail(TRADE_ROWS).reverse()
    local = shown.with_columns(
        pl.col("entry_ts", "exit_ts").dt.convert_time_zone(tz).dt.strftime("%Y-%m-%d %H:%M")
    )
    note = (
        f'<p class="muted">{trades.height:,} trades ({label}); times in {_e(tz)}, newest first'
        + (f", the last {TRADE_ROWS} shown" if trades.height > TRADE_ROWS else "")
        + ".</p>"
    )
    table = f'<div class="scroll">{_table(local)}</div>' if trades.height else ""
    return _section("trades", "Trades", note + table)


def _table(frame: pl.DataFrame) -> str:
    head = "".join(
        f'<th class="{"l" if dtype == pl.String else ""}">{_e(name)}</th>'
        for name, dtype in frame.schema.items()
    )
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in frame.iter_rows())
    return f'<div class="wide"><table><tr>{head}</tr>{body}</table></div>'


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return f'<td class="l">{_e(value)}</td>'
    if isinstance(value, float):
        return f"<td>{_num(value)}</td>"
    return f"<td>{_e(str(value))}</td>"


def _num(value: float, fmt: str = "{:,.2f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return fmt.format(value)


def _e(text: str) -> str:
    return html.escape(text, quote=True)


# ---------------------------------------------------------------------------------------------
# Figures


def _figure(rows: int = 1, cols: int = 1, height: float = 3.6, **kwargs: Any) -> tuple[Figure, Any]:
    figure = Figure(figsize=(11, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, cols, **kwargs)


def _img(figure: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, metadata={"Software": None})  # no URL inside
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _equity_figure(result: BacktestResult) -> Figure:
    """Mark-to-market equity per bar and its drawdown from the running peak."""
    figure, (top, bottom) = _figure(2, 1, height=5.0, sharex=True, height_ratios=(3, 1))
    ts = result.equity.get_column("ts").dt.replace_time_zone(None).to_numpy()
    equity = result.equity.get_column("equity").to_numpy()
    drawdown = equity - np.maximum.accumulate(equity) if equity.size else equity
    top.plot(ts, equity, color=_BLUE, linewidth=1)
    top.set_ylabel("equity")
    top.grid(alpha=0.3)
    bottom.fill_between(ts, drawdown, 0, color=_RED, alpha=0.5, linewidth=0)
    bottom.set_ylabel("drawdown")
    bottom.grid(alpha=0.3)
    return figure


def _pnl_figure(result: BacktestResult) -> Figure | None:
    pnl = result.trades.get_column("pnl").to_numpy()
    if pnl.size == 0:
        return None
    figure, axes = _figure()
    bins = np.histogram_bin_edges(pnl, bins=min(60, max(10, pnl.size // 5)))
    axes.hist(pnl[pnl > 0], bins=bins, color=_GREEN, alpha=0.8, label="wins")
    axes.hist(pnl[pnl <= 0], bins=bins, color=_RED, alpha=0.8, label="losses and flat")
    axes.axvline(float(pnl.mean()), color="#1d232a", linestyle="--", linewidth=1, label="mean")
    axes.set_xlabel("P&L per trade")
    axes.set_ylabel("trades")
    axes.legend()
    axes.grid(alpha=0.3)
    return figure


def _time_of_day_figure(result: BacktestResult, tz: str) -> Figure | None:
    """Net P&L and trade count by the local hour of entry."""
    trades = result.trades
    if trades.height == 0:
        return None
    hourly = (
        trades.group_by(pl.col("entry_ts").dt.convert_time_zone(tz).dt.hour().alias("hour"))
        .agg(pl.col("pnl").sum(), pl.len().alias("trades"))
        .sort("hour")
    )
    hours, pnl = hourly.get_column("hour").to_numpy(), hourly.get_column("pnl").to_numpy()
    figure, axes = _figure()
    axes.bar(hours, pnl, color=np.where(pnl >= 0, _GREEN, _RED), width=0.8)
    for hour, value, count in zip(hours, pnl, hourly.get_column("trades"), strict=True):
        axes.annotate(f"{count}", (hour, value), ha="center", va="bottom", fontsize=8)
    axes.axhline(0, color=_GREY, linewidth=0.8)
    axes.set_xticks(range(24))
    axes.set_xlabel("hour of entry (numbers: trades)")
    axes.set_ylabel("net P&L")
    axes.grid(alpha=0.3, axis="y")
    return figure


def _heatmap_figure(sweep: pl.DataFrame, objective: str) -> Figure:
    figure, axes = _figure(1, len(HEATMAPS), height=3.8)
    for ax, (x, y) in zip(axes, HEATMAPS, strict=True):
        _heatmap(ax, sweep, x, y, objective)
    return figure


def _heatmap(ax: Axes, sweep: pl.DataFrame, x: str, y: str, objective: str) -> None:
    """The best finite `objective` for each (x, y) over the other axes."""
    best = sweep.filter(pl.col(objective).is_finite()).group_by(x, y).agg(pl.col(objective).max())
    xs, ys = sweep.get_column(x).unique().sort(), sweep.get_column(y).unique().sort()
    grid = np.full((ys.len(), xs.len()), np.nan)
    for row in best.iter_rows(named=True):
        grid[ys.index_of(row[y]), xs.index_of(row[x])] = row[objective]
    image = ax.imshow(grid, cmap="RdYlGn", aspect="auto", origin="lower")
    for (i, j), value in np.ndenumerate(grid):
        if math.isfinite(value):
            ax.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(xs.len()), [f"{v:g}" for v in xs.to_list()])
    ax.set_yticks(range(ys.len()), [f"{v:g}" for v in ys.to_list()])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.figure.colorbar(image, ax=ax, shrink=0.8)


def _folds_figure(wf: WalkForwardResult) -> Figure:
    """Top: each fold's in-sample and out-of-sample session ranges. Bottom: the objective."""
    figure, (timeline, scores) = _figure(2, 1, height=5.5)
    for f in wf.folds:
        for part, colour in ((f.fold.in_sample, _BLUE), (f.fold.out_of_sample, _ORANGE)):
            start = np.datetime64(part.first)
            width = np.datetime64(part.last) - start + np.timedelta64(1, "D")
            timeline.broken_barh([(start, width)], (f.fold.index - 0.4, 0.8), color=colour)
    timeline.set_yticks([f.fold.index for f in wf.folds])
    timeline.set_ylabel("fold")
    timeline.invert_yaxis()
    timeline.grid(alpha=0.3, axis="x")
    timeline.legend(handles=_legend(("in-sample", _BLUE), ("out-of-sample", _ORANGE)))
    index = np.array([f.fold.index for f in wf.folds])
    for offset, side, colour in ((-0.2, "in_sample", _BLUE), (0.2, "out_of_sample", _ORANGE)):
        values = [(getattr(f, side) or {}).get(wf.objective, math.nan) for f in wf.folds]
        scores.bar(index + offset, _finite(values), width=0.4, color=colour)
    scores.axhline(0, color=_GREY, linewidth=0.8)
    scores.set_xticks(index)
    scores.set_xlabel("fold")
    scores.set_ylabel(wf.objective)
    scores.grid(alpha=0.3, axis="y")
    return figure


def _legend(*items: tuple[str, str]) -> list[Patch]:
    return [Patch(color=colour, label=label) for label, colour in items]


def _finite(values: Iterable[float]) -> list[float]:
    """Bars cannot be infinite; an undefined value draws as no bar."""
    return [v if math.isfinite(v) else 0.0 for v in values]


def _oos_equity_figure(wf: WalkForwardResult) -> Figure:
    figure, axes = _figure()
    equity = wf.out_of_sample.equity
    axes.plot(
        equity.get_column("ts").dt.replace_time_zone(None).to_numpy(),
        equity.get_column("equity").to_numpy(),
        color=_ORANGE,
        linewidth=1,
    )
    for f in wf.folds[1:]:
        axes.axvline(np.datetime64(f.fold.out_of_sample.first), color=_GREY, linestyle=":")
    axes.set_ylabel("equity (folds joined)")
    axes.grid(alpha=0.3)
    return figure


# ---------------------------------------------------------------------------------------------
# The index of runs


def write_index(history: pl.DataFrame | None = None, root: Path | None = None) -> Path:
    """Rewrites `index.html` in the runs folder from the history (newest run first)."""
    root = root or runs_root()
    history = read_history() if history is None else history
    path = root / INDEX_FILE
    path.write_text(render_index(history, root), encoding="utf-8")
    return path


def render_index(history: pl.DataFrame, root: Path) -> str:
    """The list of runs with their out-of-sample quality and a trend plot."""
    rows = "".join(_index_row(row, root) for row in history.reverse().iter_rows(named=True))
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "Run", "Origin", "Symbol", "Sessions", "OOS trades", "OOS net P&L", "OOS Sharpe",
            "OOS PF", "OOS max DD", "Degradation", "Gate",
        )
    )  # fmt: skip
    trend = _trend_figure(history)
    body = (
        "<h1>Research runs</h1>"
        + _section(
            "trend",
            "Out-of-sample quality over time",
            _img(trend, "trend") if trend is not None else '<p class="muted">One run so far.</p>',
        )
        + _section("runs", f"{history.height} runs", f"<table><tr>{head}</tr>{rows}</table>")
    )
    return _page("Research runs", body)


def _index_row(row: dict[str, Any], root: Path) -> str:
    link = Path(os.path.relpath(row["report"], root)).as_posix()
    sessions = f"{row['first_session']} .. {row['last_session']}" if row["first_session"] else ""
    gate = (
        ""
        if row["gate_passed"] is None
        else (
            '<span class="ok">pass</span>' if row["gate_passed"] else '<span class="no">fail</span>'
        )
    )
    cells = [
        f'<td class="l"><a href="{_e(link)}">{_e(row["run_id"])}</a></td>',
        f'<td class="l">{_e(row["origin"])}</td>',
        f'<td class="l">{_e(row["symbol"])}</td>',
        f'<td class="l">{sessions}</td>',
        *(
            f"<td>{_num(row[key], fmt)}</td>"
            for key, fmt in (
                ("oos_trades", "{:,.0f}"),
                ("oos_net_pnl", "{:,.2f}"),
                ("oos_sharpe", "{:.2f}"),
                ("oos_profit_factor", "{:.2f}"),
                ("oos_max_drawdown_pct", "{:.1%}"),
                ("degradation", "{:.1%}"),
            )
        ),
        f'<td title="{_e(row["gate_reasons"] or "")}">{gate}</td>',
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _trend_figure(history: pl.DataFrame) -> Figure | None:
    """Out-of-sample Sharpe per run, green where the gate passed."""
    runs = history.filter(pl.col("oos_sharpe").is_not_null())
    if runs.height < 2:
        return None
    figure, axes = _figure(height=3.0)
    when = runs.get_column("created_at").dt.replace_time_zone(None).to_numpy()
    sharpe = runs.get_column("oos_sharpe").to_numpy()
    colours = [_GREEN if p else _RED for p in runs.get_column("gate_passed").to_list()]
    axes.plot(when, sharpe, color=_GREY, linewidth=1)
    axes.scatter(when, sharpe, c=colours, zorder=3)
    axes.set_ylabel("out-of-sample Sharpe")
    axes.grid(alpha=0.3)
    return figure
