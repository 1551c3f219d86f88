"""Live vs backtest parity (issue 7, "Parity"), on real Redis.

The same trades go through the live path (MarketDataService.process_now -> bar builder -> Redis bar
stream -> strategy thread -> IntentExecutor -> OrderManager -> paper broker), driven in lock-step
(after each trade that completes a bar the test waits until the strategy thread has acted on it,
so the paper broker fills at the price of that moment), and through the backtester
(`backtest.data` bars on the same session grid -> `BacktestEngine`). Both must give the same fills:
side, quantity, price and decision time (the order's event time = the signal bar's end).

Fill rule both sides follow: a market order fills at the last trade when the signal's bar
completed. Time bars complete on the first trade of the next bar (= the next bar's open); tick
charts complete on their own N-th trade (= that bar's close).

- ESH4 (real CME MBO, action 'T' trades): 20-trade bars and 1-minute bars, EMA 3/8.
- 2006 1-minute bars (first ~3,000 bars): each bar becomes 4 trades (O, L/H, C; market_data.bars.
  bar_to_trades) for the live builder; the backtester resamples the same bars to 5Min. EMA 9/21.

The last bar is left out of the backtest: live never completes it (no later trade), and the
backtester's end-of-data close is not a live order.
"""
from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from backtest.data import BarArrays, LoadOptions, MarketData, TickArrays, grid_buckets, load, ticks_to_bars
from backtest.engine import BacktestEngine, CostSettings, config_from_options
from config.settings import MarketDataSource, Settings
from config.timeframes import Timeframe
from domain.market import Bar, Trade
from domain.orders import TASTYTRADE
from market_data.bars import SessionGrid, bar_to_trades
from tests.engine.conftest import EngineRig, build_rig, wait_until

SYMBOL = "/ES"
ESH4 = ("databento", "glbx-mdp3-esh4-20231225.mbo.dbn.zst")
BARS_2006 = ("bars", "index-future-2006.1min.csv")

Fill = tuple[str, int, Decimal, int]  # side, quantity, price, event time (ns)


@pytest.fixture
def rig(real_store, settings: Settings):  # type: ignore[no-untyped-def]
    built = build_rig(real_store, replace(settings, market_data_source=MarketDataSource.REPLAY))
    yield built
    built.supervisor.shutdown()


def _start(rig: EngineRig, timeframe: str, fast: int, slow: int) -> None:
    rig.add_ticker(strategy="ema", symbol=SYMBOL, timeframe=timeframe, trade_enabled=True, schwab_quantity=0,
                   tastytrade_quantity=1, trend_line_1="EMA", period_1=fast, trend_line_2="EMA", period_2=slow)
    assert rig.supervisor.start_strategy("ema").started == [SYMBOL]
    runner = rig.supervisor._runners[("ema", SYMBOL)]
    wait_until(lambda: runner.status.warmed_up is not None and runner.is_alive(), what="runner start")
    time.sleep(0.3)  # the thread resolved its stream position and is blocked in XREAD


def _push_and_wait(rig: EngineRig, trades: list[Trade], bar_end_ns: int) -> None:
    """Push trades whose last one completes the bar ending at `bar_end_ns`; return once the
    strategy thread has fully acted on that bar (it holds its lock while acting)."""
    rig.push(trades)
    # Caught up: the thread handled the newest bar (acted on it, or skipped it as outside the
    # session: then there is no status to wait for), and is idle again.
    newest = rig.wait_caught_up("ema", SYMBOL)
    bars_key = rig.md.bars_key(SYMBOL, rig.supervisor._runners[("ema", SYMBOL)]._timeframe)
    assert int(rig.store.redis.xrange(bars_key, newest, newest)[0][1]["end"]) >= bar_end_ns


def _live_fills(rig: EngineRig) -> list[Fill]:
    orders = [o for o in reversed(rig.orders.orders(strategy="ema", limit=10_000)) if o.state.value == "FILLED"]
    return [(o.side.value, o.quantity, Decimal(str(o.avg_fill_price)), o.event_ts_ns) for o in orders]


def _backtest_fills(data: MarketData, timeframe: str, fast: int, slow: int) -> list[Fill]:
    config = config_from_options({"strategy": "ema", "symbol": SYMBOL, "timeframe": timeframe, "trend_line_1": "EMA",
                                  "period_1": fast, "trend_line_2": "EMA", "period_2": slow})
    result = BacktestEngine(config, CostSettings()).run(data, record_bars=False)
    tick = Decimal("0.25")
    out: list[Fill] = []
    for t in result.trades:
        out.append(("BUY" if t.side > 0 else "SELL", t.quantity, t.entry_ticks * tick, t.entry_event_ns))
        if t.exit_reason != "end_of_data":
            out.append(("SELL" if t.side > 0 else "BUY", t.quantity, t.exit_ticks * tick, t.exit_event_ns))
    return out


def _drop_last(bars: BarArrays) -> BarArrays:
    keep = np.ones(len(bars), dtype=bool)
    keep[-1] = False
    return bars.take(keep)


def _esh4_ticks(shared_data: Path) -> TickArrays:
    data = load(LoadOptions((shared_data.joinpath(*ESH4),), "1Min", root="ES", symbol=SYMBOL))
    assert data.ticks is not None and len(data.ticks) > 2000
    # Databento fixed-point prices as floats (x 1e-9) carry noise: put them on the 0.25 tick once,
    # so both paths see the very same floats.
    price = np.round(data.ticks.price * 4.0) / 4.0
    return TickArrays(data.ticks.ts_ns, price, data.ticks.size)


@pytest.mark.parametrize("timeframe", ["20t", "1Min"])
def test_esh4_trades_live_equals_backtest(rig: EngineRig, shared_data: Path, timeframe: str) -> None:
    ticks = _esh4_ticks(shared_data)
    tf = Timeframe.parse(timeframe)
    fast, slow = 3, 8
    bars = ticks_to_bars(ticks, tf, SYMBOL)
    # Index of each bar's first trade; bars are contiguous runs of the (time-sorted) trades.
    first = np.concatenate(([0], np.cumsum(bars.trade_count)[:-1])).tolist()
    trades = [Trade(SYMBOL, ts, px, sz) for ts, px, sz in
              zip(ticks.ts_ns.tolist(), ticks.price.tolist(), ticks.size.tolist())]

    _start(rig, timeframe, fast, slow)
    n = len(bars)
    if tf.is_tick:  # bar k completes on its own last trade
        for k in range(n - 1):
            end = first[k + 1]
            _push_and_wait(rig, trades[first[k]:end], int(bars.end_ns[k]))
    else:  # bar k-1 completes on the first trade of bar k
        rig.push(trades[first[0] + 0:first[0] + 1])
        for k in range(n):
            lo, hi = first[k], first[k + 1] if k + 1 < n else len(trades)
            if k:
                _push_and_wait(rig, [trades[lo]], int(bars.end_ns[k - 1]))
            rig.push(trades[lo + 1:hi])

    live = _live_fills(rig)
    ours = _backtest_fills(MarketData(_drop_last(bars), None, "esh4"), timeframe, fast, slow)
    assert len(ours) >= 4, ours  # several trades really happen
    assert live == ours
    assert rig.position("ema", SYMBOL, TASTYTRADE) == (1 if ours[-1][0] == "BUY" else -1)


def test_2006_minute_bars_live_equals_backtest(rig: EngineRig, shared_data: Path) -> None:
    path = shared_data.joinpath(*BARS_2006)
    start, end = 1136160000 * 10**9, 1136160000 * 10**9 + 14 * 86400 * 10**9  # 2006-01-02 .. 01-16 UTC
    minute = load(LoadOptions((path,), "1Min", start, end, symbol=SYMBOL)).bars
    five = load(LoadOptions((path,), "5Min", start, end, symbol=SYMBOL)).bars
    assert len(minute) > 2500 and len(five) > 500
    tf = Timeframe.parse("5Min")
    grid_start, _ = grid_buckets(minute.start_ns, tf, SYMBOL)
    assert np.array_equal(np.unique(grid_start), five.start_ns)  # same grid as SessionGrid below
    grid = SessionGrid(SYMBOL)
    assert all(grid.bucket(int(s), tf)[0] == g for s, g in zip(minute.start_ns[:300], grid_start[:300]))

    _start(rig, "5Min", 9, 21)
    bucket_end = dict(zip(five.start_ns.tolist(), five.end_ns.tolist()))
    current: int | None = None
    pending: list[Trade] = []
    for i in range(len(minute)):
        bar = Bar(SYMBOL, "1", int(minute.start_ns[i]), int(minute.end_ns[i]), float(minute.open[i]),
                  float(minute.high[i]), float(minute.low[i]), float(minute.close[i]), int(minute.volume[i]), 0)
        trades = bar_to_trades(bar)
        g = int(grid_start[i])
        if current is not None and g != current:  # this bar's first trade completes the previous 5Min bar
            _push_and_wait(rig, pending + [trades[0]], bucket_end[current])
            pending = trades[1:]
        else:
            pending += trades
        current = g
    rig.push(pending)

    live = _live_fills(rig)
    ours = _backtest_fills(MarketData(_drop_last(five), None, "2006"), "5Min", 9, 21)
    assert len(ours) >= 10, ours
    assert live == ours
