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


# ---------------------------------------------------------------------------- parameter search
SEARCH = {"sweep": ["period_1=3:5:1", "period_2=8:12:2"], "train_fraction": 0.6, "rank_by": "net_pnl"}


def test_a_search_job_runs_the_clis_search_and_links_its_ranking_and_page(
        client: FlaskClient, admin_headers: dict[str, str], viewer_headers: dict[str, str],
        jobs: BacktestJobs, tmp_path: Path) -> None:
    from backtest.__main__ import main as cli

    submitted = client.post("/api/backtest", headers=admin_headers, json={**EMA, "data": ["wave.csv"], **SEARCH})
    assert submitted.status_code == 202, submitted.json
    job_id = submitted.json["id"]
    job = _finished(jobs, job_id)
    assert job["status"] == "done", job.get("error")

    reply = client.get(f"/api/backtest/{job_id}", headers=viewer_headers).json
    assert reply["kind"] == "sweep" and reply["report"] is None and reply["report_url"] is None
    assert reply["sweep_url"] == f"/api/backtest/{job_id}/sweep"
    assert reply["sweep_html_url"] == f"/api/backtest/{job_id}/sweep.html"
    assert reply["sweep"]["candidates"] == 9 and reply["sweep"]["best"]["rank"] == 1
    assert reply["sweep"]["split"] == "train 0.6 / test 0.4"

    ranked = client.get(reply["sweep_url"], headers=viewer_headers)
    assert ranked.status_code == 200, ranked.json
    body = ranked.json
    assert body["params"] == ["period_1", "period_2"] and body["rank_by"] == "net_pnl"
    assert [row["rank"] for row in body["results"]] == list(range(1, 10))
    assert {"is_net_pnl", "oos_net_pnl"} <= set(body["columns"]) and body["overfitting"] is not None
    # The same search from the CLI ranks the same candidates with the same figures: one code path.
    assert cli(["--strategy", "ema", "--symbol", "/ES", "--timeframe", "1Min", "--trend-line-1", "EMA",
                "--period-1", "3", "--trend-line-2", "EMA", "--period-2", "8", "--data", str(tmp_path / "wave.csv"),
                "--out", str(tmp_path / "cli"), "--sweep", "period_1=3:5:1", "period_2=8:12:2",
                "--train-fraction", "0.6", "--rank-by", "net_pnl", "--workers", "1", "--progress", "none"]) == 0
    import json
    from_cli = json.loads((tmp_path / "cli" / "sweep.json").read_text())["results"]
    assert body["results"] == json.loads(json.dumps(from_cli, default=str))

    page = client.get(reply["sweep_html_url"], headers=viewer_headers)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page.headers["Content-Disposition"] == f"attachment; filename=backtest-{job_id}-sweep.html"
    assert client.get(f"/api/backtest/{job_id}/results", headers=viewer_headers).status_code == 404
    listed = client.get("/api/backtest", headers=viewer_headers).json["jobs"][0]
    assert listed["kind"] == "sweep" and listed["search"]["best"]["rank"] == 1

    # A plain backtest job has no ranking.
    plain = client.post("/api/backtest", headers=admin_headers, json={**EMA, "data": ["wave.csv"]}).json["id"]
    assert _finished(jobs, plain)["status"] == "done"
    assert client.get(f"/api/backtest/{plain}/sweep", headers=viewer_headers).status_code == 404
    assert client.get(f"/api/backtest/{plain}/sweep.html", headers=viewer_headers).status_code == 404


@pytest.mark.parametrize(("extra", "field", "phrase"), [
    ({"sweep": ["period_1=1:30:1", "period_2=31:50:1"]}, "sweep", "600 grid points; at most 500"),
    ({"sweep": ["period_1=3:5"], "optimizer": "optuna", "trials": 501}, "trials", ""),
    ({"sweep": ["period_1=3:5"], "trials": 20}, "trials", "is for optimizer optuna"),
    ({"sweep": ["bogus=1:3"]}, "sweep", "NAME one of"),
    ({"sweep": ["period_1=3:5", "period_1=6:7"]}, "sweep", "twice"),
    ({"walk_forward": 3}, "walk_forward", "needs sweep"),
    ({"sweep": ["period_1=3:5"], "anchored": True}, "anchored", "is for walk_forward"),
    ({"sweep": ["period_1=3:5"], "walk_forward": 11}, "walk_forward", ""),
    ({"sweep": ["period_1=3:5"], "train_fraction": 1}, "train_fraction", "between 0 and 1"),
    ({"sweep": ["period_1=3:5"], "train_fraction": 0.5, "walk_forward": 2}, "walk_forward", "not both"),
    ({"sweep": ["period_1=3:5"], "rank_by": "luck"}, "rank_by", ""),
])
def test_a_search_beyond_the_bounds_or_malformed_is_a_400_naming_the_field(
        client: FlaskClient, admin_headers: dict[str, str], jobs: BacktestJobs,
        extra: dict[str, Any], field: str, phrase: str) -> None:
    reply = client.post("/api/backtest", headers=admin_headers, json={**EMA, "data": ["wave.csv"], **extra})
    assert reply.status_code == 400, reply.json
    assert reply.json["field"] == field and phrase in reply.json["message"]


def test_search_options_become_the_clis_arguments(jobs: BacktestJobs) -> None:
    request = jobs.validate({**EMA, "data": ["wave.csv"], "sweep": ["period_1=3:5"], "optimizer": "optuna",
                             "trials": 7, "seed": 3, "walk_forward": 2, "anchored": True})
    args = request.cli_args()
    tail = args[args.index("--sweep"):]
    assert tail == ["--sweep", "period_1=3:5", "--optimizer", "optuna", "--trials", "7", "--seed", "3",
                    "--rank-by", "net_pnl", "--walk-forward", "2", "--anchored"]
