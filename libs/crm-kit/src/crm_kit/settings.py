"""Settings from environment variables only.

Every variable the platform reads is declared once in ``SETTINGS`` below; the README's
configuration table is generated from it (``make config-table``, a development tool), so the two
cannot drift. Required variables that are missing make the process fail at start with
one message naming all of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigError(RuntimeError):
    """Raised at start-up when the environment does not describe a runnable service."""


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, parser, default and who reads it."""

    env: str
    description: str
    default: str | None = None
    # "domain" (every service with a database), "gateway", "console", "all", or a service's name
    required_for: tuple[str, ...] = ()
    parse: Callable[[str], Any] = str
    secret: bool = False


def _bool(value: str) -> bool:
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _json_object(value: str) -> dict[str, Any]:
    parsed = json.loads(value)
    if not isinstance(parsed, dict):
        raise ValueError("must be a JSON object")
    return parsed


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


SERVICES = ("catalogue", "leads", "opportunities", "linking", "triggers", "webhooks")
# CRM_MAX_UPLOAD_BYTES limits an attachment's file; its multipart body may add this much
# around it (boundaries, part headers, the `type` field), at the gateway and in the services.
MULTIPART_OVERHEAD = 64 * 1024
# The largest CSV the console takes to import (its rows go on to the API in chunks); the gateway,
# which forwards the console's requests under `make run`, lets a body this large through.
MAX_IMPORT_FILE_BYTES = 50 * 1024 * 1024

SETTINGS: tuple[Setting, ...] = (
    Setting("CRM_SERVICE_NAME", "Which service this process is (set by `crm-service <name>`).", None, ("all",)),
    Setting("CRM_DATABASE_URL", "SQLAlchemy URL of the service's own database "
            "(`postgresql+psycopg://...`; `make run` uses `sqlite:///.run/db/<service>.sqlite3`).", None, ("domain",)),
    Setting("CRM_KAFKA_BOOTSTRAP", "Kafka bootstrap servers (`host:port,...`).", None, ("domain",)),
    Setting("CRM_KAFKA_EXTRA", "Extra librdkafka settings as a JSON object (e.g. SASL/TLS), merged into every client.",
            "{}", parse=_json_object),
    Setting("CRM_JWT_SECRET", "HS256 secret that signs and verifies bearer tokens. `make run` uses the dev default "
            "`dev-only-insecure-secret-change-me`.", None, ("all",), secret=True),
    Setting("CRM_JWT_PUBLIC_KEY", "Optional PEM public key: RS256 tokens are accepted too when set.", "", secret=False),
    Setting("CRM_JWT_JWKS_URL", "Optional URL of the identity provider's JWKS (its `jwks_uri`): RS256 tokens are "
            "verified with the key their `kid` names, so keys may rotate (cached 5 minutes).", ""),
    Setting("CRM_JWT_AUDIENCE", "Optional `aud` the identity provider's (RS256) tokens must carry; the platform's "
            "own HS256 tokens carry none.", ""),
    Setting("CRM_JWT_ISSUER", "Optional `iss` the identity provider's (RS256) tokens must carry.", ""),
    Setting("CRM_ROLE_PERMISSIONS", "Role -> permissions map as a JSON object; replaces the default map "
            "(admin, marketing, account_manager, viewer).", "", parse=lambda v: _json_object(v) if v else {}),
    Setting("CRM_MAX_BODY_BYTES", "Largest JSON request body accepted (bytes); larger gets 413.", str(1024 * 1024),
            parse=int),
    Setting("CRM_MAX_UPLOAD_BYTES", "Largest attachment upload accepted (bytes).", str(20 * 1024 * 1024), parse=int),
    Setting("CRM_ATTACHMENTS_STORE", "Leads/opportunities: where attachments go, `local` (a directory) or `s3` "
            "(S3-compatible; needs boto3 installed, else the api fails at start).", "local"),
    Setting("CRM_ATTACHMENTS_DIR", "The local store's directory (created at start).",
            ".run/attachments/<service>"),
    Setting("CRM_ATTACHMENTS_S3_BUCKET", "The bucket for `s3` (objects are `<service>/<key>`).", ""),
    Setting("CRM_ATTACHMENTS_S3_ENDPOINT", "URL of an S3-compatible store (e.g. MinIO); empty: AWS. Credentials "
            "from boto3's usual sources.", ""),
    Setting("CRM_DEFAULT_LANGUAGE", "Language used for `name` when `Accept-Language` matches none.", "en"),
    Setting("CRM_LANGUAGES", "Languages (comma-separated tags) that `names` may be given in; a name in any "
            "other language is refused (422).", "en,nl", parse=_csv),
    Setting("CRM_LOG_LEVEL", "Python log level.", "INFO"),
    Setting("CRM_LOG_FORMAT", "`json` (one JSON object a line, with correlation_id) or `text`.", "json"),
    Setting("CRM_WEB_CONCURRENCY", "gunicorn worker processes of the api.", "2", parse=int),
    Setting("CRM_WEB_THREADS", "Threads per gunicorn worker process (gthread).", "4", parse=int),
    Setting("CRM_WORKER_PORT", "Port of the worker's own /healthz, /readyz and /metrics (0: none).", "0", parse=int),
    Setting("CRM_OUTBOX_POLL_INTERVAL", "Seconds between outbox polls when no wake-up arrives. PostgreSQL wakes the "
            "relay on commit (LISTEN/NOTIFY), so this is only the fallback; SQLite relies on it.", "0.05",
            parse=float),
    Setting("CRM_OUTBOX_BATCH", "Most outbox rows the relay publishes in one batch.", "500", parse=int),
    Setting("CRM_CONSUMER_MAX_ATTEMPTS", "Attempts at one event before it goes to `<topic>.dlq`.", "4", parse=int),
    Setting("CRM_CONSUMER_BACKOFF", "First retry delay in seconds (doubles each attempt).", "0.2", parse=float),
    Setting("CRM_TOPIC_PARTITIONS", "Partitions for topics created at start (main topics; DLQs get 1).", "3",
            parse=int),
    Setting("CRM_TOPIC_REPLICATION", "Replication factor for topics created at start.", "1", parse=int),
    Setting("CRM_IDEMPOTENCY_TTL", "Seconds an `Idempotency-Key` is remembered.", str(24 * 3600), parse=int),
    Setting("CRM_CONSISTENCY_WAIT", "Seconds a request waits for read models to be as fresh as its consistency "
            "token (or, without one, as the latest writes) before 503 with `Retry-After`.", "5", parse=float),
    Setting("CRM_CATALOGUE_SEED", "Catalogue: `migrate` loads the starter configuration (stages, stage groups, "
            "priorities, sources; English and Dutch) once, on a database where it never ran. The protected "
            "MAIN and SIGN roles are loaded either way.", "true", parse=_bool),
    Setting("CRM_WEBHOOK_SECRETS_KEY", "Webhooks: the Fernet keys (comma-separated; the first encrypts, all decrypt, "
            "so the key can be rotated) that encrypt the endpoints' signing secrets at rest. Required by the "
            "webhooks service; `make run` uses a development key.", None, ("webhooks",), secret=True, parse=_csv),
    Setting("CRM_WEBHOOK_ALLOW_LOOPBACK", "Webhooks: also allow `http://` targets on the loopback address "
            "(`make run` and tests; never in production, where targets must be `https` on public addresses).",
            "false", parse=_bool),
    Setting("CRM_WEBHOOK_TIMEOUT", "Webhooks: seconds an endpoint has to answer a delivery (2xx) before the "
            "attempt counts as failed.", "10", parse=float),
    Setting("CRM_WEBHOOK_CONCURRENCY", "Webhooks: deliveries in flight at once to one endpoint.", "4", parse=int),
    Setting("CRM_WEBHOOK_RETRY_DAYS", "Webhooks: days an endpoint may fail every attempt before it is disabled "
            "(its events wait for it to be enabled again).", "3", parse=float),
    Setting("CRM_UPSTREAM_TIMEOUT", "Gateway: seconds to wait for a service before 504.", "10", parse=float),
    Setting("CRM_UPSTREAM_CONNECT_TIMEOUT", "Gateway: seconds to connect to a service before 503.", "2",
            parse=float),
    Setting("CRM_UPSTREAM_RETRIES", "Gateway: retries of idempotent requests (GET, HEAD, PUT, DELETE, OPTIONS) "
            "when a service cannot be reached.", "2", parse=int),
    *(Setting(f"CRM_{name.upper()}_URL", f"Gateway: base URL of the {name} service.", None, ("gateway",))
      for name in SERVICES),
    Setting("CRM_CORS_ORIGINS", "Gateway: comma-separated origins allowed by CORS (empty: CORS off).", "",
            parse=_csv),
    Setting("CRM_RATE_LIMIT", "Gateway: requests each caller may make on `/v1` (the bearer token's subject; "
            "without a valid token, the client address), as `limits` rate strings separated by `;` "
            "(e.g. `100/second;3000/minute`). Over it: 429 with `Retry-After`. Empty or `off`: no limit.",
            "200/second;6000/minute"),
    Setting("CRM_RATE_LIMIT_STORAGE", "Gateway: where the rate-limit counters live, a `limits` storage URI. "
            "`memory://` counts in each gateway process (N processes let a caller make up to N times the limit); "
            "a shared store such as `redis://host:6379` (needs the `redis` package) makes the limit global.",
            "memory://"),
    Setting("CRM_STRICT_TRANSPORT_SECURITY", "Value of the `Strict-Transport-Security` header on every response "
            "(e.g. `max-age=31536000; includeSubDomains`); empty: not sent, since TLS ends at the ingress.", ""),
    Setting("CRM_CONSOLE_URL", "Gateway: base URL of the console; paths outside `/v1` and the gateway's own "
            "(`/openapi.json`, `/docs`, health, metrics) are forwarded there, so one host serves both (`make run`). "
            "Empty: the gateway serves only the API (an ingress routes `/` to the console).", ""),
    Setting("CRM_GATEWAY_URL", "Console: base URL of the gateway, whose `/v1` is the console's only backend.",
            None, ("console",)),
    Setting("CRM_CONSOLE_SECRET_KEY", "Console: key that signs the session cookie and the CSRF tokens "
            "(32+ random characters; the same on every console replica).", None, ("console",), secret=True),
    Setting("CRM_CONSOLE_DEV_SIGNIN", "Console: offer the development sign-in form (User, Office, Roles), which "
            "mints a token with `CRM_JWT_SECRET`. `make run` sets it; never in production.", "false", parse=_bool),
    Setting("CRM_CONSOLE_SECURE_COOKIES", "Console: mark the session cookie `Secure` (HTTPS only). Browsers also "
            "keep Secure cookies for http://127.0.0.1 and localhost.", "true", parse=_bool),
    Setting("CRM_CONSOLE_OIDC_ISSUER", "Console: the OpenID Connect provider's issuer URL (discovery at "
            "`/.well-known/openid-configuration`). Empty: no single sign-on.", ""),
    Setting("CRM_CONSOLE_OIDC_CLIENT_ID", "Console: the console's client id at the OpenID provider.", ""),
    Setting("CRM_CONSOLE_OIDC_CLIENT_SECRET", "Console: the console's client secret at the OpenID provider.", "",
            secret=True),
    Setting("CRM_CONSOLE_OIDC_SCOPE", "Console: scopes asked for at sign-in.", "openid profile"),
    Setting("CRM_CONSOLE_OIDC_RESOURCE", "Console: the API's resource indicator (RFC 8707), sent at sign-in so the "
            "provider issues an access token for the API (its `aud`). Empty: not sent.", ""),
    Setting("PROMETHEUS_MULTIPROC_DIR", "Directory for prometheus-client's multiprocess files (gunicorn); "
            "wiped at start.", ""),
)

_BY_ENV = {s.env: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """Parsed settings of one process. Look values up with ``settings["CRM_..."]`` or attributes."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, env: str) -> Any:
        return self.values[env]

    def get(self, env: str, default: Any = None) -> Any:
        return self.values.get(env, default)

    @property
    def service_name(self) -> str:
        return self.values["CRM_SERVICE_NAME"]

    @property
    def database_url(self) -> str:
        return self.values["CRM_DATABASE_URL"]

    @property
    def kafka_bootstrap(self) -> str:
        return self.values["CRM_KAFKA_BOOTSTRAP"]

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with some values replaced (tests, CLI flags)."""
        merged = dict(self.values)
        merged.update(overrides)
        return Settings(merged)


def load_settings(role: str, environ: Mapping[str, str] | None = None) -> Settings:
    """Read every declared setting from ``environ`` (default ``os.environ``).

    ``role`` is ``"domain"`` for a service with a database and Kafka, ``"gateway"`` for the
    gateway. Missing required variables and unparsable values raise ``ConfigError`` listing
    all problems at once, so a misconfigured pod fails at start, not at first request.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        raw = env.get(setting.env)
        if raw is None or (raw == "" and setting.default is None):
            if "all" in setting.required_for or role in setting.required_for \
                    or env.get("CRM_SERVICE_NAME") in setting.required_for:
                problems.append(f"{setting.env} is required: {setting.description}")
                continue
            raw = setting.default
        if raw is None:
            values[setting.env] = None
            continue
        try:
            values[setting.env] = setting.parse(raw)
        except (ValueError, TypeError) as exc:
            problems.append(f"{setting.env}={'***' if setting.secret else repr(raw)} is invalid: {exc}")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return Settings(values)
