"""Supertrend and 0DTE through the real engine path on real Redis: trades -> bar builder -> Redis ->
strategy thread (bar stream + trade stream + housekeeping) -> order manager -> paper brokers."""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Iterator

import pytest

from domain.market import Trade
from domain.orders import SCHWAB, TASTYTRADE, OptionRight
from tests.engine.conftest import MINUTE_NS, EngineRig, build_rig, session_minute, wait_until

START = 1719928800 * 1_000_000_000  # 2024-07-02 14:00 UTC, a Tuesday inside the CME session
SECOND = 1_000_000_000


class TestClock:
    """The engine's wall clock (ns), moved by the test."""

    __test__ = False

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def bar_trades(symbol: str, t0: int, open_: float, close: float, spread: float) -> list[Trade]:
    """Four trades in one minute: open, high, low, close (high/low `spread` beyond the body)."""
    return [Trade(symbol, t0 + 1 * SECOND, open_, 1), Trade(symbol, t0 + 15 * SECOND, max(open_, close) + spread, 1),
            Trade(symbol, t0 + 30 * SECOND, min(open_, close) - spread, 1), Trade(symbol, t0 + 45 * SECOND, close, 1)]


def feed_bars(rig: EngineRig, strategy: str, symbol: str, start_ns: int, closes: list[float], spread: float,
              first_open: float | None = None) -> None:
    """Bar i opens at close[i-1]; its first trade completes bar i-1 (lock-step with the thread)."""
    for i, close in enumerate(closes):
        t0 = start_ns + i * MINUTE_NS
        open_ = closes[i - 1] if i else (first_open if first_open is not None else close)
        trades = bar_trades(symbol, t0, open_, close, spread)
        if i == 0:
            rig.push(trades[:1])
        else:
            rig.push_bar_and_wait(strategy, trades[:1], t0)
        rig.push(trades[1:])


def filled(rig: EngineRig, strategy: str):
    return [o for o in reversed(rig.orders.orders(strategy=strategy, limit=100)) if o.state.value == "FILLED"]


# --- supertrend ---------------------------------------------------------------------------------

# 30 bars drifting down (SF at/below F arms the bullish candle; Supertrend down), then a steady rally:
# the Supertrend turns up at bar 31 and the first bar with SF > F > S and low > SF is bar 35.
ST_CLOSES = [5000 - 0.5 * i for i in range(30)] + [4985 + 3 * i for i in range(1, 8)]
ENTRY_BAR = 35


def test_supertrend_enters_on_reversal_candle_and_exits_on_intrabar_trailing_stop(rig: EngineRig) -> None:
    rig.add_ticker(strategy="supertrend", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                   tastytrade_quantity=2)
    rig.supervisor.start_strategy("supertrend")
    runner = rig.supervisor._runners[("supertrend", "/MES")]
    # Bars 0..36 complete (bar 37's first trade completes bar 36).
    feed_bars(rig, "supertrend", "/MES", START, ST_CLOSES, spread=0.25)
    t37 = START + len(ST_CLOSES) * MINUTE_NS
    rig.push_bar_and_wait("supertrend", [Trade("/MES", t37 + SECOND, ST_CLOSES[-1], 1)], t37)

    fills = filled(rig, "supertrend")
    assert [(o.side.value, o.quantity, o.intent_reason) for o in fills] == [("BUY", 2, "signal")]
    # Entered when bar 35 completed: at the first trade of bar 36 (= close of bar 35).
    assert Decimal(str(fills[0].avg_fill_price)) == Decimal(str(ST_CLOSES[ENTRY_BAR]))
    assert rig.position("supertrend", "/MES", TASTYTRADE) == 2

    # Trailing stop after bar 36's close: best close (bar 36) - 2 x ATR, never below the entry's level.
    ind = runner.status.indicators
    stop = ind["stop"]
    assert stop == pytest.approx(ST_CLOSES[-1] - 2.0 * ind["atr"], abs=1e-9)
    assert ind["direction"] == 1.0 and ST_CLOSES[ENTRY_BAR] - 2 * ind["atr"] < stop < ST_CLOSES[-1]

    # Inside bar 37 (no bar completes): a trade above the stop does nothing, one through it exits at once.
    rig.push([Trade("/MES", t37 + 5 * SECOND, round(stop + 0.5, 2), 1)])
    rig.wait_idle("supertrend", "/MES")
    assert rig.position("supertrend", "/MES", TASTYTRADE) == 2
    through = float(int(stop) - 1)  # a whole point below the level
    rig.push([Trade("/MES", t37 + 10 * SECOND, through, 1)])
    wait_until(lambda: rig.position("supertrend", "/MES", TASTYTRADE) == 0, what="the trailing stop exit")
    fills = filled(rig, "supertrend")
    assert [(o.side.value, o.quantity, o.intent_reason) for o in fills] == [("BUY", 2, "signal"), ("SELL", 2, "stop")]
    assert Decimal(str(fills[1].avg_fill_price)) == Decimal(str(through))
    assert runner.status.last_bar["end_ns"] == t37  # the exit came from the trade stream, mid-bar
    assert "trailing stop" in (runner.status.last_signal or "")
    assert rig.orders.orders(broker=SCHWAB) == []
    log_text = (rig.settings.log_dir / "supertrend" / "MES.log").read_text()
    assert "reversal candle" in log_text and "trailing stop" in log_text


# --- zeroday ------------------------------------------------------------------------------------

SESSION_DAY = "2024-07-02"  # Tuesday: regular SPX session, SPXW expiring that day
HOLIDAY = "2024-07-04"  # Independence Day: no session, no 0DTE expiration
# Flat for 6 bars, then up: EMA 2 crosses EMA 4 on bar 6 (ending 09:37 ET, inside 09:35-15:30).
ZD_CLOSES = [5500.0] * 6 + [5503.1, 5506.2, 5508.0]
CROSS_BAR = 6


def ema(values: list[float], n: int) -> list[float | None]:
    out: list[float | None] = [None] * len(values)
    value = sum(values[:n]) / n
    out[n - 1] = value
    for i in range(n, len(values)):
        value += 2 / (n + 1) * (values[i] - value)
        out[i] = value
    return out


@pytest.fixture
def zd_clock() -> TestClock:
    return TestClock(session_minute(SESSION_DAY, 9, 30))


@pytest.fixture
def zd_rig(real_store, replay_settings, zd_clock: TestClock) -> Iterator[EngineRig]:
    built = build_rig(real_store, replay_settings, time_ns=zd_clock)
    yield built
    built.supervisor.shutdown()


def _add_zeroday(rig: EngineRig) -> None:
    rig.add_ticker(strategy="zeroday", symbol="SPX", timeframe="1Min", trade_enabled=True, schwab_quantity=1,
                   tastytrade_quantity=2, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)
    rig.supervisor.start_strategy("zeroday")


def test_zeroday_buys_atm_call_after_bullish_cross_and_housekeeping_closes_at_1545(
        zd_rig: EngineRig, zd_clock: TestClock) -> None:
    rig = zd_rig
    fast, slow = ema(ZD_CLOSES, 2), ema(ZD_CLOSES, 4)
    crosses = [t for t in range(1, len(ZD_CLOSES)) if None not in (fast[t], slow[t], fast[t - 1], slow[t - 1])
               and fast[t] > slow[t] and fast[t - 1] <= slow[t - 1]]
    assert crosses == [CROSS_BAR]
    _add_zeroday(rig)
    open_ns = session_minute(SESSION_DAY, 9, 30)
    zd_clock.now_ns = open_ns + len(ZD_CLOSES) * MINUTE_NS  # wall clock follows the data
    feed_bars(rig, "zeroday", "SPX", open_ns, ZD_CLOSES, spread=0.5)

    day = date.fromisoformat(SESSION_DAY)
    fills = filled(rig, "zeroday")
    assert [(o.broker, o.side.value, o.quantity, o.intent_reason) for o in fills] == [
        (SCHWAB, "BUY", 1, "signal"), (TASTYTRADE, "BUY", 2, "signal")]
    # ATM = the strike in the paper broker's synthetic chain nearest the SPX close of the cross bar.
    level = Decimal(str(ZD_CLOSES[CROSS_BAR]))
    chain = rig.paper[SCHWAB].option_chain("SPX", day)
    calls = [c for c in chain if c.right is OptionRight.CALL and c.expiration == day]
    atm = min(calls, key=lambda c: (abs(c.strike - level), c.strike))
    assert atm.strike == Decimal("5505")
    for order in fills:
        assert order.option is not None
        assert (order.option.root, order.option.expiration, order.option.right, order.option.strike) == (
            "SPXW", day, OptionRight.CALL, atm.strike)
        assert order.avg_fill_price > 0
    assert rig.position("zeroday", "SPX", TASTYTRADE) == 2

    # Housekeeping before 15:45 keeps the call; at 15:45 (no bar needed) it is closed.
    runner = rig.supervisor._runners[("zeroday", "SPX")]
    zd_clock.now_ns = session_minute(SESSION_DAY, 15, 44)
    assert rig.supervisor.housekeeping_now("zeroday") == 1
    wait_until(lambda: runner.status.last_housekeeping is not None and "19:44" in runner.status.last_housekeeping,
               what="housekeeping at 15:44")
    rig.wait_idle("zeroday", "SPX")
    assert rig.position("zeroday", "SPX", TASTYTRADE) == 2
    zd_clock.now_ns = session_minute(SESSION_DAY, 15, 45)
    rig.supervisor.housekeeping_now("zeroday")
    wait_until(lambda: rig.position("zeroday", "SPX", TASTYTRADE) == 0
               and rig.position("zeroday", "SPX", SCHWAB) == 0, what="the 15:45 close")
    closes = filled(rig, "zeroday")[2:]
    assert sorted((o.broker, o.side.value, o.quantity, o.intent_reason) for o in closes) == [
        (SCHWAB, "SELL", 1, "0dte_close"), (TASTYTRADE, "SELL", 2, "0dte_close")]
    assert all(o.option is not None and o.option.strike == atm.strike for o in closes)
    assert rig.paper[TASTYTRADE].positions() == [] or all(p.quantity == 0 for p in rig.paper[TASTYTRADE].positions())
    assert "0DTE time exit" in (runner.status.last_signal or "")


def test_zeroday_does_nothing_on_a_day_without_a_session(real_store, replay_settings) -> None:
    clock = TestClock(session_minute(HOLIDAY, 9, 30))
    rig = build_rig(real_store, replay_settings, time_ns=clock)
    try:
        _add_zeroday(rig)
        open_ns = session_minute(HOLIDAY, 9, 30)
        clock.now_ns = open_ns + len(ZD_CLOSES) * MINUTE_NS
        runner = rig.supervisor._runners[("zeroday", "SPX")]
        rig.wait_idle("zeroday", "SPX")
        for i, close in enumerate(ZD_CLOSES + [ZD_CLOSES[-1]]):  # the lines would cross at the end
            rig.push([Trade("SPX", open_ns + i * MINUTE_NS + SECOND, close, 0)])
        rig.wait_caught_up("zeroday", "SPX")
        # Bars arrived, but there is no SPX session that day: none was evaluated.
        assert runner.status.last_bar is None and runner.strategy.last_signal is None
        log_text = (rig.settings.log_dir / "zeroday" / "SPX.log").read_text()
        assert "is outside the SPX session: not evaluated" in log_text
        assert log_text.count("outside the SPX session") == 1  # once per run of such bars
        clock.now_ns = session_minute(HOLIDAY, 15, 45)
        rig.supervisor.housekeeping_now("zeroday")
        wait_until(lambda: runner.status.last_housekeeping is not None and "19:45" in runner.status.last_housekeeping,
                   what="housekeeping at 15:45")
        rig.wait_idle("zeroday", "SPX")
        assert rig.orders.orders(limit=10) == []
        assert runner.strategy.target.value == "FLAT"
    finally:
        rig.supervisor.shutdown()
