"""Templates and the one template <-> stage relation, editable from either side."""

from __future__ import annotations

import pytest
from catalogue_helpers import summary
from google.protobuf.json_format import MessageToDict

pytestmark = pytest.mark.integration
T = "/v1/templates"


def _email(name: str = "Intro", **fields):
    return {"kind": "email", "name": name, "subject": "Hello {{ lead.title }}", "body": "Dear {{ record.title }}",
            "visible_at": "lead_stage", **fields}


def test_create_read_list_filters_and_event(cat):
    stage = cat.by_code("/v1/lead-stages", "CONTACTED")
    mark = cat.outbox_mark()
    r = cat.post(T, _email(stage_ids=[stage["id"]]))
    assert r.status_code == 201, r.json
    email = r.json
    assert r.headers["Location"] == f"{T}/{email['id']}" and r.headers["ETag"] == '"1"'
    assert set(email) == {"id", "kind", "name", "subject", "body", "visible_at", "stage_ids", "version", "created_at",
                          "modified_at"}
    assert email["stage_ids"] == [stage["id"]]
    events = cat.events(mark)
    assert summary(events) == [("catalogue.template.created", email["id"], 1),
                               ("catalogue.stage.updated", stage["id"], stage["version"] + 1)]
    entry = events[0].catalogue_entry
    assert (entry.kind, entry.entity, entry.code, entry.deleted, entry.version, dict(entry.names)) == (
        "", "template", "", False, 1, {})
    assert MessageToDict(entry.attributes) == {
        "template_kind": "email", "name": "Intro", "subject": "Hello {{ lead.title }}",
        "body": "Dear {{ record.title }}", "visible_at": "lead_stage", "stage_ids": [stage["id"]]}
    assert events[1].catalogue_entry.attributes["email_template_ids"] == [email["id"]]

    document = cat.created(T, {"kind": "document", "name": "Offer", "visible_at": "opportunity_stage"})
    printed = cat.created(T, {"kind": "print", "name": "Sheet", "body": "{% for x in record.items %}{{ x }}"
                                                                        "{% endfor %}"})
    assert (document["subject"], printed["visible_at"], printed["stage_ids"]) == (None, None, [])
    names = lambda query: [t["name"] for t in cat.items(f"{T}{query}")]  # noqa: E731
    assert names("") == ["Intro", "Offer", "Sheet"]
    assert names("?kind=email") == ["Intro"]
    assert names("?visible_at=opportunity_stage") == ["Offer"]
    assert names(f"?stage_id={stage['id']}") == ["Intro"]
    assert names("?kind=print&visible_at=lead_stage") == []
    assert [t["name"] for t in cat.get(f"{T}?page_size=1").json["items"]] == ["Intro"]
    cat.refused(422, "GET", f"{T}?kind=sms")
    cat.refused(422, "GET", f"{T}?visible_at=somewhere")


def test_invalid_templates_are_refused_and_write_nothing(cat):
    opp_stage = cat.by_code("/v1/opportunity-stages", "WON")
    for body in [
        {"name": "No kind"}, {"kind": "email"}, {"kind": "sms", "name": "X"}, {"kind": "email", "name": " "},
        {"kind": "document", "name": "X", "subject": "Only for email"},
        {"kind": "print", "name": "X", "subject": "Only for email"},
        _email(visible_at="lead"), _email(stage_ids=[opp_stage["id"]]), _email(stage_ids=["no-such-stage"]),
        _email(visible_at=None, stage_ids=[opp_stage["id"]]), _email(unknown=1),
    ]:
        cat.refused(422, "POST", T, body)
    problem = cat.refused(422, "POST", T, _email(body="Hi {{ lead.title }}\nline two\n{{ record.title }"))
    assert problem["errors"][0]["field"] == "body"
    assert problem["errors"][0]["message"].startswith("Line 3:")
    assert problem["errors"][0]["line"] == 3  # a number too, for an editor to point at
    problem = cat.refused(422, "POST", T, _email(body="{{ }}", kind="document"))  # both errors at once
    assert {e["field"] for e in problem["errors"]} == {"subject", "body"}


def test_the_relation_is_editable_from_both_sides(cat):
    stage = cat.by_code("/v1/lead-stages", "QUALIFIED")
    stage_path = f"/v1/lead-stages/{stage['id']}"
    email = cat.created(T, _email())
    document = cat.created(T, {"kind": "document", "name": "Proposal", "visible_at": "lead_stage"})

    # From the stage's side.
    mark = cat.outbox_mark()
    patched = cat.ok("PATCH", stage_path, {"email_template_ids": [email["id"]],
                                           "document_template_ids": [document["id"]]})
    assert (patched["email_template_ids"], patched["document_template_ids"]) == ([email["id"]], [document["id"]])
    assert patched["version"] == stage["version"] + 1
    assert cat.get(f"{T}/{email['id']}").json["stage_ids"] == [stage["id"]]
    assert cat.get(f"{T}/{document['id']}").json["version"] == 2
    assert sorted(summary(cat.events(mark))) == sorted([
        ("catalogue.stage.updated", stage["id"], stage["version"] + 1),
        ("catalogue.template.updated", email["id"], 2),
        ("catalogue.template.updated", document["id"], 2)])

    # From the template's side: unlink, and link another stage.
    other = cat.by_code("/v1/lead-stages", "NEW")
    mark = cat.outbox_mark()
    relinked = cat.ok("PATCH", f"{T}/{email['id']}", {"stage_ids": [other["id"]]})
    assert relinked["stage_ids"] == [other["id"]] and relinked["version"] == 3
    after = cat.get(stage_path).json
    assert (after["email_template_ids"], after["document_template_ids"]) == ([], [document["id"]])
    assert after["version"] == stage["version"] + 2
    assert cat.get(f"/v1/lead-stages/{other['id']}").json["email_template_ids"] == [email["id"]]
    assert sorted(summary(cat.events(mark))) == sorted([
        ("catalogue.template.updated", email["id"], 3),
        ("catalogue.stage.updated", stage["id"], stage["version"] + 2),
        ("catalogue.stage.updated", other["id"], other["version"] + 1)])


def test_print_templates_link_from_their_side_without_changing_the_stage(cat):
    stage = cat.by_code("/v1/lead-stages", "NEW")
    mark = cat.outbox_mark()
    printed = cat.created(T, {"kind": "print", "name": "Sheet", "visible_at": "lead_stage", "stage_ids": [stage["id"]]})
    assert summary(cat.events(mark)) == [("catalogue.template.created", printed["id"], 1)]
    assert cat.get(f"/v1/lead-stages/{stage['id']}").json["version"] == stage["version"]
    cat.refused(422, "PATCH", f"/v1/lead-stages/{stage['id']}", {"document_template_ids": [printed["id"]]})
    # Deleting the stage removes the link, and the template changes.
    cat.ok("PATCH", f"/v1/lead-stages/{cat.by_code('/v1/lead-stages', 'CONTACTED')['id']}", {"is_default": True})
    mark = cat.outbox_mark()
    assert cat.delete(f"/v1/lead-stages/{stage['id']}").status_code == 204
    assert sorted(summary(cat.events(mark))) == sorted([("catalogue.stage.deleted", stage["id"], stage["version"] + 2),
                                                        ("catalogue.template.updated", printed["id"], 2)])
    assert cat.get(f"{T}/{printed['id']}").json["stage_ids"] == []


def test_changing_visible_at_needs_valid_stage_ids_in_the_same_patch(cat):
    lead_stage = cat.by_code("/v1/lead-stages", "NEW")
    opp_stage = cat.by_code("/v1/opportunity-stages", "PROPOSAL")
    email = cat.created(T, _email(stage_ids=[lead_stage["id"]]))
    lead_stage = cat.get(f"/v1/lead-stages/{lead_stage['id']}").json  # linked: at its next version
    path = f"{T}/{email['id']}"
    assert "stage_ids" in cat.refused(409, "PATCH", path, {"visible_at": "opportunity_stage"})["detail"]
    cat.refused(409, "PATCH", path, {"visible_at": None})
    cat.refused(422, "PATCH", path, {"visible_at": "opportunity_stage", "stage_ids": [lead_stage["id"]]})
    cat.refused(422, "PATCH", path, {"stage_ids": [opp_stage["id"]]})
    cat.refused(422, "PATCH", path, {"kind": "print"})  # an email subject on a print template

    mark = cat.outbox_mark()
    moved = cat.ok("PATCH", path, {"visible_at": "opportunity_stage", "stage_ids": [opp_stage["id"]]})
    assert (moved["visible_at"], moved["stage_ids"], moved["version"]) == ("opportunity_stage", [opp_stage["id"]], 2)
    assert cat.get(f"/v1/lead-stages/{lead_stage['id']}").json["email_template_ids"] == []
    assert cat.get(f"/v1/opportunity-stages/{opp_stage['id']}").json["email_template_ids"] == [email["id"]]
    assert sorted(summary(cat.events(mark))) == sorted([
        ("catalogue.template.updated", email["id"], 2),
        ("catalogue.stage.updated", lead_stage["id"], lead_stage["version"] + 1),
        ("catalogue.stage.updated", opp_stage["id"], opp_stage["version"] + 1)])
    cleared = cat.ok("PATCH", path, {"visible_at": None, "stage_ids": []})
    assert (cleared["visible_at"], cleared["stage_ids"]) == (None, [])


def test_changing_the_kind_moves_the_template_between_the_stages_lists(cat):
    stage = cat.by_code("/v1/lead-stages", "CONTACTED")
    email = cat.created(T, _email(stage_ids=[stage["id"]]))
    mark = cat.outbox_mark()
    document = cat.ok("PATCH", f"{T}/{email['id']}", {"kind": "document", "subject": None})
    assert (document["kind"], document["subject"], document["stage_ids"]) == ("document", None, [stage["id"]])
    after = cat.get(f"/v1/lead-stages/{stage['id']}").json
    assert (after["email_template_ids"], after["document_template_ids"]) == ([], [email["id"]])
    assert sorted(summary(cat.events(mark))) == sorted([
        ("catalogue.template.updated", email["id"], 2),
        ("catalogue.stage.updated", stage["id"], after["version"])])


def test_deleting_a_template_unlinks_it_with_events_for_its_stages(cat):
    stage = cat.by_code("/v1/lead-stages", "CONTACTED")
    email = cat.created(T, _email(stage_ids=[stage["id"]]))
    linked = cat.get(f"/v1/lead-stages/{stage['id']}").json
    cat.refused(412, "DELETE", f"{T}/{email['id']}", headers={"If-Match": '"5"'})
    mark = cat.outbox_mark()
    assert cat.delete(f"{T}/{email['id']}", headers={"If-Match": '"1"'}).status_code == 204
    events = cat.events(mark)
    assert summary(events) == [("catalogue.template.deleted", email["id"], 2),
                               ("catalogue.stage.updated", stage["id"], linked["version"] + 1)]
    assert events[0].catalogue_entry.deleted is True
    assert events[0].catalogue_entry.attributes["stage_ids"] == [stage["id"]]  # its last state
    assert cat.get(f"/v1/lead-stages/{stage['id']}").json["email_template_ids"] == []
    assert cat.get(f"{T}/{email['id']}").status_code == 404
