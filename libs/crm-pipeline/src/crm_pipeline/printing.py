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
import logging
import math
import multiprocessing
import os
import re
import resource
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import ChainableUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from sqlalchemy.orm import Session

from crm_catalogue_view import CatalogueView
from crm_catalogue_view.model import CatalogueEntryView
from crm_kit.identity import Identity
from crm_pipeline.errors import PreviewNeedsPermission, RenderFailed, TemplateNotPrintable
from crm_pipeline.kind import RecordKind

if TYPE_CHECKING:  # fpdf (40 MB) is loaded where PDFs are made: in the render children, not the api
    from fpdf import FPDF, FontFace

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


def check_preview(identity: Identity) -> None:
    """Only a catalogue administrator prints with a template that is not saved."""
    if not identity.has(PREVIEW_PERMISSION):
        raise PreviewNeedsPermission(PREVIEW_PERMISSION)


def saved_template(session: Session, view: CatalogueView, kind: RecordKind, stage_id: str,
                   template_id: str) -> tuple[str, str]:
    """The name and body of the saved template ``template_id``, if it may print a record of ``kind``
    at ``stage_id`` (``TemplateNotPrintable`` otherwise)."""
    known = view.get(session, template_id)
    if known is None or not printable(known, kind, stage_id):
        raise TemplateNotPrintable(template_id, exists=known is not None and known.entity == "template",
                                   kind=kind.kind)
    return str(known.attr("name") or "document"), str(known.attr("body") or "")


def print_document(job: PrintJob, field: str) -> bytes:
    """The document (``render_isolated``); a template that cannot be rendered is ``RenderFailed``
    naming ``field`` (the template's id, or the unsaved template's body) and the body's line."""
    try:
        return render_isolated(job)
    except RenderError as exc:
        raise RenderFailed(job.title, field, str(exc), exc.line) from None


def document_filename(name: str) -> str:
    """A file name (without extension) for a document printed with the template ``name``."""
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
    from fpdf import FPDF
    from fpdf.enums import ResourceAccessPolicy
    from fpdf.errors import FPDFResourceAccessError, FPDFUnicodeEncodingException

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
    from fpdf import FontFace

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
    context.set_forkserver_preload([__name__, "fpdf"])  # used when the fork server starts (first call)
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
