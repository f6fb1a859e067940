"""Idempotency keys for POST: a retry with the same key and body gets the first response.

The key's record is written in the same transaction as the request's effect, so either both
exist or neither does: a crash between "created" and "remembered" cannot happen. Two
concurrent requests with the same key race on the primary key; the loser rolls back its
effect and replays the winner's response.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Table, delete, select
from sqlalchemy.orm import Session

from crm_kit.db import utcnow
from crm_kit.web.problem import Problem

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 200
_KEPT_HEADERS = ("Location", "ETag", "Content-Type", "Crm-Written")


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: dict[str, str]
    body: str


def validate_key(key: str) -> str:
    """422 for keys that are empty, too long or not printable ASCII."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise Problem(422, f"The {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
                      errors=[{"field": HEADER, "message": "Invalid idempotency key."}])
    return key


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """Hash of what makes two requests "the same": method, path and the JSON body's content
    (key order and whitespace do not matter)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode() if body else b""
    except (ValueError, UnicodeDecodeError):
        canonical = body
    digest = hashlib.sha256()
    for part in (method.encode(), b"\0", path.encode(), b"\0", canonical):
        digest.update(part)
    return digest.hexdigest()


class IdempotencyStore:
    """Reads and writes the ``idempotency_keys`` table of the service's database."""

    def __init__(self, table: Table, ttl_seconds: int) -> None:
        self.table = table
        self.ttl = dt.timedelta(seconds=ttl_seconds)

    def lookup(self, session: Session, principal: str, key: str, fingerprint: str) -> StoredResponse | None:
        """The stored response for this key, None if unused (or expired); 422 if the key
        was used for a different request."""
        row = session.execute(
            select(self.table).where(self.table.c.principal == principal, self.table.c.key == key)
        ).first()
        if row is None:
            return None
        if row.created_at < utcnow() - self.ttl:
            session.execute(delete(self.table).where(self.table.c.principal == principal, self.table.c.key == key))
            return None
        if row.request_hash != fingerprint:
            raise Problem(
                422,
                f"This {HEADER} was already used with a different request. Use a new key for a new request.",
                errors=[{"field": HEADER, "message": "Key reused with a different body or path."}],
            )
        return StoredResponse(status=row.status, headers=dict(row.headers), body=row.body)

    def remember(self, session: Session, principal: str, key: str, fingerprint: str, method: str, path: str,
                 status: int, headers: dict[str, Any], body: str) -> None:
        """Add the key's record to the session (committed with the request's effect)."""
        kept = {name: str(headers[name]) for name in _KEPT_HEADERS if name in headers}
        session.execute(
            self.table.insert().values(
                principal=principal, key=key, method=method, path=path[:2000], request_hash=fingerprint,
                status=status, headers=kept, body=body, created_at=utcnow(),
            )
        )

    def purge_expired(self, session: Session) -> int:
        """Delete records older than the TTL (run from the worker); returns how many."""
        result = session.execute(delete(self.table).where(self.table.c.created_at < utcnow() - self.ttl))
        return cast(CursorResult[Any], result).rowcount or 0
