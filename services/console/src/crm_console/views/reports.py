"""Screen 7, Reports: the stage report of leads and of opportunities, and the lead funnel.

- **Stage report** (``GET /v1/{records}/reports/stages``): a chart of bars per stage inside
  their stage groups (count; for opportunities also amount and weighted amount), then its
  tables (per stage, per stage group, with totals).
- **Lead funnel** (``GET /v1/leads/reports/funnel?from=&to=``): created, converted, rate and
  median time to convert, overall, by source and by owner, for a range of creation dates
  picked with two ``<input type="date">`` (whole days in UTC; ``to`` is included).
- The stage report is a snapshot of where records are now: the API takes no dates for it, and
  the page says so (a date range over ``created_at`` would only hide records that are in a
  stage today, which is not what a stage report is read for).
- Charts are inline SVG drawn here on the server (``crm_console.charts``): no library, no
  script, CSP-safe (fill attributes, no style), each with ``role="img"``, a title and a
  description that says every number; the table under it says the same numbers.
- Every table downloads as CSV (``/reports/<records>/<table>.csv``): the same rows, built by
  the same code from the same API answer, written with Python's ``csv`` module.

Anyone who may view leads or opportunities sees Reports, with the parts they may view; for
anyone else the routes answer 403.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, Response, abort, render_template, request
from flask_babel import format_decimal
from flask_babel import gettext as _
from markupsafe import Markup

from crm_console import catalogue, charts
from crm_console.gateway import ApiError
from crm_console.kinds import KINDS, Kind
from crm_console.session import caller, can, gateway, login_required, permitted_kind
from crm_console.views.overview import money

bp = Blueprint("reports", __name__)

STAGE_TABLES = ("stages", "stage-groups")
FUNNEL_TABLES = ("funnel", "funnel-by-source", "funnel-by-owner")
NONE = "—"


@dataclass
class Table:
    """A report table as shown and as downloaded: the first cell of each row is its header."""

    slug: str  # the CSV's name: /reports/<records>/<slug>.csv
    caption: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    foot: list[str] | None = None  # the totals row

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(self.headers)
        writer.writerows(self.rows)
        if self.foot:
            writer.writerow(self.foot)
        return out.getvalue()


# -- formatting: one way for the page and the CSV ------------------------------------------------


def duration(seconds: float | None) -> str:
    """A median time in words a person reads at a glance: 45 s, 12 min, 3 h 20 min, 2 d 4 h."""
    if seconds is None:
        return NONE
    whole = int(round(seconds))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return _("%(days)s d %(hours)s h", days=days, hours=hours)
    if hours:
        return _("%(hours)s h %(minutes)s min", hours=hours, minutes=minutes)
    if minutes:
        return _("%(minutes)s min", minutes=minutes)
    return _("%(seconds)s s", seconds=secs)


def rate(value: float | None) -> str:
    """A conversion rate as a percentage with one decimal, in the person's locale: 4.8 %."""
    return NONE if value is None else f"{format_decimal(value * 100, format='0.0')} %"


def number(value: Any) -> float:
    try:
        return float(Decimal(str(value or 0)))
    except InvalidOperation:
        return 0.0


# -- the stage report ----------------------------------------------------------------------------


@dataclass
class StageReport:
    kind: Kind
    charts: list[tuple[str, Markup]]  # (title, svg)
    tables: list[Table]


def _group_name(group: dict[str, Any] | None) -> str:
    if group is None or group.get("id") is None:
        return _("No stage group")
    return group.get("name") or _("Unknown stage group")


def stage_report(kind: Kind) -> StageReport:
    """The kind's stage report as charts and tables (one API call)."""
    report = gateway().get(caller(), f"/v1/{kind.records}/reports/stages")
    groups = {g["id"]: g for g in report.get("stage_groups", []) if g.get("id") is not None}
    order = list(groups)
    stages = report.get("stages", [])
    # Stages inside their groups (the groups' order, then stages without a known group), each in catalogue order.
    sections: list[tuple[str | None, list[dict[str, Any]]]] = [(gid, []) for gid in order]
    loose: list[dict[str, Any]] = []
    for stage in stages:
        target = next((s for gid, s in sections if gid is not None and gid == stage.get("stage_group_id")), loose)
        target.append(stage)
    if loose:
        sections.append((None, loose))

    def stage_name(stage: dict[str, Any]) -> str:
        return stage.get("name") or _("Unknown stage")

    money_cols = [_("Amount"), _("Weighted amount")] if kind.has_amount else []

    def sums(item: dict[str, Any]) -> list[str]:
        return [money(item.get("amount_sum")), money(item.get("weighted_amount_sum"))] if kind.has_amount else []

    per_stage = Table("stages", _("%(kind)s per stage", kind=kind.title),
                      [_("Stage"), _("Stage group"), _("Count"), *money_cols, _("Median time in stage")])
    for gid, members in sections:
        for stage in members:
            per_stage.rows.append([stage_name(stage), _group_name(groups.get(gid) if gid else None),
                                   str(stage.get("count", 0)), *sums(stage),
                                   duration(stage.get("median_seconds_in_stage"))])
    total = report.get("total", {})
    per_stage.foot = [_("Total"), "", str(total.get("count", 0)), *sums(total), ""]

    per_group = Table("stage-groups", _("%(kind)s per stage group", kind=kind.title),
                      [_("Stage group"), _("Count"), *money_cols])
    for group in report.get("stage_groups", []):
        per_group.rows.append([_group_name(group), str(group.get("count", 0)), *sums(group)])
    per_group.foot = [_("Total"), str(total.get("count", 0)), *sums(total)]

    def chart(chart_id: str, title: str, series: Sequence[str],
              values: Callable[[dict[str, Any]], list[tuple[float, str]]]) -> tuple[str, Markup]:
        drawn = [charts.Section(_group_name(groups.get(gid) if gid else None),
                                [charts.Bar(stage_name(s), [v for v, _t in values(s)], [t for _v, t in values(s)])
                                 for s in members])
                 for gid, members in sections if members]
        return title, charts.bar_chart(chart_id, title, drawn, series, empty=_("No stages."))

    made = [chart(f"chart-{kind.records}-count", _("%(kind)s per stage: count", kind=kind.title), [_("Count")],
                  lambda s: [(float(s.get("count", 0)), str(s.get("count", 0)))])]
    if kind.has_amount:
        made.append(chart(f"chart-{kind.records}-amount",
                          _("%(kind)s per stage: amount and weighted amount", kind=kind.title),
                          [_("Amount"), _("Weighted amount")],
                          lambda s: [(number(s.get("amount_sum")), money(s.get("amount_sum"))),
                                     (number(s.get("weighted_amount_sum")), money(s.get("weighted_amount_sum")))]))
    return StageReport(kind, made, [per_stage, per_group])


# -- the lead funnel -----------------------------------------------------------------------------


@dataclass
class DateRange:
    start: str = ""  # as typed: YYYY-MM-DD
    end: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    def params(self) -> dict[str, str]:
        """The API's ``from``/``to``: midnight UTC of ``start``, and of the day after ``end``
        (the picked end day is included); nothing for a field left empty or in error."""
        out = {}
        if self.errors:
            return out
        if self.start:
            out["from"] = f"{dt.date.fromisoformat(self.start).isoformat()}T00:00:00Z"
        if self.end:
            out["to"] = f"{(dt.date.fromisoformat(self.end) + dt.timedelta(days=1)).isoformat()}T00:00:00Z"
        return out


def date_range(args: Any) -> DateRange:
    picked = DateRange((args.get("from") or "").strip(), (args.get("to") or "").strip())
    days: dict[str, dt.date] = {}
    for name, value in (("from", picked.start), ("to", picked.end)):
        if value:
            try:
                days[name] = dt.date.fromisoformat(value)
            except ValueError:
                picked.errors[name] = _("Enter a date as YYYY-MM-DD.")
            else:
                if not 1900 <= days[name].year <= 9998:
                    picked.errors[name] = _("Enter a date between 1900 and 9998.")
    if not picked.errors and "from" in days and "to" in days and days["to"] < days["from"]:
        picked.errors["to"] = _("Must be on or after the From date.")
    return picked


def funnel_tables(picked: DateRange) -> list[Table]:
    """The lead funnel of the picked range as three tables (one API call)."""
    report = gateway().get(caller(), "/v1/leads/reports/funnel", **picked.params())
    columns = [_("Created"), _("Converted"), _("Conversion rate"), _("Median time to convert")]

    def cells(item: dict[str, Any]) -> list[str]:
        return [str(item.get("created", 0)), str(item.get("converted", 0)), rate(item.get("conversion_rate")),
                duration(item.get("median_seconds_to_convert"))]

    overall = Table("funnel", _("Lead funnel"), [_("Leads"), *columns], [[_("All leads"), *cells(report)]])
    sources = catalogue.by_id(catalogue.table("lead", "sources"))
    by_source = Table("funnel-by-source", _("Lead funnel by source"), [_("Source"), *columns])
    for item in report.get("by_source", []):
        sid = item.get("source_id")
        name = (sources.get(sid) or {}).get("name") or _("Unknown source") if sid else _("No source")
        by_source.rows.append([name, *cells(item)])
    by_owner = Table("funnel-by-owner", _("Lead funnel by owner"), [_("Owner"), *columns])
    for item in report.get("by_owner", []):
        by_owner.rows.append([item.get("owner_id") or _("No owner"), *cells(item)])
    return [overall, by_source, by_owner]


def funnel_chart(tables: list[Table]) -> tuple[str, Markup]:
    """Created and converted, overall and by source, as bars."""
    overall, by_source = tables[0], tables[1]

    def bar(row: list[str]) -> charts.Bar:
        return charts.Bar(row[0], [float(row[1]), float(row[2])], [row[1], row[2]])

    sections = [charts.Section("", [bar(r) for r in overall.rows])]
    if by_source.rows:
        sections.append(charts.Section(_("By source"), [bar(r) for r in by_source.rows]))
    title = _("Lead funnel: created and converted")
    return title, charts.bar_chart("chart-funnel", title, sections, [_("Created"), _("Converted")])


# -- routes --------------------------------------------------------------------------------------


def _may_view_reports() -> None:
    if not (can("leads:view") or can("opportunities:view")):
        abort(403)


@bp.get("/reports")
@login_required
def index() -> Any:
    _may_view_reports()
    picked = date_range(request.args)
    reports = [stage_report(kind) for kind in KINDS.values() if can(kind.permission("view"))]
    funnel: list[Table] = []
    chart = None
    status = 422 if picked.errors else 200
    if can("leads:view"):
        try:
            funnel = funnel_tables(picked)
        except ApiError as exc:
            if exc.status != 422:
                raise
            picked.errors = {k: v for k, v in exc.field_errors.items() if k in ("from", "to")} or {"to": exc.message}
            funnel, status = funnel_tables(DateRange()), 422
        chart = funnel_chart(funnel)
    return render_template("reports.html", reports=reports, funnel=funnel, funnel_chart=chart,
                           picked=picked), status


@bp.get("/reports/<any(leads, opportunities):records>/<name>.csv")
@login_required
def download(records: str, name: str) -> Response:
    kind = permitted_kind(records, "view", refused=403)
    if name in STAGE_TABLES:
        tables = stage_report(kind).tables
    elif name in FUNNEL_TABLES and kind.converts:
        picked = date_range(request.args)
        if picked.errors:
            abort(422)
        tables = funnel_tables(picked)
    else:
        abort(404)
    table = next(t for t in tables if t.slug == name)
    resp = Response("\ufeff" + table.csv(), mimetype="text/csv")
    resp.headers["Content-Disposition"] = f'attachment; filename="{kind.records}-{name}.csv"'
    return resp
