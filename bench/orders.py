"""Benchmark: paper orders/second through the OrderManager with journaling on real Redis.

Usage: .venv/bin/python bench/orders.py [--orders N] [--runs 3] [--url redis://127.0.0.1:6379/0]
Each iteration is one intent (alternating target +1 / 0 per lane, so every intent is exactly one
paper MARKET order that fills); latency is measured from move_to_target() entry to its return
(intent -> broker acknowledgement (fill) -> journal + position written). Uses a unique key
prefix and deletes its keys afterwards. Runs --runs times (default 3), prints each run, and the
last line of output is a JSON object with the medians (and each run's figures).
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
from store.redis_store import Store, connect  # noqa: E402


class _RoundTrips:
    """Counts request round trips to Redis (one per command or pipeline/script sent)."""

    def __init__(self) -> None:
        self.n = 0
        self._orig = redis.connection.Connection.send_packed_command
        counter = self

        def counted(conn, command, check_health=True):  # type: ignore[no-untyped-def]
            counter.n += 1
            return counter._orig(conn, command, check_health)

        redis.connection.Connection.send_packed_command = counted  # type: ignore[method-assign]


def run_once(url: str, n_orders: int, trips: _RoundTrips) -> dict[str, object]:
    prefix = f"bench-orders-{uuid.uuid4().hex[:10]}"
    client = connect(url)  # configured as the service configures it
    store = Store(client, prefix, persistent=True, url=url)
    prices = {"/MES": 6000.0, "NVDA": 180.0}
    settings = Settings(paper_slippage_ticks=1, paper_commission_per_contract="0.62")
    adapters = {b: PaperBroker(store, b, settings, prices.get) for b in (SCHWAB, TASTYTRADE)}
    om = OrderManager(store, adapters)  # type: ignore[arg-type]
    lanes = [(s, sym, b) for s in ("ema", "supertrend") for sym in ("/MES", "NVDA") for b in (SCHWAB, TASTYTRADE)]
    try:
        for i in range(6 * len(lanes)):  # warm-up: scripts loaded, connections open; ends long
            s, sym, b = lanes[i % len(lanes)]
            om.move_to_target(TargetOrder(s, sym, b, (i // len(lanes)) % 2, 10 + i, "signal", "warmup"))
        journal_before = client.xlen(store.key("oms", "journal"))
        fills_before = client.xlen(store.key("oms", "fills"))
        latencies: list[float] = []
        base_ts = 1_000_000
        failures = 0
        trips_before = trips.n
        start = time.perf_counter()
        for i in range(n_orders):
            s, sym, b = lanes[i % len(lanes)]
            target = 1 if (i // len(lanes)) % 2 == 1 else 0  # alternate flat/long: one order per intent
            t0 = time.perf_counter()
            r = om.move_to_target(TargetOrder(s, sym, b, target, base_ts + i, "signal", "bench"))
            latencies.append(time.perf_counter() - t0)
            if r.status.value != "filled":
                failures += 1
        elapsed = time.perf_counter() - start
        round_trips = trips.n - trips_before
        journal = client.xlen(store.key("oms", "journal")) - journal_before
        fills = client.xlen(store.key("oms", "fills")) - fills_before
        latencies.sort()
        return {
            "orders": n_orders, "seconds": round(elapsed, 3), "orders_per_second": round(n_orders / elapsed, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 3),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 3),
            "max_ms": round(latencies[-1] * 1000, 3), "not_filled": failures,
            "redis_round_trips_per_order": round(round_trips / n_orders, 2),
            "journal_entries_per_order": round(journal / n_orders, 2), "fills_per_order": round(fills / n_orders, 2),
        }
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
        client.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3, help="independent runs; the summary is their median")
    ap.add_argument("--url", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()
    trips = _RoundTrips()
    runs = []
    for i in range(max(1, args.runs)):
        r = run_once(args.url, args.orders, trips)
        runs.append(r)
        print(f"run {i + 1}: {r['orders_per_second']:>8.1f} orders/s  p50 {r['p50_ms']:.3f} ms  "
              f"p99 {r['p99_ms']:.3f} ms  max {r['max_ms']:.3f} ms  "
              f"{r['redis_round_trips_per_order']} Redis round trips/order  not filled {r['not_filled']}",
              flush=True)
    med = {k: statistics.median(float(r[k]) for r in runs)  # type: ignore[arg-type]
           for k in ("orders_per_second", "p50_ms", "p99_ms", "max_ms", "redis_round_trips_per_order")}
    result = {
        "orders": args.orders, "runs": len(runs), **{k: round(v, 3) for k, v in med.items()},
        "not_filled": sum(int(r["not_filled"]) for r in runs),  # type: ignore[arg-type]
        "journal_entries_per_order": runs[-1]["journal_entries_per_order"],
        "fills_per_order": runs[-1]["fills_per_order"],
        "per_run_orders_per_second": [r["orders_per_second"] for r in runs],
        "per_run_p99_ms": [r["p99_ms"] for r in runs],
        "target_orders_per_second": 2000, "target_p99_ms": 5.0,
        "meets_target": med["orders_per_second"] >= 2000 and med["p99_ms"] <= 5.0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
