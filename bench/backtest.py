"""Backtest benchmark: the whole default CLI run against backtrader's whole run, and the loop
against a plain reference loop, side by side on the same 1,000,000 one-minute bars.

    .venv/bin/python bench/backtest.py [--bars 1000000] [--repeat 3] [--skip-backtrader]

- Bars: a seeded, tick-aligned random walk (/MES, 0.25 ticks), the first N minutes of /MES
  sessions from 2024-01-01 on (so every bar is one the engine evaluates), written once as a CSV
  (datetime,open,high,low,close,volume) that both programs read.
- project: `python -m backtest` exactly as a user runs it by default (EMA 9/21 stop-and-reverse,
  the risk rules on every order, report.json, report.html, trades/equity CSV, equity.png), timed
  as a whole process; its loop figure is report.json's bars_per_second (evaluated bars per second
  of the loop alone).
- backtrader (pinned BACKTRADER, installed from PyPI by this script into its own virtualenv under
  the temp directory, once): the same rules (EMA 9/21 CrossOver, order_target_size +-1, market
  orders filled at the next bar's open, its default) on the same CSV, timed as a whole process
  (start-up, CSV parse inside cerebro.run(preload=True), the loop).
- reference loop: the floor for a Python loop over these bars: a minimal EMA 9/21 cross
  stop-and-reverse in one function over plain lists (the arrays' tolist included, as the engine's
  loop converts its chunks), no objects, no risk check, no records but a trade count, in its own
  process, bars loaded with pyarrow; only the loop is timed. It takes the same trades.
- Each program runs `--repeat` times, alternating, each in a fresh process; figures are medians.
  Peak RSS is each child's own (wait4 rusage).
- The last line printed is one JSON object with every figure and the two ratios:
  whole_run_speedup_vs_backtrader (backtrader whole-run seconds / project whole-run seconds,
  goal >= 10) and loop_vs_reference (project loop bars/s / reference loop bars/s, goal >= 0.40),
  each a ratio of medians, and each round's own ratios (`*_per_round`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SEED = 20240701
BACKTRADER = "1.9.78.123"
BT_VENV = Path(tempfile.gettempdir()) / f"trading-bench-backtrader-{BACKTRADER}"
CLI_ARGS = ["--strategy", "ema", "--symbol", "/MES", "--timeframe", "1Min", "--trend-line-1", "EMA", "--period-1", "9",
            "--trend-line-2", "EMA", "--period-2", "21"]


def make_bars(n: int) -> Any:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from backtest.data import BarArrays
    from market_data import calendars

    rng = np.random.default_rng(SEED)
    tick = 0.25
    close = 5000.0 + np.cumsum(rng.integers(-4, 5, n)) * tick
    open_ = np.concatenate(([5000.0], close[:-1]))
    high = np.maximum(open_, close) + rng.integers(0, 4, n) * tick
    low = np.minimum(open_, close) - rng.integers(0, 4, n) * tick
    minutes = 1_704_067_200 * 1_000_000_000 + np.arange(2 * n, dtype=np.int64) * 60_000_000_000
    start = minutes[calendars.open_mask("/MES", minutes)][:n]
    return BarArrays(start, start + 60_000_000_000, open_, high, low, close,
                     rng.integers(1, 500, n).astype(np.int64), np.zeros(n, np.int64))


def write_csv(path: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    bars = make_bars(n)
    stamps = pc.strftime(pa.array(bars.start_ns // 1_000_000_000, pa.timestamp("s")), format="%Y-%m-%dT%H:%M:%S")
    table = pa.table({"datetime": stamps, "open": bars.open, "high": bars.high, "low": bars.low,
                      "close": bars.close, "volume": bars.volume})
    pcsv.write_csv(table, path, pcsv.WriteOptions(quoting_style="none", quoting_header="none"))


REFERENCE_SCRIPT = r'''
import json, sys, time
import pyarrow.csv as pcsv


def loop(open_, close):
    o, c = open_.tolist(), close.tolist()
    a1, a2 = 2.0 / 10, 2.0 / 22  # EMA 9 and 21, seeded with the SMA of the first period values
    f = s = None
    sum1 = sum2 = 0.0
    pos = pending = trades = 0
    entry = pnl = 0.0
    for i in range(len(c)):
        if pending:  # decided at the previous close, filled at this open
            px = o[i]
            if pos:
                pnl += pos * (px - entry)
                trades += 1
            pos, entry, pending = pending, px, 0
        x = c[i]
        pf, ps = f, s
        if i < 9:
            sum1 += x
            f = sum1 / 9 if i == 8 else None
        else:
            f += a1 * (x - f)
        if i < 21:
            sum2 += x
            s = sum2 / 21 if i == 20 else None
        else:
            s += a2 * (x - s)
        if pf is not None and ps is not None:
            if f > s and pf <= ps and pos != 1:
                pending = 1
            elif f < s and pf >= ps and pos != -1:
                pending = -1
    return trades + (1 if pos else 0), pnl  # an open position is closed at the end, as the engine does


table = pcsv.read_csv(sys.argv[1])
t0 = time.perf_counter()
trades, _ = loop(table.column("open").to_numpy(), table.column("close").to_numpy())
elapsed = time.perf_counter() - t0
n = table.num_rows
print(json.dumps({"bars": n, "loop_s": round(elapsed, 3), "bars_per_s": round(n / elapsed), "trades": trades}))
'''

BACKTRADER_SCRIPT = r'''
import json, sys, time
t0 = time.perf_counter()
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
t1 = time.perf_counter()
strat = cerebro.run(preload=True, runonce=True)[0]
elapsed = time.perf_counter() - t1
n = data.buflen()
print(json.dumps({"bars": n, "run_s": round(elapsed, 3), "bars_per_s": round(n / elapsed), "trades": strat.trades,
                  "import_s": round(t1 - t0, 3)}))
'''


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, the child's own peak RSS in MB, its stdout); exits with stderr's last line on failure."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:4])} failed: {(err.read().strip().splitlines() or ['?'])[-1]}")
        return wall, round(usage.ru_maxrss / 1024, 1), out.read()


def backtrader_python() -> Path:
    python = BT_VENV / "bin" / "python"
    if not python.exists() or subprocess.run([str(python), "-c", "import backtrader"], capture_output=True).returncode:
        print(f"installing backtrader=={BACKTRADER} into {BT_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(BT_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"backtrader=={BACKTRADER}"], check=True)
    return python


def run_project(csv_path: Path, work: Path, k: int) -> dict[str, Any]:
    out = work / f"cli-{k}"
    wall, rss, stdout = timed([sys.executable, "-m", "backtest", *CLI_ARGS, "--data", str(csv_path), "--out", str(out)],
                              ROOT)
    report = json.loads((out / "report.json").read_text())
    return {"wall_s": round(wall, 3), "loop_s": report["elapsed_s"], "loop_bars_per_s": report["bars_per_second"],
            "bars": report["metrics"]["bars"], "bars_evaluated": report["bars_evaluated"],
            "trades": report["metrics"]["trades"], "risk_denials": report["metrics"]["risk_denials"],
            "peak_rss_mb": rss, "summary": stdout.strip().splitlines()[-1]}


def run_reference(csv_path: Path, work: Path) -> dict[str, Any]:
    script = work / "reference_loop.py"
    script.write_text(REFERENCE_SCRIPT)
    wall, rss, stdout = timed([sys.executable, str(script), str(csv_path)], ROOT)
    return {**json.loads(stdout.strip().splitlines()[-1]), "wall_s": round(wall, 3), "peak_rss_mb": rss}


def run_backtrader(python: Path, csv_path: Path, work: Path) -> dict[str, Any]:
    script = work / "bt_ema.py"
    script.write_text(BACKTRADER_SCRIPT)
    wall, rss, stdout = timed([str(python), str(script), str(csv_path)], work)
    return {**json.loads(stdout.strip().splitlines()[-1]), "wall_s": round(wall, 3), "peak_rss_mb": rss}


def median(rows: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(float(r[key]) for r in rows), 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-backtrader", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"bars": args.bars, "seed": SEED, "python": sys.version.split()[0], "repeat": args.repeat,
                               "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        work = Path(tmp)
        csv_path = work / "bars.csv"
        write_csv(csv_path, args.bars)
        results["csv_mb"] = round(csv_path.stat().st_size / 1e6, 1)
        bt_python = None if args.skip_backtrader else backtrader_python()
        project, reference, backtrader = [], [], []
        for k in range(args.repeat):  # alternate, so a slow spell of the shared machine hits all alike
            project.append(run_project(csv_path, work, k))
            print(f"project    run {k + 1}: {project[-1]['wall_s']:>7.2f} s whole, loop "
                  f"{project[-1]['loop_bars_per_s']:>10,.0f} bars/s", file=sys.stderr)
            reference.append(run_reference(csv_path, work))
            print(f"reference  run {k + 1}: loop {reference[-1]['bars_per_s']:>10,} bars/s", file=sys.stderr)
            if bt_python is not None:
                backtrader.append(run_backtrader(bt_python, csv_path, work))
                print(f"backtrader run {k + 1}: {backtrader[-1]['wall_s']:>7.2f} s whole, loop "
                      f"{backtrader[-1]['bars_per_s']:>10,} bars/s", file=sys.stderr)
    results["project_default_cli"] = {
        "command": "python -m backtest " + " ".join(CLI_ARGS) + " --data bars.csv --out DIR",
        "wall_s_median": median(project, "wall_s"), "loop_bars_per_s_median": median(project, "loop_bars_per_s"),
        "runs": project}
    results["reference_loop"] = {"bars_per_s_median": median(reference, "bars_per_s"), "runs": reference}
    results["loop_vs_reference"] = round(results["project_default_cli"]["loop_bars_per_s_median"]
                                         / results["reference_loop"]["bars_per_s_median"], 3)
    results["loop_goal"] = 0.40
    # Each round's own ratio (its project and reference runs are adjacent): how far the shared
    # machine's slow spells move the figure.
    results["loop_vs_reference_per_round"] = [round(p["loop_bars_per_s"] / r["bars_per_s"], 3)
                                              for p, r in zip(project, reference)]
    if backtrader:
        results["backtrader"] = {"version": BACKTRADER, "wall_s_median": median(backtrader, "wall_s"),
                                 "loop_bars_per_s_median": median(backtrader, "bars_per_s"), "runs": backtrader}
        results["whole_run_speedup_vs_backtrader"] = round(results["backtrader"]["wall_s_median"]
                                                           / results["project_default_cli"]["wall_s_median"], 2)
        results["whole_run_goal"] = 10.0
        results["whole_run_speedup_per_round"] = [round(b["wall_s"] / p["wall_s"], 2)
                                                  for p, b in zip(project, backtrader)]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
