"""Supertrend reversal (`supertrend`): the 9/14/21 EMA-stack reversal candle, filtered by a real
Supertrend line, with trend-flip, ATR trailing stop, take-profit and momentum-fade exits.

Exact rules (issue 5, "Supertrend reversal"); SF, F, S = EMA 9, 14, 21 of close:
- Bullish reversal candle at bar t: SF > F > S and low[t] > SF[t], and it is the first such bar
  since SF last closed at or below F. Until SF has been seen at or below F (after the three lines
  are defined) no bullish candle can print: at start-up we cannot know whether the stack is
  "fresh". Bearish mirror: SF < F < S, high[t] < SF[t], first since SF last closed at or above F.
- Momentum fade (bullish): the first bar where SF closes at or below F after a bullish candle.
  Bearish mirror. A fade exits a position on that side to FLAT (reason MOMENTUM_FADE).
- Entry: a bullish candle while the Supertrend direction is up -> LONG; a bearish candle while it
  is down -> SHORT. An opposite signal while in a position reverses it (one intent, SIGNAL).
- Exits while LONG (mirror for SHORT), evaluated in this order:
  1. ATR trailing stop: level = max(previous level, best close since entry - trailing_stop_atr x
     ATR) updated at each bar close (it never loosens). Checked on every trade (`on_trade`:
     price <= level) and, at bar close, against the bar's low (level as it stood during the bar).
  2. Take-profit: entry + take_profit_atr x ATR at entry (fixed). Trade price >= level, or the
     bar's high >= level. When stop and target both lie inside one bar, the stop is assumed first.
  3. Supertrend direction is down at the close (trend flip) -> FLAT (TREND_FLIP).
  4. Momentum fade -> FLAT (MOMENTUM_FADE).
  trailing_stop_atr = 0 or take_profit_atr = 0 turns that exit off.
- ATR is the Supertrend's ATR(atr_period) (TA-Lib / Wilder convention).
"""
from __future__ import annotations

from typing import Any, ClassVar

from domain.intents import Intent, IntentReason, PositionTarget
from domain.market import Bar, Trade
from domain.tickers import TickerConfig
from strategies.ema import PositionStrategy, _opt
from strategies.indicators import EMA, Supertrend

SF_PERIOD, F_PERIOD, S_PERIOD = 9, 14, 21


class SupertrendStrategy(PositionStrategy):
    name: ClassVar[str] = "supertrend"
    price_lines: ClassVar[tuple[str, ...]] = ("sf", "f", "s", "supertrend", "stop", "take_profit")

    def __init__(self, config: TickerConfig) -> None:
        super().__init__(config)
        self.sf = EMA(SF_PERIOD)
        self.f = EMA(F_PERIOD)
        self.s = EMA(S_PERIOD)
        self.st = Supertrend(config.atr_period, config.multiplier)
        # Reversal-candle state machine (see module docstring).
        self.bull_armed = False  # SF closed at/below F since the last bullish candle
        self.bear_armed = False
        self.bull_active = False  # a bullish candle printed and SF has not closed at/below F since
        self.bear_active = False
        self.best_close: float | None = None
        self.stop_price: float | None = None
        self.target_price: float | None = None

    def warmup_bars(self) -> int:
        # S (EMA21) is defined from bar 20; the Supertrend from bar atr_period.
        return max(S_PERIOD, self.config.atr_period + 1)

    @property
    def warmed_up(self) -> bool:
        """The three EMAs and the Supertrend (with its ATR) are defined."""
        return None not in (self.sf.value, self.f.value, self.s.value, self.st.value)

    # -- exits -------------------------------------------------------------------------------
    def _arm_exits(self) -> None:
        """Fresh stop/target from the entry price and the current ATR (at entry)."""
        atr = self.st.atr.value
        self.best_close = self.entry_price
        self.stop_price = self.target_price = None
        if self.target is PositionTarget.FLAT or self.entry_price is None or atr is None:
            return
        sign = 1.0 if self.target is PositionTarget.LONG else -1.0
        if self.config.trailing_stop_atr > 0:
            self.stop_price = self.entry_price - sign * self.config.trailing_stop_atr * atr
        if self.config.take_profit_atr > 0:
            self.target_price = self.entry_price + sign * self.config.take_profit_atr * atr

    def _trail(self, close: float) -> None:
        """After a bar close while in a position: new best close, tightened trailing stop."""
        atr = self.st.atr.value
        if self.target is PositionTarget.FLAT or atr is None or self.config.trailing_stop_atr <= 0:
            return
        long = self.target is PositionTarget.LONG
        if self.best_close is None:
            self.best_close = close
        self.best_close = max(self.best_close, close) if long else min(self.best_close, close)
        level = self.best_close - self.config.trailing_stop_atr * atr if long else \
            self.best_close + self.config.trailing_stop_atr * atr
        if self.stop_price is None:
            self.stop_price = level
        else:
            self.stop_price = max(self.stop_price, level) if long else min(self.stop_price, level)

    def _price_exit(self, low: float, high: float) -> tuple[IntentReason, float] | None:
        """(reason, level) when the trailing stop or take-profit lies inside [low, high]."""
        if self.target is PositionTarget.LONG:
            if self.stop_price is not None and low <= self.stop_price:
                return IntentReason.STOP, self.stop_price
            if self.target_price is not None and high >= self.target_price:
                return IntentReason.TARGET, self.target_price
        elif self.target is PositionTarget.SHORT:
            if self.stop_price is not None and high >= self.stop_price:
                return IntentReason.STOP, self.stop_price
            if self.target_price is not None and low <= self.target_price:
                return IntentReason.TARGET, self.target_price
        return None

    def _flat(self, reason: IntentReason, detail: str, ts_ns: int, price: float) -> Intent:
        side = self.target
        self._enter(PositionTarget.FLAT, price, ts_ns)
        self.best_close = self.stop_price = self.target_price = None
        return self._intent(PositionTarget.FLAT, reason, f"{side.value} exit: {detail}", ts_ns, price)

    # -- events ------------------------------------------------------------------------------
    def on_trade(self, trade: Trade) -> list[Intent]:
        if trade.symbol != self.symbol:
            return []
        self.last_trade_price = trade.price
        if self.entry_ts_ns is not None and trade.ts_ns < self.entry_ts_ns:
            return []
        hit = self._price_exit(trade.price, trade.price)
        if hit is None:
            return []
        reason, level = hit
        what = "trailing stop" if reason is IntentReason.STOP else "take-profit"
        return [self._flat(reason, f"{what} {level:.6g} hit by trade {trade.price}", trade.ts_ns, trade.price)]

    def _candles(self, bar: Bar, sf: float | None, f: float | None, s: float | None) -> tuple[bool, bool, bool, bool]:
        """Advance the candle state machine: (bull_candle, bear_candle, bull_fade, bear_fade)."""
        if sf is None or f is None or s is None:
            return False, False, False, False
        bull = bear = bull_fade = bear_fade = False
        if sf <= f:
            bull_fade = self.bull_active
            self.bull_active = False
            self.bull_armed = True
        elif sf > f > s and bar.low > sf and self.bull_armed:
            bull, self.bull_armed, self.bull_active = True, False, True
        if sf >= f:
            bear_fade = self.bear_active
            self.bear_active = False
            self.bear_armed = True
        elif sf < f < s and bar.high < sf and self.bear_armed:
            bear, self.bear_armed, self.bear_active = True, False, True
        return bull, bear, bull_fade, bear_fade

    def on_bar(self, bar: Bar) -> list[Intent]:
        if not self._accept_bar(bar):
            return []
        intents: list[Intent] = []
        # 1. Stop / target inside the bar (levels as they stood while the bar traded).
        hit = self._price_exit(bar.low, bar.high)
        if hit is not None:
            reason, level = hit
            what = "trailing stop" if reason is IntentReason.STOP else "take-profit"
            intents.append(self._flat(reason, f"{what} {level:.6g} inside bar low {bar.low} high {bar.high}",
                                      bar.end_ns, bar.close))
        # 2. Indicators at the close.
        sf, f, s = self.sf.update(bar.close), self.f.update(bar.close), self.s.update(bar.close)
        self.st.update(bar.high, bar.low, bar.close)
        self.last_bar_end_ns, self.last_close = bar.end_ns, bar.close
        bull, bear, bull_fade, bear_fade = self._candles(bar, sf, f, s)
        direction = self.st.direction
        vals = (f"SF {sf:.6g} F {f:.6g} S {s:.6g} supertrend {self.st.value:.6g} dir {direction:+d}"
                if None not in (sf, f, s, self.st.value, direction) else "")
        # 3. Entry / reversal signal.
        signal: PositionTarget | None = None
        if bull and direction == 1:
            signal = PositionTarget.LONG
        elif bear and direction == -1:
            signal = PositionTarget.SHORT
        if signal is not None and signal is not self.target:
            kind = "bullish" if signal is PositionTarget.LONG else "bearish"
            self._enter(signal, bar.close, bar.end_ns)
            self._arm_exits()
            dist = None if self.stop_price is None else abs(bar.close - self.stop_price)
            intents.append(self._intent(signal, IntentReason.SIGNAL,
                                        f"{kind} reversal candle with supertrend {'up' if direction == 1 else 'down'}; {vals}",
                                        bar.end_ns, bar.close, dist))
            return intents
        # 4. Trend flip, then momentum fade.
        if self.target is PositionTarget.LONG and direction == -1:
            intents.append(self._flat(IntentReason.TREND_FLIP, f"supertrend turned down; {vals}", bar.end_ns, bar.close))
        elif self.target is PositionTarget.SHORT and direction == 1:
            intents.append(self._flat(IntentReason.TREND_FLIP, f"supertrend turned up; {vals}", bar.end_ns, bar.close))
        elif self.target is PositionTarget.LONG and bull_fade:
            intents.append(self._flat(IntentReason.MOMENTUM_FADE, f"SF closed at/below F; {vals}", bar.end_ns, bar.close))
        elif self.target is PositionTarget.SHORT and bear_fade:
            intents.append(self._flat(IntentReason.MOMENTUM_FADE, f"SF closed at/above F; {vals}", bar.end_ns, bar.close))
        # 5. Still in: trail the stop with this close.
        self._trail(bar.close)
        return intents

    @property
    def stop_configured(self) -> bool:
        return self.config.trailing_stop_atr > 0

    @property
    def trade_exits_configured(self) -> bool:
        return self.config.trailing_stop_atr > 0 or self.config.take_profit_atr > 0

    def set_position(self, target: PositionTarget, entry_price: float | None = None) -> None:
        super().set_position(target, entry_price)
        self._arm_exits()

    def indicators(self) -> dict[str, float | None]:
        return {"sf": self.sf.value, "f": self.f.value, "s": self.s.value, "supertrend": self.st.value,
                "direction": None if self.st.direction is None else float(self.st.direction),
                "atr": self.st.atr.value, "stop": self.stop_price, "take_profit": self.target_price}

    def state(self) -> dict[str, Any]:
        return {**self._base_state(), "sf": self.sf.state(), "f": self.f.state(), "s": self.s.state(),
                "st": self.st.state(), "bull_armed": self.bull_armed, "bear_armed": self.bear_armed,
                "bull_active": self.bull_active, "bear_active": self.bear_active, "best_close": self.best_close,
                "stop_price": self.stop_price, "target_price": self.target_price}

    def restore(self, state: dict[str, Any]) -> None:
        self._check_identity(state)  # before touching anything (see EmaCrossStrategy.restore)
        sf, f, s = EMA(SF_PERIOD), EMA(F_PERIOD), EMA(S_PERIOD)
        st = Supertrend(self.config.atr_period, self.config.multiplier)
        sf.restore(state["sf"])
        f.restore(state["f"])
        s.restore(state["s"])
        st.restore(state["st"])
        self._restore_base(state)
        self.sf, self.f, self.s, self.st = sf, f, s, st
        self.bull_armed, self.bear_armed = bool(state["bull_armed"]), bool(state["bear_armed"])
        self.bull_active, self.bear_active = bool(state["bull_active"]), bool(state["bear_active"])
        self.best_close = _opt(state["best_close"])
        self.stop_price, self.target_price = _opt(state["stop_price"]), _opt(state["target_price"])
