"""What a trigger may say (its catalogue ids, lead_id only on opportunities) and the loops that
saved triggers would form, judged by the rules alone."""

from __future__ import annotations

import pytest

from crm_catalogue_view import CatalogueView
from crm_kit.web.problem import problem_of
from crm_triggers import rules
from crm_triggers.dryrun import dry_run_of
from crm_triggers.engine import record_event_handler
from crm_triggers.errors import KindCannotChange, UnknownRecord, UnknownTrigger, UnusableReferences
from crm_triggers.tables import catalogue_view

VIEW = CatalogueView(catalogue_view)


def definition(event, *actions, **conditions):
    return {"event": event, "conditions": conditions, "actions": list(actions)}


def test_a_trigger_naming_active_entries_of_its_kind_is_accepted(world):
    ids = world.ids
    with world.db.transaction() as s:
        rules.validate_definition(s, VIEW, "lead", definition(
            {"type": "stage_changed", "stage_id": ids["next"]}, {"type": "add_to_group", "group_id": ids["vip"]},
            source_id=ids["web"], owner_id="anyone"))


def test_every_unusable_id_is_refused_naming_its_field(world):
    ids = world.ids
    opportunity_stage = world.put("stage", "O-NEW", kind="opportunity", stage_group_id=ids["open"])
    with world.db.transaction() as s, pytest.raises(UnusableReferences) as refused:
        rules.validate_definition(s, VIEW, "lead", definition(
            {"type": "stage_changed", "stage_id": ids["old"]},  # inactive
            {"type": "add_to_group", "group_id": ids["vip"]},
            {"type": "set_stage", "stage_id": opportunity_stage},  # the other kind's
            {"type": "remove_from_group", "group_id": "no-such-group"},
            source_id=ids["web"], lead_id="l1"))
    fields = [e["field"] for e in refused.value.errors]
    assert fields == ["event.stage_id", "conditions.lead_id", "actions.1.stage_id", "actions.2.group_id"]
    assert "Only opportunities have a lead_id." in [e["message"] for e in refused.value.errors]
    assert refused.value.detail == "; ".join(e["message"] for e in refused.value.errors)
    problem = problem_of(refused.value)  # what the client gets: a 422 listing the same fields
    assert (problem.status, problem.errors) == (422, refused.value.errors)


def test_an_opportunity_trigger_may_name_a_lead(world):
    with world.db.transaction() as s:
        rules.validate_definition(s, VIEW, "opportunity", definition({"type": "created"}, lead_id="l1"))


def test_the_other_refusals_keep_their_words_and_statuses():
    changed = KindCannotChange()
    assert (problem_of(changed).status, changed.detail, changed.errors) == (
        422, "A trigger's kind cannot change; create a new trigger instead.",
        [{"field": "kind", "message": "Cannot change."}])
    missing = UnknownRecord("lead", "r9")
    assert (problem_of(missing).status, missing.detail, missing.errors) == (
        422, "There is no lead 'r9'.", [{"field": "record_id", "message": "There is no lead 'r9'."}])
    assert problem_of(UnknownTrigger("No trigger with id 'x'.")).status == 404


def test_triggers_that_call_each_other_are_reported_as_a_loop(world):
    ids = world.ids
    to_next = world.trigger({"type": "stage_changed", "stage_id": ids["won"]},
                            {"type": "set_stage", "stage_id": ids["next"]}, name="Reopen")
    to_won = world.trigger({"type": "stage_changed", "stage_id": ids["next"]},
                           {"type": "set_stage", "stage_id": ids["won"]}, name="Close")
    world.trigger({"type": "stage_group_changed", "stage_group_id": ids["closed"]},
                  {"type": "add_to_group", "group_id": ids["vip"]}, name="Tag closed")
    with world.db.transaction() as s:
        [warning] = rules.loop_warnings(s, VIEW, "lead", to_next)
        assert warning.startswith("These triggers call each other in a loop: 'Reopen' -> 'Close' -> 'Reopen';")
        assert "stops at depth 5" in warning
        assert len(rules.loop_warnings(s, VIEW, "lead", to_won)) == 1
        # An unsaved, inactive change of "Close" breaks the loop; a harmless one keeps none.
        harmless = rules.Rule(to_won, "Close", {"type": "stage_changed", "stage_id": ids["next"]},
                              [{"type": "add_to_group", "group_id": ids["vip"]}])
        assert rules.loop_warnings(s, VIEW, "lead", to_next, harmless) == []


def test_a_trigger_that_moves_the_record_away_and_back_calls_itself(world):
    ids = world.ids
    bounce = world.trigger({"type": "added_to_group", "group_id": ids["vip"]},
                           {"type": "remove_from_group", "group_id": ids["vip"]},
                           {"type": "add_to_group", "group_id": ids["vip"]}, name="Bounce")
    again = world.trigger({"type": "added_to_group", "group_id": ids["vip"]},
                          {"type": "add_to_group", "group_id": ids["vip"]}, name="Again")
    with world.db.transaction() as s:
        assert rules.loop_warnings(s, VIEW, "lead", bounce)[0].startswith(
            "These triggers call each other in a loop: 'Bounce' -> 'Bounce';")
        # Re-adding the group it was just added to changes nothing: no loop of its own.
        assert all("'Again' -> 'Again'" not in w for w in rules.loop_warnings(s, VIEW, "lead", again))


def test_a_dry_run_names_an_unknown_trigger_or_record(world):
    t = world.trigger({"type": "created"}, {"type": "add_to_group", "group_id": world.ids["vip"]})
    rec = world.record("new", 1)
    with world.db.transaction() as s:
        record_event_handler(s, world.event("created", rec))
    with world.db.transaction() as s:
        with pytest.raises(UnknownTrigger, match="There is no trigger 'nope'."):
            dry_run_of(s, "nope", rec.id)
        assert dry_run_of(s, t, rec.id)["would_fire"] is True
        record_event_handler(s, world.deleted(rec.id, 2))
        with pytest.raises(UnknownRecord, match="There is no lead"):
            dry_run_of(s, t, rec.id)  # deleted records are not there any more
