"""Chaos: the real service (`python app.py`, paper mode, simulated feed) on the private test Redis,
killed with SIGKILL many times and restarted each time on the same Redis and prefix:

- at a random moment of start-up (imports, order recovery, reconciliation, resume),
- at a random moment while trading,
- right after a bar close, in the order burst it starts (the first journal or paper-fill write
  stamped at or after the bar, plus a random few milliseconds).

After every restart that lives long enough (and at the end) a checkpoint lets it settle - every
ticker caught up on the bars its killed predecessor left and past one live bar - stops trading
(positions kept, state saved, so nothing moves while it is read), and checks, through the REST API
and the paper broker's own records (tests/process/chaos_checks.py):

- no client order id sent twice (the paper broker's fill log; one client id per intent leg);
- every order terminal or resolved, book and broker agreeing on each, and none refused as a
  duplicate of an order the broker never received (a lost signal);
- strategy = book = paper broker for every (strategy, ticker, broker);
- no halted ticker without a standing reason (a reconciliation run at the checkpoint).
The settle is short on purpose: tick bars cross often, and a later signal would hide a
divergence the restart left.

Set-up: ema and supertrend tickers on six futures (and two equities, at both brokers, while their
session is open), all on 10-trade bars of a 100 trades/s simulated feed: a bar every 0.1 s, every
symbol closing on the same feed step (the feed prints one trade per instrument per step), so each
close is one burst of orders across tickers. Each ticker has its own symbol, so every (broker,
symbol) position belongs to one lane. The orders-per-minute runaway guard is lifted: its denials
are another way to diverge, with tests of their own; here only crashes are exercised.

The service runs on the real wall clock and evaluates bars only inside the instrument's session
(CME Globex 18:00-17:00 ET for futures, 09:30-16:00 ET for equities): when no session stays open
for the next ten minutes the test is skipped with the reason.

Seeded: the kill schedule (kinds, delays, bursts, jitters) comes from CHAOS_SEED (printed; random
when unset) and CHAOS_KILLS (default 20), so a failing schedule can be replayed (the service's own
timing still varies). The counts (kills, orders, duplicates, divergences, ...) are printed and
written as JSON to chaos-summary.json in the test's tmp dir, and to the path in CHAOS_REPORT when
set: `CHAOS_REPORT=/tmp/chaos.json ./test.sh -m chaos -s`.

Timing: every wait waits on a condition with a generous bound; the only sleeps are the chaos itself
(when to kill). About 80 s on a 2-core machine.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from market_data import calendars
from tests.process.chaos_checks import Findings, Snapshot, TickerSpec, book_from_positions, check, paper_records
from tests.process.harness import Service, release_dead_holders_lock, service_env, wait_for

BROKERS = ("schwab", "tastytrade")
TRADES_PER_SECOND = 100
DEFAULT_KILLS = 20
SESSION_MARGIN_SECONDS = 600  # the session must stay open this long: the test never straddles a close
START_UP_KILL_WINDOW = (0.3, 4.5)  # seconds after spawn: imports, recovery, reconciliation, resume (serving at ~3.5 s)
RUNNING_KILL_WINDOW = (0.0, 4.0)  # seconds after trading resumed
BURST_JITTER_SECONDS = 0.006  # a bar-close kill lands up to this long after the first order write of its burst
BURSTS_BEFORE_KILL = (1, 10)  # a bar-close kill lands in the n-th burst after the restart, n drawn from this range
BURST_WAIT_SECONDS = 20.0  # a bar-close kill that sees no burst by then kills at the next bar
RESUME_SECONDS = 30.0
MAX_ID_SEQ = 2**64 - 1

# Every ticker on 10-trade bars: the simulated feed prints one trade per instrument per step, so all
# of them close on the same step and their signals make one burst of orders. Short trend lines
# cross often.
FUTURES: list[dict[str, Any]] = [
    {"strategy": "ema", "symbol": "/MES", "timeframe": "10t", "trend_line_1": "EMA", "period_1": 1,
     "trend_line_2": "EMA", "period_2": 3, "schwab_quantity": 0, "tastytrade_quantity": 1},
    {"strategy": "ema", "symbol": "/MNQ", "timeframe": "10t", "trend_line_1": "EMA", "period_1": 2,
     "trend_line_2": "EMA", "period_2": 4, "schwab_quantity": 0, "tastytrade_quantity": 2,
     "stop_loss_ticks": 8},  # stop exits on trades, between bar closes
    {"strategy": "ema", "symbol": "/RTY", "timeframe": "10t", "trend_line_1": "SMA", "period_1": 1,
     "trend_line_2": "EMA", "period_2": 2, "schwab_quantity": 0, "tastytrade_quantity": 1},
    {"strategy": "ema", "symbol": "/NQ", "timeframe": "10t", "trend_line_1": "EMA", "period_1": 1,
     "trend_line_2": "SMA", "period_2": 3, "schwab_quantity": 0, "tastytrade_quantity": 1,
     "stop_loss_ticks": 12},
    {"strategy": "supertrend", "symbol": "/M2K", "timeframe": "10t", "multiplier": 1.0,
     "schwab_quantity": 0, "tastytrade_quantity": 1},
    {"strategy": "supertrend", "symbol": "/ES", "timeframe": "10t", "multiplier": 1.0,
     "schwab_quantity": 0, "tastytrade_quantity": 1},
]
EQUITIES: list[dict[str, Any]] = [
    {"strategy": "ema", "symbol": "NVDA", "timeframe": "10t", "trend_line_1": "EMA", "period_1": 1,
     "trend_line_2": "EMA", "period_2": 3, "schwab_quantity": 2, "tastytrade_quantity": 1},
    {"strategy": "supertrend", "symbol": "TSLA", "timeframe": "10t", "multiplier": 1.0,
     "schwab_quantity": 1, "tastytrade_quantity": 1},
]

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.timeout(420),
]


class KillKind(StrEnum):
    START_UP = "start-up"  # `delay` s after the process was spawned
    RUNNING = "running"  # `delay` s after trading resumed
    BAR_CLOSE = "bar_close"  # `jitter` s into the order burst of a bar close, the `bursts`-th since trading resumed


@dataclass(frozen=True)
class PlannedKill:
    kind: KillKind
    delay: float
    jitter: float
    bursts: int


@dataclass
class KillRecord:
    run: str
    kind: str
    outcome: str  # start-up / running: whether it served HTTP yet; bar_close: "in burst" or why not
    seconds_after_spawn: float


RESNAPSHOTS = 3  # re-reads of a checkpoint with findings (see Chaos.checkpoint)
RESNAPSHOT_SECONDS = 0.5


def plan_kills(seed: int, count: int) -> list[PlannedKill]:
    """A fifth of the kills at a random moment of start-up, a fifth at a random moment while
    trading, the rest in a bar close's order burst; shuffled."""
    rng = random.Random(seed)
    kinds = [KillKind.START_UP] * (count // 5) + [KillKind.RUNNING] * (count // 5)
    kinds += [KillKind.BAR_CLOSE] * (count - len(kinds))
    rng.shuffle(kinds)
    plans = []
    for kind in kinds:
        window = START_UP_KILL_WINDOW if kind is KillKind.START_UP else RUNNING_KILL_WINDOW
        plans.append(PlannedKill(kind, rng.uniform(*window), rng.uniform(0.0, BURST_JITTER_SECONDS),
                                 rng.randint(*BURSTS_BEFORE_KILL)))
    return plans


def _open_long_enough(symbol: str, now_ns: int) -> bool:
    session = calendars.calendar_for(symbol).session_at(now_ns)
    return session is not None and session.close_ns - now_ns > SESSION_MARGIN_SECONDS * 1_000_000_000


def choose_tickers(now_ns: int) -> list[dict[str, Any]]:
    chosen = (FUTURES if _open_long_enough("/MES", now_ns) else []) + \
             (EQUITIES if _open_long_enough("NVDA", now_ns) else [])
    return [dict(t, trade_enabled=True) for t in chosen]


@pytest.fixture
def chaos_redis(real_redis_url: str) -> Iterator[tuple[str, redis.Redis, str]]:
    """(url, client, prefix) on the private test Redis; the prefix's keys are deleted afterwards."""
    client = redis.Redis.from_url(real_redis_url, decode_responses=True)
    prefix = f"chaos-{uuid.uuid4().hex[:10]}"
    yield real_redis_url, client, prefix
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Every Service the test starts is killed afterwards, whatever happened."""
    started: list[Service] = []
    yield started
    for svc in started:
        svc.kill()


class Chaos:
    """The service under test, restarted on one env (same Redis, prefix, port, logs)."""

    def __init__(self, env: dict[str, str], run_dir: Path, client: redis.Redis, prefix: str,
                 services: list[Service], tickers: list[dict[str, Any]]) -> None:
        self.env, self.run_dir, self.r, self.prefix = env, run_dir, client, prefix
        self.services, self.tickers = services, tickers
        self.token = ""
        self.svc: Service | None = None
        self.kills: list[KillRecord] = []
        self.findings = Findings()
        self.bar_tops: dict[tuple[str, str], int] = {}
        self.checkpoints: list[dict[str, Any]] = []
        self.bar_keys = sorted({self._bars_key(t) for t in tickers})
        # Where an order burst shows first: the book's journal and the paper brokers' fill logs.
        self.activity_keys = [f"{prefix}:oms:journal"] + [f"{prefix}:paper:{b}:fills" for b in BROKERS]

    # --- process ------------------------------------------------------------------------------
    def spawn(self) -> Service:
        svc = Service(env=self.env, log_dir=self.run_dir, name=f"run{len(self.services):02d}")
        self.services.append(svc)
        self.svc = svc.start()
        return svc

    def kill(self, kind: KillKind, outcome: str) -> None:
        svc = self.svc
        assert svc is not None and svc.proc is not None
        if svc.proc.poll() is not None:
            raise AssertionError(f"{svc.name} exited by itself with {svc.proc.returncode} before its kill:\n"
                                 f"{svc.stderr()[-4000:]}")
        svc.kill9()
        self.kills.append(KillRecord(svc.name, kind.value, outcome, round(time.monotonic() - svc.started_at, 3)))
        release_dead_holders_lock(self.r, self.prefix, svc.pid)
        # The last bar each ticker's stream holds now: the restart has caught up once it is past it.
        self.bar_tops = {(t["strategy"], t["symbol"]): _last_bar_end(self.r, self._bars_key(t)) for t in self.tickers}

    def _bars_key(self, ticker: dict[str, Any]) -> str:
        return f"{self.prefix}:md:bars:{ticker['symbol']}:{ticker['timeframe']}"  # market_data/redis_buffer.py

    def healthy(self) -> Service:
        svc = self.svc
        assert svc is not None
        svc.wait_healthy()
        if not self.token:
            self.token = svc.login()
        return svc

    def healthy_and_resumed(self) -> None:
        svc = self.healthy()

        def resumed() -> bool:
            data = svc.api("GET", "/api/strategies", self.token)["data"]
            return all(data[t["strategy"]]["tickers"].get(t["symbol"], {}).get("running") for t in self.tickers)

        wait_for(resumed, RESUME_SECONDS, f"{svc.name}: every ticker running again", interval=0.1)

    # --- kills ----------------------------------------------------------------------------------
    def timed_kill(self, plan: PlannedKill, since: float) -> None:
        """SIGKILL `plan.delay` s after `since` (monotonic), whatever the service is doing then."""
        svc = self.svc
        assert svc is not None and svc.proc is not None
        try:
            code = svc.proc.wait(timeout=max(0.0, since + plan.delay - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        else:
            raise AssertionError(f"{svc.name} exited by itself with {code}:\n{svc.stderr()[-4000:]}")
        # Whether it got as far as serving, from its own log line (asking over HTTP would delay the kill).
        self.kill(plan.kind, "serving" if "serving on http" in svc.stderr() else "not serving yet")

    def bar_close_kill(self, plan: PlannedKill) -> None:
        """SIGKILL right after a bar close, once the orders it triggers start reaching Redis (the
        first journal or paper-fill write stamped at or after the bar), `plan.jitter` s later; in
        the `plan.bursts`-th such burst after the restart, so each run trades for a while first."""
        svc = self.svc
        assert svc is not None and svc.proc is not None
        self.healthy_and_resumed()
        ids = {key: _top_id(self.r, key) for key in self.bar_keys}
        deadline = time.monotonic() + BURST_WAIT_SECONDS
        bursts = 0
        while True:
            left = deadline - time.monotonic()
            reply = self.r.xread(ids, block=int(max(1.0, min(left, 2.0)) * 1000))
            if svc.proc.poll() is not None:
                raise AssertionError(f"{svc.name} exited by itself with {svc.proc.returncode}:\n{svc.stderr()[-4000:]}")
            if not reply:
                if left <= 0:
                    raise AssertionError(f"{svc.name}: no bar closed for {BURST_WAIT_SECONDS:.0f} s")
                continue
            bar_ms = 0
            for key, entries in reply:
                ids[key] = entries[-1][0]
                bar_ms = max(bar_ms, int(str(entries[-1][0]).split("-")[0]))
            if left <= 0:  # bars close but (too) little trades: kill at this close anyway
                self.kill(KillKind.BAR_CLOSE, f"at a close after {bursts} bursts (time bound)")
                return
            since_bar = f"{bar_ms - 1}-{MAX_ID_SEQ}"  # entries stamped at or after the bar's millisecond
            if self.r.xread({key: since_bar for key in self.activity_keys}, block=300, count=1):
                bursts += 1
                if bursts < plan.bursts:
                    continue
                if plan.jitter:
                    time.sleep(plan.jitter)  # chaos timing: where in the burst the kill lands
                self.kill(KillKind.BAR_CLOSE, "in burst")
                return

    # --- checkpoints ----------------------------------------------------------------------------
    def checkpoint(self, resume: bool) -> Snapshot:
        """Once the restarted service has settled - every ticker has caught up on the bars its
        killed predecessor left and acted on a live bar after them - stop trading (positions kept,
        state saved: nothing moves while the snapshot is read), check the invariants, and start
        trading again when `resume`. The settle is kept short on purpose: a divergence the restart
        left is seen before a later signal happens to heal it."""
        svc = self.svc
        assert svc is not None
        where = f"{svc.name} after kill {len(self.kills)}"
        self.healthy_and_resumed()

        def settled() -> bool:
            data = svc.api("GET", "/api/strategies", self.token)["data"]
            for t in self.tickers:
                last = data[t["strategy"]]["tickers"][t["symbol"]].get("last_bar") or {}
                if int(last.get("end_ns") or 0) <= self.bar_tops.get((t["strategy"], t["symbol"]), 0):
                    return False
            return True

        wait_for(settled, RESUME_SECONDS, f"{svc.name}: every ticker past the bars of the killed run", interval=0.05)
        strategies = sorted({t["strategy"] for t in self.tickers})
        for strategy in strategies:
            svc.api("GET", f"/api/stop-trading?strategy={strategy}", self.token)

        def stopped() -> bool:
            data = svc.api("GET", "/api/strategies", self.token)["data"]
            return not any(data[t["strategy"]]["tickers"][t["symbol"]].get("running") for t in self.tickers)

        wait_for(stopped, RESUME_SECONDS, f"{svc.name}: every ticker stopped")
        snap = self.snapshot()
        found = check(snap)
        for _ in range(RESNAPSHOTS):
            if not found.violations:
                break
            # Trades keep flowing while the strategies are stopped, and the brokers' resting stops
            # keep working (they survive stop-trading on purpose): one can fill between the reads
            # of the orders, the positions and the strategies. A state finding counts when a fresh
            # read still shows it; a resolved one is gone from the re-read.
            time.sleep(RESNAPSHOT_SECONDS)
            again = self.snapshot()
            refound = check(again)
            stable = refound.groups() == found.groups()
            snap, found = again, refound
            if stable:
                break
        self.findings.merge(found, where)
        self.checkpoints.append({"where": where, "orders": len(snap.orders), "halts": len(snap.halts),
                                 "reconcile_ok": snap.reconcile_ok, **{k: v for k, v in found.counts().items() if v}})
        if resume:
            for strategy in strategies:
                svc.api("GET", f"/api/start-trading?strategy={strategy}", self.token)
        return snap

    def snapshot(self) -> Snapshot:
        svc, token = self.svc, self.token
        assert svc is not None
        orders: list[dict[str, Any]] = []
        while True:
            page = svc.api("GET", f"/api/orders?limit=1000&offset={len(orders)}", token, timeout=60)
            orders += page["orders"]
            if not page["has_more"]:
                break
        book, held = book_from_positions(svc.api("GET", "/api/positions?include_flat=true", token))
        status = svc.api("GET", "/api/strategies", token)["data"]
        positions = {(t["strategy"], t["symbol"]): str(status[t["strategy"]]["tickers"][t["symbol"]]["position"])
                     for t in self.tickers}
        paper_orders, paper_fills = paper_records(self.r, self.prefix, BROKERS)
        reconciled = svc.api("POST", "/api/reconcile", token, {}, timeout=60)
        report = reconciled["report"]
        specs = [TickerSpec(t["strategy"], t["symbol"], tuple((b, int(t[f"{b}_quantity"])) for b in BROKERS))
                 for t in self.tickers]
        return Snapshot(
            tickers=specs, strategy_positions=positions, book=book, broker_positions=held, orders=orders,
            paper_orders=paper_orders, paper_fills=paper_fills, halts=reconciled["halts"],
            standing={(str(s), str(sym)) for s, sym in report["affected"]}, reconcile_ok=bool(report["ok"]),
        )


def _last_bar_end(client: redis.Redis, key: str) -> int:
    latest = client.xrevrange(key, count=1)
    return int(latest[0][1]["end"]) if latest else 0


def _top_id(client: redis.Redis, key: str) -> str:
    latest = client.xrevrange(key, count=1)
    return str(latest[0][0]) if latest else "0-0"


def summarize(seed: int, chaos: Chaos, snap: Snapshot, seconds: float) -> dict[str, Any]:
    kills = Counter(f"{k.kind} ({k.outcome})" for k in chaos.kills)
    states = Counter(o["state"] for o in snap.orders)
    return {
        "seed": seed, "seconds": round(seconds, 1), "tickers": [f"{t['strategy']} {t['symbol']}" for t in chaos.tickers],
        "service_runs": len(chaos.services), "kills": len(chaos.kills), "kills_by_kind": dict(sorted(kills.items())),
        "orders": len(snap.orders), "orders_by_state": dict(sorted(states.items())),
        "signals_traded": len({(o["strategy"], o["symbol"], o["event_ts_ns"]) for o in snap.orders}),
        "paper_fills": {b: len(f) for b, f in snap.paper_fills.items()},
        "checkpoints": len(chaos.checkpoints), **chaos.findings.counts(), "halts_at_end": len(snap.halts),
        "reconcile_ok_at_end": snap.reconcile_ok,
        "checkpoint_log": chaos.checkpoints, "kill_log": [asdict(k) for k in chaos.kills],
        "findings": chaos.findings.groups(),
        "orders_not_filled": [{k: o.get(k) for k in ("client_order_id", "strategy", "symbol", "broker", "leg", "state",
                                                      "reason", "event_ts_ns")}
                              for o in snap.orders if o["state"] != "FILLED"],
    }


def test_kill_9_during_order_bursts_keeps_one_position_truth(
        chaos_redis: tuple[str, redis.Redis, str], services: list[Service], tmp_path: Path) -> None:
    url, client, prefix = chaos_redis
    tickers = choose_tickers(time.time_ns())
    if not tickers:
        pytest.skip("no instrument session (CME Globex 18:00-17:00 ET, equities 09:30-16:00 ET) stays open for "
                    f"the next {SESSION_MARGIN_SECONDS // 60} minutes at the real wall clock: nothing would trade")
    assert len({t["symbol"] for t in tickers}) == len(tickers), "one ticker per symbol: one lane per broker position"
    seed = int(os.environ.get("CHAOS_SEED") or secrets.randbits(32))
    plan = plan_kills(seed, int(os.environ.get("CHAOS_KILLS") or DEFAULT_KILLS))
    print(f"\nchaos seed {seed} (replay with CHAOS_SEED={seed}); {len(plan)} kills; "
          f"tickers {[t['strategy'] + ' ' + t['symbol'] for t in tickers]}; logs in {tmp_path}")
    began = time.monotonic()
    env = service_env(url, prefix, tmp_path / "logs", SIMULATED_TRADES_PER_SECOND=str(TRADES_PER_SECOND))
    chaos = Chaos(env, tmp_path, client, prefix, services, tickers)

    first = chaos.spawn()
    chaos.healthy()
    first.api("PUT", "/api/risk", chaos.token, {"max_orders_per_minute": None})
    for ticker in tickers:
        first.api("POST", "/api/add-ticker", chaos.token, ticker, expect=201)
    for strategy in sorted({t["strategy"] for t in tickers}):
        first.api("GET", f"/api/start-trading?strategy={strategy}", chaos.token)
    wait_for(lambda: first.api("GET", "/api/orders?limit=1", chaos.token)["orders"], 60,
             "the first order (warm-up done, signals trading)", interval=0.2)
    since = time.monotonic()

    for i, kill in enumerate(plan):
        if i > 0:
            since = chaos.spawn().started_at
        if kill.kind is KillKind.START_UP:
            chaos.timed_kill(kill, since)  # imports, recovery, reconciliation or resume: whatever it is doing
            continue
        if i > 0:  # the restart has recovered from the previous kill: check, then trade on
            chaos.checkpoint(resume=True)
        if kill.kind is KillKind.RUNNING:
            chaos.timed_kill(kill, time.monotonic())
        else:
            chaos.bar_close_kill(kill)

    chaos.spawn()
    snap = chaos.checkpoint(resume=False)
    summary = summarize(seed, chaos, snap, time.monotonic() - began)
    text = json.dumps(summary, indent=1)
    (tmp_path / "chaos-summary.json").write_text(text)
    if os.environ.get("CHAOS_REPORT"):
        Path(os.environ["CHAOS_REPORT"]).write_text(text)
    print({k: v for k, v in summary.items() if k not in ("kill_log", "checkpoint_log", "findings", "orders_not_filled")})
    print(chaos.findings.describe())
    assert summary["orders"] > 0 and summary["kills"] == len(plan), summary
    assert chaos.findings.violations == 0, (
        f"chaos seed {seed}: {chaos.findings.violations} violations after {len(chaos.kills)} kills "
        f"(logs in {tmp_path}):\n{chaos.findings.describe()}")
