"""Contract specifications, quarterly expiries and the roll rule (SPEC §2).

One table holds every contract fact the system relies on. The tick size and point value turn price
moves into dollars, so a wrong entry corrupts every P&L: the configuration is checked against this
table, and nothing else in the code base may hard-code these numbers.

The roll rule decides which contract is traded ("front") on a given day. Live trading and the
continuous series both call `front_contract`, so a backtest rolls exactly when live trading would.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from types import MappingProxyType

from scalper.errors import ScalperError

MONTH_CODES = "FGHJKMNQUVXZ"
"""Futures month codes, January (F) to December (Z): `MONTH_CODES[month - 1]`."""

DEFAULT_ROLL_DAYS = 8
"""Calendar days before expiry on which the next contract becomes front (SPEC §2)."""

_FRIDAY = 4


@dataclass(frozen=True)
class InstrumentSpec:
    """The exchange facts of one futures product.

    `months` lists the listed contract months as month codes (e.g. "HMUZ" for quarterly).
    """

    symbol: str
    exchange: str
    currency: str
    tick_size: float
    point_value: float
    months: str

    @property
    def tick_value(self) -> float:
        """Dollars gained or lost per contract when the price moves one tick."""
        return self.tick_size * self.point_value

    @property
    def month_numbers(self) -> tuple[int, ...]:
        """The listed contract months as numbers 1..12, ascending."""
        return tuple(sorted(MONTH_CODES.index(code) + 1 for code in self.months))


def _table(*specs: InstrumentSpec) -> Mapping[str, InstrumentSpec]:
    return MappingProxyType({s.symbol: s for s in specs})


INSTRUMENTS: Mapping[str, InstrumentSpec] = _table(
    InstrumentSpec("MES", "CME", "USD", 0.25, 5.0, "HMUZ"),
    InstrumentSpec("ES", "CME", "USD", 0.25, 50.0, "HMUZ"),
    InstrumentSpec("MNQ", "CME", "USD", 0.25, 2.0, "HMUZ"),
    InstrumentSpec("NQ", "CME", "USD", 0.25, 20.0, "HMUZ"),
    # Euro FX, because real test data contains it. Its true last trading day (two business days
    # before the third Wednesday) lies within 4 days of the third Friday used here, so a roll
    # 8 days before the modelled expiry still happens before the real one.
    InstrumentSpec("6E", "CME", "USD", 0.00005, 125_000.0, "HMUZ"),
    InstrumentSpec("M6E", "CME", "USD", 0.0001, 12_500.0, "HMUZ"),
)
"""Every supported product, by symbol."""


def canonical_symbol(symbol: str) -> str:
    """`symbol` as the instruments table spells it (`mes` -> `MES`), else unchanged.

    Symbols name store partitions, Kafka topics and ledger rows as written, so a command given
    `mes` must look for `MES`, not report that nothing is stored.
    """
    upper = symbol.strip().upper()
    return upper if upper in INSTRUMENTS else symbol


def spec(symbol: str) -> InstrumentSpec:
    """The specification of `symbol`; an unknown symbol is a user error listing the known ones."""
    try:
        return INSTRUMENTS[symbol]
    except KeyError:
        known = ", ".join(sorted(INSTRUMENTS))
        raise ScalperError(f"unknown instrument {symbol!r} (known: {known})") from None


def expiry(year: int, month: int) -> date:
    """Expiry of a quarterly equity-index contract: the third Friday of the contract month."""
    first_weekday = calendar.weekday(year, month, 1)
    first_friday = 1 + (_FRIDAY - first_weekday) % 7
    return date(year, month, first_friday + 14)


@dataclass(frozen=True, order=True)
class Contract:
    """One listed contract, e.g. MES June 2024; ordered by symbol, then delivery month."""

    symbol: str
    year: int
    month: int

    def __post_init__(self) -> None:
        # Validating here means every Contract in the system is one the exchange actually lists.
        product = spec(self.symbol)
        if self.month not in product.month_numbers:
            raise ScalperError(
                f"{self.symbol} has no contract in month {self.month} "
                f"(listed months: {product.months})"
            )

    @property
    def expiry(self) -> date:
        """Last trading day (third Friday of the contract month)."""
        return expiry(self.year, self.month)

    @property
    def local_symbol(self) -> str:
        """IB's local symbol: symbol, month code, last digit of the year (e.g. "MESM4")."""
        return f"{self.symbol}{MONTH_CODES[self.month - 1]}{self.year % 10}"

    @property
    def last_trade_date(self) -> str:
        """Expiry as IB's `lastTradeDateOrContractMonth` string, YYYYMMDD."""
        return self.expiry.strftime("%Y%m%d")

    def roll_date(self, roll_days_before_expiry: int = DEFAULT_ROLL_DAYS) -> date:
        """The first day on which the next contract is front instead of this one."""
        return self.expiry - timedelta(days=roll_days_before_expiry)


def _contracts_from(symbol: str, year: int, month: int) -> Iterator[Contract]:
    """Listed contracts of `symbol` in delivery order, starting with the month `year`-`month`."""
    months = spec(symbol).month_numbers
    while True:
        for m in months:
            if m >= month:
                yield Contract(symbol, year, m)
        year, month = year + 1, 1


def front_contract(
    symbol: str, on: date, roll_days_before_expiry: int = DEFAULT_ROLL_DAYS
) -> Contract:
    """The contract traded on `on`: the nearest one whose roll date is still ahead.

    On the roll date itself the next contract is already front, so the position is never
    carried into the expiry week's thinning liquidity.
    """
    return next(
        c
        for c in _contracts_from(symbol, on.year, on.month)
        if c.roll_date(roll_days_before_expiry) > on
    )


def roll_dates(
    symbol: str, start: date, end: date, roll_days_before_expiry: int = DEFAULT_ROLL_DAYS
) -> list[tuple[date, Contract, Contract]]:
    """Every roll in `[start, end]` as (roll date, contract rolled from, contract rolled to)."""
    rolls: list[tuple[date, Contract, Contract]] = []
    current = front_contract(symbol, start - timedelta(days=1), roll_days_before_expiry)
    while (when := current.roll_date(roll_days_before_expiry)) <= end:
        following = front_contract(symbol, when, roll_days_before_expiry)
        rolls.append((when, current, following))
        current = following
    return rolls
