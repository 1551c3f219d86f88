"""The OpenAPI 3.1 document and its HTML page, both built from the views' contracts (api/contract.py).

Per operation: the query parameters and JSON body come from the pydantic models the view validates
with (`model_json_schema()`), the answers from the contract's `Answer`s, and the failures from its
`errors` plus the ones every endpoint of that kind has (400/413/415 for invalid input, 401/403 for
auth, 429 where rate limited), each with the one error envelope. Summary and description are the
view's docstring (CommonMark). OpenAPI 3.1 because its schemas are JSON Schema 2020-12, which is
what pydantic emits (`anyOf [..., {"type": "null"}]` for an optional field).

The HTML page is rendered here, server-side, from the same document: no script and no CDN asset,
since the service may run where nothing outside it is reachable.
"""
from __future__ import annotations

import html
import inspect
import re
from typing import Any, Iterable

from flask import Flask
from pydantic import BaseModel

from api.contract import JSON, Contract, contract_of
from api.schemas import DECIMAL_TEXT, INTEGER_TEXT, ErrorReply

OPENAPI_VERSION = "3.1.0"
_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")  # Flask's <int:job_id> -> OpenAPI's {job_id}
_REF = "#/components/schemas/{model}"
_ERROR_REF = {"$ref": _REF.format(model="ErrorReply")}
_BODY_METHODS = {"POST", "PUT", "DELETE", "PATCH"}
_GENERIC_ERRORS = {
    400: "invalid input: `message` says what is wrong and `field` names the input",
    401: "no valid bearer token (missing, expired, revoked, or its user is gone)",
    403: "the token's user lacks the admin role",
    413: "the body is larger than the service accepts (MAX_REQUEST_BYTES)",
    415: "the body is not JSON (`Content-Type: application/json`)",
    429: "too many requests from this client; retry later (`Retry-After`)",
}
# Endpoints under a rate limit (app.create_app limits the auth blueprint: both check a password).
RATE_LIMITED_BLUEPRINTS = frozenset({"auth"})


class _Components:
    """Collects the models' schemas under components/schemas, lifting pydantic's `$defs`."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, model: type[BaseModel]) -> dict[str, str]:
        if model.__name__ not in self.schemas:
            schema = model.model_json_schema(ref_template=_REF)
            self.schemas.update(schema.pop("$defs", {}))
            self.schemas[model.__name__] = schema
        return {"$ref": _REF.format(model=model.__name__)}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without the `null` branch (a query string cannot send null)."""
    schema = {k: v for k, v in schema.items() if k not in ("default", "title")}
    options = [o for o in schema.get("anyOf", []) if o != {"type": "null"}]
    if "anyOf" in schema and len(options) == 1:
        inner = dict(options[0])
        schema.pop("anyOf")
        if "description" in inner and "description" in schema:  # the field's words, then the type's
            schema["description"] = f"{schema['description']}: {inner['description']}"
        return {**inner, **schema}
    if "anyOf" in schema:
        schema["anyOf"] = options
    return schema


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=_REF)
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = _without_null(prop)
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        if "description" in prop:
            parameter["description"] = prop.pop("description")
        parameter["schema"] = prop
        out.append(parameter)
    return out


def _summary(doc: str) -> str:
    """The docstring's first sentence (up to ". " or " -> " outside a `code` span): a docstring's
    first line may end inside a code span, which would leave a lone backtick."""
    paragraph = " ".join(doc.split("\n\n", 1)[0].split())
    in_code = False
    for i, char in enumerate(paragraph):
        if char == "`":
            in_code = not in_code
        elif not in_code and (paragraph.startswith(". ", i) or paragraph.startswith(" -> ", i)):
            return paragraph[:i + (1 if char == "." else 0)].strip()
    return paragraph


def _operation(app: Flask, rule: Any, method: str, components: _Components) -> dict[str, Any]:
    view = app.view_functions[rule.endpoint]
    contract = contract_of(view) or Contract()
    description = inspect.getdoc(view) or ""
    summary = _summary(description)
    role = getattr(view, "required_role", None)
    blueprint = rule.endpoint.split(".")[0]
    operation: dict[str, Any] = {
        "summary": summary or rule.endpoint,
        "description": description + (f"\n\nRequires role: {role}." if role else ""),
        "operationId": rule.endpoint.replace(".", "_"),
        "tags": [blueprint],
    }
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in sorted(rule.arguments)]
    if contract.query is not None:
        parameters += _query_parameters(contract.query)
    if parameters:
        operation["parameters"] = parameters
    has_body = contract.body is not None and method in _BODY_METHODS
    if has_body:
        assert contract.body is not None
        operation["requestBody"] = {"required": contract.body_required,
                                    "content": {JSON: {"schema": components.ref(contract.body)}}}
    responses: dict[str, Any] = {}
    for answer in contract.answers:
        entry = responses.setdefault(str(answer.status), {"description": answer.description, "content": {}})
        schema = components.ref(answer.model) if answer.model is not None else {"type": "string"}
        entry["content"][answer.media_type] = {"schema": schema}
    errors = dict(contract.errors)
    if contract.query is not None or has_body:
        errors.setdefault(400, _GENERIC_ERRORS[400])
    if has_body:
        errors.setdefault(413, _GENERIC_ERRORS[413])
        errors.setdefault(415, _GENERIC_ERRORS[415])
    if role is not None:
        errors.setdefault(401, _GENERIC_ERRORS[401])
    if role == "admin":
        errors.setdefault(403, _GENERIC_ERRORS[403])
    if blueprint in RATE_LIMITED_BLUEPRINTS:
        errors.setdefault(429, _GENERIC_ERRORS[429])
    for status, when in sorted(errors.items()):
        if str(status) in responses:  # a failure with its own richer model (e.g. a refusal's results)
            continue
        responses[str(status)] = {"description": when, "content": {JSON: {"schema": _ERROR_REF}}}
    if contract_of(view) is None:  # undeclared (tests/api/test_contract.py fails on it): claim nothing
        responses.setdefault("200", {"description": "success"})
        responses["default"] = {"description": "failure", "content": {JSON: {"schema": _ERROR_REF}}}
    operation["responses"] = responses
    if role is not None:
        operation["security"] = [{"bearerAuth": []}]
        operation["x-required-role"] = role
    return operation


def build_document(app: Flask, *, title: str, version: str, description: str) -> dict[str, Any]:
    components = _Components()
    components.ref(ErrorReply)
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith("/api/") or rule.endpoint == "static":
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            path = _RULE_ARGUMENT.sub(r"{\1}", rule.rule)
            paths.setdefault(path, {})[method.lower()] = _operation(app, rule, method, components)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": components.schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


# ------------------------------------------------------------------------------------ HTML page
_CODE = re.compile(r"`([^`]+)`")
_PATTERN_WORDS = {INTEGER_TEXT: "the same as text", DECIMAL_TEXT: "the same as text"}
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def markdown_html(text: str) -> str:
    """The CommonMark the docstrings use, as HTML: paragraphs, `- ` lists, `code` and **bold**.
    Everything is escaped first, so a description can never inject markup."""
    blocks: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if all(line.startswith("- ") for line in lines):
            items = "".join(f"<li>{_inline(line[2:])}</li>" for line in lines)
            blocks.append(f"<ul>{items}</ul>")
        else:
            blocks.append(f"<p>{_inline(' '.join(lines))}</p>")
    return "".join(blocks)


def _inline(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", escaped)
    return _BOLD.sub(lambda m: f"<b>{m.group(1)}</b>", escaped)


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        return spec["components"]["schemas"][ref.rsplit("/", 1)[1]]  # type: ignore[no-any-return]
    return schema


def type_text(schema: dict[str, Any], spec: dict[str, Any]) -> str:
    """A short human reading of a schema: `integer 1..1000 or string`, `one of: ema, supertrend`."""
    schema = _resolve(schema, spec)
    if "anyOf" in schema:
        parts = [part for option in schema["anyOf"] for part in type_text(option, spec).split(" or ")]
        return " or ".join(dict.fromkeys(p for p in parts if p))
    if "enum" in schema:
        return "one of: " + ", ".join(str(v) for v in schema["enum"])
    if "const" in schema:
        return f"always {str(schema['const']).lower() if isinstance(schema['const'], bool) else schema['const']}"
    kind = str(schema.get("type", "any"))
    if "minimum" in schema or "maximum" in schema:
        kind += f" {schema.get('minimum', '')}..{schema.get('maximum', '')}"
    if "exclusiveMinimum" in schema:
        kind += f" > {schema['exclusiveMinimum']}"
    if kind == "string" and "pattern" in schema:
        kind = _PATTERN_WORDS.get(schema["pattern"], f"string matching {schema['pattern']}")
    if kind == "array" and "items" in schema:
        kind = f"list of {type_text(schema['items'], spec)}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        kind = f"map to {type_text(schema['additionalProperties'], spec)}"
    return kind


def _fields_table(rows: Iterable[tuple[str, str, bool, str]]) -> str:
    body = "".join(
        f"<tr><td><code>{html.escape(name)}</code>{' <b>*</b>' if required else ''}</td>"
        f"<td>{html.escape(kind)}</td><td>{_inline(description)}</td></tr>"
        for name, kind, required, description in rows)
    return f"<table><tr><th>name</th><th>type</th><th>description</th></tr>{body}</table>" if body else ""


def _schema_rows(schema: dict[str, Any], spec: dict[str, Any]) -> list[tuple[str, str, bool, str]]:
    schema = _resolve(schema, spec)
    required = set(schema.get("required", []))
    return [(name, type_text(prop, spec), name in required, str(_resolve(prop, spec).get("description", "")))
            for name, prop in schema.get("properties", {}).items()]


def _operation_html(path: str, method: str, op: dict[str, Any], spec: dict[str, Any]) -> str:
    role = op.get("x-required-role", "none")
    parts = [f"<section id='{html.escape(op['operationId'])}'><h2><span class='m m-{html.escape(method)}'>"
             f"{html.escape(method.upper())}</span> <code>{html.escape(path)}</code> "
             f"<small>auth: {html.escape(role)}</small></h2><p class='summary'>{_inline(op['summary'])}</p>",
             markdown_html(op.get("description", "").removeprefix(op["summary"]))]
    params = [(p["name"], type_text(p["schema"], spec), p.get("required", False), p.get("description", ""))
              for p in op.get("parameters", [])]
    if params:
        parts.append("<h3>Parameters</h3>" + _fields_table(params))
    body = op.get("requestBody")
    if body:
        schema = body["content"][JSON]["schema"]
        parts.append(f"<h3>JSON body{' (required)' if body.get('required') else ''}</h3>"
                     + _fields_table(_schema_rows(schema, spec)))
    items = []
    for status, answer in op["responses"].items():
        media = ", ".join(answer.get("content", {}))
        fields = ""
        json_schema = answer.get("content", {}).get(JSON, {}).get("schema")
        if json_schema is not None and json_schema != _ERROR_REF:
            names = ", ".join(f"<code>{html.escape(n)}</code>" for n, *_ in _schema_rows(json_schema, spec))
            fields = f" &mdash; {names}" if names else ""
        elif json_schema == _ERROR_REF:
            fields = " &mdash; the error envelope"
        items.append(f"<li><b>{html.escape(status)}</b> {_inline(answer['description'])}"
                     f" <small>{html.escape(media)}</small>{fields}</li>")
    parts.append("<h3>Answers</h3><ul>" + "".join(items) + "</ul></section>")
    return "".join(parts)


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem;color:#222}"
    "section{border-top:1px solid #ddd;padding:.5rem 0}h2{font-size:1.05rem}h3{font-size:.95rem;margin:.6rem 0 .2rem}"
    "code{background:#f3f3f3;padding:0 .2rem;border-radius:3px}small{color:#666;font-weight:normal}"
    "table{border-collapse:collapse;font-size:.9rem}td,th{border:1px solid #ddd;padding:.2rem .4rem;"
    "text-align:left;vertical-align:top}.summary{font-weight:600}"
    ".m{display:inline-block;min-width:4.5rem;text-align:center;border-radius:3px;color:#fff;background:#555}"
    ".m-get{background:#2a7ab0}.m-post{background:#2f8f46}.m-put{background:#a67c00}.m-delete{background:#b03a2a}"
)


def render_docs(spec: dict[str, Any]) -> str:
    info = spec["info"]
    envelope = _fields_table(_schema_rows(_ERROR_REF, spec))
    index = "".join(
        f"<li><a href='#{html.escape(op['operationId'])}'>{html.escape(method.upper())} {html.escape(path)}</a> "
        f"&mdash; {_inline(op['summary'])}</li>"
        for path, operations in spec["paths"].items() for method, op in operations.items())
    sections = "".join(_operation_html(path, method, op, spec)
                       for path, operations in spec["paths"].items() for method, op in operations.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(info['title'])}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(info['title'])} "
            f"<small>v{html.escape(info['version'])}</small></h1>{markdown_html(info.get('description', ''))}"
            "<p>Machine-readable: <a href='/api/openapi.json'>/api/openapi.json</a> (OpenAPI "
            f"{html.escape(spec['openapi'])}). <b>*</b> = required.</p><h3>Every failure</h3>{envelope}"
            f"<h3>Endpoints</h3><ul>{index}</ul>{sections}</body></html>")
