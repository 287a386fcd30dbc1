"""Issue 7 end to end: verdicts you can page on, on real servers, through the running exporter.

Every case of /work/notes/verdicts.md that this module covers is asserted on /metrics of a real
`python -m exporter` subprocess, against the Knot world of `tests/support/dnsworld.py` (127.53.x)
and HTTPS RDAP servers (`RdapServer`, this module's range 127.87.0.0/16). One module-scoped
`world` starts:

    main    delegation walks from the test root, dns.interval 1 s, rdap.interval 6 h and
            rdap.hold_interval 3 s: every RDAP read after the first is either a hold /
            unregistered re-read or one triggered by the DNS check, which is what the cases
            are about. A `ScrapeHistory` keeps every scrape, so "never 0" / "never flaps" is
            judged on the whole run, not on the scrape a test happens to take.
    mail    zone cuts and mail lookups through the world's unbound (contact verdicts),
            rdap.interval 2 s, email.interval 1 h (so only RDAP- or reload-triggered
            e-mail checks run while a test waits)
    empty   a config without domains

A background thread flips flap.test's delegation at the parent every 0.8 s for the whole run,
so the pacing of DNS-triggered RDAP re-reads can be read off the RDAP server's request log at
the end. Tests that edit zones use the world's editable names (flip.test, ...); the fixture puts
every edited zone back afterwards.

Not covered here (other modules): restored-state age (case 6), intercepting DNS (2), IPv6 (10),
sub-zone mail domains and SMTP (9, 12 SMTP), backward clock steps (12, unit-tested).
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.support.dnsworld import (
    GOOD_NS,
    PARKING_NS,
    PROVIDER_NS,
    DnsWorld,
    dns_world,  # noqa: F401
)
from tests.support.exporter_proc import ExporterProcess, Scrape
from tests.support.nsinfo import nameserver_sets
from tests.support.rdapserver import (
    RdapServer,
    Reply,
    make_domain,
    not_found_reply,
    write_bootstrap,
    write_ca,
)
from tests.support.sampler import ScrapeHistory
from tests.support.scenario import DomainEntry, wait_after_rdap, write_exporter_config

DNS_INTERVAL = 1.0
HOLD = 3.0  # rdap.hold_interval of the main exporter
JITTER = 1.1  # the scheduler stretches an interval by up to 10 %
# Slack for "as soon as possible" on a 2-core machine shared with other test runs: one RDAP
# round trip, one scrape interval, scheduling noise. Far below every interval that matters.
SLACK = 2.0
WAIT = 15.0
DEAD = "127.53.9.9"  # nothing listens here
DEAD_NS = ("ns-dead1.provider.test", "ns-dead2.provider.test")
FLAP_PERIOD = 0.8
# This module's own loopback range for the servers it starts.
REGISTRY_HOST, REGISTRAR_HOST, MAIL_REGISTRY_HOST = "127.87.0.1", "127.87.0.2", "127.87.0.3"

NOW = datetime.now(UTC).replace(microsecond=0)
EXPIRY = NOW + timedelta(days=200)
# Auto-renew: the registry has already added a year; the registrar's own date has passed.
AUTORENEW_REGISTRY_EXPIRY = NOW + timedelta(days=362)
AUTORENEW_REGISTRAR_EXPIRY = NOW - timedelta(days=3)

UNDELIVERABLE = "null-mx.test"  # RFC 7505 null MX in the DNS world: deliverable 0


# --- RDAP bodies --------------------------------------------------------------------------------

def body(
    name: str,
    statuses: list[str],
    nameservers: tuple[str, ...] | None = PROVIDER_NS,
    **kw: Any,
) -> dict[str, Any]:
    """A registry answer; `nameservers=None` leaves the list out (registry publishes none)."""
    doc = make_domain(
        name, kw.pop("expiry", EXPIRY), statuses, list(nameservers or ()),
        "Example Registrar, Inc.", "1234", **kw,
    )
    if nameservers is None:
        del doc["nameservers"]
    return doc


def ok(name: str, nameservers: tuple[str, ...] | None = PROVIDER_NS, **kw: Any) -> Reply:
    return Reply(body=body(name, ["client transfer prohibited"], nameservers, **kw))


def held(name: str, nameservers: tuple[str, ...] | None = PROVIDER_NS, **kw: Any) -> Reply:
    return Reply(body=body(name, ["client hold", "client transfer prohibited"], nameservers, **kw))


# --- the world ----------------------------------------------------------------------------------

MAIN_DOMAINS = (
    DomainEntry("autorenew.test"),  # 1
    DomainEntry("mixup.test"),  # 12: the registry answers for another name
    DomainEntry("parked.test"),  # 3: registry GOOD_NS, parent PARKING_NS, no expected set
    DomainEntry("pulled.test", GOOD_NS),  # 4a: held, parent NXDOMAIN, expected set
    DomainEntry("childdiff.test"),  # 4b: child apex adds ns3
    DomainEntry("migrated.test"),  # 4c: registry still lists the old provider
    DomainEntry("dead.test", GOOD_NS),  # 5: parent NS names dead, expected differs
    DomainEntry("good.test", GOOD_NS),  # 7: one 404, then 200; delegated
    DomainEntry("good.zz"),  # 7: always 404 but delegated
    DomainEntry("shop.co.test"),  # 7: held, one 404 between two 200s
    DomainEntry("vanished.test"),  # 7: 404 + NXDOMAIN, then re-registered
    DomainEntry("flip.test"),  # 11a: registry lists NS
    DomainEntry("flip-nons.test"),  # 11a: registry lists no NS
    DomainEntry("swap.test"),  # 11b: registry lists no NS
    DomainEntry("flap.test"),  # 11c: delegation flips all the time; registry lists no NS
    DomainEntry("unheard-of.test"),  # 11c: registered, no NS, never delegated: nothing changes
)

MAIL_DOMAINS = (
    DomainEntry("good.zz"),  # RDAP registrant at null-mx.test, later redacted
    DomainEntry("shop.co.test", contacts=(("technical", f"dw-tech@{UNDELIVERABLE}"),)),
)


def _program_main(reg: RdapServer, registrar: RdapServer) -> None:
    reg.set_domain("autorenew.test", Reply(body=body(
        "autorenew.test", ["auto renew period", "client transfer prohibited"],
        expiry=AUTORENEW_REGISTRY_EXPIRY, self_url=reg.domain_url("autorenew.test"),
        related_registrar_url=registrar.domain_url("autorenew.test"),
    )))
    registrar.set_domain("autorenew.test", Reply(body=body(
        "autorenew.test", ["client transfer prohibited"], expiry=None,
        registrar_expiry=AUTORENEW_REGISTRAR_EXPIRY,
    )))
    reg.set_domain("mixup.test", ok("other.test"))
    reg.set_domain("parked.test", ok("parked.test", GOOD_NS))
    reg.set_domain("pulled.test", held("pulled.test", GOOD_NS))
    reg.set_domain("childdiff.test", ok("childdiff.test"))
    reg.set_domain("migrated.test", ok("migrated.test", PROVIDER_NS))
    reg.set_domain("dead.test", ok("dead.test", DEAD_NS))
    reg.set_domain("good.test", not_found_reply(), ok("good.test", GOOD_NS))
    reg.set_domain("good.zz", not_found_reply())
    reg.set_domain(
        "shop.co.test", held("shop.co.test"), not_found_reply(), held("shop.co.test")
    )
    reg.set_domain("vanished.test", not_found_reply())
    reg.set_domain("flip.test", ok("flip.test"))
    for name in ("flip-nons.test", "swap.test", "flap.test"):
        reg.set_domain(name, ok(name, None))
    reg.set_domain("unheard-of.test", ok("unheard-of.test", ()))


def _program_mail(reg: RdapServer) -> None:
    reg.set_domain("good.zz", ok("good.zz", contacts={"registrant": f"dw-owner@{UNDELIVERABLE}"}))
    reg.set_domain("shop.co.test", ok("shop.co.test"))


def _rdap_settings(bootstrap: Path, ca_file: Path, interval: str, hold: str) -> dict[str, Any]:
    return {
        "bootstrap": str(bootstrap),
        "ca_file": str(ca_file),
        "allow_private_addresses": True,
        "interval": interval,
        "hold_interval": hold,
        "timeout": "1s",
        "requests_per_second": 50,
        "follow_registrar": True,
    }


@dataclass
class Flapper:
    """Flips flap.test's delegation between two NS sets until stopped."""

    dns: DnsWorld
    started: float = 0.0
    flips: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Flapper:
        self.started = time.time()
        self._thread = threading.Thread(target=self._run, name="flap", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        sets = (["ns1.provider", "ns2.provider"], ["ns1.provider"])
        while not self._stop.wait(FLAP_PERIOD):
            try:
                self.dns.set_delegation("test", "flap", sets[(self.flips + 1) % 2])
                self.flips += 1
            except (RuntimeError, OSError) as exc:
                self.errors.append(str(exc))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


@dataclass
class World:
    dns: DnsWorld
    registry: RdapServer
    registrar: RdapServer
    mailreg: RdapServer
    main: ExporterProcess
    mail: ExporterProcess
    empty: ExporterProcess
    history: ScrapeHistory
    flapper: Flapper
    mail_config: Path
    mail_settings: dict[str, Any]


@pytest.fixture(scope="module")
def world(
    dns_world: DnsWorld,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("verdicts-e2e")
    ca = trustme.CA()
    registry, registrar, mailreg = (
        RdapServer(ca, host=REGISTRY_HOST), RdapServer(ca, host=REGISTRAR_HOST),
        RdapServer(ca, host=MAIL_REGISTRY_HOST),
    )
    ca_file = write_ca(ca, tmp / "ca.pem")
    exporters: list[ExporterProcess] = []
    history: ScrapeHistory | None = None
    flapper = Flapper(dns_world)
    try:
        _program_main(registry, registrar)
        _program_mail(mailreg)
        main_cfg = write_exporter_config(
            tmp / "main.yaml",
            rdap=_rdap_settings(
                write_bootstrap(tmp / "main-bootstrap.json", {"test": registry, "zz": registry}),
                ca_file, "6h", f"{HOLD:g}s",
            ),
            dns={"root_servers": [dns_world.root_server], "interval": f"{DNS_INTERVAL:g}s",
                 "timeout": "0.4s"},
            email={"interval": "1h"},
            domains=MAIN_DOMAINS,
        )
        mail_bootstrap = write_bootstrap(
            tmp / "mail-bootstrap.json", {"test": mailreg, "zz": mailreg}
        )
        mail_settings = {
            "rdap": _rdap_settings(mail_bootstrap, ca_file, "2s", "2s"),
            "dns": {"resolvers": [dns_world.resolver], "root_servers": [DEAD],
                    "interval": "1h", "timeout": "0.5s"},
            "email": {"interval": "1h", "allow_private_addresses": True},
        }
        mail_cfg = write_exporter_config(
            tmp / "mail.yaml", **mail_settings, domains=MAIL_DOMAINS
        )
        empty_cfg = write_exporter_config(
            tmp / "empty.yaml", rdap=mail_settings["rdap"], dns=mail_settings["dns"],
            email=mail_settings["email"], domains=(),
        )
        main = ExporterProcess(main_cfg, tmp / "main")
        exporters.append(main)
        # Sampling starts before the exporter is ready: its first verdicts are part of the run.
        history = ScrapeHistory(main, interval=0.2).start()
        flapper.start()
        main.start()
        mail = ExporterProcess(mail_cfg, tmp / "mail")
        exporters.append(mail)
        mail.start()
        empty = ExporterProcess(empty_cfg, tmp / "empty")
        exporters.append(empty)
        empty.start()
        yield World(
            dns_world, registry, registrar, mailreg, main, mail, empty, history, flapper,
            mail_cfg, mail_settings,
        )
    finally:
        flapper.stop()
        if history is not None:
            history.stop()
        for exporter in exporters:
            exporter.stop()
        for server in (registry, registrar, mailreg):
            server.stop()
        dns_world.reset_all()


@pytest.fixture(autouse=True)
def _log_tails_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    failed_before = request.session.testsfailed
    yield
    if "world" in request.fixturenames and request.session.testsfailed > failed_before:
        w: World = request.getfixturevalue("world")
        for name, e in (("main", w.main), ("mail", w.mail)):
            print(f"--- {name} exporter log tail ({e.log_path}) ---\n{e.log_tail(40)}")


# --- helpers ------------------------------------------------------------------------------------

def check_ok(domain: str, check: str) -> Callable[[Scrape], bool]:
    return lambda s: s.value("domain_check_success", domain=domain, check=check) == 1


def errors(s: Scrape, domain: str, check: str) -> dict[str, float]:
    return {
        lbl["reason"]: v
        for lbl, v in s.series("domain_check_error_info", domain=domain, check=check)
    }


def ns_info(s: Scrape, domain: str) -> dict[str, set[str]]:
    """source -> its set; a source without a set (no label) is no key."""
    return nameserver_sets(s.series("domain_nameserver_info", domain=domain))


def dns_attempt(s: Scrape, domain: str) -> float | None:
    # Exported while the check fails; after a success the attempt is the last success.
    attempt = s.value("domain_check_last_attempt_timestamp_seconds", domain=domain, check="dns")
    if attempt is None:
        attempt = s.value("domain_check_last_success_timestamp_seconds", domain=domain, check="dns")
    return attempt


def log_lines(e: ExporterProcess, pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [line for line in e.log_path.read_text(errors="replace").splitlines() if rx.search(line)]


def detection_path_lines(e: ExporterProcess, domain: str) -> list[str]:
    return log_lines(e, r"detection path: domain=" + re.escape(domain) + r"\b.*-> rdap re-read")


def wait_until_paced(registry: RdapServer, domain: str) -> None:
    """Let a full hold_interval pass since the domain's last RDAP read, so a re-read the test
    triggers is not legitimately held back by the <= 1 per hold_interval pacing."""
    seen = registry.requests_for(domain)
    if seen:
        pause = seen[-1].received + HOLD * JITTER + 0.2 - time.time()
        if pause > 0:
            time.sleep(pause)


def post(e: ExporterProcess, path: str) -> int:
    request = urllib.request.Request(f"{e.url}{path}", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return int(resp.status)


# --- case 1: auto-renew ---------------------------------------------------------------------------

def test_auto_renew_counts_to_the_registrar_expiry(world: World) -> None:
    d = "autorenew.test"
    s = world.main.wait_for(
        lambda s: check_ok(d, "rdap")(s)
        and s.value("domain_registrar_expiry_timestamp_seconds", domain=d) is not None,
        timeout=WAIT, message=f"{d}: no RDAP result with the registrar's expiry",
    )
    assert world.registrar.requests_for(d), "the registrar's RDAP was never asked"
    statuses = {lbl["status"] for lbl, _v in s.series("domain_status", domain=d)}
    assert "auto renew period" in statuses, s.for_domain(d)
    # The date the domain stops being paid for is the registrar's, which has passed.
    assert s.value("domain_expiry_timestamp_seconds", domain=d) == (
        AUTORENEW_REGISTRAR_EXPIRY.timestamp()
    ), s.for_domain(d)
    days = s.value("domain_expiry_days", domain=d)
    assert days is not None and days < 0, s.for_domain(d)
    assert days == pytest.approx(
        (AUTORENEW_REGISTRAR_EXPIRY.timestamp() - s.taken) / 86400, abs=0.05
    )
    # Both raw dates stay visible.
    assert s.value("domain_registry_expiry_timestamp_seconds", domain=d) == (
        AUTORENEW_REGISTRY_EXPIRY.timestamp()
    ), s.for_domain(d)
    assert s.value("domain_registrar_expiry_timestamp_seconds", domain=d) == (
        AUTORENEW_REGISTRAR_EXPIRY.timestamp()
    )


# --- case 12: an answer for another name --------------------------------------------------------

def test_rdap_object_for_another_name_is_invalid(world: World) -> None:
    d = "mixup.test"
    s = world.main.wait_for(
        lambda s: s.value("domain_check_success", domain=d, check="rdap") is not None,
        timeout=WAIT, message=f"{d}: the RDAP check never ran",
    )
    assert world.registry.requests_for(d)[0].status == 200
    assert s.value("domain_check_success", domain=d, check="rdap") == 0, s.for_domain(d)
    assert errors(s, d, "rdap") == {"invalid_response": 1.0}, s.for_domain(d)
    # Nothing of the other name's registration is reported as this domain's.
    for name in ("domain_registered", "domain_hold", "domain_expiry_timestamp_seconds",
                 "domain_info"):
        assert s.value(name, domain=d) is None, f"{name}\n{s.for_domain(d)}"


# --- case 4: no false hijack --------------------------------------------------------------------

def test_held_undelegated_domain_has_no_mismatch(world: World) -> None:
    """4a: a held domain the registry pulled from the zone is not also a hijack."""
    d = "pulled.test"
    s = world.main.wait_for(
        lambda s: s.value("domain_delegated", domain=d) == 0
        and s.value("domain_hold", domain=d) == 1,
        timeout=WAIT, message=f"{d}: never held and not delegated",
    )
    first = dns_attempt(s, d)
    assert first is not None
    # Two more DNS checks with the hold and the expected set known.
    world.main.wait_for(
        lambda s: (dns_attempt(s, d) or 0) > first + DNS_INTERVAL, timeout=WAIT
    )
    seen = {v for _t, v in world.history.values("domain_nameserver_mismatch", domain=d)}
    assert seen == {None}, f"{d}: mismatch exported while not delegated: {seen}"
    assert world.main.value("domain_nameserver_mismatch", domain=d) is None


def test_extra_child_server_is_inconsistent_not_mismatch(world: World) -> None:
    """4b: the zone lists one server more than the parent: a warning, not a hijack."""
    d = "childdiff.test"
    s = wait_after_rdap(
        world.main, d, "dns",
        lambda s: s.value("domain_nameserver_inconsistent", domain=d) is not None
        and s.value("domain_nameserver_mismatch", domain=d) is not None,
        timeout=WAIT,
    )
    assert s.value("domain_nameserver_mismatch", domain=d) == 0, s.for_domain(d)
    assert s.value("domain_nameserver_inconsistent", domain=d) == 1, s.for_domain(d)
    info = ns_info(s, d)
    assert info["parent"] == info["registry"] == set(PROVIDER_NS), s.for_domain(d)
    assert info["child"] == {*PROVIDER_NS, "ns3.provider.test"}, s.for_domain(d)
    seen = {v for _t, v in world.history.values("domain_nameserver_mismatch", domain=d)}
    assert 1.0 not in seen, f"{d}: mismatch was 1 at some point: {seen}"


def test_stale_registry_names_are_not_probed_as_child(world: World) -> None:
    """4c: mid-migration the registry still lists the old provider, which still serves its old
    copy of the zone; only the servers the parent delegates to make up the child view."""
    d = "migrated.test"
    s = wait_after_rdap(
        world.main, d, "dns",
        lambda s: check_ok(d, "dns")(s) and "child" in ns_info(s, d),
        timeout=WAIT,
    )
    info = ns_info(s, d)
    assert info["parent"] == set(PARKING_NS), s.for_domain(d)
    assert info["registry"] == set(PROVIDER_NS), s.for_domain(d)
    assert info["child"] == set(PARKING_NS), s.for_domain(d)
    lame = {lbl["nameserver"] for lbl, _v in s.series("domain_nameserver_lame", domain=d)}
    assert lame <= set(PARKING_NS), s.for_domain(d)
    for scrape in world.history.scrapes:
        child = ns_info(scrape, d).get("child", set())
        assert not child & set(PROVIDER_NS), f"{d}: stale registry server probed: {child}"


# --- case 5: a dark domain ------------------------------------------------------------------------

def test_dark_domain_exports_parent_set_and_mismatch(world: World) -> None:
    d = "dead.test"
    s = world.main.wait_for(
        lambda s: s.value("domain_check_success", domain=d, check="dns") == 0
        and s.value("domain_nameserver_mismatch", domain=d) is not None,
        timeout=WAIT,
        message=f"{d}: no failed DNS check with a mismatch verdict",
    )
    assert errors(s, d, "dns") == {"unreachable": 1.0}, s.for_domain(d)
    assert s.value("domain_nameserver_mismatch", domain=d) == 1, s.for_domain(d)
    info = ns_info(s, d)
    assert info.get("parent") == set(DEAD_NS), s.for_domain(d)
    assert info.get("expected") == set(GOOD_NS), s.for_domain(d)
    seen = {v for _t, v in world.history.values("domain_nameserver_mismatch", domain=d)}
    assert 0.0 not in seen, f"{d}: mismatch 0 exported for a parent set != expected: {seen}"


# --- case 7: a 404 needs confirmation ----------------------------------------------------------

def test_single_404_of_delegated_domain_is_not_unregistered(world: World) -> None:
    """good.test: the first read is a 404, the next a 200; the parent delegates it meanwhile."""
    d = "good.test"
    s = world.main.wait_for(
        lambda s: s.value("domain_registered", domain=d) == 1,
        timeout=HOLD * JITTER + WAIT, message=f"{d}: registered 1 never came back",
    )
    reads = world.registry.requests_for(d)
    assert [r.status for r in reads[:2]] == [404, 200], reads
    # Re-read after hold_interval, not after rdap.interval (6 h).
    assert reads[1].received - reads[0].received <= HOLD * JITTER + SLACK, reads
    assert s.value("domain_delegated", domain=d) == 1, s.for_domain(d)
    seen = [v for _t, v in world.history.values("domain_registered", domain=d)]
    assert 0.0 not in seen, f"{d}: an unconfirmed 404 was exported as unregistered"


def test_single_404_keeps_registered_1(world: World) -> None:
    """shop.co.test is held, so it is re-read every hold_interval: 200, 404, 200."""
    d = "shop.co.test"
    world.registry.wait_for_request(d, 3, timeout=3 * HOLD * JITTER + WAIT)
    third = world.registry.requests_for(d)[2]
    assert [r.status for r in world.registry.requests_for(d)[:2]] == [200, 404]
    world.main.wait_for(
        lambda s: s.taken > (third.replied or third.received) + 0.5, timeout=WAIT
    )
    seen = [v for _t, v in world.history.values("domain_registered", domain=d)]
    assert 1.0 in seen and 0.0 not in seen, f"{d}: registered over the run: {set(seen)}"


def test_two_404s_a_hold_interval_apart_confirm(world: World) -> None:
    """good.zz always answers 404 but stays delegated: 0 only after a second 404 >= hold later."""
    d = "good.zz"
    world.main.wait_for(
        lambda s: s.value("domain_registered", domain=d) == 0,
        timeout=2 * HOLD * JITTER + WAIT, message=f"{d}: two 404s never confirmed",
    )
    first_zero = world.history.first(lambda s: s.value("domain_registered", domain=d) == 0)
    assert first_zero is not None
    before = [r for r in world.registry.requests_for(d) if r.received < first_zero.taken]
    assert all(r.status == 404 for r in before), before
    span = before[-1].received - before[0].received
    assert span >= HOLD - 0.3, (
        f"{d}: registered 0 after 404s only {span:.2f}s apart (hold_interval {HOLD}s)"
    )
    seen = {v for _t, v in world.history.values("domain_registered", domain=d)}
    assert 1.0 not in seen


def test_404_with_nxdomain_confirms_then_reregistration_recovers(world: World) -> None:
    d = "vanished.test"
    s = world.main.wait_for(
        lambda s: s.value("domain_registered", domain=d) == 0,
        timeout=HOLD + WAIT, message=f"{d}: 404 + NXDOMAIN never confirmed",
    )
    assert s.value("domain_delegated", domain=d) == 0, s.for_domain(d)
    first_zero = world.history.first(lambda s: s.value("domain_registered", domain=d) == 0)
    assert first_zero is not None
    answered = [
        r for r in world.registry.requests_for(d)
        if r.replied is not None and r.replied < first_zero.taken
    ]
    # Confirmed by the parent's authoritative NXDOMAIN, not by waiting for a second 404.
    assert len(answered) == 1 and answered[0].status == 404, answered
    assert first_zero.taken - answered[0].received <= DNS_INTERVAL * JITTER + SLACK

    # Re-registered: unregistered domains are re-read every hold_interval.
    world.registry.set_domain(d, ok(d))
    changed = time.time()
    s = world.main.wait_for(
        lambda s: s.value("domain_registered", domain=d) == 1,
        timeout=HOLD * JITTER + WAIT, message=f"{d}: re-registration not seen",
    )
    assert s.taken - changed <= HOLD * JITTER + SLACK, f"took {s.taken - changed:.1f}s"


# --- case 3: a persistent mismatch does not flap --------------------------------------------------

def test_persistent_registry_mismatch_never_flaps(world: World) -> None:
    d = "parked.test"
    checks_wanted = 16

    def enough() -> bool:
        start = world.history.first(
            lambda s: s.value("domain_nameserver_mismatch", domain=d) is not None
        )
        if start is None:
            return False
        attempts = {dns_attempt(s, d) for s in world.history.since(start.taken)}
        return len(attempts) >= checks_wanted

    deadline = time.monotonic() + checks_wanted * DNS_INTERVAL * JITTER + 2 * WAIT
    while not enough():
        assert time.monotonic() < deadline, (
            f"{d}: fewer than {checks_wanted} DNS checks with a mismatch verdict\n"
            + world.main.scrape().for_domain(d)
        )
        time.sleep(0.5)

    start = world.history.first(
        lambda s: s.value("domain_nameserver_mismatch", domain=d) is not None
    )
    assert start is not None
    samples = world.history.since(start.taken)
    values = [s.value("domain_nameserver_mismatch", domain=d) for s in samples]
    flips = [(round(s.taken - start.taken, 1), v) for s, v in zip(samples, values, strict=True)
             if v != 1]
    assert not flips, f"{d}: mismatch not 1 at (seconds after it appeared, value): {flips}"
    s = samples[-1]
    info = ns_info(s, d)
    assert info["parent"] == set(PARKING_NS) and info["registry"] == set(GOOD_NS), info

    # RDAP was re-read to confirm, soon after the first read, and then at most once per
    # hold_interval (rdap.interval is 6 h).
    reads = world.registry.requests_for(d)
    assert len(reads) >= 2, reads
    assert reads[1].received - reads[0].received <= HOLD * JITTER + SLACK, reads
    gaps = [b.received - a.received for a, b in itertools.pairwise(reads[1:])]
    assert all(g >= HOLD - 0.5 for g in gaps), f"re-reads closer than hold_interval: {gaps}"


# --- case 11: time to page ------------------------------------------------------------------------

@pytest.mark.parametrize("d", ["flip.test", "flip-nons.test"])
def test_hold_pages_within_a_dns_interval(world: World, d: str) -> None:
    """The registrar holds the domain and the registry pulls the delegation. rdap.interval is
    6 h: the hold can only show up this fast through the DNS check's trigger. flip-nons.test's
    registry lists no nameservers (nothing to disagree with the parent)."""
    e = world.main
    e.wait_for(
        lambda s: s.value("domain_hold", domain=d) == 0
        and s.value("domain_delegated", domain=d) == 1 and check_ok(d, "dns")(s),
        timeout=WAIT, message=f"{d}: never healthy",
    )
    wait_until_paced(world.registry, d)
    world.registry.set_domain(d, held(d, PROVIDER_NS if d == "flip.test" else None))
    pulled = time.time()
    world.dns.set_delegation("test", d.removesuffix(".test"), None)
    s = e.wait_for(
        lambda s: s.value("domain_hold", domain=d) == 1,
        timeout=HOLD + WAIT, message=f"{d}: the hold did not show",
    )
    took = s.taken - pulled
    print(f"\n{d}: domain_hold 1 on /metrics {took:.2f}s after the delegation was pulled")
    assert took <= DNS_INTERVAL * JITTER + SLACK, f"{d}: hold paged {took:.1f}s after the pull"
    s = e.wait_for(lambda s: s.value("domain_delegated", domain=d) == 0, timeout=WAIT)
    assert s.value("domain_nameserver_mismatch", domain=d) is None, s.for_domain(d)
    lines = detection_path_lines(e, d)
    assert lines, f"{d}: no 'detection path' log line\n{e.log_tail(30)}"


def test_parent_ns_change_triggers_rdap_reread(world: World) -> None:
    d = "swap.test"
    e = world.main
    e.wait_for(
        lambda s: check_ok(d, "dns")(s) and ns_info(s, d).get("parent") == set(PROVIDER_NS),
        timeout=WAIT, message=f"{d}: never healthy",
    )
    wait_until_paced(world.registry, d)
    before = len(world.registry.requests_for(d))
    changed = time.time()
    world.dns.set_delegation("test", "swap", ["ns1.provider", "ns3.provider"])
    read = world.registry.wait_for_request(d, before + 1, timeout=HOLD + WAIT)
    print(f"\n{d}: RDAP re-read {read.received - changed:.2f}s after the parent NS change")
    assert read.received - changed <= DNS_INTERVAL * JITTER + SLACK, (
        f"{d}: RDAP re-read {read.received - changed:.1f}s after the NS change"
    )
    e.wait_for(
        lambda s: ns_info(s, d).get("parent") == {"ns1.provider.test", "ns3.provider.test"},
        timeout=WAIT,
    )
    assert detection_path_lines(e, d), f"{d}: no 'detection path' log line\n{e.log_tail(30)}"


def test_triggered_rereads_are_paced_per_hold_interval(world: World) -> None:
    """flap.test's parent NS set has changed every 0.8 s since the module started."""
    d = "flap.test"
    f = world.flapper
    assert not f.errors, f.errors
    ran_for = 4 * HOLD
    pause = f.started + ran_for - time.time()
    if pause > 0:
        time.sleep(pause)
    now = time.time()
    assert f.flips >= ran_for / FLAP_PERIOD / 2, f"only {f.flips} flips"
    reads = world.registry.requests_for(d)
    assert reads and reads[0].received > f.started, "flapping began after the first read"
    # Every read after the first (scheduled) one: rdap.interval is 6 h and the domain is
    # neither held nor unregistered, so each came from a DNS check that saw a change.
    triggered = reads[1:]
    assert len(triggered) >= 2, f"{d}: {len(triggered)} re-reads in {now - f.started:.0f}s"
    gaps = [b.received - a.received for a, b in itertools.pairwise(triggered)]
    assert all(g >= HOLD - 0.5 for g in gaps), f"{d}: re-reads closer than hold_interval: {gaps}"
    assert len(triggered) <= (now - f.started) / HOLD + 1, len(triggered)
    print(f"\nflap.test: {f.flips} parent NS changes, {len(triggered)} triggered RDAP re-reads "
          f"in {now - f.started:.1f}s, gaps {[round(g, 2) for g in gaps]}")
    counts: dict[str, int] = {}
    for r in world.registry.requests:
        name = r.path.rsplit("/", 1)[-1]
        counts[name] = counts.get(name, 0) + 1
    print(f"RDAP reads per domain after {now - f.started:.1f}s: {counts}")


def test_steady_state_triggers_no_rereads(world: World) -> None:
    """unheard-of.test is registered (active, no nameservers) and was never in the zone: the
    parent's NXDOMAIN is the same on every DNS check, which is no change, so the registry
    keeps getting about 24h / rdap.interval reads (here: the first one, plus at most one
    confirming re-read when the NXDOMAIN was first seen)."""
    d = "unheard-of.test"
    e = world.main
    e.wait_for(
        lambda s: s.value("domain_delegated", domain=d) == 0 and check_ok(d, "rdap")(s),
        timeout=WAIT, message=f"{d}: never registered-but-undelegated",
    )
    first = world.registry.requests_for(d)[0].received
    pause = first + 4 * HOLD - time.time()
    if pause > 0:
        time.sleep(pause)
    reads = world.registry.requests_for(d)
    took = time.time() - first
    assert len(reads) <= 2, (
        f"{d}: {len(reads)} RDAP reads in {took:.0f}s (hold_interval {HOLD:g}s, rdap.interval "
        f"6h) for a delegation that never changed"
    )
    assert e.value("domain_registered", domain=d) == 1


# --- case 8: contact verdicts outlive their contact --------------------------------------------

def test_redacted_rdap_contact_loses_its_verdict(world: World) -> None:
    d = "good.zz"
    e = world.mail
    e.wait_for(
        lambda s: s.value("domain_contact_email_deliverable", domain=d, role="registrant") == 0,
        timeout=WAIT, message=f"{d}: the registrant's null-MX mailbox was never judged",
    )
    world.mailreg.set_domain(d, ok(d, contacts={"registrant": "REDACTED FOR PRIVACY"}))
    changed = time.time()
    deadline = time.monotonic() + WAIT
    while True:
        fresh = [
            r for r in world.mailreg.requests_for(d)
            if r.received > changed and r.replied is not None
        ]
        if fresh:
            break
        assert time.monotonic() < deadline, f"{d}: no RDAP read after the change"
        time.sleep(0.05)
    s = e.wait_for(
        lambda s: s.value("domain_contact_email_deliverable", domain=d, role="registrant")
        is None,
        timeout=WAIT, message=f"{d}: the redacted registrant's verdict is still exported",
    )
    assert fresh[0].replied is not None
    assert s.taken - fresh[0].replied <= SLACK, f"gone {s.taken - fresh[0].replied:.1f}s later"


def test_contact_removed_from_config_loses_its_verdict(world: World) -> None:
    d = "shop.co.test"
    e = world.mail
    e.wait_for(
        lambda s: s.value("domain_contact_email_deliverable", domain=d, role="technical") == 0,
        timeout=WAIT, message=f"{d}: the configured null-MX contact was never judged",
    )
    entries = [DomainEntry(x.name) if x.name == d else x for x in MAIL_DOMAINS]
    write_exporter_config(world.mail_config, **world.mail_settings, domains=entries)
    assert post(e, "/-/reload") == 200
    reloaded = time.time()
    s = e.wait_for(
        lambda s: s.value("domain_contact_email_deliverable", domain=d, role="technical")
        is None,
        timeout=WAIT, message=f"{d}: the removed contact's verdict is still exported",
    )
    assert s.taken - reloaded <= SLACK, f"gone {s.taken - reloaded:.1f}s after the reload"
    assert s.value("domainwatch_config_last_reload_successful") == 1


# --- case 12: no domains ------------------------------------------------------------------------

def test_empty_config_runs_and_reports_zero_domains(world: World) -> None:
    e = world.empty
    s = e.wait_for(lambda s: s.value("domainwatch_domains") is not None, timeout=WAIT)
    assert s.value("domainwatch_domains") == 0
    assert not [key for key in s.samples if key[0].startswith("domain_")], s.text[:2000]
    assert e.proc is not None and e.proc.poll() is None, e.log_tail()
    assert e.get("/-/ready")[0] == 200
