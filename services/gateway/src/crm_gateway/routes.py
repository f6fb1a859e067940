"""The gateway's route table: every public path family -> owning service and permission.

Derived, never written by hand: ``route_table.json`` beside this module holds what the
services declare - every ``/v1`` path of their own OpenAPI documents, the service serving it,
the permission of each method (``x-permission``; ``null``: any valid token), the closed sets
of its path segments and the methods that take uploads. ``make routes`` writes it
(``tools/gateway-routes``) and a test fails when it is stale; the gateway's image carries the
file, not the services. Services check the same permission again themselves.

What the gateway adds to that data:

* **Order.** The first route whose *pattern* matches the path decides, and the routes are
  ordered segment by segment: fixed words, then closed sets, then any segment - so
  ``/v1/leads/overview`` comes before ``/v1/leads/{id}``. If that route does not take the
  request's method the answer is 405 with its ``Allow``; a path no route matches is 404.
  ``HEAD`` goes wherever ``GET`` goes, with its permission; ``OPTIONS`` is answered by the
  gateway itself from the table.
* **Segments.** ``{name}`` is one path segment (never ``.`` or ``..``), or one of its closed
  set where the service declares one (``{table}``: the eight catalogue tables).
* **Templates.** A route's pattern names the path's first id ``{id}``, as API.md does
  (``/v1/leads/{id}/contacts/{contact_id}``), whatever the service calls it; the pattern is
  also the route's metrics label, so labels stay few whatever the ids are.
* **Uploads.** The paths that take a multipart body get the upload limit (``crm_gateway.app``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from crm_kit.settings import SERVICES

ANY_TOKEN: None = None  # a route permission of None: any valid token will do
ROUTE_TABLE = Path(__file__).with_name("route_table.json")

_ANY_SEGMENT = r"(?!\.\.?(?:/|$))[^/]+"  # one segment, never a dot segment
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _compile(pattern: str, choices: Mapping[str, tuple[str, ...]]) -> re.Pattern[str]:
    out, pos = [], 0
    for m in _PLACEHOLDER.finditer(pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        name = m.group(1)
        closed = choices.get(name)
        body = "|".join(re.escape(c) for c in closed) if closed else _ANY_SEGMENT
        out.append(f"(?P<{name}>{body})")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out))


@dataclass(frozen=True)
class GatewayRoute:
    """One path family: its pattern, the service that owns it and a permission per method.

    ``choices`` restricts placeholders to closed sets; ``uploads`` are the methods that take
    a multipart body."""

    pattern: str
    service: str
    permissions: Mapping[str, str | None]
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    uploads: frozenset[str] = frozenset()
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.pattern.startswith("/v1/"):
            raise ValueError(f"{self.pattern}: routes live under /v1/")
        unknown = set(self.permissions) - _METHODS
        if unknown or not self.permissions:
            raise ValueError(f"{self.pattern}: methods must be some of {sorted(_METHODS)}, not {sorted(unknown)}")
        names = set(_PLACEHOLDER.findall(self.pattern))
        if set(self.choices) - names or any(not c for c in self.choices.values()):
            raise ValueError(f"{self.pattern}: closed sets {sorted(self.choices)} for placeholders {sorted(names)}")
        if set(self.uploads) - set(self.permissions):
            raise ValueError(f"{self.pattern}: uploads {sorted(self.uploads)} are not among its methods")
        object.__setattr__(self, "permissions", MappingProxyType(dict(self.permissions)))
        object.__setattr__(self, "choices", MappingProxyType({k: tuple(v) for k, v in self.choices.items()}))
        object.__setattr__(self, "uploads", frozenset(self.uploads))
        object.__setattr__(self, "regex", _compile(self.pattern, self.choices))

    @property
    def methods(self) -> tuple[str, ...]:
        """Every method this route answers (HEAD with GET; OPTIONS always), for ``Allow``."""
        methods = set(self.permissions) | {"OPTIONS"}
        if "GET" in methods:
            methods.add("HEAD")
        return tuple(m for m in _METHOD_ORDER if m in methods)

    def takes(self, method: str) -> bool:
        return method in self.methods

    def permission_for(self, method: str) -> str | None:
        """The permission ``method`` needs here (``None``: any valid token)."""
        return self.permissions["GET" if method == "HEAD" else method]

    @property
    def flask_rule(self) -> str:
        """The pattern as a werkzeug rule (``<name>``; a closed set as ``<any(a, b):name>``)."""
        def variable(m: re.Match[str]) -> str:
            closed = self.choices.get(m.group(1))
            return f"<any({', '.join(map(repr, closed))}):{m.group(1)}>" if closed else f"<{m.group(1)}>"

        return _PLACEHOLDER.sub(variable, self.pattern)
@dataclass(frozen=True)
class Match:
    """The route that serves a request, the permission it needs and the path's variables."""

    route: GatewayRoute
    method: str
    permission: str | None
    params: Mapping[str, str]

    @property
    def service(self) -> str:
        return self.route.service

    @property
    def template(self) -> str:
        return self.route.pattern


class RouteNotFoundError(LookupError):
    """No route of the table has this path."""


class MethodNotAllowedError(LookupError):
    """The path's route does not take this method."""

    def __init__(self, route: GatewayRoute, method: str) -> None:
        super().__init__(f"{method} is not allowed on {route.pattern}")
        self.route = route
        self.allowed = route.methods


class RouteTable:
    """An ordered list of routes; ``resolve`` finds the one serving a request."""

    def __init__(self, routes: Iterable[GatewayRoute]) -> None:
        self.routes: tuple[GatewayRoute, ...] = tuple(routes)
        for r in self.routes:
            if r.service not in SERVICES:
                raise ValueError(f"{r.pattern}: unknown service {r.service!r}")

    def __iter__(self) -> Iterator[GatewayRoute]:
        return iter(self.routes)

    def __len__(self) -> int:
        return len(self.routes)

    def route_for_path(self, path: str) -> tuple[GatewayRoute, dict[str, str]] | None:
        for route in self.routes:
            m = route.regex.fullmatch(path)
            if m:
                return route, m.groupdict()
        return None

    def resolve(self, method: str, path: str) -> Match:
        """The match for ``method path``; raises ``RouteNotFoundError`` or ``MethodNotAllowedError``."""
        method = method.upper()
        found = self.route_for_path(path)
        if found is None:
            raise RouteNotFoundError(path)
        route, params = found
        if method == "OPTIONS":  # answered by the gateway from the table; no permission involved
            return Match(route, method, ANY_TOKEN, params)
        if not route.takes(method):
            raise MethodNotAllowedError(route, method)
        return Match(route, method, route.permission_for(method), params)

    def resolve_template(self, method: str, template: str) -> Match | None:
        """The route a templated path (OpenAPI style, ``/v1/leads/{lead_id}``) reaches, if any.

        Used to decide which service owns a documented operation. A ``{...}`` segment of
        ``template`` is first matched against the routes' own ``{...}`` segments (so
        ``/v1/leads/{x}`` is the record, not ``/v1/leads/overview``), then against anything.
        """
        method = method.upper()
        segments = template.strip("/").split("/")
        for strict in (True, False):
            for route in self.routes:
                pattern_segments = route.pattern.strip("/").split("/")
                if len(pattern_segments) != len(segments):
                    continue
                if all(_segment_fits(seg, pat, strict, route.choices)
                       for seg, pat in zip(segments, pattern_segments, strict=True)):
                    if route.takes(method):
                        permission = None if method == "OPTIONS" else route.permission_for(method)
                        return Match(route, method, permission, {})
                    if strict:
                        return None
        return None


def _segment_fits(segment: str, pattern_segment: str, strict: bool, choices: Mapping[str, tuple[str, ...]]) -> bool:
    if _PLACEHOLDER.fullmatch(segment):  # a variable in the documented path
        return "{" in pattern_segment or not strict
    if "{" in segment:  # a variable inside a word ("{kind}-tables"): a fixed word must fit it
        return "{" in pattern_segment or _compile(segment, {}).fullmatch(pattern_segment) is not None
    return _compile(pattern_segment, choices).fullmatch(segment) is not None


def route(pattern: str, service: str, *, choices: Mapping[str, Iterable[str]] | None = None,
          uploads: Iterable[str] = (), **permissions: str | None) -> GatewayRoute:
    """``route("/v1/leads", "leads", GET="leads:view", POST="leads:create")``."""
    return GatewayRoute(pattern, service, permissions, {k: tuple(v) for k, v in (choices or {}).items()},
                        frozenset(uploads))


# -- from the services' declarations --------------------------------------------------------------

def template(path: str, choices: Mapping[str, Iterable[str]]) -> str:
    """The gateway's pattern for a declared path: its first id (a placeholder without a closed
    set) named ``{id}``: ``/v1/leads/{record_id}/groups/{group_id}`` -> ``/v1/leads/{id}/groups/{group_id}``."""
    for m in _PLACEHOLDER.finditer(path):
        if m.group(1) not in choices:
            return f"{path[:m.start()]}{{id}}{path[m.end():]}"
    return path


def _order(route: GatewayRoute) -> tuple[tuple[int, str], ...]:
    """Segment by segment: a fixed word (0) before a closed set (1) before any segment (2)."""
    key = []
    for segment in route.pattern.strip("/").split("/"):
        m = _PLACEHOLDER.fullmatch(segment)
        key.append((0, segment) if m is None else (1 if m.group(1) in route.choices else 2, ""))
    return tuple(key)


def load_routes(data: Mapping[str, Any]) -> list[GatewayRoute]:
    """The routes of the table's data (``route_table.json``), in the order they are tried."""
    routes = []
    for entry in data["routes"]:
        choices = {name: tuple(values) for name, values in (entry.get("choices") or {}).items()}
        routes.append(GatewayRoute(template(entry["path"], choices), entry["service"], entry["permissions"],
                                   choices, frozenset(entry.get("uploads") or ())))
    return sorted(routes, key=_order)


def read_route_table(path: Path = ROUTE_TABLE) -> RouteTable:
    """The table of ``route_table.json`` (``make routes``)."""
    return RouteTable(load_routes(json.loads(path.read_text(encoding="utf-8"))))


def segment_choices(table: Iterable[GatewayRoute]) -> Mapping[str, tuple[str, ...]]:
    """Every closed set of the table, by placeholder name."""
    out: dict[str, tuple[str, ...]] = {}
    for r in table:
        for name, values in r.choices.items():
            out[name] = tuple(dict.fromkeys((*out.get(name, ()), *values)))
    return MappingProxyType(out)


ROUTES = read_route_table()
SEGMENT_CHOICES = segment_choices(ROUTES)


