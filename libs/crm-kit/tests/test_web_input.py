"""The contract's input and protocol rules at the kit's edge (issue 15), through the sample service:
hostile JSON (depth, NaN, huge numbers, surrogates, control characters, blank text), query
and path text, strong If-Match, token claims, 406, Content-Language; and, under a real
gunicorn, a 413 that keeps the connection usable and gunicorn's own errors as problem+json.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import requests
from marshmallow import Schema, ValidationError, fields, validate
from sample_app import SECRET
from test_web_edge import PROBLEM, auth, count_notes

from crm_kit.web import Api, RequestContext, create_app
from crm_kit.web.connection import drain_request_body
from crm_kit.web.fields import Currency, FullMatch, Money, Text
from crm_kit.web.input import MAX_DEPTH, decode_json, nesting_depth, normalise_body, text_pattern
from crm_kit.web.problem import Problem

HERE = Path(__file__).parent


@pytest.fixture
def client(tmp_path):
    from sample_app import make_app

    app, db = make_app(f"sqlite:///{tmp_path / 'input.sqlite3'}")
    yield app.test_client(), db
    db.dispose()


def _post(c, raw, headers=None):
    return c.post("/v1/notes", data=raw, headers={**auth(), "Content-Type": "application/json", **(headers or {})})


# -- JSON --------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    "[" * 5000 + "]" * 5000,
    '{"title": ' + "[" * 5000 + "]" * 5000 + "}",
    '{"title": "x", "deep": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}",
    "[" * 1_000_000,  # not even JSON: still a 400, never a recursion
])
def test_json_nested_deeper_than_32_levels_is_400(client, raw):
    c, db = client
    r = _post(c, raw)
    assert (r.status_code, r.content_type) == (400, PROBLEM), r.get_data(as_text=True)[:300]
    assert count_notes(db) == 0


def test_nesting_depth_ignores_brackets_in_strings():
    assert nesting_depth(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}') == 1
    assert nesting_depth(b'["\\"[[[[", [[]]]') == 3
    deep = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert decode_json(deep.encode()) is not None  # exactly 32 levels: fine
    with pytest.raises(Problem):
        decode_json(("[" + deep + "]").encode())


@pytest.mark.parametrize("raw", ['{"title": NaN}', '{"title": Infinity}', '{"title": -Infinity}',
                                 '{"title": 1' + "0" * 5000 + "}"])
def test_nan_infinity_and_absurd_numbers_are_not_json(client, raw):
    c, db = client
    r = _post(c, raw)
    assert (r.status_code, r.content_type) == (400, PROBLEM)
    assert count_notes(db) == 0


@pytest.mark.parametrize(("raw", "field"), [
    ('{"title": "x", "n": 1e400}', "n"),
    ('{"title": "x", "n": ' + str(10**400) + "}", "n"),
    ('{"title": 9007199254740993}', "title"),
    ('{"title": "x", "list": [1, 2, -1e999]}', "list.2"),
])
def test_huge_numbers_are_422_naming_the_field(client, raw, field):
    c, db = client
    r = _post(c, raw)
    assert (r.status_code, r.content_type) == (422, PROBLEM), r.json
    assert field in [e["field"] for e in r.json["errors"]]
    assert count_notes(db) == 0


# -- text --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "field"), [
    ('{"title": "a\\ud800b"}', "title"),  # an unpaired high surrogate
    ('{"title": "\\udc00"}', "title"),  # an unpaired low surrogate
    ('{"title": "a\\u0000b"}', "title"),
    ('{"title": "a\\u0007b"}', "title"),
    ('{"title": "a\\u001bb"}', "title"),
    ('{"title": "a\\u007fb"}', "title"),  # DEL
    ('{"title": "a\\u0085b"}', "title"),  # C1 (NEL)
    ('{"title": "x", "extra": {"deeper": ["ok", "\\u0000"]}}', "extra.deeper.1"),  # unknown fields too
    ('{"title": "x", "ke\\u0000y": 1}', "body"),  # a key
    ('{"title": "x", "\\ud800": 1}', "body"),
])
def test_control_characters_and_unpaired_surrogates_are_422(client, raw, field):
    c, db = client
    r = _post(c, raw)
    assert (r.status_code, r.content_type) == (422, PROBLEM), r.json
    assert field in [e["field"] for e in r.json["errors"]], r.json
    assert count_notes(db) == 0


def test_a_surrogate_pair_is_one_character_and_fine(client):
    c, _ = client
    r = _post(c, '{"title": "smile \\ud83d\\ude00"}')
    assert r.status_code == 201 and r.json["title"] == "smile \U0001f600"


def test_text_is_trimmed_and_required_text_may_not_be_blank(client):
    c, db = client
    r = c.post("/v1/notes", json={"title": "  \t spaced \u3000 "}, headers=auth())
    assert r.status_code == 201 and r.json["title"] == "spaced"
    for blank in ("", "   ", "\t\n", "\u00a0\u2003"):
        r = c.post("/v1/notes", json={"title": blank}, headers=auth())
        assert r.status_code == 422 and r.json["errors"][0]["field"] == "title", blank
    assert count_notes(db) == 1
    r = c.patch(f"/v1/notes/{c.get('/v1/notes', headers=auth()).json['items'][0]['id']}", json={"title": " "},
                headers=auth())
    assert r.status_code == 422 and r.json["errors"] == [{"field": "title", "message": "Must not be blank."}]


def test_a_plain_string_field_may_hold_line_breaks_but_text_fields_say(client):
    c, _ = client
    r = c.post("/v1/notes", json={"title": "two\nlines\tand a tab"}, headers=auth())
    assert r.status_code == 201  # NoteIn.title is a plain fields.String: multi-line allowed
    line = Schema.from_dict({"t": Text(), "m": Text(multiline=True)})()
    assert line.load({"m": " a\n\tb\r\n "}) == {"m": "a\n\tb"}
    with pytest.raises(ValidationError) as exc:
        line.load({"t": "a\nb"})
    assert "single line" in str(exc.value.messages)


def test_one_answer_names_every_bad_field(client):
    c, _ = client
    r = _post(c, '{"title": "a\\u0000", "colour": "red"}')
    assert r.status_code == 422
    assert {e["field"] for e in r.json["errors"]} == {"title", "colour"}  # the rules' and the schema's


def test_normalise_body_follows_the_schema():
    inner = Schema.from_dict({"name": Text(required=True)})
    schema = Schema.from_dict({
        "one": fields.Nested(inner), "many": fields.List(fields.Nested(inner)),
        "tags": fields.List(fields.String()), "names": fields.Dict(keys=fields.String(), values=Text()),
        "raw": fields.Raw(),
    })()
    out = normalise_body({"one": {"name": " a "}, "many": [{"name": " b "}], "tags": [" t "],
                          "names": {" en ": " x "}, "raw": {"k": " kept "}}, schema)
    assert out == {"one": {"name": "a"}, "many": [{"name": "b"}], "tags": ["t"], "names": {"en": "x"},
                   "raw": {"k": " kept "}}  # what no string field takes is left as sent
    with pytest.raises(Problem) as exc:
        normalise_body({"many": [{"name": " "}, {"name": "ok"}], "names": {"en": "a\u0000"}}, schema)
    assert {e["field"] for e in exc.value.errors} == {"many.0.name", "names.en"}


def test_query_and_path_text_with_control_characters(client):
    c, _ = client
    r = c.get("/v1/notes?page_token=a%00b", headers=auth())
    assert (r.status_code, r.content_type) == (422, PROBLEM)
    assert r.json["errors"][0]["field"] == "page_token"
    r = c.get("/v1/notes/abc%00def", headers=auth())
    assert (r.status_code, r.content_type) == (404, PROBLEM)
    r = c.patch("/v1/notes/%01", json={"title": "x"}, headers=auth())
    assert r.status_code == 404


def test_the_text_pattern_is_the_rule():
    import re

    line, multi = re.compile(text_pattern(multiline=False, not_blank=True)), re.compile(
        text_pattern(multiline=True, not_blank=False))
    for good in ("x", " a b ", "\U0001f600", "é"):
        assert line.fullmatch(good), good
    for bad in ("", "   ", "a\nb", "a\u0000", "\ud800", "a\u009f"):
        assert not line.fullmatch(bad), bad
    assert multi.fullmatch("") and multi.fullmatch("a\n\tb\r\n") and not multi.fullmatch("a\u0000")
    assert "\\Z" not in line.pattern and line.pattern.startswith("^") and line.pattern.endswith("$")


# -- numbers, currencies, patterns -------------------------------------------------------------

def test_money_currency_and_full_match():
    schema = Schema.from_dict({"amount": Money(), "currency": Currency(), "code": Text(validate=FullMatch(
        r"^[A-Z]{3}$"))})()
    assert schema.load({"amount": 12.5, "currency": "EUR", "code": "ABC"})["amount"].as_tuple().exponent == -2
    assert str(schema.load({"amount": "2500.00"})["amount"]) == "2500.00"
    for bad in ({"amount": 12.345}, {"amount": "1.001"}, {"amount": 1e-7}, {"amount": "1e3"}, {"amount": True},
                {"amount": "NaN"}, {"currency": "EURO"}, {"currency": "XYZ"}, {"currency": "eur"}, {"code": "AB"}):
        with pytest.raises(ValidationError):
            schema.load(bad)
    assert schema.load({"code": " ABC "}) == {"code": "ABC"}  # trimmed first; "ABC\n" is not a code either
    with pytest.raises(ValidationError):
        Schema.from_dict({"code": fields.String(validate=FullMatch(r"^[A-Z]{3}$"))})().load({"code": "ABC\n"})


# -- If-Match, tokens, Accept, languages --------------------------------------------------------

def test_if_match_is_a_strong_comparison(client):
    c, db = client
    note = c.post("/v1/notes", json={"title": "etag"}, headers=auth()).json
    path = f"/v1/notes/{note['id']}"
    for tag in ('W/"1"', 'W/"1", W/"2"', '"2"'):
        r = c.patch(path, json={"title": "changed"}, headers={**auth(), "If-Match": tag})
        assert (r.status_code, r.content_type) == (412, PROBLEM), tag
    assert c.delete(path, headers={**auth(), "If-Match": 'W/"1"'}).status_code == 412
    assert c.get(path, headers=auth()).json["title"] == "etag"
    assert c.get(path, headers={**auth(), "If-None-Match": 'W/"1"'}).status_code == 304  # weak is fine there
    assert c.patch(path, json={"title": "changed"}, headers={**auth(), "If-Match": '"1"'}).status_code == 200
    assert c.patch(path, json={"title": "again"}, headers={**auth(), "If-Match": "*"}).status_code == 200


def _token(**claims):
    base = {"sub": "u1", "name": "U", "office": "o1", "roles": ["admin"], "exp": int(time.time()) + 600}
    base.update(claims)
    return {"Authorization": "Bearer " + jwt.encode({k: v for k, v in base.items() if v is not ...}, SECRET,
                                                    algorithm="HS256")}


@pytest.mark.parametrize("claims", [
    {"sub": ...}, {"sub": ""}, {"sub": "  "}, {"sub": 42}, {"sub": "a\u0000b"}, {"sub": "u" * 201},
    {"office": ...}, {"office": "o" * 201}, {"office": ""}, {"office": ["o1"]}, {"office": 7},
    {"roles": ...}, {"roles": "admin"}, {"roles": ["admin", 3]}, {"roles": {"admin": True}},
    {"exp": ...}, {"exp": "tomorrow"}, {"exp": int(time.time()) - 31},
], ids=lambda c: "{'exp': 31 s ago}" if isinstance(c.get("exp"), int) else repr(c))  # ids stable across workers
def test_tokens_with_bad_claims_are_401(client, claims):
    c, db = client
    r = c.post("/v1/notes", json={"title": "x"}, headers=_token(**claims))
    assert (r.status_code, r.content_type) == (401, PROBLEM), r.json
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert count_notes(db) == 0


def test_tokens_get_30_seconds_of_leeway_and_may_have_no_roles(client):
    c, _ = client
    assert c.get("/v1/notes", headers=_token(sub="u" * 200, office="o" * 200)).status_code == 200
    assert c.get("/v1/notes", headers=_token(exp=int(time.time()) - 20)).status_code == 200
    assert c.get("/v1/notes", headers=_token(roles=[])).status_code == 403  # valid, but no permission


@pytest.mark.parametrize(("accept", "status"), [
    ("application/json", 200), ("*/*", 200), ("application/*", 200), ("text/html, application/json;q=0.1", 200),
    ("", 200), ("text/html", 406), ("application/xml", 406), ("application/json;q=0", 406),
    ("application/problem+json", 406),
])
def test_an_accept_the_route_cannot_serve_is_406(client, accept, status):
    c, _ = client
    r = c.get("/v1/notes", headers={**auth(), "Accept": accept})
    assert r.status_code == status, accept
    if status == 406:
        assert r.content_type == PROBLEM and "application/json" in r.json["detail"]


def test_localised_answers_carry_content_language_and_vary():
    api = Api("names")

    @api.get("/v1/thing", public=True)
    def thing(ctx: RequestContext) -> dict[str, str]:
        names = {"en": "Thing", "nl": "Ding"}
        return {"name": names.get(ctx.language(list(names)), "?")}

    @api.get("/v1/plain", public=True)
    def plain(ctx: RequestContext) -> dict[str, str]:
        return {"name": "plain"}

    from crm_kit.settings import SERVICES, load_settings

    app = create_app("names", load_settings("gateway", {
        "CRM_SERVICE_NAME": "names", "CRM_JWT_SECRET": SECRET,
        **{f"CRM_{n.upper()}_URL": "http://127.0.0.1:9" for n in SERVICES}}), [api])
    c = app.test_client()
    r = c.get("/v1/thing", headers={"Accept-Language": "nl-NL, en;q=0.5"})
    assert r.json == {"name": "Thing"} and r.headers["Content-Language"] == "en"  # werkzeug: exact before prefix
    r = c.get("/v1/thing", headers={"Accept-Language": "nl"})
    assert r.json == {"name": "Ding"} and r.headers["Content-Language"] == "nl"
    assert r.headers["Vary"] == "Accept-Language"
    r = c.get("/v1/plain", headers={"Accept-Language": "nl"})
    assert "Content-Language" not in r.headers and "Vary" not in r.headers


# -- draining refused bodies -------------------------------------------------------------------

def test_drain_reads_what_is_left_of_the_body():
    body = io.BytesIO(b"x" * 200_000)
    environ = {"CONTENT_LENGTH": "200000", "wsgi.input": body}
    assert drain_request_body(environ) is True and body.read() == b""
    assert drain_request_body({"CONTENT_LENGTH": "0", "wsgi.input": io.BytesIO()}) is True
    # Another server's raw socket stream: never read on (it could wait for the next request).
    assert drain_request_body({"CONTENT_LENGTH": "5", "wsgi.input": object()}) is False


# -- under gunicorn ----------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The sample service under gunicorn with the kit's configuration (as `make run` serves it)."""
    from sample_app import make_app

    db_url = f"sqlite:///{tmp_path_factory.mktemp('gunicorn') / 'served.sqlite3'}"
    _, database = make_app(db_url)  # migrated
    database.dispose()
    port = _free_port()
    env = {**os.environ, "SAMPLE_DB_URL": db_url, "CRM_BIND": f"127.0.0.1:{port}", "CRM_WEB_CONCURRENCY": "1",
           "CRM_WEB_THREADS": "2", "CRM_LOG_FORMAT": "text", "CRM_SERVICE_NAME": "sample", "PYTHONPATH": str(HERE)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:crm_kit.web.gunicorn_conf",
                             "gunicorn_sample:app"], cwd=HERE, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start: {proc.stdout.read().decode()[-3000:]}")  # type: ignore
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _local_port(session: requests.Session, url: str) -> int:
    """The client port of the connection the session's next request to ``url`` uses."""
    with session.get(url, headers=auth(), timeout=30, stream=True) as r:
        assert r.status_code == 200
        port = r.raw._connection.sock.getsockname()[1]  # urllib3's connection of this response
        r.content  # noqa: B018 - read to the end: the connection goes back to the pool
    return int(port)


@pytest.mark.parametrize("size", [2 * 1024 * 1024, 1024 * 1024 + 1, 8 * 1024 * 1024])
def test_a_413_leaves_the_connection_usable(served, size):
    with requests.Session() as session:
        port = _local_port(session, f"{served}/v1/notes")
        body = b'{"title": "' + b"x" * size + b'"}'
        r = session.post(f"{served}/v1/notes", data=body, headers={**auth(), "Content-Type": "application/json"},
                         timeout=30)
        assert (r.status_code, r.headers["Content-Type"]) == (413, PROBLEM)
        assert r.headers["Connection"] == "keep-alive"
        # The very same connection: gunicorn alone would drain 64 KiB, then close it (said keep-alive
        # all the same) - the reset that clients see as "connection aborted".
        assert _local_port(session, f"{served}/v1/notes") == port


def test_a_body_refused_unread_leaves_the_connection_usable(served):
    with requests.Session() as session:
        body = json.dumps({"title": "x" * 900_000})
        r = session.post(f"{served}/v1/notes", data=body, headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 401  # refused before the body was read
        assert session.get(f"{served}/v1/notes", headers=auth(), timeout=30).status_code == 200


def test_gunicorns_own_refusals_are_problem_json(served):
    r = requests.get(f"{served}/v1/notes", headers={**auth(), "X-Big": "y" * 20_000}, timeout=30)
    assert (r.status_code, r.headers["Content-Type"]) == (431, PROBLEM)
    assert r.json()["status"] == 431 and r.json()["type"].startswith("https://")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    many = {f"X-H{i}": "v" for i in range(150)}
    r = requests.get(f"{served}/v1/notes", headers={**auth(), **many}, timeout=30)
    assert (r.status_code, r.headers["Content-Type"]) == (431, PROBLEM)
    r = requests.get(f"{served}/v1/notes?{'q=' + 'a' * 9000}", headers=auth(), timeout=30)
    assert (r.status_code, r.headers["Content-Type"]) == (414, PROBLEM)
    with socket.create_connection(("127.0.0.1", int(served.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = sock.recv(65536).decode("latin-1")
    assert answer.startswith("HTTP/1.1 400") and "application/problem+json" in answer


def _raw_exchange(served: str, head: bytes) -> tuple[str, float]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", int(served.rsplit(":", 1)[1])), timeout=30) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.decode("latin-1"), time.monotonic() - started


def test_a_client_waiting_for_the_answer_before_its_body_gets_it(served):
    token = auth()["Authorization"]
    head = (f"POST /v1/notes HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {2 * 1024 * 1024}\r\n\r\n").encode()
    answer, took = _raw_exchange(served, head)
    assert answer.startswith("HTTP/1.1 413") and "Connection: close" in answer, answer
    assert took < 5  # the drain gives up after a second without a byte


def test_a_maximum_length_holds_for_the_text_as_sent(client):
    c, db = client
    r = c.post("/v1/notes", json={"title": "x" * 200 + " "}, headers=auth())  # NoteIn.title: at most 200
    assert r.status_code == 422 and r.json["errors"] == [{"field": "title", "message": "Length must be between 1 "
                                                                                       "and 200."}]
    assert c.post("/v1/notes", json={"title": " " + "x" * 198 + " "}, headers=auth()).status_code == 201
    assert count_notes(db) == 1
    with pytest.raises(ValidationError):
        Schema.from_dict({"t": Text(validate=validate.Length(max=3))})().load({"t": "abc "})
