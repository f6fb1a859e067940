"""HTTP routes of pipeline records, declared once for any kind."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from crm_catalogue_view import CatalogueEntryView, CatalogueView
from crm_kit.bulk import MAX_BULK_CREATE
from crm_kit.errors import DomainError, NotFound
from crm_kit.web import Api, ListResult, Reply, RequestContext, check_if_match
from crm_pipeline.attachment_routes import delete_blobs_with_record
from crm_pipeline.bulk import bulk_create as create_in_bulk
from crm_pipeline.bulk import bulk_item_schema
from crm_pipeline.bulk import check_office as check_record_office
from crm_pipeline.errors import MissingPermission, TitleRequired
from crm_pipeline.events import Actor
from crm_pipeline.kind import RecordKind
from crm_pipeline.queries import GROUP_IDS, group_ids_of, list_statement, load_visible, overview
from crm_pipeline.records import Records, new_group_ids
from crm_pipeline.schemas import (
    CREATE,
    BulkOut,
    GroupIn,
    HistoryOut,
    bulk_schemas,
    overview_schemas,
    record_schemas,
)

# What a copy takes over from its source (never lead_id: an opportunity has at most one lead, set by
# its conversion; never office_id: the copy is the caller's, in their office unless they say otherwise).
_COPIED = ("title", "description", "company_id", "contact_id", "source_id", "priority_id", "category_id",
           "procedure_id", "attribute_ids", "amount", "currency", "probability", "expected_close_date")


@dataclass(frozen=True)
class RecordsApi:
    """What a kind's own routes (``RecordKind.extend_api``) share with the common ones."""

    kind: RecordKind
    tables: Mapping[str, Table]
    records: Records
    present: Presenter
    load: Callable[[RequestContext, str], Any]  # the record, if the caller may see it (else UnknownRecord)
    out: Schema  # the record's representation


# The list query's columns that only serve the page (sort key, stage version, group ids), not the answer.
_LIST_HELPERS = ("stage_index", "stage_version", GROUP_IDS)


class Presenter:
    """Rows to the contract's JSON: the stage is shown in the caller's language."""

    def __init__(self, kind: RecordKind, records: Records) -> None:
        self.kind = kind
        self.records = records
        self.view = records.view
        self.stage_versions = StageVersions(records.view, kind.kind)

    def many(self, ctx: RequestContext, rows: list[Any], *,
             groups: Mapping[str, list[str]] | None = None,
             stages: Mapping[str, CatalogueEntryView] | None = None) -> list[dict[str, Any]]:
        """``groups``: each row's group ids when the caller already has them (no query); ``stages``:
        the stages of the rows by id when the caller already has them (``page``).

        The catalogue copy is read once for all ``rows``, and each stage's representation (its
        name in the caller's language) is made once and shared by the rows in that stage."""
        if not rows:
            return []
        if groups is None:
            groups = self.records.group_ids_of(ctx.session, [r.id for r in rows])
        if stages is not None:
            pass
        elif len(rows) == 1:  # one read by primary key rather than every stage of the kind
            found = self.view.get(ctx.session, rows[0].stage_id)
            stages = {found.id: found} if found else {}
        else:
            stages = {s.id: s for s in self.view.stages(ctx.session, self.kind.kind)}
        shown = _StagesShown(ctx, stages)
        out = []
        for row in rows:
            item = row._asdict()
            for helper in _LIST_HELPERS:
                item.pop(helper, None)
            item["stage"] = shown.of(row.stage_id)
            item["group_ids"] = groups[row.id]
            out.append(item)
        return out

    def page(self, ctx: RequestContext, rows: list[Any], dialect: str) -> list[dict[str, Any]]:
        """A list page: rows of ``list_statement`` on ``dialect``, which carry their stage's version
        in the copy and their group ids."""
        stages = self.stage_versions.stages(ctx.session, {(r.stage_id, r.stage_version) for r in rows})
        return self.many(ctx, rows, stages=stages, groups={r.id: group_ids_of(r, dialect) for r in rows})

    def one(self, ctx: RequestContext, row: Any, group_ids: list[str] | None = None,
            stage: CatalogueEntryView | None = None) -> dict[str, Any]:
        """``stage``: the row's stage when the caller already has it (no query)."""
        return self.many(ctx, [row], groups=None if group_ids is None else {row.id: group_ids},
                         stages=None if stage is None else {stage.id: stage})[0]


class StageVersions:
    """The kind's stages in the catalogue copy, kept in the process by id and version.

    A version of a catalogue entry never changes (the copy keeps only strictly newer versions,
    ``apply_catalogue_event``), so a list page, whose query reads each row's stage version along
    with the row (``list_statement``), needs the copy only when it meets a version not seen
    before; then it reads the kind's stages once, as before. A version that is no active stage
    of the kind (deleted, or another kind's entry) is remembered as unknown."""

    def __init__(self, view: CatalogueView, kind: str) -> None:
        self.view = view
        self.kind = kind
        self._known: dict[tuple[str, int], CatalogueEntryView | None] = {}

    def stages(self, session: Session, wanted: set[tuple[str, int | None]]) -> dict[str, CatalogueEntryView]:
        """The stages of ``wanted`` (stage id, its version in the copy, None if it is not there) by id."""
        known = self._known
        found: dict[str, CatalogueEntryView] = {}
        for stage_id, version in wanted:
            if version is None:
                continue  # not in the copy
            key = (stage_id, version)
            if key not in known:
                return self._refresh(session, wanted)
            entry = known[key]
            if entry is not None:
                found[stage_id] = entry
        return found

    def _refresh(self, session: Session, wanted: set[tuple[str, int | None]]) -> dict[str, CatalogueEntryView]:
        fresh = {s.id: s for s in self.view.stages(session, self.kind)}
        known: dict[tuple[str, int], CatalogueEntryView | None] = {(s.id, s.version): s for s in fresh.values()}
        for stage_id, version in wanted:
            if version is not None and stage_id not in fresh:
                known[(stage_id, version)] = None
        self._known = known  # replaced whole: other threads read the old one or this one
        return {stage_id: fresh[stage_id] for stage_id, _ in wanted if stage_id in fresh}


class _StagesShown:
    """The ``stage`` of records as the caller sees it, made once per stage for one answer."""

    def __init__(self, ctx: RequestContext, stages: Mapping[str, CatalogueEntryView]) -> None:
        self.ctx = ctx
        self.stages = stages
        self.default_language = ctx.settings["CRM_DEFAULT_LANGUAGE"]
        self.shown: dict[str, dict[str, Any]] = {}
        self.languages: dict[tuple[str, ...], str] = {}  # the languages a stage has -> the one shown

    def of(self, stage_id: str) -> dict[str, Any]:
        found = self.shown.get(stage_id)
        if found is None:
            found = self.shown[stage_id] = self._show(stage_id)
        return found

    def _show(self, stage_id: str) -> dict[str, Any]:
        stage = self.stages.get(stage_id)
        if stage is None:
            return {"id": stage_id, "name": "", "code": "", "color": None, "is_end": False, "remarks": None}
        names = tuple(stage.names)
        language = self.languages.get(names)
        if language is None:  # Accept-Language against these names (noted for Content-Language once)
            language = self.languages[names] = self.ctx.language(list(names))
        return {
            "id": stage_id,
            "name": stage.name(language, self.default_language),
            "code": stage.code,
            "color": stage.attr("color"),
            "is_end": bool(stage.attr("is_end")),
            "remarks": stage.attr("remarks"),
        }


def build_api(kind: RecordKind, tables: Mapping[str, Table], view: CatalogueView | None = None) -> Api:
    """The routes of ``kind``: create, list, overview, read, update, delete, history, groups,
    copy, bulk."""
    api = Api(kind.plural)
    base = kind.collection_path
    schemas = record_schemas(kind)
    out = schemas.out()
    records = Records(kind, tables, view)
    present = Presenter(kind, records)
    table = tables["records"]

    def load(ctx: RequestContext, record_id: str) -> Any:
        return load_visible(ctx.session, table, kind, ctx.user, record_id)

    def check_office(ctx: RequestContext, data: Mapping[str, Any]) -> None:
        check_record_office(ctx.user, data)

    example = dict(kind.example)

    @api.post(base, permission=kind.permission("create"), body=schemas.create, response=out, errors=(409,),
              example=example, summary=f"Create a {kind.kind}")
    def create_record(ctx: RequestContext) -> Reply:
        check_office(ctx, ctx.body)
        row, stage = records.create_in_stage(ctx.session, ctx.body, Actor.of(ctx.user))
        return Reply(present.one(ctx, row, new_group_ids(ctx.body), stage), headers={"Location": f"{base}/{row.id}"})

    @api.get(base, permission=kind.permission("view"), query=schemas.list_query, response=out, many=True,
             summary=f"List {kind.plural}: views, filters, search, order")
    def list_records(ctx: RequestContext) -> ListResult:
        dialect = ctx.session.get_bind().dialect.name
        stmt, keys, fingerprint = list_statement(kind, tables, ctx.user, ctx.query, dialect)
        page = ctx.page(stmt, keys, fingerprint=fingerprint)
        return ListResult(present.page(ctx, list(page.rows), dialect), page.next_page_token)

    overview_query, overview_out = overview_schemas(kind)

    @api.get(f"{base}/overview", permission=kind.permission("view"), query=overview_query, response=overview_out,
             summary=f"Counts for the {kind.plural} overview tabs, and the board of one tab")
    def overview_counts(ctx: RequestContext) -> dict[str, Any]:
        """`stage_groups`, `mine`, `office` and `all` count the records of each tab. `stages` is the
        board of the tab the query selects (`view`, default `all`; `stage_group_id` for a stage
        group's tab): one entry per stage of that tab (every stage without `stage_group_id`) in
        index order - active stages always, with 0 when empty; inactive or unknown stages only
        when they hold counted records - with its count and, for opportunities, the sum of
        `amount` and of `amount * probability / 100`. Only records the caller may see count
        (as in the list); `filter` (the list's advanced search) narrows every count."""
        default_language = ctx.settings["CRM_DEFAULT_LANGUAGE"]
        return overview(ctx.session, kind, tables, ctx.user, ctx.query,
                        ctx.language([default_language, "en", "nl"]), default_language, records.view)

    @api.get(f"{base}/<record_id>", permission=kind.permission("view"), response=out, summary=f"Read a {kind.kind}")
    def get_record(ctx: RequestContext, record_id: str) -> dict[str, Any]:
        return present.one(ctx, load(ctx, record_id))

    @api.patch(f"{base}/<record_id>", permission=kind.permission("edit"), body=schemas.patch, response=out,
               errors=(409,), summary=f"Change a {kind.kind} (stage_id moves it through the stages)")
    def patch_record(ctx: RequestContext, record_id: str) -> dict[str, Any]:
        row = load(ctx, record_id)
        check_if_match(row.version)
        check_office(ctx, ctx.body)
        if ctx.body.get("title", "x") is None:
            raise TitleRequired()
        return present.one(ctx, records.update(ctx.session, row, ctx.body, Actor.of(ctx.user)))

    @api.delete(f"{base}/<record_id>", permission=kind.permission("delete"), status=204,
                summary=f"Delete a {kind.kind}")
    def delete_record(ctx: RequestContext, record_id: str) -> None:
        row = load(ctx, record_id)
        check_if_match(row.version)
        delete_blobs_with_record(ctx.session, kind, tables, row.id)
        records.delete(ctx.session, row, Actor.of(ctx.user))

    @api.get(f"{base}/<record_id>/stage-history", permission=kind.permission("view"), response=HistoryOut,
             many=True, summary="Stage changes of a record, oldest first")
    def stage_history(ctx: RequestContext, record_id: str) -> ListResult:
        load(ctx, record_id)
        history = records.history
        rows = ctx.session.execute(select(history).where(history.c.record_id == record_id)
                                   .order_by(history.c.at, history.c.id)).all()
        return ListResult([r._asdict() for r in rows], None)

    @api.post(f"{base}/<record_id>/groups", permission=kind.permission("edit"), body=GroupIn, response=out,
              also={200: "Already a member: nothing changed."}, errors=(412,),  # 412: written meanwhile
              summary="Add a record to a group")
    def add_group(ctx: RequestContext, record_id: str) -> Reply:
        row, added = records.add_group(ctx.session, load(ctx, record_id), ctx.body["group_id"], Actor.of(ctx.user))
        return Reply(present.one(ctx, row), status=201 if added else 200)

    @api.delete(f"{base}/<record_id>/groups/<group_id>", permission=kind.permission("edit"), status=204,
                summary="Remove a record from a group")
    def remove_group(ctx: RequestContext, record_id: str, group_id: str) -> None:
        records.remove_group(ctx.session, load(ctx, record_id), group_id, Actor.of(ctx.user))

    @api.post(f"{base}/<record_id>/copy", permission=kind.permission("create"), body=schemas.copy,
              body_required=False, response=out, errors=(409,), summary=f"A new {kind.kind} copied from this one")
    def copy_record(ctx: RequestContext, record_id: str) -> Reply:
        source = load(ctx, record_id)
        check_office(ctx, ctx.body)
        data = {f: getattr(source, f) for f in _COPIED if hasattr(source, f) and (f in schemas.create().fields)}
        data.update({k: v for k, v in ctx.body.items()})
        data["group_ids"] = records.group_ids(ctx.session, source.id)
        row, stage = records.create_in_stage(ctx.session, data, Actor.of(ctx.user))
        return Reply(present.one(ctx, row, new_group_ids(data), stage), headers={"Location": f"{base}/{row.id}"})

    bulk_body, _ = bulk_schemas(kind, schemas.create)
    item_schema = bulk_item_schema(kind)

    def bulk_create(ctx: RequestContext) -> dict[str, Any]:
        if not ctx.user.has(kind.permission("create")):
            raise MissingPermission("Creating", kind.permission("create"))
        return {"results": create_in_bulk(records, ctx.session, ctx.user, item_schema, ctx.body["items"])}

    @api.post(f"{base}/bulk", permission=kind.permission("edit"), body=bulk_body, response=BulkOut, status=200,
              example={"action": "create", "items": [{**example, "key": "import-2026-12-06.csv:2"}]},
              summary=f"One action on many {kind.plural}, or up to {MAX_BULK_CREATE} new ones; each item succeeds "
                      "or fails on its own")
    def bulk(ctx: RequestContext) -> dict[str, Any]:
        """`ids` with `action` set_stage (`stage_id`), add_to_group / remove_from_group (`group_id`),
        assign_owner (`owner_id`) or delete (needs the delete permission): one result per id,
        `ok` or `error`. `action` create with `items` (needs the create permission): each item is the
        body of a single create plus its idempotency `key`, checked exactly as that create (fields,
        references, the office rule), and made with the same `created` event; all in one transaction.
        One result per item, in order: `created` (with the new id), `exists` (the key was used before
        in that office: nothing made, the id of the record it made) or `error` (with `errors` naming
        the item's fields, relative to the item). Re-sending the same items creates nothing twice."""
        action = ctx.body["action"]
        if action == CREATE:
            return bulk_create(ctx)
        if action == "delete" and not ctx.user.has(kind.permission("delete")):
            raise MissingPermission("Deleting", kind.permission("delete"))
        actor = Actor.of(ctx.user, cause="bulk")
        results = []
        for record_id in dict.fromkeys(ctx.body["ids"]):
            savepoint = ctx.session.begin_nested()  # one item's failure undoes only that item
            row = None
            try:
                row = load(ctx, record_id)
                if action == "set_stage":
                    records.update(ctx.session, row, {"stage_id": ctx.body["stage_id"]}, actor)
                elif action == "assign_owner":
                    records.update(ctx.session, row, {"owner_id": ctx.body["owner_id"]}, actor)
                elif action == "add_to_group":
                    records.add_group(ctx.session, row, ctx.body["group_id"], actor)
                elif action == "remove_from_group":
                    records.remove_group(ctx.session, row, ctx.body["group_id"], actor)
                else:
                    delete_blobs_with_record(ctx.session, kind, tables, row.id)
                    records.delete(ctx.session, row, actor)
                savepoint.commit()
                results.append({"id": record_id, "status": "ok", "error": None})
            except DomainError as exc:
                savepoint.rollback()
                # Missing or not visible to the caller: the same answer, so other offices' ids do not leak.
                results.append({"id": record_id, "status": "error",
                                "error": "not found" if isinstance(exc, NotFound) and row is None else exc.detail})
        return {"results": results}

    if kind.extend_api is not None:
        kind.extend_api(api, RecordsApi(kind, tables, records, present, load, out))
    return api
