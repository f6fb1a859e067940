"""The console behind the gateway's address (``CRM_CONSOLE_URL``): every path outside the API
goes to the console as the browser sent it (cookies, forms, uploads) and comes back as the
console answered (its cookies, its security headers, redirects); the API and the gateway's own
paths never do."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request
from gateway_helpers import ServerThread

from crm_kit.settings import MAX_IMPORT_FILE_BYTES, MULTIPART_OVERHEAD


def _fake_console() -> Flask:
    app = Flask("fake-console")

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
    @app.route("/<path:path>", methods=["GET", "POST", "DELETE"])
    def anything(path: str) -> Any:
        if path == "go":
            return Response(status=302, headers={"Location": "/leads"})
        if path == "upload":
            upload = request.files["file"]
            return jsonify(name=upload.filename, size=len(upload.read()), form=request.form.to_dict())
        resp = jsonify(path="/" + path, method=request.method, query=request.query_string.decode(),
                       cookie=request.headers.get("Cookie"), csrf=request.headers.get("X-CSRFToken"),
                       host=request.headers.get("Host"), fwd_host=request.headers.get("X-Forwarded-Host"),
                       form=request.form.to_dict())
        resp.headers["Content-Security-Policy"] = "default-src 'self'"
        resp.headers["Cache-Control"] = "public, max-age=60"
        resp.set_cookie("crm_console", "session-value", httponly=True, samesite="Lax")
        resp.headers.add("Set-Cookie", "second=2; Path=/")
        return resp

    return app


def test_paths_outside_the_api_reach_the_console_with_cookies_and_forms(
        make_gateway: Callable[..., Any], serve: Callable[[Any], ServerThread]) -> None:
    console = serve(_fake_console())
    client = make_gateway("http://127.0.0.1:9", CRM_CONSOLE_URL=console.url).test_client()
    client.set_cookie("crm_console", "from-browser")
    resp = client.post("/leads/abc/stage?x=1", data={"stage_id": "s1"},
                       headers={"X-CSRFToken": "t0k", "X-Forwarded-Host": "evil.example"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["path"] == "/leads/abc/stage" and body["query"] == "x=1" and body["method"] == "POST"
    assert body["form"] == {"stage_id": "s1"} and body["csrf"] == "t0k"
    assert "crm_console=from-browser" in body["cookie"]
    assert body["host"] == "localhost", "the console builds its own URLs from the browser's host"
    assert body["fwd_host"] == "localhost", "a client's own X-Forwarded-Host never reaches the console"
    cookies = resp.headers.getlist("Set-Cookie")
    assert any(c.startswith("crm_console=session-value") for c in cookies)
    assert any(c.startswith("second=") for c in cookies)
    assert resp.headers["Content-Security-Policy"] == "default-src 'self'", "the console's own policy, not the API's"
    assert resp.headers["Cache-Control"] == "public, max-age=60"


def test_redirects_and_uploads_pass_through(make_gateway: Callable[..., Any],
                                            serve: Callable[[Any], ServerThread]) -> None:
    console = serve(_fake_console())
    client = make_gateway("http://127.0.0.1:9", CRM_CONSOLE_URL=console.url).test_client()
    resp = client.get("/go")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/leads")
    data = {"file": (io.BytesIO(b"x" * 300_000), "cv.pdf"), "type": "cv"}
    resp = client.post("/upload", data=data, content_type="multipart/form-data")
    assert resp.status_code == 200
    assert resp.get_json() == {"name": "cv.pdf", "size": 300_000, "form": {"type": "cv"}}


def test_a_csv_to_import_may_be_larger_than_an_attachment(make_gateway: Callable[..., Any],
                                                          serve: Callable[[Any], ServerThread]) -> None:
    """The console takes CSVs of up to MAX_IMPORT_FILE_BYTES to import: the gateway lets them
    through even when attachments are limited to less; past that, its own 413."""
    console = serve(_fake_console())
    client = make_gateway("http://127.0.0.1:9", CRM_CONSOLE_URL=console.url,
                          CRM_MAX_UPLOAD_BYTES="100000").test_client()
    data = {"file": (io.BytesIO(b"x" * 300_000), "leads.csv")}
    resp = client.post("/upload", data=data, content_type="multipart/form-data")
    assert resp.status_code == 200 and resp.get_json()["size"] == 300_000
    too_large = {"file": (io.BytesIO(b"x" * (MAX_IMPORT_FILE_BYTES + MULTIPART_OVERHEAD + 1)), "leads.csv")}
    resp = client.post("/upload", data=too_large, content_type="multipart/form-data")
    assert resp.status_code == 413


def test_the_api_and_the_gateways_own_paths_never_go_to_the_console(
        make_gateway: Callable[..., Any], serve: Callable[[Any], ServerThread]) -> None:
    console = serve(_fake_console())
    client = make_gateway("http://127.0.0.1:9", CRM_CONSOLE_URL=console.url).test_client()
    assert client.get("/v1/leads").status_code == 401  # the API's own answer: a token is needed
    assert client.get("/v1/no-such-thing").headers["Content-Type"].startswith("application/problem+json")
    assert client.get("/healthz").get_json()["service"] == "gateway"
    assert client.get("/openapi.json").get_json()["openapi"].startswith("3.")


def test_without_a_console_the_gateway_serves_only_the_api(make_gateway: Callable[..., Any]) -> None:
    client = make_gateway("http://127.0.0.1:9").test_client()
    resp = client.get("/leads")
    assert resp.status_code == 404 and resp.headers["Content-Type"].startswith("application/problem+json")


def test_a_console_that_is_down_is_a_503_not_a_500(make_gateway: Callable[..., Any]) -> None:
    client = make_gateway("http://127.0.0.1:9", CRM_CONSOLE_URL="http://127.0.0.1:9").test_client()
    resp = client.get("/leads")
    assert resp.status_code in (502, 503)


def test_the_gateways_own_resources_refuse_other_methods_and_say_which(
        make_gateway: Callable[..., Any], serve: Callable[[Any], ServerThread]) -> None:
    console = serve(_fake_console())
    client = make_gateway("http://127.0.0.1:9", CRM_CONSOLE_URL=console.url).test_client()
    for path in ("/docs", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs/swagger-ui.css"):
        resp = client.put(path)
        assert resp.status_code == 405 and resp.headers["Allow"] == "GET, HEAD, OPTIONS", path
        options = client.options(path)
        assert options.headers["Allow"] == "GET, HEAD, OPTIONS", path
