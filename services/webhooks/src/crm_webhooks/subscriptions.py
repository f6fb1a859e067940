"""Webhook subscriptions: what an administrator creates, changes, rotates, replays and tests.

A subscription belongs to its creator's office: it carries events of that office's records (and
of the shared files); one made by a role that sees every office (``admin``) carries them all.
Only the subscriptions the caller's office may see are found (others are "not found").
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, literal, select, update
from sqlalchemy.orm import Session

from crm_kit.db import utcnow
from crm_kit.identity import Identity
from crm_webhooks import filters, signing, targets
from crm_webhooks.errors import BadEventTypes, BadFilter, BadTarget, UnknownSubscription
from crm_webhooks.events import ALL, EVENT_TYPES, RECORD_KINDS, TEST_ENTITY, TEST_TYPE, PublicEvent
from crm_webhooks.ingest import QUEUED, Queued, enqueue
from crm_webhooks.tables import deliveries, events, subscriptions

ALL_OFFICES_ROLE = "admin"
KNOWN_TYPES = frozenset(EVENT_TYPES)


def sees_every_office(identity: Identity) -> bool:
    return ALL_OFFICES_ROLE in identity.roles


def load(session: Session, identity: Identity, subscription_id: str) -> Any:
    """The subscription, or ``UnknownSubscription`` when it does not exist or is another office's."""
    row = session.execute(select(subscriptions).where(subscriptions.c.id == subscription_id)).first()
    if row is None or not (sees_every_office(identity) or row.office_id == identity.office_id):
        raise UnknownSubscription(subscription_id)
    return row


def visible(identity: Identity) -> Any:
    """The subscriptions the caller may see (a condition)."""
    if sees_every_office(identity):
        return literal(True)
    return subscriptions.c.office_id == identity.office_id


def check_url(url: str, *, allow_loopback: bool) -> None:
    try:
        targets.check(url, allow_loopback=allow_loopback)
    except targets.TargetRefused as exc:
        raise BadTarget(str(exc)) from None


def check_types(event_types: Sequence[str], filter_text: str | None) -> list[str]:
    """The types, checked (known, or ``*``) and de-duplicated in their order; with a filter, only
    lead and opportunity types (the filter is on records)."""
    unknown = [t for t in event_types if t != ALL and t not in KNOWN_TYPES]
    if unknown:
        raise BadEventTypes(f"Unknown event type {unknown[0]!r}; use '*' or types such as lead.stage_changed.")
    types = list(dict.fromkeys(event_types))
    if filter_text and filter_text.strip():
        if ALL in types or any(t.partition(".")[0] not in RECORD_KINDS for t in types):
            raise BadEventTypes("A filter applies to lead and opportunity events: name only lead.* and "
                                "opportunity.* types (not '*') in a subscription with a filter.")
        error = filters.check(filter_text, types)
        if error is not None:
            raise BadFilter(error.message, error.pointer(), error.position)
    return types


def present(row: Any, backlog: tuple[int, dt.datetime | None] = (0, None)) -> dict[str, Any]:
    return {"id": row.id, "url": row.url, "event_types": list(row.event_types), "filter": row.filter,
            "description": row.description, "active": row.active, "disabled_reason": row.disabled_reason,
            "disabled_at": row.disabled_at, "secret_hint": row.secret_hint,
            "previous_secret_valid_until": row.previous_valid_until if row.previous_secret else None,
            "backlog": backlog[0], "oldest_pending_at": backlog[1], "version": row.version,
            "created_at": row.created_at, "created_by": row.created_by, "modified_at": row.modified_at,
            "modified_by": row.modified_by}


def backlogs(session: Session, ids: Sequence[str]) -> dict[str, tuple[int, dt.datetime | None]]:
    """Undelivered deliveries and the oldest one's time, per subscription."""
    if not ids:
        return {}
    rows = session.execute(select(deliveries.c.subscription_id, func.count(), func.min(deliveries.c.created_at))
                           .where(deliveries.c.subscription_id.in_(ids), deliveries.c.state == "pending")
                           .group_by(deliveries.c.subscription_id)).all()
    return {sub: (count, oldest) for sub, count, oldest in rows}


def create(session: Session, identity: Identity, vault: signing.Vault, body: Mapping[str, Any], *,
           allow_loopback: bool) -> tuple[str, str]:
    """A new subscription; its id and its secret (shown this once)."""
    check_url(body["url"], allow_loopback=allow_loopback)
    types = check_types(body["event_types"], body.get("filter"))
    secret, now, sub_id = signing.new_secret(), utcnow(), str(uuid.uuid4())
    session.execute(subscriptions.insert().values(
        id=sub_id, url=body["url"], event_types=types, filter=(body.get("filter") or "").strip() or None,
        description=body.get("description") or "", active=body.get("active", True), office_id=identity.office_id,
        all_offices=sees_every_office(identity), secret=vault.seal(secret), secret_hint=signing.hint(secret),
        version=1, created_at=now, created_by=identity.user_id, modified_at=now, modified_by=identity.user_id))
    return sub_id, secret


def change(session: Session, identity: Identity, row: Any, body: Mapping[str, Any], *, allow_loopback: bool) -> None:
    """Apply a PATCH. Enabling a disabled or inactive endpoint sends its backlog at once."""
    if "url" in body:
        check_url(body["url"], allow_loopback=allow_loopback)
    filter_text = body["filter"] if "filter" in body else row.filter
    types = check_types(body.get("event_types", row.event_types), filter_text)
    values: dict[str, Any] = {"event_types": types, "filter": (filter_text or "").strip() or None,
                              "version": row.version + 1, "modified_at": utcnow(), "modified_by": identity.user_id}
    for key in ("url", "description", "active"):
        if key in body:
            values[key] = body[key]
    if body.get("active") and not row.active:
        values.update(disabled_reason=None, disabled_at=None, failing_since=None)
        session.execute(update(deliveries).where(deliveries.c.subscription_id == row.id,
                                                 deliveries.c.state == "pending")
                        .values(next_attempt_at=utcnow(), leased_until=None))
        _wake_after_commit(session)
    session.execute(update(subscriptions).where(subscriptions.c.id == row.id).values(**values))


def remove(session: Session, row: Any) -> None:
    """Delete the subscription and its queue (its attempts stay in the log until they age out)."""
    session.execute(delete(deliveries).where(deliveries.c.subscription_id == row.id))
    session.execute(delete(subscriptions).where(subscriptions.c.id == row.id))


def rotate(session: Session, identity: Identity, vault: signing.Vault, row: Any) -> tuple[str, dt.datetime]:
    """A new secret (shown this once); the old one keeps signing too until the overlap ends."""
    secret, now = signing.new_secret(), utcnow()
    until = now + signing.ROTATION_OVERLAP
    session.execute(update(subscriptions).where(subscriptions.c.id == row.id).values(
        secret=vault.seal(secret), secret_hint=signing.hint(secret), previous_secret=row.secret,
        previous_valid_until=until, version=row.version + 1, modified_at=now, modified_by=identity.user_id))
    return secret, until


def replay(session: Session, row: Any, since: dt.datetime) -> int:
    """Queue again every event since ``since`` that the subscription is for (as its types, office
    and filter say now); they go out after what is already queued, one record's in order."""
    sub = session.execute(select(subscriptions.c.id, subscriptions.c.event_types, subscriptions.c.filter,
                                 subscriptions.c.office_id, subscriptions.c.all_offices)
                          .where(subscriptions.c.id == row.id)).one()
    found = session.execute(select(events.c.seq, events.c.type, events.c.entity, events.c.event_id,
                                   events.c.entity_id, events.c.office_id)
                            .where(events.c.occurred_at >= since, events.c.entity != TEST_ENTITY)
                            .order_by(events.c.seq)).all()
    queued = enqueue(session, [sub], [Queued(e.seq, e.type, e.entity, e.event_id, f"{e.entity}:{e.entity_id}",
                                             e.office_id) for e in found])
    _wake_after_commit(session)
    return queued


def send_test(session: Session, identity: Identity, row: Any) -> str:
    """Queue a ``webhook.test`` event for this endpoint alone; its id."""
    now = utcnow()
    event = PublicEvent(str(uuid.uuid4()), TEST_TYPE, TEST_ENTITY, row.id, 0, now,
                        {"id": row.id, "message": "A test delivery.", "requested_by": identity.user_id})
    seq = session.execute(insert(events).values(
        event_id=event.event_id, type=TEST_TYPE, entity=TEST_ENTITY, entity_id=row.id, office_id=row.office_id,
        occurred_at=now, body=event.body({})).returning(events.c.seq)).scalar_one()
    session.execute(deliveries.insert().values(
        subscription_id=row.id, event_seq=seq, event_id=event.event_id, event_type=TEST_TYPE,
        ordering_key=event.ordering_key, state="pending", attempts=0, next_attempt_at=now, created_at=now))
    _wake_after_commit(session)
    return event.event_id


def _wake_after_commit(_session: Session) -> None:
    # The dispatcher runs in the worker process, not here; it looks every poll interval. The
    # event is set for a dispatcher in this process (tests that run both in one).
    QUEUED.set()
