"""crm_devstack on real processes: a Kafka broker, a PostgreSQL cluster and the stack CLI.

Nothing is mocked. The stack tests run `python -m crm_devstack` against a throwaway
repository whose `crm-service` command is a small stand-in (FAKE_SERVICE below) that
serves /readyz and records the environment it was given, because the real services are
not required to test the orchestration: start order, environment contract, readiness,
failure reports and clean shutdown.

Set CRM_KAFKA_CACHE (e.g. to <repo>/.run/kafka-cache) to reuse fetched Kafka jars.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

import crm_devstack
from crm_devstack import (
    DevstackError,
    KafkaBroker,
    PostgresCluster,
    ProcessGroup,
    ensure_kafka_jars,
    free_port,
    port_in_use,
    stop_from_pid_file,
    wait_http_ok,
)
from crm_devstack.processes import pid_alive
from crm_devstack.stack import ALL_SERVICES, DEV_JWT_SECRET, SERVICES

pytestmark = pytest.mark.integration

SRC_DIR = Path(crm_devstack.__file__).resolve().parent.parent


# -- shared fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("CRM_KAFKA_CACHE")
    return Path(configured) if configured else tmp_path_factory.mktemp("kafka-cache")


@pytest.fixture(scope="session")
def kafka_jars(kafka_cache: Path) -> Path:
    return ensure_kafka_jars(kafka_cache)


@pytest.fixture
def listening_socket() -> Iterator[int]:
    """A port something else listens on, for conflict tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def cli_env(**extra: str) -> dict[str, str]:
    """Our environment, with crm_devstack importable whether or not it is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC_DIR), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crm_devstack", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- ports -------------------------------------------------------------------------------


def test_free_port_is_free_and_a_listener_is_detected(listening_socket: int) -> None:
    port = free_port()
    assert not port_in_use(port)
    assert port_in_use(listening_socket)


# -- Kafka -------------------------------------------------------------------------------


def test_jars_are_cached_after_the_first_fetch(kafka_jars: Path) -> None:
    assert (kafka_jars / f"kafka_2.13-{crm_devstack.KAFKA_VERSION}.jar").is_file()
    assert len(list(kafka_jars.glob("*.jar"))) > 40
    started = time.monotonic()
    assert ensure_kafka_jars(kafka_jars.parent.parent) == kafka_jars
    assert time.monotonic() - started < 0.5


def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        future.result(timeout=30)


def _consume_one(bootstrap: str, topic: str, group: str, timeout: float = 30) -> tuple[bytes, bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            consumer.commit(message=msg, asynchronous=False)
            return msg.key(), msg.value()
        raise AssertionError(f"no message on {topic} for group {group} within {timeout} s")
    finally:
        consumer.close()


def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def test_broker_survives_kill_and_restart_with_its_data(kafka_jars: Path, tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka", kafka_jars)
    try:
        broker.start(timeout=60)
        print(f"Kafka first start (incl. storage format): {broker.last_start_seconds:.1f} s")
        assert broker.is_running() and broker.pid is not None
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert (tmp_path / "kafka" / "kafka.pid").read_text().strip() == str(broker.pid)
        assert "Kafka Server started" in (tmp_path / "kafka" / "kafka.log").read_text()
        cluster_id = (tmp_path / "kafka" / "cluster.id").read_text()

        _create_topic(broker.bootstrap, "devstack.test")
        _produce(broker.bootstrap, "devstack.test", b"k1", b"before the crash")
        assert _consume_one(broker.bootstrap, "devstack.test", "g1") == (b"k1", b"before the crash")

        old_pid = broker.pid
        broker.kill()
        assert not broker.is_running() and not pid_alive(old_pid)
        assert not (tmp_path / "kafka" / "kafka.pid").exists()

        port = broker.port
        broker.restart()
        print(f"Kafka restart after SIGKILL: {broker.last_start_seconds:.1f} s")
        assert broker.port == port
        assert (tmp_path / "kafka" / "cluster.id").read_text() == cluster_id

        # The data and the committed offset survived: g1 sees only the new message,
        # a new group still sees the old one.
        _produce(broker.bootstrap, "devstack.test", b"k2", b"after the restart")
        assert _consume_one(broker.bootstrap, "devstack.test", "g1") == (b"k2", b"after the restart")
        assert _consume_one(broker.bootstrap, "devstack.test", "g2") == (b"k1", b"before the crash")

        broker.stop()
        assert not broker.is_running()
        broker.start()
        print(f"Kafka start on existing data after a clean stop: {broker.last_start_seconds:.1f} s")
        assert broker.last_start_seconds is not None and broker.last_start_seconds < 30
    finally:
        broker.stop()
    assert not broker.is_running()


def test_a_broker_started_elsewhere_is_stopped_through_its_pid_file(kafka_jars: Path, tmp_path: Path) -> None:
    data = tmp_path / "kafka"
    starter = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from crm_devstack import KafkaBroker; "
            "b = KafkaBroker(Path(sys.argv[1]), Path(sys.argv[2])); b.start(); print(b.pid, b.port)",
            str(data),
            str(kafka_jars),
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert starter.returncode == 0, starter.stderr
    pid, port = map(int, starter.stdout.split())
    try:
        attached = KafkaBroker.attach(data)
        assert attached.pid == pid and attached.port == port and attached.is_running()
        with pytest.raises(DevstackError, match="Another process already runs a Kafka broker"):
            KafkaBroker(data, kafka_jars).start()
        assert stop_from_pid_file(data) is True
        assert not pid_alive(pid)
        assert stop_from_pid_file(data) is False
    finally:
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)


def test_broker_refuses_a_port_in_use_at_once(kafka_jars: Path, tmp_path: Path, listening_socket: int) -> None:
    broker = KafkaBroker(tmp_path / "kafka", kafka_jars, port=listening_socket)
    started = time.monotonic()
    with pytest.raises(DevstackError, match=f"Kafka port {listening_socket} .* already in use"):
        broker.start()
    assert time.monotonic() - started < 2
    assert not broker.is_running()


def test_a_broker_that_cannot_start_reports_its_log(kafka_jars: Path, tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka", kafka_jars, heap="1k")  # the JVM refuses this heap
    with pytest.raises(DevstackError, match="Kafka exited during start-up|Formatting Kafka storage") as failure:
        broker.start(timeout=30)
    assert "last lines of" in str(failure.value) or "last output" in str(failure.value)
    assert not broker.is_running()


# -- PostgreSQL --------------------------------------------------------------------------


@pytest.fixture
def pg_base_dir() -> Iterator[Path]:
    # Not tmp_path: as root the server runs as `postgres`, which cannot enter pytest's
    # 0700 /tmp/pytest-of-root; a mkdtemp() folder directly in /tmp is handed over to it.
    base = Path(tempfile.mkdtemp(prefix="crm-devstack-pg-"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_postgres_cluster_databases_restart_and_stop(pg_base_dir: Path) -> None:
    cluster = PostgresCluster(pg_base_dir)
    try:
        cluster.start()
        print(f"PostgreSQL first start (incl. initdb): {cluster.last_start_seconds:.2f} s")
        urls = [cluster.create_database(name) for name in ("devstack_one", "devstack-two")]
        assert urls == [
            f"postgresql+psycopg://postgres@127.0.0.1:{cluster.port}/devstack_one",
            f"postgresql+psycopg://postgres@127.0.0.1:{cluster.port}/devstack-two",
        ]
        assert cluster.create_database("devstack_one") == urls[0]  # already there: same URL
        for name in ("devstack_one", "devstack-two"):
            with psycopg.connect(cluster.dsn(name)) as conn:
                assert conn.execute("select 1, current_database()").fetchone() == (1, name)

        with psycopg.connect(cluster.dsn("devstack_one"), autocommit=True) as conn:
            conn.execute("create table kept (id int)")
            conn.execute("insert into kept values (42)")
        old_pid = cluster.pid
        cluster.restart()
        assert cluster.pid != old_pid
        with psycopg.connect(cluster.dsn("devstack_one")) as conn:
            assert conn.execute("select id from kept").fetchone() == (42,)

        cluster.stop()
        assert not cluster.is_running()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(cluster.dsn("postgres"), connect_timeout=2)

        # A new object on the same folder reuses the data directory.
        again = PostgresCluster(pg_base_dir, port=cluster.port)
        again.start()
        print(f"PostgreSQL start on an existing data directory: {again.last_start_seconds:.2f} s")
        with psycopg.connect(again.dsn("devstack-two")) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        again.stop()
    finally:
        cluster.stop()
    assert not cluster.is_running()


def test_postgres_refuses_a_port_in_use(pg_base_dir: Path, listening_socket: int) -> None:
    with pytest.raises(DevstackError, match=f"port {listening_socket} .* already in use"):
        PostgresCluster(pg_base_dir, port=listening_socket).start()


# -- supervisor --------------------------------------------------------------------------


def test_process_group_reports_a_dead_child_and_restarts_it(tmp_path: Path) -> None:
    group = ProcessGroup()
    port = free_port()
    server = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    try:
        group.add("web", server, None, tmp_path / "web.log")
        group.add(
            "dies", [sys.executable, "-c", "print('about to fail'); raise SystemExit(3)"], None, tmp_path / "d.log"
        )
        wait_http_ok(f"http://127.0.0.1:{port}/", 15)
        deadline = time.monotonic() + 10
        while group.is_running("dies") and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(DevstackError, match=r"dies \(pid \d+\) exited unexpectedly \(exit code 3\)") as failure:
            group.check()
        assert "about to fail" in str(failure.value)

        group.restart("dies")  # a restarted child counts as fresh
        group.stop("dies")
        group.check()

        old_pid = group.pid("web")
        group.kill("web")  # deliberate: check() stays quiet
        group.check()
        group.restart("web")
        assert group.pid("web") != old_pid
        wait_http_ok(f"http://127.0.0.1:{port}/", 15)
    finally:
        group.stop_all(timeout=5)
    assert not group.is_running("web")
    with pytest.raises(DevstackError, match="did not answer 200"):
        wait_http_ok(f"http://127.0.0.1:{port}/", 0.5)


def test_a_child_restarted_with_a_new_environment_keeps_it(tmp_path: Path) -> None:
    group = ProcessGroup()
    show = [sys.executable, "-c", "import os, time; print('fault', os.environ.get('FAULT', 'none'), flush=True); "
                                  "time.sleep(60)"]

    def fault_seen(name: str) -> str:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            lines = [line for line in group.log_tail(name).splitlines() if line.startswith("fault ")]
            if lines:
                return lines[-1]
            time.sleep(0.05)
        return "nothing printed"

    try:
        group.add("w", show, {"PATH": os.environ["PATH"]}, tmp_path / "w.log")
        assert fault_seen("w") == "fault none"
        group.restart("w", env={"PATH": os.environ["PATH"], "FAULT": "1"})
        assert fault_seen("w") == "fault 1"
        group.restart("w")  # the new environment is the child's now
        assert fault_seen("w") == "fault 1"
    finally:
        group.stop_all(timeout=5)


# -- token -------------------------------------------------------------------------------


def test_token_round_trips_with_pyjwt(tmp_path: Path) -> None:
    result = run_cli(
        "token", "--user", "u7", "--name", "Ann Example", "--office", "office-9", "--roles", "marketing, viewer",
        env=cli_env(CRM_JWT_SECRET=""), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n"  # only the token on stdout
    claims = jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"])
    assert {k: claims[k] for k in ("sub", "name", "office", "roles")} == {
        "sub": "u7",
        "name": "Ann Example",
        "office": "office-9",
        "roles": ["marketing", "viewer"],
    }
    assert claims["exp"] - claims["iat"] == 86400

    secret = "a-secret-from-the-environment-of-32b"
    result = run_cli("token", "--ttl", "60", env=cli_env(CRM_JWT_SECRET=secret), cwd=tmp_path)
    claims = jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"])
    assert claims["sub"] == "dev-user" and claims["roles"] == ["admin"] and claims["exp"] - claims["iat"] == 60
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(result.stdout.strip(), DEV_JWT_SECRET, algorithms=["HS256"])


# -- the stack CLI -----------------------------------------------------------------------

FAKE_SERVICE = r'''#!{python}
"""Stand-in for crm-service: records its environment, serves /healthz and /readyz."""
import http.server, json, os, signal, socket, sys, time, urllib.request

name, role = sys.argv[1], sys.argv[2]
with open(os.path.join(os.environ["FAKE_RECORD_DIR"], f"{{name}}-{{role}}.json"), "w") as fh:
    json.dump({{"argv": sys.argv[1:], "env": {{k: v for k, v in os.environ.items()
                                              if k.startswith(("CRM_", "PROMETHEUS_", "FAKE_"))}}}}, fh)
print(f"{{name}} {{role}}: starting", flush=True)
if role == "migrate":
    sys.exit(3 if os.environ.get("FAKE_FAIL_MIGRATE") == name else 0)
if role == "worker" and os.environ.get("FAKE_CRASH_WORKER") == name:
    time.sleep(1)
    print(f"{{name}} worker: simulated crash", flush=True)
    sys.exit(7)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
port = int(os.environ["CRM_WORKER_PORT"]) if role == "worker" else int(sys.argv[4].rsplit(":", 1)[1])

def ready():
    if os.environ.get("FAKE_NOT_READY") == name:
        return False
    if name == "gateway":
        for svc in ("CATALOGUE", "LEADS", "OPPORTUNITIES", "LINKING", "TRIGGERS"):
            try:
                urllib.request.urlopen(os.environ[f"CRM_{{svc}}_URL"] + "/readyz", timeout=2)
            except Exception:
                return False
        return True
    host, kport = os.environ["CRM_KAFKA_BOOTSTRAP"].rsplit(":", 1)
    try:
        socket.create_connection((host, int(kport)), timeout=1).close()
    except OSError:
        return False
    return True

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/healthz" or (self.path == "/readyz" and ready())
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(b"ok" if ok else b"not ready")
    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


class FakeRepo:
    """A throwaway repository root with a stand-in crm-service and free ports."""

    def __init__(self, root: Path, kafka_cache: Path) -> None:
        self.root = root
        (root / "services").mkdir(parents=True)
        (root / "Makefile").write_text("run:\n")
        self.bin = root / "bin" / "crm-service"
        self.bin.parent.mkdir()
        self.bin.write_text(FAKE_SERVICE.format(python=sys.executable))
        self.bin.chmod(0o755)
        self.records = root / "records"
        self.records.mkdir()
        names = [f"CRM_{name.upper()}_PORT" for name in ALL_SERVICES]
        names += [f"CRM_{name.upper()}_WORKER_PORT" for name in SERVICES]
        names += ["CRM_KAFKA_PORT", "CRM_KAFKA_CONTROLLER_PORT"]
        distinct: set[int] = set()
        while len(distinct) < len(names):  # the kernel may hand out a port twice
            distinct.add(free_port())
        self.ports = dict(zip(names, sorted(distinct), strict=True))
        self.env = cli_env(
            CRM_REPO_ROOT=str(root),
            CRM_SERVICE_BIN=str(self.bin),
            CRM_KAFKA_CACHE=str(kafka_cache),
            FAKE_RECORD_DIR=str(self.records),
            CRM_EXTRA_SETTING="passed-through",
            **{k: str(v) for k, v in self.ports.items()},
        )
        self.env.pop("CRM_JWT_SECRET", None)

    def cli(self, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=self.env | extra, cwd=self.root, timeout=timeout)

    def record(self, process: str) -> dict:
        return json.loads((self.records / f"{process}.json").read_text())

    def recorded_pids_gone(self) -> bool:
        kafka_pid_file = self.root / ".run" / "kafka" / "kafka.pid"
        return not kafka_pid_file.exists() and not any(port_in_use(p) for p in self.ports.values())


@pytest.fixture
def fake_repo(tmp_path: Path, kafka_jars: Path) -> Iterator[FakeRepo]:
    repo = FakeRepo(tmp_path / "repo", kafka_jars.parent.parent)
    yield repo
    # Whatever a failed test left running: the stack's own stop cleans it up.
    repo.cli("stop", timeout=60)


def test_run_without_crm_service_says_what_to_install(fake_repo: FakeRepo) -> None:
    result = fake_repo.cli("run", CRM_SERVICE_BIN=str(fake_repo.root / "bin" / "missing"), timeout=30)
    assert result.returncode == 1
    assert "not found" in result.stderr and "Install them" in result.stderr and "CRM_SERVICE_BIN" in result.stderr
    assert not (fake_repo.root / ".run" / "kafka").exists()  # failed before starting anything


def test_run_outside_the_repository_says_so(tmp_path: Path) -> None:
    env = cli_env()
    env.pop("CRM_REPO_ROOT", None)
    result = run_cli("status", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "Cannot find the repository root" in result.stderr and "CRM_REPO_ROOT" in result.stderr


def test_run_names_a_busy_port_and_its_variable(fake_repo: FakeRepo, listening_socket: int) -> None:
    started = time.monotonic()
    result = fake_repo.cli("run", CRM_GATEWAY_PORT=str(listening_socket), timeout=30)
    assert result.returncode == 1
    assert f"port {listening_socket} (gateway api)" in result.stderr
    assert "CRM_GATEWAY_PORT=<another port>" in result.stderr
    assert time.monotonic() - started < 10
    assert not (fake_repo.root / ".run" / "kafka" / "kafka.pid").exists()


def test_start_status_stop_and_the_service_environment(fake_repo: FakeRepo) -> None:
    result = fake_repo.cli("start", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    gateway = f"http://127.0.0.1:{fake_repo.ports['CRM_GATEWAY_PORT']}"
    assert f"gateway   {gateway}" in result.stdout and "export TOKEN=" in result.stdout
    token = result.stdout.split("export TOKEN=", 1)[1].split()[0]
    assert jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"])["roles"] == ["admin"]

    stack_pid = int((fake_repo.root / ".run" / "stack.pid").read_text())
    assert pid_alive(stack_pid)
    again = fake_repo.cli("run", timeout=30)
    assert again.returncode == 1 and "already running" in again.stderr

    status = fake_repo.cli("status", timeout=60)
    assert status.returncode == 0, status.stdout
    assert "gateway api" in status.stdout and "leads worker" in status.stdout and "down" not in status.stdout
    forkserver = json.loads((fake_repo.root / ".run" / "stack.json").read_text())["children"]["forkserver"]
    assert f"fork server              running (pid {forkserver})" in status.stdout

    run_dir = fake_repo.root / ".run"
    bootstrap = f"127.0.0.1:{fake_repo.ports['CRM_KAFKA_PORT']}"
    for name in SERVICES:
        migrate = fake_repo.record(f"{name}-migrate")
        assert migrate["argv"] == [name, "migrate"]
        assert "PROMETHEUS_MULTIPROC_DIR" not in migrate["env"]
        for role in ("api", "worker"):
            env = fake_repo.record(f"{name}-{role}")["env"]
            assert env["CRM_SERVICE_NAME"] == name
            assert env["CRM_JWT_SECRET"] == DEV_JWT_SECRET
            assert env["CRM_KAFKA_BOOTSTRAP"] == bootstrap
            assert env["CRM_LOG_FORMAT"] == "json"
            assert env["CRM_DATABASE_URL"] == f"sqlite:///{run_dir / 'db' / name}.sqlite3"
            assert env["CRM_WORKER_PORT"] == str(fake_repo.ports[f"CRM_{name.upper()}_WORKER_PORT"])
            assert env["PROMETHEUS_MULTIPROC_DIR"] == str(run_dir / "metrics" / f"{name}-{role}")
            assert env["CRM_EXTRA_SETTING"] == "passed-through"
            assert Path(env["PROMETHEUS_MULTIPROC_DIR"]).is_dir()
        port = fake_repo.ports[f"CRM_{name.upper()}_PORT"]
        assert fake_repo.record(f"{name}-api")["argv"] == [name, "api", "--bind", f"127.0.0.1:{port}"]
        assert fake_repo.record(f"{name}-worker")["argv"] == [name, "worker"]
        assert (run_dir / "logs" / f"{name}-api.log").is_file()
    gateway_env = fake_repo.record("gateway-api")["env"]
    assert not (fake_repo.records / "gateway-worker.json").exists()
    assert not (fake_repo.records / "gateway-migrate.json").exists()
    assert "CRM_DATABASE_URL" not in gateway_env
    for name in SERVICES:
        assert (
            gateway_env[f"CRM_{name.upper()}_URL"] == f"http://127.0.0.1:{fake_repo.ports[f'CRM_{name.upper()}_PORT']}"
        )

    stopped = fake_repo.cli("stop", timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert not pid_alive(stack_pid)
    assert not (run_dir / "stack.pid").exists()
    assert fake_repo.recorded_pids_gone()
    assert fake_repo.cli("status", timeout=60).returncode == 1


def test_run_stops_everything_on_sigint_and_exits_0(fake_repo: FakeRepo) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "crm_devstack", "run"],
        env=fake_repo.env,
        cwd=fake_repo.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        ready = fake_repo.root / ".run" / "stack.ready"
        deadline = time.monotonic() + 180
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.exists(), proc.stdout.read() if proc.poll() is not None else "not ready in time"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output
    assert "CRM platform is up" in output and "stop requested" in output
    assert fake_repo.recorded_pids_gone()
    assert not (fake_repo.root / ".run" / "stack.pid").exists()


def test_run_reports_a_crashed_worker_with_its_log_and_stops(fake_repo: FakeRepo) -> None:
    result = fake_repo.cli("run", FAKE_CRASH_WORKER="linking", timeout=180)
    assert result.returncode == 1
    assert "linking-worker" in result.stderr and "exited unexpectedly (exit code 7)" in result.stderr
    assert "linking worker: simulated crash" in result.stderr
    assert fake_repo.recorded_pids_gone()


def test_run_names_the_service_that_is_not_ready(fake_repo: FakeRepo) -> None:
    result = fake_repo.cli("run", "--ready-timeout", "4", FAKE_NOT_READY="opportunities", timeout=180)
    assert result.returncode == 1
    assert "did not become ready" in result.stderr
    assert "opportunities is not ready" in result.stderr and "HTTP 503" in result.stderr
    assert "leads is not ready" not in result.stderr
    assert "opportunities api: starting" in result.stderr  # the tail of its log
    assert fake_repo.recorded_pids_gone()


def test_run_reports_a_failed_migration(fake_repo: FakeRepo) -> None:
    result = fake_repo.cli("run", FAKE_FAIL_MIGRATE="leads", timeout=180)
    assert result.returncode == 1
    assert "leads migrate failed (exit code 3)" in result.stderr and "leads migrate: starting" in result.stderr
    assert not (fake_repo.records / "leads-api.json").exists()
    assert fake_repo.recorded_pids_gone()


def test_stop_cleans_up_a_broker_left_by_a_killed_stack(fake_repo: FakeRepo) -> None:
    result = fake_repo.cli("start", timeout=300)
    assert result.returncode == 0, result.stderr
    run_dir = fake_repo.root / ".run"
    stack_pid = int((run_dir / "stack.pid").read_text())
    kafka_pid = int((run_dir / "kafka" / "kafka.pid").read_text())
    os.kill(stack_pid, signal.SIGKILL)  # no clean-up by the stack itself
    deadline = time.monotonic() + 10
    while pid_alive(stack_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid_alive(kafka_pid)  # Kafka outlives its starter by design (pid file)
    stopped = fake_repo.cli("stop", timeout=60)
    assert stopped.returncode == 0
    assert "stopped a Kafka broker left running" in stopped.stdout
    assert not pid_alive(kafka_pid)
    # The services died with their supervisor (parent-death signal).
    deadline = time.monotonic() + 15
    while not fake_repo.recorded_pids_gone() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fake_repo.recorded_pids_gone()
