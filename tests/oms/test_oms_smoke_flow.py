from domain.orders import SCHWAB, TASTYTRADE, OrderState
from oms.models import TargetOrder, TargetStatus
from tests.oms.helpers import paper_pair, make_om


def test_open_then_reverse_paper(store):
    prices = {"/MES": 6000.0}
    om = make_om(store, paper_pair(store, prices))
    r = om.move_to_target(TargetOrder("ema", "/MES", SCHWAB, 2, 1, "signal", "x"))
    assert r.status is TargetStatus.FILLED, r
    assert om.position("ema", "/MES", SCHWAB).quantity == 2
    prices["/MES"] = 6010.0
    r = om.move_to_target(TargetOrder("ema", "/MES", SCHWAB, -1, 2, "signal", "rev"))
    assert r.status is TargetStatus.FILLED, r
    assert [o.leg for o in r.orders] == ["close", "open"]
    assert [o.state for o in r.orders] == [OrderState.FILLED, OrderState.FILLED]
    assert om.position("ema", "/MES", SCHWAB).quantity == -1
    assert om.position("ema", "/MES", TASTYTRADE).quantity == 0
