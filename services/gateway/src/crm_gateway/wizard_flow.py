"""One call of the 3-step wizard (``POST /v1/leads/wizard``, ``POST /v1/opportunities/wizard``).

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

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, request

from crm_gateway.consistency import TOKEN_HEADER
from crm_gateway.wizard_client import GenerationUndoneError, Services, StepFailedError, step_problem
from crm_gateway.wizard_schemas import KINDS
from crm_kit.web import Identity, Problem, Reply, RequestContext
from crm_kit.web.idempotency import HEADER as IDEMPOTENCY_HEADER
from crm_kit.web.idempotency import REPLAYED_HEADER, validate_key

log = logging.getLogger("crm_gateway.wizard")  # the wizard's log lines, wherever its parts live
MAX_GENERATIONS = 20


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
            raise step_problem(step, answer)
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
            raise step_problem("link", answer)
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

