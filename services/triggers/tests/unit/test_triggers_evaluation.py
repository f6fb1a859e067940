"""How record events make triggers fire: conditions, the event itself, the commands a firing
collects in the unit of work, the loop guard, time-based arming and the scheduler, and the
service's view of records (newest version, deletions kept as tombstones)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from crm_events.topics import LEADS_COMMANDS
from crm_kafka.outbox import OUTBOX
from crm_kafka.unit_of_work import UnitOfWork
from crm_kit.db import utcnow
from crm_triggers.engine import command_id, conditions_failing, event_matches, record_event_handler
from crm_triggers.scheduler import tick


def handle(world, envelope):
    with world.db.transaction() as s:
        record_event_handler(s, envelope)


# -- conditions and the event --------------------------------------------------------------------

def test_conditions_hold_only_when_every_one_does():
    state = {"source_id": "web", "owner_id": "u1", "group_ids": ["vip", "hot"]}
    assert conditions_failing({"source_id": "web", "group_id": "hot"}, state) == []
    assert conditions_failing({"owner_id": ["u2", "u1"]}, state) == []  # a list: one of them
    assert conditions_failing({"source_id": "fair", "group_id": "cold", "office_id": "o1"}, state) == [
        "condition source_id='fair': the record has 'web'",
        "condition group_id='cold': the record is not in that group",
        "condition office_id='o1': the record has None",
    ]


def test_a_trigger_matches_the_change_itself_not_a_record_that_is_already_there(world):
    next_, closed, vip = world.ids["next"], world.ids["closed"], world.ids["vip"]
    moved = world.record("next", 2)
    assert event_matches({"type": "stage_changed", "stage_id": next_}, "stage_changed",
                         world.event("stage_changed", moved))
    assert not event_matches({"type": "stage_changed", "stage_id": world.ids["won"]}, "stage_changed",
                             world.event("stage_changed", moved))
    assert not event_matches({"type": "stage_changed", "stage_id": next_}, "updated", world.event("updated", moved))
    closing = world.record("won", 3)
    assert event_matches({"type": "stage_group_changed", "stage_group_id": closed}, "stage_group_changed",
                         world.event("stage_group_changed", closing))
    assert not event_matches({"type": "stage_group_changed", "stage_group_id": closed}, "stage_changed",
                             world.event("stage_changed", closing))
    grouped = world.record("new", 2, groups=("vip",))
    assert event_matches({"type": "added_to_group", "group_id": vip}, "added_to_group",
                         world.event("added_to_group", grouped))
    assert event_matches({"type": "created"}, "created", world.event("created", world.record("new", 1)))
    assert not event_matches({"type": "not_modified_for", "seconds": 5}, "created",
                             world.event("created", world.record("new", 1)))


# -- firing --------------------------------------------------------------------------------------

def test_a_stage_change_fires_once_and_collects_its_commands_in_the_unit_of_work(world):
    vip, won = world.ids["vip"], world.ids["won"]
    t = world.trigger({"type": "stage_changed", "stage_id": world.ids["next"]},
                      {"type": "add_to_group", "group_id": vip}, {"type": "set_stage", "stage_id": won},
                      conditions={"source_id": world.ids["web"]}, name="Promote")
    rec = world.record("new", 1, source="web")
    handle(world, world.event("created", rec))
    moved = world.record("next", 2, record_id=rec.id, source="web")
    change = world.event("stage_changed", moved)
    with world.db.transaction() as s:
        record_event_handler(s, change)
        pending = UnitOfWork.of(s).pending
        assert [(topic, key) for topic, _, key in pending] == [(LEADS_COMMANDS, rec.id)] * 2
        assert s.execute(select(OUTBOX)).first() is None  # nothing in the outbox before the commit
    ids = [command_id(t, rec.id, change.event_id, i) for i in range(2)]
    sent = world.commands()
    assert [(topic, key, c.event_id) for topic, key, c in sent] == [(LEADS_COMMANDS, rec.id, i) for i in ids]
    first, second = (c for _, _, c in sent)
    assert (first.event_type, first.command.action, first.command.group_id, first.command.trigger_id) == (
        "lead.command.add_to_group", "add_to_group", vip, t)
    assert (second.command.action, second.command.stage_id) == ("set_stage", won)
    assert (first.actor.kind, first.actor.user_id, first.actor.name) == (f"trigger:{t}", f"trigger:{t}", "Promote")
    assert (first.trigger_depth, first.causation_id, first.producer) == (1, change.event_id, "triggers")
    [ex] = world.executions(t)
    assert (ex.record_id, ex.event_id, ex.result, ex.trigger_depth) == (rec.id, change.event_id, "applied", 0)
    assert [a["command_id"] for a in ex.actions] == ids
    # The same event again (a redelivery), an edit in that stage, another source: nothing more.
    handle(world, change)
    handle(world, world.event("updated", world.record("next", 3, record_id=rec.id, source="web")))
    other = world.record("next", 1, source="fair")
    handle(world, world.event("stage_changed", other))
    assert len(world.executions(t)) == 1 and len(world.commands()) == 2


def test_a_firing_whose_transaction_rolls_back_sends_nothing_and_its_retry_sends_once(world):
    t = world.trigger({"type": "created"}, {"type": "add_to_group", "group_id": world.ids["vip"]})
    created = world.event("created", world.record("new", 1))
    with pytest.raises(RuntimeError), world.db.transaction() as s:
        record_event_handler(s, created)
        raise RuntimeError("the consumer's transaction failed")
    assert world.executions(t) == [] and world.commands() == []
    handle(world, created)
    assert [e.result for e in world.executions(t)] == ["applied"] and len(world.commands()) == 1


def test_the_loop_guard_stops_a_chain_at_depth_five(world):
    t = world.trigger({"type": "stage_changed", "stage_id": world.ids["next"]},
                      {"type": "add_to_group", "group_id": world.ids["vip"]})
    deep, too_deep = world.record("next", 2), world.record("next", 2)
    handle(world, world.event("stage_changed", deep, actor="trigger:x", depth=4))
    handle(world, world.event("stage_changed", too_deep, actor="trigger:x", depth=5))
    by_record = {e.record_id: e for e in world.executions(t)}
    assert (by_record[deep.id].result, by_record[deep.id].trigger_depth) == ("applied", 4)
    skipped = by_record[too_deep.id]
    assert (skipped.result, skipped.actions) == ("skipped_loop", [])
    assert skipped.reason == "Trigger chain reached depth 5 (the limit is 5); the chain stops here."
    assert [(key, c.trigger_depth) for _, key, c in world.commands()] == [(deep.id, 5)]


def test_an_action_it_cannot_take_is_logged_failed_and_sends_nothing(world):
    gone, vip = world.ids["gone"], world.ids["vip"]
    broken = world.trigger({"type": "created"}, {"type": "add_to_group", "group_id": vip},
                           {"type": "add_to_group", "group_id": gone})
    inactive = world.trigger({"type": "created"}, {"type": "add_to_group", "group_id": vip}, active=False)
    handle(world, world.event("created", world.record("new", 1)))
    [ex] = world.executions(broken)
    assert ex.result == "failed" and ex.reason.startswith("Action 1 (add_to_group): ") and "inactive" in ex.reason
    assert world.executions(inactive) == [] and world.commands() == []


def test_a_converted_lead_is_only_moved_to_end_stages(world):
    vip = world.ids["vip"]
    back = world.trigger({"type": "added_to_group", "group_id": vip}, {"type": "set_stage",
                                                                       "stage_id": world.ids["next"]})
    to_end = world.trigger({"type": "added_to_group", "group_id": vip}, {"type": "set_stage",
                                                                         "stage_id": world.ids["done"]})
    converted = world.record("won", 1, groups=("vip",), converted=True)
    handle(world, world.event("added_to_group", converted))
    [refused] = world.executions(back)
    assert refused.result == "failed" and refused.reason == (
        "Action 0 (set_stage): the lead was converted and stays in end stages; 'NEXT' is not an end stage.")
    assert [e.result for e in world.executions(to_end)] == ["applied"]
    assert [c.command.stage_id for _, _, c in world.commands()] == [world.ids["done"]]


def test_both_events_of_one_stage_change_are_evaluated(world):
    # A move into another stage group is two events of the same record version.
    into_stage = world.trigger({"type": "stage_changed", "stage_id": world.ids["won"]},
                               {"type": "add_to_group", "group_id": world.ids["vip"]})
    into_group = world.trigger({"type": "stage_group_changed", "stage_group_id": world.ids["closed"]},
                               {"type": "add_to_group", "group_id": world.ids["vip"]})
    rec = world.record("new", 1)
    handle(world, world.event("created", rec))
    won = world.record("won", 2, record_id=rec.id)
    handle(world, world.event("stage_changed", won))
    handle(world, world.event("stage_group_changed", won))
    assert [e.result for e in world.executions(into_stage)] == ["applied"]
    assert [e.result for e in world.executions(into_group)] == ["applied"]


# -- the view of records -------------------------------------------------------------------------

def test_the_view_keeps_the_newest_version_and_a_late_older_event_changes_nothing(world):
    t = world.trigger({"type": "stage_changed", "stage_id": world.ids["next"]},
                      {"type": "add_to_group", "group_id": world.ids["vip"]})
    rec = world.record("new", 1, source="web")
    handle(world, world.event("created", rec))
    handle(world, world.event("updated", world.record("won", 3, record_id=rec.id, source="fair")))
    handle(world, world.event("stage_changed", world.record("next", 2, record_id=rec.id)))  # late
    state = world.state(rec.id)
    assert (state.version, state.kind, state.deleted) == (3, "lead", False)
    assert (state.state["stage_id"], state.state["source_id"], state.state["group_ids"]) == (
        world.ids["won"], world.ids["fair"], [])
    assert world.executions(t) == []  # an outdated event fires nothing


def test_a_deleted_record_stays_deleted_and_loses_its_schedule(world):
    timed = world.trigger({"type": "not_modified_for", "seconds": 60},
                          {"type": "add_to_group", "group_id": world.ids["vip"]})
    fires = world.trigger({"type": "stage_changed", "stage_id": world.ids["next"]},
                          {"type": "add_to_group", "group_id": world.ids["vip"]})
    rec = world.record("new", 1)
    handle(world, world.event("created", rec))
    assert world.schedule(timed, rec.id) is not None
    handle(world, world.deleted(rec.id, 2))
    gone = world.state(rec.id)
    assert (gone.deleted, gone.version) == (True, 2)
    assert world.schedule(timed, rec.id) is None
    # A late event of the deleted record does not bring it back, arm or fire anything.
    handle(world, world.event("stage_changed", world.record("next", 3, record_id=rec.id)))
    assert world.state(rec.id).deleted is True and world.state(rec.id).version == 2
    assert world.schedule(timed, rec.id) is None and world.executions(fires) == []
    # A record deleted before it was ever seen is remembered as deleted too.
    handle(world, world.deleted("never-seen", 4))
    unseen = world.state("never-seen")
    assert (unseen.kind, unseen.deleted, unseen.version, unseen.state) == ("lead", True, 4, {})


# -- time-based triggers -------------------------------------------------------------------------

def test_a_time_based_trigger_is_armed_by_each_modification_but_not_by_its_own_actions(world):
    vip = world.ids["vip"]
    timed = world.trigger({"type": "not_modified_for", "seconds": 3600}, {"type": "add_to_group", "group_id": vip})
    asleep = world.trigger({"type": "not_modified_for", "seconds": 60}, {"type": "add_to_group", "group_id": vip},
                           active=False)
    t0 = utcnow() - dt.timedelta(minutes=5)
    rec = world.record("new", 1, modified_at=t0)
    handle(world, world.event("created", rec))
    row = world.schedule(timed, rec.id)
    assert (row.armed_at, row.due_at, row.fired_at) == (t0, t0 + dt.timedelta(hours=1), None)
    assert world.schedule(asleep, rec.id).armed_at == t0  # inactive ones count along
    own = world.record("new", 2, record_id=rec.id, groups=("vip",), modified_at=t0 + dt.timedelta(minutes=1))
    handle(world, world.event("added_to_group", own, actor=f"trigger:{timed}", depth=1))
    assert world.schedule(timed, rec.id).armed_at == t0
    assert world.schedule(asleep, rec.id).armed_at == t0 + dt.timedelta(minutes=1)
    t3 = t0 + dt.timedelta(minutes=2)
    handle(world, world.event("updated", world.record("new", 3, record_id=rec.id, modified_at=t3)))
    assert world.schedule(timed, rec.id).due_at == t3 + dt.timedelta(hours=1)


def test_the_scheduler_fires_a_due_trigger_once_per_modification(world):
    vip = world.ids["vip"]
    timed = world.trigger({"type": "not_modified_for", "seconds": 60}, {"type": "add_to_group", "group_id": vip},
                          conditions={"source_id": world.ids["web"]})
    t0 = utcnow() - dt.timedelta(minutes=5)
    due, not_due, unmet = (world.record("new", 1, source=source, modified_at=at) for source, at in (
        ("web", t0), ("web", utcnow()), ("fair", t0)))
    for rec in (due, not_due, unmet):
        handle(world, world.event("created", rec))
    assert tick(world.db) == 2  # the due one and the one whose conditions no longer hold
    tick(world.db)
    [ex] = world.executions(timed)
    assert (ex.record_id, ex.result, ex.event_id, ex.trigger_depth) == (due.id, "applied", f"time:{t0.isoformat()}", 0)
    [(topic, key, command)] = world.commands()
    assert (topic, key, command.command.group_id, command.trigger_depth, command.causation_id) == (
        LEADS_COMMANDS, due.id, vip, 1, "")
    assert world.schedule(timed, due.id).fired_at is not None
    assert world.schedule(timed, unmet.id).fired_at is not None  # settled without firing
    assert world.schedule(timed, not_due.id).fired_at is None
