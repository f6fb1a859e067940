"""The triggers engine on SQLite and PostgreSQL: evaluation from record events, exactly-once
commands through the outbox, the loop guard, time-based firings with the scheduler, dry run."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from crm.events.v1.catalogue_pb2 import CatalogueEntry
from crm.events.v1.envelope_pb2 import Actor
from crm.events.v1.records_pb2 import GroupMembershipChanged, PipelineRecord, RecordDeleted, StageChanged
from crm_catalogue_view import apply_catalogue_event
from crm_events.envelope import decode, new_envelope
from crm_kafka.outbox import OUTBOX
from crm_kit.cli import migrate
from crm_kit.db import Database, utcnow
from crm_kit.service import find_service
from crm_kit.settings import load_settings
from crm_kit.web import create_app, issue_token
from crm_triggers.dryrun import build_dryrun_api
from crm_triggers.engine import command_id, record_event_handler
from crm_triggers.scheduler import scheduler_loop, tick
from crm_triggers.tables import executions, record_states, schedule, trigger_rules

pytestmark = pytest.mark.integration
SECRET = "triggers-test-secret-long-enough-for-hs256"


class Env:
    def __init__(self, url: str) -> None:
        spec = find_service("triggers")
        self.settings = load_settings("domain", {"CRM_SERVICE_NAME": "triggers", "CRM_DATABASE_URL": url,
                                                 "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": SECRET})
        migrate(spec, self.settings)
        self.db = Database(url)
        self.ids = {"open": self.put("stage_groups", "OPEN"), "closed": self.put("stage_groups", "CLOSED")}
        self.ids["new"] = self.put("stage", "NEW", is_default=True, stage_group_id=self.ids["open"])
        self.ids["next"] = self.put("stage", "NEXT", stage_group_id=self.ids["open"])
        self.ids["won"] = self.put("stage", "WON", stage_group_id=self.ids["closed"])
        self.ids["old"] = self.put("stage", "OLD", active=False, stage_group_id=self.ids["closed"])
        self.ids["web"] = self.put("sources", "WEB")
        self.ids["fair"] = self.put("sources", "FAIR")
        self.ids["vip"] = self.put("groups", "VIP")
        self.ids["gone"] = self.put("groups", "GONE", active=False)

    def put(self, entity: str, code: str, *, active: bool = True, **attributes: Any) -> str:
        entry_id = str(uuid.uuid4())
        attrs = Struct()
        attrs.update(attributes)
        entry = CatalogueEntry(id=entry_id, kind="lead", entity=entity, code=code, names={"en": code}, index=0,
                               active=active, version=1, attributes=attrs)
        kind = "stage" if entity == "stage" else "table_entry"
        with self.db.transaction() as s:
            apply_catalogue_event(s, new_envelope(f"catalogue.{kind}.updated", entity, entry_id, 1, entry))
        return entry_id

    def trigger(self, event: dict, actions: list[dict], conditions: dict | None = None, active: bool = True) -> str:
        trigger_id = str(uuid.uuid4())
        now = utcnow()
        with self.db.transaction() as s:
            s.execute(trigger_rules.insert().values(
                id=trigger_id, name=f"T {trigger_id[:8]}", kind="lead", active=active, version=1,
                definition={"event": event, "conditions": conditions or {}, "actions": actions},
                created_at=now, created_by="u1", modified_at=now, modified_by="u1"))
        return trigger_id

    def handle(self, envelope: Any) -> None:
        with self.db.transaction() as s:
            record_event_handler(s, envelope)

    def executions(self, trigger_id: str, record_id: str | None = None) -> list[Any]:
        stmt = select(executions).where(executions.c.trigger_id == trigger_id).order_by(executions.c.at)
        if record_id:
            stmt = stmt.where(executions.c.record_id == record_id)
        with self.db.transaction() as s:
            return list(s.execute(stmt).all())

    def commands(self) -> list[tuple[str, str, Any]]:
        with self.db.transaction() as s:
            rows = s.execute(select(OUTBOX.c.topic, OUTBOX.c.key, OUTBOX.c.payload).order_by(OUTBOX.c.id)).all()
        return [(r.topic, r.key, decode(r.payload)) for r in rows]

    def schedule_row(self, trigger_id: str, record_id: str) -> Any:
        with self.db.transaction() as s:
            return s.execute(select(schedule).where(schedule.c.trigger_id == trigger_id,
                                                    schedule.c.record_id == record_id)).first()


@pytest.fixture
def env(any_db_url):
    e = Env(any_db_url)
    yield e
    e.db.dispose()


def record(env: Env, record_id: str, stage: str, version: int, *, source: str = "", groups: tuple[str, ...] = (),
           modified_at: dt.datetime | None = None) -> PipelineRecord:
    r = PipelineRecord(id=record_id, kind="lead", title="Acme", owner_id="u1", office_id="o1",
                       stage_id=env.ids[stage], stage_group_id=env.ids["closed" if stage in ("won", "old") else "open"],
                       version=version, source_id=env.ids.get(source, ""), group_ids=[env.ids[g] for g in groups])
    r.modified_at.FromDatetime(modified_at or utcnow())
    return r


def event(what: str, rec: PipelineRecord, payload: Any = None, *, actor: str = "user", depth: int = 0) -> Any:
    return new_envelope(f"lead.{what}", "lead", rec.id, rec.version, payload if payload is not None else rec,
                        actor=Actor(user_id="u1", kind=actor), trigger_depth=depth, producer="leads")


def moved(rec: PipelineRecord) -> StageChanged:
    return StageChanged(record=rec, to_stage_id=rec.stage_id, to_stage_group_id=rec.stage_group_id, cause="user")


def metric(result: str) -> float:
    return REGISTRY.get_sample_value("crm_trigger_executions_total", {"result": result}) or 0.0


def test_stage_changed_fires_once_on_the_change_with_conditions_and_loop_guard(env):
    vip = env.ids["vip"]
    t = env.trigger({"type": "stage_changed", "stage_id": env.ids["next"]},
                    [{"type": "add_to_group", "group_id": vip}, {"type": "set_stage", "stage_id": env.ids["won"]}],
                    conditions={"source_id": env.ids["web"]})
    rid = str(uuid.uuid4())
    env.handle(event("created", record(env, rid, "new", 1, source="web")))
    assert env.executions(t) == []
    applied_before = metric("applied")
    rec2 = record(env, rid, "next", 2, source="web")
    change = event("stage_changed", rec2, moved(rec2))
    env.handle(change)
    env.handle(change)  # redelivered: nothing again
    [ex] = env.executions(t)
    assert (ex.record_id, ex.event_id, ex.result, ex.trigger_depth) == (rid, change.event_id, "applied", 0)
    cmds = env.commands()
    assert [(topic, key) for topic, key, _ in cmds] == [("crm.leads.commands.v1", rid)] * 2
    ids = [command_id(t, rid, change.event_id, i) for i in range(2)]
    assert [c.event_id for _, _, c in cmds] == ids == [a["command_id"] for a in ex.actions]
    first = cmds[0][2]
    assert (first.command.action, first.command.group_id, first.command.trigger_id) == ("add_to_group", vip, t)
    assert cmds[1][2].command.stage_id == env.ids["won"]
    assert (first.trigger_depth, first.causation_id, first.actor.kind, first.producer) == (
        1, change.event_id, f"trigger:{t}", "triggers")
    assert metric("applied") == applied_before + 1
    # A later edit of the record while it is in that stage does not fire; nor do other events.
    env.handle(event("updated", record(env, rid, "next", 3, source="web")))
    rec4 = record(env, rid, "next", 4, source="web", groups=("vip",))
    env.handle(event("added_to_group", rec4, GroupMembershipChanged(record=rec4, group_id=vip)))
    env.handle(event("stage_group_changed", rec4, moved(rec4)))
    assert len(env.executions(t)) == 1 and len(env.commands()) == 2
    # Conditions: another source does not fire.
    other = record(env, str(uuid.uuid4()), "next", 2, source="fair")
    env.handle(event("stage_changed", other, moved(other)))
    assert env.executions(t, other.id) == []
    # Loop guard: depth 4 still acts (commands at depth 5), depth 5 is skipped_loop.
    r4, r5 = (record(env, str(uuid.uuid4()), "next", 2, source="web") for _ in range(2))
    env.handle(event("stage_changed", r4, moved(r4), actor="trigger:x", depth=4))
    env.handle(event("stage_changed", r5, moved(r5), actor="trigger:x", depth=5))
    assert [(e.result, e.trigger_depth) for e in env.executions(t, r4.id)] == [("applied", 4)]
    [skipped] = env.executions(t, r5.id)
    assert skipped.result == "skipped_loop" and skipped.actions == [] and "depth" in skipped.reason
    assert {c.trigger_depth for _, key, c in env.commands() if key == r4.id} == {5}
    assert not [1 for _, key, _ in env.commands() if key == r5.id]


def test_other_event_types_and_unusable_action_targets(env):
    vip, gone = env.ids["vip"], env.ids["gone"]
    created = env.trigger({"type": "created"}, [{"type": "set_stage", "stage_id": env.ids["old"]}])
    grouped = env.trigger({"type": "added_to_group", "group_id": vip}, [{"type": "add_to_group", "group_id": gone}],
                          conditions={"group_id": vip})
    to_closed = env.trigger({"type": "stage_group_changed", "stage_group_id": env.ids["closed"]},
                            [{"type": "remove_from_group", "group_id": vip}])
    missing = env.trigger({"type": "stage_group_changed", "stage_group_id": env.ids["closed"]},
                          [{"type": "add_to_group", "group_id": str(uuid.uuid4())}])
    inactive = env.trigger({"type": "created"}, [{"type": "add_to_group", "group_id": vip}], active=False)
    rid = str(uuid.uuid4())
    env.handle(event("created", record(env, rid, "new", 1)))
    [ex] = env.executions(created)
    assert ex.result == "failed" and "inactive" in ex.reason and env.commands() == []
    assert env.executions(inactive) == []
    r2 = record(env, rid, "new", 2, groups=("vip",))
    env.handle(event("added_to_group", r2, GroupMembershipChanged(record=r2, group_id=env.ids["fair"])))
    assert env.executions(grouped) == []  # another group
    env.handle(event("added_to_group", r2, GroupMembershipChanged(record=r2, group_id=vip)))
    assert [e.result for e in env.executions(grouped)] == ["failed"]
    r3 = record(env, rid, "won", 3, groups=("vip",))
    env.handle(event("stage_changed", r3, moved(r3)))
    assert env.executions(to_closed) == []  # only the stage_group_changed event
    env.handle(event("stage_group_changed", r3, moved(r3)))
    assert [e.result for e in env.executions(to_closed)] == ["applied"]
    assert [e.result for e in env.executions(missing)] == ["failed"]
    assert [c.command.action for _, _, c in env.commands()] == ["remove_from_group"]
    # Deleted: the view marks it, its schedule goes.
    env.handle(new_envelope("lead.deleted", "lead", rid, 4, RecordDeleted(id=rid, kind="lead")))
    with env.db.transaction() as s:
        assert s.execute(select(record_states.c.deleted).where(record_states.c.id == rid)).scalar() is True


def test_time_based_fires_once_per_modification(env):
    vip = env.ids["vip"]
    t = env.trigger({"type": "not_modified_for", "seconds": 1}, [{"type": "add_to_group", "group_id": vip}])
    rid = str(uuid.uuid4())
    t0 = utcnow()
    env.handle(event("created", record(env, rid, "new", 1, modified_at=t0)))
    row = env.schedule_row(t, rid)
    assert row.armed_at == t0 and row.due_at == t0 + dt.timedelta(seconds=1) and row.fired_at is None
    tick(env.db)
    assert env.executions(t) == []  # not due yet
    time.sleep(1.2)
    tick(env.db)
    tick(env.db)
    [ex] = env.executions(t)
    assert (ex.result, ex.event_id, ex.trigger_depth) == ("applied", f"time:{t0.isoformat()}", 0)
    [(topic, key, cmd)] = env.commands()
    assert (topic, key, cmd.trigger_depth, cmd.command.group_id) == ("crm.leads.commands.v1", rid, 1, vip)
    assert env.schedule_row(t, rid).fired_at is not None
    # Its own action's change does not re-arm it.
    r2 = record(env, rid, "new", 2, groups=("vip",))
    env.handle(event("added_to_group", r2, GroupMembershipChanged(record=r2, group_id=vip), actor=f"trigger:{t}",
                     depth=1))
    assert env.schedule_row(t, rid).armed_at == t0
    time.sleep(1.2)
    tick(env.db)
    assert len(env.executions(t)) == 1
    # A user's modification re-arms it; the scheduler loop fires within a second of the due time.
    stop = threading.Event()
    loop = threading.Thread(target=scheduler_loop(env.db), args=(stop,), daemon=True)
    loop.start()
    try:
        t3 = utcnow()
        env.handle(event("updated", record(env, rid, "new", 3, groups=("vip",), modified_at=t3)))
        deadline = time.monotonic() + 5
        while len(env.executions(t)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        second = env.executions(t)[-1]
        assert second.event_id == f"time:{t3.isoformat()}"
        assert dt.timedelta(0) <= second.at - (t3 + dt.timedelta(seconds=1)) < dt.timedelta(seconds=1)
        time.sleep(0.6)
        assert len(env.executions(t)) == 2 and len(env.commands()) == 2
    finally:
        stop.set()
        loop.join(5)
    assert REGISTRY.get_sample_value("crm_trigger_scheduler_lag_seconds") is not None
    env.handle(new_envelope("lead.deleted", "lead", rid, 4, RecordDeleted(id=rid, kind="lead")))
    assert env.schedule_row(t, rid) is None


def test_dry_run(env):
    app = create_app("triggers", env.settings, [build_dryrun_api()], database=env.db).test_client()

    def auth(roles: tuple[str, ...] = ("admin",)) -> dict[str, str]:
        return {"Authorization": "Bearer " + issue_token(SECRET, user_id="u1", name="U1", office_id="o1",
                                                         roles=list(roles))}

    vip = env.ids["vip"]
    t = env.trigger({"type": "stage_changed", "stage_id": env.ids["next"]}, [{"type": "add_to_group", "group_id": vip}],
                    conditions={"source_id": env.ids["web"]})
    timed = env.trigger({"type": "not_modified_for", "seconds": 3600}, [{"type": "add_to_group", "group_id": vip}])
    inside, outside = str(uuid.uuid4()), str(uuid.uuid4())
    env.handle(event("created", record(env, inside, "next", 1, source="web")))
    env.handle(event("created", record(env, outside, "new", 1, source="fair")))

    def counts() -> tuple[int, ...]:
        with env.db.transaction() as s:
            return tuple(s.execute(select(func.count()).select_from(tbl)).scalar() for tbl in (executions, OUTBOX,
                                                                                              schedule))
    before = counts()
    r = app.post(f"/v1/triggers/{t}/dry-run", json={"record_id": inside}, headers=auth())
    assert r.status_code == 200, r.json
    assert r.json["would_fire"] is True and r.json["actions"] == [{"type": "add_to_group", "group_id": vip}]
    assert any("change itself" in reason for reason in r.json["reasons"])
    r = app.post(f"/v1/triggers/{t}/dry-run", json={"record_id": outside}, headers=auth())
    assert r.json["would_fire"] is False and r.json["actions"] == []
    assert any("source_id" in reason for reason in r.json["reasons"])
    assert any("not in the stage" in reason for reason in r.json["reasons"])
    r = app.post(f"/v1/triggers/{timed}/dry-run", json={"record_id": inside}, headers=auth())
    assert r.json["would_fire"] is False and r.json["due_at"] and "Not due yet" in " ".join(r.json["reasons"])
    nobody, nothing = str(uuid.uuid4()), str(uuid.uuid4())
    r = app.post(f"/v1/triggers/{nobody}/dry-run", json={"record_id": inside}, headers=auth())
    assert (r.status_code, r.json["title"], r.json["detail"]) == (404, "Not Found", f"There is no trigger {nobody!r}.")
    r = app.post(f"/v1/triggers/{t}/dry-run", json={"record_id": nothing}, headers=auth())
    assert (r.status_code, r.json["detail"], r.json["errors"]) == (
        422, f"There is no lead {nothing!r}.", [{"field": "record_id", "message": f"There is no lead {nothing!r}."}])
    assert app.post(f"/v1/triggers/{t}/dry-run", json={}, headers=auth()).status_code == 422
    assert app.post(f"/v1/triggers/{t}/dry-run", json={"record_id": inside},
                    headers=auth(("viewer",))).status_code == 403
    assert counts() == before


def test_a_converted_lead_is_never_moved_out_of_end_stages_by_a_trigger(env):
    done = env.put("stage", "DONE", is_end=True, stage_group_id=env.ids["closed"])
    vip = env.ids["vip"]
    back = env.trigger({"type": "added_to_group", "group_id": vip},
                       [{"type": "set_stage", "stage_id": env.ids["next"]}])
    to_end = env.trigger({"type": "added_to_group", "group_id": vip}, [{"type": "set_stage", "stage_id": done}])
    converted, plain = str(uuid.uuid4()), str(uuid.uuid4())
    for rid, opportunity in ((converted, str(uuid.uuid4())), (plain, "")):
        r = record(env, rid, "won", 1, groups=("vip",))
        r.converted_opportunity_id = opportunity
        env.handle(event("added_to_group", r, GroupMembershipChanged(record=r, group_id=vip)))
    [refused] = env.executions(back, converted)
    assert refused.result == "failed" and "converted" in refused.reason and "NEXT" in refused.reason
    assert [e.result for e in env.executions(to_end, converted)] == ["applied"]  # an end stage is fine
    assert [e.result for e in env.executions(back, plain)] == ["applied"]  # a lead not converted moves
    sent = [(c.command.record_id, c.command.stage_id) for _, _, c in env.commands()]
    assert (converted, env.ids["next"]) not in sent
    assert (converted, done) in sent and (plain, env.ids["next"]) in sent
