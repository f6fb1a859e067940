"""Lead conversion through the gateway: ``POST /v1/leads/{id}/convert``.

The leads service commits the lead's side (the move to the default end stage, the
``lead.converted`` event naming the opportunity: a new one, or an existing one with
``{"opportunity_id"}``). The opportunities service then creates or links that opportunity,
and linking carries the lead's contacts and job orders over, both from that event. The
gateway answers once all of it is readable:

1. it waits until the opportunities service has applied the conversion (its consumer of
   ``crm.leads.v1`` reached the event's offsets) and reads the opportunity as the caller;
2. it waits until linking has applied the conversion and every event of the opportunities
   service so far (the opportunity itself, which linking's tabs need), so the opportunity's
   contacts and job orders tabs show what was carried over;
3. ``warnings``: each contact of the lead whose role did not come over. A lead role maps to the
   opportunity role with the same code; without one the contact comes over with no role
   (``role_id`` null). This compares the lead's contacts tab with the opportunity's, which is
   linking's data after the carry-over - nothing is guessed, and it is the same whether linking
   dropped the role for want of a counterpart or because the opportunity has its own MAIN/SIGN
   contact already. A caller who may not read contacts (no ``files:view``) gets no warnings:
   they would name contacts the caller may not see.

201 with ``{"lead", "opportunity", "warnings"}`` and a consistency token that covers the
opportunities' and linking's effects; 202 with the opportunity's ``Location`` (and the
opportunity as ``{"id"}``, no warnings) when that takes longer than CONVERSION_WAIT seconds:
the saga still completes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from flask import Response, request

from crm_gateway.consistency import BehindError, Plan, Token, decode_issued, forward_consistently
from crm_gateway.proxy import Upstream, UpstreamError, json_of_ok
from crm_kit import consistency as kit
from crm_kit import correlation

if TYPE_CHECKING:
    from crm_gateway.app import GatewayState

log = logging.getLogger(__name__)

CONVERSION_WAIT = 10.0  # seconds the gateway waits for a converted lead's opportunity
ROLE_DROPPED = "contact_role_dropped"
NOT_CARRIED = "contact_not_carried_over"
_PAGE = 200
_MAX_PAGES = 50  # 10,000 contacts on one record: far beyond any real one


def convert_and_wait(state: GatewayState) -> Response:
    """The conversion as the module says: 201 once readable, else 202."""
    consistency = state.consistency
    resp = forward_consistently(consistency, state.upstreams["leads"])
    if resp.status_code != 201:
        return resp
    resp.direct_passthrough = False  # a small JSON body: read it whole, unlike forwarded streams
    body = json.loads(resp.get_data())
    body.setdefault("warnings", [])
    token = decode_issued(consistency, resp) or Token()
    lead_id = body["lead"]["id"]
    location = f"/v1/opportunities/{body['opportunity']['id']}"
    headers = {name: request.headers[name] for name in ("Authorization", "Accept-Language") if name in request.headers}
    headers[correlation.HEADER] = correlation.get() or correlation.new_id()
    deadline = time.monotonic() + CONVERSION_WAIT
    opportunities = state.upstreams["opportunities"]
    try:
        converted = consistency.offsets("leads", token.positions.get("leads"), deadline, headers)
        status, opportunity = opportunities.get_json(
            location, headers={**headers, **Plan(converted).headers(deadline)},
            timeout=(opportunities.connect_timeout, CONVERSION_WAIT + 1.0))
        if status != 200 or not isinstance(opportunity, dict):
            raise BehindError(f"the opportunity answered {status}")
        body["opportunity"] = opportunity
        # What the conversion made elsewhere: the opportunity (created or linked), then the links
        # carried over - linking waits for both, since its tabs of the opportunity need the latter.
        outbox_id, made = consistency.position("opportunities", None, deadline, headers, require=converted)
        token = token.merge({"opportunities": outbox_id})
        seen = kit.merge_offsets(converted, made)
        outbox_id, _ = consistency.position("linking", None, deadline, headers, require=seen)
        token = token.merge({"linking": outbox_id})
        body["warnings"] = conversion_warnings(state.upstreams["linking"], lead_id, opportunity["id"],
                                               {**headers, **Plan(seen).headers(deadline)}, deadline)
        out = Response(json.dumps(body), status=201, mimetype="application/json", headers={"Location": location})
    except (BehindError, UpstreamError) as exc:
        log.warning("conversion of %s: answering 202 (%s)", lead_id, exc)
        body["warnings"] = []
        out = Response(json.dumps(body), status=202, mimetype="application/json",
                       headers={"Location": location, "Retry-After": "1"})
    if "Content-Language" in resp.headers:  # the records' stage names, localised as the lead's answer says
        out.headers["Content-Language"] = resp.headers["Content-Language"]
        out.vary.add("Accept-Language")
    consistency.issue(out, token)
    return out


def _contacts(linking: Upstream, path: str, headers: Mapping[str, str], deadline: float) -> list[dict[str, Any]]:
    """Every item of a contacts tab (all pages); ``BehindError`` when linking does not answer 200."""
    items: list[dict[str, Any]] = []
    page_token: str | None = None
    for _ in range(_MAX_PAGES):
        query = urlencode({"page_size": _PAGE, **({"page_token": page_token} if page_token else {})})
        remaining = max(deadline - time.monotonic(), 0.5)
        resp = linking.request("GET", path, query=query, headers={"Accept": "application/json", **headers},
                               timeout=(linking.connect_timeout, remaining + 1.0), retries=0)
        data = json_of_ok(resp)
        if not isinstance(data, dict):
            raise _TabUnreadableError(resp.status_code)
        items += [item for item in data.get("items") or [] if isinstance(item, dict)]
        page_token = data.get("next_page_token")
        if not page_token:
            break
    return items


class _TabUnreadableError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"a contacts tab answered {status}")
        self.status = status


def _name(item: Mapping[str, Any]) -> str:
    contact = item.get("contact") or {}
    name = f"{contact.get('first_name') or ''} {contact.get('last_name') or ''}".strip()
    return name or str(item.get("contact_id"))


def conversion_warnings(linking: Upstream, lead_id: str, opportunity_id: str, headers: Mapping[str, str],
                        deadline: float) -> list[dict[str, Any]]:
    """The lead's contacts whose role did not come over to the opportunity (see the module)."""
    try:
        lead = _contacts(linking, f"/v1/leads/{lead_id}/contacts", headers, deadline)
        carried = {item.get("contact_id"): item
                   for item in _contacts(linking, f"/v1/opportunities/{opportunity_id}/contacts", headers, deadline)}
    except _TabUnreadableError as exc:
        if exc.status != 403:
            log.warning("conversion of %s: no warnings (%s)", lead_id, exc)
        return []
    except UpstreamError as exc:
        log.warning("conversion of %s: no warnings (linking: %s)", lead_id, exc.kind)
        return []
    warnings = []
    for item in lead:
        role = item.get("role") if isinstance(item.get("role"), dict) else {}
        code = role.get("code") if role else None
        lead_role = {"contact_id": item.get("contact_id"), "lead_role_id": item.get("role_id"), "lead_role_code": code}
        there = carried.get(item.get("contact_id"))
        if there is None:
            warnings.append({"code": NOT_CARRIED, **lead_role,
                             "message": f"Contact {_name(item)} is not on the opportunity."})
        elif item.get("role_id") and not there.get("role_id"):
            why = (f"their lead role {code} did not come over (no active opportunity role has that code, or the "
                   f"opportunity has its {code} contact already)" if code
                   else "their lead role is no longer in the catalogue")
            warnings.append({"code": ROLE_DROPPED, **lead_role,
                             "message": f"Contact {_name(item)} came over with no role: {why}."})
    return warnings
