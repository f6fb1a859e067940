"""A real single-node Kafka broker for development and tests, without Docker.

The broker's jars come from Maven Central (`ensure_kafka_jars`), the broker runs as a
plain JVM in KRaft combined mode (`KafkaBroker`): one process that is broker and
controller at once, listening on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import DevstackError
from .ports import free_port, port_accepts, port_in_use
from .processes import (
    describe_exit,
    pid_alive,
    pid_cmdline,
    read_pid_file,
    run_command,
    signal_group,
    tail_file,
    terminate_group,
    wait_exit,
)

KAFKA_VERSION = "4.1.1"

DEFAULT_JVM_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
)
"""The broker's JVM tuning besides the heap, unless a caller gives its own (the tests' and the bench's)."""

_log = logging.getLogger(__name__)

_INSTALL_HINT = "Install a JDK 17 (or newer) and Maven, e.g. `apt-get install -y openjdk-17-jre-headless maven`."
_MARKER = ".complete"
# Jars whose absence means the fetch did not give a runnable broker.
_REQUIRED_JARS = (f"kafka_2.13-{KAFKA_VERSION}.jar", "kafka-clients-", "log4j-core-", "log4j-slf4j-impl-")


def find_java() -> str | None:
    """Return the `java` executable: $JAVA_HOME/bin/java, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("java")


def cached_kafka_jars(cache_root: Path) -> Path | None:
    """The jar folder in `cache_root` if a complete fetch is there, else None."""
    version_dir = Path(cache_root).resolve() / f"kafka-{KAFKA_VERSION}"
    libs = version_dir / "libs"
    return libs if (version_dir / _MARKER).is_file() and libs.is_dir() else None


def ensure_kafka_jars(cache_root: Path, *, timeout: float = 600) -> Path:
    """Return a folder of jars that runs Kafka `KAFKA_VERSION`, fetching it if needed.

    The jars live in `cache_root/kafka-<version>/libs`. They are resolved with
    `mvn dependency:copy-dependencies` from the POM shipped in this package into a
    temporary folder that is renamed into place only when complete, and a marker file
    is written after that: a later call that sees the marker returns at once, and an
    interrupted fetch never leaves a half-filled folder that looks usable. A file lock
    makes concurrent callers (parallel test sessions, `make run` twice) fetch once.

    Raises DevstackError when `java` or `mvn` is missing or the fetch fails.
    """
    cached = cached_kafka_jars(cache_root)
    if cached is not None:
        return cached
    version_dir = Path(cache_root).resolve() / f"kafka-{KAFKA_VERSION}"
    libs = version_dir / "libs"
    marker = version_dir / _MARKER

    mvn = shutil.which("mvn")
    java = find_java()
    missing = [name for name, path in (("java", java), ("mvn", mvn)) if path is None]
    if missing or mvn is None:
        raise DevstackError(
            f"Cannot fetch Kafka {KAFKA_VERSION}: {' and '.join(missing)} not found on PATH. " + _INSTALL_HINT
        )

    version_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(version_dir / ".lock", timeout=timeout + 60):
        if cached_kafka_jars(cache_root) is not None:
            return libs  # another process fetched it while we waited for the lock
        work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=version_dir))
        try:
            pom = work / "pom.xml"
            pom.write_bytes(resources.files(__package__).joinpath("resources/kafka-runtime.pom.xml").read_bytes())
            fetched = work / "libs"
            env = dict(os.environ)
            if java and "JAVA_HOME" not in env:
                # mvn finds java on PATH too; pinning it keeps both on the same JDK.
                env["JAVA_HOME"] = str(Path(os.path.realpath(java)).parent.parent)
            started = time.monotonic()
            try:
                run_command(
                    [
                        mvn,
                        "-B",
                        "-q",
                        "-f",
                        str(pom),
                        "dependency:copy-dependencies",
                        "-DincludeScope=runtime",
                        f"-DoutputDirectory={fetched}",
                    ],
                    what=f"Fetching Kafka {KAFKA_VERSION} jars from Maven Central (mvn)",
                    timeout=timeout,
                    cwd=work,
                    env=env,
                )
            except DevstackError as exc:
                raise DevstackError(
                    f"{exc}\nCheck that Maven Central is reachable (proxy settings in "
                    f"~/.m2/settings.xml) and that mvn runs on a JDK 17+. {_INSTALL_HINT}"
                ) from None
            names = [p.name for p in fetched.glob("*.jar")]
            absent = [req for req in _REQUIRED_JARS if not any(n.startswith(req) for n in names)]
            if absent:
                raise DevstackError(
                    f"mvn finished but {fetched} lacks {', '.join(absent)} "
                    f"({len(names)} jars fetched); the POM in crm_devstack/resources is wrong."
                )
            if libs.exists():
                shutil.rmtree(libs)  # left by a fetch that died before writing the marker
            os.rename(fetched, libs)
            _write_atomic(marker, f"kafka {KAFKA_VERSION}: {len(names)} jars\n")
            _log.info("fetched %d Kafka jars in %.1f s", len(names), time.monotonic() - started)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return libs


@contextlib.contextmanager
def _exclusive_lock(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive fcntl lock on `path`; give up after `timeout` seconds."""
    with open(path, "a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DevstackError(
                        f"Gave up after {timeout:g} s waiting for another process that holds "
                        f"{path} (a Kafka fetch in progress?)."
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 without padding.

    Same format as `StorageTool random-uuid`, without paying for a JVM start. Kafka
    never hands out ids starting with '-' (they look like CLI options), nor do we.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _read_properties(path: Path) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


class KafkaBroker:
    """A single-node KRaft Kafka (broker and controller in one JVM) on 127.0.0.1.

    All state lives in `data_dir`: `server.properties`, `log4j2.properties`,
    `cluster.id`, the topic data in `data/`, the broker's log `kafka.log`, its
    stdout/stderr `kafka.out` and `kafka.pid` while it runs. Starting again on the same
    `data_dir` keeps the topics and committed offsets.

    Ports given as 0 are picked when the object is created and kept, so `restart()`
    comes back on the same address and clients can reconnect. The JVM gets `-Xms<initial_heap>`
    (default: the same as `heap`), `-Xmx<heap>` and `jvm_options` (default: G1 tuned for short
    pauses; `make run` starts a smaller dev broker, crm_devstack.stack.DEV_BROKER).
    """

    def __init__(
        self,
        data_dir: Path,
        jars_dir: Path,
        port: int = 0,
        controller_port: int = 0,
        heap: str = "256m",
        *,
        jvm_options: Sequence[str] = DEFAULT_JVM_OPTIONS,
        initial_heap: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.jars_dir = Path(jars_dir).resolve()
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        if self.controller_port == self.port:
            raise DevstackError(f"Kafka port and controller port are both {self.port}; they must differ.")
        self.heap = heap
        self.initial_heap = initial_heap or heap
        self.jvm_options = tuple(jvm_options)
        self.log_dir = self.data_dir / "data"
        self.properties_file = self.data_dir / "server.properties"
        self.log4j_file = self.data_dir / "log4j2.properties"
        self.cluster_id_file = self.data_dir / "cluster.id"
        self.log_file = self.data_dir / "kafka.log"
        self.out_file = self.data_dir / "kafka.out"
        self.pid_file = pid_file_for(self.data_dir)
        self.last_start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._attached_pid: int | None = None
        self._pending_archive: tuple[Path, Path] | None = None
        self._log_offsets = (0, 0)

    # -- public API -------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """The bootstrap.servers value for clients: "127.0.0.1:<port>"."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker JVM's pid while it runs (also its process group id), else None."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        if self._attached_pid is not None and pid_alive(self._attached_pid):
            return self._attached_pid
        return None

    def is_running(self) -> bool:
        """Return True while the broker process is alive (it may not serve yet)."""
        return self.pid is not None

    @classmethod
    def attach(cls, data_dir: Path, jars_dir: Path | None = None) -> KafkaBroker:
        """Return a handle on a broker that another process started on `data_dir`.

        Ports come from its server.properties and the pid from `kafka.pid`; `stop()`,
        `kill()` and `is_running()` then work as if this process had started it.
        Raises DevstackError when no such broker is running.
        """
        data_dir = Path(data_dir).resolve()
        pid = _live_broker_pid(data_dir)
        if pid is None:
            raise DevstackError(f"No Kafka broker started by crm_devstack is running on {data_dir}.")
        props = _read_properties(data_dir / "server.properties")
        port = int(props["advertised.listeners"].rsplit(":", 1)[1])
        cport = int(props["controller.quorum.voters"].rsplit(":", 1)[1])
        broker = cls(data_dir, jars_dir or data_dir, port=port, controller_port=cport)
        broker._attached_pid = pid
        return broker

    def start(self, timeout: float = 60) -> None:
        """Start the broker and return once an admin client can list its topics.

        Formats the storage on first use (cluster id kept in `cluster.id`), then runs
        the JVM in its own process group. Raises DevstackError, with the last lines of
        kafka.out and kafka.log, if a port is taken, the JVM exits, or the broker does
        not serve within `timeout` seconds (the JVM is then killed).
        """
        started = time.monotonic()
        if self.is_running():
            raise DevstackError(f"Kafka broker on {self.data_dir} is already running (pid {self.pid}).")
        other = _live_broker_pid(self.data_dir)
        if other is not None:
            raise DevstackError(
                f"Another process already runs a Kafka broker on {self.data_dir} (pid {other}); "
                "stop it first (crm_devstack.kafka.stop_from_pid_file)."
            )
        for port, what in ((self.port, "Kafka port"), (self.controller_port, "Kafka controller port")):
            if port_in_use(port):
                raise DevstackError(f"{what} {port} on 127.0.0.1 is already in use; choose another port.")
        java = find_java()
        if java is None:
            raise DevstackError(f"Cannot start Kafka: `java` not found on PATH. {_INSTALL_HINT}")
        if not any(self.jars_dir.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
            raise DevstackError(
                f"{self.jars_dir} holds no kafka_2.13-{KAFKA_VERSION}.jar; "
                "get the jars with crm_devstack.kafka.ensure_kafka_jars()."
            )

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._format_storage(java, timeout=max(timeout - (time.monotonic() - started), 5))

        self._log_offsets = (_size(self.out_file), _size(self.log_file))
        with open(self.out_file, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting Kafka {KAFKA_VERSION} ===\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                [java, *self._jvm_options(java), "kafka.Kafka", str(self.properties_file)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        self._attached_pid = None
        _write_atomic(self.pid_file, f"{self._proc.pid}\n")
        try:
            self._wait_until_serving(deadline=started + timeout)
        except BaseException:
            self.kill()
            raise
        self.last_start_seconds = time.monotonic() - started
        _log.info("Kafka up on %s in %.1f s", self.bootstrap, self.last_start_seconds)

    def stop(self, timeout: float = 20) -> None:
        """Stop the broker cleanly (SIGTERM), or SIGKILL it after `timeout` seconds."""
        target = self._target()
        clean = terminate_group(target, timeout) if target is not None else False
        self._forget()
        if clean:
            self._adopt_class_archive()

    def kill(self) -> None:
        """SIGKILL the broker at once, as a crash would (for fault-injection tests)."""
        target = self._target()
        if target is not None:
            pid = target.pid if isinstance(target, subprocess.Popen) else target
            signal_group(pid, signal.SIGKILL)
            wait_exit(target, 10)
        self._forget()
        self._pending_archive = None  # a killed JVM writes no class archive

    def restart(self, timeout: float = 60) -> None:
        """Stop the broker if it runs, then start it again on the same ports and data."""
        self.stop()
        self.start(timeout=timeout)

    def __enter__(self) -> KafkaBroker:
        if not self.is_running():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------

    def _target(self) -> subprocess.Popen[bytes] | int | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._attached_pid is not None and pid_alive(self._attached_pid):
            return self._attached_pid
        return None

    def _forget(self) -> None:
        if self._proc is not None:
            self._proc.poll()  # reap
        self._attached_pid = None
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def _class_archive(self, java: str) -> Path:
        """Where the JVM class-data archive (CDS) for these jars and this JDK lives.

        Loading Kafka's classes from an archive instead of 46 jars takes about 1.5 s
        off every start. The name includes the JDK's identity because an archive only
        fits the exact JVM build that wrote it (a stale one is ignored with a warning).
        """
        real = os.path.realpath(java)
        key = hashlib.sha256(f"{real}:{os.stat(real).st_mtime_ns}".encode()).hexdigest()[:12]
        return self.jars_dir.parent / f"kafka-{KAFKA_VERSION}-cds-{key}.jsa"

    def _class_archive_options(self, java: str, *, create: bool) -> list[str]:
        archive = self._class_archive(java)
        if archive.is_file():
            return [f"-XX:SharedArchiveFile={archive}"]
        if create and os.access(archive.parent, os.W_OK):
            # The JVM writes the archive when it exits normally; stop() moves it into
            # place, so a broker that was killed never leaves a half-written archive.
            self._pending_archive = (self.data_dir / "kafka-cds.jsa.tmp", archive)
            with contextlib.suppress(FileNotFoundError):
                self._pending_archive[0].unlink()
            return [f"-XX:ArchiveClassesAtExit={self._pending_archive[0]}"]
        return []

    def _adopt_class_archive(self) -> None:
        if self._pending_archive is None:
            return
        written, archive = self._pending_archive
        self._pending_archive = None
        if not written.is_file() or written.stat().st_size == 0:
            return
        try:
            staging = archive.with_name(f".{archive.name}.{os.getpid()}")
            shutil.move(written, staging)  # may cross file systems: data dir vs. jar cache
            os.replace(staging, archive)
        except OSError as exc:  # only a missed speed-up
            _log.warning("could not keep the Kafka class archive %s: %s", archive, exc)

    def _jvm_options(self, java: str) -> list[str]:
        return [
            *self._class_archive_options(java, create=True),
            f"-Xms{self.initial_heap}",
            f"-Xmx{self.heap}",
            *self.jvm_options,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            "-cp",
            f"{self.jars_dir}/*",
        ]

    def _write_config(self) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            # Topics are created on purpose by the services, never by a typo.
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            # One broker: internal topics can only have one replica. Few partitions make
            # the first consumer group and the first transaction come up faster.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "5",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Otherwise a new consumer group waits 3 s before its first assignment.
            "group.initial.rebalance.delay.ms": "0",
            # After a crash (kill()) the controller refuses the broker's new registration
            # until the old one's session expires: 9 s by default, 2 s here.
            "broker.session.timeout.ms": "2000",
            "broker.heartbeat.interval.ms": "500",
            # Small segments and cleaner buffer: a dev broker with a 256 MB heap.
            "log.segment.bytes": str(16 * 1024 * 1024),
            "offsets.topic.segment.bytes": str(16 * 1024 * 1024),
            "transaction.state.log.segment.bytes": str(16 * 1024 * 1024),
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "2",
        }
        text = "# Written by crm_devstack.kafka; rewritten on every start.\n"
        text += "".join(f"{key}={value}\n" for key, value in props.items())
        _write_atomic(self.properties_file, text)
        template = resources.files(__package__).joinpath("resources/kafka-log4j2.properties").read_text()
        _write_atomic(self.log4j_file, template.replace("@LOG_FILE@", str(self.log_file)))

    def _cluster_id(self) -> str:
        if self.cluster_id_file.is_file():
            cid = self.cluster_id_file.read_text().strip()
            if cid:
                return cid
        cid = _new_cluster_id()
        _write_atomic(self.cluster_id_file, cid + "\n")
        return cid

    def _format_storage(self, java: str, timeout: float) -> None:
        meta = self.log_dir / "meta.properties"
        if meta.is_file():
            # Already formatted: skipping StorageTool saves a JVM start on every restart.
            # Keep cluster.id in step with what the storage really holds.
            stored = _read_properties(meta).get("cluster.id")
            if stored and stored != self._cluster_id():
                _write_atomic(self.cluster_id_file, stored + "\n")
            return
        run_command(
            [
                java,
                "-Xmx128m",
                "-XX:TieredStopAtLevel=1",
                "-XX:+UseSerialGC",
                *self._class_archive_options(java, create=False),
                f"-Dlog4j2.configurationFile={self.log4j_file}",
                "-cp",
                f"{self.jars_dir}/*",
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                "-t",
                self._cluster_id(),
                "-c",
                str(self.properties_file),
            ],
            what="Formatting Kafka storage (kafka.tools.StorageTool format)",
            timeout=timeout,
            cwd=self.data_dir,
            log_path=self.out_file,
        )

    def _wait_until_serving(self, deadline: float) -> None:
        """Poll until the broker answers a metadata request listing itself."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        assert self._proc is not None
        admin: AdminClient | None = None
        last_error = "the port never accepted a connection"
        while True:
            if self._proc.poll() is not None:
                raise self._start_error(f"Kafka exited during start-up ({describe_exit(self._proc.returncode)})")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._start_error(f"Kafka did not serve on {self.bootstrap} in time ({last_error})")
            # Only talk Kafka once the port accepts: librdkafka would otherwise log a
            # "connection refused" line per attempt.
            if port_accepts(self.port, timeout=min(0.5, remaining)):
                if admin is None:
                    config: dict[str, Any] = {
                        "bootstrap.servers": self.bootstrap,
                        "reconnect.backoff.ms": 50,
                        "reconnect.backoff.max.ms": 200,
                        # librdkafka's own lines go to Python logging, not our stderr.
                        "logger": logging.getLogger(__name__ + ".librdkafka"),
                    }
                    admin = AdminClient(config)
                try:
                    metadata = admin.list_topics(timeout=max(min(2.0, remaining), 0.1))
                    if metadata.brokers:
                        return
                    last_error = "metadata lists no broker yet"
                except KafkaException as exc:
                    last_error = f"metadata request failed: {exc}"
            time.sleep(0.1)

    def _start_error(self, headline: str) -> DevstackError:
        # Only what this start wrote: both files keep earlier runs.
        out = tail_file(self.out_file, 30, start=self._log_offsets[0])
        log = tail_file(self.log_file, 30, start=self._log_offsets[1])
        hint = ""
        if "UnsupportedClassVersionError" in out:
            hint = f"\nKafka {KAFKA_VERSION} needs Java 17 or newer. {_INSTALL_HINT}"
        return DevstackError(
            f"{headline}.\n--- last lines of {self.out_file} ---\n{out}\n"
            f"--- last lines of {self.log_file} ---\n{log}{hint}"
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def pid_file_for(data_dir: Path) -> Path:
    """Where a broker started on `data_dir` records its pid."""
    return Path(data_dir).resolve() / "kafka.pid"


def _live_broker_pid(data_dir: Path) -> int | None:
    """The pid in data_dir's pid file if it is a live broker for this data_dir.

    The command line is checked so that a pid reused by an unrelated process after a
    crash is never signalled.
    """
    data_dir = Path(data_dir).resolve()
    pid = read_pid_file(pid_file_for(data_dir))
    if pid is None or not pid_alive(pid):
        return None
    cmdline = pid_cmdline(pid)
    if "kafka.Kafka" in cmdline and str(data_dir / "server.properties") in cmdline:
        return pid
    return None


def stop_from_pid_file(data_dir: Path, timeout: float = 20) -> bool:
    """Stop a broker that a KafkaBroker (in any process) started on `data_dir`.

    Returns True when a live broker was found and stopped, False when there was none;
    a stale pid file is removed either way.
    """
    pid = _live_broker_pid(data_dir)
    if pid is not None:
        terminate_group(pid, timeout)
    with contextlib.suppress(FileNotFoundError):
        pid_file_for(data_dir).unlink()
    return pid is not None
