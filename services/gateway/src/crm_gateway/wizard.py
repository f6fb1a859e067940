"""The 3-step wizard, served by the gateway: ``POST /v1/leads/wizard``, ``POST /v1/opportunities/wizard``.

Body: ``{"company": {"mode", "id", "data"}, "contact": {...}, "record": {"mode", "copy_from", "data"}}``.
The gateway keeps nothing durable, so it orchestrates the services over HTTP with the caller's
``Authorization`` and ``Accept-Language`` (each service checks the permission itself):

1. what the wizard only refers to is read first - an ``existing`` company or contact
   (``GET /v1/companies/{id}``, ``/v1/contacts/{id}``) and, when there is a contact, the kind's
   active ``MAIN`` role in the catalogue - so a wrong id fails before anything is created;
2. ``company``: ``new`` -> ``POST /v1/companies``;
3. ``contact``: ``new`` -> ``POST /v1/contacts`` (its ``company_id`` is the company's unless
   ``data`` names one); ``contact.mode=none`` links the company only, ``company.mode=none``
   skips both (leads only: the opportunities wizard refuses ``none``);
4. ``record``: ``empty`` -> ``POST /v1/{records}`` with ``data``; ``copy`` -> ``POST
   /v1/{records}/{copy_from}/copy`` with ``data`` as the changes. Either way the wizard sets
   ``company_id`` and ``contact_id`` (null when skipped), so ``data`` may not hold them;
5. ``link``: the contact goes on the record's contacts tab as its main contact (``POST
   /v1/{records}/{id}/contacts`` with the ``MAIN`` role). Linking learns of the new record
   from its event: every step is sent with the consistency token of the steps before it
   (``crm_gateway.consistency``), so linking waits until it has the record (503 after
   CRM_CONSISTENCY_WAIT: the wizard is undone and may be retried).

The answer carries a consistency token covering every step.

Permissions are checked up front, before anything is created (403): ``{records}:create``;
``files:edit`` for a ``new`` company or contact, ``files:view`` for an ``existing`` one; and
with a contact ``files:edit`` and ``{records}:edit`` (the link) plus ``{records}:delete``
(undoing the record if the link fails).

Compensation: when a step fails, what THIS call created is deleted in reverse order (record,
contact, company; linking drops the record's links itself), each delete tried DELETE_ATTEMPTS
times. Something only referred to, or that came back as an idempotent replay, is never
deleted. The answer is the failing step's problem (its status and body) with a ``step``
member (``company``, ``contact``, ``record`` or ``link``); a delete that could not be done
is logged and named in ``detail`` and ``not_undone``. A creating step that timed out (504) may
have created its entity without the gateway learning its id, so that one cannot be undone:
the detail says so.

Idempotency without storage: with an ``Idempotency-Key`` K, every creating step gets a
derived key ``wizard:<sha256(K)>:<generation>:<step>``, which the service remembers (per
caller, like K itself). A retry of a wizard that succeeded replays every step and answers
the same 201 body (``Idempotent-Replayed: true``), creating nothing. When a step answers
with a replay, the entity it names is read again: if it is gone (404), an earlier attempt
with K was undone, and the wizard starts over with the next generation of keys - so a retry
of a failed attempt runs afresh instead of replaying deleted entities. Steps that failed
were never remembered by their service (only successes are), so a retry of a failing body
fails the same way. K with another body is refused (422) by the first step whose derived
key the service already holds for a different request; whatever this call created before
that is undone, and replays are never deleted. After MAX_GENERATIONS undone attempts, K is
refused (422: use a new key). If someone deletes the wizard's results later, a retry with K
runs the wizard again (there is nothing left to replay).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flask import current_app, request
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from crm_gateway.consistency import TOKEN_HEADER, Consistency
from crm_gateway.proxy import TIMEOUT, SizedRequestBody, Upstream, UpstreamError
from crm_kit import correlation
from crm_kit.web import Api, Identity, Problem, Reply, RequestContext
from crm_kit.web.http import note_language
from crm_kit.web.idempotency import HEADER as IDEMPOTENCY_HEADER
from crm_kit.web.idempotency import MAX_KEY_LENGTH, REPLAYED_HEADER, validate_key

log = logging.getLogger(__name__)

KINDS = {"lead": "leads", "opportunity": "opportunities"}
DELETE_ATTEMPTS = 3
MAX_GENERATIONS = 20
MAIN_ROLE = "MAIN"
# Ids become path segments of the services' URLs: only the characters of ids, never "/" or "..".
_ID = [validate.Regexp(r"^[A-Za-z0-9_-]{1,36}$", error="Not an id (1 to 36 letters, digits, - or _)."),
       validate.Length(max=36)]
_SET_BY_STEPS = ("company_id", "contact_id")
_RETRY_DELETE = frozenset({409, 429, 500, 502, 503, 504})


# -- the body -----------------------------------------------------------------------------------

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


def _out_schema(kind: str) -> type[Schema]:
    records = KINDS[kind]
    return Schema.from_dict({
        kind: fields.Dict(metadata={"description": f"The new {kind}, as GET /v1/{records}/{{id}} returns it."}),
        "company": fields.Dict(allow_none=True, metadata={
            "description": "The company (GET /v1/companies/{id}); null when skipped."}),
        "contact": fields.Dict(allow_none=True, metadata={
            "description": "The contact (GET /v1/contacts/{id}); null when skipped."}),
    }, name=f"{kind.capitalize()}WizardOut")


# -- talking to the services --------------------------------------------------------------------

@dataclass
class Answer:
    """A service's answer, read whole (small JSON documents)."""

    status: int
    body: Any
    headers: Mapping[str, str]

    @property
    def replayed(self) -> bool:
        return str(self.headers.get(REPLAYED_HEADER, "")).lower() == "true"


class StepFailedError(Exception):
    """A step failed; ``problem`` is what the client gets (with ``step``)."""

    def __init__(self, step: str, problem: Problem) -> None:
        super().__init__(f"{step}: {problem.status} {problem.detail}")
        self.step = step
        self.problem = problem


class GenerationUndoneError(Exception):
    """A replayed creation's entity is gone: an earlier attempt with these keys was undone."""


def _step_problem(step: str, answer: Answer) -> StepFailedError:
    """The service's problem, as it said it, with the step named."""
    if answer.status < 400:
        return StepFailedError(step, Problem(502, f"The {step} step got an invalid answer from its service.",
                                             step=step))
    body = answer.body if isinstance(answer.body, dict) else {}
    errors = body.get("errors")
    headers = {"Retry-After": answer.headers["Retry-After"]} if "Retry-After" in answer.headers else None
    problem = Problem(answer.status, str(body.get("detail") or f"The {step} step failed ({answer.status})."),
                      title=body.get("title") if isinstance(body.get("title"), str) else None,
                      type_=body.get("type") if isinstance(body.get("type"), str) else None,
                      errors=errors if isinstance(errors, list) and all(isinstance(e, dict) for e in errors) else None,
                      headers=headers)
    problem.extra.update({k: v for k, v in body.items()
                          if k not in ("type", "title", "status", "detail", "instance", "errors")})
    problem.extra["step"] = step
    return StepFailedError(step, problem)


class Services:
    """The services as the caller sees them: their answers to the caller's own headers."""

    def __init__(self, upstreams: Mapping[str, Upstream], consistency: Consistency) -> None:
        self.upstreams = upstreams
        self.consistency = consistency
        self.token = consistency.request_token()  # plus every step's write, as the steps go
        self.headers = {"Accept": "application/json",
                        correlation.HEADER: correlation.get() or correlation.new_id()}
        for name in ("Authorization", "Accept-Language"):
            if name in request.headers:
                self.headers[name] = request.headers[name]

    def send(self, step: str, service: str, method: str, path: str, *, body: Any = None, query: str = "",
             key: str | None = None) -> Answer:
        """One request; a service that cannot answer fails the step (503/504/502)."""
        upstream = self.upstreams[service]
        headers = dict(self.headers)
        payload = b""
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if key is not None:
            headers[IDEMPOTENCY_HEADER] = key
        try:
            resp = self.consistency.send(
                service, method, path, query=query, headers=headers, replayable=True, token=self.token,
                body=lambda: SizedRequestBody(io.BytesIO(payload), len(payload)) if payload else None)
        except Problem as problem:  # not as fresh as the steps before it within the wait
            raise StepFailedError(step, Problem(problem.status, problem.detail, headers=problem.headers,
                                                step=step)) from None
        except UpstreamError as exc:
            problem = exc.problem(upstream.read_timeout)
            detail = problem.detail
            if exc.kind == TIMEOUT and method == "POST":
                detail += f" The {step} may have been created all the same; if so, it was not undone."
            raise StepFailedError(step, Problem(problem.status, detail, headers=problem.headers, step=step)) from None
        try:
            try:
                data = resp.json()
            except ValueError:
                data = None
            if 200 <= resp.status_code < 300 and method != "GET":
                self.token = self.consistency.written(self.token, service, resp.headers)
            if step == "record" and 200 <= resp.status_code < 300:  # its stage's name is localised
                note_language(resp.headers.get("Content-Language"))  # the wizard's answer says so
            return Answer(resp.status_code, data, resp.headers)
        finally:
            resp.close()

    def read(self, step: str, service: str, path: str) -> dict[str, Any]:
        answer = self.send(step, service, "GET", path)
        if answer.status != 200 or not isinstance(answer.body, dict):
            raise _step_problem(step, answer)
        return answer.body

    def main_role(self, kind: str) -> str:
        """The id of the kind's active MAIN role (the record's main contact)."""
        token: str | None = None
        while True:
            params = {"active": "true", "page_size": "200", **({"page_token": token} if token else {})}
            answer = self.send("link", "catalogue", "GET", f"/v1/{kind}-tables/roles", query=urlencode(params))
            if answer.status != 200 or not isinstance(answer.body, dict):
                raise _step_problem("link", answer)
            for role in answer.body.get("items") or []:
                if role.get("code") == MAIN_ROLE:
                    return str(role["id"])
            token = answer.body.get("next_page_token")
            if not token:
                raise StepFailedError("link", Problem(
                    409, f"There is no active {kind} role with code {MAIN_ROLE}: the wizard links the contact "
                         "as the record's main contact.", step="link"))

    def gone(self, step: str, service: str, path: str) -> bool:
        """True when ``path`` answers 404; anything else counts as still there."""
        return self.send(step, service, "GET", path).status in (404, 410)

    def delete(self, service: str, path: str) -> bool:
        """Delete ``path``, tried DELETE_ATTEMPTS times; True when it is gone."""
        for attempt in range(DELETE_ATTEMPTS):
            try:
                status = self.send("undo", service, "DELETE", path).status
            except StepFailedError:
                status = 503
            if status in (200, 204, 404):
                return True
            if status not in _RETRY_DELETE:
                break
            if attempt + 1 < DELETE_ATTEMPTS:
                time.sleep(0.2 * 2 ** attempt)
        return False


# -- one attempt (one generation of derived keys) ----------------------------------------------

@dataclass
class Created:
    step: str
    service: str
    path: str  # where it is deleted
    id: str


@dataclass
class Attempt:
    """The creating steps of one generation; remembers what it created itself."""

    services: Services
    kind: str
    key_base: str | None
    generation: int
    created: list[Created] = field(default_factory=list)
    replays: int = 0
    linked: bool = False  # the link was made by this call (not a replay)

    @property
    def records(self) -> str:
        return KINDS[self.kind]

    def key(self, step: str) -> str | None:
        return None if self.key_base is None else f"{self.key_base}:{self.generation}:{step}"

    def create(self, step: str, service: str, path: str, body: Mapping[str, Any], collection: str) -> dict[str, Any]:
        answer = self.services.send(step, service, "POST", path, body=body, key=self.key(step))
        entity = answer.body
        if answer.status >= 300 or not isinstance(entity, dict) or not isinstance(entity.get("id"), str):
            raise _step_problem(step, answer)
        item = f"{collection}/{entity['id']}"
        if not answer.replayed:
            self.created.append(Created(step, service, item, entity["id"]))
        elif self.services.gone(step, service, item):
            raise GenerationUndoneError(step)
        else:
            self.replays += 1
        return entity

    def link(self, record: Mapping[str, Any], contact: Mapping[str, Any], role_id: str) -> None:
        """The contact on the record's contacts tab, once linking knows the record."""
        path = f"/v1/{self.records}/{record['id']}/contacts"
        body = {"contact_id": contact["id"], "role_id": role_id}
        answer = self.services.send("link", "linking", "POST", path, body=body, key=self.key("link"))
        if not 200 <= answer.status < 300:
            raise _step_problem("link", answer)
        self.linked = not answer.replayed

    def undo(self) -> list[Created]:
        """Delete what this attempt created, newest first; what could not be deleted."""
        left: list[Created] = []
        for item in reversed(self.created):
            if self.services.delete(item.service, item.path):
                log.info("wizard undone: deleted %s %s", item.step, item.id)
            else:
                log.error("wizard could not be undone: %s %s (%s) remains", item.step, item.id, item.path)
                left.append(item)
        self.created.clear()
        return left


# -- the wizard ---------------------------------------------------------------------------------

def required_permissions(kind: str, body: Mapping[str, Any]) -> list[str]:
    """Every permission the wizard's steps (and their undoing) need, for this body."""
    records = KINDS[kind]
    needed = [f"{records}:create"]
    for step in ("company", "contact"):
        mode = (body.get(step) or {}).get("mode", "none")
        if mode != "none":
            needed.append("files:edit" if mode == "new" else "files:view")
    if (body.get("contact") or {}).get("mode", "none") != "none":
        needed += ["files:edit", f"{records}:edit", f"{records}:delete"]
    return list(dict.fromkeys(needed))


def _check_permissions(identity: Identity, kind: str, body: Mapping[str, Any]) -> None:
    missing = [p for p in required_permissions(kind, body) if not identity.has(p)]
    if missing:
        raise Problem(403, "This wizard needs the permission" + ("s " if len(missing) > 1 else " ")
                      + ", ".join(repr(p) for p in missing) + ".", missing_permissions=missing)


def _key_base() -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    validate_key(key)
    return f"wizard:{hashlib.sha256(key.encode()).hexdigest()}"


def run_wizard(ctx: RequestContext, kind: str) -> Reply:
    """One wizard call (see the module's docstring): 201 with the record, company and contact."""
    body = ctx.body
    _check_permissions(ctx.user, kind, body)
    key_base = _key_base()
    gateway = current_app.extensions["crm_gateway"]
    services = Services(gateway.upstreams, gateway.consistency)
    company_in = body["company"]
    contact_in = body.get("contact") or {"mode": "none"}
    record_in = body["record"]
    records = KINDS[kind]
    try:
        known_company = services.read("company", "linking", f"/v1/companies/{company_in['id']}") \
            if company_in["mode"] == "existing" else None
        known_contact = services.read("contact", "linking", f"/v1/contacts/{contact_in['id']}") \
            if contact_in["mode"] == "existing" else None
        role_id = services.main_role(kind) if contact_in["mode"] != "none" else None
    except StepFailedError as failed:
        raise failed.problem from None
    for generation in range(MAX_GENERATIONS if key_base else 1):
        attempt = Attempt(services, kind, key_base, generation)
        try:
            company = known_company
            if company_in["mode"] == "new":
                company = attempt.create("company", "linking", "/v1/companies", company_in["data"], "/v1/companies")
            contact = known_contact
            if contact_in["mode"] == "new":
                data = dict(contact_in["data"])
                data.setdefault("company_id", company["id"] if company else None)
                contact = attempt.create("contact", "linking", "/v1/contacts", data, "/v1/contacts")
            fields_ = {**(record_in.get("data") or {}), "company_id": company["id"] if company else None,
                       "contact_id": contact["id"] if contact else None}
            path = f"/v1/{records}" if record_in["mode"] == "empty" else f"/v1/{records}/{record_in['copy_from']}/copy"
            record = attempt.create("record", records, path, fields_, f"/v1/{records}")
            if contact is not None and role_id is not None:
                attempt.link(record, contact, role_id)
        except GenerationUndoneError:
            attempt.undo()
            continue
        except StepFailedError as failed:
            raise _undone(failed, attempt.undo()) from None
        headers = {"Location": f"/v1/{records}/{record['id']}"}
        if not attempt.created and not attempt.linked and attempt.replays:
            headers[REPLAYED_HEADER] = "true"
        if services.token is not None:
            headers[TOKEN_HEADER] = services.token.encode(services.consistency.key)
        return Reply({kind: record, "company": company, "contact": contact}, status=201, headers=headers)
    raise Problem(422, f"This {IDEMPOTENCY_HEADER} was used for {MAX_GENERATIONS} wizards that were undone; "
                       "use a new key.", errors=[{"field": IDEMPOTENCY_HEADER, "message": "Used up."}])


def _undone(failed: StepFailedError, left: list[Created]) -> Problem:
    problem = failed.problem
    if left:
        names = ", ".join(f"{item.step} {item.id}" for item in left)
        problem.detail += f" Undoing the wizard failed: {names} could not be deleted and remains."
        problem.extra["not_undone"] = [{"step": item.step, "id": item.id} for item in left]
    return problem


# -- declaration and documentation --------------------------------------------------------------

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
                 body=LeadWizardIn if kind == "lead" else OpportunityWizardIn, response=_out_schema(kind),
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

