"""Outbound HTTP for URLs someone else chose (import jobs): only allowed hosts, only public
addresses, each redirect checked again, a size cap, and errors that tell nothing about the
network behind the server.

Server-side request forgery defence (OWASP SSRF cheat sheet): the host must be on an
allow-list; the name is resolved once, every address it gives must be public, and the
connection goes to exactly that checked address (no second lookup that DNS rebinding could
answer differently). urllib's own redirect handling would connect before anything could
check the next hop, so redirects are followed here, one checked hop at a time.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 5


class OutboundRefused(ValueError):
    """The URL, or a hop it redirects to, is not one this server may fetch."""


class OutboundFailed(OSError):
    """The fetch failed; the message carries at most an HTTP status."""


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """What a fetch may reach. `hosts` None allows any host name (an operator's own URL)."""

    hosts: frozenset[str] | None
    allow_private: bool = False  # loopback and private addresses: tests only
    max_bytes: int | None = None

    @classmethod
    def allowing(cls, hosts: Iterable[str], **kwargs: Any) -> UrlPolicy:
        return cls(frozenset(h.lower().rstrip(".") for h in hosts), **kwargs)


def check_url(url: str, policy: UrlPolicy) -> None:
    """Refuse a URL by its text alone: scheme, credentials, host not on the allow-list."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundRefused("Only absolute http and https URLs can be fetched.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise OutboundRefused("URLs with credentials are not accepted.")
    host = parts.hostname.lower().rstrip(".")
    if policy.hosts is not None and host not in policy.hosts:
        allowed = ", ".join(sorted(policy.hosts)) or "none"
        raise OutboundRefused(f"Host {host!r} is not allowed (allowed: {allowed}).")


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int, policy: UrlPolicy) -> tuple[Any, ...]:
    """The one address to connect to; OutboundRefused when any address is not public."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise OutboundFailed("download failed") from None
    if not found:
        raise OutboundFailed("download failed")
    if not policy.allow_private and not all(_public(str(f[4][0])) for f in found):
        raise OutboundRefused(f"Host {host!r} does not resolve to a public address.")
    return found[0][4]


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int | None, address: tuple[Any, ...], timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection(self._address[:2], self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None, address: tuple[Any, ...], timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection(self._address[:2], self.timeout)
        # Certificate checked against the name in the URL, on the address checked above.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def open_url(
    url: str, policy: UrlPolicy, *, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> http.client.HTTPResponse:
    """GET `url` under `policy`, following up to MAX_REDIRECTS checked redirects; the final
    response (any status) for the caller to read and close."""
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, policy)
        parts = urlsplit(url)
        assert parts.hostname is not None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = resolve(parts.hostname, port, policy)
        kind = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        connection = kind(parts.hostname, port, address, timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", target, headers=headers or {})
            response = connection.getresponse()
        except (OSError, http.client.HTTPException):
            connection.close()
            raise OutboundFailed("download failed") from None
        if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
            url = urljoin(url, response.getheader("Location", ""))
            connection.close()
            continue
        return response
    raise OutboundFailed("download failed: too many redirects")


def read_capped(response: http.client.HTTPResponse, policy: UrlPolicy, chunk: int) -> Any:
    """The body in chunks, refused once past the policy's size cap."""
    declared = response.getheader("Content-Length")
    cap = policy.max_bytes
    if cap is not None and declared and declared.isdigit() and int(declared) > cap:
        raise OutboundRefused(f"download failed: larger than the {cap:,}-byte limit")
    seen = 0
    while True:
        try:
            data = response.read(chunk)
        except (OSError, http.client.HTTPException):
            raise OutboundFailed("download failed") from None
        if not data:
            return
        seen += len(data)
        if cap is not None and seen > cap:
            raise OutboundRefused(f"download failed: larger than the {cap:,}-byte limit")
        yield data
