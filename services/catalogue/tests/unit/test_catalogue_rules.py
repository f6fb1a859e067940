"""The catalogue's rules, called directly: what they refuse (with which domain error and words),
what a change does to the other entities it touches, and the events it leaves in its unit of work."""

from __future__ import annotations

import pytest
from catalogue_world import Catalogue, summary

from crm_catalogue import errors, rules
from crm_events.topics import CATALOGUE
from crm_kit.errors import Conflict, Invalid


def new_stage(catalogue: Catalogue, kind: str, code: str, **fields):
    stage_id, _events = catalogue.change(rules.save_stage, kind, {"names": {"en": code.title()}, "code": code,
                                                                  **fields})
    return catalogue.stage_by_id(stage_id)


# -- stages -------------------------------------------------------------------------------------

def test_a_new_default_stage_takes_the_flag_from_the_old_one_and_both_get_an_event(catalogue):
    old = catalogue.stage("lead", "NEW")
    assert catalogue.defaults("lead") == ["NEW"] and catalogue.defaults("opportunity") == ["PROSPECTING"]

    stage_id, events = catalogue.change(rules.save_stage, "lead", {"names": {"en": "Inbox"}, "code": "INBOX",
                                                                   "is_default": True})

    assert catalogue.defaults("lead") == ["INBOX"]
    assert catalogue.defaults("opportunity") == ["PROSPECTING"]  # one default per kind
    assert summary(events) == [("catalogue.stage.updated", old["id"], old["version"] + 1),
                               ("catalogue.stage.created", stage_id, 1)]
    assert {topic for topic, _e in events} == {CATALOGUE}
    assert [e.catalogue_entry.attributes["is_default"] for _t, e in events] == [False, True]
    assert events[1][1].actor.user_id == "u-admin" and events[1][1].actor.kind == "user"


def test_the_default_stage_cannot_give_up_its_flag_be_deactivated_or_deleted(catalogue):
    default = catalogue.stage("opportunity", "PROSPECTING")
    before = catalogue.outbox_size()

    with pytest.raises(errors.DefaultStageRequired) as unset:
        catalogue.change(rules.save_stage, "opportunity", {"is_default": False}, default)
    assert unset.value.detail.startswith("This is the default stage of opportunities, and there must be one")
    with pytest.raises(errors.InactiveDefaultStage) as deactivated:
        catalogue.change(rules.save_stage, "opportunity", {"active": False}, default)
    assert deactivated.value.detail == ("The default stage cannot be deactivated; "
                                        "make another stage the default stage first.")
    with pytest.raises(errors.DefaultStageRequired) as deleted:
        catalogue.change(rules.delete_stage, catalogue.stage("opportunity", "WON"))
    assert deleted.value.detail == ("The default end stage cannot be deleted; "
                                    "make another stage the default end stage first.")

    assert catalogue.stage("opportunity", "PROSPECTING") == default  # nothing changed
    assert catalogue.outbox_size() == before  # and nothing was published


def test_an_inactive_stage_cannot_become_the_default(catalogue):
    with pytest.raises(errors.InactiveDefaultStage, match="An inactive stage cannot be the default end stage"):
        catalogue.change(rules.save_stage, "lead", {"names": {"en": "Gone"}, "code": "GONE", "active": False,
                                                    "is_end": True, "is_default_end": True})
    assert catalogue.stage("lead", "CONVERTED")["is_default_end"] is True


def test_stage_codes_are_unique_per_kind_whatever_their_case(catalogue):
    with pytest.raises(errors.CodeTaken) as taken:
        new_stage(catalogue, "lead", "new")
    assert taken.value.detail == ("A lead stage with code 'new' exists already "
                                  "('NEW': codes are the same whatever their case).")
    assert isinstance(taken.value, Conflict)

    contacted = catalogue.stage("lead", "CONTACTED")
    with pytest.raises(errors.CodeTaken, match="A lead stage with code 'QUALIFIED' exists already."):
        catalogue.change(rules.save_stage, "lead", {"code": "QUALIFIED"}, contacted)
    # The same code in the other kind, and a stage keeping its own code in another case, are fine.
    assert new_stage(catalogue, "opportunity", "CONTACTED")["kind"] == "opportunity"
    catalogue.change(rules.save_stage, "lead", {"code": "contacted"}, contacted)
    assert catalogue.stage_by_id(contacted["id"])["code"] == "contacted"


def test_bad_stage_fields_are_reported_all_at_once(catalogue):
    closed = catalogue.entry("opportunity", "stage_groups", "CLOSED")  # the other kind's
    with pytest.raises(errors.InvalidFields) as refused:
        new_stage(catalogue, "lead", "ODD", is_default_end=True, stage_group_id=closed["id"])
    assert isinstance(refused.value, Invalid)
    assert [e["field"] for e in refused.value.errors] == ["is_default_end", "stage_group_id"]
    assert refused.value.detail == "is_default_end: The default end stage must be an end stage (is_end)."


def test_a_change_that_changes_nothing_publishes_nothing(catalogue):
    stage = catalogue.stage("lead", "QUALIFIED")
    _id, events = catalogue.change(rules.save_stage, "lead", {"code": "QUALIFIED", "color": stage["color"]}, stage)
    assert events == []
    assert catalogue.stage("lead", "QUALIFIED")["version"] == stage["version"]


# -- table entries ------------------------------------------------------------------------------

def test_entry_codes_are_unique_per_table_whatever_their_case(catalogue):
    with pytest.raises(errors.CodeTaken) as taken:
        catalogue.change(rules.save_entry, "lead", "sources", {"code": "website", "names": {"en": "Site"}})
    assert taken.value.detail == ("The lead sources table has an entry with code 'website' already "
                                  "('WEBSITE': codes are the same whatever their case).")
    entry_id, events = catalogue.change(rules.save_entry, "lead", "priorities",
                                        {"code": "WEBSITE", "names": {"en": "Site"}})
    assert summary(events) == [("catalogue.table_entry.created", entry_id, 1)]
    assert events[0][1].catalogue_entry.entity == "priorities"


def test_protected_roles_keep_their_code_stay_active_and_are_never_deleted(catalogue):
    main = catalogue.entry("lead", "roles", "MAIN")
    with pytest.raises(errors.ProtectedEntry, match="MAIN is a protected entry: its code cannot change."):
        catalogue.change(rules.save_entry, "lead", "roles", {"code": "BOSS"}, main)
    with pytest.raises(errors.ProtectedEntry, match="MAIN is a protected entry: it cannot be deactivated."):
        catalogue.change(rules.save_entry, "lead", "roles", {"active": False}, main)
    with pytest.raises(errors.ProtectedEntry, match="MAIN is a protected entry: it cannot be deleted."):
        catalogue.change(rules.delete_entry, main)
    # Its names may change.
    _id, events = catalogue.change(rules.save_entry, "lead", "roles", {"names": {"en": "Main person"}}, main)
    assert summary(events) == [("catalogue.table_entry.updated", main["id"], main["version"] + 1)]


def test_an_entry_stages_refer_to_cannot_be_deleted(catalogue):
    open_group = catalogue.entry("lead", "stage_groups", "OPEN")
    with pytest.raises(errors.EntryInUse) as in_use:
        catalogue.change(rules.delete_entry, open_group)
    assert in_use.value.extra == {"stages": ["NEW", "CONTACTED", "QUALIFIED"]}
    assert in_use.value.detail.startswith("The lead stage(s) NEW, CONTACTED, QUALIFIED refer to this entry;")

    unused = catalogue.entry("lead", "sources", "LINKEDIN")
    _none, events = catalogue.change(rules.delete_entry, unused)
    assert summary(events) == [("catalogue.table_entry.deleted", unused["id"], unused["version"] + 1)]
    assert events[0][1].catalogue_entry.deleted is True


# -- templates and their stages -----------------------------------------------------------------

def test_linking_a_template_to_stages_changes_both_sides(catalogue):
    new, contacted = catalogue.stage("lead", "NEW"), catalogue.stage("lead", "CONTACTED")
    template_id, events = catalogue.change(rules.save_template, {
        "kind": "email", "name": "Welcome", "subject": "Hello", "body": "Dear {{ record.title }}",
        "visible_at": "lead_stage", "stage_ids": [contacted["id"], new["id"]]})

    assert sorted(catalogue.template(template_id)["stage_ids"]) == sorted([new["id"], contacted["id"]])
    assert catalogue.stage("lead", "NEW")["email_template_ids"] == [template_id]
    assert sorted(summary(events)) == sorted([("catalogue.template.created", template_id, 1),
                                              ("catalogue.stage.updated", new["id"], new["version"] + 1),
                                              ("catalogue.stage.updated", contacted["id"], contacted["version"] + 1)])

    # The stage's side: unlinking there changes the template too.
    new = catalogue.stage("lead", "NEW")
    _id, events = catalogue.change(rules.save_stage, "lead", {"email_template_ids": []}, new)
    assert sorted(summary(events)) == sorted([("catalogue.stage.updated", new["id"], new["version"] + 1),
                                              ("catalogue.template.updated", template_id, 2)])
    assert catalogue.template(template_id)["stage_ids"] == [contacted["id"]]

    # Deleting the template unlinks it from its stages.
    template = catalogue.template(template_id)
    _none, events = catalogue.change(rules.delete_template, template)
    assert summary(events) == [("catalogue.template.deleted", template_id, 3),
                               ("catalogue.stage.updated", contacted["id"], contacted["version"] + 2)]
    assert catalogue.stage("lead", "CONTACTED")["email_template_ids"] == []


def test_a_template_links_only_to_stages_of_the_kind_it_is_visible_at(catalogue):
    won = catalogue.stage("opportunity", "WON")
    with pytest.raises(errors.InvalidFields) as refused:
        catalogue.change(rules.save_template, {"kind": "document", "name": "Offer", "body": "{% if %}",
                                               "visible_at": "lead_stage", "stage_ids": [won["id"]]})
    assert [(e["field"], e.get("line")) for e in refused.value.errors] == [("body", 1), ("stage_ids", None)]
    assert refused.value.errors[1]["message"] == f"Not lead stages: {won['id']}."

    # A stage may list only email and document templates visible at its kind's stages.
    with pytest.raises(errors.InvalidFields, match="email_template_ids: Not email templates visible at lead stages"):
        catalogue.change(rules.save_stage, "lead", {"email_template_ids": ["no-such-template"]},
                         catalogue.stage("lead", "NEW"))


def test_moving_a_linked_template_elsewhere_needs_its_stage_ids_in_the_same_change(catalogue):
    qualified = catalogue.stage("lead", "QUALIFIED")
    template_id, _events = catalogue.change(rules.save_template, {
        "kind": "email", "name": "Nudge", "visible_at": "lead_stage", "stage_ids": [qualified["id"]]})
    template, qualified = catalogue.template(template_id), catalogue.stage("lead", "QUALIFIED")

    with pytest.raises(errors.LinksStranded) as stranded:
        catalogue.change(rules.save_template, {"visible_at": "opportunity_stage"}, template)
    assert stranded.value.extra == {"stage_ids": [qualified["id"]]}
    assert stranded.value.detail == ("This template is linked to 1 stage(s) that are not opportunity stages; "
                                     "set stage_ids (or unlink them) in the same request.")

    won = catalogue.stage("opportunity", "WON")
    _id, events = catalogue.change(rules.save_template, {"visible_at": "opportunity_stage",
                                                         "stage_ids": [won["id"]]}, template)
    assert sorted(summary(events)) == sorted([("catalogue.template.updated", template_id, 2),
                                              ("catalogue.stage.updated", qualified["id"], qualified["version"] + 1),
                                              ("catalogue.stage.updated", won["id"], won["version"] + 1)])
    assert catalogue.stage("lead", "QUALIFIED")["email_template_ids"] == []
    assert catalogue.stage("opportunity", "WON")["email_template_ids"] == [template_id]
