"""Consistency tokens at the gateway: signed, merged, small, and turned into waits for the services
that read the writer's events (fake services on loopback that record what they were asked)."""

from __future__ import annotations

import json

import pytest
from flask import Flask, Response, request
from gateway_helpers import PROBLEM, SECRET, Echo, ServerThread, auth

from crm_gateway.consistency import COOKIE, TOKEN_HEADER, InvalidTokenError, Token, token_key
from crm_kit.settings import SERVICES

KEY = token_key("a-secret-long-enough-for-the-tests")


def test_a_token_round_trips_and_merges_keeping_the_newest_position():
    token = Token({"leads": 7}).merge({"leads": 5, "catalogue": 3}).merge({"leads": 9})
    assert dict(token.positions) == {"leads": 9, "catalogue": 3}
    assert Token.decode(token.encode(KEY), KEY) == token


def test_a_token_stays_small_however_many_writes_it_covers():
    token = Token()
    for n in range(10_000):
        token = token.merge({SERVICES[n % len(SERVICES)]: n * 1_000_003})
    assert len(token.encode(KEY)) < 200


@pytest.mark.parametrize("mangle", [
    lambda v: v[:-2] + ("AA" if not v.endswith("AA") else "BB"),  # signature
    lambda v: v.replace("ct1.", "ct2."),
    lambda v: "ct1.bGVhZHM6OTk5.AAAAAAAAAAAAAAAAAAAAAA",  # made up: leads:999
    lambda v: "not a token",
    lambda v: v + "." + v,
])
def test_a_token_the_gateway_did_not_issue_is_refused(mangle):
    value = Token({"leads": 4}).encode(KEY)
    with pytest.raises(InvalidTokenError):
        Token.decode(mangle(value), KEY)
    with pytest.raises(InvalidTokenError):
        Token.decode(value, token_key("another-secret-also-long-enough-for-hs256"))


class Owners:
    """Every service in one fake: a write reports outbox row ``written`` (``Crm-Written``), and
    ``/internal/consistency?upto=n`` puts row n at offset n of ``crm.leads.v1``'s partition 0."""

    def __init__(self) -> None:
        self.written = 0
        self.refusals = 0  # POSTs to refuse with 422 (a copy that does not know a reference yet)
        self.read_no_copy = False  # the refusals say no copy had a part in them (Crm-Copies: none)
        self.asked: list[str] = []
        self.required: list[dict] = []
        app = Flask("owners")

        @app.get("/internal/consistency")
        def position() -> Response:
            self.asked.append(request.query_string.decode())
            upto = int(request.args.get("upto", self.written))
            return Response(json.dumps({"outbox_id": upto, "positions": {"crm.leads.v1": {"0": upto}}}),
                            mimetype="application/json")

        @app.route("/v1/<path:path>", methods=["GET", "POST"])
        def any_route(path: str) -> Response:
            self.required.append(json.loads(request.headers.get("Crm-Require-Offsets") or "{}"))
            if request.method == "POST" and self.refusals:
                self.refusals -= 1
                return Response('{"status": 422}', status=422, mimetype="application/problem+json",
                                headers={"Crm-Copies": "none"} if self.read_no_copy else {})
            if request.method == "POST":
                self.written += 1
                return Response("{}", status=201, mimetype="application/json",
                                headers={"Crm-Written": str(self.written)})
            return Response('{"items": []}', mimetype="application/json")

        self.server = ServerThread(app)


@pytest.fixture
def owners():
    o = Owners()
    yield o
    o.server.close()


def test_a_write_gives_a_token_and_a_later_read_elsewhere_waits_for_that_write(make_gateway, owners):
    gateway = make_gateway(owners.server.url).test_client()
    write = gateway.post("/v1/leads", json={"title": "x"}, headers=auth())
    assert write.status_code == 201
    value = write.headers[TOKEN_HEADER]
    cookie = write.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}={value}") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert dict(Token.decode(value, token_key(SECRET)).positions) == {"leads": 1}
    owners.asked.clear()
    # Linking reads the leads' events: it is asked to wait for row 1's offset, resolved once.
    for _ in range(3):
        read = gateway.get("/v1/leads/l1/contacts", headers={**auth(), TOKEN_HEADER: value})
        assert read.status_code == 200 and TOKEN_HEADER not in read.headers
        assert owners.required[-1] == {"crm.leads.v1": {"0": 1}}
    assert owners.asked == ["upto=1"]
    # Without a token: every change committed so far, asked of each owner linking reads
    # (catalogue, leads, opportunities), every time.
    owners.asked.clear()
    gateway.set_cookie(COOKIE, "")
    gateway.get("/v1/leads/l1/contacts", headers=auth())
    assert owners.asked == ["", "", ""] and owners.required[-1] == {"crm.leads.v1": {"0": 1}}
    # The leads service reads no leads' events: nothing to wait for there.
    gateway.get("/v1/leads/l1", headers={**auth(), TOKEN_HEADER: value})
    assert "crm.leads.v1" not in owners.required[-1]


@pytest.fixture
def echo():
    e = Echo("any")
    yield e
    e.close()


def test_a_garbled_token_header_is_400_before_anything_is_forwarded(make_gateway, echo):
    gateway = make_gateway(echo.url).test_client()
    r = gateway.get("/v1/leads", headers={**auth(), TOKEN_HEADER: "ct1.garbage.garbage"})
    assert r.status_code == 400 and r.content_type == PROBLEM and TOKEN_HEADER in r.json["detail"]
    assert echo.hits == []
    # A stale cookie (another secret, say) is not the client's fault: it counts as none.
    gateway.set_cookie(COOKIE, "ct1.garbage.garbage")
    assert gateway.get("/v1/leads", headers=auth()).status_code == 200


def test_a_tokenless_post_goes_at_once_and_only_a_refusal_waits_for_the_latest_writes(make_gateway, owners):
    gateway = make_gateway(owners.server.url).test_client()
    gateway.set_cookie(COOKIE, "")
    assert gateway.post("/v1/leads/l1/contacts", json={"x": 1}, headers=auth()).status_code == 201
    assert owners.asked == [] and owners.required == [{}]  # a create asks nobody first
    owners.refusals = 1
    r = gateway.post("/v1/leads/l1/contacts", json={"x": 2}, headers=auth())
    assert r.status_code == 201  # refused once, asked again once linking had every committed change
    assert owners.asked == ["", "", ""] and owners.required[-2:] == [{}, {"crm.leads.v1": {"0": 1}}]
    # A bulk call answers 200 with its refusals inside: it waits for the latest writes first.
    gateway.set_cookie(COOKIE, "")  # the write's answer set one: this test's client keeps none
    owners.asked.clear()
    assert gateway.post("/v1/contacts/bulk", json={"items": []}, headers=auth()).status_code == 201
    assert owners.asked == ["", "", ""] and owners.required[-1] == {"crm.leads.v1": {"0": 2}}


def test_a_refusal_that_read_no_copy_is_final(make_gateway, owners):
    """Invalid input, or a route of the service's own data (webhook subscriptions): asking again after
    the latest writes would get the same, and an owner slow to answer would turn it into a 503."""
    gateway = make_gateway(owners.server.url).test_client()
    value = gateway.post("/v1/leads", json={"title": "x"}, headers=auth()).headers[TOKEN_HEADER]
    owners.asked.clear()
    owners.required.clear()
    owners.refusals, owners.read_no_copy = 2, True
    for headers in ({**auth(), TOKEN_HEADER: value}, auth()):  # with a token, and a tokenless POST
        gateway.set_cookie(COOKIE, "")
        r = gateway.post("/v1/leads/l1/contacts", json={"x": 1}, headers=headers)
        assert r.status_code == 422 and "Crm-Copies" not in r.headers  # the client sees the refusal, not the header
    assert len(owners.required) == 2  # each sent once: not asked again
    assert "" not in owners.asked  # nobody asked for every change committed so far
    owners.refusals, owners.read_no_copy = 1, False  # a refusal that may come from a lagging copy: asked again
    gateway.set_cookie(COOKIE, "")
    assert gateway.post("/v1/leads/l1/contacts", json={"x": 2}, headers=auth()).status_code == 201
    assert len(owners.required) == 4 and owners.asked.count("") == 3


def test_a_path_with_a_line_break_is_404_not_405(make_gateway, echo):
    # Found by Schemathesis: werkzeug's path converter stopped at "\n", so the upload rule answered 405.
    gateway = make_gateway(echo.url).test_client()
    r = gateway.get("/v1/opportunities/%0Ax%01/attachments", headers=auth())
    assert r.status_code == 404  # forwarded (the fake service has no such record), not a 405 at the gateway
    assert gateway.get("/v1/opportunities/x/attachments", headers=auth()).status_code == 200
