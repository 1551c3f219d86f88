"""End to end on real data and real Redis (issue 5, Tests): the real ESH4 trades of 2023-12-25
(Databento MBO, records with action 'T', mapped to /ES) go through the feed's loader, the market data
service's bar builder, the Redis bar stream, an EMA strategy thread, the order manager and the paper
broker. The trades made must equal an offline computation written here independently with pandas
(bars), a hand-written EMA, the crossing rule and "a market order fills at the price of the trade
that completed the signal bar" (the next bar's first trade), plus the paper slippage."""
from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pandas as pd

from domain.market import Bar, Trade
from domain.orders import SCHWAB, TASTYTRADE
from market_data.feeds import load_replay_file
from tests.engine.conftest import build_rig

ESH4 = "databento/glbx-mdp3-esh4-20231225.mbo.dbn.zst"
MINUTE_NS = 60_000_000_000
FAST, SLOW = 2, 5
SLIPPAGE_TICKS = 1
TICK = 0.25


def hand_ema(values: list[float], n: int) -> list[float | None]:
    out: list[float | None] = [None] * len(values)
    if len(values) < n:
        return out
    value = sum(values[:n]) / n
    out[n - 1] = value
    for i in range(n, len(values)):
        value += (2.0 / (n + 1)) * (values[i] - value)
        out[i] = value
    return out


def offline_expectation(trades: list[Trade]) -> tuple[pd.DataFrame, list[tuple[str, int, float]]]:
    """Bars from pandas, then the stop-and-reverse orders: (side, qty, fill price)."""
    frame = pd.DataFrame({"ts": [t.ts_ns for t in trades], "price": [t.price for t in trades],
                          "size": [t.size for t in trades]})
    frame["minute"] = pd.to_datetime(frame["ts"], unit="ns", utc=True).dt.floor("1min")
    grouped = frame.groupby("minute", sort=True)
    bars = pd.DataFrame({"open": grouped["price"].first(), "high": grouped["price"].max(),
                         "low": grouped["price"].min(), "close": grouped["price"].last(),
                         "volume": grouped["size"].sum(), "first_trade": grouped["price"].first()})
    completed = bars.iloc[:-1]  # the last minute never completes: no later trade
    closes = completed["close"].tolist()
    fast, slow = hand_ema(closes, FAST), hand_ema(closes, SLOW)
    orders: list[tuple[str, int, float]] = []
    position = 0
    for t in range(1, len(closes)):
        if None in (fast[t], slow[t], fast[t - 1], slow[t - 1]):
            continue
        if fast[t] > slow[t] and fast[t - 1] <= slow[t - 1]:
            wanted = 1
        elif fast[t] < slow[t] and fast[t - 1] >= slow[t - 1]:
            wanted = -1
        else:
            continue
        if wanted == position:
            continue
        fill_at = float(bars["first_trade"].iloc[t + 1])  # the trade that completed bar t
        side = "BUY" if wanted > position else "SELL"
        price = fill_at + (TICK * SLIPPAGE_TICKS if side == "BUY" else -TICK * SLIPPAGE_TICKS)
        if position != 0:  # close, then open
            orders.append((side, 1, price))
        orders.append((side, 1, price))
        position = wanted
    return completed, orders


def test_esh4_trades_through_feed_engine_and_paper_match_offline(real_store, replay_settings, shared_data: Path) -> None:
    source = load_replay_file(shared_data / ESH4)
    trades = [trade for _order_ts, trade in source.trades if trade.symbol == "/ES"]
    assert len(trades) == 2973  # the README's count of action-'T' records

    completed, expected_orders = offline_expectation(trades)
    assert len(completed) == 59
    assert len(expected_orders) >= 10  # the data really makes the strategy trade and reverse

    settings = replace(replay_settings, paper_slippage_ticks=SLIPPAGE_TICKS)
    rig = build_rig(real_store, settings)
    try:
        rig.add_ticker(strategy="ema", symbol="/ES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                       tastytrade_quantity=1, trend_line_1="EMA", period_1=FAST, trend_line_2="EMA", period_2=SLOW)
        assert rig.supervisor.start_strategy("ema").started == ["/ES"]
        # Lock-step replay in arrival order: each trade that opens a new minute completes the previous
        # bar; wait until the strategy thread has acted on it, so the paper fill sees that trade.
        pending: list[Trade] = []
        minute = trades[0].ts_ns // MINUTE_NS
        for trade in trades:
            m = trade.ts_ns // MINUTE_NS
            if m != minute:
                rig.push(pending)
                pending = []
                rig.push_bar_and_wait("ema", [trade], m * MINUTE_NS)
                minute = m
            else:
                pending.append(trade)
        rig.push(pending)
        rig.wait_idle("ema", "/ES")

        # The bar builder's bars equal pandas' bars.
        stream = real_store.redis.xrange(rig.md.bars_key("/ES", rig.supervisor._runners[("ema", "/ES")]._timeframe))
        built = [Bar.from_fields(fields) for _id, fields in stream]
        assert [(b.open, b.high, b.low, b.close, b.volume) for b in built] == [
            tuple(row) for row in completed[["open", "high", "low", "close", "volume"]].itertuples(index=False)]

        fills = [o for o in reversed(rig.orders.orders(strategy="ema", limit=500)) if o.state.value == "FILLED"]
        made = [(o.side.value, o.quantity, Decimal(str(o.avg_fill_price))) for o in fills]
        assert made == [(side, qty, Decimal(str(price))) for side, qty, price in expected_orders]
        assert all(o.intent_reason == "signal" for o in fills)
        final = 1 if expected_orders[-1][0] == "BUY" else -1
        assert rig.position("ema", "/ES", TASTYTRADE) == final
        assert rig.paper[TASTYTRADE].positions()[0].quantity == final
        assert rig.orders.orders(broker=SCHWAB) == []
        status = rig.supervisor.strategies_status()["ema"]["tickers"]["/ES"]
        assert status["alive"] and status["last_bar"]["end_ns"] == built[-1].end_ns
    finally:
        rig.supervisor.shutdown()

