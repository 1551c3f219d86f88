"""Where the runs of a parameter search execute: the local cores (default) or a Dask cluster.

A task is one backtest of one candidate configuration on one window of the data (bars [lo, hi)),
answered with its metrics. Both executors answer in task order, so a search gives the same
results on either (tests/backtest/test_optimize.py runs one on a `distributed.LocalCluster`).

- `LocalExecutor`: worker processes (the engine is CPU-bound Python; threads would share one GIL),
  one per core by default. The loaded data is handed to each worker once, at start (inherited
  through fork, or pickled once per worker where processes are spawned), never per task.
- `DaskExecutor`: a Dask distributed scheduler at an address (`tcp://host:8786`). The data is
  scattered to every worker once (`broadcast=True`), so the workers need no access to the data
  files; they need this project importable (start them from the project directory with its
  virtualenv: `.venv/bin/dask worker tcp://host:8786`).
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, fields
from typing import Any, Callable, Protocol, Sequence

from domain.tickers import TickerConfig

from backtest.data import BarArrays, MarketData, TickArrays
from backtest.engine import BacktestEngine, CostSettings

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Task:
    config: TickerConfig
    costs: CostSettings
    lo: int  # bar window [lo, hi)
    hi: int


def window(data: MarketData, lo: int, hi: int) -> MarketData:
    """Bars [lo, hi) and the trades inside them."""
    bars = data.bars
    if lo == 0 and hi >= len(bars):
        return data
    sliced = BarArrays(*(getattr(bars, f.name)[lo:hi] for f in fields(BarArrays)))
    ticks = data.ticks
    if ticks is not None and len(sliced):
        import numpy as np

        a = int(np.searchsorted(ticks.ts_ns, sliced.start_ns[0], "left"))
        b = int(np.searchsorted(ticks.ts_ns, sliced.end_ns[-1], "left"))
        ticks = TickArrays(*(getattr(ticks, f.name)[a:b] for f in fields(TickArrays)))
    return MarketData(sliced, ticks, data.description, data.instrument, data.off_tick)  # a research instrument travels along


def evaluate(data: MarketData, task: Task) -> dict[str, Any]:
    """One candidate on one window: the report's scalar metrics. Risk rules are not applied in a
    search (as the grid sweep always did): candidates are compared on their signals and costs."""
    from backtest.report import metrics

    result = BacktestEngine(task.config, task.costs).run(window(data, task.lo, task.hi), record_bars=False)
    return metrics(result)


class Executor(Protocol):
    @property
    def slots(self) -> int:
        """How many tasks run at once (the batch size of an optimizer's ask/tell loop)."""

    def map(self, tasks: Sequence[Task], on_done: ProgressCallback | None = None) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


# -- local processes ------------------------------------------------------------------------------
_DATA: MarketData | None = None


def _init_worker(data: MarketData) -> None:
    global _DATA
    _DATA = data


def _run_local(task: Task) -> dict[str, Any]:
    assert _DATA is not None, "worker started without data"
    return evaluate(_DATA, task)


class LocalExecutor:
    def __init__(self, data: MarketData, workers: int) -> None:
        # Imported before the workers fork so each inherits it: empyrical pulls in scipy.stats,
        # about a second of import per process otherwise.
        import empyrical  # noqa: F401

        self._workers = max(1, workers)
        self._pool = ProcessPoolExecutor(max_workers=self._workers, initializer=_init_worker, initargs=(data,))

    @property
    def slots(self) -> int:
        return self._workers

    def map(self, tasks: Sequence[Task], on_done: ProgressCallback | None = None) -> list[dict[str, Any]]:
        futures = {self._pool.submit(_run_local, t): k for k, t in enumerate(tasks)}
        out: list[dict[str, Any] | None] = [None] * len(tasks)
        for done, fut in enumerate(as_completed(futures), 1):
            out[futures[fut]] = fut.result()
            if on_done is not None:
                on_done(done, len(tasks))
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# -- Dask distributed ---------------------------------------------------------------------------
def _run_dask(task: Task, data: MarketData) -> dict[str, Any]:
    return evaluate(data, task)


class DaskExecutor:
    def __init__(self, data: MarketData, address: str, *, timeout_s: float = 30.0) -> None:
        from distributed import Client

        self._client = Client(address, timeout=timeout_s, set_as_default=False)
        try:
            self._data = self._client.scatter(data, broadcast=True, hash=False)
            self._slots = max(1, sum(self._client.nthreads().values()))
        except BaseException:
            self._client.close()
            raise

    @property
    def slots(self) -> int:
        return self._slots

    def map(self, tasks: Sequence[Task], on_done: ProgressCallback | None = None) -> list[dict[str, Any]]:
        futures = [self._client.submit(_run_dask, t, self._data, pure=False) for t in tasks]
        out: list[dict[str, Any]] = []
        try:
            for done, fut in enumerate(futures, 1):  # in task order; all of them run meanwhile
                out.append(fut.result())
                if on_done is not None:
                    on_done(done, len(tasks))
        finally:
            for fut in futures:
                fut.release()
        return out

    def close(self) -> None:
        self._client.close()


def make_executor(data: MarketData, workers: int, cluster: str | None) -> Executor:
    if cluster:
        return DaskExecutor(data, cluster)
    return LocalExecutor(data, workers)
