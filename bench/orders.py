"""Benchmark: paper orders/second through the OrderManager with journaling and production's
pre-trade risk check, on a private redis-server, against the floor of the same Redis round trips.

Usage: .venv/bin/python bench/orders.py [--orders N] [--runs 3] [--no-risk] [--url redis://...]

Each iteration is one intent (alternating target +1 / 0 per lane, so every intent is exactly one
paper MARKET order that fills: an open, then a close); latency is measured from move_to_target()
entry to its return (intent -> risk check -> broker acknowledgement (fill) -> journal + position
written). The risk check is production's (`app.build_services`: the RiskEngine with its audit log
and metrics, default limits except an orders-per-minute guard raised to its maximum so that the
guard's window is taken for every opening order but never denies one); `--no-risk` builds the
order manager with `allow_all`.

The floor, measured in the same run (bench/floor.py): every request the order manager made to Redis
during the loop is recorded, and a minimal redis-py loop sends the same requests again, order by
order, taking turns with the measured loop every 250 orders so both see the same machine load (the same round trips, commands and argument bytes; each Lua
call runs a stand-in of the same length that returns what the real script returns, writing
nothing). `ratio_to_floor` = orders/s over the floor's orders/s; `cpu_us_per_order` is process
CPU time per order (it varies far less with the machine's load than wall time does).
`redis_server_cpu_us_per_order` (and the floor's) is the redis-server's own CPU (INFO cpu) over each
loop, per order (with `--url`, other clients of that server count too); `ratio_ceiling_with_these_writes`
is the ratio if the order manager's client side cost no more than the floor's while Redis still
did the order's writes: on one CPU, wall time per order is client CPU plus server CPU.

One CPU: the benchmark pins itself, and so the redis-server it starts, to one core (`--no-pin`:
wherever the scheduler puts them). On this project's 2-core VMs a round trip between two cores
pays a cross-core wake-up of tens to hundreds of microseconds (bench/engine.py prints the
machine's figure), and whether the scheduler keeps the client and redis-server together or apart
changed the floor 2-3x from one run to the next; on one core both loops are serial CPU work and
the ratio repeats (it is then close to the ratio of CPU time per order).

A private redis-server on a free port is started and stopped (`--url` uses a given server instead,
with a unique key prefix deleted afterwards). Runs --runs times, prints each run, and the last line
of output is a JSON object with the medians (and each run's figures).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.floor import FloorReplay, RoundTrips, cpu_seconds, percentile, private_redis, redis_server_cpu  # noqa: E402
from brokers.paper import PaperBroker  # noqa: E402
from config.settings import Settings  # noqa: E402
from domain.orders import SCHWAB, TASTYTRADE  # noqa: E402
from domain.risk import PreTradeCheck, allow_all  # noqa: E402
from oms.models import TargetOrder  # noqa: E402
from oms.order_manager import OrderManager  # noqa: E402
from risk.limits import MAX_RATE  # noqa: E402
from store.redis_store import Store, connect  # noqa: E402

GOAL_RATIO = 0.5
CHUNK = 250  # orders per turn of the measured and the floor loop


def _latency_figures(prefix: str, latencies: list[float]) -> dict[str, float]:
    return {f"{prefix}p50_ms": round(statistics.median(latencies) * 1000, 3),
            f"{prefix}p99_ms": round(percentile(latencies, 99) * 1000, 3)}


def run_once(url: str, n_orders: int, trips: RoundTrips, risk: bool, log_dir: str) -> dict[str, object]:
    prefix = f"bench-orders-{uuid.uuid4().hex[:10]}"
    client = connect(url)  # configured as the service configures it
    store = Store(client, prefix, persistent=True, url=url)
    prices = {"/MES": 6000.0, "NVDA": 180.0}
    settings = Settings(paper_slippage_ticks=1, paper_commission_per_contract="0.62", log_dir=Path(log_dir),
                        redis_prefix=prefix)
    adapters = {b: PaperBroker(store, b, settings, prices.get) for b in (SCHWAB, TASTYTRADE)}
    check: PreTradeCheck = allow_all
    if risk:
        from app import build_services  # production's wiring of the risk engine (audit, metrics, P&L)

        engine = build_services(settings, store).risk
        assert engine is not None
        engine.update_limits({"max_orders_per_minute": MAX_RATE}, actor="bench")
        engine.session_start()  # the calendar loaded, as TradingRuntime.start does
        check = engine
    om = OrderManager(store, adapters, pre_trade_check=check)  # type: ignore[arg-type]
    lanes = [(s, sym, b) for s in ("ema", "supertrend") for sym in ("/MES", "NVDA") for b in (SCHWAB, TASTYTRADE)]
    floor_client = connect(url)
    try:
        for i in range(6 * len(lanes)):  # warm-up: scripts loaded, connections open; ends long
            s, sym, b = lanes[i % len(lanes)]
            om.move_to_target(TargetOrder(s, sym, b, (i // len(lanes)) % 2, 10 + i, "signal", "warmup"))
        journal_before = client.xlen(store.key("oms", "journal"))
        fills_before = client.xlen(store.key("oms", "fills"))
        latencies: list[float] = []
        floor_latencies: list[float] = []
        base_ts = 1_000_000
        failures = 0
        requests: list[bytes] = []
        bounds = [0]  # requests[bounds[i]:bounds[i + 1]]: order i's round trips
        replay = FloorReplay(floor_client)
        round_trips = 0
        elapsed = cpu = floor_elapsed = floor_cpu = server_cpu = floor_server_cpu = 0.0
        # Measured and floor loops take turns, CHUNK orders each, so that both see the same load on
        # a shared machine; the floor sends each chunk's recorded round trips right after it.
        for chunk_start in range(0, n_orders, CHUNK):
            chunk = range(chunk_start, min(n_orders, chunk_start + CHUNK))
            trips_before = trips.count
            server0 = redis_server_cpu(client)  # (not recorded: the floor replays the orders' requests only)
            trips.record_into(requests)
            cpu0, start = cpu_seconds(), time.perf_counter()
            for i in chunk:
                s, sym, b = lanes[i % len(lanes)]
                target = 1 if (i // len(lanes)) % 2 == 1 else 0  # alternate flat/long: one order per intent
                t0 = time.perf_counter()
                r = om.move_to_target(TargetOrder(s, sym, b, target, base_ts + i, "signal", "bench"))
                latencies.append(time.perf_counter() - t0)
                bounds.append(len(requests))
                if r.status.value != "filled":
                    failures += 1
            elapsed += time.perf_counter() - start
            cpu += cpu_seconds() - cpu0
            trips.record_into(None)
            server_cpu += redis_server_cpu(client) - server0
            round_trips += trips.count - trips_before

            per_order = [replay.prepare(requests[bounds[i]:bounds[i + 1]]) for i in chunk]
            floor_server0 = redis_server_cpu(client)
            floor_cpu0, floor_start = cpu_seconds(), time.perf_counter()
            for order_trips in per_order:
                t0 = time.perf_counter()
                for trip in order_trips:
                    replay.send(trip)
                floor_latencies.append(time.perf_counter() - t0)
            floor_elapsed += time.perf_counter() - floor_start
            floor_cpu += cpu_seconds() - floor_cpu0
            floor_server_cpu += redis_server_cpu(client) - floor_server0
        journal = client.xlen(store.key("oms", "journal")) - journal_before
        fills = client.xlen(store.key("oms", "fills")) - fills_before
        orders_per_s, floor_per_s = n_orders / elapsed, n_orders / floor_elapsed
        return {
            "orders": n_orders, "seconds": round(elapsed, 3), "orders_per_second": round(orders_per_s, 1),
            **_latency_figures("", latencies), "max_ms": round(max(latencies) * 1000, 3), "not_filled": failures,
            "cpu_us_per_order": round(cpu / n_orders * 1e6, 1),
            "redis_round_trips_per_order": round(round_trips / n_orders, 2),
            "request_bytes_per_order": round(sum(map(len, requests)) / n_orders),
            "journal_entries_per_order": round(journal / n_orders, 2), "fills_per_order": round(fills / n_orders, 2),
            "floor_orders_per_second": round(floor_per_s, 1), **_latency_figures("floor_", floor_latencies),
            "floor_cpu_us_per_order": round(floor_cpu / n_orders * 1e6, 1),
            "ratio_to_floor": round(orders_per_s / floor_per_s, 3),
            "cpu_ratio_to_floor": round(floor_cpu / cpu, 3) if cpu else None,
            "redis_server_cpu_us_per_order": round(server_cpu / n_orders * 1e6, 1),
            "floor_redis_server_cpu_us_per_order": round(floor_server_cpu / n_orders * 1e6, 1),
            # What the ratio would be if the order manager's client side cost no more than the
            # floor's (redis-py packing and parsing only) while Redis still did the order's writes:
            # the ceiling that Python work alone can reach, on one CPU where both are serial.
            "ratio_ceiling_with_these_writes": round(
                floor_elapsed / (floor_elapsed - floor_server_cpu + server_cpu), 3) if floor_elapsed else None,
        }
    finally:
        trips.record_into(None)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
        client.close()
        floor_client.close()


@contextlib.contextmanager
def _redis(url: str | None) -> Iterator[str]:
    if url:
        yield url
    else:
        with private_redis() as private:
            yield private


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3, help="independent runs; the summary is their median")
    ap.add_argument("--no-risk", action="store_true", help="order manager without the pre-trade risk check")
    ap.add_argument("--url", default=None, help="an existing Redis (default: a private redis-server)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin this process and its redis-server to one CPU")
    args = ap.parse_args()
    cpu = None
    if not args.no_pin:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})  # before the redis-server starts: it inherits the CPU
    trips = RoundTrips()
    runs = []
    with _redis(args.url) as url, tempfile.TemporaryDirectory(prefix="bench-orders-logs-") as log_dir:
        for i in range(max(1, args.runs)):
            r = run_once(url, args.orders, trips, not args.no_risk, log_dir)
            runs.append(r)
            print(f"run {i + 1}: {r['orders_per_second']:>8.1f} orders/s (floor {r['floor_orders_per_second']:.1f}/s, "
                  f"ratio {r['ratio_to_floor']})  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                  f"CPU {r['cpu_us_per_order']} us/order (floor {r['floor_cpu_us_per_order']})  "
                  f"redis-server CPU {r['redis_server_cpu_us_per_order']} us/order (floor "
                  f"{r['floor_redis_server_cpu_us_per_order']})  {r['redis_round_trips_per_order']} round trips/order  "
                  f"not filled {r['not_filled']}", flush=True)
    keys = ("orders_per_second", "p50_ms", "p99_ms", "max_ms", "cpu_us_per_order", "redis_round_trips_per_order",
            "request_bytes_per_order", "floor_orders_per_second", "floor_p50_ms", "floor_p99_ms",
            "floor_cpu_us_per_order", "ratio_to_floor", "cpu_ratio_to_floor", "redis_server_cpu_us_per_order",
            "floor_redis_server_cpu_us_per_order", "ratio_ceiling_with_these_writes")
    med = {k: statistics.median(float(r[k]) for r in runs) for k in keys}  # type: ignore[arg-type]
    result = {
        "orders": args.orders, "runs": len(runs),
        "pre_trade_risk_check": "off (allow_all)" if args.no_risk else "production RiskEngine",
        "pinned_cpu": cpu,
        **{k: round(v, 3) for k, v in med.items()},
        "not_filled": sum(int(r["not_filled"]) for r in runs),  # type: ignore[arg-type]
        "journal_entries_per_order": runs[-1]["journal_entries_per_order"],
        "fills_per_order": runs[-1]["fills_per_order"],
        "per_run_orders_per_second": [r["orders_per_second"] for r in runs],
        "per_run_floor_orders_per_second": [r["floor_orders_per_second"] for r in runs],
        "per_run_ratio_to_floor": [r["ratio_to_floor"] for r in runs],
        "goal_ratio_to_floor": GOAL_RATIO, "meets_goal": med["ratio_to_floor"] >= GOAL_RATIO,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
