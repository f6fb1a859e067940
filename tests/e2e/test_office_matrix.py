"""The cross-office matrix (issue 15): what a user of ANOTHER office may do to office 1's records
and to everything that hangs off them, generated from the gateway's route table.

The stranger is a non-admin of another office holding every permission of the ``marketing`` and
``account_manager`` roles (``leads:*``, ``opportunities:*``, ``files:*``). Office 1 has a lead and
an opportunity, each with a company and a main contact it references, a linked contact, a linked
job order with a placement, an activity, an attachment, a group, a stage change and a print
template at its stage; plus an unlinked activity of its owner. API.md ("auth", "Leads and
opportunities", "Files": "Office visibility reaches files through their records") says:

- the record and all its sub-resources (tabs, groups, copy, convert, print, templates,
  attachments, stage history, contact and job-order links): 404, with no trace of the record;
- an activity linked to such a record, or an unlinked activity of office 1: 404;
- companies, contacts, job orders (and the placements of job orders) are shared: reading them is
  200, but a write that would change what an office-1 record shows is 409;
- lists and aggregates never contain office-1 items; a body reference to an office-1 record is
  refused exactly like an unknown id; bulk items fail one by one;
- ``office_id`` other than the caller's own is 403 on create, copy (and the wizard, which copies).

Every (method, route) of the route table - read the same way ``test_authz_matrix`` reads it - is
classified in ``RULES`` below: either it yields cells (requests with their expected answers) or it
is explicitly "unrelated" (no office-1 thing can be named in it). A route that is not classified
fails the matrix, so a new route is covered as soon as it is added. All the wrong cells are
reported together; then everything is read back as office 1's owner and must be unchanged.

Offices are unique to the run (``office-1-<tag>``, ``office-2-<tag>``), so counts and lists are
exact even on the shared e2e platform. Every request carries the consistency token of every write
the test made so far (``Consistency-Token``): the stranger's 404 is the office rule, not a read
model that has not seen office 1's writes yet; and nothing sleeps.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import pytest
import requests
from test_authz_matrix import ENDPOINTS

pytestmark = pytest.mark.e2e

TOKEN = "Consistency-Token"
TIMEOUT = 60  # seconds for one request (a loaded CI box)
WORKER_ROLES = ("marketing", "account_manager")  # every permission on records and files, not admin
PLURALS = ("leads", "opportunities")
KIND_OF = {"leads": "lead", "opportunities": "opportunity"}
LINK_FIELD = {"leads": "lead_id", "opportunities": "opportunity_id"}  # an activity's link to a record
SHARED_FILES = ("companies", "contacts", "job-orders", "placements")
IMPORT_COLUMNS = {"leads": ["Title"], "opportunities": ["Title"], "companies": ["Name"],
                  "contacts": ["First", "Last"]}
IMPORT_MAPPING = {"leads": {"Title": "title"}, "opportunities": {"Title": "title"}, "companies": {"Name": "name"},
                  "contacts": {"First": "first_name", "Last": "last_name"}}

# Phases: cells run in this order, so that a write wrongly let through disturbs as few other cells
# as possible (a wrongly deleted job order takes its placements along, and would make "delete the
# placement" a 404 for another reason): reads, writes, unlinks, then deletes from the leaves up.
READ, WRITE, UNLINK, DELETE_LEAF, DELETE_FILE, DELETE_COMPANY, DELETE_RECORD = range(7)
DELETE_PHASE = {"activities": DELETE_LEAF, "placements": DELETE_LEAF, "job-orders": DELETE_FILE,
                "contacts": DELETE_FILE, "companies": DELETE_COMPANY}


# -- callers ------------------------------------------------------------------------------------------

class Jar:
    """The latest consistency token: every caller of the test sends it and keeps the newer one."""

    token: str | None = None


class Caller:
    def __init__(self, platform: Any, jar: Jar, roles: tuple[str, ...], user: str, office: str) -> None:
        self.base = platform.gateway_url
        self.jar = jar
        self.user, self.office = user, office
        self.auth = platform.auth(roles, user=user, office=office)
        self.http = requests.Session()

    def __call__(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {**self.auth, **kw.pop("headers", {})}
        if self.jar.token:
            headers.setdefault(TOKEN, self.jar.token)
        r = self.http.request(method, self.base + path, headers=headers, timeout=TIMEOUT, allow_redirects=False, **kw)
        if TOKEN in r.headers:
            self.jar.token = r.headers[TOKEN]
        return r

    def ok(self, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
        """A setup step: it must succeed."""
        r = self(method, path, **kw)
        assert r.status_code == expect, f"setup: {method} {path} as {self.user}: {r.status_code} {r.text[:500]}"
        return r.json() if r.content else None

    def items(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a list (all pages)."""
        out: list[dict[str, Any]] = []
        page: str | None = None
        while True:
            body = self.ok("GET", path, params={**params, "page_size": 200, **({"page_token": page} if page else {})})
            out += body["items"]
            page = body.get("next_page_token")
            if not page:
                return out


# -- the two offices ----------------------------------------------------------------------------------

@dataclass
class Office1Kind:
    """Office 1's record of one kind and what hangs off it; ``own`` is the stranger's record of that kind."""

    plural: str
    record: dict[str, Any]
    company: dict[str, Any]  # referenced by the record (company_id)
    main_contact: dict[str, Any]  # referenced by the record (contact_id), so linked as MAIN
    linked_contact: str  # on the contacts tab with ``role``
    free_contact: dict[str, Any]  # a shared contact on no record
    job_order: str  # linked to the record
    free_job_order: dict[str, Any]  # a shared job order on no record
    placement: dict[str, Any]  # of ``job_order``
    activity: dict[str, Any]  # linked to the record
    attachment: dict[str, Any]
    group: dict[str, Any]  # the record is in it
    other_group: dict[str, Any]
    role: dict[str, Any]
    other_role: dict[str, Any]
    other_stage: dict[str, Any]
    template: dict[str, Any]  # a print template visible at the record's stage
    own: dict[str, Any]  # the stranger's own record (references the shared company and main contact)

    @property
    def url(self) -> str:
        return f"/v1/{self.plural}/{self.record['id']}"

    @property
    def own_url(self) -> str:
        return f"/v1/{self.plural}/{self.own['id']}"


@dataclass
class World:
    tag: str
    secret: str  # only in what office 1 alone may see (record titles, activity subjects)
    admin: Caller  # office 1's admin: catalogue set-up and the global counts only
    owner: Caller  # office 1's owner of everything
    stranger: Caller  # the other office
    kinds: dict[str, Office1Kind]
    unlinked_activity: dict[str, Any]  # office 1's owner's, on no record
    own_activity: dict[str, Any]  # the stranger's, on no record
    imports: dict[str, dict[str, Any]] = field(default_factory=dict)  # collection -> office 1's owner's import
    feed_start: str = "0"  # the event feed's cursor before any of office 1's writes

    @property
    def office1_record_ids(self) -> set[str]:
        return {k.record["id"] for k in self.kinds.values()}

    @property
    def office1_activity_ids(self) -> set[str]:
        return {k.activity["id"] for k in self.kinds.values()} | {self.unlinked_activity["id"]}


def _entry(admin: Caller, kind: str, table: str, tag: str, what: str) -> dict[str, Any]:
    code = f"OM{what}{tag}".upper()
    return dict(admin.ok("POST", f"/v1/{kind}-tables/{table}", 201, json={"names": {"en": f"OM {what} {tag}"},
                                                                            "code": code}))


def build_world(platform: Any) -> World:
    tag = uuid.uuid4().hex[:8]
    jar = Jar()
    office1, office2 = f"office-1-{tag}", f"office-2-{tag}"
    admin = Caller(platform, jar, ("admin",), f"om-admin-{tag}", office1)
    owner = Caller(platform, jar, WORKER_ROLES, f"om-owner-{tag}", office1)
    stranger = Caller(platform, jar, WORKER_ROLES, f"om-stranger-{tag}", office2)
    secret, shared, own = f"secret-{tag}", f"shared-{tag}", f"own-{tag}"
    feed_start = admin.ok("GET", "/v1/events", params={"after": "latest"})["next_cursor"]
    kinds: dict[str, Office1Kind] = {}
    for plural in PLURALS:
        kind = KIND_OF[plural]
        stages = [s for s in admin.ok("GET", f"/v1/{kind}-stages")["items"]
                  if s["active"] and not s["is_end"] and not s["is_default"]]
        assert len(stages) >= 2, f"setup: two active open {kind} stages besides the default one: {stages}"
        stage, other_stage = stages[0], stages[1]
        group, other_group = _entry(admin, kind, "groups", tag, "G1"), _entry(admin, kind, "groups", tag, "G2")
        role, other_role = _entry(admin, kind, "roles", tag, "R1"), _entry(admin, kind, "roles", tag, "R2")
        template = admin.ok("POST", "/v1/templates", 201, json={
            "kind": "print", "name": f"OM {tag} {kind}", "body": "<p>{{ record.title }}</p>",
            "visible_at": f"{kind}_stage", "stage_ids": [stage["id"]]})

        company = owner.ok("POST", "/v1/companies", 201, json={"name": f"{shared} {kind} company"})
        main_contact = owner.ok("POST", "/v1/contacts", 201, json={
            "first_name": "Main", "last_name": f"{shared} {kind}", "company_id": company["id"]})
        money = {"amount": "777.77", "currency": "EUR", "probability": 40} if kind == "opportunity" else {}
        record = owner.ok("POST", f"/v1/{plural}", 201, json={
            "title": f"{secret} {kind}", "description": f"{secret} description", "company_id": company["id"],
            "contact_id": main_contact["id"], "group_ids": [group["id"]], **money})
        assert record["office_id"] == office1, record
        url = f"/v1/{plural}/{record['id']}"
        record = owner.ok("PATCH", url, json={"stage_id": stage["id"]}, headers={"If-Match": f'"{record["version"]}"'})
        linked_contact = owner.ok("POST", f"{url}/contacts", 201, json={
            "contact": {"first_name": "Linked", "last_name": f"{shared} {kind}"}, "role_id": role["id"]})["contact_id"]
        job_order = owner.ok("POST", f"{url}/job-orders", 201, json={
            "job_order": {"title": f"{shared} {kind} job order", "company_id": company["id"]}})["job_order_id"]
        placement = owner.ok("POST", "/v1/placements", 201, json={
            "job_order_id": job_order, "candidate_name": f"{shared} {kind} candidate"})
        activity = owner.ok("POST", "/v1/activities", 201, json={
            "type": "note", "subject": f"{secret} {kind} note", LINK_FIELD[plural]: record["id"]})
        attachment = owner.ok("POST", f"{url}/attachments", 201,
                              files={"file": ("secret.txt", secret.encode(), "text/plain")}, data={"type": "note"})
        free_contact = owner.ok("POST", "/v1/contacts", 201,
                                json={"first_name": "Free", "last_name": f"{shared} {kind}"})
        free_job_order = owner.ok("POST", "/v1/job-orders", 201, json={"title": f"{shared} {kind} free job order"})
        own_record = stranger.ok("POST", f"/v1/{plural}", 201, json={
            "title": f"{own} {kind}", "company_id": company["id"], "contact_id": main_contact["id"], **money})
        assert own_record["office_id"] == office2, own_record
        kinds[plural] = Office1Kind(plural, record, company, main_contact, linked_contact, free_contact, job_order,
                                    free_job_order, placement, activity, attachment, group, other_group, role,
                                    other_role, other_stage, template, own_record)
    unlinked = owner.ok("POST", "/v1/activities", 201, json={"type": "task", "subject": f"{secret} unlinked task"})
    own_activity = stranger.ok("POST", "/v1/activities", 201, json={"type": "task", "subject": f"{own} task"})
    world = World(tag, secret, admin, owner, stranger, kinds, unlinked, own_activity, feed_start=feed_start)
    for collection, columns in IMPORT_COLUMNS.items():  # an import job is its creator's alone
        world.imports[collection] = owner.ok("POST", f"/v1/{collection}/imports", 201, json={
            "file_name": f"{secret} {collection}.csv", "columns": columns,
            "rows": [[f"{secret} {column}" for column in columns]]})
    return world


# -- cells --------------------------------------------------------------------------------------------

Check = Callable[[requests.Response], "str | None"]


@dataclass
class Cell:
    """One request of the stranger and the answer it must get."""

    path: str
    subject: str  # what the request is about, for the report
    statuses: frozenset[int]
    expect: str  # the expectation in words
    kw: dict[str, Any] = field(default_factory=dict)
    check: Check | None = None  # more than the status: the body
    phase: int = READ
    control: dict[str, Any] | None = None  # "refused like an unknown id": the same request with a fresh id
    method: str = ""  # set from the route
    pattern: str = ""


def _excerpt(r: requests.Response) -> str:
    return re.sub(r"\s+", " ", r.text[:200]) if r.content else "(no body)"


def no_trace(w: World) -> Check:
    def check(r: requests.Response) -> str | None:
        return f"the answer shows office 1's {w.secret!r}" if w.secret in r.text else None
    return check


def hidden(w: World, path: str, subject: str, phase: int = READ, **kw: Any) -> Cell:
    return Cell(path, subject, frozenset({404}), "404 (not visible)", kw, no_trace(w), phase)


def shared_read(w: World, path: str, subject: str) -> Cell:
    return Cell(path, subject, frozenset({200}), "200 (shared file), no office-1 record data", {}, no_trace(w))


def shared_write(w: World, path: str, subject: str, phase: int = WRITE, **kw: Any) -> Cell:
    """409, and the refusal does not show the office-1 record it protects."""
    return Cell(path, subject, frozenset({409}), "409 (would change an office-1 record)", kw, no_trace(w), phase)


def office_rule(path: str, subject: str, **kw: Any) -> Cell:
    return Cell(path, subject, frozenset({403}), "403 (office_id of another office needs admin)", kw, None, WRITE)


def like_unknown(path: str, subject: str, kw: dict[str, Any], control: dict[str, Any]) -> Cell:
    """A body reference to an office-1 record: refused exactly as the same body with an unknown id."""
    return Cell(path, subject, frozenset({404, 422}), "refused like an unknown id (404/422)", kw, None, WRITE,
                control)


def lists_none_of_office1(w: World, path: str, subject: str, params: dict[str, Any],
                          must_show: frozenset[str] | set[str] = frozenset(), also_404: bool = False) -> Cell:
    """A list: 200 with no office-1 item (and the items ``must_show``, proving it lists at all)."""
    hidden_ids = w.office1_record_ids | w.office1_activity_ids

    def check(r: requests.Response) -> str | None:
        if r.status_code == 404 and also_404:
            return None
        items = r.json()["items"]
        ids = {i.get("id") for i in items}
        leaked = ids & hidden_ids
        foreign = [i["id"] for i in items if i.get("office_id") not in (None, w.stranger.office)]
        missing = set(must_show) - ids
        wrong = ([f"lists office-1 items {sorted(leaked)}"] if leaked else []) \
            + ([f"lists records of another office {foreign}"] if foreign else []) \
            + ([f"the answer shows office 1's {w.secret!r}"] if w.secret in r.text else []) \
            + ([f"does not list {sorted(missing)}"] if missing else [])
        return "; ".join(wrong) or None

    statuses = frozenset({200, 404} if also_404 else {200})
    expect = ("404 or " if also_404 else "") + "200 without office-1 items"
    return Cell(path, subject, statuses, expect, {"params": {**params, "page_size": 200}}, check)


# -- what the stranger tries, route by route ------------------------------------------------------------
# A builder gets the world and the plural of the route ("leads"/"opportunities"; None for routes of no
# record kind) and returns the route's cells.

Builder = Callable[[World, "str | None"], list[Cell]]


def _event_feed(w: World) -> list[Cell]:
    """The feed read from where it stood before office 1's writes: none of office 1's events, nor
    any other office's record."""
    hidden = w.office1_record_ids | w.office1_activity_ids

    def check(r: requests.Response) -> str | None:
        items = r.json()["items"]
        leaked = [i["type"] for i in items if {i["data"].get("id"), i["data"].get("record_id")} & hidden]
        foreign = [i["type"] for i in items if i["data"].get("office_id") not in (None, w.stranger.office)]
        wrong = ([f"shows office 1's events {leaked}"] if leaked else []) \
            + ([f"shows events of another office's records {foreign}"] if foreign else [])
        return "; ".join(wrong) or None

    return [Cell("/v1/events", "the event feed from office 1's lead on", frozenset({200}),
                 "200 without office-1 events", {"params": {"after": w.feed_start, "page_size": 500}}, check)]


def _record(fn: Callable[[World, Office1Kind], list[Cell]]) -> Builder:
    return lambda w, plural: fn(w, w.kinds[plural])  # type: ignore[index]


def _files(fn: Callable[[World, Office1Kind], list[Cell]]) -> Builder:
    """A file route: its cells for the files of both kinds' office-1 records."""
    return lambda w, _plural: [cell for k in w.kinds.values() for cell in fn(w, k)]


def _shared(k: Office1Kind, collection: str) -> list[tuple[str, str]]:
    """The shared files of ``collection`` that office 1's record of kind ``k`` shows: (id, what)."""
    kind = KIND_OF[k.plural]
    return {
        "companies": [(k.company["id"], f"company referenced by the office-1 {kind}")],
        "contacts": [(k.main_contact["id"], f"main contact (contact_id) of the office-1 {kind}"),
                     (k.linked_contact, f"contact linked to the office-1 {kind}")],
        "job-orders": [(k.job_order, f"job order linked to the office-1 {kind}")],
        "placements": [(k.placement["id"], f"placement of the job order linked to the office-1 {kind}")],
    }[collection]


_PATCH_BODY = {"companies": {"name": "taken over"}, "contacts": {"last_name": "taken over"},
               "job-orders": {"title": "taken over"}, "placements": {"candidate_name": "taken over"}}


def _file_item(collection: str, method: str) -> Builder:
    def build(w: World, k: Office1Kind) -> list[Cell]:
        cells = []
        for file_id, what in _shared(k, collection):
            path = f"/v1/{collection}/{file_id}"
            if method == "GET":
                cells.append(shared_read(w, path, what))
            elif method == "PATCH":
                cells.append(shared_write(w, path, what, json=_PATCH_BODY[collection]))
            else:
                cells.append(shared_write(w, path, what, phase=DELETE_PHASE[collection]))
        return cells
    return _files(build)


def _activity_item(method: str) -> Builder:
    def build(w: World, _plural: str | None) -> list[Cell]:
        targets = [(k.activity["id"], f"activity linked to the office-1 {KIND_OF[k.plural]}") for k in w.kinds.values()]
        targets.append((w.unlinked_activity["id"], "unlinked activity of office 1's owner"))
        cells = []
        for activity_id, what in targets:
            path = f"/v1/activities/{activity_id}"
            if method == "GET":
                cells.append(hidden(w, path, what))
            elif method == "PATCH":
                cells.append(hidden(w, path, what, WRITE, json={"subject": "taken over"}))
            else:
                cells.append(hidden(w, path, what, DELETE_PHASE["activities"]))
        if method == "PATCH":  # the stranger's own activity put on an office-1 record
            own = f"/v1/activities/{w.own_activity['id']}"
            for k in w.kinds.values():
                name = LINK_FIELD[k.plural]
                cells.append(like_unknown(own, f"own activity moved onto the office-1 {KIND_OF[k.plural]}",
                                          {"json": {name: k.record["id"]}}, {"json": {name: str(uuid.uuid4())}}))
        return cells
    return build


def _activity_list(w: World, _plural: str | None) -> list[Cell]:
    cells = [lists_none_of_office1(w, "/v1/activities", "activities found by the run's tag", {"q": w.tag},
                                   must_show={w.own_activity["id"]})]
    for k in w.kinds.values():
        name = LINK_FIELD[k.plural]
        cells.append(lists_none_of_office1(w, "/v1/activities", f"activities of the office-1 {KIND_OF[k.plural]}",
                                           {name: k.record["id"]}, also_404=True))
    return cells


def _activity_create(w: World, _plural: str | None) -> list[Cell]:
    cells = []
    for k in w.kinds.values():
        name, kind = LINK_FIELD[k.plural], KIND_OF[k.plural]
        body = {"type": "note", "subject": f"{w.tag} intruding note"}
        cells.append(like_unknown("/v1/activities", f"new activity on the office-1 {kind}",
                                  {"json": {**body, name: k.record["id"]}},
                                  {"json": {**body, name: str(uuid.uuid4())}}))
    return cells


def _shared_list(collection: str) -> Builder:
    def build(w: World, _plural: str | None) -> list[Cell]:
        ids = {file_id for k in w.kinds.values() for file_id, _ in _shared(k, collection)}
        return [lists_none_of_office1(w, f"/v1/{collection}", f"shared {collection} found by the run's tag",
                                      {"q": f"shared-{w.tag}"}, must_show=ids)]
    return build


def _new_file_on_shared(collection: str) -> Builder:
    """Creating a file that refers to a shared file changes no office-1 record: allowed."""
    def build(w: World, _plural: str | None) -> list[Cell]:
        k = w.kinds["leads"]
        body = ({"first_name": "New", "last_name": f"n{uuid.uuid4().hex[:6]}", "company_id": k.company["id"]}
                if collection == "contacts" else {"title": f"n{uuid.uuid4().hex[:6]}", "company_id": k.company["id"]})
        return [Cell(f"/v1/{collection}", "new file in the company the office-1 lead references", frozenset({201}),
                     "201 (shared company; no office-1 record changes)", {"json": body}, None, WRITE)]
    return build


def _new_files_in_bulk(collection: str) -> Builder:
    """Bulk-creating files that refer to a shared file changes no office-1 record: allowed."""
    def build(w: World, _plural: str | None) -> list[Cell]:
        k = w.kinds["leads"]
        item = {"key": f"{w.tag}-{uuid.uuid4().hex[:6]}", "first_name": "New", "last_name": f"n{uuid.uuid4().hex[:6]}",
                "company_id": k.company["id"]}

        def check(r: requests.Response) -> str | None:
            results = r.json().get("results")
            return None if [x.get("status") for x in results or []] == ["created"] else f"results {results}"

        return [Cell(f"/v1/{collection}/bulk", "bulk-created contact in the company the office-1 lead references",
                     frozenset({200}), "200, the item created (shared company; no office-1 record changes)",
                     {"json": {"action": "create", "items": [item]}}, check, WRITE)]
    return build


def _new_placement(w: World, _plural: str | None) -> list[Cell]:
    return [shared_write(w, "/v1/placements",
                         f"new placement on the job order linked to the office-1 {KIND_OF[k.plural]}",
                         json={"job_order_id": k.job_order, "candidate_name": f"{w.tag} intruding candidate"})
            for k in w.kinds.values()]


def _records_of_file(collection: str) -> Builder:
    """/v1/contacts/{id}/{records}, /v1/companies/{id}/leads: the file is shared, office-1 records are not."""
    def build(w: World, plural: str | None) -> list[Cell]:
        k = w.kinds[plural]  # type: ignore[index]
        return [lists_none_of_office1(w, f"/v1/{collection}/{file_id}/{plural}", what, {})
                for file_id, what in _shared(k, collection)]
    return build


# record routes

def _record_list(w: World, k: Office1Kind) -> list[Cell]:
    path, own = f"/v1/{k.plural}", {k.own["id"]}
    variants = [("view=all", {"view": "all"}, own), ("q=<run tag>", {"q": w.tag}, own),
                ("office_id=<office 1>", {"office_id": w.owner.office}, set()),
                ("company_id=<shared company>", {"company_id": k.company["id"]}, own),
                ("contact_id=<shared main contact>", {"contact_id": k.main_contact["id"]}, own),
                ("group_id=<office-1 record's group>", {"group_id": k.group["id"]}, set())]
    return [lists_none_of_office1(w, path, f"list {what}", params, must_show=shown)
            for what, params, shown in variants]


def _record_create(w: World, k: Office1Kind) -> list[Cell]:
    return [office_rule(f"/v1/{k.plural}", "new record in office 1",
                        json={"title": f"{w.tag} planted", "office_id": w.owner.office})]


def _visible_count(w: World, plural: str) -> list[dict[str, Any]]:
    return w.stranger.items(f"/v1/{plural}", view="all")


def _overview(w: World, k: Office1Kind) -> list[Cell]:
    def check(r: requests.Response) -> str | None:
        visible = len(_visible_count(w, k.plural))
        body = r.json()
        if (body["all"], body["office"]) != (visible, visible):
            return f"all={body['all']} office={body['office']}, but the stranger sees {visible} {k.plural}"
        return None
    return [Cell(f"/v1/{k.plural}/overview", "overview counts", frozenset({200}),
                 "200 counting only the stranger's own office", {}, check)]


def _stage_report(w: World, k: Office1Kind) -> list[Cell]:
    def check(r: requests.Response) -> str | None:
        visible = _visible_count(w, k.plural)
        total = r.json()["total"]
        wrong = [] if total["count"] == len(visible) else [f"total count {total['count']}, visible {len(visible)}"]
        if "amount_sum" in total:
            amount = sum((Decimal(v["amount"]) for v in visible if v.get("amount")), Decimal(0))
            if Decimal(total["amount_sum"]) != amount:
                wrong.append(f"amount_sum {total['amount_sum']}, visible {amount}")
        return "; ".join(wrong) or None
    return [Cell(f"/v1/{k.plural}/reports/stages", "stage report", frozenset({200}),
                 "200 counting only the stranger's own office", {}, check)]


def _funnel(w: World, k: Office1Kind) -> list[Cell]:
    def check(r: requests.Response) -> str | None:
        visible = _visible_count(w, k.plural)
        body = r.json()
        owners = {o["owner_id"] for o in body["by_owner"]} - {v["owner_id"] for v in visible}
        wrong = ([] if body["created"] == len(visible) else [f"created {body['created']}, visible {len(visible)}"]) \
            + ([f"owners the stranger cannot see: {sorted(owners)}"] if owners else [])
        return "; ".join(wrong) or None
    return [Cell(f"/v1/{k.plural}/reports/funnel", "funnel report", frozenset({200}),
                 "200 counting only the stranger's own office", {}, check)]


def _bulk(w: World, k: Office1Kind) -> list[Cell]:
    actions = [("set_stage", {"stage_id": k.other_stage["id"]}), ("add_to_group", {"group_id": k.other_group["id"]}),
               ("remove_from_group", {"group_id": k.group["id"]}), ("assign_owner", {"owner_id": w.stranger.user}),
               ("delete", {})]
    record_id = k.record["id"]

    def check(r: requests.Response) -> str | None:
        results = r.json().get("results")
        if [(x.get("id"), x.get("status")) for x in results or []] != [(record_id, "error")]:
            return f"results {results}, expected one error for the office-1 record"
        return f"the error shows office 1's {w.secret!r}" if w.secret in (results[0].get("error") or "") else None

    def refused_create(r: requests.Response) -> str | None:
        results = r.json().get("results")
        if [(x.get("index"), x.get("status"), x.get("id")) for x in results or []] != [(0, "error", None)] \
                or "admin" not in (results[0].get("error") or ""):
            return f"results {results}, expected the item refused by the office rule"
        return None

    planted = {"key": f"{w.tag}-planted", "title": f"{w.tag} planted", "office_id": w.owner.office}
    return [Cell(f"/v1/{k.plural}/bulk", f"bulk {action} on the office-1 record", frozenset({200}),
                 "200, the item an error", {"json": {"ids": [record_id], "action": action, **extra}}, check,
                 DELETE_RECORD if action == "delete" else WRITE)
            for action, extra in actions] + [
        Cell(f"/v1/{k.plural}/bulk", "bulk create of a record in office 1", frozenset({200}),
             "200, the item an error (office_id of another office needs admin)",
             {"json": {"action": "create", "items": [planted]}}, refused_create, WRITE)]


def _wizard(w: World, k: Office1Kind) -> list[Cell]:
    refs = {"company": {"mode": "existing", "id": k.company["id"]},
            "contact": {"mode": "existing", "id": k.main_contact["id"]}}
    return [
        Cell(f"/v1/{k.plural}/wizard", "wizard copying the office-1 record", frozenset({404}), "404 (not visible)",
             {"json": {**refs, "record": {"mode": "copy", "copy_from": k.record["id"], "data": {}}}},
             no_trace(w), WRITE),
        office_rule(f"/v1/{k.plural}/wizard", "wizard creating a record in office 1",
                    json={**refs, "record": {"mode": "empty", "data": {"title": f"{w.tag} planted",
                                                                       "office_id": w.owner.office}}}),
    ]


def _item(method: str) -> Builder:
    def build(w: World, k: Office1Kind) -> list[Cell]:
        if method == "GET":
            return [hidden(w, k.url, "the office-1 record")]
        if method == "DELETE":
            return [hidden(w, k.url, "the office-1 record", DELETE_RECORD)]
        version = f'"{k.record["version"]}"'
        return [hidden(w, k.url, "the office-1 record", WRITE, json={"title": "taken over"}),
                hidden(w, k.url, "the office-1 record, with its current If-Match", WRITE,
                       json={"title": "taken over"}, headers={"If-Match": version}),
                office_rule(k.own_url, "own record moved to office 1", json={"office_id": w.owner.office})]
    return _record(build)


def _sub(suffix: str, phase: int = READ, **kw: Any) -> Builder:
    """A sub-resource of the office-1 record: 404; ``suffix`` may name the record's parts."""
    def build(w: World, k: Office1Kind) -> list[Cell]:
        path = k.url + suffix.format(k=k)
        body = {name: (value(w, k) if callable(value) else value) for name, value in kw.items()}
        return [hidden(w, path, "the office-1 record", phase, **body)]
    return _record(build)


def _copy(w: World, k: Office1Kind) -> list[Cell]:
    return [hidden(w, f"{k.url}/copy", "copy of the office-1 record", WRITE, json={}),
            office_rule(f"{k.own_url}/copy", "copy of the own record into office 1",
                        json={"office_id": w.owner.office})]


def _convert(w: World, k: Office1Kind) -> list[Cell]:
    own_opportunity, office1_opportunity = w.kinds["opportunities"].own, w.kinds["opportunities"].record
    return [hidden(w, f"{k.url}/convert", "conversion of the office-1 lead", WRITE, json={}),
            hidden(w, f"{k.url}/convert", "conversion of the office-1 lead into the own opportunity", WRITE,
                   json={"opportunity_id": own_opportunity["id"]}),
            like_unknown(f"{k.own_url}/convert", "conversion of the own lead into the office-1 opportunity",
                         {"json": {"opportunity_id": office1_opportunity["id"]}},
                         {"json": {"opportunity_id": str(uuid.uuid4())}})]


def _link_job_order(w: World, k: Office1Kind) -> list[Cell]:
    return [hidden(w, f"{k.url}/job-orders", "link a shared job order to the office-1 record", WRITE,
                   json={"job_order_id": k.free_job_order["id"]}),
            hidden(w, f"{k.url}/job-orders", "new job order on the office-1 record", WRITE,
                   json={"job_order": {"title": f"{w.tag} intruding job order"}}),
            Cell(f"{k.own_url}/job-orders", "own record takes the job order linked to the office-1 record",
                 frozenset({409}), "409 (a job order links to one record of a kind)",
                 {"json": {"job_order_id": k.job_order}}, no_trace(w), WRITE)]


def _unlink_contact(w: World, k: Office1Kind) -> list[Cell]:
    return [hidden(w, f"{k.url}/contacts/{k.linked_contact}", "unlink the linked contact", UNLINK),
            hidden(w, f"{k.url}/contacts/{k.main_contact['id']}", "unlink the main contact", UNLINK)]


def _import_cells(suffix: str, method: str, collection: str | None = None) -> Builder:
    """Office 1's owner's import job (``World.imports``) and its sub-resources: 404 for anyone else;
    the stranger's list of imports holds none of it. ``collection`` for the files (no {records})."""
    def build(w: World, plural: str | None) -> list[Cell]:
        c = collection or plural
        assert c is not None
        job = w.imports[c]
        base = f"/v1/{c}/imports"
        if suffix == "" and method == "GET":
            def check(r: requests.Response) -> str | None:
                ids = [j.get("id") for j in r.json().get("items", [])]
                return f"office 1's job {job['id']} listed" if job["id"] in ids else no_trace(w)(r)
            return [Cell(base, "the list of imports", frozenset({200}), "200 without office 1's job", {}, check)]
        path = f"{base}/{job['id']}{suffix}"
        body: dict[str, Any] = {}
        if suffix == "/rows" and method == "POST":
            body = {"json": {"rows": [["planted"] * len(IMPORT_COLUMNS[c])]}}
        elif suffix == "/mapping":
            body = {"json": {"mapping": IMPORT_MAPPING[c], "key_column": None}}
        phase = READ if method == "GET" else DELETE_LEAF if method == "DELETE" else WRITE
        return [hidden(w, path, f"office 1's {c} import", phase, **body)]
    return build


def _import_rules(prefix: str, collection: str | None) -> dict[tuple[str, str], tuple[str, Builder | None, str]]:
    """The import routes under ``prefix`` (``/v1/{records}``, ``/v1/companies``, ``/v1/contacts``)."""
    base, item = f"{prefix}/imports", f"{prefix}/imports/{{id}}"
    rules: dict[tuple[str, str], tuple[str, Builder | None, str]] = {
        ("POST", base): _unrelated("a new import names nothing of office 1 (its rows follow the bulk create's "
                                   "office rule when it runs)"),
        ("GET", base): ("list", _import_cells("", "GET", collection), "200 without office 1's import jobs")}
    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/rows"), ("POST", "/rows"), ("PUT", "/mapping"),
                           ("POST", "/start"), ("GET", "/result")):
        rules[(method, item + suffix)] = ("hidden", _import_cells(suffix, method, collection),
                                          "404: a job is its creator's alone")
    return rules


def _unrelated(why: str) -> tuple[str, None, str]:
    return ("unrelated", None, why)


# (method, route with {records} for leads|opportunities and {kind} for lead|opportunity) ->
# (category, builder or None, why). HEAD is classified with GET: it goes wherever GET goes.
RULES: dict[tuple[str, str], tuple[str, Builder | None, str]] = {
    # -- gateway's own
    ("GET", "/v1/me"): _unrelated("the caller itself"),
    ("POST", "/v1/{records}/wizard"): ("hidden+office", _record(_wizard),
                                       "copy_from an office-1 record 404; data.office_id of office 1 403"),
    # -- catalogue: shared configuration, no office in it
    **{(m, p): _unrelated("catalogue configuration (no office)")
       for p, methods in {"/v1/{kind}-stages": ("GET", "POST"), "/v1/{kind}-stages/{id}": ("GET", "PATCH", "DELETE"),
                          "/v1/{kind}-tables/{table}": ("GET", "POST"),
                          "/v1/{kind}-tables/{table}/{id}": ("GET", "PATCH", "DELETE"),
                          "/v1/templates": ("GET", "POST"), "/v1/templates/{id}": ("GET", "PATCH", "DELETE")}.items()
       for m in methods},
    # -- records: collection
    ("GET", "/v1/{records}"): ("list", _record(_record_list), "200 without office-1 records, whatever the filter"),
    ("POST", "/v1/{records}"): ("office", _record(_record_create), "office_id of office 1: 403"),
    ("GET", "/v1/{records}/overview"): ("aggregate", _record(_overview), "counts only what the caller sees"),
    ("GET", "/v1/{records}/reports/stages"): ("aggregate", _record(_stage_report), "counts only what the caller sees"),
    ("GET", "/v1/{records}/reports/funnel"): ("aggregate", _record(_funnel), "counts only what the caller sees"),
    ("POST", "/v1/{records}/bulk"): ("bulk", _record(_bulk),
                                     "200, every office-1 item an error; a create into office 1 refused per item"),
    # -- imports: a job is seen and changed by its creator only
    **_import_rules("/v1/{records}", None),
    **_import_rules("/v1/companies", "companies"),
    **_import_rules("/v1/contacts", "contacts"),
    # -- records: the office-1 record and its sub-resources
    ("GET", "/v1/{records}/{id}"): ("hidden", _item("GET"), "404"),
    ("PATCH", "/v1/{records}/{id}"): ("hidden+office", _item("PATCH"), "404; own record to office 1: 403"),
    ("DELETE", "/v1/{records}/{id}"): ("hidden", _item("DELETE"), "404"),
    ("GET", "/v1/{records}/{id}/stage-history"): ("hidden", _sub("/stage-history"), "404"),
    ("POST", "/v1/{records}/{id}/groups"): ("hidden", _sub("/groups", WRITE, json=lambda w, k: {
        "group_id": k.other_group["id"]}), "404"),
    ("DELETE", "/v1/{records}/{id}/groups/{group_id}"): ("hidden", _sub("/groups/{k.group[id]}", UNLINK), "404"),
    ("POST", "/v1/{records}/{id}/copy"): ("hidden+office", _record(_copy), "404; own record copied to office 1: 403"),
    ("GET", "/v1/{records}/{id}/templates"): ("hidden", _sub("/templates", params={"kind": "print"}), "404"),
    ("POST", "/v1/{records}/{id}/print"): ("hidden", _sub("/print", json=lambda w, k: {
        "template_id": k.template["id"]}), "404 (with a template visible at the record's stage)"),
    ("GET", "/v1/{records}/{id}/attachments"): ("hidden", _sub("/attachments"), "404"),
    ("POST", "/v1/{records}/{id}/attachments"): ("hidden", _sub("/attachments", WRITE, files=lambda w, k: {
        "file": ("intruder.txt", b"intruder", "text/plain")}, data={"type": "note"}), "404"),
    ("GET", "/v1/{records}/{id}/attachments/{attachment_id}"): ("hidden", _sub("/attachments/{k.attachment[id]}"),
                                                                 "404"),
    ("DELETE", "/v1/{records}/{id}/attachments/{attachment_id}"): ("hidden", _sub("/attachments/{k.attachment[id]}",
                                                                                   UNLINK), "404"),
    ("POST", "/v1/{records}/{id}/convert"): ("hidden", _record(_convert),
                                             "404; own lead into an office-1 opportunity: as an unknown id"),
    ("GET", "/v1/{records}/{id}/contacts"): ("hidden", _sub("/contacts"), "404"),
    ("POST", "/v1/{records}/{id}/contacts"): ("hidden", _sub("/contacts", WRITE, json=lambda w, k: {
        "contact_id": k.free_contact["id"], "role_id": k.role["id"]}), "404"),
    ("PATCH", "/v1/{records}/{id}/contacts/{contact_id}"): ("hidden", _sub("/contacts/{k.linked_contact}", WRITE,
                                                                           json=lambda w, k: {
                                                                               "role_id": k.other_role["id"]}), "404"),
    ("DELETE", "/v1/{records}/{id}/contacts/{contact_id}"): ("hidden", _record(_unlink_contact), "404"),
    ("GET", "/v1/{records}/{id}/job-orders"): ("hidden", _sub("/job-orders"), "404"),
    ("POST", "/v1/{records}/{id}/job-orders"): ("hidden+shared", _record(_link_job_order),
                                                "404; the linked job order onto the own record: 409"),
    ("DELETE", "/v1/{records}/{id}/job-orders/{job_order_id}"): ("hidden", _sub("/job-orders/{k.job_order}", UNLINK),
                                                                 "404"),
    ("GET", "/v1/{records}/{id}/activities"): ("hidden", _sub("/activities"), "404"),
    ("GET", "/v1/{records}/{id}/placements"): ("hidden", _sub("/placements"), "404"),
    ("GET", "/v1/{records}/{id}/timeline"): ("hidden", _sub("/timeline"), "404"),
    # -- files shared across offices: companies, contacts, job orders and the placements of job orders
    **{("GET", f"/v1/{c}"): ("shared-list", _shared_list(c), "200, shared files listed") for c in SHARED_FILES},
    **{("GET", f"/v1/{c}/{{id}}"): ("shared-read", _file_item(c, "GET"), "200 (shared)") for c in SHARED_FILES},
    **{("PATCH", f"/v1/{c}/{{id}}"): ("shared-write", _file_item(c, "PATCH"), "409") for c in SHARED_FILES},
    **{("DELETE", f"/v1/{c}/{{id}}"): ("shared-write", _file_item(c, "DELETE"), "409") for c in SHARED_FILES},
    ("POST", "/v1/companies"): _unrelated("a new company refers to nothing"),
    ("POST", "/v1/companies/bulk"): _unrelated("new companies refer to nothing (keys are per office)"),
    ("POST", "/v1/contacts/bulk"): ("shared-create", _new_files_in_bulk("contacts"),
                                    "200, created in a shared company"),
    ("POST", "/v1/contacts"): ("shared-create", _new_file_on_shared("contacts"), "201 in a shared company"),
    ("POST", "/v1/job-orders"): ("shared-create", _new_file_on_shared("job-orders"), "201 in a shared company"),
    ("POST", "/v1/placements"): ("shared-write", _new_placement,
                                 "409: it would show on the office-1 record's placements tab"),
    ("GET", "/v1/contacts/{id}/{records}"): ("list", _records_of_file("contacts"), "200 without office-1 records"),
    ("GET", "/v1/companies/{id}/{records}"): ("list", _records_of_file("companies"), "200 without office-1 records"),
    # -- activities follow their record; an unlinked one its owner's office
    ("GET", "/v1/activities"): ("list", _activity_list, "no office-1 activity; ?lead_id= of office 1: 404 or none"),
    ("POST", "/v1/activities"): ("reference", _activity_create, "lead_id/opportunity_id of office 1: as unknown"),
    ("GET", "/v1/activities/{id}"): ("hidden", _activity_item("GET"), "404"),
    ("PATCH", "/v1/activities/{id}"): ("hidden", _activity_item("PATCH"), "404; own one onto office 1: as unknown"),
    ("DELETE", "/v1/activities/{id}"): ("hidden", _activity_item("DELETE"), "404"),
    # -- triggers: triggers:admin, which the stranger lacks
    **{(m, p): _unrelated("a trigger names no record (triggers:admin)")
       for p, methods in {"/v1/triggers": ("GET", "POST"), "/v1/triggers/{id}": ("GET", "PATCH", "DELETE"),
                          "/v1/triggers/{id}/executions": ("GET",)}.items() for m in methods},
    ("POST", "/v1/triggers/{id}/dry-run"): ("admin-only", lambda w, _p: [Cell(
        f"/v1/triggers/{uuid.uuid4()}/dry-run", "dry run on the office-1 lead", frozenset({403}),
        "403 (triggers:admin)",
        {"json": {"record_id": w.kinds["leads"].record["id"]}}, no_trace(w), WRITE)], "403"),
    # -- webhooks: webhooks:admin, which the stranger lacks; the event feed is for everyone
    **{(m, p): _unrelated("a webhook names no record (webhooks:admin)")
       for p, methods in {"/v1/webhooks": ("GET", "POST"), "/v1/webhooks/{id}": ("GET", "PATCH", "DELETE"),
                          "/v1/webhooks/{id}/deliveries": ("GET",), "/v1/webhooks/{id}/replay": ("POST",),
                          "/v1/webhooks/{id}/rotate-secret": ("POST",), "/v1/webhooks/{id}/test": ("POST",)}.items()
       for m in methods},
    ("GET", "/v1/events"): ("list", lambda w, _p: _event_feed(w), "200 without office-1 events"),
    ("GET", "/v1/trigger-executions"): ("admin-only", lambda w, _p: [Cell(
        "/v1/trigger-executions", "executions of the office-1 lead", frozenset({403}), "403 (triggers:admin)",
        {"params": {"record_id": w.kinds["leads"].record["id"]}}, no_trace(w))], "403"),
}


# -- the route table, classified --------------------------------------------------------------------

_PLURAL_SEGMENT = re.compile(r"/(leads|opportunities)(?=/|$)")
_KIND_PREFIX = re.compile(r"/(lead|opportunity)-")


def generic(pattern: str) -> str:
    return _KIND_PREFIX.sub("/{kind}-", _PLURAL_SEGMENT.sub("/{records}", pattern))


def plural_of(pattern: str) -> str | None:
    m = _PLURAL_SEGMENT.search(pattern)
    return m.group(1) if m else None


def routes() -> list[tuple[str, str]]:
    """Every (method, route template) of the gateway, as test_authz_matrix reads them (HEAD included)."""
    return sorted({(e.method, e.pattern) for e in ENDPOINTS})


def rule_of(method: str, pattern: str) -> tuple[str, Builder | None, str] | None:
    return RULES.get(("GET" if method == "HEAD" else method, generic(pattern)))


def classification_problems() -> list[str]:
    table = routes()
    unclassified = [f"{m} {p}" for m, p in table if rule_of(m, p) is None]
    used = {("GET" if m == "HEAD" else m, generic(p)) for m, p in table}
    stale = [f"{m} {p}" for m, p in RULES if (m, p) not in used]
    return ([f"unclassified route (add it to RULES): {u}" for u in unclassified]
            + [f"classified, but no such route any more: {s}" for s in stale])


def build_cells(w: World) -> tuple[list[Cell], list[str]]:
    cells: list[Cell] = []
    problems: list[str] = []
    for method, pattern in routes():
        rule = rule_of(method, pattern)
        if rule is None or rule[1] is None:
            continue
        made = rule[1](w, plural_of(pattern))
        if not made:
            problems.append(f"{method} {pattern}: classified {rule[0]!r} but yields no cell")
        for cell in made:
            # HEAD: the same status as GET (run_cell has no body to look at)
            cells.append(replace(cell, method=method, pattern=pattern))
    cells.sort(key=lambda c: c.phase)  # stable: the table's order within a phase
    return cells, problems


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _problem(r: requests.Response) -> str:
    """What a refusal says, ids left out."""
    try:
        body = r.json()
    except ValueError:
        return r.text
    return _UUID.sub("<id>", repr((body.get("detail"), body.get("errors"))))


def run_cell(w: World, cell: Cell) -> str | None:
    """None when the stranger got what the contract says; else the line for the report."""
    statuses, expect = cell.statuses, cell.expect
    if cell.control is not None:
        control = w.stranger(cell.method, cell.path, **cell.control)
        if control.status_code not in cell.statuses:
            return (f"{cell.method} {cell.pattern} [{cell.subject}]: the control with an unknown id got "
                    f"{control.status_code}, expected 404/422: {_excerpt(control)}")
        statuses, expect = frozenset({control.status_code}), f"{control.status_code}, as for an unknown id"
    kw = {name: (dict(value) if isinstance(value, dict) else value) for name, value in cell.kw.items()}
    r = w.stranger(cell.method, cell.path, **kw)
    if r.status_code not in statuses:
        return f"{cell.method} {cell.pattern} [{cell.subject}]: expected {expect}, got {r.status_code}: {_excerpt(r)}"
    if cell.control is not None and _problem(r) != _problem(control):  # no oracle for "exists elsewhere"
        return (f"{cell.method} {cell.pattern} [{cell.subject}]: expected {expect}, got {r.status_code} but it says "
                f"{_problem(r)!r}, and for an unknown id {_problem(control)!r}")
    if cell.check is not None and cell.method != "HEAD":
        wrong = cell.check(r)
        if wrong:
            return f"{cell.method} {cell.pattern} [{cell.subject}]: expected {expect}, got {r.status_code} but {wrong}"
    return None


# -- nothing changed ----------------------------------------------------------------------------------

RECORD_FIELDS = ("version", "title", "description", "owner_id", "office_id", "company_id", "contact_id",
                 "converted_opportunity_id", "lead_id", "amount", "modified_at")


def snapshot(w: World) -> dict[str, Any]:
    """Everything the stranger tried to touch, as office 1's owner (and, for the stranger's own
    things, the stranger; for the totals, office 1's admin) reads it."""
    snap: dict[str, Any] = {}

    def read(label: str, caller: Caller, path: str, pick: Callable[[Any], Any], **params: Any) -> None:
        r = caller("GET", path, params=params)
        snap[label] = pick(r.json()) if r.status_code == 200 else f"HTTP {r.status_code}"

    def items(pick: Callable[[dict[str, Any]], Any]) -> Callable[[Any], Any]:
        return lambda body: sorted((pick(i) for i in body["items"]), key=repr)

    def fields_of(*names: str) -> Callable[[Any], Any]:
        return lambda body: {n: body.get(n) for n in names}

    o = w.owner
    for plural, k in w.kinds.items():
        kind = KIND_OF[plural]
        read(f"office-1 {kind}", o, k.url, lambda b: {**{f: b.get(f) for f in RECORD_FIELDS},
                                                      "stage": b["stage"]["id"], "group_ids": sorted(b["group_ids"])})
        read(f"office-1 {kind}: stage history", o, f"{k.url}/stage-history",
             items(lambda h: (h["from_stage_id"], h["to_stage_id"], h["cause"])))
        read(f"office-1 {kind}: attachments", o, f"{k.url}/attachments", items(lambda a: (a["id"], a["sha256"])))
        read(f"office-1 {kind}: print templates", o, f"{k.url}/templates", items(lambda t: t["id"]), kind="print")
        read(f"office-1 {kind}: contacts tab", o, f"{k.url}/contacts", items(lambda c: (c["contact_id"], c["role_id"])),
             page_size=200)
        read(f"office-1 {kind}: job orders tab", o, f"{k.url}/job-orders", items(lambda j: j.get("job_order_id")),
             page_size=200)
        read(f"office-1 {kind}: activities tab", o, f"{k.url}/activities",
             items(lambda a: (a["id"], a["subject"], a["version"])), page_size=200)
        read(f"office-1 {kind}: placements tab", o, f"{k.url}/placements", items(lambda p: (p["id"], p["version"])),
             page_size=200)
        read(f"office-1 {kind}: timeline length", o, f"{k.url}/timeline", lambda b: len(b["items"]), page_size=200)
        read(f"office-1 {kind}'s company", o, f"/v1/companies/{k.company['id']}", fields_of("version", "name"))
        for label, contact_id in (("main contact", k.main_contact["id"]), ("linked contact", k.linked_contact),
                                  ("free contact", k.free_contact["id"])):
            read(f"office-1 {kind}'s {label}", o, f"/v1/contacts/{contact_id}",
                 fields_of("version", "first_name", "last_name", "company_id"))
        for label, job_id in (("job order", k.job_order), ("free job order", k.free_job_order["id"])):
            read(f"office-1 {kind}'s {label}", o, f"/v1/job-orders/{job_id}",
                 fields_of("version", "title", "company_id", "related_to"))
        read(f"office-1 {kind}'s placement", o, f"/v1/placements/{k.placement['id']}",
             fields_of("version", "candidate_name", "job_order_id"))
        read(f"office-1 {kind}'s activity", o, f"/v1/activities/{k.activity['id']}",
             fields_of("version", "subject", "lead_id", "opportunity_id"))
        read(f"{plural} of the main contact", o, f"/v1/contacts/{k.main_contact['id']}/{plural}",
             items(lambda r: r["id"]))
        read(f"the stranger's own {kind}", w.stranger, k.own_url,
             lambda b: {f: b.get(f) for f in ("version", "office_id", "converted_opportunity_id", "lead_id")})
        read(f"{plural} with the run's tag, in every office", w.admin, f"/v1/{plural}", items(lambda r: r["id"]),
             q=w.tag, page_size=200)
    read("office-1 companies' leads", o, f"/v1/companies/{w.kinds['leads'].company['id']}/leads",
         items(lambda r: r["id"]))
    read("office 1's unlinked activity", o, f"/v1/activities/{w.unlinked_activity['id']}",
         fields_of("version", "subject", "lead_id", "opportunity_id"))
    read("the stranger's own activity", w.stranger, f"/v1/activities/{w.own_activity['id']}",
         fields_of("version", "lead_id", "opportunity_id"))
    for collection, job in w.imports.items():
        read(f"office 1's {collection} import", o, f"/v1/{collection}/imports/{job['id']}",
             fields_of("version", "status", "rows", "mapping"))
    for collection in ("activities", "placements", "job-orders", "contacts"):
        read(f"{collection} with the run's tag", w.admin, f"/v1/{collection}", items(lambda f: f["id"]), q=w.tag,
             page_size=200)
    return snap


def _diff(before: Any, after: Any) -> str:
    if isinstance(before, dict) and isinstance(after, dict):
        return ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}"
                         for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k))
    return f"{before!r} -> {after!r}"


def trigger_notes(w: World) -> list[str]:
    """Trigger executions on office 1's records (another test's trigger could change them): context only."""
    notes = []
    for k in w.kinds.values():
        r = w.admin("GET", "/v1/trigger-executions", params={"record_id": k.record["id"]})
        if r.status_code == 200 and r.json()["items"]:
            notes.append(f"note: trigger executions on the office-1 {KIND_OF[k.plural]}: {r.json()['items']}")
    return notes


# -- the tests ----------------------------------------------------------------------------------------

def test_every_route_is_classified():
    """A route added to the gateway's table fails here until RULES says what another office gets."""
    problems = classification_problems()
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(600)  # some 500 requests; alone, it also starts the platform on a 2-core box
def test_another_office_cannot_see_or_change_office_1(platform):
    w = build_world(platform)
    before = snapshot(w)
    cells, problems = build_cells(w)
    problems = classification_problems() + problems
    wrong = [line for cell in cells if (line := run_cell(w, cell))]
    after = snapshot(w)
    changed = [f"{label}: {_diff(before[label], after.get(label))}"
               for label in before if before[label] != after.get(label)]
    report = [f"{len(wrong)} of {len(cells)} cells wrong (the stranger: {'+'.join(WORKER_ROLES)} of "
              f"{w.stranger.office}; office 1 is {w.owner.office})"]
    report += [f"  {line}" for line in problems + wrong]
    if changed:
        report += ["read back as office 1's owner, changed:"] + [f"  {c}" for c in changed] + trigger_notes(w)
    assert not (problems or wrong or changed), "\n".join(report)
