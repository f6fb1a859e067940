"""Small HTTP rules every endpoint shares: ETags and If-Match, Accept-Language, query args."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flask import g, request
from marshmallow import Schema, fields

from crm_kit.web.input import check_texts
from crm_kit.web.problem import Problem


def content_disposition(filename: str) -> str:
    """``attachment; filename*=UTF-8''<percent-encoded name>`` (RFC 6266 / RFC 8187): any name, in any
    script or with quotes, travels as ASCII (a raw non-Latin-1 header value cannot be sent at all)."""
    return "attachment; filename*=UTF-8''" + quote(filename, safe="")


def etag_for(version: int) -> str:
    """The strong ETag of a resource at ``version``."""
    return f'"{int(version)}"'


def _etag_values(header: str, *, weak: bool) -> list[str]:
    """The entity tags of an If-Match / If-None-Match header.

    ``weak``: compare weakly (``W/"3"`` stands for ``"3"``, RFC 9110 8.8.3.2; If-None-Match).
    Otherwise a weak tag is left as it is, so it never equals a (strong) ETag: If-Match uses
    the strong comparison.
    """
    values = []
    for part in header.split(","):
        part = part.strip()
        if weak and part.startswith("W/"):
            part = part[2:]
        values.append(part)
    return values


def check_if_match(current_version: int) -> None:
    """412 when the request has ``If-Match`` and it names another version.

    Call before changing a resource (PATCH, DELETE); without the header the write goes on
    (clients that want safety send it). Strong comparison: a weak tag (``W/"3"``) never
    matches, whatever its version.
    """
    header = request.headers.get("If-Match")
    if not header:
        return
    values = _etag_values(header, weak=False)
    if "*" in values or etag_for(current_version) in values:
        return
    raise Problem(
        412,
        f"The resource has changed: it is at version {current_version}, the request's If-Match "
        f"names {header}. Fetch it again and retry.",
        current_version=current_version,
    )


def if_none_match_hits(version: int) -> bool:
    """True when a conditional GET already has this version (answer 304)."""
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    values = _etag_values(header, weak=True)
    return "*" in values or etag_for(version) in values


def preferred_language(available: list[str], default: str) -> str:
    """The best of ``available`` for the request's Accept-Language, else ``default``."""
    best = request.accept_languages.best_match(available) if available else None
    return best or default


def configured_languages() -> list[str]:
    """The languages ``names`` may be given in (``CRM_LANGUAGES``), as configured."""
    from flask import current_app, has_app_context

    from crm_kit.settings import SETTINGS

    if has_app_context() and "crm" in current_app.extensions:
        return list(current_app.extensions["crm"].settings.get("CRM_LANGUAGES") or [])
    default = next(s for s in SETTINGS if s.env == "CRM_LANGUAGES")
    return list(default.parse(default.default or ""))


def note_language(language: str | None) -> str | None:
    """Say that the answer was localised from ``Accept-Language`` - it gets ``Vary:
    Accept-Language`` - and holds text in ``language`` (when given): it gets ``Content-Language``
    with every language noted, in order. The kit's edge adds both headers."""
    noted: list[str] = g.setdefault("crm_languages", [])
    if language and language not in noted:
        noted.append(language)
    return language


def load_query(schema: Schema) -> dict[str, Any]:
    """Validate ``request.args`` with ``schema`` (unknown parameters are a 422).

    List fields take repeated parameters (``?id=a&id=b``); everything else takes one value.
    """
    raw: dict[str, Any] = {}
    for name in request.args:
        field = schema.fields.get(name)
        data_key_field = next((f for f in schema.fields.values() if f.data_key == name), None)
        target = data_key_field or field
        if isinstance(target, fields.List):
            raw[name] = request.args.getlist(name)
        else:
            values = request.args.getlist(name)
            if len(values) > 1:
                raise Problem(422, f"Query parameter {name!r} was given more than once.",
                              errors=[{"field": name, "message": "Give this parameter once."}])
            raw[name] = values[0]
    check_texts([(name, v) for name, value in raw.items() for v in (value if isinstance(value, list) else [value])])
    return schema.load(raw)
