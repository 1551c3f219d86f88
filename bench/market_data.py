"""Market data benchmark: N trades through the full path
(replay feed -> service inbox -> bar builders -> Redis trade stream + bar streams -> XREAD consumer).

    .venv/bin/python bench/market_data.py                 # 1,000,000 trades, private redis-server
    .venv/bin/python bench/market_data.py --trades 10000000   # the 10M memory-flatness run
    .venv/bin/python bench/market_data.py --redis-url redis://...  # an existing Redis instead

Starts a private redis-server on a free port (or uses --redis-url with a unique key prefix,
deleted afterwards). Prints trades/s, bars/s, p50/p99 of the delay from the moment a bar's
closing trade is handed to the feed callback to the moment a consumer blocked in XREAD has the
bar, RSS at start/end, and process CPU time per trade. The last line is a JSON object.

The floor, measured in the same run right after the throughput phase: the same trades (the same
generator) through a minimal per-trade bar state machine in plain Python (bucket by bar start,
update open/high/low/close/volume for the 1-minute and the 512-tick bar) and a pipelined XADD of
the same batches (the service's flush sizes, recorded during the throughput phase) to a trade
stream, the bars to their bar and history streams and the last price to a hash, on the same
Redis; then the same again with each batch as one call of the service's own batch script (one
command to pack instead of one per trade: the cheaper of the two here, which is why the service
writes that way). `ratio_to_floor` = the service's trades/s over the faster floor's.

Two phases: "throughput" replays as fast as possible (the inbox is always full, so per-bar delay
there is dominated by queueing and is reported separately); "latency" replays at a fixed rate
below capacity (like a live feed) and measures the closing-trade -> readable delay.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.floor import cpu_seconds, private_redis  # noqa: E402
from config.settings import Settings  # noqa: E402
from config.timeframes import Timeframe  # noqa: E402
from domain.market import Trade  # noqa: E402
from market_data.feeds import ReplayFeed  # noqa: E402
from market_data.redis_buffer import _WRITE_BATCH, BARS_MAXLEN, HIST_MAXLEN, WriteBatch  # noqa: E402
from market_data.service import MarketDataService  # noqa: E402
from store.redis_store import Store, connect  # noqa: E402

NS = 1_000_000_000
START_NS = 1_732_633_200 * NS  # 2024-11-26 15:00 UTC (CME session open)
SYMBOL = "/ES"
TIME_TF = Timeframe.parse("1Min")
TICK_TF = Timeframe.parse("512t")
GOAL_RATIO = 0.5
TRADES_MAXLEN = 100_000


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ClosingStamps:
    """Wall time (perf_counter_ns) at which each bar's closing trade was handed to the feed,
    keyed by (timeframe, bar start)."""

    def __init__(self) -> None:
        self.stamps: dict[tuple[str, int], int] = {}


def trades(n: int, spacing_ns: int, stamps: ClosingStamps, pace_per_s: float = 0.0) -> Iterator[Trade]:
    """Deterministic trades 1 tick apart in a bounded walk. Stamps the trades that close a bar:
    the first trade of each new minute (closes the previous 1-minute bar) and every 512th."""
    price = 6000.0
    minute = 60 * NS
    bar_start_1m = START_NS
    tick_bar_start = START_NS
    started = time.perf_counter()
    pace_event = threading.Event()
    for i in range(n):
        ts = START_NS + i * spacing_ns
        price += 0.25 if (i * 2654435761) & 4 else -0.25
        if price < 5900.0 or price > 6100.0:
            price = 6000.0
        if pace_per_s > 0 and i % 64 == 0:
            due = started + i / pace_per_s
            delay = due - time.perf_counter()
            if delay > 0:
                pace_event.wait(delay)
        now = time.perf_counter_ns()
        if ts - bar_start_1m >= minute:
            stamps.stamps[(TIME_TF.raw, bar_start_1m)] = now
            bar_start_1m = ts - (ts - START_NS) % minute
        if i % TICK_TF.size == 0:
            tick_bar_start = ts
        if i % TICK_TF.size == TICK_TF.size - 1:
            stamps.stamps[(TICK_TF.raw, tick_bar_start)] = now
        yield Trade(SYMBOL, ts, price, 1 + (i & 3), i + 1)


def consume(svc: MarketDataService, stamps: ClosingStamps, delays: list[float], stop: threading.Event,
            counts: dict[str, int]) -> None:
    client = svc.store.redis
    keys = {svc.bars_key(SYMBOL, TIME_TF): "0", svc.bars_key(SYMBOL, TICK_TF): "0"}
    while not stop.is_set():
        reply = client.xread(keys, block=200, count=1000)
        now = time.perf_counter_ns()
        for key, entries in reply or []:
            for entry_id, fields in entries:
                keys[key] = entry_id
                counts[fields["tf"]] = counts.get(fields["tf"], 0) + 1
                stamp = stamps.stamps.pop((fields["tf"], int(fields["start"])), None)
                if stamp is not None:
                    delays.append((now - stamp) / 1e6)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def run_phase(store: Store, n: int, spacing_ns: int, pace: float, inbox: int,
              batches: list[int] | None = None) -> dict[str, object]:
    """The service's path; `batches` gets each flush's trade count (the floor writes the same)."""
    settings = Settings(redis_prefix=store.prefix)
    stamps = ClosingStamps()
    feed = ReplayFeed(trades=trades(n, spacing_ns, stamps, pace))
    svc = MarketDataService(settings, store, feed, trades_maxlen=TRADES_MAXLEN, bars_maxlen=BARS_MAXLEN)
    svc.INBOX_HIGH_WATER = inbox
    if batches is not None:
        def record(batch: WriteBatch) -> None:
            batches.append(batch.trade_count)
        svc.on_flush = record
    svc.ensure(SYMBOL, TIME_TF)
    svc.ensure(SYMBOL, TICK_TF)
    delays: list[float] = []
    counts: dict[str, int] = {}
    stop = threading.Event()
    consumer = threading.Thread(target=consume, args=(svc, stamps, delays, stop, counts), daemon=True)
    consumer.start()
    rss_start = rss_mb()
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    svc.start()
    feed.finished.wait()
    svc.stop(timeout=60)  # the writer drains and flushes the tail before it exits
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    stop.set()
    consumer.join(2)
    bars = svc.counters.bars_emitted
    return {
        "trades": n, "seconds": round(elapsed, 3), "trades_per_s": round(n / elapsed),
        "cpu_us_per_trade": round(cpu / n * 1e6, 2),
        "bars": bars, "bars_per_s": round(bars / elapsed, 1), "bars_read": counts,
        "delay_ms_p50": percentile(delays, 0.50), "delay_ms_p99": percentile(delays, 0.99),
        "delay_samples": len(delays), "trade_stream_len": store.redis.xlen(svc.trades_key(SYMBOL)),
        "rss_mb_start": round(rss_start, 1), "rss_mb_end": round(rss_mb(), 1),
        "redis_errors": svc.counters.redis_errors, "flushes": svc.counters.flushes,
    }


def floor_phase(store: Store, n: int, spacing_ns: int, batches: list[int], write: str) -> dict[str, object]:
    """The same trades through a minimal bar state machine, written in the same batches (see the
    module doc): `write` "xadd" = a pipeline of one XADD per trade and per bar (bar and history
    stream) and the last price's HSET; "script" = the same streams and fields as one call of the
    service's own batch script (store/redis_buffer.py), i.e. the least Python a write can take.
    Single thread, nothing else running."""
    client = store.redis
    k_trades, k_last = store.key("floor", write, "trades", SYMBOL), store.key("floor", write, "last", SYMBOL)
    k_bars = {tf: store.key("floor", write, "bars", SYMBOL, tf) for tf in (TIME_TF.raw, TICK_TF.raw)}
    k_hist = {tf: store.key("floor", write, "hist", SYMBOL, tf) for tf in (TIME_TF.raw, TICK_TF.raw)}
    minute, tick_size = TIME_TF.seconds * NS, TICK_TF.size
    time_bar: list = []  # [start, open, high, low, close, volume, count]
    tick_bar: list = []
    last_ms, seq = 0, -1
    sizes = iter(batches)
    left = next(sizes, n)
    pipe = client.pipeline(transaction=False)
    sha = client.script_load(_WRITE_BATCH)
    bar_keys: list[str] = []
    bar_args: list[str | int] = []
    flat: list[str] = []
    last = None
    bars = 0

    def add_bar(tf: str, bar: list, end_ns: int) -> None:
        fields = ("sym", SYMBOL, "tf", tf, "start", str(bar[0]), "end", str(end_ns), "o", repr(bar[1]),
                  "h", repr(bar[2]), "l", repr(bar[3]), "c", repr(bar[4]), "v", str(bar[5]), "n", str(bar[6]),
                  "gap", "0")
        bar_id = f"{bar[0] // 1_000_000}-0"
        if write == "xadd":
            pipe.execute_command("XADD", k_bars[tf], "MAXLEN", "~", BARS_MAXLEN, bar_id, *fields)
            pipe.execute_command("XADD", k_hist[tf], "MAXLEN", "~", HIST_MAXLEN, bar_id, *fields)
        else:
            bar_keys.extend((k_bars[tf], k_hist[tf]))
            bar_args.extend((bar_id, len(fields), *fields))

    def flush() -> None:
        assert last is not None
        last_fields = (repr(last.price), str(last.ts_ns), str(last.size))
        if write == "xadd":
            pipe.execute_command("HSET", k_last, "p", last_fields[0], "t", last_fields[1], "s", last_fields[2])
            pipe.execute()
            return
        n_bars = len(bar_keys) // 2
        client.evalsha(sha, n_bars * 2 + 2, *bar_keys, k_trades, k_last, n_bars, 1, 1, BARS_MAXLEN, HIST_MAXLEN,
                       TRADES_MAXLEN, *bar_args, len(flat) // 5, *flat, *last_fields)
        bar_keys.clear()
        bar_args.clear()
        flat.clear()

    cpu0, t0 = cpu_seconds(), time.perf_counter()
    for trade in trades(n, spacing_ns, ClosingStamps()):
        ts, price, size = trade.ts_ns, trade.price, trade.size
        start = ts - ts % minute
        if time_bar and start != time_bar[0]:
            add_bar(TIME_TF.raw, time_bar, time_bar[0] + minute)
            bars += 1
            time_bar = []
        for bar in (time_bar, tick_bar):
            if bar:
                bar[2] = max(bar[2], price)
                bar[3] = min(bar[3], price)
                bar[4] = price
                bar[5] += size
                bar[6] += 1
            else:
                bar += (start if bar is time_bar else ts, price, price, price, price, size, 1)
        if tick_bar[6] == tick_size:
            add_bar(TICK_TF.raw, tick_bar, ts)
            bars += 1
            tick_bar = []
        ms = ts // 1_000_000
        if ms > last_ms:
            last_ms, seq = ms, 0
        else:
            seq += 1
        if write == "xadd":
            pipe.execute_command("XADD", k_trades, "MAXLEN", "~", TRADES_MAXLEN, f"{last_ms}-{seq}", "t", str(ts),
                                 "p", repr(price), "s", str(size), "q", str(trade.sequence))
        else:
            flat += (f"{last_ms}-{seq}", str(ts), repr(price), str(size), str(trade.sequence))
        last = trade
        left -= 1
        if left <= 0:
            flush()
            left = next(sizes, n)
    if left != next(iter(batches), n) and last is not None:  # a tail the recorded batches did not cover
        flush()
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    return {"write": write, "trades": n, "seconds": round(elapsed, 3), "trades_per_s": round(n / elapsed),
            "bars": bars, "batches": len(batches), "cpu_us_per_trade": round(cpu / n * 1e6, 2),
            "trade_stream_len": client.xlen(k_trades)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--ten-million", action="store_true", help="shorthand for --trades 10000000")
    parser.add_argument("--latency-trades", type=int, default=300_000)
    parser.add_argument("--latency-rate", type=float, default=50_000.0, help="paced trades/s for the latency phase")
    parser.add_argument("--spacing-ms", type=float, default=5.0, help="exchange-time gap between trades")
    parser.add_argument("--inbox", type=int, default=2_000, help="inbox high-water mark (back-pressure)")
    parser.add_argument("--redis-url", default=None, help="an existing Redis (default: a private redis-server)")
    args = parser.parse_args()
    n = 10_000_000 if args.ten_million else args.trades

    with contextlib.ExitStack() as stack:
        url = args.redis_url or stack.enter_context(private_redis())
        run(args, n, url)


def run(args: argparse.Namespace, n: int, url: str) -> None:
    client = connect(url)  # configured as the service configures it
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    store = Store(client, prefix, persistent=True, url=url)
    spacing = int(args.spacing_ms * 1e6)
    batches: list[int] = []
    try:
        throughput = run_phase(store, n, spacing, 0.0, args.inbox, batches)
        print(f"throughput: {throughput['trades_per_s']:,} trades/s, {throughput['bars_per_s']} bars/s "
              f"({throughput['bars']} bars), saturated-queue delay p50/p99 "
              f"{throughput['delay_ms_p50']}/{throughput['delay_ms_p99']} ms, "
              f"RSS {throughput['rss_mb_start']} -> {throughput['rss_mb_end']} MB, "
              f"CPU {throughput['cpu_us_per_trade']} us/trade", flush=True)
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        floors = {}
        for write in ("xadd", "script"):
            floors[write] = floor_phase(store, n, spacing, batches, write)
            f = floors[write]
            print(f"floor ({write}): {f['trades_per_s']:,} trades/s ({f['batches']} batches, {f['bars']} bars), "
                  f"CPU {f['cpu_us_per_trade']} us/trade; ratio {throughput['trades_per_s'] / f['trades_per_s']:.3f}",  # type: ignore[operator]
                  flush=True)
            for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                client.delete(key)
        floor = max(floors.values(), key=lambda f: f["trades_per_s"])  # type: ignore[arg-type, return-value]
        ratio = throughput["trades_per_s"] / floor["trades_per_s"]  # type: ignore[operator]
        latency = run_phase(store, args.latency_trades, spacing, args.latency_rate, args.inbox)
        print(f"latency @ {args.latency_rate:,.0f} trades/s: bar delay p50 {latency['delay_ms_p50']} ms, "
              f"p99 {latency['delay_ms_p99']} ms over {latency['delay_samples']} bars", flush=True)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    result = {
        "trades": n, "trades_per_s": throughput["trades_per_s"], "bars_per_s": throughput["bars_per_s"],
        "cpu_us_per_trade": throughput["cpu_us_per_trade"], "floor_trades_per_s": floor["trades_per_s"],
        "floor_write": floor["write"], "floor_cpu_us_per_trade": floor["cpu_us_per_trade"],
        "floor_xadd_trades_per_s": floors["xadd"]["trades_per_s"],
        "floor_script_trades_per_s": floors["script"]["trades_per_s"], "ratio_to_floor": round(ratio, 3),
        "cpu_ratio_to_floor": round(float(floor["cpu_us_per_trade"]) / float(throughput["cpu_us_per_trade"]), 3),  # type: ignore[arg-type]
        "goal_ratio_to_floor": GOAL_RATIO, "meets_goal": ratio >= GOAL_RATIO,
        "bars": throughput["bars"], "p50_bar_delay_ms": latency["delay_ms_p50"],
        "p99_bar_delay_ms": latency["delay_ms_p99"], "latency_rate_trades_per_s": args.latency_rate,
        "saturated_p50_ms": throughput["delay_ms_p50"], "saturated_p99_ms": throughput["delay_ms_p99"],
        "rss_mb_start": throughput["rss_mb_start"], "rss_mb_end": throughput["rss_mb_end"],
        "trade_stream_len": throughput["trade_stream_len"], "cores": os.cpu_count(), "redis": url.rsplit("@", 1)[-1],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
