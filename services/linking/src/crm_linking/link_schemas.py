"""The edge schemas of the links and the record tabs (marshmallow; the kit refuses unknown fields
with a 422): the bodies that link a contact or a job order (an existing one, or a new one given
inline), and what the tabs and the records reached from a contact or a company answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from crm_kit.web import limits
from crm_kit.web.fields import Timestamp
from crm_linking.file_schemas import ContactOut, JobOrderOut

_ID = validate.Length(min=1, max=36)


# -- bodies --------------------------------------------------------------------------------------

class NewContactIn(Schema):
    first_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    last_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    email = fields.Email(allow_none=True, load_default=None, validate=validate.Length(max=320))
    phone = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=50))
    company_id = fields.String(allow_none=True, load_default=None, validate=_ID)


class ContactLinkIn(Schema):
    contact_id = fields.String(validate=_ID, metadata={"description": "An existing contact."})
    contact = fields.Nested(NewContactIn, metadata={"description": "A new contact, created with the link."})
    role_id = fields.String(required=True, validate=_ID,
                            metadata={"description": "An active role of the record's kind."})

    @validates_schema
    def _one_contact(self, data: Mapping[str, Any], **_: Any) -> None:
        if ("contact_id" in data) == ("contact" in data):
            raise ValidationError("Give either contact_id (an existing contact) or contact (a new one).",
                                  field_name="contact_id")


class ContactRoleIn(Schema):
    role_id = fields.String(required=True, validate=_ID)


class NewJobOrderIn(Schema):
    title = fields.String(required=True, validate=validate.Length(min=1, max=500))
    company_id = fields.String(allow_none=True, load_default=None, validate=_ID)
    description = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=20000))
    status = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=50))


class JobOrderLinkIn(Schema):
    job_order_id = fields.String(validate=_ID, metadata={"description": "An existing job order."})
    job_order = fields.Nested(NewJobOrderIn, metadata={"description": "A new job order, created with the link."})

    @validates_schema
    def _one_job_order(self, data: Mapping[str, Any], **_: Any) -> None:
        if ("job_order_id" in data) == ("job_order" in data):
            raise ValidationError("Give either job_order_id (an existing job order) or job_order (a new one).",
                                  field_name="job_order_id")


# -- responses ----------------------------------------------------------------------------------

# The validators only document how long the values can be (what came in was checked).
class LinkRoleOut(Schema):
    id = fields.String(validate=limits.ID)
    code = fields.String(validate=validate.Length(max=limits.CATALOGUE_CODE_LENGTH))
    name = fields.String(validate=validate.Length(max=limits.CATALOGUE_NAME_LENGTH))


class ContactLinkOut(Schema):
    contact_id = fields.String(validate=limits.ID)
    role_id = fields.String(allow_none=True, validate=limits.ID, metadata={
        "description": "null when the contact has no role on the record (a former main contact, or carried over "
                       "by a conversion without a matching role)."})
    role = fields.Nested(LinkRoleOut, allow_none=True,
                         metadata={"description": "null when the role is no longer in the catalogue."})
    contact = fields.Nested(ContactOut)
    linked_at = Timestamp()
    linked_by = fields.String(validate=limits.REF)


class JobOrderLinkOut(Schema):
    job_order_id = fields.String(validate=limits.ID)
    job_order = fields.Nested(JobOrderOut)
    linked_at = Timestamp()
    linked_by = fields.String(validate=limits.REF)


class TimelineOut(Schema):
    at = Timestamp()
    type = fields.String(validate=validate.Length(max=50),
                         metadata={"description": "created, stage_changed, stage_group_changed, added_to_group, "
                                                  "removed_from_group, converted, converted_from_lead, "
                                                  "contact_linked, contact_unlinked, contact_role_changed, "
                                                  "job_order_linked, job_order_unlinked, activity_*"})
    data = fields.Dict(metadata={
        "description": "What happened, by type. A contact_linked or contact_role_changed the record's main contact "
                       "made has cause 'main_contact'; one a conversion made has cause 'conversion' and lead_id, and "
                       "role_dropped_from (the lead role's code) when the contact came over without a role."})


class LinkedRecordOut(Schema):
    id = fields.String(validate=limits.ID)
    kind = fields.String(validate=validate.OneOf(("lead", "opportunity")))
    title = fields.String(validate=validate.Length(max=500))
    stage_id = fields.String(allow_none=True, validate=limits.ID)
    stage_group_id = fields.String(allow_none=True, validate=limits.ID)
    owner_id = fields.String(validate=limits.REF)
    office_id = fields.String(validate=limits.REF)
    company_id = fields.String(allow_none=True, validate=limits.ID)
    contact_id = fields.String(allow_none=True, validate=limits.ID)


class ContactRecordOut(LinkedRecordOut):
    role_id = fields.String(allow_none=True, validate=limits.ID, metadata={
        "description": "The contact's role on the record; null when the contact is only the record's contact_id."})

