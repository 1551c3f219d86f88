"""Parameter sweeps: a grid of TickerConfig variants run in parallel, ranked.

Workers are processes (the engine is CPU-bound Python; threads would share one GIL). Each worker
loads the market data once in its initializer and then runs many configs against it, so a
100-point grid reads the file `workers` times, not 100 times.
"""
from __future__ import annotations

import csv
import itertools
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Sequence

from domain.tickers import TickerConfig, TickerValidationError

from backtest.data import DataError, LoadOptions, MarketData, load
from backtest.engine import BacktestEngine, CostSettings, config_from_options
from backtest.report import metrics

SWEEPABLE = ("period_1", "period_2", "stop_loss_ticks", "stop_loss_atr", "atr_period", "multiplier",
             "trailing_stop_atr", "take_profit_atr")
RANK_KEYS = ("net_pnl", "return_pct", "sharpe", "profit_factor", "win_rate", "max_drawdown", "trades")


@dataclass(frozen=True, slots=True)
class SweepAxis:
    name: str
    values: tuple[Any, ...]


def parse_axis(text: str) -> SweepAxis:
    """`period_1=5:20:1` (start:stop:step, stop inclusive) or `multiplier=2,2.5,3` (a list)."""
    name, sep, spec = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in SWEEPABLE:
        raise DataError(f"--sweep {text!r}: expected NAME=start:stop:step with NAME one of {', '.join(SWEEPABLE)}")
    try:
        if ":" in spec:
            parts = spec.split(":")
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop = Decimal(parts[0]), Decimal(parts[1])
            step = Decimal(parts[2]) if len(parts) == 3 else Decimal(1)
            if step <= 0 or stop < start:
                raise ValueError
            values: list[Decimal] = []
            v = start
            while v <= stop:  # Decimal steps: 0.1 increments land exactly on the stop
                values.append(v)
                v += step
        else:
            values = [Decimal(x) for x in spec.split(",") if x.strip()]
    except (ArithmeticError, ValueError):
        raise DataError(f"--sweep {text!r}: values must be start:stop:step (step > 0) or a comma list") from None
    if not values or len(values) > 10_000:
        raise DataError(f"--sweep {text!r}: between 1 and 10000 values")
    out = tuple(int(x) if x == x.to_integral_value() else float(x) for x in values)
    return SweepAxis(name, out)


def grid(base: dict[str, Any], axes: Sequence[SweepAxis]) -> tuple[list[tuple[dict[str, Any], TickerConfig]], int]:
    """Valid (params, config) points of the grid, and how many were skipped as invalid
    (e.g. period_1 >= period_2): the same validator as add-ticker decides."""
    points: list[tuple[dict[str, Any], TickerConfig]] = []
    skipped = 0
    for combo in itertools.product(*(a.values for a in axes)):
        params = {a.name: v for a, v in zip(axes, combo)}
        try:
            points.append((params, config_from_options({**base, **params})))
        except TickerValidationError:
            skipped += 1
    return points, skipped


# -- worker side ----------------------------------------------------------------------------------
_DATA: MarketData | None = None


def _init_worker(options: LoadOptions) -> None:
    global _DATA
    _DATA = load(options)


def _run_point(config: TickerConfig, costs: CostSettings) -> dict[str, Any]:
    assert _DATA is not None
    result = BacktestEngine(config, costs).run(_DATA, record_bars=False)
    return metrics(result)


def run_sweep(
    load_options: LoadOptions,
    points: Sequence[tuple[dict[str, Any], TickerConfig]],
    costs: CostSettings,
    *,
    workers: int,
    on_done: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=max(1, workers), initializer=_init_worker, initargs=(load_options,)) as pool:
        futures = [(params, pool.submit(_run_point, cfg, costs)) for params, cfg in points]
        for k, (params, fut) in enumerate(futures, 1):
            rows.append({**params, **fut.result()})
            if on_done is not None:
                on_done(k, len(futures))
    return rows


def rank(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Best first. Drawdown ranks ascending (smaller is better); None sorts last."""
    ascending = key == "max_drawdown"

    def sort_key(row: dict[str, Any]) -> tuple[int, float]:
        v = row.get(key)
        if v is None:
            return (1, 0.0)
        f = float(v)
        return (0, f if ascending else -f)

    ranked = sorted(rows, key=sort_key)
    return [{"rank": i, **r} for i, r in enumerate(ranked, 1)]


def write_sweep(path: Path, ranked: Sequence[dict[str, Any]], param_names: Sequence[str]) -> list[str]:
    cols = ["rank", *param_names, "net_pnl", "return_pct", "max_drawdown", "max_drawdown_pct", "sharpe", "win_rate",
            "profit_factor", "trades", "exposure_pct", "average_trade", "commission"]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for row in ranked:
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in cols})
    return cols


def with_params(config: TickerConfig, params: dict[str, Any]) -> TickerConfig:
    return replace(config, **params)
