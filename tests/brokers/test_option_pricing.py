"""Synthetic option quotes: CBOE ticks around the theoretical value, computed by hand."""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from brokers.option_pricing import black_scholes, quote_for, synthetic_chain, years_to_expiry
from domain.orders import OptionRight


@pytest.mark.parametrize(("theo", "bid", "ask"), [
    (2.97, "2.95", "3.00"),   # below $3: 0.05 ticks, floor and ceiling
    (3.0, "3.00", "3.10"),    # at $3: 0.10 ticks; on a tick, still a one-tick market
    (1.05, "1.05", "1.10"),
    (12.34, "12.30", "12.40"),
    (0.01, "0.00", "0.05"),   # worth less than a tick: no bid
    (0.0, "0.00", "0.05"),
    (-0.5, "0.00", "0.05"),   # never a negative value
    (2.9999996, "3.00", "3.10"),  # rounded to 6 decimals first: 3.000000
])
def test_quotes_sit_on_cboe_ticks_around_the_value(theo: float, bid: str, ask: str) -> None:
    assert tuple(str(x) for x in quote_for(theo)) == (bid, ask)


def test_a_chain_is_priced_at_one_time_to_expiry_for_every_contract() -> None:
    now = datetime(2025, 6, 2, 15, 0, tzinfo=timezone.utc)  # 11:00 New York, 5 h to the 16:00 settlement
    chain = synthetic_chain(6003.0, date(2025, 6, 2), now, iv=0.15)
    assert len(chain) == 82 and {c.strike for c in chain} == {Decimal(5905 + 5 * i) for i in range(41)}
    years = years_to_expiry(now, date(2025, 6, 2))
    assert years == pytest.approx(5 / (365 * 24))
    for contract in chain:
        theo = black_scholes(6003.0, float(contract.strike), years, 0.15, contract.right)
        assert (contract.bid, contract.ask) == quote_for(theo)
    call = next(c for c in chain if c.strike == 6005 and c.right is OptionRight.CALL)
    assert Decimal(0) < call.bid < call.ask  # type: ignore[operator]
