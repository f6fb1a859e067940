"""The HTTP edge of every service: declared routes, problem+json, auth, pagination, ETags,
idempotency keys, OpenAPI.

The names below load on first use (PEP 562), so importing a Flask-free part such as
``crm_kit.web.fields`` or ``crm_kit.web.limits`` from domain code does not load Flask: a worker
never pulls in the web stack.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_WHERE = {
    "Api": "crm_kit.web.api", "ListResult": "crm_kit.web.api", "Reply": "crm_kit.web.api",
    "RequestContext": "crm_kit.web.api", "create_app": "crm_kit.web.app", "Identity": "crm_kit.identity",
    "TokenVerifier": "crm_kit.web.auth", "issue_token": "crm_kit.web.auth", "check_if_match": "crm_kit.web.http",
    "etag_for": "crm_kit.web.http", "Page": "crm_kit.web.pagination", "SortKey": "crm_kit.web.pagination",
    "Problem": "crm_kit.web.problem",
}

if TYPE_CHECKING:
    from crm_kit.identity import Identity
    from crm_kit.web.api import Api, ListResult, Reply, RequestContext
    from crm_kit.web.app import create_app
    from crm_kit.web.auth import TokenVerifier, issue_token
    from crm_kit.web.http import check_if_match, etag_for
    from crm_kit.web.pagination import Page, SortKey
    from crm_kit.web.problem import Problem


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'crm_kit.web' has no attribute {name!r}")


__all__ = [
    "Api", "Identity", "ListResult", "Page", "Problem", "Reply", "RequestContext", "SortKey", "TokenVerifier",
    "check_if_match", "create_app", "etag_for", "issue_token",
]
