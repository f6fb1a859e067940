"""GET /v1/{records}/overview: the tab counts and the board of one tab (per stage: count, and for
opportunities amount and weighted amount), in each records service's own app, on SQLite and
PostgreSQL. The service's catalogue copy is fed with catalogue events as its worker would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from sqlalchemy import Table, update

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

pytestmark = pytest.mark.integration
SECRET = "overview-test-secret-long-enough-for-hs256"
KINDS = {"leads": LEAD, "opportunities": OPPORTUNITY}


def auth(roles: tuple[str, ...] = ("admin",), user: str = "u1", office: str = "o1") -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(SECRET, user_id=user, name=user.upper(), office_id=office,
                                                     roles=list(roles))}


ADMIN = auth()  # every office
VIEWER = auth(("viewer",))  # u1, office o1 only
OTHER_OFFICE = auth(("viewer",), user="u9", office="o2")


class Service:
    """One records service's app and database."""

    def __init__(self, name: str, db_url: str) -> None:
        spec = find_service(name)
        settings = load_settings("domain", {"CRM_SERVICE_NAME": name, "CRM_DATABASE_URL": db_url,
                                            "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_JWT_SECRET": SECRET,
                                            "CRM_LOG_FORMAT": "text"})
        migrate(spec, settings)
        self.kind: RecordKind = KINDS[name]
        self.records: Table = spec.metadata.tables[name]
        self.client = spec.build_app(settings).test_client()
        self.db = Database(db_url)
        self.base = f"/v1/{name}"

    def put(self, kind: str, entity: str, code: str, *, entry_id: str | None = None, version: int = 1,
            active: bool = True, index: int = 0, **attributes: Any) -> str:
        """A catalogue entry (or a newer version of one) as the catalogue's event carries it."""
        entry_id = entry_id or str(uuid.uuid4())
        attrs = Struct()
        attrs.update(attributes)
        entry = CatalogueEntry(id=entry_id, kind=kind, entity=entity, code=code,
                               names={"en": code.title(), "nl": f"{code} (nl)"}, index=index, active=active,
                               version=version, attributes=attrs)
        aggregate = "stage" if entity == "stage" else "table_entry"
        with self.db.transaction() as s:
            apply_catalogue_event(s, new_envelope(f"catalogue.{aggregate}.updated", aggregate, entry_id, version,
                                                  entry))
        return entry_id

    def seed(self, kind: str) -> dict[str, str]:
        ids = {"open": self.put(kind, "stage_groups", "OPEN", index=1),
               "closed": self.put(kind, "stage_groups", "CLOSED", index=2),
               "parked": self.put(kind, "stage_groups", "PARKED", index=3)}
        # Index order differs from creation order: the board follows the index.
        ids["next"] = self.put(kind, "stage", "NEXT", index=2, stage_group_id=ids["open"])
        ids["new"] = self.put(kind, "stage", "NEW", index=1, is_default=True, stage_group_id=ids["open"])
        ids["won"] = self.put(kind, "stage", "WON", index=3, is_end=True, stage_group_id=ids["closed"])
        ids["old"] = self.put(kind, "stage", "OLD", index=4, active=False, stage_group_id=ids["closed"])
        ids["waiting"] = self.put(kind, "stage", "WAITING", index=5, stage_group_id=ids["parked"])
        return ids

    def create(self, **fields: Any) -> dict[str, Any]:
        r = self.client.post(self.base, json=fields, headers=ADMIN)
        assert r.status_code == 201, r.json
        return dict(r.json)

    def move(self, record: dict[str, Any], stage_id: str) -> None:
        r = self.client.patch(f"{self.base}/{record['id']}", json={"stage_id": stage_id}, headers=ADMIN)
        assert r.status_code == 200, r.json

    def overview(self, headers: dict[str, str], **query: str) -> dict[str, Any]:
        r = self.client.get(f"{self.base}/overview", query_string=query, headers=headers)
        assert r.status_code == 200, r.json
        return dict(r.json)


@pytest.fixture
def service(any_db_url: str) -> Iterator[Any]:
    made: list[Service] = []

    def make(name: str) -> Service:
        made.append(Service(name, any_db_url))
        return made[-1]

    yield make
    for svc in made:
        svc.db.dispose()


def board(answer: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The board as (id, count[, amount, weighted_amount]) per column, in order."""
    return [(s["id"], s["count"], *((s["amount"], s["weighted_amount"]) if "amount" in s else ()))
            for s in answer["stages"]]


@pytest.mark.parametrize("name", ["leads", "opportunities"])
def test_overview_board_per_tab(service, name):
    svc = service(name)
    ids = svc.seed(svc.kind.kind)
    svc.seed("opportunity" if svc.kind is LEAD else "lead")  # the other kind's stages never show
    money = svc.kind.money

    def amount(value: str, probability: int | None) -> dict[str, Any]:
        return {"amount": value, "probability": probability, "currency": "EUR"} if money else {}

    a = svc.create(title="A", **amount("1000.00", 50))
    b = svc.create(title="B", **amount("99.99", 33))
    svc.create(title="C", owner_id="u2")  # NEW, someone else's, no amount
    e = svc.create(title="E", **amount("10.00", None))  # no probability: in amount, not in weighted amount
    f = svc.create(title="F", **amount("0.01", 50))  # 0.005: rounded half up
    svc.create(title="D other office", office_id="o2", **amount("5.00", 100))  # NEW, office o2
    svc.move(a, ids["next"])
    svc.move(e, ids["next"])
    svc.move(f, ids["next"])
    svc.move(b, ids["won"])

    def cols(*columns: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return [c if money else c[:2] for c in columns]

    # No parameter: the tab counts as before, and the board of every stage for what the caller sees
    # (OLD is inactive and empty: no column; WAITING is active and empty: a column with 0).
    plain = svc.overview({**VIEWER, "Accept-Language": "nl"})
    assert (plain["all"], plain["office"], plain["mine"]) == (5, 5, 4)
    assert {g["id"]: g["count"] for g in plain["stage_groups"]} == {ids["open"]: 4, ids["closed"]: 1,
                                                                    ids["parked"]: 0}
    assert board(plain) == cols((ids["new"], 1, "0.00", "0.00"), (ids["next"], 3, "1010.01", "500.01"),
                                (ids["won"], 1, "99.99", "33.00"), (ids["waiting"], 0, "0.00", "0.00"))
    assert [s["name"] for s in plain["stages"]] == ["NEW (nl)", "NEXT (nl)", "WON (nl)", "WAITING (nl)"]
    assert sum(s["count"] for s in plain["stages"]) == plain["all"]
    if not money:
        assert set(plain["stages"][0]) == {"id", "name", "count"}

    # A stage group's tab: that group's stages only, whatever the view; the tab counts stay the same.
    tab = svc.overview({**VIEWER, "Accept-Language": "nl"}, stage_group_id=ids["open"])
    assert {k: v for k, v in tab.items() if k != "stages"} == {k: v for k, v in plain.items() if k != "stages"}
    assert board(tab) == cols((ids["new"], 1, "0.00", "0.00"), (ids["next"], 3, "1010.01", "500.01"))
    assert board(svc.overview(VIEWER, stage_group_id=ids["closed"])) == cols((ids["won"], 1, "99.99", "33.00"))
    assert board(svc.overview(VIEWER, stage_group_id=ids["parked"])) == cols((ids["waiting"], 0, "0.00", "0.00"))
    # mine: C (u2's) is not on it, its column stays with 0; view and stage group combine as in the list.
    assert board(svc.overview(VIEWER, view="mine")) == cols(
        (ids["new"], 0, "0.00", "0.00"), (ids["next"], 3, "1010.01", "500.01"), (ids["won"], 1, "99.99", "33.00"),
        (ids["waiting"], 0, "0.00", "0.00"))
    assert board(svc.overview(VIEWER, view="mine", stage_group_id=ids["open"])) == cols(
        (ids["new"], 0, "0.00", "0.00"), (ids["next"], 3, "1010.01", "500.01"))
    # The board's counts are the list's, tab by tab.
    listed = svc.client.get(svc.base, query_string={"view": "mine", "stage_group_id": ids["open"]},
                            headers=VIEWER).json["items"]
    assert len(listed) == 3

    # Office visibility as in the list: another office's record counts only for who may see it.
    everything = svc.overview(ADMIN)
    assert everything["all"] == 6 and everything["office"] == 5
    assert board(everything)[0] == cols((ids["new"], 2, "5.00", "5.00"))[0]
    assert board(svc.overview(ADMIN, view="office", stage_group_id=ids["open"]))[0] == cols(
        (ids["new"], 1, "0.00", "0.00"))[0]
    other = svc.overview(OTHER_OFFICE)
    assert (other["all"], other["office"], other["mine"]) == (1, 1, 0)
    assert board(other) == cols((ids["new"], 1, "5.00", "5.00"), (ids["next"], 0, "0.00", "0.00"),
                                (ids["won"], 0, "0.00", "0.00"), (ids["waiting"], 0, "0.00", "0.00"))

    # filter (the list's grammar) narrows every count of the answer.
    filtered = svc.overview(VIEWER, filter='title = "A" OR title = "C"')
    assert (filtered["all"], filtered["mine"]) == (2, 1)
    assert {g["id"]: g["count"] for g in filtered["stage_groups"]}[ids["open"]] == 2
    assert board(filtered) == cols((ids["new"], 1, "0.00", "0.00"), (ids["next"], 1, "1000.00", "500.00"),
                                   (ids["won"], 0, "0.00", "0.00"), (ids["waiting"], 0, "0.00", "0.00"))

    # A stage deactivated while records sit in it keeps its column while they do; a record in a
    # stage this copy does not know (deleted meanwhile) gets a column at the end: columns add up.
    svc.put(svc.kind.kind, "stage", "WON", entry_id=ids["won"], version=2, active=False, index=3,
            stage_group_id=ids["closed"])
    lost = str(uuid.uuid4())
    with svc.db.transaction() as s:
        s.execute(update(svc.records).where(svc.records.c.title == "C").values(stage_id=lost))
    after = svc.overview(VIEWER)
    assert [(s["id"], s["name"], s["count"]) for s in after["stages"]] == [
        (ids["new"], "New", 0), (ids["next"], "Next", 3), (ids["won"], "Won", 1), (ids["waiting"], "Waiting", 0),
        (lost, None, 1)]
    assert sum(s["count"] for s in after["stages"]) == after["all"] == 5
    assert board(svc.overview(OTHER_OFFICE, stage_group_id=ids["closed"])) == []  # WON inactive and empty


@pytest.mark.parametrize("name", ["leads", "opportunities"])
def test_overview_refuses_bad_parameters(service, name):
    svc = service(name)
    ids = svc.seed(svc.kind.kind)
    other = svc.seed("opportunity" if svc.kind is LEAD else "lead")
    for query, field in (({"view": "everyone"}, "view"), ({"scope": "mine"}, "scope"),
                         ({"stage_group_id": ""}, "stage_group_id"), ({"stage_group_id": "x" * 37}, "stage_group_id"),
                         ({"stage_group_id": str(uuid.uuid4())}, "stage_group_id"),  # no such group
                         ({"stage_group_id": other["open"]}, "stage_group_id"),  # the other kind's
                         ({"stage_group_id": ids["new"]}, "stage_group_id"),  # a stage, not a group
                         ({"filter": 'title = '}, "filter"), ({"filter": "nope = 1"}, "filter")):
        r = svc.client.get(f"{svc.base}/overview", query_string=query, headers=VIEWER)
        assert r.status_code == 422, (query, r.json)
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert [e["field"] for e in r.json["errors"]] == [field], (query, r.json)
    r = svc.client.get(f"{svc.base}/overview?view=mine&view=all", headers=VIEWER)
    assert r.status_code == 422 and r.json["errors"][0]["field"] == "view"
    assert svc.client.get(f"{svc.base}/overview", headers=auth(("nobody",))).status_code == 403


@pytest.mark.parametrize("name", ["leads", "opportunities"])
def test_overview_is_documented(service, name):
    svc = service(name)
    document = svc.client.get("/openapi.json").json
    operation = document["paths"][f"{svc.base}/overview"]["get"]
    params = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert set(params) == {"view", "stage_group_id", "filter"}
    assert params["view"]["schema"]["enum"] == ["all", "mine", "office"]
    assert params["stage_group_id"]["schema"]["maxLength"] == 36
    assert params["filter"]["schema"]["maxLength"] == 2000
    assert "422" in operation["responses"]
    schemas = document["components"]["schemas"]
    stage = schemas[f"{svc.kind.kind.capitalize()}OverviewStage"]["properties"]
    assert {"id", "name", "count"} <= set(stage)
    assert ("amount" in stage and "weighted_amount" in stage) is svc.kind.money
