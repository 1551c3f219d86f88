"""The backtest engine: the live strategy classes, the live risk check and the paper fill model,
driven over historical bars (and trades when the data has them).

Event order per bar i (the same order the live engine sees things in):
1. A market order decided at the close of bar i-1 fills at bar i's open (with tick data: bar i's
   first trade, i.e. the next trade after the decision), slippage adverse, commission per contract.
2. While a position is open, the strategy sees the bar's trades through `on_trade` (its intrabar
   stops / targets). With tick data these are the real trades and an exit fills at the triggering
   trade's price, as the paper broker fills a market order at the last trade. With bar data the
   path is O, the extreme against the position, the other extreme, C (`fills.bar_path`), and a
   stop/target fills at its own level when the path crosses it (`fills.level_fill`), at the open
   when the bar gaps through it.
3. `on_bar(bar)` at the close; its intents become the order for step 1 of bar i+1.

Stop-and-reverse is two fills at the same price: close, then open (two commissions). Every order
goes through the `PreTradeCheck` first; a denial is recorded and the strategy is told the real
position (`set_position`), exactly like the order manager does.

The loop keeps prices as integer ticks and records only events (fills, signals); the equity
curve is rebuilt with numpy afterwards. That keeps the per-bar cost to building one `Bar` and the
strategy's own O(1) update.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Callable

import numpy as np

from config.instruments import CATALOG, Instrument, Symbol
from domain.intents import Intent, IntentReason, PositionTarget
from domain.market import Bar, Trade
from domain.orders import TASTYTRADE, OrderRequest, OrderSide, PositionEffect, client_order_id
from domain.risk import OrderContext, PreTradeCheck, allow_all
from domain.tickers import TickerConfig
from strategies.base import Strategy

from backtest import fills
from backtest.data import MarketData

StrategyFactory = Callable[[TickerConfig], Strategy]
ProgressCallback = Callable[[int, int], None]  # (bars done, bars total)

_SIGN = {PositionTarget.LONG: 1, PositionTarget.SHORT: -1, PositionTarget.FLAT: 0}
_TARGET = {1: PositionTarget.LONG, -1: PositionTarget.SHORT, 0: PositionTarget.FLAT}
_CHUNK = 65_536  # bars converted to Python lists at a time: bounded memory, progress granularity
_STOP_KEYS = ("stop", "stop_price", "trailing_stop")
_TARGET_KEYS = ("target", "take_profit", "target_price")


class SimulatedClock:
    """The risk engine's clock during a backtest: the simulated event time, so its per-minute
    order-rate window and session logic see history's time, not the wall clock."""

    def __init__(self) -> None:
        self.ts_ns = 0

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.ts_ns / 1e9, UTC)


def backtest_risk_check(clock: SimulatedClock, limits: dict[str, Any] | None = None) -> PreTradeCheck | None:
    """The live `risk.engine.RiskEngine` on a private in-process fakeredis store (a backtest must
    never touch the live risk counters or trading state), or None when risk/ is not installed.
    Daily loss limits are not evaluated (nothing feeds it P&L during a backtest)."""
    try:
        from config.settings import Settings
        from risk.engine import RiskEngine
        from store.redis_store import fake_store
    except ImportError:
        return None
    engine = RiskEngine(fake_store(f"backtest-{uuid.uuid4().hex[:8]}"), Settings(), clock=clock, audit_allowed=False)
    if limits:
        engine.update_limits(limits, actor="backtest")
    return engine  # type: ignore[return-value]


def default_strategy_factory(config: TickerConfig) -> Strategy:
    """`strategies.build_strategy`, imported late so the engine module loads without it."""
    from strategies import build_strategy  # type: ignore[attr-defined]

    return build_strategy(config)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class CostSettings:
    quantity: int = 1
    commission_per_contract: Decimal = Decimal(0)
    slippage_ticks: int = 0
    starting_capital: Decimal = Decimal(100_000)


@dataclass(frozen=True, slots=True)
class RoundTrip:
    side: int  # +1 long, -1 short
    quantity: int
    entry_ns: int
    entry_ticks: int
    entry_bar: int
    entry_reason: str
    exit_ns: int
    exit_ticks: int
    exit_bar: int
    exit_reason: str


@dataclass(frozen=True, slots=True)
class Denial:
    ts_ns: int
    bar: int
    side: str
    effect: str
    reason: str
    detail: str


@dataclass
class BacktestResult:
    config: TickerConfig
    costs: CostSettings
    instrument: Instrument
    data: MarketData
    trades: list[RoundTrip]
    equity: np.ndarray  # float64 per bar, at each bar's close
    position: np.ndarray  # int64 signed contracts held at each bar's close
    signals: dict[int, str]  # bar index -> the signal taken at that bar's close
    indicators: list[dict[str, float | None]] | None
    denials: list[Denial]
    elapsed_s: float
    warmup_bars: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bars_per_second(self) -> float:
        return len(self.data.bars) / self.elapsed_s if self.elapsed_s > 0 else float("inf")


class BacktestEngine:
    def __init__(
        self,
        config: TickerConfig,
        costs: CostSettings,
        *,
        strategy_factory: StrategyFactory | None = None,
        risk_check: PreTradeCheck | None = None,
        clock: SimulatedClock | None = None,
    ) -> None:
        self.config = config
        self.costs = costs
        self.instrument = CATALOG[Symbol(config.symbol)]
        self.strategy_factory = strategy_factory or default_strategy_factory
        self.risk_check: PreTradeCheck = risk_check or allow_all
        self.clock = clock  # set to each order's time before the risk check
        self.cost_model = fills.CostModel(self.instrument.tick_size, self.instrument.multiplier,
                                          costs.commission_per_contract, costs.slippage_ticks)

    # ------------------------------------------------------------------------------------------
    def run(self, data: MarketData, *, record_bars: bool = True, progress: ProgressCallback | None = None) -> BacktestResult:
        strategy = self.strategy_factory(self.config)
        bars = data.bars
        n = len(bars)
        symbol, tf_raw = self.config.symbol, self.config.timeframe
        tick = float(self.instrument.tick_size)
        slip = self.costs.slippage_ticks
        qty = self.costs.quantity
        check_orders = self.risk_check is not allow_all
        # A strategy whose on_trade can never act (the EMA strategy without a stop) is not fed
        # trades: identical results, and the per-bar cost stays one on_bar call.
        feed_trades = bool(getattr(strategy, "stop_configured", True)) and type(strategy).on_trade is not Strategy.on_trade

        ticks = data.ticks
        tick_lo: np.ndarray | None = None
        tick_hi: np.ndarray | None = None
        if ticks is not None and feed_trades:
            tick_lo, tick_hi = _tick_ranges(data)

        pos = 0  # signed direction of the open position (x qty contracts)
        entry: tuple[int, int, int, str] | None = None  # (ns, ticks, bar, reason)
        trades: list[RoundTrip] = []
        denials: list[Denial] = []
        signals: dict[int, str] = {}
        indicators: list[dict[str, float | None]] | None = [] if record_bars else None
        pending: Intent | None = None

        def execute(target: int, fill_ticks_of: Callable[[int], int], ts: int, bar: int, reason: str,
                    event_ts: int) -> None:
            """Move the position to `target` (-1/0/+1): close first, then open. `fill_ticks_of(side)`
            prices one fill for a buy (+1) or sell (-1)."""
            nonlocal pos, entry
            if target == pos:
                return
            if pos != 0:
                side = -pos
                if check_orders and not self._allowed(strategy, side, qty, True, pos, reason, event_ts, ts, bar,
                                                      denials, "close"):
                    strategy.set_position(_TARGET[pos])
                    return
                assert entry is not None
                trades.append(RoundTrip(pos, qty, entry[0], entry[1], entry[2], entry[3], ts, fill_ticks_of(side),
                                        bar, reason))
                pos, entry = 0, None
            if target != 0:
                if check_orders and not self._allowed(strategy, target, qty, False, 0, reason, event_ts, ts, bar,
                                                      denials, "open"):
                    strategy.set_position(PositionTarget.FLAT)
                    return
                pos, entry = target, (ts, fill_ticks_of(target), bar, reason)

        t0 = time.perf_counter()
        for lo in range(0, n, _CHUNK):
            hi = min(n, lo + _CHUNK)
            s_l = bars.start_ns[lo:hi].tolist()
            e_l = bars.end_ns[lo:hi].tolist()
            o_l = bars.open[lo:hi].tolist()
            h_l = bars.high[lo:hi].tolist()
            l_l = bars.low[lo:hi].tolist()
            c_l = bars.close[lo:hi].tolist()
            v_l = bars.volume[lo:hi].tolist()
            n_l = bars.trade_count[lo:hi].tolist()
            on_bar = strategy.on_bar
            for j in range(hi - lo):
                i = lo + j
                if pending is not None:
                    # 1. decided at the previous close, filled at this bar's open / first trade.
                    o = o_l[j]
                    execute(_SIGN[pending.target], lambda side, o=o: fills.market_fill_ticks(o, side, tick, slip),
                            s_l[j], i, pending.reason.value, pending.event_ts_ns)
                    pending = None
                if pos != 0 and feed_trades:
                    # 2. intrabar exits.
                    if tick_lo is not None and ticks is not None and tick_hi is not None:
                        self._feed_ticks(strategy, ticks, int(tick_lo[i]), int(tick_hi[i]), i, execute,
                                         lambda: pos, tick, slip)
                    else:
                        self._feed_path(strategy, symbol, s_l[j], e_l[j], o_l[j], h_l[j], l_l[j], c_l[j], i,
                                        execute, lambda: pos, tick, slip)
                # 3. the strategy at the close.
                intents = on_bar(Bar(symbol, tf_raw, s_l[j], e_l[j], o_l[j], h_l[j], l_l[j], c_l[j], v_l[j], n_l[j]))
                if intents:
                    last = intents[-1]
                    signals[i] = "; ".join(f"{it.target.value} ({it.reason.value}): {it.detail}" for it in intents)
                    if _SIGN[last.target] != pos:
                        pending = last
                if indicators is not None:
                    indicators.append(strategy.indicators())
            if progress is not None:
                progress(hi, n)
        if pos != 0 and n:
            # Open at the end of the data: closed at the last close like a market order would be,
            # with costs, so net P&L equals the final equity change.
            last_close = float(bars.close[n - 1])
            execute(0, lambda side: fills.market_fill_ticks(last_close, side, tick, slip), int(bars.end_ns[n - 1]),
                    n - 1, "end_of_data", int(bars.end_ns[n - 1]))
        elapsed = time.perf_counter() - t0

        equity, position = self._equity_curve(bars.close, trades, n)
        return BacktestResult(self.config, self.costs, self.instrument, data, trades, equity, position, signals,
                              indicators, denials, elapsed, strategy.warmup_bars())

    # ------------------------------------------------------------------------------------------
    def _feed_path(self, strategy: Strategy, symbol: str, start: int, end: int, o: float, h: float, low: float,
                   c: float, bar: int, execute: Callable[..., None], get_pos: Callable[[], int], tick: float,
                   slip: int) -> None:
        """Bar data: feed the assumed intrabar path to on_trade; exits at their level (fills.level_fill)."""
        path = fills.bar_path(o, h, low, c, get_pos())
        span = max(end - start, 4)
        previous: float | None = None
        for k, price in enumerate(path):
            if get_pos() == 0:
                return
            levels = strategy.indicators()
            ts = start + span * k // 4 if k < 3 else end - 1
            intents = strategy.on_trade(Trade(symbol, ts, price, 0))
            if intents:
                it = intents[-1]
                level = _level_for(it.reason, levels)
                px = price if level is None else fills.level_fill(level, previous, price)
                execute(_SIGN[it.target], lambda side, px=px: fills.market_fill_ticks(px, side, tick, slip), ts, bar,
                        it.reason.value, it.event_ts_ns)
            previous = price

    def _feed_ticks(self, strategy: Strategy, ticks: Any, lo: int, hi: int, bar: int, execute: Callable[..., None],
                    get_pos: Callable[[], int], tick: float, slip: int) -> None:
        """Tick data: real trades; an exit fills at the triggering trade (paper broker: last trade)."""
        ts_l = ticks.ts_ns[lo:hi].tolist()
        px_l = ticks.price[lo:hi].tolist()
        sz_l = ticks.size[lo:hi].tolist()
        symbol = self.config.symbol
        for ts, price, size in zip(ts_l, px_l, sz_l):
            if get_pos() == 0:
                return
            intents = strategy.on_trade(Trade(symbol, ts, price, size))
            if intents:
                it = intents[-1]
                execute(_SIGN[it.target], lambda side, p=price: fills.market_fill_ticks(p, side, tick, slip), ts, bar,
                        it.reason.value, it.event_ts_ns)

    def _allowed(self, strategy: Strategy, side: int, qty: int, reduces: bool, current: int, reason: str,
                 event_ts: int, ts: int, bar: int, denials: list[Denial], leg: str) -> bool:
        order_side = OrderSide.BUY if side > 0 else OrderSide.SELL
        effect = PositionEffect.CLOSE if reduces else PositionEffect.OPEN
        order = OrderRequest(client_order_id(strategy.name, self.config.symbol, event_ts, leg, TASTYTRADE),
                             self.config.symbol, order_side, qty, effect)
        context = OrderContext(strategy.name, self.config.symbol, TASTYTRADE, current * qty, reduces, reason)
        if self.clock is not None:
            self.clock.ts_ns = ts
        decision = self.risk_check(order, context)
        if not decision.allowed:
            denials.append(Denial(ts, bar, order_side.value, effect.value, decision.reason.value, decision.detail))
        return decision.allowed

    def _equity_curve(self, close: np.ndarray, trades: list[RoundTrip], n: int) -> tuple[np.ndarray, np.ndarray]:
        """Equity at each bar close: capital + realised cash flows so far + open position marked at
        the close. Entry commission is booked at the entry bar, the rest at the exit bar."""
        tick = float(self.instrument.tick_size)
        mult = float(self.instrument.multiplier)
        comm = float(self.costs.commission_per_contract)
        flow = np.zeros(n, dtype=np.float64)
        side = np.zeros(n, dtype=np.int64)
        entry_px = np.zeros(n, dtype=np.float64)
        for t in trades:
            c = comm * t.quantity
            flow[t.entry_bar] -= c
            flow[t.exit_bar] += t.side * (t.exit_ticks - t.entry_ticks) * tick * mult * t.quantity - c
            if t.exit_bar > t.entry_bar:
                side[t.entry_bar:t.exit_bar] = t.side * t.quantity
                entry_px[t.entry_bar:t.exit_bar] = t.entry_ticks * tick
        unrealised = side * (close - entry_px) * mult
        unrealised[side == 0] = 0.0
        equity = float(self.costs.starting_capital) + np.cumsum(flow) + unrealised
        return equity, side


def _level_for(reason: IntentReason, levels: dict[str, float | None]) -> float | None:
    keys = _STOP_KEYS if reason is IntentReason.STOP else _TARGET_KEYS if reason is IntentReason.TARGET else ()
    for key in keys:
        value = levels.get(key)
        if value is not None:
            return float(value)
    return None


def _tick_ranges(data: MarketData) -> tuple[np.ndarray, np.ndarray]:
    """Index range [lo, hi) of the trades inside each bar."""
    assert data.ticks is not None
    ts = data.ticks.ts_ns
    bars = data.bars
    if bars.trade_count.sum() == len(data.ticks):
        hi = np.cumsum(bars.trade_count)
        return hi - bars.trade_count, hi
    return np.searchsorted(ts, bars.start_ns, "left"), np.searchsorted(ts, bars.end_ns, "left")


def config_from_options(options: dict[str, Any]) -> TickerConfig:
    """Build and validate a TickerConfig from CLI/API fields (the add-ticker payload).

    The backtester trades `quantity` contracts through one account: it is stored as the
    tastytrade quantity (Schwab cannot trade futures); trading is 'enabled' so validation matches
    a ticker that would actually trade."""
    payload = {k: v for k, v in options.items() if v is not None}
    quantity = payload.pop("quantity", 1)
    payload.setdefault("trade_enabled", True)
    payload["schwab_quantity"] = 0
    payload["tastytrade_quantity"] = quantity
    return TickerConfig.from_payload(payload)
