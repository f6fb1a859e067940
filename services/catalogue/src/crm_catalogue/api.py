"""The catalogue's HTTP routes: one generic set of five routes, declared per resource.

A ``Resource`` says where a collection lives, which rows its URL may see, how it is
sorted and filtered, and which rule saves or deletes an entity; ``_register`` declares
``POST``, ``GET`` (list), ``GET``/``PATCH``/``DELETE`` of one item for it. Stages are two
resources (one per kind), the 8 tables are one resource per kind with ``<table>`` in the
URL, templates are one. Reads need any valid token, writes ``catalogue:admin``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from crm_catalogue import rules, schemas
from crm_catalogue.errors import UnknownEntity, UnknownTable
from crm_catalogue.journal import Journal
from crm_catalogue.tables import KINDS, TABLES, stage_templates, stages, table_entries, templates
from crm_catalogue.views import STAGE, TABLE_ENTRY, TEMPLATE, Aggregate, View
from crm_kit.web import Api, ListResult, Reply, RequestContext, SortKey, check_if_match

ADMIN = "catalogue:admin"

Where = list[ColumnElement[bool]]
Saver = Callable[[Session, Journal, Mapping[str, str], dict[str, Any], View | None], str]
Remover = Callable[[Session, Journal, View], None]


@dataclass(frozen=True)
class Resource:
    """One collection of the catalogue and what differs about it."""

    label: str  # "lead stage": summaries, messages and (with _) operation ids
    plural: str  # "lead stages"
    path: str  # the collection's Flask rule; the item is path/<id_var>
    id_var: str
    aggregate: Aggregate
    create: type[Schema]
    patch: type[Schema]
    out: type[Schema]
    query: type[Schema]
    scope: Callable[[Mapping[str, str]], Where]  # rows this URL may see (its kind, its table)
    filters: Callable[[Mapping[str, Any]], Where]  # from the list's query parameters
    sort: tuple[SortKey, ...]
    save: Saver
    remove: Remover
    example: Mapping[str, Any] | None = None  # a create body for the OpenAPI document


def _localised(ctx: RequestContext, view: View) -> View:
    """Add ``name``: ``names`` in the best language of Accept-Language, else the default, else any."""
    names = view.get("names")
    if names is None:
        return view
    available = sorted(names)
    language = ctx.language(available)
    if language not in names and available:
        language = available[0]
        ctx.note_language(language)  # the answer's Content-Language is the name's
    return {**view, "name": names.get(language, "")}


def _register(api: Api, res: Resource) -> None:
    item_rule = f"{res.path}/<{res.id_var}>"

    def load(ctx: RequestContext, args: dict[str, str]) -> View:
        entity_id = args.pop(res.id_var)
        table = res.aggregate.table
        row = ctx.session.execute(select(table).where(table.c.id == entity_id, *res.scope(args))).first()
        if row is None:
            raise UnknownEntity(f"No {res.label} with id {entity_id!r}.")
        return res.aggregate.views(ctx.session, [row])[0]

    def reply(ctx: RequestContext, entity_id: str) -> View:
        view = res.aggregate.load(ctx.session, entity_id)
        assert view is not None
        return _localised(ctx, view)

    def create(ctx: RequestContext, **args: str) -> Reply:
        res.scope(args)  # an unknown <table> is a 404 before anything else
        journal = Journal(ctx.session, ctx.user)
        entity_id = res.save(ctx.session, journal, args, ctx.body, None)
        journal.publish()
        location = res.path.replace("<table>", args.get("table", "")) + f"/{entity_id}"
        return Reply(reply(ctx, entity_id), headers={"Location": location})

    def list_all(ctx: RequestContext, **args: str) -> ListResult:
        table = res.aggregate.table
        filters = {k: v for k, v in ctx.query.items() if k not in ("page_size", "page_token")}
        stmt = select(table).where(*res.scope(args), *res.filters(filters))
        fingerprint = repr(sorted({**args, **filters}.items()))
        page = ctx.page(stmt, list(res.sort), fingerprint=fingerprint)
        return ListResult([_localised(ctx, v) for v in res.aggregate.views(ctx.session, page.rows)],
                          page.next_page_token)

    def get(ctx: RequestContext, **args: str) -> View:
        return _localised(ctx, load(ctx, args))

    def patch(ctx: RequestContext, **args: str) -> View:
        current = load(ctx, args)
        check_if_match(current["version"])
        journal = Journal(ctx.session, ctx.user)
        entity_id = res.save(ctx.session, journal, args, ctx.body, current)
        journal.publish()
        return reply(ctx, entity_id)

    def remove(ctx: RequestContext, **args: str) -> None:
        current = load(ctx, args)
        check_if_match(current["version"])
        journal = Journal(ctx.session, ctx.user)
        res.remove(ctx.session, journal, current)
        journal.publish()

    many, one = res.plural.replace(" ", "_"), res.label.replace(" ", "_")
    declared: list[tuple[str, str, Callable[..., Any], str, str, dict[str, Any]]] = [
        ("POST", res.path, create, many, f"Create a {res.label}",
         {"permission": ADMIN, "body": res.create, "response": res.out, "errors": (404, 409), "example": res.example}),
        ("GET", res.path, list_all, many, f"List {res.plural}, ordered by {res.sort[0].name}",
         {"query": res.query, "response": res.out, "many": True}),
        ("GET", item_rule, get, one, f"Read a {res.label}", {"response": res.out}),
        ("PATCH", item_rule, patch, one, f"Change a {res.label}",
         {"permission": ADMIN, "body": res.patch(partial=True), "response": res.out, "errors": (409,)}),
        ("DELETE", item_rule, remove, one, f"Delete a {res.label}",
         {"permission": ADMIN, "status": 204, "errors": (409,)}),
    ]
    for method, rule, handler, name, summary, options in declared:
        # The name makes the endpoint and the operation id (<method>_<name>) unique.
        handler.__name__ = handler.__qualname__ = name
        params = {"table": {"type": "string", "enum": list(TABLES)}} if "<table>" in rule else None
        api.route(method, rule, summary=summary, params=params, **options)(handler)


# -- the resources ------------------------------------------------------------------------------

def _active(query: Mapping[str, Any], column: Any) -> Where:
    return [column == query["active"]] if "active" in query else []


def _stage_resource(kind: str) -> Resource:
    return Resource(
        label=f"{kind} stage", plural=f"{kind} stages", path=f"/v1/{kind}-stages", id_var="stage_id", aggregate=STAGE,
        create=schemas.StageIn, patch=schemas.StagePatch, out=schemas.StageOut, query=schemas.ActiveQuery,
        scope=lambda args: [stages.c.kind == kind],
        filters=lambda query: _active(query, stages.c.active),
        sort=(SortKey("index", stages.c.index), SortKey("id", stages.c.id)),
        save=lambda session, journal, args, body, current: rules.save_stage(session, journal, kind, body, current),
        remove=rules.delete_stage,
        example={"names": {"en": "Qualified", "nl": "Gekwalificeerd"}, "code": f"QUALIFIED_{kind.upper()}",
                 "index": 20, "color": "#2E7D32", "remarks": "Call within two working days."},
    )


def _table_scope(kind: str) -> Callable[[Mapping[str, str]], Where]:
    def scope(args: Mapping[str, str]) -> Where:
        table_name = TABLES.get(args["table"])
        if table_name is None:
            raise UnknownTable(f"There is no table {args['table']!r}; the tables are {', '.join(TABLES)}.")
        return [table_entries.c.kind == kind, table_entries.c.table_name == table_name]

    return scope


def _table_resource(kind: str) -> Resource:
    return Resource(
        label=f"{kind} table entry", plural=f"{kind} table entries", path=f"/v1/{kind}-tables/<table>",
        id_var="entry_id", aggregate=TABLE_ENTRY,
        create=schemas.EntryIn, patch=schemas.EntryPatch, out=schemas.EntryOut, query=schemas.ActiveQuery,
        scope=_table_scope(kind),
        filters=lambda query: _active(query, table_entries.c.active),
        sort=(SortKey("index", table_entries.c.index), SortKey("id", table_entries.c.id)),
        save=lambda session, journal, args, body, current: rules.save_entry(
            session, journal, kind, TABLES[args["table"]], body, current),
        remove=rules.delete_entry,
        example={"names": {"en": "Trade fair", "nl": "Beurs"}, "code": "FAIR", "index": 10},
    )


def _template_filters(query: Mapping[str, Any]) -> Where:
    where: Where = [templates.c[name] == query[name] for name in ("kind", "visible_at") if name in query]
    if "stage_id" in query:
        where.append(templates.c.id.in_(select(stage_templates.c.template_id)
                                        .where(stage_templates.c.stage_id == query["stage_id"])))
    return where


TEMPLATES = Resource(
    label="template", plural="templates", path="/v1/templates", id_var="template_id", aggregate=TEMPLATE,
    create=schemas.TemplateIn, patch=schemas.TemplatePatch, out=schemas.TemplateOut, query=schemas.TemplateQuery,
    scope=lambda args: [], filters=_template_filters,
    sort=(SortKey("name", templates.c.name), SortKey("id", templates.c.id)),
    save=lambda session, journal, args, body, current: rules.save_template(session, journal, body, current),
    remove=rules.delete_template,
    example={"kind": "email", "name": "Follow-up", "subject": "About {{ record.title }}",
             "body": "Dear customer, about {{ record.title }} ...", "visible_at": "lead_stage"},
)

RESOURCES = [*(_stage_resource(kind) for kind in KINDS), *(_table_resource(kind) for kind in KINDS), TEMPLATES]


def build_api() -> Api:
    """Every route of the catalogue."""
    api = Api("catalogue")
    for resource in RESOURCES:
        _register(api, resource)
    return api
