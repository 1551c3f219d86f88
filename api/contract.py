"""Each view's contract, declared once: the pydantic models that validate its query string and JSON
body, and the answers it gives (status codes, bodies, media types).

    @tickers_bp.post("/add-ticker")
    @admin_required
    @endpoint(body=AddTickerBody, answers=[Answer(201, "saved; the strategy's whole map", TickerMap)],
              errors={})
    def add_ticker(): ...

`endpoint` goes under the auth guard (a request without a token gets 401 before its body is read)
and validates the request through the models before the view runs: a failure is a 400 naming the
field (`{success: false, error, message, field}`). The view reads the validated values with
`valid_query(Model)` / `valid_body(Model)`. `api/meta.py` builds /api/openapi.json and /api/docs
from the same declarations, so the document lists exactly what the views check. Views keep the
cross-field rules of the domain (a period_1 below period_2, no Schwab quantity on futures), which a
JSON schema cannot say.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Callable, Mapping, Sequence, TypeVar, cast

from flask import g, request
from pydantic import BaseModel, ValidationError

from api.responses import ApiError
from api.validation import json_body

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Answer:
    """One documented answer. `model` is the JSON body's schema (None: not JSON, or no fixed shape)."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    media_type: str = JSON


@dataclass(frozen=True, slots=True)
class Contract:
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    answers: tuple[Answer, ...] = ()
    # Failure statuses (besides 400/413/415 for invalid input and 401/403 for auth, which the
    # generator adds) -> when they happen. Every failure carries the error envelope.
    errors: Mapping[int, str] = field(default_factory=dict)


def endpoint(*, query: type[BaseModel] | None = None, body: type[BaseModel] | None = None,
             body_required: bool = True, answers: Sequence[Answer] = (),
             errors: Mapping[int, str] | None = None) -> Callable[[F], F]:
    contract = Contract(query, body, body_required, tuple(answers), dict(errors or {}))

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if contract.query is not None:
                # An empty parameter (`?limit=`) means "not given", as the forms send it.
                g.valid_query = validate(contract.query, {k: v for k, v in request.args.items() if v != ""})
            if contract.body is not None:
                g.valid_body = validate(contract.body, json_body(required=contract.body_required))
            return view(*args, **kwargs)

        wrapper.contract = contract  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


def contract_of(view: Callable[..., Any]) -> Contract | None:
    found = getattr(view, "contract", None)
    return found if isinstance(found, Contract) else None


def valid_query(model: type[M]) -> M:
    value = g.get("valid_query")
    if not isinstance(value, model):  # a view reading a model its contract does not declare
        raise TypeError(f"this view's contract has no query model {model.__name__}")
    return value


def valid_body(model: type[M]) -> M:
    value = g.get("valid_body")
    if not isinstance(value, model):
        raise TypeError(f"this view's contract has no body model {model.__name__}")
    return value


def validate(model: type[M], data: Mapping[str, Any]) -> M:
    """`data` through `model`; the first problem becomes a 400 naming its field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _as_api_error(exc) from None


def _as_api_error(exc: ValidationError) -> ApiError:
    problem = exc.errors(include_url=False)[0]
    name = ".".join(str(part) for part in problem["loc"] if part != "[key]") or "body"  # a map's bad key
    cause = (problem.get("ctx") or {}).get("error")
    if isinstance(cause, Exception):  # one of our parsers: its own phrase ("must be ...")
        phrase = str(getattr(cause, "message", None) or cause)
    elif problem["type"] == "missing":
        phrase = "is required"
    elif problem["type"] == "extra_forbidden":
        phrase = "is not a known field"
    else:
        phrase = str(problem["msg"])
        phrase = phrase[:1].lower() + phrase[1:]
    return ApiError(400, f"{name}: {phrase}", field=name)
