"""Fault matrix, RDAP part: hostile HTTPS servers (tests/faults/hostile_http.py) on 127.81.x.

Two levels:
- client cells drive `RdapClient` in-process, so the time to fail is measured exactly and the
  pacer / global-limiter state can be inspected;
- exporter cells run the real exporter as a subprocess against the same kinds of servers and check
  what an operator sees: the check fails with a bounded reason in time, the last good values stay
  exported, other domains keep being read, a scrape answers in under a second, memory stays flat.

Each cell is recorded (tests/faults/report.py) when DOMAINWATCH_FAULT_REPORT names a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpcore
import pytest
import trustme
import yaml

from exporter.addresses import IPAddress, PinnedBackend, refusal
from exporter.config import RdapSettings
from exporter.rdap import MAX_BODY_BYTES, MAX_REDIRECTS, RETRY_AFTER_MAX, RdapClient, RdapLookup
from tests.faults.hostile_http import (
    Act,
    HostileServer,
    deep_json,
    drip,
    gzip_bomb,
    oversize,
    raw_body,
    redirect,
    silent,
    slow_headers,
    start_servers,
    status_act,
)
from tests.faults.report import record, rss_mb
from tests.support.exporter_proc import ExporterProcess, Scrape
from tests.support.rdapserver import make_domain, write_bootstrap

TIMEOUT = 0.8  # rdap.timeout for client cells
SLACK = 0.5  # a shared 2-core machine: scheduling noise on top of a deadline
BOMB = 256 << 20  # decoded size of the gzip bomb
EXPIRY = datetime.now(UTC).replace(microsecond=0) + timedelta(days=90)


@dataclass
class Cell:
    outcome: str = ""
    seconds: float = 0.0
    rss_mb: float | None = None


@contextlib.contextmanager
def cell(name: str) -> Iterator[Cell]:
    """Record one matrix cell; `ok` is whether the test body got through its assertions."""
    result = Cell()
    ok = False
    try:
        yield result
        ok = True
    finally:
        record(name, result.outcome, result.seconds, result.rss_mb, ok)


def domain_body(name: str, registrar_url: str | None = None) -> bytes:
    return json.dumps(
        make_domain(name, EXPIRY, ["active"], [f"ns1.{name}"], "Hostile Registrar", "9999",
                    related_registrar_url=registrar_url)
    ).encode()


def good(name: str, registrar_url: str | None = None) -> Act:
    return raw_body(domain_body(name, registrar_url))


# --- client level ----------------------------------------------------------------------------

PUBLIC_FOR_TESTS = ipaddress.ip_network("127.81.1.0/24")  # the client cells' hostile servers


class CheckingClient(RdapClient):
    """The production address policy, except that the hostile servers' own /24 counts as public
    (they must live on loopback). Everything else on loopback, e.g. 127.81.9.9, stays refused."""

    def _refusal(self, ip: IPAddress) -> str | None:  # type: ignore[override]
        return None if ip in PUBLIC_FOR_TESTS else refusal(ip)


@pytest.fixture(scope="module")
def hosts(fault_ca: trustme.CA) -> Iterator[list[HostileServer]]:
    """[0] registry, [1] registrar, [2] a second registry, [3] a host with a name-only cert."""
    servers = start_servers(
        fault_ca, [f"127.81.1.{i}" for i in range(1, 5)],
        names=("pinned.hostile.test", "rebind.hostile.test"),
    )
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def client_settings(ca_file: Path, servers: dict[str, str], **kw: Any) -> RdapSettings:
    base: dict[str, Any] = {
        "servers": servers, "ca_file": str(ca_file), "timeout": TIMEOUT,
        "requests_per_second": 100.0, "allow_private_addresses": True,
    }
    return RdapSettings(**{**base, **kw})


def run_client(
    settings: RdapSettings,
    body: Callable[[RdapClient], Awaitable[Any]],
    *,
    factory: type[RdapClient] = RdapClient,
    **kw: Any,
) -> Any:
    async def main() -> Any:
        client = factory(settings, **kw)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def timed_lookup(
    settings: RdapSettings, domain: str, *, factory: type[RdapClient] = RdapClient, **kw: Any
) -> tuple[RdapLookup, float]:
    async def body(client: RdapClient) -> tuple[RdapLookup, float]:
        started = time.monotonic()
        result = await client.lookup(domain)
        return result, time.monotonic() - started

    result: tuple[RdapLookup, float] = run_client(settings, body, factory=factory, **kw)
    return result


DEADLINE_CELLS = {
    "drip_body": lambda name: drip(domain_body(name), every=0.2),  # ~2 KiB: minutes to finish
    "slow_headers": lambda name: slow_headers(every=0.1),
    "silent_after_tls": lambda name: silent(30),
}


@pytest.mark.parametrize("kind", sorted(DEADLINE_CELLS))
def test_deadline_covers_the_whole_response(
    hosts: list[HostileServer], fault_ca_file: Path, kind: str
) -> None:
    srv = hosts[0]
    domain = f"{kind.replace('_', '-')}.hostile"
    srv.set(f"/domain/{domain}", DEADLINE_CELLS[kind](domain))
    with cell(f"rdap.{kind}") as c:
        lookup, c.seconds = timed_lookup(
            client_settings(fault_ca_file, {"hostile": srv.base_url}), domain
        )
        c.outcome = lookup.error or "success"
        assert lookup.error == "timeout", lookup
        assert TIMEOUT - 0.05 <= c.seconds <= TIMEOUT + SLACK
        assert srv.requests_for(f"/domain/{domain}")[-1].finished is None


def with_field(name: str, raw_json_value: bytes) -> Act:
    """A valid object for `name` with one extra member whose value is `raw_json_value` as is."""
    return raw_body(domain_body(name)[:-1] + b', "x": ' + raw_json_value + b"}")


BODY_CELLS: dict[str, Callable[[str], Act]] = {
    "oversize_body": lambda name: oversize(8 * MAX_BODY_BYTES),
    "oversize_declared": lambda name: oversize(2 * MAX_BODY_BYTES, declared=True),
    "deep_json": lambda name: deep_json(100_000),
    "deep_member": lambda name: with_field(name, b"[" * 100_000 + b"]" * 100_000),
    "nan_literal": lambda name: with_field(name, b"NaN"),
    "infinity_literal": lambda name: with_field(name, b"-Infinity"),
    "huge_integer": lambda name: with_field(name, b"7" * 5000),
    "not_utf8": lambda name: with_field(name, b'"\xff\xfe"'),
    # Decodes to a str that cannot be UTF-8 encoded: as a label value it would break /metrics.
    "lone_surrogate": lambda name: with_field(name, b'"\\ud800"'),
    "bad_gzip": lambda name: Act(body=b"\x1f\x8bnot gzip",
                                 headers=(("Content-Encoding", "gzip"),)),
    "brotli_unasked": lambda name: Act(body=b"xx", headers=(("Content-Encoding", "br"),)),
}


@pytest.mark.parametrize("kind", sorted(BODY_CELLS))
def test_bad_bodies_are_invalid_responses(
    hosts: list[HostileServer], fault_ca_file: Path, kind: str
) -> None:
    srv = hosts[0]
    domain = f"{kind.replace('_', '-')}.hostile"
    srv.set(f"/domain/{domain}", BODY_CELLS[kind](domain))
    with cell(f"rdap.{kind}") as c:
        lookup, c.seconds = timed_lookup(
            client_settings(fault_ca_file, {"hostile": srv.base_url}), domain
        )
        c.outcome = lookup.error or "success"
        assert lookup.error == "invalid_response", lookup
        assert c.seconds < TIMEOUT + SLACK


class PeakRss:
    """Samples this process's RSS every 5 ms while active: the peak, not the aftermath."""

    def __init__(self) -> None:
        self.base = rss_mb(os.getpid())
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mb(os.getpid()))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_gzip_bomb_is_capped_while_inflating(
    hosts: list[HostileServer], fault_ca_file: Path
) -> None:
    srv = hosts[0]
    srv.set("/domain/bomb.hostile", gzip_bomb(BOMB))  # ~250 KiB on the wire
    with cell("rdap.gzip_bomb") as c:
        with PeakRss() as rss:
            lookup, c.seconds = timed_lookup(
                client_settings(fault_ca_file, {"hostile": srv.base_url}), "bomb.hostile"
            )
        c.outcome = lookup.error or "success"
        assert lookup.error == "invalid_response", lookup
        assert "gzip-decoded body larger than" in lookup.detail
        assert rss.peak - rss.base < 40, (rss.base, rss.peak)  # 256 MiB if inflated
        assert c.seconds < TIMEOUT + SLACK


def test_redirect_loop_is_bounded(hosts: list[HostileServer], fault_ca_file: Path) -> None:
    srv = hosts[0]
    srv.set("/domain/loop.hostile", redirect(srv.url("/domain/loop.hostile")))
    with cell("rdap.redirect_loop") as c:
        lookup, c.seconds = timed_lookup(
            client_settings(fault_ca_file, {"hostile": srv.base_url}), "loop.hostile"
        )
        c.outcome = lookup.error or "success"
        assert lookup.error == "http_error", lookup
        assert "redirects" in lookup.detail
        assert len(srv.requests_for("/domain/loop.hostile")) == MAX_REDIRECTS + 1
        assert c.seconds < TIMEOUT + SLACK


@pytest.fixture
def bystander() -> Iterator[socket.socket]:
    """A listener on a loopback address outside the 'public' test range: a redirect there must
    be refused before any connection is made (its backlog stays empty)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.81.9.9", 0))
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


# 127.81.9.9 = 0x7f510909 in every wrapping an attacker might try.
PRIVATE_TARGETS = {
    "loopback": "127.81.9.9",
    "nat64": "[64:ff9b::7f51:909]",
    "nat64_local": "[64:ff9b:1::7f51:909]",
    "6to4": "[2002:7f51:909::1]",
    "mapped": "[::ffff:127.81.9.9]",
    "compatible": "[::127.81.9.9]",
    "teredo": "[2001:0:4136:e378:8000:63bf:80ae:f6f6]",  # client = ~0x80aef6f6
    "localhost_name": "localhost",
    "metadata": "169.254.169.254",
}


@pytest.mark.parametrize("kind", sorted(PRIVATE_TARGETS))
def test_redirect_to_private_address_is_refused(
    hosts: list[HostileServer], fault_ca_file: Path, bystander: socket.socket, kind: str
) -> None:
    srv = hosts[0]
    port = bystander.getsockname()[1]
    target = f"https://{PRIVATE_TARGETS[kind]}:{port}/domain/ssrf.hostile"
    srv.set("/domain/ssrf.hostile", redirect(target))
    outcomes: list[tuple[str, str]] = []
    settings = client_settings(
        fault_ca_file, {"hostile": srv.base_url}, allow_private_addresses=False
    )
    with cell(f"rdap.redirect_private.{kind}") as c:
        lookup, c.seconds = timed_lookup(
            settings, "ssrf.hostile", factory=CheckingClient,
            record=lambda server, outcome: outcomes.append((server, outcome)),
        )
        c.outcome = lookup.error or "success"
        assert lookup.error == "refused_address", lookup
        assert outcomes[-1][1] == "refused_address"
        with pytest.raises(BlockingIOError):
            bystander.accept()  # nobody knocked


def test_redirect_to_plain_http_is_refused(
    hosts: list[HostileServer], fault_ca_file: Path
) -> None:
    srv = hosts[0]
    srv.set("/domain/downgrade.hostile", redirect(f"http://{srv.hostport}/domain/x"))
    lookup, _ = timed_lookup(
        client_settings(fault_ca_file, {"hostile": srv.base_url}), "downgrade.hostile"
    )
    assert lookup.error == "refused_address", lookup


ODD_RETRY_AFTER = {  # value -> the pause it must cause
    "²": 60.0,  # isdigit() is True, float() fails: absent -> default back-off
    "-5": 60.0,
    "1e3": 60.0,
    "NaN": 60.0,
    "٣": 60.0,  # Arabic-Indic three
    "garbage, 99 Foo": 60.0,
    "9" * 30: RETRY_AFTER_MAX,  # well-formed but absurd: clamped
    "7": 7.0,
}


@pytest.mark.parametrize("value", sorted(ODD_RETRY_AFTER))
def test_429_with_odd_retry_after_pauses_the_server(
    hosts: list[HostileServer], fault_ca_file: Path, value: str
) -> None:
    srv = hosts[2]
    srv.set("/domain/busy.hostile", status_act(429, value))

    async def body(client: RdapClient) -> tuple[RdapLookup, float, float]:
        started = time.monotonic()
        result = await client.lookup("busy.hostile")
        return result, time.monotonic() - started, client._pacer(srv.hostport).paused_for

    settings = client_settings(fault_ca_file, {"hostile": srv.base_url})
    with cell(f"rdap.429_retry_after[{value[:12]!r}]") as c:
        lookup, c.seconds, paused = run_client(settings, body)
        c.outcome = lookup.error or "success"
        assert lookup.error == "rate_limited", lookup
        assert ODD_RETRY_AFTER[value] - 1 <= paused <= ODD_RETRY_AFTER[value]


@pytest.mark.parametrize("value", ["²", "-1", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_5xx_with_odd_retry_after(
    hosts: list[HostileServer], fault_ca_file: Path, value: str
) -> None:
    srv = hosts[2]
    srv.set("/domain/down.hostile", status_act(503, value))

    async def body(client: RdapClient) -> tuple[RdapLookup, float]:
        result = await client.lookup("down.hostile")
        return result, client._pacer(srv.hostport).paused_for

    with cell(f"rdap.503_retry_after[{value[:12]!r}]") as c:
        started = time.monotonic()
        lookup, paused = run_client(
            client_settings(fault_ca_file, {"hostile": srv.base_url}), body
        )
        c.seconds = time.monotonic() - started
        c.outcome = lookup.error or "success"
        assert lookup.error == "http_error", lookup
        assert paused <= RETRY_AFTER_MAX


def test_object_for_another_name_is_invalid(
    hosts: list[HostileServer], fault_ca_file: Path
) -> None:
    reg, rar = hosts[0], hosts[1]
    reg.set("/domain/asked.hostile", good("other.hostile"))
    reg.set("/domain/thin-wrong.hostile",
            good("thin-wrong.hostile", rar.url("/domain/thin-wrong.hostile")))
    rar.set("/domain/thin-wrong.hostile", good("elsewhere.hostile"))
    reg.set("/domain/idn-ok.hostile", raw_body(
        domain_body("idn-ok.hostile").replace(b'"ldhName"', b'"unicodeName": "IDN-OK.hostile.",'
                                              b' "ldhName"')
    ))
    settings = client_settings(fault_ca_file, {"hostile": reg.base_url})
    with cell("rdap.wrong_name") as c:
        lookup, c.seconds = timed_lookup(settings, "asked.hostile")
        c.outcome = lookup.error or "success"
        assert lookup.error == "invalid_response", lookup
        assert "other.hostile" in lookup.detail.lower()
    with cell("rdap.wrong_name.registrar") as c:
        lookup, c.seconds = timed_lookup(settings, "thin-wrong.hostile")
        c.outcome = lookup.registrar_error or "success"
        assert lookup.success and lookup.registered  # the registry's facts stand
        assert lookup.registrar_error == "invalid_response", lookup
    lookup, _ = timed_lookup(settings, "idn-ok.hostile")  # same name, other spelling: fine
    assert lookup.success, lookup


def test_dripping_registrar_does_not_hold_the_registry(
    hosts: list[HostileServer], fault_ca_file: Path
) -> None:
    """Referrals to a dripping registrar fail at their own deadline, never while holding the
    registry's pacer slots; domains of the same registry without that registrar are answered
    at the registry's pace meanwhile."""
    reg, rar = hosts[2], hosts[1]
    thin = [f"thin{i}.fair" for i in range(6)]
    innocent = [f"inno{i}.fair" for i in range(6)]
    for name in thin:
        reg.set(f"/domain/{name}", good(name, rar.url(f"/domain/{name}")))
        rar.set(f"/domain/{name}", drip(domain_body(name), every=0.2))
    for name in innocent:
        reg.set(f"/domain/{name}", good(name))
    settings = client_settings(
        fault_ca_file, {"fair": reg.base_url}, requests_per_second=20.0,
        max_in_flight_per_server=2,
    )

    async def body(client: RdapClient) -> dict[str, Any]:
        registry = client._pacer(reg.hostport)
        in_flight: list[int] = []
        done: dict[str, float] = {}
        started = time.monotonic()

        async def one(name: str, delay: float) -> RdapLookup:
            await asyncio.sleep(delay)
            result = await client.lookup(name)
            done[name] = time.monotonic() - started
            return result

        async def watch() -> None:
            while len(done) < len(thin) + len(innocent):
                in_flight.append(registry._in_flight)
                await asyncio.sleep(0.01)

        # The thin domains go first, then the innocent ones arrive while referrals drip.
        tasks = [one(n, 0.0) for n in thin] + [one(n, 0.3) for n in innocent]
        results = await asyncio.gather(watch(), *tasks)
        return {"results": results[1:], "done": done, "in_flight": in_flight}

    with cell("rdap.registrar_drip") as c:
        out = run_client(settings, body)
        results: Sequence[RdapLookup] = out["results"]
        by_name = {r.domain: r for r in results}
        c.seconds = max(out["done"][n] for n in thin)
        c.outcome = ",".join(sorted({by_name[n].registrar_error or "ok" for n in thin}))
        for name in thin:
            assert by_name[name].success and by_name[name].registered, by_name[name]
            assert by_name[name].registrar_error in ("timeout", "rate_limited"), by_name[name]
        for name in innocent:
            assert by_name[name].success and by_name[name].registrar_error is None
        # 6 innocent lookups at 20/s: ~0.3 s of pacing after they start at 0.3 s.
        assert max(out["done"][n] for n in innocent) < 0.3 + 0.3 + SLACK, out["done"]
        # Registry slots are only ever held for the registry's own quick answers.
        assert max(out["in_flight"]) <= 2
        assert sum(1 for n in out["in_flight"] if n) < len(out["in_flight"]) / 2
        # Bounded: at most two rounds of the registrar's deadline (in-flight cap 2, then the
        # registrar is backed off and the rest give up at once).
        assert c.seconds < 3 * TIMEOUT + SLACK, out["done"]


def test_timed_out_requests_release_pacer_and_limiter(
    hosts: list[HostileServer], fault_ca_file: Path
) -> None:
    """Four requests time out under a global limit of 2: if a timed-out request kept its pacer
    slot or its limiter permit, the next lookup (at another host) would wait forever."""
    srv, other = hosts[0], hosts[1]
    names = [f"hold{i}.hostile" for i in range(4)]
    for name in names:
        srv.set(f"/domain/{name}", drip(domain_body(name), every=0.2))
    other.set("/domain/after.other", good("after.other"))
    limiter = asyncio.Semaphore(2)

    async def body(client: RdapClient) -> tuple[list[RdapLookup], int, int, RdapLookup, float]:
        results = await asyncio.gather(*(client.lookup(n) for n in names))
        in_flight, free = client._pacer(srv.hostport)._in_flight, limiter._value
        started = time.monotonic()
        after = await client.lookup("after.other")
        return list(results), in_flight, free, after, time.monotonic() - started

    settings = client_settings(
        fault_ca_file, {"hostile": srv.base_url, "other": other.base_url},
        max_in_flight_per_server=2,
    )
    with cell("rdap.timeout_releases_slots") as c:
        results, in_flight, free, after, c.seconds = run_client(settings, body, limiter=limiter)
        c.outcome = after.error or "success"
        assert [r.error for r in results] == ["timeout"] * 4
        assert in_flight == 0 and free == 2
        assert after.error is None, after
        assert c.seconds < TIMEOUT


def test_connection_goes_to_the_pinned_address_with_sni_and_host(
    hosts: list[HostileServer], fault_ca_file: Path
) -> None:
    """The name is known only to our resolver (not to the system's), so a second resolution
    between check and connect would fail; the connection must go to the checked address with
    TLS verified against, and Host naming, the host name."""
    srv = hosts[3]
    srv.set("/domain/a.pin", good("a.pin"))
    srv.set("/domain/b.pin", good("b.pin"))
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return [srv.address] if host == "pinned.hostile.test" else []

    settings = client_settings(
        fault_ca_file, {"pin": f"https://pinned.hostile.test:{srv.port}/"},
        allow_private_addresses=False,
    )

    async def body(client: RdapClient) -> list[RdapLookup]:
        return [await client.lookup("a.pin"), await client.lookup("b.pin")]

    with cell("rdap.pinned_connection") as c:
        started = time.monotonic()
        results = run_client(settings, body, factory=CheckingClient, resolve=resolve)
        c.seconds = time.monotonic() - started
        c.outcome = ",".join(r.error or "success" for r in results)
        assert [r.error for r in results] == [None, None], results
        assert calls == ["pinned.hostile.test"]  # resolved once, then cached with the pin
        seen = srv.requests_for("/domain/a.pin")[-1]
        assert seen.sni == "pinned.hostile.test"
        assert seen.host == f"pinned.hostile.test:{srv.port}"


def test_pinned_addresses_are_tried_in_order(
    hosts: list[HostileServer], fault_ca_file: Path
) -> None:
    """A name with several addresses: a dead one first (nothing listens on 127.81.1.250), then
    the server. Only pinned addresses are used, so the fallback is ours, not a new lookup."""
    srv = hosts[3]
    srv.set("/domain/multi.pin", good("multi.pin"))

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.81.1.250", srv.address]

    settings = client_settings(
        fault_ca_file, {"pin": f"https://pinned.hostile.test:{srv.port}/"},
        allow_private_addresses=False,
    )
    lookup, seconds = timed_lookup(settings, "multi.pin", factory=CheckingClient, resolve=resolve)
    assert lookup.error is None, lookup
    assert seconds < TIMEOUT


def test_pinning_keeps_certificate_name_checks(
    hosts: list[HostileServer], fault_ca_file: Path
) -> None:
    srv = hosts[3]  # its certificate names pinned.hostile.test, not impostor.hostile.test
    srv.set("/domain/x.imp", good("x.imp"))

    async def resolve(host: str, port: int) -> list[str]:
        return [srv.address]

    settings = client_settings(fault_ca_file, {"imp": f"https://impostor.hostile.test:{srv.port}/"})
    lookup, _ = timed_lookup(settings, "x.imp", resolve=resolve)
    assert lookup.error == "tls_error", lookup


def test_rebinding_is_checked_on_every_resolution(
    hosts: list[HostileServer], fault_ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resolver that answers "public" first and loopback later (DNS rebinding): the connection
    uses exactly the checked first answer, and the later answer is refused when it comes."""
    srv = hosts[0]
    srv.set("/domain/x.rb", good("x.rb"))
    answers = iter([[srv.address], ["127.0.0.1"]])
    pins: list[tuple[str, tuple[str, ...]]] = []

    async def resolve(host: str, port: int) -> list[str]:
        return next(answers)

    class Spy(PinnedBackend):
        def pin(self, host: str, addresses: Any) -> None:
            pins.append((host, tuple(addresses)))
            super().pin(host, addresses)

    monkeypatch.setattr("exporter.rdap.PinnedBackend", Spy)
    monkeypatch.setattr("exporter.rdap._ADDRESS_CACHE_SECONDS", 0.0)  # resolve every time
    settings = client_settings(
        fault_ca_file, {"rb": f"https://rebind.hostile.test:{srv.port}/"},
        allow_private_addresses=False,
    )

    async def body(client: RdapClient) -> list[RdapLookup]:
        return [await client.lookup("x.rb"), await client.lookup("x.rb")]

    first, second = run_client(settings, body, factory=CheckingClient, resolve=resolve)
    assert first.error is None, first
    assert pins == [("rebind.hostile.test", (srv.address,))]
    assert second.error == "refused_address", second
    assert second.detail.endswith("non-public address 127.0.0.1")


def test_unpinned_host_is_never_resolved_by_the_backend() -> None:
    async def main() -> None:
        backend = PinnedBackend()
        with pytest.raises(httpcore.ConnectError, match="no checked address"):
            await backend.connect_tcp("localhost", 443, timeout=0.2)

    asyncio.run(main())


# --- exporter level --------------------------------------------------------------------------

EXPORTER_TIMEOUT = 1.0
INTERVAL = 2.0
EXPORTER_CELLS: dict[str, Callable[[str, HostileServer], Act]] = {
    "drip_body": lambda name, srv: drip(domain_body(name), every=0.2),
    "slow_headers": lambda name, srv: slow_headers(every=0.1),
    "oversize_body": lambda name, srv: oversize(16 * MAX_BODY_BYTES),
    "gzip_bomb": lambda name, srv: gzip_bomb(BOMB),
    "deep_json": lambda name, srv: deep_json(100_000),
    "redirect_loop": lambda name, srv: redirect(srv.url(f"/domain/{name}")),
    "wrong_name": lambda name, srv: good("someone-else." + name.split(".", 1)[1]),
    "rate_limited": lambda name, srv: status_act(429, "²"),
    "server_error": lambda name, srv: status_act(503, "-1"),
}
EXPECTED = {
    "drip_body": "timeout", "slow_headers": "timeout", "oversize_body": "invalid_response",
    "gzip_bomb": "invalid_response", "deep_json": "invalid_response",
    "redirect_loop": "http_error", "wrong_name": "invalid_response",
    "rate_limited": "rate_limited", "server_error": "http_error",
}
CONTROL = ["ok1.control", "ok2.control"]
THIN = [f"thin{i}.fairreg" for i in range(3)]
INNOCENT = ["inno1.fairreg", "inno2.fairreg"]


def cell_domain(kind: str) -> str:
    return f"victim.{kind.replace('_', '')}"


@dataclass
class World:
    exporter: ExporterProcess
    servers: dict[str, HostileServer]  # cell kind / "control" / "registry" / "registrar"
    attack_started: float
    baseline_rss: float
    scrape_seconds: list[float]
    rss_samples: list[float]

    def scrape(self) -> Scrape:
        started = time.monotonic()
        scrape = self.exporter.scrape()
        self.scrape_seconds.append(time.monotonic() - started)
        assert self.exporter.proc is not None
        self.rss_samples.append(rss_mb(self.exporter.proc.pid))
        return scrape

    def wait_for(self, predicate: Callable[[Scrape], bool], timeout: float, what: str) -> Scrape:
        deadline = time.monotonic() + timeout
        while True:
            scrape = self.scrape()
            if predicate(scrape):
                return scrape
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {timeout}s\n{self.exporter.log_tail(40)}")
            time.sleep(0.1)


def rdap_value(scrape: Scrape, metric: str, domain: str) -> float | None:
    return scrape.value(metric, domain=domain, check="rdap")


def rdap_reason(scrape: Scrape, domain: str) -> set[str]:
    return {lbl["reason"] for lbl, _ in scrape.series("domain_check_error_info", domain=domain,
                                                      check="rdap")}


@pytest.fixture(scope="module")
def world(
    fault_ca: trustme.CA, fault_ca_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("rdap-faults")
    kinds = sorted(EXPORTER_CELLS)
    roles = [*kinds, "control", "registry", "registrar"]
    started = start_servers(fault_ca, [f"127.81.2.{i + 1}" for i in range(len(roles))])
    servers = dict(zip(roles, started, strict=True))
    exporter: ExporterProcess | None = None
    try:
        for kind in kinds:
            servers[kind].set(f"/domain/{cell_domain(kind)}", good(cell_domain(kind)))
        for name in CONTROL:
            servers["control"].set(f"/domain/{name}", good(name))
        rar = servers["registrar"]
        for name in THIN:
            servers["registry"].set(f"/domain/{name}", good(name, rar.url(f"/domain/{name}")))
            rar.set(f"/domain/{name}", good(name))
        for name in INNOCENT:
            servers["registry"].set(f"/domain/{name}", good(name))
        rdap_servers = {kind.replace("_", ""): servers[kind].base_url for kind in kinds}
        rdap_servers |= {"control": servers["control"].base_url,
                         "fairreg": servers["registry"].base_url}
        domains = [cell_domain(k) for k in kinds] + CONTROL + THIN + INNOCENT
        config = tmp / "config.yaml"
        config.write_text(yaml.safe_dump({
            "rdap": {
                "bootstrap": str(write_bootstrap(tmp / "bootstrap.json", {})),
                "servers": rdap_servers, "ca_file": str(fault_ca_file),
                "allow_private_addresses": True,  # every hostile server is on 127.81.x
                "interval": f"{INTERVAL:g}s", "hold_interval": f"{INTERVAL:g}s",
                "timeout": f"{EXPORTER_TIMEOUT:g}s", "requests_per_second": 20,
            },
            "dns": {"root_servers": ["127.81.255.254:9"], "interval": "1h", "timeout": "0.2s"},
            "email": {"interval": "1h"},
            "domains": [{"name": d} for d in domains],
        }, sort_keys=False))
        exporter = ExporterProcess(config, tmp)
        exporter.start()
        w = World(exporter, servers, 0.0, 0.0, [], [])
        w.wait_for(
            lambda s: all(rdap_value(s, "domain_check_success", d) == 1 for d in domains),
            timeout=15, what="every domain read once",
        )
        w.baseline_rss = max(w.rss_samples)
        w.scrape_seconds.clear()
        for kind in kinds:
            servers[kind].set(f"/domain/{cell_domain(kind)}",
                              EXPORTER_CELLS[kind](cell_domain(kind), servers[kind]))
        for name in THIN:
            rar.set(f"/domain/{name}", drip(domain_body(name), every=0.2))
        w.attack_started = time.time()
        yield w
    finally:
        if exporter is not None:
            exporter.stop()
        for server in started:
            server.stop()


@pytest.mark.parametrize("kind", sorted(EXPORTER_CELLS))
def test_exporter_cell(world: World, kind: str) -> None:
    domain = cell_domain(kind)
    srv = world.servers[kind]
    with cell(f"rdap.{kind}.exporter") as c:
        s = world.wait_for(
            lambda s: rdap_value(s, "domain_check_success", domain) == 0,
            timeout=3 * INTERVAL + EXPORTER_TIMEOUT + 2, what=f"{domain}: no failed check",
        )
        c.outcome = ",".join(sorted(rdap_reason(s, domain)))
        c.rss_mb = max(world.rss_samples)
        attempt = rdap_value(s, "domain_check_last_attempt_timestamp_seconds", domain)
        assert attempt is not None
        # The failing attempt's first request: one request, or a whole chain of redirects.
        hostile = [r for r in srv.requests_for(f"/domain/{domain}")
                   if world.attack_started < r.received <= attempt]
        hops = MAX_REDIRECTS + 1 if kind == "redirect_loop" else 1
        assert len(hostile) >= hops, f"{domain}: no request during the attack"
        c.seconds = attempt - hostile[-hops].received
        assert c.outcome == EXPECTED[kind], s.for_domain(domain)
        assert c.seconds <= EXPORTER_TIMEOUT + SLACK
        # The last good reading stays exported.
        assert s.value("domain_expiry_timestamp_seconds", domain=domain) == EXPIRY.timestamp()
        assert s.value("domain_registered", domain=domain) == 1
        # Other domains unaffected: the controls keep succeeding with fresh reads.
        for name in CONTROL:
            assert rdap_value(s, "domain_check_success", name) == 1, s.for_domain(name)
            last = rdap_value(s, "domain_check_last_success_timestamp_seconds", name)
            assert last is not None and s.taken - last < INTERVAL * 1.1 + EXPORTER_TIMEOUT + 1
        assert max(world.scrape_seconds) < 1.0, world.scrape_seconds
        assert c.rss_mb - world.baseline_rss < 60, (world.baseline_rss, c.rss_mb)
        assert world.exporter.proc is not None and world.exporter.proc.poll() is None


def test_exporter_rate_limited_server_stays_paused(world: World) -> None:
    srv = world.servers["rate_limited"]
    path = f"/domain/{cell_domain('rate_limited')}"
    world.wait_for(lambda s: bool(srv.requests_for(path)) and
                   srv.requests_for(path)[-1].received > world.attack_started,
                   timeout=3 * INTERVAL, what="429 served")
    first_429 = next(r for r in srv.requests_for(path) if r.received > world.attack_started)
    time.sleep(max(0.0, first_429.received + 2.5 * INTERVAL - time.time()))
    later = [r for r in srv.requests_for(path) if r.received > first_429.received + 0.5]
    assert later == []  # "²" is no Retry-After: the default 60 s back-off applies


def test_exporter_dripping_registrar_spares_innocent_domains(world: World) -> None:
    registry, registrar = world.servers["registry"], world.servers["registrar"]
    with cell("rdap.registrar_drip.exporter") as c:
        # Watch at least three intervals of attack.
        end = world.attack_started + 3 * INTERVAL + EXPORTER_TIMEOUT
        s = world.scrape()
        while time.time() < end:
            time.sleep(0.2)
            s = world.scrape()
        c.rss_mb = max(world.rss_samples)
        timeouts = s.value("domainwatch_rdap_requests_total", server=registrar.hostport,
                           outcome="timeout")
        c.outcome = f"registrar timeouts={timeouts:g}" if timeouts else "no registrar timeout"
        assert timeouts, s.text[-2000:]
        for name in THIN:  # the registry's facts stand while the referral fails
            assert rdap_value(s, "domain_check_success", name) == 1, s.for_domain(name)
        for name in INNOCENT:
            times = [r.received for r in registry.requests_for(f"/domain/{name}")
                     if r.received > world.attack_started]
            gaps = [b - a for a, b in zip([world.attack_started, *times], times, strict=False)]
            gaps.append(time.time() - (times[-1] if times else world.attack_started))
            c.seconds = max(c.seconds, *gaps)
            # Re-read every interval (+10 % jitter) as if nothing happened next door.
            assert max(gaps) < INTERVAL * 1.1 + 0.5, (name, gaps)
            assert rdap_value(s, "domain_check_success", name) == 1
        assert max(world.scrape_seconds) < 1.0
