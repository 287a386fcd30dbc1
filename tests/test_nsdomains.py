"""Nameserver domains ("sitting ducks"): the registration behind each nameserver of a domain.

Unit rows for the verdict and for which nameserver domains are judged; then the running exporter
against real servers: the DNS world (Knot, tests/support/dnsworld.py) for the parent's
delegations and an RDAP registry on this module's loopback range 127.96.1.0/24.

    good.zz, shop.co.test   delegated to ns1/ns2.provider.test: provider.test is in "pending
                            delete" (0), later renewed (1); read once for both domains.
    parked.test             delegated to ns1/ns2.parking.zz; parking.zz is monitored too and its
                            registration expired (paid-until past): 0, from its own record.
    orphan.test             ns1.provider.test + ns9.gone.test; gone.test is not registered (404):
                            0 only once a second 404 a hold_interval later confirms it.
    good.test               in-bailiwick (ns1/ns2.good.test): nothing to judge, no series.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trustme

from exporter.checks.nsdomains import (
    MAX_NAMESERVER_DOMAINS,
    nameserver_domains,
    registration_health,
)
from exporter.registration import Registration
from exporter.store import DnsResult, DomainStatus, RdapResult
from tests.support.dnsworld import DnsWorld, dns_world  # noqa: F401  (session fixture)
from tests.support.exporter_proc import ExporterProcess, Scrape
from tests.support.rdapserver import (
    RdapServer,
    Reply,
    make_domain,
    write_bootstrap,
    write_ca,
)
from tests.support.scenario import DomainEntry, write_exporter_config

NOW = 1_800_000_000.0
HOLD = 3.0  # rdap.hold_interval of the exporter under test
REGISTRY_HOST = "127.96.1.1"
FUTURE = datetime.now(UTC) + timedelta(days=300)
PAST = datetime.now(UTC) - timedelta(days=3)


def _reg(**kw: Any) -> Registration:
    base: dict[str, Any] = {"name": "dns-host.example", "statuses": ("active",)}
    base.update(kw)
    return Registration(**base)


def _at(days: float) -> datetime:
    return datetime.fromtimestamp(NOW + days * 86400, UTC)


# --- the verdict, row by row ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registered", "reg", "expected"),
    [
        (True, _reg(expiry=_at(30)), (True, "ok")),
        (True, _reg(), (True, "ok")),  # no expiry published: nothing says it lapsed
        (True, _reg(expiry=_at(-1)), (False, "expired")),
        # Auto-renewed by the registry, never paid at the registrar: the earlier date counts.
        (True, _reg(expiry=_at(360), registrar_expiry=_at(-2)), (False, "expired")),
        (True, _reg(statuses=("client hold",), expiry=_at(30)), (False, "hold")),
        (True, _reg(statuses=("server hold",)), (False, "hold")),
        (True, _reg(statuses=("pending delete",)), (False, "pending_delete")),
        (True, _reg(statuses=("redemption period",)), (False, "pending_delete")),
        (True, _reg(statuses=("pending restore",)), (False, "pending_delete")),
        (False, None, (False, "unregistered")),  # a CONFIRMED not-found
        (None, None, (None, "unknown")),  # never read, or an unconfirmed 404
    ],
)
def test_registration_health(
    registered: bool | None, reg: Registration | None, expected: tuple[bool | None, str]
) -> None:
    assert registration_health(registered, reg, NOW) == expected


def _status(
    name: str, parent: tuple[str, ...] | None, registry: tuple[str, ...] | None
) -> DomainStatus:
    dns = (
        DnsResult("test", parent, None, delegated=True, lame={}, mismatch=None)
        if parent is not None
        else None
    )
    rdap = RdapResult(True, "https://r.test/", _reg(name=name, nameservers=registry))
    return DomainStatus(name=name, dns=dns, rdap=rdap)


def test_which_nameserver_domains_are_judged() -> None:
    # The parent's delegation wins over the registry's set ...
    s = _status("victim.com", ("ns1.dns-a.net", "NS2.DNS-A.NET"), ("ns1.old-dns.org",))
    assert nameserver_domains("victim.com", s) == ("dns-a.net",)
    # ... which is used while the parent was not measured.
    s = _status("victim.com", None, ("ns1.old-dns.org", "a.ns.example.co.uk"))
    assert nameserver_domains("victim.com", s) == ("example.co.uk", "old-dns.org")
    # In-bailiwick servers (the domain itself) are skipped, sub-zones included.
    s = _status("victim.com", ("ns1.victim.com", "ns.eu.victim.com", "ns1.dns-a.net"), None)
    assert nameserver_domains("victim.com", s) == ("dns-a.net",)
    # Nothing known: nothing judged.
    assert nameserver_domains("victim.com", DomainStatus(name="victim.com")) == ()
    assert MAX_NAMESERVER_DOMAINS == 8


# --- the running exporter ------------------------------------------------------------------------


def _domain(name: str, statuses: list[str], nameservers: list[str], expiry: datetime) -> Reply:
    return Reply(body=make_domain(name, expiry, statuses, nameservers, "Example Registrar", "1234"))


@dataclass
class World:
    exporter: ExporterProcess
    rdap: RdapServer
    started: float


@pytest.fixture(scope="module")
def world(
    dns_world: DnsWorld,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("nsdomains")
    ca = trustme.CA()
    rdap = RdapServer(ca, host=REGISTRY_HOST)
    exporter: ExporterProcess | None = None
    try:
        provider = ["ns1.provider.test", "ns2.provider.test"]
        rdap.set_domain("good.zz", _domain("good.zz", ["active"], provider, FUTURE))
        rdap.set_domain("shop.co.test", _domain("shop.co.test", ["active"], provider, FUTURE))
        rdap.set_domain("orphan.test", _domain(
            "orphan.test", ["active"], ["ns1.provider.test", "ns9.gone.test"], FUTURE))
        rdap.set_domain("parked.test", _domain(
            "parked.test", ["active"], ["ns1.parking.zz", "ns2.parking.zz"], FUTURE))
        rdap.set_domain("good.test", _domain(
            "good.test", ["active"], ["ns1.good.test", "ns2.good.test"], FUTURE))
        # The nameserver domains. gone.test: the default reply, an RFC 9083 404.
        rdap.set_domain("provider.test", _domain(
            "provider.test", ["pending delete", "redemption period"], provider, FUTURE))
        rdap.set_domain("parking.zz", _domain(
            "parking.zz", ["active"], ["ns1.parking.zz", "ns2.parking.zz"], PAST))
        config = write_exporter_config(
            tmp / "config.yaml",
            rdap={
                "bootstrap": str(write_bootstrap(tmp / "bootstrap.json",
                                                 {"test": rdap, "zz": rdap})),
                "ca_file": str(write_ca(ca, tmp / "ca.pem")),
                "allow_private_addresses": True,
                "interval": "1h",  # a healthy nameserver domain is not read again in this test
                "hold_interval": f"{HOLD:g}s",
                "timeout": "1s",
                "requests_per_second": 50,
                "follow_registrar": False,
            },
            dns={"root_servers": [dns_world.root_server], "interval": "2s", "timeout": "0.4s"},
            email={"interval": "1h"},
            domains=[DomainEntry(name) for name in (
                "good.zz", "shop.co.test", "orphan.test", "parked.test", "parking.zz", "good.test",
            )],
        )
        exporter = ExporterProcess(config, tmp / "exporter").start()
        yield World(exporter, rdap, time.time())
    finally:
        if exporter is not None:
            exporter.stop()
        rdap.stop()


def _healthy(s: Scrape, domain: str, ns_domain: str) -> float | None:
    return s.value("domain_nameserver_domain_healthy", domain=domain, nameserver_domain=ns_domain)


def test_a_dying_nameserver_domain_is_unhealthy_for_every_domain_using_it(world: World) -> None:
    s = world.exporter.wait_for(
        lambda s: _healthy(s, "good.zz", "provider.test") == 0
        and _healthy(s, "shop.co.test", "provider.test") == 0,
        timeout=20,
        message="provider.test (pending delete) never judged unhealthy",
    )
    # Judged from the parent's delegation (the DNS world), not only the registry's set.
    assert s.value("domain_nameserver_info", domain="good.zz", parent="1",
                   nameserver="ns1.provider.test") == 1
    assert s.value("domain_check_success", domain="good.zz", check="nsdomain") == 1


def test_a_monitored_expired_nameserver_domain_is_judged_on_its_own_record(world: World) -> None:
    s = world.exporter.wait_for(
        lambda s: _healthy(s, "parked.test", "parking.zz") == 0, timeout=20,
        message="parking.zz (expired) never judged unhealthy for parked.test",
    )
    expiry_days = s.value("domain_expiry_days", domain="parking.zz")
    assert expiry_days is not None and expiry_days < 0
    # parking.zz's own delegation is in-bailiwick: no nameserver domain of its own to judge.
    assert not s.series("domain_nameserver_domain_healthy", domain="parking.zz")


def test_in_bailiwick_nameservers_are_not_judged(world: World) -> None:
    s = world.exporter.wait_for(
        lambda s: s.value("domain_delegated", domain="good.test") == 1, timeout=20)
    assert not s.series("domain_nameserver_domain_healthy", domain="good.test")
    assert s.value("domain_check_success", domain="good.test", check="nsdomain") is None


def test_an_unregistered_nameserver_domain_needs_a_confirmed_404(world: World) -> None:
    s = world.exporter.wait_for(
        lambda s: _healthy(s, "orphan.test", "gone.test") == 0, timeout=25,
        message="gone.test (404) never confirmed unregistered",
    )
    asked = world.rdap.requests_for("gone.test")
    # 0 only after a second 404 at least hold_interval after the first (one 404 is no deletion).
    assert len(asked) >= 2, asked
    assert asked[1].received - asked[0].received >= HOLD - 0.05, asked
    assert _healthy(s, "orphan.test", "provider.test") in (0.0, 1.0)


def test_shared_reads_and_recovery(world: World) -> None:
    """provider.test serves three monitored domains but is read once per hold_interval while
    unhealthy; renewed, every domain using it turns 1 and it is not read again (interval 1h)."""
    world.exporter.wait_for(lambda s: _healthy(s, "good.zz", "provider.test") == 0, timeout=20)
    world.rdap.set_domain("provider.test", _domain(
        "provider.test", ["client transfer prohibited"],
        ["ns1.provider.test", "ns2.provider.test"], FUTURE))
    renewed = time.time()
    world.exporter.wait_for(
        lambda s: all(_healthy(s, d, "provider.test") == 1
                      for d in ("good.zz", "shop.co.test", "orphan.test")),
        timeout=HOLD * 3 + 5,
        message="provider.test renewed, but not every domain using it followed",
    )
    healthy_at = time.time()
    asked = world.rdap.requests_for("provider.test")
    span = asked[-1].received - asked[0].received
    # Three domains, one lookup per hold_interval (plus the first): never one per domain.
    assert len(asked) <= span / HOLD + 2, [round(r.received - asked[0].received, 2) for r in asked]
    time.sleep(HOLD + 1.5)
    again = world.rdap.requests_for("provider.test")
    assert len(again) == len(asked), "a healthy nameserver domain was read again within the hour"
    print(f"renewal seen after {healthy_at - renewed:.1f}s; provider.test read {len(asked)} "
          f"times in {span:.1f}s")
