"""Prices shown to a trader are plain numbers: never "6E+3"."""
from __future__ import annotations

from decimal import Decimal

import pytest

from brokers.paper import apply_fill as apply_fill_to_position  # what the paper broker keeps positions with
from domain.orders import plain_decimal
from oms.models import apply_fill, parse_occ


@pytest.mark.parametrize(("value", "shown"), [
    ("6000.00", "6000"), ("6000", "6000"), ("2309.50", "2309.5"), ("0.0500", "0.05"), ("120", "120"),
    ("0", "0"), ("-1500.0", "-1500"), ("1E+3", "1000"),
])
def test_plain_decimal_drops_trailing_zeros_without_exponent(value: str, shown: str) -> None:
    assert str(plain_decimal(Decimal(value))) == shown
    assert plain_decimal(Decimal(value)) == Decimal(value)  # the same number


def test_a_position_opened_at_a_round_price_shows_it_plainly() -> None:
    _, book_avg, _ = apply_fill(0, Decimal(0), 1, Decimal("6000.00"), Decimal(5))
    _, paper_avg, _ = apply_fill_to_position(0, Decimal(0), 1, Decimal("6000.00"), Decimal(5))
    assert str(book_avg) == "6000" and str(paper_avg) == "6000"
    _, averaged, _ = apply_fill(1, Decimal("5999"), 1, Decimal("6001"), Decimal(5))
    assert str(averaged) == "6000"


def test_an_occ_strike_of_a_round_level_is_plain() -> None:
    contract = parse_occ("SPXW  261127C06000000")
    assert contract is not None and str(contract.strike) == "6000"
