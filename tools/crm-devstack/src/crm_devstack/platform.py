"""The whole platform on PostgreSQL and a given Kafka broker: every service's api and worker
and the gateway, on free ports. Used by the e2e ``platform`` fixture, ``make bench`` and
``make chaos``.

``start_platform`` creates one database per service (``<db_prefix>_<service>``), runs the
migrations, starts the processes and waits for the gateway's ``/readyz``; ``Platform.stop``
stops them. Each process is a named member of a ``ProcessGroup`` (``<service>-api``,
``<service>-worker``, ``gateway-api``), so a caller can kill and restart one of them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from crm_devstack.errors import DevstackError
from crm_devstack.kafka import KafkaBroker
from crm_devstack.ports import free_port
from crm_devstack.postgres import PostgresCluster
from crm_devstack.stack import ALL_SERVICES, CONSOLE, GATEWAY, SERVICES, StackConfig, make_token, service_env
from crm_devstack.supervisor import ProcessGroup, wait_http_ok

JWT_SECRET = "platform-secret-long-enough-for-hs256-signatures"  # noqa: S105 - local test platforms only


class Platform:
    """Every service (api + worker) on PostgreSQL and the broker, plus the gateway."""

    def __init__(self, config: StackConfig, db_urls: dict[str, str], processes: ProcessGroup,
                 env: Mapping[str, str]) -> None:
        self.config = config
        self.db_urls = db_urls
        self.processes = processes
        self.extra_env = dict(env)

    @property
    def gateway_url(self) -> str:
        return self.config.api_url(GATEWAY)

    @property
    def console_url(self) -> str:
        """The console as people reach it: through the gateway's address (it forwards there)."""
        return self.config.api_url(GATEWAY)

    def api_url(self, service: str) -> str:
        return self.config.api_url(service)

    def worker_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.config.worker_ports[service]}"

    def token(self, roles: tuple[str, ...] = ("admin",), user: str = "e2e-user", office: str = "office-1") -> str:
        return make_token(self.config.jwt_secret, user=user, name=f"E2E {user}", office=office, roles=roles)

    def auth(self, roles: tuple[str, ...] = ("admin",), **kw: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(roles, **kw)}"}

    def env_for(self, name: str, role: str) -> dict[str, str]:
        """The environment of ``name``'s ``role`` process (api, worker or migrate)."""
        env = service_env(self.config, name, role)
        if name in self.db_urls:
            env["CRM_DATABASE_URL"] = self.db_urls[name]
        env.update(self.extra_env)
        return env

    def add_process(self, name: str, role: str, extra_env: Mapping[str, str] | None = None) -> None:
        """Start (again) ``name``'s ``role`` process as ``<name>-<role>`` in the group.

        A process that exists already is stopped and started with this environment (its own
        plus ``extra_env``): ``add_process(name, role)`` again drops an earlier ``extra_env``.
        """
        bin_ = str(self.config.service_bin)
        argv = [bin_, name, role]
        if role == "api":
            argv += ["--bind", f"127.0.0.1:{self.config.api_ports[name]}"]
        env = {**self.env_for(name, role), **(extra_env or {})}
        if f"{name}-{role}" in self.processes.names():
            self.processes.restart(f"{name}-{role}", env=env)
            return
        self.processes.add(f"{name}-{role}", argv, env, self.config.log_path(f"{name}-{role}"))

    def stop(self, *, keep_logs: bool = False) -> None:
        self.processes.stop_all()
        if not keep_logs:
            shutil.rmtree(self.config.root, ignore_errors=True)


def start_platform(kafka: KafkaBroker, postgres: PostgresCluster, *, db_prefix: str = "e2e",
                   env: Mapping[str, str] | None = None, ready_timeout: float = 120) -> Platform:
    """Migrate and start everything; raises ``DevstackError`` (with the processes' last log lines)."""
    root = Path(tempfile.mkdtemp(prefix=f"crm-{db_prefix}-"))
    config = StackConfig(
        root=root,
        api_ports={name: free_port() for name in ALL_SERVICES},
        worker_ports={name: free_port() for name in SERVICES},
        kafka_port=kafka.port,
        kafka_controller_port=kafka.controller_port,
        jwt_secret=JWT_SECRET,
        service_bin=Path(sys.prefix) / "bin" / "crm-service",
        kafka_cache=root / "unused",
    )
    config.logs_dir.mkdir(parents=True, exist_ok=True)
    db_urls = {name: postgres.create_database(f"{db_prefix}_{name}") for name in SERVICES}
    platform = Platform(config, db_urls, ProcessGroup(), env or {})
    try:
        for name in SERVICES:
            done = subprocess.run([str(config.service_bin), name, "migrate"], env=platform.env_for(name, "migrate"),
                                  capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise DevstackError(f"migrations of {name} failed:\n{done.stderr[-3000:]}")
        for name in SERVICES:
            platform.add_process(name, "api")
            platform.add_process(name, "worker")
        platform.add_process(GATEWAY, "api")
        platform.add_process(CONSOLE, "api")
        wait_http_ok(f"{config.api_url(GATEWAY)}/readyz", timeout=ready_timeout, check=platform.processes.check)
        wait_http_ok(f"{config.api_url(CONSOLE)}/readyz", timeout=ready_timeout, check=platform.processes.check)
    except Exception as exc:
        logs = "\n".join(f"--- {n}:\n{platform.processes.log_tail(n, 15)}" for n in platform.processes.pids())
        platform.stop()
        raise DevstackError(f"the platform could not start: {exc}\n{logs}") from exc
    return platform
