"""RFC 9457 problem details: every error a service or the gateway returns has this shape."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from marshmallow import ValidationError

from crm_kit import errors

if TYPE_CHECKING:  # the class itself is Flask-free: a worker that imports it does not load the web stack
    from flask import Flask, Response

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://crm.example/problems/"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    428: "Precondition Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

_SLUGS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    412: "precondition-failed",
    413: "content-too-large",
    414: "uri-too-long",
    415: "unsupported-media-type",
    422: "validation-error",
    428: "precondition-required",
    429: "rate-limited",
    500: "internal-error",
    502: "bad-gateway",
    503: "service-unavailable",
    504: "gateway-timeout",
}


class Problem(Exception):  # noqa: N818 - RFC 9457's name for it
    """Raise anywhere during a request to answer with a problem+json response."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type_: str | None = None,
        errors: Iterable[Mapping[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.type = type_ or TYPE_BASE + _SLUGS.get(status, str(status))
        self.errors = [dict(e) for e in errors] if errors is not None else None
        self.headers = dict(headers or {})
        self.extra = extra

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status, "detail": self.detail}
        if instance:
            body["instance"] = instance
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return body

    def response(self, instance: str | None = None) -> Response:
        from flask import Response

        resp = Response(json.dumps(self.to_dict(instance)), status=self.status, mimetype=PROBLEM_JSON)
        for name, value in self.headers.items():
            resp.headers[name] = value
        return resp


# The one mapping from the domain's refusals to HTTP (the most specific class wins).
STATUS_OF_ERROR: Mapping[type[errors.DomainError], int] = {
    errors.BadRequest: 400,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.ChangedMeanwhile: 412,
    errors.TooLarge: 413,
    errors.Invalid: 422,
    errors.Unavailable: 503,
}


def problem_of(exc: errors.DomainError) -> Problem:
    """The problem+json answer for a domain error: its category's status, its words and members."""
    status = next((STATUS_OF_ERROR[cls] for cls in type(exc).__mro__ if cls in STATUS_OF_ERROR), 500)
    headers = {}
    if isinstance(exc, errors.Unavailable) and exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return Problem(status, exc.detail, title=exc.title, type_=exc.type, errors=exc.errors, headers=headers,
                   **exc.extra)


INVALID_FIELDS = "The request has invalid fields."


def validation_problem(errors: list[dict[str, str]], detail: str = INVALID_FIELDS) -> Problem:
    """A 422 whose ``errors`` name each offending field."""
    return Problem(422, detail, errors=errors)


def flatten_marshmallow(messages: Any, prefix: str = "") -> list[dict[str, str]]:
    """Turn marshmallow's nested error dict into ``[{"field": "a.b", "message": "..."}]``."""
    out: list[dict[str, str]] = []
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "_schema":
                name = prefix or "body"
            out.extend(flatten_marshmallow(value, name))
    elif isinstance(messages, list | tuple):
        if all(isinstance(m, str) for m in messages):
            for m in messages:
                out.append({"field": prefix or "body", "message": m})
        else:
            for m in messages:
                out.extend(flatten_marshmallow(m, prefix))
    else:
        out.append({"field": prefix or "body", "message": str(messages)})
    return out


def register_problem_handlers(app: Flask) -> None:
    """Make every error of ``app`` a problem+json response; no stack trace ever leaves."""
    from flask import request
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        return exc.response(request.path)

    @app.errorhandler(errors.DomainError)
    def _domain(exc: errors.DomainError) -> Response:
        return problem_of(exc).response(request.path)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> Response:
        return validation_problem(flatten_marshmallow(exc.messages)).response(request.path)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        detail = exc.description or _TITLES.get(status, "Error")
        if status == 413:
            detail = "The request body is larger than this endpoint accepts."
        problem = Problem(status, detail)
        valid_methods = getattr(exc, "valid_methods", None)
        if status == 405 and valid_methods:
            problem.headers["Allow"] = ", ".join(valid_methods)
        return problem.response(request.path)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return Problem(500, "An internal error occurred; it has been logged.").response(request.path)
