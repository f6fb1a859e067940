"""``GET /v1/events``: the events as a feed for clients that pull.

Ordered by the service's log (``seq``; ``next_cursor`` is where to go on from, also after an
empty page), replayable from any point still kept (30 days), and only about what the caller may
see: lead events need ``leads:view``, opportunity events ``opportunities:view``, the files'
``files:view``; and a record's events only reach its office (the ``admin`` role: every office).
A page looks at most ``SCAN`` rows, so a caller who may see few events still gets an answer at
once (with fewer items, and the cursor past what it looked at).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import false, func, or_, select

from crm_kit.identity import Identity
from crm_kit.web import Api, RequestContext
from crm_webhooks.events import RECORD_KINDS, TEST_ENTITY
from crm_webhooks.schemas import FeedOut, FeedQuery
from crm_webhooks.subscriptions import sees_every_office
from crm_webhooks.tables import events

SCAN = 5000
PERMISSIONS = {"lead": "leads:view", "opportunity": "opportunities:view"}
FILES = "files:view"


def visible(identity: Identity) -> Any:
    """The events ``identity`` may see (a condition on ``events``)."""
    entities = [kind for kind, permission in PERMISSIONS.items() if identity.has(permission)]
    allowed = [events.c.entity.in_(entities)] if entities else []
    if identity.has(FILES):
        allowed.append(events.c.entity.not_in([*RECORD_KINDS, TEST_ENTITY]))
    if not allowed:
        return false()
    by_entity = or_(*allowed)
    if sees_every_office(identity):
        return by_entity
    return by_entity & or_(events.c.office_id.is_(None), events.c.office_id == identity.office_id)


def build_feed_api() -> Api:
    api = Api("events")

    @api.get("/v1/events", query=FeedQuery, response=FeedOut,
             summary="The events the caller may see, oldest first, from a cursor (?after=, ?types=)")
    def feed(ctx: RequestContext) -> dict[str, Any]:
        if ctx.query["after"] == "latest":
            newest = ctx.session.execute(select(func.max(events.c.seq))).scalar()
            return {"entries": [], "next_cursor": str(newest or 0)}
        after = int(ctx.query["after"] or 0)
        types = [t.strip() for t in ctx.query["types"].split(",") if t.strip()]
        window = (select(events.c.seq).where(events.c.seq > after, events.c.entity != TEST_ENTITY)
                  .order_by(events.c.seq).limit(SCAN).subquery())
        last_scanned = ctx.session.execute(select(window.c.seq).order_by(window.c.seq.desc()).limit(1)).scalar()
        stmt = (select(events.c.seq, events.c.body, events.c.event_id).where(
            events.c.seq > after, events.c.seq <= (last_scanned or after), visible(ctx.user),
            *([events.c.type.in_(types)] if types else [])).order_by(events.c.seq).limit(ctx.query["page_size"]))
        rows = ctx.session.execute(stmt).all()
        items = []
        for row in rows:
            body = json.loads(row.body)
            items.append({"cursor": str(row.seq), "id": row.event_id, **body})
        full = len(rows) == ctx.query["page_size"]
        next_cursor = rows[-1].seq if full else (last_scanned or after)
        return {"entries": items, "next_cursor": str(next_cursor)}

    return api
