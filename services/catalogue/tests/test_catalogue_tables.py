"""The 8 tables per kind: one implementation behind /v1/{kind}-tables/{table}."""

from __future__ import annotations

import pytest
from catalogue_helpers import summary
from google.protobuf.json_format import MessageToDict

pytestmark = pytest.mark.integration
TABLES = ["attributes", "categories", "groups", "priorities", "procedures", "roles", "sources", "stage-groups"]


def test_every_table_of_both_kinds_has_the_full_life_cycle_and_events(cat):
    for kind in ("lead", "opportunity"):
        for table in TABLES:
            path = f"/v1/{kind}-tables/{table}"
            before = cat.items(path)
            mark = cat.outbox_mark()
            r = cat.post(path, {"names": {"en": "Extra", "nl": "Extra NL"}, "code": "EXTRA"})
            assert r.status_code == 201, (path, r.json)
            entry = r.json
            assert r.headers["Location"] == f"{path}/{entry['id']}"
            assert set(entry) == {"id", "names", "name", "code", "index", "active", "protected", "version",
                                  "created_at", "modified_at"}
            assert (entry["index"], entry["active"], entry["protected"]) == (len(before), True, False)
            assert cat.get(f"{path}/{entry['id']}", headers={"Accept-Language": "nl"}).json["name"] == "Extra NL"
            patched = cat.ok("PATCH", f"{path}/{entry['id']}", {"code": "EXTRA2", "index": 0, "active": False},
                             headers={"If-Match": '"1"'})
            assert (patched["code"], patched["index"], patched["active"], patched["version"]) == ("EXTRA2", 0, False,
                                                                                                  2)
            assert cat.delete(f"{path}/{entry['id']}", headers={"If-Match": '"2"'}).status_code == 204
            assert cat.get(f"{path}/{entry['id']}").status_code == 404
            assert cat.items(path) == before

            events = cat.events(mark)
            assert summary(events) == [(f"catalogue.table_entry.{what}", entry["id"], version)
                                       for what, version in (("created", 1), ("updated", 2), ("deleted", 3))]
            assert {e.aggregate_type for e in events} == {"table_entry"}
            last = events[-1].catalogue_entry
            assert (last.kind, last.entity, last.code, last.deleted, last.active) == (
                kind, table.replace("-", "_"), "EXTRA2", True, False)
            assert MessageToDict(last.attributes) == {"protected": False}


def test_unknown_tables_and_ids_of_another_table_or_kind_are_404(cat):
    group = cat.by_code("/v1/lead-tables/stage-groups", "OPEN")
    cat.refused(404, "GET", "/v1/lead-tables/stage_groups")
    cat.refused(404, "GET", "/v1/lead-tables/colours")
    cat.refused(404, "POST", "/v1/lead-tables/colours", {"names": {"en": "Red"}, "code": "RED"})
    cat.refused(404, "GET", f"/v1/lead-tables/colours/{group['id']}")
    cat.refused(404, "GET", f"/v1/lead-tables/priorities/{group['id']}")
    cat.refused(404, "PATCH", f"/v1/lead-tables/priorities/{group['id']}", {"index": 2})
    cat.refused(404, "DELETE", f"/v1/opportunity-tables/stage-groups/{group['id']}")
    assert cat.get(f"/v1/lead-tables/stage-groups/{group['id']}").json["code"] == "OPEN"


def test_codes_are_unique_per_kind_and_table(cat):
    problem = cat.refused(409, "POST", "/v1/lead-tables/sources", {"names": {"en": "Web"}, "code": "WEBSITE"})
    assert "WEBSITE" in problem["detail"]
    high = cat.by_code("/v1/lead-tables/priorities", "HIGH")
    cat.refused(409, "PATCH", f"/v1/lead-tables/priorities/{high['id']}", {"code": "LOW"})
    assert cat.created("/v1/lead-tables/categories", {"names": {"en": "Web"}, "code": "WEBSITE"})
    assert cat.created("/v1/opportunity-tables/sources", {"names": {"en": "Web 2"}, "code": "WEB2"})
    for body in ({"names": {"en": "X"}}, {"code": "X"}, {"names": {"en": ""}, "code": "X"},
                 {"names": {"en": "X"}, "code": "X", "protected": True}, {"names": {"en": "X"}, "code": "X!"}):
        cat.refused(422, "POST", "/v1/lead-tables/sources", body)


def test_the_protected_roles_stay(cat):
    for kind in ("lead", "opportunity"):
        path = f"/v1/{kind}-tables/roles"
        roles = cat.items(path)
        assert [(r["code"], r["names"], r["protected"]) for r in roles] == [
            ("MAIN", {"en": "Main contact", "nl": "Hoofdcontactpersoon"}, True),
            ("SIGN", {"en": "Signing authority", "nl": "Tekenbevoegde"}, True),
        ]
        for role in roles:
            item = f"{path}/{role['id']}"
            assert "protected" in cat.refused(409, "DELETE", item)["detail"]
            cat.refused(409, "PATCH", item, {"code": "BOSS"})
            cat.refused(409, "PATCH", item, {"active": False})
            renamed = cat.ok("PATCH", item, {"names": {"en": "Renamed"}, "index": 5, "code": role["code"]})
            assert (renamed["name"], renamed["protected"], renamed["version"]) == ("Renamed", True, 2)
        other = cat.created(path, {"names": {"en": "Recruiter"}, "code": "RECRUITER"})
        assert other["protected"] is False
        assert cat.delete(f"{path}/{other['id']}").status_code == 204


def test_an_entry_a_stage_refers_to_cannot_be_deleted_but_can_be_deactivated(cat):
    group = cat.by_code("/v1/lead-tables/stage-groups", "CLOSED")
    path = f"/v1/lead-tables/stage-groups/{group['id']}"
    problem = cat.refused(409, "DELETE", path)
    assert "CONVERTED" in problem["detail"] and "DISQUALIFIED" in problem["detail"]
    procedure = cat.created("/v1/lead-tables/procedures", {"names": {"en": "Fast"}, "code": "FAST"})
    stage = cat.created("/v1/lead-stages", {"names": {"en": "Fast"}, "code": "FAST", "procedure_id": procedure["id"]})
    assert "FAST" in cat.refused(409, "DELETE", f"/v1/lead-tables/procedures/{procedure['id']}")["detail"]

    assert cat.ok("PATCH", path, {"active": False})["active"] is False
    assert cat.get("/v1/lead-tables/stage-groups?active=false").json["items"][0]["id"] == group["id"]
    # Stages keep their (now inactive) group, and a PATCH of something else still works ...
    converted = cat.by_code("/v1/lead-stages", "CONVERTED")
    assert cat.ok("PATCH", f"/v1/lead-stages/{converted['id']}", {"remarks": "Done."})["stage_group_id"] == group["id"]
    # ... but no stage can be given the inactive group.
    cat.refused(422, "PATCH", f"/v1/lead-stages/{stage['id']}", {"stage_group_id": group["id"]})

    cat.ok("PATCH", f"/v1/lead-stages/{stage['id']}", {"procedure_id": None})
    assert cat.delete(f"/v1/lead-tables/procedures/{procedure['id']}").status_code == 204
