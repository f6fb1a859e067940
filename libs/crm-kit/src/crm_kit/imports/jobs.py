"""The import's domain: jobs, their rows, the rules of each step, cells -> items, keys, and one
batch of the worker's work (``Imports.work_once``).

A job is ``uploading`` (rows come in, at most ``MAX_ROWS_PER_CALL`` a call and ``MAX_ROWS`` in
all), ``checking`` once it has a mapping (every row is checked as the bulk create would check it,
writing nothing), ``checked`` (valid / invalid counted), ``running`` after start (batches of
``BATCH`` rows go through the collection's own bulk create, each batch with its rows' results and
the job's counters in one transaction), then ``done``; or ``cancelled``. A row is ``pending``,
then ``valid`` or ``invalid`` (check), then ``created``, ``exists`` or ``error`` (run).

Every refusal is a domain error (``crm_kit.imports.errors``: ``InvalidImport`` naming the field,
``ImportStatusForbids`` for a step the job's status does not allow, ``UnknownImport`` for a job that
is not the caller's) and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from marshmallow import Schema, fields
from sqlalchemy import JSON, Row, Table, and_, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from crm_kit.bulk import IMPORT_KEY_LENGTH
from crm_kit.db import is_postgres, utcnow
from crm_kit.identity import Identity
from crm_kit.imports.errors import ImportStatusForbids, ImportTooLarge, InvalidImport, UnknownImport

MAX_ROWS_PER_CALL = 5_000
MAX_ROWS = 200_000
MAX_COLUMNS = 200
MAX_COLUMN_NAME = 200
MAX_CELL = 10_000
MAX_FILE_NAME = 255
BATCH = 500
SAMPLE = 10
KEY_PREFIX = "row:"

UPLOADING, CHECKING, CHECKED, RUNNING, DONE, CANCELLED = (
    "uploading", "checking", "checked", "running", "done", "cancelled")
JOB_STATUSES = (UPLOADING, CHECKING, CHECKED, RUNNING, DONE, CANCELLED)
PENDING, VALID, INVALID, CREATED, EXISTS, ERROR = "pending", "valid", "invalid", "created", "exists", "error"
ROW_STATUSES = (PENDING, VALID, INVALID, CREATED, EXISTS, ERROR)
# What the worker takes in each working status of a job.
WORK = {CHECKING: (PENDING,), RUNNING: (VALID, INVALID)}

CreateBatch = Callable[[Session, Identity, list[dict[str, Any]]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Importer:
    """One importable collection: its name, the permission that creates it, the bulk create's item
    schema (its fields but ``key`` are what columns map to) and the bulk create itself:
    ``create_batch(session, identity, items)`` -> one result per item, in order:
    ``{index, status: created|exists|error, id, error, errors}``."""

    collection: str
    permission: str
    item_schema: Schema
    create_batch: CreateBatch
    key_length: int = IMPORT_KEY_LENGTH
    example_columns: tuple[str, ...] = field(default=())

    @cached_property
    def targets(self) -> dict[str, fields.Field]:
        """The fields a column may map to: the item's own fields, except ``key`` and nested objects."""
        return {name: f for name, f in self.item_schema.load_fields.items()
                if name != "key" and not isinstance(f, fields.Nested | fields.Dict)}

    def field_list(self) -> list[dict[str, Any]]:
        return [{"name": name, "required": bool(f.required), "many": isinstance(f, fields.List),
                 "description": str(f.metadata.get("description") or "")} for name, f in self.targets.items()]


# -- cells -> item --------------------------------------------------------------------------------

_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
_TRUE, _FALSE = {"true", "yes", "y", "1", "on"}, {"false", "no", "n", "0", "off"}


def cell_value(target: fields.Field, cell: str) -> Any:
    """A (trimmed, non-empty) cell as the bulk create's item takes it: a ``many`` field splits on
    ``;``; integers and booleans are converted (their fields refuse strings); everything else
    (text, decimals, dates, times, ids) is the string, which marshmallow loads as it would JSON."""
    if isinstance(target, fields.List):
        return [part.strip() for part in cell.split(";") if part.strip()]
    if isinstance(target, fields.Integer):
        return int(cell) if _INTEGER.fullmatch(cell) else cell
    if isinstance(target, fields.Boolean):
        lowered = cell.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else cell
    return cell


def digest(columns: Sequence[str], cells: Sequence[str]) -> str:
    """The digest of a row's header and cells (the default key's content)."""
    text = json.dumps([list(columns), list(cells)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def row_key(row_digest: str, occurrence: int, length: int) -> str:
    """A row's default idempotency key: the header, the cells and how many identical rows came
    before it, so the same file again makes the same keys (and identical rows stay distinct)."""
    return (KEY_PREFIX + hashlib.sha256(f"{row_digest}:{occurrence}".encode()).hexdigest())[:length]


class RowRefused(Exception):  # noqa: N818 - a row's own failure, not an error of the program
    def __init__(self, message: str, errors: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


def cells_to_item(importer: Importer, job: Mapping[str, Any], row: Any) -> dict[str, Any]:
    """The bulk create item of one row: mapped columns only, an empty cell leaves its field out,
    the key from ``key_column`` (an empty one refuses the row) or the row's digest."""
    columns: list[str] = job["columns"]
    where = {name: i for i, name in enumerate(columns)}
    cells: list[str] = row.cells
    item: dict[str, Any] = {}
    for column, name in (job["mapping"] or {}).items():
        index = where[column]
        cell = (cells[index] if index < len(cells) else "").strip()
        if cell:
            item[name] = cell_value(importer.targets[name], cell)
    key_column = job["key_column"]
    if key_column is not None:
        index = where[key_column]
        key = (cells[index] if index < len(cells) else "").strip()
        if not key:
            message = f"The key column is empty ({key_column!r})."
            raise RowRefused(f"{key_column}: {message}", [{"field": key_column, "message": message}])
    else:
        key = row_key(row.digest, row.occurrence, importer.key_length)
    item["key"] = key
    return item


# -- jobs -----------------------------------------------------------------------------------------

def identity_json(identity: Identity) -> dict[str, Any]:
    return {"user_id": identity.user_id, "name": identity.name, "office_id": identity.office_id,
            "roles": list(identity.roles), "permissions": sorted(identity.permissions)}


def identity_of(creator: Mapping[str, Any]) -> Identity:
    return Identity(user_id=creator["user_id"], name=creator.get("name", ""), office_id=creator["office_id"],
                    roles=tuple(creator.get("roles") or ()), permissions=frozenset(creator.get("permissions") or ()))


class Imports:
    """The import jobs of one service (its ``import_jobs`` and ``import_rows``) for its importers."""

    def __init__(self, jobs: Table, rows: Table, importers: Iterable[Importer]) -> None:
        self.jobs = jobs
        self.rows = rows
        self.importers = {i.collection: i for i in importers}

    # -- reading ---------------------------------------------------------------------------------

    def load(self, session: Session, identity: Identity, collection: str, job_id: str, *,
             lock: bool = False) -> dict[str, Any]:
        """The caller's job, or ``UnknownImport`` (someone else's is not found either)."""
        stmt = select(self.jobs).where(self.jobs.c.id == job_id, self.jobs.c.collection == collection,
                                       self.jobs.c.created_by == identity.user_id,
                                       self.jobs.c.office_id == identity.office_id)
        if lock and is_postgres(session):
            stmt = stmt.with_for_update()
        found = session.execute(stmt).first()
        if found is None:
            raise UnknownImport(job_id, collection)
        return dict(found._mapping)

    def mine(self, identity: Identity, collection: str) -> Any:
        """The caller's jobs of ``collection`` (a statement for a page)."""
        return select(self.jobs).where(self.jobs.c.collection == collection,
                                       self.jobs.c.created_by == identity.user_id,
                                       self.jobs.c.office_id == identity.office_id)

    def sample(self, session: Session, job_id: str) -> list[dict[str, Any]]:
        rows = session.execute(select(self.rows).where(self.rows.c.job_id == job_id)
                               .order_by(self.rows.c.number).limit(SAMPLE)).all()
        return [row_view(r) for r in rows]

    def view(self, session: Session, job: Mapping[str, Any], *, sample: bool = True) -> dict[str, Any]:
        importer = self.importers[job["collection"]]
        out = {k: v for k, v in job.items() if k != "creator"}
        out["fields"] = importer.field_list()
        out["sample"] = self.sample(session, job["id"]) if sample else []
        return out

    def result_rows(self, session: Session, job_id: str) -> Iterable[Row[Any]]:
        r = self.rows
        return session.execute(select(r.c.number, r.c.status, r.c.record_id, r.c.error)
                               .where(r.c.job_id == job_id).order_by(r.c.number))

    # -- the steps -------------------------------------------------------------------------------

    def create(self, session: Session, identity: Identity, collection: str, file_name: str, columns: list[str],
               rows: list[list[str]]) -> dict[str, Any]:
        if len(set(columns)) != len(columns):
            twice = next(c for c in columns if columns.count(c) > 1)
            raise InvalidImport.of_field("columns", f"The column name {twice!r} is there twice; column names must be "
                                                 "unique.")
        now = utcnow()
        job_id = str(uuid.uuid4())
        session.execute(insert(self.jobs).values(
            id=job_id, collection=collection, file_name=file_name, status=UPLOADING, columns=columns, mapping=None,
            key_column=None, rows=0, checked=0, valid=0, invalid=0, processed=0, created=0, existing=0, failed=0,
            creator=identity_json(identity), created_by=identity.user_id, office_id=identity.office_id,
            created_at=now, started_at=None, finished_at=None, version=1))
        job = self.load(session, identity, collection, job_id)
        if rows:
            return self._add_rows(session, job, rows)
        return job

    def append(self, session: Session, identity: Identity, collection: str, job_id: str,
               rows: list[list[str]]) -> dict[str, Any]:
        job = self.load(session, identity, collection, job_id, lock=True)
        if job["status"] != UPLOADING:
            raise ImportStatusForbids.only_while(job, "rows are added", (UPLOADING,))
        return self._add_rows(session, job, rows)

    def _add_rows(self, session: Session, job: dict[str, Any], rows: list[list[str]]) -> dict[str, Any]:
        columns = job["columns"]
        for index, cells in enumerate(rows):
            if len(cells) > len(columns):
                raise InvalidImport.of_field(f"rows.{index}", f"{len(cells)} cells, but the file has {len(columns)} "
                                                           "columns.")
        if job["rows"] + len(rows) > MAX_ROWS:
            raise ImportTooLarge(MAX_ROWS, job["rows"], len(rows))
        padded = [list(cells) + [""] * (len(columns) - len(cells)) for cells in rows]
        digests = [digest(columns, cells) for cells in padded]
        seen = self._occurrences(session, job["id"], set(digests))
        values = []
        for offset, (cells, row_digest) in enumerate(zip(padded, digests, strict=True)):
            occurrence = seen.get(row_digest, 0)
            seen[row_digest] = occurrence + 1
            values.append({"job_id": job["id"], "number": job["rows"] + 2 + offset, "cells": cells,
                           "digest": row_digest, "occurrence": occurrence, "status": PENDING, "record_id": None,
                           "error": None, "errors": None})
        if values:
            session.execute(insert(self.rows), values)
        return self._set(session, job, rows=job["rows"] + len(rows))

    def _occurrences(self, session: Session, job_id: str, digests: set[str]) -> dict[str, int]:
        """How many rows with each digest the job has already."""
        out: dict[str, int] = {}
        ordered = sorted(digests)
        for start in range(0, len(ordered), 1000):
            chunk = ordered[start:start + 1000]
            out.update({d: int(n) for d, n in session.execute(
                select(self.rows.c.digest, func.count()).where(self.rows.c.job_id == job_id,
                                                               self.rows.c.digest.in_(chunk))
                .group_by(self.rows.c.digest)).all()})
        return out

    def map(self, session: Session, identity: Identity, collection: str, job_id: str, mapping: dict[str, str],
            key_column: str | None) -> dict[str, Any]:
        """A (new) mapping: every row pending again, the job checking."""
        job = self.load(session, identity, collection, job_id, lock=True)
        if job["status"] not in (UPLOADING, CHECKED):
            raise ImportStatusForbids.only_while(job, "the mapping is set", (UPLOADING, CHECKED))
        importer = self.importers[collection]
        columns = set(job["columns"])
        errors: list[dict[str, str]] = []
        taken: dict[str, str] = {}
        for column, name in mapping.items():
            if column not in columns:
                errors.append({"field": f"mapping.{column}", "message": "No such column in the file."})
            elif name not in importer.targets:
                errors.append({"field": f"mapping.{column}", "message": f"No such field {name!r}; the fields are "
                                                                        f"{', '.join(importer.targets)}."})
            elif name in taken:
                errors.append({"field": f"mapping.{column}", "message": f"The field {name!r} is mapped from "
                                                                        f"{taken[name]!r} already."})
            else:
                taken[name] = column
        for name, target in importer.targets.items():
            if target.required and name not in taken:
                errors.append({"field": "mapping", "message": f"The required field {name!r} is not mapped."})
        if key_column is not None and key_column not in columns:
            errors.append({"field": "key_column", "message": "No such column in the file."})
        if errors:
            raise InvalidImport.of(errors)
        session.execute(update(self.rows).where(self.rows.c.job_id == job["id"])
                        .values(status=PENDING, record_id=None, error=None, errors=None))
        return self._set(session, job, mapping=dict(mapping), key_column=key_column, status=CHECKING,
                         checked=0, valid=0, invalid=0, processed=0, created=0, existing=0, failed=0,
                         started_at=None, finished_at=None)

    def start(self, session: Session, identity: Identity, collection: str, job_id: str) -> dict[str, Any]:
        job = self.load(session, identity, collection, job_id, lock=True)
        if job["status"] != CHECKED:
            raise ImportStatusForbids.only_while(job, "an import starts", (CHECKED,))
        return self._set(session, job, status=RUNNING, processed=0, created=0, existing=0, failed=0,
                         started_at=utcnow(), finished_at=None)

    def cancel(self, session: Session, identity: Identity, collection: str, job_id: str) -> dict[str, Any]:
        job = self.load(session, identity, collection, job_id, lock=True)
        if job["status"] == DONE:
            raise ImportStatusForbids("The import is done: there is nothing left to cancel (what it created stays).")
        if job["status"] == CANCELLED:
            return job
        return self._set(session, job, status=CANCELLED, finished_at=utcnow())

    def _set(self, session: Session, job: dict[str, Any], **values: Any) -> dict[str, Any]:
        session.execute(update(self.jobs).where(self.jobs.c.id == job["id"])
                        .values(**values, version=self.jobs.c.version + 1))
        return {**job, **values, "version": job["version"] + 1}

    # -- the worker's part -----------------------------------------------------------------------

    def work_once(self, session: Session, *, picked: list[str] | None = None,
                  failed: Mapping[str, str] | None = None) -> bool:
        """One batch of one job in ``checking`` or ``running``, in ``session``'s transaction (the
        caller commits): its rows' results, the job's counters and - when running - the records,
        together; the job ``checked`` / ``done`` when no row is left. False when there is no work.

        ``picked`` gets the job's id (before the batch, so a caller knows which job a failing batch
        was). A job in ``failed`` (id -> why) has its next batch marked invalid / error with that
        reason instead, without the bulk create: a batch that keeps failing does not hold up the job
        or the jobs after it."""
        jobs, rows = self.jobs, self.rows
        postgres = is_postgres(session)
        stmt = (select(jobs).where(jobs.c.status.in_(tuple(WORK)), jobs.c.collection.in_(tuple(self.importers)))
                .order_by(jobs.c.created_at, jobs.c.id).limit(1))
        if postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        found = session.execute(stmt).first()
        if found is None:
            return False
        job = dict(found._mapping)
        if picked is not None:
            picked.append(job["id"])
        wanted = WORK[job["status"]]
        batch_stmt = (select(rows).where(rows.c.job_id == job["id"], rows.c.status.in_(wanted))
                      .order_by(rows.c.number).limit(BATCH))
        if postgres:
            batch_stmt = batch_stmt.with_for_update(skip_locked=True)
        batch = session.execute(batch_stmt).all()
        if batch and failed and job["id"] in failed:
            self._give_up(session, job, batch, failed[job["id"]])
        elif batch:
            if job["status"] == CHECKING:
                self._check(session, job, batch)
            else:
                self._run(session, job, batch)
        left = session.execute(select(rows.c.number).where(rows.c.job_id == job["id"], rows.c.status.in_(wanted))
                               .limit(1)).first()
        if left is None:
            finished = {"status": CHECKED} if job["status"] == CHECKING else {"status": DONE,
                                                                               "finished_at": utcnow()}
            session.execute(update(jobs).where(jobs.c.id == job["id"])
                            .values(**finished, version=jobs.c.version + 1))
        return True

    def _results(self, session: Session, job: dict[str, Any], batch: Sequence[Row[Any]],
                 rolled_back: bool) -> list[dict[str, Any]]:
        """Each row's bulk create result (the rows that could not become an item: an error)."""
        importer = self.importers[job["collection"]]
        out: list[dict[str, Any] | None] = []
        items: list[dict[str, Any]] = []
        for row in batch:
            try:
                items.append(cells_to_item(importer, job, row))
                out.append(None)
            except RowRefused as exc:
                out.append({"status": ERROR, "id": None, "error": exc.message, "errors": exc.errors})
        results: list[dict[str, Any]] = []
        if items:
            identity = identity_of(job["creator"])
            if rolled_back:
                savepoint = session.begin_nested()
                try:
                    results = importer.create_batch(session, identity, items)
                finally:
                    savepoint.rollback()
            else:
                results = importer.create_batch(session, identity, items)
        made = iter(results)
        return [r if r is not None else next(made) for r in out]

    def _store(self, session: Session, job: dict[str, Any], batch: Sequence[Row[Any]],
               values: list[dict[str, Any]], counters: Mapping[str, int]) -> None:
        rows, jobs = self.rows, self.jobs
        session.execute(
            update(rows).where(and_(rows.c.job_id == bindparam("b_job"), rows.c.number == bindparam("b_number")))
            .values(status=bindparam("b_status"), record_id=bindparam("b_id"), error=bindparam("b_error"),
                    errors=bindparam("b_errors", type_=JSON)),
            [{"b_job": job["id"], "b_number": row.number, **v} for row, v in zip(batch, values, strict=True)])
        session.execute(update(jobs).where(jobs.c.id == job["id"]).values(
            **{name: jobs.c[name] + n for name, n in counters.items()}, version=jobs.c.version + 1))

    def _give_up(self, session: Session, job: dict[str, Any], batch: Sequence[Row[Any]], why: str) -> None:
        message = f"This batch of rows could not be processed: {why}"[:1000]
        checking = job["status"] == CHECKING
        values = [{"b_status": INVALID if checking else ERROR, "b_id": None, "b_error": message, "b_errors": None}
                  for _ in batch]
        counters = ({"checked": len(batch), "invalid": len(batch)} if checking
                    else {"processed": len(batch), "failed": len(batch)})
        self._store(session, job, batch, values, counters)

    def _check(self, session: Session, job: dict[str, Any], batch: Sequence[Row[Any]]) -> None:
        results = self._results(session, job, batch, rolled_back=True)
        values = []
        for result in results:
            bad = result["status"] == ERROR
            values.append({"b_status": INVALID if bad else VALID, "b_id": None,
                           "b_error": result.get("error") if bad else None,
                           "b_errors": result.get("errors") if bad else None})
        invalid = sum(1 for v in values if v["b_status"] == INVALID)
        self._store(session, job, batch, values,
                    {"checked": len(batch), "valid": len(batch) - invalid, "invalid": invalid})

    def _run(self, session: Session, job: dict[str, Any], batch: Sequence[Row[Any]]) -> None:
        results = self._results(session, job, batch, rolled_back=False)
        values = [{"b_status": r["status"], "b_id": r.get("id"), "b_error": r.get("error"),
                   "b_errors": r.get("errors")} for r in results]
        count = {s: sum(1 for v in values if v["b_status"] == s) for s in (CREATED, EXISTS, ERROR)}
        self._store(session, job, batch, values, {"processed": len(batch), "created": count[CREATED],
                                                  "existing": count[EXISTS], "failed": count[ERROR]})


def row_view(row: Any) -> dict[str, Any]:
    return {"number": row.number, "cells": row.cells, "status": row.status, "id": row.record_id,
            "error": row.error, "errors": row.errors or []}
