"""The fork server of a local platform: one process that imports the libraries every service
uses, once, and starts the services' processes as forks of itself.

A service process started fresh imports and builds about 55 MB of Python objects of its own, most
of them the same libraries in every process (SQLAlchemy, Flask, confluent-kafka, protobuf, ...).
Forked from here they share those pages with this process and with each other, copy-on-write
(``gc.freeze`` keeps the collector from writing to them); each process still is a process of its
own, in a session of its own, as before. Measured with ``crm_devstack.bench.memory_figure``
(README, issue 19).

What is imported here is third-party code only, and never ``prometheus_client`` or a ``crm_*``
package that defines metrics: prometheus-client decides at import whether it writes
multiprocess files (``PROMETHEUS_MULTIPROC_DIR``), which differs per process.

Protocol (``crm_devstack.forked`` is the other end), over a ``SOCK_SEQPACKET`` socket pair whose
end is this program's one argument (a file descriptor), one JSON object per message:

- in: ``{"argv": [...], "env": {...}, "cwd": "..."}`` with the log's file descriptor attached;
- out: ``{"pid": N}`` or ``{"error": "..."}``, and ``{"exit": N, "returncode": R}`` when a child ends
  (``R`` as ``subprocess`` gives it: negative for a signal).

The crm-service program of this installation runs in the forked process itself (``crm_kit.cli``,
gunicorn included); any other program is executed there (fork and exec, as ``subprocess`` does).
The server ends when the other end closes; its children get SIGTERM when it ends
(``PR_SET_PDEATHSIG``), as the supervisor's own children do when the supervisor ends.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import selectors
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from crm_devstack.processes import die_with_parent

PRELOAD = (
    "sqlalchemy", "sqlalchemy.orm", "sqlalchemy.dialects.postgresql", "sqlalchemy.dialects.sqlite",
    "sqlalchemy.ext.compiler", "flask", "werkzeug", "werkzeug.routing", "jinja2", "jinja2.sandbox", "markupsafe",
    "itsdangerous", "click", "blinker", "marshmallow", "apispec", "apispec.ext.marshmallow", "confluent_kafka",
    "google.protobuf.message", "google.protobuf.json_format", "google.protobuf.descriptor_pool", "jwt",
    "cryptography.fernet", "cryptography.hazmat.primitives.hashes", "lark", "requests", "urllib3",
    "gunicorn.app.wsgiapp", "gunicorn.arbiter", "gunicorn.workers.gthread", "gunicorn.glogging",
    "pythonjsonlogger.json", "crm_events", "crm_events.envelope", "crm_events.topics", "sqlite3", "asyncio",
    "email.message", "http.client", "http.server", "logging.config", "logging.handlers", "multiprocessing", "uuid",
    "decimal", "fractions", "statistics", "csv", "zipfile", "difflib", "ipaddress", "pickle", "subprocess", "tempfile",
)
"""Modules imported before the first fork (those every service or most of them import)."""

NEVER = ("prometheus_client", "crm_kit", "crm_kafka")
"""Modules that must not be imported before a fork: they keep per-process state from import time."""

MAX_MESSAGE = 1 << 20
CRM_SERVICE = "crm-service"


def preload(modules: tuple[str, ...] = PRELOAD) -> list[str]:
    """Import ``modules`` (the ones not installed are skipped); returns those imported. Raises
    RuntimeError if that pulled in a module of ``NEVER``."""
    imported = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        imported.append(name)
    early = sorted(name for name in sys.modules if name.split(".")[0] in NEVER)
    if early:
        raise RuntimeError(f"preloading imported {', '.join(early)}, which must be imported after the fork")
    return imported


def _in_process(argv: list[str]) -> bool:
    """True for this installation's crm-service (run in the fork itself); else it is executed."""
    own = Path(sys.executable).parent / CRM_SERVICE
    try:
        return Path(argv[0]).resolve() == own.resolve()
    except (OSError, IndexError):
        return False


def _child(request: dict[str, Any], log_fd: int, parent_death: Any, started: int) -> None:
    """In the forked process: become the requested program; never returns. Closing ``started``
    tells the server the process is in its own session (a signal to its group reaches it)."""
    code = 1
    try:
        os.setsid()
        parent_death()
        os.close(started)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the server's socket, the other forks' pidfds
        if request.get("cwd"):
            os.chdir(request["cwd"])
        env = {str(k): str(v) for k, v in request["env"].items()}
        argv = [str(part) for part in request["argv"]]
        if not _in_process(argv):
            os.execvpe(argv[0], argv, env)  # noqa: S606 - a command line of our own supervisor, no shell
        os.environ.clear()
        os.environ.update(env)
        sys.argv = argv
        sys.path[0] = os.path.dirname(argv[0])  # as for the program run as a script
        from crm_kit.cli import main

        code = main(argv[1:], in_process=True)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001 - whatever it was goes to the log, then the process ends
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001,S110 - a closed stream at the very end
                pass
        os._exit(code)


class Server:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ, None)
        self.parent_death = die_with_parent()

    def send(self, message: dict[str, Any]) -> None:
        self.sock.send(json.dumps(message).encode())

    def serve(self) -> int:
        while True:
            for key, _ in self.selector.select():
                if key.data is None:
                    if not self.take_request():
                        return 0
                else:
                    self.reap(key.fileobj, key.data)  # type: ignore[arg-type]

    def take_request(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 1)
        except ConnectionError:
            return False
        if not data:
            return False
        try:
            if len(fds) != 1:
                self.send({"error": "a request carries exactly one file descriptor (the log)"})
                return True
            request = json.loads(data)
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            started, in_session = os.pipe()
            try:
                pid = os.fork()
            except OSError:
                os.close(started)
                os.close(in_session)
                raise
            if pid == 0:
                self.selector.close()
                self.sock.detach()  # closed below with every other descriptor, never by this object
                os.close(started)
                _child(request, fds[0], self.parent_death, in_session)
            # Answer once the fork has its own session, as Popen returns once its child has: a
            # signal to the group right after would otherwise find no such group.
            os.close(in_session)
            with os.fdopen(started, "rb") as ready:
                ready.read()
            pidfd = os.pidfd_open(pid)
            self.selector.register(pidfd, selectors.EVENT_READ, pid)
            self.send({"pid": pid})
            print(f"forkserver: started pid {pid}: {' '.join(map(str, request.get('argv', [])))}", flush=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.send({"error": f"{type(exc).__name__}: {exc}"})
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def reap(self, pidfd: int, pid: int) -> None:
        _, status = os.waitpid(pid, 0)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        code = os.waitstatus_to_exitcode(status)
        print(f"forkserver: pid {pid} ended ({code})", flush=True)
        self.send({"exit": pid, "returncode": code})


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m crm_devstack.forkserver FD (a SOCK_SEQPACKET socket's descriptor)", file=sys.stderr)
        return 2
    sock = socket.socket(fileno=int(args[0]))
    began = time.monotonic()
    imported = preload()
    gc.collect()
    gc.freeze()  # what is here now is shared with every fork: the collector leaves its pages alone
    print(f"forkserver: {len(imported)} modules ({len(sys.modules)} in all) imported in "
          f"{time.monotonic() - began:.1f} s", flush=True)
    return Server(sock).serve()


if __name__ == "__main__":
    sys.exit(main())
