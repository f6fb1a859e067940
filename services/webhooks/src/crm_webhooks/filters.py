"""A subscription's ``filter``: the records' filter grammar (``crm_pipeline.filtering``, the same
as ``GET /v1/leads?filter=``), checked by the database on the ``events`` row of a record event,
so a filter means here exactly what it means on the list.

A filter applies to lead and opportunity events, so a subscription with one names only their
types; it is checked against the fields of each record kind it names (``lead_id`` and the money
fields only on opportunities, ``converted_opportunity_id`` only on leads).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement

from crm_pipeline.filtering import FilterError, FilterField, parse_filter, record_fields
from crm_webhooks.tables import events

_LINK_FIELDS = {"lead": "converted_opportunity_id", "opportunity": "lead_id"}


def fields_of(kind: str) -> dict[str, FilterField]:
    return record_fields(events, link_field=_LINK_FIELDS[kind], money=kind == "opportunity",
                         group_id=FilterField(events.c.group_ids, "id_list"))


@lru_cache(maxsize=512)
def clause(text: str, kind: str) -> ColumnElement[bool]:
    """The filter as a condition on ``events`` for records of ``kind`` (made once per text and kind)."""
    return parse_filter(text, fields_of(kind))


def kinds_of(event_types: Iterable[str]) -> list[str]:
    """The record kinds that ``event_types`` name."""
    return sorted({t.partition(".")[0] for t in event_types})


def check(text: str, event_types: Iterable[str]) -> FilterError | None:
    """Why ``text`` is no filter for these types' records (None: it is one)."""
    for kind in kinds_of(event_types):
        try:
            clause(text, kind)
        except FilterError as exc:
            return exc
    return None


def applies(text: str | None, kind: str) -> Any:
    """The condition of a subscription's filter on a ``kind`` event (None: no filter)."""
    return clause(text, kind) if text and text.strip() else None
