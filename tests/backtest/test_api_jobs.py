"""API backtest jobs: submit -> queued/running -> progress -> done with the report, in Redis."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.backtest import backtest_bp
from app import create_app
from auth.users import Role
from backtest.jobs import BacktestJobs, JobValidationError
from config.settings import Settings
from store.redis_store import Store
from tests.api.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, VIEWER_EMAIL, VIEWER_PASSWORD, login
from tests.backtest.helpers import random_walk, write_csv


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    write_csv(d / "bars.csv", random_walk(2000, seed=5))
    return d


@pytest.fixture
def jobs(fake_store: Store, data_dir: Path, tmp_path: Path) -> Iterator[BacktestJobs]:
    j = BacktestJobs(fake_store, max_workers=1, out_root=tmp_path / "out", allowed_data_dirs=[data_dir])
    yield j
    j.shutdown()


def _payload(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"strategy": "ema", "symbol": "/MES", "timeframe": "1Min", "trend_line_1": "EMA",
                            "period_1": 9, "trend_line_2": "EMA", "period_2": 21, "data": ["bars.csv"],
                            "quantity": 1, "commission": "0.5", "slippage_ticks": 1}
    body.update(over)
    return body


def _wait(get: Any, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        job = get()
        seen.add(job["status"])
        if job["status"] in ("done", "failed"):
            job["seen"] = seen
            return job  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_job_lifecycle_in_redis(jobs: BacktestJobs, fake_store: Store) -> None:
    job_id = jobs.submit(jobs.validate(_payload()))
    assert fake_store.redis.exists(fake_store.key("backtest", job_id))
    job = _wait(lambda: jobs.get(job_id))
    assert job["status"] == "done", job.get("error")
    assert job["progress"] == 1.0
    assert job["report"]["metrics"]["trades"] > 10
    assert job["report"]["commission_per_contract"] == "0.5"
    assert Path(job["out_dir"], "trades.csv").is_file()
    assert fake_store.redis.ttl(fake_store.key("backtest", job_id)) > 0


def test_failed_job_reports_the_error(jobs: BacktestJobs, data_dir: Path) -> None:
    job_id = jobs.submit(jobs.validate(_payload(**{"from": "2031-01-01"})))
    job = _wait(lambda: jobs.get(job_id))
    assert job["status"] == "failed" and "no data" in job["error"]


def test_validation(jobs: BacktestJobs, data_dir: Path) -> None:
    for payload, field in ((_payload(data=["/etc/passwd"]), "data"), (_payload(data=["../x.csv"]), "data"),
                           (_payload(data=["missing.csv"]), "data"), (_payload(period_1=30), "period_1"),
                           (_payload(quantity=0), "quantity"), (_payload(commission="x"), "commission"),
                           (_payload(bogus=1), "bogus"), ([1, 2], "body")):
        with pytest.raises(JobValidationError) as exc:
            jobs.validate(payload)
        assert exc.value.field == field


@pytest.fixture
def app(settings: Settings, fake_store: Store, jobs: BacktestJobs) -> Flask:
    application = create_app(settings, fake_store)
    if "backtest" not in application.blueprints:
        application.register_blueprint(backtest_bp)
    application.extensions["services"].backtests = jobs
    application.config["TESTING"] = True
    return application


def test_api_submit_and_poll(app: Flask) -> None:
    client: FlaskClient = app.test_client()
    admin = {"Authorization": f"Bearer {login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
    app.extensions["services"].users.add(VIEWER_EMAIL, VIEWER_PASSWORD, Role.VIEWER)
    viewer = {"Authorization": f"Bearer {login(client, VIEWER_EMAIL, VIEWER_PASSWORD)}"}

    assert client.post("/api/backtest", json=_payload()).status_code == 401
    assert client.post("/api/backtest", json=_payload(), headers=viewer).status_code == 403
    bad = client.post("/api/backtest", json=_payload(data=["/etc/passwd"]), headers=admin)
    assert bad.status_code == 400 and bad.json["success"] is False and bad.json["field"] == "data"

    r = client.post("/api/backtest", json=_payload(), headers=admin)
    assert r.status_code == 202 and r.json["success"] is True
    job_id = r.json["id"]
    job = _wait(lambda: client.get(f"/api/backtest/{job_id}", headers=viewer).json["job"])
    assert job["status"] == "done" and job["report"]["metrics"]["trades"] > 10
    assert client.get("/api/backtest/doesnotexist", headers=viewer).status_code == 404


def test_api_job_has_the_full_report_and_its_page(app: Flask) -> None:
    client: FlaskClient = app.test_client()
    admin = {"Authorization": f"Bearer {login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
    app.extensions["services"].users.add(VIEWER_EMAIL, VIEWER_PASSWORD, Role.VIEWER)
    viewer = {"Authorization": f"Bearer {login(client, VIEWER_EMAIL, VIEWER_PASSWORD)}"}
    job_id = client.post("/api/backtest", json=_payload(), headers=admin).json["id"]
    assert client.get(f"/api/backtest/{job_id}/report.html", headers=viewer).status_code in (200, 404)
    _wait(lambda: client.get(f"/api/backtest/{job_id}", headers=viewer).json["job"])
    reply = client.get(f"/api/backtest/{job_id}", headers=viewer).json
    report = reply["report"]
    assert {"cagr_pct", "sortino", "calmar", "expectancy", "max_consecutive_losses",
            "max_drawdown_start"} <= report["metrics"].keys()
    assert {"monthly_returns", "yearly_returns", "buy_and_hold", "by_side", "by_exit_reason", "drawdowns",
            "trade_durations"} <= report.keys()
    assert reply["report_url"] == f"/api/backtest/{job_id}/report.html"

    assert client.get(reply["report_url"]).status_code == 401
    page = client.get(reply["report_url"], headers=viewer)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page.headers["Content-Disposition"] == f"attachment; filename=backtest-{job_id}.html"
    assert "plotly.js v" in page.get_data(as_text=True) and "Micro E-mini S&amp;P 500" in page.get_data(as_text=True)
    assert client.get("/api/backtest/0123456789abcdef/report.html", headers=viewer).status_code == 404
