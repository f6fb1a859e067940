"""The link rules, judged by the domain functions alone: one MAIN contact (the record's own
contact_id), one signing authority, a job order on one record of each kind, and who may see what."""

from __future__ import annotations

import pytest
from linking_world import World, person
from sqlalchemy import select

from crm_kafka.outbox import OUTBOX
from crm_kafka.unit_of_work import UnitOfWork
from crm_kit.errors import ChangedMeanwhile, Conflict, Forbidden, Invalid, NotFound
from crm_kit.web.problem import problem_of
from crm_linking import links
from crm_linking.access import load_record, require_record_edit
from crm_linking.errors import (
    ConcurrentChange,
    ContactLinkedAlready,
    IsTheMainContact,
    JobOrderLinkedAlready,
    MainIsTheRecords,
    NotLinked,
    RecordEditNeeded,
    SignIsNoRoleChange,
    SignTaken,
    UnknownRecord,
    UnknownReference,
)

CLERK = person()  # may edit files, leads and opportunities of office o1
ADMIN = person("boss", "o9", roles=("admin",))


def test_a_record_has_one_signing_authority(world: World):
    record_id = world.record()
    anna, bob = world.contact("Anna"), world.contact("Bob")
    with world.db.transaction() as s:
        record = load_record(s, "lead", record_id, CLERK)
        assert links.link_contact(s, CLERK, "lead", record, world.role("lead", "SIGN"), contact_id=anna) == (anna, True)
    with world.db.transaction() as s, pytest.raises(SignTaken) as refused:
        links.link_contact(s, CLERK, "lead", load_record(s, "lead", record_id, CLERK), world.role("lead", "SIGN"),
                           contact_id=bob)
    assert refused.value.extra == {"role_code": "SIGN", "contact_id": anna}
    assert "at most one SIGN contact" in refused.value.detail
    assert problem_of(refused.value).status == 409
    assert world.tab("lead", record_id) == {anna: "SIGN"}
    assert [e.event_type for e in world.events()] == ["linking.contact.linked"]


def test_main_is_the_records_own_contact_and_only_confirmed_from_the_tab(world: World):
    main, other = world.contact("Main"), world.contact("Other")
    record_id = world.record(contact_id=main)  # the read model links it as MAIN
    assert world.tab("lead", record_id) == {main: "MAIN"}
    with world.db.transaction() as s:
        record = load_record(s, "lead", record_id, CLERK)
        with pytest.raises(MainIsTheRecords) as refused:
            links.link_contact(s, CLERK, "lead", record, world.role("lead", "MAIN"), contact_id=other)
        assert refused.value.detail == ("The role is MAIN: the main contact is the lead's own contact_id, set on the "
                                        "lead (PATCH /v1/leads/{id}), not from its contact list.")
        # The record's own contact with MAIN: nothing to change, and it says so.
        assert links.link_contact(s, CLERK, "lead", record, world.role("lead", "MAIN"), contact_id=main) == (
            main, False)
        with pytest.raises(IsTheMainContact):
            links.unlink_contact(s, CLERK, "lead", record, main)
    assert world.tab("lead", record_id) == {main: "MAIN"}


def test_a_new_contact_id_moves_main_and_the_old_main_contact_stays_without_a_role(world: World):
    anna, bob = world.contact("Anna"), world.contact("Bob")
    record_id = world.record(contact_id=anna)
    world.feed(world.record_event("lead", record_id, 2, contact_id=bob))
    assert world.tab("lead", record_id) == {anna: None, bob: "MAIN"}
    world.feed(world.record_event("lead", record_id, 3))  # contact_id cleared
    assert world.tab("lead", record_id) == {anna: None, bob: None}
    assert [(e.event_type, e.linking_change.data["contact_id"], e.linking_change.data["role_id"] or None)
            for e in world.events()] == [("linking.contact.linked", anna, world.role("lead", "MAIN")),
                                         ("linking.contact.role_changed", anna, None),
                                         ("linking.contact.linked", bob, world.role("lead", "MAIN")),
                                         ("linking.contact.role_changed", bob, None)]


def test_a_role_change_never_moves_a_link_to_or_from_main_or_sign(world: World):
    main, signer, anna, carl = (world.contact(n) for n in ("Main", "Signer", "Anna", "Carl"))
    record_id = world.record(contact_id=main)
    with world.db.transaction() as s:
        record = load_record(s, "lead", record_id, CLERK)
        links.link_contact(s, CLERK, "lead", record, world.role("lead", "SIGN"), contact_id=signer)
        links.link_contact(s, CLERK, "lead", record, world.role("lead", "OTHER"), contact_id=anna)
    refusals = [
        (anna, "SIGN", SignIsNoRoleChange, "The new role is SIGN"),
        (signer, "OTHER", SignIsNoRoleChange, "The current role is SIGN"),
        (anna, "MAIN", MainIsTheRecords, "The new role is MAIN"),
        (main, "OTHER", MainIsTheRecords, "The current role is MAIN"),
    ]
    for contact_id, code, error, start in refusals:
        with world.db.transaction() as s, pytest.raises(error) as refused:
            links.set_contact_role(s, CLERK, "lead", load_record(s, "lead", record_id, CLERK), contact_id,
                                   world.role("lead", code))
        assert refused.value.detail.startswith(start) and isinstance(refused.value, Conflict)
    with world.db.transaction() as s:
        record = load_record(s, "lead", record_id, CLERK)
        with pytest.raises(NotLinked):
            links.set_contact_role(s, CLERK, "lead", record, carl, world.role("lead", "EXTRA"))
        with pytest.raises(Invalid) as unknown:  # the other kind's role
            links.set_contact_role(s, CLERK, "lead", record, anna, world.role("opportunity", "EXTRA"))
        assert unknown.value.errors[0]["field"] == "role_id"
        links.set_contact_role(s, CLERK, "lead", record, anna, world.role("lead", "EXTRA"))
        with pytest.raises(ContactLinkedAlready):
            links.link_contact(s, CLERK, "lead", record, world.role("lead", "OTHER"), contact_id=anna)
    assert world.tab("lead", record_id) == {main: "MAIN", signer: "SIGN", anna: "EXTRA"}


def test_a_job_order_links_to_one_record_of_each_kind(world: World):
    welder = world.job_order()
    first, second, elsewhere = world.record(), world.record(), world.record(office="o2")
    opportunity = world.record("opportunity")
    with world.db.transaction() as s:
        assert links.link_job_order(s, CLERK, "lead", load_record(s, "lead", first, CLERK),
                                    job_order_id=welder) == welder
        # one opportunity as well: one record of each kind
        links.link_job_order(s, CLERK, "opportunity", load_record(s, "opportunity", opportunity, CLERK),
                             job_order_id=welder)
    with world.db.transaction() as s:
        with pytest.raises(JobOrderLinkedAlready) as again:
            links.link_job_order(s, CLERK, "lead", load_record(s, "lead", first, CLERK), job_order_id=welder)
        assert again.value.detail == f"Job order {welder!r} is already linked to this lead."
        with pytest.raises(JobOrderLinkedAlready) as taken:
            links.link_job_order(s, CLERK, "lead", load_record(s, "lead", second, CLERK), job_order_id=welder)
        assert taken.value.extra == {"linked_record_kind": "lead", "linked_record_id": first}
        with pytest.raises(UnknownReference) as unknown:
            links.link_job_order(s, CLERK, "lead", load_record(s, "lead", second, CLERK), job_order_id="nope")
        assert unknown.value.errors == [{"field": "job_order_id", "message": "There is no job order with id 'nope'."}]
    fitter = world.job_order("Fitter")
    with world.db.transaction() as s:
        links.link_job_order(s, ADMIN, "lead", load_record(s, "lead", elsewhere, ADMIN), job_order_id=fitter)
    with world.db.transaction() as s, pytest.raises(JobOrderLinkedAlready) as hidden:
        links.link_job_order(s, CLERK, "lead", load_record(s, "lead", first, CLERK), job_order_id=fitter)
    assert hidden.value.extra == {"linked_record_kind": "lead"}  # another office's lead is not named
    assert "(one you cannot see)" in hidden.value.detail
    with world.db.transaction() as s:
        record = load_record(s, "lead", first, CLERK)
        links.unlink_job_order(s, CLERK, "lead", record, welder)
        with pytest.raises(NotLinked):
            links.unlink_job_order(s, CLERK, "lead", record, welder)


def test_another_offices_records_are_not_found_and_linking_needs_the_records_edit(world: World):
    elsewhere = world.record(office="o2")
    with world.db.transaction() as s:
        with pytest.raises(UnknownRecord) as refused:
            load_record(s, "lead", elsewhere, CLERK)
        assert isinstance(refused.value, NotFound) and problem_of(refused.value).status == 404
        assert refused.value.detail == f"No lead with id {elsewhere!r} (or not visible to you)."
        assert load_record(s, "lead", elsewhere, ADMIN).office_id == "o2"  # admin sees every office
        with pytest.raises(UnknownRecord):
            load_record(s, "opportunity", elsewhere, ADMIN)  # the id of a lead is no opportunity
    with pytest.raises(RecordEditNeeded) as forbidden:
        require_record_edit(person(roles=("account_manager",)), "lead")
    assert isinstance(forbidden.value, Forbidden)
    assert forbidden.value.detail == "Linking to a lead needs the permission 'leads:edit'."


def test_a_links_events_wait_for_the_commit(world: World):
    record_id, anna = world.record(), world.contact()
    with world.db.transaction() as s:
        links.link_contact(s, CLERK, "lead", load_record(s, "lead", record_id, CLERK), world.role("lead", "OTHER"),
                           contact_id=anna)
        pending = UnitOfWork.of(s).pending
        assert [(topic, e.event_type, e.aggregate_id) for topic, e, _ in pending] == [
            ("crm.linking.v1", "linking.contact.linked", f"{anna}:{record_id}")]
        assert s.execute(select(OUTBOX.c.id)).first() is None  # nothing in the outbox before the commit
    assert [e.linking_change.record_id for e in world.events()] == [record_id]
    assert world.events()[0].actor.user_id == "u1"
    # A transaction that fails writes neither the link nor its event.
    bob = world.contact("Bob")
    with pytest.raises(RuntimeError), world.db.transaction() as s:
        links.link_contact(s, CLERK, "lead", load_record(s, "lead", record_id, CLERK), world.role("lead", "OTHER"),
                           contact_id=bob)
        raise RuntimeError("the request failed after the link")
    assert len(world.events()) == 1 and bob not in world.tab("lead", record_id)


def test_a_concurrent_main_contact_is_a_change_meanwhile_for_the_consumer(world: World):
    anna = world.contact()
    record_id = world.record()
    assert issubclass(ConcurrentChange, ChangedMeanwhile)  # the consumer retries it
    with world.db.transaction() as s:
        assert links.sync_main_contact(s, "lead", record_id, anna, by="u1") is True
        assert links.sync_main_contact(s, "lead", record_id, anna, by="u1") is False  # agrees already
