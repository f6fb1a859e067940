"""Screen 3, the record page of a lead or opportunity."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, render_template

from crm_console.kinds import kind_of
from crm_console.session import caller, can, gateway, login_required

bp = Blueprint("records", __name__)


@bp.get("/<any(leads, opportunities):records>/<record_id>")
@login_required
def show(records: str, record_id: str) -> Any:
    kind = kind_of(records)
    if not can(kind.permission("view")):
        abort(404)
    record = gateway().get(caller(), f"/v1/{records}/{record_id}")
    return render_template("record.html", kind=kind, records=records, record=record)
