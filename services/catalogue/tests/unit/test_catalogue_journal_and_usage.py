"""One event per entity a change touched, with its final state; a stale read is refused; and the
stage usage read model (the newest version of each record) keeps stages records are in."""

from __future__ import annotations

import uuid

import pytest
from catalogue_world import record_event, summary

from crm_catalogue import rules
from crm_catalogue.errors import ChangedMeanwhile, StageInUse
from crm_catalogue.journal import Journal
from crm_catalogue.usage import records_in_stage
from crm_catalogue.views import STAGE
from crm_kit.errors import ChangedMeanwhile as KitChangedMeanwhile


def test_an_entity_touched_twice_in_one_change_gets_one_new_version_and_one_event(catalogue):
    def create_then_change(session, journal: Journal) -> str:
        stage_id = rules.save_stage(session, journal, "lead", {"names": {"en": "Call"}, "code": "CALL"})
        current = STAGE.load(session, stage_id)  # the second save sees the stage as it is now
        rules.save_stage(session, journal, "lead", {"color": "#123456", "is_default": True}, current)
        return stage_id

    old_default = catalogue.stage("lead", "NEW")
    stage_id, events = catalogue.change(create_then_change)
    assert summary(events) == [("catalogue.stage.created", stage_id, 1),
                               ("catalogue.stage.updated", old_default["id"], old_default["version"] + 1)]
    created = events[0][1].catalogue_entry
    assert created.attributes["color"] == "#123456" and created.attributes["is_default"] is True  # final state
    assert catalogue.stage_by_id(stage_id)["version"] == 1


def test_a_change_based_on_a_stale_read_is_refused_and_writes_nothing(catalogue):
    stale = catalogue.stage("lead", "QUALIFIED")
    catalogue.change(rules.save_stage, "lead", {"color": "#000000"}, stale)  # somebody else, meanwhile
    before = catalogue.outbox_size()

    with pytest.raises(ChangedMeanwhile) as clash:
        catalogue.change(rules.save_stage, "lead", {"remarks": "mine"}, stale)
    assert isinstance(clash.value, KitChangedMeanwhile)  # the kit's: retry, not refuse
    assert clash.value.detail == "The stage changed while this request was processed; fetch it again and retry."
    now = catalogue.stage("lead", "QUALIFIED")
    assert (now["color"], now["remarks"], now["version"]) == ("#000000", stale["remarks"], stale["version"] + 1)
    assert catalogue.outbox_size() == before


def test_a_stage_records_are_in_cannot_be_deleted_until_they_leave(catalogue):
    busy, elsewhere = catalogue.stage("lead", "CONTACTED"), catalogue.stage("lead", "QUALIFIED")
    lead_a, lead_b = str(uuid.uuid4()), str(uuid.uuid4())
    catalogue.record_event(record_event("lead", lead_a, 1, busy["id"]))
    catalogue.record_event(record_event("lead", lead_b, 1, busy["id"]))

    with pytest.raises(StageInUse) as in_use:
        catalogue.change(rules.delete_stage, busy)
    assert in_use.value.detail == "2 leads are in this stage, so it cannot be deleted; deactivate it instead."
    assert in_use.value.extra == {"records": 2}

    catalogue.record_event(record_event("lead", lead_a, 2, deleted=True))  # a deleted record is forgotten
    catalogue.record_event(record_event("lead", lead_b, 3, elsewhere["id"]))  # moved on
    catalogue.record_event(record_event("lead", lead_b, 2, busy["id"]))  # late and older: changes nothing
    with catalogue.db.transaction() as session:
        assert records_in_stage(session, busy["id"]) == 0
        assert records_in_stage(session, elsewhere["id"]) == 1

    _none, events = catalogue.change(rules.delete_stage, busy)
    assert summary(events) == [("catalogue.stage.deleted", busy["id"], busy["version"] + 1)]
    with pytest.raises(StageInUse, match="^1 lead is in this stage"):
        catalogue.change(rules.delete_stage, elsewhere)


def test_a_record_in_no_stage_uses_none(catalogue):
    stage = catalogue.stage("opportunity", "PROPOSAL")
    record = str(uuid.uuid4())
    catalogue.record_event(record_event("opportunity", record, 1, stage["id"]))
    catalogue.record_event(record_event("opportunity", record, 2, ""))
    with catalogue.db.transaction() as session:
        assert records_in_stage(session, stage["id"]) == 0
