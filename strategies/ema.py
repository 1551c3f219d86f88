"""EMA crossover (`ema`): stop-and-reverse on trend-line crosses, with an optional stop-loss.

Rules (issue 5, "EMA crossover"):
- fast = trend_line_1(period_1), slow = trend_line_2(period_2); each EMA, SMA or WilderSmoother.
- On each completed bar t where both lines are defined at t-1 *and* t:
  bullish cross  <=> fast[t] > slow[t] and fast[t-1] <= slow[t-1]
  bearish cross  <=> fast[t] < slow[t] and fast[t-1] >= slow[t-1]
  Touching (fast == slow) is "not above" and "not below": a bar that only touches is no cross,
  and a cross *out of* a touch counts (e.g. equal at t-1, above at t -> bullish).
- Bullish: target LONG (from FLAT, or from SHORT = stop-and-reverse). Bearish: mirror. A cross
  in the direction already held emits nothing.
- Optional stop-loss, default off: `stop_loss_ticks` x the instrument's tick size, or
  `stop_loss_atr` x ATR(atr_period) taken at entry (when both are set the nearer stop applies).
  The stop level is entry -/+ distance and is fixed for the life of the position. It is checked
  on every trade (`on_trade`, price <= stop for a long, >= for a short) and at each bar close
  against that bar's low/high (a bar's range is checked only for bars completed after the entry).
  When hit the target goes FLAT (reason STOP) and stays flat until the next cross.
  With an ATR stop configured no entry is taken before the ATR is defined (it is part of warm-up),
  so a position never exists without the stop the trader asked for.

Bars at or before the last processed bar (`end_ns` not increasing, e.g. a replay after restart)
are ignored, so feeding the same bar twice never emits the same intent twice.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

from config.instruments import CATALOG, Symbol
from domain.intents import Intent, IntentReason, PositionTarget
from domain.market import Bar, Trade
from domain.tickers import TickerConfig
from strategies.base import Strategy
from strategies.indicators import ATR, advance_apart, make_line

STATE_VERSION = 1


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


class PositionStrategy(Strategy):
    """Bookkeeping shared by the three strategies: the target the strategy asked for, its entry,
    bar de-duplication and the common part of state()."""

    name: ClassVar[str] = "?"

    def __init__(self, config: TickerConfig) -> None:
        super().__init__(config)
        self.entry_price: float | None = None
        self.entry_ts_ns: int | None = None  # trades before this are stale and never trigger stops
        self.last_bar_end_ns: int | None = None
        self.last_close: float | None = None
        self.last_trade_price: float | None = None

    # -- helpers -----------------------------------------------------------------------------
    def _intent(self, target: PositionTarget, reason: IntentReason, detail: str, ts_ns: int, price: float,
                stop_distance: float | None = None) -> Intent:
        self.last_signal = f"{target} ({reason}): {detail}"  # str enums format as their values
        return Intent(self.name, self.symbol, target, reason, detail, ts_ns, price, stop_distance)

    def _accept_bar(self, bar: Bar) -> bool:
        """False for a bar already processed (end_ns not after the last one); raises for a bar of
        another symbol, which is a wiring bug that must not move this ticker's lines."""
        if bar.symbol != self.symbol:
            raise ValueError(f"{self.name}/{self.symbol} was fed a bar of {bar.symbol}")
        if self.last_bar_end_ns is not None and bar.end_ns <= self.last_bar_end_ns:
            return False
        return True

    def _enter(self, target: PositionTarget, price: float, ts_ns: int) -> None:
        self.target = target
        if target is PositionTarget.FLAT:
            self.entry_price = None
            self.entry_ts_ns = None
        else:
            self.entry_price = price
            self.entry_ts_ns = ts_ns

    def set_position(self, target: PositionTarget, entry_price: float | None = None) -> None:
        """The position changed outside the strategy. A LONG/SHORT arms the exits from
        `entry_price`, or from the last known price (last trade, else last close) when None."""
        target = PositionTarget(target)
        if target is PositionTarget.FLAT:
            self._enter(target, 0.0, 0)
            return
        price = entry_price if entry_price is not None else (
            self.last_trade_price if self.last_trade_price is not None else self.last_close)
        self.target = target
        self.entry_price = None if price is None else float(price)
        # Trades stamped before the manual change are still valid risk for the new position's
        # stops only from now on; we do not know "now", so accept any trade after the last bar.
        self.entry_ts_ns = self.last_bar_end_ns or 0

    def _base_state(self) -> dict[str, Any]:
        return {
            "strategy": self.name, "symbol": self.symbol, "version": STATE_VERSION,
            "target": self.target.value, "entry_price": self.entry_price, "entry_ts_ns": self.entry_ts_ns,
            "last_bar_end_ns": self.last_bar_end_ns, "last_close": self.last_close,
            "last_trade_price": self.last_trade_price, "last_signal": self.last_signal,
        }

    def _check_identity(self, state: dict[str, Any]) -> None:
        """Raise ValueError, before anything is changed, for another strategy's or version's state."""
        if state.get("strategy") != self.name or state.get("symbol") != self.symbol:
            raise ValueError(f"state is for {state.get('strategy')}/{state.get('symbol')}, "
                             f"not {self.name}/{self.symbol}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state version {state.get('version')}")

    def _restore_base(self, state: dict[str, Any]) -> None:
        self.target = PositionTarget(state["target"])
        self.entry_price = _opt(state["entry_price"])
        self.entry_ts_ns = None if state["entry_ts_ns"] is None else int(state["entry_ts_ns"])
        self.last_bar_end_ns = None if state["last_bar_end_ns"] is None else int(state["last_bar_end_ns"])
        self.last_close = _opt(state["last_close"])
        self.last_trade_price = _opt(state["last_trade_price"])
        self.last_signal = state["last_signal"]


class EmaCrossStrategy(PositionStrategy):
    """Stop-and-reverse trend-line crossover; see the module docstring for the exact rules."""

    name: ClassVar[str] = "ema"
    price_lines: ClassVar[tuple[str, ...]] = ("fast", "slow", "stop")

    def __init__(self, config: TickerConfig) -> None:
        super().__init__(config)
        self.fast = make_line(config.trend_line_1, config.period_1)
        self.slow = make_line(config.trend_line_2, config.period_2)
        self.atr = ATR(config.atr_period)
        # The ATR is only maintained when a rule uses it (the ATR stop): it is ~a third of the
        # per-bar cost otherwise. Without it `indicators()["atr"]` is None (not computed), not a
        # stale number. Set True to compute it anyway (the backtester does for bars.csv).
        self.compute_atr: bool = config.stop_loss_atr > 0
        self._stops_on = config.stop_loss_ticks > 0 or config.stop_loss_atr > 0  # = stop_configured (config is frozen)
        self.fast_label = f"{config.trend_line_1.value}{config.period_1}"
        self.slow_label = f"{config.trend_line_2.value}{config.period_2}"
        instrument = CATALOG.get(Symbol(config.symbol))
        self.tick_size: float | None = float(instrument.tick_size) if instrument is not None else None
        if config.stop_loss_ticks > 0 and self.tick_size is None:
            raise ValueError(f"stop_loss_ticks needs a catalog instrument; {config.symbol} is unknown")
        self.prev_fast: float | None = None  # line values at t-1 (the previous bar)
        self.prev_slow: float | None = None
        self.stop_price: float | None = None

    # -- rules -------------------------------------------------------------------------------
    def warmup_bars(self) -> int:
        # Both lines defined at t-1 and t: the slow line's first value is at bar period_2 - 1.
        bars = max(self.config.period_1, self.config.period_2) + 1
        if self.config.stop_loss_atr > 0:
            bars = max(bars, self.config.atr_period + 1)  # ATR's first value is at bar atr_period
        return bars

    @property
    def warmed_up(self) -> bool:
        """Both lines are defined (the next bar's cross compares them with its own values), and
        the ATR when the ATR stop is configured (no entry is taken without it)."""
        return (self.fast.value is not None and self.slow.value is not None
                and (self.config.stop_loss_atr <= 0 or self.atr.value is not None))

    def stop_distance(self) -> float | None:
        """Points from entry to the stop with the current ATR; None when no stop is configured or
        the ATR stop is configured but the ATR is not defined yet."""
        distances: list[float] = []
        if self.config.stop_loss_ticks > 0 and self.tick_size is not None:
            distances.append(float(Decimal(self.config.stop_loss_ticks) * Decimal(str(self.tick_size))))
        if self.config.stop_loss_atr > 0:
            if self.atr.value is None:
                return None
            distances.append(self.config.stop_loss_atr * self.atr.value)
        return min(distances) if distances else None

    @property
    def stop_configured(self) -> bool:
        return self.config.stop_loss_ticks > 0 or self.config.stop_loss_atr > 0

    def _arm_stop(self) -> None:
        dist = self.stop_distance()
        if dist is None or self.entry_price is None or self.target is PositionTarget.FLAT:
            self.stop_price = None
        elif self.target is PositionTarget.LONG:
            self.stop_price = self.entry_price - dist
        else:
            self.stop_price = self.entry_price + dist

    def _stop_hit(self, low: float, high: float) -> bool:
        if self.stop_price is None:
            return False
        if self.target is PositionTarget.LONG:
            return low <= self.stop_price
        if self.target is PositionTarget.SHORT:
            return high >= self.stop_price
        return False

    def _cross(self, f: float | None, s: float | None) -> PositionTarget | None:
        """LONG for a bullish cross at this bar, SHORT for a bearish one, else None."""
        pf, ps = self.prev_fast, self.prev_slow
        if f is None or s is None or pf is None or ps is None:
            return None
        if f > s and pf <= ps:
            return PositionTarget.LONG
        if f < s and pf >= ps:
            return PositionTarget.SHORT
        return None

    def _entries_allowed(self) -> bool:
        return not (self.config.stop_loss_atr > 0 and self.atr.value is None)

    def _update_lines(self, bar: Bar) -> tuple[float | None, float | None]:
        fast, slow = self.fast, self.slow
        self.prev_fast, self.prev_slow = fast.value, slow.value
        close = bar.close
        f = fast.update(close)
        s = slow.update(close)
        if self.compute_atr:
            self.atr.update(bar.high, bar.low, close)
        self.last_bar_end_ns = bar.end_ns
        self.last_close = close
        return f, s

    def _cross_detail(self, side: PositionTarget, f: float, s: float) -> str:
        word = "above" if side is PositionTarget.LONG else "below"
        return (f"{self.fast_label} {f:.6g} crossed {word} {self.slow_label} {s:.6g} "
                f"(prev {self.prev_fast:.6g} vs {self.prev_slow:.6g})")

    def on_bar(self, bar: Bar) -> list[Intent]:
        # The hot path of a backtest (once per bar): `_update_lines` and `_cross` are inlined here
        # (same statements, same order) and the config's stop switch is read once (`_stops_on`).
        end = bar.end_ns
        last = self.last_bar_end_ns
        if (last is not None and end <= last) or bar.symbol != self.symbol:
            if not self._accept_bar(bar):
                return []
        intents: list[Intent] = []
        # 1. The bar's range happened while the position was held: stop first.
        if self.stop_price is not None and self._stop_hit(bar.low, bar.high):
            intents.append(self._stop_intent(end, bar.close, f"bar low {bar.low} high {bar.high}"))
        # 2. Lines at the close (`_update_lines`).
        fast, slow = self.fast, self.slow
        self.prev_fast = pf = fast.value
        self.prev_slow = ps = slow.value
        close = bar.close
        f = fast.update(close)
        s = slow.update(close)
        if self.compute_atr:
            self.atr.update(bar.high, bar.low, close)
        self.last_bar_end_ns = end
        self.last_close = close
        target = self.target
        if self.stop_price is None and target is not PositionTarget.FLAT and self._stops_on:
            self._arm_stop()  # a position resumed before the ATR was defined: its ATR stop, as soon as it is
        # 3. The cross (`_cross`): both lines defined at t-1 and t.
        if f is None or s is None or pf is None or ps is None:
            return intents
        if f > s:
            if pf > ps:
                return intents
            side = PositionTarget.LONG
        elif f < s:
            if pf < ps:
                return intents
            side = PositionTarget.SHORT
        else:
            return intents
        if side is not target and self._entries_allowed():
            self._enter(side, close, end)
            self._arm_stop()
            dist = self.stop_distance() if self._stops_on else None
            intents.append(self._intent(side, IntentReason.SIGNAL, self._cross_detail(side, f, s), end, close, dist))
        return intents

    def advance_quiet_bars(self, closes: list[float], ends: list[int], lo: int, hi: int) -> int:
        # A bar is quiet while the lines stay on the same side (no cross, see on_bar) and there
        # is no stop to check or arm and no ATR to update; the first bar that is not goes to on_bar.
        if self.stop_price is not None or self.compute_atr or (self._stops_on and self.target is not PositionTarget.FLAT):
            return lo
        last = self.last_bar_end_ns
        if lo >= hi or (last is not None and ends[lo] <= last):
            return lo
        k, pf, ps = advance_apart(self.fast, self.slow, closes, lo, hi)
        if k > lo:
            self.prev_fast, self.prev_slow = pf, ps
            self.last_bar_end_ns = ends[k - 1]
            self.last_close = closes[k - 1]
        return k

    def _stop_intent(self, ts_ns: int, price: float, what: str) -> Intent:
        side, stop = self.target, self.stop_price
        self._enter(PositionTarget.FLAT, price, ts_ns)
        self.stop_price = None
        return self._intent(PositionTarget.FLAT, IntentReason.STOP,
                            f"{side.value} stop {stop:.6g} hit ({what}); flat until the next cross", ts_ns, price)

    def on_trade(self, trade: Trade) -> list[Intent]:
        if trade.symbol != self.symbol:
            return []
        self.last_trade_price = trade.price
        if self.entry_ts_ns is not None and trade.ts_ns < self.entry_ts_ns:
            return []  # stale trade from before the entry
        if self._stop_hit(trade.price, trade.price):
            return [self._stop_intent(trade.ts_ns, trade.price, f"trade {trade.price}")]
        return []

    def set_position(self, target: PositionTarget, entry_price: float | None = None) -> None:
        super().set_position(target, entry_price)
        self._arm_stop()

    def indicators(self) -> dict[str, float | None]:
        """Latest values; "atr" is None when it is not computed (`compute_atr` False: no ATR stop)."""
        return {"fast": self.fast.value, "slow": self.slow.value, "atr": self.atr.value if self.compute_atr else None,
                "stop": self.stop_price}

    def state(self) -> dict[str, Any]:
        return {**self._base_state(), "fast": self.fast.state(), "slow": self.slow.state(), "atr": self.atr.state(),
                "prev_fast": self.prev_fast, "prev_slow": self.prev_slow, "stop_price": self.stop_price}

    def restore(self, state: dict[str, Any]) -> None:
        # Identity, then indicators into fresh objects: a mismatch (other strategy, changed periods)
        # raises before this strategy is touched, and the engine re-warms from history instead.
        self._check_identity(state)
        fast, slow, atr = (make_line(self.config.trend_line_1, self.config.period_1),
                           make_line(self.config.trend_line_2, self.config.period_2), ATR(self.config.atr_period))
        fast.restore(state["fast"])
        slow.restore(state["slow"])
        atr.restore(state["atr"])
        self._restore_base(state)
        self.fast, self.slow, self.atr = fast, slow, atr
        self.prev_fast, self.prev_slow = _opt(state["prev_fast"]), _opt(state["prev_slow"])
        self.stop_price = _opt(state["stop_price"])
