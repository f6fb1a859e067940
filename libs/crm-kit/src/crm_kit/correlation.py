"""The correlation id of the work in progress: set from an HTTP header or a Kafka header,
read by the JSON log formatter and copied into every event the work produces."""

from __future__ import annotations

import contextvars
import re
import uuid

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

HEADER = "X-Correlation-ID"
REQUEST_ID_HEADER = "X-Request-ID"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def new_id() -> str:
    """A fresh correlation id."""
    return uuid.uuid4().hex


def sanitize(value: str | None) -> str | None:
    """Accept a caller's id only if it is short and harmless (it ends up in logs and headers)."""
    if value and _VALID.match(value):
        return value
    return None


def get() -> str | None:
    """The current correlation id, or None outside a request or event."""
    return _current.get()


def set(value: str | None) -> contextvars.Token[str | None]:  # noqa: A001 - mirrors ContextVar.set
    """Make ``value`` the current correlation id; returns a token for ``reset``."""
    return _current.set(value)


def reset(token: contextvars.Token[str | None]) -> None:
    """Restore the correlation id that was current before ``set``."""
    _current.reset(token)
