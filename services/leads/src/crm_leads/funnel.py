"""The leads' funnel: of the leads created in a period, how many were converted and how fast.

Counts are computed by the database; the median time to convert in Python over one row per
converted lead (as the stage report's medians, ``crm_pipeline.reports``).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import ColumnElement, Table, func, select
from sqlalchemy.orm import Session

from crm_pipeline.errors import InvalidPeriod
from crm_pipeline.reports import STREAM, median


def funnel(session: Session, table: Table, seen: ColumnElement[bool], start: dt.datetime | None,
           end: dt.datetime | None) -> dict[str, Any]:
    """Leads created in [start, end): how many, how many converted (``converted_at`` set), the rate,
    the median time from creation to conversion; overall, by source and by owner (``InvalidPeriod``
    when ``start`` is not before ``end``)."""
    if start is not None and end is not None and start >= end:
        raise InvalidPeriod()
    where = [seen]
    if start is not None:
        where.append(table.c.created_at >= start)
    if end is not None:
        where.append(table.c.created_at < end)
    converted = func.count(table.c.converted_at).label("converted")  # COUNT(col) skips NULLs

    def counts(key: Any) -> dict[Any, Any]:
        return {r.key: r for r in session.execute(select(key.label("key"), func.count().label("created"), converted)
                                                  .where(*where).group_by(key))}

    overall = session.execute(select(func.count().label("created"), converted).where(*where)).one()
    by_source, by_owner = counts(table.c.source_id), counts(table.c.owner_id)
    durations: dict[str, dict[Any, list[float]]] = {"all": defaultdict(list), "source": defaultdict(list),
                                                    "owner": defaultdict(list)}
    rows = session.execute(select(table.c.source_id, table.c.owner_id, table.c.created_at, table.c.converted_at)
                           .where(*where, table.c.converted_at.is_not(None)).execution_options(yield_per=STREAM))
    for source_id, owner_id, created_at, converted_at in rows:
        seconds = max((converted_at - created_at).total_seconds(), 0.0)
        durations["all"][None].append(seconds)
        durations["source"][source_id].append(seconds)
        durations["owner"][owner_id].append(seconds)

    def entry(created: int, converted_count: int, seconds: list[float] | None) -> dict[str, Any]:
        return {"created": int(created), "converted": int(converted_count),
                "conversion_rate": round(converted_count / created, 4) if created else None,
                "median_seconds_to_convert": median(seconds)}

    def grouped(rows: dict[Any, Any], field: str, name: str) -> list[dict[str, Any]]:
        ordered = sorted(rows.values(), key=lambda r: (-int(r.created), r.key is None, r.key or ""))
        return [{field: r.key, **entry(r.created, r.converted, durations[name].get(r.key))} for r in ordered]

    return {"from": start, "to": end, **entry(overall.created, overall.converted, durations["all"].get(None)),
            "by_source": grouped(by_source, "source_id", "source"),
            "by_owner": grouped(by_owner, "owner_id", "owner")}


