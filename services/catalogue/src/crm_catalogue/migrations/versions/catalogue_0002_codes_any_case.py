"""catalogue: codes unique whatever their case (unique indexes on lower(code))

Created 2026-12-02.

``FAIR`` and ``fair`` in the same kind (and table) were two codes; now they are one. The rule
is the database's (an expression index, on SQLite and PostgreSQL alike), so two concurrent
writes cannot both win; the rules check it first for a clear 409.

A database that already holds two codes differing only in case cannot take the index: the
migration stops and names them, and nothing changes - rename one (PATCH its code) and migrate
again. Codes are never changed behind the operator's back: records and clients refer to them.
"""

import sqlalchemy as sa
from alembic import op

revision = "catalogue_0002"
down_revision = "catalogue_0001"

# (index name, table, the columns a code is unique within)
INDEXES = (
    ("uq_stages_kind_lower_code", "stages", ("kind",)),
    ("uq_table_entries_kind_table_lower_code", "table_entries", ("kind", "table_name")),
)


def _clashes(bind: sa.Connection, table: str, scope: tuple[str, ...]) -> list[str]:
    columns = ", ".join(scope)
    rows = bind.execute(sa.text(
        f"SELECT {columns}, lower(code) AS folded, count(*) AS n FROM {table} "  # noqa: S608 - fixed names
        f"GROUP BY {columns}, lower(code) HAVING count(*) > 1")).all()
    return [f"{table}: {'/'.join(str(getattr(r, c)) for c in scope)} code {r.folded!r} ({r.n} times)" for r in rows]


def upgrade() -> None:
    bind = op.get_bind()
    clashes = [clash for _, table, scope in INDEXES for clash in _clashes(bind, table, scope)]
    if clashes:
        raise RuntimeError("codes that differ only in case must be renamed before this migration "
                           "(catalogue_0002): " + "; ".join(clashes))
    for name, table, scope in INDEXES:
        op.create_index(name, table, [*scope, sa.text("lower(code)")], unique=True)


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
