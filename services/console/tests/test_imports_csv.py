"""The Import screen's own work, in process: reading a CSV (encodings, delimiters, limits),
cutting its rows into calls the API accepts, preselecting the mapping, and the upload's refusals.

The screen against the real API is tested in a browser (tests/e2e/console/test_import.py)."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from flask.testing import FlaskClient

from crm_console.app import create_app
from crm_console.gateway import ApiError, Gateway
from crm_console.views.imports import RefusedFileError, chunks, parse_csv, suggested_mapping
from crm_kit.settings import load_settings


def test_utf8_with_or_without_bom_and_either_delimiter() -> None:
    for data in (b"Title,Stage\nA,s1\n", "\ufeffTitle;Stage\nA;s1\n".encode()):
        parsed = parse_csv(data)
        assert parsed.columns == ["Title", "Stage"] and parsed.rows == [["A", "s1"]]
    parsed = parse_csv(b'Title;Notes\n"a;b";"x, y"\r\n\r\nB;\n')
    assert parsed.rows == [["a;b", "x, y"], ["B", ""]], "quotes kept, blank lines skipped"
    assert parse_csv(b"Title,Notes,\nA\n").rows == [["A", ""]], "a trailing delimiter, short rows padded"


@pytest.mark.parametrize(("data", "message"), [
    (b"", "The file is empty."),
    (b"  \n", "The file is empty."),
    ("Titel\nCaf\u00e9\n".encode("latin-1"), "not UTF-8"),
    (b"Title,Stage\n", "no rows"),
    (b"Title,Title\nA,B\n", "twice"),
    (b"Title,,Stage\nA,B,C\n", "Column 2 has no name"),
    (b"Title\nA\n\nA,B\n", "Line 4 has more cells"),
])
def test_files_that_cannot_be_imported_say_why(data: bytes, message: str) -> None:
    with pytest.raises(RefusedFileError, match=message):
        parse_csv(data)


def test_too_many_rows() -> None:
    with pytest.raises(RefusedFileError, match="more than 3 rows"):
        parse_csv(b"Title\n" + b"x\n" * 4, max_rows=3)
    assert len(parse_csv(b"Title\n" + b"x\n" * 3, max_rows=3).rows) == 3


def test_chunks_stay_within_the_rows_and_bytes_of_a_call() -> None:
    rows = [[f"row {i}", "\u00e9" * 10] for i in range(12_000)]
    parts = list(chunks(rows))
    assert [len(p) for p in parts] == [5000, 5000, 2000]
    assert [r for p in parts for r in p] == rows
    wide = [[f"row {i}", "\u00e9" * 50] for i in range(12_000)]  # 300 bytes of JSON escapes a row
    parts = list(chunks(wide))
    assert len(parts) == 5 and all(len(json.dumps(p)) <= 900 * 1024 for p in parts)
    assert [r for p in parts for r in p] == wide
    small = list(chunks(rows[:100], most_bytes=2000))
    assert all(len(json.dumps(p)) <= 2000 for p in small) and sum(map(len, small)) == 100
    with pytest.raises(RefusedFileError, match="Line 4 is too large"):
        list(chunks([["a"], ["b"], ["x" * 5000]], most_bytes=2000))


def test_the_mapping_is_preselected_by_name() -> None:
    fields = [{"name": "title"}, {"name": "first_name"}, {"name": "stage_id"}]
    assert suggested_mapping(["Title", "First name", "stage ID", "TITLE", "Other"], fields) == {
        "Title": "title", "First name": "first_name", "stage ID": "stage_id"}


# -- the upload, against a stand-in for the API ---------------------------------------------------

@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> tuple[FlaskClient, list[tuple[str, str, Any]]]:
    calls: list[tuple[str, str, Any]] = []

    def answer(self: Gateway, caller: Any, method: str, path: str, **kw: Any) -> Any:
        calls.append((method, path, kw.get("json")))
        if method == "POST" and path == "/v1/leads/imports":
            return _response(201, {"id": "job-1", "status": "uploading"})
        if method == "POST" and path.endswith("/rows"):
            if kw["json"]["rows"][0] == ["refuse me"]:
                raise ApiError(409, {"detail": "The job holds at most 200,000 rows."})
            return _response(200, {"id": "job-1"})
        if method == "DELETE":
            return _response(200, {"id": "job-1", "status": "cancelled"})
        if method == "GET" and path.endswith("/imports"):
            return _response(200, {"items": [], "next_page_token": None})
        raise ApiError(404, {"detail": "not in this stand-in"})

    monkeypatch.setattr(Gateway, "request", answer)
    settings = load_settings("console", {
        "CRM_SERVICE_NAME": "console", "CRM_GATEWAY_URL": "http://127.0.0.1:9",
        "CRM_CONSOLE_SECRET_KEY": "test-console-key-0123456789abcdef",
        "CRM_JWT_SECRET": "test-secret-long-enough-for-hs256-signatures", "CRM_CONSOLE_DEV_SIGNIN": "true"})
    app = create_app(settings)
    app.config["TESTING"] = True
    return app.test_client(), calls


def _response(status: int, body: Any) -> Any:
    import requests

    resp = requests.Response()
    resp.status_code = status
    resp._content = json.dumps(body).encode()
    resp.headers["Content-Type"] = "application/json"
    return resp


def _sign_in(client: FlaskClient, roles: str) -> str:
    page = client.get("/signin").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    client.post("/signin/dev", data={"user": "ann", "office": "office-1", "roles": roles, "csrf_token": token})
    page = client.get("/imports").get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]


def _upload(client: FlaskClient, token: str, data: bytes, collection: str = "leads") -> Any:
    return client.post("/imports", content_type="multipart/form-data", data={
        "collection": collection, "csrf_token": token, "file": (io.BytesIO(data), "leads.csv")})


def test_an_upload_of_one_call_goes_to_the_job(client: Any) -> None:
    http, calls = client
    token = _sign_in(http, "marketing")
    resp = _upload(http, token, b"Title\n" + b"lead\n" * 5000)
    assert resp.status_code == 302 and resp.headers["Location"] == "/imports/leads/job-1"
    created = [j for m, p, j in calls if m == "POST"]
    assert len(created) == 1 and created[0]["columns"] == ["Title"] and created[0]["file_name"] == "leads.csv"
    assert len(created[0]["rows"]) == 5000


def test_a_larger_upload_streams_a_line_per_call_then_moves_on(client: Any) -> None:
    http, calls = client
    token = _sign_in(http, "marketing")
    resp = _upload(http, token, b"Title\n" + b"lead\n" * 12_000)
    assert resp.status_code == 200 and resp.is_streamed
    page = resp.get_data(as_text=True)  # the appends happen while this is read
    posted = [(p, len(j["rows"])) for m, p, j in calls if m == "POST"]
    assert posted == [("/v1/leads/imports", 5000), ("/v1/leads/imports/job-1/rows", 5000),
                      ("/v1/leads/imports/job-1/rows", 2000)]
    assert all(f"{n} of 12,000 rows sent" in page for n in ("5,000", "10,000", "12,000"))
    assert 'hx-get="/imports/leads/job-1/uploaded" hx-trigger="load"' in page
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)


def test_a_refused_append_cancels_the_job_and_says_why(client: Any) -> None:
    http, calls = client
    token = _sign_in(http, "marketing")
    page = _upload(http, token, b"Title\n" + b"lead\n" * 5000 + b"refuse me\n").get_data(as_text=True)
    assert "The upload stopped after 5,000 of 5,001 rows, and the import is cancelled" in page
    assert "at most 200,000 rows" in page and "/uploaded" not in page
    assert ("DELETE", "/v1/leads/imports/job-1", None) in calls


def test_a_bad_file_calls_nothing(client: Any) -> None:
    http, calls = client
    token = _sign_in(http, "marketing")
    resp = _upload(http, token, "Titel\nCaf\u00e9\n".encode("latin-1"))
    assert resp.status_code == 422 and "not UTF-8" in resp.get_data(as_text=True)
    assert not [c for c in calls if c[0] != "GET"]


def test_a_collection_the_person_may_not_create_in_is_refused(client: Any) -> None:
    http, calls = client
    token = _sign_in(http, "marketing")  # leads and files, not opportunities
    resp = _upload(http, token, b"Title\nA\n", collection="opportunities")
    assert resp.status_code == 422 and "Choose what to import" in resp.get_data(as_text=True)
    assert not [c for c in calls if c[0] != "GET"]


def test_people_who_may_create_nothing_see_no_import(client: Any) -> None:
    http, _calls = client
    _sign_in(http, "marketing")
    page = http.get("/no-such-page").get_data(as_text=True)
    assert 'href="/imports"' in page, "the nav's Import entry"
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    http.post("/signin/dev", data={"user": "vic", "office": "office-1", "roles": "viewer", "csrf_token": token})
    assert http.get("/imports").status_code == 403
    assert http.get("/imports/leads/job-1").status_code == 403
    assert 'href="/imports"' not in http.get("/no-such-page").get_data(as_text=True)
