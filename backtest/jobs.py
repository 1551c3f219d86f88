"""Backtests as background jobs for the API, without slowing live strategies.

Each job runs `python -m backtest` in a child process started with `os.nice(+10)`: the CPU-bound
loop gets its own interpreter (no GIL contention with the strategy threads of the live process)
and the kernel schedules it after them. A bounded pool (`max_workers`, default 1) limits how
many run at once and `max_queued` how many may wait, so a burst of requests cannot eat the box.

Job documents live in Redis at `store.key("backtest", id)` (a hash: status, progress, submitted /
started / finished times, request, report JSON, error), with a TTL, so any web worker can answer
GET /api/backtest/<id> and results survive a web restart. A sorted set at
`store.key("backtest_jobs")` (id -> submission time) lists them newest first for GET /api/backtest;
an entry older than the TTL, or whose hash is gone, is dropped when the list is read. A job found "running" after the
process that ran it died is reported as such until its TTL; it is never re-run silently.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from domain.parsing import NumberError, ParseError, parse_bool, parse_decimal, parse_int
from domain.tickers import StrategyName, TickerValidationError
from store.redis_store import Store
from strategies import STRATEGY_CLASSES

from backtest.data import DataError, parse_when
from backtest.engine import config_from_options

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
JOB_TTL_SECONDS = 7 * 24 * 3600
MAX_DATA_FILES = 20
MAX_COMMISSION = 1_000  # per contract, USD: beyond any broker's fee, so a typo is caught
# What GET /api/backtest/<id>/results hands a browser of a finished job's files: the equity curve
# thinned to this many points, the last trades and the last bars (with the strategy's lines).
RESULT_POINTS = 1_500
RESULT_TRADES = 1_000
RESULT_BARS = 400
MAX_LIST = 200  # jobs per page of GET /api/backtest
# The figures of a finished backtest the job list shows (report.json's metrics).
LIST_METRICS = ("net_pnl", "return_pct", "max_drawdown", "max_drawdown_pct", "sharpe", "win_rate", "profit_factor",
                "trades")
STRATEGY_FIELDS = ("strategy", "symbol", "timeframe", "trend_line_1", "period_1", "trend_line_2", "period_2",
                   "stop_loss_ticks", "stop_loss_atr", "atr_period", "multiplier", "trailing_stop_atr",
                   "take_profit_atr")
# A symbol outside the catalog: its properties (backtest/instruments.py); a flag field is a CLI switch.
_INSTRUMENT_FIELDS = ("tick_size", "contract_multiplier", "calendar")
_FLAG_FIELDS = ("allow_off_tick",)
# A parameter search: the CLI's --sweep, --optimizer, --trials, --seed, --train-fraction,
# --walk-forward, --anchored and --rank-by, run by the same `python -m backtest` path.
SEARCH_FIELDS = ("sweep", "optimizer", "trials", "seed", "train_fraction", "walk_forward", "anchored", "rank_by")
# One job must not occupy the (single, niced) job slot for hours: at most this many candidates
# (grid points before invalid ones are skipped, or Optuna trials) and walk-forward folds.
MAX_SEARCH_CANDIDATES = 500
MAX_WALK_FORWARD_FOLDS = 10
MAX_SEARCH_ROWS = MAX_SEARCH_CANDIDATES * MAX_WALK_FORWARD_FOLDS  # optuna ranks the candidates of every fold
_ALLOWED_FIELDS = frozenset(STRATEGY_FIELDS) | {"data", "from", "to", "quantity", "commission", "slippage_ticks",
                                                "instrument", "tz", "bar_time", *_INSTRUMENT_FIELDS, *_FLAG_FIELDS,
                                                *SEARCH_FIELDS}


class JobValidationError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class JobsBusyError(RuntimeError):
    """Too many jobs waiting; try later."""


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A validated request, ready to become CLI arguments."""

    fields: dict[str, Any]  # strategy fields as given (validated through TickerConfig.from_payload)
    data: tuple[Path, ...]
    start: str | None
    end: str | None
    quantity: int
    commission: str
    slippage_ticks: int
    extra: dict[str, str]
    search: dict[str, Any] = field(default_factory=dict)  # SEARCH_FIELDS given; empty: one backtest

    def to_json(self) -> dict[str, Any]:
        return {**self.fields, "data": [str(p) for p in self.data], "from": self.start, "to": self.end,
                "quantity": self.quantity, "commission": self.commission, "slippage_ticks": self.slippage_ticks,
                **self.extra, **self.search}

    def cli_args(self) -> list[str]:
        args: list[str] = []
        for name, value in self.fields.items():
            if value is not None:
                args += [f"--{name.replace('_', '-')}", str(value)]
        args += ["--data", *(str(p) for p in self.data)]
        if self.start:
            args += ["--from", self.start]
        if self.end:
            args += ["--to", self.end]
        args += ["--quantity", str(self.quantity), "--commission", self.commission,
                 "--slippage-ticks", str(self.slippage_ticks)]
        for name, value in self.extra.items():
            if name in _FLAG_FIELDS:
                args += [f"--{name.replace('_', '-')}"] if value == "true" else []
            else:
                args += [f"--{name.replace('_', '-')}", value]
        for name, value in self.search.items():
            if name == "sweep":
                args += ["--sweep", *value]
            elif name == "anchored":
                args += ["--anchored"] if value else []
            else:
                args += [f"--{name.replace('_', '-')}", str(value)]
        return args


def validate_request(payload: Any, allowed_dirs: Sequence[Path]) -> JobRequest:
    """The same checks as the CLI, as (field, message) errors for a 400 answer."""
    if not isinstance(payload, Mapping):
        raise JobValidationError("body", "must be a JSON object")
    unknown = sorted(set(payload) - _ALLOWED_FIELDS)
    if unknown:
        raise JobValidationError(unknown[0], "is not a backtest field")
    quantity = _whole(payload, "quantity", 1, 1, 10_000)
    fields = {k: payload.get(k) for k in STRATEGY_FIELDS if payload.get(k) is not None}
    research = _research_instrument(payload)
    # A symbol outside the catalog is validated with a catalog stand-in of its kind (the job's own
    # process registers the research instrument; this, the trading service's, never does).
    stand_in = ({"symbol": "/MES" if str(research.symbol).startswith("/") else "NVDA"} if research is not None else {})
    try:
        config_from_options({**fields, **stand_in, "quantity": quantity})
    except TickerValidationError as exc:
        raise JobValidationError(exc.field, exc.message) from None
    try:
        commission = str(parse_decimal(payload.get("commission", "0"), 0, MAX_COMMISSION))
    except NumberError as exc:
        raise JobValidationError("commission", exc.message) from None
    slippage = _whole(payload, "slippage_ticks", 0, 0, 1000)
    data = _data_paths(payload.get("data"), allowed_dirs)
    start, end = payload.get("from"), payload.get("to")
    tz = payload.get("tz", "UTC")
    for name, value in (("from", start), ("to", end)):
        if value is not None:
            if not isinstance(value, str):
                raise JobValidationError(name, "must be an ISO date/time string")
            try:
                parse_when(value, tz if isinstance(tz, str) else "UTC")
            except DataError as exc:
                raise JobValidationError(name, str(exc)) from None
    if start and end and parse_when(end) <= parse_when(start):
        raise JobValidationError("to", "must be after from")
    extra: dict[str, str] = {}
    for name in ("instrument", "tz", "bar_time"):
        value = payload.get(name)
        if value is not None:
            if not isinstance(value, str) or not value.strip() or len(value) > 40:
                raise JobValidationError(name, "must be a short string")
            extra[name] = value.strip()
    if extra.get("bar_time") not in (None, "start", "end"):
        raise JobValidationError("bar_time", "must be start or end")
    for name in _INSTRUMENT_FIELDS:
        if payload.get(name) is not None:
            extra[name] = str(payload[name]).strip()
    for name in _FLAG_FIELDS:
        value = payload.get(name)
        if value is not None:
            try:
                extra[name] = "true" if parse_bool(value) else "false"
            except ParseError:
                raise JobValidationError(name, "must be true or false") from None
    return JobRequest(fields, data, start, end, quantity, commission, slippage, extra, _search(payload))


def _search(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The search options, checked as the CLI checks them (its own axis parser and rank keys) and
    bounded (MAX_SEARCH_CANDIDATES, MAX_WALK_FORWARD_FOLDS); empty when no `sweep` is given."""
    from backtest.sweep import RANK_KEYS, SWEEPABLE, parse_axis

    given = {name: payload[name] for name in SEARCH_FIELDS if payload.get(name) is not None}
    if not given:
        return {}
    raw = given.get("sweep")
    if raw is None:
        raise JobValidationError(next(iter(given)), "needs sweep (the parameter axes to search)")
    if isinstance(raw, str):
        raw = raw.split()
    if not isinstance(raw, list) or not raw or len(raw) > len(SWEEPABLE):
        raise JobValidationError("sweep", f"must be a list of 1 to {len(SWEEPABLE)} axes like period_1=5:20:1")
    axes = []
    for item in raw:
        if not isinstance(item, str) or not item.strip() or len(item) > 200:
            raise JobValidationError("sweep", "each axis must be a string like period_1=5:20:1 or multiplier=2,2.5,3")
        try:
            axes.append(parse_axis(item.strip()))
        except DataError as exc:
            raise JobValidationError("sweep", str(exc)) from None
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise JobValidationError("sweep", "an axis is given twice")
    out: dict[str, Any] = {"sweep": [item.strip() for item in raw]}
    optimizer = given.get("optimizer", "grid")
    if optimizer not in ("grid", "optuna"):
        raise JobValidationError("optimizer", "must be grid or optuna")
    out["optimizer"] = optimizer
    if optimizer == "grid":
        for name in ("trials", "seed"):
            if name in given:
                raise JobValidationError(name, "is for optimizer optuna")
        candidates = 1
        for axis in axes:
            candidates *= len(axis.values)
        if candidates > MAX_SEARCH_CANDIDATES:
            raise JobValidationError("sweep", f"spans {candidates} grid points; at most {MAX_SEARCH_CANDIDATES} "
                                              "(narrow the axes, or use optimizer optuna with trials)")
    else:
        out["trials"] = _whole(given, "trials", 100, 1, MAX_SEARCH_CANDIDATES)
        out["seed"] = _whole(given, "seed", 0, 0, 2**31 - 1)
    rank_by = given.get("rank_by", "net_pnl")
    if rank_by not in RANK_KEYS:
        raise JobValidationError("rank_by", f"must be one of {', '.join(RANK_KEYS)}")
    out["rank_by"] = rank_by
    if "train_fraction" in given and "walk_forward" in given:
        raise JobValidationError("walk_forward", "give either train_fraction or walk_forward, not both")
    if "train_fraction" in given:
        try:
            fraction = float(parse_decimal(given["train_fraction"], 0, 1))
        except NumberError as exc:
            raise JobValidationError("train_fraction", exc.message) from None
        if not 0 < fraction < 1:
            raise JobValidationError("train_fraction", "must be between 0 and 1 (exclusive), e.g. 0.7")
        out["train_fraction"] = fraction
    if "walk_forward" in given:
        out["walk_forward"] = _whole(given, "walk_forward", 1, 1, MAX_WALK_FORWARD_FOLDS)
    if "anchored" in given:
        try:
            anchored = parse_bool(given["anchored"])
        except ParseError:
            raise JobValidationError("anchored", "must be true or false") from None
        if anchored and "walk_forward" not in out:
            raise JobValidationError("anchored", "is for walk_forward")
        out["anchored"] = anchored
    return out


def _research_instrument(payload: Mapping[str, Any]) -> Any:
    """The research instrument the fields describe (None for a catalog symbol), validated as the
    CLI does; nothing is registered here."""
    from backtest.instruments import InstrumentError, research_instrument

    raw = {name: payload.get(name) for name in _INSTRUMENT_FIELDS}
    for name, value in raw.items():
        if value is not None and (not isinstance(value, (str, int, float)) or isinstance(value, bool)
                                  or len(str(value)) > 40):
            raise JobValidationError(name, "must be a short string or number")
    symbol = payload.get("symbol")
    if not isinstance(symbol, str):
        return None  # the strategy validation answers for the symbol
    try:
        return research_instrument(symbol, *(None if v is None else str(v).strip() for v in raw.values()))
    except InstrumentError as exc:
        text = str(exc)
        field = next((n for n in _INSTRUMENT_FIELDS if f"--{n.replace('_', '-')}" in text.split(":")[0]), "symbol")
        raise JobValidationError(field, text) from None


def _whole(payload: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    try:
        return parse_int(payload.get(name, default), lo, hi)
    except NumberError as exc:
        raise JobValidationError(name, exc.message) from None


def _data_paths(raw: Any, allowed_dirs: Sequence[Path]) -> tuple[Path, ...]:
    """Existing regular files under an allowed data directory only: the API must not become a
    way to read arbitrary files from the server (symlinks and '..' are resolved first)."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_DATA_FILES:
        raise JobValidationError("data", f"must be a list of 1 to {MAX_DATA_FILES} data file paths")
    roots = [d.resolve() for d in allowed_dirs]
    out: list[Path] = []
    for item in raw:
        if not isinstance(item, str) or not item.strip() or "\x00" in item:
            raise JobValidationError("data", "each entry must be a file path string")
        candidate = Path(item)
        resolved = (candidate if candidate.is_absolute() else (roots[0] if roots else ROOT) / candidate).resolve()
        if not any(resolved.is_relative_to(r) for r in roots):
            raise JobValidationError("data", f"{item[:80]!r} is outside the allowed data directories")
        if not resolved.is_file():
            raise JobValidationError("data", f"{item[:80]!r} does not exist or is not a file")
        out.append(resolved)
    return tuple(out)


def _lower_priority() -> None:  # runs in the child between fork and exec
    try:
        os.nice(10)
    except OSError:
        pass


class BacktestJobs:
    def __init__(
        self,
        store: Store,
        max_workers: int = 1,
        *,
        out_root: Path = ROOT / "backtest_out",
        allowed_data_dirs: Sequence[Path] = (ROOT.parent / "shared" / "data", ROOT / "data"),
        max_queued: int = 20,
        python: str = sys.executable,
        timeout_s: float = 3600.0,
    ) -> None:
        self.store = store
        self.out_root = out_root
        self.allowed_data_dirs = tuple(allowed_data_dirs)
        self.max_queued = max_queued
        self.python = python
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="backtest-job")
        self._pending = 0
        self._lock = threading.Lock()

    def key(self, job_id: str) -> str:
        return self.store.key("backtest", job_id)

    @property
    def index_key(self) -> str:  # not under "backtest:": a job id could never name it
        return self.store.key("backtest_jobs")

    def validate(self, payload: Any) -> JobRequest:
        return validate_request(payload, self.allowed_data_dirs)

    def submit(self, request: JobRequest) -> str:
        with self._lock:
            if self._pending >= self.max_queued:
                raise JobsBusyError(f"{self._pending} backtests already queued or running; try again later")
            self._pending += 1
        job_id = uuid.uuid4().hex[:16]
        self._save(job_id, status="queued", progress="0", submitted_at=_now(), request=json.dumps(request.to_json()))
        self.store.redis.zadd(self.index_key, {job_id: time.time()})
        try:
            self._pool.submit(self._run, job_id, request)
        except RuntimeError:  # pool shut down
            with self._lock:
                self._pending -= 1
            self._save(job_id, status="failed", error="the job runner is shutting down", finished_at=_now())
        return job_id

    def get(self, job_id: str) -> dict[str, Any] | None:
        if not job_id.isalnum() or len(job_id) > 32:
            return None
        raw = self.store.redis.hgetall(self.key(job_id))
        if not raw:
            return None
        doc: dict[str, Any] = {"id": job_id, "status": raw.get("status"), "progress": float(raw.get("progress", 0))}
        for name in ("submitted_at", "started_at", "finished_at", "error", "out_dir"):
            if raw.get(name):
                doc[name] = raw[name]
        doc["request"] = json.loads(raw["request"]) if raw.get("request") else None
        doc["report"] = json.loads(raw["report"]) if raw.get("report") else None
        doc["kind"] = "sweep" if (doc["request"] or {}).get("sweep") else "backtest"
        doc["sweep"] = json.loads(raw["sweep"]) if raw.get("sweep") else None
        return doc

    def list_jobs(self, offset: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int, bool]:
        """A page of job summaries, newest first (see `summary`), the number of jobs kept and
        whether another page follows."""
        redis = self.store.redis
        redis.zremrangebyscore(self.index_key, "-inf", time.time() - JOB_TTL_SECONDS)
        ids = redis.zrevrange(self.index_key, offset, offset + limit)  # one extra id tells has_more
        pipe = redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.key(job_id))
        raws = pipe.execute() if ids else []
        gone = [job_id for job_id, raw in zip(ids, raws) if not raw]
        if gone:  # expired or deleted: the index forgets them too
            redis.zrem(self.index_key, *gone)
        page = [summary(job_id, raw) for job_id, raw in zip(ids, raws) if raw]
        has_more = len(page) > limit
        return page[:limit], int(redis.zcard(self.index_key)), has_more

    def results(self, job_id: str) -> dict[str, Any] | None:
        """A finished job's series from its output files (equity.csv, trades.csv, bars.csv) for
        charts: None for an unknown job or one not done (or whose files are gone). The equity
        curve is thinned evenly to RESULT_POINTS (its last point kept); trades and bars are the
        last RESULT_TRADES / RESULT_BARS, bars with only the strategy's price lines."""
        job = self.get(job_id)
        if job is None or job["status"] != "done" or not job.get("out_dir"):
            return None
        out = Path(job["out_dir"])
        if not (out / "equity.csv").is_file():
            return None
        equity = _read_csv(out / "equity.csv")
        thinned = equity
        if len(equity) > RESULT_POINTS:  # every step-th point, then the last one
            step = -(-(len(equity) - 1) // (RESULT_POINTS - 1))
            thinned = equity[:-1:step] + [equity[-1]]
        trades = _read_csv(out / "trades.csv")
        bars = _read_csv(out / "bars.csv")[-RESULT_BARS:]
        strategy = (job.get("report") or {}).get("strategy")
        names = STRATEGY_CLASSES[StrategyName(strategy)].price_lines if strategy else ()
        lines = [name for name in names if bars and name in bars[0]]
        keep = ("start", "end", "open", "high", "low", "close", "volume", "position", "signal", *lines)
        return {"equity": [{k: row[k] for k in ("time", "equity", "drawdown")} for row in thinned],
                "trades": trades[-RESULT_TRADES:], "trades_total": len(trades), "lines": lines,
                "bars": [{k: row.get(k, "") for k in keep} for row in bars]}

    def report_html(self, job_id: str) -> Path | None:
        """A finished job's report.html (the self-contained page `python -m backtest` writes), or
        None for an unknown job, one not done, or one whose files are gone. Only a file inside
        this runner's output directory is ever handed out."""
        job = self.get(job_id)
        if job is None or job["status"] != "done" or not job.get("out_dir"):
            return None
        page = (Path(job["out_dir"]) / "report.html").resolve()
        if not page.is_relative_to(self.out_root.resolve()) or not page.is_file():
            return None
        return page

    def sweep(self, job_id: str) -> dict[str, Any] | None:
        """A finished search's sweep.json (ranked candidates, folds, overfitting, params and
        columns), or None for an unknown job, one not done, not a search, or whose files are gone."""
        page = self._output(job_id, "sweep.json")
        return json.loads(page.read_text()) if page is not None else None

    def sweep_html(self, job_id: str) -> Path | None:
        """A finished search's sweep.html (ranked table and parameter heatmaps), as report_html."""
        return self._output(job_id, "sweep.html")

    def _output(self, job_id: str, name: str) -> Path | None:
        """A file of a finished job's output directory; only a file inside this runner's output
        directory is ever handed out."""
        job = self.get(job_id)
        if job is None or job["status"] != "done" or not job.get("out_dir"):
            return None
        path = (Path(job["out_dir"]) / name).resolve()
        if not path.is_relative_to(self.out_root.resolve()) or not path.is_file():
            return None
        return path

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)

    # ------------------------------------------------------------------------------------------
    def _save(self, job_id: str, **fields: str) -> None:
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.hset(self.key(job_id), mapping=fields)
        pipe.expire(self.key(job_id), JOB_TTL_SECONDS)
        pipe.execute()

    def _run(self, job_id: str, request: JobRequest) -> None:
        try:
            self._execute(job_id, request)
        except Exception as exc:  # a job must always end in a terminal state
            log.exception("backtest job %s crashed", job_id)
            self._save(job_id, status="failed", error=f"{exc.__class__.__name__}: {exc}"[:500], finished_at=_now())
        finally:
            with self._lock:
                self._pending -= 1

    def _execute(self, job_id: str, request: JobRequest) -> None:
        self.out_root.mkdir(parents=True, exist_ok=True)
        out = self.out_root / job_id
        # --bars-out: the console draws a finished job's last bars with the strategy's lines.
        cmd = [self.python, "-m", "backtest", *request.cli_args(), "--out", str(out), "--progress", "json",
               "--workers", "1", *([] if request.search else ["--bars-out"])]
        self._save(job_id, status="running", started_at=_now())
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, preexec_fn=_lower_priority)
        deadline = time.monotonic() + self.timeout_s
        last_line = ""
        last_saved = 0.0
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                try:
                    progress = float(json.loads(line)["progress"])
                except (ValueError, KeyError, TypeError):
                    last_line = line
                    continue
                now = time.monotonic()
                if now - last_saved > 0.2 or progress >= 1.0:  # throttle Redis writes
                    self._save(job_id, progress=str(progress))
                    last_saved = now
            else:
                last_line = line
            if time.monotonic() > deadline:
                proc.kill()
                last_line = f"error: timed out after {self.timeout_s:.0f} s"
                break
        rc = proc.wait()
        if proc.stdout is not None:
            proc.stdout.read()
        if rc == 0 and request.search and (out / "sweep.json").is_file():
            found = json.loads((out / "sweep.json").read_text())
            # The job keeps the search's summary and its best candidate; the ranked list stays in
            # the file (GET /api/backtest/<id>/sweep).
            brief = {k: v for k, v in found.items() if k != "results"} | {
                "candidates": len(found.get("results") or []),
                "best": (found.get("results") or [None])[0]}
            self._save(job_id, status="done", progress="1", sweep=json.dumps(brief, default=str), out_dir=str(out),
                       finished_at=_now())
        elif rc == 0 and (out / "report.json").is_file():
            report = (out / "report.json").read_text()
            self._save(job_id, status="done", progress="1", report=report, out_dir=str(out), finished_at=_now())
        else:
            shutil.rmtree(out, ignore_errors=True)
            error = last_line.removeprefix("error: ") or f"backtest exited with status {rc}"
            self._save(job_id, status="failed", error=error[:500], finished_at=_now())


def summary(job_id: str, raw: Mapping[str, str]) -> dict[str, Any]:
    """One line of the job list: what was run, how far it is, and the key figures once done."""
    try:
        request = json.loads(raw.get("request") or "{}")
    except ValueError:
        request = {}
    doc: dict[str, Any] = {"id": job_id, "status": raw.get("status"), "progress": float(raw.get("progress", 0) or 0),
                           "kind": "sweep" if request.get("sweep") else "backtest"}
    for name in ("submitted_at", "started_at", "finished_at", "error"):
        if raw.get(name):
            doc[name] = raw[name]
    for name in ("strategy", "symbol", "timeframe", "from", "to"):
        doc[name] = request.get(name)
    doc["metrics"] = None
    if raw.get("sweep"):
        try:
            found = json.loads(raw["sweep"])
        except ValueError:
            found = {}
        doc["search"] = {k: found.get(k) for k in ("optimizer", "rank_by", "split", "points", "candidates", "best")}
    if raw.get("report"):
        try:
            metrics = json.loads(raw["report"]).get("metrics") or {}
        except (ValueError, AttributeError):
            metrics = {}
        doc["metrics"] = {k: metrics[k] for k in LIST_METRICS if k in metrics}
    return doc


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
