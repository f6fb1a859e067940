"""The API's timestamps (RFC 3339, ``Z`` or an offset) as the console's views read them."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def api_time(value: Any) -> datetime | None:
    """``value`` as a datetime; None when it is empty or no timestamp."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
