"""Backtest benchmark: EMA 9/21 crossover and Supertrend on 1,000,000 one-minute bars.

    .venv/bin/python bench/backtest.py [--bars 1000000] [--skip-backtrader]

- Bars: a seeded, tick-aligned random walk (/MES, 0.25 ticks) so every run sees identical data.
- Each case runs in its own child process so its peak RSS (resource.getrusage ru_maxrss) is its own;
  bars/s is the engine loop (strategy on_bar per bar, fills, risk check = allow_all) excluding
  data generation and report writing. bars.csv indicator recording is off (as in sweeps).
- backtrader: the same EMA 9/21 stop-and-reverse rules (market orders, filled at the next bar's
  open: backtrader's default) on the identical bars from a CSV, in its own venv
  (bench/.venv-backtrader; create with `python -m venv bench/.venv-backtrader &&
  bench/.venv-backtrader/bin/pip install backtrader`). Its time includes parsing the CSV, which
  backtrader does inside cerebro.run (preload=True); `wall_s_including_csv_load` adds start-up.
- The last line printed is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BT_PYTHON = ROOT / "bench" / ".venv-backtrader" / "bin" / "python"
SEED = 20240701


def make_bars(n: int) -> Any:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from backtest.data import BarArrays

    rng = np.random.default_rng(SEED)
    tick = 0.25
    close = 5000.0 + np.cumsum(rng.integers(-4, 5, n)) * tick
    open_ = np.concatenate(([5000.0], close[:-1]))
    high = np.maximum(open_, close) + rng.integers(0, 4, n) * tick
    low = np.minimum(open_, close) - rng.integers(0, 4, n) * tick
    # The first n minutes of /MES sessions from 2024-01-01 on: the engine evaluates session bars
    # only, so bars in the CME daily break or on weekends would be skipped, not measured.
    from market_data import calendars

    minutes = 1_704_067_200 * 1_000_000_000 + np.arange(2 * n, dtype=np.int64) * 60_000_000_000
    start = minutes[calendars.open_mask("/MES", minutes)][:n]
    return BarArrays(start, start + 60_000_000_000, open_, high, low, close,
                     rng.integers(1, 500, n).astype(np.int64), np.zeros(n, np.int64))


def run_case(strategy: str, n: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from backtest.data import MarketData
    from backtest.engine import BacktestEngine, CostSettings, config_from_options
    from backtest.report import metrics

    bars = make_bars(n)
    config = config_from_options({"strategy": strategy, "symbol": "/MES", "timeframe": "1Min", "trend_line_1": "EMA",
                                  "period_1": 9, "trend_line_2": "EMA", "period_2": 21})
    t0 = time.perf_counter()
    result = BacktestEngine(config, CostSettings()).run(MarketData(bars, None, "bench"), record_bars=False)
    total = time.perf_counter() - t0
    m = metrics(result)
    return {"strategy": strategy, "bars": n, "loop_s": round(result.elapsed_s, 3), "total_s": round(total, 3),
            "bars_per_s": round(n / result.elapsed_s), "trades": m["trades"], "net_pnl": m["net_pnl"],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


BACKTRADER_SCRIPT = r'''
import json, resource, sys, time
import backtrader as bt

class EmaCross(bt.Strategy):
    params = dict(fast=9, slow=21)
    def __init__(self):
        self.cross = bt.ind.CrossOver(bt.ind.EMA(period=self.p.fast), bt.ind.EMA(period=self.p.slow))
        self.trades = 0
    def notify_trade(self, trade):
        if trade.isclosed:
            self.trades += 1
    def next(self):
        if self.cross[0] > 0 and self.position.size <= 0:
            self.order_target_size(target=1)
        elif self.cross[0] < 0 and self.position.size >= 0:
            self.order_target_size(target=-1)

cerebro = bt.Cerebro(stdstats=False)
data = bt.feeds.GenericCSVData(dataname=sys.argv[1], dtformat="%Y-%m-%dT%H:%M:%S", datetime=0, open=1, high=2,
                               low=3, close=4, volume=5, openinterest=-1, timeframe=bt.TimeFrame.Minutes)
cerebro.adddata(data)
cerebro.addstrategy(EmaCross)
cerebro.broker.setcash(1e9)
cerebro.broker.setcommission(commission=0.0, mult=5.0)
t0 = time.perf_counter()
strat = cerebro.run(preload=True, runonce=True)[0]
elapsed = time.perf_counter() - t0
n = data.buflen()
print(json.dumps({"bars": n, "run_s": round(elapsed, 3), "bars_per_s": round(n / elapsed), "trades": strat.trades,
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
'''


def run_backtrader(n: int) -> dict[str, Any]:
    if not BT_PYTHON.exists():
        return {"skipped": f"no backtrader venv at {BT_PYTHON}"}
    import numpy as np

    bars = make_bars(n)
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "bars.csv"
        stamps = (bars.start_ns // 1_000_000_000).astype("datetime64[s]").astype(str)
        table = np.column_stack((stamps, bars.open.astype(str), bars.high.astype(str), bars.low.astype(str),
                                 bars.close.astype(str), bars.volume.astype(str)))
        np.savetxt(csv_path, table, fmt="%s", delimiter=",", header="datetime,open,high,low,close,volume", comments="")
        script = Path(tmp) / "bt_ema.py"
        script.write_text(BACKTRADER_SCRIPT)
        t0 = time.perf_counter()
        proc = subprocess.run([str(BT_PYTHON), str(script), str(csv_path)], capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s_including_csv_load"] = round(wall, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--case", choices=("ema", "supertrend"))
    parser.add_argument("--skip-backtrader", action="store_true")
    args = parser.parse_args()
    if args.case:  # child mode: one case, one JSON line
        print(json.dumps(run_case(args.case, args.bars)))
        return
    results: dict[str, Any] = {"bars": args.bars, "seed": SEED, "python": sys.version.split()[0]}
    for case in ("ema", "supertrend"):
        proc = subprocess.run([sys.executable, __file__, "--case", case, "--bars", str(args.bars)],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        results[case] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{case:>10}: {results[case]['bars_per_s']:>10,} bars/s  {results[case]['trades']:>7} trades  "
              f"peak RSS {results[case]['peak_rss_mb']} MB")
    results["target_ema_bars_per_s"] = 500_000
    results["ema_meets_target"] = results["ema"]["bars_per_s"] >= 500_000
    if not args.skip_backtrader:
        bt_res = run_backtrader(args.bars)
        results["backtrader_ema"] = bt_res
        if "bars_per_s" in bt_res:
            results["ema_speedup_vs_backtrader"] = round(results["ema"]["bars_per_s"] / bt_res["bars_per_s"], 2)
            print(f"backtrader: {bt_res['bars_per_s']:>10,} bars/s  {bt_res['trades']:>7} trades  "
                  f"peak RSS {bt_res['peak_rss_mb']} MB")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
