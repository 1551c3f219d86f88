"""A position kept across a rebuild of the strategy (ticker edited while holding it, process
restart) keeps its exits armed from the order manager's average price, and the status shows it."""
from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from config.timeframes import Timeframe
from domain.market import Trade
from domain.orders import TASTYTRADE
from tests.engine.conftest import MINUTE_NS, EngineRig, build_rig, wait_until
from tests.engine.test_strategy_threads import CLOSES, run_bars
from tests.engine.test_supertrend_zeroday import ENTRY_BAR, SECOND, ST_CLOSES, feed_bars

START = 1719928800 * 1_000_000_000  # 2024-07-02 14:00 UTC, a Tuesday inside the CME session
EMA_TICKER = dict(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                  tastytrade_quantity=2, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)


def _long_ema(rig: EngineRig) -> float:
    """Start ema on /MES and run it into LONG 2; the order manager's average price."""
    rig.add_ticker(**EMA_TICKER)
    rig.supervisor.start_strategy("ema")
    run_bars(rig, "/MES", CLOSES[:9])  # the first cross enters LONG
    book = rig.orders.position("ema", "/MES", TASTYTRADE)
    assert book.quantity == 2
    return float(book.avg_price)


def _edited(rig: EngineRig, name: str, **payload: object):
    """What add-ticker does for an existing ticker: store it, restart its thread; the new runner
    once it has resumed."""
    config = rig.add_ticker(**payload)
    rig.supervisor.ticker_changed(config)
    runner = rig.supervisor._runners[(name, config.symbol)]
    wait_until(lambda: runner._prepared and runner.status.warmed_up and len(rig.supervisor._hub._subs) == 1,
               what="the edited ticker's thread to resume")
    rig.wait_idle(name, config.symbol)
    return runner


def test_editing_a_ticker_in_a_position_arms_its_stop_from_the_average_price(rig: EngineRig) -> None:
    avg = _long_ema(rig)
    runner = _edited(rig, "ema", **{**EMA_TICKER, "stop_loss_ticks": 2})

    strategy = runner.strategy
    assert strategy.target.value == "LONG"
    assert strategy.entry_price == pytest.approx(avg)
    assert strategy.stop_price == pytest.approx(avg - 2 * 0.25)  # /MES tick 0.25
    status = rig.supervisor.strategies_status()["ema"]["tickers"]["/MES"]
    assert status["indicators"]["stop"] == pytest.approx(avg - 0.5)
    log_text = (rig.settings.log_dir / "ema" / "MES.log").read_text()
    assert "parameters changed since the saved state" in log_text
    assert "order manager average price" in log_text

    # The stop really fires: a trade through it closes the position.
    t = START + 9 * MINUTE_NS
    rig.push([Trade("/MES", t + SECOND, avg - 0.25, 1)])  # above the stop: nothing
    rig.wait_idle("ema", "/MES")
    assert rig.position("ema", "/MES", TASTYTRADE) == 2
    rig.push([Trade("/MES", t + 2 * SECOND, avg - 0.75, 1)])
    wait_until(lambda: rig.position("ema", "/MES", TASTYTRADE) == 0, what="the stop exit")
    assert rig.orders.orders(limit=1)[0].intent_reason == "stop"
    wait_until(lambda: runner.status.position == "FLAT", what="the status to follow the stop")


def test_editing_a_ticker_in_a_position_arms_an_atr_stop_once_warmed_up(rig: EngineRig) -> None:
    avg = _long_ema(rig)
    runner = _edited(rig, "ema", **{**EMA_TICKER, "stop_loss_atr": 1.5, "atr_period": 3})

    strategy = runner.strategy
    atr = strategy.atr.value
    assert atr is not None and atr > 0  # defined by the warm-up
    assert strategy.target.value == "LONG" and strategy.entry_price == pytest.approx(avg)
    assert strategy.stop_price == pytest.approx(avg - 1.5 * atr)


def test_status_shows_the_resumed_position_after_an_edit_and_after_new_bars(rig: EngineRig) -> None:
    _long_ema(rig)
    runner = _edited(rig, "ema", **{**EMA_TICKER, "stop_loss_ticks": 400})  # far away: never hit here
    status = rig.supervisor.strategies_status()["ema"]["tickers"]["/MES"]
    assert status["position"] == "LONG"
    assert status["last_signal"] and status["last_signal"].startswith("LONG")

    # A bar with no signal keeps showing the position.
    t = START + 9 * MINUTE_NS
    rig.push([Trade("/MES", t + SECOND, CLOSES[8], 1)])
    rig.push_bar_and_wait("ema", [Trade("/MES", t + MINUTE_NS + SECOND, CLOSES[8], 1)], t + MINUTE_NS)
    assert runner.status.position == "LONG"
    assert rig.supervisor.strategies_status()["ema"]["tickers"]["/MES"]["position"] == "LONG"


def test_status_shows_the_resumed_position_after_a_process_restart(real_store, replay_settings) -> None:
    rig = build_rig(real_store, replay_settings)
    try:
        _long_ema(rig)
    finally:
        rig.supervisor.shutdown()
    restarted = build_rig(real_store, replay_settings)
    try:
        restarted.supervisor.resume()
        runner = restarted.ready_runner("ema", "/MES")
        assert runner.strategy.target.value == "LONG"
        status = restarted.supervisor.strategies_status()["ema"]["tickers"]["/MES"]
        assert status["position"] == "LONG"
        assert status["last_signal"] and status["last_signal"].startswith("LONG")
    finally:
        restarted.supervisor.shutdown()


def test_editing_a_supertrend_ticker_in_a_position_reseeds_its_exits_from_the_average_price(rig: EngineRig) -> None:
    payload = dict(strategy="supertrend", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                   tastytrade_quantity=2)
    rig.add_ticker(**payload)
    rig.supervisor.start_strategy("supertrend")
    feed_bars(rig, "supertrend", "/MES", START, ST_CLOSES[:ENTRY_BAR + 2], spread=0.25)  # entered at bar 35's close
    book = rig.orders.position("supertrend", "/MES", TASTYTRADE)
    assert book.quantity == 2
    avg = float(book.avg_price)

    runner = _edited(rig, "supertrend", **{**payload, "take_profit_atr": 4.0})
    strategy = runner.strategy
    atr = strategy.st.atr.value
    assert strategy.target.value == "LONG" and atr is not None
    assert strategy.entry_price == pytest.approx(avg)
    assert strategy.best_close == pytest.approx(avg)
    assert strategy.stop_price == pytest.approx(avg - 2.0 * atr)  # trailing_stop_atr default 2
    assert strategy.target_price == pytest.approx(avg + 4.0 * atr)
    ind = rig.supervisor.strategies_status()["supertrend"]["tickers"]["/MES"]["indicators"]
    assert ind["stop"] == pytest.approx(avg - 2.0 * atr) and ind["take_profit"] == pytest.approx(avg + 4.0 * atr)


def test_resuming_a_position_with_no_known_price_says_the_stop_could_not_be_armed(rig: EngineRig) -> None:
    # A saved state from before an edit says LONG and the book holds it, but neither the order
    # manager's book nor the saved strategy has a price (and no bar has been seen to fall back on).
    config = rig.add_ticker(**{**EMA_TICKER, "stop_loss_ticks": 2})
    rig.orders.set_position("ema", "/MES", TASTYTRADE, "/MES", 2, Decimal(0), Decimal(5), "", "test: unpriced")
    runner = rig.supervisor._make_runner(config)
    stale = {"config": "the ticker before its edit", "strategy": {}, "bar_id": "0-0", "position": "LONG"}
    runner._states.put(runner.state_key, json.dumps(stale))
    runner._states.flush(5)
    rig.supervisor.start_strategy("ema")
    live = rig.supervisor._runners[("ema", "/MES")]
    wait_until(lambda: live._prepared and live.status.warmed_up is not None and len(rig.supervisor._hub._subs) == 1)
    rig.wait_idle("ema", "/MES")
    time.sleep(0.05)
    assert live.strategy.target.value == "LONG" and live.strategy.stop_price is None
    assert live.status.position == "LONG"
    log_text = (rig.settings.log_dir / "ema" / "MES.log").read_text()
    assert "the stop could not be armed" in log_text


@pytest.mark.parametrize(("saved", "book", "resumed"), [("LONG", 0, "FLAT"), ("FLAT", 2, "LONG"), ("SHORT", 2, "LONG")])
def test_a_resumed_strategy_holds_what_the_book_holds_not_what_it_saved(rig: EngineRig, saved: str, book: int,
                                                                        resumed: str) -> None:
    # A kill after a fill and before the state reached Redis: the saved state is older than the
    # book. The old runner resumed the saved side and believed it until its next act.
    config = rig.add_ticker(**{**EMA_TICKER, "stop_loss_ticks": 8})
    runner = rig.supervisor._make_runner(config)
    runner._prepare()  # a real saved state of this config, then edited to the stale side
    state = json.loads(runner._states.get(runner.state_key))
    state["strategy"]["target"] = saved
    state["position"] = saved
    runner._states.put(runner.state_key, json.dumps(state))
    runner._states.flush(5)
    if book:
        rig.orders.set_position("ema", "/MES", TASTYTRADE, "/MES", book, Decimal("6000"), Decimal(5), "", "test")
    rig.supervisor.start_strategy("ema")
    live = rig.ready_runner("ema", "/MES")
    assert live.strategy.target.value == resumed and live.status.position == resumed
    if resumed == "LONG":
        assert live.strategy.stop_price == 5998.0  # armed from the book's average price
    assert "follows the book" in (rig.settings.log_dir / "ema" / "MES.log").read_text()


def _history(rig: EngineRig, symbol: str, closes: list[float]) -> None:
    """Completed 1-minute bars in the market data history before any thread runs."""
    rig.md.ensure(symbol, Timeframe.parse("1Min"))
    for i, close in enumerate(closes):
        rig.push([Trade(symbol, START + i * MINUTE_NS + SECOND, close, 1)])
    rig.push([Trade(symbol, START + len(closes) * MINUTE_NS + SECOND, closes[-1], 1)])  # closes the last bar


def _started(rig: EngineRig, strategy: str, symbol: str):
    rig.supervisor.start_strategy(strategy)
    runner = rig.supervisor._runners[(strategy, symbol)]
    wait_until(lambda: runner._prepared and runner.status.warmed_up, what="the thread to warm up")
    return runner


def test_a_cross_on_the_last_warm_up_bar_is_not_a_position(rig: EngineRig) -> None:
    # EMA 2/4 over 100, 100, 100, 100, 102: the lines cross up on the fifth (last) warm-up bar.
    rig.add_ticker(**EMA_TICKER)
    _history(rig, "/MES", [100.0, 100.0, 100.0, 100.0, 102.0])
    runner = _started(rig, "ema", "/MES")
    assert runner.strategy.target.value == "FLAT"  # nothing was bought: the strategy must not think so
    assert runner.status.position == "FLAT"
    assert rig.position("ema", "/MES", TASTYTRADE) == 0


def test_first_start_takes_the_position_a_manual_trade_left_in_the_book(rig: EngineRig) -> None:
    rig.add_ticker(**{**EMA_TICKER, "stop_loss_ticks": 4})
    _history(rig, "/MES", [100.0, 100.0, 100.0, 100.0, 99.0, 98.0])
    rig.supervisor.manual_trigger("ema", "/MES", "LONG")  # never started: a one-off runner trades it
    avg = float(rig.orders.position("ema", "/MES", TASTYTRADE).avg_price)
    runner = _started(rig, "ema", "/MES")
    assert runner.strategy.target.value == "LONG" and runner.status.position == "LONG"
    assert runner.strategy.stop_price == pytest.approx(avg - 4 * 0.25)
