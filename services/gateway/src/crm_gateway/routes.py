"""The gateway's route table: every public path family -> owning service and permission.

One declarative table, read top to bottom: the first route whose *pattern* matches the
path decides (so fixed words such as ``/v1/leads/overview`` come before ``/v1/leads/{id}``);
if that route does not take the request's method the answer is 405 with its ``Allow``.
A path no route matches is 404. ``HEAD`` goes wherever ``GET`` goes, with its permission;
``OPTIONS`` is answered by the gateway itself from the table.

Patterns use ``{name}`` for one path segment (never ``.`` or ``..``); a few names are
restricted to a closed set (``{table}``: the eight catalogue tables). A route's pattern is
also its metrics label (the route template), so labels stay few whatever the ids are.

Permissions are the API contract's: ``None`` means any valid token (catalogue reads);
services check the same permission again themselves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from crm_kit.settings import SERVICES

ANY_TOKEN: None = None  # a route permission of None: any valid token will do

KINDS = ("lead", "opportunity")
CATALOGUE_TABLES = (
    "attributes", "categories", "groups", "priorities", "procedures", "roles", "sources", "stage-groups",
)
FILE_COLLECTIONS = ("companies", "contacts", "job-orders", "placements", "activities")
BULK_FILE_COLLECTIONS = ("companies", "contacts")  # bulk create (imports)

# Placeholder names restricted to a closed set; every other name is one path segment.
SEGMENT_CHOICES: Mapping[str, tuple[str, ...]] = MappingProxyType({"table": CATALOGUE_TABLES})
_ANY_SEGMENT = r"(?!\.\.?(?:/|$))[^/]+"  # one segment, never a dot segment
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


def _compile(pattern: str) -> re.Pattern[str]:
    out, pos = [], 0
    for m in _PLACEHOLDER.finditer(pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        name = m.group(1)
        choices = SEGMENT_CHOICES.get(name)
        body = "|".join(re.escape(c) for c in choices) if choices else _ANY_SEGMENT
        out.append(f"(?P<{name}>{body})")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out))


@dataclass(frozen=True)
class GatewayRoute:
    """One path family: its pattern, the service that owns it and a permission per method."""

    pattern: str
    service: str
    permissions: Mapping[str, str | None]
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.pattern.startswith("/v1/"):
            raise ValueError(f"{self.pattern}: routes live under /v1/")
        unknown = set(self.permissions) - _METHODS
        if unknown or not self.permissions:
            raise ValueError(f"{self.pattern}: methods must be some of {sorted(_METHODS)}, not {sorted(unknown)}")
        object.__setattr__(self, "permissions", MappingProxyType(dict(self.permissions)))
        object.__setattr__(self, "regex", _compile(self.pattern))

    @property
    def methods(self) -> tuple[str, ...]:
        """Every method this route answers (HEAD with GET; OPTIONS always), for ``Allow``."""
        methods = set(self.permissions) | {"OPTIONS"}
        if "GET" in methods:
            methods.add("HEAD")
        order = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
        return tuple(m for m in order if m in methods)

    def takes(self, method: str) -> bool:
        return method in self.methods

    def permission_for(self, method: str) -> str | None:
        """The permission ``method`` needs here (``None``: any valid token)."""
        return self.permissions["GET" if method == "HEAD" else method]


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
                if all(_segment_fits(seg, pat, strict) for seg, pat in zip(segments, pattern_segments, strict=True)):
                    if route.takes(method):
                        permission = None if method == "OPTIONS" else route.permission_for(method)
                        return Match(route, method, permission, {})
                    if strict:
                        return None
        return None


def _segment_fits(segment: str, pattern_segment: str, strict: bool) -> bool:
    if "{" in segment:  # a variable in the documented path
        return "{" in pattern_segment or not strict
    return _compile(pattern_segment).fullmatch(segment) is not None


def route(pattern: str, service: str, **permissions: str | None) -> GatewayRoute:
    """``route("/v1/leads", "leads", GET="leads:view", POST="leads:create")``."""
    return GatewayRoute(pattern, service, permissions)


# -- the table ----------------------------------------------------------------------------------

CATALOGUE_ADMIN = "catalogue:admin"
TRIGGERS_ADMIN = "triggers:admin"
FILES_VIEW, FILES_EDIT = "files:view", "files:edit"


def _catalogue_routes() -> list[GatewayRoute]:
    routes: list[GatewayRoute] = []
    read_write = {"GET": ANY_TOKEN, "POST": CATALOGUE_ADMIN}
    item = {"GET": ANY_TOKEN, "PATCH": CATALOGUE_ADMIN, "DELETE": CATALOGUE_ADMIN}
    for kind in KINDS:
        routes += [
            route(f"/v1/{kind}-stages", "catalogue", **read_write),
            route(f"/v1/{kind}-stages/{{id}}", "catalogue", **item),
            route(f"/v1/{kind}-tables/{{table}}", "catalogue", **read_write),
            route(f"/v1/{kind}-tables/{{table}}/{{id}}", "catalogue", **item),
        ]
    routes += [
        route("/v1/templates", "catalogue", **read_write),
        route("/v1/templates/{id}", "catalogue", **item),
    ]
    return routes


def _record_routes(records: str) -> list[GatewayRoute]:
    """Leads or opportunities: the record service's own paths and the linking service's tabs.

    ``/v1/{records}/wizard`` is not here: the gateway serves it itself (``crm_gateway.wizard``).
    """
    view, create, edit, delete = (f"{records}:{a}" for a in ("view", "create", "edit", "delete"))
    base, item = f"/v1/{records}", f"/v1/{records}/{{id}}"
    routes = [
        route(base, records, GET=view, POST=create),
        # Fixed words under the collection, before {id} would take them as an id.
        route(f"{base}/overview", records, GET=view),
        route(f"{base}/bulk", records, POST=edit),  # the service checks each action (delete: :delete, create: :create)
        route(f"{base}/reports/stages", records, GET=view),
        *_import_routes(base, records, create),
    ]
    if records == "leads":
        routes.append(route(f"{base}/reports/funnel", records, GET=view))
    routes += [
        route(item, records, GET=view, PATCH=edit, DELETE=delete),
        route(f"{item}/stage-history", records, GET=view),
        route(f"{item}/groups", records, POST=edit),
        route(f"{item}/groups/{{group_id}}", records, DELETE=edit),
        route(f"{item}/copy", records, POST=create),
        route(f"{item}/templates", records, GET=view),
        route(f"{item}/print", records, POST=view),  # renders, changes nothing
        route(f"{item}/attachments", records, GET=view, POST=edit),
        route(f"{item}/attachments/{{attachment_id}}", records, GET=view, DELETE=edit),
    ]
    if records == "leads":
        routes.append(route(f"{item}/convert", records, POST=edit))
    # Detail tabs: the links between records and files live in the linking service.
    routes += [
        route(f"{item}/contacts", "linking", GET=view, POST=edit),
        route(f"{item}/contacts/{{contact_id}}", "linking", PATCH=edit, DELETE=edit),
        route(f"{item}/job-orders", "linking", GET=view, POST=edit),
        route(f"{item}/job-orders/{{job_order_id}}", "linking", DELETE=edit),
        route(f"{item}/activities", "linking", GET=view),
        route(f"{item}/placements", "linking", GET=view),
        route(f"{item}/timeline", "linking", GET=view),
    ]
    return routes


def _import_routes(base: str, service: str, create: str) -> list[GatewayRoute]:
    """A collection's CSV imports (``crm_kit.imports``): every route needs its create permission."""
    jobs, job = f"{base}/imports", f"{base}/imports/{{id}}"
    return [
        route(jobs, service, GET=create, POST=create),
        route(job, service, GET=create, DELETE=create),
        route(f"{job}/rows", service, GET=create, POST=create),
        route(f"{job}/mapping", service, PUT=create),
        route(f"{job}/start", service, POST=create),
        route(f"{job}/result", service, GET=create),
    ]


def _file_routes() -> list[GatewayRoute]:
    routes: list[GatewayRoute] = []
    for collection in FILE_COLLECTIONS:
        routes.append(route(f"/v1/{collection}", "linking", GET=FILES_VIEW, POST=FILES_EDIT))
        if collection in BULK_FILE_COLLECTIONS:  # fixed words, before {id} would take them as an id
            routes.append(route(f"/v1/{collection}/bulk", "linking", POST=FILES_EDIT))
            routes += _import_routes(f"/v1/{collection}", "linking", FILES_EDIT)
        routes.append(route(f"/v1/{collection}/{{id}}", "linking", GET=FILES_VIEW, PATCH=FILES_EDIT,
                            DELETE=FILES_EDIT))
    # Lists of records reached from a file show record data: they need the record's view.
    routes += [
        route("/v1/contacts/{id}/leads", "linking", GET="leads:view"),
        route("/v1/contacts/{id}/opportunities", "linking", GET="opportunities:view"),
        route("/v1/companies/{id}/leads", "linking", GET="leads:view"),
    ]
    return routes


def _trigger_routes() -> list[GatewayRoute]:
    return [
        route("/v1/triggers", "triggers", GET=TRIGGERS_ADMIN, POST=TRIGGERS_ADMIN),
        route("/v1/triggers/{id}", "triggers", GET=TRIGGERS_ADMIN, PATCH=TRIGGERS_ADMIN, DELETE=TRIGGERS_ADMIN),
        route("/v1/triggers/{id}/executions", "triggers", GET=TRIGGERS_ADMIN),
        route("/v1/triggers/{id}/dry-run", "triggers", POST=TRIGGERS_ADMIN),
        route("/v1/trigger-executions", "triggers", GET=TRIGGERS_ADMIN),
    ]


def build_routes() -> list[GatewayRoute]:
    return [
        *_catalogue_routes(),
        *_record_routes("leads"),
        *_record_routes("opportunities"),
        *_file_routes(),
        *_trigger_routes(),
    ]


ROUTES = RouteTable(build_routes())

# Multipart uploads (attachments) take CRM_MAX_UPLOAD_BYTES instead of the JSON body limit.
UPLOAD_RULE = "/v1/<any(leads, opportunities):records>/<record_id>/attachments"
