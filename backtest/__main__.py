"""`python -m backtest`: run one backtest (or a parameter sweep) on a data file.

    python -m backtest --strategy ema --symbol /MES --timeframe 5Min \
        --trend-line-1 EMA --period-1 9 --trend-line-2 EMA --period-2 21 \
        --data ../shared/data/bars/index-future-2006.1min.csv --out out/ema-9-21 \
        [--from 2006-03-01 --to 2006-06-01] [--quantity 1] [--commission 0.62] [--slippage-ticks 1]
        [--sweep period_1=5:20:1 period_2=20:60:5 [--rank-by net_pnl] [--workers N]
         [--optimizer optuna --trials 200 --seed 0] [--train-fraction 0.7 | --walk-forward 4 [--anchored]]
         [--cluster tcp://scheduler:8786]]

Bad input (missing/unreadable files, unknown columns, empty ranges, invalid parameters) prints one
line on stderr and exits with status 2; the output directory is written under a temporary name and
renamed only when complete, so a failed run never leaves output that looks finished.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """Bad command-line input; one line for the user."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse prints the whole usage; we promise one line
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m backtest", description="Backtest a strategy on historical data.")
    p.add_argument("--strategy", required=True, help="ema | supertrend | zeroday")
    p.add_argument("--symbol", required=True,
                   help="catalog symbol (e.g. /MES), or any symbol with --tick-size (e.g. /6E, EURUSD, BTCUSD)")
    p.add_argument("--timeframe", required=True, help="1Min, 5Min, 15Min, 1Hour, 1Day, 512t ...")
    for n in (1, 2):
        p.add_argument(f"--trend-line-{n}", dest=f"trend_line_{n}", help="EMA | SMA | WilderSmoother")
        p.add_argument(f"--period-{n}", dest=f"period_{n}")
    p.add_argument("--stop-loss-ticks", dest="stop_loss_ticks", help="ema: stop distance in ticks (0 = off)")
    p.add_argument("--stop-loss-atr", dest="stop_loss_atr", help="ema: stop distance in ATRs (0 = off)")
    p.add_argument("--atr-period", dest="atr_period")
    p.add_argument("--multiplier", help="supertrend ATR multiplier")
    p.add_argument("--trailing-stop-atr", dest="trailing_stop_atr")
    p.add_argument("--take-profit-atr", dest="take_profit_atr")
    p.add_argument("--data", nargs="+", default=[], help="DBN (.dbn/.dbn.zst) or CSV files")
    p.add_argument("--databento", metavar="DATASET:RAW_SYMBOL:SCHEMA",
                   help="download from Databento Historical (needs DATABENTO_API_KEY, --from and --to)")
    p.add_argument("--columns", help="CSV column mapping, e.g. datetime=Timestamp,open=O,high=H,low=L,close=C")
    p.add_argument("--csv-kind", choices=("auto", "bars", "ticks"), default="auto")
    p.add_argument("--bar-time", choices=("start", "end"), default="start", help="CSV bar timestamps mark the bar ...")
    p.add_argument("--tz", default="UTC", help="time zone of naive CSV timestamps and --from/--to")
    p.add_argument("--instrument", help="raw symbol inside a multi-instrument DBN file, e.g. ESU4")
    p.add_argument("--from", dest="start", help="inclusive, ISO date/time")
    p.add_argument("--to", dest="end", help="exclusive, ISO date/time")
    p.add_argument("--quantity", default="1", help="contracts per position")
    p.add_argument("--commission", default="0", help="per contract per fill")
    p.add_argument("--slippage-ticks", dest="slippage_ticks", default="0")
    p.add_argument("--capital", default="100000", help="starting capital for return and drawdown %%")
    p.add_argument("--risk-limits", help='risk limits JSON for the risk engine, e.g. {"max_position": 1}')
    p.add_argument("--no-risk", action="store_true", help="skip the risk engine (allow every order)")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv",
                   help="trades/equity/bars tables as CSV (default) or Parquet")
    p.add_argument("--bars-out", dest="bars_out", action="store_true",
                   help="also write bars.csv/.parquet: every bar with the strategy's indicators and signal")
    p.add_argument("--tick-size", dest="tick_size", help="a symbol outside the catalog: its minimum price step")
    p.add_argument("--contract-multiplier", "--point-value", dest="contract_multiplier",
                   help="a symbol outside the catalog: currency per 1.0 price point per contract (default 1); "
                        "--multiplier stays supertrend's ATR multiplier")
    p.add_argument("--calendar", help="a symbol outside the catalog: its trading calendar, any pandas_market_calendars "
                                      "or exchange_calendars name (CMEGlobex_FX, XLON, XNAS ...), 24/5 or 24/7 (default)")
    p.add_argument("--allow-off-tick", dest="allow_off_tick", action="store_true",
                   help="run on prices off the instrument's tick (fills rounded to it, with a warning) instead of refusing")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--sweep", nargs="+", help="NAME=start:stop:step ... (stop inclusive)")
    p.add_argument("--rank-by", default="net_pnl")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="local worker processes (default: all cores)")
    p.add_argument("--optimizer", choices=("grid", "optuna"), default="grid",
                   help="search the --sweep axes by grid (every point) or Optuna (TPE, --trials candidates)")
    p.add_argument("--trials", type=int, default=100, help="optuna: candidates per fold")
    p.add_argument("--seed", type=int, default=0, help="optuna: sampler seed (same seed, same candidates)")
    p.add_argument("--train-fraction", dest="train_fraction", type=float,
                   help="train on the first share of the bars, test on the rest (e.g. 0.7)")
    p.add_argument("--walk-forward", dest="walk_forward", type=int, metavar="FOLDS",
                   help="walk-forward: FOLDS train/test windows, each test after its training window")
    p.add_argument("--anchored", action="store_true", help="walk-forward: every training window starts at the first bar")
    p.add_argument("--cluster", metavar="tcp://HOST:8786",
                   help="run the search on this Dask distributed scheduler instead of the local cores")
    p.add_argument("--progress", choices=("auto", "bar", "json", "none"), default="auto",
                   help="tqdm bar on stderr (auto: long runs on a terminal), json lines for jobs, or none")
    return p


def _decimal(name: str, raw: str, minimum: Decimal = Decimal(0)) -> Decimal:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise UsageError(f"--{name} must be a number, got {raw!r}") from None
    if not value.is_finite() or value < minimum:
        raise UsageError(f"--{name} must be a finite number >= {minimum}, got {raw!r}")
    return value


def _whole(name: str, raw: str, minimum: int, maximum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"--{name} must be a whole number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise UsageError(f"--{name} must be between {minimum} and {maximum}, got {value}")
    return value


STRATEGY_FIELDS = ("strategy", "symbol", "timeframe", "trend_line_1", "period_1", "trend_line_2", "period_2",
                   "stop_loss_ticks", "stop_loss_atr", "atr_period", "multiplier", "trailing_stop_atr",
                   "take_profit_atr")


def _progress(mode: str, total: int, label: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A progress callback (done, total) and a closer."""
    if mode == "auto":  # a bar only on a terminal: a log file or pipe gets no carriage-return noise
        mode = "bar" if sys.stderr.isatty() else "none"
    if mode == "json":
        def emit(done: int, tot: int) -> None:
            print(json.dumps({"progress": round(done / tot, 4) if tot else 1.0}), file=sys.stderr, flush=True)
        return emit, lambda: None
    if mode == "bar":
        from tqdm import tqdm

        bar = tqdm(total=total, unit=" bars" if label != "sweep" else " runs", file=sys.stderr, desc=label,
                   mininterval=0.5)

        def update(done: int, tot: int) -> None:
            bar.update(done - bar.n)
        return update, bar.close
    return (lambda done, tot: None), lambda: None


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    # Risk denials are counted in report.json; the risk engine's per-denial warnings would bury
    # the one-line contract on stderr.
    logging.getLogger("risk").setLevel(logging.ERROR)  # library deprecation chatter must not pollute the one-line contract
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    from backtest.data import DataError
    from domain.tickers import TickerValidationError

    tmp: Path | None = None
    try:
        args = build_parser().parse_args(argv)
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} exists and is not a directory")
        if not out.parent.is_dir():
            raise UsageError(f"--out: parent directory {out.parent} does not exist")
        # Same parent as the final directory so the closing rename is atomic (same filesystem).
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        summary = _run(args, tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
        tmp = None
        print(summary)
        return 0
    except (UsageError, DataError, TickerValidationError) as exc:
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"error: {exc.__class__.__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        from backtest.instruments import forget_all

        forget_all()  # a research instrument lives for one run (main() also runs in-process)


def request_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON-able job request (same shape the API accepts)."""
    return {f: getattr(args, f) for f in STRATEGY_FIELDS} | {
        "data": list(args.data), "from": args.start, "to": args.end, "quantity": args.quantity,
        "commission": args.commission, "slippage_ticks": args.slippage_ticks,
    }


def _run(args: argparse.Namespace, out: Path) -> str:
    from backtest.data import LoadOptions, fetch_databento, load, parse_columns, parse_when
    from backtest.engine import BacktestEngine, CostSettings, SimulatedClock, backtest_risk_check, config_from_options
    from backtest.instruments import InstrumentError, ensure_registered, research_instrument
    from backtest.progress import RunProgress
    from backtest.report import write_all
    from config.instruments import CATALOG, Symbol

    quantity = _whole("quantity", args.quantity, 1, 10_000)
    try:
        instrument = research_instrument(args.symbol, args.tick_size, args.contract_multiplier, args.calendar)
        ensure_registered(instrument)
    except InstrumentError as exc:
        raise UsageError(str(exc)) from None
    options = {f: getattr(args, f) for f in STRATEGY_FIELDS} | {"quantity": quantity}
    if instrument is not None:
        options["symbol"] = instrument.symbol
    config = config_from_options(options)  # TickerConfig.from_payload: the add-ticker validator
    costs = CostSettings(quantity, _decimal("commission", args.commission),
                         _whole("slippage-ticks", args.slippage_ticks, 0, 1000), _decimal("capital", args.capital, Decimal("0.01")))
    start = parse_when(args.start, args.tz) if args.start else None
    end = parse_when(args.end, args.tz) if args.end else None
    if start is not None and end is not None and end <= start:
        raise UsageError("--to must be after --from")
    paths = [Path(p) for p in args.data]
    if args.databento:
        key = os.environ.get("DATABENTO_API_KEY")
        if not key:
            raise UsageError("--databento needs DATABENTO_API_KEY in the environment")
        if not (args.start and args.end):
            raise UsageError("--databento needs --from and --to")
        parts = args.databento.split(":")
        if len(parts) != 3:
            raise UsageError("--databento must be DATASET:RAW_SYMBOL:SCHEMA, e.g. GLBX.MDP3:ESU4:trades")
        paths.append(fetch_databento(parts[0], parts[1], parts[2], args.start, args.end, key, out / "source.dbn.zst"))
    if not paths:
        raise UsageError("give --data FILE... (or --databento with DATABENTO_API_KEY)")
    traded = CATALOG[Symbol(config.symbol)]
    load_opts = LoadOptions(tuple(paths), config.timeframe, start, end,
                            parse_columns(args.columns) if args.columns else None, args.tz, args.bar_time,
                            args.csv_kind, args.instrument, traded.root, config.symbol,
                            # zeroday's prices are the index's, its fills the options' premiums
                            tick_size=None if config.strategy.value == "zeroday" else traded.tick_size,
                            allow_off_tick=args.allow_off_tick, research_instrument=instrument)

    if args.sweep:
        return _run_sweep(args, options, load_opts, costs, out)

    limits = _limits(args.risk_limits)
    run_progress = RunProgress(args.progress)  # one bar over load, loop and write
    try:
        run_progress.phase("load")
        data = load(load_opts)
        if data.off_tick is not None:
            print(f"warning: {data.off_tick.message(config.symbol, traded.tick_size)}; fills are rounded to the tick",
                  file=sys.stderr)
        clock = SimulatedClock()
        check = None if args.no_risk else backtest_risk_check(clock, limits)
        from backtest.report_html import candle_size

        # Without bars.*, the price chart's lines are still recorded, once per candle it draws.
        result = BacktestEngine(config, costs, risk_check=check, clock=clock).run(
            data, record_bars=args.bars_out, progress=run_progress.phase("backtest"),
            line_every=candle_size(len(data.bars)))
        run_progress.phase("write")
        report = write_all(out, result, table_format=args.format, bars=args.bars_out)
        run_progress.finish()
    finally:
        run_progress.close()
    m = report["metrics"]
    return (f"{config.strategy.value} {config.symbol} {config.tf.display}: {m['bars']} bars, {m['trades']} trades, "
            f"net P&L {m['net_pnl']}, max drawdown {m['max_drawdown']:.2f}, sharpe {m['sharpe']}; loop "
            f"{report['bars_evaluated']} evaluated bars at {report['bars_per_second']:,.0f} bars/s -> {Path(args.out)}")


def _limits(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        raise UsageError("--risk-limits must be a JSON object") from None
    if not isinstance(doc, dict):
        raise UsageError("--risk-limits must be a JSON object")
    from risk.limits import apply_update

    try:
        apply_update(__import__("risk.limits", fromlist=["RiskLimits"]).RiskLimits(), doc)
    except ValueError as exc:
        raise UsageError(f"--risk-limits: {exc}") from None
    return doc


def _run_sweep(args: argparse.Namespace, options: dict[str, Any], load_opts: Any, costs: Any, out: Path) -> str:
    from backtest.data import load
    from backtest.distributed import make_executor
    from backtest.optimize import columns_for, make_folds, run_grid, run_optuna
    from backtest.report_html import write_sweep_html
    from backtest.sweep import RANK_KEYS, grid, parse_axis, write_sweep
    from config.instruments import CATALOG, Symbol

    axes = [parse_axis(a) for a in args.sweep]
    if args.rank_by not in RANK_KEYS:
        raise UsageError(f"--rank-by must be one of {', '.join(RANK_KEYS)}")
    if args.optimizer == "optuna" and not 1 <= args.trials <= 100_000:
        raise UsageError("--trials must be between 1 and 100000")
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    data = load(load_opts)  # fail fast, with the one-line error, before starting workers
    calendar = getattr(CATALOG.get(Symbol(options["symbol"])), "calendar", None)
    folds = make_folds(data, calendar, train_fraction=args.train_fraction, walk_forward=args.walk_forward,
                       anchored=args.anchored)
    split = folds[0].test is not None
    names = [a.name for a in axes]
    label = "optuna" if args.optimizer == "optuna" else "sweep"
    if args.optimizer == "optuna":
        total = args.trials * len(folds)
    else:  # one run per point and window
        total = len(grid(options, axes)[0]) * len(folds) * (2 if split else 1)
    progress, close = _progress(args.progress, total, "sweep")
    try:
        executor = make_executor(data, args.workers, args.cluster)
    except OSError as exc:  # an unreachable --cluster
        close()
        raise UsageError(f"--cluster {args.cluster}: {exc.__class__.__name__}: {exc}") from None
    try:
        if args.optimizer == "optuna":
            found = run_optuna(options, axes, costs, folds, executor, args.rank_by, trials=args.trials, seed=args.seed,
                               on_done=progress)
        else:
            found = run_grid(options, axes, costs, folds, executor, args.rank_by, on_done=progress)
    finally:
        executor.close()
        close()
    cols = columns_for(names, split, args.optimizer, args.rank_by)
    write_sweep(out / "sweep.csv", found.rows, names, cols)
    split_text = (f"train {args.train_fraction:g} / test {1 - args.train_fraction:g}" if args.train_fraction
                  else f"walk-forward {args.walk_forward} folds{' (anchored)' if args.anchored else ''}"
                  if args.walk_forward else None)
    doc = {"rank_by": args.rank_by, "optimizer": args.optimizer, "points": found.points, "skipped": found.skipped,
           "split": split_text, "where": args.cluster or f"{executor.slots} local worker process(es)",
           "title": f"{options['strategy']} {options['symbol']} {options['timeframe']}: {label}",
           "folds": found.folds, "overfitting": found.overfitting, "params": names, "columns": cols,
           "results": found.rows}
    (out / "sweep.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    write_sweep_html(out / "sweep.html", doc, names, cols)
    shown = cols[: len(names) + (6 if not split else 3) + (2 if args.optimizer == "optuna" else 0)]
    lines = ["  ".join(f"{c:>12}" for c in shown)]
    for row in found.rows[:10]:
        lines.append("  ".join(f"{_fmt(row.get(c)):>12}" for c in shown))
    what = (f"{found.points} runs ({found.skipped} invalid combinations skipped)" if args.optimizer == "grid"
            else f"{found.points} optuna trials per fold ({found.skipped} invalid)")
    ranked_by = f"in-sample {args.rank_by}" if split else args.rank_by
    lines.append(f"{what}, ranked by {ranked_by}" + (f", {split_text}" if split_text else "") + f" -> {Path(args.out)}")
    if found.overfitting:
        o = found.overfitting
        lines.append(f"out of sample: the in-sample best ranks {o['best_in_sample_oos_rank']} of {o['candidates']}, "
                     f"rank correlation in/out {o['rank_correlation_is_oos']}")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


if __name__ == "__main__":
    sys.exit(main())
