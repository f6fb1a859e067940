"""The edge schemas of the five files (marshmallow; the kit refuses unknown fields with a 422).

A file's ``...In`` schema is its create body; its ``...Patch``, loaded with ``partial=True``, its
PATCH body (only the fields sent change; an optional field may be set to null, a required one not).
Single-line text is trimmed and an empty optional one means null, so a form that sends ``""``
for "no email" is not refused. Rules that need the database or more than one field (references,
end after start, the lead or opportunity of an activity) are checked in ``files.py``.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from crm_kit.bulk import MAX_BULK_CREATE, bulk_result_schemas, import_key_field
from crm_kit.web import limits
from crm_kit.web.fields import PerItem, Text, Timestamp
from crm_kit.web.pagination import PageQuery

ACTIVITY_TYPES = ("email", "task", "calendar", "note")
_ID = validate.Length(min=1, max=36)


def _trimmed(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _blank_is_null(value: Any) -> Any:
    value = _trimmed(value)
    return None if value == "" else value


def _not_blank(value: str) -> None:
    if not value:
        raise ValidationError("Must not be empty.")


# The kit's Text: trimmed, one line, no control characters or unpaired surrogates (422).
def _required_text(max_length: int) -> fields.String:
    return Text(required=True, validate=[_not_blank, validate.Length(max=max_length)])


def _text(max_length: int, *rules: Any, **kw: Any) -> fields.String:
    return Text(allow_none=True, pre_load=[_blank_is_null], validate=[validate.Length(max=max_length), *rules], **kw)


def _long_text(max_length: int) -> fields.String:
    return Text(multiline=True, allow_none=True, validate=validate.Length(max=max_length))  # tabs, line breaks


def _email() -> fields.String:
    return _text(320, validate.Email(error="Not a valid email address."))


def _reference(what: str) -> fields.String:
    # "" is taken as null (pre_load), so the documented bound is the length only.
    return fields.String(allow_none=True, pre_load=[_blank_is_null], validate=validate.Length(max=36),
                         metadata={"description": f"The id of an existing {what}; empty or null for none."})


# -- bodies --------------------------------------------------------------------------------------

class CompanyIn(Schema):
    """A company."""

    name = _required_text(300)
    website = _text(500, validate.URL(schemes={"http", "https"}, error="Not a valid http(s) URL."),
                    metadata={"description": "http:// or https:// URL."})
    phone = _text(50)
    email = _email()
    address = _text(500)
    city = _text(200)
    country = _text(100)


class ContactIn(Schema):
    """A person, optionally working for a company."""

    first_name = _required_text(200)
    last_name = _required_text(200)
    email = _email()
    phone = _text(50)
    company_id = _reference("company")


class JobOrderIn(Schema):
    """A job order, optionally for a company."""

    title = _required_text(500)
    company_id = _reference("company")
    description = _long_text(20_000)
    status = _text(50)


class PlacementIn(Schema):
    """A candidate placed on a job order."""

    job_order_id = fields.String(required=True, pre_load=[_trimmed], validate=[_not_blank, _ID],
                                 metadata={"description": "The id of an existing job order."})
    candidate_name = _required_text(300)
    start_date = fields.Date(allow_none=True)
    end_date = fields.Date(allow_none=True, metadata={"description": "On or after start_date."})


class ActivityIn(Schema):
    """An email, task, calendar item or note, optionally on a lead and/or an opportunity."""

    type = fields.String(required=True, validate=validate.OneOf(ACTIVITY_TYPES))
    subject = _required_text(500)
    body = _long_text(100_000)
    due_at = Timestamp(allow_none=True)
    starts_at = Timestamp(allow_none=True)
    ends_at = Timestamp(allow_none=True, metadata={"description": "At or after starts_at."})
    lead_id = _reference("lead visible to you (linking needs leads:edit)")
    opportunity_id = _reference("opportunity visible to you (linking needs opportunities:edit)")


class CompanyPatch(CompanyIn):
    """The fields of a company to change."""


class ContactPatch(ContactIn):
    """The fields of a contact to change."""


class JobOrderPatch(JobOrderIn):
    """The fields of a job order to change."""


class PlacementPatch(PlacementIn):
    """The fields of a placement to change."""


class ActivityPatch(ActivityIn):
    """The fields of an activity to change (null lead_id / opportunity_id takes it off the record)."""


# -- responses -----------------------------------------------------------------------------------

class FileOut(Schema):
    """What every file carries: its id, version (the ETag) and who changed it when."""

    id = fields.String(validate=limits.ID)
    version = fields.Integer(validate=limits.VERSION)
    created_at = Timestamp()
    created_by = fields.String(validate=limits.REF)
    modified_at = Timestamp()
    modified_by = fields.String(validate=limits.REF)


# Responses carry the requests' limits (the validators only document them here).
class CompanyOut(FileOut):
    name = fields.String(validate=validate.Length(max=300))
    website = fields.String(allow_none=True, validate=validate.Length(max=500))
    phone = fields.String(allow_none=True, validate=validate.Length(max=50))
    email = fields.String(allow_none=True, validate=validate.Length(max=320))
    address = fields.String(allow_none=True, validate=validate.Length(max=500))
    city = fields.String(allow_none=True, validate=validate.Length(max=200))
    country = fields.String(allow_none=True, validate=validate.Length(max=100))


class ContactOut(FileOut):
    first_name = fields.String(validate=validate.Length(max=200))
    last_name = fields.String(validate=validate.Length(max=200))
    email = fields.String(allow_none=True, validate=validate.Length(max=320))
    phone = fields.String(allow_none=True, validate=validate.Length(max=50))
    company_id = fields.String(allow_none=True, validate=limits.ID)


class RelatedTo(Schema):
    lead_id = fields.String(allow_none=True, validate=limits.ID)
    opportunity_id = fields.String(allow_none=True, validate=limits.ID)


class JobOrderOut(FileOut):
    title = fields.String(validate=validate.Length(max=500))
    company_id = fields.String(allow_none=True, validate=limits.ID)
    description = fields.String(allow_none=True, validate=validate.Length(max=20_000))
    status = fields.String(allow_none=True, validate=validate.Length(max=50))
    related_to = fields.Nested(RelatedTo, metadata={"description": "The lead and the opportunity this job order "
                                                                   "is linked to (null when none)."})


class PlacementOut(FileOut):
    job_order_id = fields.String(validate=limits.ID)
    candidate_name = fields.String(validate=validate.Length(max=300))
    start_date = fields.Date(allow_none=True)
    end_date = fields.Date(allow_none=True)


class LinkedStage(Schema):
    id = fields.String(validate=limits.ID)
    name = fields.String(validate=validate.Length(max=limits.CATALOGUE_NAME_LENGTH),
                         metadata={"description": "In the best language of Accept-Language."})
    code = fields.String(validate=validate.Length(max=limits.CATALOGUE_CODE_LENGTH))
    color = fields.String(allow_none=True, validate=validate.Length(max=7))
    is_end = fields.Boolean()


class LinkedRecord(Schema):
    """A lead or opportunity an activity is on; only ``id`` when this service does not know it
    (yet) or the caller may not see it."""

    id = fields.String(validate=limits.ID)
    title = fields.String(validate=validate.Length(max=500))
    stage = fields.Nested(LinkedStage, allow_none=True, metadata={"description": "Its current stage."})
    allowed_stages = fields.List(fields.Nested(LinkedStage),
                                 metadata={"description": "The active stages it may move to, by index."})


class ActivityOut(FileOut):
    type = fields.String(validate=validate.OneOf(ACTIVITY_TYPES))
    subject = fields.String(validate=validate.Length(max=500))
    body = fields.String(allow_none=True, validate=validate.Length(max=100_000))
    due_at = Timestamp(allow_none=True)
    starts_at = Timestamp(allow_none=True)
    ends_at = Timestamp(allow_none=True)
    lead_id = fields.String(allow_none=True, validate=limits.ID)
    opportunity_id = fields.String(allow_none=True, validate=limits.ID)
    lead = fields.Nested(LinkedRecord, metadata={"description": "When linked to a lead (not in lists)."})
    opportunity = fields.Nested(LinkedRecord, metadata={"description": "When linked to an opportunity "
                                                                       "(not in lists)."})


# -- list queries --------------------------------------------------------------------------------

class FileQuery(PageQuery):
    q = fields.String(validate=validate.Length(max=200),
                      metadata={"description": "Simple search: case-insensitive substring of the text fields."})


class ContactQuery(FileQuery):
    company_id = fields.String(validate=_ID)


class JobOrderQuery(FileQuery):
    company_id = fields.String(validate=_ID)
    status = fields.String(validate=validate.Length(min=1, max=50))


class PlacementQuery(FileQuery):
    job_order_id = fields.String(validate=_ID)


class ActivityQuery(FileQuery):
    type = fields.String(validate=validate.OneOf(ACTIVITY_TYPES))
    lead_id = fields.String(validate=_ID)
    opportunity_id = fields.String(validate=_ID)


# -- bulk create (imports): the kit's one definition (crm_kit.bulk) in the files' words -----------

KEY_DESCRIPTION = ("The item's idempotency key (e.g. the import file's id and the row number): a key your office "
                   "used before creates nothing and answers `exists` with the id it made, whatever the other fields "
                   "say. The key of a deleted file is free again.")


def bulk_create_schemas(body: type[Schema], plural: str, path: str) -> tuple[type[Schema], type[Schema]]:
    """The body of ``POST <path>/bulk`` and the schema one item is loaded with (the create body
    plus its idempotency ``key``)."""
    name = body.__name__.removesuffix("In")
    item = type(f"{name}BulkCreateItem", (body,), {"key": import_key_field(KEY_DESCRIPTION)})
    bulk = type(f"{name}BulkCreate", (Schema,), {
        "action": fields.String(required=True, validate=validate.OneOf(("create",)),
                                metadata={"description": "create (the only action on files)."}),
        "items": PerItem(fields.Nested(item), required=True, validate=validate.Length(min=1, max=MAX_BULK_CREATE),
                         metadata={"description": f"Up to {MAX_BULK_CREATE} new {plural}, each the body of POST "
                                                  f"{path} plus its `key`; each is checked as that create would be "
                                                  "and succeeds or fails on its own, all in one transaction."}),
    })
    return bulk, item


BulkCreateResultOut, BulkCreateOut = bulk_result_schemas(
    "BulkCreate",
    index="The item's position in items (from 0).",
    id_="The file made (created) or made before with the same key (exists); null on error.",
    errors="The item's invalid fields (as a 422 names them, relative to the item).",
    results="One result per item, in order.")
