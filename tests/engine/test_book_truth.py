"""The book is the truth the strategy follows: after every act the runner compares what the
strategy holds with what the order manager's book holds, and repairs a difference (the strategy
takes the book's side; a refused protective exit is retried until the book is flat), reporting it
through `on_divergence`. Each scenario left the strategy and the book apart on the old runner."""
from __future__ import annotations

from typing import Any

import pytest

from domain.intents import Intent, IntentReason, PositionTarget
from domain.market import Trade
from domain.orders import OrderRequest, TASTYTRADE
from domain.risk import OrderContext, RiskDecision, RiskReason
from engine.executor import IntentExecutor
from engine.runner import Divergence
from store.redis_store import Store
from tests.engine.conftest import MINUTE_NS, EngineRig, build_rig, wait_until

START = 1719928800 * 1_000_000_000  # 2024-07-02 14:00 UTC, a Tuesday inside the CME session


class Gate:
    """A pre-trade check the test opens and closes: refuse entries, or exits, or both."""

    def __init__(self) -> None:
        self.refuse_open = False
        self.refuse_close = False

    def __call__(self, order: OrderRequest, ctx: OrderContext) -> RiskDecision:
        refused = self.refuse_close if ctx.reduces_position else self.refuse_open
        return RiskDecision(False, RiskReason.HALTED, "test gate") if refused else RiskDecision.allow()

    def rate_limited(self, order: OrderRequest, ctx: OrderContext, decision: RiskDecision, count: int) -> RiskDecision:
        return RiskDecision(False, RiskReason.ORDER_RATE, "test")


@pytest.fixture
def reports() -> list[tuple[Divergence | None, str, str]]:
    return []


@pytest.fixture
def gated(real_store: Store, replay_settings: Any, reports: list[Any]) -> Any:
    built = build_rig(real_store, replay_settings, on_divergence=lambda d, s, sym: reports.append((d, s, sym)))
    gate = Gate()
    built.orders._check = gate  # the order manager's pre-trade check (the rig builds it with none)
    yield built, gate
    built.supervisor.shutdown()


def _start(rig: EngineRig, **extra: Any) -> Any:
    rig.add_ticker(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                   tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4, **extra)
    rig.supervisor.start_strategy("ema")
    return rig.ready_runner("ema", "/MES")


def _bars(rig: EngineRig, closes: list[float], start: int = START) -> None:
    for i, close in enumerate(closes):
        t0 = start + i * MINUTE_NS
        first = Trade("/MES", t0 + 1_000_000_000, close, 1)
        if i == 0:
            rig.push([first])
        else:
            rig.push_bar_and_wait("ema", [first], t0)
        rig.push([Trade("/MES", t0 + 30_000_000_000, close, 1)])


def test_a_denied_entry_leaves_the_strategy_flat_like_the_book(gated: Any, reports: list[Any]) -> None:
    rig, gate = gated
    runner = _start(rig)
    gate.refuse_open = True
    _bars(rig, [100.0] * 5 + [101.0, 102.0, 103.0])  # a bullish cross: LONG, denied
    assert "LONG (signal)" in (runner.status.last_signal or "")
    assert rig.position("ema", "/MES", TASTYTRADE) == 0
    assert runner.strategy.target is PositionTarget.FLAT and runner.status.position == "FLAT"
    noted = [d for d, _, _ in reports if d is not None]
    assert noted and noted[0].strategy_target == "FLAT" and noted[0].book == {"tastytrade": 0}
    assert "follows the book" in noted[0].note
    assert reports[-1][0] is None  # repaired: reported once, then cleared


def test_a_refused_stop_exit_is_retried_until_the_book_is_flat(gated: Any, reports: list[Any]) -> None:
    rig, gate = gated
    runner = _start(rig, stop_loss_ticks=8)  # 2 points on /MES
    rig.push([Trade("/MES", START + 1_000_000_000, 100.0, 1)])
    runner.force_target(PositionTarget.LONG, IntentReason.MANUAL, "test entry", 100.0)
    assert rig.position("ema", "/MES", TASTYTRADE) == 1 and runner.strategy.target is PositionTarget.LONG
    wait_until(lambda: runner._trade_id != "$", what="the thread to watch trades")
    gate.refuse_close = True
    rig.push([Trade("/MES", START + 2_000_000_000, 97.0, 1)])  # through the stop (98)
    wait_until(lambda: runner.status.exit_pending is not None, what="the refused exit to be noted")
    assert rig.position("ema", "/MES", TASTYTRADE) == 1  # still held: the exit was refused
    pending = [d for d, _, _ in reports if d is not None]
    assert pending and pending[-1].book == {"tastytrade": 1} and "retrying" in pending[-1].note
    assert runner.status.divergence is not None
    gate.refuse_close = False
    runner.housekeeping_now()  # a housekeeping tick retries at once (trades retry at most every second)
    wait_until(lambda: rig.position("ema", "/MES", TASTYTRADE) == 0, what="the retried exit to fill")
    wait_until(lambda: runner.status.exit_pending is None and runner.status.divergence is None,
               what="the divergence to clear")
    assert reports[-1][0] is None
    exits = sorted((o for o in rig.orders.orders(strategy="ema") if o.leg in ("close", "stop")),
                   key=lambda o: o.created_ns)
    # Refused, retried, then out by exactly one fill: the retried close, or the protective stop
    # put back at the broker while the exit was refused (the price is through it: it fills at once).
    assert [o.state.value for o in exits if o.state.value == "FILLED"] == ["FILLED"], exits
    assert {o.state.value for o in exits if o.leg == "close"} <= {"REJECTED", "FILLED"}
    assert all(o.intent_reason == "stop" for o in exits)


def test_a_flatten_that_failed_leaves_the_strategy_holding_with_its_stop(gated: Any) -> None:
    rig, gate = gated
    runner = _start(rig, stop_loss_ticks=8)
    rig.push([Trade("/MES", START + 1_000_000_000, 100.0, 1)])
    runner.force_target(PositionTarget.LONG, IntentReason.MANUAL, "test entry", 100.0)
    gate.refuse_close = True
    rig.orders.flatten_all("kill_switch")  # refused at the broker gate: still long
    rig.supervisor.sync_with_book(None)  # the old mark_flat told the strategy it was flat regardless
    assert rig.position("ema", "/MES", TASTYTRADE) == 1
    assert runner.strategy.target is PositionTarget.LONG and runner.strategy.indicators()["stop"] == 98.0
    gate.refuse_close = False
    rig.orders.flatten_all("kill_switch")
    rig.supervisor.sync_with_book(None)
    assert runner.strategy.target is PositionTarget.FLAT


def test_a_stale_catch_up_signal_does_not_move_the_strategy(real_store: Store, replay_settings: Any) -> None:
    clock = {"now": START + 3_600 * 1_000_000_000}  # an hour after the bars: every bar is stale
    rig = build_rig(real_store, replay_settings, time_ns=lambda: clock["now"], skip_stale_signals=True)
    try:
        runner = _start(rig)
        _bars(rig, [100.0] * 5 + [101.0, 102.0, 103.0])
        assert rig.position("ema", "/MES", TASTYTRADE) == 0
        assert runner.strategy.target is PositionTarget.FLAT  # the old runner said LONG here
    finally:
        rig.supervisor.shutdown()


def test_a_stale_catch_up_signal_already_sent_to_a_broker_is_finished(real_store: Store, replay_settings: Any) -> None:
    """A crash between the brokers' orders of one signal: after the restart its bar is stale, but
    the decision already reached a broker, so it is finished, not left split."""
    clock = {"now": START + 3_600 * 1_000_000_000}
    rig = build_rig(real_store, replay_settings, time_ns=lambda: clock["now"], skip_stale_signals=True)
    sent_before: list[tuple[str, int]] = []
    real_intent_sent = rig.orders.intent_sent

    def intent_sent(strategy: str, symbol: str, broker: str, event_ts_ns: int) -> bool:
        sent_before.append((broker, event_ts_ns))
        return True  # as if it had been claimed before the crash

    try:
        rig.orders.intent_sent = intent_sent  # type: ignore[method-assign]
        runner = _start(rig)
        _bars(rig, [100.0] * 5 + [101.0, 102.0, 103.0])
        assert sent_before, "the stale signal was looked up in the book"
        assert rig.position("ema", "/MES", TASTYTRADE) == 1
        assert runner.strategy.target is PositionTarget.LONG
        # The order manager's answer: planned at the broker it was sent to, at no other.
        ts = sent_before[0][1]
        assert real_intent_sent("ema", "/MES", TASTYTRADE, ts) is True
        assert real_intent_sent("ema", "/MES", "schwab", ts) is False
    finally:
        rig.supervisor.shutdown()


class _Recorder:
    def __init__(self) -> None:
        self.targets: list[Any] = []

    def move_all(self, targets: list[Any]) -> list[Any]:
        self.targets += targets
        return []


def test_a_halted_ticker_still_lets_its_way_out_through() -> None:
    from domain.tickers import TickerConfig
    recorder = _Recorder()
    executor = IntentExecutor(recorder, halted=lambda s, sym: "reconciliation mismatch")  # type: ignore[arg-type]
    config = TickerConfig.from_payload({"strategy": "ema", "symbol": "/MES", "timeframe": "1Min",
                                        "tastytrade_quantity": 1, "schwab_quantity": 0, "trade_enabled": True,
                                        "trend_line_1": "EMA", "period_1": 2, "trend_line_2": "EMA", "period_2": 4})
    entry = executor.execute(Intent("ema", "/MES", PositionTarget.LONG, IntentReason.SIGNAL, "x", 1, 1.0), config)
    assert recorder.targets == [] and "halted" in entry.errors["all"]
    executor.execute(Intent("ema", "/MES", PositionTarget.FLAT, IntentReason.STOP, "x", 2, 1.0), config)
    assert [t.target_quantity for t in recorder.targets] == [0]


def test_a_held_position_keeps_its_stop_resting_at_the_broker_through_stop_trading(gated: Any) -> None:
    rig, _gate = gated
    runner = _start(rig, stop_loss_ticks=8)  # 2 points on /MES
    rig.push([Trade("/MES", START + 1_000_000_000, 100.0, 1)])
    runner.force_target(PositionTarget.LONG, IntentReason.MANUAL, "test entry", 100.0)
    (stop,) = [o for o in rig.paper[TASTYTRADE].open_orders()]
    placed = rig.orders.order(stop.client_order_id)
    assert placed.leg == "stop" and placed.stop_price == 98 and placed.quantity == 1
    rig.supervisor.stop_strategy("ema")  # the thread is gone; the position and its stop stay
    for update in rig.paper[TASTYTRADE].on_trade("/MES", 97.75, START + 5_000_000_000):
        rig.orders.on_order_update(TASTYTRADE, update)
    assert rig.position("ema", "/MES", TASTYTRADE) == 0  # the broker's stop got it out
    fills = [o for o in rig.orders.orders(strategy="ema") if o.state.value == "FILLED"]
    assert sorted(o.leg for o in fills) == ["open", "stop"]  # one exit: the local stop never doubled it
