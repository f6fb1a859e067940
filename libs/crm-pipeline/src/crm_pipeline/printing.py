"""Templates at a record's stage, and a record printed with one of them (HTML or PDF).

Templates live in the service's catalogue copy (entity ``template``). A record offers (lists)
the templates that are visible at its kind's stages (``visible_at``) and linked to its current
stage (the template's ``stage_ids``).

Printing takes those, and also any template tied to no stage: linking a template to stages
restricts it to them, and a template linked to none (``stage_ids`` empty) is not restricted -
it prints on every record of the kind its ``visible_at`` names, or of either kind when
``visible_at`` is null (otherwise such a template could never be printed at all). A template
tied to other stages of this kind, or meant for the other kind, is refused (422).

An administrator (``catalogue:admin``) may instead send the template itself (``template``:
kind, subject, body) to preview unsaved text: it is rendered for the record in the same
sandbox, whatever its visibility, and is stored nowhere. A syntax error is a 422 whose error
names the ``line`` of the body, as the catalogue's 422 on save does.

Printing renders the template's ``body`` with Jinja in an immutable sandbox: the record is
plain JSON data (as the records API shows it), attributes and methods that reach Python
internals are refused (422), nothing can be changed, and there is no loader (no include,
import or extends). A template is code a person wrote, so it also runs in a child process
with hard limits on time, memory and output: an endless loop or a string of 10 GB ends in
a 422, never in a hung or starved web worker. Children come from a fork server that has
this module loaded already (a child starts in milliseconds, and a threaded web worker is
never forked).
"""

from __future__ import annotations

import html
import json
import logging
import math
import multiprocessing
import os
import re
import resource
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from flask import Response, request
from fpdf import FPDF, FontFace
from fpdf.enums import ResourceAccessPolicy
from fpdf.errors import FPDFResourceAccessError, FPDFUnicodeEncodingException
from jinja2 import ChainableUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy import Table
from sqlalchemy.orm import Session

from crm_catalogue_view import CatalogueView
from crm_catalogue_view.model import CatalogueEntryView
from crm_kit.web import Api, ListResult, Problem, RequestContext, limits
from crm_kit.web.fields import Text
from crm_pipeline.api import Presenter
from crm_pipeline.kind import RecordKind
from crm_pipeline.queries import load_visible
from crm_pipeline.records import Records
from crm_pipeline.schemas import record_schemas

TEMPLATE_KINDS = ("email", "document", "print")
TEMPLATE_BODY_LENGTH = 500_000  # the catalogue's limit on a template's body
PREVIEW_PERMISSION = "catalogue:admin"  # who may print with a template that is not saved
HTML = "text/html"
PDF = "application/pdf"
# Where a Unicode TrueType font is looked for (Debian's fonts-dejavu-core). Without one, PDFs
# use the PDF core fonts, which know Latin-1 only: other characters are then a 422.
UNICODE_FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"),)
# fpdf2 would print these elements' text: a PDF shows the document's body only.
_NOT_PRINTED = re.compile(r"<(head|style|script|template)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class RenderLimits:
    """What rendering one document may use."""

    seconds: float = 5.0  # CPU time of the render (HTML, and PDF if asked): the guard against runaway templates
    # Wall-clock bound against stalls only: on a busy machine a child waits for a core, and the
    # first render of a process also starts the fork server, so this is far above ``seconds``.
    wall_seconds: float = 30.0
    memory_bytes: int = 512 * 1024 * 1024  # address space the child may add to what it starts with
    output_bytes: int = 2 * 1024 * 1024  # the rendered HTML, and the PDF


@dataclass(frozen=True)
class PrintJob:
    """Everything a child needs to render a document (picklable, JSON data only)."""

    body: str
    title: str  # the template's name: the document's title
    variables: tuple[str, ...]  # the names the record is available as
    record: dict[str, Any]
    media_type: str  # HTML or PDF
    limits: RenderLimits = RenderLimits()


class RenderError(Exception):
    """The template could not be turned into a document; the message says why (the caller sees it).

    ``line`` is the body's line of a syntax error (None when the error has no line)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class TemplatesQuery(Schema):
    kind = fields.String(validate=validate.OneOf(TEMPLATE_KINDS))


class TemplateOut(Schema):
    # The catalogue's limits (the validators only document them: this is a response).
    id = fields.String(validate=limits.ID)
    kind = fields.String(validate=validate.OneOf(TEMPLATE_KINDS))
    name = fields.String(validate=validate.Length(max=limits.CATALOGUE_NAME_LENGTH))
    subject = fields.String(allow_none=True, validate=validate.Length(max=500))


class InlineTemplateIn(Schema):
    """A template that is not saved: rendered once, stored nowhere (``catalogue:admin`` only)."""

    kind = fields.String(required=True, validate=validate.OneOf(TEMPLATE_KINDS))
    subject = Text(load_default=None, allow_none=True, validate=validate.Length(max=500),
                   metadata={"description": "Email templates only; the document's title."})
    body = Text(multiline=True, load_default="", validate=validate.Length(max=TEMPLATE_BODY_LENGTH),
                metadata={"description": "Jinja template text; the record is `lead`/`opportunity` and `record`."})


class PrintIn(Schema):
    template_id = fields.String(validate=validate.Length(min=1, max=36),
                                metadata={"description": "A saved template visible at the record's stage."})
    template = fields.Nested(InlineTemplateIn, metadata={
        "description": "Instead of template_id: an unsaved template to preview (needs catalogue:admin). "
                       "A syntax error is a 422 whose error has the body's `line`."})

    @validates_schema
    def _one_template(self, data: dict[str, Any], **_: Any) -> None:
        if ("template_id" in data) == ("template" in data):
            raise ValidationError("Send either template_id or template.", "template_id")


def build_printing_api(kind: RecordKind, tables: Mapping[str, Table], view: CatalogueView | None = None,
                       limits: RenderLimits | None = None) -> Api:
    """``GET {records}/<id>/templates`` and ``POST {records}/<id>/print`` for ``kind``."""
    api = Api(kind.plural)
    base = kind.collection_path
    view = view or CatalogueView()
    limits = limits or RenderLimits()
    table = tables["records"]
    present = Presenter(kind, Records(kind, tables, view))
    out = record_schemas(kind).out()

    @api.get(f"{base}/<record_id>/templates", permission=kind.permission("view"), query=TemplatesQuery,
             response=TemplateOut, many=True, summary=f"Templates visible at the {kind.kind}'s current stage")
    def list_templates(ctx: RequestContext, record_id: str) -> ListResult:
        row = load_visible(ctx.session, table, kind, ctx.user, record_id)
        found = templates_at_stage(ctx.session, view, kind, row.stage_id, ctx.query.get("kind"))
        return ListResult([template_item(t) for t in found], None)

    @api.post(f"{base}/<record_id>/print", permission=kind.permission("view"), body=PrintIn, status=200,
              idempotent=False, produces=HTML, errors=(406,),
              summary=f"The {kind.kind} rendered with a template (text/html, or application/pdf by Accept)")
    def print_record(ctx: RequestContext, record_id: str) -> Response:
        # Printing changes nothing, so a retry simply renders again: no Idempotency-Key
        # protocol (its replay store keeps text, not PDF bytes).
        media_type = negotiate()
        inline = ctx.body.get("template")
        if inline is not None and not ctx.user.has(PREVIEW_PERMISSION):
            raise Problem(403, f"Printing with a template that is not saved needs {PREVIEW_PERMISSION}.")
        row = load_visible(ctx.session, table, kind, ctx.user, record_id)
        if inline is not None:
            name = str(inline.get("subject") or "preview")
            body, field = str(inline["body"]), "template.body"
        else:
            template_id = ctx.body["template_id"]
            known = view.get(ctx.session, template_id)
            template = known if known is not None and printable(known, kind, row.stage_id) else None
            if template is None:
                message = (f"Template {template_id!r} is not visible at this {kind.kind}'s stage."
                           if known is not None and known.entity == "template"
                           else f"There is no template with id {template_id!r}.")
                raise Problem(422, message, errors=[{"field": "template_id", "message": message}])
            name = str(template.attr("name") or "document")
            body, field = str(template.attr("body") or ""), "template_id"
        # The record exactly as GET shows it, as JSON types: the template sees data, not rows.
        record = json.loads(json.dumps(out.dump(present.one(ctx, row)), default=str))
        job = PrintJob(body=body, title=name, variables=("record", kind.kind),
                       record=record, media_type=media_type, limits=limits)
        try:
            data = render_isolated(job)
        except RenderError as exc:
            error: dict[str, Any] = {"field": field, "message": str(exc)}
            if exc.line is not None:
                error["line"] = exc.line
            raise Problem(422, f"The template {name!r} could not be rendered: {exc}", errors=[error]) from None
        resp = Response(data, status=200, mimetype=media_type)
        extension = "pdf" if media_type == PDF else "html"
        resp.headers["Content-Disposition"] = f'inline; filename="{_filename(name)}.{extension}"'
        if media_type == HTML:
            # Template text is HTML its author wrote; opened on its own it runs no script.
            resp.headers["Content-Security-Policy"] = ("sandbox; default-src 'none'; img-src data: https:; "
                                                       "style-src 'unsafe-inline'; font-src data:")
        return resp

    return api


def templates_at_stage(session: Session, view: CatalogueView, kind: RecordKind, stage_id: str,
                       template_kind: str | None = None) -> list[CatalogueEntryView]:
    """The templates (of ``template_kind``, or every kind) a record of ``kind`` at ``stage_id`` offers,
    by name.

    Filtered in Python: stage_ids is a JSON list, and a catalogue has tens of templates.
    """
    visible_at = f"{kind.kind}_stage"
    found = [t for t in view.entries(session, "", "template")
             if t.attr("visible_at") == visible_at and stage_id in (t.attr("stage_ids") or [])
             and (template_kind is None or t.attr("template_kind") == template_kind)]
    return sorted(found, key=lambda t: (str(t.attr("name") or "").casefold(), t.id))


def printable(template: CatalogueEntryView, kind: RecordKind, stage_id: str) -> bool:
    """Whether ``template`` may print a record of ``kind`` at ``stage_id`` (see the module's docstring)."""
    if template.entity != "template":
        return False
    visible_at = template.attr("visible_at")
    stage_ids = template.attr("stage_ids") or []
    if visible_at is None:
        return not stage_ids
    return visible_at == f"{kind.kind}_stage" and (not stage_ids or stage_id in stage_ids)


def template_item(template: CatalogueEntryView) -> dict[str, Any]:
    return {"id": template.id, "kind": template.attr("template_kind"), "name": template.attr("name"),
            "subject": template.attr("subject")}


def negotiate() -> str:
    """HTML or PDF, whichever the request's Accept prefers (HTML when it has no preference); 406
    when it allows neither."""
    accept = request.accept_mimetypes
    best = accept.best_match([HTML, PDF]) if accept else HTML  # no Accept (or an empty one): anything goes
    if best is None:
        raise Problem(406, f"This endpoint answers {HTML} or {PDF}; the request's Accept header allows neither.")
    return best


def _filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:100] or "document"


# -- rendering ---------------------------------------------------------------------------------


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, but an unsafe attribute is refused at once instead of rendering as
    an empty value: the template's author learns why, and nothing half-works."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} value is not allowed")


def render(job: PrintJob) -> bytes:
    """The document (HTML or PDF bytes), in this process; ``RenderError`` says why not.

    Callers serving requests use ``render_isolated``: this one has no time or memory limit.
    """
    body = render_body(job)
    data = render_pdf(body, job.title) if job.media_type == PDF else html_document(body, job.title).encode()
    if len(data) > job.limits.output_bytes:
        raise RenderError(f"The document is larger than {job.limits.output_bytes} bytes.")
    return data


def render_body(job: PrintJob) -> str:
    """The template's body rendered with the record (autoescaped), at most ``output_bytes`` long."""
    env = _Sandbox(autoescape=True, undefined=ChainableUndefined)  # a missing attribute renders as ""
    try:
        template = env.from_string(job.body)
    except TemplateSyntaxError as exc:
        raise RenderError(f"Line {exc.lineno}: {exc.message}", line=exc.lineno) from None
    parts: list[str] = []
    size = 0
    try:
        for chunk in template.generate({name: job.record for name in job.variables}):
            size += len(chunk.encode())
            if size > job.limits.output_bytes:
                raise RenderError(f"The rendered template is larger than {job.limits.output_bytes} bytes.")
            parts.append(chunk)
    except (RenderError, MemoryError):
        raise
    except SecurityError as exc:
        raise RenderError(f"Refused by the sandbox: {exc}.") from None
    except TemplateError as exc:
        raise RenderError(f"{type(exc).__name__}: {exc.message or exc}") from None
    except Exception as exc:  # noqa: BLE001 - whatever a template does wrong is the template's error
        raise RenderError(f"{type(exc).__name__}: {exc}") from None
    return "".join(parts)


def html_document(body: str, title: str) -> str:
    """A minimal HTML document around ``body`` (a template that is a whole document stays as it is)."""
    start = body.lstrip()[:9].lower()
    if start.startswith(("<!doctype", "<html")):
        return body
    return (f'<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"</head>\n<body>\n{body}\n</body>\n</html>\n")


def render_pdf(body: str, title: str) -> bytes:
    """``body`` (HTML) as a PDF made by fpdf2; it loads no file and no URL (images: data: URIs only)."""
    pdf = FPDF(format="A4")
    pdf.resource_access_policy = ResourceAccessPolicy.NONE
    pdf.set_title(title)
    pdf.set_creator("CRM")
    family, tag_styles = _fonts(pdf)
    pdf.add_page()
    pdf.set_font(family, size=11)
    try:
        pdf.write_html(_NOT_PRINTED.sub("", body), font_family=family, tag_styles=tag_styles,
                       warn_on_tags_not_matching=False)
        return bytes(pdf.output())
    except FPDFUnicodeEncodingException as exc:
        raise RenderError(f"The PDF fonts cannot show this text ({exc}); ask for {HTML} instead.") from None
    except FPDFResourceAccessError as exc:
        raise RenderError(f"A PDF loads no files or URLs: embed images as data: URIs ({exc}).") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - fpdf2 refuses HTML it cannot lay out in many ways
        raise RenderError(f"The PDF library cannot render this HTML: {type(exc).__name__}: {exc}") from None


def _fonts(pdf: FPDF) -> tuple[str, dict[str, FontFace]]:
    """The font family (and code/pre style) to write with: DejaVu when installed, else the core fonts."""
    for directory in UNICODE_FONT_DIRS:
        if not (directory / "DejaVuSans.ttf").is_file():
            continue
        _add_family(pdf, "dejavu", directory, "DejaVuSans")
        mono = "dejavu"
        if (directory / "DejaVuSansMono.ttf").is_file():
            mono = "dejavumono"
            _add_family(pdf, mono, directory, "DejaVuSansMono")
        return "dejavu", {"code": FontFace(family=mono), "pre": FontFace(family=mono)}
    return "helvetica", {}


def _add_family(pdf: FPDF, family: str, directory: Path, stem: str) -> None:
    """Register ``stem``'s four styles; a missing bold or oblique file falls back to the nearest one."""

    def pick(suffix: str, fallback: Path) -> Path:
        path = directory / f"{stem}{suffix}.ttf"
        return path if path.is_file() else fallback

    regular = directory / f"{stem}.ttf"
    bold = pick("-Bold", regular)
    for style, path in (("", regular), ("B", bold), ("I", pick("-Oblique", regular)),
                        ("BI", pick("-BoldOblique", bold))):
        pdf.add_font(family, style, path)


def render_isolated(job: PrintJob) -> bytes:
    """``render(job)`` in a child process limited to ``job.limits``; ``RenderError`` says why not.

    As with any fork server, the program's main module must guard its main code with
    ``if __name__ == "__main__"`` (gunicorn and pytest, which run the services and the tests, do).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # used when the fork server starts (first call)
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_render_in_child, args=(sender, job), name="crm-render", daemon=True)
    try:
        child.start()
    finally:
        sender.close()  # the child has its own copy; ours must go, or EOF would never come
    try:
        if not receiver.poll(job.limits.wall_seconds):
            raise RenderError(f"Rendering took longer than {job.limits.wall_seconds:g} s.")
        outcome, value, *line = receiver.recv()
    except EOFError:  # the child was ended by its CPU limit (or died) before answering
        raise RenderError(f"Rendering was stopped: it used more than {job.limits.seconds:g} s of CPU time "
                          "or more memory than a template may.") from None
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join()
        child.close()
    if outcome != "ok":
        raise RenderError(value, line[0] if line else None)
    return bytes(value)


def _render_in_child(sender: Connection, job: PrintJob) -> None:
    _limit_self(job.limits)
    logging.getLogger("fpdf").setLevel(logging.ERROR)  # its layout warnings are no one's to read here
    try:
        result: tuple[Any, ...] = ("ok", render(job))
    except RenderError as exc:
        result = ("error", str(exc), exc.line)
    except MemoryError:
        result = ("error", f"Rendering needs more than the {job.limits.memory_bytes // 2**20} MiB a template "
                           "may use.")
    except Exception as exc:  # noqa: BLE001 - reported to the caller as the template's error
        result = ("error", f"{type(exc).__name__}: {exc}")
    sender.send(result)
    sender.close()


def _limit_self(limits: RenderLimits) -> None:
    """Hard limits on this (child) process: CPU seconds and address space."""

    def lower(which: int, value: int) -> None:
        _, hard = resource.getrlimit(which)
        resource.setrlimit(which, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))

    lower(resource.RLIMIT_CPU, math.ceil(limits.seconds))
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return  # no /proc: the wall-clock limit still holds
    lower(resource.RLIMIT_AS, pages * os.sysconf("SC_PAGE_SIZE") + limits.memory_bytes)
