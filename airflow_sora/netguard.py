"""Which addresses a result download may reach, and an httpx transport that connects only to those.

Result URLs come from a third party, so a download is a server-side request to a host someone else chose.
An address passes only if it is globally routable, judged on the IPv4 address inside the IPv6 forms that
carry one (IPv4-mapped, 6to4, Teredo, NAT64): ``2002:a9fe:a9fe::1`` is the cloud metadata service.

Each new connection resolves its host exactly once, checks every answer, and connects to a checked
address: a DNS-rebinding host cannot pass the check with one answer and be reached through another.
Only the TCP connect changes; TLS still sends the host name as SNI and verifies the certificate against it.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import httpcore
import httpx

from airflow_sora.services.errors import ResultDownloadError, UnsafeResultUrlError

IPAddress: TypeAlias = "ipaddress.IPv4Address | ipaddress.IPv6Address"
#: A host name to the addresses it resolves to, as text (``getaddrinfo``'s answers by default).
Resolver = Callable[[str], Sequence[str]]

# The IANA special-purpose ranges, spelled out because ``is_global`` misses some of them on older Pythons
# (192.0.0.0/24 and multicast count as global on 3.11). Embedding forms are unwrapped, not listed here.
_NON_GLOBAL_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
))
_NON_GLOBAL_V6 = tuple(ipaddress.IPv6Network(n) for n in (
    "2001::/23", "2001:db8::/32", "3fff::/20",
))
#: Global unicast: every other IPv6 address (loopback, ULA, link-local, multicast...) lies outside it.
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
_SANDBOX_HINT = "set allow_private_result_hosts on the connection only for a local sandbox"


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...] | None:
    """The IPv4 addresses an IPv6 address leads to (Teredo: server and client), or None for a plain one."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    if ip in _NAT64_WELL_KNOWN or ip in _NAT64_LOCAL_USE:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    return None


def is_public_address(ip: IPAddress | str) -> bool:
    """True only for a globally routable unicast address; an embedding IPv6 form answers for its IPv4."""
    address = ipaddress.ip_address(ip.split("%", 1)[0]) if isinstance(ip, str) else ip
    if address.is_multicast or address.is_unspecified:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return all(is_public_address(v4) for v4 in inner)
        return (address in _GLOBAL_UNICAST_V6 and address.is_global
                and not any(address in network for network in _NON_GLOBAL_V6))
    return address.is_global and not any(address in network for network in _NON_GLOBAL_V4)


def system_resolve(host: str) -> list[str]:
    """The addresses ``host`` resolves to, in the order the system prefers them."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise ResultDownloadError(f"cannot resolve result host {host}: {error}") from None
    return [str(info[4][0]) for info in infos]


def resolve_checked(host: str, *, allow_private: bool,
                    resolve: Resolver = system_resolve) -> tuple[IPAddress, ...]:
    """Resolve ``host`` once; refuse it if ANY answer is not public; return the answers to connect to.

    One bad answer refuses the host, since a connection could otherwise be steered to it.
    ``allow_private`` (the sandbox only) admits loopback and private answers.
    """
    addresses: dict[IPAddress, None] = {}
    for answer in resolve(host):
        address = ipaddress.ip_address(answer.split("%", 1)[0])
        if not allow_private and not is_public_address(address):
            raise UnsafeResultUrlError(
                f"refusing to download from {host}: it resolves to non-public address {address}, "
                f"which is not globally routable ({_SANDBOX_HINT})"
            )
        addresses[address] = None
    if not addresses:
        raise ResultDownloadError(f"cannot resolve result host {host}: no address")
    return tuple(addresses)


def check_url_scheme(url: str, *, allow_private: bool) -> str:
    """Refuse anything but https (plain http too when ``allow_private``); return the URL's host."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UnsafeResultUrlError(f"refusing to download {parts.scheme or 'scheme-less'} URL: only https")
    if parts.scheme != "https" and not allow_private:
        raise UnsafeResultUrlError(f"refusing to download over plain http from {parts.hostname}: only https")
    return parts.hostname


class PinnedBackend(httpcore.NetworkBackend):
    """Opens each TCP connection to an address checked for it, resolving the host once per connection."""

    def __init__(self, *, allow_private: bool, resolve: Resolver = system_resolve,
                 connector: httpcore.NetworkBackend | None = None) -> None:
        self.allow_private = allow_private
        self.resolve = resolve
        self.connector = connector or httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        addresses = resolve_checked(host, allow_private=self.allow_private, resolve=self.resolve)
        error: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:  # as the system's own connect would: the next answer if one is unreachable
            try:
                return self.connector.connect_tcp(str(address), port, timeout=timeout,
                                                  local_address=local_address, socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as failure:
                error = failure
        assert error is not None
        raise error


class PinnedTransport(httpx.HTTPTransport):
    """An httpx transport whose connections go only to checked addresses (see ``PinnedBackend``).

    Never through a proxy: a client built with a transport ignores the proxy environment variables.
    """

    def __init__(self, *, allow_private: bool, resolve: Resolver = system_resolve,
                 connector: httpcore.NetworkBackend | None = None, verify: ssl.SSLContext | bool = True,
                 limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(verify=verify, limits=limits)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(allow_private=allow_private, resolve=resolve, connector=connector),
        )
