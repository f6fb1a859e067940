"""Declared routes: one decorator says who may call an endpoint, what it takes and returns.

The declaration drives everything the edge does the same way for every endpoint - token
check, permission, query and body validation (unknown fields refused), the
``Idempotency-Key`` protocol, ETags, problem+json, the request's database transaction -
and the OpenAPI document (``crm_kit.web.openapi``), so the spec cannot drift from the code.

A route function receives a ``RequestContext`` and the URL's variables, and returns the
data to serialise (or a ``Reply`` with a status and headers, or a ``ListResult``, or a
ready ``flask.Response``). It never commits: the kit commits the request's session after
a successful response (< 400) together with the idempotency record, and rolls back
otherwise, so a refused request changes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, current_app, g, request
from marshmallow import RAISE, Schema
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_kit import consistency
from crm_kit.db import write_held_back
from crm_kit.web import idempotency as idem
from crm_kit.web.auth import Identity, require_permission
from crm_kit.web.dumping import dump
from crm_kit.web.http import etag_for, if_none_match_hits, load_query, note_language, preferred_language
from crm_kit.web.input import check_texts, decode_json, document_text_rules, load_body
from crm_kit.web.problem import Problem

log = logging.getLogger(__name__)


@dataclass
class Reply:
    """Data plus the status and headers to answer with."""

    data: Any
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ListResult:
    """One page of a list: serialised as ``{"items": [...], "next_page_token": ...}``."""

    items: list[Any]
    next_page_token: str | None = None


@dataclass
class Route:
    method: str
    rule: str
    handler: Callable[..., Any]
    permission: str | None = None
    public: bool = False
    body: Schema | None = None
    body_required: bool = True  # False: an empty body means {} (e.g. "optional body" endpoints)
    example: Any = None  # an example request body for the OpenAPI document
    query: Schema | None = None
    response: Schema | None = None
    status: int = 200
    idempotent: bool = False
    many: bool = False
    summary: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    errors: tuple[int, ...] = ()
    also: tuple[tuple[int, str], ...] = ()  # other success statuses with the same body: (status, when)
    accepts: str = "application/json"
    produces: str = "application/json"
    max_body: int | None = None
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # path variable -> its JSON schema
    # False: the route reads none of the service's copies of other services' events, so it never
    # waits for them to catch up with a consistency token (it answers from its own tables at once).
    read_models: bool = True

    @property
    def endpoint(self) -> str:
        return f"{self.handler.__module__}.{self.handler.__name__}".replace(".", "_")


def _instance(schema: Schema | type[Schema] | None) -> Schema | None:
    if schema is None:
        return None
    inst = schema() if isinstance(schema, type) else schema
    inst.unknown = RAISE  # unknown fields are a 422, always
    return inst


class Api:
    """A set of declared routes; ``register(app)`` mounts them on a Flask app."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.routes: list[Route] = []

    def route(
        self,
        method: str,
        rule: str,
        *,
        permission: str | None = None,
        public: bool = False,
        body: Schema | type[Schema] | None = None,
        body_required: bool = True,
        example: Any = None,
        query: Schema | type[Schema] | None = None,
        response: Schema | type[Schema] | None = None,
        status: int | None = None,
        idempotent: bool | None = None,
        many: bool = False,
        summary: str = "",
        tags: Iterable[str] | None = None,
        errors: Iterable[int] = (),
        also: Mapping[int, str] | None = None,
        accepts: str = "application/json",
        produces: str = "application/json",
        max_body: int | None = None,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        read_models: bool = True,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare an endpoint. ``permission=None`` means any valid token; ``public`` none.

        ``params`` documents path variables that are not ids (e.g. ``{"table": {"enum": [...]}}``);
        an id's schema is the kit's (a UUID's length)."""
        method = method.upper()

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.routes.append(
                Route(
                    method=method,
                    rule=rule,
                    handler=fn,
                    permission=permission,
                    public=public,
                    body=document_text_rules(inst) if (inst := _instance(body)) is not None else None,
                    body_required=body_required,
                    example=example,
                    query=_instance(query),
                    response=_instance(response),
                    status=status or (201 if method == "POST" else 200),
                    idempotent=(method == "POST") if idempotent is None else idempotent,
                    many=many,
                    summary=summary or (fn.__doc__ or "").strip().split("\n")[0],
                    description=(fn.__doc__ or "").strip(),
                    tags=tuple(tags) if tags is not None else ((self.tag,) if self.tag else ()),
                    errors=tuple(errors),
                    also=tuple((also or {}).items()),
                    accepts=accepts,
                    produces=produces,
                    max_body=max_body,
                    params=dict(params or {}),
                    read_models=read_models,
                )
            )
            return fn

        return decorate

    def get(self, rule: str, **kw: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("GET", rule, **kw)

    def post(self, rule: str, **kw: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("POST", rule, **kw)

    def patch(self, rule: str, **kw: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("PATCH", rule, **kw)

    def put(self, rule: str, **kw: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("PUT", rule, **kw)

    def delete(self, rule: str, **kw: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("DELETE", rule, **kw)

    def register(self, app: Flask) -> None:
        registry: list[Route] = app.extensions.setdefault("crm_routes", [])
        for route in self.routes:
            view = _make_view(route)
            app.add_url_rule(route.rule, endpoint=f"{route.endpoint}_{route.method}", view_func=view,
                             methods=[route.method])
            registry.append(route)


class RequestContext:
    """What a route function gets: the caller, validated input, and the request's session."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.kit = current_app.extensions["crm"]
        self.identity: Identity | None = None
        self.body: dict[str, Any] = {}
        self.query: dict[str, Any] = {}

    @property
    def settings(self) -> Any:
        return self.kit.settings

    @property
    def session(self) -> Session:
        """The request's database session, in a transaction the kit commits or rolls back."""
        return request_session()

    @property
    def user(self) -> Identity:
        if self.identity is None:
            raise Problem(401, "This endpoint needs a bearer token.")
        return self.identity

    def language(self, available: list[str]) -> str:
        """The language to resolve ``names`` in: the best of ``available`` for Accept-Language,
        else the default language. The answer carries ``Vary: Accept-Language``, and
        ``Content-Language`` when the language is one of ``available`` (a caller that falls back
        to another one says so with ``note_language``)."""
        language = preferred_language(available, self.kit.settings["CRM_DEFAULT_LANGUAGE"])
        note_language(language if language in available else None)
        return language

    def note_language(self, language: str | None) -> None:
        """The answer holds text in ``language`` too (``crm_kit.web.http.note_language``)."""
        note_language(language)

    def page(self, stmt: Any, sort: Any, *, fingerprint: str = "") -> Any:
        """Run a keyset-paginated query with the request's page_size and page_token."""
        return self.kit.paginator.page(
            self.session, stmt, sort,
            page_size=self.query.get("page_size", 50),
            page_token=self.query.get("page_token"),
            fingerprint=fingerprint,
        )


def request_session() -> Session:
    """The current request's session (created on first use)."""
    session = g.get("crm_session")
    if session is None:
        session = current_app.extensions["crm"].database.sessions()
        session.begin()
        g.crm_session = session
    return session


def _finish_session(commit: bool) -> None:
    session: Session | None = g.pop("crm_session", None)
    if session is None:
        return
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


def _load_body(route: Route) -> dict[str, Any]:
    raw = request.get_data(cache=True)
    if not raw.strip():
        if route.body_required:
            raise Problem(422, "This request needs a JSON object as its body.",
                          errors=[{"field": "body", "message": "Missing; send a JSON object."}])
        data: Any = {}
    else:
        data = decode_json(raw)  # 400: not JSON, or nested too deeply
    if not isinstance(data, dict):
        raise Problem(422, "The request body must be a JSON object.", errors=[{"field": "body",
                                                                               "message": "Expected an object."}])
    assert route.body is not None
    # The contract's text and number rules, for every service alike (crm_kit.web.input).
    return load_body(data, route.body)


def _serialise(route: Route, result: Any) -> Response:
    if isinstance(result, Response):
        return result
    status = route.status
    headers: dict[str, str] = {}
    if isinstance(result, Reply):
        status = result.status or status
        headers = dict(result.headers)
        result = result.data
    if status == 204 or result is None:
        resp = Response(status=204 if status < 300 else status)
        resp.headers.update(headers)
        return resp
    if isinstance(result, ListResult):
        items = dump(route.response, result.items, many=True) if route.response else result.items
        payload: Any = {"items": items, "next_page_token": result.next_page_token}
    else:
        payload = dump(route.response, result) if route.response else result
        version = payload.get("version") if isinstance(payload, Mapping) else None
        if isinstance(version, int) and not isinstance(version, bool):
            headers.setdefault("ETag", etag_for(version))
            if request.method in ("GET", "HEAD") and if_none_match_hits(version):
                resp = Response(status=304)
                resp.headers.update(headers)
                return resp
    resp = Response(json.dumps(payload, default=str), status=status, mimetype="application/json")
    resp.headers.update(headers)
    return resp


def _make_view(route: Route) -> Callable[..., Response]:
    def view(**view_args: Any) -> Response:
        ctx = RequestContext(route)
        kit = ctx.kit
        consistency.start_request()
        g.crm_reads_copies = False  # until the wait for the read models (crm_kit.consistency.COPIES)
        if not route.public:
            ctx.identity = kit.verifier.identity_from_header(request.headers.get("Authorization"))
            g.crm_identity = ctx.identity
            require_permission(ctx.identity, route.permission)
        check_texts(view_args, status=404)  # an id with a NUL in it names nothing
        _check_acceptable(route)
        if route.query is not None:
            ctx.query = load_query(route.query)
        elif request.args:
            name = next(iter(request.args))
            raise Problem(422, f"Unknown query parameter {name!r}.", errors=[{"field": name,
                                                                              "message": "Unknown parameter."}])
        if route.body is not None:
            ctx.body = _load_body(route)
        if route.read_models:
            g.crm_reads_copies = True
            _await_read_models()

        key = request.headers.get(idem.HEADER) if route.idempotent else None
        if key is None:
            try:
                resp = _note_written(_serialise(route, route.handler(ctx, **view_args)))
                _finish_session(commit=resp.status_code < 400)
            except BaseException:
                _finish_session(commit=False)
                raise
            return resp
        return _idempotent_call(ctx, route, key, view_args)

    view.__name__ = route.endpoint
    view.crm_route = route  # type: ignore[attr-defined]
    return view


def _check_acceptable(route: Route) -> None:
    """406 when the request's ``Accept`` rules out the JSON this route answers with.

    Only JSON routes are checked here: a route producing something else (a download in the
    type it was uploaded with, a print in HTML or PDF) negotiates itself. An empty ``Accept``
    counts as none (any type).
    """
    if route.produces != "application/json" or not (request.headers.get("Accept") or "").strip():
        return
    if request.accept_mimetypes["application/json"] <= 0:
        raise Problem(406, f"This endpoint answers application/json only; the request's Accept "
                           f"({request.headers['Accept'][:200]}) rules it out.")


def _await_read_models() -> None:
    """Before the handler: wait until this service's read models are as fresh as the gateway
    asked (``crm_kit.consistency``); 503 when they are not within the wait, nothing written."""
    models = current_app.extensions.get("crm_read_models")
    if models is None:
        return
    try:
        requirement = consistency.Requirement.from_headers(request.headers, models.wait)
    except consistency.InvalidRequirementError as exc:
        raise Problem(400, str(exc)) from None
    if requirement is None:
        return
    try:
        # Mostly they are there already: one look in the request's own transaction (its first
        # statement), so the handler reads at least what the look saw, on the same connection.
        if models.met_in(request_session(), requirement):
            return
        # Behind: the wait looks again in transactions of its own; the request's transaction
        # (nothing read or written in it yet) starts afresh after it, never from an older snapshot.
        _finish_session(commit=False)
        if not models.wait_for(requirement):
            g.crm_stale = True
    except consistency.ConsistencyError as exc:
        raise Problem(503, exc.detail, headers={"Retry-After": str(consistency.RETRY_AFTER_SECONDS)}) from None


def _note_written(resp: Response) -> Response:
    """Tell the gateway which outbox row the request wrote last: its token will cover it.

    The events that the transaction holds back until its commit (the unit of work) are written
    first, in the same transaction, so the answer can name them.
    """
    session: Session | None = g.get("crm_session")
    if session is not None and resp.status_code < 400:
        write_held_back(session)
    written = consistency.written()
    if written is not None and resp.status_code < 400:
        resp.headers[consistency.WRITTEN] = str(written)
    return resp


def _replay(stored: idem.StoredResponse) -> Response:
    resp = Response(stored.body, status=stored.status)
    for name, value in stored.headers.items():
        resp.headers[name] = value
    resp.headers[idem.REPLAYED_HEADER] = "true"
    return resp


def _idempotent_call(ctx: RequestContext, route: Route, key: str, view_args: dict[str, Any]) -> Response:
    store: idem.IdempotencyStore = ctx.kit.idempotency
    principal = ctx.user.user_id
    idem.validate_key(key)
    fingerprint = idem.request_fingerprint(request.method, request.path, request.get_data(cache=True))
    try:
        stored = store.lookup(ctx.session, principal, key, fingerprint)
        if stored is not None:
            _finish_session(commit=True)  # may have purged an expired record
            return _replay(stored)
        resp = _note_written(_serialise(route, route.handler(ctx, **view_args)))
        if resp.status_code >= 400:
            _finish_session(commit=False)
            return resp
        if 200 <= resp.status_code < 300 and not resp.is_streamed:
            store.remember(ctx.session, principal, key, fingerprint, request.method, request.path,
                           resp.status_code, dict(resp.headers), resp.get_data(as_text=True))
        _finish_session(commit=True)
        return resp
    except IntegrityError:
        # Most likely a concurrent request with the same key committed first: replay it.
        _finish_session(commit=False)
        stored = store.lookup(request_session(), principal, key, fingerprint)
        _finish_session(commit=False)
        if stored is None:
            raise
        return _replay(stored)
    except BaseException:
        _finish_session(commit=False)
        raise
