"""Symbology: venue codes per date, the front-month roll across a roll date, and raw codes back to
catalog symbols (used by the Databento and replay feeds)."""
from __future__ import annotations

from datetime import date

import pytest

from config.symbology import (catalog_symbol_for_raw, front_month, roll_date, third_friday, venue_symbols)


def test_roll_date_is_second_thursday_eight_days_before_expiry() -> None:
    assert third_friday(2025, 12) == date(2025, 12, 19)
    assert roll_date(2025, 12) == date(2025, 12, 11)
    assert roll_date(2024, 3).weekday() == 3


def test_front_month_across_the_december_2025_roll() -> None:
    assert front_month("MES", date(2025, 12, 10)).databento == "MESZ5"  # day before the roll
    assert front_month("MES", date(2025, 12, 11)).databento == "MESH6"  # roll day: next contract
    assert front_month("MES", date(2025, 12, 19)).databento == "MESH6"  # expiry day of Z5
    assert front_month("ES", date(2025, 12, 31)).databento == "ESH6"
    assert front_month("NQ", date(2026, 3, 11)).databento == "NQH6"
    assert front_month("NQ", date(2026, 3, 12)).databento == "NQM6"


def test_venue_codes_on_both_sides_of_the_roll() -> None:
    before, after = venue_symbols("/MES", date(2025, 12, 10)), venue_symbols("MES", date(2025, 12, 11))
    assert (before.databento, before.tastytrade, before.schwab) == ("MESZ5", "/MESZ5", "/MESZ25")
    assert (after.databento, after.tastytrade, after.schwab) == ("MESH6", "/MESH6", "/MESH26")
    assert before.databento_dataset == "GLBX.MDP3" and before.databento_continuous == "MES.c.0"
    nvda = venue_symbols("NVDA", date(2025, 12, 10))
    assert (nvda.databento_dataset, nvda.databento, nvda.schwab) == ("EQUS.MINI", "NVDA", "NVDA")
    spx = venue_symbols("SPX", date(2025, 12, 10))
    assert spx.databento is None and spx.schwab == "$SPX"


@pytest.mark.parametrize("raw,expected", [
    ("ESH4", "/ES"), ("ESZ4", "/ES"), ("MESZ5", "/MES"), ("MESZ25", "/MES"), ("/MESZ5", "/MES"), ("M2KZ4", "/M2K"),
    ("RTYH6", "/RTY"), ("NQU4", "/NQ"), ("ES.c.0", "/ES"), ("MES.v.0", "/MES"), ("NVDA", "NVDA"), ("MSTR", "MSTR"),
    ("$SPX", "SPX"), ("ESZ4-ESH5", None), ("AAPL", None), ("ZNZ4", None), ("AAPL  250221C00250000", None),
])
def test_raw_codes_map_back_to_catalog(raw: str, expected: str | None) -> None:
    assert catalog_symbol_for_raw(raw) == expected


def test_round_trip_for_every_future_across_roll() -> None:
    for root in ("ES", "MES", "NQ", "MNQ", "RTY", "M2K"):
        for day in (date(2025, 12, 10), date(2025, 12, 11)):
            code = venue_symbols(root, day)
            assert catalog_symbol_for_raw(code.databento or "") == "/" + root
            assert catalog_symbol_for_raw(code.tastytrade) == "/" + root
            assert catalog_symbol_for_raw(code.schwab) == "/" + root
