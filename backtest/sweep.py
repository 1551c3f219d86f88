"""Parameter sweeps: the axes (`--sweep NAME=start:stop:step`), the grid of TickerConfig variants
they span, ranking and sweep.csv. Running the points (local processes or a Dask cluster), Optuna
and the train/test and walk-forward windows: backtest/optimize.py and backtest/distributed.py.
"""
from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Sequence

from domain.tickers import TickerConfig, TickerValidationError

from backtest.data import DataError
from backtest.engine import config_from_options

SWEEPABLE = ("period_1", "period_2", "stop_loss_ticks", "stop_loss_atr", "atr_period", "multiplier",
             "trailing_stop_atr", "take_profit_atr")
RANK_KEYS = ("net_pnl", "return_pct", "cagr_pct", "sharpe", "sortino", "calmar", "profit_factor", "win_rate",
             "expectancy", "max_drawdown", "max_drawdown_pct", "trades")


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


def write_sweep(path: Path, ranked: Sequence[dict[str, Any]], param_names: Sequence[str],
                columns: Sequence[str] | None = None) -> list[str]:
    cols = list(columns) if columns is not None else [
        "rank", *param_names, "net_pnl", "return_pct", "max_drawdown", "max_drawdown_pct", "sharpe", "win_rate",
        "profit_factor", "trades", "exposure_pct", "average_trade", "commission"]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for row in ranked:
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in cols})
    return cols


def with_params(config: TickerConfig, params: dict[str, Any]) -> TickerConfig:
    return replace(config, **params)
