"""marshmallow fields with the API contract's formats."""

from __future__ import annotations

import datetime as dt
from typing import Any

from marshmallow import fields


class Timestamp(fields.DateTime):
    """RFC 3339 in UTC with a ``Z`` (``2026-11-23T10:00:00Z``), as the contract writes times.

    Input may carry any offset (it is converted to UTC); a time without an offset is refused,
    since it would mean something different on each server. At most ``MAX_LENGTH`` characters
    (the longest the server writes is 27; the document says so too).
    """

    MAX_LENGTH = 64

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        if isinstance(value, str) and len(value) > self.MAX_LENGTH:
            raise self.make_error("invalid", input=value, obj_type="timestamp")
        parsed = super()._deserialize(value, attr, data, **kwargs)
        if parsed.tzinfo is None:
            raise self.make_error("invalid", input=value, obj_type="timestamp with a time zone")
        return parsed.astimezone(dt.UTC)


class StrictBoolean(fields.Boolean):
    """JSON ``true``/``false`` only: ``"yes"``, ``1`` or ``0`` for a flag is a client bug, not intent
    (marshmallow's ``truthy={True}`` alone would still take ``1`` and ``0``, which equal them)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value
