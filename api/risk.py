"""Risk administration: limits with their current usage, the kill switch and resume.

Reads `services.risk` (risk.engine.RiskEngine) and `services.orders` (the order manager: its
`cancel_all()` and `flatten_all(reason)` are what the kill switch calls). Changing anything is
admin-only and audited by the risk engine.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint

from api.contract import Answer, endpoint, valid_body
from api.validation import json_body
from api.responses import ApiError, ok
from api.schemas import ReportReply, ResumeBody, ResumeReply, RiskLimitsBody, RiskReply
from api.services import get_services
from auth.decorators import admin_required, current_user_email, viewer_required
from monitoring.status import _json, positions_rows
from risk.limits import LimitsValidationError
from risk.state import GLOBAL_SCOPE

risk_bp = Blueprint("risk", __name__, url_prefix="/api")
NO_ENGINE = {503: "the risk engine is not running"}


def _engine() -> Any:
    engine = get_services().risk
    if engine is None:
        raise ApiError(503, "the risk engine is not running", error="unavailable")
    return engine


@risk_bp.get("/risk")
@viewer_required
@endpoint(answers=[Answer(200, "limits, usage and recent denials", RiskReply)], errors=NO_ENGINE)
def get_risk() -> Any:
    """Risk limits, trading states and the current usage of every limit."""
    engine = _engine()
    services = get_services()
    return ok(limits=engine.get_limits().to_json(), usage=engine.usage(positions=positions_rows(services.orders)),
              recent_denials=engine.recent_decisions(20))


@risk_bp.put("/risk")
@admin_required
@endpoint(body=RiskLimitsBody, body_required=False, answers=[Answer(200, "the new limits", RiskReply)],
          errors=NO_ENGINE)
def put_risk() -> Any:
    """Update risk limits (partial: only the fields sent change; null removes a limit). Admin only."""
    engine = _engine()
    try:
        limits = engine.update_limits(json_body(required=False), actor=current_user_email())
    except LimitsValidationError as exc:
        raise ApiError(400, exc.message, field=exc.field) from None
    return ok(limits=limits.to_json())


@risk_bp.post("/kill-switch")
@admin_required
@endpoint(answers=[Answer(200, "halted; what was cancelled and flattened", ReportReply)], errors=NO_ENGINE)
def kill_switch() -> Any:
    """HALT all trading, cancel every open order and flatten every position at every broker. Admin only."""
    engine = _engine()
    orders = get_services().orders
    cancel = (lambda: _json(orders.cancel_all())) if orders is not None else None
    services = get_services()

    def flatten(reason: str) -> Any:
        report = _json(orders.flatten_all(reason))
        if services.engine is not None:  # running strategies must not believe they still hold positions
            services.engine.sync_with_book(None)
        return report

    if orders is None:
        flatten = None  # type: ignore[assignment]
    report = engine.kill_switch(cancel, flatten, actor=current_user_email())
    return ok(report=report)


@risk_bp.post("/resume")
@admin_required
@endpoint(body=ResumeBody, body_required=False, answers=[Answer(200, "the scope's new state", ResumeReply)],
          errors=NO_ENGINE)
def resume() -> Any:
    """Return to ACTIVE (global by default; body {"scope": "<strategy>"} for one strategy). Admin only."""
    scope = valid_body(ResumeBody).scope
    if scope not in (GLOBAL_SCOPE, "ema", "supertrend", "zeroday"):
        raise ApiError(400, "scope must be global, ema, supertrend or zeroday", field="scope")
    state = _engine().resume(scope, actor=current_user_email())
    return ok(scope=scope, state=state.to_json())
