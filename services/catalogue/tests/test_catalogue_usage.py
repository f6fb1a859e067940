"""Stage usage, learned from record events: a stage records are in cannot be deleted."""

from __future__ import annotations

import uuid

import pytest
from catalogue_helpers import record_event
from sqlalchemy import select

from crm_catalogue.service import worker_plan
from crm_catalogue.tables import stage_usage

pytestmark = pytest.mark.integration


def _stage(cat, kind: str, code: str) -> tuple[dict, str]:
    stage = cat.created(f"/v1/{kind}-stages", {"names": {"en": code}, "code": code})
    return stage, f"/v1/{kind}-stages/{stage['id']}"


def test_a_stage_records_are_in_cannot_be_deleted_until_they_leave(cat):
    stage, path = _stage(cat, "lead", "BUSY")
    lead_a, lead_b = str(uuid.uuid4()), str(uuid.uuid4())
    cat.apply(record_event("lead", "created", lead_a, 1, stage["id"]))
    cat.apply(record_event("lead", "created", lead_b, 1, stage["id"]))
    problem = cat.refused(409, "DELETE", path)
    assert "2 leads are in this stage" in problem["detail"] and "deactivate" in problem["detail"]
    assert problem["records"] == 2

    cat.apply(record_event("lead", "deleted", lead_a, 2))
    assert "1 lead is in this stage" in cat.refused(409, "DELETE", path)["detail"]
    other, _ = _stage(cat, "lead", "ELSEWHERE")
    cat.apply(record_event("lead", "updated", lead_b, 2, other["id"]))  # moved on
    assert cat.ok("PATCH", path, {"active": False})["active"] is False  # deactivating was always possible
    assert cat.delete(path).status_code == 204


def test_only_newer_versions_count_and_an_empty_stage_is_no_usage(cat):
    stage, path = _stage(cat, "opportunity", "OLD")
    newer, newer_path = _stage(cat, "opportunity", "NEWER")
    record = str(uuid.uuid4())
    cat.apply(record_event("opportunity", "created", record, 1, stage["id"]))
    cat.apply(record_event("opportunity", "updated", record, 3, newer["id"]))
    cat.apply(record_event("opportunity", "updated", record, 2, stage["id"]))  # late and older: ignored
    assert cat.delete(path).status_code == 204

    cat.refused(409, "DELETE", newer_path)
    cat.apply(record_event("opportunity", "updated", record, 4, ""))  # in no stage any more
    with cat.db.transaction() as s:
        assert s.execute(select(stage_usage.c.stage_id, stage_usage.c.version)
                         .where(stage_usage.c.id == record)).one() == (None, 4)
    assert cat.delete(newer_path).status_code == 204


def test_the_worker_runs_the_relay_and_the_usage_consumer(cat):
    plan = worker_plan(cat.settings, cat.db)
    assert plan.service == "catalogue" and plan.relay is True
    [consumer] = plan.consumers
    assert consumer.name == "usage"
    assert consumer.topics == ["crm.leads.v1", "crm.opportunities.v1"]
