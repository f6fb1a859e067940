"""Fixtures: fake services on real sockets and gateways pointed at them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gateway_helpers import ClosedPort, Echo, ServerThread, gateway_settings

from crm_gateway.app import create_app


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo("leads")
    yield server
    server.close()


@pytest.fixture
def closed_port() -> Iterator[ClosedPort]:
    port = ClosedPort()
    yield port
    port.close()


@pytest.fixture
def make_gateway() -> Iterator[Callable[..., Any]]:
    """``make_gateway(urls, routes=None, **env)`` -> the gateway's Flask app (every service at
    ``urls``; ``routes``: another route table than the committed one)."""
    apps: list[Any] = []

    def make(urls: dict[str, str] | str, routes: Any = None, **env: str) -> Any:
        settings = gateway_settings(urls, **env)
        app = create_app(settings) if routes is None else create_app(settings, routes)
        apps.append(app)
        return app

    yield make
    for app in apps:
        state = app.extensions["crm_gateway"]
        state.executor.shutdown(wait=False, cancel_futures=True)
        for upstream in state.upstreams.values():
            upstream.close()


@pytest.fixture
def client(make_gateway: Callable[..., Any], echo: Echo) -> Any:
    """A test client of a gateway whose services are all the echo server."""
    return make_gateway(echo.url).test_client()


@pytest.fixture
def serve() -> Iterator[Callable[[Any], ServerThread]]:
    """``serve(app)`` -> the app on a real socket (closed after the test)."""
    servers: list[ServerThread] = []

    def start(app: Any) -> ServerThread:
        server = ServerThread(app)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
