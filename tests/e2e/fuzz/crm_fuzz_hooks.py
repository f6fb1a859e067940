"""Schemathesis hooks for the fuzzing run.

Schemathesis reuses one generated ``Idempotency-Key`` value across unrelated requests, which
the contract answers with 422 ("same key with another body"). A real client sends a new key
for each new request, so a well-formed key is replaced by a fresh one just before the call;
a malformed one (negative testing) is left as it is. Replays with the same key are tested by
the e2e tests that own them.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import schemathesis

_VALID_KEY = re.compile(r"[\x20-\x7e]{1,200}\Z")


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and _VALID_KEY.match(key):
        headers["Idempotency-Key"] = f"fuzz-{uuid.uuid4().hex}"
