"""The fake gateway's market: listed futures contracts and their bars.

All contracts of a product move together, as real futures do: one simulated path
(`scalper.simulate.simulate_bars`, the project's realistic MES model) is shared, and each
contract trades at its own carry premium above the nearest one (`BASIS_POINTS` per quarter), so a
roll shows the price jump that back-adjustment exists for. A contract stops trading at its last
trading time; whether it counts as *expired* (only visible with `includeExpired`) depends on the
gateway's clock, not on the market.

The continuous future (`CONTFUT`) is the front contract by the project's roll rule, unadjusted.
Bars are simulated once at `bar_seconds` and aggregated on request, so one market serves every
bar size that is a multiple of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import numpy as np
import polars as pl

from scalper.calendar import with_session_columns
from scalper.instruments import DEFAULT_ROLL_DAYS, Contract, front_contract, spec
from scalper.simulate import NEW_YORK, simulate_bars

BASIS_POINTS = 15.0
"""Carry premium of each later quarterly contract over the one before (index points)."""

LAST_TRADE_TIME = time(9, 30)
"""Equity-index futures stop trading at 09:30 New York time on their expiry day."""

LISTED_AHEAD_DAYS = 370
"""Contracts are listed this far beyond the market's last day (a year of quarterlies)."""

_NS = 1_000_000_000
_REGULAR_HOURS = (time(9, 30), time(16, 0))  # IB's liquid hours for CME equity index, New York


@dataclass(frozen=True)
class Listing:
    """One futures contract as the gateway lists it."""

    contract: Contract
    con_id: int
    basis: float

    @property
    def local_symbol(self) -> str:
        return self.contract.local_symbol

    @property
    def contract_month(self) -> str:
        """IB's `contractMonth`, YYYYMM."""
        return f"{self.contract.year}{self.contract.month:02d}"

    @property
    def last_trade_ns(self) -> int:
        """The moment trading ends (exclusive bound of the contract's bars)."""
        last = datetime.combine(self.contract.expiry, LAST_TRADE_TIME, tzinfo=NEW_YORK)
        return int(last.timestamp()) * _NS

    def matches_expiry(self, text: str) -> bool:
        """Whether IB's `lastTradeDateOrContractMonth` (YYYYMM or YYYYMMDD) names this contract."""
        return text in (self.contract_month, self.contract.last_trade_date)


@dataclass(frozen=True)
class Tape:
    """One contract's bars as arrays, in time order: what the clock-driven services replay.

    The order book and the real-time bars look up "the bars between two moments" on every tick
    of the gateway clock; a binary search over `ts` keeps that cheap for a day of 5-second bars.
    """

    bar_seconds: int
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def of(cls, bars: pl.DataFrame, bar_seconds: int) -> Tape:
        columns = ("ts", "open", "high", "low", "close", "volume")
        return cls(bar_seconds, *(bars.get_column(name).to_numpy() for name in columns))

    def starting(self, first_ns: int, last_ns: int) -> range:
        """Indexes of the bars starting in `[first_ns, last_ns]`."""
        lo = int(np.searchsorted(self.ts, first_ns, side="left"))
        hi = int(np.searchsorted(self.ts, last_ns, side="right"))
        return range(lo, hi)


@dataclass
class FakeMarket:
    """Simulated bars of the contracts of `symbol`, sessions `start` … `start + days - 1`."""

    start: date
    days: int
    symbol: str = "MES"
    bar_seconds: int = 60
    seed: int = 7
    start_price: float = 5000.0
    roll_days: int = DEFAULT_ROLL_DAYS
    listings: tuple[Listing, ...] = field(init=False)
    _path: pl.DataFrame = field(init=False, repr=False)
    _cache: dict[tuple[str, int], pl.DataFrame] = field(init=False, repr=False)
    _tapes: dict[tuple[str, int], Tape] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        product = spec(self.symbol)
        self._path = simulate_bars(
            self.start, self.days, seed=self.seed, bar_seconds=self.bar_seconds,
            symbol=self.symbol, start_price=self.start_price, tick_size=product.tick_size,
        ).drop("symbol")  # fmt: skip
        self.listings = tuple(
            Listing(c, con_id=_con_id(c), basis=BASIS_POINTS * i)
            for i, c in enumerate(_listed_contracts(self.symbol, self.start, self.last_day))
        )
        self._cache = {}
        self._tapes = {}

    @property
    def last_day(self) -> date:
        return self.start + timedelta(days=self.days - 1)

    def front(self, on: date) -> Listing:
        """The listing traded on session date `on` by the project's roll rule."""
        contract = front_contract(self.symbol, on, self.roll_days)
        for listing in self.listings:
            if listing.contract == contract:
                return listing
        raise LookupError(f"{contract.local_symbol} (front on {on}) is not listed in the market")

    def bars(self, listing: Listing, bar_seconds: int) -> pl.DataFrame:
        """All bars of one contract (`BAR_SCHEMA`), aggregated to `bar_seconds`."""
        key = (listing.local_symbol, bar_seconds)
        if key not in self._cache:
            own = self._path.filter(pl.col("ts") < listing.last_trade_ns).with_columns(
                pl.col("open", "high", "low", "close") + listing.basis
            )
            self._cache[key] = self._aggregate(own, bar_seconds)
        return self._cache[key]

    def tape(self, listing: Listing, bar_seconds: int | None = None) -> Tape:
        """`bars(listing, bar_seconds)` as a `Tape` (default: the simulated bar size)."""
        seconds = bar_seconds or self.bar_seconds
        key = (listing.local_symbol, seconds)
        if key not in self._tapes:
            self._tapes[key] = Tape.of(self.bars(listing, seconds), seconds)
        return self._tapes[key]

    def continuous_bars(self, bar_seconds: int) -> pl.DataFrame:
        """The front contract's bars by session date, stitched without adjustment (`CONTFUT`)."""
        pieces = []
        for listing in self.listings:
            sessions = with_session_columns(self.bars(listing, bar_seconds))
            fronts = sessions.get_column("session_date").unique().to_list()
            own = [d for d in fronts if self.front(d) == listing]
            pieces.append(sessions.filter(pl.col("session_date").is_in(own)))
        return pl.concat(pieces).sort("ts").drop("session_date", "local_time")

    def _aggregate(self, bars: pl.DataFrame, bar_seconds: int) -> pl.DataFrame:
        if bar_seconds % self.bar_seconds:
            raise ValueError(
                f"the fake market is simulated at {self.bar_seconds} s bars and cannot serve "
                f"{bar_seconds} s bars"
            )
        width = bar_seconds * _NS
        return (
            bars.group_by((pl.col("ts") // width * width).alias("ts"), maintain_order=True)
            .agg(
                pl.col("open").first(),
                pl.col("high").max(),
                pl.col("low").min(),
                pl.col("close").last(),
                pl.col("volume").sum(),
            )
            .sort("ts")
        )


def in_regular_hours(ts_ns: int) -> bool:
    """Whether a bar starting at `ts_ns` is inside IB's regular trading hours (`useRTH=1`)."""
    opens, closes = _REGULAR_HOURS
    local = datetime.fromtimestamp(ts_ns / _NS, NEW_YORK).time()
    return opens <= local < closes


def regular_hours(bars: pl.DataFrame) -> pl.DataFrame:
    """The bars starting inside IB's regular trading hours (`useRTH=1`)."""
    local = with_session_columns(bars).get_column("local_time")
    opens, closes = _REGULAR_HOURS
    return bars.filter((local >= opens) & (local < closes))


def _listed_contracts(symbol: str, first_day: date, last_day: date) -> list[Contract]:
    """Every contract trading on some day of the market, and those listed a year beyond it."""
    contracts = [front_contract(symbol, first_day - timedelta(days=1), 0)]
    horizon = last_day + timedelta(days=LISTED_AHEAD_DAYS)
    while contracts[-1].expiry <= horizon:
        contracts.append(front_contract(symbol, contracts[-1].expiry, 0))
    return contracts


def _con_id(contract: Contract) -> int:
    """A stable, unique IB-like contract id."""
    return 600_000_000 + contract.year * 100 + contract.month
