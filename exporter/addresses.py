"""Which IP addresses the exporter may connect to on a remote party's say-so.

Registries and registrars hand us URLs (bootstrap entries, redirects, registrar referrals). Without
a check, a hostile answer could make the exporter probe the host it runs on or its internal network
(SSRF). An address is refused when it is not globally reachable, and also when it merely *wraps*
an IPv4 address that is not: NAT64 (`64:ff9b::/96`), IPv4-mapped (`::ffff:0:0/96`) and the like
reach the embedded IPv4 host through a translator or the local stack.

The verdict does not depend on the Python version: `ipaddress.is_global` changed between 3.11 and
3.13 (e.g. 6to4, `64:ff9b:1::/48`, multicast), so the special-purpose blocks are listed here as
well (IANA special-purpose registries, "Globally Reachable" = False or N/A), and an address is
refused when either source says so.

Checking is only half of it: the address checked must be the address connected to. `PinnedBackend`
is the connection layer under httpx; it never resolves a name, it connects to the addresses the
caller pinned for that name after checking them (no second lookup a DNS-rebinding attacker could
answer differently). TLS still verifies the certificate against the host name, and the Host header
still names the host, because httpx keeps using the URL with the name in it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import httpcore
import httpx

IPAddress = IPv4Address | IPv6Address

_NOT_GLOBAL_V4 = tuple(
    IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata services
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes 255.255.255.255
    )
)

_NOT_GLOBAL_V6 = tuple(
    IPv6Network(n)
    for n in (
        "::/96",  # unspecified, loopback and deprecated IPv4-compatible ::a.b.c.d
        "64:ff9b:1::/48",  # local-use NAT64: translates into the operator's own network
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, includes Teredo 2001::/32
        "2001:db8::/32",
        "2002::/16",  # 6to4: IANA "N/A"; the relay reaches whatever IPv4 is embedded
        "3fff::/20",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)

_CONNECT_TRY = 3.0  # seconds for one address when more are left to try
_MAX_PINS = 4096  # registrars come and go; never grow without bound
_NAT64 = IPv6Network("64:ff9b::/96")  # well-known prefix: the last 32 bits are the IPv4 target
_TEREDO = IPv6Network("2001::/32")
_SIX_TO_FOUR = IPv6Network("2002::/16")


def parse_ip(text: str) -> IPAddress | None:
    """An IP literal (a zone index such as `%eth0` is dropped), or None for a host name."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address carries by construction, if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _TEREDO and ip.teredo is not None:
        return ip.teredo[1]  # the client address (stored XOR-obfuscated; `teredo` undoes it)
    if ip in _SIX_TO_FOUR:
        return ip.sixtofour
    if ip in IPv6Network("::/96") and int(ip) > 1:
        return IPv4Address(int(ip))  # IPv4-compatible
    return None


def _v4_refusal(ip: IPv4Address) -> str | None:
    if not ip.is_global or any(ip in net for net in _NOT_GLOBAL_V4):
        return f"non-public address {ip}"
    return None


def refusal(ip: IPAddress) -> str | None:
    """Why connecting to `ip` is refused (for logs), or None when it is a public address."""
    if isinstance(ip, IPv4Address):
        return _v4_refusal(ip)
    inner = embedded_ipv4(ip)
    if inner is not None and _v4_refusal(inner) is not None:
        return f"non-public address {ip} (embeds {inner})"
    if ip.ipv4_mapped is not None or ip in _NAT64:
        # A translator or the local stack reaches the embedded (public) IPv4 host: judged above.
        return None
    if not ip.is_global or any(ip in net for net in _NOT_GLOBAL_V6):
        return f"non-public address {ip}"
    return None


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend that connects only to pinned (already checked) addresses."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._pins: dict[str, tuple[str, ...]] = {}

    def pin(self, host: str, addresses: Iterable[str]) -> None:
        """Connections to `host` (as httpx spells it: lower-case A-label or IP literal) go to
        `addresses`, tried in order. Replaces earlier pins for the host."""
        self._pins.pop(host, None)  # re-insert: the dict's order is least recently pinned first
        self._pins[host] = tuple(addresses)
        while len(self._pins) > _MAX_PINS:
            del self._pins[next(iter(self._pins))]

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = self._pins.get(host.lower())
        if not addresses:
            # Fail closed: resolving here would defeat the check.
            raise httpcore.ConnectError(f"{host}: no checked address pinned")
        # Addresses in the resolver's order, one after the other. Without happy eyeballs, an
        # address that swallows SYNs (IPv6 without a route upstream) would eat the whole
        # timeout, so every address but the last gets a shorter try.
        for address in addresses[:-1]:
            attempt = timeout if timeout is None else min(timeout, _CONNECT_TRY)
            with contextlib.suppress(httpcore.ConnectError, httpcore.ConnectTimeout):
                return await self._inner.connect_tcp(
                    address, port, attempt, local_address, socket_options
                )
        return await self._inner.connect_tcp(
            addresses[-1], port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def pinned_transport(
    ssl_context: ssl.SSLContext, limits: httpx.Limits, backend: PinnedBackend
) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections go through `backend`.

    httpx (0.28) has no parameter for a network backend, so the connection pool it builds is
    replaced by an identical one that has ours; tests/faults/test_rdap_faults.py proves the
    swap works (a host name only the pin knows is reached, with SNI and Host for the name).
    """
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits, trust_env=False)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=backend,
    )
    return transport
