"""Rate limiting of ``/v1`` per caller, with the ``limits`` package (the engine behind Flask-Limiter).

The caller is the verified bearer token's subject; a request without a token that verifies
is counted against the client's address instead (behind an ingress that is the ingress's
address, so every anonymous caller shares one budget - they only ever get 401s anyway).
Over the limit the gateway answers 429 problem+json itself, with ``Retry-After`` (whole
seconds until the window lets a request through again, at least 1) and the
``RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` headers of the limit that was hit;
nothing is sent to a service.

The check runs after the kit's edge rules (so a 429 carries the request id and is counted
per route like any answer): requests those rules refuse (415, 413, answered without
reading the body) and CORS preflights are not counted.

Counting uses the sliding window counter strategy: constant memory per caller and limit,
and no burst of twice the limit at a window's edge. ``CRM_RATE_LIMIT_STORAGE`` says where
the counters live: ``memory://`` counts per gateway process (with N processes a caller may
make up to N times the limit), a shared store such as ``redis://`` makes the limit global.
When that store fails, requests are let through (and counted in
``crm_gateway_rate_limit_errors_total``): the limiter protects the platform, it must not
take it down.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from flask import Flask, current_app, request
from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError, StorageError
from limits.storage import Storage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter
from prometheus_client import Counter

from crm_kit.settings import ConfigError, Settings
from crm_kit.web import Problem

log = logging.getLogger(__name__)

OFF = frozenset({"", "off", "none"})
NAMESPACE = "crm-gateway"
ERROR_LOG_INTERVAL = 60.0  # seconds between two log lines about a failing store
CALLER_KINDS = ("token", "address")

REJECTED = Counter(
    "crm_gateway_rate_limited_total", "Requests the gateway refused with 429, by how the caller was identified "
    "(token: the verified token's subject; address: the client address).", ["caller"],
)
STORE_ERRORS = Counter(
    "crm_gateway_rate_limit_errors_total", "Requests let through unchecked because the rate-limit store failed.",
)
for _kind in CALLER_KINDS:  # known series start at zero
    REJECTED.labels(_kind)


def parse_rate_limit(value: str | None) -> list[RateLimitItem]:
    """``CRM_RATE_LIMIT`` as limits (``100/second;3000/minute``); empty or ``off``: none.

    Raises ``ConfigError`` for anything else that is not a limits rate string.
    """
    text = (value or "").strip()
    if text.lower() in OFF:
        return []
    try:
        return parse_many(text)
    except ValueError:
        raise ConfigError(f"CRM_RATE_LIMIT={text!r} is invalid: expected rates such as "
                          "'100/second;3000/minute', or 'off'") from None


def open_storage(uri: str) -> Storage:
    """The counters' store for ``CRM_RATE_LIMIT_STORAGE``; ``ConfigError`` when it cannot be used."""
    try:
        storage = storage_from_string(uri, wrap_exceptions=True)
    except ConfigurationError as exc:
        raise ConfigError(f"CRM_RATE_LIMIT_STORAGE={uri!r} is invalid: {exc}") from None
    if not isinstance(storage, Storage):  # an async+... scheme: the gateway is synchronous
        raise ConfigError(f"CRM_RATE_LIMIT_STORAGE={uri!r} is invalid: the gateway needs a synchronous store")
    return storage


@dataclass(frozen=True)
class Rejection:
    """A request over the limit: the limit it hit and when to come back."""

    limit: RateLimitItem
    retry_after: int  # whole seconds, at least 1

    def problem(self) -> Problem:
        seconds = "second" if self.retry_after == 1 else "seconds"
        return Problem(
            429,
            f"Too many requests: this caller may make {self.limit.amount} per "
            f"{_window(self.limit)}. Retry after {self.retry_after} {seconds}.",
            headers={
                "Retry-After": str(self.retry_after),
                "RateLimit-Limit": str(self.limit.amount),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(self.retry_after),
            },
        )


def _window(item: RateLimitItem) -> str:
    name = item.GRANULARITY.name
    return name if item.multiples == 1 else f"{item.multiples} {name}s"


class RateLimiter:
    """The configured limits, counted per caller in one store."""

    def __init__(self, limits: list[RateLimitItem], storage: Storage) -> None:
        if not limits:
            raise ValueError("no limits: leave the rate limiter out instead")
        self.limits = limits
        self.storage = storage
        self.strategy = SlidingWindowCounterRateLimiter(storage)
        self._store_errors: tuple[type[Exception], ...] = (StorageError, *_as_tuple(storage.base_exceptions))
        self._last_error_log = -math.inf
        self._log_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter | None:
        """The limiter ``CRM_RATE_LIMIT`` describes, or None when rate limiting is off."""
        limits = parse_rate_limit(settings.get("CRM_RATE_LIMIT"))
        if not limits:
            return None
        return cls(limits, open_storage(settings.get("CRM_RATE_LIMIT_STORAGE") or "memory://"))

    def hit(self, caller_kind: str, caller: str) -> Rejection | None:
        """Count one request of ``caller``; a ``Rejection`` when it is over any limit."""
        identifiers = (NAMESPACE, caller_kind, caller)
        try:
            for limit in self.limits:
                if not self.strategy.hit(limit, *identifiers):
                    return self._rejection(limit, identifiers)
        except self._store_errors as exc:
            STORE_ERRORS.inc()
            self._log_store_error(exc)
        return None

    def _rejection(self, hit_limit: RateLimitItem, identifiers: tuple[str, ...]) -> Rejection:
        # Every exhausted limit counts: a caller told to retry after the per-second window
        # must not meet the per-minute one straight away. On a tie the longer window is named.
        now = time.time()
        exhausted: list[Rejection] = []
        for limit in self.limits:
            stats = self.strategy.get_window_stats(limit, *identifiers)
            if limit is hit_limit or stats.remaining <= 0:
                exhausted.append(Rejection(limit, max(1, math.ceil(stats.reset_time - now))))
        return max(exhausted, key=lambda r: (r.retry_after, r.limit.get_expiry()))

    def _log_store_error(self, exc: BaseException) -> None:
        with self._log_lock:
            now = time.monotonic()
            if now - self._last_error_log < ERROR_LOG_INTERVAL:
                return
            self._last_error_log = now
        log.warning("the rate-limit store failed, requests pass unchecked until it is back: %s",
                    type(exc).__name__)


def _as_tuple(errors: type[Exception] | tuple[type[Exception], ...]) -> tuple[type[Exception], ...]:
    return errors if isinstance(errors, tuple) else (errors,)


def caller_of_request() -> tuple[str, str]:
    """(kind, key): the verified token's subject, else the client's address."""
    header = request.headers.get("Authorization")
    if header:
        try:
            identity = current_app.extensions["crm"].verifier.identity_from_header(header)
        except Problem:
            pass  # not a valid token: the forward answers 401; count it by address
        else:
            return "token", identity.user_id
    return "address", request.remote_addr or "unknown"


def _is_api_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def install_rate_limit(app: Flask, settings: Settings) -> RateLimiter | None:
    """Limit every ``/v1`` request per caller as ``CRM_RATE_LIMIT`` says (nothing when it is off).

    Install after the kit's edge rules and CORS, so those run first (see the module's docstring).
    """
    limiter = RateLimiter.from_settings(settings)
    if limiter is None:
        log.info("rate limiting is off (CRM_RATE_LIMIT)")
        return None
    app.extensions["crm_gateway_rate_limiter"] = limiter

    @app.before_request
    def _rate_limit() -> None:
        if not _is_api_path(request.path):
            return
        kind, caller = caller_of_request()
        rejection = limiter.hit(kind, caller)
        if rejection is not None:
            REJECTED.labels(kind).inc()
            raise rejection.problem()

    return limiter
