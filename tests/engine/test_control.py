"""engine/control.py, the operator's controls the API's trading views call, on the real supervisor
(real Redis): the running set is shared with a process that has no engine, time rules and the lack
of real prices refuse before anything is sent, and the words a manual trigger takes are the
engine's own (one table for the API and the supervisor)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from auth.users import UserStore
from config.settings import Settings
from domain.intents import PositionTarget
from domain.tickers import StrategyName
from engine import control
from engine.manual import EMA_ACTIONS, ZERODAY_ACTIONS, ManualTrade, Refusal, manual_actions
from engine.services import Services
from engine.supervisor import NothingEnabledError, RunningSet, TriggerError
from store.redis_store import Store
from tests.engine.conftest import EngineRig, build_rig

NY = ZoneInfo("America/New_York")
TUESDAY_10_00 = int(datetime(2026, 11, 24, 10, 0, tzinfo=NY).timestamp()) * 1_000_000_000
SATURDAY_12_00 = int(datetime(2026, 11, 28, 12, 0, tzinfo=NY).timestamp()) * 1_000_000_000
EMA_MES = dict(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
               tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)
ZERODAY_SPX = dict(strategy="zeroday", symbol="SPX", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                   tastytrade_quantity=1, trend_line_1="EMA", period_1=9, trend_line_2="EMA", period_2=21)


def _services(rig: EngineRig, engine: object = None, now_ns: int = TUESDAY_10_00) -> Services:
    """The container as a web process has it: with the rig's engine, or without one."""
    services = Services(settings=rig.settings, store=rig.store, users=UserStore(rig.store), tickers=rig.tickers,
                        time_ns=lambda: now_ns)
    if engine is not None:
        services.engine, services.orders = engine, rig.orders  # type: ignore[assignment]
    return services


@dataclass
class RecordingEngine:
    """Stands in for the supervisor where a test shows it is not asked: records manual triggers."""

    triggers: list[tuple[str, str, str]] = field(default_factory=list)

    def manual_trigger(self, strategy: str, symbol: str, action: str) -> ManualTrade:
        self.triggers.append((strategy, symbol, action))
        raise AssertionError("the engine was asked")


def test_a_start_recorded_without_an_engine_is_what_the_engine_resumes(rig: EngineRig) -> None:
    rig.add_ticker(**EMA_MES)
    web = _services(rig)
    assert control.start(web, StrategyName.EMA) == ("ema marked as running for /MES; the strategy engine is not "
                                                    "active in this process, so nothing trades until it starts")
    assert control.start(web, StrategyName.EMA) == "ema is already running"
    assert rig.supervisor.resume()["ema"].started == ["/MES"]
    with_engine = _services(rig, rig.supervisor)
    assert control.start(with_engine, StrategyName.EMA) == "ema is already running for /MES"
    assert control.stop(with_engine, StrategyName.EMA) == "ema stopped for /MES"
    assert control.stop(web, StrategyName.EMA) == "ema was not running"
    assert rig.supervisor.running_strategies() == set() == RunningSet(rig.store).members()


def test_a_stop_without_an_engine_is_seen_by_the_engine(rig: EngineRig) -> None:
    RunningSet(rig.store).add("ema")
    assert rig.supervisor.running_strategies() == {"ema"}
    assert control.stop(_services(rig), StrategyName.EMA) == "ema stopped"
    assert rig.supervisor.running_strategies() == set()


@pytest.mark.parametrize("with_engine", [False, True])
def test_nothing_enabled_starts_nothing_and_records_nothing(rig: EngineRig, with_engine: bool) -> None:
    rig.add_ticker(**{**EMA_MES, "trade_enabled": False})
    services = _services(rig, rig.supervisor if with_engine else None)
    with pytest.raises(NothingEnabledError, match="trade_enabled=true"):
        control.start(services, StrategyName.EMA)
    assert rig.supervisor.running_strategies() == set()


def test_a_manual_trade_without_an_engine_is_unavailable(rig: EngineRig) -> None:
    rig.add_ticker(**EMA_MES)
    with pytest.raises(control.EngineUnavailable, match="order path not available"):
        control.manual_trade(_services(rig), StrategyName.EMA, "/MES", "LONG")
    assert rig.orders.orders() == []


@pytest.mark.parametrize(("strategy", "ticker", "action", "code"), [
    (StrategyName.EMA, "/MES", "LONG", "market_closed"),
    (StrategyName.EMA, "/MES", "CLOSE", "market_closed"),  # a closed market fills at a stale price
    (StrategyName.ZERODAY, "SPX", "call", "no_session"),
])
def test_a_time_rule_refuses_before_the_engine_is_asked(rig: EngineRig, strategy: StrategyName, ticker: str,
                                                        action: str, code: str) -> None:
    rig.add_ticker(**(ZERODAY_SPX if strategy is StrategyName.ZERODAY else EMA_MES))
    engine = RecordingEngine()
    refusal = control.manual_trade(_services(rig, engine, now_ns=SATURDAY_12_00), strategy, ticker, action)
    assert isinstance(refusal, Refusal) and refusal.code == code
    assert engine.triggers == []


def test_no_real_price_source_is_a_refusal_and_sends_nothing(real_store: Store, replay_settings: Settings) -> None:
    refusing = build_rig(real_store, replay_settings, price_refusal=lambda config: f"no real prices for {config.symbol}")
    try:
        refusing.add_ticker(**EMA_MES)  # and no price yet: the refusal comes first
        done = control.manual_trade(_services(refusing, refusing.supervisor), StrategyName.EMA, "/MES", "LONG")
        assert done == Refusal("no_real_price_source", "no real prices for /MES")
        assert refusing.orders.orders() == []
    finally:
        refusing.supervisor.shutdown()


@pytest.mark.parametrize(("strategy", "sent", "word", "target"), [
    (StrategyName.ZERODAY, "PUT", "put", PositionTarget.SHORT),
    (StrategyName.ZERODAY, " call ", "call", PositionTarget.LONG),
    (StrategyName.ZERODAY, "Long", "call", PositionTarget.LONG),  # a dashboard build's name for the call
    (StrategyName.ZERODAY, "short", "put", PositionTarget.SHORT),
    (StrategyName.ZERODAY, "close", "close", PositionTarget.FLAT),
    (StrategyName.EMA, "long", "LONG", PositionTarget.LONG),
    (StrategyName.EMA, "Close", "CLOSE", PositionTarget.FLAT),
    (StrategyName.SUPERTREND, "SHORT", "SHORT", PositionTarget.SHORT),
])
def test_each_strategy_takes_its_words_in_any_case(strategy: StrategyName, sent: str, word: str,
                                                   target: PositionTarget) -> None:
    assert manual_actions(strategy).word(sent) == word
    assert manual_actions(strategy).target(sent) is target


@pytest.mark.parametrize(("strategy", "sent"), [
    (StrategyName.ZERODAY, "LONG SHORT"), (StrategyName.ZERODAY, "buy"), (StrategyName.ZERODAY, 3),
    (StrategyName.EMA, "call"), (StrategyName.EMA, "put"), (StrategyName.EMA, ""), (StrategyName.EMA, None),
])
def test_other_words_are_none(strategy: StrategyName, sent: object) -> None:
    assert manual_actions(strategy).word(sent) is None and manual_actions(strategy).target(sent) is None


@pytest.mark.parametrize(("strategy", "symbol", "words"), [
    ("zeroday", "SPX", "call, put, close (or long, short for call, put)"),
    ("ema", "/MES", "LONG, SHORT, CLOSE"),
])
def test_the_supervisor_refuses_other_words_with_the_apis_list(rig: EngineRig, strategy: str, symbol: str,
                                                                 words: str) -> None:
    """The supervisor and the API read one table: the supervisor names the same words the API's
    400 does (tests/api/test_trading.py), aliases included."""
    rig.add_ticker(**(ZERODAY_SPX if strategy == "zeroday" else EMA_MES))
    assert manual_actions(StrategyName(strategy)).describe() == words
    with pytest.raises(TriggerError, match=re.escape(f"action must be one of {words}")):
        rig.supervisor.manual_trigger(strategy, symbol, "sideways")


def test_the_words_documented_are_the_words_taken() -> None:
    assert ZERODAY_ACTIONS.words() == ["call", "put", "close", "long", "short"]
    assert EMA_ACTIONS.words() == ["LONG", "SHORT", "CLOSE"]
    assert all(ZERODAY_ACTIONS.word(w) is not None for w in ZERODAY_ACTIONS.words())
