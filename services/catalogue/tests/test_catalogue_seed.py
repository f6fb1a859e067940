"""Starter data: loaded once per database by `migrate`, with an event per entity, never re-applied."""

from __future__ import annotations

import pytest
from catalogue_helpers import Catalogue

pytestmark = pytest.mark.integration


def _table_codes(cat: Catalogue, kind: str, table: str) -> list[str]:
    return [e["code"] for e in cat.items(f"/v1/{kind}-tables/{table}")]


def test_a_fresh_database_gets_the_starter_configuration_with_an_event_per_entity(cat):
    for kind in ("lead", "opportunity"):
        groups = {g["id"]: g["code"] for g in cat.items(f"/v1/{kind}-tables/stage-groups")}
        assert [cat.get(f"/v1/{kind}-tables/stage-groups/{i}", headers={"Accept-Language": "nl"}).json["name"]
                for i in groups] == ["Open", "Gesloten"]
        stages = cat.items(f"/v1/{kind}-stages")
        assert [(s["code"], groups[s["stage_group_id"]]) for s in stages] == [
            *((code, "OPEN") for code in [s["code"] for s in stages][:3]),
            *((code, "CLOSED") for code in [s["code"] for s in stages][3:])]
        assert [s["names"]["nl"] for s in stages if s["is_end"]] == (
            ["Geconverteerd", "Gediskwalificeerd"] if kind == "lead" else ["Gewonnen", "Verloren"])
        assert all(set(s["names"]) == {"en", "nl"} for s in stages)
        assert len({s["color"] for s in stages}) == 5
        assert _table_codes(cat, kind, "priorities") == ["LOW", "NORMAL", "HIGH"]
        assert _table_codes(cat, kind, "sources") == ["WEBSITE", "REFERRAL", "EVENT", "COLD_CALL", "LINKEDIN"]
        assert _table_codes(cat, kind, "roles") == ["MAIN", "SIGN"]
        for table in ("attributes", "categories", "groups", "procedures"):
            assert _table_codes(cat, kind, table) == []

    events = cat.events()
    # Per kind: 2 roles, 2 stage groups, 5 stages, 3 priorities, 5 sources.
    assert len(events) == 2 * (2 + 2 + 5 + 3 + 5)
    assert len({e.aggregate_id for e in events}) == len(events)
    assert {e.event_type for e in events} == {"catalogue.table_entry.created", "catalogue.stage.created"}
    assert {(e.actor.kind, e.aggregate_version) for e in events} == {("system", 1)}


def test_migrate_again_changes_nothing_and_never_overwrites_an_administrators_changes(cat):
    new = cat.by_code("/v1/lead-stages", "NEW")
    cat.ok("PATCH", f"/v1/lead-stages/{new['id']}", {"names": {"en": "Incoming"}, "color": "#101010"})
    disqualified = cat.by_code("/v1/lead-stages", "DISQUALIFIED")
    assert cat.delete(f"/v1/lead-stages/{disqualified['id']}").status_code == 204
    low = cat.by_code("/v1/lead-tables/priorities", "LOW")
    assert cat.delete(f"/v1/lead-tables/priorities/{low['id']}").status_code == 204

    before = cat.snapshot()
    cat.migrate()
    cat.migrate()
    assert cat.snapshot() == before
    stage = cat.get(f"/v1/lead-stages/{new['id']}").json
    assert (stage["names"], stage["color"]) == ({"en": "Incoming"}, "#101010")
    assert [s["code"] for s in cat.items("/v1/lead-stages")] == ["NEW", "CONTACTED", "QUALIFIED", "CONVERTED"]
    assert _table_codes(cat, "lead", "priorities") == ["NORMAL", "HIGH"]


def test_seed_off_loads_only_the_protected_roles_and_a_later_run_with_it_on_loads_the_rest(bare):
    assert bare.items("/v1/lead-stages") == [] and bare.items("/v1/opportunity-stages") == []
    assert _table_codes(bare, "lead", "stage-groups") == []
    assert _table_codes(bare, "opportunity", "roles") == ["MAIN", "SIGN"]
    assert len(bare.events()) == 4
    bare.migrate()
    assert len(bare.events()) == 4

    bare.migrate(CRM_CATALOGUE_SEED=True)  # the starter configuration never ran on this database: now it does
    assert len(bare.items("/v1/lead-stages")) == 5
    assert _table_codes(bare, "lead", "roles") == ["MAIN", "SIGN"]
    count = len(bare.events())
    bare.migrate(CRM_CATALOGUE_SEED=True)
    assert len(bare.events()) == count
