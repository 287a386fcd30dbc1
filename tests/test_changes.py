"""Issue 11, registration side, end to end: an RDAP registry whose answers change mid-test, the
running exporter, a real Prometheus with the shipped rules and a real Alertmanager with the
example routing (tests/support/promstack.py: every `for:` shortened to 2s).

Loopback range 127.96.2.0/24. DNS is pointed at an address where nothing listens, so every DNS
check fails and the nameserver-domain check reads the registry's sets (its documented fallback).

    victim.test   locked (client transfer prohibited), NS ns1/ns2.dns-a.test, "Good Registrar"
                  (IANA 1111), administrative contact at gmail.com. Mid-test the registry
                  answers: unlocked, NS ns1/ns2.parking.test, "Other Registrar" (IANA 2222).
    ducks.test    NS ns1/ns2.lapsed-dns.test; lapsed-dns.test is in "pending delete".

Then the exporter restarts on the same --state.file: the observed change times survive, and the
restart is not mistaken for another change.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from exporter.changes import PREVIOUS_KEEP_SECONDS, track
from exporter.registration import Registration
from exporter.store import DnsResult, DomainStatus, RdapResult
from tests.support.exporter_proc import ExporterProcess
from tests.support.nsinfo import nameserver_sets
from tests.support.promstack import PromStack
from tests.support.rdapserver import RdapServer, Reply, make_domain, write_bootstrap, write_ca
from tests.support.scenario import DomainEntry, write_exporter_config

REGISTRY_HOST = "127.96.2.1"
DEAD_DNS = "127.96.2.9"  # nothing listens here
FUTURE = datetime.now(UTC) + timedelta(days=300)
OLD_NS = ["ns1.dns-a.test", "ns2.dns-a.test"]
NEW_NS = ["ns1.parking.test", "ns2.parking.test"]
ALERT_TIMEOUT = 40.0


def victim(locked: bool, nameservers: list[str], registrar: str, iana: str) -> Reply:
    statuses = ["client transfer prohibited"] if locked else ["active"]
    return Reply(body=make_domain(
        "victim.test", FUTURE, statuses, nameservers, registrar, iana,
        contacts={"administrative": "jane.doe@gmail.com"},
    ))


def healthy(name: str, nameservers: list[str]) -> Reply:
    return Reply(body=make_domain(name, FUTURE, ["active"], nameservers, "Good Registrar", "1111"))


@dataclass
class World:
    rdap: RdapServer
    exporter: ExporterProcess
    stack: PromStack
    config: Path
    state: Path
    workdir: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("changes")
    ca = trustme.CA()
    rdap = RdapServer(ca, host=REGISTRY_HOST)
    exporter: ExporterProcess | None = None
    stack: PromStack | None = None
    try:
        rdap.set_domain("victim.test", victim(True, OLD_NS, "Good Registrar", "1111"))
        rdap.set_domain("dns-a.test", healthy("dns-a.test", OLD_NS))
        rdap.set_domain("parking.test", healthy("parking.test", NEW_NS))
        rdap.set_domain("ducks.test", healthy("ducks.test", ["ns1.lapsed-dns.test"]))
        rdap.set_domain("lapsed-dns.test", Reply(body=make_domain(
            "lapsed-dns.test", FUTURE, ["pending delete"], ["ns1.lapsed-dns.test"],
            "Good Registrar", "1111")))
        config = write_exporter_config(
            tmp / "config.yaml",
            rdap={
                "bootstrap": str(write_bootstrap(tmp / "bootstrap.json", {"test": rdap})),
                "ca_file": str(write_ca(ca, tmp / "ca.pem")),
                "allow_private_addresses": True,
                "interval": "2s",
                "hold_interval": "2s",
                "timeout": "1s",
                "requests_per_second": 50,
                "follow_registrar": False,
            },
            dns={"resolvers": [DEAD_DNS], "root_servers": [DEAD_DNS], "interval": "1h",
                 "timeout": "0.2s"},
            email={"interval": "2s"},
            domains=[DomainEntry("victim.test"), DomainEntry("ducks.test")],
        )
        state = tmp / "state.db"
        exporter = ExporterProcess(config, tmp / "exporter", state_file=state).start()
        stack = PromStack(tmp / "stack", [f"127.0.0.1:{exporter.port}"]).start()
        yield World(rdap, exporter, stack, config, state, tmp)
    finally:
        if stack is not None:
            stack.stop()
        if exporter is not None:
            exporter.stop()
        rdap.stop()


def test_first_sight_is_not_a_change(world: World) -> None:
    s = world.exporter.wait_for(
        lambda s: s.value("domain_transfer_lock", domain="victim.test") == 1, timeout=15)
    assert s.value("domain_last_changed_timestamp_seconds", domain="victim.test") == (
        datetime(2025, 4, 16, 4, 27, 20, tzinfo=UTC).timestamp()
    )
    assert s.value("domain_nameservers_changed_timestamp_seconds", domain="victim.test") is None
    assert s.value("domain_registrar_changed_timestamp_seconds", domain="victim.test") is None
    # The registry's set is there, and no "previous" label beside it: no set before a change.
    sets = nameserver_sets(s.series("domain_nameserver_info", domain="victim.test"))
    assert sets.get("registry") == set(OLD_NS), s.for_domain("victim.test")
    assert "previous" not in sets, s.for_domain("victim.test")


def test_lock_removed_ns_and_registrar_changed_reach_alertmanager(world: World) -> None:
    # The lock must be in Prometheus before it is removed, or there is nothing to compare with.
    prometheus = world.stack.prometheus
    deadline = time.monotonic() + 20
    while not prometheus.query('domain_transfer_lock{job="domainwatch",domain="victim.test"} == 1'):
        assert time.monotonic() < deadline, "the lock never reached Prometheus"
        time.sleep(0.2)
    changed = time.time()
    world.rdap.set_domain("victim.test", victim(False, NEW_NS, "Other Registrar", "2222"))

    s = world.exporter.wait_for(
        lambda s: s.value("domain_registrar_changed_timestamp_seconds", domain="victim.test")
        is not None
        and s.value("domain_nameservers_changed_timestamp_seconds", domain="victim.test")
        is not None,
        timeout=15,
    )
    assert s.value("domain_transfer_lock", domain="victim.test") == 0
    ns_at = s.value("domain_nameservers_changed_timestamp_seconds", domain="victim.test")
    assert ns_at is not None and ns_at >= changed - 1
    sets = nameserver_sets(s.series("domain_nameserver_info", domain="victim.test"))
    assert sets.get("previous") == set(OLD_NS), s.for_domain("victim.test")
    assert sets.get("registry") == set(NEW_NS), s.for_domain("victim.test")

    hook = world.stack.webhook
    _, lock = hook.wait_for(timeout=ALERT_TIMEOUT, status="firing",
                            alertname="DomainTransferLockRemoved", domain="victim.test")
    assert lock["labels"]["severity"] == "warning"
    assert "Other Registrar" in lock["annotations"]["description"]
    notification, ns = hook.wait_for(timeout=ALERT_TIMEOUT, status="firing",
                                     alertname="DomainNameserversChanged", domain="victim.test")
    assert notification.receiver == "ticket", hook.summary()
    description = ns["annotations"]["description"]
    assert "before:   ns1.dns-a.test, ns2.dns-a.test" in description, description
    assert "registry: ns1.parking.test, ns2.parking.test" in description, description
    _, registrar = hook.wait_for(timeout=ALERT_TIMEOUT, status="firing",
                                 alertname="DomainRegistrarChanged", domain="victim.test")
    assert "now Other Registrar" in registrar["annotations"]["description"]
    print(f"three change alerts delivered {time.time() - changed:.1f}s after the registry changed")


def test_lapsed_nameserver_domain_pages(world: World) -> None:
    s = world.exporter.wait_for(
        lambda s: s.value("domain_nameserver_domain_healthy", domain="ducks.test",
                          nameserver_domain="lapsed-dns.test") == 0,
        timeout=15,
    )
    assert s.value("domain_check_success", domain="ducks.test", check="nsdomain") == 1
    notification, alert = world.stack.webhook.wait_for(
        timeout=ALERT_TIMEOUT, status="firing", alertname="DomainNameserverDomainUnhealthy",
        domain="ducks.test")
    assert notification.receiver == "pager"
    assert alert["labels"]["nameserver_domain"] == "lapsed-dns.test"


def test_personal_contact_warns(world: World) -> None:
    world.exporter.wait_for(
        lambda s: s.value("domain_contact_email_personal", domain="victim.test",
                          role="administrative") == 1,
        timeout=15,
    )
    _, alert = world.stack.webhook.wait_for(
        timeout=ALERT_TIMEOUT, status="firing", alertname="DomainContactEmailPersonal",
        domain="victim.test")
    assert alert["labels"]["role"] == "administrative"
    assert "gmail" not in str(alert["labels"]), "no address or mail domain in labels"


def test_change_times_survive_a_restart(world: World) -> None:
    before = world.exporter.wait_for(
        lambda s: s.value("domain_nameservers_changed_timestamp_seconds", domain="victim.test")
        is not None,
        timeout=15,
    )
    ns_at = before.value("domain_nameservers_changed_timestamp_seconds", domain="victim.test")
    registrar_at = before.value("domain_registrar_changed_timestamp_seconds",
                                domain="victim.test")
    world.exporter.stop()  # SIGTERM: the scheduler saves the state on its way out
    again = ExporterProcess(world.config, world.workdir / "again", state_file=world.state).start()
    try:
        # After the restart and a fresh RDAP read of the unchanged registry: the same times.
        first = again.scrape()
        assert first.value("domain_nameservers_changed_timestamp_seconds",
                           domain="victim.test") == ns_at, first.for_domain("victim.test")
        world.rdap.wait_for_request("victim.test", len(world.rdap.requests_for("victim.test")) + 1)
        time.sleep(0.5)
        s = again.scrape()
        ns_now = s.value("domain_nameservers_changed_timestamp_seconds", domain="victim.test")
        assert ns_now == ns_at
        assert s.value("domain_registrar_changed_timestamp_seconds",
                       domain="victim.test") == registrar_at
    finally:
        again.stop()


# --- the change rules, without servers ------------------------------------------------------------


def _status(ns: tuple[str, ...] | None, registrar: str = "Good Registrar", iana: str | None = "1",
            parent: tuple[str, ...] | None = None, delegated: bool | None = True) -> DomainStatus:
    reg = Registration(name="x.test", nameservers=ns, registrar=registrar, registrar_iana_id=iana)
    dns = (DnsResult("test", parent, None, delegated, {}, None) if parent is not None else None)
    return DomainStatus(name="x.test", rdap=RdapResult(True, "https://r/", reg), dns=dns)


def _carry(old: DomainStatus, new: DomainStatus) -> DomainStatus:
    return replace(new, changes=old.changes)


def test_change_rules() -> None:
    first = track(_status(("a.dns.test",), parent=("a.dns.test",)), 100.0)
    assert first.changes.registry_nameservers == ("a.dns.test",)
    assert first.changes.nameservers_changed_at is None  # first sight is no change
    assert first.changes.registrar_changed_at is None
    # The registry moves first, then the parent: both stamp, `previous` stays the old set.
    moved = track(_carry(first, _status(("b.dns.test",), parent=("a.dns.test",))), 200.0)
    assert (moved.changes.nameservers_changed_at, moved.changes.previous_nameservers) == (
        200.0, ("a.dns.test",))
    follows = track(_carry(moved, _status(("b.dns.test",), parent=("b.dns.test",))), 300.0)
    assert (follows.changes.nameservers_changed_at, follows.changes.previous_nameservers) == (
        300.0, ("a.dns.test",))
    # A pulled delegation (hold, deletion) is not a nameserver change.
    pulled = _carry(follows, _status(("b.dns.test",), parent=(), delegated=False))
    assert track(pulled, 400.0) is pulled
    # Registrar: spelling noise with the same IANA ID is no change; another ID is.
    same = _carry(follows, _status(("b.dns.test",), registrar="GOOD  registrar", iana="1"))
    assert track(same, 500.0).changes.registrar_changed_at is None
    other = track(_carry(follows, _status(("b.dns.test",), registrar="Other", iana="2")), 600.0)
    assert other.changes.registrar_changed_at == 600.0
    assert other.changes.previous_registrar == "Good Registrar (IANA 1)"
    # The previous set is kept for a day, then dropped; the change time stays.
    later = track(other, 300.0 + PREVIOUS_KEEP_SECONDS + 1)
    assert later.changes.previous_nameservers is None
    assert later.changes.nameservers_changed_at == 300.0
