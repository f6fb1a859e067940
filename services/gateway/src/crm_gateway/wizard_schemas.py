"""The wizard's body and answer (marshmallow; the kit refuses unknown fields with a 422).

Rules within one step, or between the steps of one body, are checked here; what needs the
services (an id that exists, a permission) is the flow's (``wizard_flow``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

KINDS = {"lead": "leads", "opportunity": "opportunities"}
# Ids become path segments of the services' URLs: only the characters of ids, never "/" or "..".
_ID = [validate.Regexp(r"^[A-Za-z0-9_-]{1,36}$", error="Not an id (1 to 36 letters, digits, - or _)."),
       validate.Length(max=36)]
_SET_BY_STEPS = ("company_id", "contact_id")


class FileStepIn(Schema):
    """The company or contact step: ``none``, an ``existing`` one (``id``) or a ``new`` one (``data``)."""

    mode = fields.String(required=True, validate=validate.OneOf(("none", "existing", "new")))
    id = fields.String(validate=_ID, metadata={"description": "mode=existing: the company's or contact's id."})
    data = fields.Dict(keys=fields.String(), metadata={
        "description": "mode=new: the fields of POST /v1/companies or /v1/contacts."})

    @validates_schema
    def _fits_mode(self, data: Mapping[str, Any], **_: Any) -> None:
        mode = data.get("mode")
        if mode == "existing" and "id" not in data:
            raise ValidationError("mode existing needs the id of the existing one.", field_name="id")
        if mode == "new" and "data" not in data:
            raise ValidationError("mode new needs data: the new one's fields.", field_name="data")
        if mode != "existing" and "id" in data:
            raise ValidationError(f"Only mode existing takes an id, not mode {mode}.", field_name="id")
        if mode != "new" and "data" in data:
            raise ValidationError(f"Only mode new takes data, not mode {mode}.", field_name="data")


class RequiredFileStepIn(FileStepIn):
    """The company or contact step of the opportunities wizard: ``none`` is not allowed."""

    mode = fields.String(required=True, validate=validate.OneOf(
        ("existing", "new"), error="Must be existing or new: an opportunity needs a company and a contact."))


class RecordStepIn(Schema):
    """The record step: ``empty`` (a new record from ``data``) or ``copy`` (of ``copy_from``, changed by ``data``)."""

    mode = fields.String(required=True, validate=validate.OneOf(("empty", "copy")))
    copy_from = fields.String(validate=_ID, metadata={"description": "mode=copy: the record to copy."})
    data = fields.Dict(keys=fields.String(), metadata={
        "description": "The record's fields (mode=empty, as POST /v1/{records}) or the changes to the copy "
                       "(mode=copy). company_id and contact_id come from the company and contact steps."})

    @validates_schema
    def _fits_mode(self, data: Mapping[str, Any], **_: Any) -> None:
        mode = data.get("mode")
        if mode == "copy" and "copy_from" not in data:
            raise ValidationError("mode copy needs copy_from: the record to copy.", field_name="copy_from")
        if mode == "empty" and "copy_from" in data:
            raise ValidationError("Only mode copy takes copy_from.", field_name="copy_from")
        if mode == "empty" and "data" not in data:
            raise ValidationError("mode empty needs data: the new record's fields.", field_name="data")
        for name in _SET_BY_STEPS:
            if name in (data.get("data") or {}):
                raise ValidationError(f"{name} is set by the {name.removesuffix('_id')} step.",
                                      field_name=f"data.{name}")


class LeadWizardIn(Schema):
    company = fields.Nested(FileStepIn, required=True)
    contact = fields.Nested(FileStepIn, metadata={"description": "Optional: absent is mode none."})
    record = fields.Nested(RecordStepIn, required=True)

    @validates_schema
    def _contact_needs_company(self, data: Mapping[str, Any], **_: Any) -> None:
        contact = data.get("contact") or {"mode": "none"}
        if data.get("company", {}).get("mode") == "none" and contact["mode"] != "none":
            raise ValidationError("company mode none skips the contact too: give contact mode none, or a company.",
                                  field_name="contact.mode")


class OpportunityWizardIn(Schema):
    company = fields.Nested(RequiredFileStepIn, required=True)
    contact = fields.Nested(RequiredFileStepIn, required=True)
    record = fields.Nested(RecordStepIn, required=True)


def out_schema(kind: str) -> type[Schema]:
    records = KINDS[kind]
    return Schema.from_dict({
        kind: fields.Dict(metadata={"description": f"The new {kind}, as GET /v1/{records}/{{id}} returns it."}),
        "company": fields.Dict(allow_none=True, metadata={
            "description": "The company (GET /v1/companies/{id}); null when skipped."}),
        "contact": fields.Dict(allow_none=True, metadata={
            "description": "The contact (GET /v1/contacts/{id}); null when skipped."}),
    }, name=f"{kind.capitalize()}WizardOut")

