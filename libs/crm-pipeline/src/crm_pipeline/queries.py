"""Who sees which records, and the list query: views, filters, search, order, counts.

Visibility: a caller sees the records of their own office; the ``admin`` role sees every
office. Anything else is "not found" (404), not "forbidden", so ids of other offices'
records do not leak. ``view=mine`` narrows to the caller's records, ``view=office`` to their
office's, ``view=all`` to everything they may see.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, ColumnElement, Select, Table, and_, exists, func, not_, select, true, type_coerce
from sqlalchemy.orm import Session

from crm_catalogue_view import CatalogueView
from crm_catalogue_view.model import VIEW
from crm_kit.identity import Identity
from crm_kit.web.pagination import SortKey
from crm_pipeline.errors import InvalidFilter, InvalidOrder, UnknownRecord
from crm_pipeline.filtering import FilterError, FilterField, parse_filter, parse_order_by, record_fields
from crm_pipeline.kind import RecordKind
from crm_pipeline.money import money as money_text
from crm_pipeline.money import weighted

ALL_OFFICES_ROLE = "admin"
_EQUALITY_FILTERS = ("stage_id", "stage_group_id", "owner_id", "office_id", "source_id", "priority_id",
                     "category_id", "company_id", "contact_id")


def visible(table: Table, identity: Identity) -> ColumnElement[bool]:
    """The records ``identity`` may see."""
    if ALL_OFFICES_ROLE in identity.roles:
        return true()
    return table.c.office_id == identity.office_id


def view_clause(table: Table, identity: Identity, view: str) -> ColumnElement[bool]:
    if view == "mine":
        return table.c.owner_id == identity.user_id
    if view == "office":
        return table.c.office_id == identity.office_id
    return true()


def load_visible(session: Session, table: Table, kind: RecordKind, identity: Identity, record_id: str) -> Any:
    """The record, or ``UnknownRecord`` when it does not exist or the caller may not see it."""
    row = session.execute(select(table).where(table.c.id == record_id, visible(table, identity))).first()
    if row is None:
        raise UnknownRecord(kind.kind, record_id)
    return row


def _in_group(groups: Table, table: Table) -> Any:
    def build(op: str, value: Any) -> ColumnElement[bool]:
        member = exists().where(groups.c.record_id == table.c.id, groups.c.group_id == value)
        return member if op == "=" else not_(member)
    return build


def filter_fields(kind: RecordKind, tables: Mapping[str, Table]) -> dict[str, FilterField]:
    """The fields ``filter`` may use, with their types."""
    table = tables["records"]
    return record_fields(table, link_field=kind.link_field, money=kind.money,
                         group_id=FilterField(None, "id", build=_in_group(tables["record_groups"], table)))


def filter_clause(kind: RecordKind, tables: Mapping[str, Table], text: str) -> ColumnElement[bool]:
    """The ``filter`` parameter as a WHERE clause; ``InvalidFilter`` pointing at the error for bad syntax."""
    try:
        return parse_filter(text, filter_fields(kind, tables))
    except FilterError as exc:
        raise InvalidFilter(exc.message, exc.pointer(), exc.position) from None


_STAGE_SORT = VIEW.alias("stage_sort")  # the catalogue copy's stage of each listed record
GROUP_IDS = "group_id_list"  # the list's column of each row's group ids (group_ids_of reads it)


def group_ids_column(tables: Mapping[str, Table], dialect: str) -> ColumnElement[Any]:
    """Each record's group ids as a column of the list's SELECT (a correlated subquery), so a page
    needs no query of its own for them: ordered by the database on PostgreSQL (as ``ORDER BY
    group_id`` would), a JSON array on SQLite (``group_ids_of`` sorts it, as its binary collation would).
    Made once per table and database (a statement's parts never change)."""
    return _group_ids_column(tables["record_groups"], tables["records"], dialect)


@lru_cache(maxsize=16)
def _group_ids_column(groups: Table, table: Table, dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        collected: Any = func.array_agg(groups.c.group_id).aggregate_order_by(groups.c.group_id)
    else:
        collected = type_coerce(func.json_group_array(groups.c.group_id), JSON)
    return select(collected).where(groups.c.record_id == table.c.id).scalar_subquery().label(GROUP_IDS)


def group_ids_of(row: Any, dialect: str) -> list[str]:
    """The group ids ``group_ids_column`` brought along with ``row``, in ``group_id`` order."""
    found = getattr(row, GROUP_IDS) or []
    return list(found) if dialect == "postgresql" else sorted(found)


def list_statement(kind: RecordKind, tables: Mapping[str, Table], identity: Identity,
                   query: Mapping[str, Any], dialect: str | None = None) -> tuple[Select[Any], list[SortKey], str]:
    """The list's SELECT, its sort keys and a fingerprint of its filters (for page tokens).

    With ``dialect`` (the database's) each row also carries its group ids (``group_ids_column``)."""
    table = tables["records"]
    stage = _STAGE_SORT
    # The stage's version in the copy comes along: the presenter shows the stage from the version
    # it knows (crm_pipeline.api.StageVersions) without reading the copy again.
    columns: list[Any] = [table, func.coalesce(stage.c.index, 0).label("stage_index"),
                          stage.c.version.label("stage_version")]
    if dialect is not None:
        columns.append(group_ids_column(tables, dialect))
    stmt = (select(*columns)
            .outerjoin(stage, stage.c.id == table.c.stage_id)
            .where(visible(table, identity), view_clause(table, identity, query.get("view", "all"))))
    for name in _EQUALITY_FILTERS + kind.list_filters:
        if name in query:
            stmt = stmt.where(table.c[name] == query[name])
    if "group_id" in query:
        groups = tables["record_groups"]
        stmt = stmt.where(exists().where(groups.c.record_id == table.c.id, groups.c.group_id == query["group_id"]))
    for param, column, op in (("created_after", table.c.created_at, "ge"), ("created_before", table.c.created_at, "lt"),
                              ("modified_after", table.c.modified_at, "ge"),
                              ("modified_before", table.c.modified_at, "lt")):
        if param in query:
            stmt = stmt.where(column >= query[param] if op == "ge" else column < query[param])
    if "q" in query:
        stmt = stmt.where(table.c.title.icontains(query["q"], autoescape=True)
                          | table.c.description.icontains(query["q"], autoescape=True))
    if "filter" in query:
        stmt = stmt.where(filter_clause(kind, tables, query["filter"]))
    sortable = {"modified_at": table.c.modified_at, "created_at": table.c.created_at, "title": table.c.title,
                "stage.index": func.coalesce(stage.c.index, 0)}
    try:
        order = parse_order_by(query.get("order_by") or "modified_at desc", sortable)
    except FilterError as exc:
        raise InvalidOrder(exc.message) from None
    labels = {"stage.index": "stage_index"}
    keys = [SortKey(labels.get(name, name), column, descending) for name, column, descending in order]
    keys.append(SortKey("id", table.c.id, descending=keys[-1].descending if keys else True))
    fingerprint = "|".join(f"{k}={query[k]}" for k in sorted(query) if k not in ("page_size", "page_token"))
    return stmt, keys, fingerprint


def overview(session: Session, kind: RecordKind, tables: Mapping[str, Table], identity: Identity,
             query: Mapping[str, Any], language: str, default_language: str,
             catalogue: CatalogueView | None = None) -> dict[str, Any]:
    """Counts for the overview tabs (per stage group, mine, office, all) and the board of one tab.

    Everything counts only what ``identity`` may see (as the list does), narrowed by ``filter``
    when given. The board (``stages``) is the tab ``view`` (``all`` by default) and, with
    ``stage_group_id``, that stage group's tab: one entry per stage of the tab (every stage
    without ``stage_group_id``) in index order, active ones always (0 when empty), inactive
    ones and stages this copy does not know (name null, at the end) when they hold counted
    records, so the columns add up to the tab's count.
    """
    catalogue = catalogue or CatalogueView()
    table = tables["records"]
    group_id = query.get("stage_group_id")
    if group_id is not None:
        # An inactive group still has a tab (its records are still counted).
        catalogue.require(session, group_id, kind=kind.kind, entity="stage_groups", field_name="stage_group_id",
                          active=False)
    base = [visible(table, identity)]
    if "filter" in query:
        base.append(filter_clause(kind, tables, query["filter"]))

    counts: dict[Any, int] = dict(session.execute(select(table.c.stage_group_id, func.count()).where(*base)
                                  .group_by(table.c.stage_group_id)).all())

    def count(*where: ColumnElement[bool]) -> int:
        return int(session.execute(select(func.count()).select_from(table).where(*base, *where)).scalar_one())

    groups = catalogue.entries(session, kind.kind, "stage_groups", active_only=False)
    return {
        "stage_groups": [{"id": g.id, "name": g.name(language, default_language), "count": int(counts.get(g.id, 0))}
                         for g in groups],
        "mine": count(table.c.owner_id == identity.user_id),
        "office": count(table.c.office_id == identity.office_id),
        "all": count(and_(true())),
        "stages": _board(session, kind, table, catalogue, language, default_language, group_id,
                         [*base, view_clause(table, identity, query.get("view", "all"))]
                         + ([table.c.stage_group_id == group_id] if group_id is not None else [])),
    }


def sums_by(session: Session, table: Table, key: ColumnElement[Any], where: list[ColumnElement[bool]], *,
            money: bool) -> dict[Any, Any]:
    """Rows of ``records`` (a count) and, with ``money``, ``amount_sum`` and ``weighted_sum``
    (``SUM(amount * probability)``, probability in percent) per value of ``key``: the board's
    columns and the stage report's stages and groups."""
    measures = [func.count().label("records")]  # not "count": Row.count is a method
    if money:
        measures += [func.sum(table.c.amount).label("amount_sum"),
                     func.sum(table.c.amount * table.c.probability).label("weighted_sum")]
    return {r.key: r for r in session.execute(select(key.label("key"), *measures).where(*where).group_by(key))}


def _board(session: Session, kind: RecordKind, table: Table, catalogue: CatalogueView, language: str,
           default_language: str, group_id: str | None, where: list[ColumnElement[bool]]) -> list[dict[str, Any]]:
    """Per stage of the tab: count and, for a kind with money (opportunities), the sum of ``amount`` and of
    ``amount * probability / 100`` (computed as the stage report does, currencies as stored)."""
    money = kind.money
    by_stage = sums_by(session, table, table.c.stage_id, where, money=money)

    def column(stage_id: str, name: str | None) -> dict[str, Any]:
        row = by_stage.get(stage_id)
        out: dict[str, Any] = {"id": stage_id, "name": name, "count": int(row.records) if row is not None else 0}
        if money:
            out["amount"] = money_text(row.amount_sum if row is not None else None)
            out["weighted_amount"] = weighted(row.weighted_sum if row is not None else None)
        return out

    known = catalogue.stages(session, kind.kind)
    board = [column(s.id, s.name(language, default_language)) for s in known
             if s.id in by_stage or (s.active and (group_id is None or s.attr("stage_group_id") == group_id))]
    known_ids = {s.id for s in known}
    board += [column(stage_id, None) for stage_id in sorted(set(by_stage) - known_ids)]
    return board
