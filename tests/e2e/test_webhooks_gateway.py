"""Webhooks and the event feed through the gateway, on the real platform (PostgreSQL, Kafka), with
real HTTP receivers on loopback (the test platform allows http to loopback, as `make run` does).

Each test subscribes with a filter on a source of its own, so other tests' leads never reach its
receiver. What the tests wait for is the receiver's side: deliveries are asynchronous.
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from test_records_gateway import Client, stage
from test_triggers_gateway import post, table_entry
from webhook_receiver import Receiver

pytestmark = pytest.mark.e2e


@contextmanager
def subscription(admin: Client, receiver: Receiver, **body: Any) -> Any:
    r = admin("POST", "/v1/webhooks", json={"url": receiver.url, **body})
    assert r.status_code == 201, r.text
    created = r.json()
    try:
        yield created
    finally:
        admin("DELETE", f"/v1/webhooks/{created['id']}")


def test_a_filtered_subscription_gets_exactly_its_changes_signed(platform):
    admin = Client(platform)
    web, fair = table_entry(admin, "sources", "WEB"), table_entry(admin, "sources", "FAIR")
    qualified = stage(admin, "lead", "QUALIFIED")
    receiver = Receiver()
    try:
        with subscription(admin, receiver, event_types=["lead.stage_changed"],
                          filter=f'source_id = "{web["id"]}"', description="Web leads") as sub:
            secret = sub["secret"]
            assert secret.startswith("whsec_") and sub["secret_hint"] == secret[-4:]
            shown = admin("GET", f"/v1/webhooks/{sub['id']}").json()
            assert "secret" not in shown and shown["active"] is True and shown["filter"].startswith("source_id")

            mine = [post(admin, "/v1/leads", {"title": f"Web {i}", "source_id": web["id"]}) for i in range(3)]
            other = post(admin, "/v1/leads", {"title": "Fair", "source_id": fair["id"]})
            for lead in [*mine, other]:
                r = admin("PATCH", f"/v1/leads/{lead['id']}", json={"stage_id": qualified["id"]})
                assert r.status_code == 200, r.text
            receiver.wait_for(lambda rc: len(rc.processed) >= 3, what="the 3 stage changes of web leads")
            payloads = receiver.verified(secret)  # the reference verifier accepts every signature
            assert sorted(p["data"]["id"] for p in payloads) == sorted(lead["id"] for lead in mine)
            for payload, lead in zip(sorted(payloads, key=lambda p: p["data"]["id"]),
                                     sorted(mine, key=lambda x: x["id"]), strict=True):
                assert payload["type"] == "lead.stage_changed"
                assert payload["data"]["changes"]["stage_id"] == {"from": lead["stage_id"], "to": qualified["id"]}
                assert payload["data"]["stage_id"] == qualified["id"] and payload["data"]["source_id"] == web["id"]
            # No created events (not subscribed), no fair lead: only the three, once each.
            assert {r.headers["webhook-id"] for r in receiver.requests} == set(receiver.processed)

            # A test delivery reaches it too, and the log shows every attempt.
            r = admin("POST", f"/v1/webhooks/{sub['id']}/test")
            assert r.status_code == 202, r.text
            receiver.wait_for(lambda rc: r.json()["event_id"] in rc.processed, what="the test delivery")
            log = admin("GET", f"/v1/webhooks/{sub['id']}/deliveries").json()["items"]
            assert {x["result"] for x in log} == {"delivered"} and len(log) == 4
            assert log[0]["event_type"] == "webhook.test" and log[0]["status_code"] == 200
    finally:
        receiver.stop()


def test_an_outage_loses_nothing_and_keeps_each_records_order(platform):
    admin = Client(platform)
    source = table_entry(admin, "sources", "OUT")
    stages = [stage(admin, "lead", code)["id"] for code in ("QUALIFIED", "NEW")]
    failing = {"left": 25}

    def answer(_n: int) -> int:
        if failing["left"] > 0:
            failing["left"] -= 1
            return 500
        return 200

    receiver = Receiver(answer)
    try:
        with subscription(admin, receiver, event_types=["lead.stage_changed"],
                          filter=f'source_id = "{source["id"]}"') as sub:
            receiver.stop()  # down while the changes happen
            leads = [post(admin, "/v1/leads", {"title": f"Out {i}", "source_id": source["id"]}) for i in range(20)]

            def move(lead: dict) -> None:
                for n in range(10):
                    r = admin("PATCH", f"/v1/leads/{lead['id']}", json={"stage_id": stages[n % 2]})
                    assert r.status_code == 200, r.text
            with ThreadPoolExecutor(5) as pool:
                list(pool.map(move, leads))
            receiver.start()  # back, answering 500 for a while
            receiver.wait_for(lambda rc: len(rc.processed) >= 200, timeout=180, what="all 200 changes")

            payloads = receiver.verified(sub["secret"])
            assert len(payloads) == 200  # every event once (the receiver keeps the first per webhook-id)
            by_lead: dict[str, list[int]] = defaultdict(list)
            with receiver.lock:
                arrivals = [r for r in receiver.requests if 200 <= r.status < 300]
            for got in arrivals:
                by_lead[got.json["data"]["id"]].append(got.json["data"]["version"])
            assert set(by_lead) == {lead["id"] for lead in leads}
            for versions in by_lead.values():  # each record's events arrived in order
                assert versions == sorted(versions) and len(set(versions)) == 10
            log = []
            page = None
            while True:
                r = admin("GET", f"/v1/webhooks/{sub['id']}/deliveries",
                          params={"page_size": 200, **({"page_token": page} if page else {})})
                log += r.json()["items"]
                page = r.json()["next_page_token"]
                if not page:
                    break
            failed = [x for x in log if x["result"] != "delivered"]
            assert failed and {x["result"] for x in failed} <= {"failed", "error"}
            assert any(x["status_code"] == 500 for x in failed)  # the answers while it came back
            assert any(x["status_code"] is None and x["error"] for x in failed)  # and the outage itself
    finally:
        receiver.stop()


def test_links_are_delivered_and_in_the_feed(platform):
    """A link's id is its contact's and its record's (73 characters): link events reach an endpoint
    and the feed like any other (they were once dead-lettered by the service's consumer)."""
    admin = Client(platform)
    tag = uuid.uuid4().hex[:8]
    receiver = Receiver()
    try:
        with subscription(admin, receiver, event_types=["contact.linked", "contact.unlinked"]) as sub:
            start = admin("GET", "/v1/events", params={"after": "latest"}).json()["next_cursor"]
            lead = post(admin, "/v1/leads", {"title": f"Linked {tag}"})
            roles = admin("GET", "/v1/lead-tables/roles").json()["items"]
            sign = next(r for r in roles if r["code"] == "SIGN")
            r = admin("POST", f"/v1/leads/{lead['id']}/contacts", json={
                "contact": {"first_name": "Lin", "last_name": f"Ked {tag}"}, "role_id": sign["id"]})
            assert r.status_code == 201, r.text
            contact_id = r.json()["contact_id"]
            r = admin("DELETE", f"/v1/leads/{lead['id']}/contacts/{contact_id}")
            assert r.status_code in (200, 204), r.text
            token = r.headers["Consistency-Token"]

            def mine(rc: Receiver) -> list[dict]:  # in the order they arrived (wait_for holds the lock)
                return [got.json for got in rc.processed.values() if got.json["data"].get("record_id") == lead["id"]]

            receiver.wait_for(lambda rc: len(mine(rc)) >= 2, what="the link and unlink events")
            assert [p["type"] for p in mine(receiver)] == ["contact.linked", "contact.unlinked"]  # in order
            assert mine(receiver)[0]["data"]["contact_id"] == contact_id
            assert len(receiver.verified(sub["secret"])) == len(receiver.processed)  # each one signed
            feed = admin("GET", "/v1/events", params={"after": start, "types": "contact.linked,contact.unlinked",
                                                      "page_size": 500}, headers={"Consistency-Token": token})
            assert feed.status_code == 200, feed.text
            assert [i["type"] for i in feed.json()["items"] if i["data"].get("record_id") == lead["id"]] == \
                ["contact.linked", "contact.unlinked"]
    finally:
        receiver.stop()


def test_a_killed_worker_loses_nothing_and_resends_with_the_same_id(platform):
    admin = Client(platform)
    source = table_entry(admin, "sources", "KIL")
    qualified = stage(admin, "lead", "QUALIFIED")
    receiver = Receiver()
    receiver.hold = threading.Event()  # requests wait: the worker is killed with deliveries in flight
    try:
        with subscription(admin, receiver, event_types=["lead.created", "lead.stage_changed"],
                          filter=f'source_id = "{source["id"]}"') as sub:
            leads = [post(admin, "/v1/leads", {"title": f"Kill {i}", "source_id": source["id"]}) for i in range(10)]
            for lead in leads:
                assert admin("PATCH", f"/v1/leads/{lead['id']}", json={"stage_id": qualified["id"]}).status_code == 200
            receiver.wait_for(lambda rc: len(rc.requests) >= 1 or rc.hold.is_set(), what="a delivery in flight")
            platform.processes.kill("webhooks-worker")
            receiver.hold.set()
            platform.processes.restart("webhooks-worker")
            receiver.wait_for(lambda rc: len(rc.processed) >= 20, timeout=120, what="all 20 events")
            payloads = receiver.verified(sub["secret"])
            ids = {lead["id"] for lead in leads}
            assert {(p["type"], p["data"]["id"]) for p in payloads} == \
                {(t, i) for t in ("lead.created", "lead.stage_changed") for i in ids}
            # A resent delivery is the same event: the same webhook-id (an idempotent receiver drops it).
            with receiver.lock:
                by_id: dict[str, set[bytes]] = defaultdict(set)
                for got in receiver.requests:
                    by_id[got.webhook_id].add(got.body)
            assert set(by_id) == set(receiver.processed)
            assert all(len(bodies) == 1 for bodies in by_id.values())
    finally:
        receiver.hold.set()
        receiver.stop()


def test_a_slow_endpoint_does_not_hold_back_another(platform):
    admin = Client(platform)
    source = table_entry(admin, "sources", "SLO")
    slow, fast = Receiver(), Receiver()
    slow.hold = threading.Event()  # the slow endpoint answers nothing until the test lets it
    try:
        with subscription(admin, slow, event_types=["lead.created"], filter=f'source_id = "{source["id"]}"'), \
                subscription(admin, fast, event_types=["lead.created"], filter=f'source_id = "{source["id"]}"'):
            leads = [post(admin, "/v1/leads", {"title": f"Slow {i}", "source_id": source["id"]}) for i in range(12)]
            # Every fast delivery arrives while the slow endpoint still holds its first ones.
            fast.wait_for(lambda rc: len(rc.processed) >= 12, timeout=30, what="the fast endpoint's deliveries")
            assert not slow.hold.is_set() and len(slow.requests) == 0
            slow.hold.set()
            slow.wait_for(lambda rc: len(rc.processed) >= 12, timeout=120, what="the slow endpoint's deliveries")
            assert {r.json["data"]["id"] for r in fast.processed.values()} == {lead["id"] for lead in leads}
    finally:
        slow.hold.set()
        slow.stop()
        fast.stop()


# Loopback (127.0.0.1, [::1]) is allowed on test platforms, as in `make run`; the service's own tests
# refuse it with the production setting, at save time and at delivery (with a switched resolver).
@pytest.mark.parametrize("url", ["https://10.1.2.3/hook", "https://169.254.169.254/latest/meta-data",
                                 "https://192.168.0.10/hook", "http://example.com/x", "ftp://example.com/x"])
def test_targets_on_private_addresses_are_refused(platform, url):
    admin = Client(platform)
    r = admin("POST", "/v1/webhooks", json={"url": url, "event_types": ["*"]})
    assert r.status_code == 422, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["field"] == "url"


def test_webhooks_need_the_permission_and_stay_in_their_office(platform):
    admin = Client(platform)
    receiver = Receiver()
    try:
        marketing = Client(platform, roles=("marketing",), user="m1")
        assert marketing("GET", "/v1/webhooks").status_code == 403
        assert marketing("POST", "/v1/webhooks", json={"url": receiver.url, "event_types": ["*"]}).status_code == 403
        with subscription(admin, receiver, event_types=["*"]) as sub:
            assert admin("GET", f"/v1/webhooks/{sub['id']}").status_code == 200
            r = admin("PATCH", f"/v1/webhooks/{sub['id']}", json={"event_types": ["company.created"], "filter": "x ="})
            assert r.status_code == 422, r.text  # a filter is for record events only
            r = admin("PATCH", f"/v1/webhooks/{sub['id']}", json={"event_types": ["nope.created"]})
            assert r.status_code == 422 and admin("GET", f"/v1/webhooks/{sub['id']}").json()["event_types"] == ["*"]
    finally:
        receiver.stop()


def test_the_event_feed_shows_only_what_the_caller_may_see(platform):
    admin = Client(platform)
    source = table_entry(admin, "sources", "FEED")
    start = admin("GET", "/v1/events", params={"after": "latest"}).json()
    assert start["items"] == [] and start["next_cursor"].isdigit()
    here = post(admin, "/v1/leads", {"title": f"Feed here {uuid.uuid4().hex[:6]}", "source_id": source["id"]})
    elsewhere = Client(platform, roles=("admin",), user="a2", office="office-2")
    there = post(elsewhere, "/v1/leads", {"title": "Feed there", "source_id": source["id"]})

    def read(client: Client, token: str | None = None) -> list[dict]:
        items, cursor = [], start["next_cursor"]
        headers = {"Consistency-Token": token} if token else {}
        while True:
            r = client("GET", "/v1/events", params={"after": cursor, "types": "lead.created", "page_size": 500},
                       headers=headers)
            assert r.status_code == 200, r.text
            items += r.json()["items"]
            if r.json()["next_cursor"] == cursor:
                return items
            cursor = r.json()["next_cursor"]

    # The admin (every office) sees both at once: read-your-writes holds for the feed too.
    seen = {i["data"]["id"] for i in read(admin)}
    assert {here["id"], there["id"]} <= seen
    marketing = Client(platform, roles=("marketing",), user="m2", office="office-1")
    seen = {i["data"]["id"] for i in read(marketing)}
    assert here["id"] in seen and there["id"] not in seen  # another office's lead never shows
    viewer_elsewhere = Client(platform, roles=("account_manager",), user="v3", office="office-3")
    assert not {here["id"], there["id"]} & {i["data"]["id"] for i in read(viewer_elsewhere)}
    item = next(i for i in read(admin) if i["data"]["id"] == here["id"])
    assert item["type"] == "lead.created" and item["id"] and item["timestamp"].endswith("Z")
    r = admin("GET", "/v1/events", params={"types": "lead.nonsense"})
    assert r.status_code == 422
