"""Contract specs, third-Friday expiries and the roll rule (SPEC §2)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalper.errors import ScalperError
from scalper.instruments import (
    INSTRUMENTS,
    MONTH_CODES,
    Contract,
    expiry,
    front_contract,
    roll_dates,
    spec,
)

DAYS = st.dates(min_value=date(2000, 1, 1), max_value=date(2060, 12, 31))


@pytest.mark.parametrize(
    ("symbol", "tick_size", "point_value", "tick_value"),
    [
        ("MES", 0.25, 5.0, 1.25),
        ("ES", 0.25, 50.0, 12.5),
        ("MNQ", 0.25, 2.0, 0.5),
        ("NQ", 0.25, 20.0, 5.0),
        ("6E", 0.00005, 125_000.0, 6.25),
        ("M6E", 0.0001, 12_500.0, 1.25),
    ],
)
def test_contract_specs(
    symbol: str, tick_size: float, point_value: float, tick_value: float
) -> None:
    product = spec(symbol)
    assert (product.tick_size, product.point_value) == (tick_size, point_value)
    assert product.tick_value == pytest.approx(tick_value)
    assert (product.exchange, product.currency, product.months) == ("CME", "USD", "HMUZ")
    assert product.month_numbers == (3, 6, 9, 12)


def test_unknown_symbol_lists_the_known_ones() -> None:
    with pytest.raises(ScalperError, match=r"unknown instrument 'XYZ' \(known: .*MES.*\)"):
        spec("XYZ")


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        INSTRUMENTS["FOO"] = INSTRUMENTS["MES"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("year", "month", "third_friday"),
    [
        (2024, 3, date(2024, 3, 15)),
        (2024, 6, date(2024, 6, 21)),
        (2024, 9, date(2024, 9, 20)),
        (2024, 12, date(2024, 12, 20)),
        (2023, 12, date(2023, 12, 15)),
        (2025, 3, date(2025, 3, 21)),
        (2026, 5, date(2026, 5, 15)),  # month starting on a Friday
        (2020, 2, date(2020, 2, 21)),  # month starting on a Saturday
    ],
)
def test_expiry_is_the_third_friday(year: int, month: int, third_friday: date) -> None:
    assert expiry(year, month) == third_friday


@given(st.integers(1990, 2100), st.integers(1, 12))
def test_expiry_is_always_a_friday_between_the_15th_and_21st(year: int, month: int) -> None:
    day = expiry(year, month)
    assert day.weekday() == 4
    assert 15 <= day.day <= 21
    assert (day.year, day.month) == (year, month)


def test_contract_names_as_ib_writes_them() -> None:
    june = Contract("MES", 2024, 6)
    assert june.local_symbol == "MESM4"
    assert june.last_trade_date == "20240621"
    assert june.expiry == date(2024, 6, 21)
    assert Contract("ES", 2025, 12).local_symbol == "ESZ5"
    assert Contract("6E", 2024, 3).local_symbol == "6EH4"


def test_month_codes() -> None:
    assert MONTH_CODES[2] + MONTH_CODES[5] + MONTH_CODES[8] + MONTH_CODES[11] == "HMUZ"
    assert len(MONTH_CODES) == 12


def test_contract_in_an_unlisted_month_is_refused() -> None:
    with pytest.raises(ScalperError, match="no contract in month 1"):
        Contract("MES", 2024, 1)


def test_contracts_order_by_delivery() -> None:
    assert sorted([Contract("MES", 2025, 3), Contract("MES", 2024, 12)])[0].year == 2024


@pytest.mark.parametrize(
    ("on", "local_symbol"),
    [
        (date(2024, 1, 2), "MESH4"),
        (date(2024, 3, 6), "MESH4"),  # day before the roll
        (date(2024, 3, 7), "MESM4"),  # roll date: 2024-03-15 minus 8 days, next is front
        (date(2024, 6, 12), "MESM4"),
        (date(2024, 6, 13), "MESU4"),
        (date(2024, 6, 21), "MESU4"),  # June expiry day itself
        (date(2024, 12, 11), "MESZ4"),
        (date(2024, 12, 12), "MESH5"),  # rolls across the year end
        (date(2024, 12, 31), "MESH5"),
    ],
)
def test_front_contract_around_roll_dates(on: date, local_symbol: str) -> None:
    assert front_contract("MES", on).local_symbol == local_symbol


def test_roll_days_are_configurable() -> None:
    assert front_contract("MES", date(2024, 6, 20), roll_days_before_expiry=0).local_symbol == (
        "MESM4"
    )
    assert front_contract("MES", date(2024, 6, 21), roll_days_before_expiry=0).local_symbol == (
        "MESU4"
    )
    assert front_contract("ES", date(2024, 6, 1), roll_days_before_expiry=30).local_symbol == "ESU4"


def test_roll_dates_of_2024() -> None:
    rolls = roll_dates("MES", date(2024, 1, 1), date(2024, 12, 31))
    assert [(when, a.local_symbol, b.local_symbol) for when, a, b in rolls] == [
        (date(2024, 3, 7), "MESH4", "MESM4"),
        (date(2024, 6, 13), "MESM4", "MESU4"),
        (date(2024, 9, 12), "MESU4", "MESZ4"),
        (date(2024, 12, 12), "MESZ4", "MESH5"),
    ]


def test_roll_dates_include_both_ends() -> None:
    rolls = roll_dates("MES", date(2024, 3, 7), date(2024, 6, 13))
    assert [when for when, _, _ in rolls] == [date(2024, 3, 7), date(2024, 6, 13)]
    assert roll_dates("MES", date(2024, 3, 8), date(2024, 6, 12)) == []


@given(DAYS, st.integers(0, 30))
def test_front_contract_never_expires_before_the_day(on: date, roll_days: int) -> None:
    front = front_contract("MES", on, roll_days)
    assert front.roll_date(roll_days) > on
    # Consecutive quarterly third Fridays are 13 or 14 weeks apart.
    assert front.expiry - on <= timedelta(weeks=14, days=roll_days)


@given(DAYS, st.integers(1, 400), st.integers(0, 30))
def test_front_contract_agrees_with_roll_dates(start: date, span: int, roll_days: int) -> None:
    end = start + timedelta(days=span)
    front = front_contract("MES", start - timedelta(days=1), roll_days)
    for when, rolled_from, rolled_to in roll_dates("MES", start, end, roll_days):
        assert rolled_from == front
        assert front_contract("MES", when - timedelta(days=1), roll_days) == rolled_from
        assert front_contract("MES", when, roll_days) == rolled_to
        front = rolled_to
    assert front_contract("MES", end, roll_days) == front
