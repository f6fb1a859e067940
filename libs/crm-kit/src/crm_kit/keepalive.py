"""A pooled HTTP client whose idle connections are retired before the server would close them.

A keep-alive connection the server closes for idleness (gunicorn's ``keepalive``: 5 seconds
here) can be taken from the pool in the very moment the server closes it: the request goes out
on a socket being shut, and the answer is a dropped connection. An idempotent request may be
sent again; a POST or a PATCH may not (the client cannot know whether it was applied), so the
caller would see a 502 or a 503 for a request the service never saw. It happened under load
(the bench's stage changes after a 5-second pause) and it would happen to a person who saves a
form after a pause.

urllib3 only drops a pooled connection once the server's close has arrived. Here a connection
idle for ``idle_seconds`` (well below the server's keep-alive) counts as dropped too, so it is
closed and a fresh one opened instead: the race cannot start. Idleness is counted from the
moment the last response's head arrived, which is never later than the server's own count
(from when it finished sending).
"""

from __future__ import annotations

import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

# Below every keep-alive timeout of ours (gunicorn's keepalive, crm_kit.web.gunicorn_conf: 5 s),
# with room for a busy machine's scheduling between the pool's check and the server's read.
IDLE_SECONDS = 2.0


class _Retiring:
    """Mixed into urllib3's connections: ``is_connected`` is false once idle too long."""

    idle_seconds = IDLE_SECONDS
    _answered_at: float | None = None

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().getresponse(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._answered_at = time.monotonic()

    @property
    def is_connected(self) -> bool:
        answered = self._answered_at
        if answered is not None and time.monotonic() - answered >= self.idle_seconds:
            return False
        return super().is_connected  # type: ignore[misc, no-any-return]


class _RetiringAdapter(HTTPAdapter):
    def __init__(self, idle_seconds: float, **kwargs: Any) -> None:
        self._idle_seconds = idle_seconds
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        attributes = {"idle_seconds": self._idle_seconds}
        http = type("RetiringHTTPConnection", (_Retiring, HTTPConnection), attributes)
        https = type("RetiringHTTPSConnection", (_Retiring, HTTPSConnection), attributes)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("RetiringHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("RetiringHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }


def pooled_session(*, pool_size: int, idle_seconds: float = IDLE_SECONDS, **adapter: Any) -> requests.Session:
    """A ``requests.Session`` with one pool of up to ``pool_size`` connections per host, retired when idle."""
    session = requests.Session()
    mounted = _RetiringAdapter(idle_seconds, pool_connections=pool_size, pool_maxsize=pool_size, **adapter)
    session.mount("http://", mounted)
    session.mount("https://", mounted)
    return session
