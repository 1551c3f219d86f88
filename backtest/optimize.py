"""Parameter search that shows overfitting: a grid or Optuna, on train/test or walk-forward splits.

Windows. The loaded bars are cut at session boundaries (the instrument's calendar) into:
- no split: one window, the whole range (the classic sweep: every figure is in-sample);
- `train_fraction=f`: train on the first f of the bars, test on the rest;
- `walk_forward=k`: k+1 equal parts; fold j trains on part j (or parts 1..j, `anchored`) and tests
  on part j+1, so every test window is later than what it was chosen on.
Each window is backtested on its own: it starts flat and cold (the strategy's warm-up bars give
no signal), so a test window never sees its training window's positions.

Search. The grid runs every valid point of the axes on every window. Optuna (TPE sampler, seeded)
asks for as many candidates at a time as the executor has slots, runs them (training window and
test window together) and tells it the training metric; it searches each fold separately, as a
walk-forward optimisation does. A candidate Optuna suggests twice is run once.

Every candidate carries its in-sample (`is_*`) and out-of-sample (`oos_*`) figures (the mean over
the folds for a grid with walk-forward). Ranking is by the in-sample metric, i.e. what an optimiser
would pick; `overfitting` says how well that ranking held out of sample: the rank correlation of
in-sample and out-of-sample metric over the candidates, the out-of-sample rank of the in-sample
best, and per fold the chosen parameters' test result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from domain.tickers import TickerConfig, TickerValidationError

from backtest.data import DataError, MarketData, utc_iso
from backtest.distributed import Executor, ProgressCallback, Task
from backtest.engine import CostSettings, config_from_options
from backtest.sweep import SweepAxis, grid

OPTIMIZERS = ("grid", "optuna")
# The figures kept per window in a split search (in-sample and out-of-sample columns).
SPLIT_METRICS = ("net_pnl", "return_pct", "cagr_pct", "sharpe", "sortino", "calmar", "profit_factor", "win_rate",
                 "max_drawdown", "max_drawdown_pct", "trades", "expectancy")
MIN_WINDOW_BARS = 10


def minimises(metric: str) -> bool:
    return metric in ("max_drawdown", "max_drawdown_pct")


def metric_value(metrics: dict[str, Any], metric: str) -> float | None:
    v = metrics.get(metric)
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


# ---------------------------------------------------------------------------------------------
# windows
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Window:
    lo: int
    hi: int
    start: str  # first bar's start, ISO UTC
    end: str  # last bar's end

    @property
    def bars(self) -> int:
        return self.hi - self.lo


@dataclass(frozen=True, slots=True)
class Fold:
    number: int
    train: Window
    test: Window | None


def _window(data: MarketData, lo: int, hi: int) -> Window:
    b = data.bars
    return Window(lo, hi, utc_iso(int(b.start_ns[lo])), utc_iso(int(b.end_ns[hi - 1])))


def make_folds(data: MarketData, calendar: str | None, *, train_fraction: float | None = None,
               walk_forward: int | None = None, anchored: bool = False) -> list[Fold]:
    """The windows of the search (see the module docstring); cuts fall on session starts."""
    from backtest.statistics import session_labels

    n = len(data.bars)
    if n == 0:
        raise DataError("no bars to search on")
    if train_fraction is not None and walk_forward is not None:
        raise DataError("give either a train fraction or walk-forward folds, not both")
    if train_fraction is None and walk_forward is None:
        return [Fold(1, _window(data, 0, n), None)]
    labels, _ = session_labels(data.bars.end_ns, calendar)
    session_starts = np.concatenate(([0], np.flatnonzero(labels[1:] != labels[:-1]) + 1))

    def snap(target: float) -> int:
        """The session start nearest to bar `target` (a bar index when there is one session)."""
        if session_starts.size < 2:
            return int(round(target))
        k = int(np.argmin(np.abs(session_starts - target)))
        return int(session_starts[k])

    if train_fraction is not None:
        if not 0 < train_fraction < 1:
            raise DataError("--train-fraction must be between 0 and 1 (exclusive)")
        cuts = [0, snap(n * train_fraction), n]
    else:
        assert walk_forward is not None
        if walk_forward < 1:
            raise DataError("--walk-forward needs at least 1 fold")
        cuts = [0] + [snap(n * j / (walk_forward + 1)) for j in range(1, walk_forward + 1)] + [n]
    if any(b - a < MIN_WINDOW_BARS for a, b in zip(cuts, cuts[1:])):
        raise DataError(f"the split leaves a window with fewer than {MIN_WINDOW_BARS} bars "
                        f"({n} bars, {session_starts.size} sessions): use fewer folds or a longer range")
    folds = []
    for j in range(1, len(cuts) - 1):
        lo = 0 if anchored or train_fraction is not None else cuts[j - 1]
        folds.append(Fold(j, _window(data, lo, cuts[j]), _window(data, cuts[j], cuts[j + 1])))
    return folds


# ---------------------------------------------------------------------------------------------
# search
# ---------------------------------------------------------------------------------------------

@dataclass
class SearchResult:
    rows: list[dict[str, Any]]  # ranked, best first
    folds: list[dict[str, Any]]
    overfitting: dict[str, Any] | None
    points: int  # candidates run (per fold for optuna)
    skipped: int  # invalid parameter combinations
    columns: list[str] = field(default_factory=list)


def _split_row(params: dict[str, Any], train: dict[str, Any], test: dict[str, Any] | None) -> dict[str, Any]:
    row = dict(params)
    for k in SPLIT_METRICS:
        row[f"is_{k}"] = train.get(k)
        row[f"oos_{k}"] = test.get(k) if test is not None else None
    return row


def _mean(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return float(np.mean(got)) if got else None


def rank_rows(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Best first by `key` (drawdowns ascending); None last; ties keep their order."""
    lower = minimises(key.removeprefix("is_").removeprefix("oos_"))

    def sort_key(row: dict[str, Any]) -> tuple[int, float]:
        v = row.get(key)
        if v is None or not math.isfinite(float(v)):
            return (1, 0.0)
        return (0, float(v) if lower else -float(v))

    return [{"rank": i, **r} for i, r in enumerate(sorted(rows, key=sort_key), 1)]


def _overfitting(rows: Sequence[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    pairs = [(r[f"is_{metric}"], r[f"oos_{metric}"]) for r in rows
             if r.get(f"is_{metric}") is not None and r.get(f"oos_{metric}") is not None]
    if not pairs:
        return None
    import pandas as pd

    frame = pd.DataFrame(pairs, columns=["is", "oos"], dtype=float)
    rho = frame["is"].corr(frame["oos"], method="spearman") if len(frame) >= 3 else math.nan
    best = rows[0]  # ranked by in-sample
    lower = minimises(metric)
    oos_sorted = sorted((float(v) for _, v in pairs), reverse=not lower)
    best_oos = best.get(f"oos_{metric}")
    return {
        "candidates": len(pairs),
        "rank_correlation_is_oos": None if not math.isfinite(rho) else round(float(rho), 4),
        "best_in_sample": {k: v for k, v in best.items() if not k.startswith(("is_", "oos_", "rank"))},
        "best_in_sample_is": best.get(f"is_{metric}"),
        "best_in_sample_oos": best_oos,
        "best_in_sample_oos_rank": None if best_oos is None else oos_sorted.index(float(best_oos)) + 1,
        "best_out_of_sample": oos_sorted[0],
    }


def run_grid(options: dict[str, Any], axes: Sequence[SweepAxis], costs: CostSettings, folds: Sequence[Fold],
             executor: Executor, rank_by: str, on_done: ProgressCallback | None = None) -> SearchResult:
    points, skipped = grid(options, axes)
    if not points:
        raise DataError(f"--sweep: none of the {skipped} parameter combinations is valid")
    split = folds[0].test is not None
    tasks: list[Task] = []
    for _, cfg in points:
        for f in folds:
            tasks.append(Task(cfg, costs, f.train.lo, f.train.hi))
            if f.test is not None:
                tasks.append(Task(cfg, costs, f.test.lo, f.test.hi))
    results = iter(executor.map(tasks, on_done))
    names = [a.name for a in axes]
    if not split:
        rows = [{**params, **next(results)} for params, _ in points]
        return SearchResult(rank_rows(rows, rank_by), [], None, len(points), skipped)

    per_fold: list[list[dict[str, Any]]] = [[] for _ in folds]  # fold -> rows (one per point)
    rows = []
    for params, _ in points:
        fold_rows = []
        for k, _f in enumerate(folds):
            row = _split_row(params, next(results), next(results))
            per_fold[k].append(row)
            fold_rows.append(row)
        if len(folds) == 1:
            rows.append(fold_rows[0])
        else:  # the mean over the folds
            merged = dict(params)
            for key in SPLIT_METRICS:
                for side in ("is", "oos"):
                    merged[f"{side}_{key}"] = _mean([metric_value(r, f"{side}_{key}") for r in fold_rows])
            rows.append(merged)
    ranked = rank_rows(rows, f"is_{rank_by}")
    fold_docs = [_fold_doc(f, rank_rows(per_fold[k], f"is_{rank_by}")[0], names, rank_by)
                 for k, f in enumerate(folds)]
    return SearchResult(ranked, fold_docs, _overfitting(ranked, rank_by), len(points), skipped)


def _fold_doc(fold: Fold, best: dict[str, Any], names: Sequence[str], metric: str) -> dict[str, Any]:
    return {"fold": fold.number, "train_from": fold.train.start, "train_to": fold.train.end,
            "train_bars": fold.train.bars, "test_from": fold.test.start if fold.test else None,
            "test_to": fold.test.end if fold.test else None, "test_bars": fold.test.bars if fold.test else 0,
            "best": {n: best.get(n) for n in names}, "is_value": best.get(f"is_{metric}"),
            "oos_value": best.get(f"oos_{metric}"), "oos_net_pnl": best.get("oos_net_pnl")}


# -- Optuna ---------------------------------------------------------------------------------------
def _suggest(trial: Any, axis: SweepAxis) -> Any:
    """An arithmetic axis (start:stop:step) is an int/float range with that step; a list is a
    categorical choice."""
    vals = axis.values
    if len(vals) >= 3:
        steps = {round(b - a, 10) for a, b in zip(vals, vals[1:])}
        if len(steps) == 1:
            step = steps.pop()
            if all(isinstance(v, int) for v in vals):
                return trial.suggest_int(axis.name, int(vals[0]), int(vals[-1]), step=int(step))
            digits = max(0, -int(math.floor(math.log10(abs(step))))) + 2 if step else 6
            return round(trial.suggest_float(axis.name, float(vals[0]), float(vals[-1]), step=float(step)), digits)
    return trial.suggest_categorical(axis.name, list(vals))


def run_optuna(options: dict[str, Any], axes: Sequence[SweepAxis], costs: CostSettings, folds: Sequence[Fold],
               executor: Executor, rank_by: str, *, trials: int, seed: int = 0,
               on_done: Callable[[int, int], None] | None = None) -> SearchResult:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = [a.name for a in axes]
    split = folds[0].test is not None
    direction = "minimize" if minimises(rank_by) else "maximize"
    total = trials * len(folds)
    done = 0
    rows: list[dict[str, Any]] = []
    fold_docs: list[dict[str, Any]] = []
    skipped = 0
    for fold in folds:
        study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed + fold.number))
        cache: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any] | None]] = {}
        fold_rows: list[dict[str, Any]] = []
        asked = 0
        while asked < trials:
            batch = []
            for _ in range(min(executor.slots, trials - asked)):
                trial = study.ask()
                params = {a.name: _suggest(trial, a) for a in axes}
                try:
                    cfg: TickerConfig | None = config_from_options({**options, **params})
                except TickerValidationError:
                    cfg = None
                batch.append((trial, params, cfg))
            asked += len(batch)
            todo: list[Task] = []
            keys: list[tuple[Any, ...]] = []
            for _, params, cfg in batch:
                key = tuple(params[n] for n in names)
                if cfg is None or key in cache or key in keys:
                    continue
                keys.append(key)
                todo.append(Task(cfg, costs, fold.train.lo, fold.train.hi))
                if fold.test is not None:
                    todo.append(Task(cfg, costs, fold.test.lo, fold.test.hi))
            results = iter(executor.map(todo) if todo else [])
            for key in keys:
                cache[key] = (next(results), next(results) if fold.test is not None else None)
            for trial, params, cfg in batch:
                done += 1
                if cfg is None:
                    skipped += 1
                    study.tell(trial, state=TrialState.PRUNED)
                    continue
                train, test = cache[tuple(params[n] for n in names)]
                value = metric_value(train, rank_by)
                if value is None:
                    study.tell(trial, state=TrialState.FAIL)
                else:
                    study.tell(trial, value)
                row = _split_row(params, train, test) if split else {**params, **train}
                fold_rows.append({"fold": fold.number, "trial": trial.number, **row})
            if on_done is not None:
                on_done(done, total)
        rows += fold_rows
        if split and fold_rows:
            best = rank_rows(fold_rows, f"is_{rank_by}")[0]
            fold_docs.append(_fold_doc(fold, best, names, rank_by))
    key = f"is_{rank_by}" if split else rank_by
    ranked = rank_rows(rows, key)
    over = _overfitting(ranked, rank_by) if split else None
    return SearchResult(ranked, fold_docs, over, trials, skipped)


def columns_for(names: Sequence[str], split: bool, optimizer: str, rank_by: str) -> list[str]:
    """sweep.csv's columns."""
    lead = ["rank"] + (["fold", "trial"] if optimizer == "optuna" else [])
    if not split:
        return lead + list(names) + ["net_pnl", "return_pct", "cagr_pct", "max_drawdown", "max_drawdown_pct", "sharpe",
                                     "sortino", "calmar", "win_rate", "profit_factor", "expectancy", "trades",
                                     "exposure_pct", "average_trade", "commission"]
    first = [f"is_{rank_by}", f"oos_{rank_by}"] if rank_by in SPLIT_METRICS else []
    rest = [f"{side}_{k}" for k in SPLIT_METRICS for side in ("is", "oos") if f"{side}_{k}" not in first]
    return lead + list(names) + first + rest
