"""End to end: the exporter as a subprocess against real HTTPS RDAP servers on loopback.

One exporter (`world`) watches every domain of the main scenarios; each test waits for the state it
needs and reads `/metrics` over HTTP, parsed with prometheus_client's parser. The registries are
`tests.support.rdapserver.RdapServer` instances, one per host:port, so per-host behaviour
(429 pauses, back-off after timeouts) of one scenario cannot leak into another.

DNS is not under test here: the root server is a dead loopback port, so the dns check fails.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from tests.support.dnsworld import DnsWorld, dns_world  # noqa: F401
from tests.support.exporter_proc import ExporterProcess, Scrape, run_check
from tests.support.nsinfo import nameserver_sets
from tests.support.rdapserver import (
    RdapServer,
    Reply,
    error_body,
    make_domain,
    write_bootstrap,
    write_ca,
)

FIXTURES = Path(__file__).parent / "fixtures" / "rdap"
BOOTSTRAP_PUBLICATION = "2026-11-01T00:00:00Z"
INTERVAL = 3.0  # rdap.interval and rdap.hold_interval in the test config
RETRY_AFTER = 6  # seconds; long enough to span a full re-check round of the other registry
# Long enough for "the next scheduled check happens" (interval + jitter + one timeout) without
# depending on the exact jitter the scheduler uses.
NEXT_CHECK = 4 * INTERVAL + 3

NOW = datetime.now(UTC).replace(microsecond=0)


def days_from_now(days: float) -> datetime:
    return NOW + timedelta(days=days)


def expected_days(expiry: datetime) -> float:
    return (expiry.timestamp() - time.time()) / 86400


def closed_port() -> int:
    """A loopback port with nothing listening: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    path: Path, bootstrap: Path, ca_file: Path, domains: list[str], **rdap: Any
) -> Path:
    document = {
        "rdap": {
            "bootstrap": str(bootstrap),
            "ca_file": str(ca_file),
            "allow_private_addresses": True,  # every server here is on 127.0.0.1
            "interval": f"{INTERVAL:g}s",
            "hold_interval": f"{INTERVAL:g}s",
            "timeout": "1s",
            "requests_per_second": 20,
            "follow_registrar": True,
            **rdap,
        },
        "dns": {"root_servers": ["127.0.0.1:9"], "interval": "1h", "timeout": "0.2s"},
        "email": {"interval": "1h"},
        "domains": [{"name": d} for d in domains],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def rdap_ok(domain: str) -> Any:
    return lambda s: s.value("domain_check_success", domain=domain, check="rdap") == 1


def rdap_failed(domain: str) -> Any:
    return lambda s: s.value("domain_check_success", domain=domain, check="rdap") == 0


def statuses(scrape: Scrape, domain: str) -> dict[str, float]:
    return {lbl["status"]: v for lbl, v in scrape.series("domain_status", domain=domain)}


def rdap_errors(scrape: Scrape, domain: str) -> dict[str, float]:
    return {
        lbl["reason"]: v
        for lbl, v in scrape.series("domain_check_error_info", domain=domain, check="rdap")
    }


def assert_days(scrape: Scrape, domain: str, expiry: datetime) -> None:
    days = scrape.value("domain_expiry_days", domain=domain)
    assert days is not None, scrape.for_domain(domain)
    assert days == pytest.approx(expected_days(expiry), abs=0.1)
    assert scrape.value("domain_expiry_timestamp_seconds", domain=domain) == expiry.timestamp()


def assert_no_registration_values(scrape: Scrape, domain: str) -> None:
    for name in ("domain_expiry_days", "domain_expiry_timestamp_seconds", "domain_hold"):
        assert scrape.value(name, domain=domain) is None, f"{name}\n{scrape.for_domain(domain)}"
    assert statuses(scrape, domain) == {}, scrape.for_domain(domain)


# --- the shared world ------------------------------------------------------------------------

HEALTHY_EXPIRY = days_from_now(40)
EXPIRING_EXPIRY = days_from_now(5)
HOLD_EXPIRY = days_from_now(100)
REDEMPTION_EXPIRY = days_from_now(-10)
THIN_EXPIRY = days_from_now(200)
THIN_REGISTRAR_EXPIRY = days_from_now(230)
HEALTHY_STATUSES = ["client transfer prohibited", "client delete prohibited"]
HEALTHY_NS = ["ns1.healthy.test", "ns2.healthy.test"]


@dataclass
class World:
    tmp: Path
    registry: RdapServer  # .test and .com
    registry_b: RdapServer  # .example, rate-limits once
    registrar: RdapServer  # answers the thin registry's referrals
    slow: RdapServer  # .timeout
    flaky: RdapServer  # .flaky
    junk: RdapServer  # .junk (malformed JSON)
    broken: RdapServer  # .fail5xx
    untrusted: RdapServer  # .badtls, leaf from a CA the exporter does not trust
    config: Path
    domains: list[str]
    exporter: ExporterProcess


WORLD_DOMAINS = [
    "healthy.test", "expiring.test", "clienthold.test", "serverhold.test", "holdlift.test",
    "redemption.test", "thin.test", "hhgames.com", "gone.test", "gone-empty.test",
    "ratelimited.example", "calm.example", "slow.timeout", "later.flaky", "garbled.junk",
    "broken.fail5xx", "cert.badtls", "refused.dead", "nordap.invalid",
]


def _program(w: World) -> None:
    reg, rr = w.registry, w.registrar

    def domain(name: str, expiry: datetime | None, status: list[str], **kw: Any) -> Reply:
        kw.setdefault("nameservers", [f"ns1.{name}", f"ns2.{name}"])
        kw.setdefault("registrar_name", "Example Registrar, Inc.")
        kw.setdefault("registrar_iana_id", "1234")
        return Reply(body=make_domain(name, expiry, status, self_url=reg.domain_url(name), **kw))

    reg.set_domain("healthy.test", domain(
        "healthy.test", HEALTHY_EXPIRY, HEALTHY_STATUSES, nameservers=HEALTHY_NS,
    ))
    reg.set_domain("expiring.test", domain("expiring.test", EXPIRING_EXPIRY, ["active"]))
    reg.set_domain("clienthold.test", domain(
        "clienthold.test", HOLD_EXPIRY, ["client hold", "client transfer prohibited"]
    ))
    reg.set_domain("serverhold.test", domain("serverhold.test", HOLD_EXPIRY, ["server hold"]))
    reg.set_domain("holdlift.test", domain(
        "holdlift.test", HOLD_EXPIRY, ["client hold", "client transfer prohibited"]
    ))
    reg.set_domain("redemption.test", domain(
        "redemption.test", REDEMPTION_EXPIRY, ["redemption period", "pending delete"]
    ))
    # Thin registry: the registry's answer names the registrar and links to its RDAP service,
    # which claims a later expiry, another registrar name and a hold the registry does not have.
    reg.set_domain("thin.test", domain(
        "thin.test", THIN_EXPIRY, ["client transfer prohibited"],
        registrar_name="Thin Registry Registrar LLC", registrar_iana_id="4321",
        related_registrar_url=rr.domain_url("thin.test"),
    ))
    rr.set_domain("thin.test", Reply(body=make_domain(
        "thin.test", THIN_REGISTRAR_EXPIRY, ["client transfer prohibited", "client hold"],
        ["ns1.thin.test", "ns2.thin.test"], "Registrar Self-Description GmbH", "4321",
        contacts={"registrant": "owner@thin-owner.test"},
    )))
    # A real-shaped Verisign body (synthetic hold variant); only the related link is re-pointed
    # from rdap.fabulous.com to our registrar server, because the internet is off limits.
    hh = json.loads((FIXTURES / "synthetic-client-hold_hhgames.com.json").read_text())
    for link in hh["links"]:
        if link["rel"] == "related":
            link["href"] = link["value"] = rr.domain_url("hhgames.com")
    reg.set_domain("hhgames.com", Reply(body=hh))
    rr.set_domain("hhgames.com", Reply(body=make_domain(
        "hhgames.com", datetime(2026, 7, 4, 19, 21, 2, tzinfo=UTC), [], ["ns1.fabulous.com"],
        "Sea Wasp, LLC", "411",
    )))
    # gone.test: no route, the server's default RFC 9083 404 body.
    # Verisign answers an unknown .com with 404 and an EMPTY rdap+json body.
    reg.set_domain("gone-empty.test", Reply(status=404, body=None))

    b = w.registry_b
    b.set_domain(
        "ratelimited.example",
        Reply(status=429, headers={"Retry-After": str(RETRY_AFTER)},
              body=error_body(429, "Too Many Requests", "Slow down.")),
        Reply(body=make_domain("ratelimited.example", HOLD_EXPIRY, ["active"], [], "R", "1")),
    )
    b.set_domain("calm.example", Reply(body=make_domain(
        "calm.example", HOLD_EXPIRY, ["active"], [], "R", "1"
    )))

    w.slow.set_domain("slow.timeout", Reply(delay=3.0, body=make_domain(
        "slow.timeout", HOLD_EXPIRY, ["active"], [], "R", "1"
    )))
    w.flaky.set_domain("later.flaky", Reply(body=make_domain(
        "later.flaky", HOLD_EXPIRY, ["active"], [], "R", "1"
    )))
    w.junk.set_domain("garbled.junk", Reply(body=b'{"objectClassName": "domain", "ldhName": "garb'))
    w.broken.set_domain("broken.fail5xx", Reply(
        status=503, body=error_body(503, "Service Unavailable", "Maintenance.")
    ))
    w.untrusted.set_domain("cert.badtls", Reply(body=make_domain(
        "cert.badtls", HOLD_EXPIRY, ["active"], [], "R", "1"
    )))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("rdap-world")
    ca, stranger = trustme.CA(), trustme.CA()
    servers = [RdapServer(ca) for _ in range(7)] + [RdapServer(stranger)]
    exporter: ExporterProcess | None = None
    try:
        registry, registry_b, registrar, slow, flaky, junk, broken, untrusted = servers
        bootstrap = write_bootstrap(tmp / "bootstrap.json", {
            "test": registry, "com": registry, "example": registry_b, "timeout": slow,
            "flaky": flaky, "junk": junk, "fail5xx": broken, "badtls": untrusted,
            "dead": f"https://127.0.0.1:{closed_port()}/",
            # "invalid" deliberately absent: unsupported TLD
        }, publication=BOOTSTRAP_PUBLICATION)
        config = write_config(
            tmp / "config.yaml", bootstrap, write_ca(ca, tmp / "ca.pem"), WORLD_DOMAINS
        )
        exporter = ExporterProcess(config, tmp)
        w = World(
            tmp=tmp, registry=registry, registry_b=registry_b, registrar=registrar, slow=slow,
            flaky=flaky, junk=junk, broken=broken, untrusted=untrusted, config=config,
            domains=WORLD_DOMAINS, exporter=exporter,
        )
        _program(w)
        exporter.start()
        yield w
    finally:
        if exporter is not None:
            exporter.stop()
        for server in servers:
            server.stop()


@pytest.fixture(autouse=True)
def _exporter_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the exporter's log tail; pytest shows captured output only for failed tests."""
    yield
    if "world" in request.fixturenames:
        w: World = request.getfixturevalue("world")
        print(f"--- exporter log tail ({w.exporter.log_path}) ---\n{w.exporter.log_tail(80)}")


# --- healthy and expiring --------------------------------------------------------------------

def test_healthy_domain(world: World) -> None:
    e = world.exporter
    s = e.wait_for(rdap_ok("healthy.test"), timeout=10, message="healthy.test never succeeded")
    assert_days(s, "healthy.test", HEALTHY_EXPIRY)
    assert s.value("domain_registered", domain="healthy.test") == 1
    assert s.value("domain_hold", domain="healthy.test") == 0
    assert statuses(s, "healthy.test") == {st: 1.0 for st in HEALTHY_STATUSES}
    assert rdap_errors(s, "healthy.test") == {}
    assert s.labels("domain_info", domain="healthy.test") == {
        "domain": "healthy.test",
        "registrar": "Example Registrar, Inc.",
        "registrar_iana_id": "1234",
        "rdap_server": world.registry.base_url,
    }
    assert s.value("domain_info", domain="healthy.test") == 1
    last_ok = s.value("domain_check_last_success_timestamp_seconds", domain="healthy.test",
                      check="rdap")
    assert last_ok is not None and e.started - 1 <= last_ok <= s.taken + 1
    # The registry's nameserver set is reported as a source for the delegation comparison.
    sets = nameserver_sets(s.series("domain_nameserver_info", domain="healthy.test"))
    assert sets.get("registry") == set(HEALTHY_NS), s.for_domain("healthy.test")
    assert s.value("domain_registrar_expiry_timestamp_seconds", domain="healthy.test") is None


def test_requests_are_counted_per_host_and_polite(world: World) -> None:
    s = world.exporter.wait_for(rdap_ok("healthy.test"), timeout=10)
    ok = s.value("domainwatch_rdap_requests_total", server=world.registry.hostport,
                 outcome="success")
    assert ok is not None and ok >= 1, s.series("domainwatch_rdap_requests_total")
    first = world.registry.requests_for("healthy.test")[0]
    assert "application/rdap+json" in first.headers.get("accept", "")
    assert first.headers.get("user-agent", "").startswith("domainwatch/")
    assert s.value("domainwatch_domains") == len(world.domains)
    assert s.value("domainwatch_rdap_bootstrap_publication_timestamp_seconds") == (
        datetime.fromisoformat(BOOTSTRAP_PUBLICATION).timestamp()
    )


def test_expiring_in_five_days(world: World) -> None:
    s = world.exporter.wait_for(rdap_ok("expiring.test"), timeout=10)
    assert_days(s, "expiring.test", EXPIRING_EXPIRY)
    assert s.value("domain_hold", domain="expiring.test") == 0
    assert statuses(s, "expiring.test") == {"active": 1.0}


# --- holds and dying statuses ----------------------------------------------------------------

@pytest.mark.parametrize(("domain", "hold_status"), [
    ("clienthold.test", "client hold"),
    ("serverhold.test", "server hold"),
])
def test_hold(world: World, domain: str, hold_status: str) -> None:
    s = world.exporter.wait_for(rdap_ok(domain), timeout=10)
    assert s.value("domain_hold", domain=domain) == 1
    assert statuses(s, domain).get(hold_status) == 1
    assert_days(s, domain, HOLD_EXPIRY)
    assert s.value("domain_registered", domain=domain) == 1


def test_hold_from_real_shaped_verisign_body(world: World) -> None:
    """The synthetic client-hold variant of Verisign's hhgames.com answer, end to end."""
    s = world.exporter.wait_for(rdap_ok("hhgames.com"), timeout=10)
    assert s.value("domain_hold", domain="hhgames.com") == 1
    assert statuses(s, "hhgames.com") == {
        "client hold": 1.0, "client delete prohibited": 1.0, "client transfer prohibited": 1.0,
        "client update prohibited": 1.0,
    }
    assert_days(s, "hhgames.com", datetime(2026, 7, 4, 19, 21, 2, tzinfo=UTC))
    info = s.labels("domain_info", domain="hhgames.com")
    assert info is not None
    assert (info["registrar"], info["registrar_iana_id"]) == ("Sea Wasp, LLC", "411")


def test_hold_lifted_between_two_checks(world: World) -> None:
    e, reg = world.exporter, world.registry
    s = e.wait_for(rdap_ok("holdlift.test"), timeout=10)
    assert s.value("domain_hold", domain="holdlift.test") == 1
    assert statuses(s, "holdlift.test") == {"client hold": 1.0, "client transfer prohibited": 1.0}

    asked = len(reg.requests_for("holdlift.test"))
    reg.set_domain("holdlift.test", Reply(body=make_domain(
        "holdlift.test", HOLD_EXPIRY, ["client transfer prohibited"], ["ns1.holdlift.test"],
        "Example Registrar, Inc.", "1234",
    )))
    s = e.wait_for(
        lambda s: s.value("domain_hold", domain="holdlift.test") == 0, timeout=NEXT_CHECK,
        message="hold flag did not return to 0 after the registry lifted the hold",
    )
    assert len(reg.requests_for("holdlift.test")) > asked
    assert statuses(s, "holdlift.test") == {"client transfer prohibited": 1.0}
    assert s.value("domain_check_success", domain="holdlift.test", check="rdap") == 1


def test_redemption_period_and_pending_delete(world: World) -> None:
    s = world.exporter.wait_for(rdap_ok("redemption.test"), timeout=10)
    assert statuses(s, "redemption.test") == {"redemption period": 1.0, "pending delete": 1.0}
    assert s.value("domain_hold", domain="redemption.test") == 0
    assert_days(s, "redemption.test", REDEMPTION_EXPIRY)  # negative: already past
    assert (s.value("domain_expiry_days", domain="redemption.test") or 0) < 0


# --- thin registry and registrar referral ----------------------------------------------------

def test_thin_registry_with_registrar_referral(world: World) -> None:
    s = world.exporter.wait_for(
        lambda s: rdap_ok("thin.test")(s) and s.value(
            "domain_registrar_expiry_timestamp_seconds", domain="thin.test") is not None,
        timeout=10, message="thin.test: no success with a registrar expiry",
    )
    assert world.registrar.requests_for("thin.test"), "the related link was not followed"
    # The registry's facts win over the registrar's claims ...
    assert s.value("domain_expiry_timestamp_seconds", domain="thin.test") == THIN_EXPIRY.timestamp()
    assert s.value("domain_hold", domain="thin.test") == 0
    assert statuses(s, "thin.test") == {"client transfer prohibited": 1.0}
    # ... while the registrar's own date is exported next to it.
    assert s.value("domain_registrar_expiry_timestamp_seconds", domain="thin.test") == (
        THIN_REGISTRAR_EXPIRY.timestamp()
    )
    info = s.labels("domain_info", domain="thin.test")
    assert info is not None
    assert info["registrar"] == "Thin Registry Registrar LLC"
    assert info["registrar_iana_id"] == "4321"
    assert info["rdap_server"] == world.registry.base_url
    registrar_ok = s.value("domainwatch_rdap_requests_total", server=world.registrar.hostport,
                           outcome="success")
    assert registrar_ok is not None and registrar_ok >= 1


# --- not registered --------------------------------------------------------------------------

@pytest.mark.parametrize("domain", ["gone.test", "gone-empty.test"])
def test_registry_404_means_not_registered(world: World, domain: str) -> None:
    # One 404 is not a deletion: a second 404 at least hold_interval later confirms it (the
    # DNS check cannot confirm here: the test config's DNS is unreachable).
    s = world.exporter.wait_for(
        lambda s: s.value("domain_registered", domain=domain) == 0,
        timeout=4 * INTERVAL + 10,
        message=f"{domain}: two 404s a hold interval apart mean not registered",
    )
    assert s.value("domain_check_success", domain=domain, check="rdap") == 1
    assert rdap_errors(s, domain) == {}
    times = [r.received for r in world.registry.requests_for(domain)]
    assert len(times) >= 2 and times[-1] - times[0] >= INTERVAL * 0.99, times
    for name in ("domain_expiry_days", "domain_expiry_timestamp_seconds"):
        assert s.value(name, domain=domain) is None, s.for_domain(domain)
    assert statuses(s, domain) == {}
    not_found = s.value("domainwatch_rdap_requests_total", server=world.registry.hostport,
                        outcome="not_found")
    assert not_found is not None and not_found >= 1


# --- 429 -------------------------------------------------------------------------------------

def test_429_pauses_only_that_host(world: World) -> None:
    b, a = world.registry_b, world.registry
    rec = b.wait_for_request("ratelimited.example", timeout=10)
    deadline = time.monotonic() + 10
    while rec.replied is None and time.monotonic() < deadline:
        time.sleep(0.05)
        rec = b.requests_for("ratelimited.example")[0]
    assert rec.status == 429 and rec.replied is not None
    paused_from = rec.replied
    paused_until = paused_from + RETRY_AFTER

    # Wait until host B is asked again (after the pause), then judge the whole log.
    deadline = time.monotonic() + RETRY_AFTER + NEXT_CHECK
    while not [r for r in b.requests if r.received > paused_from + 0.3]:
        assert time.monotonic() < deadline, "host B was never asked again after the 429"
        time.sleep(0.1)
    grace = 0.3  # the exporter needs a moment to read the 429; requests already sent are fine
    during = [
        (round(r.received - paused_from, 2), r.path)
        for r in b.requests if paused_from + grace < r.received < paused_until - grace
    ]
    assert during == [], f"requests to the paused host within Retry-After={RETRY_AFTER}s: {during}"
    others = [r for r in a.requests if paused_from < r.received < paused_until - grace]
    assert others, "the other registry was not checked while host B was paused"

    s = world.exporter.wait_for(rdap_ok("ratelimited.example"), timeout=NEXT_CHECK)
    assert_days(s, "ratelimited.example", HOLD_EXPIRY)
    limited = s.value("domainwatch_rdap_requests_total", server=b.hostport, outcome="rate_limited")
    assert limited == 1
    assert s.value("domain_check_success", domain="calm.example", check="rdap") == 1


# --- failures --------------------------------------------------------------------------------

@pytest.mark.parametrize(("domain", "reason"), [
    ("slow.timeout", "timeout"),
    ("garbled.junk", "invalid_response"),
    ("broken.fail5xx", "http_error"),
    ("cert.badtls", "tls_error"),
    ("refused.dead", "connection_error"),
])
def test_failed_lookup(world: World, domain: str, reason: str) -> None:
    s = world.exporter.wait_for(rdap_failed(domain), timeout=10,
                                message=f"{domain}: expected a failed rdap check")
    assert rdap_errors(s, domain) == {reason: 1.0}, s.for_domain(domain)
    assert s.value("domain_check_last_success_timestamp_seconds", domain=domain,
                   check="rdap") is None
    assert s.value("domain_registered", domain=domain) is None
    assert_no_registration_values(s, domain)


def test_unsupported_tld(world: World) -> None:
    s = world.exporter.wait_for(rdap_failed("nordap.invalid"), timeout=10)
    assert rdap_errors(s, "nordap.invalid") == {"unsupported_tld": 1.0}
    assert_no_registration_values(s, "nordap.invalid")
    assert s.value("domain_registered", domain="nordap.invalid") is None
    servers = [world.registry, world.registry_b, world.registrar, world.slow, world.flaky]
    assert not any(r.path.endswith("/nordap.invalid") for srv in servers for r in srv.requests)


def test_timeout_keeps_last_good_values(world: World) -> None:
    e, flaky = world.exporter, world.flaky
    good = e.wait_for(rdap_ok("later.flaky"), timeout=10)
    assert_days(good, "later.flaky", HOLD_EXPIRY)
    last_ok = good.value("domain_check_last_success_timestamp_seconds", domain="later.flaky",
                         check="rdap")
    assert last_ok is not None

    switched = time.time()
    flaky.set_domain("later.flaky", Reply(delay=3.0, body={}))
    s = e.wait_for(rdap_failed("later.flaky"), timeout=NEXT_CHECK,
                   message="later.flaky: the timeout was not reported")
    assert rdap_errors(s, "later.flaky") == {"timeout": 1.0}
    # The last good registration stays exported, with the age visible.
    assert s.value("domain_expiry_timestamp_seconds", domain="later.flaky") == (
        HOLD_EXPIRY.timestamp()
    )
    assert_days(s, "later.flaky", HOLD_EXPIRY)
    assert s.value("domain_registered", domain="later.flaky") == 1
    assert statuses(s, "later.flaky") == {"active": 1.0}
    kept = s.value("domain_check_last_success_timestamp_seconds", domain="later.flaky",
                   check="rdap")
    assert kept is not None and kept < switched
    attempt = s.value("domain_check_last_attempt_timestamp_seconds", domain="later.flaky",
                      check="rdap")
    assert attempt is not None and attempt > switched
    timeouts = s.value("domainwatch_rdap_requests_total", server=flaky.hostport, outcome="timeout")
    assert timeouts is not None and timeouts >= 1


# --- the check sub-command -------------------------------------------------------------------
# A domain is only "ok" when every check could run, so the healthy and held cases use the Knot
# DNS world (tests/support/dnsworld.py), where good.test and held-mail.test are delegated
# consistently. Their RDAP answers come from the same registry as everything else.

GOOD_EXPIRY = days_from_now(300)
GOOD_NS = ["ns1.good.test", "ns2.good.test"]


@pytest.fixture(scope="module")
def check_config(world: World, dns_world: DnsWorld) -> Path:  # noqa: F811
    reg = world.registry
    reg.set_domain("good.test", Reply(body=make_domain(
        "good.test", GOOD_EXPIRY, HEALTHY_STATUSES, GOOD_NS, "Example Registrar, Inc.", "1234",
        self_url=reg.domain_url("good.test"),
    )))
    reg.set_domain("held-mail.test", Reply(body=make_domain(
        "held-mail.test", HOLD_EXPIRY, ["client hold", "client transfer prohibited"],
        ["ns1.provider.test", "ns2.provider.test"], "Example Registrar, Inc.", "1234",
    )))
    document = yaml.safe_load(world.config.read_text())
    # co.test is a two-label public suffix in the DNS world; its RDAP server never answers in time.
    world.slow.set_domain("shop.co.test", Reply(delay=3.0, body={}))
    document["rdap"]["servers"] = {"co.test": world.slow.base_url}
    document["dns"]["root_servers"] = list(dns_world.root_servers)
    document["dns"]["timeout"] = "0.5s"
    document["domains"] = [{"name": "good.test"}, {"name": "held-mail.test"}]
    path = world.tmp / "check.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _one(out: dict[str, Any], domain: str) -> dict[str, Any]:
    found = [d for d in out["domains"] if d["domain"] == domain]
    assert len(found) == 1, out
    one: dict[str, Any] = found[0]
    return one


def test_check_json_healthy(check_config: Path) -> None:
    code, out = run_check(check_config, "good.test")
    d = _one(out, "good.test")
    assert (code, d["status"], d["problems"]) == (0, "ok", []), json.dumps(out, indent=1)
    r = d["rdap"]
    assert r["success"] is True and r["error"] is None and r["registered"] is True
    assert datetime.fromisoformat(r["expiry"]) == GOOD_EXPIRY
    assert r["expiry_days"] == pytest.approx(expected_days(GOOD_EXPIRY), abs=0.1)
    assert sorted(r["statuses"]) == sorted(HEALTHY_STATUSES)
    assert (r["registrar"], r["registrar_iana_id"]) == ("Example Registrar, Inc.", "1234")
    assert sorted(r["nameservers"]) == GOOD_NS
    assert r["rdap_server"].startswith("https://127.0.0.1:")
    assert d["dns"]["success"] is True
    assert "email" in d


def test_check_json_held(check_config: Path) -> None:
    code, out = run_check(check_config, "held-mail.test")
    d = _one(out, "held-mail.test")
    assert (code, d["status"]) == (1, "attention"), json.dumps(out, indent=1)
    assert any("hold" in p.lower() for p in d["problems"]), d["problems"]
    assert "client hold" in d["rdap"]["statuses"]
    assert d["rdap"]["success"] is True


def test_check_json_several_domains_worst_exit_code(check_config: Path) -> None:
    code, out = run_check(check_config, "good.test", "expiring.test", "gone.test")
    assert code == 1, json.dumps(out, indent=1)
    assert [d["domain"] for d in out["domains"]] == ["good.test", "expiring.test", "gone.test"]
    assert _one(out, "good.test")["status"] == "ok"
    expiring = _one(out, "expiring.test")
    assert expiring["status"] == "attention"
    assert any("expir" in p for p in expiring["problems"]), expiring["problems"]
    assert expiring["rdap"]["expiry_days"] == pytest.approx(expected_days(EXPIRING_EXPIRY),
                                                            abs=0.1)
    gone = _one(out, "gone.test")
    assert gone["status"] == "attention"
    assert gone["rdap"]["registered"] is False and gone["rdap"]["success"] is True
    assert gone["rdap"]["expiry"] is None


def test_check_json_could_not_check(check_config: Path) -> None:
    """Both domains are properly delegated in the DNS world; only their RDAP lookup fails."""
    code, out = run_check(check_config, "good.zz", "shop.co.test")
    assert code == 2, json.dumps(out, indent=1)
    for domain, reason in (("good.zz", "unsupported_tld"), ("shop.co.test", "timeout")):
        d = _one(out, domain)
        assert d["status"] == "unknown", d
        assert (d["rdap"]["success"], d["rdap"]["error"]) == (False, reason)
        assert d["rdap"]["expiry"] is None
        assert d["dns"]["success"] is True, d["dns"]


def test_check_dns_unreachable_is_not_healthy(world: World) -> None:
    """RDAP is fine but the delegation could not be verified (dead root server): not 'ok'.

    Choice made here (the brief said "2 = could not check (an RDAP failure)"): any check that
    could not run makes the verdict 'unknown' and the exit code 2, as the core implements.
    """
    code, out = run_check(world.config, "healthy.test")
    d = _one(out, "healthy.test")
    assert (code, d["status"]) == (2, "unknown"), json.dumps(out, indent=1)
    assert d["rdap"]["success"] is True
    assert d["dns"]["success"] is False


def test_check_table(check_config: Path) -> None:
    code, text = run_check(check_config, "good.test", json=False)
    assert code == 0, text
    assert "good.test" in text
    code, text = run_check(check_config, "held-mail.test", json=False)
    assert code == 1, text
    assert "held-mail.test" in text and "hold" in text.lower()


# --- separate exporters: first check, pacing, private addresses -------------------------------

@dataclass
class Gated:
    fresh: RdapServer
    paced: RdapServer
    gate: threading.Event
    exporter: ExporterProcess


PACED_RPS = 4.0
PACED_DOMAINS = [f"p{i}.paced" for i in range(8)]
FRESH_EXPIRY = days_from_now(60)


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gated]:
    """fresh.gate's first answer is held until the test releases it; .paced has 8 domains on one
    host at 4 requests/s. The RDAP timeout is long so the held request does not time out."""
    tmp = tmp_path_factory.mktemp("rdap-gated")
    ca = trustme.CA()
    gate = threading.Event()
    fresh, paced = RdapServer(ca), RdapServer(ca)
    exporter: ExporterProcess | None = None
    try:
        fresh.set_domain("fresh.gate", Reply(gate=gate, gate_timeout=25, body=make_domain(
            "fresh.gate", FRESH_EXPIRY, ["active"], [], "R", "1"
        )))
        for name in PACED_DOMAINS:
            paced.set_domain(name, Reply(body=make_domain(name, FRESH_EXPIRY, ["active"], [],
                                                          "R", "1")))
        bootstrap = write_bootstrap(tmp / "bootstrap.json", {"gate": fresh, "paced": paced})
        config = write_config(
            tmp / "config.yaml", bootstrap, write_ca(ca, tmp / "ca.pem"),
            ["fresh.gate", *PACED_DOMAINS], timeout="30s", requests_per_second=PACED_RPS,
            interval="1h", hold_interval="1h",
        )
        exporter = ExporterProcess(config, tmp).start()
        yield Gated(fresh, paced, gate, exporter)
    finally:
        gate.set()
        if exporter is not None:
            print(f"--- exporter log tail ---\n{exporter.log_tail(60)}")
            exporter.stop()
        fresh.stop()
        paced.stop()


def test_never_checked_domain_exports_no_values(gated: Gated) -> None:
    gated.fresh.wait_for_request("fresh.gate", timeout=10)
    s = gated.exporter.scrape()
    assert gated.fresh.requests_for("fresh.gate")[0].replied is None  # still held: no result yet
    assert_no_registration_values(s, "fresh.gate")
    for name in ("domain_registered", "domain_info"):
        assert s.value(name, domain="fresh.gate") is None, s.for_domain("fresh.gate")
    for name in ("domain_check_success", "domain_check_last_success_timestamp_seconds",
                 "domain_check_error_info"):
        assert s.series(name, domain="fresh.gate", check="rdap") == [], s.for_domain("fresh.gate")

    gated.gate.set()
    s = gated.exporter.wait_for(rdap_ok("fresh.gate"), timeout=10)
    assert_days(s, "fresh.gate", FRESH_EXPIRY)
    assert s.value("domain_hold", domain="fresh.gate") == 0


def test_requests_to_one_host_are_paced(gated: Gated) -> None:
    deadline = time.monotonic() + 15
    while len(gated.paced.requests) < len(PACED_DOMAINS):
        assert time.monotonic() < deadline, f"only {len(gated.paced.requests)} paced requests"
        time.sleep(0.1)
    arrivals = sorted(r.received for r in gated.paced.requests)[: len(PACED_DOMAINS)]
    # The exporter starts request k no earlier than k/rps after the first. Arrival times add
    # connection set-up (the first TLS handshake of a freshly started process can take 0.1 s
    # or more), so allow that much skew on any pair instead of judging single gaps.
    skew = 0.2
    too_close = [
        (i, j, round(arrivals[j] - arrivals[i], 3))
        for i, j in itertools.combinations(range(len(arrivals)), 2)
        if arrivals[j] - arrivals[i] < (j - i) / PACED_RPS - skew
    ]
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(arrivals)]
    assert too_close == [], f"requests closer than 1/{PACED_RPS:g}s pacing allows; gaps {gaps}"
    assert sorted(r.path for r in gated.paced.requests) == sorted(
        f"/domain/{d}" for d in PACED_DOMAINS
    )


def test_private_address_refused_by_default(tmp_path: Path) -> None:
    ca = trustme.CA()
    with RdapServer(ca) as server:
        server.set_domain("inside.private", Reply(body=make_domain(
            "inside.private", FRESH_EXPIRY, ["active"], [], "R", "1"
        )))
        bootstrap = write_bootstrap(tmp_path / "bootstrap.json", {"private": server})
        config = write_config(
            tmp_path / "config.yaml", bootstrap, write_ca(ca, tmp_path / "ca.pem"),
            ["inside.private"], allow_private_addresses=False,
        )
        with ExporterProcess(config, tmp_path) as exporter:
            try:
                s = exporter.wait_for(rdap_failed("inside.private"), timeout=10)
                assert rdap_errors(s, "inside.private") == {"refused_address": 1.0}
                assert_no_registration_values(s, "inside.private")
                assert server.requests == [], "a loopback RDAP server was contacted"
            finally:
                print(f"--- exporter log tail ---\n{exporter.log_tail(60)}")
