"""The catalogue's input rules (issue 15): codes unique whatever their case (in the database
too), names in the configured languages only, text trimmed and free of control characters,
a default stage that cannot be switched off, localised answers saying their language."""

from __future__ import annotations

import pytest
from alembic import command
from catalogue_helpers import Catalogue
from sqlalchemy import create_engine, insert, text
from sqlalchemy.exc import IntegrityError

from crm_catalogue.tables import stages, table_entries
from crm_kit.db import utcnow
from crm_kit.migrations import alembic_config

pytestmark = pytest.mark.integration
LEAD = "/v1/lead-stages"
SOURCES = "/v1/lead-tables/sources"


def _stage(code: str, **fields):
    return {"names": {"en": code.title(), "nl": f"NL {code}"}, "code": code, **fields}


def test_codes_are_unique_whatever_their_case(cat):
    problem = cat.refused(409, "POST", LEAD, _stage("new"))
    assert "'NEW'" in problem["detail"] and "case" in problem["detail"]
    cat.refused(409, "POST", SOURCES, {"names": {"en": "Web"}, "code": "website"})  # WEBSITE is seeded
    fair = cat.created(SOURCES, {"names": {"en": "Fair"}, "code": "Fair"})
    cat.refused(409, "POST", SOURCES, {"names": {"en": "Fair"}, "code": "FAIR"})
    cat.refused(409, "PATCH", f"{SOURCES}/{fair['id']}", {"code": "Website"})
    # The same entity may change the case of its own code; another table or kind may use it.
    assert cat.ok("PATCH", f"{SOURCES}/{fair['id']}", {"code": "FAIR"})["code"] == "FAIR"
    assert cat.created("/v1/lead-tables/groups", {"names": {"en": "Fair"}, "code": "fair"})["code"] == "fair"
    assert cat.created("/v1/opportunity-stages", _stage("new"))["code"] == "new"
    contacted = cat.by_code(LEAD, "CONTACTED")
    assert cat.ok("PATCH", f"{LEAD}/{contacted['id']}", {"code": "Contacted"})["code"] == "Contacted"


def test_the_database_refuses_codes_differing_only_in_case(cat):
    now = utcnow()
    row = {"kind": "lead", "names": {"en": "x"}, "index": 99, "active": True, "version": 1, "created_at": now,
           "modified_at": now}
    with pytest.raises(IntegrityError), cat.db.transaction() as s:
        s.execute(insert(stages).values(id="s-lower", code="new", is_default=False, is_end=False,
                                        is_default_end=False, remarks="", **row))
    with pytest.raises(IntegrityError), cat.db.transaction() as s:
        s.execute(insert(table_entries).values(id="t-lower", table_name="sources", code="website", protected=False,
                                               **row))


def test_the_migration_stops_on_codes_differing_only_in_case(tmp_path):
    url = f"sqlite:///{tmp_path / 'clash.sqlite3'}"
    catalogue = Catalogue(url)
    try:
        cfg = alembic_config(url, catalogue.spec.migrations, catalogue.spec.metadata)
        command.downgrade(cfg, "catalogue_0001")
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("UPDATE stages SET code = 'new' WHERE code = 'CONTACTED'"))
        engine.dispose()
        with pytest.raises(RuntimeError, match="NEW|new"):
            command.upgrade(cfg, "heads")
    finally:
        catalogue.close()


def test_names_only_in_the_configured_languages(cat):
    problem = cat.refused(422, "POST", LEAD, {"names": {"en": "A", "fr": "B"}, "code": "LANG"})
    assert [e["field"] for e in problem["errors"]] == ["names.fr"]
    assert "en, nl" in problem["errors"][0]["message"]
    cat.refused(422, "POST", SOURCES, {"names": {"de": "Messe"}, "code": "MESSE"})
    cat.refused(422, "POST", LEAD, {"names": {"en": "A", "EN": "B"}, "code": "TWICE"})  # one language, twice
    stage = cat.created(LEAD, {"names": {"EN": " Spaced ", "nl": "Nl"}, "code": " SPACED "})
    assert stage["names"] == {"en": "Spaced", "nl": "Nl"} and stage["code"] == "SPACED"
    cat.refused(422, "PATCH", f"{LEAD}/{stage['id']}", {"names": {"xx": "?"}})


@pytest.mark.parametrize(("field", "value"), [
    ("names", {"en": "a\u0000b"}),
    ("names", {"en": "a\nb"}),  # a name is one line
    ("names", {"en": "\ud800"}),
    ("names", {"en": "   "}),
    ("code", "A\u0007"),
    ("code", "  "),
    ("remarks", "call \u001b[31m now"),
    ("remarks", "x\u0085y"),  # C1 control
    ("remarks", "x\u007fy"),  # DEL
    ("color", "#AABB\u0000C"),
])
def test_text_with_control_characters_or_blank_is_refused(cat, field, value):
    body = {**_stage("TEXT"), field: value}
    problem = cat.refused(422, "POST", LEAD, body)
    assert problem["errors"][0]["field"].split(".")[0] == field, problem


def test_multiline_text_keeps_tabs_and_line_breaks_and_is_trimmed(cat):
    stage = cat.created(LEAD, _stage("MULTI", remarks="  Call:\n\t1. today\r\n\t2. tomorrow \n"))
    assert stage["remarks"] == "Call:\n\t1. today\r\n\t2. tomorrow"
    template = cat.created("/v1/templates", {"kind": "email", "name": "  Hello  ", "subject": " Hi ",
                                             "body": "Dear {{ record.title }},\n\n\tregards\n"})
    assert (template["name"], template["subject"]) == ("Hello", "Hi")
    assert template["body"] == "Dear {{ record.title }},\n\n\tregards"
    cat.refused(422, "POST", "/v1/templates", {"kind": "email", "name": "   "})
    cat.refused(422, "POST", "/v1/templates", {"kind": "email", "name": "Two\nlines"})
    cat.refused(422, "PATCH", f"/v1/templates/{template['id']}", {"name": ""})


def test_the_default_stage_cannot_be_switched_off(cat):
    new = cat.by_code(LEAD, "NEW")
    problem = cat.refused(409, "PATCH", f"{LEAD}/{new['id']}", {"is_default": False})
    assert "make another stage the default instead" in problem["detail"]
    # Making another stage the default is the way, and it clears this one.
    contacted = cat.by_code(LEAD, "CONTACTED")
    assert cat.ok("PATCH", f"{LEAD}/{contacted['id']}", {"is_default": True})["is_default"] is True
    assert cat.get(f"{LEAD}/{new['id']}").json["is_default"] is False
    assert cat.ok("PATCH", f"{LEAD}/{new['id']}", {"is_default": False})["is_default"] is False  # already off


def test_long_id_lists_are_refused(cat):
    cat.refused(422, "POST", LEAD, _stage("MANY", email_template_ids=[f"t{i}" for i in range(10_000)]))


def test_localised_answers_say_their_language_and_vary(cat):
    r = cat.get(LEAD, headers={"Accept-Language": "nl, en;q=0.5"})
    assert r.headers["Content-Language"] == "nl"
    assert "Accept-Language" in r.headers["Vary"]
    new = cat.by_code(LEAD, "NEW")
    r = cat.get(f"{LEAD}/{new['id']}", headers={"Accept-Language": "fr"})
    assert r.json["name"] == "New" and r.headers["Content-Language"] == "en"  # the default language
    r = cat.get(f"{LEAD}/{new['id']}", headers={"Accept-Language": "nl", "If-None-Match": r.headers["ETag"]})
    assert r.status_code == 304 and "Accept-Language" in r.headers["Vary"]
    r = cat.patch(f"{LEAD}/{new['id']}", {"remarks": "x"}, headers={"Accept-Language": "nl"})
    assert r.json["name"] == "Nieuw" and r.headers["Content-Language"] == "nl"
    templates = cat.get("/v1/templates")  # no names: not localised
    assert "Content-Language" not in templates.headers


def test_a_weak_etag_never_matches_if_match(cat):
    stage = cat.created(LEAD, _stage("WEAK"))
    path = f"{LEAD}/{stage['id']}"
    cat.refused(412, "PATCH", path, {"remarks": "x"}, headers={"If-Match": 'W/"1"'})
    cat.refused(412, "DELETE", path, headers={"If-Match": 'W/"1", W/"2"'})
    assert cat.patch(path, {"remarks": "x"}, headers={"If-Match": 'W/"1", "1"'}).status_code == 200
    assert cat.get(path, headers={"If-None-Match": 'W/"2"'}).status_code == 304  # weak comparison there
