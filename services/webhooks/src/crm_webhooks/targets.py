"""Where deliveries may go: `https` URLs whose host resolves to public addresses only.

The check runs when a subscription is saved and again before every delivery, on the addresses
the delivery then connects to (the connection goes to the checked address, so a name that
resolves elsewhere a moment later - DNS rebinding - cannot slip past). Private, loopback,
link-local (169.254.169.254, the cloud metadata address), multicast, reserved and other
non-global addresses are refused. ``allow_loopback`` (``make run`` and tests) also lets
``http://`` and ``https://`` reach the loopback address, and nothing else.

``resolve`` is the module's resolver: ``socket.getaddrinfo`` unless a test switches it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL = 2000


class TargetRefused(ValueError):
    """A target that deliveries may not go to; the message says why."""


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


resolve: Callable[[str, int], list[str]] = _system_resolver


@dataclass(frozen=True)
class Target:
    """A checked target: the URL's parts, and the address to connect to."""

    scheme: str
    host: str
    port: int
    path: str
    address: str


def parse(url: str, *, allow_loopback: bool) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path_and_query)`` of an acceptable URL; ``TargetRefused`` otherwise."""
    if len(url) > MAX_URL:
        raise TargetRefused(f"The URL is too long (at most {MAX_URL} characters).")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"Not a valid URL: {exc}.") from None
    if parts.scheme not in ("https", "http"):
        raise TargetRefused("The URL must start with https://.")
    if parts.scheme == "http" and not allow_loopback:
        raise TargetRefused("The URL must use https.")
    if not parts.hostname:
        raise TargetRefused("The URL has no host.")
    if parts.username or parts.password:
        raise TargetRefused("The URL must not carry a user name or password.")
    if parts.fragment:
        raise TargetRefused("The URL must not have a fragment (#...).")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def _refusal(address: str, allow_loopback: bool) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private address"
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified or not ip.is_global:
        return "a non-public address"
    return None


def check(url: str, *, allow_loopback: bool) -> Target:
    """Resolve ``url``'s host now and check every address; the first one to connect to.

    ``http://`` is accepted only to loopback (``allow_loopback``)."""
    scheme, host, port, path = parse(url, allow_loopback=allow_loopback)
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise TargetRefused(f"The host {host!r} cannot be resolved ({exc}).") from None
    if not addresses:
        raise TargetRefused(f"The host {host!r} has no address.")
    for address in addresses:
        why = _refusal(address, allow_loopback)
        if why:
            raise TargetRefused(f"The host {host!r} resolves to {address}, {why}; "
                                "webhooks go to public addresses only.")
    if scheme == "http" and not all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses):
        raise TargetRefused("The URL must use https (http only reaches the loopback address here).")
    return Target(scheme, host, port, path, addresses[0])
