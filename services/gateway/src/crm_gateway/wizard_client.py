"""The services as the wizard's caller sees them: requests sent with the caller's own headers
(``Authorization``, ``Accept-Language``) and the consistency token of the steps before, their
answers, and a failing step's problem as the client gets it (with ``step``).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import request

from crm_gateway.consistency import Consistency
from crm_gateway.proxy import TIMEOUT, SizedRequestBody, Upstream, UpstreamError
from crm_kit import correlation
from crm_kit.web import Problem
from crm_kit.web.http import note_language
from crm_kit.web.idempotency import HEADER as IDEMPOTENCY_HEADER
from crm_kit.web.idempotency import REPLAYED_HEADER

DELETE_ATTEMPTS = 3
MAIN_ROLE = "MAIN"
_RETRY_DELETE = frozenset({409, 429, 500, 502, 503, 504})


@dataclass
class Answer:
    """A service's answer, read whole (small JSON documents)."""

    status: int
    body: Any
    headers: Mapping[str, str]

    @property
    def replayed(self) -> bool:
        return str(self.headers.get(REPLAYED_HEADER, "")).lower() == "true"


class StepFailedError(Exception):
    """A step failed; ``problem`` is what the client gets (with ``step``)."""

    def __init__(self, step: str, problem: Problem) -> None:
        super().__init__(f"{step}: {problem.status} {problem.detail}")
        self.step = step
        self.problem = problem


class GenerationUndoneError(Exception):
    """A replayed creation's entity is gone: an earlier attempt with these keys was undone."""


def step_problem(step: str, answer: Answer) -> StepFailedError:
    """The service's problem, as it said it, with the step named."""
    if answer.status < 400:
        return StepFailedError(step, Problem(502, f"The {step} step got an invalid answer from its service.",
                                             step=step))
    body = answer.body if isinstance(answer.body, dict) else {}
    errors = body.get("errors")
    headers = {"Retry-After": answer.headers["Retry-After"]} if "Retry-After" in answer.headers else None
    problem = Problem(answer.status, str(body.get("detail") or f"The {step} step failed ({answer.status})."),
                      title=body.get("title") if isinstance(body.get("title"), str) else None,
                      type_=body.get("type") if isinstance(body.get("type"), str) else None,
                      errors=errors if isinstance(errors, list) and all(isinstance(e, dict) for e in errors) else None,
                      headers=headers)
    problem.extra.update({k: v for k, v in body.items()
                          if k not in ("type", "title", "status", "detail", "instance", "errors")})
    problem.extra["step"] = step
    return StepFailedError(step, problem)


class Services:
    """The services as the caller sees them: their answers to the caller's own headers."""

    def __init__(self, upstreams: Mapping[str, Upstream], consistency: Consistency) -> None:
        self.upstreams = upstreams
        self.consistency = consistency
        self.token = consistency.request_token()  # plus every step's write, as the steps go
        self.headers = {"Accept": "application/json",
                        correlation.HEADER: correlation.get() or correlation.new_id()}
        for name in ("Authorization", "Accept-Language"):
            if name in request.headers:
                self.headers[name] = request.headers[name]

    def send(self, step: str, service: str, method: str, path: str, *, body: Any = None, query: str = "",
             key: str | None = None) -> Answer:
        """One request; a service that cannot answer fails the step (503/504/502)."""
        upstream = self.upstreams[service]
        headers = dict(self.headers)
        payload = b""
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if key is not None:
            headers[IDEMPOTENCY_HEADER] = key
        try:
            resp = self.consistency.send(
                service, method, path, query=query, headers=headers, replayable=True, token=self.token,
                body=lambda: SizedRequestBody(io.BytesIO(payload), len(payload)) if payload else None)
        except Problem as problem:  # not as fresh as the steps before it within the wait
            raise StepFailedError(step, Problem(problem.status, problem.detail, headers=problem.headers,
                                                step=step)) from None
        except UpstreamError as exc:
            failure = exc.problem(upstream.read_timeout)
            detail = failure.detail
            if exc.kind == TIMEOUT and method == "POST":
                detail += f" The {step} may have been created all the same; if so, it was not undone."
            raise StepFailedError(step, Problem(failure.status, detail, headers=failure.headers, step=step)) from None
        try:
            try:
                data = resp.json()
            except ValueError:
                data = None
            if 200 <= resp.status_code < 300 and method != "GET":
                self.token = self.consistency.written(self.token, service, resp.headers)
            if step == "record" and 200 <= resp.status_code < 300:  # its stage's name is localised
                note_language(resp.headers.get("Content-Language"))  # the wizard's answer says so
            return Answer(resp.status_code, data, resp.headers)
        finally:
            resp.close()

    def read(self, step: str, service: str, path: str) -> dict[str, Any]:
        answer = self.send(step, service, "GET", path)
        if answer.status != 200 or not isinstance(answer.body, dict):
            raise step_problem(step, answer)
        return answer.body

    def main_role(self, kind: str) -> str:
        """The id of the kind's active MAIN role (the record's main contact)."""
        token: str | None = None
        while True:
            params = {"active": "true", "page_size": "200", **({"page_token": token} if token else {})}
            answer = self.send("link", "catalogue", "GET", f"/v1/{kind}-tables/roles", query=urlencode(params))
            if answer.status != 200 or not isinstance(answer.body, dict):
                raise step_problem("link", answer)
            for role in answer.body.get("items") or []:
                if role.get("code") == MAIN_ROLE:
                    return str(role["id"])
            token = answer.body.get("next_page_token")
            if not token:
                raise StepFailedError("link", Problem(
                    409, f"There is no active {kind} role with code {MAIN_ROLE}: the wizard links the contact "
                         "as the record's main contact.", step="link"))

    def gone(self, step: str, service: str, path: str) -> bool:
        """True when ``path`` answers 404; anything else counts as still there."""
        return self.send(step, service, "GET", path).status in (404, 410)

    def delete(self, service: str, path: str) -> bool:
        """Delete ``path``, tried DELETE_ATTEMPTS times; True when it is gone."""
        for attempt in range(DELETE_ATTEMPTS):
            try:
                status = self.send("undo", service, "DELETE", path).status
            except StepFailedError:
                status = 503
            if status in (200, 204, 404):
                return True
            if status not in _RETRY_DELETE:
                break
            if attempt + 1 < DELETE_ATTEMPTS:
                time.sleep(0.2 * 2 ** attempt)
        return False

