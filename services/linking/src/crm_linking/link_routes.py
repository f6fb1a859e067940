"""The routes of the links and of a record's detail tabs (the web edge; the link rules are
``links.py``'s).

Routes (declared once per kind, so every path is a concrete ``/v1/leads/...`` or
``/v1/opportunities/...`` path that the gateway's table and the OpenAPI document name):

- ``/v1/{records}/{id}/contacts`` (``POST``, ``GET``), ``.../contacts/{contact_id}`` (``PATCH``, ``DELETE``);
- ``/v1/{records}/{id}/job-orders`` (``POST``, ``GET``), ``.../job-orders/{job_order_id}`` (``DELETE``);
- tabs: ``/v1/{records}/{id}/activities``, ``/placements``, ``/timeline``;
- ``/v1/contacts/{id}/leads``, ``/v1/contacts/{id}/opportunities``, ``/v1/companies/{id}/leads``.

Reads need ``files:view`` and ``<records>:view``; changes ``files:edit`` and ``<records>:edit``.
The record must be visible to the caller (else 404, unlinking included). The activities tab
shows only the activities the caller may see (``access.activity_visible``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from crm_catalogue_view import CatalogueEntryView, CatalogueView
from crm_kit.web import Api, ListResult, Reply, RequestContext, SortKey
from crm_kit.web.auth import require_permission
from crm_kit.web.pagination import PageQuery
from crm_linking import links
from crm_linking.access import PLURALS, activity_visible, load_record, visible_records
from crm_linking.errors import UnknownFile
from crm_linking.file_schemas import ActivityOut, PlacementOut
from crm_linking.link_schemas import (
    ContactLinkIn,
    ContactLinkOut,
    ContactRecordOut,
    ContactRoleIn,
    JobOrderLinkIn,
    JobOrderLinkOut,
    LinkedRecordOut,
    TimelineOut,
)
from crm_linking.tables import (
    activities,
    companies,
    contacts,
    job_orders,
    placements,
    record_contacts,
    record_job_orders,
    record_views,
    timeline,
)

FILES_VIEW, FILES_EDIT = "files:view", "files:edit"


# -- helpers of the routes -----------------------------------------------------------------------

def _row_dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


def _role_out(role: CatalogueEntryView | None, ctx: RequestContext) -> dict[str, Any] | None:
    if role is None:
        return None
    default_language = ctx.settings["CRM_DEFAULT_LANGUAGE"]
    return {"id": role.id, "code": role.code, "name": role.name(ctx.language(list(role.names)), default_language)}


def _named(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a per-kind route function its own name: Flask endpoints and OpenAPI operation ids
    come from it, and the same function body serves both kinds."""
    fn.__name__ = name
    fn.__qualname__ = name
    return fn


class _Links:
    """The routes of one record kind."""

    def __init__(self, api: Api, kind: str, view: CatalogueView) -> None:
        self.api = api
        self.kind = kind
        self.plural = PLURALS[kind]
        self.view = view
        self.base = f"/v1/{self.plural}/<record_id>"
        self.may_view, self.may_edit = f"{self.plural}:view", f"{self.plural}:edit"
        self.tags = (self.plural,)

    # access: a route declares the record's permission (``may_view`` / ``may_edit``, as the
    # gateway's route table does), so the kit answers 403 to a caller without it before it reads
    # the body or the query; the files permission these tabs need as well is checked here.

    def readable(self, ctx: RequestContext, record_id: str) -> Any:
        require_permission(ctx.user, FILES_VIEW)
        return load_record(ctx.session, self.kind, record_id, ctx.user)

    def writable(self, ctx: RequestContext, record_id: str) -> Any:
        require_permission(ctx.user, FILES_EDIT)
        return load_record(ctx.session, self.kind, record_id, ctx.user)

    # presentation

    def contact_items(self, ctx: RequestContext, rows: Iterable[Any]) -> list[dict[str, Any]]:
        rows = list(rows)
        ids = [link.contact_id for link in rows]
        people = {r.id: _row_dict(r) for r in ctx.session.execute(select(contacts).where(contacts.c.id.in_(ids)))}
        roles = {r.id: r for r in self.view.entries(ctx.session, self.kind, "roles")}
        return [{"contact_id": link.contact_id, "role_id": link.role_id,
                 "role": _role_out(roles.get(link.role_id), ctx), "contact": people.get(link.contact_id),
                 "linked_at": link.linked_at, "linked_by": link.linked_by} for link in rows]

    def job_order_items(self, ctx: RequestContext, rows: Iterable[Any]) -> list[dict[str, Any]]:
        rows = list(rows)
        ids = [link.job_order_id for link in rows]
        orders = {r.id: _row_dict(r) for r in ctx.session.execute(select(job_orders).where(job_orders.c.id.in_(ids)))}
        return [{"job_order_id": link.job_order_id, "job_order": orders.get(link.job_order_id),
                 "linked_at": link.linked_at, "linked_by": link.linked_by} for link in rows]

    # routes

    def declare(self) -> None:
        self._contacts()
        self._job_orders()
        self._tabs()

    def _route(self, method: str, rule: str, name: str, **kw: Any) -> Callable[[Callable[..., Any]], Any]:
        def decorate(fn: Callable[..., Any]) -> Any:
            return self.api.route(method, rule, tags=self.tags, **kw)(_named(name, fn))
        return decorate

    def _contacts(self) -> None:
        kind, base = self.kind, self.base

        @self._route("POST", f"{base}/contacts", f"link_{kind}_contact", permission=self.may_edit, body=ContactLinkIn,
                     response=ContactLinkOut, errors=(409,),
                     also={200: f"MAIN and the {kind}'s own contact_id, linked as its main contact already: "
                                "nothing changed."},
                     summary=f"Link a contact (existing or new) to a {kind}; MAIN only confirms the {kind}'s own "
                             "contact_id, SIGN only while it has none")
        def link_contact(ctx: RequestContext, record_id: str) -> Any:
            record = self.writable(ctx, record_id)
            contact_id, changed = links.link_contact(
                ctx.session, ctx.user, kind, record, ctx.body["role_id"], contact_id=ctx.body.get("contact_id"),
                new_contact=ctx.body.get("contact"), view=self.view)
            item = self.contact_items(ctx, [links.contact_link(ctx.session, kind, record.id, contact_id)])[0]
            return Reply(item, status=201 if changed else 200)

        @self._route("GET", f"{base}/contacts", f"list_{kind}_contacts", permission=self.may_view, query=PageQuery,
                     response=ContactLinkOut, many=True, summary=f"Contacts of a {kind}, with their roles")
        def list_contacts(ctx: RequestContext, record_id: str) -> ListResult:
            return self._links_page(ctx, record_contacts, "contact_id", "contacts", self.readable(ctx, record_id),
                                    self.contact_items)

        @self._route("PATCH", f"{base}/contacts/<contact_id>", f"change_{kind}_contact_role", permission=self.may_edit,
                     body=ContactRoleIn, response=ContactLinkOut, errors=(409,),
                     summary=f"Change the role of a contact on a {kind} (not to or from MAIN or SIGN)")
        def change_role(ctx: RequestContext, record_id: str, contact_id: str) -> Any:
            record = self.writable(ctx, record_id)
            links.set_contact_role(ctx.session, ctx.user, kind, record, contact_id, ctx.body["role_id"], self.view)
            return self.contact_items(ctx, [links.contact_link(ctx.session, kind, record.id, contact_id)])[0]

        @self._route("DELETE", f"{base}/contacts/<contact_id>", f"unlink_{kind}_contact", permission=self.may_edit,
                     status=204, errors=(409,),
                     summary=f"Remove a contact from a {kind} (the contact itself stays; not its main contact)")
        def unlink_contact(ctx: RequestContext, record_id: str, contact_id: str) -> None:
            links.unlink_contact(ctx.session, ctx.user, kind, self.writable(ctx, record_id), contact_id)

    def _links_page(self, ctx: RequestContext, table: Any, other_id: str, what: str, record: Any,
                    items: Callable[[RequestContext, Iterable[Any]], list[dict[str, Any]]]) -> ListResult:
        """A page of the record's links in ``table`` (contacts, job orders), oldest link first."""
        stmt = select(table).where(table.c.record_kind == self.kind, table.c.record_id == record.id)
        page = ctx.page(stmt, [SortKey("linked_at", table.c.linked_at), SortKey(other_id, table.c[other_id])],
                        fingerprint=f"{self.kind}-{what}:{record.id}")
        return ListResult(items(ctx, page.rows), page.next_page_token)

    def _job_orders(self) -> None:
        kind, base = self.kind, self.base

        @self._route("POST", f"{base}/job-orders", f"link_{kind}_job_order", permission=self.may_edit,
                     body=JobOrderLinkIn, response=JobOrderLinkOut, errors=(409,),
                     summary=f"Link a job order (existing or new) to a {kind}; at most one {kind} per job order")
        def link_job_order(ctx: RequestContext, record_id: str) -> Any:
            record = self.writable(ctx, record_id)
            job_order_id = links.link_job_order(ctx.session, ctx.user, kind, record,
                                                job_order_id=ctx.body.get("job_order_id"),
                                                new_job_order=ctx.body.get("job_order"))
            return self.job_order_items(ctx, [links.job_order_link(ctx.session, kind, record.id, job_order_id)])[0]

        @self._route("GET", f"{base}/job-orders", f"list_{kind}_job_orders", permission=self.may_view, query=PageQuery,
                     response=JobOrderLinkOut, many=True, summary=f"Job orders of a {kind}")
        def list_job_orders(ctx: RequestContext, record_id: str) -> ListResult:
            return self._links_page(ctx, record_job_orders, "job_order_id", "job-orders",
                                    self.readable(ctx, record_id), self.job_order_items)

        @self._route("DELETE", f"{base}/job-orders/<job_order_id>", f"unlink_{kind}_job_order",
                     permission=self.may_edit, status=204, summary=f"Remove a job order from a {kind}")
        def unlink_job_order(ctx: RequestContext, record_id: str, job_order_id: str) -> None:
            links.unlink_job_order(ctx.session, ctx.user, kind, self.writable(ctx, record_id), job_order_id)

    def _tabs(self) -> None:
        kind, base = self.kind, self.base
        owner_column = activities.c.lead_id if kind == "lead" else activities.c.opportunity_id

        @self._route("GET", f"{base}/activities", f"list_{kind}_activities", permission=self.may_view,
                     query=PageQuery, response=ActivityOut, many=True,
                     summary=f"Activities of a {kind}, newest first")
        def list_activities(ctx: RequestContext, record_id: str) -> ListResult:
            record = self.readable(ctx, record_id)
            page = ctx.page(select(activities).where(owner_column == record.id, activity_visible(ctx.user)),
                            [SortKey("created_at", activities.c.created_at, descending=True),
                             SortKey("id", activities.c.id, descending=True)],
                            fingerprint=f"{kind}-activities:{record.id}")
            return ListResult([_row_dict(r) for r in page.rows], page.next_page_token)

        @self._route("GET", f"{base}/placements", f"list_{kind}_placements", permission=self.may_view,
                     query=PageQuery, response=PlacementOut, many=True,
                     summary=f"Placements of the job orders linked to a {kind}, newest first")
        def list_placements(ctx: RequestContext, record_id: str) -> ListResult:
            record = self.readable(ctx, record_id)
            stmt = select(placements).join(record_job_orders, and_(
                record_job_orders.c.job_order_id == placements.c.job_order_id,
                record_job_orders.c.record_kind == kind, record_job_orders.c.record_id == record.id))
            page = ctx.page(stmt, [SortKey("created_at", placements.c.created_at, descending=True),
                                   SortKey("id", placements.c.id, descending=True)],
                            fingerprint=f"{kind}-placements:{record.id}")
            return ListResult([_row_dict(r) for r in page.rows], page.next_page_token)

        @self._route("GET", f"{base}/timeline", f"list_{kind}_timeline", permission=self.may_view,
                     query=PageQuery, response=TimelineOut, many=True,
                     summary=f"What happened to a {kind} (stage changes, links, activities, conversion), newest first")
        def list_timeline(ctx: RequestContext, record_id: str) -> ListResult:
            record = self.readable(ctx, record_id)
            stmt = select(timeline).where(timeline.c.record_kind == kind, timeline.c.record_id == record.id)
            page = ctx.page(stmt, [SortKey("at", timeline.c.at, descending=True),
                                   SortKey("id", timeline.c.id, descending=True)],
                            fingerprint=f"{kind}-timeline:{record.id}")
            return ListResult([{"at": r.at, "type": r.type, "data": r.data} for r in page.rows],
                              page.next_page_token)


def _records_page(ctx: RequestContext, stmt: Select[Any], fingerprint: str) -> ListResult:
    page = ctx.page(stmt.where(visible_records(ctx.user)),
                    [SortKey("title", record_views.c.title), SortKey("id", record_views.c.id)],
                    fingerprint=fingerprint)
    return ListResult([_row_dict(r) for r in page.rows], page.next_page_token)


_RECORD_COLUMNS = (record_views.c.id, record_views.c.kind, record_views.c.title, record_views.c.stage_id,
                   record_views.c.stage_group_id, record_views.c.owner_id, record_views.c.office_id,
                   record_views.c.company_id, record_views.c.contact_id)


def _require_file(session: Session, table: Any, file_id: str, label: str) -> None:
    if session.execute(select(table.c.id).where(table.c.id == file_id)).first() is None:
        raise UnknownFile(label, file_id)


def _contact_records_route(api: Api, kind: str) -> None:
    plural = PLURALS[kind]

    def list_contact_records(ctx: RequestContext, contact_id: str) -> Any:
        require_permission(ctx.user, FILES_VIEW)
        _require_file(ctx.session, contacts, contact_id, "contact")
        link = and_(record_contacts.c.record_kind == record_views.c.kind,
                    record_contacts.c.record_id == record_views.c.id,
                    record_contacts.c.contact_id == contact_id)
        stmt = (select(*_RECORD_COLUMNS, record_contacts.c.role_id)
                .select_from(record_views.outerjoin(record_contacts, link))
                .where(record_views.c.kind == kind,
                       or_(record_contacts.c.contact_id.is_not(None), record_views.c.contact_id == contact_id)))
        return _records_page(ctx, stmt, f"contact-{plural}:{contact_id}")

    api.route("GET", f"/v1/contacts/<contact_id>/{plural}", permission=f"{plural}:view", query=PageQuery,
              response=ContactRecordOut, many=True, tags=("contacts",),
              summary=f"The {plural} a contact is on (linked with a role, or the {kind}'s own contact)",
              )(_named(f"list_contact_{plural}", list_contact_records))


def _file_routes(api: Api) -> None:
    for kind in links.RECORD_KINDS:
        _contact_records_route(api, kind)

    @api.get("/v1/companies/<company_id>/leads", permission="leads:view", query=PageQuery, response=LinkedRecordOut,
             many=True, tags=("companies",),
             summary="Leads of a company: its own, and those with a contact of the company")
    def list_company_leads(ctx: RequestContext, company_id: str) -> Any:
        require_permission(ctx.user, FILES_VIEW)
        _require_file(ctx.session, companies, company_id, "company")
        company_contacts = select(contacts.c.id).where(contacts.c.company_id == company_id)
        has_company_contact = (select(record_contacts.c.contact_id)
                               .where(record_contacts.c.record_kind == record_views.c.kind,
                                      record_contacts.c.record_id == record_views.c.id,
                                      record_contacts.c.contact_id.in_(company_contacts))
                               .exists())
        stmt = select(*_RECORD_COLUMNS).where(
            record_views.c.kind == "lead",
            or_(record_views.c.company_id == company_id, record_views.c.contact_id.in_(company_contacts),
                has_company_contact))
        return _records_page(ctx, stmt, f"company-leads:{company_id}")


def build_links_api(view: CatalogueView | None = None) -> Api:
    """The links of files to leads and opportunities, the records' detail tabs, and the
    records reached from a contact or a company."""
    api = Api("links")
    for kind in links.RECORD_KINDS:
        _Links(api, kind, view or CatalogueView()).declare()
    _file_routes(api)
    return api
