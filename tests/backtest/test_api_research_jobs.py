"""API backtest jobs for a symbol outside the catalog (tick_size, contract_multiplier, calendar) and
for prices off the tick (allow_off_tick): validated like the CLI, run by the CLI in the job's own
process; the service's catalog never learns the research symbol."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.backtest import backtest_bp
from app import create_app
from backtest.jobs import BacktestJobs, JobValidationError
from config.instruments import CATALOG
from config.settings import Settings
from store.redis_store import Store
from tests.api.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, login


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    rng = np.random.default_rng(8)
    n = 3000
    ts = np.datetime64("2024-03-04T00:00:00") + np.arange(n) * np.timedelta64(1, "m")
    close = 1.08 + np.cumsum(rng.integers(-3, 4, n)) * 0.00005
    with (d / "eurusd.csv").open("w") as fh:
        fh.write("timestamp_utc,open,high,low,close\n")
        for t, c in zip(ts, close):
            fh.write(f"{t},{c:.5f},{c + 0.0001:.5f},{c - 0.0001:.5f},{c:.5f}\n")
    return d


@pytest.fixture
def jobs(fake_store: Store, data_dir: Path, tmp_path: Path) -> Iterator[BacktestJobs]:
    j = BacktestJobs(fake_store, max_workers=1, out_root=tmp_path / "out", allowed_data_dirs=[data_dir])
    yield j
    j.shutdown()


def _payload(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"strategy": "ema", "symbol": "/6E", "timeframe": "5Min", "period_1": 5, "period_2": 13,
                            "data": ["eurusd.csv"], "tick_size": "0.00005", "contract_multiplier": 125000,
                            "calendar": "CMEGlobex_FX"}
    body.update(over)
    return body


def test_validation_and_cli_arguments(jobs: BacktestJobs) -> None:
    request = jobs.validate(_payload(allow_off_tick=True))
    args = request.cli_args()
    assert args[args.index("--symbol") + 1] == "/6E"
    assert args[args.index("--tick-size") + 1] == "0.00005" and args[args.index("--calendar") + 1] == "CMEGlobex_FX"
    assert args[args.index("--contract-multiplier") + 1] == "125000" and "--allow-off-tick" in args
    assert "--allow-off-tick" not in jobs.validate(_payload(allow_off_tick=False)).cli_args()
    for payload, field in ((_payload(tick_size=None), "symbol"), (_payload(tick_size="-1"), "tick_size"),
                           (_payload(calendar="Mars"), "calendar"), (_payload(allow_off_tick="maybe"), "allow_off_tick"),
                           (_payload(symbol="/ES", tick_size="0.5"), "symbol"), (_payload(period_1=20), "period_1")):
        with pytest.raises(JobValidationError) as exc:
            jobs.validate(payload)
        assert exc.value.field == field, (payload, exc.value)
    assert "/6E" not in CATALOG


@pytest.fixture
def app(settings: Settings, fake_store: Store, jobs: BacktestJobs) -> Flask:
    application = create_app(settings, fake_store)
    if "backtest" not in application.blueprints:
        application.register_blueprint(backtest_bp)
    application.extensions["services"].backtests = jobs
    application.config["TESTING"] = True
    return application


def test_api_job_on_a_research_instrument(app: Flask) -> None:
    client: FlaskClient = app.test_client()
    admin = {"Authorization": f"Bearer {login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
    missing = client.post("/api/backtest", json=_payload(tick_size=None), headers=admin)
    assert missing.status_code == 400 and missing.json["field"] == "symbol" and "--tick-size" in missing.json["error"]
    r = client.post("/api/backtest", json=_payload(), headers=admin)
    assert r.status_code == 202, r.json
    job_id = r.json["id"]
    deadline = time.monotonic() + 90
    while (job := client.get(f"/api/backtest/{job_id}", headers=admin).json["job"])["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, "job did not finish"
        time.sleep(0.1)
    assert job["status"] == "done", job.get("error")
    report = job["report"]
    assert (report["symbol"], report["tick_size"], report["multiplier"]) == ("/6E", "0.00005", "125000")
    assert report["metrics"]["trades"] > 0
    assert "/6E" not in CATALOG  # the job ran in its own process
