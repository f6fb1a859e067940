"""gunicorn settings for every api process (``gunicorn -c python:crm_kit.gunicorn_conf``).

Multiprocess metrics done right: the metrics directory is wiped when the master starts
(stale files from a previous run would be summed in) and a dead worker's live gauges are
dropped.
"""

from __future__ import annotations

import os
from typing import Any

bind = os.environ.get("CRM_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("CRM_WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("CRM_WEB_THREADS", "4"))
worker_class = "gthread"
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


def on_starting(server: Any) -> None:
    from crm_kit.metrics import fresh_multiprocess_directory

    fresh_multiprocess_directory()


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
