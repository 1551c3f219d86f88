"""The strategy engine end to end on real Redis and fakeredis: trades -> bar builder -> Redis bar
stream -> strategy thread -> order manager -> paper brokers, compared with an independent
computation of the EMA-crossover rules."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest

from domain.market import Trade
from domain.orders import SCHWAB, TASTYTRADE
from engine.supervisor import NothingEnabledError, TriggerError
from tests.engine.conftest import MINUTE_NS, EngineRig, build_rig, wait_until

START = 1719928800 * 1_000_000_000  # 2024-07-02 14:00 UTC, a Tuesday inside the CME session


def ema_series(values: list[float], n: int) -> list[float | None]:
    """TA-Lib convention, written independently: SMA seed at n-1, then alpha = 2/(n+1)."""
    out: list[float | None] = [None] * len(values)
    if len(values) < n:
        return out
    value = sum(values[:n]) / n
    out[n - 1] = value
    for i in range(n, len(values)):
        value = value + (2 / (n + 1)) * (values[i] - value)
        out[i] = value
    return out


def expected_targets(closes: list[float], fast: int, slow: int) -> list[tuple[int, str]]:
    f, s = ema_series(closes, fast), ema_series(closes, slow)
    signals = []
    for t in range(1, len(closes)):
        if None in (f[t], s[t], f[t - 1], s[t - 1]):
            continue
        if f[t] > s[t] and f[t - 1] <= s[t - 1]:
            signals.append((t, "LONG"))
        elif f[t] < s[t] and f[t - 1] >= s[t - 1]:
            signals.append((t, "SHORT"))
    return signals


CLOSES = [100.0] * 6 + [101.0, 102.0, 103.0, 103.5, 102.0, 100.0, 98.0, 97.0, 97.5, 99.0, 101.0, 102.0]


def run_bars(rig: EngineRig, symbol: str, closes: list[float]) -> list[float]:
    """Feed one bar at a time in lock-step. Bar i's trades: open = close - 0.25, then close twice.
    Returns each bar's open (the price a signal on the previous bar fills at)."""
    opens = []
    for i, close in enumerate(closes):
        t0 = START + i * MINUTE_NS
        open_ = close - 0.25
        opens.append(open_)
        first = Trade(symbol, t0 + 1_000_000_000, open_, 1)
        rest = [Trade(symbol, t0 + 20_000_000_000, close, 1), Trade(symbol, t0 + 40_000_000_000, close, 1)]
        if i == 0:
            rig.push([first])
        else:  # the first trade of bar i completes bar i-1; wait for the thread to act on it
            rig.push_bar_and_wait("ema", [first], t0)
        rig.push(rest)
    return opens


def test_ema_crossover_trades_match_independent_computation(rig: EngineRig) -> None:
    rig.add_ticker(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                   tastytrade_quantity=2, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)
    started = rig.supervisor.start_strategy("ema")
    assert started.started == ["/MES"]
    opens = run_bars(rig, "/MES", CLOSES)

    # The last bar never completes (no later trade), so signals come from bars 0..n-2.
    signals = expected_targets(CLOSES[:-1], 2, 4)
    assert [s for _, s in signals] == ["LONG", "SHORT", "LONG"], signals  # the fixture really reverses

    fills = [o for o in reversed(rig.orders.orders(strategy="ema", limit=100)) if o.state.value == "FILLED"]
    # First signal opens 2; each reversal closes 2 then opens 2.
    assert [(o.side.value, o.quantity) for o in fills] == [
        ("BUY", 2), ("SELL", 2), ("SELL", 2), ("BUY", 2), ("BUY", 2)]
    # Market orders fill at the price when the bar completed: the next bar's open.
    expected_prices = [opens[signals[0][0] + 1]] + [opens[t + 1] for t, _ in signals[1:] for _ in range(2)]
    assert [Decimal(str(o.avg_fill_price)) for o in fills] == [Decimal(str(p)) for p in expected_prices]
    assert rig.position("ema", "/MES", TASTYTRADE) == 2
    assert rig.paper[TASTYTRADE].positions()[0].quantity == 2
    assert rig.orders.orders(broker=SCHWAB) == []  # schwab_quantity 0: nothing sent there

    log_text = (rig.settings.log_dir / "ema" / "MES.log").read_text()
    assert "signal LONG (signal)" in log_text and "fast=" in log_text


def test_second_start_starts_nothing_twice_and_stop_is_prompt(rig: EngineRig) -> None:
    rig.add_ticker(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                   tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)
    rig.supervisor.start_strategy("ema")
    again = rig.supervisor.start_strategy("ema")
    assert again.started == [] and again.already_running == ["/MES"]
    runner = rig.supervisor._runners[("ema", "/MES")]
    wait_until(lambda: runner.status.warmed_up is not None and runner.is_alive())
    time.sleep(0.2)  # the thread is now blocked in its 10 s XREAD
    t0 = time.monotonic()
    assert rig.supervisor.stop_strategy("ema") == ["/MES"]
    assert time.monotonic() - t0 < 1.0
    assert not runner.is_alive()
    assert "ema" not in rig.supervisor.running_strategies()


def test_start_with_nothing_enabled_is_refused(rig: EngineRig) -> None:
    rig.add_ticker(strategy="ema", symbol="NVDA", timeframe="5Min", trade_enabled=False, schwab_quantity=1,
                   tastytrade_quantity=0, trend_line_1="EMA", period_1=9, trend_line_2="EMA", period_2=21)
    with pytest.raises(NothingEnabledError):
        rig.supervisor.start_strategy("ema")


def test_restart_mid_position_resumes_without_duplicate_order(real_store, replay_settings) -> None:
    store = real_store
    rig = build_rig(store, replay_settings)
    rig.add_ticker(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                   tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)
    rig.supervisor.start_strategy("ema")
    run_bars(rig, "/MES", CLOSES[:9])  # enters LONG on the first cross
    assert rig.position("ema", "/MES", TASTYTRADE) == 1
    orders_before = len(rig.orders.orders(limit=100))
    rig.supervisor.shutdown()  # process stops (SIGTERM): state saved, running set kept

    restarted = build_rig(store, replay_settings)
    resumed = restarted.supervisor.resume()
    assert resumed["ema"].started == ["/MES"]
    runner = restarted.supervisor._runners[("ema", "/MES")]
    wait_until(lambda: runner.status.warmed_up)
    assert runner.strategy.target.value == "LONG"  # restored, not re-warmed to FLAT
    # Re-delivering the last completed bar must not trade again.
    time.sleep(0.2)
    assert len(restarted.orders.orders(limit=100)) == orders_before
    assert restarted.position("ema", "/MES", TASTYTRADE) == 1
    restarted.supervisor.shutdown()


def test_crashed_thread_restarts_with_backoff_and_reports_error(rig: EngineRig, monkeypatch) -> None:
    rig.add_ticker(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                   tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)
    rig.supervisor.start_strategy("ema")
    runner = rig.supervisor._runners[("ema", "/MES")]
    calls = {"n": 0}
    original = runner.strategy.on_bar

    def flaky(bar):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return original(bar)

    monkeypatch.setattr(runner.strategy, "on_bar", flaky)
    rig.push([Trade("/MES", START + 1, 100.0, 1), Trade("/MES", START + MINUTE_NS + 1, 100.0, 1)])
    wait_until(lambda: runner.status.restarts == 1, what="a restart")
    assert runner.status.last_error == "RuntimeError: boom"
    assert runner.is_alive()
    assert "Traceback" in (rig.settings.log_dir / "ema" / "MES.log").read_text()


def test_disabling_a_ticker_with_a_position_closes_it(rig: EngineRig) -> None:
    config = rig.add_ticker(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                            tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)
    rig.supervisor.start_strategy("ema")
    run_bars(rig, "/MES", CLOSES[:9])
    assert rig.position("ema", "/MES", TASTYTRADE) == 1
    disabled = rig.add_ticker(**{**_payload(config), "trade_enabled": False})
    rig.supervisor.ticker_changed(disabled)
    assert rig.position("ema", "/MES", TASTYTRADE) == 0
    last = rig.orders.orders(limit=1)[0]
    assert last.intent_reason == "ticker_removed"
    assert ("ema", "/MES") not in rig.supervisor._runners


def test_manual_trigger_uses_the_order_path_and_is_idempotent(rig: EngineRig) -> None:
    rig.add_ticker(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                   tastytrade_quantity=3, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)
    with pytest.raises(TriggerError):  # no price yet: refuse rather than guess
        rig.supervisor.manual_trigger("ema", "/MES", "LONG")
    rig.push([Trade("/MES", START, 5000.25, 1)])
    trade = rig.supervisor.manual_trigger("ema", "/MES", "LONG")
    assert "tastytrade: filled 0->3" in trade.message
    assert [(r.broker, r.status.value, r.quantity) for r in trade.report.results] == [("tastytrade", "filled", 3)]
    rig.supervisor.manual_trigger("ema", "/MES", "long")  # a double click: already there, nothing sent
    assert len(rig.orders.orders(limit=100)) == 1
    assert rig.orders.orders(limit=1)[0].intent_reason == "manual"
    rig.supervisor.manual_trigger("ema", "/MES", "CLOSE")
    assert rig.position("ema", "/MES", TASTYTRADE) == 0
    with pytest.raises(TriggerError):
        rig.supervisor.manual_trigger("ema", "/MES", "sideways")


def _payload(config) -> dict[str, object]:
    return {"strategy": config.strategy.value, "symbol": config.symbol, "timeframe": config.timeframe,
            "trade_enabled": config.trade_enabled, "schwab_quantity": config.schwab_quantity,
            "tastytrade_quantity": config.tastytrade_quantity, "trend_line_1": config.trend_line_1.value,
            "period_1": config.period_1, "trend_line_2": config.trend_line_2.value, "period_2": config.period_2}


@pytest.mark.parametrize("quick_in_position", [False, True])
def test_bookkeeping_after_a_bar_waits_for_the_threads_still_sending_orders(rig: EngineRig, monkeypatch,
                                                                            quick_in_position: bool) -> None:
    # Two tickers close a bar together. While one is still acting on it (think: sending orders),
    # the other has made its decision but writes its log, status and state only afterwards. In a
    # position, the quick one also gets the closing trade (stops) with its bar: that does not
    # write its log early either.
    import threading

    from domain.intents import IntentReason, PositionTarget

    import engine.runner as runner_module

    monkeypatch.setattr(runner_module, "BOOKKEEPING_WAIT_SECONDS", 10.0)
    for symbol in ("/MES", "/ES"):
        rig.add_ticker(strategy="ema", symbol=symbol, timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                       tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)
    rig.supervisor.start_strategy("ema")
    busy, quick = rig.supervisor._runners[("ema", "/MES")], rig.supervisor._runners[("ema", "/ES")]
    wait_until(lambda: len(rig.supervisor._hub._subs) == 2, what="both threads reading their bars")
    release, acting = threading.Event(), threading.Event()
    real_on_bar = busy.strategy.on_bar

    def slow_on_bar(bar):  # type: ignore[no-untyped-def]
        acting.set()
        release.wait(10)
        return real_on_bar(bar)

    monkeypatch.setattr(busy.strategy, "on_bar", slow_on_bar)
    rig.push([Trade(s, START + 1_000_000_000, 6000.0, 1) for s in ("/MES", "/ES")])
    if quick_in_position:
        wait_until(lambda: rig.md.last_price("/ES") is not None, what="a price for /ES")
        quick.force_target(PositionTarget.LONG, IntentReason.MANUAL, "test", 6000.0)
        (quick_sub,) = [s for s in rig.supervisor._hub._subs if "/ES" in s.name]
        wait_until(lambda: len(quick_sub.cursors) == 2, what="the /ES thread watching its trades")
    log_before = (rig.settings.log_dir / "ema" / "ES.log").read_text() if quick_in_position else ""
    rig.push([Trade(s, START + MINUTE_NS + 1_000_000_000, 6001.0, 1) for s in ("/MES", "/ES")])  # closes both bars
    assert acting.wait(5)
    time.sleep(0.3)
    assert quick.status.last_bar is None  # decided, but its bookkeeping waits for /MES
    if quick_in_position:
        assert (rig.settings.log_dir / "ema" / "ES.log").read_text() == log_before
    release.set()
    wait_until(lambda: quick.status.last_bar is not None and busy.status.last_bar is not None, timeout=5)
    assert quick.status.last_bar["end_ns"] == START + MINUTE_NS
    assert "bar " in (rig.settings.log_dir / "ema" / "ES.log").read_text()


def test_only_strategies_with_time_rules_look_up_the_session_clock(real_store, replay_settings) -> None:
    # The calendar lookup costs every thread something on every bar; ema and supertrend have no
    # time rules, so only zeroday asks for it.
    from engine.clock import spx_session_clock

    asked: list[int] = []

    def counting_clock(now_ns: int):  # type: ignore[no-untyped-def]
        asked.append(now_ns)
        return spx_session_clock(now_ns)

    rig = build_rig(real_store, replay_settings, clock_provider=counting_clock)
    try:
        rig.add_ticker(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True,
                       schwab_quantity=0, tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)
        rig.supervisor.start_strategy("ema")
        wait_until(lambda: len(rig.supervisor._hub._subs) == 1, what="the thread reading its bars")
        rig.push_bar_and_wait("ema", [Trade("/MES", START + 1_000_000_000, 6000.0, 1),
                                      Trade("/MES", START + MINUTE_NS + 1_000_000_000, 6001.0, 1)], START + MINUTE_NS)
        assert asked == []
        rig.add_ticker(strategy="zeroday", symbol="SPX", timeframe="1Min", trade_enabled=True,
                       schwab_quantity=1, tastytrade_quantity=0, period_1=2, period_2=4)
        rig.supervisor.start_strategy("zeroday")
        rig.push_bar_and_wait("zeroday", [Trade("SPX", START + 2 * MINUTE_NS + 1_000_000_000, 5500.0, 1),
                                          Trade("SPX", START + 3 * MINUTE_NS + 1_000_000_000, 5501.0, 1)],
                              START + 3 * MINUTE_NS)
        assert asked  # before its bar (and at housekeeping)
    finally:
        rig.supervisor.shutdown()
