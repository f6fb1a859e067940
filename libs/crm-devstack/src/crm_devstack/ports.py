"""TCP port helpers for services bound to the loopback interface."""

from __future__ import annotations

import socket


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    The kernel picks it (bind to port 0), so two callers never get the same port at
    the same moment; the port is released before returning, so there is a small window
    in which another process could take it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Return True when a listener would conflict with binding 127.0.0.1:<port>.

    SO_REUSEADDR is set like servers (Java, gunicorn, PostgreSQL) set it, so sockets in
    TIME_WAIT left by a process that was just stopped do not count as "in use", while a
    live listener on 127.0.0.1, 0.0.0.0 or a dual-stack [::] does.
    """
    if not 0 < port < 65536:
        raise ValueError(f"not a TCP port: {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError:
            return True
    return False


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Return True when a TCP connection to host:port succeeds within timeout seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
