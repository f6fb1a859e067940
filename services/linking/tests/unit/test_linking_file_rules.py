"""The file rules, judged by the domain functions alone: nothing is left pointing at a deleted
file, another office's records are not changed behind their backs, fields are checked all at
once, versions clash, and a bulk create makes each item once."""

from __future__ import annotations

import pytest
from linking_world import World, person
from sqlalchemy import select

from crm_kit.errors import ChangedMeanwhile, Conflict
from crm_kit.web.problem import problem_of
from crm_linking import files
from crm_linking.access import load_record
from crm_linking.errors import FileInUse, InvalidFileFields, OnHiddenRecord, RecordEditNeeded, UnknownFile
from crm_linking.links import link_contact
from crm_linking.tables import contacts, import_keys

CLERK = person()
ADMIN = person("boss", "o9", roles=("admin",))


def _file(world: World, spec: files.FileSpec, file_id: str) -> files.View:
    with world.db.transaction() as s:
        return files.load_file(s, spec, file_id)


def test_a_company_or_contact_a_record_uses_is_not_deleted(world: World):
    acme, main = world.company(), world.contact("Main")
    world.record(company_id=acme, contact_id=main)
    for spec, file_id, used in ((files.COMPANIES, acme, "a lead or opportunity has it as its company (company_id)"),
                                (files.CONTACTS, main, "a lead or opportunity has it as its contact (contact_id)")):
        with world.db.transaction() as s, pytest.raises(FileInUse) as refused:
            files.delete_file(s, ADMIN, spec, files.load_file(s, spec, file_id))
        assert refused.value.extra == {"reason": "in_use"} and used in refused.value.detail
        assert problem_of(refused.value).status == 409
    on_tab = world.contact("Tab")
    record_id = world.record()
    with world.db.transaction() as s:
        link_contact(s, CLERK, "lead", load_record(s, "lead", record_id, CLERK), world.role("lead", "OTHER"),
                     contact_id=on_tab)
    with world.db.transaction() as s, pytest.raises(FileInUse, match="it is on the contacts tab"):
        files.delete_file(s, ADMIN, files.CONTACTS, files.load_file(s, files.CONTACTS, on_tab))
    # An unused contact goes, with its deleted event carrying its last state.
    gone = world.contact("Gone")
    with world.db.transaction() as s:
        files.delete_file(s, CLERK, files.CONTACTS, files.load_file(s, files.CONTACTS, gone))
    last = world.events()[-1]
    assert (last.event_type, last.aggregate_version, last.linking_change.deleted) == ("linking.contact.deleted", 2,
                                                                                      True)
    assert last.linking_change.data["first_name"] == "Gone"
    with world.db.transaction() as s, pytest.raises(UnknownFile):
        files.load_file(s, files.CONTACTS, gone)


def test_a_file_another_offices_record_shows_is_changed_only_by_those_who_see_it(world: World):
    hidden = world.contact("Hidden")
    elsewhere = world.record(office="o2")
    with world.db.transaction() as s:
        link_contact(s, ADMIN, "lead", load_record(s, "lead", elsewhere, ADMIN), world.role("lead", "OTHER"),
                     contact_id=hidden)
    with world.db.transaction() as s, pytest.raises(OnHiddenRecord) as refused:
        files.update_file(s, CLERK, files.CONTACTS, files.load_file(s, files.CONTACTS, hidden), {"phone": "1"})
    assert refused.value.extra == {"reason": "hidden_record"}
    assert refused.value.detail.startswith("Refused: it is on a lead or opportunity you cannot see")
    with world.db.transaction() as s:
        files.update_file(s, ADMIN, files.CONTACTS, files.load_file(s, files.CONTACTS, hidden), {"phone": "1"})
    assert _file(world, files.CONTACTS, hidden)["phone"] == "1"


def test_every_bad_field_is_named_at_once(world: World):
    with world.db.transaction() as s, pytest.raises(InvalidFileFields) as refused:
        files.create_file(s, CLERK, files.PLACEMENTS, {"job_order_id": "nope", "candidate_name": "Carla",
                                                       "start_date": "2026-03-01", "end_date": "2026-02-01"})
    assert refused.value.errors == [{"field": "job_order_id", "message": "There is no job order with id 'nope'."},
                                    {"field": "end_date", "message": "Must not be before start_date."}]
    assert refused.value.detail == "job_order_id: There is no job order with id 'nope'."
    assert problem_of(refused.value).status == 422


def test_an_activity_goes_only_on_records_the_caller_may_see_and_edit(world: World):
    mine, elsewhere = world.record(), world.record(office="o2")
    with world.db.transaction() as s, pytest.raises(InvalidFileFields) as refused:
        files.create_file(s, CLERK, files.ACTIVITIES, {"type": "task", "subject": "Call", "lead_id": elsewhere})
    assert refused.value.errors == [{"field": "lead_id", "message": f"There is no lead with id {elsewhere!r} "
                                                                    "(or it is not visible to you)."}]
    with world.db.transaction() as s, pytest.raises(RecordEditNeeded):
        files.create_file(s, person(roles=("account_manager",)), files.ACTIVITIES,
                          {"type": "task", "subject": "Call", "lead_id": mine})
    with world.db.transaction() as s:
        activity = files.create_file(s, CLERK, files.ACTIVITIES, {"type": "task", "subject": "Call", "lead_id": mine})
    assert activity["office_id"] == "o1"
    with world.db.transaction() as s, pytest.raises(UnknownFile, match=r"\(or not visible to you\)"):
        files.load_file(s, files.ACTIVITIES, activity["id"], person("u7", "o2"))


def test_a_write_over_a_newer_version_is_a_change_meanwhile(world: World):
    anna = world.contact()
    stale = _file(world, files.CONTACTS, anna)
    with world.db.transaction() as s:
        files.update_file(s, CLERK, files.CONTACTS, stale, {"phone": "1"})
    with world.db.transaction() as s, pytest.raises(ChangedMeanwhile) as clash:
        files.update_file(s, CLERK, files.CONTACTS, stale, {"phone": "2"})
    assert not isinstance(clash.value, Conflict) and problem_of(clash.value).status == 412
    assert clash.value.detail == "The contact changed while this request was processed; fetch it again and retry."


def test_a_bulk_create_makes_each_key_once_and_a_refused_item_leaves_nothing(world: World):
    _, item = files.schemas.bulk_create_schemas(files.CONTACTS.body, "contacts", "/v1/contacts")
    items = [{"first_name": "Ada", "last_name": "L", "key": "k1"},
             {"first_name": "", "last_name": "L", "key": "k2"},
             {"first_name": "Bo", "last_name": "L", "company_id": "nope", "key": "k3"},
             {"first_name": "Ada", "last_name": "L", "key": "k1"}]
    with world.db.transaction() as s:
        results = files.bulk_create(s, CLERK, files.CONTACTS, item(), items)
    assert [r["status"] for r in results] == ["created", "error", "error", "exists"]
    assert results[3]["id"] == results[0]["id"]
    assert results[2]["errors"] == [{"field": "company_id", "message": "There is no company with id 'nope'."}]
    assert [e.event_type for e in world.events()] == ["linking.contact.created"]
    with world.db.transaction() as s:
        again = files.bulk_create(s, person("u2", "o1"), files.CONTACTS, item(), items[:1])
        assert s.execute(select(contacts.c.id)).scalars().all() == [results[0]["id"]]
        assert s.execute(select(import_keys.c.key)).scalars().all() == ["k1"]
    assert again == [{"index": 0, "status": "exists", "id": results[0]["id"], "error": None}]  # the office's key
