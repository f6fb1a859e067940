"""The HTTP edge of every service: declared routes, problem+json, auth, pagination, ETags,
idempotency keys, OpenAPI."""

from crm_kit.web.api import Api, ListResult, Reply, RequestContext
from crm_kit.web.app import create_app
from crm_kit.web.auth import Identity, TokenVerifier, issue_token
from crm_kit.web.http import check_if_match, etag_for
from crm_kit.web.pagination import Page, SortKey
from crm_kit.web.problem import Problem

__all__ = [
    "Api", "Identity", "ListResult", "Page", "Problem", "Reply", "RequestContext", "SortKey", "TokenVerifier",
    "check_if_match", "create_app", "etag_for", "issue_token",
]
