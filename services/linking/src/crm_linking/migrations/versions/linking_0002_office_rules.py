"""linking: one MAIN and one SIGN contact per record (a database rule), role-less links, activities' office

Created 2026-12-01.

- ``record_contacts.role_id`` becomes nullable (a former main contact stays linked without a
  role; a conversion carries a contact over without one when there is no matching role).
- ``record_contacts.exclusive_role`` ("MAIN" | "SIGN" | NULL) under UNIQUE (record_kind,
  record_id, exclusive_role). Backfilled from the catalogue copy: where a record had several
  MAIN (or SIGN) contacts, one keeps the role - for MAIN the record's own ``contact_id`` if it is
  among them, otherwise the earliest linked - and the others stay linked with no role.
- ``activities.office_id``: the office an activity belongs to while it is on no record. Backfilled
  from the lead's (else the opportunity's) office for activities on a record linking knows;
  left NULL otherwise (nothing says where such an activity was made: it stays shared, as it was).
"""

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "linking_0002"
down_revision = "linking_0001"

EXCLUSIVE = ("MAIN", "SIGN")


def _backfill_exclusive_roles(bind: Any) -> None:
    rows = bind.execute(sa.text(
        "SELECT rc.record_kind, rc.record_id, rc.contact_id, rc.linked_at, cv.code, rv.contact_id AS own_contact "
        "FROM record_contacts rc "
        "JOIN catalogue_view cv ON cv.id = rc.role_id AND cv.entity = 'roles' AND cv.code IN ('MAIN', 'SIGN') "
        "LEFT JOIN record_views rv ON rv.id = rc.record_id AND rv.kind = rc.record_kind")).all()
    groups: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for row in rows:
        groups[(row.record_kind, row.record_id, row.code)].append(row)
    key = "record_kind = :kind AND record_id = :record AND contact_id = :contact"
    for (kind, record_id, code), links in groups.items():
        links.sort(key=lambda r: (code == "MAIN" and r.contact_id != r.own_contact, str(r.linked_at), r.contact_id))
        keep, *others = links
        bind.execute(sa.text(f"UPDATE record_contacts SET exclusive_role = :code WHERE {key}"),
                     {"code": code, "kind": kind, "record": record_id, "contact": keep.contact_id})
        for other in others:
            bind.execute(sa.text(f"UPDATE record_contacts SET role_id = NULL WHERE {key}"),
                         {"kind": kind, "record": record_id, "contact": other.contact_id})


def upgrade() -> None:
    with op.batch_alter_table("record_contacts", schema=None) as batch_op:
        batch_op.alter_column("role_id", existing_type=sa.String(length=36), nullable=True)
        batch_op.add_column(sa.Column("exclusive_role", sa.String(length=10), nullable=True))
    _backfill_exclusive_roles(op.get_bind())
    with op.batch_alter_table("record_contacts", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_record_contacts_exclusive_role",
                                          ["record_kind", "record_id", "exclusive_role"])

    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("office_id", sa.String(length=200), nullable=True))
        batch_op.create_index("ix_activities_office_id", ["office_id"], unique=False)
    for column, kind in (("lead_id", "lead"), ("opportunity_id", "opportunity")):
        op.execute(
            "UPDATE activities SET office_id = (SELECT rv.office_id FROM record_views rv "
            f"WHERE rv.id = activities.{column} AND rv.kind = '{kind}') "
            f"WHERE office_id IS NULL AND {column} IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.drop_index("ix_activities_office_id")
        batch_op.drop_column("office_id")
    with op.batch_alter_table("record_contacts", schema=None) as batch_op:
        batch_op.drop_constraint("uq_record_contacts_exclusive_role", type_="unique")
        batch_op.drop_column("exclusive_role")
    # Links without a role cannot go back under NOT NULL: they are removed.
    op.execute("DELETE FROM record_contacts WHERE role_id IS NULL")
    with op.batch_alter_table("record_contacts", schema=None) as batch_op:
        batch_op.alter_column("role_id", existing_type=sa.String(length=36), nullable=False)
