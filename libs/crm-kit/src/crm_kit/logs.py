"""JSON logs (one object a line) carrying the service name and the correlation id."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from crm_kit import correlation


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.correlation_id = correlation.get()
        return True


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Route every logger to stderr in the chosen format; idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(correlation_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(service)s %(name)s [%(correlation_id)s] %(message)s")
        )
    handler.addFilter(_ContextFilter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_crm_kit", False):
            root.removeHandler(old)
    handler._crm_kit = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # librdkafka and werkzeug are chatty at INFO; their warnings still come through.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
