"""RDAP bootstrap parsing, Retry-After, and the RdapClient decisions taken before any I/O:
which server a domain goes to, which URLs are usable, and which addresses are refused.

No test here talks to a real RDAP server (tests/test_integration_rdap.py does). The only sockets
are on loopback, and they exist to prove that a refused address is never connected to.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.addresses import embedded_ipv4, parse_ip, refusal
from exporter.config import RdapSettings
from exporter.rdap import (
    REASONS,
    Bootstrap,
    RdapClient,
    RdapLookup,
    _BodyDecoder,
    _Failure,
    builtin_bootstrap,
    parse_bootstrap,
    retry_after_seconds,
)

SNAPSHOT = Path(__file__).resolve().parent.parent / "exporter" / "data" / "iana-dns-bootstrap.json"


@pytest.fixture(scope="module")
def iana() -> Bootstrap:
    return parse_bootstrap(json.loads(SNAPSHOT.read_text(encoding="utf-8")), source="snapshot")


# --- bootstrap ---------------------------------------------------------------------------


def test_iana_snapshot(iana: Bootstrap) -> None:
    document = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert len(document["services"]) == 590
    assert len(iana.services) == 1198  # every TLD of every service
    assert iana.publication is not None
    assert iana.publication.isoformat() == "2026-03-23T19:00:02+00:00"
    assert iana.source == "snapshot"
    assert iana.base_urls("google.com") == ("https://rdap.verisign.com/com/v1/",)
    assert iana.base_urls("www.example.org") == ("https://rdap.publicinterestregistry.org/rdap/",)
    assert iana.base_urls("example.kg") == ("http://rdap.cctld.kg/",)
    http_only = sorted(k for k, urls in iana.services.items() if urls[0].startswith("http:"))
    assert http_only == ["kg", "mg", "ng"]
    assert iana.base_urls("example.invalid") == ()
    assert iana.base_urls("com") == ()  # a bare TLD has no parent suffix to look up


def test_builtin_bootstrap_is_the_shipped_snapshot(iana: Bootstrap) -> None:
    builtin = builtin_bootstrap()
    assert builtin.source == "builtin"
    assert builtin.services == iana.services
    assert builtin.publication == iana.publication


def test_longest_suffix_wins() -> None:
    boot = parse_bootstrap(
        {
            "services": [
                [["uk"], ["https://uk.test/"]],
                [["CO.UK"], ["https://co-uk.test/"]],  # multi-label, upper case
            ]
        }
    )
    assert boot.base_urls("example.co.uk") == ("https://co-uk.test/",)
    assert boot.base_urls("www.example.co.uk") == ("https://co-uk.test/",)
    assert boot.base_urls("example.org.uk") == ("https://uk.test/",)
    assert boot.base_urls("co.uk") == ("https://uk.test/",)  # the domain itself is not a suffix
    assert boot.base_urls("example.com") == ()


def test_bootstrap_entries_are_normalised_and_https_first() -> None:
    boot = parse_bootstrap(
        {
            "publication": "not a date",
            "services": [
                [["multi"], ["http://a.test/", "https://b.test/", "ftp://c.test/", 5]],
                [["\u0431\u0433", "bad label!"], ["https://bg.test/"]],  # Bulgarian IDN TLD
                [["nourl"], ["ftp://only.test/"]],
                [["broken"]],
                "junk",
                [["ok"], "not a list"],
            ],
        }
    )
    assert boot.services == {
        "multi": ("https://b.test/", "http://a.test/"),
        "xn--90ae": ("https://bg.test/",),
    }
    assert boot.publication is None


@pytest.mark.parametrize("document", [[], {}, {"services": {}}, None, "x"])
def test_not_a_bootstrap(document: object) -> None:
    with pytest.raises(ValueError, match="not an RDAP bootstrap"):
        parse_bootstrap(document)


# --- Retry-After -------------------------------------------------------------------------

NOW = 1445412450.0  # 2015-10-21T07:27:30Z


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:28:00", 30.0),  # no zone: taken as UTC
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # in the past: no pause, never negative
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, now=NOW) == seconds


def test_retry_after_uses_the_wall_clock_by_default() -> None:
    soon = email.utils.formatdate(time.time() + 100, usegmt=True)
    result = retry_after_seconds(soon)
    assert result is not None
    assert 95 <= result <= 101


# --- RdapClient: routing -----------------------------------------------------------------


def _client_run(settings: RdapSettings, body: Any) -> Any:
    """Run `body(client)` inside a loop, closing the client afterwards."""

    async def run() -> Any:
        client = RdapClient(settings, record=lambda server, outcome: None)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(run())


def _write_bootstrap(tmp_path: Path, services: list[list[list[str]]]) -> str:
    path = tmp_path / "dns.json"
    path.write_text(
        json.dumps({"version": "1.0", "publication": "2026-01-01T00:00:00Z", "services": services}),
        encoding="utf-8",
    )
    return str(path)


def test_client_starts_with_the_shipped_bootstrap() -> None:
    async def body(client: RdapClient) -> tuple[str, tuple[str, ...], str]:
        return (
            client.bootstrap.source,
            client.base_urls("example.com"),
            client.server_key("example.com"),
        )

    assert _client_run(RdapSettings(), body) == (
        "builtin",
        ("https://rdap.verisign.com/com/v1/",),
        "rdap.verisign.com",
    )


def test_servers_override_wins_over_bootstrap() -> None:
    settings = RdapSettings(
        servers={
            "com": "https://rdap.override.test/",
            "co.uk": "https://co-uk.override.test:8443/rdap/",
        }
    )

    async def body(client: RdapClient) -> dict[str, Any]:
        return {
            d: (client.base_urls(d), client.server_key(d))
            for d in ("google.com", "example.co.uk", "example.org")
        }

    assert _client_run(settings, body) == {
        "google.com": (("https://rdap.override.test/",), "rdap.override.test"),
        "example.co.uk": (
            ("https://co-uk.override.test:8443/rdap/",),
            "co-uk.override.test:8443",
        ),
        # Not overridden: the bootstrap still answers.
        "example.org": (
            ("https://rdap.publicinterestregistry.org/rdap/",),
            "rdap.publicinterestregistry.org",
        ),
    }


def test_load_bootstrap_from_file(tmp_path: Path) -> None:
    source = _write_bootstrap(tmp_path, [[["test"], ["https://rdap.example.test/"]]])

    async def body(client: RdapClient) -> tuple[bool, str, tuple[str, ...], tuple[str, ...]]:
        ok = await client.load_bootstrap()
        return ok, client.bootstrap.source, client.base_urls("x.test"), client.base_urls("x.com")

    ok, src, test_urls, com_urls = _client_run(RdapSettings(bootstrap=source), body)
    assert ok
    assert src == source
    assert test_urls == ("https://rdap.example.test/",)
    assert com_urls == ()  # the loaded file replaces the snapshot entirely


@pytest.mark.parametrize("content", ["not json", '{"no": "services"}'])
def test_broken_bootstrap_file_keeps_the_current_one(tmp_path: Path, content: str) -> None:
    path = tmp_path / "dns.json"
    path.write_text(content, encoding="utf-8")

    async def body(client: RdapClient) -> tuple[bool, str]:
        ok = await client.load_bootstrap()
        return ok, client.bootstrap.source

    assert _client_run(RdapSettings(bootstrap=str(path)), body) == (False, "builtin")


def test_http_only_refused_unless_allowed() -> None:
    async def body(client: RdapClient) -> tuple[str, RdapLookup]:
        return client.server_key("example.kg"), await client.lookup("example.kg")

    key, lookup = _client_run(RdapSettings(), body)
    assert key == ""
    assert lookup.error == "unsupported_tld"
    assert lookup.detail == (
        "only plain-http RDAP (http://rdap.cctld.kg/); set rdap.allow_http to use it"
    )
    assert lookup.registered is None
    assert not lookup.success

    async def allowed(client: RdapClient) -> tuple[tuple[str, ...], str]:
        return client.base_urls("example.kg"), client.server_key("example.kg")

    assert _client_run(RdapSettings(allow_http=True), allowed) == (
        ("http://rdap.cctld.kg/",),
        "rdap.cctld.kg",
    )


def test_http_override_is_refused_too() -> None:
    settings = RdapSettings(servers={"test": "http://rdap.example.test/"})

    async def body(client: RdapClient) -> RdapLookup:
        return await client.lookup("x.test")

    lookup = _client_run(settings, body)
    assert lookup.error == "unsupported_tld"
    assert "set rdap.allow_http" in lookup.detail


def test_unsupported_tld_needs_no_network() -> None:
    records: list[tuple[str, str]] = []

    async def run() -> RdapLookup:
        client = RdapClient(RdapSettings(), record=lambda s, o: records.append((s, o)))
        try:
            return await client.lookup("example.zz")
        finally:
            await client.aclose()

    lookup = asyncio.run(run())
    assert lookup == RdapLookup(
        "example.zz",
        error="unsupported_tld",
        detail="no RDAP service in bootstrap or rdap.servers",
    )
    assert records == []


# --- RdapClient: private-address refusal ---------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback TCP socket that accepts nothing by itself: a connection attempt shows up in
    its backlog."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def _connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def _lookup_via_bootstrap(
    tmp_path: Path, base: str, *, allow_private: bool
) -> tuple[RdapLookup, list[tuple[str, str]]]:
    source = _write_bootstrap(tmp_path, [[["test"], [base]]])
    settings = RdapSettings(bootstrap=source, allow_private_addresses=allow_private, timeout=0.3)
    records: list[tuple[str, str]] = []

    async def run() -> RdapLookup:
        client = RdapClient(settings, record=lambda s, o: records.append((s, o)))
        try:
            assert await client.load_bootstrap()
            return await client.lookup("example.test")
        finally:
            await client.aclose()

    return asyncio.run(run()), records


def test_private_address_is_refused_without_connecting(
    tmp_path: Path, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    base = f"https://127.0.0.1:{port}/"
    lookup, records = _lookup_via_bootstrap(tmp_path, base, allow_private=False)
    assert lookup.error == "refused_address"
    assert lookup.server == base
    assert lookup.detail == f"127.0.0.1:{port} resolves to non-public address 127.0.0.1"
    # Counted under its own outcome (docs/metrics.md), though no connection was made.
    assert records == [(f"127.0.0.1:{port}", "refused_address")]
    assert not _connected(listener)


def test_private_address_is_contacted_when_allowed(tmp_path: Path, listener: socket.socket) -> None:
    # The control for the test above: same set-up, the switch flipped, a connection happens.
    port = listener.getsockname()[1]
    lookup, records = _lookup_via_bootstrap(
        tmp_path, f"https://127.0.0.1:{port}/", allow_private=True
    )
    assert _connected(listener)
    assert lookup.error in ("timeout", "connection_error", "tls_error")
    assert records == [(f"127.0.0.1:{port}", lookup.error)]


def test_the_documented_port_1_case(tmp_path: Path) -> None:
    lookup, records = _lookup_via_bootstrap(tmp_path, "https://127.0.0.1:1/", allow_private=False)
    assert lookup.error == "refused_address"
    assert records == [("127.0.0.1:1", "refused_address")]


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("localhost", None),  # a name resolving to loopback
        ("[::1]", "::1"),
        ("10.1.2.3", "10.1.2.3"),
        ("192.168.0.1", "192.168.0.1"),
        ("169.254.169.254", "169.254.169.254"),  # cloud metadata service
        ("100.64.0.1", "100.64.0.1"),  # carrier-grade NAT
        ("[fd00::1]", "fd00::1"),
        ("0.0.0.0", "0.0.0.0"),
    ],
)
def test_non_public_addresses_are_refused(host: str, shown: str | None) -> None:
    settings = RdapSettings(servers={"test": f"https://{host}:1/"}, timeout=0.3)
    records: list[tuple[str, str]] = []

    async def run() -> RdapLookup:
        client = RdapClient(settings, record=lambda s, o: records.append((s, o)))
        try:
            return await client.lookup("example.test")
        finally:
            await client.aclose()

    lookup = asyncio.run(run())
    assert lookup.error == "refused_address", lookup.detail
    assert "non-public address" in lookup.detail
    if shown:
        assert lookup.detail.endswith(f"non-public address {shown}")
    assert records == [(f"{host}:1", "refused_address")]


def test_reasons_are_a_small_fixed_set() -> None:
    assert set(REASONS) == {
        "timeout",
        "rate_limited",
        "http_error",
        "invalid_response",
        "tls_error",
        "connection_error",
        "unsupported_tld",
        "refused_address",
    }


# --- the address policy (exporter.addresses) -----------------------------------------------

REFUSED = [
    "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "100.64.0.1", "169.254.169.254",
    "0.0.0.0", "192.0.0.8", "198.18.0.1", "224.0.0.1", "239.1.2.3", "255.255.255.255",
    "::1", "::", "fe80::1", "fd00::1", "ff02::1", "2001:db8::1", "100::1",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1 (is_global says True on Python 3.11)
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata service
    "64:ff9b:1::808:808",  # local-use NAT64 prefix: the operator's own network
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:808:808::1",  # 6to4 at all: IANA "N/A", refused like Python 3.13 does
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "::ffff:127.0.0.1", "::ffff:10.1.2.3",  # IPv4-mapped
    "::7f00:1", "::808:808",  # IPv4-compatible (deprecated)
    "fe80::1%eth0",  # scoped
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "2620:fe::fe", "2a00:1450:4001::1", "64:ff9b::808:808",
           "::ffff:8.8.8.8"]


@pytest.mark.parametrize("text", REFUSED)
def test_address_refused(text: str) -> None:
    ip = parse_ip(text)
    assert ip is not None
    why = refusal(ip)
    assert why is not None and why.startswith("non-public address")


@pytest.mark.parametrize("text", ALLOWED)
def test_address_allowed(text: str) -> None:
    ip = parse_ip(text)
    assert ip is not None and refusal(ip) is None


@pytest.mark.parametrize(
    ("text", "inner"),
    [
        ("64:ff9b::7f00:1", "127.0.0.1"),
        ("2002:a00:1::", "10.0.0.1"),
        ("::ffff:192.168.0.1", "192.168.0.1"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),
        ("::a00:1", "10.0.0.1"),
        ("2620:fe::fe", None),
        ("::1", None),
    ],
)
def test_embedded_ipv4(text: str, inner: str | None) -> None:
    ip = ipaddress.IPv6Address(text)
    found = embedded_ipv4(ip)
    assert (str(found) if found else None) == inner
    if inner is not None:
        assert f"(embeds {inner})" in (refusal(ip) or "")


def test_parse_ip_tells_names_from_literals() -> None:
    assert parse_ip("example.com") is None
    assert parse_ip("[::1]") is None  # brackets belong to URLs, not addresses
    assert str(parse_ip("fe80::1%eth0")) == "fe80::1"


# --- body decoding -------------------------------------------------------------------------

BODY = b'{"objectClassName": "domain", "ldhName": "example.test"}' * 20


def _deflated(data: bytes, wbits: int) -> bytes:
    squeeze = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return squeeze.compress(data) + squeeze.flush()


@pytest.mark.parametrize(
    ("encoding", "wire"),
    [
        ("", BODY),
        ("identity", BODY),
        ("gzip", _deflated(BODY, 16 + zlib.MAX_WBITS)),
        ("x-gzip", _deflated(BODY, 16 + zlib.MAX_WBITS)),
        ("deflate", _deflated(BODY, zlib.MAX_WBITS)),
        ("deflate", _deflated(BODY, -zlib.MAX_WBITS)),  # raw deflate, as some servers send
    ],
    ids=["none", "identity", "gzip", "x-gzip", "deflate", "raw-deflate"],
)
def test_body_decoder_undoes_content_encoding(encoding: str, wire: bytes) -> None:
    decoder = _BodyDecoder(encoding, 1 << 20)
    for i in range(0, len(wire), 7):  # in small network-sized pieces
        decoder.feed(wire[i : i + 7])
    assert decoder.finish() == BODY


@pytest.mark.parametrize(
    ("encoding", "wire", "message"),
    [
        ("gzip", _deflated(b"\0" * 100_000, 16 + zlib.MAX_WBITS), "gzip-decoded body larger"),
        ("", b"x" * 1001, "body larger than 1000 bytes"),
        ("gzip", _deflated(BODY[:500], 16 + zlib.MAX_WBITS)[:-9], "truncated gzip body"),
        ("gzip", b"plain text", "bad gzip body"),
        ("br", b"", "unsupported Content-Encoding"),
        ("gzip, gzip", b"", "unsupported Content-Encoding"),
    ],
    ids=["bomb", "plain-oversize", "truncated", "not-gzip", "brotli", "double"],
)
def test_body_decoder_refuses(encoding: str, wire: bytes, message: str) -> None:
    with pytest.raises(_Failure, match=message) as caught:
        decoder = _BodyDecoder(encoding, 1000)
        decoder.feed(wire)
        decoder.finish()
    assert caught.value.reason == "invalid_response"
