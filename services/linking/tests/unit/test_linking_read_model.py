"""Linking's read model of leads and opportunities: the newest state of each record, whatever order
its events come in, a deleted record forgotten, and the record's main contact synced once per
newer version; and the worker that keeps it does not load the web stack."""

from __future__ import annotations

import subprocess
import sys

from linking_world import World, person

from crm_linking import links
from crm_linking.access import load_record


def _title(world: World, record_id: str) -> tuple[str, int] | None:
    with world.db.transaction() as s:
        row = world.view_row(s, "lead", record_id)
        return (row.title, row.version) if row is not None else None


def test_the_newest_version_wins_whatever_the_order(world: World):
    record_id = world.record(title="First")
    world.feed(world.record_event("lead", record_id, 3, title="Third"))
    world.feed(world.record_event("lead", record_id, 2, title="Second"))  # late: changes nothing
    assert _title(world, record_id) == ("Third", 3)
    world.feed(world.deleted_event("lead", record_id, 4))
    assert _title(world, record_id) is None
    other = world.record(office="o2", title="Elsewhere")
    assert _title(world, other) == ("Elsewhere", 1)


def test_the_main_contact_is_synced_only_by_a_strictly_newer_version(world: World):
    anna = world.contact()
    record_id = world.record(contact_id=anna)
    assert world.tab("lead", record_id) == {anna: "MAIN"}
    # Someone takes the MAIN link off (as a conversion or an older code path could); a redelivered
    # event of the same version is no news and leaves the tab alone ...
    with world.db.transaction() as s:
        link = links.contact_link(s, "lead", record_id, anna)
        links.remove_contact_link(s, "lead", record_id, link, by="u1")
    events = len(world.events())
    world.feed(world.record_event("lead", record_id, 1, contact_id=anna))
    assert world.tab("lead", record_id) == {} and len(world.events()) == events
    # ... a newer version makes the tab agree again.
    world.feed(world.record_event("lead", record_id, 2, contact_id=anna, title="Renamed"))
    assert world.tab("lead", record_id) == {anna: "MAIN"}
    assert [e.event_type for e in world.events()[events:]] == ["linking.contact.linked"]
    with world.db.transaction() as s:
        assert load_record(s, "lead", record_id, person()).title == "Renamed"


def test_the_worker_does_not_load_flask():
    """The modules the worker plan runs (read model, reactions, catalogue copy, imports loop) and the
    service's declaration itself: none of them imports the web stack."""
    script = ("import sys\n"
              "from crm_kit.service import find_service\n"
              "from crm_kit.settings import load_settings\n"
              "settings = load_settings('domain', {'CRM_SERVICE_NAME': 'linking', 'CRM_DATABASE_URL': 'sqlite://',\n"
              "                                    'CRM_KAFKA_BOOTSTRAP': '127.0.0.1:9', 'CRM_JWT_SECRET': 'x' * 40})\n"
              "plan = find_service('linking').worker_plan(settings)\n"
              "print(sorted(c.name for c in plan.consumers))\n"
              "loaded = [m for m in sys.modules if m.split('.')[0] in ('flask', 'werkzeug')]\n"
              "assert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['catalogue', 'records']"
