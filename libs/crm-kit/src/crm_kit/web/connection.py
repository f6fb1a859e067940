"""Keeping the client's connection usable when a request body is refused unread.

A 413 (or a 401, 415, ... answered before the body was read) leaves the client's body on
the socket. A client like ``requests`` sends its whole body before it reads the answer, and
gunicorn only drains 64 KiB of an unread body before it closes the connection - with the
rest of the body unread, which resets it: the client sees "connection aborted" instead of
the 413, or its next request on that keep-alive connection fails.

So after every response the kit reads and discards what is left of the body
(``drain_request_body``), up to ``DRAIN_MAX_BYTES`` and ``DRAIN_SECONDS``: the connection
then stays open and the client's next request works. A body beyond that is not drained;
the answer then says ``Connection: close`` (``close_connection``: gunicorn's own request is
told to close, through the ``pre_request`` hook of ``crm_kit.web.gunicorn_conf``). (gunicorn
answers ``Expect: 100-continue`` itself before the application runs, so such a client sends
its body too, and it is drained the same way.)
"""

from __future__ import annotations

import io
import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

DRAIN_MAX_BYTES = 32 * 1024 * 1024
DRAIN_SECONDS = 10.0  # in all
DRAIN_IDLE_SECONDS = 1.0  # without a byte: the client waits for the answer first, or has gone
_CHUNK = 64 * 1024

_served = threading.local()


def serving(server_request: Any) -> None:
    """gunicorn's ``pre_request``: remember the request the current thread serves."""
    _served.request = server_request


def served() -> None:
    """gunicorn's ``post_request``."""
    _served.request = None


def close_connection() -> bool:
    """Have the server close the connection after this response (``Connection: close``).

    False when the server gives no way to (not gunicorn): it then decides itself.
    """
    server_request = getattr(_served, "request", None)
    force_close = getattr(server_request, "force_close", None)
    if force_close is None:
        return False
    force_close()
    return True


def _has_body(environ: dict[str, Any]) -> bool:
    length = environ.get("CONTENT_LENGTH") or ""
    chunked = "chunked" in (environ.get("HTTP_TRANSFER_ENCODING") or "").lower()
    return chunked or (length.strip() not in ("", "0"))


def _bounded(environ: dict[str, Any]) -> bool:
    """Whether reading ``wsgi.input`` to its end stops at the end of this request's body.

    gunicorn's input knows the body's framing; a test client's is the body itself. Another
    server's may be the raw socket, where reading on would wait for the next request.
    """
    stream = environ.get("wsgi.input")
    return "gunicorn.socket" in environ or bool(environ.get("wsgi.input_terminated")) or isinstance(
        stream, io.BytesIO)


def drain_request_body(environ: dict[str, Any]) -> bool:
    """Read and discard the rest of the request body; True when all of it is gone."""
    if not _has_body(environ):
        return True
    stream = environ.get("wsgi.input")
    if stream is None or not _bounded(environ):
        return False
    sock = environ.get("gunicorn.socket")
    prior_timeout = sock.gettimeout() if sock is not None else None
    deadline = time.monotonic() + DRAIN_SECONDS
    drained = 0
    try:
        while drained <= DRAIN_MAX_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if sock is not None:
                sock.settimeout(min(remaining, DRAIN_IDLE_SECONDS))
            chunk = stream.read(_CHUNK)
            if not chunk:
                return True
            drained += len(chunk)
        return False
    except Exception as exc:  # noqa: BLE001 - a broken or slow client: the connection closes instead
        log.debug("request body not drained: %r", exc)
        return False
    finally:
        if sock is not None:
            try:
                sock.settimeout(prior_timeout)
            except OSError:
                pass


def finish_connection(environ: dict[str, Any]) -> None:
    """After a response: drain what the application left of the body, or close the connection."""
    if not drain_request_body(environ) and _has_body(environ):
        close_connection()
