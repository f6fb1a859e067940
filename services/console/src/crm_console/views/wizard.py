"""Screen 2, the wizard (New): Company, Contact, then the lead or opportunity."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, render_template

from crm_console.kinds import kind_of
from crm_console.session import can, login_required

bp = Blueprint("wizard", __name__)


@bp.get("/<any(leads, opportunities):records>/new")
@login_required
def start(records: str) -> Any:
    kind = kind_of(records)
    if not can(kind.permission("create")):
        abort(404)
    return render_template("wizard.html", kind=kind, records=records)
