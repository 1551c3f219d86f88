"""Market data benchmark: N trades through the full path
(replay feed -> service inbox -> bar builders -> Redis trade stream + bar streams -> XREAD consumer).

    .venv/bin/python bench/market_data.py                 # 1,000,000 trades, Redis at 127.0.0.1:6379
    .venv/bin/python bench/market_data.py --trades 10000000   # the 10M memory-flatness run
    .venv/bin/python bench/market_data.py --private       # start a private redis-server instead

Uses a unique key prefix and deletes its keys afterwards (or a private redis-server). Prints
trades/s, bars/s, p50/p99 of the delay from the moment a bar's closing trade is handed to the
feed callback to the moment a consumer blocked in XREAD has the bar, and RSS at start/end.
The last line is a JSON object.

Two phases: "throughput" replays as fast as possible (the inbox is always full, so per-bar delay
there is dominated by queueing and is reported separately); "latency" replays at a fixed rate
below capacity (like a live feed) and measures the closing-trade -> readable delay.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from config.settings import Settings  # noqa: E402
from config.timeframes import Timeframe  # noqa: E402
from domain.market import Trade  # noqa: E402
from market_data.feeds import ReplayFeed  # noqa: E402
from market_data.service import MarketDataService  # noqa: E402
from store.redis_store import Store, connect  # noqa: E402

NS = 1_000_000_000
START_NS = 1_732_633_200 * NS  # 2024-11-26 15:00 UTC (CME session open)
SYMBOL = "/ES"
TIME_TF = Timeframe.parse("1Min")
TICK_TF = Timeframe.parse("512t")


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


def run_phase(store: Store, n: int, spacing_ns: int, pace: float, inbox: int) -> dict[str, object]:
    settings = Settings(redis_prefix=store.prefix)
    stamps = ClosingStamps()
    feed = ReplayFeed(trades=trades(n, spacing_ns, stamps, pace))
    svc = MarketDataService(settings, store, feed, trades_maxlen=100_000, bars_maxlen=5_000)
    svc.INBOX_HIGH_WATER = inbox
    svc.ensure(SYMBOL, TIME_TF)
    svc.ensure(SYMBOL, TICK_TF)
    delays: list[float] = []
    counts: dict[str, int] = {}
    stop = threading.Event()
    consumer = threading.Thread(target=consume, args=(svc, stamps, delays, stop, counts), daemon=True)
    consumer.start()
    rss_start = rss_mb()
    t0 = time.perf_counter()
    svc.start()
    feed.finished.wait()
    svc.stop(timeout=60)  # the writer drains and flushes the tail before it exits
    elapsed = time.perf_counter() - t0
    stop.set()
    consumer.join(2)
    bars = svc.counters.bars_emitted
    return {
        "trades": n, "seconds": round(elapsed, 3), "trades_per_s": round(n / elapsed),
        "bars": bars, "bars_per_s": round(bars / elapsed, 1), "bars_read": counts,
        "delay_ms_p50": percentile(delays, 0.50), "delay_ms_p99": percentile(delays, 0.99),
        "delay_samples": len(delays), "trade_stream_len": store.redis.xlen(svc.trades_key(SYMBOL)),
        "rss_mb_start": round(rss_start, 1), "rss_mb_end": round(rss_mb(), 1),
        "redis_errors": svc.counters.redis_errors, "flushes": svc.counters.flushes,
    }


def private_server() -> tuple[subprocess.Popen[bytes], str, str]:
    binary = shutil.which("redis-server")
    if not binary:
        raise SystemExit("redis-server not found")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            threading.Event().wait(0.05)
    return proc, url, workdir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--ten-million", action="store_true", help="shorthand for --trades 10000000")
    parser.add_argument("--latency-trades", type=int, default=300_000)
    parser.add_argument("--latency-rate", type=float, default=50_000.0, help="paced trades/s for the latency phase")
    parser.add_argument("--spacing-ms", type=float, default=5.0, help="exchange-time gap between trades")
    parser.add_argument("--inbox", type=int, default=2_000, help="inbox high-water mark (back-pressure)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--private", action="store_true", help="start a private redis-server")
    args = parser.parse_args()
    n = 10_000_000 if args.ten_million else args.trades

    proc = workdir = None
    url = args.redis_url
    if args.private:
        proc, url, workdir = private_server()
    client = connect(url)  # configured as the service configures it
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    store = Store(client, prefix, persistent=True, url=url)
    spacing = int(args.spacing_ms * 1e6)
    try:
        throughput = run_phase(store, n, spacing, 0.0, args.inbox)
        print(f"throughput: {throughput['trades_per_s']:,} trades/s, {throughput['bars_per_s']} bars/s "
              f"({throughput['bars']} bars), saturated-queue delay p50/p99 "
              f"{throughput['delay_ms_p50']}/{throughput['delay_ms_p99']} ms, "
              f"RSS {throughput['rss_mb_start']} -> {throughput['rss_mb_end']} MB", flush=True)
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        latency = run_phase(store, args.latency_trades, spacing, args.latency_rate, args.inbox)
        print(f"latency @ {args.latency_rate:,.0f} trades/s: bar delay p50 {latency['delay_ms_p50']} ms, "
              f"p99 {latency['delay_ms_p99']} ms over {latency['delay_samples']} bars", flush=True)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        if proc is not None:
            proc.terminate()
            proc.wait(5)
            shutil.rmtree(workdir or "", ignore_errors=True)
    result = {
        "trades": n, "trades_per_s": throughput["trades_per_s"], "bars_per_s": throughput["bars_per_s"],
        "bars": throughput["bars"], "p50_bar_delay_ms": latency["delay_ms_p50"],
        "p99_bar_delay_ms": latency["delay_ms_p99"], "latency_rate_trades_per_s": args.latency_rate,
        "saturated_p50_ms": throughput["delay_ms_p50"], "saturated_p99_ms": throughput["delay_ms_p99"],
        "rss_mb_start": throughput["rss_mb_start"], "rss_mb_end": throughput["rss_mb_end"],
        "trade_stream_len": throughput["trade_stream_len"], "cores": os.cpu_count(), "redis": url.rsplit("@", 1)[-1],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
