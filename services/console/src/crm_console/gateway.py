"""The console's only backend: the gateway's ``/v1``, called with the signed-in person's token.

Every call carries the person's bearer token, their language and the read-your-writes token
the gateway handed out on their last write (``Consistency-Token``, the same token the API's
``crm_ct`` cookie carries for browsers that call the API themselves), so the next screen
shows what they just saved, in every service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from crm_kit.keepalive import pooled_session

TOKEN_HEADER = "Consistency-Token"  # noqa: S105 - a header name, not a secret


class ApiError(Exception):
    """The gateway refused a call (4xx/5xx): its problem+json, for the page to show."""

    def __init__(self, status: int, problem: Mapping[str, Any] | None = None) -> None:
        self.status = status
        self.problem = dict(problem or {})
        super().__init__(self.message)

    @property
    def message(self) -> str:
        detail = self.problem.get("detail") or self.problem.get("title") or f"HTTP {self.status}"
        return str(detail)

    @property
    def field_errors(self) -> dict[str, str]:
        """``errors`` of a 422 as field -> first message (the API gives a map or a list)."""
        errors = self.problem.get("errors")
        out: dict[str, str] = {}
        if isinstance(errors, Mapping):
            for name, msgs in errors.items():
                out[str(name)] = str(msgs[0] if isinstance(msgs, list) and msgs else msgs)
        elif isinstance(errors, list):
            for item in errors:
                if isinstance(item, Mapping):
                    name = str(item.get("field") or item.get("pointer") or "")
                    out[name] = str(item.get("message") or item.get("detail") or item)
        return out

    @property
    def conflict(self) -> bool:
        """Someone else changed the record (412 on ``If-Match``)."""
        return self.status == 412


class SignedOutError(Exception):
    """The gateway no longer accepts the session's token (expired or revoked): sign in again."""


@dataclass
class Caller:
    """Who calls, and what they carry: their token, language and last consistency token."""

    token: str
    language: str = "en"
    consistency: str | None = None
    issued: list[str] = field(default_factory=list)  # consistency tokens received during this request


class Gateway:
    """A pooled HTTP client of the gateway, shared by every request of the process."""

    def __init__(self, base_url: str, *, timeout: float = 15.0, pool_size: int = 16) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = pooled_session(pool_size=pool_size)  # a save after a pause must not meet a closing connection

    def request(self, caller: Caller, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None, headers: Mapping[str, str] | None = None, files: Any = None,
                data: Any = None, stream: bool = False) -> requests.Response:
        """One call; raises ``ApiError`` for an error answer and ``SignedOutError`` for 401."""
        if not path.startswith("/v1/"):
            raise ValueError(f"the console only calls the gateway's /v1, not {path!r}")
        sent = {"Authorization": f"Bearer {caller.token}", "Accept-Language": caller.language,
                "Accept": "application/json, application/problem+json;q=0.9, */*;q=0.5"}
        if caller.consistency:
            sent[TOKEN_HEADER] = caller.consistency
        sent.update(headers or {})
        try:
            resp = self._http.request(method, self.base_url + path, params=params, json=json, headers=sent,
                                      files=files, data=data, stream=stream, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ApiError(503, {"title": "The API cannot be reached", "detail": str(exc)}) from None
        issued = resp.headers.get(TOKEN_HEADER)
        if issued:
            caller.consistency = issued
            caller.issued.append(issued)
        if resp.status_code == 401:
            resp.close()
            raise SignedOutError()
        if resp.status_code >= 400:
            try:
                problem = resp.json()
            except ValueError:
                problem = {"title": resp.reason}
            finally:
                resp.close()
            raise ApiError(resp.status_code, problem if isinstance(problem, Mapping) else {"title": resp.reason})
        return resp

    def json(self, caller: Caller, method: str, path: str, **kw: Any) -> Any:
        resp = self.request(caller, method, path, **kw)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def get(self, caller: Caller, path: str, **params: Any) -> Any:
        return self.json(caller, "GET", path, params={k: v for k, v in params.items() if v not in (None, "")})

    def all_pages(self, caller: Caller, path: str, *, page_size: int = 200, most: int = 2000,
                  **params: Any) -> list[Any]:
        """Every item of a paged list (up to ``most``), following ``next_page_token``."""
        items: list[Any] = []
        token = None
        while True:
            page = self.get(caller, path, page_size=page_size, page_token=token, **params)
            items.extend(page.get("items", []))
            token = page.get("next_page_token")
            if not token or len(items) >= most:
                return items

    def ping(self) -> None:
        """Readiness: the gateway answers its health check."""
        resp = self._http.get(self.base_url + "/healthz", timeout=2)
        resp.raise_for_status()
