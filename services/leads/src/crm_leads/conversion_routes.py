"""``POST /v1/leads/{id}/convert``: step 1 of the conversion saga (``crm_pipeline.conversion``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from crm_kit.web import Api, Reply, RequestContext, check_if_match, limits
from crm_pipeline.api import RecordsApi
from crm_pipeline.conversion import convert
from crm_pipeline.events import Actor
from crm_pipeline.kind import OPPORTUNITY_NAMES
from crm_pipeline.references import OpportunityViews
from crm_pipeline.schemas import record_fields


class _ConversionBody(Schema):
    @validates_schema
    def _existing_alone(self, data: Mapping[str, Any], **_: Any) -> None:
        if "opportunity_id" in data and len(data) > 1:
            raise ValidationError("Give either opportunity_id (convert into that existing opportunity) or fields "
                                  "for a new opportunity, not both.", field_name="opportunity_id")


class ConversionWarningOut(Schema):
    code = fields.String(validate=validate.OneOf(("contact_role_dropped", "contact_not_carried_over")), metadata={
        "description": "contact_role_dropped: the contact came over with no role (no "
                                                  "active opportunity role has its lead role's code, or the "
                                                  "opportunity has a contact with that protected role already); "
                                                  "contact_not_carried_over: it is not on the opportunity."})
    contact_id = fields.String(validate=limits.ID)
    lead_role_id = fields.String(allow_none=True, validate=limits.ID)
    lead_role_code = fields.String(allow_none=True, validate=validate.Length(max=limits.CATALOGUE_CODE_LENGTH))
    message = fields.String(validate=limits.MESSAGE)


def add_conversion(api: Api, parts: RecordsApi) -> None:
    """The conversion's route, on the leads' records api."""
    kind, records, present, load = parts.kind, parts.records, parts.present, parts.load
    views = OpportunityViews(parts.tables.get("opportunity_views"))
    # The fields of a new opportunity (with its money), as its create has them; the office is the lead's.
    body = _ConversionBody.from_dict(
        {k: v for k, v in record_fields(partial=True, money=True).items() if k != "office_id"}
        | {"group_ids": fields.List(fields.String(validate=validate.Length(min=1, max=36)),
                                    validate=validate.Length(max=100)),
           "opportunity_id": fields.String(validate=validate.Length(min=1, max=36), metadata={
               "description": "Convert into this existing opportunity (one you may edit, without a lead) instead "
                              "of a new one; no other field goes with it."})},
        name="LeadConversion")
    reply = Schema.from_dict({
        "lead": fields.Nested(parts.out),
        "opportunity": fields.Dict(metadata={"description": "The opportunity, as GET /v1/opportunities/{id} shows "
                                                            "it (only its id in a 202)."}),
        "warnings": fields.List(fields.Nested(ConversionWarningOut), metadata={
            "description": "Each contact of the lead whose role did not come over (it is on the opportunity with "
                           "role_id null); empty in a 202, when that is not known yet."}),
    }, name="LeadConverted")

    @api.post(f"{kind.collection_path}/<record_id>/convert", permission=kind.permission("edit"), body=body,
              body_required=False, response=reply, errors=(409,),
              also={202: "The lead is converted, but the opportunity was not readable within the gateway's wait: "
                         "Location names it (the conversion completes; retry the GET)."},
              summary="Convert a lead into a new or an existing opportunity (201 once the opportunity and what "
                      "came over are readable, via the gateway)")
    def convert_lead(ctx: RequestContext, record_id: str) -> Reply:
        lead = load(ctx, record_id)
        check_if_match(lead.version)
        moved, opportunity_id = convert(records, ctx.session, lead, ctx.body, Actor.of(ctx.user),
                                        identity=ctx.user, views=views)
        return Reply({"lead": present.one(ctx, moved), "opportunity": {"id": opportunity_id}, "warnings": []},
                     headers={"Location": f"{OPPORTUNITY_NAMES.collection_path}/{opportunity_id}"})
