"""The unit of work writes a transaction's events at its commit, and only what committed."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crm.events.v1.envelope_pb2 import Actor
from crm.events.v1.probe_pb2 import Probe
from crm_events.envelope import new_envelope
from crm_kafka.outbox import OUTBOX
from crm_kafka.unit_of_work import UnitOfWork
from crm_kit.db import Database
from crm_kit.migrations import upgrade


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'uow.db'}"
    (tmp_path / "versions").mkdir()
    upgrade(url, tmp_path / "versions")  # the kit's own tables: the outbox among them
    database = Database(url)
    yield database
    database.dispose()


def _event(n: int):
    return new_envelope("probe.sent", "probe", f"p{n}", 1, Probe(), actor=Actor(kind="system"))


def _outbox(db) -> list[tuple[str, str]]:
    with db.transaction() as session:
        return [(r.topic, r.key) for r in session.execute(select(OUTBOX).order_by(OUTBOX.c.id))]


def test_events_are_written_at_commit_in_order(db):
    with db.transaction() as session:
        uow = UnitOfWork.of(session)
        uow.add("t.a", _event(1))
        uow.add("t.b", _event(2), key="k2")
        assert session.execute(select(OUTBOX)).first() is None  # nothing before the commit
        assert UnitOfWork.of(session) is uow
    assert _outbox(db) == [("t.a", "p1"), ("t.b", "k2")]


def test_a_rolled_back_savepoint_takes_its_events_with_it(db):
    with db.transaction() as session:
        UnitOfWork.of(session).add("t", _event(1))
        savepoint = session.begin_nested()
        UnitOfWork.of(session).add("t", _event(2))
        savepoint.rollback()
        with session.begin_nested():
            UnitOfWork.of(session).add("t", _event(3))  # a savepoint that commits keeps its events
    assert _outbox(db) == [("t", "p1"), ("t", "p3")]


def test_a_savepoint_begun_before_the_first_event_drops_what_it_added(db):
    with db.transaction() as session:
        savepoint = session.begin_nested()
        UnitOfWork.of(session).add("t", _event(1))
        savepoint.rollback()
        UnitOfWork.of(session).add("t", _event(2))
    assert _outbox(db) == [("t", "p2")]


def test_a_transaction_that_rolls_back_writes_nothing(db):
    with pytest.raises(RuntimeError), db.transaction() as session:
        UnitOfWork.of(session).add("t", _event(1))
        raise RuntimeError("the change failed")
    assert _outbox(db) == []


@pytest.mark.parametrize("end", ["rollback", "close"])
def test_a_session_used_again_forgets_what_it_did_not_commit(db, end):
    session = db.sessions()
    session.begin()
    UnitOfWork.of(session).add("t", _event(1))
    getattr(session, end)()  # rolled back, or closed without a commit
    session.begin()
    UnitOfWork.of(session).add("t", _event(2))
    session.commit()
    session.close()
    assert _outbox(db) == [("t", "p2")]


def test_a_write_answers_with_the_outbox_row_it_wrote_and_a_refusal_writes_none(db, tmp_path):
    """The answer names the last outbox row of the request (``Crm-Written``, what the caller's
    consistency token covers), although the unit of work holds its events back until commit."""
    from crm_kit import consistency
    from crm_kit.errors import Conflict
    from crm_kit.settings import SERVICES, load_settings
    from crm_kit.web import Api, Reply, create_app, issue_token

    api = Api("probes")

    @api.post("/v1/probes/<n>", permission="leads:create")
    def send(ctx, n: str) -> Reply:
        UnitOfWork.of(ctx.session).add("t", _event(int(n)))
        if n == "9":
            raise Conflict("Nine is refused.")
        return Reply({"sent": n})

    secret = "s" * 40
    settings = load_settings("gateway", {"CRM_SERVICE_NAME": "probes", "CRM_JWT_SECRET": secret,
                                         **{f"CRM_{n.upper()}_URL": "http://127.0.0.1:9" for n in SERVICES}})
    client = create_app("probes", settings, [api], database=db).test_client()
    token = issue_token(secret, user_id="u1", name="U", office_id="o1", roles=["admin"])
    headers = {"Authorization": f"Bearer {token}"}

    first = client.post("/v1/probes/1", headers=headers)
    second = client.post("/v1/probes/2", headers=headers)
    refused = client.post("/v1/probes/9", headers=headers)
    assert (first.status_code, second.status_code, refused.status_code) == (201, 201, 409)
    with db.transaction() as session:
        ids = {r.key: r.id for r in session.execute(select(OUTBOX))}
    assert ids.keys() == {"p1", "p2"}  # the refused request's event went with its rollback
    assert first.headers[consistency.WRITTEN] == str(ids["p1"])
    assert second.headers[consistency.WRITTEN] == str(ids["p2"])
    assert consistency.WRITTEN not in refused.headers
    assert refused.json["detail"] == "Nine is refused." and refused.content_type == "application/problem+json"
