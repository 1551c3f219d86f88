"""Round trips and P&L checked against hand computation (commissions included)."""
from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from ledger.pnl import compute_pnl, session_pnl
from ledger.trades import FillError, Ledger, TradeFilter
from store.redis_store import Store

T0 = datetime(2025, 6, 10, 14, 0, tzinfo=UTC)
_seq = [0]


def fill(side: str, qty: int, price: str, *, symbol: str = "/MES", key: str | None = None, comm: str = "0",
         strategy: str = "ema", broker: str = "tastytrade", minutes: float = 0, reason: str = "signal",
         multiplier: str | None = None) -> dict[str, Any]:
    _seq[0] += 1
    doc = {"client_order_id": f"coid-{_seq[0]}", "fill_id": "f1", "broker": broker, "strategy": strategy,
           "symbol": symbol, "position_key": key or symbol, "side": side, "quantity": str(qty), "price": price,
           "commission": comm, "ts": (T0 + timedelta(minutes=minutes)).isoformat(), "reason": reason}
    if multiplier is not None:
        doc["multiplier"] = multiplier
    return doc


@pytest.fixture
def ledger(store: Store) -> Ledger:
    return Ledger(store)


def test_mes_long_round_trip(ledger: Ledger) -> None:
    assert ledger.apply_fill(fill("BUY", 2, "5000.00", comm="1.24")) is None
    t = ledger.apply_fill(fill("SELL", 2, "5010.25", comm="1.24", minutes=30, reason="target"))
    assert t is not None
    # 10.25 points x 2 contracts x $5 = 102.50; commissions 2.48; net 100.02.
    assert (t.gross_pnl, t.commission, t.net_pnl) == (Decimal("102.50"), Decimal("2.48"), Decimal("100.02"))
    assert (t.direction, t.quantity, t.exit_reason, t.duration_seconds) == ("LONG", 2, "target", 1800.0)
    assert ledger.open_positions() == []


def test_es_short_round_trip(ledger: Ledger) -> None:
    ledger.apply_fill(fill("SELL", 1, "6000.00", symbol="/ES", comm="2.25"))
    t = ledger.apply_fill(fill("BUY", 1, "5990.50", symbol="/ES", comm="2.25", minutes=5, reason="stop"))
    # Short 9.5 points x $50 = +475.00; net 470.50.
    assert t and (t.direction, t.gross_pnl, t.net_pnl) == ("SHORT", Decimal("475.00"), Decimal("470.50"))


def test_equity_round_trip(ledger: Ledger) -> None:
    ledger.apply_fill(fill("BUY", 100, "180.10", symbol="NVDA", broker="schwab"))
    t = ledger.apply_fill(fill("SELL", 100, "179.60", symbol="NVDA", broker="schwab", minutes=1))
    assert t and t.gross_pnl == Decimal("-50.00") and t.net_pnl == Decimal("-50.00") and t.multiplier == 1


def test_spx_option_round_trip_x100(ledger: Ledger) -> None:
    occ = "SPXW  250610C06000000"
    ledger.apply_fill(fill("BUY", 2, "4.50", symbol="SPX", key=occ, comm="1.30", strategy="zeroday"))
    t = ledger.apply_fill(fill("SELL", 2, "6.10", symbol="SPX", key=occ, comm="1.30", strategy="zeroday",
                               minutes=90, reason="0dte_close"))
    # 1.60 x 2 x 100 = 320.00; commissions 2.60; net 317.40. Multiplier inferred from the OCC key.
    assert t and (t.gross_pnl, t.net_pnl, t.multiplier) == (Decimal("320.00"), Decimal("317.40"), Decimal(100))
    assert t.exit_reason == "0dte_close" and t.position_key == occ and t.symbol == "SPX"


def test_partial_close(ledger: Ledger) -> None:
    ledger.apply_fill(fill("BUY", 3, "5000", comm="1.50"))
    first = ledger.apply_fill(fill("SELL", 1, "5004", comm="0.50", minutes=10, reason="target"))
    # 4 pts x 1 x $5 = 20; entry share 1.50/3 = 0.50, exit 0.50 -> net 19.00.
    assert first and (first.quantity, first.gross_pnl, first.commission, first.net_pnl) == \
        (1, Decimal("20"), Decimal("1.00"), Decimal("19.00"))
    [lot] = ledger.open_positions()
    assert lot.quantity == 2 and lot.entry_commission == Decimal("1.00")
    second = ledger.apply_fill(fill("SELL", 2, "4998", comm="1.00", minutes=20, reason="stop"))
    # -2 pts x 2 x $5 = -20; commissions 1.00 + 1.00 -> net -22.00.
    assert second and (second.gross_pnl, second.net_pnl, second.exit_reason) == (Decimal("-20"), Decimal("-22.00"), "stop")
    assert second.entry_time == T0  # the original entry time survives partial closes


def test_reversal_closes_and_opens(ledger: Ledger) -> None:
    ledger.apply_fill(fill("BUY", 2, "5000", comm="1.00"))
    closed = ledger.apply_fill(fill("SELL", 3, "5010", comm="1.50", minutes=5))
    # Long 2 closed: 10 x 2 x 5 = 100; entry 1.00 + 2/3 of 1.50 = 1.00 -> net 98.00.
    assert closed and (closed.quantity, closed.net_pnl) == (2, Decimal("98.00"))
    [lot] = ledger.open_positions()
    assert (lot.quantity, lot.avg_price, lot.entry_commission) == (-1, Decimal("5010"), Decimal("0.50"))
    short = ledger.apply_fill(fill("BUY", 1, "5005", comm="0.50", minutes=9))
    # Short 1: 5 pts x $5 = 25; commissions 0.50 + 0.50 -> net 24.00.
    assert short and (short.direction, short.net_pnl) == ("SHORT", Decimal("24.00"))


def test_adding_averages_entry(ledger: Ledger) -> None:
    ledger.apply_fill(fill("BUY", 1, "100", symbol="TSLA"))
    ledger.apply_fill(fill("BUY", 1, "102", symbol="TSLA", minutes=1))
    t = ledger.apply_fill(fill("SELL", 2, "103", symbol="TSLA", minutes=2))
    assert t and t.entry_price == Decimal("101") and t.gross_pnl == Decimal("4")


def test_positions_are_per_strategy_and_broker(ledger: Ledger) -> None:
    ledger.apply_fill(fill("BUY", 1, "5000", broker="tastytrade"))
    ledger.apply_fill(fill("BUY", 1, "5000", broker="schwab"))
    ledger.apply_fill(fill("SELL", 1, "5001", strategy="supertrend"))
    assert sorted((p.broker, p.strategy, p.quantity) for p in ledger.open_positions()) == \
        [("schwab", "ema", 1), ("tastytrade", "ema", 1), ("tastytrade", "supertrend", -1)]


def test_idempotent_and_validated(ledger: Ledger) -> None:
    buy = fill("BUY", 1, "5000")
    ledger.apply_fill(buy)
    ledger.apply_fill(buy)
    assert ledger.open_positions()[0].quantity == 1
    with pytest.raises(FillError, match="side"):
        ledger.apply_fill({**fill("BUY", 1, "1"), "side": "HOLD"})
    with pytest.raises(FillError, match="quantity"):
        ledger.apply_fill({**fill("BUY", 1, "1"), "quantity": "1.5"})


def test_sync_and_rebuild_from_stream(store: Store, ledger: Ledger) -> None:
    stream = store.key("oms", "fills")
    a = fill("BUY", 1, "5000", comm="0.62")
    a.pop("fill_id")  # no fill id: the stream entry id stands in
    a["ts"] = str(int(T0.timestamp() * 1e9))  # ns epoch
    store.redis.xadd(stream, a)
    store.redis.xadd(stream, {"client_order_id": "bad"})  # malformed: skipped, not fatal
    assert ledger.sync() == 1
    store.redis.xadd(stream, fill("SELL", 1, "5002", comm="0.62", minutes=3))
    assert ledger.sync() == 1
    assert ledger.sync() == 0
    [t] = ledger.trades()[0]
    assert t.net_pnl == Decimal("8.76") and t.entry_time == T0  # 2 x 5 - 1.24
    assert len(ledger.skipped()) == 1
    assert ledger.rebuild_from_stream() == 2
    assert ledger.trades()[1] == 1


def _book(ledger: Ledger) -> None:
    ledger.apply_fill(fill("BUY", 1, "5000", comm="1"))
    ledger.apply_fill(fill("SELL", 1, "5010", comm="1", minutes=10))  # ema /MES +48
    ledger.apply_fill(fill("BUY", 10, "180", symbol="NVDA", broker="schwab", strategy="supertrend", minutes=20))
    ledger.apply_fill(fill("SELL", 10, "178", symbol="NVDA", broker="schwab", strategy="supertrend",
                           minutes=30, reason="stop"))  # -20
    ledger.apply_fill(fill("BUY", 1, "5000", minutes=60 * 24, comm="1"))  # next day
    ledger.apply_fill(fill("SELL", 1, "4990", minutes=60 * 24 + 5, comm="1"))  # -52
    ledger.apply_fill(fill("BUY", 2, "5000", minutes=60 * 24 + 10))  # open


def test_queries_paging_csv(ledger: Ledger) -> None:
    _book(ledger)
    rows, total = ledger.trades(TradeFilter(strategy="ema"))
    assert total == 2 and rows[0].net_pnl == Decimal("-52")  # newest first
    rows, total = ledger.trades(TradeFilter(), offset=1, limit=1)
    assert total == 3 and rows[0].symbol == "NVDA"
    rows, total = ledger.trades(TradeFilter(broker="schwab", start=T0, end=T0 + timedelta(hours=1)))
    assert total == 1
    assert ledger.trades(TradeFilter(end=T0 + timedelta(minutes=10)))[1] == 0  # end is exclusive
    parsed = list(csv.DictReader(io.StringIO(Ledger.to_csv(ledger.trades()[0]))))
    assert len(parsed) == 3 and parsed[2]["net_pnl"] == "48" and parsed[2]["duration_seconds"] == "600.0"


def test_pnl_report(ledger: Ledger) -> None:
    _book(ledger)
    report = compute_pnl(ledger, mark_price=lambda key: Decimal("5003") if key == "/MES" else None).to_json()
    realized = report["realized"]
    assert realized["total"]["net"] == "-24" and realized["total"]["trades"] == 3
    assert realized["by_strategy"]["ema"]["net"] == "-4" and realized["by_strategy"]["supertrend"]["net"] == "-20"
    assert realized["by_broker"]["schwab"]["net"] == "-20"
    assert realized["by_symbol"]["/MES"]["commission"] == "4"
    assert realized["by_day"] == {"2025-06-10": realized["by_day"]["2025-06-10"],
                                  "2025-06-11": realized["by_day"]["2025-06-11"]}
    assert realized["by_day"]["2025-06-11"]["net"] == "-52"
    assert report["unrealized"]["total"] == "30"  # 3 pts x 2 x $5
    assert [p["equity"] for p in report["equity_curve"]] == ["48", "28", "-24"]
    no_marks = compute_pnl(ledger).to_json()
    assert no_marks["unrealized"]["marks_missing"] == ["/MES"]


def test_session_pnl_feeds_risk_engine(ledger: Ledger) -> None:
    _book(ledger)
    pnl = session_pnl(ledger, T0 + timedelta(hours=12), lambda key: Decimal("4999"))
    assert pnl == {"ema": (Decimal("-52"), Decimal("-10"))}


def test_order_manager_fill_entry_shape(store: Store, ledger: Ledger) -> None:
    """Fields exactly as oms/journal.fill_entry writes them (key, ts_ns, no fill_id)."""
    occ = "SPXW  250610P05990000"
    base = {"broker": "schwab", "strategy": "zeroday", "symbol": "SPX", "key": occ, "broker_order_id": "",
            "leg": "open", "multiplier": "100", "realized_pnl": "0", "detail": ""}
    stream = store.key("oms", "fills")
    store.redis.xadd(stream, {**base, "ts_ns": str(int(T0.timestamp()) * 10**9), "client_order_id": "zer-SPX-open-1",
                              "side": "BUY", "quantity": "1", "price": "3.20", "commission": "0.65", "reason": "signal"})
    store.redis.xadd(stream, {**base, "ts_ns": str(int(T0.timestamp() + 600) * 10**9), "client_order_id": "zer-SPX-clos-2",
                              "side": "SELL", "quantity": "1", "price": "2.10", "commission": "0.65", "reason": "stop"})
    assert ledger.sync() == 2
    [t] = ledger.trades()[0]
    # -1.10 x 100 = -110.00; commissions 1.30 -> net -111.30.
    assert (t.position_key, t.gross_pnl, t.net_pnl, t.duration_seconds) == (occ, Decimal("-110.00"), Decimal("-111.30"), 600.0)
