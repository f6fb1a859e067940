"""Screen 6's Webhooks in Chromium against the real platform: a webhook made in the form to a real
HTTP receiver on loopback (the test stack allows http to loopback, CRM_WEBHOOK_ALLOW_LOOPBACK),
its secret shown once, **Send test** delivered to the receiver - signed with that secret - and
shown as delivered in the delivery log, then deleted after the confirmation; edit (If-Match),
**Replay since** and **Rotate secret** in the form; a marketing user sees no Webhooks entry and
gets 403; axe-core on each screen.

The webhook is filtered to the test's own office and is deleted at the end, so it never carries
the events of other tests on the shared platform."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, expect
from standardwebhooks.webhooks import Webhook
from webhook_receiver import Receiver  # tests/e2e: a real HTTP receiver on loopback

WAIT_SECONDS = 30.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    try:
        yield found
    finally:
        found.stop()


def _wait_for(check: Callable[[], Any], what: str) -> Any:
    """A bounded wait for another actor's write (the worker logs the attempt after the receiver answered)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_a_webhook_made_in_the_form_gets_a_signed_test_event_and_logs_it(
        page: Page, console: Any, receiver: Receiver) -> None:
    tag = uuid.uuid4().hex[:8]
    user, office = f"u-{tag}", f"o-{tag}"
    who = {"office": office, "roles": ("admin",)}
    description = f"E2E receiver {tag}"

    console.sign_in(page, user, office, "admin")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()
    console.assert_accessible(page, "webhooks list")
    page.get_by_role("link", name="New", exact=True).click()
    expect(page.get_by_role("heading", name="New webhook", level=1)).to_be_visible()
    console.assert_accessible(page, "new webhook")
    page.get_by_label("URL").fill(receiver.url)
    page.get_by_label("lead.created", exact=True).check()
    page.get_by_label("lead.stage_changed", exact=True).check()
    page.get_by_label("Record filter").fill(f'office_id = "{office}"')
    page.get_by_label("Description").fill(description)
    page.get_by_role("button", name="Create").click()

    # The secret, once.
    expect(page.get_by_role("heading", name=f"Webhook {receiver.url} created", level=1)).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Copy the secret now: it will not be shown again.")
    secret = page.get_by_label("Secret").input_value()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/=]+", secret), secret
    console.assert_accessible(page, "webhook secret")
    webhook = next(w for w in console.call("GET", "/webhooks", user, **who)["items"]
                   if w.get("description") == description)
    try:
        assert webhook["url"] == receiver.url and webhook["active"] is True
        assert sorted(webhook["event_types"]) == ["lead.created", "lead.stage_changed"]
        assert webhook["filter"] == f'office_id = "{office}"'
        assert "secret" not in webhook

        page.get_by_role("link", name="Back to the webhook").click()
        expect(page.get_by_role("heading", name=f"Webhook {receiver.url}", level=1)).to_be_visible()
        expect(page.get_by_text(f"Ends in {webhook['secret_hint']}")).to_be_visible()
        assert secret not in page.content(), "the secret is not shown again"
        console.assert_accessible(page, "webhook")

        # Send test: the receiver gets it, signed with the secret it was shown.
        page.get_by_role("button", name="Send test").click()
        status = page.get_by_role("status")
        expect(status).to_contain_text("Its delivery shows in the delivery log.")
        event_id = re.search(r"Test event (\S+) sent\.", status.inner_text()).group(1)  # type: ignore[union-attr]
        receiver.wait_for(lambda got: event_id in got.processed, WAIT_SECONDS, f"the test event {event_id}")
        payloads = receiver.verified(secret)  # the Standard Webhooks reference verifier, with the secret shown once
        assert [p["type"] for p in payloads] == ["webhook.test"]

        # The delivery log shows the attempt as delivered (the worker's write, after the answer).
        _wait_for(lambda: [a for a in console.call("GET", f"/webhooks/{webhook['id']}/deliveries", user, **who)["items"]
                           if a["event_id"] == event_id and a["result"] == "delivered"], "the delivered attempt")
        page.get_by_role("navigation", name="This webhook").get_by_role("link", name="Delivery log").click()
        expect(page.get_by_role("heading", name="Delivery log", level=1)).to_be_visible()
        row = page.get_by_role("row").filter(has_text=event_id)
        expect(row).to_have_count(1)
        for text in ("webhook.test", "200", "Delivered"):
            expect(row).to_contain_text(text)
        console.assert_accessible(page, "delivery log")
        console.screenshot(page, "webhooks")

        # The list shows it, active, with nothing pending.
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
        listed = page.get_by_role("row").filter(has=page.get_by_role("link", name=receiver.url))
        expect(listed).to_contain_text("lead.created, lead.stage_changed")
        expect(listed).to_contain_text("Active")

        # Delete asks first: dismissed, nothing happens; accepted, it is gone.
        listed.get_by_role("link", name=receiver.url).click()
        page.once("dialog", lambda dialog: dialog.dismiss())
        page.get_by_role("button", name="Delete", exact=True).click()
        expect(page.get_by_role("heading", name=f"Webhook {receiver.url}", level=1)).to_be_visible()
        console.call("GET", f"/webhooks/{webhook['id']}", user, **who)
        questions: list[str] = []

        def accept(dialog: Dialog) -> None:
            questions.append(dialog.message)
            dialog.accept()

        page.once("dialog", accept)
        page.get_by_role("button", name="Delete", exact=True).click()
        expect(page.get_by_role("status")).to_contain_text(f"Webhook {receiver.url} deleted.")
        assert questions and questions[0].startswith("Delete this webhook?")
        console.call("GET", f"/webhooks/{webhook['id']}", user, expect_status=404, **who)
    finally:
        if any(w["id"] == webhook["id"] for w in console.call("GET", "/webhooks", user, **who)["items"]):
            console.call("DELETE", f"/webhooks/{webhook['id']}", user, **who)


def test_edit_replay_and_rotate_secret_in_the_form(page: Page, console: Any, receiver: Receiver) -> None:
    tag = uuid.uuid4().hex[:8]
    user, office = f"u-{tag}", f"o-{tag}"
    who = {"office": office, "roles": ("admin",)}
    webhook = console.call("POST", "/webhooks", user, json={
        "url": receiver.url, "event_types": ["lead.created"], "filter": f'office_id = "{office}"',
        "description": f"Edited {tag}"}, **who)
    try:
        console.sign_in(page, user, office, "admin")
        console.open(page, f"/webhooks/{webhook['id']}")

        # Edit (If-Match on the version the form was opened at): inactive, then active again.
        page.get_by_label("Description").fill(f"Renamed {tag}")
        page.get_by_label("Active").uncheck()
        page.get_by_role("button", name="Save", exact=True).click()
        expect(page.get_by_role("status")).to_contain_text(f"Webhook {receiver.url} saved.")
        saved = console.call("GET", f"/webhooks/{webhook['id']}", user, **who)
        assert (saved["description"], saved["active"], saved["version"]) == (f"Renamed {tag}", False, 2)
        assert saved["event_types"] == ["lead.created"] and saved["filter"] == f'office_id = "{office}"'
        expect(page.get_by_label("Active")).not_to_be_checked()
        page.get_by_label("Active").check()
        page.get_by_role("button", name="Save", exact=True).click()
        expect(page.get_by_role("status")).to_contain_text(f"Webhook {receiver.url} saved.")
        assert console.call("GET", f"/webhooks/{webhook['id']}", user, **who)["active"] is True

        # A lead of the office reaches the receiver; Replay since a minute before sends it again.
        since = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
        lead = console.call("POST", "/leads", user, json={"title": f"Replayed {tag}"}, **who)

        def lead_events(got: Receiver) -> list[Any]:
            return [r for r in got.requests if r.json["type"] == "lead.created" and r.json["data"]["id"] == lead["id"]]

        receiver.wait_for(lambda got: len(lead_events(got)) >= 1, WAIT_SECONDS, "the lead's event")
        live = len(lead_events(receiver))  # at least once: a redelivery may come too
        page.get_by_label("Replay since (UTC)").fill(since)
        page.get_by_role("button", name="Replay", exact=True).click()
        expect(page.get_by_role("status")).to_contain_text("queued for delivery again.")
        queued = re.search(r"(\d+) events? since", page.get_by_role("status").inner_text())
        assert queued and int(queued.group(1)) >= 1, page.get_by_role("status").inner_text()
        receiver.wait_for(lambda got: len(lead_events(got)) > live, WAIT_SECONDS, "the lead's event again")
        ids = {r.webhook_id for r in lead_events(receiver)}
        assert len(ids) == 1, f"the same webhook-id each time (receivers drop it as a duplicate): {ids}"

        # Rotate secret asks first, then shows the new one once; deliveries are signed with it.
        questions: list[str] = []

        def accept(dialog: Dialog) -> None:
            questions.append(dialog.message)
            dialog.accept()

        page.once("dialog", accept)
        page.get_by_role("button", name="Rotate secret").click()
        expect(page.get_by_role("heading", name=f"New secret for {receiver.url}", level=1)).to_be_visible()
        assert questions and questions[0].startswith("Rotate the secret?")
        expect(page.get_by_role("alert")).to_contain_text("it will not be shown again")
        expect(page.get_by_text("The previous secret stays valid until")).to_be_visible()
        secret = page.get_by_label("Secret").input_value()
        assert secret.startswith("whsec_") and secret != webhook["secret"]
        page.get_by_role("link", name="Back to the webhook").click()
        expect(page.get_by_text(f"Ends in {secret[-4:]}")).to_be_visible()
        expect(page.get_by_text("the previous secret also signs until")).to_be_visible()
        assert secret not in page.content()
        page.get_by_role("button", name="Send test").click()
        expect(page.get_by_role("status")).to_contain_text("Its delivery shows in the delivery log.")
        text = page.get_by_role("status").inner_text()
        event_id = re.search(r"Test event (\S+) sent\.", text).group(1)  # type: ignore[union-attr]
        receiver.wait_for(lambda got: event_id in got.processed, WAIT_SECONDS, f"the test event {event_id}")
        tested = receiver.processed[event_id]
        assert Webhook(secret).verify(tested.body, tested.headers)["type"] == "webhook.test"
    finally:
        console.call("DELETE", f"/webhooks/{webhook['id']}", user, **who)


def test_a_marketing_user_sees_no_webhooks(page: Page, console: Any) -> None:
    console.assert_administrators_only(page, "Webhooks", ("/webhooks", "/webhooks/new"))
