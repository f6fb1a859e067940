"""A throwaway PostgreSQL cluster for tests and development, without Docker.

It runs the distribution's server binaries on a private data directory and port,
tuned for speed instead of durability (no fsync): never point it at data you keep.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .errors import DevstackError
from .ports import free_port, port_in_use
from .processes import pid_alive, pid_cmdline, read_pid_file, run_command, tail_file, wait_exit

_INSTALL_HINT = "PostgreSQL server binaries not found: apt-get install -y postgresql"
_SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,62}$")
# A Unix socket path is limited to 107 bytes (sun_path).
_MAX_SOCKET_PATH = 107


def find_postgres_bindir() -> Path:
    """Return the folder holding initdb, pg_ctl and postgres.

    `pg_config --bindir` first (on Debian it may name /usr/bin, which only has the
    client wrappers, so the folder must really hold the server tools), else the highest
    /usr/lib/postgresql/<version>/bin. Raises DevstackError when there is none.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                candidates.append(Path(out))

    def version_key(path: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version_key, reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in _SERVER_TOOLS):
            return bindir
    raise DevstackError(_INSTALL_HINT)


class PostgresCluster:
    """One PostgreSQL server on 127.0.0.1:<port> with its data in `base_dir/data`.

    Trust authentication for the `postgres` superuser, UTF-8 with the C locale,
    fsync off. As root the server runs as the `postgres` OS user (PostgreSQL refuses to
    run as root), so `base_dir` is handed to that user. An existing data directory is
    reused, so a cluster can outlive one test session.
    """

    def __init__(self, base_dir: Path, port: int = 0) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "postgres.log"
        self.bindir = find_postgres_bindir()
        self._port = port or free_port()
        self._as_root = os.geteuid() == 0
        self.last_start_seconds: float | None = None

    @property
    def port(self) -> int:
        """The TCP port the server listens on (127.0.0.1 only)."""
        return self._port

    def url(self, name: str) -> str:
        """The SQLAlchemy URL of database `name` (psycopg 3 driver)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self._port}/{name}"

    def dsn(self, name: str) -> str:
        """The libpq connection string of database `name`, for psycopg.connect()."""
        return f"host=127.0.0.1 port={self._port} user=postgres dbname={name} connect_timeout=10"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while the server runs, else None."""
        pid = read_pid_file(self.data_dir / "postmaster.pid")
        if pid is None or not pid_alive(pid):
            return None
        # A stale postmaster.pid may name a pid reused by something else.
        cmdline = pid_cmdline(pid)
        if cmdline and not any("postgres" in part for part in cmdline[:1]):
            return None
        return pid

    def is_running(self) -> bool:
        """Return True while the server process is alive."""
        return self.pid is not None

    def start(self, timeout: float = 30) -> None:
        """Create the cluster on first use, start the server and wait until it accepts.

        Raises DevstackError (with the tail of postgres.log) when the port is taken,
        initdb or pg_ctl fails, or the server is not ready within `timeout` seconds.
        """
        started = time.monotonic()
        if self.is_running():
            raise DevstackError(f"PostgreSQL on {self.data_dir} is already running (pid {self.pid}); stop() it first.")
        if port_in_use(self._port):
            raise DevstackError(f"PostgreSQL port {self._port} on 127.0.0.1 is already in use; choose another port.")
        self._prepare_base_dir()
        if not (self.data_dir / "PG_VERSION").is_file():
            if self.data_dir.exists() and any(self.data_dir.iterdir()):
                raise DevstackError(
                    f"{self.data_dir} exists but is not a PostgreSQL data directory; remove it or use another base_dir."
                )
            self._run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                what="initdb",
                timeout=max(timeout, 60),
            )
        remaining = max(timeout - (time.monotonic() - started), 5)
        self._pg_ctl("start", timeout=remaining)
        self.last_start_seconds = time.monotonic() - started

    def stop(self, timeout: float = 30) -> None:
        """Stop the server (fast shutdown: open sessions are disconnected).

        If pg_ctl cannot stop it in time, the postmaster is shut down with SIGQUIT and
        then SIGKILL, so no server is ever left behind. Does nothing when not running.
        """
        if not self.is_running():
            return
        try:
            self._run(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "stop",
                ],
                what="pg_ctl stop",
                timeout=timeout + 10,
            )
        except DevstackError:
            pid = self.pid
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGQUIT)  # PostgreSQL's "immediate shutdown"
                    if not wait_exit(pid, 5):
                        os.kill(pid, signal.SIGKILL)
                        wait_exit(pid, 5)
            if self.is_running():
                raise

    def restart(self, timeout: float = 30) -> None:
        """Restart the server (fast mode): every open connection is cut, data is kept."""
        if not self.is_running():
            self.start(timeout=timeout)
            return
        self._pg_ctl("restart", timeout=timeout, extra=["-m", "fast"])

    def create_database(self, name: str) -> str:
        """Create database `name` unless it exists; return its SQLAlchemy URL."""
        import psycopg
        from psycopg import errors, sql

        if not _DB_NAME.match(name):
            raise DevstackError(f"Invalid database name {name!r}: use letters, digits, '_' and '-' (max 63).")
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
                    if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is None:
                        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
                return self.url(name)
            except errors.DuplicateDatabase:
                return self.url(name)  # created concurrently by someone else
            except errors.ObjectInUse:
                # CREATE DATABASE copies template1 and fails while another session is
                # connected to it (e.g. a concurrent CREATE DATABASE): try again.
                if time.monotonic() >= deadline:
                    raise DevstackError(
                        f"Could not create database {name!r}: template1 stayed busy for 30 s."
                    ) from None
                time.sleep(0.2)
            except psycopg.OperationalError as exc:
                raise DevstackError(
                    f"Cannot connect to PostgreSQL on 127.0.0.1:{self._port} to create {name!r}: {exc}\n"
                    f"--- last lines of {self.log_file} ---\n{tail_file(self.log_file, 20)}"
                ) from exc

    def drop_database(self, name: str) -> None:
        """Drop database `name` if it exists, disconnecting its sessions."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))

    def __enter__(self) -> PostgresCluster:
        if not self.is_running():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------

    def _server_options(self) -> str:
        socket_dir = str(self.base_dir)
        if len(f"{socket_dir}/.s.PGSQL.{self._port}") > _MAX_SOCKET_PATH:
            # Too long for a Unix socket: TCP only. pg_ctl -w reads postmaster.pid, so
            # it does not need the socket either.
            socket_dir = ""
        return " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-p {self._port}",
                f"-k {shlex.quote(socket_dir)}",
                # Throwaway data: durability costs time and buys nothing here.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )

    def _pg_ctl(self, action: str, *, timeout: float, extra: list[str] | None = None) -> None:
        argv = [
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            str(max(int(timeout), 1)),
            "-l",
            str(self.log_file),
            *(extra or []),
            "-o",
            self._server_options(),
            action,
        ]
        try:
            self._run(argv, what=f"pg_ctl {action}", timeout=timeout + 10)
        except DevstackError as exc:
            raise DevstackError(
                f"{exc}\n--- last lines of {self.log_file} ---\n{tail_file(self.log_file, 30)}"
            ) from None

    def _run(self, argv: list[str], *, what: str, timeout: float) -> str:
        if self._as_root:
            # initdb and postgres refuse to run as root.
            argv = ["runuser", "-u", "postgres", "--", *argv]
        # cwd: the server user may not be allowed into the caller's cwd (e.g. /root).
        return run_command(argv, what=what, timeout=timeout, cwd=self.base_dir)

    def _prepare_base_dir(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if not self._as_root:
            return
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise DevstackError(
                "Running as root, PostgreSQL must run as the `postgres` OS user, which does not exist "
                "(apt-get install -y postgresql creates it), or run as a non-root user."
            ) from None
        os.chown(self.base_dir, user.pw_uid, user.pw_gid)
        probe = subprocess.run(
            ["runuser", "-u", "postgres", "--", "test", "-w", str(self.base_dir), "-a", "-x", str(self.base_dir)],
            capture_output=True,
            timeout=10,
        )
        if probe.returncode != 0:
            raise DevstackError(
                f"The `postgres` OS user cannot reach {self.base_dir}: a parent folder is not "
                "traversable (for example /tmp/pytest-of-root, mode 0700, above pytest's tmp_path). "
                "Use a base_dir under a world-traversable folder (e.g. /tmp/<name>) or `chmod o+x` the parents."
            )
