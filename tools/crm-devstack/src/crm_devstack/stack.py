"""The local platform behind `make run`: Kafka plus every service's api and worker.

Everything it creates lives under `<repo>/.run/`: the Kafka jar cache and data, one
SQLite file per service, prometheus multiprocess folders, logs, and the stack's pid and
state files, which let `stop` and `status` find a stack started by another shell.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO

import requests

from .errors import DevstackError
from .forked import MODULE as FORKSERVER_MODULE
from .forked import NAME as FORKSERVER
from .forked import ForkServer
from .kafka import KAFKA_VERSION, KafkaBroker, cached_kafka_jars, ensure_kafka_jars, stop_from_pid_file
from .ports import port_accepts, port_in_use
from .processes import (
    pid_alive,
    pid_cmdline,
    read_pid_file,
    run_command,
    signal_group,
    tail_file,
    terminate_group,
    wait_exit,
)
from .supervisor import ProcessGroup, Spawn, wait_http_ok

SERVICES = ("catalogue", "leads", "opportunities", "linking", "triggers", "webhooks")
"""Domain services, in start order; each has `migrate`, `api` and `worker`."""
GATEWAY = "gateway"
"""The HTTP front; it has only an `api`."""
CONSOLE = "console"
"""The browser console, a client of the gateway; it has only an `api` and starts last. The
gateway forwards every path outside its API to it, so both answer on the gateway's address."""
ALL_SERVICES = (*SERVICES, GATEWAY, CONSOLE)

DEFAULT_API_PORTS: Mapping[str, int] = {
    "gateway": 8080,
    "catalogue": 8081,
    "leads": 8082,
    "opportunities": 8083,
    "linking": 8084,
    "triggers": 8085,
    "console": 8086,
    "webhooks": 8087,
}
DEFAULT_WORKER_PORTS: Mapping[str, int] = {
    "catalogue": 9181,
    "leads": 9182,
    "opportunities": 9183,
    "linking": 9184,
    "triggers": 9185,
    "webhooks": 9187,
}
DEFAULT_KAFKA_PORT = 19092
DEFAULT_KAFKA_CONTROLLER_PORT = 19093
DEV_JWT_SECRET = "dev-only-insecure-secret-change-me"  # noqa: S105 - the documented local default
DEV_CONSOLE_SECRET_KEY = "dev-only-console-session-key-change-me"  # noqa: S105 - local platforms only
# The Fernet key (urlsafe base64 of 32 bytes: "dev-only-webhook-secrets-key-32b") that keeps the
# webhooks' signing secrets on local platforms only.
DEV_WEBHOOK_SECRETS_KEY = "ZGV2LW9ubHktd2ViaG9vay1zZWNyZXRzLWtleS0zMmI="  # noqa: S105 - local platforms only
READY_TIMEOUT = 120.0
MIGRATE_TIMEOUT = 300.0
KAFKA_START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0


class _StopRequested(BaseException):
    """Raised by our SIGTERM handler; a BaseException so no `except Exception` eats it."""


def find_repo_root(start: Path | None = None) -> Path:
    """Return the repository root: $CRM_REPO_ROOT, else the nearest parent of `start`
    (default: the cwd) holding both a `Makefile` and a `services/` folder."""
    env_root = os.environ.get("CRM_REPO_ROOT")
    if env_root:
        root = Path(env_root).resolve()
        if not root.is_dir():
            raise DevstackError(f"CRM_REPO_ROOT={env_root} is not a directory.")
        return root
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "Makefile").is_file() and (candidate / "services").is_dir():
            return candidate
    raise DevstackError(
        f"Cannot find the repository root (a folder with a Makefile and services/) at or above {here}; "
        "run this from inside the repository or set CRM_REPO_ROOT."
    )


@dataclass(frozen=True)
class PortSetting:
    """One port the stack needs, what uses it and the variable that changes it."""

    port: int
    user: str
    env_var: str


def _env_port(environ: Mapping[str, str], var: str, default: int) -> int:
    raw = environ.get(var)
    if raw is None or raw.strip() == "":
        return default
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise DevstackError(f"{var}={raw!r} is not a TCP port number (1-65535).")
    return port


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its files and which ports it uses."""

    root: Path
    api_ports: Mapping[str, int]
    worker_ports: Mapping[str, int]
    kafka_port: int
    kafka_controller_port: int
    jwt_secret: str
    service_bin: Path
    kafka_cache: Path

    @classmethod
    def from_environment(cls, root: Path | None = None, environ: Mapping[str, str] | None = None) -> StackConfig:
        """Build the configuration from defaults and the caller's environment.

        Ports: CRM_<NAME>_PORT (api), CRM_<NAME>_WORKER_PORT, CRM_KAFKA_PORT,
        CRM_KAFKA_CONTROLLER_PORT. CRM_JWT_SECRET (default: the documented dev
        secret). CRM_SERVICE_BIN (default: crm-service next to this Python),
        CRM_KAFKA_CACHE (default: <repo>/.run/kafka-cache).
        """
        env = os.environ if environ is None else environ
        root = (root or find_repo_root()).resolve()
        api_ports = {n: _env_port(env, f"CRM_{n.upper()}_PORT", p) for n, p in DEFAULT_API_PORTS.items()}
        worker_ports = {n: _env_port(env, f"CRM_{n.upper()}_WORKER_PORT", p) for n, p in DEFAULT_WORKER_PORTS.items()}
        config = cls(
            root=root,
            api_ports=api_ports,
            worker_ports=worker_ports,
            kafka_port=_env_port(env, "CRM_KAFKA_PORT", DEFAULT_KAFKA_PORT),
            kafka_controller_port=_env_port(env, "CRM_KAFKA_CONTROLLER_PORT", DEFAULT_KAFKA_CONTROLLER_PORT),
            jwt_secret=env.get("CRM_JWT_SECRET") or DEV_JWT_SECRET,
            service_bin=Path(env.get("CRM_SERVICE_BIN") or Path(sys.prefix) / "bin" / "crm-service"),
            kafka_cache=Path(env.get("CRM_KAFKA_CACHE") or root / ".run" / "kafka-cache").resolve(),
        )
        config._check_distinct_ports()
        return config

    # Files and folders, all under <repo>/.run.
    @property
    def run_dir(self) -> Path:
        return self.root / ".run"

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def kafka_dir(self) -> Path:
        return self.run_dir / "kafka"

    @property
    def db_dir(self) -> Path:
        return self.run_dir / "db"

    @property
    def metrics_dir(self) -> Path:
        return self.run_dir / "metrics"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "stack.pid"

    @property
    def ready_file(self) -> Path:
        """Written (holding the stack's pid) once the gateway is ready; `start` waits for it."""
        return self.run_dir / "stack.ready"

    @property
    def state_file(self) -> Path:
        """The pids of the stack's children, so `stop` can kill them if the stack hangs."""
        return self.run_dir / "stack.json"

    @property
    def lock_file(self) -> Path:
        return self.run_dir / "stack.lock"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.api_ports[GATEWAY]}"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def api_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.api_ports[name]}"

    def log_path(self, process: str) -> Path:
        """The log of process `<name>-api`, `<name>-worker` or `<name>-migrate`."""
        return self.logs_dir / f"{process}.log"

    def port_settings(self) -> list[PortSetting]:
        """Every port the stack listens on, with its user and variable."""
        settings = [
            PortSetting(self.kafka_port, "Kafka", "CRM_KAFKA_PORT"),
            PortSetting(self.kafka_controller_port, "Kafka controller", "CRM_KAFKA_CONTROLLER_PORT"),
        ]
        for name in ALL_SERVICES:
            settings.append(PortSetting(self.api_ports[name], f"{name} api", f"CRM_{name.upper()}_PORT"))
            if name in self.worker_ports:
                settings.append(
                    PortSetting(self.worker_ports[name], f"{name} worker", f"CRM_{name.upper()}_WORKER_PORT")
                )
        return settings

    def _check_distinct_ports(self) -> None:
        seen: dict[int, PortSetting] = {}
        for setting in self.port_settings():
            if setting.port in seen:
                other = seen[setting.port]
                raise DevstackError(
                    f"Port {setting.port} is configured twice: {other.user} ({other.env_var}) and "
                    f"{setting.user} ({setting.env_var}); give each its own port."
                )
            seen[setting.port] = setting


def service_env(config: StackConfig, name: str, role: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of service `name` running as `role` (`api`, `worker` or `migrate`).

    Starts from `base` (default: our environment), so PATH, locale and every other
    CRM_* setting of the caller pass through; the stack's own settings win.
    """
    env = dict(os.environ if base is None else base)
    # Tools of this virtualenv first, even when it is not activated (make calls .venv/bin/python).
    env["PATH"] = os.pathsep.join([str(Path(sys.prefix) / "bin"), env.get("PATH", "")])
    env.update(
        {
            "PYTHONUNBUFFERED": "1",  # log lines reach the log file as they happen
            "CRM_SERVICE_NAME": name,
            "CRM_JWT_SECRET": config.jwt_secret,
            "CRM_KAFKA_BOOTSTRAP": config.kafka_bootstrap,
            "CRM_LOG_FORMAT": "json",
        }
    )
    if role in ("api", "worker"):
        env["PROMETHEUS_MULTIPROC_DIR"] = str(config.metrics_dir / f"{name}-{role}")
    else:
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if name in SERVICES:
        env["CRM_DATABASE_URL"] = f"sqlite:///{config.db_dir / f'{name}.sqlite3'}"
        env["CRM_WORKER_PORT"] = str(config.worker_ports[name])
        if name == "webhooks":
            env.setdefault("CRM_WEBHOOK_SECRETS_KEY", DEV_WEBHOOK_SECRETS_KEY)
            # Local platforms may deliver to receivers on this machine (http on loopback).
            env.setdefault("CRM_WEBHOOK_ALLOW_LOOPBACK", "true")
    elif name == GATEWAY:
        for upstream in SERVICES:
            env[f"CRM_{upstream.upper()}_URL"] = config.api_url(upstream)
        env["CRM_CONSOLE_URL"] = config.api_url(CONSOLE)
    elif name == CONSOLE:
        env["CRM_GATEWAY_URL"] = config.gateway_url
        env.setdefault("CRM_CONSOLE_SECRET_KEY", DEV_CONSOLE_SECRET_KEY)
        # The development sign-in form (User, Office, Roles): local platforms only.
        env["CRM_CONSOLE_DEV_SIGNIN"] = "true"
    return env


DEV_BROKER: Mapping[str, Any] = {
    # A dev broker's JVM (make run only; the tests and the bench keep KafkaBroker's defaults): the
    # serial collector (G1 keeps ~45 MB of its own structures), only the C1 compiler (C2 costs ~35 MB),
    # a heap that starts small and is capped at 128 MB (~45 MB live after a full GC under a test load).
    # ~200 -> ~178 MB of PSS idle in make run; a 64 MB cap saved ~17 MB more, too close to that.
    "heap": "128m",
    "initial_heap": "16m",
    "jvm_options": ("-XX:+UseSerialGC", "-XX:MinHeapFreeRatio=10", "-XX:MaxHeapFreeRatio=20",
                    "-XX:TieredStopAtLevel=1", "-XX:ReservedCodeCacheSize=32m"),
}
"""How `make run` starts Kafka (KafkaBroker's keywords)."""

EMBEDDED_PROFILE: Mapping[str, str] = {
    # One gunicorn worker with 8 threads per api: as many requests at once as 2 x 4 (the default),
    # in one process fewer per api (each worker is a whole copy of its app: ~60 MB).
    "CRM_WEB_CONCURRENCY": "1",
    "CRM_WEB_THREADS": "8",
}
"""What `make run` sets for its processes unless the caller's environment sets it: a platform
on a laptop, small. The bench and the tests start theirs with their own counts (platform.py)."""


def embedded_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the embedded profile's settings where it has none of its own."""
    merged = dict(env)
    for name, value in EMBEDDED_PROFILE.items():
        if not merged.get(name):
            merged[name] = value
    return merged


def make_token(
    secret: str,
    *,
    user: str = "dev-user",
    name: str = "Dev User",
    office: str = "office-1",
    roles: Sequence[str] = ("admin",),
    ttl: int = 86400,
) -> str:
    """Return an HS256 JWT with the claims the gateway expects (sub, name, office, roles, iat, exp)."""
    from crm_kit.web.auth import issue_token

    if ttl <= 0:
        raise DevstackError(f"Token lifetime must be positive, not {ttl} s.")
    return issue_token(secret, user_id=user, name=name, office_id=office, roles=roles, ttl_seconds=ttl)


def running_stack_pid(config: StackConfig) -> int | None:
    """The pid of a live stack recorded in .run/stack.pid, else None.

    The process must still look like crm_devstack: a stale file whose pid was reused
    by an unrelated program does not count.
    """
    pid = read_pid_file(config.pid_file)
    if pid is None or pid == os.getpid() or not pid_alive(pid):
        return None
    if any("crm_devstack" in part or "crm-devstack" in part for part in pid_cmdline(pid)):
        return pid
    return None


def summary_text(config: StackConfig) -> str:
    """What a developer needs once the stack is up: URLs, a token, curl examples, logs."""
    token = make_token(config.jwt_secret)
    gw = config.gateway_url

    def rel(path: Path) -> str:
        with contextlib.suppress(ValueError):
            return str(path.relative_to(Path.cwd()))
        return str(path)

    logs = rel(config.logs_dir)
    return f"""
CRM platform is up. Console: {gw}/

  console   {gw}/    (open it in a browser and sign in with any user, office and roles)
  gateway   {gw}/v1  (OpenAPI: {gw}/openapi.json, docs: {gw}/docs)
  kafka     {config.kafka_bootstrap}

  dev token (user dev-user, office office-1, roles admin, valid 24 h):
    export TOKEN={token}

  try:
    curl -s {gw}/readyz
    curl -s -H "Authorization: Bearer $TOKEN" {gw}/v1/me
    curl -s -H "Authorization: Bearer $TOKEN" {gw}/v1/lead-stages
    curl -s -H "Authorization: Bearer $TOKEN" {gw}/v1/leads

  another token: python -m crm_devstack token --user u2 --roles marketing
  logs: {logs}/<name>-api.log, {logs}/<name>-worker.log, {logs}/<name>-migrate.log
        {rel(config.kafka_dir / "kafka.log")} (Kafka)
"""


def _say(message: str, stream: TextIO | None = None) -> None:
    print(f"[devstack] {message}", file=stream or sys.stdout, flush=True)


def _check_service_bin(config: StackConfig) -> None:
    if not os.access(config.service_bin, os.X_OK):
        raise DevstackError(
            f"{config.service_bin} not found (or not executable): the services are not installed in this "
            f"virtualenv ({sys.prefix}). Install them (e.g. `make install`, or `pip install -e services/<name>` "
            "for each service), or point CRM_SERVICE_BIN at the crm-service command."
        )


def _read_state(config: StackConfig) -> dict[str, Any]:
    try:
        data = json.loads(config.state_file.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _recorded_children_alive(config: StackConfig) -> dict[str, int]:
    """Children recorded in stack.json that still run the service command (or the fork server's,
    which its forks keep: a recorded pid that some other program reuses by now is not ours)."""
    children = _read_state(config).get("children", {})
    alive: dict[str, int] = {}
    for name, pid in children.items():
        if isinstance(pid, int) and pid_alive(pid):
            if any(Path(part).name == config.service_bin.name or part == FORKSERVER_MODULE
                   for part in pid_cmdline(pid)):
                alive[name] = pid
    return alive


def _clean_up_leftovers(config: StackConfig, stream: TextIO | None = None) -> None:
    """Stop what an earlier stack that died without cleaning up left running."""
    for name, pid in _recorded_children_alive(config).items():
        _say(f"stopping {name} (pid {pid}) left running by an earlier stack", stream)
        terminate_group(pid, 5)
    if stop_from_pid_file(config.kafka_dir):
        _say("stopped a Kafka broker left running by an earlier stack", stream)


def check_ports_free(config: StackConfig) -> None:
    """Raise DevstackError naming every needed port that something else listens on."""
    busy = [s for s in config.port_settings() if port_in_use(s.port)]
    if busy:
        lines = [
            f"  port {s.port} ({s.user}): stop what listens there, or set {s.env_var}=<another port>" for s in busy
        ]
        raise DevstackError("Ports needed by the stack are already in use on 127.0.0.1:\n" + "\n".join(lines))


class LocalStack:
    """Runs the whole platform in the foreground until a signal or a failure."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.group = ProcessGroup(die_with_parent=True)
        self.broker: KafkaBroker | None = None

    def run(self, ready_timeout: float = READY_TIMEOUT) -> int:
        """Start Kafka, migrate, start every api and worker, wait for the gateway, supervise.

        Returns 0 after SIGINT/SIGTERM (everything stopped), 1 when start-up fails or a
        child dies (everything stopped, the reason printed to stderr).
        """
        config = self.config
        _check_service_bin(config)
        config.run_dir.mkdir(parents=True, exist_ok=True)
        with self._exclusive_run():
            _clean_up_leftovers(config)
            check_ports_free(config)
            config.ready_file.unlink(missing_ok=True)
            config.pid_file.write_text(f"{os.getpid()}\n")
            previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
            rc = 1
            try:
                self._bring_up(ready_timeout)
                print(summary_text(config), flush=True)
                _say("press Ctrl-C to stop everything")
                config.ready_file.write_text(f"{os.getpid()}\n")
                while True:  # supervise until a signal or a death
                    self._check_alive()
                    time.sleep(0.5)
            except (_StopRequested, KeyboardInterrupt):
                _say("stop requested")
                rc = 0
            except DevstackError as exc:
                print(f"[devstack] error: {exc}", file=sys.stderr, flush=True)
            finally:
                # A second Ctrl-C must not cut the clean-up short: every wait in it is bounded.
                for sig in previous:
                    signal.signal(sig, signal.SIG_IGN)
                self._shut_down()
                for path in (config.ready_file, config.pid_file, config.state_file):
                    path.unlink(missing_ok=True)
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            return rc

    # -- steps ------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive_run(self) -> Any:
        """Hold .run/stack.lock for the whole run: a second `run` is refused, never raced."""
        with open(self.config.lock_file, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = read_pid_file(self.config.pid_file)
                raise DevstackError(
                    f"A stack is already running{f' (pid {pid})' if pid else ''} for {self.config.root}; "
                    "stop it first with `python -m crm_devstack stop`."
                ) from None
            pid = running_stack_pid(self.config)
            if pid is not None:
                raise DevstackError(
                    f"A stack is already running (pid {pid}); stop it first with `python -m crm_devstack stop`."
                )
            yield

    def _on_signal(self, signum: int, frame: object) -> None:
        raise _StopRequested(signum)

    def _bring_up(self, ready_timeout: float) -> None:
        config = self.config
        _say(f"repository {config.root}")
        started = time.monotonic()
        if cached_kafka_jars(config.kafka_cache) is None:
            _say(f"fetching Kafka {KAFKA_VERSION} from Maven Central into {config.kafka_cache} (first run only)")
        jars = ensure_kafka_jars(config.kafka_cache)
        self.broker = KafkaBroker(config.kafka_dir, jars, config.kafka_port, config.kafka_controller_port,
                                  **DEV_BROKER)
        self.broker.start(timeout=KAFKA_START_TIMEOUT)
        _say(f"kafka up on {self.broker.bootstrap} in {self.broker.last_start_seconds:.1f} s")
        self._write_state()

        config.db_dir.mkdir(parents=True, exist_ok=True)
        config.logs_dir.mkdir(parents=True, exist_ok=True)
        for name in ALL_SERVICES:
            for role in ("api", "worker"):
                # Stale files of dead processes would show up as metrics: start empty.
                folder = config.metrics_dir / f"{name}-{role}"
                shutil.rmtree(folder, ignore_errors=True)
                if role == "api" or name in SERVICES:
                    folder.mkdir(parents=True)

        for name in SERVICES:
            began = time.monotonic()
            run_command(
                [str(config.service_bin), name, "migrate"],
                what=f"{name} migrate",
                timeout=MIGRATE_TIMEOUT,
                cwd=config.root,
                env=service_env(config, name, "migrate"),
                log_path=config.log_path(f"{name}-migrate"),
            )
            _say(f"{name}: migrated in {time.monotonic() - began:.1f} s")

        # The services' processes are forks of one process that imported their libraries once.
        fork = ForkServer.start(self.group, config.log_path(FORKSERVER), cwd=config.root).spawn
        for name in ALL_SERVICES:
            bind = f"127.0.0.1:{config.api_ports[name]}"
            self._add(f"{name}-api", [str(config.service_bin), name, "api", "--bind", bind], name, "api", fork)
            if name in SERVICES:
                self._add(f"{name}-worker", [str(config.service_bin), name, "worker"], name, "worker", fork)
        _say(f"started {len(self.group.names())} processes; waiting for {config.gateway_url}/readyz")

        try:
            wait_http_ok(f"{config.gateway_url}/readyz", ready_timeout, check=self._check_alive)
            wait_http_ok(f"{config.api_url(CONSOLE)}/readyz", ready_timeout, check=self._check_alive)
        except DevstackError as exc:
            self._check_alive()  # a dead process explains more than a timeout
            raise DevstackError(self._not_ready_report(ready_timeout)) from exc
        _say(f"ready in {time.monotonic() - started:.1f} s")

    def _add(self, process: str, argv: list[str], name: str, role: str, spawn: Spawn) -> None:
        env = embedded_env(service_env(self.config, name, role))
        self.group.add(process, argv, env, self.config.log_path(process), cwd=self.config.root, spawn=spawn)
        self._write_state()

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "kafka_pid": self.broker.pid if self.broker else None,
            "children": self.group.pids(),
        }
        tmp = self.config.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.config.state_file)

    def _check_alive(self) -> None:
        self.group.check()
        if self.broker is not None and not self.broker.is_running():
            raise DevstackError(
                f"Kafka (data in {self.broker.data_dir}) exited unexpectedly.\n"
                f"--- last lines of {self.broker.log_file} ---\n{tail_file(self.broker.log_file, 30)}\n"
                f"--- last lines of {self.broker.out_file} ---\n{tail_file(self.broker.out_file, 10)}"
            )

    def _not_ready_report(self, ready_timeout: float) -> str:
        config = self.config
        lines = [
            f"The platform did not become ready: {config.gateway_url}/readyz did not answer 200 "
            f"within {ready_timeout:g} s."
        ]
        not_ready: list[tuple[str, str]] = []
        for name in ALL_SERVICES:
            url = f"{config.api_url(name)}/readyz"
            try:
                response = requests.get(url, timeout=2)
                if response.status_code == 200:
                    continue
                answer = f"HTTP {response.status_code}: {response.text[:300].strip()}"
            except requests.RequestException as exc:
                answer = f"no answer ({type(exc).__name__})"
            not_ready.append((name, f"{url} -> {answer}"))
        if len(not_ready) > 1:
            # The gateway is ready only when every service is: the others explain it.
            not_ready = [(name, answer) for name, answer in not_ready if name != GATEWAY]
        for name, answer in not_ready:
            lines.append(f"\n{name} is not ready: {answer}")
            lines.append(f"--- last lines of {config.log_path(f'{name}-api')} ---")
            lines.append(self.group.log_tail(f"{name}-api", 25))
            if name in SERVICES:
                lines.append(f"(its worker logs to {config.log_path(f'{name}-worker')})")
        return "\n".join(lines)

    def _shut_down(self) -> None:
        if self.group.names():
            _say("stopping services ...")
            self.group.stop_all(timeout=10)
        if self.broker is not None and self.broker.is_running():
            _say("stopping kafka ...")
            self.broker.stop(timeout=20)
        _say("stopped")


def start_detached(config: StackConfig, ready_timeout: float = READY_TIMEOUT) -> int:
    """Run the stack in the background (output to .run/logs/stack.log) and wait until ready.

    Prints the same summary as `run` and returns 0 once ready; when start-up fails,
    prints the end of stack.log and returns 1 (the background stack has then already
    stopped everything it started).
    """
    _check_service_bin(config)
    pid = running_stack_pid(config)
    if pid is not None:
        raise DevstackError(
            f"A stack is already running (pid {pid}); stop it first with `python -m crm_devstack stop`."
        )
    config.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = config.logs_dir / "stack.log"
    env = dict(os.environ, CRM_REPO_ROOT=str(config.root))
    with open(log_path, "ab") as log:
        offset = log.seek(0, os.SEEK_END)
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} crm_devstack start ===\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "crm_devstack", "run", "--ready-timeout", str(ready_timeout)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=config.root,
            env=env,
            start_new_session=True,  # survives this shell; a Ctrl-C here does not reach it
        )
    _say(f"starting in the background (pid {proc.pid}); log: {log_path}")
    # Only a backstop: `run` bounds each of its steps (jar fetch, Kafka, each migration,
    # readiness) and exits when one fails.
    deadline = time.monotonic() + 600 + KAFKA_START_TIMEOUT + len(SERVICES) * MIGRATE_TIMEOUT + ready_timeout
    try:
        while read_pid_file(config.ready_file) != proc.pid:
            if proc.poll() is not None:
                print(tail_file(log_path, 60, start=offset), file=sys.stderr)
                _say(f"the stack failed to start (full log: {log_path})", sys.stderr)
                return 1
            if time.monotonic() > deadline:
                terminate_group(proc, STOP_TIMEOUT)
                print(tail_file(log_path, 60, start=offset), file=sys.stderr)
                _say(f"the stack was not ready in time and was stopped (full log: {log_path})", sys.stderr)
                return 1
            time.sleep(0.2)
    except KeyboardInterrupt:
        _say("interrupted: stopping the background stack", sys.stderr)
        terminate_group(proc, STOP_TIMEOUT)
        return 130
    print(summary_text(config), flush=True)
    _say(f"running in the background (pid {proc.pid}); stop it with: python -m crm_devstack stop")
    return 0


def stop_stack(config: StackConfig, timeout: float = STOP_TIMEOUT) -> int:
    """Stop a stack started by `run` or `start` in any shell, and anything it left behind.

    SIGTERM to the stack (it stops its children and Kafka itself); if it is still there
    after `timeout` seconds, SIGKILL to it and to its children's process groups.
    Returns 0 (also when nothing was running).
    """
    pid = running_stack_pid(config)
    if pid is None:
        _say("no stack is running")
    else:
        _say(f"stopping the stack (pid {pid}) ...")
        os.kill(pid, signal.SIGTERM)
        if not wait_exit(pid, timeout):
            _say(f"the stack did not stop within {timeout:g} s: killing it and its processes")
            for child_pid in _recorded_children_alive(config).values():
                signal_group(child_pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(pid) == pid:  # started by `start`: its own group
                    os.killpg(pid, signal.SIGKILL)
                else:  # `run` in a terminal: its group is the shell's job
                    os.kill(pid, signal.SIGKILL)
            wait_exit(pid, 10)
    _clean_up_leftovers(config)
    for path in (config.ready_file, config.pid_file, config.state_file):
        path.unlink(missing_ok=True)
    if pid is not None:
        _say("stopped")
    return 0


def stack_status(config: StackConfig, out: IO[str] | None = None) -> int:
    """Print which parts of the stack are up; return 0 when all are, else 1."""
    stream = out or sys.stdout
    all_up = True

    def line(what: str, state: str, ok: bool) -> None:
        nonlocal all_up
        all_up = all_up and ok
        print(f"  {what:<24} {state}", file=stream)

    pid = running_stack_pid(config)
    print(f"stack ({config.root}):", file=stream)
    line("supervisor", f"running (pid {pid})" if pid else "not running", pid is not None)
    kafka_pid = read_pid_file(config.kafka_dir / "kafka.pid")
    kafka_up = kafka_pid is not None and pid_alive(kafka_pid) and port_accepts(config.kafka_port)
    line("kafka", f"up on {config.kafka_bootstrap} (pid {kafka_pid})" if kafka_up else "down", kafka_up)
    children = _recorded_children_alive(config)
    forkserver = children.get(FORKSERVER)
    line("fork server", f"running (pid {forkserver})" if forkserver else "down", forkserver is not None)
    for name in ALL_SERVICES:
        url = f"{config.api_url(name)}/readyz"
        try:
            code = requests.get(url, timeout=2).status_code
            state, ok = ("ready" if code == 200 else f"not ready (HTTP {code})"), code == 200
        except requests.RequestException:
            state, ok = "down", False
        line(f"{name} api", f"{state}  {config.api_url(name)}", ok)
        if name in SERVICES:
            worker_pid = children.get(f"{name}-worker")
            worker_url = f"http://127.0.0.1:{config.worker_ports[name]}/readyz"
            if worker_pid is None:
                state, ok = "down", False
            else:
                try:
                    code = requests.get(worker_url, timeout=2).status_code
                    state = f"ready (pid {worker_pid})" if code == 200 else f"not ready (HTTP {code}, pid {worker_pid})"
                except requests.RequestException:
                    state = f"running (pid {worker_pid}), no answer at {worker_url}"
                ok = True  # its /readyz is informative; the gateway does not depend on it
            line(f"{name} worker", state, ok)
    return 0 if all_up else 1


def stack_memory(config: StackConfig, out: IO[str] | None = None, *, as_json: bool = False) -> int:
    """Print the memory of a running stack (PSS and RSS per process group, and in total); 1 when none runs."""
    from .memory import measure, stack_roots

    stream = out or sys.stdout
    pid = running_stack_pid(config)
    if pid is None or not config.state_file.is_file():
        print("no stack is running (start one with make run or make start)", file=stream)
        return 1
    snapshot = measure(stack_roots(config.state_file, pid))
    if as_json:
        print(json.dumps(snapshot.as_dict(), indent=2), file=stream)
    else:
        print(f"memory of the stack (pid {pid}); PSS shares each page among the processes that map it,\n"
              "RSS counts shared pages once per process:", file=stream)
        print(snapshot.table(), file=stream)
    return 0
