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

Market-order rule shared with the live paper broker (proved by tests/backtest/test_live_parity.py):
a market order fills at the last trade when the signal's bar completed. A time bar completes on the
first trade of the next bar, so that is the next bar's open (step 1 above); a tick chart completes on
its own N-th trade, so its orders fill at that bar's close, at the closing trade's time.

zeroday: `on_clock(SessionClock)` is called before every bar (SPX session from the NYSE calendar,
same-day SPXW expiration), as engine/clock.py does live; a LONG/SHORT target holds the ATM call/put
priced by `_OptionBook` (the paper broker's synthetic chain); trades carry the option and premiums.

Stop-and-reverse is two fills at the same price: close, then open (two commissions). Every order
goes through the `PreTradeCheck` first; a denial is recorded and the strategy is told the real
position (`set_position`), exactly like the order manager does.

The loop keeps prices as integer ticks and records only events (fills, signals); the equity
curve is rebuilt with numpy afterwards. That keeps the per-bar cost to refilling one reused bar
object (`_BarView`) and the strategy's own O(1) update.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo
from decimal import Decimal
from typing import Any, Callable

import numpy as np

from config.instruments import CATALOG, Instrument, Symbol
from domain.intents import Intent, IntentReason, PositionTarget
from domain.market import Trade
from domain.orders import TASTYTRADE, ClientOrderId, OrderRequest, OrderSide, PositionEffect
from domain.risk import OrderContext, PreTradeCheck, allow_all
from domain.tickers import TickerConfig
from market_data import calendars
from strategies.base import SessionClock, Strategy

from backtest import fills
from backtest.data import MarketData

StrategyFactory = Callable[[TickerConfig], Strategy]
ProgressCallback = Callable[[int, int], None]  # (bars done, bars total)

_SIGN = {PositionTarget.LONG: 1, PositionTarget.SHORT: -1, PositionTarget.FLAT: 0}
_TARGET = {1: PositionTarget.LONG, -1: PositionTarget.SHORT, 0: PositionTarget.FLAT}
_CHUNK = 65_536  # bars converted to Python lists at a time: bounded memory, progress granularity
_STOP_KEYS = ("stop", "stop_price", "trailing_stop")
_TARGET_KEYS = ("target", "take_profit", "target_price")
_NEW_YORK = ZoneInfo("America/New_York")


class SimulatedClock:
    """The risk engine's clock during a backtest: the simulated event time, so its per-minute
    order-rate window and session logic see history's time, not the wall clock."""

    def __init__(self) -> None:
        self.ts_ns = 0
        self._last: tuple[int, datetime] | None = None  # the last instant asked and its datetime

    def __call__(self) -> datetime:
        # A reversal's two orders share their time: one datetime for both.
        last = self._last
        if last is None or last[0] != self.ts_ns:
            last = self._last = (self.ts_ns, datetime.fromtimestamp(self.ts_ns / 1e9, UTC))
        return last[1]


def backtest_risk_check(clock: SimulatedClock, limits: dict[str, Any] | None = None) -> PreTradeCheck:
    """The live risk rules over in-process state (`risk.memory.MemoryRiskEngine`): the same rule
    functions, order and reason codes as the live `risk.engine.RiskEngine` (tested equal), at a
    few microseconds an order instead of Redis round trips, and a backtest can never touch the
    live risk counters or trading state. Daily loss limits are not evaluated (nothing feeds it
    P&L during a backtest)."""
    from risk.memory import MemoryRiskEngine

    engine = MemoryRiskEngine(clock=clock)
    if limits:
        engine.update_limits(limits, actor="backtest")
    return engine.check_and_take  # no order manager here: the check takes its own rate slot


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


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__ (1.0 us
# a trade instead of 0.27 us, one per reversal in the loop); nothing changes a trade once made.
@dataclass(slots=True)
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
    entry_event_ns: int = 0  # decision time of the entry (the signal bar's end: the live order's event time)
    exit_event_ns: int = 0
    option: str = ""  # zeroday: the option held ("SPXW 2024-07-02 5500 C"); prices are its premium


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
    signals: dict[int, str]  # bar index -> the signal taken at its close (with record_bars: bars.*'s column)
    indicators: list[dict[str, float | None]] | None
    denials: list[Denial]
    elapsed_s: float
    warmup_bars: int
    extra: dict[str, Any] = field(default_factory=dict)
    # Bars the loop evaluated: inside the instrument's sessions (a bar outside them only fills an
    # order decided before; the strategy never sees it). -1: not counted (all bars).
    evaluated_bars: int = -1

    @property
    def bars_per_second(self) -> float:
        """Evaluated bars per second of the loop (excluding loading and writing)."""
        n = self.evaluated_bars if self.evaluated_bars >= 0 else len(self.data.bars)
        return n / self.elapsed_s if self.elapsed_s > 0 else float("inf")


class BacktestEngine:
    def __init__(
        self,
        config: TickerConfig,
        costs: CostSettings,
        *,
        strategy_factory: StrategyFactory | None = None,
        risk_check: PreTradeCheck | None = None,
        clock: SimulatedClock | None = None,
        fast_forward: bool = True,
    ) -> None:
        """`fast_forward` False feeds every bar through `on_bar` (the skip over quiet bars, see
        run(), gives identical results; False is the reference the tests compare it with)."""
        self.config = config
        self.costs = costs
        # A research instrument (outside the catalog) comes with the data and is resolved in run().
        self._instrument: Instrument | None = CATALOG.get(Symbol(config.symbol))
        self.strategy_factory = strategy_factory or default_strategy_factory
        self.risk_check: PreTradeCheck = risk_check or allow_all
        self.clock = clock  # set to each order's time before the risk check
        self.fast_forward = fast_forward
        self._orders: dict[tuple[int, bool, int, str, str], tuple[OrderRequest, OrderContext]] = {}

    @property
    def instrument(self) -> Instrument:
        if self._instrument is None:
            raise KeyError(f"{self.config.symbol} is not in the catalog and the data carries no research instrument")
        return self._instrument

    # ------------------------------------------------------------------------------------------
    def run(self, data: MarketData, *, record_bars: bool = True, progress: ProgressCallback | None = None,
            line_every: int = 0) -> BacktestResult:
        """`record_bars`: every bar's indicator values (bars.*). `line_every` (without record_bars):
        the values at every line_every-th bar and the last one only, in `extra["sampled_lines"]`
        (bar index -> values), what report.html's price chart draws at one point per candle."""
        if data.instrument is not None:
            from backtest.instruments import ensure_registered

            ensure_registered(data.instrument)  # before the strategy is built: it reads the catalog
            self._instrument = data.instrument
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
        feed_trades = strategy.trade_exits_configured and type(strategy).on_trade is not Strategy.on_trade

        ticks = data.ticks
        tick_lo: np.ndarray | None = None
        tick_hi: np.ndarray | None = None
        if ticks is not None and feed_trades:
            tick_lo, tick_hi = _tick_ranges(data)

        pos = 0  # signed direction of the open position (x qty contracts)
        entry: tuple[int, int, int, str, int, Any] | None = None  # (ns, ticks, bar, reason, event ns, option)
        trades: list[RoundTrip] = []
        denials: list[Denial] = []
        signals: dict[int, str] = {}
        indicators: list[dict[str, float | None]] | None = [] if record_bars else None
        sampled: dict[int, dict[str, float | None]] = {}
        # The bar whose indicator values are recorded next: every bar for bars.* (record_bars),
        # every line_every-th and the last for the report's chart, else none (-1).
        if indicators is not None:
            next_sample = 0
        else:
            next_sample = min(line_every - 1, n - 1) if line_every > 0 else -1
        pending: Intent | None = None
        if record_bars and hasattr(strategy, "compute_atr"):
            strategy.compute_atr = True  # bars.csv shows every indicator (results are unaffected)
        # Time-aware strategies (zeroday) get the session clock before each bar, as live.
        session_clock = _SessionClocks() if type(strategy).on_clock is not Strategy.on_clock else None
        options = _OptionBook(self.instrument) if self.config.strategy.value == "zeroday" else None
        # Tick charts complete on their own last trade: a market order decided at the close fills
        # at that trade's price (the paper broker's last trade), not at the next bar's open.
        tick_chart = self.config.tf.is_tick

        def execute(target: int, fill_ticks_of: Callable[[int], int], ts: int, bar: int, reason: str,
                    event_ts: int, spot: float = 0.0) -> None:
            """Move the position to `target` (-1/0/+1): close first, then open. `fill_ticks_of(side)`
            prices one fill for a buy (+1) or sell (-1); options are priced by `_OptionBook` at `spot`."""
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
                if options is not None:
                    contract = entry[5]
                    trades.append(RoundTrip(1, qty, entry[0], entry[1], entry[2], entry[3], ts,
                                            options.sell_ticks(contract, spot, ts), bar, reason, entry[4], event_ts,
                                            options.describe(contract)))
                else:
                    trades.append(RoundTrip(pos, qty, entry[0], entry[1], entry[2], entry[3], ts, fill_ticks_of(side),
                                            bar, reason, entry[4], event_ts))
                pos, entry = 0, None
            if target != 0:
                if check_orders and not self._allowed(strategy, target, qty, False, 0, reason, event_ts, ts, bar,
                                                      denials, "open"):
                    strategy.set_position(PositionTarget.FLAT)
                    return
                if options is not None:
                    contract = options.atm(target, spot, ts)
                    pos, entry = target, (ts, options.buy_ticks(contract, spot, ts), bar, reason, event_ts, contract)
                else:
                    pos, entry = target, (ts, fill_ticks_of(target), bar, reason, event_ts, None)

        view = _BarView(symbol, tf_raw)
        market_fill = fills.market_fill_ticks
        # As live: a bar outside the instrument's session (a holiday, extended-hours equity prints)
        # is not evaluated, and no stop is checked inside it; an order decided before still fills
        # at its open, the first price after the decision.
        in_session = calendars.bars_in_session(symbol, bars.start_ns, bars.end_ns)
        # Quiet bars (no trades to feed, nothing recorded, on which the strategy only updates its
        # lines) are taken by the strategy's `advance_quiet_bars` in one tight loop, up to the next
        # bar that is not evaluated or is sampled, instead of one on_bar call each; the bar it
        # stops at goes through on_bar as usual. Its contract needs increasing bar ends.
        skip_quiet = (self.fast_forward and indicators is None and session_clock is None
                      and type(strategy).advance_quiet_bars is not Strategy.advance_quiet_bars
                      and bool(np.all(bars.end_ns[1:] > bars.end_ns[:-1])))
        advance_quiet = strategy.advance_quiet_bars
        not_quiet = -1  # the bar a skip stopped before, which goes to on_bar
        on_bar = strategy.on_bar
        t0 = time.perf_counter()
        for lo in range(0, n, _CHUNK):
            hi = min(n, lo + _CHUNK)
            closes, ends = bars.close[lo:hi].tolist(), bars.end_ns[lo:hi].tolist()
            # The other fields are read only at bars that reach on_bar or fill an order. With the
            # quiet-bar skip that is about one bar in twenty: each read converts one value
            # (ndarray.item, a Python number as tolist gives) instead of converting whole chunks,
            # a tenth of the loop's time.
            fields = (bars.start_ns, bars.open, bars.high, bars.low, bars.volume, bars.trade_count)
            if skip_quiet:
                start_of, open_of, high_of, low_of, volume_of, count_of = (a[lo:hi].item for a in fields)
            else:
                start_of, open_of, high_of, low_of, volume_of, count_of = (a[lo:hi].tolist().__getitem__
                                                                           for a in fields)
            evaluated = in_session[lo:hi].tolist()
            # The chunk's bars outside the session (then the chunk's end), in order: where a skip stops.
            outside = np.flatnonzero(~in_session[lo:hi]).tolist() + [hi - lo] if skip_quiet else []
            next_outside = 0
            j = 0  # the bar's index in the chunk (i in the data)
            while j < hi - lo:
                i = lo + j
                if pending is not None:
                    # 1. decided at the previous close, filled at this bar's open / first trade.
                    o = open_of(j)
                    execute(_SIGN[pending.target], lambda side, o=o: market_fill(o, side, tick, slip),
                            start_of(j), i, pending.reason.value, pending.event_ts_ns, o)
                    pending = None
                if evaluated[j]:
                    if skip_quiet and (pos == 0 or not feed_trades) and i != next_sample and i != not_quiet:
                        while outside[next_outside] < j:
                            next_outside += 1
                        until = outside[next_outside]
                        if 0 <= next_sample - lo < until:
                            until = next_sample - lo
                        taken = advance_quiet(closes, ends, j, until)
                        if taken < until:
                            not_quiet = lo + taken  # the strategy said so: no second asking
                        if taken > j:
                            j = taken  # bars j..taken-1 went by with no signal
                            continue
                    start, end, o, h, low, c = start_of(j), ends[j], open_of(j), high_of(j), low_of(j), closes[j]
                    if pos != 0 and feed_trades:
                        # 2. intrabar exits.
                        if tick_lo is not None and ticks is not None and tick_hi is not None:
                            self._feed_ticks(strategy, ticks, int(tick_lo[i]), int(tick_hi[i]), i, execute,
                                             lambda: pos, tick, slip)
                        else:
                            self._feed_path(strategy, symbol, start, end, o, h, low, c, i, execute,
                                            lambda: pos, tick, slip)
                    # 3. the strategy at the close (one reused bar object: strategies never keep a bar).
                    view.start_ns, view.end_ns, view.open, view.high = start, end, o, h
                    view.low, view.close, view.volume, view.trade_count = low, c, volume_of(j), count_of(j)
                    if session_clock is None:
                        intents = on_bar(view)
                    else:
                        intents = strategy.on_clock(session_clock(end)) + on_bar(view)
                    if intents:
                        last = intents[-1]
                        if indicators is not None:  # the signal column of bars.* (str enums format as values)
                            signals[i] = "; ".join([f"{it.target} ({it.reason}): {it.detail}" for it in intents])
                        if _SIGN[last.target] != pos:
                            if tick_chart:
                                execute(_SIGN[last.target], lambda side, c=c: market_fill(c, side, tick, slip), end,
                                        i, last.reason.value, last.event_ts_ns, c)
                            else:
                                pending = last
                # A bar outside the session is not evaluated; bars.* still has a row for it (the
                # indicators unchanged).
                if i == next_sample:
                    values = strategy.indicators()
                    if indicators is not None:
                        indicators.append(values)
                        next_sample = i + 1
                    else:
                        sampled[i] = values
                        next_sample = min(i + line_every, n - 1) if i < n - 1 else -1
                j += 1
            if progress is not None:
                progress(hi, n)
        if pos != 0 and n:
            # Open at the end of the data: closed at the last close like a market order would be,
            # with costs, so net P&L equals the final equity change.
            last_close = float(bars.close[n - 1])
            execute(0, lambda side: market_fill(last_close, side, tick, slip), int(bars.end_ns[n - 1]),
                    n - 1, "end_of_data", int(bars.end_ns[n - 1]), last_close)
        elapsed = time.perf_counter() - t0

        if options is not None:
            equity, position = self._option_equity_curve(bars, trades, n, options)
        else:
            equity, position = self._equity_curve(bars.close, trades, n)
        return BacktestResult(self.config, self.costs, self.instrument, data, trades, equity, position, signals,
                              indicators, denials, elapsed, strategy.warmup_bars(),
                              {"sampled_lines": sampled} if sampled else {},
                              evaluated_bars=int(np.count_nonzero(in_session)))

    # ------------------------------------------------------------------------------------------
    def _feed_path(self, strategy: Strategy, symbol: str, start: int, end: int, o: float, h: float, low: float,
                   c: float, bar: int, execute: Callable[..., None], get_pos: Callable[[], int], tick: float,
                   slip: int) -> None:
        """Bar data: feed the assumed intrabar path to on_trade; exits at their level (fills.level_fill).

        Bar data do not say when inside the bar a level traded, so no time inside it is made up:
        the open is stamped at the bar's start (an exit there is a gap through the level), the
        extremes and the close at the bar's end, when the bar, and so the exit, is known. Daily
        bars carry their session's bounds (data.session_stamped), so their exits are stamped at
        the session's open or close."""
        path = fills.bar_path(o, h, low, c, get_pos())
        previous: float | None = None
        for k, price in enumerate(path):
            if get_pos() == 0:
                return
            levels = strategy.indicators()
            ts = start if k == 0 else end
            intents = strategy.on_trade(Trade(symbol, ts, price, 0))
            if intents:
                it = intents[-1]
                level = _level_for(it.reason, levels)
                px = price if level is None else fills.level_fill(level, previous, price)
                execute(_SIGN[it.target], lambda side, px=px: fills.market_fill_ticks(px, side, tick, slip), ts, bar,
                        it.reason.value, it.event_ts_ns, px)
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
                        it.reason.value, it.event_ts_ns, price)

    def _allowed(self, strategy: Strategy, side: int, qty: int, reduces: bool, current: int, reason: str,
                 event_ts: int, ts: int, bar: int, denials: list[Denial], leg: str) -> bool:
        # The order and its context are built once per distinct shape and reused: the rules read
        # only side, quantity, effect and the context, never the id (a backtest's orders have no
        # broker id; the leg names them in the denial record).
        key = (side, reduces, current, reason, leg)
        pair = self._orders.get(key)
        if pair is None:
            order_side = OrderSide.BUY if side > 0 else OrderSide.SELL
            effect = PositionEffect.CLOSE if reduces else PositionEffect.OPEN
            pair = self._orders[key] = (
                OrderRequest(ClientOrderId(f"backtest-{leg}"), self.config.symbol, order_side, qty, effect),
                OrderContext(strategy.name, self.config.symbol, TASTYTRADE, current * qty, reduces, reason))
        order, context = pair
        if self.clock is not None:
            self.clock.ts_ns = ts
        decision = self.risk_check(order, context)
        if not decision.allowed:
            denials.append(Denial(ts, bar, order.side.value, order.position_effect.value, decision.reason.value,
                                  decision.detail))
        return decision.allowed

    def _option_equity_curve(self, bars: Any, trades: list[RoundTrip], n: int,
                             options: _OptionBook) -> tuple[np.ndarray, np.ndarray]:
        """Zeroday: the held option marked at its bid (what selling it would fetch) at each bar's
        close with the SPX level = the close; contracts held (+qty for a call or a put)."""
        tick = float(self.instrument.tick_size)
        mult = float(self.instrument.multiplier)
        comm = float(self.costs.commission_per_contract)
        flow = np.zeros(n, dtype=np.float64)
        held = np.zeros(n, dtype=np.int64)
        unrealised = np.zeros(n, dtype=np.float64)
        from domain.orders import OptionContract, OptionRight

        for t in trades:
            c = comm * t.quantity
            flow[t.entry_bar] -= c
            flow[t.exit_bar] += (t.exit_ticks - t.entry_ticks) * tick * mult * t.quantity - c
            if t.exit_bar > t.entry_bar:
                root, expiry, strike, right = t.option.split()
                contract = OptionContract(underlying="SPX", root=root, expiration=date.fromisoformat(expiry),
                                          strike=Decimal(strike), right=OptionRight(right))
                held[t.entry_bar:t.exit_bar] = t.quantity
                for k in range(t.entry_bar, t.exit_bar):
                    bid = options.quote(contract, float(bars.close[k]), int(bars.end_ns[k]))[0]
                    unrealised[k] = (bid - t.entry_ticks * tick) * mult * t.quantity
        equity = float(self.costs.starting_capital) + np.cumsum(flow) + unrealised
        return equity, held

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


class _BarView:
    """A mutable stand-in for `domain.market.Bar` reused for every bar of a backtest: building a
    frozen dataclass per bar was a large share of the loop. Strategies read bar fields and never
    keep a reference to the bar (they copy what they need), so reusing it is safe."""

    __slots__ = ("symbol", "timeframe", "start_ns", "end_ns", "open", "high", "low", "close", "volume",
                 "trade_count", "gapped")

    def __init__(self, symbol: str, timeframe: str) -> None:
        self.symbol, self.timeframe, self.gapped = symbol, timeframe, False
        self.start_ns = self.end_ns = self.volume = self.trade_count = 0
        self.open = self.high = self.low = self.close = 0.0


class _SessionClocks:
    """`SessionClock` at a given instant, as `engine/clock.py` builds it for the live engine: the
    SPX regular session (NYSE calendar, early closes applied) and whether an SPXW expires that
    New York date. Calendar look-ups are cached per date."""

    def __init__(self) -> None:
        self._days: dict[date, tuple[int | None, int | None, bool]] = {}
        self._range = (0, 0)  # [start, end) ns of the cached New York date
        self._today: tuple[int | None, int | None, bool] = (None, None, False)

    def __call__(self, now_ns: int) -> SessionClock:
        lo, hi = self._range
        if not lo <= now_ns < hi:
            day = datetime.fromtimestamp(now_ns / 1e9, _NEW_YORK).date()
            facts = self._days.get(day)
            if facts is None:
                bounds = calendars.spx_session(day)
                facts = (None, None, False) if bounds is None else (
                    int(bounds[0].timestamp() * 1e9), int(bounds[1].timestamp() * 1e9),
                    calendars.has_same_day_expiration(day))
                self._days[day] = facts
            start = datetime.combine(day, datetime.min.time(), _NEW_YORK)
            self._range = (int(start.timestamp() * 1e9), int((start + timedelta(days=1)).timestamp() * 1e9))
            self._today = facts
        o, c, expires = self._today
        return SessionClock(now_ns, o, c, expires)


class _OptionBook:
    """Prices zeroday entries/exits as the paper broker does with its synthetic SPXW chain
    (`brokers/option_pricing.py`): the contract expiring on the fill's New York date with the strike
    nearest the SPX level (5-point strikes), Black-Scholes at the fill time to the 16:00 ET expiry
    with the paper broker's default implied volatility; buys pay the ask, sells receive the bid.
    Prices are kept in the SPX instrument's ticks (0.01; option ticks 0.05/0.10 are multiples).
    Slippage ticks do not apply to options (the one-tick spread is the cost)."""

    def __init__(self, instrument: Instrument, iv: float | None = None) -> None:
        from brokers import option_pricing as op

        self._op = op
        self._iv = op.DEFAULT_IV if iv is None else iv
        self._tick = float(instrument.tick_size)

    def atm(self, target: int, spot: float, ts_ns: int) -> Any:
        from domain.orders import OptionContract, OptionRight

        expiry = datetime.fromtimestamp(ts_ns / 1e9, _NEW_YORK).date()
        right = OptionRight.CALL if target > 0 else OptionRight.PUT
        return OptionContract(underlying="SPX", root=self._op.SPX_ROOT, expiration=expiry,
                              strike=self._op.atm_strike(spot), right=right)

    def quote(self, contract: Any, spot: float, ts_ns: int) -> tuple[float, float]:
        priced = self._op.price_contract(contract, spot, datetime.fromtimestamp(ts_ns / 1e9, UTC), self._iv)
        return float(priced.bid), float(priced.ask)

    def buy_ticks(self, contract: Any, spot: float, ts_ns: int) -> int:
        return fills.price_to_ticks(self.quote(contract, spot, ts_ns)[1], self._tick)

    def sell_ticks(self, contract: Any, spot: float, ts_ns: int) -> int:
        return fills.price_to_ticks(self.quote(contract, spot, ts_ns)[0], self._tick)

    @staticmethod
    def describe(contract: Any) -> str:
        return f"{contract.root} {contract.expiration.isoformat()} {contract.strike} {contract.right.value}"


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
