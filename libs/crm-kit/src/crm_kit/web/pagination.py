"""Opaque cursor (keyset) pagination: stable while rows are inserted concurrently.

A page token encodes the sort values and id of the last row served, plus a fingerprint of
the query it belongs to; the next page is "rows after that one" in the same order. Tokens
are signed so a client cannot hand-craft positions, and a token used with another sort or
filter is refused (422) instead of silently serving the wrong rows.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import ColumnElement, Select, and_, or_
from sqlalchemy.orm import Session

from crm_kit.web.problem import Problem

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_PAGE_TOKEN = 2000  # characters; the tokens this paginator issues are far shorter


@dataclass(frozen=True)
class SortKey:
    """One ORDER BY term: a column (or expression), its JSON-able name, and direction."""

    name: str
    column: ColumnElement[Any]
    descending: bool = False


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    next_page_token: str | None


def _encode_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"t": value.isoformat()}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and "t" in value:
        return dt.datetime.fromisoformat(value["t"])
    return value


def _bad_token() -> Problem:
    return Problem(422, "The page_token is not valid for this list; start again without it.",
                   errors=[{"field": "page_token", "message": "Not a token issued for this query."}])


class Paginator:
    """Encodes and decodes tokens with a key (the service's JWT secret is fine)."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(("page-token:" + secret).encode()).digest()

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:12]

    def encode(self, fingerprint: str, values: Sequence[Any]) -> str:
        payload = json.dumps({"f": fingerprint, "v": [_encode_value(v) for v in values]},
                             separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._sign(payload) + payload).decode().rstrip("=")

    def decode(self, token: str, fingerprint: str) -> list[Any]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            sig, payload = raw[:12], raw[12:]
            if not hmac.compare_digest(sig, self._sign(payload)):
                raise ValueError("signature")
            data = json.loads(payload)
            if data.get("f") != fingerprint:
                raise ValueError("fingerprint")
            return [_decode_value(v) for v in data["v"]]
        except (ValueError, KeyError, TypeError, json.JSONDecodeError):
            raise _bad_token() from None

    def page(
        self,
        session: Session,
        stmt: Select[Any],
        sort: Sequence[SortKey],
        *,
        page_size: int,
        page_token: str | None,
        fingerprint: str = "",
    ) -> Page:
        """Run ``stmt`` ordered by ``sort`` (whose last key must be unique, e.g. the id)."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise Problem(422, f"page_size must be between 1 and {MAX_PAGE_SIZE}.",
                          errors=[{"field": "page_size", "message": f"Between 1 and {MAX_PAGE_SIZE}."}])
        fp = fingerprint + "|" + ",".join(f"{k.name}{'-' if k.descending else '+'}" for k in sort)
        if page_token:
            after = self.decode(page_token, fp)
            if len(after) != len(sort):
                raise _bad_token()
            stmt = stmt.where(_after(sort, after))
        ordering = [k.column.desc() if k.descending else k.column.asc() for k in sort]
        rows = list(session.execute(stmt.order_by(*ordering).limit(page_size + 1)).all())
        next_token = None
        if len(rows) > page_size:
            rows = rows[:page_size]
            last = rows[-1]
            next_token = self.encode(fp, [_value(last, k.name) for k in sort])
        return Page(rows=rows, next_page_token=next_token)


def _value(row: Any, name: str) -> Any:
    mapping = row._mapping
    if name in mapping:
        return mapping[name]
    return getattr(row[0], name)  # select(Entity): the sort value is an attribute of it


def _after(sort: Sequence[SortKey], values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in ``sort`` order, for any mix of directions.

    (a, b) > (x, y) is written out as a > x OR (a = x AND b > y): row-value comparison
    would be shorter but cannot mix ASC and DESC, and SQLite's support is recent.
    """
    clauses = []
    for i, key in enumerate(sort):
        equal_prefix = [sort[j].column == values[j] for j in range(i)]
        step = key.column < values[i] if key.descending else key.column > values[i]
        clauses.append(and_(*equal_prefix, step))
    return or_(*clauses)


class PageQuery(Schema):
    """The query parameters of every list: ``page_size`` (1-200, default 50) and ``page_token``.

    A list with filters subclasses it and adds its own fields.
    """

    page_size = fields.Integer(load_default=DEFAULT_PAGE_SIZE,
                               validate=validate.Range(min=1, max=MAX_PAGE_SIZE))
    # Empty: the first page. Any other value must be a token this list issued (422 otherwise): the
    # server's tokens are unpadded base64url, so the document says that alphabet.
    page_token = fields.String(validate=validate.Length(max=MAX_PAGE_TOKEN), metadata={
        "pattern": "^[A-Za-z0-9_-]*$",
        "description": "next_page_token of the previous page of the same query (opaque); empty for the first."})
