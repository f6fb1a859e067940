"""Screen 1, the overview of leads or opportunities: tabs, the board, and moving a card.

One tab per stage group (its count), then mine, my office's and all. The board has a
column per stage of the tab as the API's overview gives it (``stages``: index order, the
count and, for opportunities, amount and weighted amount computed by the server), and the
same call gives the tab counts: one overview call per page (two on a first visit without a
tab, to learn the first stage group). The cards come from the list, 200 a call. A card moves
by drag and drop (board.js) or by its **Move to** menu (a form of stage buttons: board.js
makes it a menu button and sends it without reloading; without script it posts and
redirects back).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import format_decimal
from flask_babel import gettext as _

from crm_console import catalogue
from crm_console.gateway import ApiError
from crm_console.kinds import Kind
from crm_console.session import caller, gateway, login_required, permitted_kind

bp = Blueprint("overview", __name__)

SCOPES = ("mine", "office", "all")
BOARD_LIMIT = 2000  # cards per board; the list view pages through more
BOARD_PAGE = 200  # the API's largest page: 500 cards are 3 list calls


@bp.app_template_filter("money")
def money(value: Any) -> str:
    """An amount as the API gives it (a decimal string) in the person's locale: 12,500.50."""
    if value in (None, ""):
        value = "0"
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    return format_decimal(number, format="#,##0.00")


def tabs_of(kind: Kind, overview: dict[str, Any]) -> list[dict[str, Any]]:
    tabs = [{"id": g["id"], "name": g["name"], "count": g["count"]} for g in overview.get("stage_groups", [])]
    names = {"mine": kind.mine, "office": kind.office, "all": kind.everything}
    tabs += [{"id": scope, "name": names[scope], "count": overview.get(scope, 0)} for scope in SCOPES]
    return tabs


def tab_query(tab: str) -> dict[str, str]:
    """The list/overview parameters of a tab: a stage group's id (``stage_group_id``), or a
    scope (``view``: mine, office or all)."""
    return {"view": tab} if tab in SCOPES else {"stage_group_id": tab}


def tab_overview(kind: Kind, tab: str | None) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """The tab shown (the first stage group when none is asked for), its overview and the tabs.

    A tab that names nothing of this kind is a 404 (the API's 422 for an unknown stage group)."""
    api, who = gateway(), caller()
    if not tab:
        first = api.get(who, f"/v1/{kind.records}/overview")
        groups = first.get("stage_groups") or []
        if not groups:
            return "all", first, tabs_of(kind, first)
        tab = groups[0]["id"]
    try:
        overview = api.get(who, f"/v1/{kind.records}/overview", **tab_query(tab))
    except ApiError as exc:
        if exc.status in (400, 404, 422):
            abort(404)
        raise
    return tab, overview, tabs_of(kind, overview)


def board_columns(kind: Kind, overview: dict[str, Any], cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The API's board (``stages`` of the tab, in index order) with the cards of each stage."""
    known = catalogue.by_id(catalogue.stages(kind.kind))
    by_stage: dict[str, list[dict[str, Any]]] = {s["id"]: [] for s in overview.get("stages", [])}
    for card in cards:
        stage_id = (card.get("stage") or {}).get("id") or card.get("stage_id")
        if stage_id in by_stage:
            by_stage[stage_id].append(card)
    columns = []
    for total in overview.get("stages", []):
        stage = dict(known.get(total["id"]) or {"id": total["id"], "color": None})
        stage["name"] = total.get("name") or stage.get("name") or _("Unknown stage")
        shown = by_stage[total["id"]]
        count = int(total.get("count") or 0)
        columns.append({"stage": stage, "cards": shown, "count": count, "more": max(0, count - len(shown)),
                        "amount": total.get("amount"), "weighted_amount": total.get("weighted_amount")})
    return columns


@bp.get("/<any(leads, opportunities):records>")
@login_required
def board(records: str) -> Any:
    kind = permitted_kind(records, "view")
    view = request.args.get("view", "board")
    if view not in ("board", "list"):
        view = "board"
    tab, overview, tabs = tab_overview(kind, request.args.get("tab"))
    context = {"kind": kind, "records": records, "tabs": tabs, "tab": tab, "view": view}
    if view == "list":
        from crm_console.views.listing import list_context

        context.update(list_context(kind, tab))
        return render_template("overview_list.html", **context), context.get("status", 200)
    cards = gateway().all_pages(caller(), f"/v1/{records}", page_size=BOARD_PAGE, most=BOARD_LIMIT,
                                order_by="modified_at desc", **tab_query(tab))
    context["columns"] = board_columns(kind, overview, cards)
    context["all_stages"] = catalogue.stages(kind.kind, active_only=True)
    return render_template("overview_board.html", **context)


@bp.post("/<any(leads, opportunities):records>/<record_id>/stage")
@login_required
def move(records: str, record_id: str) -> Any:
    """Change a record's stage with ``If-Match`` on the version the page showed.

    From the board's script (``HX-Request``) the answer is one fragment: the message for the
    live region (a 412 says someone else changed the record, with a Reload link) and, after a
    move, the tab's new column totals and tab counts from the API's overview, so the page
    needs no second request. From the **Move to** form without script, a redirect back with the
    message flashed.
    """
    kind = permitted_kind(records, "edit")
    stage_id = request.form.get("stage_id", "")
    version = request.form.get("version", "")
    tab = request.form.get("tab") or ""
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
    if not partial:
        flash(message, "ok")
        return redirect(back)
    columns: list[dict[str, Any]] = []
    tabs: list[dict[str, Any]] = []
    if tab:
        try:  # the totals after the move (the caller's consistency token: it reads this write)
            overview = gateway().get(caller(), f"/v1/{records}/overview", **tab_query(tab))
            tabs = tabs_of(kind, overview)
            columns = [{"stage": {"id": t["id"]}, "count": int(t.get("count") or 0), "amount": t.get("amount"),
                        "weighted_amount": t.get("weighted_amount")} for t in overview.get("stages", [])]
        except ApiError:
            columns, tabs = [], []  # the move stands; the totals refresh on the next page load
    return render_template("partials/moved.html", record=updated, message=message, kind=kind, records=records,
                           columns=columns, tabs=tabs, tab=tab, view="board")
