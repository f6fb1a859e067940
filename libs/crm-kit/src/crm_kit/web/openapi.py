"""OpenAPI 3.1 generated from the declared routes and their marshmallow schemas (apispec)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask, Response

from crm_kit.web.api import Route
from crm_kit.web.problem import Problem

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                "required": ["field", "message"],
            },
        },
    },
    "additionalProperties": True,
}

_ERROR_TEXT = {
    400: "Malformed request (e.g. invalid JSON).",
    401: "No valid bearer token.",
    403: "The caller lacks the permission.",
    404: "Not found or not visible to the caller.",
    409: "A business rule refused the request.",
    412: "If-Match names another version.",
    413: "Body too large.",
    415: "Body is not of the accepted media type.",
    422: "Invalid fields, query parameters or idempotency key.",
    429: "Rate limited (see Retry-After).",
    503: "A dependency is unavailable.",
}

_RULE_VAR = re.compile(r"<(?:[a-zA-Z_]+:)?([a-zA-Z_][a-zA-Z0-9_]*)>")


def openapi_path(rule: str) -> str:
    """Flask's ``/v1/x/<id>`` as OpenAPI's ``/v1/x/{id}``."""
    return _RULE_VAR.sub(r"{\1}", rule)


def _problem_ref(example: dict[str, Any] | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": {"$ref": "#/components/schemas/Problem"}}
    if example is not None:
        media["example"] = example
    return {"application/problem+json": media}


def _problem_example(status: int) -> dict[str, Any]:
    """What a client sees for ``status``: the kit's own problem body."""
    errors = [{"field": "title", "message": "Missing data for required field."}] if status == 422 else None
    return Problem(status, _ERROR_TEXT.get(status, "Error."), errors=errors).to_dict()


def _operation(route: Route) -> dict[str, Any]:
    path_params = _RULE_VAR.findall(route.rule)
    op: dict[str, Any] = {
        "operationId": f"{route.method.lower()}_{route.handler.__name__}",
        "summary": route.summary or route.handler.__name__,
        "tags": list(route.tags) or ["default"],
        "parameters": [
            {"in": "path", "name": name, "required": True, "schema": {"type": "string"}} for name in path_params
        ],
        "responses": {},
    }
    if route.description and route.description != route.summary:
        op["description"] = route.description
    if route.query is not None:
        op["parameters"].append({"in": "query", "schema": route.query})
    if route.idempotent:
        op["parameters"].append({
            "in": "header", "name": "Idempotency-Key", "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[ -~]+$"},
            "description": "Retry-safe key: the same key and body replay the first response.",
        })
    if route.method in ("PATCH", "DELETE", "PUT") and path_params:
        op["parameters"].append({"in": "header", "name": "If-Match", "required": False,
                                 "schema": {"type": "string"}, "description": "ETag of the version you changed."})
    if route.body is not None:
        media: dict[str, Any] = {"schema": route.body}
        if route.example is not None:
            media["example"] = route.example
        op["requestBody"] = {"required": route.body_required, "content": {route.accepts: media}}
    if route.response is not None:
        schema: Any = route.response
        if route.many:
            schema = {
                "type": "object",
                "required": ["items", "next_page_token"],
                "properties": {
                    "items": {"type": "array", "items": route.response},
                    "next_page_token": {"type": ["string", "null"]},
                },
            }
        success: dict[str, Any] = {"description": "Success.", "content": {route.produces: {"schema": schema}}}
    elif route.status == 204:
        success = {"description": "Done; no content."}
    else:
        success = {"description": "Success.", "content": {route.produces: {"schema": {}}}}
    op["responses"][str(route.status)] = success
    for status, when in route.also:
        op["responses"][str(status)] = {**success, "description": when}
    errors = set(route.errors)
    if not route.public:
        errors |= {401, 403}
        op["security"] = [{"bearerAuth": []}]
    else:
        op["security"] = []
    if route.body is not None or route.query is not None or route.idempotent:
        errors |= {422}
    if route.body is not None:
        errors |= {400, 413, 415}
    if path_params:
        errors.add(404)
    if route.method in ("PATCH", "DELETE", "PUT") and path_params:
        errors.add(412)
    for status in sorted(errors):
        op["responses"][str(status)] = {"description": _ERROR_TEXT.get(status, "Error."),
                                        "content": _problem_ref(_problem_example(status))}
    return op


def build_spec(title: str, routes: list[Route], version: str = "1.0.0") -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes``."""
    spec = APISpec(title=title, version=version, openapi_version="3.1.0", plugins=[MarshmallowPlugin()])
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("Problem", PROBLEM_SCHEMA)
    by_path: dict[str, dict[str, Any]] = {}
    for route in routes:
        by_path.setdefault(openapi_path(route.rule), {})[route.method.lower()] = _operation(route)
    for path, operations in by_path.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def install_openapi(app: Flask, title: str) -> None:
    """Serve ``/openapi.json`` for the app's declared routes (built once, on first request)."""
    cache: dict[str, Any] = {}

    def openapi_json() -> Response:
        import json

        if "doc" not in cache:
            # Validators may carry Decimal bounds (fields.Decimal with Range): numbers in JSON.
            cache["doc"] = json.dumps(build_spec(title, app.extensions.get("crm_routes", [])),
                                      default=lambda o: float(o) if isinstance(o, Decimal) else str(o))
        return Response(cache["doc"], mimetype="application/json")

    app.add_url_rule("/openapi.json", "openapi_json", openapi_json, methods=["GET"])
