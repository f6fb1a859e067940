"""Stages of both kinds: fields, names by language, the default rules, concurrency, events."""

from __future__ import annotations

import pytest
from catalogue_helpers import VIEWER, Catalogue, bearer, summary
from google.protobuf.json_format import MessageToDict
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from crm_catalogue.tables import stages

pytestmark = pytest.mark.integration
LEAD = "/v1/lead-stages"


def _stage(code: str, **fields):
    return {"names": {"en": code.title(), "nl": f"NL {code}"}, "code": code, **fields}


def test_seeded_stages_are_listed_in_order_with_names_in_the_callers_language(cat):
    for language, names in [
        ("nl", ["Nieuw", "Gecontacteerd", "Gekwalificeerd", "Geconverteerd", "Gediskwalificeerd"]),
        ("en-GB,en;q=0.8", ["New", "Contacted", "Qualified", "Converted", "Disqualified"]),
        ("nl-BE", ["Nieuw", "Gecontacteerd", "Gekwalificeerd", "Geconverteerd", "Gediskwalificeerd"]),
        ("fr", ["New", "Contacted", "Qualified", "Converted", "Disqualified"]),  # unknown: the default (en)
        (None, ["New", "Contacted", "Qualified", "Converted", "Disqualified"]),
    ]:
        headers = {"Accept-Language": language} if language else {}
        items = cat.items(LEAD, headers=headers)
        assert [i["name"] for i in items] == names, language
    items = cat.items(LEAD)
    assert [i["code"] for i in items] == ["NEW", "CONTACTED", "QUALIFIED", "CONVERTED", "DISQUALIFIED"]
    assert [i["index"] for i in items] == [0, 1, 2, 3, 4]
    assert [i["code"] for i in items if i["is_default"]] == ["NEW"]
    assert [i["code"] for i in items if i["is_default_end"]] == ["CONVERTED"]
    assert {i["code"] for i in items if i["is_end"]} == {"CONVERTED", "DISQUALIFIED"}
    assert all(i["color"].startswith("#") and i["stage_group_id"] for i in items)
    assert [i["code"] for i in cat.items("/v1/opportunity-stages")] == [
        "PROSPECTING", "PROPOSAL", "NEGOTIATION", "WON", "LOST"]


def test_name_falls_back_to_the_default_language_then_to_any(any_db_url):
    cat = Catalogue(any_db_url, CRM_LANGUAGES="en,nl,pt-BR,de")
    try:
        pt = cat.created(LEAD, {"names": {"pt-br": "Novo", "de": "Neu"}, "code": "PT"})  # tags as configured
        assert pt["names"] == {"pt-BR": "Novo", "de": "Neu"}
        r = cat.get(f"{LEAD}/{pt['id']}", headers={"Accept-Language": "pt"})
        assert r.json["name"] == "Novo"
        assert r.headers["Content-Language"] == "pt-BR" and "Accept-Language" in r.headers["Vary"]
        assert cat.get(f"{LEAD}/{pt['id']}", headers={"Accept-Language": "fr"}).json["name"] == "Neu"  # no en: any
    finally:
        cat.close()


def test_create_read_and_its_event_carry_the_whole_stage(cat):
    group = cat.by_code("/v1/lead-tables/stage-groups", "OPEN")
    procedure = cat.created("/v1/lead-tables/procedures", {"names": {"en": "Standard"}, "code": "STD"})
    template = cat.created("/v1/templates", {"kind": "email", "name": "Intro", "subject": "Hello",
                                             "visible_at": "lead_stage"})
    mark = cat.outbox_mark()
    r = cat.post(LEAD, _stage("NURTURE", color="#AABBCC", remarks="Call within a week.", procedure_id=procedure["id"],
                              stage_group_id=group["id"], email_template_ids=[template["id"]]))
    assert r.status_code == 201, r.json
    stage = r.json
    assert r.headers["Location"] == f"{LEAD}/{stage['id']}"
    assert r.headers["ETag"] == '"1"'
    assert stage["index"] == 5  # after the last
    assert (stage["active"], stage["is_default"], stage["is_end"], stage["is_default_end"]) == (True, False, False,
                                                                                                 False)
    assert stage["email_template_ids"] == [template["id"]] and stage["document_template_ids"] == []
    assert stage["created_at"].endswith("Z") and stage["version"] == 1
    assert set(stage) == {"id", "names", "name", "code", "index", "active", "is_default", "is_end", "is_default_end",
                          "color", "remarks", "procedure_id", "stage_group_id", "email_template_ids",
                          "document_template_ids", "version", "created_at", "modified_at"}
    assert cat.get(f"{LEAD}/{stage['id']}").json == stage

    events = cat.events(mark)
    assert summary(events) == [("catalogue.stage.created", stage["id"], 1),
                               ("catalogue.template.updated", template["id"], 2)]
    created = events[0]
    assert created.aggregate_type == "stage" and created.producer == "catalogue"
    assert (created.actor.user_id, created.actor.kind) == ("u-admin", "user")
    entry = created.catalogue_entry
    assert (entry.id, entry.kind, entry.entity, entry.code, entry.index, entry.active, entry.deleted,
            entry.version) == (stage["id"], "lead", "stage", "NURTURE", 5, True, False, 1)
    assert dict(entry.names) == stage["names"]
    assert MessageToDict(entry.attributes) == {
        "is_default": False, "is_end": False, "is_default_end": False, "color": "#AABBCC",
        "remarks": "Call within a week.", "procedure_id": procedure["id"], "stage_group_id": group["id"],
        "email_template_ids": [template["id"]], "document_template_ids": [],
    }
    assert events[1].catalogue_entry.attributes["stage_ids"] == [stage["id"]]


def _invalid_bodies(cat):
    """(expected status, body) pairs: each must be refused and write nothing."""
    opp_group = cat.by_code("/v1/opportunity-tables/stage-groups", "OPEN")
    lead_group = cat.by_code("/v1/lead-tables/stage-groups", "OPEN")
    inactive = cat.created("/v1/lead-tables/stage-groups", {"names": {"en": "Old"}, "code": "OLD", "active": False})
    document = cat.created("/v1/templates", {"kind": "document", "name": "Offer", "visible_at": "lead_stage"})
    opp_email = cat.created("/v1/templates", {"kind": "email", "name": "Opp mail", "visible_at": "opportunity_stage"})
    return [
        (422, {**_stage("X1"), "colour": "#FFFFFF"}),  # unknown field
        (422, _stage("X2", color="red")),
        (422, _stage("X3", color="#12345")),
        (422, _stage("X4", color="#12345G")),
        (422, {"code": "X5"}),  # no names
        (422, {"names": {}, "code": "X6"}),
        (422, {"names": {"en": "  "}, "code": "X7"}),
        (422, {"names": {"english": "X"}, "code": "X8"}),
        (422, {"names": "X", "code": "X9"}),
        (422, _stage("has space")),
        (422, _stage("C" * 51)),
        (422, {"names": {"en": "No code"}}),
        (422, _stage("X10", index=-1)),
        (422, _stage("X11", active="yes")),
        (422, _stage("X12", remarks="r" * 10001)),
        (409, _stage("NEW")),  # the code exists in this kind
        (422, _stage("X13", is_default_end=True)),  # not an end stage
        (422, _stage("X14", stage_group_id=opp_group["id"])),  # the other kind's group
        (422, _stage("X15", procedure_id=lead_group["id"])),  # a stage group is no procedure
        (422, _stage("X16", stage_group_id=inactive["id"])),
        (422, _stage("X17", stage_group_id="no-such-id")),
        (422, _stage("X18", email_template_ids=[document["id"]])),  # a document template as email
        (422, _stage("X19", document_template_ids=[opp_email["id"]])),
        (422, _stage("X20", email_template_ids=[opp_email["id"]])),  # visible at opportunity stages
        (422, _stage("X21", email_template_ids=["no-such-template"])),
        (409, _stage("X22", is_default=True, active=False)),
        (409, _stage("X23", is_end=True, is_default_end=True, active=False)),
    ]


def test_invalid_stages_are_refused_and_write_nothing(cat):
    for status, body in _invalid_bodies(cat):
        problem = cat.refused(status, "POST", LEAD, body)
        if status == 422:
            assert problem["errors"], body
    problem = cat.refused(422, "POST", LEAD, _stage("X", stage_group_id="nope", procedure_id="nope"))
    assert {e["field"] for e in problem["errors"]} == {"stage_group_id", "procedure_id"}
    cat.refused(400, "POST", LEAD, None, data="{not json", content_type="application/json")
    cat.refused(415, "POST", LEAD, None, data="code=X", content_type="application/x-www-form-urlencoded")


def test_invalid_patches_are_refused_and_write_nothing(cat):
    new = cat.by_code(LEAD, "NEW")
    contacted = cat.by_code(LEAD, "CONTACTED")
    converted = cat.by_code(LEAD, "CONVERTED")
    opp_group = cat.by_code("/v1/opportunity-tables/stage-groups", "CLOSED")
    path = f"{LEAD}/{contacted['id']}"
    for status, body in [
        (422, {"code": None}), (422, {"names": None}), (422, {"version": 7}), (422, {"id": "x"}),
        (409, {"code": "NEW"}), (422, {"stage_group_id": opp_group["id"]}), (422, {"is_default_end": True}),
    ]:
        cat.refused(status, "PATCH", path, body)
    cat.refused(422, "PATCH", f"{LEAD}/{converted['id']}", {"is_end": False})  # would leave a default end non-end
    cat.refused(409, "PATCH", f"{LEAD}/{new['id']}", {"active": False})
    cat.refused(409, "PATCH", f"{LEAD}/{converted['id']}", {"active": False})
    inactive = cat.ok("PATCH", path, {"active": False})
    cat.refused(409, "PATCH", path, {"is_default": True})
    cat.refused(409, "PATCH", path, {"is_end": True, "is_default_end": True})
    assert inactive["active"] is False


def test_the_default_and_default_end_stages_cannot_be_deleted(cat):
    for code in ("NEW", "CONVERTED"):
        problem = cat.refused(409, "DELETE", f"{LEAD}/{cat.by_code(LEAD, code)['id']}")
        assert "cannot be deleted" in problem["detail"]


def test_a_new_default_clears_the_old_one_with_events_for_both(cat):
    old = cat.by_code(LEAD, "NEW")
    mark = cat.outbox_mark()
    new = cat.created(LEAD, _stage("FRESH", is_default=True))
    assert new["is_default"] is True
    cleared = cat.get(f"{LEAD}/{old['id']}").json
    assert cleared["is_default"] is False and cleared["version"] == old["version"] + 1
    events = cat.events(mark)
    assert sorted(summary(events)) == sorted([("catalogue.stage.updated", old["id"], old["version"] + 1),
                                              ("catalogue.stage.created", new["id"], 1)])
    assert next(e for e in events if e.aggregate_id == old["id"]).catalogue_entry.attributes["is_default"] is False
    # Other kind untouched.
    assert cat.by_code("/v1/opportunity-stages", "PROSPECTING")["is_default"] is True

    # By PATCH, for the default end stage too.
    converted = cat.by_code(LEAD, "CONVERTED")
    disq = cat.by_code(LEAD, "DISQUALIFIED")
    mark = cat.outbox_mark()
    patched = cat.ok("PATCH", f"{LEAD}/{disq['id']}", {"is_default_end": True})
    assert patched["is_default_end"] is True and patched["version"] == disq["version"] + 1
    assert cat.get(f"{LEAD}/{converted['id']}").json["is_default_end"] is False
    assert sorted(summary(cat.events(mark))) == sorted([
        ("catalogue.stage.updated", disq["id"], disq["version"] + 1),
        ("catalogue.stage.updated", converted["id"], converted["version"] + 1)])
    assert [i["code"] for i in cat.items(LEAD) if i["is_default"]] == ["FRESH"]
    assert [i["code"] for i in cat.items(LEAD) if i["is_default_end"]] == ["DISQUALIFIED"]


def test_the_database_itself_allows_one_default_and_one_default_end_per_kind(cat):
    contacted = cat.by_code(LEAD, "CONTACTED")
    for flag in ("is_default", "is_default_end"):
        with pytest.raises(IntegrityError), cat.db.transaction() as s:
            s.execute(update(stages).where(stages.c.id == contacted["id"]).values({flag: True, "is_end": True}))


def test_if_match_etag_and_a_patch_that_changes_nothing(cat):
    stage = cat.created(LEAD, _stage("ETAG"))
    path = f"{LEAD}/{stage['id']}"
    r = cat.get(path)
    assert r.headers["ETag"] == '"1"'
    assert cat.get(path, headers={"If-None-Match": '"1"'}).status_code == 304
    cat.refused(412, "PATCH", path, {"remarks": "x"}, headers={"If-Match": '"7"'})
    cat.refused(412, "DELETE", path, headers={"If-Match": '"7"'})
    r = cat.patch(path, {"remarks": "x"}, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.json["version"] == 2 and r.headers["ETag"] == '"2"'
    mark = cat.outbox_mark()
    same = cat.ok("PATCH", path, {"remarks": "x", "names": stage["names"], "email_template_ids": []})
    assert same["version"] == 2 and cat.events(mark) == []  # nothing changed: no new version, no event
    cat.refused(412, "DELETE", path, headers={"If-Match": '"1"'})
    assert cat.delete(path, headers={"If-Match": '"2"'}).status_code == 204


def test_delete_emits_the_last_state_with_the_next_version(cat):
    stage = cat.created(LEAD, _stage("GONE", color="#000000"))
    mark = cat.outbox_mark()
    assert cat.delete(f"{LEAD}/{stage['id']}").status_code == 204
    assert cat.get(f"{LEAD}/{stage['id']}").status_code == 404
    [event] = cat.events(mark)
    assert summary([event]) == [("catalogue.stage.deleted", stage["id"], 2)]
    entry = event.catalogue_entry
    assert entry.deleted is True and entry.version == 2 and entry.code == "GONE"
    assert entry.attributes["color"] == "#000000"


def test_stages_are_seen_only_under_their_own_kind(cat):
    opp = cat.by_code("/v1/opportunity-stages", "WON")
    cat.refused(404, "GET", f"{LEAD}/{opp['id']}")
    cat.refused(404, "PATCH", f"{LEAD}/{opp['id']}", {"remarks": "x"})
    cat.refused(404, "DELETE", f"{LEAD}/{opp['id']}")
    cat.refused(404, "GET", f"{LEAD}/no-such-id")
    # The same code in the other kind is fine.
    assert cat.created("/v1/opportunity-stages", _stage("NEW"))["code"] == "NEW"


def test_pages_and_the_active_filter(cat):
    cat.ok("PATCH", f"{LEAD}/{cat.by_code(LEAD, 'QUALIFIED')['id']}", {"active": False})
    cat.created(LEAD, _stage("EARLY", index=0))  # same index as NEW: the id breaks the tie
    first = cat.get(f"{LEAD}?page_size=2").json
    assert len(first["items"]) == 2 and first["next_page_token"]
    all_codes = [i["code"] for i in cat.items(f"{LEAD}?page_size=2")]
    assert sorted(all_codes[:2]) == ["EARLY", "NEW"]
    assert all_codes[2:] == ["CONTACTED", "QUALIFIED", "CONVERTED", "DISQUALIFIED"]
    assert "QUALIFIED" not in [i["code"] for i in cat.items(f"{LEAD}?active=true&page_size=1")]
    assert [i["code"] for i in cat.items(f"{LEAD}?active=false")] == ["QUALIFIED"]
    # A token belongs to its query.
    cat.refused(422, "GET", f"{LEAD}?active=true&page_token={first['next_page_token']}")
    cat.refused(422, "GET", f"{LEAD}?page_size=500")
    cat.refused(422, "GET", f"{LEAD}?colour=red")


@pytest.mark.parametrize("path", ["/v1/lead-stages", "/v1/opportunity-stages", "/v1/lead-tables/roles",
                                  "/v1/opportunity-tables/sources", "/v1/templates"])
def test_any_token_reads_and_only_catalogue_admins_write(cat, path):
    assert cat.get(path, headers={"Authorization": ""}).status_code == 401
    assert cat.get(path, headers=VIEWER).status_code == 200
    item = cat.items(path)[0] if path != "/v1/templates" else cat.created(path, {"kind": "print", "name": "P"})
    assert cat.get(f"{path}/{item['id']}", headers=VIEWER).status_code == 200
    body = {"kind": "print", "name": "Q"} if path == "/v1/templates" else _stage("VIEWER") if "stages" in path \
        else {"names": {"en": "V"}, "code": "VIEWER"}
    for reader in (VIEWER, bearer(("marketing", "account_manager"), user="u-sales")):
        cat.refused(403, "POST", path, body, headers=reader)
        cat.refused(403, "PATCH", f"{path}/{item['id']}", {"index": 3}, headers=reader)
        cat.refused(403, "DELETE", f"{path}/{item['id']}", headers=reader)


def test_a_retried_post_with_an_idempotency_key_creates_one_stage_and_one_event(cat):
    mark = cat.outbox_mark()
    first = cat.post(LEAD, _stage("RETRY"), headers={"Idempotency-Key": "retry-1"})
    again = cat.post(LEAD, _stage("RETRY"), headers={"Idempotency-Key": "retry-1"})
    assert first.status_code == again.status_code == 201
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert summary(cat.events(mark)) == [("catalogue.stage.created", first.json["id"], 1)]
    cat.refused(422, "POST", LEAD, _stage("OTHER"), headers={"Idempotency-Key": "retry-1"})
