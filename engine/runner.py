"""One thread per running (strategy, ticker).

The thread blocks on its inbox, fed by the engine's `StreamHub` (one XREAD for every thread) from
two Redis streams:
- its bar stream (`md:bars:<symbol>:<tf>`): completed bars only, so signals never repaint;
- while holding a position, the trade stream (`md:trades:<symbol>`): intrabar stops.
Stop and housekeeping requests are put straight into the inbox, so stop-trading takes effect at
once although the wait times out only after 10-60 s.
When the wait times out (the spec's check interval for the timeframe) it does housekeeping:
0DTE time exits and stale-feed notes. Housekeeping also runs right after an event when the check
interval has passed since the last one (a busy trade stream never postpones a 15:45 exit), and at
once on a `tick` inbox message (`StrategyRunner.housekeeping_now()`). No polling loop, no busy wait.

Sessions: a bar that overlaps none of the instrument's sessions, or a trade outside them
(`market_data.calendars`: a simulated feed at night, extended-hours equity prints, a holiday) is
not evaluated at all - no indicator, signal or stop sees it; the first bar of such a
run is logged. The warm-up keeps session bars only (reading further back while out-of-session
bars, such as an equity's pre-market, crowd them out), and the backtester skips the same bars, so
live and backtest see the same series. A manual trigger that opens a position wakes the thread,
which then checks the stop on every trade from that moment.

Time: every wall-clock reading (housekeeping, stale-bar and stale-feed checks, manual triggers)
goes through the injected `time_ns` callable, so tests and replays control time.

Health: `status.stale_feed` holds a note while the instrument's session is open
(`market_data.calendars.is_open`) and no bar has arrived for more than 2 x the timeframe
(ticks: TICK_BAR_STALE_SECONDS), counted from the session's open at the earliest; it clears on
the next bar. Optional callbacks:
`on_bar_to_order(strategy, symbol, seconds)` - from the moment the thread received a bar to the
moment the order manager returned an acknowledged order for it (filled / working / pending open);
`on_restart(strategy, symbol)` - after a crash, before the backoff wait.

Hot work first: for a bar the thread makes its decisions and sends its orders at once, then tells
the hub it is done (`StreamHub.done`); its bookkeeping - status, writing the ticker log, saving the
state - waits until every thread woken by the same bar close has sent its orders
(`StreamHub.wait_quiet`, at most BOOKKEEPING_WAIT_SECONDS, cut short by its own next message).

State (strategy indicators, position target, last bar id) is saved after the bars of each message
through the engine's `StateWriter` (write-behind, one write for all threads), so a restarted
process resumes where it stopped; a bar whose state had not reached Redis yet is read again and its
intent is recognised by the order manager as already sent, so nothing is traded twice. A crash
does not save the (possibly half-updated) state: the restart resumes from the last saved one.

A crash inside the loop is logged with its traceback, recorded as `last_error`, and the loop
restarts with exponential backoff (1 s .. 60 s); `stop()` interrupts the backoff.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Callable, Iterable, Protocol

from config.instruments import CATALOG, Symbol
from config.symbology import contract_from_key, contract_key_at
from config.timeframes import Timeframe
from market_data import calendars
from market_data.redis_buffer import HIST_MAXLEN
from domain.intents import Intent, IntentReason, PositionTarget
from domain.market import Bar, Trade
from domain.orders import BROKERS, OptionRight
from domain.tickers import StartBehavior, TickerConfig
from oms.models import ACKNOWLEDGED_STATUSES, LaneView, OmsPosition, TargetStatus
from engine.executor import ExecutionReport, IntentExecutor, allocations
from engine.logs import emit_batch, record, ticker_logger
from engine.state_writer import StateWriter
from engine.stream_hub import InboxMessage, StreamHub
from store.redis_store import Store
from strategies import build_strategy
from strategies.base import SessionClock, Strategy

app_log = logging.getLogger("engine")

MAX_BACKOFF_SECONDS = 60.0
# How long a thread's bookkeeping after a bar (status, ticker-log write, saved state) may wait for
# the other threads of the same bar close to send their orders (see StreamHub.wait_quiet).
BOOKKEEPING_WAIT_SECONDS = 0.05
# A bar older than this many bar-lengths when we read it (catch-up after downtime) still updates
# indicators but its signal is not traded: acting on a stale signal trades at a price the strategy
# never saw.
STALE_BAR_FACTOR = 2
TICK_BAR_STALE_SECONDS = 300
# `join_current` warms up on this many bars at least, so that the side its rules hold goes back
# to the signal that opened it (a 9/21 crossover almost surely crossed within them).
JOIN_HISTORY_BARS = 500
MAX_WARMUP_BARS = HIST_MAXLEN  # the Redis bar history's length: asking for more finds nothing more
STALE_FEED_FACTOR = 2  # no bar for this many bar-lengths while the session is open -> stale-feed note
RECENT_BARS = 500  # bars kept in memory with the indicator values the strategy computed on them (the chart)

# In-process inbox messages besides the hub's stream entries.
_STOP = "stop"
_TICK = "tick"

LatencyCallback = Callable[[str, str, float], None]
RestartCallback = Callable[[str, str], None]
# A refused protective exit is sent again on the next trade at most this often (and on every
# housekeeping tick) until the book is flat: often enough to get out, not one order per trade.
EXIT_RETRY_SECONDS = 1.0
# Results after which the lane's position is still moving (resting order, reversal's open pending,
# outcome unknown, or an earlier order blocking the lane): the book is compared once they settle.
_IN_FLIGHT = frozenset({TargetStatus.WORKING, TargetStatus.PENDING_OPEN, TargetStatus.UNKNOWN,
                        TargetStatus.BLOCKED})


@dataclass(frozen=True)
class Divergence:
    """What a strategy holds against what the book holds for it, per broker (signed quantities).
    `note` says what the engine did about it."""

    strategy: str
    symbol: str
    strategy_target: str
    expected: dict[str, int]  # broker -> strategy target x the ticker's quantity there
    book: dict[str, int]  # broker -> the order manager's position
    note: str

    def to_json(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "symbol": self.symbol, "strategy_target": self.strategy_target,
                "expected": dict(self.expected), "book": dict(self.book), "note": self.note}


# (divergence or None when it cleared, strategy, symbol): the runtime's report/alert/metric.
DivergenceCallback = Callable[["Divergence | None", str, str], None]


@dataclass(frozen=True)
class RunnerHooks:
    """What every runner of one supervisor shares: the clock and the callbacks.
    `skip_stale_signals`: real-time feeds do not trade a bar read long after it closed (catch-up);
    replay feeds run history through the live path on purpose, so they turn it off."""

    on_report: Callable[[ExecutionReport], None] | None = None
    skip_stale_signals: bool = True
    time_ns: Callable[[], int] = time.time_ns
    on_bar_to_order: LatencyCallback | None = None
    on_restart: RestartCallback | None = None
    on_divergence: "DivergenceCallback | None" = None
    roll_reopens: bool = True  # at a future's roll date: reopen in the next month (False: close only)
    broker_stops: bool = True  # keep the strategy's stop resting at the broker as a real stop order


@dataclass
class RunnerStatus:
    strategy: str
    symbol: str
    timeframe: str
    running: bool = False
    started_at: str | None = None
    last_bar: dict[str, Any] | None = None
    indicators: dict[str, float | None] = field(default_factory=dict)
    position: str = PositionTarget.FLAT.value
    last_signal: str | None = None
    last_error: str | None = None
    restarts: int = 0
    warmed_up: bool = False
    warmup_note: str | None = None  # a warm-up short of history: how many bars it had and why
    alive: bool = False  # the thread is running (filled in by the supervisor's status)
    stale_feed: str | None = None  # set while the session is open and bars stopped arriving
    last_bar_received: str | None = None  # wall-clock time the thread last received a bar
    last_housekeeping: str | None = None
    divergence: dict[str, Any] | None = None  # strategy vs book, while they differ (see Divergence)
    exit_pending: str | None = None  # a refused protective exit being retried until the book is flat

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class PositionBook(Protocol):
    """What the runner reads of the order manager: a lane's position (the truth the strategy
    follows, and its average price) and whether orders are still in flight in it."""

    def position(self, strategy: str, symbol: str, broker: str) -> OmsPosition: ...

    def lanes(self, strategy: str, symbol: str, brokers: Iterable[str]) -> dict[str, LaneView]: ...

    def protect(self, strategy: str, symbol: str, broker: str, stop_price: Decimal | None,
                ts_ns: int) -> Any: ...

    def intent_sent(self, strategy: str, symbol: str, broker: str, event_ts_ns: int) -> bool: ...


class StrategyRunner:
    def __init__(
        self,
        *,
        config: TickerConfig,
        store: Store,
        hub: StreamHub,
        states: StateWriter,
        market_data: Any,
        executor: IntentExecutor,
        log_dir: Any,
        clock_provider: Callable[[int], SessionClock] | None = None,
        hooks: RunnerHooks = RunnerHooks(),
        orders: "PositionBook | None" = None,
    ) -> None:
        """`orders`: the order manager's book; its average price arms the exits of a position
        resumed into a rebuilt strategy (without it such a position resumes unpriced, logged)."""
        self.config = config
        self._hub = hub
        self._states = states
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()  # replaced by each subscription
        self._state_key = store.key("engine", "state", config.strategy.value, config.symbol)
        self._time_ns = hooks.time_ns
        self._on_bar_to_order = hooks.on_bar_to_order
        self._on_restart = hooks.on_restart
        self._on_divergence = hooks.on_divergence
        self._roll_reopens = hooks.roll_reopens
        self._broker_stops = hooks.broker_stops
        self._skip_stale_signals = hooks.skip_stale_signals
        self._store = store
        self._md = market_data
        self._executor = executor
        self._orders = orders
        self._clock_provider = clock_provider
        self._on_report = hooks.on_report
        self._timeframe = Timeframe.parse(config.timeframe)
        self._stop = threading.Event()
        self._lock = threading.RLock()  # guards the strategy between the thread and manual triggers
        self._thread: threading.Thread | None = None
        self.log = ticker_logger(log_dir, config.strategy.value, config.symbol)
        self.strategy: Strategy = build_strategy(config)
        # The config is frozen: its JSON (asdict + dumps) is built once, and so is the constant head
        # of the saved-state document (see `_state_json`).
        self._config_json = config.to_json()
        self._state_head = '{"config": ' + json.dumps(self._config_json) + ', "strategy": '
        self._log_batch: list[logging.LogRecord] = []  # this event's ticker-log lines, one write
        self._last_bar_seen: tuple[Bar, dict[str, float | None], int] | None = None  # for the status
        # (bar, indicator values after it) for the console's chart: what this strategy computed on
        # each bar it was fed, warm-up included, never recomputed afterwards.
        self._recent: deque[tuple[Bar, dict[str, float | None]]] = deque(maxlen=RECENT_BARS)
        self.status = RunnerStatus(config.strategy.value, config.symbol, config.timeframe)
        self._bar_id = "$"
        self._trade_id = "$"
        self._prepared = False  # strategy restored or warmed up (so its saved state is meaningful)
        # Start of the last time bar the strategy was fed (warm-up or live; saved with the state): a
        # live bar not starting after it was already fed, e.g. by a Databento warm-up whose last
        # bar the live feed then publishes too. (Tick bars have no such identity; their stream ids
        # alone keep them apart.)
        self._fed_start_ns: int | None = None
        self._outside_session_noted = False  # the current run of out-of-session bars is logged once
        self._check_ns = int(self._timeframe.check_interval_seconds * 1_000_000_000)
        if self._timeframe.is_tick:
            self._stale_feed_ns = TICK_BAR_STALE_SECONDS * 1_000_000_000
        else:
            self._stale_feed_ns = STALE_FEED_FACTOR * self._timeframe.seconds * 1_000_000_000
        self._last_bar_wall_ns = 0  # set at start; a bar resets it
        self._last_housekeeping_ns = 0
        self._signal_lifetime_ns = (TICK_BAR_STALE_SECONDS * 1_000_000_000 if self._timeframe.is_tick
                                    else STALE_BAR_FACTOR * self._timeframe.seconds * 1_000_000_000)
        # The book is the truth the strategy follows: set when an act left orders in flight (look
        # again when they settle), and the refused protective exit being retried.
        self._book_check_due = False
        self._join_pending = False  # start_behavior join_current: the rules' side not yet sent
        self._exit_pending: Intent | None = None
        self._exit_attempt_ns = 0
        self._divergence: Divergence | None = None
        self._market_ns = 0  # time of the newest bar end or trade evaluated: the roll rule's clock
        # The stop level last handed to the brokers as a resting order, and whether the position may
        # have changed since (then the order manager is asked again even at the same level).
        self._protected_level: Decimal | None = None
        self._protect_due = True
        self._protect_ns = 0
        instrument = CATALOG.get(Symbol(config.symbol))
        self._tick = instrument.tick_size if instrument is not None else None

    # --- keys -------------------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        return self._state_key

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._md.ensure(self.config.symbol, self._timeframe)
        if self._bar_id == "$":
            # Pin "new bars" to the moment of start, not to whenever the thread first reads: a bar
            # written in between (or one that crashed the loop before it was saved) is then read,
            # not skipped, and acted on: the warm-up reads history only up to here. A restored
            # state replaces this with its own bar id.
            self._bar_id = self._last_id(self._md.bars_key(self.config.symbol, self._timeframe))
        self._thread = threading.Thread(
            target=self._supervised, name=f"strategy-{self.config.strategy.value}-{self.config.symbol}", daemon=True
        )
        self.status.running = True
        now = self._time_ns()
        self.status.started_at = _iso_full(now)
        self._last_bar_wall_ns = now
        self._last_housekeeping_ns = now
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._inbox.put(_STOP)  # wakes the waiting thread at once
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._prepared and not (self._thread and self._thread.is_alive()):
            # A position may have moved since the thread's last look (a resting stop filled): the
            # state it is saved with, which the next start resumes, holds what the book holds.
            try:
                with self._lock:
                    self._follow_book_now("stopped")
                    self._flush_log()
                    self._save()
            except Exception as exc:  # never block a stop (Redis down at shutdown): the resume compares again
                app_log.warning("%s %s: could not compare with the book at stop: %s", self.config.strategy.value,
                                self.config.symbol, exc)
        self._states.flush(timeout)  # the state it stopped with is in Redis when stop returns
        self.status.running = False

    def is_alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def housekeeping_now(self) -> None:
        """Ask the thread to run housekeeping at once (e.g. after the wall clock jumped)."""
        self._inbox.put(_TICK)

    # --- thread body ------------------------------------------------------------------------
    def _supervised(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self._prepare()
                self._loop()
                return
            except Exception as exc:  # the supervisor's job: log, record, restart with backoff
                # Log first, then publish the status: whoever sees `restarts` change can read the log.
                self.log.error("strategy loop crashed (restart %d in %.0fs):\n%s",
                               self.status.restarts + 1, backoff, traceback.format_exc())
                self.status.last_error = f"{exc.__class__.__name__}: {exc}"
                self.status.restarts += 1
                app_log.error("%s %s crashed: %s", self.config.strategy.value, self.config.symbol, exc)
                if self._on_restart is not None:
                    try:
                        self._on_restart(self.config.strategy.value, self.config.symbol)
                    except Exception:
                        app_log.exception("on_restart callback failed")
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _prepare(self) -> None:
        """Restore saved state, else warm up from history (warm-up bars never trade).

        A position kept across a rebuild (the ticker's parameters changed, or the saved state is
        not usable) is given to the warmed-up strategy *after* the warm-up, with the entry price
        from the order manager's book (its average price): the exits (stop-loss, ATR stop once the
        warm-up has defined the ATR, Supertrend trailing stop / take-profit) are armed again, and
        history bars cannot move the kept position (their intents are never sent)."""
        with self._lock:
            self._prepared = True
            saved = self._states.get(self.state_key)
            kept: PositionTarget | None = None  # the position to carry into the rebuilt strategy
            old_strategy: dict[str, Any] = {}
            if saved:
                data = json.loads(saved)
                if data.get("config") == self._config_json:
                    try:
                        self.strategy.restore(data["strategy"])
                    except ValueError as exc:  # saved state from another version: rebuild it
                        self.log.warning("saved state not usable (%s); warming up again", exc)
                        self.strategy = build_strategy(self.config)
                    else:
                        self._bar_id = data.get("bar_id", "$")
                        self._fed_start_ns = _opt_int(data.get("fed_start_ns"))
                        self.log.info("resumed from saved state at bar id %s (position %s)", self._bar_id,
                                      self.strategy.target.value)
                        self._rearm_if_unpriced()
                        self._follow_book_on_resume()
                        self._publish_position(self.strategy.last_signal)
                        return
                else:
                    # The ticker's parameters changed: indicators must be rebuilt, the position is kept.
                    self.log.info("parameters changed since the saved state; warming up again")
                    self.strategy = build_strategy(self.config)
                position = data.get("position")
                kept = PositionTarget(position) if position else None
                old_strategy = data.get("strategy") if isinstance(data.get("strategy"), dict) else {}
            else:
                # First start: the strategy holds what the book holds (flat, or a manual trade made
                # while the ticker was not running), never what a warm-up bar's cross "decided".
                kept = self.book_target()
            needed = self.strategy.warmup_bars()
            join = (not saved and kept is PositionTarget.FLAT and self.config.trade_enabled and self.status.running
                    and self.config.start_behavior is StartBehavior.JOIN_CURRENT)
            # History ends at the bar id pinned by start(): a bar that closed after the start is a
            # live bar, acted on, however late this thread got to its warm-up. (A runner never
            # started, e.g. for a manual trigger, takes all history.) Joining reads further back, so
            # that the rules' current position reaches back to the signal that opened it.
            through = "+" if self._bar_id == "$" else self._bar_id
            history = self._session_history(max(needed, JOIN_HISTORY_BARS) if join else needed, through)
            for bar in history:
                self.strategy.on_bar(bar)  # intents from warm-up bars are discarded on purpose
                self._recent.append((bar, self.strategy.indicators()))
            self._fed_start_ns = history[-1].start_ns if history and not self._timeframe.is_tick else None
            self.log.info("warmed up on %d bars (need %d)", len(history), needed)
            self.status.warmup_note = self._md.warmup_note(self.config.symbol, self._timeframe, len(history), needed)
            if self.status.warmup_note:
                self.log.warning("%s", self.status.warmup_note)
            if join and history and self.strategy.target is not PositionTarget.FLAT and self.strategy.warmed_up:
                self._join_pending = True  # the strategy keeps the side its rules hold; the book is flat
                self._follow_book_on_resume()
                self._publish_position(self.strategy.last_signal)
                last = history[-1]
                if self._in_session(self._time_ns()) and not self._is_stale(last):
                    self._act([self._join_intent(last)])
                else:
                    self.log.info("start behavior join_current: the rules hold %s; joins at the first live bar "
                                  "(the session is closed or the history is not recent)", self.strategy.target.value)
                return
            if kept is not None:
                self._resume_position(kept, _opt_float(old_strategy.get("entry_price")))
                # What the warm-up "decided" was never traded; the kept position's reason was.
                self.strategy.last_signal = old_strategy.get("last_signal")
                if kept is not PositionTarget.FLAT and not saved:
                    self.log.info("starts holding %s: the order manager's book holds it", kept.value)
            self._follow_book_on_resume()
            self._publish_position(self.strategy.last_signal)
            self._save()

    def _join_intent(self, bar: Bar) -> Intent:
        """`join_current`: the position the rules hold, as a signal of `bar` (a restart before the
        state is saved finds the same intent in the book, never a second one)."""
        side = self.strategy.target
        return Intent(self.config.strategy.value, self.config.symbol, side, IntentReason.JOIN,
                      f"joins the {side.value} its rules hold (since {self.strategy.last_signal or 'the warm-up'})",
                      bar.end_ns, bar.close)

    def _follow_book_on_resume(self) -> None:
        """The saved state may be older than the book (a crash after a fill, before the state was
        saved): the resumed strategy holds what the book holds, before any bar or trade."""
        try:
            self._follow_book_now("resumed from the saved state")
            self._protect_due = True
            self._protect()
        finally:
            self._flush_log()

    def _publish_position(self, last_signal: str | None) -> None:
        """The status shows the position the strategy resumed with (and why it holds it), and its
        indicators (incl. the armed stop) before the first live bar."""
        self.status.position = self.strategy.target.value
        self.status.indicators = self.strategy.indicators()
        self.status.warmed_up = self.strategy.warmed_up
        if last_signal is not None:
            self.status.last_signal = last_signal

    def _resume_position(self, target: PositionTarget, saved_entry: float | None) -> None:
        """Give the freshly built (warmed-up) strategy the position kept from before, priced at the
        order manager's average price so its exits are armed."""
        if target is PositionTarget.FLAT:
            self.strategy.set_position(target)
            return
        entry, source = self._book_entry_price(target), "order manager average price"
        if entry is None and saved_entry is not None:
            entry, source = saved_entry, "entry price in the saved state"
        self.strategy.set_position(target, entry)
        self._log_armed(target, entry, source)

    def _rearm_if_unpriced(self) -> None:
        """A restored position without an entry price (saved by a rebuild that lost it) gets one
        from the book, so its stop is armed again."""
        target = self.strategy.target
        if target is PositionTarget.FLAT or self.strategy.entry_price is not None:
            return
        entry = self._book_entry_price(target)
        if entry is None:
            self._log_armed(target, None, "")
            return
        self.strategy.set_position(target, entry)
        self._log_armed(target, entry, "order manager average price (the saved state had no entry price)")

    def _log_armed(self, target: PositionTarget, entry: float | None, source: str) -> None:
        values = self.strategy.indicators()
        stop = values.get("stop")
        if entry is None and not self.strategy.stop_configured:
            self.log.info("%s position resumed without an entry price (no stop configured)", target.value)
            return
        if entry is None:
            self.log.warning("%s position resumed but its entry price is unknown (no average price in the order "
                             "manager's book for %s, none saved): the stop could not be armed from the entry%s",
                             target.value, self.config.symbol,
                             "" if stop is None else f"; stop set from the last price instead: {stop}")
            app_log.warning("%s %s: %s position resumed without an entry price; stop not armed from the entry",
                            self.config.strategy.value, self.config.symbol, target.value)
            return
        self.log.info("%s position resumed at entry %s (%s); stop %s%s", target.value, entry, source,
                      "-" if stop is None else stop,
                      "" if values.get("take_profit") is None else f", take-profit {values['take_profit']}")
        if stop is None and self.strategy.stop_configured:
            self.log.warning("%s position resumed at entry %s but the stop could not be armed "
                             "(ATR not defined yet: not enough history)", target.value, entry)

    def _book_positions(self) -> list[OmsPosition]:
        """This ticker's non-flat positions in the order manager's book, one per broker (an
        unreadable broker is logged and left out; no book: none)."""
        if self._orders is None:
            return []
        held: list[OmsPosition] = []
        for broker in BROKERS:
            try:
                pos = self._orders.position(self.config.strategy.value, self.config.symbol, broker)
            except Exception as exc:  # the book unreadable: go on without it, and say so
                self.log.warning("could not read the %s position from the order manager: %s", broker, exc)
                continue
            if pos.quantity != 0:
                held.append(pos)
        return held

    def book_target(self) -> PositionTarget:
        """The side this ticker holds in the order manager's book (a 0DTE call is LONG, a put
        SHORT); FLAT when it holds nothing or the book is unavailable."""
        sides = {(pos.option.right is OptionRight.CALL) if pos.option is not None else pos.quantity > 0
                 for pos in self._book_positions()}
        if len(sides) > 1:
            self.log.warning("brokers hold opposite sides of %s; starting flat: reconcile it", self.config.symbol)
            return PositionTarget.FLAT
        if not sides:
            return PositionTarget.FLAT
        return PositionTarget.LONG if sides.pop() else PositionTarget.SHORT

    def _book_entry_price(self, target: PositionTarget) -> float | None:
        """The order manager's average price of this ticker's position on the side of `target`
        (quantity-weighted over brokers), or None when unknown. An option position (0DTE) is
        priced in premium, not in the underlying the strategy's stops watch: None."""
        sign = 1 if target is PositionTarget.LONG else -1
        priced = [(abs(pos.quantity), float(pos.avg_price)) for pos in self._book_positions()
                  if pos.quantity * sign > 0 and pos.option is None and pos.avg_price > 0]
        total = sum(qty for qty, _ in priced)
        return sum(qty * price for qty, price in priced) / total if total else None

    def _session_history(self, needed: int, through_id: str) -> list[Bar]:
        """The last `needed` warm-up bars inside the instrument's sessions (as live: bars outside
        are not evaluated). Asks for more history while out-of-session bars (e.g. an equity's
        pre-market) crowd the session bars out."""
        ask = needed
        while True:
            bars = self._md.warmup(self.config.symbol, self._timeframe, ask, through_id=through_id)
            kept = [bar for bar in bars if self._bar_in_session(bar)]
            if len(kept) >= needed or len(bars) < ask or ask >= MAX_WARMUP_BARS:
                return kept[-needed:] if needed > 0 else []
            ask *= 4

    def _bar_in_session(self, bar: Bar) -> bool:
        """A bar is evaluated when it overlaps a session (live bars are cut at the session bounds,
        so in practice: when it starts inside one)."""
        return calendars.bar_in_session(self.config.symbol, bar.start_ns, bar.end_ns)

    def _in_session(self, ts_ns: int) -> bool:
        """Bars and trades outside the instrument's session (a simulated feed at night, extended-
        hours equity prints, a holiday) are not evaluated: no indicator, signal or stop sees them."""
        return calendars.is_open(self.config.symbol, ts_ns)

    def _last_id(self, key: str) -> str:
        latest = self._store.redis.xrevrange(key, count=1)
        return str(latest[0][0]) if latest else "0-0"

    def _loop(self) -> None:
        wait_s = self._timeframe.check_interval_seconds
        bars_key = self._md.bars_key(self.config.symbol, self._timeframe)
        trades_key = self._md.trades_key(self.config.symbol)
        if self._bar_id == "$":
            self._bar_id = self._last_id(bars_key)
        # A fresh subscription (and inbox) from the saved bar id: after a crash, entries delivered
        # to the old inbox but never handled are simply delivered again.
        sub = self._hub.subscribe(threading.current_thread().name, {bars_key: self._bar_id})
        self._inbox = inbox = sub.inbox  # before the stop check below: stop() then always reaches it
        watching_trades = False
        bookkeeping_since: float | None = None  # bars acted on whose status, log and state are not written yet
        try:
            while not self._stop.is_set():
                watching_trades = self._watch_trades_while_holding(sub, trades_key, watching_trades)
                try:
                    message = inbox.get(timeout=0 if bookkeeping_since is not None else wait_s)
                except queue.Empty:
                    if bookkeeping_since is None:
                        self._housekeeping()
                        continue
                    message = None  # only the pending bookkeeping below
                tick = message == _TICK
                if message is not None and message not in (_STOP, _TICK):
                    try:
                        had_bars = self._handle(message, bars_key, trades_key if watching_trades else None)
                    finally:
                        self._hub.done(sub)
                    if had_bars and bookkeeping_since is None:
                        bookkeeping_since = time.monotonic()
                    if bookkeeping_since is None:  # trades only: no bookkeeping is due to write their lines
                        with self._lock:
                            self._flush_log()
                if bookkeeping_since is not None:
                    left = BOOKKEEPING_WAIT_SECONDS - (time.monotonic() - bookkeeping_since)
                    outcome = "stop" if self._stop.is_set() else self._hub.wait_quiet(sub, max(0.0, left))
                    if outcome == "input" and left > 0:
                        continue  # our next message first; the bookkeeping stays due
                    bookkeeping_since = None
                    self._after_bars()
                if not self._stop.is_set() and (tick or self._time_ns() - self._last_housekeeping_ns >= self._check_ns):
                    self._housekeeping()
        except BaseException:
            # A crash: the state may be half-updated, so it is not saved; the restart resumes from the
            # last saved state and acting on those bars again is idempotent (intent ids).
            bookkeeping_since = None
            raise
        finally:
            if bookkeeping_since is not None:
                self._after_bars()  # stopping: what was acted on is logged and saved before stop returns
            self._hub.unsubscribe(sub)

    def _watch_trades_while_holding(self, sub: Any, trades_key: str, watching: bool) -> bool:
        """Stops are checked, and a refused exit retried, on every trade while a position is held:
        the trade stream is watched then (from now on), and only then. Returns whether it is."""
        holding = self.strategy.target is not PositionTarget.FLAT or self._exit_pending is not None
        if holding and not watching:
            if self._trade_id == "$":
                self._trade_id = self._last_id(trades_key)
            self._hub.watch(sub, trades_key, self._trade_id)
            return True
        if not holding:
            if watching:
                self._hub.unwatch(sub, trades_key)
            self._trade_id = "$"
            return False
        return watching

    # --- events -----------------------------------------------------------------------------
    def _handle(self, message: InboxMessage, bars_key: str, trades_key: str | None) -> bool:
        """Act on one delivered message: its bars, then (when watching) its trades. Returns
        whether it held a bar (bookkeeping is then due)."""
        received = time.perf_counter()
        had_bars = False
        for key, entries in message:
            if key == bars_key:
                for entry_id, fields in entries:
                    bar = Bar.from_fields(fields)
                    if self._fed_start_ns is not None and bar.start_ns <= self._fed_start_ns:
                        self.log.info("bar %s skipped: the strategy was already fed a bar starting then "
                                      "(warm-up history)", _iso(bar.start_ns))
                    elif not self._bar_in_session(bar):
                        self._last_bar_wall_ns = self._time_ns()  # not evaluated, but the feed is alive
                        if not self._outside_session_noted:
                            self._outside_session_noted = True
                            self.log.info("bar %s is outside the %s session: not evaluated, nor any bar or trade "
                                          "until the session opens", _iso(bar.start_ns), self.config.symbol)
                    else:
                        self._outside_session_noted = False
                        self._on_bar(bar, received)
                        if not self._timeframe.is_tick:
                            self._fed_start_ns = bar.start_ns
                        had_bars = True
                    self._bar_id = entry_id
            elif key == trades_key:  # (None when not watching: trades queued before an unwatch are stale)
                for entry_id, fields in entries:
                    self._trade_id = entry_id
                    trade = Trade.from_fields(self.config.symbol, fields)
                    if self._in_session(trade.ts_ns):  # stops, like the bars, only in the session
                        self._on_trade(trade)
        return had_bars

    def _on_bar(self, bar: Bar, received: float | None = None) -> None:
        """One completed bar, the time-critical part: indicators, decisions, orders. The bar line
        (OHLCV + indicator values) and each decision line are stamped when they happen; formatting
        them, writing the ticker log, the status and the saved state are `_after_bars`, which the
        loop runs once every thread woken by the same close has sent its orders."""
        with self._lock:
            try:
                now = self._time_ns()
                self._last_bar_wall_ns = now
                if self.status.stale_feed:
                    self._note(logging.INFO, f"bars arriving again (was: {self.status.stale_feed})")
                    self.status.stale_feed = None
                self._market_ns = max(self._market_ns, bar.end_ns)
                clock_intents = self._clock_intents(bar.end_ns)
                intents = clock_intents + self.strategy.on_bar(bar)
                if self._join_pending and not intents and self.strategy.target is not PositionTarget.FLAT:
                    intents = [self._join_intent(bar)]
                values = self.strategy.indicators()
                self._last_bar_seen = (bar, values, now)
                self._recent.append((bar, values))
                self._note(logging.INFO, _BarLine(bar, values))
                if self._skip_stale_signals and self._is_stale(bar):
                    intents = self._drop_stale_entries(intents)
                self._act(intents, received, save=False, protect=False)
                if self._exit_pending is not None or self._book_check_due:
                    self._check_book(bar.end_ns, throttle=True)
            except BaseException:
                self._flush_log()  # the lines leading up to a crash are in the log with its traceback
                raise

    def _after_bars(self) -> None:
        """Bookkeeping for the bars acted on: the resting stop (placed for a new position, moved
        with a trailing stop), status, the ticker-log write, the saved state. The stop waits until
        the other threads of the same close sent their orders: placing or moving it costs several
        round trips at the broker, which an entry of another ticker would otherwise queue behind;
        meanwhile the strategy's own stop is armed."""
        with self._lock:
            try:
                self._protect()
                self.status.position = self.strategy.target.value
                seen = self._last_bar_seen
                if seen is not None:
                    bar, values, received_ns = seen
                    self.status.last_bar_received = _iso_full(received_ns)
                    self.status.last_bar = bar.to_json()
                    self.status.indicators = values
                    self.status.warmed_up = self.strategy.warmed_up
            finally:
                self._flush_log()
            self._save()

    def recent_bars(self) -> list[tuple[Bar, dict[str, float | None]]]:
        """The last RECENT_BARS bars this strategy was fed, each with its indicator values after
        it, oldest first. Safe from any thread: deque.copy() runs without releasing the GIL."""
        return list(self._recent.copy())

    def _on_trade(self, trade: Trade) -> None:
        """A trade (while in a position): stops. Its log lines are written by the loop after the
        message (or by the bookkeeping of the bar that came with it), not before `done`."""
        with self._lock:
            try:
                self._market_ns = max(self._market_ns, trade.ts_ns)
                self._act(self.strategy.on_trade(trade))
                if self._exit_pending is not None or self._book_check_due:
                    self._check_book(trade.ts_ns, throttle=True)
            except BaseException:
                self._flush_log()  # the lines leading up to a crash are in the log with its traceback
                raise

    def _housekeeping(self) -> None:
        with self._lock:
            now = self._time_ns()
            self._last_housekeeping_ns = now
            self.status.last_housekeeping = _iso_full(now)
            self._check_feed(now)
            try:
                self._act(self._clock_intents(now))
                if self._market_ns:  # the market's time, not the wall clock (a replay runs history)
                    self._roll_if_due(self._market_ns)
                self._check_book(now, throttle=False)
                if self.strategy.target is not PositionTarget.FLAT or self._protected_level is not None:
                    self._protect_due = True  # each tick asks again: another strategy may share the symbol now
                self._protect()
            finally:
                self._flush_log()

    def _check_feed(self, now_ns: int) -> None:
        """Stale-feed note: the session is open and no bar arrived for 2 x the timeframe (counted
        from the session's open at the earliest: the first bar of a session needs time to close)."""
        session = calendars.calendar_for(self.config.symbol).session_at(now_ns)
        silent_ns = now_ns - max(self._last_bar_wall_ns, session.open_ns if session is not None else 0)
        if session is None or silent_ns <= self._stale_feed_ns:
            self.status.stale_feed = None  # bars flowing, or the session is closed: nothing to flag
            return
        note = (f"no bar for {silent_ns / 1e9:.0f}s while the session is open "
                f"(limit {self._stale_feed_ns / 1e9:.0f}s); last bar received {self.status.last_bar_received or 'never'}")
        if self.status.stale_feed is None:
            self.log.warning("stale feed: %s", note)
            app_log.warning("%s %s stale feed: %s", self.config.strategy.value, self.config.symbol, note)
        self.status.stale_feed = note

    def _clock_intents(self, now_ns: int) -> list[Intent]:
        if self._clock_provider is None:
            return []
        return self.strategy.on_clock(self._clock_provider(now_ns))

    def _is_stale(self, bar: Bar) -> bool:
        return self._time_ns() - bar.end_ns > self._signal_lifetime_ns

    def _drop_stale_entries(self, intents: list[Intent]) -> list[Intent]:
        """A catch-up bar read long after it closed: its new positions are not traded (they would
        trade at a price the strategy never saw) and the strategy goes back to what the book
        holds; its exits (FLAT) are traded: getting out is never refused."""
        kept = [i for i in intents if i.target is PositionTarget.FLAT or self._sent_somewhere(i)]
        for intent in intents:
            if intent in kept and intent.target is not PositionTarget.FLAT:
                # A crash between the brokers' orders: the decision was taken live and reached some
                # broker; the others finish it (the ones done answer "duplicate", nothing twice).
                self._note(logging.WARNING, f"stale bar (catch-up): finishing {intent.target.value}, "
                                            "already sent to a broker before the restart")
            elif intent not in kept:
                self._note(logging.WARNING, f"stale bar (catch-up): NOT trading {intent.target.value} {intent.detail}")
        if len(kept) < len(intents) and not kept:
            self._follow_book_now("a stale catch-up signal was not traded")
        return kept

    def _sent_somewhere(self, intent: Intent) -> bool:
        if self._orders is None or not self.config.trade_enabled:
            return False
        try:
            return any(self._orders.intent_sent(intent.strategy, intent.symbol, broker, intent.event_ts_ns)
                       for broker in allocations(self.config))
        except Exception as exc:  # the book unreadable: the stale signal stays untraded
            self.log.warning("could not read the book's intents: %s", exc)
            return False

    def _act(self, intents: list[Intent], received: float | None = None, save: bool = True,
             protect: bool = True) -> None:
        """Execute intents, then hold the strategy to the book (`_follow_book`); their log lines go
        to the batch the caller flushes. `save=False`: the caller saves the state right after (the
        bar loop, which also records the bar id). `protect=False`: the caller places the resting
        stop later (the bar loop's bookkeeping)."""
        if intents:
            self._join_pending = False  # the rules acted: from here the book follows them
        for intent in intents:
            self.status.last_signal = f"{intent.target.value} ({intent.reason.value}): {intent.detail}"
            self.status.position = self.strategy.target.value
            if not self.config.trade_enabled:
                self._note(logging.INFO, f"signal {self.status.last_signal} (trading disabled, no order)")
                continue
            self._note(logging.INFO, f"signal {self.status.last_signal}")
            if intent.target is not PositionTarget.FLAT:
                self._exit_pending = None  # a new position supersedes a pending exit (it closes first)
            report = self._execute(intent)
            if (received is not None and self._on_bar_to_order is not None
                    and any(r.orders and r.status in ACKNOWLEDGED_STATUSES for r in report.results)):
                try:
                    self._on_bar_to_order(self.config.strategy.value, self.config.symbol,
                                          time.perf_counter() - received)
                except Exception:
                    app_log.exception("on_bar_to_order callback failed")
            self._follow_book(intent, report)
            if intent.reason is IntentReason.JOIN and self.book_target() is intent.target:
                self._resume_position(intent.target, None)  # exits armed from the fill, not the history
            self._protect_due = True
        if intents and self.config.trade_enabled and protect:
            self._protect()
        if intents and save:
            self._save()

    def _execute(self, intent: Intent) -> ExecutionReport:
        deadline = (intent.event_ts_ns + self._signal_lifetime_ns) if self._skip_stale_signals else None
        report = self._executor.execute(intent, self.config, open_deadline_ns=deadline)
        self._note(logging.INFO, f"orders: {report.summary()}")
        if self._on_report:
            self._on_report(report)
        return report

    # --- the book is the truth the strategy follows --------------------------------------------
    def _follow_book(self, intent: Intent | None, report: ExecutionReport | None) -> None:
        """After every act: when every broker reached the target, nothing to read; when orders are
        still in flight, compare once they settle (housekeeping, the next trade or bar); otherwise
        compare now and repair (see `_compare_with_book`)."""
        if report is not None and report.results and not report.errors and all(
                r.status not in _IN_FLIGHT and r.quantity == r.target_quantity for r in report.results):
            self._book_agrees()
            return
        if report is not None and any(r.status in _IN_FLIGHT for r in report.results):
            self._book_check_due = True
            return
        self._compare_with_book(intent, report)

    def _follow_book_now(self, why: str) -> None:
        """Compare with the book now (a stale signal, a position closed outside the strategy)."""
        self._compare_with_book(None, None, why)

    def _compare_with_book(self, intent: Intent | None, report: ExecutionReport | None, why: str = "") -> None:
        """What the strategy holds against the book, broker by broker, and the repair:
        - orders still in flight: look again later;
        - the strategy wants out (FLAT) and the book still holds: the exit was refused or failed,
          so it is retried on every trade (at most every EXIT_RETRY_SECONDS) and housekeeping tick
          until the book is flat, with an alert;
        - otherwise the strategy takes the book's side (arming its exits from the book's average
          price): a strategy never believes a position no broker holds, and never holds one it
          does not know about. Brokers on different sides: the strategy keeps a side some broker
          holds; the difference is reported (reconciliation and the operator settle it)."""
        alloc = allocations(self.config)
        if not alloc or not self.config.trade_enabled or self._orders is None or self._join_pending:
            return  # (a join not yet sent: the strategy holds its rules' side, the book nothing yet)
        try:
            lanes = self._orders.lanes(self.config.strategy.value, self.config.symbol, alloc)
        except Exception as exc:  # the book unreadable: look again at the next tick
            self.log.warning("could not read the book: %s", exc)
            self._book_check_due = True
            return
        if any(view.busy for view in lanes.values()):
            self._book_check_due = True
            return
        self._book_check_due = False
        book = {b: self._side_quantity(view.position) for b, view in lanes.items()}
        target = self.strategy.target
        expected = {b: self._sign(target) * q for b, q in alloc.items()}
        if book == expected:
            self._book_agrees()
            return
        held = {b: q for b, q in book.items() if q}
        outcome = "; ".join(f"{r.broker}: {r.status.value} {r.reason}".strip() for r in report.results) if report else ""
        if report is not None and report.errors:
            outcome = "; ".join([outcome, *(f"{b}: {e}" for b, e in report.errors.items())]).strip("; ")
        if target is PositionTarget.FLAT and held:
            exit_intent = intent if intent is not None and intent.target is PositionTarget.FLAT else self._exit_pending
            if exit_intent is not None:
                self._exit_refused(exit_intent, expected, book, outcome or why)
                return
        want = self._sign(target)
        signs = {b: (q > 0) - (q < 0) for b, q in book.items()}
        if want and all(sign == want for sign in signs.values()):
            self._diverged(expected, book, f"the book holds {target.value} in other quantities than the ticker's "
                                           "(changed since?): the next signal moves it to the ticker's quantity")
            return
        if want and want in signs.values():
            self._diverged(expected, book, f"brokers disagree for {self.config.symbol}; the strategy keeps "
                                           f"{target.value} (a broker holds it): reconcile the others. {outcome}".strip())
            return
        sides = {sign for sign in signs.values() if sign}
        if len(sides) > 1:
            self._diverged(expected, book, f"brokers hold opposite sides of {self.config.symbol}: reconcile them")
            return
        side = PositionTarget.FLAT if not sides else (PositionTarget.LONG if sides.pop() > 0 else PositionTarget.SHORT)
        entry = self._book_entry_price(side) if side is not PositionTarget.FLAT else None
        self.strategy.set_position(side, entry)
        self._exit_pending = None
        self.status.position = side.value
        self.status.indicators = self.strategy.indicators()
        note = (f"strategy said {target.value} but the book holds {side.value} "
                f"({', '.join(f'{b} {q}' for b, q in book.items())}): the strategy follows the book"
                + (f" ({outcome or why})" if (outcome or why) else ""))
        self._note(logging.WARNING, note)
        app_log.warning("%s %s: %s", self.config.strategy.value, self.config.symbol, note)
        if side is not PositionTarget.FLAT:
            self._watch_trades_from_now()
        self._diverged(expected, book, note, repaired=True)

    def _exit_refused(self, intent: Intent, expected: dict[str, int], book: dict[str, int], outcome: str) -> None:
        first = self._exit_pending is None
        self._exit_pending = intent
        note = f"protective exit ({intent.reason.value}) not done: {outcome}; retrying until the book is flat"
        if first:
            self._note(logging.ERROR, note)
            app_log.error("%s %s: %s", self.config.strategy.value, self.config.symbol, note)
        self._diverged(expected, book, note)  # reported before the status shows it
        self.status.exit_pending = f"{intent.reason.value}: {intent.detail} (refused: {outcome})"
        self._inbox.put(_TICK)  # the loop starts watching trades (the retries' trigger) at once

    def _retry_exit(self, ts_ns: int, *, throttle: bool) -> None:
        """Send the refused protective exit again, as a new intent (a new client id: the refused
        order stays on record as refused)."""
        pending = self._exit_pending
        now = self._time_ns()
        if pending is None or (throttle and now - self._exit_attempt_ns < EXIT_RETRY_SECONDS * 1_000_000_000):
            return
        self._exit_attempt_ns = now
        retry = Intent(pending.strategy, pending.symbol, PositionTarget.FLAT, pending.reason,
                       f"retry of the refused exit: {pending.detail}", max(ts_ns, pending.event_ts_ns + 1),
                       pending.price)
        self._note(logging.INFO, f"retrying the protective exit ({pending.reason.value})")
        self._follow_book(retry, self._execute(retry))

    def _book_agrees(self) -> None:
        if self._exit_pending is not None:
            self._note(logging.INFO, "protective exit done: the book is flat")
            app_log.info("%s %s: protective exit done after retries", self.config.strategy.value, self.config.symbol)
        self._exit_pending = None
        self._book_check_due = False
        if self._divergence is not None:
            self._divergence = None
            self._note(logging.INFO, "strategy and book agree again")
            self._report_divergence(None)  # reported before the status shows it
            self.status.divergence = None
        self.status.exit_pending = None

    def _diverged(self, expected: dict[str, int], book: dict[str, int], note: str, repaired: bool = False) -> None:
        """Shown in the status, reported (metric, /api/status, alert) until they agree again. A
        repaired divergence is reported once and cleared: the strategy now follows the book."""
        d = Divergence(self.config.strategy.value, self.config.symbol, self.strategy.target.value,
                       {str(b): q for b, q in expected.items()}, {str(b): q for b, q in book.items()}, note)
        if repaired:
            self._report_divergence(d)
            self._divergence = None
            self.status.divergence = None
            self._report_divergence(None)
            return
        if self._divergence is None or self._divergence.book != d.book or self._divergence.note != d.note:
            self._report_divergence(d)
        self._divergence = d
        self.status.divergence = d.to_json()

    def _report_divergence(self, d: Divergence | None) -> None:
        if self._on_divergence is None:
            return
        try:
            self._on_divergence(d, self.config.strategy.value, self.config.symbol)
        except Exception:
            app_log.exception("on_divergence callback failed")

    def _check_book(self, ts_ns: int, *, throttle: bool) -> None:
        """On trades and housekeeping: retry a pending exit, compare once in-flight orders settled."""
        if self._exit_pending is not None:
            self._retry_exit(ts_ns, throttle=throttle)
        elif self._book_check_due or not throttle:
            self._compare_with_book(None, None, "checked after the orders settled")

    def _roll_if_due(self, now_ns: int) -> None:
        """A future held in a month that is no longer the front month (its roll date came, in New
        York days): close it in that month and, unless configured to close only, reopen the same
        side in the new front month (one intent: the order manager closes first, then opens)."""
        target = self.strategy.target
        if (target is PositionTarget.FLAT or self._exit_pending is not None or self._orders is None
                or not self.config.trade_enabled or not self._in_session(now_ns)):
            return
        front = contract_key_at(self.config.symbol, now_ns)
        if front is None:
            return
        try:
            lanes = self._orders.lanes(self.config.strategy.value, self.config.symbol, allocations(self.config))
        except Exception as exc:  # the book unreadable: the next tick tries again
            self.log.warning("could not read the book for the roll check: %s", exc)
            return
        held = [f"{broker} {view.position.key}" for broker, view in lanes.items()
                if contract_from_key(view.position.key) is not None and view.position.key != front]
        if not held:
            return
        new_target = target if self._roll_reopens else PositionTarget.FLAT
        detail = (f"roll: {', '.join(held)} past its roll date; "
                  + (f"reopening {target.value} in {front}" if self._roll_reopens else "closing (FUTURES_ROLL=close)"))
        if new_target is PositionTarget.FLAT:
            self.strategy.set_position(PositionTarget.FLAT)  # it follows the book if the close is refused
        price = self._md.last_price(self.config.symbol)
        self._act([Intent(self.config.strategy.value, self.config.symbol, new_target, IntentReason.ROLL, detail,
                          now_ns, float(price) if price is not None else 0.0)])

    def _protect(self) -> None:
        """Keep the strategy's armed stop resting at each broker as a real stop order, so the
        position stays protected through a dead process, a dead feed or stop-trading. Asked only
        when the level changed or the position may have (an act, a resume); the order manager
        places, moves or cancels the order. The strategy's own stop stays armed as the backup."""
        if not self._broker_stops or self._orders is None or not self.config.trade_enabled:
            return
        raw = self.strategy.indicators().get("stop") if self.strategy.stop_configured else None
        level = self._on_tick(raw, self.strategy.target) if self.strategy.target is not PositionTarget.FLAT else None
        if self._exit_pending is not None:
            level = self._protected_level  # the way out was refused: the held position keeps its stop
        if level == self._protected_level and not self._protect_due:
            return
        self._protect_ns = max(self._time_ns(), self._protect_ns + 1)  # a fresh client id per placement
        try:
            for broker in allocations(self.config):
                self._orders.protect(self.config.strategy.value, self.config.symbol, broker, level, self._protect_ns)
        except Exception as exc:  # the local stop still protects; the next bar or tick asks again
            self.log.warning("could not place the protective stop at the broker: %s: %s", type(exc).__name__, exc)
            self._protect_due = True
            return
        if level != self._protected_level and level is not None:
            self._note(logging.INFO, f"protective stop resting at the broker at {level}")
        self._protected_level, self._protect_due = level, False

    def _on_tick(self, price: float | None, side: PositionTarget) -> Decimal | None:
        """A stop level as the broker takes it: a multiple of the instrument's tick, rounded away
        from the market (down for a long's sell stop, up for a short's buy stop), so the broker's
        stop never triggers before the strategy's own: a trade that fills it fires both, and the
        strategy knows at once that it is out."""
        if price is None or self._tick is None:
            return None
        tick = Decimal(self._tick)
        rounding = ROUND_FLOOR if side is PositionTarget.LONG else ROUND_CEILING
        return (Decimal(str(price)) / tick).to_integral_value(rounding) * tick

    @staticmethod
    def _sign(target: PositionTarget) -> int:
        return 1 if target is PositionTarget.LONG else -1 if target is PositionTarget.SHORT else 0

    @staticmethod
    def _side_quantity(pos: OmsPosition) -> int:
        """The book's position as the strategy's side x quantity (a 0DTE call is LONG, a put SHORT)."""
        if pos.option is not None and pos.quantity:
            return abs(pos.quantity) if pos.option.right is OptionRight.CALL else -abs(pos.quantity)
        return pos.quantity

    def _note(self, level: int, msg: object) -> None:
        rec = record(self.log, level, msg)
        if rec is not None:
            self._log_batch.append(rec)

    def _flush_log(self) -> None:
        batch, self._log_batch = self._log_batch, []
        emit_batch(self.log, batch)

    # --- external commands (manual trigger, ticker removal) ---------------------------------
    def force_target(self, target: PositionTarget, reason: IntentReason, detail: str, price: float) -> ExecutionReport:
        """Move to `target` through the same path as a signal, and tell the strategy."""
        with self._lock:
            if not self._prepared:  # a one-off runner (strategy not started): load its real state
                self._prepare()
            intent = Intent(self.config.strategy.value, self.config.symbol, target, reason, detail,
                            self._time_ns(), price)
            self.log.info("%s -> %s: %s", reason.value, target.value, detail)
            deadline = intent.event_ts_ns + self._signal_lifetime_ns
            report = self._executor.execute(intent, self.config, open_deadline_ns=deadline)
            self.log.info("orders: %s", report.summary())
            if target is not PositionTarget.FLAT:
                self._exit_pending = None
            # The strategy takes the new position, then follows the book: when every broker denied
            # or rejected it (e.g. HALTED), the book did not move and neither does the strategy.
            self.strategy.set_position(target, price)
            self._follow_book(intent, report)
            self._protect_due = True
            self._protect()
            self._flush_log()
            if self.strategy.target is target:
                self.status.position = target.value
                self.status.last_signal = f"{target.value} ({reason.value}): {detail}"
                self.status.indicators = self.strategy.indicators()  # the armed stop shows at once
                self._watch_trades_from_now()
            else:
                self.status.last_signal = f"{target.value} ({reason.value}) not done: {report.summary()}"
            self._save()
            return report

    def _watch_trades_from_now(self) -> None:
        """A position taken outside the bar loop (a manual trigger): the thread checks its stops
        on the trades from this moment, not only from its next bar (it is woken to start watching)."""
        if self.strategy.target is not PositionTarget.FLAT and self._trade_id == "$":
            self._trade_id = self._last_id(self._md.trades_key(self.config.symbol))
        self._inbox.put(_TICK)

    def sync_position(self, target: PositionTarget) -> None:
        """The position changed outside this strategy (an operator's adoption)."""
        with self._lock:
            self.strategy.set_position(target)
            self.status.position = target.value
            self._save()

    def sync_with_book(self, why: str) -> None:
        """Positions were moved outside this strategy (loss-limit flatten, kill switch): it takes
        what the book now holds. A flatten that did not get through leaves the strategy holding
        the position, its exits armed: never a strategy that believes it is out while it is in."""
        with self._lock:
            if not self._prepared:
                self._prepare()
            self._follow_book_now(why)
            self.status.position = self.strategy.target.value
            self._flush_log()
            self._save()

    def sync_saved_position(self, target: PositionTarget) -> bool:
        """`sync_position` for a ticker whose thread is not running: rewrite its saved state (what
        the next start resumes from) when it holds another position. Nothing saved: nothing to do."""
        with self._lock:
            raw = self._states.get(self.state_key)
            if not raw:
                return False
            data = json.loads(raw)
            if data.get("position", PositionTarget.FLAT.value) == target.value:
                return False
            if data.get("config") == self.config.to_json():
                self._prepare()  # restores the saved indicators (no warm-up), so only the position changes
                self.sync_position(target)
            else:  # parameters changed since: the next start warms up again and keeps only "position"
                data["position"] = target.value
                self._states.put(self.state_key, json.dumps(data))
            self.log.info("position set to %s while stopped (closed outside the strategy)", target.value)
            return True

    def _save(self) -> None:
        # Write-behind (engine/state_writer.py): no round trip on the bar path; safe because acting
        # on a bar again after a crash is idempotent. A join not yet sent is not saved: a restart
        # then starts afresh (and joins again) instead of resuming a side no broker holds.
        if self._join_pending:
            return
        self._states.put(self._state_key, self._state_json())

    def _state_json(self) -> str:
        """json.dumps({"config", "strategy", "bar_id", "fed_start_ns", "position"}), the same
        document, with the constant config part encoded once per runner."""
        return (f'{self._state_head}{json.dumps(self.strategy.state())}, "bar_id": {json.dumps(self._bar_id)}, '
                f'"fed_start_ns": {json.dumps(self._fed_start_ns)}, '
                f'"position": {json.dumps(self.strategy.target.value)}}}')


def _opt_int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _opt_float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_full(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, timezone.utc).isoformat()


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _bar_line(bar: Bar, values: dict[str, float | None]) -> str:
    indicators = " ".join([f"{k}={_fmt(v)}" for k, v in values.items()])
    gapped = " GAPPED" if bar.gapped else ""
    return (f"bar {_iso(bar.end_ns)} O={bar.open} H={bar.high} L={bar.low} C={bar.close} V={bar.volume} "
            f"n={bar.trade_count}{gapped} | {indicators}")


class _BarLine:
    """A bar's log line, formatted only when the log is written (logging calls str() on it)."""

    __slots__ = ("bar", "values")

    def __init__(self, bar: Bar, values: dict[str, float | None]) -> None:
        self.bar, self.values = bar, values

    def __str__(self) -> str:
        return _bar_line(self.bar, self.values)
