"""A tiny service built only from the kit, so the kit's tests exercise it as a service would."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import Column, Integer, String, Table, delete, select, update

from crm_kit.db import Database, UTCDateTime, new_metadata, utcnow
from crm_kit.settings import SERVICES, load_settings
from crm_kit.web import Api, ListResult, Problem, Reply, RequestContext, SortKey, check_if_match, create_app
from crm_kit.web.fields import Timestamp
from crm_kit.web.pagination import PageQuery

SECRET = "test-secret-that-is-long-enough-for-hs256"

metadata = new_metadata()
notes = Table(
    "notes",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("title", String(200), nullable=False, unique=True),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)


class NoteIn(Schema):
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))


class NoteOut(Schema):
    id = fields.String()
    title = fields.String()
    version = fields.Integer()
    created_at = Timestamp()


api = Api("notes")


def _load(ctx: RequestContext, note_id: str) -> Any:
    row = ctx.session.execute(select(notes).where(notes.c.id == note_id)).first()
    if row is None:
        raise Problem(404, "No such note.")
    return row


@api.post("/v1/notes", permission="leads:create", body=NoteIn, response=NoteOut)
def create_note(ctx: RequestContext) -> Reply:
    """Create a note."""
    if ctx.body["title"] == "forbidden":
        raise Problem(409, "That title is not allowed.")
    note_id = str(uuid.uuid4())
    ctx.session.execute(notes.insert().values(id=note_id, title=ctx.body["title"], version=1,
                                              created_at=utcnow()))
    return Reply(_load(ctx, note_id)._asdict(), headers={"Location": f"/v1/notes/{note_id}"})


@api.get("/v1/notes", permission="leads:view", query=PageQuery, response=NoteOut, many=True)
def list_notes(ctx: RequestContext) -> ListResult:
    """List notes, newest first."""
    page = ctx.page(select(notes), [SortKey("created_at", notes.c.created_at, descending=True),
                                    SortKey("id", notes.c.id, descending=True)])
    return ListResult([r._asdict() for r in page.rows], page.next_page_token)


@api.get("/v1/notes/<note_id>", permission="leads:view", response=NoteOut)
def get_note(ctx: RequestContext, note_id: str) -> dict[str, Any]:
    """Read a note."""
    return _load(ctx, note_id)._asdict()


@api.patch("/v1/notes/<note_id>", permission="leads:edit", body=NoteIn, response=NoteOut)
def patch_note(ctx: RequestContext, note_id: str) -> dict[str, Any]:
    """Rename a note."""
    row = _load(ctx, note_id)
    check_if_match(row.version)
    ctx.session.execute(update(notes).where(notes.c.id == note_id)
                        .values(title=ctx.body["title"], version=row.version + 1))
    return _load(ctx, note_id)._asdict()


@api.delete("/v1/notes/<note_id>", permission="leads:delete", status=204)
def delete_note(ctx: RequestContext, note_id: str) -> None:
    """Delete a note."""
    row = _load(ctx, note_id)
    check_if_match(row.version)
    ctx.session.execute(delete(notes).where(notes.c.id == note_id))


def make_app(db_url: str, **env: str) -> tuple[Any, Database]:
    """The sample app on ``db_url`` with its tables created through the kit's migrations."""
    from crm_kit.migrations import upgrade

    versions = Path(__file__).parent / "sample_versions"
    upgrade(db_url, versions, metadata)
    settings = load_settings("gateway", {
        "CRM_SERVICE_NAME": "sample", "CRM_JWT_SECRET": SECRET,
        **{f"CRM_{n.upper()}_URL": "http://127.0.0.1:9" for n in SERVICES},
        **env,
    })
    database = Database(db_url)
    return create_app("sample", settings, [api], database=database), database
