"""Reports on pipeline records per stage and stage group (a kind adds its own: the leads' funnel).

Every report covers only the records the caller may see (``queries.visible``). Counts and
sums are computed by the database; medians in Python over the rows they need (one row per
stay in a stage, or per converted lead), which is fine at today's volumes: when it is not,
PostgreSQL's ``percentile_cont`` can take over on that dialect.

Money is summed exactly on PostgreSQL (numeric). SQLite keeps ``Numeric`` as binary floating
point, so there the sums are exact to the cent up to about 10^13; the results are rounded to
cents (half up) on both.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import ColumnElement, Table, func, select
from sqlalchemy.orm import Session

from crm_catalogue_view import CatalogueView
from crm_catalogue_view.model import CatalogueEntryView
from crm_kit.db import utcnow
from crm_kit.web import Api, RequestContext, limits
from crm_pipeline.kind import RecordKind
from crm_pipeline.money import money as _money
from crm_pipeline.queries import sums_by, visible

STREAM = 10_000  # rows fetched at a time for the medians (the kinds' own reports too)


def build_reports_api(kind: RecordKind, tables: Mapping[str, Table], view: CatalogueView | None = None) -> Api:
    """``GET {records}/reports/stages``, and the kind's own reports (``RecordKind.extend_reports``)."""
    api = Api(kind.plural)
    view = view or CatalogueView()
    table, history = tables["records"], tables["stage_history"]
    schemas = _report_schemas(kind)

    @api.get(f"{kind.collection_path}/reports/stages", permission=kind.permission("view"),
             response=schemas["stages"], summary=f"{kind.plural.capitalize()} per stage and stage group: counts"
             + (", amounts, weighted amounts" if kind.money else "") + ", median time in each stage")
    def stage_report(ctx: RequestContext) -> dict[str, Any]:
        default_language = ctx.settings["CRM_DEFAULT_LANGUAGE"]

        def name(entry: CatalogueEntryView) -> str:
            return entry.name(ctx.language(list(entry.names)), default_language)

        return stages_report(ctx.session, kind, table, history, visible(table, ctx.user), view, name)

    if kind.extend_reports is not None:
        kind.extend_reports(api, tables)
    return api


# -- stages -----------------------------------------------------------------------------------


def stages_report(session: Session, kind: RecordKind, table: Table, history: Table, seen: ColumnElement[bool],
                  view: CatalogueView, name: Callable[[CatalogueEntryView], str]) -> dict[str, Any]:
    """Per stage (catalogue order) and per stage group: count (and money), plus per stage the
    median seconds a stay in it lasts; ``name(entry)`` names an entry in the caller's language."""
    money = kind.money
    by_stage = sums_by(session, table, table.c.stage_id, [seen], money=money)
    by_group = sums_by(session, table, table.c.stage_group_id, [seen], money=money)
    stays = stage_stays(session, table, history, seen)

    def totals(row: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"count": int(row.records) if row is not None else 0}
        if money:
            out["amount_sum"] = _money(row.amount_sum if row is not None else None)
            out["weighted_amount_sum"] = _money(Decimal(str(row.weighted_sum)) / 100
                                                if row is not None and row.weighted_sum is not None else None)
        return out

    stages = []
    known = view.stages(session, kind.kind)
    for stage in known:
        if stage.active or stage.id in by_stage or stage.id in stays:
            stages.append({"id": stage.id, "code": stage.code, "name": name(stage), "active": stage.active,
                           "stage_group_id": stage.attr("stage_group_id"), **totals(by_stage.get(stage.id)),
                           "median_seconds_in_stage": median(stays.get(stage.id))})
    # Records can sit in a stage this copy no longer knows (deleted, or not received yet):
    # they are still counted, so the totals add up.
    known_ids = {s.id for s in known}
    for stage_id in sorted((set(by_stage) | set(stays)) - known_ids):
        stages.append({"id": stage_id, "code": None, "name": None, "active": None, "stage_group_id": None,
                       **totals(by_stage.get(stage_id)), "median_seconds_in_stage": median(stays.get(stage_id))})

    groups = []
    known_groups = view.entries(session, kind.kind, "stage_groups")
    for group in known_groups:
        if group.active or group.id in by_group:
            groups.append({"id": group.id, "code": group.code, "name": name(group), "active": group.active,
                           **totals(by_group.get(group.id))})
    for group_id in sorted((set(by_group) - {g.id for g in known_groups}), key=lambda g: (g is None, g or "")):
        groups.append({"id": group_id, "code": None, "name": None, "active": None, **totals(by_group[group_id])})

    total: dict[str, Any] = {"count": sum(int(r.records) for r in by_stage.values())}
    if money:
        total["amount_sum"] = _money(sum((Decimal(str(r.amount_sum)) for r in by_stage.values()
                                          if r.amount_sum is not None), Decimal(0)))
        total["weighted_amount_sum"] = _money(sum((Decimal(str(r.weighted_sum)) for r in by_stage.values()
                                                   if r.weighted_sum is not None), Decimal(0)) / 100)
    return {"stages": stages, "stage_groups": groups, "total": total}


def stage_stays(session: Session, table: Table, history: Table, seen: ColumnElement[bool],
                now: dt.datetime | None = None) -> dict[str, list[float]]:
    """Seconds of every stay in a stage, per stage: from entering it (a history row) to leaving
    it (the record's next history row), or to ``now`` for the stage a record is in."""
    now = now or utcnow()
    left_at = func.lead(history.c.at, type_=history.c.at.type).over(
        partition_by=history.c.record_id, order_by=(history.c.at, history.c.id))
    # The window runs over whole records (visibility is per record), so filtering first is right.
    stmt = (select(history.c.to_stage_id, history.c.at, left_at.label("left_at"))
            .join(table, table.c.id == history.c.record_id).where(seen)
            .execution_options(yield_per=STREAM))
    out: dict[str, list[float]] = defaultdict(list)
    for stage_id, entered, left in session.execute(stmt):
        out[stage_id].append(max(((left or now) - entered).total_seconds(), 0.0))
    return dict(out)


# -- helpers ----------------------------------------------------------------------------------


def median(values: Iterable[float] | None) -> float | None:
    values = list(values or [])
    return round(statistics.median(values), 3) if values else None


def _report_schemas(kind: RecordKind) -> dict[str, type[Schema]]:
    """The reports' schemas (named per kind: the OpenAPI document has both kinds' reports)."""
    name = kind.kind.capitalize()
    money: dict[str, fields.Field] = {} if not kind.money else {
        # Decimal strings: a sum has no fixed bound, but its digits do (a NUMERIC's 131072 before the point).
        "amount_sum": fields.String(validate=validate.Length(max=131_075)),
        "weighted_amount_sum": fields.String(validate=validate.Length(max=131_075))}
    entity: dict[str, fields.Field] = {
        "id": fields.String(allow_none=True, validate=limits.ID),
        "code": fields.String(allow_none=True, validate=validate.Length(max=limits.CATALOGUE_CODE_LENGTH)),
        "name": fields.String(allow_none=True, validate=validate.Length(max=limits.CATALOGUE_NAME_LENGTH)),
        "active": fields.Boolean(allow_none=True), "count": fields.Integer(validate=limits.COUNT), **money}
    stage = Schema.from_dict({**entity, "stage_group_id": fields.String(allow_none=True, validate=limits.ID),
                              "median_seconds_in_stage": fields.Float(allow_none=True)}, name=f"{name}StageReportStage")
    group = Schema.from_dict(dict(entity), name=f"{name}StageReportGroup")
    total = Schema.from_dict({"count": fields.Integer(validate=limits.COUNT), **money}, name=f"{name}StageReportTotal")
    out: dict[str, type[Schema]] = {"stages": Schema.from_dict(
        {"stages": fields.List(fields.Nested(stage)), "stage_groups": fields.List(fields.Nested(group)),
         "total": fields.Nested(total)}, name=f"{name}StageReport")}
    return out
