"""The gateway's own metrics, next to the kit's per-route ``crm_http_*`` ones.

Upstream calls are counted per attempt (a retried request counts each try); ``status`` is
the upstream's HTTP status, or ``connect_error`` / ``timeout`` / ``bad_response`` when no
usable answer came back.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from crm_kit.metrics import LATENCY_BUCKETS

UPSTREAM_REQUESTS = Counter(
    "crm_gateway_upstream_requests_total", "Requests the gateway sent to a service, by result.",
    ["service", "status"],
)
UPSTREAM_DURATION = Histogram(
    "crm_gateway_upstream_request_duration_seconds",
    "Time from sending a request to a service until its response headers arrived (or the call failed).",
    ["service"], buckets=LATENCY_BUCKETS,
)
UPSTREAM_RETRIES = Counter(
    "crm_gateway_upstream_retries_total", "Idempotent requests tried again after the connection failed.",
    ["service"],
)
CONSISTENCY_RESOLUTIONS = Counter(
    "crm_gateway_consistency_resolutions_total",
    "Outbox positions turned into Kafka offsets for consistency tokens, by how (cached: remembered; asked: a "
    "token's position asked of its service; latest: every committed row, for a request without a token).",
    ["service", "how"],
)
CONSISTENCY_REPAIRS = Counter(
    "crm_gateway_consistency_repairs_total",
    "404/409/422 answers asked again after waiting for every committed change (a copy may have lagged).",
    ["service"],
)
CONSISTENCY_UNAVAILABLE = Counter(
    "crm_gateway_consistency_unavailable_total",
    "503 answers because a service could not be shown as fresh as the client's token within the wait.",
)
