"""Entities as the API and the events show them: one dict each, the template relation included.

A stage's ``email_template_ids`` / ``document_template_ids`` and a template's ``stage_ids``
are all read from the one ``stage_templates`` relation here, so both sides always agree.
Lists load the relation for a whole page in one query.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Table, select
from sqlalchemy.orm import Session

from crm_catalogue.tables import STAGE_TEMPLATE_KINDS, stage_templates, stages, table_entries, templates

View = dict[str, Any]


def stage_views(session: Session, rows: Sequence[Row[Any]]) -> list[View]:
    """Stages with the ids of their email and document templates."""
    links: dict[str, dict[str, list[str]]] = {row.id: {kind: [] for kind in STAGE_TEMPLATE_KINDS} for row in rows}
    if rows:
        found = session.execute(
            select(stage_templates.c.stage_id, stage_templates.c.template_id, templates.c.kind)
            .join(templates, templates.c.id == stage_templates.c.template_id)
            .where(stage_templates.c.stage_id.in_(list(links)), templates.c.kind.in_(STAGE_TEMPLATE_KINDS))
        )
        for stage_id, template_id, kind in found:
            links[stage_id][kind].append(template_id)
    # Id lists are sorted here, not by the database, so both databases give the same order.
    return [{**row._asdict(), **{f"{kind}_template_ids": sorted(ids) for kind, ids in links[row.id].items()}}
            for row in rows]


def template_views(session: Session, rows: Sequence[Row[Any]]) -> list[View]:
    """Templates with the ids of the stages they are visible at."""
    links: dict[str, list[str]] = {row.id: [] for row in rows}
    if rows:
        found = session.execute(
            select(stage_templates.c.template_id, stage_templates.c.stage_id)
            .where(stage_templates.c.template_id.in_(list(links)))
        )
        for template_id, stage_id in found:
            links[template_id].append(stage_id)
    return [{**row._asdict(), "stage_ids": sorted(links[row.id])} for row in rows]


def entry_views(session: Session, rows: Sequence[Row[Any]]) -> list[View]:
    """Table entries: their columns are the whole view."""
    return [row._asdict() for row in rows]


@dataclass(frozen=True)
class Aggregate:
    """One kind of catalogue entity: its event name, table and how its rows become views."""

    name: str  # aggregate_type and the middle of event types: "catalogue.<name>.created"
    table: Table
    views: Callable[[Session, Sequence[Row[Any]]], list[View]]

    def load(self, session: Session, entity_id: str) -> View | None:
        """The entity's current view, or None when there is no such id."""
        row = session.execute(select(self.table).where(self.table.c.id == entity_id)).first()
        return self.views(session, [row])[0] if row is not None else None


STAGE = Aggregate("stage", stages, stage_views)
TABLE_ENTRY = Aggregate("table_entry", table_entries, entry_views)
TEMPLATE = Aggregate("template", templates, template_views)
