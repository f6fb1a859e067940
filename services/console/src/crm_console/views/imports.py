"""Import: a CSV of leads, opportunities, companies or contacts, through the API's import jobs.

One implementation for the four collections (``COLLECTIONS`` says what differs: the words, the
create permission, the list the records end up in). The work is the API's
(``/v1/{collection}/imports``, API.md "Imports"): the console only reads the file, sends its
rows, and follows the job.

- ``/imports``: the person's jobs of every collection they may create in, and **New import**
  (**What to import**, **CSV file**, **Upload**). The console decodes the file (UTF-8, with or
  without a BOM), picks its delimiter (``,`` or ``;``), reads it with ``csv``, and sends the
  header and the rows: the first chunk creates the job, the rest are appended in chunks of at
  most ``CHUNK_ROWS`` rows and ``CHUNK_BYTES`` of JSON (the API's body limit is 1 MiB). A file
  the console cannot read, or one the API refuses, changes nothing: a job that was started is
  cancelled again, and the form says why.
- ``/imports/<collection>/<id>``: the job, by its status:
  - ``uploading`` (and **Change mapping** of a checked job): **Map columns** (a select per
    column, preselected by name), **Key column**, a **Preview** of the first rows as mapped
    (updated by htmx when a select changes), **Check rows** (``PUT .../mapping``);
  - ``checking`` / ``running``: a ``<progress>`` that follows the job by htmx polling of a
    fragment (``.../progress``, every ``POLL``) without reloading the page; when the phase
    ends, the fragment answers the whole next state instead (``HX-Retarget``);
  - ``checked``: the valid and invalid counts, **Rows with errors** (paged from
    ``GET .../rows?status=invalid``), **Import N rows** (``POST .../start``) and **Change mapping**;
  - ``done`` / ``cancelled``: created, already there and failed, **Download result file**
    (``GET .../result`` streamed as a CSV attachment) and a link to the collection's list;
  - **Cancel import** while the job is not over (``DELETE``).

People who may create in none of the four collections see no Import entry, and these routes
answer 403; a collection the person may not create in is 403 too (the API would refuse).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    stream_template,
    stream_with_context,
    url_for,
)
from flask_babel import format_number, ngettext
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import RequestEntityTooLarge

from crm_console.gateway import ApiError
from crm_console.session import caller, can, current_identity, gateway, to_sign_in
from crm_kit.settings import MAX_IMPORT_FILE_BYTES

bp = Blueprint("imports", __name__, url_prefix="/imports")

MAX_FILE_BYTES = MAX_IMPORT_FILE_BYTES  # the upload's own limit (the app's default is the attachments')
MAX_ROWS = 200_000  # the API's limit of a job
CHUNK_ROWS = 5_000  # the API's limit of one call
CHUNK_BYTES = 900 * 1024  # JSON of one call's rows, well within the API's 1 MiB body
ERRORS_PAGE = 50
POLL = "500ms"
ACTIVE = ("checking", "running")
OVER = ("done", "cancelled")
COLLECTION_RULE = "<any(leads, opportunities, companies, contacts):collection>"
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class Collection:
    """What differs between the four collections an import can fill."""

    name: str  # the API's collection: leads | opportunities | companies | contacts
    title: Any  # "Leads"
    permission: str  # the API's create permission of the collection
    list_path: str  # where the records are listed in the console


COLLECTIONS = {
    "leads": Collection("leads", _l("Leads"), "leads:create", "/leads"),
    "opportunities": Collection("opportunities", _l("Opportunities"), "opportunities:create", "/opportunities"),
    "companies": Collection("companies", _l("Companies"), "files:edit", "/companies"),
    "contacts": Collection("contacts", _l("Contacts"), "files:edit", "/contacts"),
}

STATUSES = {
    "uploading": _l("Uploaded"),
    "checking": _l("Checking"),
    "checked": _l("Checked"),
    "running": _l("Importing"),
    "done": _l("Done"),
    "cancelled": _l("Cancelled"),
}


def permitted() -> list[Collection]:
    """The collections the signed-in person may import into."""
    return [c for c in COLLECTIONS.values() if can(c.permission)]


def may_import() -> bool:
    return bool(permitted())


@bp.app_template_filter("import_status")
def import_status(value: str | None) -> str:
    return str(STATUSES.get(value or "", value or ""))


@bp.app_template_filter("import_number")
def import_number(value: int) -> str:
    return str(format_number(value))


@bp.before_request
def _guard() -> Any:
    if current_identity() is None:
        return to_sign_in()
    if not may_import():
        abort(403)
    return None


@bp.record_once
def _csrf_after_the_limit(state: Any) -> None:
    # The upload checks its CSRF token itself, after raising the body limit to MAX_FILE_BYTES:
    # the app-wide check would read the form first, under the attachments' smaller limit.
    csrf = state.app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(upload)


def collection_of(name: str) -> Collection:
    found = COLLECTIONS.get(name)
    if found is None:
        abort(404)
    if not can(found.permission):
        abort(403)
    return found


def _path(collection: Collection, job_id: str = "", tail: str = "") -> str:
    path = f"/v1/{collection.name}/imports"
    if job_id:
        if not JOB_ID.fullmatch(job_id):
            abort(404)  # never a path of the API's other than the job's own
        path += f"/{job_id}"
    return path + tail


# -- reading the file --------------------------------------------------------------------------


class RefusedFileError(Exception):
    """The file cannot be imported as it is: the message says why, for the form."""


@dataclass
class ParsedFile:
    columns: list[str]
    rows: list[list[str]]


def sniff_delimiter(text: str) -> str:
    """``;`` when the header line has more semicolons than commas (outside quotes), else ``,``."""
    first = text.split("\n", 1)[0]
    quoted = False
    commas = semicolons = 0
    for char in first:
        if char == '"':
            quoted = not quoted
        elif not quoted and char == ",":
            commas += 1
        elif not quoted and char == ";":
            semicolons += 1
    return ";" if semicolons > commas else ","


def decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RefusedFileError(_("The file is not UTF-8 text. Save it as “CSV UTF-8” and upload it again.")) from None


def parse_csv(data: bytes, *, max_rows: int = MAX_ROWS) -> ParsedFile:
    """The header and the rows of a CSV file, or ``RefusedFileError`` with the reason."""
    if not data.strip():
        raise RefusedFileError(_("The file is empty."))
    text = decode(data)
    if not text.strip():
        raise RefusedFileError(_("The file is empty."))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(text), strict=False)
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)  # blank lines before the header
        if header is None:
            raise RefusedFileError(_("The file has no header row."))
        columns = [cell.strip() for cell in header]
        while columns and not columns[-1]:
            columns.pop()  # a trailing delimiter
        for index, name in enumerate(columns, start=1):
            if not name:
                raise RefusedFileError(_("Column %(number)s has no name in the header row.", number=index))
        seen: set[str] = set()
        for name in columns:
            if name in seen:
                raise RefusedFileError(_("The header row names the column “%(name)s” twice.", name=name))
            seen.add(name)
        rows: list[list[str]] = []
        width = len(columns)
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # a blank line
            if len(cells) > width:
                if any(cell.strip() for cell in cells[width:]):
                    raise RefusedFileError(_("Line %(number)s has more cells than the header row has columns.",
                                             number=reader.line_num))
                cells = cells[:width]
            elif len(cells) < width:
                cells = cells + [""] * (width - len(cells))
            rows.append(cells)
            if len(rows) > max_rows:
                most = format_number(max_rows)
                raise RefusedFileError(_("The file has more than %(most)s rows: split it into files of at most "
                                         "%(most)s rows.", most=most))
    except csv.Error as exc:
        raise RefusedFileError(_("The file is not a CSV file the console can read: %(reason)s",
                                 reason=str(exc))) from None
    if not rows:
        raise RefusedFileError(_("The file has a header row but no rows to import."))
    return ParsedFile(columns=columns, rows=rows)


def chunks(rows: Sequence[Sequence[str]], *, most_rows: int = CHUNK_ROWS,
           most_bytes: int = CHUNK_BYTES) -> Iterator[list[Sequence[str]]]:
    """The rows in calls the API accepts: at most ``most_rows`` rows and ``most_bytes`` of JSON each."""
    chunk: list[Sequence[str]] = []
    size = 0
    for number, row in enumerate(rows, start=2):
        row_size = len(json.dumps(row)) + 2  # as requests encodes it (ASCII escapes), with its ", "
        if row_size > most_bytes:
            raise RefusedFileError(_("Line %(number)s is too large to import.", number=number))
        if chunk and (len(chunk) >= most_rows or size + row_size > most_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += row_size
    if chunk:
        yield chunk


def create_job(collection: Collection, file_name: str, columns: list[str],
               first: Sequence[Sequence[str]]) -> dict[str, Any]:
    """The job, made with the file's first chunk of rows."""
    return dict(gateway().json(caller(), "POST", _path(collection),
                               json={"file_name": file_name, "columns": columns, "rows": first}))


@dataclass
class Sent:
    """How far the upload of a job's rows has come (one per chunk appended), or why it stopped."""

    rows: int
    error: str = ""


def append_rows(collection: Collection, job: Mapping[str, Any], rest: Sequence[Sequence[Sequence[str]]],
                sent: int) -> Iterator[Sent]:
    """Append the chunks after the first, saying how far it is after each; on a refusal, cancel the
    job (nothing half-uploaded is left to check) and say why."""
    for chunk in rest:
        try:
            gateway().json(caller(), "POST", _path(collection, job["id"], "/rows"), json={"rows": chunk})
        except ApiError as exc:
            try:
                gateway().json(caller(), "DELETE", _path(collection, job["id"]))
            except ApiError:
                pass  # the refusal is the news; the job stays as it is
            yield Sent(sent, _api_message(exc))
            return
        sent += len(chunk)
        yield Sent(sent)


# -- mapping -----------------------------------------------------------------------------------


def normalised(name: str) -> str:
    return "".join(ch for ch in name.casefold() if ch not in " _-.")


def suggested_mapping(columns: Sequence[str], fields: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Column -> field where their names match, case, spaces and underscores aside (each field once)."""
    by_name = {normalised(str(f["name"])): str(f["name"]) for f in fields}
    taken: set[str] = set()
    out: dict[str, str] = {}
    for column in columns:
        field = by_name.get(normalised(column))
        if field and field not in taken:
            out[column] = field
            taken.add(field)
    return out


def current_mapping(job: Mapping[str, Any]) -> tuple[dict[str, str], str]:
    """The mapping the form shows: the job's own, else the suggested one; and the key column."""
    mapping = job.get("mapping") or suggested_mapping(job.get("columns") or [], job.get("fields") or [])
    return dict(mapping), job.get("key_column") or ""


def submitted_mapping(job: Mapping[str, Any], form: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The mapping of the form (``col-<index>`` -> field, "" for Do not import) and the key column."""
    columns = job.get("columns") or []
    fields = {str(f["name"]) for f in job.get("fields") or []}
    mapping: dict[str, str] = {}
    for index, column in enumerate(columns):
        field = (form.get(f"col-{index}") or "").strip()
        if field and field in fields:
            mapping[column] = field
    key = (form.get("key_column") or "").strip()
    return mapping, key if key in columns else ""


def preview(job: Mapping[str, Any], mapping: Mapping[str, str]) -> tuple[list[str], list[list[str]]]:
    """The sample rows as mapped: the fields (in column order) and each row's cells for them."""
    columns = list(job.get("columns") or [])
    used = [(i, mapping[c]) for i, c in enumerate(columns) if mapping.get(c)]
    rows = []
    for sample in job.get("sample") or []:
        cells = list((sample.get("cells") or []) if isinstance(sample, Mapping) else sample)
        rows.append([cells[i] if i < len(cells) else "" for i, _field in used])
    return [field for _i, field in used], rows


def missing_required(job: Mapping[str, Any], mapping: Mapping[str, str]) -> list[str]:
    mapped = set(mapping.values())
    return [str(f["name"]) for f in job.get("fields") or [] if f.get("required") and f["name"] not in mapped]


def twice_mapped(mapping: Mapping[str, str]) -> list[str]:
    seen: set[str] = set()
    twice: list[str] = []
    for field in mapping.values():
        if field in seen and field not in twice:
            twice.append(field)
        seen.add(field)
    return twice


# -- pages -------------------------------------------------------------------------------------


def _jobs() -> tuple[list[dict[str, Any]], list[str]]:
    """The person's newest jobs of every collection they may import into, newest first; and what
    could not be read (one collection's API being down does not hide the others, nor the form)."""
    jobs: list[dict[str, Any]] = []
    unread: list[str] = []
    for collection in permitted():
        try:
            found = gateway().all_pages(caller(), _path(collection), page_size=100, most=100)
        except ApiError as exc:
            unread.append(_("The imports of %(what)s cannot be read now: %(reason)s",
                            what=collection.title, reason=exc.message))
            continue
        for job in found:
            job.setdefault("collection", collection.name)
            jobs.append(job)
    jobs.sort(key=lambda j: str(j.get("created_at") or ""), reverse=True)
    return jobs, unread


def render_index(*, error: str = "", chosen: str = "", status: int = 200) -> Any:
    jobs, unread = _jobs()
    return render_template("imports/index.html", jobs=jobs, unread=unread, collections=permitted(),
                           all=COLLECTIONS, error=error, chosen=chosen, max_rows=format_number(MAX_ROWS)), status


@bp.get("")
def index() -> Any:
    return render_index(chosen=request.args.get("collection", ""))


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_exc: RequestEntityTooLarge) -> Any:
    message = _("The file is too large: a CSV file to import may have at most %(size)s MB.",
                size=MAX_FILE_BYTES // (1024 * 1024))
    if request.endpoint == "imports.upload":
        return render_index(error=message, status=413)
    return render_template("error.html", status=413, message=message, conflict=False), 413


@bp.post("")
def upload() -> Any:
    request.max_content_length = MAX_FILE_BYTES
    current_app.extensions["csrf"].protect()
    chosen = request.form.get("collection", "")
    collection = COLLECTIONS.get(chosen)
    if collection is None or not can(collection.permission):
        return render_index(error=_("Choose what to import."), chosen=chosen, status=422)
    file = request.files.get("file")
    if file is None or not file.filename:
        return render_index(error=_("Choose a CSV file to upload."), chosen=chosen, status=422)
    file_name = file.filename.replace("\\", "/").rsplit("/", 1)[-1][:255]
    try:
        parsed = parse_csv(file.read())
        parts = list(chunks(parsed.rows))
        job = create_job(collection, file_name, parsed.columns, parts[0])
    except RefusedFileError as exc:
        return render_index(error=str(exc), chosen=chosen, status=422)
    except ApiError as exc:
        return render_index(error=_api_message(exc), chosen=chosen, status=exc.status if exc.status < 500 else 502)
    if len(parts) == 1:
        return _uploaded(collection, job["id"], len(parsed.rows))
    # More rows than one call takes: the page streams while the rest goes to the API, a line per
    # call, so neither the browser nor a proxy in between waits on a silent request; at the end
    # htmx moves on to the job (without JS, a link does).
    progress = append_rows(collection, job, parts[1:], len(parts[0]))
    return Response(stream_template("imports/uploading.html", collection=collection, job=job,
                                    file_name=file_name, total=len(parsed.rows), first_sent=len(parts[0]),
                                    progress=progress),
                    mimetype="text/html")


def _uploaded(collection: Collection, job_id: str, rows: int) -> Any:
    flash(ngettext("%(num)s row uploaded. Map the columns to fields, then check the rows.",
                   "%(num)s rows uploaded. Map the columns to fields, then check the rows.", rows), "ok")
    return redirect(url_for("imports.show", collection=collection.name, job_id=job_id))


@bp.get(f"/{COLLECTION_RULE}/<job_id>/uploaded")
def uploaded(collection: str, job_id: str) -> Any:
    """Where a streamed upload goes once every row is sent: the job page, with the news."""
    found = collection_of(collection)
    job = _job(found, job_id)
    resp = _uploaded(found, job_id, int(job.get("rows") or 0))
    if request.headers.get("HX-Request"):
        return Response(status=204, headers={"HX-Redirect": url_for("imports.show", collection=found.name,
                                                                    job_id=job_id)})
    return resp


def _api_message(exc: ApiError) -> str:
    errors = exc.field_errors
    if errors:
        return exc.message + " " + "; ".join(f"{k}: {v}" if k else v for k, v in errors.items())
    return exc.message


def _job(collection: Collection, job_id: str) -> dict[str, Any]:
    return gateway().get(caller(), _path(collection, job_id))


def _error_rows(collection: Collection, job: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    token = request.args.get("errors_page") or None
    page = gateway().get(caller(), _path(collection, job["id"], "/rows"), status="invalid",
                         page_size=ERRORS_PAGE, page_token=token)
    return page.get("items", []), page.get("next_page_token")


def state_context(collection: Collection, job: dict[str, Any], *, mapping: Mapping[str, str] | None = None,
                  key_column: str | None = None, error: str = "", field_errors: Mapping[str, str] | None = None,
                  change: bool = False) -> dict[str, Any]:
    """Everything the job's state needs, whatever its status."""
    status = job.get("status")
    shown_mapping, shown_key = current_mapping(job)
    if mapping is not None:
        shown_mapping, shown_key = dict(mapping), key_column or ""
    context: dict[str, Any] = {
        "collection": collection, "job": job, "status": status, "error": error,
        "field_errors": dict(field_errors or {}), "poll": POLL,
        "mapping_form": (status == "uploading" or (status == "checked" and change)
                         or bool(error and status not in ACTIVE)),
        "mapping": shown_mapping, "key_column": shown_key,
        "errors": [], "errors_next": None,
    }
    context["preview_fields"], context["preview_rows"] = preview(job, shown_mapping)
    if status == "checked" and not context["mapping_form"]:
        context["errors"], context["errors_next"] = _error_rows(collection, job)
    return context


@bp.get(f"/{COLLECTION_RULE}/<job_id>")
def show(collection: str, job_id: str) -> Any:
    found = collection_of(collection)
    job = _job(found, job_id)
    return render_template("imports/job.html", **state_context(found, job, change=bool(request.args.get("change"))))


@bp.get(f"/{COLLECTION_RULE}/<job_id>/progress")
def progress(collection: str, job_id: str) -> Any:
    """The progress bar while the job checks or runs; once that phase is over, the next state
    for the whole state region (htmx follows ``HX-Retarget``), and a line for the live region."""
    found = collection_of(collection)
    if not request.headers.get("HX-Request"):
        return redirect(url_for("imports.show", collection=found.name, job_id=job_id))
    try:
        job = _job(found, job_id)
    except ApiError as exc:
        if exc.status < 500 and exc.status != 429:
            raise
        # The API is busy or away for a moment: say so, and ask again a little later.
        return render_template("imports/progress.html", collection=found, job={"id": job_id}, status="",
                               poll="3s", waiting=exc.message)
    if job.get("status") in ACTIVE:
        return render_template("imports/progress.html", collection=found, job=job, status=job["status"], poll=POLL)
    resp = Response(render_template("imports/state.html", announce=True, **state_context(found, job)))
    resp.headers["HX-Retarget"] = "#import-state"
    resp.headers["HX-Reswap"] = "outerHTML"
    return resp


@bp.get(f"/{COLLECTION_RULE}/<job_id>/preview")
def preview_fragment(collection: str, job_id: str) -> Any:
    """The preview table for the mapping being chosen (htmx, when a select changes)."""
    found = collection_of(collection)
    job = _job(found, job_id)
    mapping, _key = submitted_mapping(job, request.args)
    fields, rows = preview(job, mapping)
    return render_template("imports/preview.html", preview_fields=fields, preview_rows=rows)


@bp.post(f"/{COLLECTION_RULE}/<job_id>/mapping")
def save_mapping(collection: str, job_id: str) -> Any:
    found = collection_of(collection)
    job = _job(found, job_id)
    mapping, key_column = submitted_mapping(job, request.form)
    problems: dict[str, str] = {}
    for field in twice_mapped(mapping):
        problems[field] = _("%(field)s is chosen for more than one column.", field=field)
    missing = missing_required(job, mapping)
    if missing:
        problems["_"] = _("Choose a column for every required field: %(fields)s.", fields=", ".join(missing))
    if problems:
        return render_template("imports/job.html", **state_context(
            found, job, mapping=mapping, key_column=key_column, error=_("The mapping is not complete."),
            field_errors=problems)), 422
    try:
        gateway().json(caller(), "PUT", _path(found, job_id, "/mapping"),
                       json={"mapping": mapping, "key_column": key_column or None})
    except ApiError as exc:
        if exc.status not in (409, 422):
            raise
        job = _job(found, job_id)
        return render_template("imports/job.html", **state_context(
            found, job, mapping=mapping, key_column=key_column, error=exc.message,
            field_errors=exc.field_errors)), exc.status
    return redirect(url_for("imports.show", collection=found.name, job_id=job_id))


@bp.post(f"/{COLLECTION_RULE}/<job_id>/start")
def start(collection: str, job_id: str) -> Any:
    found = collection_of(collection)
    try:
        gateway().json(caller(), "POST", _path(found, job_id, "/start"))
    except ApiError as exc:
        if exc.status != 409:
            raise
        flash(exc.message, "error")
    return redirect(url_for("imports.show", collection=found.name, job_id=job_id))


@bp.post(f"/{COLLECTION_RULE}/<job_id>/cancel")
def cancel(collection: str, job_id: str) -> Any:
    found = collection_of(collection)
    try:
        gateway().json(caller(), "DELETE", _path(found, job_id))
    except ApiError as exc:
        if exc.status != 409:
            raise
        flash(exc.message, "error")
    else:
        flash(_("The import is cancelled. Records created before stay."), "ok")
    return redirect(url_for("imports.show", collection=found.name, job_id=job_id))


@bp.get(f"/{COLLECTION_RULE}/<job_id>/result")
def result(collection: str, job_id: str) -> Any:
    """The API's result file (``row,status,id,error``), streamed as a download."""
    found = collection_of(collection)
    job = _job(found, job_id)
    upstream = gateway().request(caller(), "GET", _path(found, job_id, "/result"), stream=True,
                                 headers={"Accept": "text/csv"})

    def body() -> Iterator[bytes]:
        try:
            yield from upstream.iter_content(64 * 1024)
        finally:
            upstream.close()

    stem = str(job.get("file_name") or "import").rsplit(".", 1)[0] or "import"
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem)[:80] or "import"
    return Response(stream_with_context(body()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{safe}-result.csv"'})
