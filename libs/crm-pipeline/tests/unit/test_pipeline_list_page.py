"""A list page (GET /v1/leads) through the service's own app on SQLite: one statement per page
(the page, with each row's stage version and group ids), the catalogue copy read again only
when a page meets a stage version the process has not seen, and what the page shows when a
stage is renamed, deleted or unknown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from pipeline_world import ACTOR, Pipeline
from sqlalchemy import event

from crm.events.v1.catalogue_pb2 import CatalogueEntry
from crm_catalogue_view import apply_catalogue_event
from crm_events.envelope import new_envelope
from crm_kit.service import find_service
from crm_kit.settings import load_settings
from crm_kit.web import issue_token

SECRET = "list-page-test-secret-long-enough-for-hs256"


@pytest.fixture
def page(leads: Pipeline) -> Iterator[Any]:
    """GET /v1/leads (as a marketer of office o1) -> (status, body, statements run)."""
    settings = load_settings("domain", {"CRM_SERVICE_NAME": "leads", "CRM_DATABASE_URL": leads.db.url,
                                        "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": SECRET,
                                        "CRM_LOG_FORMAT": "text"})
    app = find_service("leads").build_app(settings)
    client = app.test_client()
    token = issue_token(SECRET, user_id="alice", name="Alice", office_id="o1", roles=["marketing"])
    statements: list[str] = []
    engine = app.extensions["crm"].database.engine
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, sql, *_: statements.append(sql))

    def get(**query: str) -> tuple[int, dict[str, Any], list[str]]:
        statements.clear()
        resp = client.get("/v1/leads", query_string={"order_by": "title", **query},
                          headers={"Authorization": f"Bearer {token}"})
        return resp.status_code, resp.get_json(), [s for s in statements if s.lstrip().upper().startswith("SELECT")]

    yield get
    app.extensions["crm"].database.dispose()


def stage_event(world: Pipeline, code: str, version: int, *, deleted: bool = False, **attributes: Any) -> None:
    """A newer version of stage ``code`` reaches the copy (renamed to ``code.title() + ' v<version>'``)."""
    attrs = Struct()
    attrs.update(attributes)
    entry_id = world.ids[code.lower()]
    entry = CatalogueEntry(id=entry_id, kind="lead", entity="stage", code=code,
                           names={"en": f"{code.title()} v{version}"}, index=1, active=True, version=version,
                           deleted=deleted, attributes=attrs)
    with world.db.transaction() as s:
        apply_catalogue_event(s, new_envelope("catalogue.stage.updated", "stage", entry_id, version, entry))


def create(world: Pipeline, title: str, **data: Any) -> Any:
    with world.db.transaction() as s:
        return world.records.create(s, {"title": title, "office_id": "o1", **data}, ACTOR)


def test_a_page_is_one_statement_and_reads_the_catalogue_only_for_new_stage_versions(leads, page):
    groups = [leads.put("groups", code) for code in ("ZED", "ALPHA", "MID")]
    create(leads, "A", group_ids=[leads.ids["vip"], *groups])
    create(leads, "B", stage_id=leads.ids["next"])

    status, body, first = page()
    assert status == 200
    assert [(i["title"], i["stage"]["name"], i["group_ids"]) for i in body["items"]] == [
        ("A", "New", sorted([leads.ids["vip"], *groups])), ("B", "Next", [])]
    assert len(first) == 2  # the page, and the stages (the first time this process sees them)

    _, again, statements = page()
    assert again == body
    assert len(statements) == 1  # the page alone: its rows bring their groups, the stages are known

    stage_event(leads, "NEW", 2, color="#000000")
    _, renamed, statements = page()
    assert len(statements) == 2  # a version not seen before: the stages are read once more
    assert renamed["items"][0]["stage"] == {"id": leads.ids["new"], "name": "New v2", "code": "NEW",
                                            "color": "#000000", "is_end": False, "remarks": None}
    assert renamed["items"][1] == body["items"][1]
    assert len(page()[2]) == 1


def test_a_deleted_or_unknown_stage_is_shown_as_unknown_on_every_page(leads, page):
    create(leads, "A")
    create(leads, "B", stage_id=leads.ids["next"])
    page()
    stage_event(leads, "NEXT", 2, deleted=True)
    unknown = {"id": leads.ids["next"], "name": "", "code": "", "color": None, "is_end": False, "remarks": None}
    for _ in range(2):
        _, body, _ = page()
        assert [i["stage"] for i in body["items"]] == [body["items"][0]["stage"], unknown]
        assert body["items"][0]["stage"]["name"] == "New"
    assert len(page()[2]) == 1  # the deleted version is remembered as unknown

