"""Screen 6's Webhooks, in process, against a stand-in for the webhooks API (as the Import
screen's tests stand in for theirs): what the console sends, what it shows, and who may see it.

The page against the real platform, with a real receiver, is tested in a browser
(tests/e2e/console/test_webhooks.py)."""

from __future__ import annotations

import json
import re
from html import escape as html_escape
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from crm_console.app import create_app
from crm_console.gateway import ApiError, Gateway
from crm_console.views.webhooks import EVENT_TYPES
from crm_kit.settings import load_settings

SECRET = "whsec_c2VjcmV0LW9mLXRoZS1zdGFuZC1pbg=="  # noqa: S105 - the stand-in's, shown once
ROTATED = "whsec_cm90YXRlZC1zZWNyZXQtb2YtaXQ="  # noqa: S105
# The console gates on the permission, whichever roles carry it.
ROLES = {"admin": ["webhooks:admin", "leads:view"], "marketing": ["leads:view", "files:view"]}


class WebhooksApi:
    """The webhooks API's answers, kept in memory; every call is recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, dict[str, str]]] = []
        self.webhooks: dict[str, dict[str, Any]] = {}
        self.deliveries: list[dict[str, Any]] = []

    def add(self, **fields: Any) -> dict[str, Any]:
        webhook_id = f"wh-{len(self.webhooks) + 1}"
        self.webhooks[webhook_id] = {
            "id": webhook_id, "url": "https://hooks.example/in", "event_types": ["lead.created"], "filter": None,
            "active": True, "description": "", "disabled_reason": None, "disabled_at": None, "version": 1,
            "created_at": "2026-12-07T10:00:00Z", "created_by": "ann", "modified_at": "2026-12-07T10:00:00Z",
            "modified_by": "ann", "secret_hint": "n0Q=", "backlog": 0, "oldest_pending_at": None, **fields}
        return self.webhooks[webhook_id]

    def __call__(self, caller: Any, method: str, path: str, **kw: Any) -> requests.Response:
        """Stands in for ``Gateway.request`` (set on the class, so called without the gateway)."""
        body, headers = kw.get("json"), dict(kw.get("headers") or {})
        self.calls.append((method, path, body, headers))
        parts = path.removeprefix("/v1/webhooks").strip("/").split("/")
        if parts == [""]:
            return self._collection(method, body, kw.get("params") or {})
        webhook = self.webhooks.get(parts[0])
        if webhook is None:
            raise ApiError(404, {"title": "Not Found", "detail": "No such webhook."})
        action = parts[1] if len(parts) > 1 else ""
        if method in ("PATCH", "DELETE") and headers.get("If-Match") != f'"{webhook["version"]}"':
            raise ApiError(412, {"title": "Precondition Failed", "detail": "The webhook has changed."})
        if method == "GET" and not action:
            return _response(200, webhook)
        if method == "PATCH":
            self._check(body)
            webhook.update(body, version=webhook["version"] + 1)
            if body.get("active"):
                webhook.update(disabled_reason=None, disabled_at=None)
            return _response(200, webhook)
        if method == "DELETE":
            del self.webhooks[webhook["id"]]
            return _response(204, None)
        if action == "rotate-secret":
            webhook.update(previous_secret_valid_until="2026-12-08T10:00:00Z", version=webhook["version"] + 1)
            return _response(200, {"secret": ROTATED, "previous_valid_until": "2026-12-08T10:00:00Z"})
        if action == "test":
            return _response(202, {"event_id": "evt-test-1"})
        if action == "replay":
            if body["since"] > "2026-12-31":
                raise ApiError(422, {"detail": "Invalid.", "errors": [{"field": "since",
                                                                      "message": "since is in the future."}]})
            return _response(202, {"queued": 3})
        if action == "deliveries":
            params = kw.get("params") or {}
            start = int(params.get("page_token") or 0)
            size = int(params["page_size"])
            chosen = [d for d in self.deliveries if d["result"] == params.get("result", d["result"])]
            page = chosen[start:start + size]
            more = start + size < len(chosen)
            return _response(200, {"items": page, "next_page_token": str(start + size) if more else None})
        raise ApiError(404, {"detail": "not in this stand-in"})

    def _collection(self, method: str, body: Any, params: dict[str, Any]) -> requests.Response:
        if method == "GET":
            return _response(200, {"items": list(self.webhooks.values()), "next_page_token": None})
        self._check(body)
        created = self.add(**body, secret_hint=SECRET[-4:])
        return _response(201, {**created, "secret": SECRET})

    @staticmethod
    def _check(body: dict[str, Any]) -> None:
        if body.get("filter") == "stage_id ==":
            raise ApiError(422, {"detail": "filter: expected a value", "pointer": "stage_id ==\n           ^",
                                 "errors": [{"field": "filter", "message": "expected a value"}]})
        if str(body.get("url", "")).startswith("https://10."):
            raise ApiError(422, {"detail": "url: The URL resolves to a private address.", "errors": [
                {"field": "url", "message": "The URL resolves to a private address."}]})


def _response(status: int, body: Any) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = json.dumps(body).encode() if body is not None else b""
    resp.headers["Content-Type"] = "application/json"
    return resp


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> WebhooksApi:
    stand_in = WebhooksApi()
    monkeypatch.setattr(Gateway, "request", stand_in)
    return stand_in


@pytest.fixture
def client(api: WebhooksApi) -> FlaskClient:
    settings = load_settings("console", {
        "CRM_SERVICE_NAME": "console", "CRM_GATEWAY_URL": "http://127.0.0.1:9",
        "CRM_CONSOLE_SECRET_KEY": "test-console-key-0123456789abcdef",
        "CRM_JWT_SECRET": "test-secret-long-enough-for-hs256-signatures", "CRM_CONSOLE_DEV_SIGNIN": "true",
        "CRM_ROLE_PERMISSIONS": json.dumps(ROLES)})
    app = create_app(settings)
    app.config["TESTING"] = True
    return app.test_client()


def _token(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)  # type: ignore[union-attr]


def _sign_in(client: FlaskClient, roles: str = "admin") -> str:
    token = _token(client.get("/signin").get_data(as_text=True))
    client.post("/signin/dev", data={"user": "ann", "office": "office-1", "roles": roles, "csrf_token": token})
    return _token(client.get("/no-such-page").get_data(as_text=True))  # any page carries the session's token


def _writes(api: WebhooksApi) -> list[tuple[str, str, Any, dict[str, str]]]:
    return [c for c in api.calls if c[0] != "GET"]


def test_the_list_shows_each_webhook_with_its_status_and_backlog(client: FlaskClient, api: WebhooksApi) -> None:
    api.add(url="https://a.example/hook", event_types=["*"], filter='office_id = "office-1"', backlog=12,
            active=False, disabled_reason="No 2xx for 3 days (last: 503)", disabled_at="2026-12-04T08:00:00Z",
            oldest_pending_at="2026-12-01T07:30:05Z")
    api.add(url="https://b.example/hook", event_types=["lead.created", "lead.stage_changed"])
    _sign_in(client)
    html = client.get("/webhooks").get_data(as_text=True)
    assert '<a href="/webhooks" aria-current="page">Webhooks</a>' in html, "the nav entry"
    rows = re.findall(r"<tr>\s*<th scope=\"row\">.*?</tr>", html, flags=re.S)
    assert len(rows) == 2
    assert "All events" in rows[0] and "office_id = &#34;office-1&#34;" in rows[0]
    assert "Disabled" in rows[0] and "since 2026-12-04 08:00:00 UTC: No 2xx for 3 days (last: 503)" in rows[0]
    assert "<td>12</td>" in rows[0] and "2026-12-01 07:30:05 UTC" in rows[0]
    assert "lead.created, lead.stage_changed" in rows[1] and "Active" in rows[1] and "<td>0</td>" in rows[1]


def test_create_sends_the_form_and_shows_the_secret_once(client: FlaskClient, api: WebhooksApi) -> None:
    token = _sign_in(client)
    form = client.get("/webhooks/new").get_data(as_text=True)
    for event_type in ("lead.stage_changed", "opportunity.converted", "contact.role_changed", "job_order.unlinked",
                       "placement.deleted", "activity.created"):
        assert f'value="{event_type}"' in form, event_type
    resp = client.post("/webhooks/new", data={
        "csrf_token": token, "url": " https://hooks.example/crm ", "event_types": ["lead.created", "lead.converted"],
        "filter": 'office_id = "office-1"', "description": "", "active": "on"})
    assert resp.status_code == 200, "the answer itself shows the secret: no redirect, nothing flashed"
    html = resp.get_data(as_text=True)
    assert f'value="{SECRET}"' in html and "it will not be shown again" in html
    assert "Webhook https://hooks.example/crm created" in html
    assert resp.headers["Cache-Control"] == "no-store"
    assert _writes(api) == [("POST", "/v1/webhooks", {"url": "https://hooks.example/crm", "active": True,
                                                      "event_types": ["lead.created", "lead.converted"],
                                                      "filter": 'office_id = "office-1"'}, {})]
    webhook_id = next(iter(api.webhooks))
    page = client.get(f"/webhooks/{webhook_id}").get_data(as_text=True)
    assert SECRET not in page and "Ends in" in page
    assert SECRET not in client.get("/webhooks").get_data(as_text=True)


def test_all_events_is_sent_alone(client: FlaskClient, api: WebhooksApi) -> None:
    token = _sign_in(client)
    client.post("/webhooks/new", data={"csrf_token": token, "url": "https://hooks.example/all",
                                       "event_types": ["lead.created", "*"], "active": "on"})
    assert _writes(api)[0][2]["event_types"] == ["*"]


@pytest.mark.parametrize(("form", "field", "message"), [
    ({"url": "ftp://hooks.example/x", "event_types": ["lead.created"]}, "url", "starting with https://"),
    ({"url": "https://hooks.example/x"}, "event_types", "Choose at least one event type"),
    ({"url": "https://hooks.example/x", "event_types": ["lead.exploded"]}, "event_types", "from the list"),
])
def test_what_the_console_can_tell_is_shown_next_to_the_field_without_a_call(
        client: FlaskClient, api: WebhooksApi, form: dict[str, Any], field: str, message: str) -> None:
    token = _sign_in(client)
    resp = client.post("/webhooks/new", data={"csrf_token": token, **form})
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    error = re.search(rf'<p class="error" id="webhook-{field}-error">([^<]+)</p>', html)
    assert error and message in error.group(1)
    assert f'aria-describedby="webhook-{field}-error' in html
    assert _writes(api) == []


@pytest.mark.parametrize(("form", "field", "message"), [
    ({"url": "https://hooks.example/x", "filter": "stage_id =="}, "filter",
     "expected a value\nstage_id ==\n" + " " * 11 + "^"),  # the API's message, then its pointer
    ({"url": "https://10.0.0.8/x"}, "url", "The URL resolves to a private address."),
])
def test_the_apis_refusal_is_shown_next_to_its_field_with_the_form_kept(
        client: FlaskClient, api: WebhooksApi, form: dict[str, Any], field: str, message: str) -> None:
    token = _sign_in(client)
    resp = client.post("/webhooks/new", data={"csrf_token": token, "event_types": ["lead.created"], **form})
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert re.search(rf'class="error" id="webhook-{field}-error">{re.escape(html_escape(message))}<', html)
    assert f'aria-describedby="webhook-{field}-error' in html
    assert "The webhook was not saved: " in html
    assert 'value="lead.created" checked' in html and form["url"] in html
    assert not api.webhooks


def test_edit_patches_with_the_version_the_form_was_opened_at(client: FlaskClient, api: WebhooksApi) -> None:
    webhook = api.add(url="https://hooks.example/old", description="Old", filter='office_id = "o1"')
    token = _sign_in(client)
    form = client.get(f"/webhooks/{webhook['id']}").get_data(as_text=True)
    assert 'name="version" value="1"' in form and 'value="lead.created" checked' in form
    resp = client.post(f"/webhooks/{webhook['id']}", data={
        "csrf_token": token, "version": "1", "url": "https://hooks.example/new",
        "event_types": ["opportunity.stage_changed"], "filter": "", "description": "", "active": "on"})
    assert resp.status_code == 302 and resp.headers["Location"] == f"/webhooks/{webhook['id']}"
    assert _writes(api) == [("PATCH", f"/v1/webhooks/{webhook['id']}", {
        "url": "https://hooks.example/new", "event_types": ["opportunity.stage_changed"], "filter": None,
        "description": "", "active": True}, {"If-Match": '"1"'})]
    assert "Webhook https://hooks.example/new saved." in client.get(resp.headers["Location"]).get_data(as_text=True)


def test_a_stale_edit_says_someone_else_changed_it_and_offers_reload(client: FlaskClient, api: WebhooksApi) -> None:
    webhook = api.add(version=4)
    token = _sign_in(client)
    resp = client.post(f"/webhooks/{webhook['id']}", data={
        "csrf_token": token, "version": "3", "url": "https://hooks.example/mine", "event_types": ["lead.created"]})
    assert resp.status_code == 412
    html = resp.get_data(as_text=True)
    assert "Someone else changed this webhook" in html
    assert f'<a href="/webhooks/{webhook["id"]}">Reload</a>' in html
    assert 'value="https://hooks.example/mine"' in html, "what they typed stays in the form"


def test_delete_asks_first_and_sends_the_version(client: FlaskClient, api: WebhooksApi) -> None:
    webhook = api.add(version=2)
    token = _sign_in(client)
    page = client.get(f"/webhooks/{webhook['id']}").get_data(as_text=True)
    assert re.search(r'id="delete-form" data-confirm="Delete this webhook\?', page)
    resp = client.post(f"/webhooks/{webhook['id']}/delete", data={"csrf_token": token, "version": "2"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/webhooks"
    assert _writes(api) == [("DELETE", f"/v1/webhooks/{webhook['id']}", None, {"If-Match": '"2"'})]
    assert not api.webhooks


def test_a_disabled_webhook_says_why_and_can_be_re_enabled(client: FlaskClient, api: WebhooksApi) -> None:
    webhook = api.add(active=False, disabled_reason="No 2xx for 3 days", disabled_at="2026-12-04T08:00:00Z",
                      backlog=40, version=7)
    token = _sign_in(client)
    page = client.get(f"/webhooks/{webhook['id']}").get_data(as_text=True)
    assert "No 2xx for 3 days" in page and "Re-enable" in page and "receives its backlog" in page
    resp = client.post(f"/webhooks/{webhook['id']}/enable", data={"csrf_token": token, "version": "7"})
    assert resp.status_code == 302
    assert _writes(api) == [("PATCH", f"/v1/webhooks/{webhook['id']}", {"active": True}, {"If-Match": '"7"'})]
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "is active again" in page and ">Re-enable<" not in page


def test_rotating_the_secret_shows_the_new_one_once(client: FlaskClient, api: WebhooksApi) -> None:
    webhook = api.add()
    token = _sign_in(client)
    page = client.get(f"/webhooks/{webhook['id']}").get_data(as_text=True)
    assert re.search(r'rotate-secret" class="toolbar"\s+data-confirm="Rotate the secret\?', page)
    resp = client.post(f"/webhooks/{webhook['id']}/rotate-secret", data={"csrf_token": token})
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert f'value="{ROTATED}"' in html and "it will not be shown again" in html
    assert "The previous secret stays valid until 2026-12-08 10:00:00 UTC" in html
    page = client.get(f"/webhooks/{webhook['id']}").get_data(as_text=True)
    assert ROTATED not in page and "the previous secret also signs until 2026-12-08 10:00:00 UTC" in page


def test_send_test_reports_the_event(client: FlaskClient, api: WebhooksApi) -> None:
    webhook = api.add()
    token = _sign_in(client)
    resp = client.post(f"/webhooks/{webhook['id']}/test", data={"csrf_token": token})
    assert resp.status_code == 302
    assert _writes(api) == [("POST", f"/v1/webhooks/{webhook['id']}/test", None, {})]
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Test event evt-test-1 sent. Its delivery shows in the delivery log." in page


def test_replay_sends_the_time_in_utc_and_reports_how_many(client: FlaskClient, api: WebhooksApi) -> None:
    webhook = api.add()
    token = _sign_in(client)
    resp = client.post(f"/webhooks/{webhook['id']}/replay", data={"csrf_token": token, "since": "2026-12-06T09:30"})
    assert resp.status_code == 302
    assert _writes(api) == [("POST", f"/v1/webhooks/{webhook['id']}/replay", {"since": "2026-12-06T09:30:00Z"}, {})]
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "3 events since 2026-12-06 09:30:00 UTC queued for delivery again." in page


@pytest.mark.parametrize(("since", "message"), [("", "Enter the date and time"), ("yesterday", "Enter the date"),
                                                ("2027-01-02T00:00", "since is in the future.")])
def test_a_replay_time_that_does_not_work_is_explained_next_to_it(
        client: FlaskClient, api: WebhooksApi, since: str, message: str) -> None:
    webhook = api.add()
    token = _sign_in(client)
    resp = client.post(f"/webhooks/{webhook['id']}/replay", data={"csrf_token": token, "since": since})
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert re.search(rf'id="webhook-since-error">[^<]*{message}', html)
    assert 'aria-describedby="webhook-since-error webhook-since-hint" aria-invalid="true"' in html


def test_the_delivery_log_shows_attempts_and_pages(client: FlaskClient, api: WebhooksApi) -> None:
    webhook = api.add()
    api.deliveries = [{"id": f"d{i}", "event_id": f"evt-{i}", "event_type": "lead.created", "attempt": 1,
                       "at": f"2026-12-07T10:{59 - i:02d}:07Z", "status_code": 200, "duration_ms": 41.6,
                       "error": None, "result": "delivered"} for i in range(50)]
    api.deliveries.append({"id": "d50", "event_id": "evt-50", "event_type": "webhook.test", "attempt": 3,
                           "at": "2026-12-07T09:00:00Z", "status_code": None, "duration_ms": 10000,
                           "error": "timed out after 10 s", "result": "error"})
    _sign_in(client)
    html = client.get(f"/webhooks/{webhook['id']}/deliveries").get_data(as_text=True)
    rows = re.findall(r"<tr>\s*<td>.*?</tr>", html, flags=re.S)
    assert len(rows) == 50
    assert all(s in rows[0] for s in ("2026-12-07 10:59:07 UTC", "evt-0", "<td>200</td>", "42 ms", "Delivered"))
    assert f'<a href="/webhooks/{webhook["id"]}/deliveries?page_token=50">Next page</a>' in html
    html = client.get(f"/webhooks/{webhook['id']}/deliveries?page_token=50").get_data(as_text=True)
    rows = re.findall(r"<tr>\s*<td>.*?</tr>", html, flags=re.S)
    assert len(rows) == 1
    assert all(s in rows[0] for s in ("webhook.test", "<td>3</td>", "No answer", "timed out after 10 s", "Error"))
    assert "First page" in html and "Next page" not in html
    html = client.get(f"/webhooks/{webhook['id']}/deliveries?result=error").get_data(as_text=True)
    assert len(re.findall(r"<tr>\s*<td>.*?</tr>", html, flags=re.S)) == 1 and "evt-50" in html
    assert '<option value="error" selected>Error</option>' in html


def test_every_event_type_of_the_form_is_one_of_the_contract(client: FlaskClient) -> None:
    assert len(EVENT_TYPES) == 36 and "lead.stage_group_changed" in EVENT_TYPES and "*" not in EVENT_TYPES


def test_people_without_the_permission_see_no_webhooks(client: FlaskClient, api: WebhooksApi) -> None:
    webhook = api.add()
    token = _sign_in(client, "marketing")
    assert 'href="/webhooks"' not in client.get("/no-such-page").get_data(as_text=True)
    for path in ("/webhooks", "/webhooks/new", f"/webhooks/{webhook['id']}", f"/webhooks/{webhook['id']}/deliveries"):
        assert client.get(path).status_code == 403, path
    for action in ("test", "replay", "rotate-secret", "enable", "delete"):
        assert client.post(f"/webhooks/{webhook['id']}/{action}", data={"csrf_token": token}).status_code == 403
    assert api.calls == []


def test_the_pages_have_no_inline_script(client: FlaskClient, api: WebhooksApi) -> None:
    webhook = api.add(active=False, disabled_reason="down")
    token = _sign_in(client)
    pages = [client.get(p).get_data(as_text=True) for p in
             ("/webhooks", "/webhooks/new", f"/webhooks/{webhook['id']}", f"/webhooks/{webhook['id']}/deliveries")]
    pages.append(client.post(f"/webhooks/{webhook['id']}/rotate-secret", data={"csrf_token": token})
                 .get_data(as_text=True))
    for html in pages:
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
        assert not re.search(r"\son[a-z]+=", html) and " style=" not in html
