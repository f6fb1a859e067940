"""Request and response shapes of the webhooks API and the event feed."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from crm_kit.web import limits
from crm_kit.web.fields import StrictBoolean, Text, Timestamp
from crm_kit.web.pagination import PageQuery
from crm_pipeline.filtering import MAX_LENGTH as MAX_FILTER
from crm_webhooks.events import ALL, EVENT_TYPES
from crm_webhooks.targets import MAX_URL

TYPES = (ALL, *EVENT_TYPES)
RESULTS = ("delivered", "failed", "error", "refused")
MAX_TYPES = len(TYPES)
MAX_FEED_PAGE = 500


class WebhookIn(Schema):
    """A subscription: where to POST, which event types (``*``: all), and an optional filter."""

    url = Text(required=True, validate=validate.Length(min=1, max=MAX_URL),
               metadata={"description": "https URL on a public address (re-checked before each delivery)."})
    event_types = fields.List(fields.String(validate=validate.OneOf(TYPES)), required=True,
                              validate=validate.Length(min=1, max=MAX_TYPES))
    filter = Text(allow_none=True, validate=validate.Length(max=MAX_FILTER), metadata={
        "description": "The records' filter grammar (as GET /v1/leads?filter=), on lead and opportunity events."})
    description = Text(validate=validate.Length(max=500), load_default="")
    active = StrictBoolean(load_default=True)


class WebhookPatch(WebhookIn):
    """Any subset. ``active: true`` enables a disabled endpoint: it then receives its backlog."""


class WebhookOut(Schema):
    id = fields.String(validate=limits.ID)
    url = fields.String(validate=validate.Length(max=MAX_URL))
    event_types = fields.List(fields.String(validate=validate.OneOf(TYPES)), validate=validate.Length(max=MAX_TYPES))
    filter = fields.String(allow_none=True, validate=validate.Length(max=MAX_FILTER))
    description = fields.String(validate=validate.Length(max=500))
    active = fields.Boolean()
    disabled_reason = fields.String(allow_none=True, validate=limits.MESSAGE)
    disabled_at = Timestamp(allow_none=True)
    secret = fields.String(validate=validate.Length(max=100), metadata={
        "description": "Only in the answer to create and rotate-secret: store it, it is not shown again."})
    secret_hint = fields.String(validate=validate.Length(max=8), metadata={"description": "The secret's end."})
    previous_secret_valid_until = Timestamp(allow_none=True, metadata={
        "description": "After a rotation: until then deliveries are signed with the previous secret too."})
    backlog = fields.Integer(validate=limits.COUNT, metadata={"description": "Events not delivered yet."})
    oldest_pending_at = Timestamp(allow_none=True)
    version = fields.Integer(validate=limits.VERSION)
    created_at = Timestamp()
    created_by = fields.String(validate=limits.REF)
    modified_at = Timestamp()
    modified_by = fields.String(validate=limits.REF)


class SecretOut(Schema):
    secret = fields.String(validate=validate.Length(max=100))
    previous_valid_until = Timestamp()


class DeliveryQuery(PageQuery):
    result = fields.String(validate=validate.OneOf(RESULTS))


class AttemptOut(Schema):
    id = fields.Integer(validate=limits.COUNT)
    event_id = fields.String(validate=limits.ID)
    event_type = fields.String(validate=validate.Length(max=100))
    attempt = fields.Integer(validate=limits.COUNT)
    at = Timestamp()
    status_code = fields.Integer(allow_none=True, validate=validate.Range(min=100, max=599))
    duration_ms = fields.Integer(validate=limits.COUNT)
    error = fields.String(allow_none=True, validate=limits.MESSAGE)
    result = fields.String(metadata={"enum": list(RESULTS)})


class EmptyIn(Schema):
    """No fields: an empty object, or no body at all (anything else is refused, as unknown)."""


class ReplayIn(Schema):
    since = Timestamp(required=True, metadata={"description": "Events that happened at or after this time."})


class QueuedOut(Schema):
    queued = fields.Integer(validate=limits.COUNT)


class TestOut(Schema):
    event_id = fields.String(validate=limits.ID)


def _types(value: str) -> None:
    unknown = [t for t in value.split(",") if t.strip() and t.strip() not in EVENT_TYPES]
    if unknown:
        raise ValidationError(f"Unknown event type {unknown[0].strip()!r}.")


class FeedQuery(Schema):
    after = fields.String(load_default="", validate=[validate.Length(max=20), validate.Regexp(r"^([0-9]*|latest)$")],
                          metadata={"description": "next_cursor of the previous page (empty: from the oldest kept; "
                                                   "`latest`: no items, the cursor of the newest event, to start "
                                                   "from now)."})
    types = fields.String(load_default="", validate=[validate.Length(max=4000), _types],
                          metadata={"description": "Comma-separated event types (empty: all)."})
    page_size = fields.Integer(load_default=100, validate=validate.Range(min=1, max=MAX_FEED_PAGE))


class FeedItem(Schema):
    cursor = fields.String(validate=validate.Length(max=20))
    id = fields.String(validate=limits.ID)
    type = fields.String(validate=validate.Length(max=100))
    timestamp = fields.String(validate=validate.Length(max=40))
    data = fields.Dict()


class FeedOut(Schema):
    # Read from "entries" (a dict's "items" would be its method when absent), written as "items".
    entries = fields.List(fields.Nested(FeedItem), required=True, data_key="items",
                          validate=validate.Length(max=MAX_FEED_PAGE))
    next_cursor = fields.String(required=True, validate=validate.Length(max=20), metadata={
        "description": "Where to go on from (also when this page was empty): pass it as `after`."})
