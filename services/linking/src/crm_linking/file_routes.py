"""The routes of the five files (the web edge; the rules are ``files.py``'s).

``_register`` declares the same five routes (``POST``, ``GET`` list, ``GET``/``PATCH``/``DELETE``
one) for each ``FileSpec``, and ``_register_bulk`` the bulk create of the files that have one
(imports). ``files:view`` reads, ``files:edit`` writes. What a response adds to a file (a job
order's ``related_to``, an activity's ``lead``/``opportunity`` with their stages) is presentation,
so it is here too (``DECORATORS``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import RAISE
from sqlalchemy import or_, select

from crm_catalogue_view import CatalogueEntryView, CatalogueView
from crm_kit.bulk import MAX_BULK_CREATE
from crm_kit.web import Api, ListResult, Reply, RequestContext, SortKey, check_if_match
from crm_linking import file_schemas as schemas
from crm_linking.access import PLURALS, load_record, may_see
from crm_linking.files import (
    ACTIVITIES,
    BULK_CREATABLE,
    EDIT_FILES,
    JOB_ORDERS,
    SPECS,
    VIEW_FILES,
    FileSpec,
    View,
    bulk_create,
    create_file,
    delete_file,
    load_file,
    update_file,
)
from crm_linking.tables import catalogue_view, record_job_orders, record_views

Decorator = Callable[[RequestContext, list[View], bool], None]


# -- what a response adds ------------------------------------------------------------------------

def _related_to(ctx: RequestContext, views: list[View], detail: bool) -> None:
    """``related_to``: the lead and the opportunity each job order is linked to."""
    by_id = {v["id"]: v for v in views}
    for view in views:
        view["related_to"] = {"lead_id": None, "opportunity_id": None}
    rows = ctx.session.execute(select(record_job_orders).where(record_job_orders.c.job_order_id.in_(list(by_id)))).all()
    for row in rows:
        by_id[row.job_order_id]["related_to"][f"{row.record_kind}_id"] = row.record_id


def _stage(ctx: RequestContext, stage: CatalogueEntryView | None, stage_id: str) -> View:
    default_language = ctx.settings["CRM_DEFAULT_LANGUAGE"]
    if stage is None:  # not in this service's catalogue copy (yet)
        return {"id": stage_id, "name": "", "code": "", "color": None, "is_end": False}
    return {"id": stage.id, "name": stage.name(ctx.language(list(stage.names)), default_language),
            "code": stage.code, "color": stage.attr("color"), "is_end": bool(stage.attr("is_end"))}


def _linked_record(ctx: RequestContext, kind: str, record_id: str) -> View:
    """The record from the read model with its stage and the stages it may move to; only the
    id when the read model does not know it or the caller may not see it."""
    row = ctx.session.execute(select(record_views).where(record_views.c.id == record_id,
                                                         record_views.c.kind == kind)).first()
    if row is None or not may_see(ctx.user, row.office_id) or not ctx.user.has(f"{PLURALS[kind]}:view"):
        return {"id": record_id}
    view = CatalogueView(catalogue_view)
    current = view.get(ctx.session, row.stage_id) if row.stage_id else None
    return {
        "id": row.id,
        "title": row.title,
        "stage": _stage(ctx, current, row.stage_id) if row.stage_id else None,
        "allowed_stages": [_stage(ctx, s, s.id) for s in view.stages(ctx.session, kind, active_only=True)
                           if s.id != row.stage_id],
    }


def _linked_records(ctx: RequestContext, views: list[View], detail: bool) -> None:
    """``lead`` / ``opportunity`` on one activity (lists leave them out: a stage list per item)."""
    if not detail:
        return
    for view in views:
        for name, kind in ACTIVITIES.record_links.items():
            if view.get(name):
                view[kind] = _linked_record(ctx, kind, view[name])


# What a response adds to each kind of file (detail=True for one file).
DECORATORS: dict[str, Decorator] = {JOB_ORDERS.collection: _related_to, ACTIVITIES.collection: _linked_records}


def present(ctx: RequestContext, spec: FileSpec, views: list[View], *, detail: bool) -> list[View]:
    """Views as the API shows them (with the spec's derived fields)."""
    decorate = DECORATORS.get(spec.collection)
    if decorate is not None and views:
        decorate(ctx, views, detail)
    return views


# -- the routes ----------------------------------------------------------------------------------

def _register(api: Api, spec: FileSpec) -> None:
    id_var = f"{spec.entity}_id"
    item_rule = f"{spec.path}/<{id_var}>"
    order = [SortKey("modified_at", spec.table.c.modified_at, descending=True),
             SortKey("id", spec.table.c.id, descending=True)]

    def one(ctx: RequestContext, view: View) -> View:
        return present(ctx, spec, [view], detail=True)[0]

    def create(ctx: RequestContext) -> Reply:
        view = create_file(ctx.session, ctx.user, spec, ctx.body)
        return Reply(one(ctx, view), headers={"Location": f"{spec.path}/{view['id']}"})

    def list_all(ctx: RequestContext) -> ListResult:
        table = spec.table
        for name, kind in spec.record_links.items():
            if name in ctx.query:  # as the record's own tab: 404 for a record the caller cannot see
                load_record(ctx.session, kind, ctx.query[name], ctx.user)
        where = [table.c[name] == ctx.query[name] for name in spec.filters if name in ctx.query]
        if spec.visible_to is not None:
            where.append(spec.visible_to(ctx.user))
        q = (ctx.query.get("q") or "").strip()
        if q:
            where.append(or_(*(column.icontains(q, autoescape=True) for column in spec.search)))
        fingerprint = repr(sorted([(name, ctx.query[name]) for name in spec.filters if name in ctx.query]
                                  + [("q", q)]))
        page = ctx.page(select(table).where(*where), order, fingerprint=fingerprint)
        views = [dict(row._mapping) for row in page.rows]
        return ListResult(present(ctx, spec, views, detail=False), page.next_page_token)

    def get(ctx: RequestContext, **args: str) -> View:
        return one(ctx, load_file(ctx.session, spec, args[id_var], ctx.user))

    def patch(ctx: RequestContext, **args: str) -> View:
        current = load_file(ctx.session, spec, args[id_var], ctx.user)
        check_if_match(current["version"])
        return one(ctx, update_file(ctx.session, ctx.user, spec, current, ctx.body))

    def remove(ctx: RequestContext, **args: str) -> None:
        current = load_file(ctx.session, spec, args[id_var], ctx.user)
        check_if_match(current["version"])
        delete_file(ctx.session, ctx.user, spec, current)

    plural, singular = spec.collection.replace("-", "_"), spec.entity
    label = spec.label
    declared: list[tuple[str, str, str, Callable[..., Any], str, str, dict[str, Any]]] = [
        ("create", "POST", spec.path, create, plural, f"Create a {label}",
         {"permission": EDIT_FILES, "body": spec.body, "response": spec.out, "example": spec.example}),
        ("list", "GET", spec.path, list_all, plural, f"List {spec.collection.replace('-', ' ')}, last modified "
                                                     "first (q: simple search)",
         {"permission": VIEW_FILES, "query": spec.query, "response": spec.out, "many": True}),
        ("get", "GET", item_rule, get, singular, f"Read a {label}", {"permission": VIEW_FILES, "response": spec.out}),
        ("patch", "PATCH", item_rule, patch, singular, f"Change a {label}",
         {"permission": EDIT_FILES, "body": spec.patch(partial=True), "response": spec.out}),
        ("delete", "DELETE", item_rule, remove, singular, f"Delete a {label}",
         {"permission": EDIT_FILES, "status": 204}),
    ]
    for what, method, rule, handler, name, summary, options in declared:
        # The name makes the endpoint and the operation id (<method>_<name>) unique.
        handler.__name__ = handler.__qualname__ = name
        api.route(method, rule, summary=summary, errors=spec.errors.get(what, ()), **options)(handler)


def _register_bulk(api: Api, spec: FileSpec) -> None:
    body, item = schemas.bulk_create_schemas(spec.body, spec.collection, spec.path)
    item_schema = item()
    item_schema.unknown = RAISE
    plural = spec.collection.replace("-", "_")

    def bulk(ctx: RequestContext) -> dict[str, Any]:
        return {"results": bulk_create(ctx.session, ctx.user, spec, item_schema, ctx.body["items"])}

    bulk.__doc__ = (f"Each item is the body of POST {spec.path} plus its idempotency `key`, checked exactly as that "
                    f"create (one bad item fails alone, with `errors` naming its fields), and made with the same "
                    f"`linking.{spec.entity}.created` event; all in one transaction. One result per item, in order: "
                    f"`created` (with the new id), `exists` (your office used the key before: nothing made, the id "
                    f"of the {spec.label} it made) or `error`. Re-sending the same items creates nothing twice.")
    bulk.__name__ = bulk.__qualname__ = f"bulk_{plural}"
    api.route("POST", f"{spec.path}/bulk", permission=EDIT_FILES, body=body, response=schemas.BulkCreateOut,
              status=200, example={"action": "create", "items": [{**(spec.example or {}), "key": "import.csv:2"}]},
              summary=f"Create up to {MAX_BULK_CREATE} {spec.collection} at once (imports); each item "
                      "succeeds or fails on its own")(bulk)


def build_files_api() -> Api:
    """The routes of the five files: companies, contacts, job orders, placements, activities;
    and bulk creates of companies and contacts (imports)."""
    api = Api("files")
    for spec in SPECS.values():
        if spec.collection in BULK_CREATABLE:
            _register_bulk(api, spec)
        _register(api, spec)
    return api
