"""Triggers through the gateway, on the real platform (PostgreSQL, Kafka).

Each test scopes its triggers with a condition on a source of its own (so other tests' leads
never match) and deletes them at the end.

The client's own writes need no retry (the gateway's read-your-writes: a source, a group or a
trigger just made is usable at once). What the tests wait for is what triggers do on their own,
asynchronously: their executions, their actions' effects, time-based firings.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from test_records_gateway import Client, eventually, stage

pytestmark = pytest.mark.e2e


def table_entry(admin: Client, table: str, prefix: str) -> dict:
    tag = uuid.uuid4().hex[:8].upper()
    r = admin("POST", f"/v1/lead-tables/{table}", json={"names": {"en": f"{prefix} {tag}"}, "code": f"{prefix}{tag}"})
    assert r.status_code == 201, r.text
    return dict(r.json())


def post(admin: Client, path: str, body: dict) -> dict:
    r = admin("POST", path, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


@contextmanager
def triggers(admin: Client, *bodies: dict) -> Iterator[list[dict]]:
    """Create triggers; delete them after."""
    created: list[dict] = []
    try:
        for body in bodies:
            created.append(post(admin, "/v1/triggers", {"kind": "lead", "active": True, **body}))
        yield created
    finally:
        for trigger in created:
            admin("DELETE", f"/v1/triggers/{trigger['id']}")


def all_items(admin: Client, path: str, **params: Any) -> list[dict]:
    items: list[dict] = []
    token = None
    while True:
        r = admin("GET", path, params={**params, "page_size": 200, **({"page_token": token} if token else {})})
        assert r.status_code == 200, r.text
        items.extend(r.json()["items"])
        token = r.json()["next_page_token"]
        if not token:
            return items


def executions(admin: Client, record_id: str) -> list[dict]:
    return all_items(admin, "/v1/trigger-executions", record_id=record_id)


def parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_stage_changed_trigger_on_500_leads_survives_a_killed_worker(platform):
    admin = Client(platform)
    qualified = stage(admin, "lead", "QUALIFIED")
    source = table_entry(admin, "sources", "SRC")
    group = table_entry(admin, "groups", "G")
    with ThreadPoolExecutor(8) as pool:
        leads = list(pool.map(lambda i: post(admin, "/v1/leads", {"title": f"Bulk {i}", "source_id": source["id"]}),
                              range(500)))
    ids = [lead["id"] for lead in leads]
    assert len(set(ids)) == 500

    with triggers(admin, {"name": f"Qualified to G {uuid.uuid4().hex[:6]}",
                          "event": {"type": "stage_changed", "stage_id": qualified["id"]},
                          "conditions": {"source_id": source["id"]},
                          "actions": [{"type": "add_to_group", "group_id": group["id"]}]}) as [trigger]:
        # The triggers service knows the group and the records just made: a dry run says it would act.
        probe = post(admin, "/v1/leads", {"title": "Probe", "source_id": source["id"], "stage_id": qualified["id"]})
        r = admin("POST", f"/v1/triggers/{trigger['id']}/dry-run", json={"record_id": probe["id"]})
        assert r.status_code == 200, r.text
        assert r.json()["would_fire"] and r.json()["actions"] == [{"type": "add_to_group", "group_id": group["id"]}]
        assert not any("fail" in reason for reason in r.json()["reasons"]), r.json()

        chunks = [ids[i:i + 200] for i in range(0, 500, 200)]
        killed = False
        try:
            for n, chunk in enumerate(chunks):
                r = admin("POST", "/v1/leads/bulk", json={"ids": chunk, "action": "set_stage",
                                                          "stage_id": qualified["id"]})
                assert r.status_code == 200, r.text
                assert {x["status"] for x in r.json()["results"]} == {"ok"}
                if n == 0:
                    time.sleep(0.5)  # not a wait for a write: lets the worker get busy with the first chunk
                    platform.processes.kill("triggers-worker")
                    killed = True
        finally:
            if killed:
                platform.processes.restart("triggers-worker")

        def fired_everywhere() -> bool:
            done = {e["record_id"] for e in all_items(admin, f"/v1/triggers/{trigger['id']}/executions")}
            return done >= set(ids)
        # The trigger fires asynchronously (and its worker was killed and restarted) - its executions log.
        eventually(fired_everywhere, timeout=240, what="an execution for every lead")

        in_group = {"filter": f'group_id = "{group["id"]}"'}

        def all_in_group() -> bool:
            return {x["id"] for x in all_items(admin, "/v1/leads", **in_group)} >= set(ids)
        # The trigger's add_to_group actions (commands the leads worker applies) - their effect on the leads.
        eventually(all_in_group, timeout=120, what="every lead in G")
        time.sleep(2)  # time for a duplicate trigger execution (there must be none) to show
        results: dict[str, list[str]] = {}
        for e in all_items(admin, f"/v1/triggers/{trigger['id']}/executions"):
            results.setdefault(e["record_id"], []).append(e["result"])
        assert {lead_id: results.get(lead_id) for lead_id in ids} == {lead_id: ["applied"] for lead_id in ids}
        # The probe was created in the stage: no change, no firing.
        assert probe["id"] not in results, results[probe["id"]]
        listed = {x["id"]: x for x in all_items(admin, "/v1/leads", **in_group)}
        for lead_id in ids:
            lead = listed[lead_id]
            assert lead["group_ids"] == [group["id"]] and lead["stage"]["id"] == qualified["id"]
            history = admin("GET", f"/v1/leads/{lead_id}/stage-history").json()["items"]
            assert [h["cause"] for h in history] == ["user", "bulk"], history

            def added(lead_id: str = lead_id) -> list[dict]:
                r = admin("GET", f"/v1/leads/{lead_id}/timeline", params={"page_size": 200})
                return [x for x in r.json()["items"] if x["type"] == "added_to_group"] if r.status_code == 200 else []
            # The trigger's action (not the client's write) reaching linking's timeline.
            entries = eventually(lambda added=added: added(), timeout=60, what=f"the timeline of {lead_id}")
            assert len(entries) == 1, (lead_id, entries)


def test_time_based_trigger_fires_once_per_modification(platform):
    admin = Client(platform)
    source = table_entry(admin, "sources", "SRC")
    group = table_entry(admin, "groups", "G2")
    with triggers(admin, {"name": f"Idle 2s {uuid.uuid4().hex[:6]}",
                          "event": {"type": "not_modified_for", "seconds": 2},
                          "conditions": {"source_id": source["id"]},
                          "actions": [{"type": "add_to_group", "group_id": group["id"]}]}) as [trigger]:
        lead = post(admin, "/v1/leads", {"title": "Idle lead", "source_id": source["id"]})
        url = f"/v1/leads/{lead['id']}"

        def mine() -> list[dict]:
            return [e for e in executions(admin, lead["id"]) if e["trigger_id"] == trigger["id"]]
        # A time-based trigger: it fires on its own, once the lead has been idle for 2 s.
        [first] = eventually(mine, timeout=60, what="the first time-based firing")
        assert first["result"] == "applied", first
        assert parse(first["at"]) - parse(lead["modified_at"]) >= dt.timedelta(seconds=2)
        # The trigger's add_to_group action, applied asynchronously by the leads worker.
        eventually(lambda: admin("GET", url).json()["group_ids"] == [group["id"]], what="the lead in G2")
        time.sleep(4)  # its own action changed the lead: that must not re-arm it (no second firing shows)
        assert len(mine()) == 1, mine()

        r = admin("PATCH", url, json={"title": "Idle lead, edited"})
        assert r.status_code == 200, r.text
        edited_at = parse(r.json()["modified_at"])
        # The time-based trigger fires again on its own, 2 s after the edit.
        eventually(lambda: len(mine()) == 2, timeout=60, what="the firing after the edit")
        second = mine()[0]  # newest first
        assert second["result"] == "applied" and second["event_id"] != first["event_id"]
        assert parse(second["at"]) - edited_at >= dt.timedelta(seconds=2)
        time.sleep(4)  # time for a third, wrong, time-based firing to show (there must be none)
        assert len(mine()) == 2, mine()


def test_ping_pong_triggers_stop_at_depth_5(platform):
    admin = Client(platform)
    contacted, qualified = stage(admin, "lead", "CONTACTED"), stage(admin, "lead", "QUALIFIED")
    source = table_entry(admin, "sources", "SRC")
    tag = uuid.uuid4().hex[:6]
    condition = {"source_id": source["id"]}
    with triggers(admin,
                  {"name": f"Ping {tag}", "event": {"type": "stage_changed", "stage_id": contacted["id"]},
                   "conditions": condition, "actions": [{"type": "set_stage", "stage_id": qualified["id"]}]},
                  {"name": f"Pong {tag}", "event": {"type": "stage_changed", "stage_id": qualified["id"]},
                   "conditions": condition, "actions": [{"type": "set_stage", "stage_id": contacted["id"]}]},
                  ) as [ping, pong]:
        lead = post(admin, "/v1/leads", {"title": "Ping pong", "source_id": source["id"]})
        url = f"/v1/leads/{lead['id']}"
        assert admin("PATCH", url, json={"stage_id": contacted["id"]}).status_code == 200

        def skipped() -> list[dict]:
            return [e for e in executions(admin, lead["id"]) if e["result"] == "skipped_loop"]
        # The ping-pong chain of trigger executions runs asynchronously until it is stopped.
        [stop] = eventually(skipped, timeout=90, what="a skipped_loop execution")
        assert stop["trigger_id"] == pong["id"]
        time.sleep(3)  # the chain has stopped: time for a further trigger execution (there must be none) to show
        chain = sorted(executions(admin, lead["id"]), key=lambda e: parse(e["at"]))
        assert [(e["trigger_id"], e["result"]) for e in chain] == [
            (ping["id"], "applied"), (pong["id"], "applied"), (ping["id"], "applied"), (pong["id"], "applied"),
            (ping["id"], "applied"), (pong["id"], "skipped_loop")], chain
        assert admin("GET", url).json()["stage"]["id"] == qualified["id"]
        history = admin("GET", f"{url}/stage-history").json()["items"]
        assert [h["cause"] for h in history] == ["user", "user", *[f"trigger:{t}" for t in
                                                                   (ping["id"], pong["id"]) * 2 + (ping["id"],)]]
