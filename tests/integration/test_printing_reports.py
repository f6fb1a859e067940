"""Templates, printing and reports of leads and opportunities, on SQLite and PostgreSQL.

Each service's app is built from its ServiceSpec, with the printing and reports Apis
registered onto it; its catalogue copy is fed with catalogue events (stages, tables,
templates) as its worker would.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from sqlalchemy import Table, select, update

from crm.events.v1.catalogue_pb2 import CatalogueEntry
from crm_catalogue_view import apply_catalogue_event
from crm_events.envelope import new_envelope
from crm_kit.cli import migrate
from crm_kit.db import Database
from crm_kit.service import find_service
from crm_kit.settings import load_settings
from crm_kit.web import issue_token
from crm_leads.kind import LEAD
from crm_opportunities.kind import OPPORTUNITY
from crm_pipeline.kind import RecordKind
from crm_pipeline.printing import HTML, PDF, PrintJob, RenderError, RenderLimits, render_isolated

pytestmark = pytest.mark.integration
SECRET = "printing-test-secret-long-enough-for-hs256"
KINDS = {"leads": LEAD, "opportunities": OPPORTUNITY}
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def auth(roles=("admin",), user="u1", office="o1") -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(SECRET, user_id=user, name=user.upper(), office_id=office,
                                                     roles=list(roles))}


VIEWER = auth(roles=("viewer",))  # office o1 only


class Service:
    """One records service's app (with printing and reports) and its database."""

    def __init__(self, name: str, db_url: str) -> None:
        spec = find_service(name)
        settings = load_settings("domain", {"CRM_SERVICE_NAME": name, "CRM_DATABASE_URL": db_url,
                                            "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": SECRET})
        migrate(spec, settings)
        self.kind: RecordKind = KINDS[name]
        self.tables: dict[str, Table] = {key: spec.metadata.tables[table] for key, table in (
            ("records", name), ("stage_history", "stage_history"), ("record_groups", "record_groups"),
            ("attachments", "attachments"))}
        self.client = spec.build_app(settings).test_client()
        self.db = Database(db_url)
        self.base = f"/v1/{name}"

    def put(self, kind: str, entity: str, code: str = "", *, active: bool = True, index: int = 0,
            **attributes: Any) -> str:
        """A catalogue entry as the catalogue's event carries it; templates have no kind or code."""
        entry_id = str(uuid.uuid4())
        attrs = Struct()
        attrs.update(attributes)
        names = {"en": code.title(), "nl": f"{code} (nl)"} if code else {}
        entry = CatalogueEntry(id=entry_id, kind=kind, entity=entity, code=code, names=names, index=index,
                               active=active, version=1, attributes=attrs)
        aggregate = entity if entity in ("stage", "template") else "table_entry"
        with self.db.transaction() as s:
            apply_catalogue_event(s, new_envelope(f"catalogue.{aggregate}.updated", aggregate, entry_id, 1, entry))
        return entry_id

    def seed(self, kind: str) -> dict[str, str]:
        ids = {"open": self.put(kind, "stage_groups", "OPEN"), "closed": self.put(kind, "stage_groups", "CLOSED")}
        ids["new"] = self.put(kind, "stage", "NEW", index=1, is_default=True, stage_group_id=ids["open"])
        ids["next"] = self.put(kind, "stage", "NEXT", index=2, stage_group_id=ids["open"])
        ids["won"] = self.put(kind, "stage", "WON", index=3, is_end=True, is_default_end=True,
                              stage_group_id=ids["closed"])
        ids["old"] = self.put(kind, "stage", "OLD", index=4, active=False, stage_group_id=ids["closed"])
        ids["web"] = self.put(kind, "sources", "WEB")
        return ids

    def template(self, template_kind: str, name: str, body: str, stage_ids: list[str], *,
                 visible_at: str | None = None, subject: str | None = None) -> str:
        return self.put("", "template", template_kind=template_kind, name=name, subject=subject, body=body,
                        visible_at=visible_at or f"{self.kind.kind}_stage", stage_ids=stage_ids)

    def create(self, headers: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
        r = self.client.post(self.base, json=fields, headers=headers or auth())
        assert r.status_code == 201, r.json
        return r.json

    def move(self, record: dict[str, Any], stage_id: str) -> None:
        r = self.client.patch(f"{self.base}/{record['id']}", json={"stage_id": stage_id}, headers=auth())
        assert r.status_code == 200, r.json

    def set_history(self, record: dict[str, Any], *times: dt.datetime) -> None:
        """Put the record's stage changes (oldest first) at ``times``."""
        history = self.tables["stage_history"]
        with self.db.transaction() as s:
            ids = list(s.execute(select(history.c.id).where(history.c.record_id == record["id"])
                                 .order_by(history.c.id)).scalars())
            assert len(ids) == len(times)
            for history_id, at in zip(ids, times, strict=True):
                s.execute(update(history).where(history.c.id == history_id).values(at=at))

    def set_times(self, record: dict[str, Any], **values: dt.datetime) -> None:
        table = self.tables["records"]
        with self.db.transaction() as s:
            s.execute(update(table).where(table.c.id == record["id"]).values(**values))


@pytest.fixture
def service(any_db_url):
    made: list[Service] = []

    def make(name: str) -> Service:
        made.append(Service(name, any_db_url))
        return made[-1]

    yield make
    for svc in made:
        svc.db.dispose()


def _print(svc: Service, record: dict[str, Any], template_id: str, accept: str | None = HTML) -> Any:
    headers = auth() | ({"Accept": accept} if accept else {})
    return svc.client.post(f"{svc.base}/{record['id']}/print", json={"template_id": template_id}, headers=headers)


@pytest.mark.parametrize("name", ["leads", "opportunities"])
def test_templates_at_the_current_stage_and_printing(service, name):
    svc = service(name)
    ids = svc.seed(svc.kind.kind)
    other = svc.seed("opportunity" if svc.kind is LEAD else "lead")
    var = svc.kind.kind  # the record is available as `lead` or `opportunity`, and as `record`
    sheet = svc.template("print", "Sheet", f"<h1>{{{{ {var}.title }}}}</h1><p>{{{{ record.stage.name }}}}</p>"
                                           "<p>[{{ record.no_such_field.deeper }}]</p>", [ids["new"]])
    intro = svc.template("email", "Intro", "Dear {{ record.title }}", [ids["new"]], subject="Hi {{ record.title }}")
    offer = svc.template("document", "Offer", "Offer for {{ record.title }}", [ids["next"]])
    svc.template("print", "Unlinked", "x", [])
    svc.template("print", "Other kind", "x", [other["new"]], visible_at=f"{'opportunity' if var == 'lead' else 'lead'}"
                                                                          "_stage")
    record = svc.create(title="<script>alert(1)</script> & Co")
    url = f"{svc.base}/{record['id']}"

    # Listed: only the templates of this kind's stages linked to the record's current stage.
    r = svc.client.get(f"{url}/templates", headers=VIEWER)
    assert r.status_code == 200, r.json
    assert r.json == {"items": [{"id": intro, "kind": "email", "name": "Intro", "subject": "Hi {{ record.title }}"},
                                {"id": sheet, "kind": "print", "name": "Sheet", "subject": None}],
                      "next_page_token": None}
    assert [t["id"] for t in svc.client.get(f"{url}/templates?kind=print", headers=VIEWER).json["items"]] == [sheet]
    assert svc.client.get(f"{url}/templates?kind=document", headers=VIEWER).json["items"] == []
    assert svc.client.get(f"{url}/templates?kind=sms", headers=VIEWER).status_code == 422
    assert svc.client.get(f"{url}/templates", headers=auth(roles=("viewer",), office="o2")).status_code == 404

    # HTML: the record's title, autoescaped, in a minimal document; a missing field is empty.
    r = _print(svc, record, sheet)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    page = r.get_data(as_text=True)
    assert page.startswith("<!DOCTYPE html>") and "<title>Sheet</title>" in page
    assert "<h1>&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co</h1><p>New</p><p>[]</p>" in page
    assert "<script>" not in page
    assert _print(svc, record, sheet, accept=None).headers["Content-Type"] == "text/html; charset=utf-8"
    assert _print(svc, record, sheet, accept="text/*").status_code == 200

    # PDF when Accept prefers it; 406 when Accept allows neither.
    for accept in (PDF, f"{PDF}, {HTML};q=0.5"):
        r = _print(svc, record, sheet, accept=accept)
        assert r.status_code == 200, r.get_data(as_text=True)
        assert r.headers["Content-Type"] == PDF and r.data.startswith(b"%PDF")
        assert r.headers["Content-Disposition"] == 'inline; filename="Sheet.pdf"'
    r = _print(svc, record, sheet, accept="application/json")
    assert r.status_code == 406 and r.headers["Content-Type"] == "application/problem+json"

    # Only templates visible at the current stage can be printed.
    for template_id in (offer, "no-such-template", ids["new"]):
        r = _print(svc, record, template_id)
        assert r.status_code == 422 and r.json["errors"][0]["field"] == "template_id", r.json
    svc.move(record, ids["next"])
    assert _print(svc, record, sheet).status_code == 422
    r = _print(svc, record, offer)
    assert r.status_code == 200 and "Offer for &lt;script&gt;" in r.get_data(as_text=True)
    assert svc.client.post(f"{url}/print", json={}, headers=auth()).status_code == 422
    assert svc.client.post(f"{url}/print", json={"template_id": offer}, headers=auth(roles=("viewer",),
                                                                                     office="o2")).status_code == 404


@pytest.mark.parametrize("name", ["leads", "opportunities"])
def test_the_sandbox_refuses_python_internals_and_broken_templates_are_422(service, name):
    svc = service(name)
    ids = svc.seed(svc.kind.kind)
    record = svc.create(title="Sandboxed")
    refused = ["{{ record.__class__.__mro__ }}", "{{ ''.__class__.__subclasses__() }}",
               "{{ cycler.__init__.__globals__ }}", "{{ record|attr('__class__') }}", "{{ record['__class__'] }}",
               "{{ self._TemplateReference__context }}", "{% set x = record.update({'title': 'x'}) %}"]
    for body in refused:
        r = _print(svc, record, svc.template("print", "Escape", body, [ids["new"]]))
        assert r.status_code == 422, (body, r.get_data(as_text=True))
        assert r.headers["Content-Type"] == "application/problem+json"
        assert "not allowed" in r.json["detail"] or "unsafe" in r.json["detail"], (body, r.json)
    # What the sandbox lets through renders harmlessly: no attribute of Python's reaches the page.
    harmless = svc.template("print", "Harmless", "[{{ record.mro }}][{{ record.title|upper }}]", [ids["new"]])
    r = _print(svc, record, harmless)
    assert r.status_code == 200 and "[][SANDBOXED]" in r.get_data(as_text=True)

    broken = {"{% if %}": "Line 1", "{{ record.title }\n{{ x }}": "Line 1", "{{ 1 / 0 }}": "ZeroDivisionError",
              "{% include 'other' %}": "loader", "{{ record.title() }}": "not callable",
              "{% for i in range(10**9) %}{% endfor %}": "range"}
    for body, why in broken.items():
        for accept in (HTML, PDF):
            r = _print(svc, record, svc.template("print", "Broken", body, [ids["new"]]), accept=accept)
            assert r.status_code == 422, (body, r.get_data(as_text=True))
            assert why in r.json["detail"], (body, r.json)
    # What the PDF library cannot do is a 422 too: it loads no files and no URLs.
    r = _print(svc, record, svc.template("print", "Image", '<img src="/etc/hostname">', [ids["new"]]), accept=PDF)
    assert r.status_code == 422 and "files or URLs" in r.json["detail"], r.json


def test_rendering_is_limited_in_time_memory_and_size():
    def job(body: str, **limits: Any) -> PrintJob:
        return PrintJob(body=body, title="T", variables=("record",), record={"title": "x"}, media_type=HTML,
                        limits=RenderLimits(**limits))

    assert b"<p>x</p>" in render_isolated(job("<p>{{ record.title }}</p>"))
    started = time.monotonic()
    with pytest.raises(RenderError, match="more than 1 s of CPU"):
        render_isolated(job("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
                            seconds=1))
    assert time.monotonic() - started < 15  # 1 s of CPU, however busy the machine is
    with pytest.raises(RenderError, match="longer than 1 s"):  # the wall-clock bound holds too
        render_isolated(job("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
                            seconds=30, wall_seconds=1))
    with pytest.raises(RenderError, match="MiB"):
        render_isolated(job("{{ 'x' * 300000000 }}", memory_bytes=64 * 2**20))
    with pytest.raises(RenderError, match="larger than 1000 bytes"):
        render_isolated(job("{% for a in range(1000) %}xx{% endfor %}", output_bytes=1000))
    # The worker is fine afterwards.
    assert b"<p>x</p>" in render_isolated(job("<p>{{ record.title }}</p>"))


def _by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in items}


@pytest.mark.parametrize("name", ["leads", "opportunities"])
def test_stage_report_counts_sums_and_medians(service, name):
    svc = service(name)
    ids = svc.seed(svc.kind.kind)
    money = svc.kind.money
    a = svc.create(title="A", **({"amount": "1000.00", "probability": 50} if money else {}))
    b = svc.create(title="B", **({"amount": "99.99", "probability": 33} if money else {}))
    c = svc.create(title="C")
    d = svc.create(title="D other office", office_id="o2", **({"amount": "5.00", "probability": 100} if money
                                                                else {}))
    svc.move(a, ids["next"])
    svc.move(b, ids["next"])
    svc.move(b, ids["won"])
    # History at known times: NEW stays 100 s (A), 300 s (B) and C's ongoing one; NEXT 100 s (B)
    # and A's ongoing one; WON B's ongoing one. D (another office) must not count for a viewer.
    svc.set_history(a, T0, T0 + dt.timedelta(seconds=100))
    svc.set_history(b, T0, T0 + dt.timedelta(seconds=300), T0 + dt.timedelta(seconds=400))
    svc.set_history(c, T0 + dt.timedelta(seconds=50))
    svc.set_history(d, T0)

    before = dt.datetime.now(dt.UTC)
    r = svc.client.get(f"{svc.base}/reports/stages", headers={**VIEWER, "Accept-Language": "nl"})
    after = dt.datetime.now(dt.UTC)
    assert r.status_code == 200, r.json
    report = r.json
    stages = _by_id(report["stages"])
    assert [s["id"] for s in report["stages"]] == [ids["new"], ids["next"], ids["won"]]  # OLD: inactive and empty
    assert stages[ids["new"]]["name"] == "NEW (nl)" and stages[ids["new"]]["code"] == "NEW"
    assert stages[ids["next"]]["stage_group_id"] == ids["open"]
    assert {k: s["count"] for k, s in stages.items()} == {ids["new"]: 1, ids["next"]: 1, ids["won"]: 1}

    def since(seconds: float) -> tuple[float, float]:
        start = T0 + dt.timedelta(seconds=seconds)
        return (before - start).total_seconds(), (after - start).total_seconds()

    assert stages[ids["new"]]["median_seconds_in_stage"] == 300.0
    low, high = since(100)
    assert (100 + low) / 2 - 0.01 <= stages[ids["next"]]["median_seconds_in_stage"] <= (100 + high) / 2 + 0.01
    low, high = since(400)
    assert low - 0.01 <= stages[ids["won"]]["median_seconds_in_stage"] <= high + 0.01

    groups = _by_id(report["stage_groups"])
    assert groups[ids["open"]]["count"] == 2 and groups[ids["closed"]]["count"] == 1
    assert groups[ids["open"]]["name"] == "OPEN (nl)"
    assert report["total"]["count"] == 3
    if money:
        assert [(s["amount_sum"], s["weighted_amount_sum"]) for s in report["stages"]] == [
            ("0.00", "0.00"), ("1000.00", "500.00"), ("99.99", "33.00")]  # 99.99 * 33% = 32.9967
        assert (groups[ids["open"]]["amount_sum"], groups[ids["open"]]["weighted_amount_sum"]) == ("1000.00",
                                                                                                   "500.00")
        assert (groups[ids["closed"]]["amount_sum"], groups[ids["closed"]]["weighted_amount_sum"]) == ("99.99",
                                                                                                       "33.00")
        assert (report["total"]["amount_sum"], report["total"]["weighted_amount_sum"]) == ("1099.99", "533.00")
    else:
        assert "amount_sum" not in report["stages"][0] and "amount_sum" not in report["total"]

    # An admin sees every office: D counts, and its NEW stay (ongoing) joins the median.
    admin = svc.client.get(f"{svc.base}/reports/stages", headers=auth()).json
    stages = _by_id(admin["stages"])
    assert stages[ids["new"]]["count"] == 2 and admin["total"]["count"] == 4
    assert stages[ids["new"]]["median_seconds_in_stage"] > 300
    if money:
        assert admin["total"]["amount_sum"] == "1104.99" and admin["total"]["weighted_amount_sum"] == "538.00"
    assert svc.client.get(f"{svc.base}/reports/stages", headers=auth(roles=("nobody",))).status_code == 403


def test_lead_funnel(service):
    svc = service("leads")
    ids = svc.seed("lead")
    svc.seed("opportunity")  # conversion needs the default opportunity stage in the copy
    l1 = svc.create(title="L1", source_id=ids["web"])
    l2 = svc.create(title="L2", source_id=ids["web"], owner_id="u2")
    l3 = svc.create(title="L3")
    l4 = svc.create(title="L4 other office", office_id="o2")
    r = svc.client.post(f"/v1/leads/{l1['id']}/convert", json={}, headers=auth())
    assert r.status_code == 201, r.json
    svc.set_times(l1, created_at=T0, converted_at=T0 + dt.timedelta(hours=1))
    svc.set_times(l2, created_at=T0 + dt.timedelta(minutes=10))
    svc.set_times(l3, created_at=T0 + dt.timedelta(days=2))
    svc.set_times(l4, created_at=T0)

    funnel = svc.client.get("/v1/leads/reports/funnel", headers=VIEWER).json
    assert {k: funnel[k] for k in ("from", "to", "created", "converted", "conversion_rate",
                                   "median_seconds_to_convert")} == {
        "from": None, "to": None, "created": 3, "converted": 1, "conversion_rate": 0.3333,
        "median_seconds_to_convert": 3600.0}
    assert funnel["by_source"] == [
        {"source_id": ids["web"], "created": 2, "converted": 1, "conversion_rate": 0.5,
         "median_seconds_to_convert": 3600.0},
        {"source_id": None, "created": 1, "converted": 0, "conversion_rate": 0.0, "median_seconds_to_convert": None}]
    assert funnel["by_owner"] == [
        {"owner_id": "u1", "created": 2, "converted": 1, "conversion_rate": 0.5, "median_seconds_to_convert": 3600.0},
        {"owner_id": "u2", "created": 1, "converted": 0, "conversion_rate": 0.0, "median_seconds_to_convert": None}]

    window = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00+00:00"}
    funnel = svc.client.get("/v1/leads/reports/funnel", query_string=window, headers=VIEWER).json
    assert (funnel["from"], funnel["to"]) == ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")
    assert (funnel["created"], funnel["converted"], funnel["conversion_rate"]) == (2, 1, 0.5)
    funnel = svc.client.get("/v1/leads/reports/funnel", query_string={"from": "2026-01-01T00:00:01Z"},
                            headers=VIEWER).json
    assert (funnel["created"], funnel["converted"], funnel["conversion_rate"]) == (2, 0, 0.0)
    funnel = svc.client.get("/v1/leads/reports/funnel", query_string={"to": "2025-01-01T00:00:00Z"},
                            headers=VIEWER).json
    assert (funnel["created"], funnel["conversion_rate"], funnel["by_source"]) == (0, None, [])
    assert svc.client.get("/v1/leads/reports/funnel", headers=auth()).json["created"] == 4
    for bad in ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, {"from": "yesterday"},
                {"from": "2026-01-01T00:00:00"}, {"since": "2026-01-01T00:00:00Z"}):
        r = svc.client.get("/v1/leads/reports/funnel", query_string=bad, headers=VIEWER)
        assert r.status_code == 422, (bad, r.json)


@pytest.mark.parametrize("name", ["leads", "opportunities"])
def test_an_administrator_previews_an_unsaved_template(service, name):
    svc = service(name)
    svc.seed(svc.kind.kind)
    record = svc.create(title="Previewed <b>")
    url = f"{svc.base}/{record['id']}/print"
    body = f"<h1>{{{{ {svc.kind.kind}.title }}}}</h1>"
    # Rendered in the sandbox, whatever its visibility (it is stored nowhere), escaped as a saved one is.
    r = svc.client.post(url, json={"template": {"kind": "print", "body": body}}, headers=auth())
    assert r.status_code == 200, r.get_data(as_text=True)
    assert "<h1>Previewed &lt;b&gt;</h1>" in r.get_data(as_text=True)
    assert r.headers["Content-Security-Policy"].startswith("sandbox")
    r = svc.client.post(url, json={"template": {"kind": "email", "subject": "Hi", "body": "x"}},
                        headers=auth() | {"Accept": PDF})
    assert r.status_code == 200 and r.data.startswith(b"%PDF")
    r = svc.client.post(url, json={"template": {"kind": "print"}}, headers=auth())  # an empty body, as saved
    assert r.status_code == 200 and "<body>" in r.get_data(as_text=True)
    # A syntax error names its line, as the catalogue's 422 on save does.
    r = svc.client.post(url, json={"template": {"kind": "print", "body": "a\nb\n{% if %}\n"}}, headers=auth())
    assert r.status_code == 422, r.json
    assert r.json["errors"] == [{"field": "template.body", "line": 3, "message": r.json["errors"][0]["message"]}]
    assert r.json["errors"][0]["message"].startswith("Line 3:")
    # The sandbox is the same one.
    r = svc.client.post(url, json={"template": {"kind": "print", "body": "{{ record.__class__ }}"}}, headers=auth())
    assert r.status_code == 422 and "not allowed" in r.json["detail"]
    # Only catalogue:admin; never both or neither; the body's limit holds.
    viewer = svc.client.post(url, json={"template": {"kind": "print", "body": "x"}}, headers=VIEWER)
    assert viewer.status_code == 403, viewer.json
    for bad in ({}, {"template_id": "x", "template": {"kind": "print", "body": "x"}},
                {"template": {"kind": "sms", "body": "x"}}, {"template": {"body": "x"}},
                {"template": {"kind": "print", "body": "x" * 500_001}}):
        assert svc.client.post(url, json=bad, headers=auth()).status_code == 422, bad
