"""The import routes of one collection: ``/v1/{collection}/imports`` and below (API.md, "Imports").

Every route needs the collection's create permission (403 first); a job is its creator's alone
(everyone else gets 404). The routes only change the job; the worker does the checking and the
creating (``runner.py``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from flask import Response, request

from crm_kit.imports.jobs import MAX_ROWS, MAX_ROWS_PER_CALL, Importer, Imports, row_view
from crm_kit.imports.schemas import (
    ImportIn,
    ImportJobOut,
    ImportMappingIn,
    ImportRowOut,
    ImportRowsIn,
    ImportRowsQuery,
    ImportStartIn,
)
from crm_kit.web import Api, ListResult, Problem, Reply, RequestContext, SortKey, check_if_match
from crm_kit.web.http import content_disposition
from crm_kit.web.pagination import PageQuery


def register_import_routes(api: Api, imports: Imports, importer: Importer) -> None:
    c = importer.collection
    base = f"/v1/{c}/imports"
    item = f"{base}/<job_id>"
    plural = c.replace("-", "_")
    jobs, rows = imports.jobs, imports.rows
    example_columns = list(importer.example_columns) or [name for name, f in importer.targets.items()
                                                         if f.required][:3]

    def create(ctx: RequestContext) -> Reply:
        body = ctx.body
        job = imports.create(ctx.session, ctx.user, c, body["file_name"], body["columns"], body["rows"])
        return Reply(imports.view(ctx.session, job), headers={"Location": f"{base}/{job['id']}"})

    create.__doc__ = (f"The header and the first rows of a CSV of {c} (more with POST {base}/{{id}}/rows, at most "
                      f"{MAX_ROWS_PER_CALL} a call and {MAX_ROWS} in all). Nothing is checked or created yet: "
                      f"PUT the mapping next, then start. The job is yours alone (404 for anyone else).")

    def list_jobs(ctx: RequestContext) -> ListResult:
        order = [SortKey("created_at", jobs.c.created_at, descending=True), SortKey("id", jobs.c.id, descending=True)]
        page = ctx.page(imports.mine(ctx.user, c), order, fingerprint=c)
        return ListResult([imports.view(ctx.session, dict(r._mapping), sample=False) for r in page.rows],
                          page.next_page_token)

    def get(ctx: RequestContext, job_id: str) -> dict[str, Any]:
        return imports.view(ctx.session, imports.load(ctx.session, ctx.user, c, job_id))

    list_jobs.__doc__ = ("The jobs you made (no one else's), newest first, with their status and counters; "
                         "`sample` is empty here (GET one job for its first rows).")
    get.__doc__ = ("Its status and counters (poll it to follow the check and the run), the fields columns can "
                   "map to, and its first rows with their status. 404 unless you made it.")

    def append(ctx: RequestContext, job_id: str) -> dict[str, Any]:
        return imports.view(ctx.session, imports.append(ctx.session, ctx.user, c, job_id, ctx.body["rows"]))

    append.__doc__ = (f"Only while the job is uploading (409 otherwise, and past {MAX_ROWS} rows in all); the rows "
                      "follow the ones sent before, in file order.")

    def set_mapping(ctx: RequestContext, job_id: str) -> dict[str, Any]:
        check_if_match(imports.load(ctx.session, ctx.user, c, job_id)["version"])
        job = imports.map(ctx.session, ctx.user, c, job_id, ctx.body["mapping"], ctx.body.get("key_column"))
        return imports.view(ctx.session, job)

    set_mapping.__doc__ = ("Allowed while the job is uploading or checked (a new mapping checks every row again); "
                           "409 otherwise. The job is then checking: the worker checks every row as the bulk create "
                           "would, writing nothing, then the job is checked with `valid` and `invalid` counts and "
                           "each row's errors (GET .../rows?status=invalid). 422 for an unknown column or field, a "
                           "field mapped twice or a required field left out.")

    def start(ctx: RequestContext, job_id: str) -> Reply:
        return Reply(imports.view(ctx.session, imports.start(ctx.session, ctx.user, c, job_id)), status=202)

    start.__doc__ = ("Only from checked (409 otherwise). The worker creates the rows in batches of 500 through the "
                     "bulk create (`created`, `existing`, `failed` grow), each batch with its rows' results in one "
                     "transaction, then the job is done. Rows whose key was used before (this file imported "
                     "before) are `exists`: nothing is made twice.")

    def cancel(ctx: RequestContext, job_id: str) -> dict[str, Any]:
        check_if_match(imports.load(ctx.session, ctx.user, c, job_id)["version"])
        return imports.view(ctx.session, imports.cancel(ctx.session, ctx.user, c, job_id))

    cancel.__doc__ = ("A job that is not done becomes cancelled (the worker takes no more of its rows); what it "
                      "created stays. Cancelling a cancelled job changes nothing; a done one is 409.")

    def list_rows(ctx: RequestContext, job_id: str) -> ListResult:
        imports.load(ctx.session, ctx.user, c, job_id)
        stmt = rows.select().where(rows.c.job_id == job_id)
        status = ctx.query.get("status")
        if status:
            stmt = stmt.where(rows.c.status == status)
        page = ctx.page(stmt, [SortKey("number", rows.c.number)], fingerprint=f"{job_id}:{status or ''}")
        return ListResult([row_view(r) for r in page.rows], page.next_page_token)

    list_rows.__doc__ = ("Each row's cells, status (`?status=invalid` after the check gives the rows to fix), the "
                         "record made (`id`) and why a row is invalid or failed (`error`, `errors`).")

    def result(ctx: RequestContext, job_id: str) -> Response:
        if (request.headers.get("Accept") or "").strip() and request.accept_mimetypes["text/csv"] <= 0:
            raise Problem(406, f"This endpoint answers text/csv only; the request's Accept "
                               f"({request.headers['Accept'][:200]}) rules it out.")
        job = imports.load(ctx.session, ctx.user, c, job_id)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(["row", "status", "id", "error"])
        for r in imports.result_rows(ctx.session, job["id"]):
            writer.writerow([r.number, r.status, r.record_id or "", r.error or ""])
        name = f"{job['file_name'].rsplit('.', 1)[0] or 'import'}-result.csv"
        return Response(out.getvalue(), status=200, mimetype="text/csv",
                        headers={"Content-Disposition": content_disposition(name)})

    result.__doc__ = ("`row,status,id,error` for every row (`row` is the CSV line): created / exists with the "
                      "record's id, error / invalid with why; rows not reached yet show pending or valid.")

    example = {"file_name": f"{c}.csv", "columns": example_columns,
               "rows": [[f"{name} 1" for name in example_columns]]}
    declared: list[tuple[str, str, Callable[..., Any], str, str, dict[str, Any]]] = [
        ("POST", base, create, f"create_{plural}_import", f"Upload a CSV of {c} to import (its header and rows)",
         {"body": ImportIn, "response": ImportJobOut, "example": example}),
        ("GET", base, list_jobs, f"list_{plural}_imports", f"Your imports of {c}, newest first",
         {"query": PageQuery, "response": ImportJobOut, "many": True}),
        ("GET", item, get, f"get_{plural}_import", f"An import of {c}: its status, counters and first rows",
         {"response": ImportJobOut}),
        ("POST", f"{item}/rows", append, f"append_{plural}_import_rows", f"Add rows to an import of {c}",
         {"body": ImportRowsIn, "response": ImportJobOut, "status": 200, "errors": (409,),
          "example": {"rows": example["rows"]}}),
        ("PUT", f"{item}/mapping", set_mapping, f"map_{plural}_import",
         f"Map an import's columns to the fields of {c}, and check every row",
         {"body": ImportMappingIn, "response": ImportJobOut, "errors": (409,),
          "example": {"mapping": {n: n for n in example_columns}, "key_column": None}}),
        ("POST", f"{item}/start", start, f"start_{plural}_import", f"Start creating the {c} of a checked import",
         {"body": ImportStartIn, "body_required": False, "response": ImportJobOut, "status": 202,
          "errors": (409,)}),
        ("DELETE", item, cancel, f"cancel_{plural}_import", f"Cancel an import of {c}",
         {"response": ImportJobOut, "status": 200, "errors": (409,)}),
        ("GET", f"{item}/rows", list_rows, f"list_{plural}_import_rows",
         "An import's rows with their status and errors, in file order",
         {"query": ImportRowsQuery, "response": ImportRowOut, "many": True}),
        ("GET", f"{item}/result", result, f"get_{plural}_import_result",
         "An import's result file (text/csv): row, status, id, error",
         {"produces": "text/csv", "errors": (406,)}),
    ]
    for method, rule, handler, name, summary, options in declared:
        handler.__name__ = handler.__qualname__ = name
        api.route(method, rule, permission=importer.permission, summary=summary, **options)(handler)


def build_imports_api(imports: Imports) -> Api:
    """The routes of every importer of ``imports``."""
    api = Api("imports")
    for importer in imports.importers.values():
        register_import_routes(api, imports, importer)
    return api


