"""The console behind the gateway's own address (``CRM_CONSOLE_URL``; `make run`).

Every path that is not the API's (``/v1``) nor the gateway's own (``/openapi.json``,
``/docs``, health, readiness, metrics) goes to the console as the browser sent it, cookies
and forms included, and comes back as the console answered, its own security headers and
cookies included. The console is a web application, so unlike ``/v1`` nothing here is
checked as an API request: the console checks its own sessions, CSRF tokens and limits.

In Kubernetes the ingress routes ``/`` to the console and this stays off.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, g, request
from werkzeug.datastructures import Headers
from werkzeug.routing import Map

from crm_gateway.proxy import ClientBodyError, Upstream, UpstreamError, request_body, upstream_path
from crm_kit import correlation
from crm_kit.web.api import Route
from crm_kit.web.problem import Problem

# Hop-by-hop headers (RFC 9110 7.6.1) and those the gateway sets itself stay on this side.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                         "transfer-encoding", "upgrade", "host", "content-length"})
ANY_BODY = "*/*"  # the kit's edge: this route takes bodies of any type (forms, uploads)


def _request_headers() -> dict[str, str]:
    # The client's own X-Forwarded-* never pass: the console trusts one proxy (this one) for them.
    headers = {name: value for name, value in request.headers.items()
               if name.lower() not in _HOP_BY_HOP and not name.lower().startswith("x-forwarded-")}
    headers["Host"] = request.host  # the console builds its absolute URLs (OpenID redirects) from it
    headers["X-Forwarded-Host"] = request.host
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-For"] = request.remote_addr or ""
    headers[correlation.HEADER] = correlation.get() or correlation.new_id()
    return headers


# The rules that pass requests on (to a service, or to the console): every other rule of the
# gateway's url map is one of its own resources.
FORWARDING_ENDPOINTS = frozenset({"gateway_forward", "gateway_upload", "console_forward", "console_forward_path",
                                  "static"})


def gateway_own_methods(path: str) -> set[str]:
    """The methods of the gateway's own resource at ``path`` (health, readiness, metrics, the
    OpenAPI document, the docs and their assets, ``/v1/me``, the wizards), or none: such a path
    is never the console's or a service's, whatever the method."""
    own: Map | None = current_app.extensions.get("crm_gateway_own_rules")
    if own is None:
        url_map = current_app.url_map
        own = Map([rule.empty() for rule in url_map.iter_rules() if rule.endpoint not in FORWARDING_ENDPOINTS],
                  converters=dict(url_map.converters), strict_slashes=url_map.strict_slashes)
        current_app.extensions["crm_gateway_own_rules"] = own
    methods = set(own.bind("gateway").allowed_methods(path))
    return methods - {"HEAD", "OPTIONS"}


def forward_to_console(path: str = "") -> Response:
    own = gateway_own_methods(request.path)
    if own:  # e.g. PUT /docs: the gateway's resource refuses the method; the console never sees it
        allowed = own | {"OPTIONS"} | ({"HEAD"} if "GET" in own else set())
        raise Problem(405, f"{request.method} is not allowed here.",
                      headers={"Allow": ", ".join(m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
                                                             "OPTIONS") if m in allowed)})
    upstream: Upstream = current_app.extensions["crm_gateway_console"]
    g.gateway_route = "console"
    try:
        resp = upstream.request(request.method, upstream_path(), query=request.query_string,
                                headers=_request_headers(), body=request_body())
    except ClientBodyError as exc:
        raise Problem(exc.status, exc.detail) from None
    except UpstreamError as exc:
        raise exc.problem(upstream.read_timeout) from None
    headers = Headers()
    for name, value in resp.raw.headers.iteritems():
        if name.lower() not in _HOP_BY_HOP:
            headers.add(name, value)
    body = resp.raw.stream(64 * 1024, decode_content=False)
    out = Response(body, status=resp.status_code, headers=headers, direct_passthrough=True)
    out.call_on_close(resp.close)
    if "Content-Type" not in headers:
        del out.headers["Content-Type"]
    return out


def install_console(app: Flask, console_url: str, *, max_body: int, connect_timeout: float,
                    read_timeout: float) -> None:
    """Forward every path the gateway does not serve itself to the console at ``console_url``."""
    if not console_url:
        return
    app.extensions["crm_gateway_console"] = Upstream("console", console_url, connect_timeout=connect_timeout,
                                                     read_timeout=read_timeout, retries=0)
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    for rule in ("/", "/<anypath:path>"):
        app.add_url_rule(rule, "console_forward" if rule == "/" else "console_forward_path", forward_to_console,
                         methods=methods)
    declared = Route(method="POST", rule="/<anypath:path>", handler=forward_to_console, accepts=ANY_BODY,
                     max_body=max_body)
    for endpoint in ("console_forward", "console_forward_path"):
        app.view_functions[endpoint].crm_route = declared  # type: ignore[union-attr]  # read by the kit's edge
