"""Helpers for Alembic version files, so that a version says what it adds in a few lines.

- ``migration(upgrade, downgrade)``: a version's ``upgrade, downgrade`` from two functions that
  take Alembic's ``op`` (a library's ``create_…``/``drop_…``), e.g.
  ``upgrade, downgrade = migration(create_import_tables, drop_import_tables)``.
- ``table(name, *columns, …)``, ``create_tables(op, …)``, ``drop_tables(op, …)`` and
  ``new_tables(…)`` (a version that only adds tables): a table whose primary key is named
  ``pk_<table>`` (on ``id`` unless ``key`` says otherwise) and whose indexes are named
  ``ix_<table>_<columns>`` unless named otherwise, as the kit's naming convention names them.
  Alembic copies a column or constraint that an earlier run attached to a table, so a version
  may run again in the same process (tests migrate many databases).
- ``strings(…)``, ``columns(…)``, ``audit_columns()``: the columns, several to a line.

What a helper makes must never change once a version uses it: a change of schema is a new
version, never an edit of an applied one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from alembic import op
from alembic.operations import Operations

from crm_kit.db import UTCDateTime

Step = Callable[[], None]
ID = 36  # UUID strings
REF = 200  # ids of users and offices, as the identity provider gives them
UTC = UTCDateTime(timezone=True)


def migration(upgrade: Callable[[Operations], None], downgrade: Callable[[Operations], None]) -> tuple[Step, Step]:
    """A version's ``upgrade, downgrade`` from two functions of ``op``."""
    ops = cast(Operations, op)  # the module that stands for the running migration's Operations
    return (lambda: upgrade(ops)), (lambda: downgrade(ops))


def strings(*, null: bool = False, **lengths: int) -> list[sa.Column[Any]]:
    """One VARCHAR column per keyword, ``name=length``, in this order (NOT NULL unless ``null``)."""
    return [sa.Column(name, sa.String(length=length), nullable=null) for name, length in lengths.items()]


def columns(type_: sa.types.TypeEngine[Any], *names: str, null: bool = False) -> list[sa.Column[Any]]:
    """Columns of one type, in this order (NOT NULL unless ``null``)."""
    return [sa.Column(name, type_, nullable=null) for name in names]


def audit_columns() -> list[sa.Column[Any]]:
    """``version``, ``created_at``/``_by`` and ``modified_at``/``_by``: what every file a user edits carries."""
    return [sa.Column("version", sa.Integer(), nullable=False),
            *(column for when in ("created", "modified")
              for column in (sa.Column(f"{when}_at", UTC, nullable=False),
                             sa.Column(f"{when}_by", sa.String(length=REF), nullable=False)))]


@dataclass(frozen=True)
class Table:
    """One table of a version: what ``op.create_table`` takes, its primary key and its indexes."""

    name: str
    items: tuple[Any, ...]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, tuple[str, ...]], ...]

    def create(self, ops: Operations) -> None:
        key = [sa.PrimaryKeyConstraint(*self.key, name=f"pk_{self.name}")] if self.key else []
        ops.create_table(self.name, *self.items, *key)
        for name, cols in self.indexes:
            ops.create_index(name, self.name, list(cols))


def table(name: str, *items: Any, key: Sequence[str] = ("id",), references: Mapping[str, str] | None = None,
          ondelete: str | None = None, unique: Mapping[str, Sequence[str]] | None = None,
          indexes: Sequence[str | Sequence[str]] = (), named_indexes: Mapping[str, Sequence[str]] | None = None,
          ) -> Table:
    """Table ``name`` of ``items`` (columns, constraints) and:

    - its primary key ``pk_<name>`` on ``key`` (none if empty);
    - for each of ``references`` (column: table), a foreign key ``fk_<name>_<column>_<table>`` to
      that table's ``id``, ``ondelete`` as given;
    - the ``unique`` constraints (name: columns), made after the foreign keys;
    - an index ``ix_<name>_<columns>`` for each of ``indexes`` (a column or a sequence of columns),
      and the ``named_indexes`` (name: columns).
    """
    fks = [sa.ForeignKeyConstraint([column], [f"{target}.id"], name=f"fk_{name}_{column}_{target}", ondelete=ondelete)
           for column, target in (references or {}).items()]
    uqs = [sa.UniqueConstraint(*cols, name=uq) for uq, cols in (unique or {}).items()]
    ixs = [(ix,) if isinstance(ix, str) else tuple(ix) for ix in indexes]
    return Table(name, (*items, *fks, *uqs), tuple(key),
                 (*((f"ix_{name}_{'_'.join(cols)}", cols) for cols in ixs),
                  *((ix, tuple(cols)) for ix, cols in (named_indexes or {}).items())))


def create_tables(ops: Operations, *tables: Table) -> None:
    """Create ``tables`` (with their indexes) in this order."""
    for each in tables:
        each.create(ops)


def drop_tables(ops: Operations, *tables: Table | str) -> None:
    """Drop ``tables`` (with their indexes) in the reverse order: the undoing of ``create_tables``."""
    for each in reversed(tables):
        ops.drop_table(each if isinstance(each, str) else each.name)


def new_tables(*tables: Table) -> tuple[Step, Step]:
    """A version that adds ``tables``: ``upgrade`` creates them in order, ``downgrade`` drops them."""
    return migration(lambda ops: create_tables(ops, *tables), lambda ops: drop_tables(ops, *tables))
