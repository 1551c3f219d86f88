"""Benchmark: paper orders/second through the OrderManager with journaling on real Redis.

Usage: .venv/bin/python bench/orders.py [--orders N] [--url redis://127.0.0.1:6379/0]
Each iteration is one intent (alternating target +1 / 0 per lane, so every intent is exactly one
paper MARKET order that fills); latency is measured from move_to_target() entry to its return
(intent -> broker acknowledgement (fill) -> journal + position written). Uses a unique key
prefix and deletes its keys afterwards. Last line of output is a JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from brokers.paper import PaperBroker  # noqa: E402
from config.settings import Settings  # noqa: E402
from domain.orders import SCHWAB, TASTYTRADE  # noqa: E402
from oms.models import TargetOrder  # noqa: E402
from oms.order_manager import OrderManager  # noqa: E402
from store.redis_store import Store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=5000)
    ap.add_argument("--url", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()
    prefix = f"bench-orders-{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(args.url, decode_responses=True)
    store = Store(client, prefix, persistent=True, url=args.url)
    prices = {"/MES": 6000.0, "NVDA": 180.0}
    settings = Settings(paper_slippage_ticks=1, paper_commission_per_contract="0.62")
    adapters = {b: PaperBroker(store, b, settings, prices.get) for b in (SCHWAB, TASTYTRADE)}
    om = OrderManager(store, adapters)  # type: ignore[arg-type]
    lanes = [(s, sym, b) for s in ("ema", "supertrend") for sym in ("/MES", "NVDA") for b in (SCHWAB, TASTYTRADE)]
    try:
        for i in range(6 * len(lanes)):  # warm-up: scripts loaded, connections open; ends long
            s, sym, b = lanes[i % len(lanes)]
            om.move_to_target(TargetOrder(s, sym, b, (i // len(lanes)) % 2, 10 + i, "signal", "warmup"))
        latencies: list[float] = []
        base_ts = 1_000_000
        failures = 0
        start = time.perf_counter()
        for i in range(args.orders):
            s, sym, b = lanes[i % len(lanes)]
            target = 1 if (i // len(lanes)) % 2 == 1 else 0  # alternate flat/long: one order per intent
            t0 = time.perf_counter()
            r = om.move_to_target(TargetOrder(s, sym, b, target, base_ts + i, "signal", "bench"))
            latencies.append(time.perf_counter() - t0)
            if r.status.value != "filled":
                failures += 1
        elapsed = time.perf_counter() - start
        journal_len = client.xlen(store.key("oms", "journal"))
        latencies.sort()
        result = {
            "orders": args.orders, "seconds": round(elapsed, 3), "orders_per_second": round(args.orders / elapsed, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 3),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 3),
            "max_ms": round(latencies[-1] * 1000, 3), "not_filled": failures, "journal_entries": journal_len,
            "target_orders_per_second": 2000, "target_p99_ms": 5.0,
        }
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
        client.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
