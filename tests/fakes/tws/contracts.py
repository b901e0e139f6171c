"""Contract lookup: `reqContractDetails`, and the resolution every other request relies on.

IB resolves a contract from whatever fields the client filled in: a `conId` alone, a local symbol
(`MESM4`), or symbol + `lastTradeDateOrContractMonth` (`202406` or `20240621`). Expired contracts
are only found when the request sets `includeExpired`; this is the real gateway's behaviour and
the reason a downloader must set the flag again on a contract it qualified (ib_async's
`qualifyContracts` copies the details' contract, whose flag is off). A continuous future
(`CONTFUT`) resolves to the current front contract and is reported with that contract's id,
local symbol and expiry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from scalper.instruments import spec
from tests.fakes.tws.market import FakeMarket, Listing
from tests.fakes.tws.protocol import ContractFields, In, Out, Reader
from tests.fakes.tws.session import Handler, Session

NO_SECURITY_DEFINITION = (200, "No security definition has been found for the request")

_NS = 1_000_000_000


@dataclass(frozen=True)
class Resolved:
    """A contract the gateway knows: a listed future, or the continuous future (its front)."""

    listing: Listing
    continuous: bool

    @property
    def sec_type(self) -> str:
        return "CONTFUT" if self.continuous else "FUT"


class ContractBook:
    """Finds listed contracts as IB does, given the gateway's clock (which decides expiry)."""

    def __init__(self, market: FakeMarket, clock: Callable[[], float]) -> None:
        self.market = market
        self.clock = clock

    def resolve(self, wanted: ContractFields, include_expired: bool) -> list[Resolved]:
        """Every contract matching the request's fields (none, one, or several if ambiguous)."""
        if not self._same_product(wanted):
            return []
        if wanted.sec_type == "CONTFUT":
            today = datetime.fromtimestamp(self.clock(), UTC).date()
            return [Resolved(self.market.front(today), continuous=True)]
        if wanted.sec_type not in ("FUT", ""):
            return []
        now_ns = int(self.clock() * _NS)
        return [
            Resolved(listing, continuous=False)
            for listing in self.market.listings
            if _matches(listing, wanted) and (include_expired or listing.last_trade_ns > now_ns)
        ]

    def _same_product(self, wanted: ContractFields) -> bool:
        product = spec(self.market.symbol)
        checks = (
            (wanted.symbol, self.market.symbol),
            (wanted.exchange, product.exchange),
            (wanted.currency, product.currency),
            (wanted.multiplier, _number(product.point_value)),
        )
        return all(given in ("", expected) for given, expected in checks)

    def listing(self, wanted: ContractFields) -> Listing | None:
        """The one tradable contract a request names (None when unknown or ambiguous)."""
        found = self.resolve(wanted, include_expired=False)
        return found[0].listing if len(found) == 1 and not found[0].continuous else None


class ContractService:
    """Answers `reqContractDetails`."""

    def __init__(self, book: ContractBook) -> None:
        self.book = book

    def handlers(self) -> Mapping[int, Handler]:
        return {In.REQ_CONTRACT_DETAILS: self.contract_details}

    def contract_details(self, session: Session, request: Reader) -> str:
        request.skip()  # version
        req_id = request.int()
        wanted = request.contract()
        found = self.book.resolve(wanted, include_expired=request.bool())
        if not found:
            return session.error(req_id, *NO_SECURITY_DEFINITION)
        for contract in found:
            session.send(Out.CONTRACT_DATA, req_id, *_details_fields(contract))
        session.send(Out.CONTRACT_DATA_END, 1, req_id)
        return f"{len(found)} contracts"


def _matches(listing: Listing, wanted: ContractFields) -> bool:
    return (
        wanted.con_id in (0, listing.con_id)
        and wanted.local_symbol in ("", listing.local_symbol)
        and wanted.trading_class in ("", listing.contract.symbol)
        and (
            not wanted.last_trade_date_or_contract_month
            or listing.matches_expiry(wanted.last_trade_date_or_contract_month)
        )
    )


def contract_fields(listing: Listing) -> list[object]:
    """A listed future as order, execution and position messages carry it (11 fields: conId,
    symbol, secType, expiry, strike, right, multiplier, exchange, currency, local symbol, class)."""
    contract = listing.contract
    product = spec(contract.symbol)
    return [
        listing.con_id, contract.symbol, "FUT", contract.last_trade_date, 0, "",
        _number(product.point_value), product.exchange, product.currency, listing.local_symbol,
        contract.symbol,
    ]  # fmt: skip


def _details_fields(resolved: Resolved) -> list[object]:
    """The `contractData` fields after the request id, in server-version-178 order."""
    listing = resolved.listing
    contract = listing.contract
    product = spec(contract.symbol)
    return [
        contract.symbol, resolved.sec_type, contract.last_trade_date, 0, "",
        product.exchange, product.currency, listing.local_symbol,
        contract.symbol, contract.symbol, listing.con_id, _number(product.tick_size),
        _number(product.point_value), "ACTIVETIM,LMT,MKT,STP,STPLMT", product.exchange, 1, 0,
        f"{contract.symbol} futures {listing.contract_month}", "", listing.contract_month,
        "", "", "", "US/Central", "", "", "", "", 0,  # hours, ev rule/multiplier, no sec ids
        "", contract.symbol, "IND", "", contract.last_trade_date, "",
        1, 1, 1,  # min size, size increment, suggested size increment
    ]  # fmt: skip


def _number(value: float) -> str:
    return f"{value:g}"
