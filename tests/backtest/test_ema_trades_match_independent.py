"""The engine's EMA 9/21 trade list equals an independent computation of the rules in plain
Python/pandas on a small synthetic series (no strategy or engine code reused)."""
from __future__ import annotations

from decimal import Decimal

import pandas as pd

from backtest.engine import BacktestEngine, CostSettings, config_from_options
from backtest.report import trade_rows
from tests.backtest.helpers import market, random_walk


def _seeded_ema(values: pd.Series, n: int) -> list[float | None]:
    """TA-Lib convention: first value at n-1 = SMA of the first n, then y += (x - y) * 2/(n+1)."""
    out: list[float | None] = [None] * len(values)
    seed = values.iloc[:n].mean()
    out[n - 1] = float(seed)
    y = float(seed)
    for i in range(n, len(values)):
        y += (float(values.iloc[i]) - y) * (2.0 / (n + 1))
        out[i] = y
    return out


def test_ema_cross_trades_equal_hand_computation() -> None:
    bars = random_walk(600, seed=11)
    df = pd.DataFrame({"open": bars.open, "close": bars.close, "start": bars.start_ns})
    fast, slow = _seeded_ema(df["close"], 9), _seeded_ema(df["close"], 21)
    expected: list[tuple[str, int, float]] = []  # (side, entry start ns, entry price)
    pos = 0
    for t in range(1, len(df)):
        f, s, pf, ps = fast[t], slow[t], fast[t - 1], slow[t - 1]
        if None in (f, s, pf, ps):
            continue
        want = 1 if (f > s and pf <= ps) else -1 if (f < s and pf >= ps) else 0
        if want and want != pos and t + 1 < len(df):
            expected.append(("LONG" if want > 0 else "SHORT", int(df["start"][t + 1]), float(df["open"][t + 1])))
            pos = want

    config = config_from_options({"strategy": "ema", "symbol": "/MES", "timeframe": "1Min", "period_1": 9,
                                  "period_2": 21, "quantity": 2})
    result = BacktestEngine(config, CostSettings(quantity=2, commission_per_contract=Decimal("0.5"))).run(
        market(bars), record_bars=True)
    got = [("LONG" if t.side > 0 else "SHORT", t.entry_ns, float(r.entry_price))
           for t, r in zip(result.trades, trade_rows(result))]
    assert len(expected) > 10  # the series really crosses
    assert got == expected
    # Stop-and-reverse: every exit except the last happens at the next entry, same time and price.
    for a, b in zip(result.trades, result.trades[1:]):
        assert (a.exit_ns, a.exit_ticks) == (b.entry_ns, b.entry_ticks)
    assert result.trades[-1].exit_reason == "end_of_data"
    # P&L by hand: (exit - entry) x side x qty x $5 multiplier, minus 0.5 x 2 contracts x 2 fills.
    rows = trade_rows(result)
    for t, r in zip(result.trades, rows):
        hand = Decimal(str((t.exit_ticks - t.entry_ticks) * 0.25)) * t.side * 2 * 5
        assert r.gross == hand and r.net == hand - Decimal("2.0")
    assert abs(result.equity[-1] - (100_000 + float(sum(r.net for r in rows)))) < 1e-6
