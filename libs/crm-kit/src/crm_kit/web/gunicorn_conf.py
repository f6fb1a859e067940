"""gunicorn settings for every api process (``gunicorn -c python:crm_kit.web.gunicorn_conf``).

With several workers the app is built once, in the master, and shared with the workers it forks
(``preload_app``), each getting database pools of its own (``post_fork``).

Multiprocess metrics done right: the metrics directory is wiped when the master starts
(stale files from a previous run would be summed in) and a dead worker's live gauges are
dropped.

What gunicorn refuses itself, before any application code runs (a request line or header
over its limits: 414, 431; a request that is not HTTP: 400), it answers in the API's
problem+json too, not in HTML (``problem_error``, installed over gunicorn's ``write_error``).
And each worker thread knows the request it serves (``pre_request``), so the kit can ask for
``Connection: close`` when it cannot drain a refused body (``crm_kit.web.connection``).
"""

from __future__ import annotations

import gc
import json
import os
from typing import Any

import gunicorn.util

bind = os.environ.get("CRM_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("CRM_WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("CRM_WEB_THREADS", "4"))
worker_class = "gthread"
# With more than one worker, the app is built once, in the master, and the workers are forked from
# it: they share its memory pages (copy-on-write) instead of each importing and building the app
# (7 apis x 2 workers: 1.56 -> 1.16 GB of PSS, make run before issue 19). With one worker there is
# nothing to share: preloading would only put a second copy of the app in the master. Building an
# app opens no database connection, Kafka client or thread (each is made on first use), and
# post_fork gives each worker database pools of its own all the same.
preload_app = workers > 1
timeout = 30
graceful_timeout = 20
keepalive = 5
# Request-line and header limits: the first line of defence against abusive requests.
limit_request_line = 8190
if os.environ.get("CRM_SERVICE_NAME") == "gateway":
    # gunicorn caps a request line at 8190 bytes at most and answers a longer one in HTML:
    # the gateway takes any length and answers 414 problem+json itself (MAX_REQUEST_TARGET),
    # so what it forwards always fits the services' cap. An ingress caps lines in production.
    limit_request_line = 0
limit_request_fields = 100
limit_request_field_size = 8190
if os.environ.get("CRM_SERVICE_NAME") == "gateway":
    # The gateway answers header fields over 8190 bytes (and too many bytes of headers in all)
    # with a 431 naming the header itself (crm_gateway.app, MAX_HEADER_FIELD); gunicorn's
    # limit is above it, so only what is far beyond reaches gunicorn's own (problem+json) 431.
    limit_request_field_size = 4 * 8190
accesslog = None  # the kit logs and measures requests itself
errorlog = "-"
loglevel = os.environ.get("CRM_LOG_LEVEL", "info").lower()
# gunicorn's own lines (boot, worker timeouts) in the same JSON shape as the services' logs.
if os.environ.get("CRM_LOG_FORMAT", "json") == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "datefmt": "%Y-%m-%dT%H:%M:%S%z",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "static_fields": {"service": os.environ.get("CRM_SERVICE_NAME", "")},
        }},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": loglevel.upper()},
        "loggers": {"gunicorn.error": {"handlers": ["stderr"], "level": loglevel.upper(), "propagate": False}},
    }
proc_name = f"crm-{os.environ.get('CRM_SERVICE_NAME', 'service')}"
# gunicorn 27's control socket defaults to one path per user: several services on one
# machine (make run, tests) would fight over it, and nothing here uses it.
control_socket_disable = True


_PROBLEM_DETAILS = {
    400: "The request is not valid HTTP/1.1.",
    414: f"The request line is longer than {limit_request_line or 8190} bytes.",
    431: f"The request's header fields are too large: at most {limit_request_fields} fields of at most "
         f"{limit_request_field_size} bytes each.",
}


def problem_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own error answer (``gunicorn.util.write_error``) as RFC 9457 problem+json.

    The detail is ours, not gunicorn's message, which may echo what the client sent.
    """
    from crm_kit.web.app import SECURITY_HEADERS
    from crm_kit.web.problem import Problem

    problem = Problem(status_int, _PROBLEM_DETAILS.get(status_int, reason or "The request was refused."))
    body = json.dumps(problem.to_dict()).encode()
    head = [f"HTTP/1.1 {status_int} {problem.title}", "Connection: close",
            "Content-Type: application/problem+json", f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in SECURITY_HEADERS.items())]
    gunicorn.util.write_nonblock(sock, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


gunicorn.util.write_error = problem_error  # read by gunicorn's workers at call time


def pre_request(worker: Any, req: Any) -> None:
    from crm_kit.web.connection import serving

    serving(req)


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    from crm_kit.web.connection import served

    served()


def pre_fork(server: Any, worker: Any) -> None:
    """Keep the garbage collector's hands off what the master built: a collection in a worker walks
    (and so writes to, and copies) every page of objects it tracks; frozen objects it skips."""
    gc.freeze()


def post_fork(server: Any, worker: Any) -> None:
    """A worker's database pool is its own: what the master's pool holds (nothing, unless a future
    app build connects) stays the master's - dropped here without closing it under the master."""
    app = getattr(server.app, "callable", None)
    database = getattr(app, "extensions", {}).get("crm_database")
    if database is not None:
        database.engine.dispose(close=False)


def on_starting(server: Any) -> None:
    # After a preload (gunicorn builds the app first): the files the master's imports made go too;
    # the master serves nothing, and each worker writes files of its own (prometheus-client sees
    # the new pid).
    from crm_kit.metrics import fresh_multiprocess_directory

    fresh_multiprocess_directory()


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
