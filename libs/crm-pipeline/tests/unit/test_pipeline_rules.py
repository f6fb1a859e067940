"""The pipeline's rules, fast: creating a record, moving it through the stages, triggers' commands
and converting a lead, each refusal with its domain error and the problem+json it becomes, and the
events each change leaves in the unit of work (written at commit, never before, never after a
rollback). SQLite, no Kafka, no HTTP."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
from pipeline_world import ACTOR, ALICE, Pipeline, pending
from sqlalchemy import func, select

from crm.events.v1.records_pb2 import PipelineRecord, RecordCommand
from crm_catalogue_view import CatalogueReferenceError
from crm_events.envelope import new_envelope, record_state
from crm_kafka.outbox import OUTBOX
from crm_kit.errors import ChangedMeanwhile, DomainError
from crm_kit.web.problem import problem_of
from crm_pipeline import errors
from crm_pipeline.commands import command_handler
from crm_pipeline.conversion import conversion_handler, convert
from crm_pipeline.queries import load_visible
from crm_pipeline.records import Records
from crm_pipeline.references import opportunity_handler


def answer(exc: DomainError) -> dict[str, Any]:
    """What a client gets for the refusal (the web edge's one mapping)."""
    return problem_of(exc).to_dict()


def create(world: Pipeline, **data: Any) -> Any:
    with world.db.transaction() as s:
        return world.records.create(s, {"title": "Acme", **data}, ACTOR)


def change(world: Pipeline, row: Any, **changes: Any) -> Any:
    with world.db.transaction() as s:
        return world.records.update(s, row, changes, ACTOR)


def refused(world: Pipeline, do: Any) -> DomainError:
    """The refusal of ``do(session)``, which must leave nothing behind (no event, no row changed)."""
    before = world.published()
    with pytest.raises(DomainError) as caught, world.db.transaction() as s:
        do(s)
    assert world.published() == before
    return caught.value


# -- creating ---------------------------------------------------------------------------------------


def test_a_new_lead_starts_in_the_default_stage_and_its_event_is_written_when_the_change_commits(leads):
    with leads.db.transaction() as s:
        row = leads.records.create(s, {"title": "Acme", "source_id": leads.ids["web"]}, ACTOR)
        assert pending(s) == ["lead.created"]
        assert s.execute(select(func.count()).select_from(OUTBOX)).scalar_one() == 0  # not before the commit
    assert (row.stage_id, row.stage_group_id, row.version, row.owner_id, row.office_id) == \
        (leads.ids["new"], leads.ids["open"], 1, "alice", "o1")
    [event] = leads.published()
    assert event.event_type == "lead.created" and event.aggregate_id == row.id
    assert event.actor.user_id == "alice" and event.actor.kind == "user"
    assert (record_state(event).title, record_state(event).stage_id) == ("Acme", leads.ids["new"])
    assert leads.history(row.id) == [(None, leads.ids["new"], "user")]


def test_a_rolled_back_change_writes_no_event(leads):
    with leads.db.sessions() as s:
        s.begin()
        leads.records.create(s, {"title": "Acme"}, ACTOR)
        assert pending(s) == ["lead.created"]
        s.rollback()
    assert leads.published() == []


def test_creating_is_refused_without_a_default_stage(bare_leads):
    exc = refused(bare_leads, lambda s: bare_leads.records.create(s, {"title": "Acme"}, ACTOR))
    assert isinstance(exc, errors.NoDefaultStage)
    assert answer(exc) == {
        "type": "https://crm.example/problems/conflict", "title": "Conflict", "status": 409,
        "detail": "No default lead stage is configured: an administrator must mark one lead stage as the default "
                  "before leads can be created."}


def test_references_must_name_usable_entries_and_known_files(leads):
    unknown = str(uuid.uuid4())
    exc = refused(leads, lambda s: leads.records.create(s, {"title": "A", "company_id": unknown}, ACTOR))
    assert isinstance(exc, errors.UnknownFile) and answer(exc)["status"] == 422
    assert exc.errors == [{"field": "company_id", "message": f"There is no company with id {unknown!r}."}]

    exc = refused(leads, lambda s: leads.records.create(s, {"title": "A", "source_id": leads.ids["gone"]}, ACTOR))
    assert isinstance(exc, CatalogueReferenceError) and answer(exc)["status"] == 422
    assert exc.errors == [{"field": "source_id", "message": "The lead source 'GONE' is inactive."}]

    row = create(leads, company_id=leads.ids["company"], group_ids=[leads.ids["vip"]])
    assert row.company_id == leads.ids["company"]


# -- moving through the stages ----------------------------------------------------------------------


def test_a_stage_change_bumps_the_version_once_keeps_the_history_and_says_which_group_it_left(leads):
    row = create(leads)
    moved = change(leads, row, stage_id=leads.ids["next"])
    assert (moved.stage_id, moved.version) == (leads.ids["next"], 2)
    assert leads.types()[1:] == ["lead.stage_changed"]  # the same stage group
    won = change(leads, moved, stage_id=leads.ids["won"], title="Acme (won)")
    assert (won.stage_id, won.stage_group_id, won.version) == (leads.ids["won"], leads.ids["closed"], 3)
    assert leads.types()[2:] == ["lead.updated", "lead.stage_changed", "lead.stage_group_changed"]
    last = leads.published()[-1].stage_changed
    assert (last.from_stage_id, last.to_stage_id, last.from_stage_group_id, last.to_stage_group_id, last.cause) \
        == (leads.ids["next"], leads.ids["won"], leads.ids["open"], leads.ids["closed"], "user")
    assert [h[1] for h in leads.history(row.id)] == [leads.ids["new"], leads.ids["next"], leads.ids["won"]]
    assert change(leads, won, stage_id=leads.ids["won"]).version == 3  # nothing changed: no version, no event
    assert len(leads.published()) == 5


@pytest.mark.parametrize("stage, message", [
    ("unknown", "There is no lead stage with id 'unknown'."),
    ("old", "The lead stage 'OLD' is inactive."),
])
def test_a_stage_that_is_unknown_or_inactive_is_refused(leads, stage, message):
    row = create(leads)
    stage_id = leads.ids.get(stage, stage)
    exc = refused(leads, lambda s: leads.records.update(s, row, {"stage_id": stage_id}, ACTOR))
    assert isinstance(exc, CatalogueReferenceError)
    assert answer(exc)["status"] == 422 and exc.errors == [{"field": "stage_id", "message": message}]
    assert leads.get(row.id).version == 1


def test_a_change_of_a_record_someone_changed_meanwhile_is_refused(leads):
    row = create(leads)
    change(leads, row, title="Theirs")  # ``row`` is now stale
    exc = refused(leads, lambda s: leads.records.update(s, row, {"stage_id": leads.ids["next"]}, ACTOR))
    assert isinstance(exc, ChangedMeanwhile)
    assert answer(exc) == {"type": "https://crm.example/problems/precondition-failed", "title": "Precondition Failed",
                           "status": 412,
                           "detail": "The lead changed while this request was processed; fetch it again and retry."}
    assert (leads.get(row.id).title, leads.history(row.id)) == ("Theirs", [(None, leads.ids["new"], "user")])


def test_groups_a_record_is_not_in_cannot_be_left(leads):
    row = create(leads)
    exc = refused(leads, lambda s: leads.records.remove_group(s, row, leads.ids["vip"], ACTOR))
    assert isinstance(exc, errors.NotInGroup)
    assert (answer(exc)["status"], exc.detail) == (404, f"This lead is not in group {leads.ids['vip']!r}.")


def test_records_of_other_offices_are_not_found(leads):
    row = create(leads)
    stranger = replace(ALICE, office_id="o2")
    with leads.db.transaction() as s:
        with pytest.raises(errors.UnknownRecord) as caught:
            load_visible(s, leads.tables["records"], leads.kind, stranger, row.id)
        assert load_visible(s, leads.tables["records"], leads.kind, replace(stranger, roles=("admin",)), row.id)
    assert answer(caught.value)["detail"] == f"No lead with id {row.id!r} (or not visible to you)."


# -- triggers' commands ---------------------------------------------------------------------------------


def command(record_id: str, action: str = "set_stage", **target: str) -> Any:
    message = RecordCommand(record_id=record_id, kind="lead", action=action, trigger_id="t1", **target)
    return new_envelope(f"lead.command.{action}", "lead", record_id, 0, message, trigger_depth=1)


def test_a_command_moves_the_record_in_the_triggers_name(leads):
    row = create(leads)
    with leads.db.transaction() as s:
        command_handler(leads.records)(s, command(row.id, stage_id=leads.ids["next"]))
    event = leads.published()[-1]
    assert (event.event_type, event.actor.kind, event.trigger_depth) == ("lead.stage_changed", "trigger:t1", 1)
    assert leads.history(row.id)[-1] == (leads.ids["new"], leads.ids["next"], "trigger:t1")


def test_a_command_a_rule_refuses_is_dropped_and_leaves_nothing_behind(leads):
    row = create(leads)
    with leads.db.transaction() as s:  # no exception: retrying cannot help
        command_handler(leads.records)(s, command(row.id, stage_id=leads.ids["old"]))
        command_handler(leads.records)(s, command(row.id, "remove_from_group", group_id=leads.ids["vip"]))
        assert pending(s) == []
    assert leads.get(row.id).version == 1 and leads.types() == ["lead.created"]


def test_a_command_that_finds_the_record_changed_meanwhile_is_raised_to_be_retried(leads):
    row = create(leads)
    change(leads, row, title="Theirs")

    class ReadBeforeTheUsersWrite(Records):
        def get(self, session: Any, record_id: str) -> Any:
            return row

    with pytest.raises(ChangedMeanwhile), leads.db.transaction() as s:
        command_handler(ReadBeforeTheUsersWrite(leads.kind, leads.tables))(s, command(row.id,
                                                                                      stage_id=leads.ids["next"]))
    assert leads.get(row.id).stage_id == leads.ids["new"]


# -- converting a lead ------------------------------------------------------------------------------


def converted(leads: Pipeline, **data: Any) -> tuple[Any, str]:
    lead = create(leads)
    with leads.db.transaction() as s:
        return convert(leads.records, s, lead, data, ACTOR, identity=ALICE, views=leads.views)


def test_a_converted_lead_moves_to_the_default_end_stage_and_carries_its_new_opportunity(leads):
    lead, opportunity_id = converted(leads, title="Acme deal")
    assert (lead.stage_id, lead.converted_opportunity_id) == (leads.ids["won"], opportunity_id)
    event = leads.published()[-1]
    assert (event.event_type, event.actor.kind) == ("lead.converted", "system")
    draft = event.lead_converted.opportunity
    assert (draft.id, draft.lead_id, draft.title, draft.stage_id) == \
        (opportunity_id, lead.id, "Acme deal", leads.ids["start"])
    assert leads.history(lead.id)[-1] == (leads.ids["new"], leads.ids["won"], "conversion")


def test_a_converted_lead_stays_in_end_stages_and_is_not_converted_twice(leads):
    lead, opportunity_id = converted(leads)
    exc = refused(leads, lambda s: leads.records.update(s, lead, {"stage_id": leads.ids["next"]}, ACTOR))
    assert isinstance(exc, errors.ConvertedLeadStaysInEndStages)
    assert answer(exc) == {
        "type": "https://crm.example/problems/conflict", "title": "Conflict", "status": 409,
        "detail": f"This lead was converted (to opportunity {opportunity_id}): it stays in end stages, and the "
                  "stage it would move to is not one.", "opportunity_id": opportunity_id}
    assert change(leads, lead, stage_id=leads.ids["lost"]).stage_id == leads.ids["lost"]  # another end stage

    again = leads.get(lead.id)
    exc = refused(leads, lambda s: convert(leads.records, s, again, {}, ACTOR, identity=ALICE, views=leads.views))
    assert isinstance(exc, errors.AlreadyConverted)
    assert answer(exc) == {
        "type": "https://crm.example/problems/conflict", "title": "Conflict", "status": 409,
        "detail": f"This lead was already converted, to opportunity {opportunity_id}.",
        "opportunity_id": opportunity_id}


def test_a_lead_is_not_converted_without_a_default_end_stage(bare_leads):
    bare_leads.put("stage", "NEW", is_default=True)
    lead = create(bare_leads)
    exc = refused(bare_leads, lambda s: convert(bare_leads.records, s, lead, {}, ACTOR))
    assert isinstance(exc, errors.NoDefaultEndStage) and answer(exc)["status"] == 409


def opportunity_seen(leads: Pipeline, office_id: str = "o1", lead_id: str = "") -> str:
    """An opportunity as the leads service learns of it (``crm.opportunities.v1``)."""
    record = PipelineRecord(id=str(uuid.uuid4()), kind="opportunity", office_id=office_id, lead_id=lead_id,
                            version=1, title="Deal")
    with leads.db.transaction() as s:
        opportunity_handler(leads.views)(s, new_envelope("opportunity.created", "opportunity", record.id, 1, record))
    return record.id


def test_converting_into_an_existing_opportunity_needs_one_the_caller_may_edit_and_that_has_no_lead(leads):
    lead = create(leads)
    theirs, taken = opportunity_seen(leads, office_id="o2"), opportunity_seen(leads, lead_id="lead-1")
    cases = [
        (replace(ALICE, permissions=frozenset()), theirs, errors.MissingPermission, 403,
         "Converting into an existing opportunity needs the permission 'opportunities:edit'."),
        (ALICE, theirs, errors.UnknownOpportunity, 404, f"No opportunity with id {theirs!r} (or not visible to you)."),
        (ALICE, taken, errors.OpportunityHasLead, 409,
         f"Opportunity {taken} has a lead already (lead-1): a lead converts into an opportunity that has none."),
    ]
    for identity, opportunity_id, error, status, detail in cases:
        exc = refused(leads, lambda s, i=identity, o=opportunity_id: convert(  # type: ignore[misc]
            leads.records, s, lead, {"opportunity_id": o}, ACTOR, identity=i, views=leads.views))
        assert isinstance(exc, error) and (answer(exc)["status"], exc.detail) == (status, detail)
    assert answer(exc)["lead_id"] == "lead-1"

    free = opportunity_seen(leads)
    with leads.db.transaction() as s:
        moved, opportunity_id = convert(leads.records, s, lead, {"opportunity_id": free}, ACTOR, identity=ALICE,
                                        views=leads.views)
    assert (opportunity_id, moved.converted_opportunity_id) == (free, free)


def test_the_opportunities_service_makes_a_converted_leads_opportunity_once(leads, opportunities):
    lead, opportunity_id = converted(leads, title="Acme deal")
    event = leads.published()[-1]
    for _ in range(2):  # a redelivery finds it done
        with opportunities.db.transaction() as s:
            conversion_handler(opportunities.records)(s, event)
    made = opportunities.get(opportunity_id)
    assert (made.lead_id, made.title, made.created_by) == (lead.id, "Acme deal", "alice")
    assert opportunities.types() == ["opportunity.created"]
