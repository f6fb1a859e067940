"""Screen 1, the overview of leads or opportunities: tabs, the board, and moving a card.

One tab per stage group (its count), then mine, my office's and all. The board has a
column per stage of the tab (all stages for mine/office/all), in index order; the column
header's count (and for opportunities amount and weighted amount) comes from the API's
overview in the same call that gives the tab counts. A card moves by drag and drop
(board.js) or by its **Move to** menu (a plain form: works without script, from the keyboard).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from crm_console import catalogue
from crm_console.gateway import ApiError
from crm_console.kinds import Kind, kind_of
from crm_console.session import caller, can, gateway, login_required

bp = Blueprint("overview", __name__)

SCOPES = ("mine", "office", "all")
BOARD_LIMIT = 2000  # cards per board; the list view pages through more


def tabs_of(kind: Kind, overview: dict[str, Any]) -> list[dict[str, Any]]:
    tabs = [{"id": g["id"], "name": g["name"], "count": g["count"]} for g in overview.get("stage_groups", [])]
    names = {"mine": kind.mine, "office": kind.office, "all": kind.everything}
    tabs += [{"id": scope, "name": names[scope], "count": overview.get(scope, 0)} for scope in SCOPES]
    return tabs


def tab_query(tab: str) -> dict[str, str]:
    """The list/overview parameters of a tab: a stage group's id, or a scope."""
    return {"view": tab} if tab in SCOPES else {"stage_group_id": tab}


def board_columns(kind: Kind, tab: str, overview: dict[str, Any], cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    totals = {s["id"]: s for s in overview.get("stages", [])}
    stages = catalogue.stages(kind.kind)
    if tab not in SCOPES:
        stages = [s for s in stages if s.get("stage_group_id") == tab]
    by_stage: dict[str, list[dict[str, Any]]] = {s["id"]: [] for s in stages}
    for card in cards:
        stage_id = (card.get("stage") or {}).get("id") or card.get("stage_id")
        if stage_id in by_stage:
            by_stage[stage_id].append(card)
    columns = []
    for stage in stages:
        if not stage.get("active", True) and not by_stage[stage["id"]]:
            continue
        total = totals.get(stage["id"], {})
        columns.append({"stage": stage, "cards": by_stage[stage["id"]], "count": total.get("count", 0),
                        "amount": total.get("amount"), "weighted_amount": total.get("weighted_amount")})
    return columns


@bp.get("/<any(leads, opportunities):records>")
@login_required
def board(records: str) -> Any:
    kind = kind_of(records)
    if not can(kind.permission("view")):
        abort(404)
    api, who = gateway(), caller()
    first = api.get(who, f"/v1/{records}/overview")
    tabs = tabs_of(kind, first)
    tab = request.args.get("tab") or (tabs[0]["id"] if tabs else "all")
    if tab not in {t["id"] for t in tabs}:
        abort(404)
    view = request.args.get("view", "board")
    overview = api.get(who, f"/v1/{records}/overview", **tab_query(tab))
    context = {"kind": kind, "records": records, "tabs": tabs_of(kind, overview), "tab": tab, "view": view}
    if view == "list":
        from crm_console.views.listing import list_context

        context.update(list_context(kind, tab))
        return render_template("overview_list.html", **context)
    cards = api.all_pages(who, f"/v1/{records}", most=BOARD_LIMIT, order_by="modified_at desc", **tab_query(tab))
    context["columns"] = board_columns(kind, tab, overview, cards)
    context["all_stages"] = catalogue.stages(kind.kind, active_only=True)
    return render_template("overview_board.html", **context)


@bp.post("/<any(leads, opportunities):records>/<record_id>/stage")
@login_required
def move(records: str, record_id: str) -> Any:
    """Change a record's stage with ``If-Match`` on the version the page showed.

    From the board's script (``HX-Request``) the answer is a message fragment for the live
    region (a 412 says someone else changed the record, with a reload link); from the
    **Move to** form, a redirect back with the message flashed.
    """
    kind = kind_of(records)
    stage_id = request.form.get("stage_id", "")
    version = request.form.get("version", "")
    back = request.form.get("back") or url_for("overview.board", records=records)
    if not back.startswith("/") or back.startswith("//"):
        back = url_for("overview.board", records=records)
    partial = bool(request.headers.get("HX-Request"))
    try:
        updated = gateway().json(caller(), "PATCH", f"/v1/{records}/{record_id}", json={"stage_id": stage_id},
                                 headers={"If-Match": f'"{version}"'} if version.isdigit() else {})
    except ApiError as exc:
        if partial:
            return render_template("partials/message.html", level="error", message=exc.message,
                                   conflict=exc.conflict), exc.status
        if exc.conflict:
            flash(_("Someone else changed this record since you opened it. The board now shows the latest."),
                  "error")
        else:
            flash(exc.message, "error")
        return redirect(back)
    stage_name = (updated.get("stage") or {}).get("name", "")
    message = _("%(title)s moved to %(stage)s.", title=updated.get("title", ""), stage=stage_name)
    if partial:
        return render_template("partials/moved.html", record=updated, message=message, kind=kind)
    flash(message, "ok")
    return redirect(back)
