"""Backtest jobs over the API: the job list (GET /api/backtest, newest first, paged, with the key
figures of finished jobs) from real jobs, each a `python -m backtest` child process."""
from __future__ import annotations

import math
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from backtest.jobs import BacktestJobs

EMA = {"strategy": "ema", "symbol": "/ES", "timeframe": "1Min", "trend_line_1": "EMA", "period_1": 3,
       "trend_line_2": "EMA", "period_2": 8}


def _wave_csv(path: Path, minutes: int) -> Path:
    """One-minute bars of a slow wave on the /ES tick, so that EMA 3/8 crosses a few times."""
    start = datetime(2024, 7, 2, 14, 0)
    lines = ["Date,Time,Open,High,Low,Close,Volume"]
    for i in range(minutes):
        t = start + timedelta(minutes=i)
        close = round((5000 + 20 * math.sin(i / 15)) * 4) / 4
        lines.append(f"{t:%Y-%m-%d},{t:%H:%M:%S},{close:.2f},{close + 1:.2f},{close - 1:.2f},{close:.2f},10")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def jobs(app: Flask, tmp_path: Path) -> Iterator[BacktestJobs]:
    runner = BacktestJobs(app.extensions["services"].store, out_root=tmp_path / "out", allowed_data_dirs=(tmp_path,))
    app.extensions["services"].backtests = runner
    _wave_csv(tmp_path / "wave.csv", 900)
    yield runner
    runner.shutdown()


def _finished(jobs: BacktestJobs, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (job := jobs.get(job_id)) is not None and job["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, f"job {job_id} did not finish"
        time.sleep(0.05)
    assert job is not None
    return job


def test_the_job_list_is_newest_first_paged_and_shows_the_key_figures(
        client: FlaskClient, admin_headers: dict[str, str], viewer_headers: dict[str, str],
        jobs: BacktestJobs, tmp_path: Path) -> None:
    empty = client.get("/api/backtest", headers=viewer_headers)
    assert empty.status_code == 200 and empty.json["jobs"] == [] and empty.json["total"] == 0
    assert client.get("/api/backtest").status_code == 401

    ok = client.post("/api/backtest", headers=admin_headers, json={**EMA, "data": ["wave.csv"]}).json["id"]
    failing = client.post("/api/backtest", headers=admin_headers,
                          json={**EMA, "data": ["wave.csv"], "from": "2031-01-01"}).json["id"]
    last = client.post("/api/backtest", headers=admin_headers,
                       json={**EMA, "period_1": 4, "data": ["wave.csv"]}).json["id"]
    done = {job_id: _finished(jobs, job_id) for job_id in (ok, failing, last)}

    page = client.get("/api/backtest", headers=viewer_headers).json
    assert [j["id"] for j in page["jobs"]] == [last, failing, ok]
    assert page["total"] == 3 and page["count"] == 3 and page["has_more"] is False
    newest, bad, first = page["jobs"]
    assert (first["status"], first["progress"], first["kind"]) == ("done", 1.0, "backtest")
    assert (first["strategy"], first["symbol"], first["timeframe"]) == ("ema", "/ES", "1Min")
    report = done[ok]["report"]["metrics"]
    assert first["metrics"]["net_pnl"] == report["net_pnl"] and first["metrics"]["trades"] == report["trades"] > 0
    assert first["submitted_at"] <= first["finished_at"]
    assert bad["status"] == "failed" and "no data" in bad["error"] and bad["metrics"] is None
    assert "report" not in newest and "request" not in newest  # a list line, not the whole job

    second = client.get("/api/backtest?offset=1&limit=1", headers=viewer_headers).json
    assert [j["id"] for j in second["jobs"]] == [failing] and second["has_more"] is True
    assert (second["offset"], second["limit"]) == (1, 1)
    assert client.get("/api/backtest?limit=0", headers=viewer_headers).status_code == 400

    # A job whose document expired (or was deleted) leaves the list, and the index forgets it.
    jobs.store.redis.delete(jobs.key(failing))
    page = client.get("/api/backtest", headers=viewer_headers).json
    assert [j["id"] for j in page["jobs"]] == [last, ok] and page["total"] == 2
