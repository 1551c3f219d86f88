"""Strategy engine benchmark: 30 strategy threads on replayed trades, real Redis.

    .venv/bin/python bench/engine.py [--minutes 300] [--idle 10] [--trader-defaults] [--stagger] [--no-risk]
                                     [--redis-url redis://...]

By default the strategies run stress periods (EMA 2/3, Supertrend 5/1.0): a median of 9 and up
to 23 orders leave per bar close, as in a market-wide reversal. `--trader-defaults` runs EMA 9/21
and Supertrend 10/3.0 instead (fewer signals: use --minutes 1200 for as many orders).

Path measured (all production classes): trades -> MarketDataService.process_now (bar builders,
Redis trade + bar streams) -> the engine's StreamHub (one XREAD) -> strategy threads (in-process
inbox) -> IntentExecutor -> OrderManager ->
PaperBroker (order acknowledged = filled). Latency = from the moment the driver hands a bar's
closing trade to the market data service to the moment the order manager returned the
acknowledged order (perf_counter, same process), two ways:
- per order (`close_trade_to_ack_ms_*`): each broker's order for the bar, when `move_to_target`
  returned it acknowledged (a reversal counts when its open leg is acknowledged too);
- per intent (`close_trade_to_all_acks_ms_*`): when the last broker's order of the intent is
  acknowledged (the executor sends to the brokers one after the other).
The engine-only part (bar received by the thread -> all orders acknowledged) comes from the
supervisor's `on_bar_to_order` callback. `orders_per_close_*`: how many orders one bar close
produced across all 30 threads (the strategies' short periods make many tickers signal in the same
minute: a stress case, and what the tail latency is made of).

The 30 threads. The engine allows one ticker per (strategy, symbol); the catalog has 9 tradable
symbols plus SPX, and zeroday trades SPX only. So 10 tickers per strategy (and 10 zeroday
tickers) cannot exist in one engine. This bench runs two engine stacks (supervisor + order
manager + paper brokers, each on its own key prefix) on one shared market data service and one
shared stream hub (the service has one reader for all its threads, and so does the bench):
  A: ema x9 (1Min), supertrend x9 (1Min), zeroday SPX (1Min)          = 19 threads
  B: ema x5 (2Min), supertrend x5 (2Min), zeroday SPX (2Min)           = 11 threads
  => 30 threads: 14 ema, 14 supertrend, 2 zeroday.
The replayed minutes are those in which every instrument is in its session (09:30-16:00 ET on
successive trading days; the engine evaluates nothing outside a session).
All bars of all symbols close at the same instant each minute (as live), so the 19-30 threads that
wake together contend for 2 cores and the GIL: the tail latency includes that queueing.

Idle CPU: after the replay, process CPU time (user+sys) over an idle window with every strategy
thread waiting on its inbox (timeout 10 s: one housekeeping wake-up per thread per window) and the
hub blocked in XREAD.

The pre-trade risk check is production's (`app.build_services`: the RiskEngine with its audit log,
metrics and P&L source, default limits), so every order pays its Redis round trips (snapshot,
duplicate-id claim) and its audit record as in the service. `--no-risk` builds the order manager
with `allow_all` instead, to show what the check costs.

Machine floor (`machine_thread_wakeup_round_trip_us_*`): measured first, a round trip between two
Python threads through two queues. A close wakes 19-30 threads and each order's Redis reply must
take the GIL back, so on a VM whose wake-ups cost tens of microseconds (p99 hundreds) the same
code shows a higher tail than on bare metal; the figure says which machine produced the numbers.

The floor (bench/floor.py), measured in the same run after the replay: every Redis request the
order managers made while handling a bar close's intents is recorded per close, and a minimal
redis-py loop sends the same requests again, one close at a time (the same count of orders, the
same round trips, commands and argument bytes; each Lua call runs a stand-in of the same length
that returns what the real script returns). That is the time a minimal loop needs to issue the
burst's orders. `p99_over_floor`: the p99 over the measured orders of (closing trade -> ack) over
the floor of that order's close; `cpu_us_per_order`: process CPU time of the whole replay (market
data, 30 strategy threads, orders) per measured order.

The profile of a close: `close_to_first_delivery_ms_*` is the time from the closing trade to the
hub's first delivery of bars (bar builders, the XADD of the bars, the hub's XREAD): what passes
before any strategy code runs, and which the floor of the orders does not contain.
`order_thread_cpu_us_per_order_*` is the CPU time one acknowledged order took on its strategy
thread (risk check, order manager, paper broker; a thread's own CPU, so waiting for the GIL or
for Redis is not in it), to compare with `floor_cpu_us_per_order`.

A private redis-server on a free port (`--redis-url` for an existing one); unique key prefixes,
deleted afterwards. The last line is a JSON object.
"""
from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import logging
import os
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench.floor import FloorReplay, RoundTrips, cpu_seconds, private_redis  # noqa: E402
from brokers.paper import PaperBroker  # noqa: E402
from brokers.registry import BrokerRegistry  # noqa: E402
from config.settings import MarketDataSource, Settings  # noqa: E402
from domain.market import Trade  # noqa: E402
from domain.orders import BROKERS  # noqa: E402
from domain.tickers import TickerConfig  # noqa: E402
from engine.clock import spx_session_clock  # noqa: E402
from engine.executor import ExecutionReport, IntentExecutor  # noqa: E402
from engine.stream_hub import StreamHub  # noqa: E402
from engine.supervisor import StrategySupervisor  # noqa: E402
from market_data.feeds import ReplayFeed  # noqa: E402
from market_data.service import MarketDataService  # noqa: E402
from oms.models import ACKNOWLEDGED_STATUSES, TargetOrder, TargetResult  # noqa: E402
from oms.order_manager import OrderManager  # noqa: E402
from domain.risk import allow_all  # noqa: E402
from store.redis_store import Store, connect  # noqa: E402
from store.tickers import TickerStore  # noqa: E402

NS = 1_000_000_000
MINUTE = 60 * NS
START_NS = int(datetime(2024, 7, 2, 13, 30, tzinfo=timezone.utc).timestamp()) * NS  # 09:30 ET, Tuesday
GOAL_P99_OVER_FLOOR = 3.0
FLOOR_PASSES = 3  # the floor of each close is the median of this many replays
IDLE_PROBE_S = 0.005  # the engine is idle when the process used under IDLE_CPU_SHARE of a core
IDLE_CPU_SHARE = 0.1  # over two probes in a row (waiting at most IDLE_WAIT_MAX_S)
IDLE_WAIT_MAX_S = 2.0


def session_minutes(count: int) -> list[int]:
    """The first `count` minute starts from START_NS at which every replayed instrument is in its
    session (09:30-16:00 ET on trading days): the engine evaluates nothing outside a session, so
    a minute where the equities or SPX are closed would not be a 30-thread close."""
    import numpy as np

    from market_data import calendars

    minutes = START_NS + np.arange(count * 5 + 3000, dtype=np.int64) * MINUTE
    mask = np.ones(len(minutes), dtype=bool)
    for sym in SYMBOLS + ["SPX"]:
        mask &= calendars.open_mask(sym, minutes)
    chosen = minutes[mask][:count]
    assert len(chosen) == count
    return chosen.tolist()
SYMBOLS = ["/MES", "/ES", "/MNQ", "/NQ", "/M2K", "/RTY", "MSTR", "TSLA", "NVDA"]
B_SYMBOLS = SYMBOLS[:5]
LEVEL = {"/MES": 5500.0, "/ES": 5500.0, "/MNQ": 20000.0, "/NQ": 20000.0, "/M2K": 2100.0, "/RTY": 2100.0,
         "MSTR": 350.0, "TSLA": 250.0, "NVDA": 120.0, "SPX": 5500.0}


def thread_wakeup_us(rounds: int = 2000) -> tuple[float, float]:
    """This machine's floor for handing work between two Python threads: p50/p99 of a round trip
    through two queues (each way one thread wakes another and takes the GIL). Every strategy
    thread woken by a close, and every order's Redis reply, pays such hand-offs, so the engine's
    figures are read against it (it differs a lot between machines, and between VMs)."""
    ping: "queue.SimpleQueue[int]" = queue.SimpleQueue()
    pong: "queue.SimpleQueue[int]" = queue.SimpleQueue()

    def echo() -> None:
        for _ in range(rounds):
            pong.put(ping.get())

    thread = threading.Thread(target=echo, name="bench-wakeup-echo")
    thread.start()
    times = []
    for i in range(rounds):
        start = time.perf_counter_ns()
        ping.put(i)
        pong.get()
        times.append((time.perf_counter_ns() - start) / 1e3)
    thread.join()
    return pct(times, 50), pct(times, 99)


def first_delivery_ms(closes: list[int], deliveries: list[int]) -> list[float]:
    """For each closing-trade stamp, the milliseconds until the hub's first delivery after it
    (perf_counter_ns stamps, both ascending); closes with no delivery before the next are left out."""
    out = []
    for i, close in enumerate(closes):
        j = bisect.bisect_left(deliveries, close)
        following = closes[i + 1] if i + 1 < len(closes) else None
        if j < len(deliveries) and (following is None or deliveries[j] < following):
            out.append((deliveries[j] - close) / 1e6)
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Bench:
    def __init__(self, client: redis.Redis, url: str, log_dir: Path, trips: RoundTrips, *, risk: bool = True) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.url = url
        self.trips = trips
        self.prefixes = [f"bench-engine-{self.run_id}-md", f"bench-engine-{self.run_id}-a",
                         f"bench-engine-{self.run_id}-b"]
        self.client = client
        md_store = Store(client, self.prefixes[0], persistent=True, url=url)
        self.data_now = START_NS  # the engine's wall clock follows the replayed data
        base = Settings(redis_prefix=md_store.prefix, log_dir=log_dir, market_data_source=MarketDataSource.REPLAY)
        self.md = MarketDataService(base, md_store, source=ReplayFeed([]))
        self.stamps: dict[tuple[str, int], int] = {}  # (symbol, bar end) -> perf_counter_ns of closing trade
        self.latency_ms: list[float] = []  # per intent: all its brokers' orders acknowledged
        self.order_ms: list[float] = []  # per order: one broker's order acknowledged
        self.order_close: list[int] = []  # the bar end of each order_ms sample
        self.close_requests: dict[int, list[bytes]] = {}  # bar end -> the Redis requests of its intents
        self.engine_ms: list[float] = []
        self.per_close: dict[int, int] = {}  # bar end -> orders acknowledged for that close (all tickers)
        self.unmatched = 0
        # The stages of a close, for the profile: when the hub first delivered bars after each
        # closing trade (bars built, XADD, the hub's XREAD: before any strategy code runs), and the
        # CPU each acknowledged order took on its own thread (risk check, order manager, broker).
        self.close_stamps: list[int] = []
        self.delivery_stamps: list[int] = []
        self.order_cpu_us: list[float] = []
        self.stagger = False
        self.back_to_back = False  # the next close after a fixed pause, not when the engine is idle
        self.trader_defaults = False  # EMA 9/21 and Supertrend 10/3.0 instead of the stress periods
        self.risk = risk  # production's pre-trade risk check (else allow_all)
        self.lock = threading.Lock()
        # One reader for all 30 threads, as in the service (one supervisor, one hub): the two
        # stacks exist only because a symbol has one ticker per strategy.
        bench = self

        class TimedStreamHub(StreamHub):
            def _deliver(self, by_key):  # type: ignore[no-untyped-def]
                bench.delivery_stamps.append(time.perf_counter_ns())
                super()._deliver(by_key)

        self.hub = TimedStreamHub(md_store)
        self.hub.start()
        self.stacks = [self._stack(Store(client, p, persistent=True, url=url), base) for p in self.prefixes[1:]]

    def _stack(self, store: Store, base: Settings) -> StrategySupervisor:
        settings = replace(base, redis_prefix=store.prefix)
        clock = lambda: datetime.fromtimestamp(self.data_now / NS, timezone.utc)  # noqa: E731
        paper = {name: PaperBroker(store, name, settings, self.md.last_price, clock=clock) for name in BROKERS}
        registry = BrokerRegistry(settings, live={}, paper=dict(paper))
        bench = self

        class TimedOrderManager(OrderManager):
            def move_to_target(self, t: TargetOrder) -> TargetResult:
                requests: list[bytes] = []
                bench.trips.record_into(requests)  # this thread's Redis requests for this intent
                cpu0 = time.thread_time_ns()
                try:
                    result = super().move_to_target(t)
                finally:
                    bench.trips.record_into(None)
                done, cpu = time.perf_counter_ns(), time.thread_time_ns() - cpu0
                stamp = bench.stamps.get((t.symbol, t.event_ts_ns))
                if stamp is not None:
                    with bench.lock:
                        bench.close_requests.setdefault(t.event_ts_ns, []).extend(requests)
                        if result.orders and result.status in ACKNOWLEDGED_STATUSES:
                            bench.order_ms.append((done - stamp) / 1e6)
                            bench.order_close.append(t.event_ts_ns)
                            bench.order_cpu_us.extend([cpu / 1e3 / len(result.orders)] * len(result.orders))
                            bench.per_close[t.event_ts_ns] = bench.per_close.get(t.event_ts_ns, 0) + len(result.orders)
                return result

        check = allow_all
        if self.risk:
            from app import build_services  # production's wiring of the risk engine (audit, metrics, P&L)
            risk = build_services(settings, store).risk
            risk.clock = clock  # the replay's clock, as live the wall clock is the data's (orders/minute guard)
            risk.session_start()  # the calendar loaded, as TradingRuntime.start does
            check = risk
        orders = TimedOrderManager(store, registry.trading_adapters(), pre_trade_check=check)
        return StrategySupervisor(
            store=store, tickers=TickerStore(store), market_data=self.md, orders=orders,
            executor=IntentExecutor(orders, chain_provider=registry.option_chain), log_dir=settings.log_dir,
            clock_provider=spx_session_clock, skip_stale_signals=False, time_ns=lambda: self.data_now,
            on_report=self._on_report, on_bar_to_order=self._on_engine_latency, hub=self.hub,
        )

    def _on_report(self, report: ExecutionReport) -> None:
        done = time.perf_counter_ns()
        if not any(r.orders and r.status in ACKNOWLEDGED_STATUSES for r in report.results):
            return
        stamp = self.stamps.get((report.intent.symbol, report.intent.event_ts_ns))
        with self.lock:
            if stamp is None:  # an intrabar stop (trade stream) or a clock exit: not a bar's order
                self.unmatched += 1
            else:
                self.latency_ms.append((done - stamp) / 1e6)

    def _on_engine_latency(self, _strategy: str, _symbol: str, seconds: float) -> None:
        with self.lock:
            self.engine_ms.append(seconds * 1e3)

    def configure(self) -> int:
        a, b = self.stacks
        count = 0
        ema = {"period_1": 9, "period_2": 21} if self.trader_defaults else {"period_1": 2, "period_2": 3}
        supertrend = {"atr_period": 10, "multiplier": 3.0} if self.trader_defaults else {"atr_period": 5, "multiplier": 1.0}
        for sup, symbols, tf in ((a, SYMBOLS, "1Min"), (b, B_SYMBOLS, "2Min")):
            tickers = sup._tickers
            for sym in symbols:
                q = {"schwab_quantity": 0 if sym.startswith("/") else 1, "tastytrade_quantity": 1}
                tickers.upsert(TickerConfig.from_payload(dict(strategy="ema", symbol=sym, timeframe=tf, trade_enabled=True,
                                                              **ema, **q)))
                tickers.upsert(TickerConfig.from_payload(dict(strategy="supertrend", symbol=sym, timeframe=tf,
                                                              trade_enabled=True, **supertrend, **q)))
                count += 2
            tickers.upsert(TickerConfig.from_payload(dict(strategy="zeroday", symbol="SPX", timeframe=tf, trade_enabled=True,
                                                          schwab_quantity=1, tastytrade_quantity=1, **ema)))
            count += 1
            for name in ("ema", "supertrend", "zeroday"):
                sup.start_strategy(name)
        return count

    def settle(self, at_least_s: float) -> None:
        """Wait `at_least_s`, then (unless back_to_back) until the engine is idle: no process CPU
        over two successive IDLE_PROBE_S windows (at most IDLE_WAIT_MAX_S). Live, a minute
        separates two closes and each thread's periodic housekeeping falls anywhere in it; a
        replay that sends the next close while the last one's bookkeeping and housekeeping still
        run would measure that backlog, not the close."""
        time.sleep(at_least_s)
        if self.back_to_back:
            return
        deadline = time.monotonic() + IDLE_WAIT_MAX_S
        quiet = 0
        while quiet < 2 and time.monotonic() < deadline:
            before = cpu_seconds()
            time.sleep(IDLE_PROBE_S)
            quiet = quiet + 1 if cpu_seconds() - before < IDLE_PROBE_S * IDLE_CPU_SHARE else 0

    def replay(self, minutes: int, settle_s: float) -> int:
        rng = random.Random(7)
        prices = dict(LEVEL)
        all_symbols = SYMBOLS + ["SPX"]
        sent = 0
        starts = session_minutes(minutes + 1)
        for m in range(minutes + 1):
            t0 = starts[m]
            minute_trades: dict[str, list[Trade]] = {}
            for sym in all_symbols:
                step = LEVEL[sym] * 0.0008
                path = []
                for k, sec in enumerate((1, 15, 30, 45)):
                    prices[sym] = round(prices[sym] + rng.gauss(0.0, step) + (step * 0.6 if (m // 7) % 2 else -step * 0.6) * (k == 3), 2)
                    path.append(Trade(sym, t0 + sec * NS, prices[sym], 1))
                minute_trades[sym] = path
            self.data_now = t0 + 1 * NS
            # The bars this minute's first trades close end at t0, or at the previous session's
            # close when the replay jumps to the next trading day.
            ends = {t0, starts[m - 1] + MINUTE} if m > 0 else set()
            if self.stagger:  # one symbol's bar closes at a time: the uncontended path
                for sym in all_symbols:
                    stamp = time.perf_counter_ns()
                    for end in ends:
                        self.stamps[(sym, end)] = stamp
                    self.md.process_now([minute_trades[sym][0]])
                    self.settle(settle_s)
            else:
                closing = [minute_trades[s][0] for s in all_symbols]
                stamp = time.perf_counter_ns()
                for sym in all_symbols:
                    for end in ends:
                        self.stamps[(sym, end)] = stamp
                self.close_stamps.append(stamp)
                self.md.process_now(closing)  # closes every symbol's bar(s) at once, as a live minute does
                self.settle(settle_s)
            self.data_now = t0 + 45 * NS
            self.md.process_now([t for s in all_symbols for t in minute_trades[s][1:]])
            self.settle(settle_s / 4)
            sent += 4 * len(all_symbols)
        return sent

    def idle_cpu(self, seconds: float) -> float:
        time.sleep(1.0)  # let the last bars settle
        before = os.times()
        time.sleep(seconds)
        after = os.times()
        return (after.user - before.user) + (after.system - before.system)

    def floor(self) -> dict[int, float]:
        """Bar end -> the seconds a minimal loop takes to send that close's recorded requests (the
        median of FLOOR_PASSES replays), for every close that acknowledged orders. Run after the
        replay with the strategies idle (the requests' writes land on this run's keys)."""
        client = connect(self.url)
        try:
            replay = FloorReplay(client, allow_writes=True)
            prepared = {end: replay.prepare(self.close_requests.get(end, [])) for end in self.per_close}
            passes: dict[int, list[float]] = {end: [] for end in prepared}
            for _ in range(FLOOR_PASSES):
                for end, trips in prepared.items():
                    t0 = time.perf_counter()
                    for trip in trips:
                        replay.send(trip)
                    passes[end].append(time.perf_counter() - t0)
            return {end: statistics.median(times) for end, times in passes.items()}
        finally:
            client.close()

    def close(self) -> None:
        for sup in self.stacks:
            sup.shutdown()
        self.hub.stop()
        for prefix in self.prefixes:
            keys = list(self.client.scan_iter(match=f"{prefix}:*", count=1000))
            for i in range(0, len(keys), 500):
                self.client.delete(*keys[i:i + 500])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int, default=300, help="replayed 1-minute bars per symbol")
    parser.add_argument("--idle", type=float, default=10.0, help="idle CPU window, seconds")
    parser.add_argument("--settle", type=float, default=0.04, help="pause after each bar close, seconds")
    parser.add_argument("--trader-defaults", action="store_true",
                        help="EMA 9/21 and Supertrend 10/3.0 (what a trader runs) instead of the stress periods "
                             "EMA 2/3 and Supertrend 5/1.0, which make many tickers signal at the same close")
    parser.add_argument("--no-risk", action="store_true",
                        help="build the order manager without the pre-trade risk check (allow_all)")
    parser.add_argument("--stagger", action="store_true",
                        help="close one symbol's bars at a time (uncontended path) instead of all at once")
    parser.add_argument("--back-to-back", action="store_true",
                        help="send the next close after --settle alone, while the last close's bookkeeping and "
                             "housekeeping may still run (a minute compressed into --settle)")
    parser.add_argument("--redis-url", default=None, help="an existing Redis (default: a private redis-server)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with contextlib.ExitStack() as stack:
        url = args.redis_url or stack.enter_context(private_redis())
        return run(args, url)


def run(args: argparse.Namespace, url: str) -> int:
    client = connect(url)  # configured as the service configures it
    client.ping()
    trips = RoundTrips()
    wakeup_p50, wakeup_p99 = thread_wakeup_us()
    with tempfile.TemporaryDirectory(prefix="bench-engine-logs-") as log_dir:
        bench = Bench(client, url, Path(log_dir), trips, risk=not args.no_risk)
        try:
            bench.stagger = args.stagger
            bench.back_to_back = args.back_to_back
            bench.trader_defaults = args.trader_defaults
            threads = bench.configure()
            alive = sum(s.health()["alive"] for s in bench.stacks)
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            trades = bench.replay(args.minutes, args.settle)
            replay_s, replay_cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
            idle = bench.idle_cpu(args.idle)
            health = [s.health() for s in bench.stacks]
            errors = sorted({r.status.last_error for s in bench.stacks for r in s._runners.values() if r.status.last_error})
            orders = sum(len(s._orders.orders(limit=100_000)) for s in bench.stacks)
            floor_cpu0 = cpu_seconds()
            floors = bench.floor()
            floor_cpu = cpu_seconds() - floor_cpu0
        finally:
            bench.close()
    left = sum(1 for p in bench.prefixes for _ in client.scan_iter(match=f"{p}:*", count=1000))
    over_floor = [ms / (floors[end] * 1e3) for ms, end in zip(bench.order_ms, bench.order_close) if floors.get(end)]
    order_floors_ms = [floors[end] * 1e3 for end in bench.order_close if end in floors]
    close_floors_ms = [f * 1e3 for f in floors.values()]
    floor_orders = sum(bench.per_close.values())
    measured = len(bench.order_ms)
    close_to_delivery_ms = first_delivery_ms(bench.close_stamps, bench.delivery_stamps)
    result = {
        "threads": threads, "threads_alive": alive, "ema": 14, "supertrend": 14, "zeroday": 2,
        "minutes_replayed": args.minutes, "mode": "staggered" if args.stagger else "simultaneous",
        "next_close": "after --settle (back to back)" if args.back_to_back else "once the engine is idle",
        "pre_trade_risk_check": "off (allow_all)" if args.no_risk else "production RiskEngine",
        "parameters": "trader defaults (EMA 9/21, Supertrend 10/3.0)" if args.trader_defaults else "stress (EMA 2/3, Supertrend 5/1.0)",
        "trades": trades, "replay_seconds": round(replay_s, 2),
        "orders": orders, "bar_orders_measured": len(bench.order_ms), "bar_intents_measured": len(bench.latency_ms),
        "orders_per_close_p50": pct(list(bench.per_close.values()), 50),
        "orders_per_close_max": max(bench.per_close.values(), default=0),
        "other_intents": bench.unmatched,
        "close_trade_to_ack_ms_p50": round(pct(bench.order_ms, 50), 3),
        "close_trade_to_ack_ms_p99": round(pct(bench.order_ms, 99), 3),
        "close_trade_to_ack_ms_max": round(max(bench.order_ms, default=float("nan")), 3),
        "close_trade_to_all_acks_ms_p50": round(pct(bench.latency_ms, 50), 3),
        "close_trade_to_all_acks_ms_p99": round(pct(bench.latency_ms, 99), 3),
        "engine_bar_to_ack_ms_p50": round(pct(bench.engine_ms, 50), 3),
        "engine_bar_to_ack_ms_p99": round(pct(bench.engine_ms, 99), 3),
        "idle_window_s": args.idle, "idle_cpu_s": round(idle, 4),
        "idle_cpu_percent_of_one_core": round(100 * idle / args.idle, 3),
        "restarts": sum(h["restarts"] for h in health), "dead_threads": sum(len(h["dead"]) for h in health),
        "keys_left": left, "errors": errors[:5], "target_p99_ms": 10.0,
        # The whole replay's CPU (every bar of 30 threads, market data, orders) over the orders it
        # produced, and over the closes: most of it is per-bar work that sends no order.
        "cpu_us_per_order": round(replay_cpu / measured * 1e6, 1) if measured else None,
        "cpu_ms_per_close": round(replay_cpu / (args.minutes + 1) * 1e3, 3),
        "close_floor_ms_p50": round(pct(close_floors_ms, 50), 3), "close_floor_ms_p99": round(pct(close_floors_ms, 99), 3),
        "close_floor_ms_max": round(max(close_floors_ms, default=float("nan")), 3),
        "floor_ms_of_orders_p50": round(pct(order_floors_ms, 50), 3),
        "floor_cpu_us_per_order": round(floor_cpu / (FLOOR_PASSES * floor_orders) * 1e6, 1) if floor_orders else None,
        "redis_round_trips_per_order": round(sum(len(r) for r in bench.close_requests.values()) / floor_orders, 2)
        if floor_orders else None,
        "p50_over_floor": round(pct(over_floor, 50), 2), "p99_over_floor": round(pct(over_floor, 99), 2),
        "goal_p99_over_floor": GOAL_P99_OVER_FLOOR,
        "meets_goal": pct(over_floor, 99) <= GOAL_P99_OVER_FLOOR,
        # Where a close's time goes (the profile): before the first strategy thread is handed its
        # bar (market data and the hub), and the CPU of one order on its thread, against the floor's.
        "close_to_first_delivery_ms_p50": round(pct(close_to_delivery_ms, 50), 3),
        "close_to_first_delivery_ms_p99": round(pct(close_to_delivery_ms, 99), 3),
        "order_thread_cpu_us_per_order_p50": round(pct(bench.order_cpu_us, 50), 1),
        "order_thread_cpu_us_per_order_p99": round(pct(bench.order_cpu_us, 99), 1),
        "machine_thread_wakeup_round_trip_us_p50": round(wakeup_p50, 1),
        "machine_thread_wakeup_round_trip_us_p99": round(wakeup_p99, 1),
    }
    print(f"{threads} threads ({alive} alive); {len(bench.order_ms)} bar orders: closing trade -> ack "
          f"p50 {result['close_trade_to_ack_ms_p50']} ms p99 {result['close_trade_to_ack_ms_p99']} ms; "
          f"per intent (all brokers) p50 {result['close_trade_to_all_acks_ms_p50']} ms "
          f"p99 {result['close_trade_to_all_acks_ms_p99']} ms; "
          f"idle CPU {result['idle_cpu_s']} s over {args.idle} s; floor per close p50 {result['close_floor_ms_p50']} ms "
          f"p99 {result['close_floor_ms_p99']} ms; p99 over floor {result['p99_over_floor']}; "
          f"CPU {result['cpu_us_per_order']} us/order")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
