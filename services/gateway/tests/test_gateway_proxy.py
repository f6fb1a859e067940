"""Forwarding against real upstream servers: headers, bodies, streaming, retries, failures."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time

import pytest
import requests
from gateway_helpers import PROBLEM, ClosedPort, Echo, RawServer, auth

from crm_kit.settings import MULTIPART_OVERHEAD, SERVICES

# -- what goes upstream -----------------------------------------------------------------------


def test_method_path_query_and_body_are_forwarded(client, echo):
    r = client.patch("/v1/leads/l%20one?b=2&a=1&a=%C3%A9&q=x%26y", json={"title": "new"},
                     headers={**auth(), "If-Match": '"3"'})
    assert r.status_code == 200
    hit = r.json
    assert hit["method"] == "PATCH"
    assert hit["path"] == "/v1/leads/l one"
    assert hit["query"] == "b=2&a=1&a=%C3%A9&q=x%26y"  # untouched, order and encoding kept
    assert hit["args"] == {"b": ["2"], "a": ["1", "é"], "q": ["x&y"]}
    assert hit["body"] == '{"title": "new"}'
    assert hit["headers"]["Content-Type"] == "application/json"
    assert hit["headers"]["If-Match"] == '"3"'


def test_odd_query_bytes_are_escaped_not_mangled(client):
    # WSGI carries the raw bytes as a latin-1 string: UTF-8 "é" and a bare space, as a sloppy client sends them
    r = client.get("/v1/leads", environ_overrides={"QUERY_STRING": "q=caf\xc3\xa9&x=a b"}, headers=auth())
    assert r.json["query"] == "q=caf%C3%A9&x=a%20b"
    assert r.json["args"] == {"q": ["café"], "x": ["a b"]}


def test_each_family_reaches_its_own_service(make_gateway):
    servers = {name: Echo(name) for name in SERVICES}
    try:
        c = make_gateway({name: s.url for name, s in servers.items()}).test_client()
        cases = {
            "catalogue": "/v1/lead-stages", "leads": "/v1/leads/l1", "opportunities": "/v1/opportunities",
            "linking": "/v1/leads/l1/contacts", "triggers": "/v1/trigger-executions",
            "webhooks": "/v1/webhooks",
        }
        for service, path in cases.items():
            r = c.get(path, headers=auth())
            assert r.status_code == 200 and r.json["service"] == service, path
        assert all(len(s.hits) == 1 for s in servers.values())
    finally:
        for s in servers.values():
            s.close()


def test_request_headers_forwarded_and_filtered(client):
    headers = {
        **auth(),
        "Accept": "application/json",
        "Accept-Language": "nl, en;q=0.5",
        "If-None-Match": '"4"',
        "Idempotency-Key": "key-1",
        "X-Correlation-ID": "corr-123",
        "Cookie": "session=abc",
        "X-Internal-Admin": "yes",
        "X-Forwarded-For": "6.6.6.6",
        "Proxy-Authorization": "Basic eA==",
    }
    r = client.post("/v1/leads", json={"title": "x"}, headers=headers)
    sent = r.json["headers"]
    for name in ("Authorization", "Accept", "Accept-Language", "If-None-Match", "Idempotency-Key"):
        assert sent[name] == headers[name], name
    assert sent["X-Correlation-Id"] == "corr-123"
    assert r.headers["X-Correlation-ID"] == "corr-123"
    for name in ("Cookie", "X-Internal-Admin", "X-Forwarded-For", "Proxy-Authorization"):
        assert name not in sent, name
    assert sent["Host"].startswith("127.0.0.1:")  # the service's own, not the client's


def test_correlation_id_is_always_sent(client):
    r = client.get("/v1/leads", headers=auth())
    sent = r.json["headers"]["X-Correlation-Id"]
    assert len(sent) >= 16
    assert r.headers["X-Correlation-ID"] == sent
    # an unsafe id from the client is replaced
    r = client.get("/v1/leads", headers={**auth(), "X-Correlation-ID": "bad id\twith spaces"})
    assert r.json["headers"]["X-Correlation-Id"] != "bad id\twith spaces"


# -- what comes back --------------------------------------------------------------------------


def test_response_headers_safe_ones_only_and_no_internal_urls(client, echo):
    r = client.get("/v1/leads?_headers=1", headers=auth())
    assert r.status_code == 200
    assert r.headers["ETag"] == '"7"'
    assert r.headers["Location"] == "/v1/leads/abc"
    assert r.headers["Link"] == '</v1/leads?page_token=t2>; rel="next"'
    assert r.headers["Retry-After"] == "3"
    assert r.headers["Idempotent-Replayed"] == "true"
    assert r.headers["Content-Disposition"] == 'attachment; filename="a.txt"'
    assert r.headers["Content-Type"] == "application/json"
    for name in ("Set-Cookie", "X-Internal-Secret"):
        assert name not in r.headers
    assert "internal-server" not in r.headers.get("Server", "")
    assert f"127.0.0.1:{echo.server.port}" not in str(r.headers)


@pytest.mark.parametrize("status", [201, 400, 404, 409, 412, 422, 500, 503])
def test_upstream_status_and_body_pass_through(client, status):
    r = client.post(f"/v1/leads?_status={status}", json={"title": "x"}, headers=auth())
    assert r.status_code == status
    assert r.json["method"] == "POST"  # the service's body, untouched


def test_no_content_has_no_body_or_content_type(client):
    r = client.delete("/v1/leads/l1?_status=204", headers=auth())
    assert r.status_code == 204
    assert r.data == b""
    assert "Content-Type" not in r.headers


def test_head_is_forwarded_without_body(client, echo):
    r = client.head("/v1/leads/l1", headers=auth())
    assert r.status_code == 200 and r.data == b""
    assert echo.hits[0]["method"] == "HEAD"


# -- edge rules still apply -------------------------------------------------------------------


def test_non_json_body_is_415(client, echo):
    r = client.post("/v1/leads", data="title=x", headers={**auth(), "Content-Type": "text/plain"})
    assert r.status_code == 415 and r.content_type == PROBLEM
    assert echo.hits == []


def test_json_body_over_the_limit_is_413(client, echo):
    big = b'{"title": "' + b"x" * (1024 * 1024) + b'"}'
    r = client.post("/v1/leads", data=big, headers={**auth(), "Content-Type": "application/json"})
    assert r.status_code == 413 and r.content_type == PROBLEM
    assert echo.hits == []


def _multipart(size: int) -> tuple[bytes, str, str]:
    payload = os.urandom(size)
    boundary = "----crmgatewaytestboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\ncontract\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}", hashlib.sha256(body).hexdigest()


def test_attachment_upload_takes_multipart_up_to_the_upload_limit(make_gateway, echo):
    c = make_gateway(echo.url, CRM_MAX_UPLOAD_BYTES=str(4 * 1024 * 1024)).test_client()
    body, content_type, digest = _multipart(3 * 1024 * 1024)  # over the JSON limit, under the upload one
    r = c.post("/v1/opportunities/o1/attachments", data=body, headers={**auth(), "Content-Type": content_type})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.json["body_length"] == len(body) and r.json["body_sha256"] == digest
    assert r.json["headers"]["Content-Type"] == content_type
    assert r.json["headers"]["Content-Length"] == str(len(body))


def test_attachment_over_the_upload_limit_is_413(make_gateway, echo):
    c = make_gateway(echo.url, CRM_MAX_UPLOAD_BYTES=str(1024 * 1024)).test_client()
    body, content_type, _ = _multipart(1024 * 1024 + MULTIPART_OVERHEAD + 10)  # the limit is the file's
    r = c.post("/v1/leads/l1/attachments", data=body, headers={**auth(), "Content-Type": content_type})
    assert r.status_code == 413 and r.content_type == PROBLEM
    assert echo.hits == []


def test_multipart_elsewhere_is_415_and_json_attachment_too(client, echo):
    body, content_type, _ = _multipart(10)
    assert client.post("/v1/leads", data=body, headers={**auth(), "Content-Type": content_type}).status_code == 415
    r = client.post("/v1/leads/l1/attachments", json={"file": "x"}, headers=auth())
    assert r.status_code == 415
    assert echo.hits == []


def test_upload_still_needs_token_and_permission(client, echo):
    body, content_type, _ = _multipart(10)
    assert client.post("/v1/leads/l1/attachments", data=body,
                       headers={"Content-Type": content_type}).status_code == 401
    assert client.post("/v1/leads/l1/attachments", data=body,
                       headers={**auth(["viewer"]), "Content-Type": content_type}).status_code == 403
    assert echo.hits == []


# -- streaming, through a gateway on a real socket --------------------------------------------


def test_response_is_streamed_not_buffered(make_gateway, echo, serve):
    gw = serve(make_gateway(echo.url))
    with requests.get(f"{gw.url}/v1/leads/l1/attachments/a1?_stream=1", headers=auth(), stream=True,
                      timeout=10) as r:
        assert r.status_code == 200
        started = time.monotonic()
        first = r.raw.read(6)
        # The service is still holding back the rest: only streaming gets us here quickly.
        assert first == b"first\n"
        assert time.monotonic() - started < 5
        assert not echo.state.release.is_set()
        echo.state.release.set()
        assert r.raw.read() == b"second\n"


def test_chunked_request_body_is_streamed_upstream(make_gateway, echo, serve):
    gw = serve(make_gateway(echo.url, CRM_MAX_UPLOAD_BYTES=str(8 * 1024 * 1024)))
    body, content_type, digest = _multipart(2 * 1024 * 1024)

    def chunks():
        view = memoryview(body)
        for i in range(0, len(body), 100_000):
            yield bytes(view[i:i + 100_000])

    r = requests.post(f"{gw.url}/v1/leads/l1/attachments", data=chunks(),
                      headers={**auth(), "Content-Type": content_type}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["body_sha256"] == digest
    assert "chunked" in r.json()["headers"].get("Transfer-Encoding", "")


def test_chunked_body_over_the_limit_is_413(make_gateway, echo, serve):
    gw = serve(make_gateway(echo.url, CRM_MAX_UPLOAD_BYTES=str(256 * 1024)))
    body, content_type, _ = _multipart(600 * 1024)
    r = requests.post(f"{gw.url}/v1/leads/l1/attachments", data=iter([body[:300_000], body[300_000:]]),
                      headers={**auth(), "Content-Type": content_type}, timeout=10)
    assert r.status_code == 413
    assert r.headers["Content-Type"] == PROBLEM


# -- failures: 503, 504, 502, retries ---------------------------------------------------------


def _assert_no_internals(r, *secrets):
    text = r.get_data(as_text=True)
    assert "Traceback" not in text and "http://" not in text and "127.0.0.1" not in text
    for secret in secrets:
        assert f":{secret}" not in text if isinstance(secret, int) else secret not in text


def test_service_down_is_503_with_retry_after(make_gateway, closed_port):
    c = make_gateway(closed_port.url).test_client()
    for method in ("GET", "POST"):
        r = c.open("/v1/leads", method=method, json={"title": "x"} if method == "POST" else None, headers=auth())
        assert r.status_code == 503 and r.content_type == PROBLEM
        assert r.headers["Retry-After"].isdigit()
        assert r.json["detail"] == "The leads service is unavailable; retry shortly."
        _assert_no_internals(r, closed_port.port)


def test_unknown_host_is_503(make_gateway):
    c = make_gateway("http://crm-no-such-host.invalid:8000").test_client()
    r = c.get("/v1/templates", headers=auth())
    assert r.status_code == 503 and "catalogue" in r.json["detail"]
    _assert_no_internals(r, "no-such-host")


def test_get_is_retried_when_the_connection_fails(make_gateway):
    flaky = RawServer(drop=2)
    try:
        c = make_gateway({"leads": flaky.url}, CRM_UPSTREAM_RETRIES="2").test_client()
        r = c.get("/v1/leads", headers=auth())
        assert r.status_code == 200 and r.json == {"ok": True}
        assert flaky.connections == 3  # two dropped, the third answered
    finally:
        flaky.close()


def test_retries_are_bounded(make_gateway):
    flaky = RawServer(drop=10)
    try:
        c = make_gateway({"leads": flaky.url}, CRM_UPSTREAM_RETRIES="2").test_client()
        r = c.get("/v1/leads", headers=auth())
        # 503 or 502: whether the last reset came while connecting or after the request went out
        assert r.status_code in (502, 503) and r.content_type == PROBLEM
        assert flaky.connections == 3  # one try and two retries
        _assert_no_internals(r, flaky.port)
    finally:
        flaky.close()


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_non_idempotent_requests_are_never_retried(make_gateway, method):
    flaky = RawServer(drop=1)
    try:
        c = make_gateway({"leads": flaky.url}, CRM_UPSTREAM_RETRIES="3").test_client()
        path = "/v1/leads" if method == "POST" else "/v1/leads/l1"
        r = c.open(path, method=method, json={"title": "x"}, headers=auth())
        assert r.status_code in (502, 503)
        assert flaky.connections == 1
    finally:
        flaky.close()


def test_retries_can_be_switched_off(make_gateway):
    flaky = RawServer(drop=1)
    try:
        c = make_gateway({"leads": flaky.url}, CRM_UPSTREAM_RETRIES="0").test_client()
        assert c.get("/v1/leads", headers=auth()).status_code in (502, 503)
        assert flaky.connections == 1
    finally:
        flaky.close()


def test_refused_connection_retries_then_503_quickly(make_gateway, closed_port):
    c = make_gateway(closed_port.url, CRM_UPSTREAM_RETRIES="3").test_client()
    started = time.monotonic()
    r = c.get("/v1/leads", headers=auth())
    elapsed = time.monotonic() - started
    assert r.status_code == 503
    assert 0.05 * (1 + 2 + 4) * 0.9 <= elapsed < 5  # the short backoff, and no long one (loaded CI: slack)
    metrics = c.get("/metrics").get_data(as_text=True)
    assert 'crm_gateway_upstream_retries_total{service="leads"}' in metrics


def test_timeout_is_504_within_the_bound_and_not_retried(make_gateway, echo):
    c = make_gateway(echo.url, CRM_UPSTREAM_TIMEOUT="0.5", CRM_UPSTREAM_RETRIES="3").test_client()
    started = time.monotonic()
    r = c.get("/v1/leads?_sleep=3", headers=auth())
    elapsed = time.monotonic() - started
    assert r.status_code == 504 and r.content_type == PROBLEM
    assert r.json["detail"] == "The leads service did not answer within 0.5 seconds."
    assert elapsed < 2.9  # well before the service's 3 s answer (slack for a loaded machine)
    assert len(echo.hits) == 1  # a slow service is not asked again
    _assert_no_internals(r, echo.server.port)


def test_garbage_from_upstream_is_502(make_gateway):
    garbage = RawServer(reply=b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    try:
        c = make_gateway(garbage.url, CRM_UPSTREAM_RETRIES="0").test_client()
        r = c.get("/v1/leads", headers=auth())
        assert r.status_code == 502 and r.content_type == PROBLEM
        assert r.json["detail"] == "The leads service sent an invalid response."
        _assert_no_internals(r, garbage.port)
    finally:
        garbage.close()


def test_connection_closed_without_answer_is_502(make_gateway):
    silent = RawServer(reply=b"")
    try:
        c = make_gateway(silent.url, CRM_UPSTREAM_RETRIES="0").test_client()
        assert c.post("/v1/leads", json={"title": "x"}, headers=auth()).status_code == 502
    finally:
        silent.close()


def test_connections_are_pooled(make_gateway):
    service = RawServer(keep_alive=True)
    try:
        c = make_gateway({"leads": service.url}).test_client()
        for path in ("/v1/leads", "/v1/leads/l1", "/v1/leads/l2/stage-history", "/v1/leads", "/v1/leads/overview"):
            assert c.get(path, headers=auth()).status_code == 200
        assert c.head("/v1/leads", headers=auth()).status_code == 200
        assert (service.requests, service.connections) == (6, 1)  # one kept-alive connection
    finally:
        service.close()


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_per_route_template_and_upstream(client):
    assert client.get("/v1/leads/abc-1", headers=auth()).status_code == 200
    assert client.get("/v1/leads/abc-2", headers=auth()).status_code == 200
    assert client.get("/v1/leads/abc-3").status_code == 401
    assert client.get("/v1/not-a-thing").status_code == 404
    text = client.get("/metrics").get_data(as_text=True)
    assert 'route="/v1/leads/{id}",service="gateway",status="200"' in text
    assert 'route="/v1/leads/{id}",service="gateway",status="401"' in text
    assert 'route="unmatched",service="gateway",status="404"' in text
    assert "abc-1" not in text and "/v1/<path:path>" not in text
    assert 'crm_gateway_upstream_requests_total{service="leads",status="200"}' in text
    assert 'crm_gateway_upstream_request_duration_seconds_bucket{le="0.25",service="leads"}' in text


def test_concurrent_requests_share_the_pool(make_gateway, echo, serve):
    gw = serve(make_gateway(echo.url))
    results: list[int] = []

    def call():
        results.append(requests.get(f"{gw.url}/v1/leads?_sleep=0.5", headers=auth(), timeout=10).status_code)

    threads = [threading.Thread(target=call) for _ in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8
    assert time.monotonic() - started < 3  # side by side (0.5 s), not one after the other (4 s)


def test_large_download_streams_intact(make_gateway, serve):
    blob = os.urandom(3 * 1024 * 1024)
    from flask import Flask, Response

    svc = Flask("blob")

    @svc.get("/v1/leads/<rid>/attachments/<aid>")
    def download(rid, aid):
        def chunks():
            stream = io.BytesIO(blob)
            while chunk := stream.read(50_000):
                yield chunk
        return Response(chunks(), mimetype="application/octet-stream",
                        headers={"Content-Length": str(len(blob)), "Content-Disposition": "attachment"})

    upstream = serve(svc)
    gw = serve(make_gateway(upstream.url))
    r = requests.get(f"{gw.url}/v1/leads/l1/attachments/a1", headers=auth(), timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(len(blob))
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert hashlib.sha256(r.content).digest() == hashlib.sha256(blob).digest()


def test_closed_port_helper_refuses():
    port = ClosedPort()
    try:
        with pytest.raises(requests.ConnectionError):
            requests.get(port.url, timeout=1)
    finally:
        port.close()
