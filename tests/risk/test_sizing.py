"""Risk-based sizing computed by hand."""
from __future__ import annotations

from decimal import Decimal

import pytest

from risk.engine import RiskEngine
from risk.sizing import SizingError, risk_based_quantity, size_order


def test_risk_based_by_hand() -> None:
    # /MES: $500 risk, 10-point stop, $5/point -> 500 / 50 = 10 contracts.
    assert risk_based_quantity(Decimal(500), Decimal(10), Decimal(5)) == 10
    # /ES: $500 risk, 7-point stop, $50/point -> 500 / 350 = 1.43 -> 1 (rounded down).
    assert risk_based_quantity(Decimal(500), Decimal(7), Decimal(50)) == 1
    # /ES: $300 risk, 7-point stop -> 0.86 -> 0: too little budget for one contract.
    assert risk_based_quantity(Decimal(300), Decimal(7), Decimal(50)) == 0
    # NVDA: $250 risk, $1.30 stop, $1/share -> 192.3 -> 192 shares, capped at 150.
    assert risk_based_quantity(Decimal(250), Decimal("1.30"), Decimal(1), max_position=150) == 150
    assert risk_based_quantity(Decimal(250), Decimal("1.30"), Decimal(1)) == 192
    with pytest.raises(SizingError):
        risk_based_quantity(Decimal(100), Decimal(0), Decimal(5))


def test_size_order_modes() -> None:
    assert size_order(3, symbol="/MES").quantity == 3
    assert size_order(3, symbol="/MES", max_position=2).quantity == 2
    # Catalog point value used: /MES $5 -> floor(400 / (12.5 x 5)) = floor(6.4) = 6.
    r = size_order(3, symbol="/MES", mode="risk", risk_amount=Decimal(400), stop_distance_points=12.5)
    assert (r.quantity, r.mode) == (6, "risk")
    # SPX options x100: $600 risk, 2.5-point premium stop -> 600/250 = 2.4 -> 2.
    assert size_order(1, symbol="SPX", mode="risk", risk_amount=Decimal(600), stop_distance_points=2.5).quantity == 2
    # No stop distance: fall back to the ticker quantity and say so.
    fallback = size_order(3, symbol="/MES", mode="risk", risk_amount=Decimal(400), stop_distance_points=None)
    assert fallback.quantity == 3 and "no stop" in fallback.detail
    # A broker quantity of 0 means "not at this broker" even in risk mode.
    assert size_order(0, symbol="/MES", mode="risk", risk_amount=Decimal(400), stop_distance_points=5).quantity == 0


def test_engine_size_uses_persisted_limits(engine: RiskEngine) -> None:
    engine.update_limits({"sizing_mode": "risk", "risk_per_trade": "1000", "max_position_by_symbol": {"/ES": 3}})
    assert engine.size(1, "/ES", 4.0).quantity == 3  # floor(1000/200)=5, capped at 3
    assert engine.size(1, "/MES", 4.0).quantity == 50  # floor(1000/20)
