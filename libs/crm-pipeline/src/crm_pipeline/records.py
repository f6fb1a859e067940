"""The records service layer: every change to a lead or an opportunity goes through here.

One path for stage changes (``update`` with a ``stage_id``, whoever asks: a user's PATCH, a
bulk action, a trigger's command, a conversion): it validates the stage against the
service's catalogue copy, keeps the history with its cause, bumps the version once, and
writes ``stage_changed`` (plus ``stage_group_changed`` when the group changes) to the outbox
in the same transaction as the change (the session's unit of work writes them at commit).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from crm_catalogue_view import CatalogueView
from crm_kit.db import utcnow
from crm_kit.errors import DomainError
from crm_pipeline import events
from crm_pipeline.errors import NoDefaultStage, NotInGroup, record_changed
from crm_pipeline.events import Actor, snapshot
from crm_pipeline.kind import RecordKind
from crm_pipeline.references import EXISTS, FILE_FIELDS, KnownFiles, unknown_file
from crm_pipeline.tables import IMPORT_KEY

# Reference fields and the catalogue table each must name (an active entry of the same kind).
REFERENCES = {
    "source_id": "sources",
    "priority_id": "priorities",
    "category_id": "categories",
    "procedure_id": "procedures",
}


class Records:
    """Reads and changes the records of one kind in one service's database."""

    def __init__(self, kind: RecordKind, tables: Mapping[str, Table], view: CatalogueView | None = None) -> None:
        self.kind = kind
        self.table = tables["records"]
        self.history = tables["stage_history"]
        self.groups = tables["record_groups"]
        self.view = view or CatalogueView()
        self.files = KnownFiles(tables.get("known_files"))
        # The hot path's statements, built once with parameters: built per call with the values in
        # them they cost more CPU than running them (SQLAlchemy coerces each value and keys the
        # statement afresh). An INSERT or UPDATE without values() takes its columns from the
        # parameters it runs with.
        t, groups = self.table, self.groups
        self._by_id = select(t).where(t.c.id == bindparam("record_id"))
        self._group_ids = select(groups.c.group_id).where(groups.c.record_id == bindparam("record_id")) \
            .order_by(groups.c.group_id)
        self._insert = insert(t).returning(*t.c)
        self._insert_group = insert(groups)
        self._insert_history = insert(self.history)
        # Guarded: holds only if nobody wrote the row since it was read (parameters named apart from
        # the columns the SET takes from the rest).
        self._update = update(t).where(t.c.id == bindparam("guard_id"), t.c.version == bindparam("guard_version")) \
            .returning(*t.c)

    # -- reading ---------------------------------------------------------------------------------

    def get(self, session: Session, record_id: str) -> Any:
        return session.execute(self._by_id, {"record_id": record_id}).first()

    def group_ids(self, session: Session, record_id: str) -> list[str]:
        return list(session.execute(self._group_ids, {"record_id": record_id}).scalars())

    def group_ids_of(self, session: Session, record_ids: list[str]) -> dict[str, list[str]]:
        """Group ids of many records at once (list pages)."""
        out: dict[str, list[str]] = {rid: [] for rid in record_ids}
        if record_ids:
            rows = session.execute(select(self.groups.c.record_id, self.groups.c.group_id)
                                   .where(self.groups.c.record_id.in_(record_ids))
                                   .order_by(self.groups.c.group_id))
            for rid, gid in rows:
                out[rid].append(gid)
        return out

    # -- validation -----------------------------------------------------------------------------

    def _require(self, session: Session, entry_id: str, entity: str, field: str, memo: Memo | None = None) -> Any:
        def require() -> Any:
            return self.view.require(session, entry_id, kind=self.kind.kind, entity=entity, field_name=field)

        return require() if memo is None else memo.call(("catalogue", entry_id, entity, field), require)

    def check_references(self, session: Session, values: Mapping[str, Any], memo: Memo | None = None) -> None:
        """422 for any id that is not an active catalogue entry of this kind, or for a
        ``company_id``/``contact_id`` that names no existing company or contact. ``memo``: answers
        already found in this request (a bulk create checks the same ids again and again)."""
        if memo is None:
            self.files.require(session, values)
        else:
            for name, entity in FILE_FIELDS.items():
                value = values.get(name)
                if value and self._file_state(session, value, entity, memo) != EXISTS:
                    raise unknown_file(name, value)
        for name, entity in REFERENCES.items():
            if values.get(name):
                self._require(session, values[name], entity, name, memo)
        for i, attribute_id in enumerate(values.get("attribute_ids") or []):
            self._require(session, attribute_id, "attributes", f"attribute_ids.{i}", memo)
        for i, group_id in enumerate(values.get("group_ids") or []):
            self._require(session, group_id, "groups", f"group_ids.{i}", memo)

    def _file_state(self, session: Session, file_id: str, entity: str, memo: Memo) -> str:
        return str(memo.call(("file", file_id, entity), lambda: self.files.state(session, file_id, entity, lock=True)))

    def stage(self, session: Session, stage_id: str, memo: Memo | None = None) -> Any:
        return self._require(session, stage_id, "stage", "stage_id", memo)

    def default_stage(self, session: Session, memo: Memo | None = None) -> Any:
        stage = self.view.default_stage(session, self.kind.kind) if memo is None else \
            memo.call(("default_stage",), lambda: self.view.default_stage(session, self.kind.kind))
        if stage is None:
            raise NoDefaultStage(self.kind.kind, self.kind.plural)
        return stage

    # -- writing ----------------------------------------------------------------------------------

    def create(self, session: Session, data: Mapping[str, Any], actor: Actor, *,
               record_id: str | None = None, trusted: bool = False) -> Any:
        """Insert a record (default stage unless one is given) and emit ``<kind>.created``.

        ``trusted``: the values were validated by another service against its own catalogue
        copy (a conversion); this copy may lag behind it, so they are taken as they are
        rather than refused - refusing would leave a conversion half-done.
        """
        return self.create_in_stage(session, data, actor, record_id=record_id, trusted=trusted)[0]

    def create_in_stage(self, session: Session, data: Mapping[str, Any], actor: Actor, *,
                        record_id: str | None = None, trusted: bool = False) -> tuple[Any, Any]:
        """``create``, and the stage the record got as the catalogue copy has it (its answer shows
        it without reading the copy again)."""
        new = self._prepare(session, data, actor, record_id=record_id, trusted=trusted)
        # RETURNING: the row as stored, without reading it back (one round trip less per create).
        row = session.execute(self._insert, new.values).one()
        for group_id in new.group_ids:
            session.execute(self._insert_group, {"record_id": row.id, "group_id": group_id,
                                                 "added_at": new.values["created_at"], "added_by": actor.user_id})
        session.execute(self._insert_history, new.history)
        self.emit(session, "created", row, actor, snapshot(self.kind, row, new_group_ids(data)))
        return row, new.stage

    def _prepare(self, session: Session, data: Mapping[str, Any], actor: Actor, *, record_id: str | None = None,
                 trusted: bool = False, memo: Memo | None = None, import_key: str | None = None) -> _NewRecord:
        """A new record's row, groups and first history entry, its references checked (a DomainError
        refuses it); nothing written."""
        values = dict(data)
        group_ids = list(dict.fromkeys(values.pop("group_ids", None) or []))
        if trusted and values.get("stage_id"):
            known = self.view.get(session, values["stage_id"])
            stage = known or _Stage(values["stage_id"], values.get("stage_group_id"))
        else:
            self.check_references(session, {**values, "group_ids": group_ids}, memo)
            stage = self.stage(session, values["stage_id"], memo) if values.get("stage_id") \
                else self.default_stage(session, memo)
        values.pop("stage_group_id", None)
        now = utcnow()
        row_values = {
            "description": "", "attribute_ids": [], **values,
            "id": record_id or str(uuid.uuid4()),
            "owner_id": values.get("owner_id") or actor.user_id,
            "office_id": values.get("office_id") or actor.office_id,
            "stage_id": stage.id, "stage_group_id": stage.attr("stage_group_id"),
            "stage_changed_at": now, "version": 1,
            "created_at": now, "created_by": actor.user_id, "modified_at": now, "modified_by": actor.user_id,
        }
        if import_key is not None:
            row_values[IMPORT_KEY] = import_key
        row_values["attribute_ids"] = list(dict.fromkeys(row_values["attribute_ids"] or []))
        history = {"record_id": row_values["id"], "from_stage_id": None, "to_stage_id": stage.id, "at": now,
                   "by": actor.user_id, "cause": actor.cause}
        return _NewRecord(row_values, group_ids, history, stage)

    def create_many(self, session: Session, items: Sequence[tuple[Mapping[str, Any], str]],
                    actor: Actor) -> list[Any]:
        """Create a record from each (data, import key) as ``create`` does - the same checks, rows,
        history and ``created`` event - with a few statements for them all. Per item, in order:
        the new row, or the DomainError that refused it (nothing written for it). The keys must be
        new (the caller looked); one taken meanwhile by a concurrent call fails the whole
        statement (IntegrityError), which the caller handles."""
        memo = Memo()
        out: list[Any] = []
        ready: list[tuple[int, _NewRecord, list[str]]] = []
        for data, key in items:
            try:
                new = self._prepare(session, data, actor, memo=memo, import_key=key)
            except DomainError as exc:
                out.append(exc)
                continue
            ready.append((len(out), new, new_group_ids(data)))
            out.append(None)
        if not ready:
            return out
        columns = [c.name for c in self.table.c]
        rows = session.execute(insert(self.table).returning(*self.table.c, sort_by_parameter_order=True),
                               [{c: new.values.get(c) for c in columns} for _, new, _ in ready]).all()
        groups = [{"record_id": new.values["id"], "group_id": g, "added_at": new.values["created_at"],
                   "added_by": actor.user_id} for _, new, _ in ready for g in new.group_ids]
        if groups:
            session.execute(insert(self.groups), groups)
        session.execute(insert(self.history), [new.history for _, new, _ in ready])
        envelopes = []
        for (index, _, group_ids), row in zip(ready, rows, strict=True):
            out[index] = row
            state = snapshot(self.kind, row, group_ids)
            envelopes.append(events.envelope(self.kind, "created", row.id, row.version, state, actor))
        events.publish(session, self.kind, envelopes)
        return out

    def update(self, session: Session, row: Any, changes: Mapping[str, Any], actor: Actor,
               extra_events: tuple[tuple[str, Any], ...] = (), *, check: bool = True) -> Any:
        """Apply ``changes`` (any fields, ``stage_id`` included) with one version bump.

        Emits ``updated`` when fields other than the stage changed, ``stage_changed`` (and
        ``stage_group_changed``) when the stage did; nothing when nothing changed.
        ``check=False``: the reference fields were decided by the service itself (clearing a
        deleted file, a conversion's company and contact), not by a client.
        """
        changes = {k: v for k, v in changes.items() if _differs(getattr(row, k), v)}
        if not changes:
            return row
        if check:
            self.check_references(session, changes)
        now = utcnow()
        values: dict[str, Any] = dict(changes)
        stage_move = None
        if "stage_id" in changes:
            stage = self.stage(session, changes["stage_id"])
            if self.kind.stage_rule is not None:
                self.kind.stage_rule(row, stage)  # e.g. a converted lead stays in end stages
            group_id = stage.attr("stage_group_id")
            values.update(stage_group_id=group_id, stage_changed_at=now)
            stage_move = (row.stage_id, stage.id, row.stage_group_id, group_id)
            session.execute(self._insert_history, {"record_id": row.id, "from_stage_id": row.stage_id,
                                                   "to_stage_id": stage.id, "at": now, "by": actor.user_id,
                                                   "cause": actor.cause})
        if "attribute_ids" in values:
            values["attribute_ids"] = list(dict.fromkeys(values["attribute_ids"] or []))
        new = self._guarded_update(session, row, {**values, "version": row.version + 1, "modified_at": now,
                                                  "modified_by": actor.user_id})
        state = self.snapshot(session, new)  # one read of the groups for every event below
        if set(changes) - {"stage_id"}:
            self.emit(session, "updated", new, actor, state)
        if stage_move is not None:
            from_stage, to_stage, from_group, to_group = stage_move
            moved = events.stage_changed(state, from_stage, to_stage, from_group, to_group, actor.cause)
            self.emit(session, "stage_changed", new, actor, moved)
            if (from_group or "") != (to_group or ""):
                self.emit(session, "stage_group_changed", new, actor, moved)
        for what, payload in extra_events:
            self.emit(session, what, new, actor, payload)
        return new

    def add_group(self, session: Session, row: Any, group_id: str, actor: Actor) -> tuple[Any, bool]:
        """Add the record to a group; (record, False) when it already was a member."""
        self._require(session, group_id, "groups", "group_id")
        members = self.group_ids(session, row.id)
        if group_id in members:
            return row, False
        session.execute(self._insert_group, {"record_id": row.id, "group_id": group_id, "added_at": utcnow(),
                                             "added_by": actor.user_id})
        # The groups now, without reading them again (sorted as group_ids reads them: ids are ASCII).
        return self._touch(session, row, actor, "added_to_group", group_id, sorted([*members, group_id])), True

    def remove_group(self, session: Session, row: Any, group_id: str, actor: Actor) -> Any:
        """Remove the record from a group; 404 when it is not a member."""
        result: Any = session.execute(delete(self.groups).where(self.groups.c.record_id == row.id,
                                                                self.groups.c.group_id == group_id))
        if result.rowcount == 0:
            raise NotInGroup(self.kind.kind, group_id)
        return self._touch(session, row, actor, "removed_from_group", group_id)

    def delete(self, session: Session, row: Any, actor: Actor) -> None:
        """Delete the record, its history and memberships, and emit ``<kind>.deleted``."""
        session.execute(delete(self.groups).where(self.groups.c.record_id == row.id))
        session.execute(delete(self.history).where(self.history.c.record_id == row.id))
        self._guarded(session, row, delete(self.table))
        events.publish(session, self.kind, [events.envelope(self.kind, "deleted", row.id, row.version + 1,
                                                            events.record_deleted(self.kind, row.id), actor)])

    # -- internals --------------------------------------------------------------------------------

    def _touch(self, session: Session, row: Any, actor: Actor, what: str, group_id: str,
               group_ids: list[str] | None = None) -> Any:
        """Bump the version for a membership change and emit its event (``group_ids``: the record's
        groups after it, when the caller knows them)."""
        new = self._guarded_update(session, row, {"version": row.version + 1, "modified_at": utcnow(),
                                                  "modified_by": actor.user_id})
        state = self.snapshot(session, new) if group_ids is None else snapshot(self.kind, new, group_ids)
        self.emit(session, what, new, actor, events.membership_changed(state, group_id))
        return new

    def snapshot(self, session: Session, row: Any) -> Any:
        """The record's event payload as it is now."""
        return snapshot(self.kind, row, self.group_ids(session, row.id))

    def _guarded(self, session: Session, row: Any, statement: Any) -> Any:
        """Run an UPDATE/DELETE of ``row`` that holds only if nobody wrote it since it was read;
        the row as the statement left it (RETURNING: no read back)."""
        result = session.execute(statement.where(self.table.c.id == row.id, self.table.c.version == row.version)
                                 .returning(*self.table.c)).first()
        if result is None:
            raise record_changed(self.kind.kind)
        return result

    def _guarded_update(self, session: Session, row: Any, values: Mapping[str, Any]) -> Any:
        """``_guarded`` for an UPDATE setting ``values``, with the statement built once."""
        result = session.execute(self._update, {**values, "guard_id": row.id, "guard_version": row.version}).first()
        if result is None:
            raise record_changed(self.kind.kind)
        return result

    def emit(self, session: Session, what: str, row: Any, actor: Actor, payload: Any = None) -> None:
        """``<kind>.<what>`` for ``row`` (its state now unless ``payload`` is given), written to the outbox
        when the transaction commits."""
        payload = payload if payload is not None else self.snapshot(session, row)
        events.publish(session, self.kind, [events.envelope(self.kind, what, row.id, row.version, payload, actor)])


@dataclass(frozen=True)
class _NewRecord:
    values: dict[str, Any]
    group_ids: list[str]
    history: dict[str, Any]
    stage: Any  # a CatalogueEntryView, or a _Stage (trusted)


@dataclass
class Memo:
    """Answers of one request's lookups, found once (a refusal is remembered and raised again)."""

    answers: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def call(self, key: tuple[Any, ...], find: Callable[[], Any]) -> Any:
        if key not in self.answers:
            try:
                self.answers[key] = find()
            except DomainError as exc:
                self.answers[key] = exc
        answer = self.answers[key]
        if isinstance(answer, DomainError):
            raise answer
        return answer


@dataclass(frozen=True)
class _Stage:
    """A stage known only by id (see ``create(trusted=True)``)."""

    id: str
    group_id: str | None

    def attr(self, key: str, default: Any = None) -> Any:
        return self.group_id if key == "stage_group_id" else default


def new_group_ids(data: Mapping[str, Any]) -> list[str]:
    """The group ids a record created from ``data`` has, as a record lists them (no read needed)."""
    return sorted(set(data.get("group_ids") or []))


def _differs(current: Any, new: Any) -> bool:
    if isinstance(current, Decimal) or isinstance(new, Decimal):
        return (None if current is None else Decimal(str(current))) != (None if new is None else Decimal(str(new)))
    if isinstance(current, dt.date) and isinstance(new, str):
        return current.isoformat() != new
    return bool(current != new)
