"""Backtest jobs over HTTP.

POST /api/backtest (admin): validate the request (same fields as the CLI: the add-ticker fields,
`data` file paths under an allowed data directory, optional from/to, quantity, commission,
slippage_ticks) and queue a job -> 202 {success, id}.
GET /api/backtest (viewer): the jobs, newest first, paged (offset, limit), with their key figures.
GET /api/backtest/<id> (viewer): {success, job: {id, status, progress, report, error, ...}}.
GET /api/backtest/<id>/results (viewer): a finished job's equity curve, trades and last bars.
GET /api/backtest/<id>/report.html (viewer): a finished job's report page, as a download.
GET /api/backtest/<id>/sweep (viewer): a finished parameter search's ranked candidates.
GET /api/backtest/<id>/sweep.html (viewer): its page (ranked table, heatmaps), as a download.

The work happens in `backtest.jobs.BacktestJobs` (a niced child process), never in the request.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, send_file

from api.responses import ApiError
from api.contract import Answer, endpoint, valid_query
from api.schemas import (BacktestBody, BacktestJobReply, BacktestListQuery, BacktestListReply, BacktestResultsReply,
                         BacktestSweepReply, QueuedReply)
from api.services import get_services
from api.validation import json_body
from auth.decorators import admin_required, viewer_required

backtest_bp = Blueprint("backtest", __name__, url_prefix="/api/backtest")


def _jobs() -> Any:
    jobs = get_services().backtests
    if jobs is None:
        raise ApiError(503, "backtests are not available on this server", error="service unavailable")
    return jobs


@backtest_bp.post("")
@admin_required
@endpoint(body=BacktestBody, answers=[Answer(202, "queued", QueuedReply)],
          errors={429: "the backtest queue is full; try later", 503: "backtests are not available on this server"})
def submit_backtest() -> tuple[Response, int]:
    """Queue a backtest job (admin) -> 202 `{success, id, status: "queued"}`.

    Body: the add-ticker fields plus `data` (file paths under an allowed data directory) and
    optional `from`, `to`, `quantity`, `commission`, `slippage_ticks`; 429 when the queue is full.
    With `sweep` (axes like `period_1=5:20:1`) the job is a parameter search as the CLI runs it:
    `optimizer` grid or optuna (`trials`, `seed`), `train_fraction` or `walk_forward` (`anchored`),
    `rank_by`; a grid beyond 500 points, or more than 500 trials, is a 400.
    """
    from backtest.jobs import JobsBusyError, JobValidationError

    jobs = _jobs()
    try:
        job_request = jobs.validate(json_body())
    except JobValidationError as exc:
        raise ApiError(400, str(exc), field=exc.field) from None
    try:
        job_id = jobs.submit(job_request)
    except JobsBusyError as exc:
        raise ApiError(429, str(exc), error="busy") from None
    # Built directly: `ok(status, **body)` reserves the name "status" for the HTTP code.
    return jsonify({"success": True, "id": job_id, "status": "queued"}), 202


@backtest_bp.get("")
@viewer_required
@endpoint(query=BacktestListQuery, answers=[Answer(200, "a page of jobs, newest first", BacktestListReply)],
          errors={503: "backtests are not available on this server"})
def list_backtests() -> tuple[Response, int]:
    """The backtest jobs kept (a week each), newest first -> `{success, jobs, count, total, offset,
    limit, has_more}`; each job with its request's strategy, symbol and timeframe and, once done,
    its key figures."""
    query = valid_query(BacktestListQuery)
    offset = query.offset or 0
    limit = query.limit or 50
    page, total, has_more = _jobs().list_jobs(offset, limit)
    return jsonify({"success": True, "jobs": page, "count": len(page), "total": total, "offset": offset,
                    "limit": limit, "has_more": has_more}), 200


@backtest_bp.get("/<job_id>")
@viewer_required
@endpoint(answers=[Answer(200, "the job", BacktestJobReply)],
          errors={404: "no such job", 503: "backtests are not available on this server"})
def get_backtest(job_id: str) -> tuple[Response, int]:
    """One backtest job -> `{success, id, status, progress, report, job}`; 404 for an unknown id."""
    job = _jobs().get(job_id)
    if job is None:
        raise ApiError(404, f"no backtest job {job_id[:32]!r}", error="not found")
    done = job["status"] == "done"
    search = job["kind"] == "sweep"
    base = f"/api/backtest/{job['id']}"
    return jsonify({"success": True, "id": job["id"], "status": job["status"], "progress": job["progress"],
                    "report": job["report"], "report_url": f"{base}/report.html" if done and not search else None,
                    "kind": job["kind"], "sweep": job["sweep"], "sweep_url": f"{base}/sweep" if done and search else None,
                    "sweep_html_url": f"{base}/sweep.html" if done and search else None, "job": job}), 200


@backtest_bp.get("/<job_id>/results")
@viewer_required
@endpoint(answers=[Answer(200, "the finished job's series", BacktestResultsReply)],
          errors={404: "no such job, or it has not finished (or its files are gone)",
                  503: "backtests are not available on this server"})
def get_backtest_results(job_id: str) -> tuple[Response, int]:
    """A finished job's equity and drawdown curve, its trades and its last bars with the
    strategy's lines -> `{success, id, equity, trades, trades_total, lines, bars}` (values as the
    CSV files have them: text)."""
    results = _jobs().results(job_id)
    if results is None:
        raise ApiError(404, f"no finished backtest job {job_id[:32]!r}", error="not found")
    return jsonify({"success": True, "id": job_id, **results}), 200


@backtest_bp.get("/<job_id>/report.html")
@viewer_required
@endpoint(answers=[Answer(200, "the report page (self-contained HTML: charts, statistics, trades)", None, "text/html")],
          errors={404: "no such job, or it has not finished (or its files are gone)",
                  503: "backtests are not available on this server"})
def get_backtest_report_html(job_id: str) -> Response:
    """A finished job's report.html, as an attachment: it embeds its own scripts (plotly.js) and
    works offline, opened from the file rather than under the API's origin."""
    page = _jobs().report_html(job_id)
    if page is None:
        raise ApiError(404, f"no finished backtest job {job_id[:32]!r}", error="not found")
    return send_file(page, mimetype="text/html", as_attachment=True, download_name=f"backtest-{job_id}.html",
                     max_age=0)


@backtest_bp.get("/<job_id>/sweep")
@viewer_required
@endpoint(answers=[Answer(200, "the finished search's ranked candidates", BacktestSweepReply)],
          errors={404: "no such search job, or it has not finished (or its files are gone)",
                  503: "backtests are not available on this server"})
def get_backtest_sweep(job_id: str) -> tuple[Response, int]:
    """A finished parameter search (sweep.json) -> `{success, id, params, columns, results (best
    first), rank_by, optimizer, split, folds, overfitting, points, skipped}`."""
    found = _jobs().sweep(job_id)
    if found is None:
        raise ApiError(404, f"no finished parameter search {job_id[:32]!r}", error="not found")
    return jsonify({"success": True, "id": job_id, **found}), 200


@backtest_bp.get("/<job_id>/sweep.html")
@viewer_required
@endpoint(answers=[Answer(200, "the search's page (self-contained HTML: ranked table, heatmaps, folds)", None,
                          "text/html")],
          errors={404: "no such search job, or it has not finished (or its files are gone)",
                  503: "backtests are not available on this server"})
def get_backtest_sweep_html(job_id: str) -> Response:
    """A finished search's sweep.html, as an attachment (self-contained, like report.html)."""
    page = _jobs().sweep_html(job_id)
    if page is None:
        raise ApiError(404, f"no finished parameter search {job_id[:32]!r}", error="not found")
    return send_file(page, mimetype="text/html", as_attachment=True, download_name=f"backtest-{job_id}-sweep.html",
                     max_age=0)
