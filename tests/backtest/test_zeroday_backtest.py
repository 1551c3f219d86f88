"""zeroday in the backtester: the session clock before every bar (as engine/clock.py builds it) and
option premiums from the paper broker's synthetic SPXW chain (brokers/option_pricing.py)."""
from __future__ import annotations

import math
from datetime import date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np

from backtest.data import BarArrays, MarketData
from backtest.engine import BacktestEngine, CostSettings, config_from_options
from backtest.report import metrics, trade_rows
from brokers.option_pricing import atm_strike, price_contract
from domain.orders import OptionContract, OptionRight

NY = ZoneInfo("America/New_York")
NS = 1_000_000_000
DAYS = (date(2024, 7, 2), date(2024, 7, 3), date(2024, 7, 4), date(2024, 7, 5))  # 07-03 early close, 07-04 holiday


def spx_bars() -> BarArrays:
    """5-minute SPX-like bars 09:30-16:00 ET each day (also on the holiday, to prove nothing trades
    then): a 70-minute wave of +-12 points on a slow drift, so the EMA 3/8 crosses several times a day."""
    starts: list[int] = []
    for day in DAYS:
        open_ = int(datetime.combine(day, time(9, 30), NY).timestamp()) * NS
        starts += [open_ + k * 300 * NS for k in range(78)]
    s = np.array(starts, dtype=np.int64)
    minutes = (s - s[0]) / (60 * NS)
    close = np.round((5500 + 12 * np.sin(2 * math.pi * minutes / 70) + 0.01 * minutes) * 100) / 100
    open_ = np.concatenate(([close[0]], close[:-1]))
    high = np.maximum(open_, close) + 0.5
    low = np.minimum(open_, close) - 0.5
    n = len(s)
    return BarArrays(s, s + 300 * NS, open_, high, low, close, np.zeros(n, np.int64), np.zeros(n, np.int64))


def run() -> tuple[BarArrays, object]:
    bars = spx_bars()
    config = config_from_options({"strategy": "zeroday", "symbol": "SPX", "timeframe": "5Min", "trend_line_1": "EMA",
                                  "period_1": 3, "trend_line_2": "EMA", "period_2": 8})
    return bars, BacktestEngine(config, CostSettings(commission_per_contract=Decimal("0.65"))).run(
        MarketData(bars, None, "spx"))


def ny(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, NY)


def test_zeroday_trades_options_priced_by_the_paper_chain() -> None:
    bars, result = run()
    trades = result.trades
    assert len(trades) >= 6
    index = {int(s): i for i, s in enumerate(bars.start_ns.tolist())}
    for t in trades:
        root, expiry, strike, right = t.option.split()
        entry, exit_ = ny(t.entry_ns), ny(t.exit_ns)
        # Same-day option, bought and sold the same New York date, never on the holiday.
        assert root == "SPXW" and expiry == entry.date().isoformat() == exit_.date().isoformat()
        assert entry.date() != date(2024, 7, 4)
        assert t.side == 1  # long premium for calls and puts
        # Entry: decided at a bar close inside 09:35-15:30, filled at the next bar's open.
        decided = ny(t.entry_event_ns).time()
        assert time(9, 35) <= decided <= time(15, 30)
        spot_in = float(bars.open[index[t.entry_ns]])
        assert Decimal(strike) == atm_strike(spot_in)
        contract = OptionContract(underlying="SPX", root="SPXW", expiration=entry.date(), strike=Decimal(strike),
                                  right=OptionRight(right))
        ask = price_contract(contract, spot_in, entry).ask
        assert Decimal(t.entry_ticks) / 100 == ask
        if t.exit_reason != "end_of_data":
            spot_out = float(bars.open[index[t.exit_ns]])
            assert Decimal(t.exit_ticks) / 100 == price_contract(contract, spot_out, exit_).bid
        assert Decimal(t.entry_ticks) > 0
    # Forced 0DTE close: at 15:45 on a normal day, 15 minutes before the 13:00 early close on 07-03.
    closes = [(ny(t.exit_event_ns), t.exit_reason) for t in trades if t.exit_reason == "0dte_close"]
    assert any(d.date() == date(2024, 7, 2) and d.time() == time(15, 45) for d, _ in closes)
    assert all(d.time() <= time(12, 45) for d, _ in closes if d.date() == date(2024, 7, 3))
    assert {t.option.split()[3] for t in trades} == {"C", "P"}


def test_zeroday_report_pnl_is_premium_pnl() -> None:
    _, result = run()
    rows = trade_rows(result)
    gross = sum((Decimal(t.exit_ticks - t.entry_ticks) * Decimal("0.01") * 100 for t in result.trades), Decimal(0))
    assert sum((r.gross for r in rows), Decimal(0)) == gross
    m = metrics(result)
    assert m["trades"] == len(result.trades)
    # Equity ends at capital + net P&L (commission both legs).
    assert abs(float(result.equity[-1]) - (100_000 + float(gross) - 1.3 * len(result.trades))) < 1e-6
