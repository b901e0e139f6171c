"""Where raw bars come from (`data.source`): the simulator, a vendor file, or IBKR.

`fetch_bars` is what the `raw_bars` asset stores (through its `BarSource` resource): bars of one
product over whole UTC days from the configured source. `simulate_market` is the simulator with
the configuration's settings, which `scalper data simulate` uses too.

* `simulator` (the default): ONE fixed window of sessions (`simulation_start`, `simulation_days`).
  The simulator is deterministic for its whole window, not per day: re-simulating day by day would
  restart the price at `start_price` every day. So every day is a slice of the same simulated
  market, and a day outside the window is an error rather than invented data.
* `file`: `data.path` (a file or a folder) in `data.format`, imported by `scalper.importers` and
  resampled to `data.bar_seconds`. Per-contract layouts (`lean_zip`) keep a `contract` column,
  which the continuous series needs.
* `ibkr`: downloaded from IB Gateway/TWS (`broker` settings) by `scalper.ibkr.history`. For each
  UTC day the contracts that are front in either session touching that day (the day's own session
  and the one opening at 18:00 New York) are downloaded whole, each under its own local symbol. On
  the day a roll's session opens, that is both contracts, so the back-adjustment finds a bar time
  at which both traded (SPEC §2).
"""

from __future__ import annotations

import logging
from datetime import date, time, timedelta
from functools import lru_cache
from pathlib import Path

import polars as pl

from scalper.bars import BarFileSpec
from scalper.calendar import exchange_schedule, refuse_other_market
from scalper.config import Config
from scalper.errors import ScalperError
from scalper.importers import import_file
from scalper.instruments import front_contract, spec
from scalper.resample import resample
from scalper.simulate import simulate_bars
from scalper.store import utc_day


def fetch_bars(
    cfg: Config,
    symbol: str,
    first: date,
    last: date,
    *,
    simulation_start: date,
    simulation_days: int,
    ibkr_client_id: int | None = None,
) -> tuple[pl.DataFrame, str]:
    """Every bar of `symbol` whose `ts` falls on the UTC days `first` … `last`, from the source
    `cfg.data` names, and a line saying where they came from.

    The frame holds `BAR_SCHEMA` columns and `symbol`, plus `contract` when the source delivers
    several contracts (one row per contract and bar time). The simulator covers the window of
    sessions `simulation_start` … `+ simulation_days`; `ibkr_client_id` overrides
    the downloads' own client id (`broker.client_id + 3`).
    """
    source = cfg.data.source
    if source == "simulator":
        bars, origin = _simulated(cfg, symbol, first, last, simulation_start, simulation_days)
    elif source == "file":
        bars, origin = _imported(cfg, symbol)
    else:
        bars, origin = _download_contracts(cfg, symbol, first, last, ibkr_client_id)
    return bars.filter(utc_day().is_between(first, last)), origin


def simulated_days(start: date, days: int) -> tuple[date, date]:
    """The UTC days a simulation of `days` sessions from `start` covers: its first session opens
    at 18:00 New York on the day before `start`."""
    return start - timedelta(days=1), start + timedelta(days=days - 1)


def simulate_market(
    cfg: Config, symbol: str, start: date, days: int, *, seed: int | None = None
) -> pl.DataFrame:
    """The simulated market of `symbol` (its tick grid) over the sessions `start` … `start + days
    - 1`, with the configuration's bar size, start price and seed (`seed` overrides it)."""
    data = cfg.data
    seed = data.seed if seed is None else seed
    if symbol != cfg.instrument.symbol:  # the configuration's own: its warning was given at load
        refuse_other_market(cfg.session.calendar, symbol)
    calendar = (cfg.session.calendar, tuple(cfg.session.early_closes.items()))
    return _simulated_market(
        symbol, start, days, seed, data.bar_seconds, data.start_price, calendar
    )


@lru_cache(maxsize=2)
def _simulated_market(
    symbol: str,
    start: date,
    days: int,
    seed: int,
    bar_seconds: int,
    start_price: float,
    calendar: tuple[str | None, tuple[tuple[date, time], ...]],
) -> pl.DataFrame:
    """Once per process and window (a year of minute bars takes ~0.4 s; each asset run of a
    backfill would otherwise simulate the whole window again). `calendar` is the configuration's
    exchange calendar and early closes: the market has no bars on its holidays, none after its
    early closes."""
    name, early_closes = calendar
    end = start + timedelta(days=days - 1)
    return simulate_bars(
        start, days, seed=seed, bar_seconds=bar_seconds, symbol=symbol,
        start_price=start_price, tick_size=spec(symbol).tick_size,
        schedule=exchange_schedule(name, dict(early_closes), start, end),
    )  # fmt: skip


def _simulated(
    cfg: Config, symbol: str, first: date, last: date, start: date, days: int
) -> tuple[pl.DataFrame, str]:
    covered = simulated_days(start, days)
    if first < covered[0] or last > covered[1]:
        raise ScalperError(
            f"the simulated market covers the UTC days {covered[0]} .. {covered[1]} "
            f"(simulation_start/simulation_days of the bar source); {first} .. {last} is outside it"
        )
    origin = f"simulator (seed {cfg.data.seed}, sessions from {start})"
    return simulate_market(cfg, symbol, start, days), origin


def _imported(cfg: Config, symbol: str) -> tuple[pl.DataFrame, str]:
    path = Path(cfg.data.path or "")
    file_spec = BarFileSpec.configured(cfg.data)  # data.ts_column, data.ts_unit, data.stamped
    bars = import_file(path, cfg.data.format, symbol, spec=file_spec)
    bars = resample(bars, cfg.data.bar_seconds)
    return bars, f"file {path} ({cfg.data.format})"


def _download_contracts(
    cfg: Config, symbol: str, first: date, last: date, client_id: int | None
) -> tuple[pl.DataFrame, str]:
    from scalper.ibkr.history import download_history  # ib_async only when downloading

    # ib_async logs every IB error itself (a "no data" weekend, say); the download interprets
    # each one and raises what matters, so its log would only repeat it as noise.
    logging.getLogger("ib_async").setLevel(logging.CRITICAL)
    roll_days = cfg.instrument.roll_days_before_expiry
    contracts = contract_days(symbol, first, last, roll_days)
    options = {
        "bar_seconds": cfg.data.bar_seconds, "roll_days": roll_days,
        "client_id": client_id, "progress": False,
    }  # fmt: skip
    frames = [
        download_history(cfg.broker, symbol, start, end, contract=contract, **options)
        for contract, (start, end) in contracts.items()
    ]
    broker = cfg.broker
    return pl.concat(frames), f"IBKR {broker.host}:{broker.port} ({', '.join(contracts)})"


def contract_days(
    symbol: str, first: date, last: date, roll_days: int
) -> dict[str, tuple[date, date]]:
    """For each contract to download, the first and last UTC day it is needed on.

    UTC day `d` holds the end of session `d` and the start of session `d + 1` (Globex opens at
    18:00 New York, before UTC midnight), so a day needs the front contracts of both sessions.
    Fronts only move forward, so each contract's days are one contiguous span.
    """
    spans: dict[str, tuple[date, date]] = {}
    day = first
    while day <= last:
        for session in (day, day + timedelta(days=1)):
            name = front_contract(symbol, session, roll_days).local_symbol
            start = spans.get(name, (day, day))[0]
            spans[name] = (start, day)
        day += timedelta(days=1)
    return spans
