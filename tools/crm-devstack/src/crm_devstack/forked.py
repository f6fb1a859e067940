"""The supervisor's end of the fork server (``crm_devstack.forkserver``): start it as a member of a
``ProcessGroup`` and start further members as forks of it (``ProcessGroup.add(..., spawn=...)``).

A forked process is the fork server's child, not ours: ``ForkedProcess`` gives what the group
needs of a ``subprocess.Popen`` (``pid``, ``poll``, ``wait``, ``returncode``) from the exits the
server reports.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from crm_devstack import forkserver
from crm_devstack.forkserver import MAX_MESSAGE
from crm_devstack.processes import pid_alive, wait_exit

if TYPE_CHECKING:
    from crm_devstack.supervisor import ProcessGroup

NAME = "forkserver"
MODULE = forkserver.__name__
"""The server's program (``python -m``): its forks that run crm-service in process keep its command line."""
START_TIMEOUT = 60.0
UNKNOWN_EXIT = 255
"""The return code of a forked process that ended after its fork server (nobody reported it)."""


class ForkServer:
    """A running fork server: ``spawn`` starts a program as a fork of it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._asking = threading.Lock()
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._exits: dict[int, int] = {}
        self._changed = threading.Condition()
        self._gone = False
        threading.Thread(target=self._listen, name="forkserver-listener", daemon=True).start()

    @classmethod
    def start(cls, group: ProcessGroup, log_path: Path, cwd: Path | None = None) -> ForkServer:
        """Start the server as ``group``'s member ``forkserver`` (a ``ProcessGroup``)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            group.add(NAME, [sys.executable, "-m", MODULE, str(theirs.fileno())], None,
                      log_path, cwd=cwd, pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        return cls(ours)

    def spawn(self, argv: Sequence[str], env: Mapping[str, str] | None, log: IO[bytes],
              cwd: Path | None) -> ForkedProcess:
        """Start ``argv`` as a fork of the server, output appended to ``log``; raises OSError if it
        cannot (the server is gone or refused)."""
        request = {"argv": list(argv), "env": dict(os.environ if env is None else env),
                   "cwd": str(cwd) if cwd is not None else None}
        data = json.dumps(request).encode()
        if len(data) > MAX_MESSAGE:
            raise OSError(f"the request to the fork server is over {MAX_MESSAGE} bytes")
        with self._asking:
            if self._gone:
                raise OSError("the fork server is gone")
            socket.send_fds(self._sock, [data], [log.fileno()])
            try:
                reply = self._replies.get(timeout=START_TIMEOUT)
            except queue.Empty:
                raise OSError(f"the fork server did not answer within {START_TIMEOUT:g} s") from None
        if "pid" not in reply:
            raise OSError(reply.get("error", "the fork server is gone"))
        return ForkedProcess(argv=list(argv), pid=int(reply["pid"]), server=self)

    def returncode(self, pid: int) -> int | None:
        with self._changed:
            if pid in self._exits:
                return self._exits[pid]
            if self._gone and not pid_alive(pid):
                return UNKNOWN_EXIT
            return None

    def wait(self, pid: int, timeout: float | None) -> int | None:
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits or self._gone, timeout)
        if self._gone and pid not in self._exits:
            # Nobody reports it any more: poll until it is gone (its PDEATHSIG is on its way).
            wait_exit(pid, timeout if timeout is not None else 3600)
        return self.returncode(pid)

    def _listen(self) -> None:
        while True:
            try:
                data = self._sock.recv(MAX_MESSAGE)
            except OSError:
                data = b""
            if not data:
                with self._changed:
                    self._gone = True
                    self._changed.notify_all()
                self._replies.put({"error": "the fork server is gone"})
                return
            message = json.loads(data)
            if "exit" in message:
                with self._changed:
                    self._exits[int(message["exit"])] = int(message["returncode"])
                    self._changed.notify_all()
            else:
                self._replies.put(message)


class ForkedProcess:
    """What a ``ProcessGroup`` needs of a ``subprocess.Popen``, for a fork of the server."""

    def __init__(self, *, argv: list[str], pid: int, server: ForkServer) -> None:
        self.args = argv
        self.pid = pid
        self.returncode: int | None = None
        self._server = server

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.returncode(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._server.wait(self.pid, timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.returncode

