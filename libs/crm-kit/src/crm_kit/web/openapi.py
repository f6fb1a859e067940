"""OpenAPI 3.1 generated from the declared routes and their marshmallow schemas (apispec).

What the document says is what the edge enforces, in the form the clients' tools read:

* ``operationId``: derived once from the method and the path (``createLead``,
  ``listOpportunityContacts``, ``convertLead``), unique within the document.
* ``pattern``: marshmallow's ``Regexp`` is Python syntax applied with ``re.match``; the
  document carries its ECMA-262 equivalent (anchored at the start, ``\\Z`` as ``$``).
* ``x-permission``: the permission the route is declared with (``null``: any valid token),
  on every operation that takes a token; the gateway's route table is derived from it.
* limits: lengths, ranges and item counts come from the fields' validators; what a field's
  type implies is added here (a ``Timestamp`` is at most ``Timestamp.MAX_LENGTH``
  characters, a date 10, a UUID 36; every integer says ``int32`` or ``int64`` by its range).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask, Response
from marshmallow import fields

from crm_kit.web.api import Route
from crm_kit.web.fields import Timestamp
from crm_kit.web.idempotency import MAX_KEY_LENGTH
from crm_kit.web.pagination import MAX_PAGE_SIZE, MAX_PAGE_TOKEN
from crm_kit.web.problem import Problem

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
UUID_LENGTH = 36
DATE_LENGTH = 10  # YYYY-MM-DD
# A problem may quote what the client sent (an unknown field's name, a parameter): never more
# than the request itself, whose body is at most CRM_MAX_BODY_BYTES (1 MiB by default).
ECHO_MAX = 1_048_576

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri", "maxLength": 200},
        "title": {"type": "string", "maxLength": 200},
        "status": {"type": "integer", "format": "int32", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "maxLength": ECHO_MAX},
        "instance": {"type": "string", "maxLength": ECHO_MAX},
        "errors": {
            "type": "array",
            "maxItems": ECHO_MAX,
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string", "maxLength": ECHO_MAX},
                               "message": {"type": "string", "maxLength": ECHO_MAX},
                               "line": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 2147483647,
                                        "description": "A template body's line the error is on."}},
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
    406: "The request's Accept rules out the type this operation answers with.",
    412: "If-Match names another version.",
    413: "Body too large.",
    415: "Body is not of the accepted media type.",
    422: "Invalid fields, query parameters or idempotency key.",
    429: "Rate limited (see Retry-After).",
    503: "A dependency is unavailable.",
}

# Every operation that takes a token names the permission it needs (null: any valid token);
# the gateway's route table is derived from it (tools/gateway-routes, `make routes`).
PERMISSION_EXTENSION = "x-permission"

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


def _words(segment: str) -> list[str]:
    return [w for w in re.split(r"[-_.]", segment) if w]


def _pascal(segment: str) -> str:
    return "".join(w[:1].upper() + w[1:] for w in _words(segment))


def _singular(segment: str) -> str:
    """``opportunities`` -> ``opportunity``, ``job-orders`` -> ``job-order`` (the last word)."""
    for plural, singular in (("ies", "y"), ("sses", "ss"), ("s", "")):
        if segment.endswith(plural) and not segment.endswith("ss"):
            return segment[: len(segment) - len(plural)] + singular
    return segment


def _is_plural(segment: str) -> bool:
    return _singular(segment) != segment


def operation_id(method: str, rule: str, *, many: bool = False) -> str:
    """A readable operationId from the method and the path: the path's nouns (singular where an
    id follows), after a verb - ``list`` (a list) or ``get``, ``create`` (a POST to a
    collection), ``update`` (PATCH), ``replace`` (PUT), ``delete``; a POST to a last segment
    that is not a collection is that action (``/leads/{id}/convert``: ``convertLead``)."""
    parts = [p for p in openapi_path(rule).split("/") if p and p != "v1"]
    method = method.upper()
    nouns: list[str] = []
    for i, part in enumerate(parts):
        nxt = parts[i + 1] if i + 1 < len(parts) else None
        if part.startswith("{"):
            prev = parts[i - 1] if i else ""
            if prev.startswith("{"):  # an id inside a collection named by a parameter
                nouns.append(_pascal(part[1:-1].removesuffix("_id")))
            continue
        nouns.append(_pascal(_singular(part) if nxt is not None and nxt.startswith("{") else part))
    last = parts[-1] if parts else ""
    ends_with_param = last.startswith("{")
    if method == "POST" and not ends_with_param and len(parts) > 1 and not _is_plural(last):
        action = _words(last)
        verb = action[0] + "".join(w.capitalize() for w in action[1:])
        return verb + "".join(nouns[:-1])
    if ends_with_param and len(parts) > 1 and not last.endswith("_id}"):
        nouns.append("Entries" if method == "GET" and many else "Entry")  # a collection named by a parameter
    if method == "GET":
        verb = "list" if many else "get"
    elif method == "POST":
        verb = "create"
        if not ends_with_param and nouns:
            nouns[-1] = _pascal(_singular(last))
    else:
        verb = {"PATCH": "update", "PUT": "replace", "DELETE": "delete"}.get(method, method.lower())
    return verb + "".join(nouns)


def operation_ids(routes: list[Route]) -> dict[int, str]:
    """``id(route)`` -> its operationId; where two would be equal, both spell out their paths."""
    ids = {id(r): operation_id(r.method, r.rule, many=r.many) for r in routes}
    counts: dict[str, int] = {}
    for value in ids.values():
        counts[value] = counts.get(value, 0) + 1
    for route in routes:
        if counts[ids[id(route)]] > 1:
            spelled = "".join(_pascal(p.strip("{}")) for p in openapi_path(route.rule).split("/") if p)
            ids[id(route)] = route.method.lower() + spelled
    return ids


def ecma_pattern(pattern: str) -> str:
    """The ECMA-262 regex that matches what ``re.match(pattern, text)`` matches.

    ``re.match`` anchors at the start only; ``\\Z`` is the end of the text (``$`` in ECMA-262
    without the multiline flag), ``\\A`` its start, ``(?P<n>...)`` a named group ``(?<n>...)``.
    """
    out = pattern.replace("\\Z", "$").replace("\\A", "^").replace("(?P<", "(?<")
    out = re.sub(r"\(\?P=(\w+)\)", r"\\k<\1>", out)
    return out if out.startswith("^") else f"^(?:{out})"


def _field_limits(self: Any, field: fields.Field, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """apispec attribute function: ECMA-262 patterns, and the limits a field's type implies."""
    extra: dict[str, Any] = {}
    for validator in field.validators:
        regex = getattr(validator, "regex", None)
        if isinstance(regex, re.Pattern) and ret.get("pattern") == regex.pattern:
            extra["pattern"] = ecma_pattern(regex.pattern)
            break
    if "maxLength" not in ret and not ret.get("enum"):
        if isinstance(field, Timestamp):
            extra["maxLength"] = Timestamp.MAX_LENGTH
        elif isinstance(field, fields.Date) and not isinstance(field, fields.DateTime):
            extra["maxLength"] = DATE_LENGTH
        elif isinstance(field, fields.UUID):
            extra["maxLength"] = UUID_LENGTH
    return extra


def _types(schema: dict[str, Any]) -> set[str]:
    kind = schema.get("type")
    return set(kind) if isinstance(kind, list) else {kind} if isinstance(kind, str) else set()


def _integer_formats(node: Any) -> None:
    """Every integer schema says ``int32`` or ``int64``, by its declared range."""
    if isinstance(node, dict):
        if "integer" in _types(node) and "format" not in node:
            low, high = node.get("minimum", -INT64_MAX - 1), node.get("maximum", INT64_MAX)
            node["format"] = "int32" if -INT32_MAX - 1 <= low and high <= INT32_MAX else "int64"
        for value in node.values():
            _integer_formats(value)
    elif isinstance(node, list):
        for value in node:
            _integer_formats(value)


def _path_parameter(name: str, route: Route) -> dict[str, Any]:
    schema = dict(route.params.get(name) or {})
    if not schema:
        # Every id the services issue is a UUID: a longer one names nothing (404).
        schema = {"type": "string", "minLength": 1, "maxLength": UUID_LENGTH}
    schema.setdefault("type", "string")
    return {"in": "path", "name": name, "required": True, "schema": schema}


def _operation(route: Route, op_id: str) -> dict[str, Any]:
    path_params = _RULE_VAR.findall(route.rule)
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": route.summary or route.handler.__name__,
        "tags": list(route.tags) or ["default"],
        "parameters": [_path_parameter(name, route) for name in path_params],
        "responses": {},
    }
    if route.description and route.description != route.summary:
        op["description"] = route.description
    if route.query is not None:
        op["parameters"].append({"in": "query", "schema": route.query})
    if route.idempotent:
        op["parameters"].append({
            "in": "header", "name": "Idempotency-Key", "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[ -~]+$"},
            "description": "Retry-safe key: the same key and body replay the first response.",
        })
    if route.method in ("PATCH", "DELETE", "PUT") and path_params:
        op["parameters"].append({"in": "header", "name": "If-Match", "required": False,
                                 "schema": {"type": "string", "maxLength": 8000},
                                 "description": "ETag of the version you changed (strong comparison; any other "
                                                "value, a weak tag too, is 412)."})
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
                    "items": {"type": "array", "maxItems": MAX_PAGE_SIZE, "items": route.response},
                    "next_page_token": {"type": ["string", "null"], "maxLength": MAX_PAGE_TOKEN,
                                        "description": "Pass as `page_token` for the next page; null on the last."},
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
        op[PERMISSION_EXTENSION] = route.permission
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
    if route.produces == "application/json":
        errors.add(406)  # the kit's Accept check (crm_kit.web.api)
    for status in sorted(errors):
        op["responses"][str(status)] = {"description": _ERROR_TEXT.get(status, "Error."),
                                        "content": _problem_ref(_problem_example(status))}
    return op


BEARER_DESCRIPTION = ("A JWT (HS256, `Authorization: Bearer <token>`) with `sub`, `name`, `office`, `roles` and "
                      "`exp`; handled as RFC8725 (JSON Web Token Best Current Practices) asks: one algorithm, "
                      "fixed by the server and never taken from the token (`alg: none` is refused), expiry "
                      "required, 30 s leeway.")


def build_spec(title: str, routes: list[Route], version: str = "1.0.0") -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes``."""
    plugin = MarshmallowPlugin()
    spec = APISpec(title=title, version=version, openapi_version="3.1.0", plugins=[plugin])
    assert plugin.converter is not None
    plugin.converter.add_attribute_function(_field_limits)
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                                   "description": BEARER_DESCRIPTION})
    spec.components.schema("Problem", PROBLEM_SCHEMA)
    ids = operation_ids(routes)
    by_path: dict[str, dict[str, Any]] = {}
    for route in routes:
        by_path.setdefault(openapi_path(route.rule), {})[route.method.lower()] = _operation(route, ids[id(route)])
    for path, operations in by_path.items():
        spec.path(path=path, operations=operations)
    doc = spec.to_dict()
    _integer_formats(doc)
    return doc


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
