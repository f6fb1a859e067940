"""TCP port helpers for services bound to the loopback interface."""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

from crm_devstack.errors import DevstackError

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_SPAN = 12_000  # how many ports below the ephemeral range free_port picks from
_handed_out: set[int] = set()
_lock = threading.Lock()
_random = random.SystemRandom()  # not the random module, which a test may have seeded


def _below_ephemeral_range() -> tuple[int, int] | None:
    """The ports just below the kernel's ephemeral range, or None when it is unknown."""
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return (max(1024, low - _SPAN), low) if low - 1024 >= 1000 else None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    The port is released before returning, so another process could take it before the
    server that is meant to binds it. Ports the kernel hands out for a bind to port 0 come
    from its ephemeral range, where every outgoing connection (to Kafka, PostgreSQL, an api)
    also takes its local port: on a busy machine one of them takes the port in that window
    and the server fails with "Address already in use". So the port is picked at random from
    below that range, where only listeners compete, checked by binding it, and never handed
    out twice by this process. Where the range is unknown, the kernel picks.
    """
    span = _below_ephemeral_range()
    if span is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    with _lock:
        for _ in range(1000):
            port = _random.randrange(*span)
            if port not in _handed_out and not port_in_use(port):
                _handed_out.add(port)
                return port
    raise DevstackError(f"no free TCP port on 127.0.0.1 between {span[0]} and {span[1]}")


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
