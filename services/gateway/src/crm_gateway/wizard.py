"""The 3-step wizard, served by the gateway: ``POST /v1/leads/wizard``, ``POST /v1/opportunities/wizard``.

Its routes and their documentation. The wizard's other parts, one job a file:

* ``wizard_schemas``: the body and the answer;
* ``wizard_client``: the services as the caller sees them (the caller's headers, the consistency
  token of the steps before, a failing step's problem);
* ``wizard_flow``: one call - permissions up front, the steps, undoing them, idempotency without
  storage (its docstring tells the whole protocol).
"""

from __future__ import annotations

import copy
from typing import Any

from crm_gateway.wizard_flow import run_wizard
from crm_gateway.wizard_schemas import KINDS, LeadWizardIn, OpportunityWizardIn, out_schema
from crm_kit.web import Api, Reply, RequestContext
from crm_kit.web.idempotency import HEADER as IDEMPOTENCY_HEADER
from crm_kit.web.idempotency import MAX_KEY_LENGTH, REPLAYED_HEADER

_DESCRIPTION = """Create a {kind} with its company and contact in one call (the 3-step wizard).

Steps: company (none|existing|new), contact (none|existing|new; a new contact gets the
company's id unless its data names one), record (empty, or a copy of copy_from changed by
data; the wizard sets company_id and contact_id), then the contact is linked to the {kind}
as its MAIN contact. {none}

Every permission the steps need is checked before anything is created. If a step fails, what
this call created is deleted again and the answer is that step's problem with a `step` member
(`company`, `contact`, `record`, `link`); anything that could not be deleted is named in
`detail` and `not_undone`. With an `Idempotency-Key`, a retry of a successful wizard returns
the same 201 body and creates nothing; a retry after a failed one runs afresh; the same key
with another body is 422."""


def declare(api: Api) -> None:
    """Add both wizards to the gateway's own routes."""
    for kind, records in KINDS.items():
        def handler(ctx: RequestContext, kind: str = kind) -> Reply:
            return run_wizard(ctx, kind)

        handler.__name__ = handler.__qualname__ = f"{kind}_wizard"
        handler.__doc__ = _DESCRIPTION.format(
            kind=kind, none="company none skips the company and the contact; contact none links the company only."
            if kind == "lead" else "Company and contact cannot be none (422).")
        api.post(f"/v1/{records}/wizard", permission=f"{records}:create", idempotent=False, tags=(records,),
                 body=LeadWizardIn if kind == "lead" else OpportunityWizardIn, response=out_schema(kind),
                 errors=(404, 409, 502, 503, 504))(handler)


_IDEMPOTENCY_PARAMETER = {
    "in": "header", "name": IDEMPOTENCY_HEADER, "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[ -~]+$"},
    "description": "Retry-safe key: a retry with the same key and body returns the first 201 and creates nothing.",
}
_EXAMPLE_COMPANY = {"id": "5b0c8a52-52d9-4d4e-a3b5-0d8a3b8e5d11", "name": "Acme Staffing BV", "website": None,
                    "phone": None, "email": None, "address": None, "city": "Utrecht", "country": "NL", "version": 1,
                    "created_at": "2026-11-23T10:00:00Z", "created_by": "u-17",
                    "modified_at": "2026-11-23T10:00:00Z", "modified_by": "u-17"}
_EXAMPLE_CONTACT = {"id": "9e4f7c1a-0a59-4d0b-8f0e-3c2b1a0d9e88", "first_name": "Anna", "last_name": "Smit",
                    "email": "anna.smit@acme.example", "phone": None, "company_id": _EXAMPLE_COMPANY["id"],
                    "version": 1, "created_at": "2026-11-23T10:00:00Z", "created_by": "u-17",
                    "modified_at": "2026-11-23T10:00:00Z", "modified_by": "u-17"}
_EXAMPLES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "lead": (
        {"company": {"mode": "new", "data": {"name": "Acme Staffing BV", "city": "Utrecht", "country": "NL"}},
         "contact": {"mode": "new", "data": {"first_name": "Anna", "last_name": "Smit",
                                             "email": "anna.smit@acme.example"}},
         "record": {"mode": "empty", "data": {"title": "Acme: 3 welders for Q1"}}},
        {"id": "0f5e2d1c-7b8a-4c3d-9e0f-1a2b3c4d5e6f", "title": "Acme: 3 welders for Q1", "description": "",
         "company_id": _EXAMPLE_COMPANY["id"], "contact_id": _EXAMPLE_CONTACT["id"], "owner_id": "u-17",
         "office_id": "office-1", "stage": {"id": "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f", "name": "New",
                                            "code": "NEW", "color": "#3366FF", "is_end": False, "remarks": None},
         "version": 1},
    ),
    "opportunity": (
        {"company": {"mode": "existing", "id": _EXAMPLE_COMPANY["id"]},
         "contact": {"mode": "existing", "id": _EXAMPLE_CONTACT["id"]},
         "record": {"mode": "copy", "copy_from": "3a4b5c6d-7e8f-4a0b-9c1d-2e3f4a5b6c7d",
                    "data": {"title": "Acme: renewal 2027", "amount": "12000.00", "currency": "EUR"}}},
        {"id": "1e2d3c4b-5a69-4788-9a0b-c1d2e3f4a5b6", "title": "Acme: renewal 2027", "amount": "12000.00",
         "currency": "EUR", "company_id": _EXAMPLE_COMPANY["id"], "contact_id": _EXAMPLE_CONTACT["id"],
         "owner_id": "u-17", "office_id": "office-1",
         "stage": {"id": "2b3c4d5e-6f70-4812-9a3b-4c5d6e7f8091", "name": "Prospecting", "code": "PROSPECTING",
                   "color": "#3366FF", "is_end": False, "remarks": None}, "version": 1},
    ),
}
_FAILED_EXAMPLE = {"type": "https://crm.example/problems/validation-error", "title": "Unprocessable Content",
                   "status": 422, "detail": "The request has invalid fields.", "instance": "/v1/leads/wizard",
                   "errors": [{"field": "stage_id", "message": "Not an active lead stage."}], "step": "record"}


def describe(document: dict[str, Any]) -> dict[str, Any]:
    """The gateway's own OpenAPI document with what the kit cannot say of the wizards: the
    ``Idempotency-Key`` header (the kit's idempotency needs a database; the wizard passes
    derived keys to the services instead), examples and the 201's headers."""
    doc = copy.deepcopy(document)
    for kind, records in KINDS.items():
        operation = doc.get("paths", {}).get(f"/v1/{records}/wizard", {}).get("post")
        if operation is None:
            continue
        request_example, record_example = _EXAMPLES[kind]
        operation.setdefault("parameters", []).append(dict(_IDEMPOTENCY_PARAMETER))
        operation["requestBody"]["content"]["application/json"]["examples"] = {
            kind: {"summary": f"A {kind} with its company and contact", "value": request_example}}
        created = operation["responses"]["201"]
        created["description"] = f"The {kind}, its company and its contact."
        created["content"]["application/json"]["examples"] = {kind: {"value": {
            kind: record_example, "company": _EXAMPLE_COMPANY, "contact": _EXAMPLE_CONTACT}}}
        created["headers"] = {
            "Location": {"schema": {"type": "string", "maxLength": 100},
                         "description": f"/v1/{records}/{{id}} of the new {kind}."},
            REPLAYED_HEADER: {"schema": {"type": "string", "enum": ["true"]},
                              "description": "Present on a retry that created nothing (same Idempotency-Key)."},
        }
        failed = operation["responses"].get("422")
        if failed is not None:
            failed["description"] = ("Invalid body or Idempotency-Key, or a step's 422 (its problem, with `step`).")
            failed["content"]["application/problem+json"]["examples"] = {"failed_step": {"value": {
                **_FAILED_EXAMPLE, "instance": f"/v1/{records}/wizard"}}}
    return doc

