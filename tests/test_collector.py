"""DomainCollector + ExporterMetrics: the whole exposition against tests/golden/metrics.txt, and
targeted checks of the "never measured means absent" rules.

Regenerate the golden file after an intended change with:
    UPDATE_GOLDEN=1 pytest tests/test_collector.py
and review the diff like code.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.collector import DomainCollector
from exporter.registration import ContactEmail, Registration
from exporter.selfmetrics import ExporterMetrics
from exporter.store import (
    ChangeLog,
    CheckState,
    ContactVerdict,
    DnsResult,
    DnssecResult,
    DomainStatus,
    EmailResult,
    NsDomainResult,
    NsDomainVerdict,
    RdapResult,
    StatusStore,
)

GOLDEN = Path(__file__).resolve().parent / "golden" / "metrics.txt"
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z, the frozen scrape time
DAY = 86400.0
SERVER = "https://rdap.example.test/"
SECRET = "owner-secret@mail.example"


def ts(days: float) -> datetime:
    return datetime.fromtimestamp(NOW + days * DAY, tz=UTC)


def ok(at: float) -> CheckState:
    return CheckState(success=True, last_attempt=at, last_success=at, next_due=at + 3600)


def reg(name: str, **kw: object) -> Registration:
    defaults: dict[str, object] = {
        "expiry": ts(90),
        "statuses": ("client transfer prohibited",),
        "nameservers": ("ns1.example.net", "ns2.example.net"),
        "registrar": "Example Registrar",
        "registrar_iana_id": "9999",
    }
    defaults.update(kw)
    return Registration(name=name, **defaults)  # type: ignore[arg-type]


def verdict(role: str, deliverable: bool | None, *, source: str = "config") -> ContactVerdict:
    return ContactVerdict(
        role=role,
        source=source,
        mail_domain="mail.example",
        deliverable=deliverable,
        reason="mx" if deliverable else "timeout" if deliverable is None else "nxdomain",
        self_hosted=False,
    )


STATUSES = [
    DomainStatus(
        name="healthy.example",
        labels={"team": "web"},
        expected_nameservers=("ns1.example.net", "ns2.example.net"),
        rdap=RdapResult(
            registered=True,
            server=SERVER,
            registration=reg(
                "healthy.example",
                registrar_expiry=ts(89.5),
                contacts=(ContactEmail(role="registrant", kind="real", email=SECRET),),
            ),
        ),
        dns=DnsResult(
            parent_zone="example",
            parent=("ns1.example.net", "ns2.example.net"),
            child=("ns1.example.net", "ns2.example.net"),
            delegated=True,
            lame={"ns1.example.net": None, "ns2.example.net": None},
            mismatch=False,
        ),
        checks={"rdap": ok(NOW - 600), "dns": ok(NOW - 60)},
    ),
    DomainStatus(
        name="held.example",
        rdap=RdapResult(
            registered=True,
            server=SERVER,
            registration=reg(
                "held.example",
                expiry=ts(-3),
                statuses=("client hold", "client transfer prohibited"),
            ),
        ),
        checks={"rdap": ok(NOW - 900)},
    ),
    DomainStatus(
        name="gone.example",
        rdap=RdapResult(registered=False, server=SERVER, registration=None),
        checks={"rdap": ok(NOW - 1200)},
    ),
    DomainStatus(name="never.example", expected_nameservers=("ns1.example.net",)),
    DomainStatus(
        # Auto-renewed by the registry (a year ahead) but not paid at the registrar: the
        # earlier, registrar date is the expiry; a hostile registrar name is cleaned.
        name="autorenew.example",
        rdap=RdapResult(
            registered=True,
            server=SERVER,
            registration=reg(
                "autorenew.example",
                expiry=ts(360),
                registrar_expiry=ts(-5),
                statuses=("auto renew period",),
                registrar="Evil\x00Registrar\n" + "x" * 300,
            ),
        ),
        checks={"rdap": ok(NOW - 60)},
    ),
    DomainStatus(
        # A first, unconfirmed 404 with nothing read before: registered is absent.
        name="pending404.example",
        rdap=RdapResult(
            registered=None, server=SERVER, registration=None, not_found_since=NOW - 60
        ),
        checks={"rdap": ok(NOW - 60)},
    ),
    DomainStatus(
        name="failed.example",
        rdap=RdapResult(registered=True, server=SERVER, registration=reg("failed.example")),
        checks={
            "rdap": CheckState(
                success=False,
                last_attempt=NOW - 30,
                last_success=NOW - 7 * DAY,
                error="timeout",
                failures=4,
            )
        },
    ),
    DomainStatus(
        name="dns.example",
        expected_nameservers=("a.ns.example", "b.ns.example"),
        rdap=RdapResult(
            registered=True,
            server="https://rdap.norid.test/",
            # Norid-like: no statuses, no expiry; registrar only.
            registration=reg(
                "dns.example",
                expiry=None,
                statuses=(),
                nameservers=("a.ns.example", "b.ns.example"),
                registrar="Domeneshop AS",
                registrar_iana_id=None,
            ),
        ),
        dns=DnsResult(
            parent_zone="example",
            parent=("a.ns.example", "b.ns.example"),
            child=("a.ns.example", "c.ns.example"),
            delegated=True,
            lame={"a.ns.example": None, "b.ns.example": "timeout"},
            mismatch=True,
            inconsistent=True,
        ),
        checks={
            "rdap": ok(NOW - 300),
            "dns": CheckState(
                success=False, last_attempt=NOW - 5, last_success=NOW - 305, error="servfail"
            ),
        },
    ),
    DomainStatus(
        name="mail.example",
        email=EmailResult(
            (
                verdict("registrant", True),
                verdict("registrant", False, source="rdap"),  # any 0 -> 0
                verdict("technical", None),
                verdict("technical", True),  # unknown + 1 -> absent
                verdict("administrative", True),
                verdict("billing", None),
                ContactVerdict(
                    role="technical",
                    source="rdap",
                    mail_domain="mail.example",
                    deliverable=True,
                    reason="mx",
                    self_hosted=True,
                ),
            )
        ),
        checks={"email": ok(NOW - 120)},
    ),
    # Read over WHOIS (a registry without RDAP): the same series, source="whois", and the
    # check label "whois"; the WHOIS server shows as whois://host in domain_info.
    DomainStatus(
        name="jprs.example",
        rdap=RdapResult(
            True,
            "whois://whois.jprs.jp",
            reg("jprs.example", statuses=("active",), registrar=None, registrar_iana_id=None),
            read_at=NOW - 400,
            source="whois",
        ),
        checks={"whois": ok(NOW - 400)},
        registry_source="whois",
        registry_server="whois://whois.jprs.jp",
    ),
    # A registry that publishes no expiry (DENIC): the configured `expires:` is exported, with
    # source="config" beside source="whois"; the registry's own expiry series stay absent.
    DomainStatus(
        name="denic.example",
        rdap=RdapResult(
            True,
            "whois://whois.denic.de",
            reg(
                "denic.example",
                expiry=None,
                statuses=("connect",),
                registrar=None,
                registrar_iana_id=None,
            ),
            read_at=NOW - 500,
            source="whois",
        ),
        checks={"whois": ok(NOW - 500)},
        manual_expiry=ts(400),
        registry_source="whois",
        registry_server="whois://whois.denic.de",
    ),
    # No RDAP, no WHOIS, only `expires:`: expiry from config, no registration check series.
    DomainStatus(name="manual.example", manual_expiry=ts(20), registry_source="config"),
    # Issue 11: the transfer lock is gone (statuses listed without it), the registry's `last
    # changed`, a nameserver and a registrar change observed (the set before the change is
    # exported with previous="1"), nameserver domains healthy / expired / unknown (absent),
    # and a registrant at a consumer mail provider.
    DomainStatus(
        name="changed.example",
        rdap=RdapResult(
            registered=True,
            server=SERVER,
            registration=reg(
                "changed.example",
                statuses=("active",),
                nameservers=("ns1.dead-dns.example", "ns1.good-dns.example"),
                last_changed=ts(-0.5),
            ),
        ),
        nsdomain=NsDomainResult(
            (
                NsDomainVerdict("dead-dns.example", False, "expired"),
                NsDomainVerdict("good-dns.example", True, "ok"),
                NsDomainVerdict("unknown-dns.example", None, "unknown"),
            )
        ),
        changes=ChangeLog(
            registry_nameservers=("ns1.dead-dns.example", "ns1.good-dns.example"),
            nameservers_changed_at=NOW - 3600,
            previous_nameservers=("ns1.example.net", "ns2.example.net"),
            registrar_name="Example Registrar",
            registrar_iana_id="9999",
            registrar_changed_at=NOW - 7200,
            previous_registrar="Old Registrar (IANA 1)",
        ),
        email=EmailResult(
            (
                ContactVerdict("registrant", "rdap", "gmail.com", True, "mx", False, True),
                ContactVerdict("technical", "config", "corp.example", True, "mx", False),
            )
        ),
        checks={"rdap": ok(NOW - 60), "nsdomain": ok(NOW - 60), "email": ok(NOW - 60)},
    ),
    # Issue 11, DNS side: signed with a good DS, signatures expiring in 2 days, glue for one
    # in-domain nameserver differing from its own A record, SOA serials 3 apart, and a registry
    # that says "not signed" (confirmed by a later RDAP read); and an unsigned domain (signed 0,
    # no mismatch or expiry series, no glue verdicts for out-of-domain servers).
    DomainStatus(
        name="signed.example",
        dnssec=DnssecResult(
            parent_zone="example",
            signed=True,
            ds_mismatch=False,
            signature_expiry=NOW + 2 * DAY,
            serial_drift=3,
            glue_mismatch={"ns1.signed.example": False, "ns2.signed.example": True},
            registry_disagrees=True,
            registry_disagree_since=NOW - 600,
            measured_at=NOW - 60,
        ),
        checks={"dnssec": ok(NOW - 60)},
    ),
    DomainStatus(
        name="unsigned.example",
        dnssec=DnssecResult(
            parent_zone="example", signed=False, serial_drift=0, registry_disagrees=False
        ),
        checks={"dnssec": ok(NOW - 60)},
    ),
]


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> CollectorRegistry:
    # A fixed version keeps the golden file stable across releases.
    monkeypatch.setattr("exporter.selfmetrics.__version__", "0.0.0-test")
    store = StatusStore()
    store.sync((s.name, s.labels, s.expected_nameservers) for s in STATUSES)
    for s in STATUSES:
        store.update(s.name, _replace_with(s))
    registry = CollectorRegistry()
    registry.register(DomainCollector(store, clock=lambda: NOW))
    metrics = ExporterMetrics(registry)
    metrics.reload_ok.set(1)
    metrics.reload_ts.set(NOW - 3600)
    metrics.domains.set(len(STATUSES))
    metrics.bootstrap_publication.set(1774292402)
    for outcome in ("success", "success", "success", "not_found", "timeout"):
        metrics.record_rdap("rdap.example.test", outcome)
    for outcome in ("success", "success", "nxdomain", "something-new"):
        metrics.record_dns(outcome)
    metrics.record_smtp("accepted")
    return registry


def test_golden_exposition(registry: CollectorRegistry) -> None:
    text = generate_latest(registry).decode("utf-8")
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    expected = GOLDEN.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile="tests/golden/metrics.txt",
                tofile="generate_latest(registry)",
            )
        )
        pytest.fail(f"exposition differs from the golden file (UPDATE_GOLDEN=1 to accept):\n{diff}")


def test_scrape_is_repeatable(registry: CollectorRegistry) -> None:
    assert generate_latest(registry) == generate_latest(registry)


def test_no_contact_address_in_exposition(registry: CollectorRegistry) -> None:
    text = generate_latest(registry).decode("utf-8")
    assert SECRET not in text
    assert "@" not in text


def v(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_never_checked_domain_has_no_measurements(registry: CollectorRegistry) -> None:
    d = "never.example"
    for name in (
        "domain_expiry_timestamp_seconds",
        "domain_expiry_days",
        "domain_hold",
        "domain_registered",
        "domain_nameserver_mismatch",
        "domain_delegated",
    ):
        assert v(registry, name, domain=d) is None, name
    for check in ("rdap", "dns", "email"):
        assert v(registry, "domain_check_success", domain=d, check=check) is None
    # What the config says is not a measurement, so it is there from the start; the sources
    # not measured yet have no label (unknown), not "0".
    assert (
        v(
            registry,
            "domain_nameserver_info",
            domain=d,
            expected="1",
            nameserver="ns1.example.net",
        )
        == 1
    )


def test_failed_check_keeps_last_good_values(registry: CollectorRegistry) -> None:
    d = "failed.example"
    assert v(registry, "domain_expiry_timestamp_seconds", domain=d) == NOW + 90 * DAY
    assert v(registry, "domain_expiry_days", domain=d) == 90.0
    assert v(registry, "domain_check_success", domain=d, check="rdap") == 0
    assert v(registry, "domain_check_error_info", domain=d, check="rdap", reason="timeout") == 1
    assert (
        v(registry, "domain_check_last_success_timestamp_seconds", domain=d, check="rdap")
        == NOW - 7 * DAY
    )
    assert (
        v(registry, "domain_check_last_attempt_timestamp_seconds", domain=d, check="rdap")
        == NOW - 30
    )
    # A succeeding check has no error series at all.
    assert (
        v(
            registry,
            "domain_check_error_info",
            domain="held.example",
            check="rdap",
            reason="timeout",
        )
        is None
    )


def test_hold_only_for_held_domains(registry: CollectorRegistry) -> None:
    assert v(registry, "domain_hold", domain="held.example") == 1
    assert v(registry, "domain_status", domain="held.example", status="client hold") == 1
    assert v(registry, "domain_hold", domain="healthy.example", team="web") == 0
    assert (
        v(registry, "domain_status", domain="healthy.example", team="web", status="client hold")
        is None
    )
    assert v(registry, "domain_hold", domain="failed.example") == 0
    assert v(registry, "domain_hold", domain="gone.example") is None


def test_no_statuses_listed_means_no_hold_sample(registry: CollectorRegistry) -> None:
    d = "dns.example"
    assert v(registry, "domain_hold", domain=d) is None
    assert v(registry, "domain_expiry_timestamp_seconds", domain=d) is None
    assert v(registry, "domain_registered", domain=d) == 1
    assert (
        v(
            registry,
            "domain_info",
            domain=d,
            registrar="Domeneshop AS",
            registrar_iana_id="",
            rdap_server="https://rdap.norid.test/",
        )
        == 1
    )


def test_not_registered(registry: CollectorRegistry) -> None:
    d = "gone.example"
    assert v(registry, "domain_registered", domain=d) == 0
    assert v(registry, "domain_check_success", domain=d, check="rdap") == 1
    assert v(registry, "domain_expiry_timestamp_seconds", domain=d) is None


def test_expiry_days_uses_the_frozen_clock(registry: CollectorRegistry) -> None:
    assert v(registry, "domain_expiry_days", domain="held.example") == -3.0
    # The registrar's date (89.5 days) is earlier than the registry's (90): it wins.
    assert v(registry, "domain_expiry_days", domain="healthy.example", team="web") == 89.5
    assert (
        v(
            registry,
            "domain_registry_expiry_timestamp_seconds",
            domain="healthy.example",
            team="web",
        )
        == NOW + 90 * DAY
    )
    assert (
        v(
            registry,
            "domain_registrar_expiry_timestamp_seconds",
            domain="healthy.example",
            team="web",
        )
        == NOW + 89.5 * DAY
    )


def test_config_labels_are_on_every_series_of_the_domain(registry: CollectorRegistry) -> None:
    assert v(registry, "domain_expiry_days", domain="healthy.example") is None  # needs team
    for family in registry.collect():
        for sample in family.samples:
            if sample.labels.get("domain") == "healthy.example":
                assert sample.labels.get("team") == "web", sample


def test_dns_results(registry: CollectorRegistry) -> None:
    d = "dns.example"
    assert v(registry, "domain_nameserver_mismatch", domain=d) == 1
    assert v(registry, "domain_nameserver_mismatch", domain="healthy.example", team="web") == 0
    assert v(registry, "domain_delegated", domain=d) == 1
    assert v(registry, "domain_nameserver_lame", domain=d, nameserver="a.ns.example") == 0
    assert v(registry, "domain_nameserver_lame", domain=d, nameserver="b.ns.example") == 1
    assert v(registry, "domain_nameserver_lame", domain=d, nameserver="c.ns.example") is None
    sets = {
        "expected": ("a.ns.example", "b.ns.example"),
        "registry": ("a.ns.example", "b.ns.example"),
        "parent": ("a.ns.example", "b.ns.example"),
        "child": ("a.ns.example", "c.ns.example"),
    }
    # One series per nameserver, a label per source: 1 listed, 0 listed others.
    for ns in ("a.ns.example", "b.ns.example", "c.ns.example"):
        flags = {source: "1" if ns in names else "0" for source, names in sets.items()}
        labels = {"domain": d, "nameserver": ns, **flags}
        assert registry.get_sample_value("domain_nameserver_info", labels) == 1, labels
    assert len(_ns_series(registry, d)) == 3
    assert v(registry, "domain_check_success", domain=d, check="dns") == 0
    assert v(registry, "domain_check_error_info", domain=d, check="dns", reason="servfail") == 1


def test_email_role_aggregation(registry: CollectorRegistry) -> None:
    d = "mail.example"
    name = "domain_contact_email_deliverable"
    assert v(registry, name, domain=d, role="registrant") == 0  # one mailbox is dead
    assert v(registry, name, domain=d, role="technical") is None  # unknown + 1: not claimed
    assert v(registry, name, domain=d, role="administrative") == 1
    assert v(registry, name, domain=d, role="billing") is None
    assert v(registry, "domain_contact_email_self_hosted", domain=d, role="technical") == 1
    assert v(registry, "domain_contact_email_self_hosted", domain=d, role="registrant") == 0
    assert v(registry, "domain_check_success", domain=d, check="email") == 1


def test_self_metrics(registry: CollectorRegistry) -> None:
    assert v(registry, "domainwatch_build_info", version="0.0.0-test") == 1
    assert v(registry, "domainwatch_domains") == len(STATUSES)
    rdap = "domainwatch_rdap_requests_total"
    assert v(registry, rdap, server="rdap.example.test", outcome="success") == 3
    dnsq = "domainwatch_dns_queries_total"
    # An unknown outcome counts as error; mail lookups (no kind given) went to a resolver.
    assert v(registry, dnsq, outcome="error", server_kind="resolver") == 1
    for kind in ("root", "tld", "parent", "child", "resolver"):
        assert v(registry, dnsq, outcome="timeout", server_kind=kind) == 0  # pre-created
    assert v(registry, "domainwatch_smtp_probes_total", outcome="unknown") == 0
    assert (
        v(
            registry,
            "domainwatch_rdap_requests_created",
            server="rdap.example.test",
            outcome="success",
        )
        is None
    )


def test_removed_domain_series_vanish() -> None:
    store = StatusStore()
    store.sync((s.name, s.labels, s.expected_nameservers) for s in STATUSES)
    for s in STATUSES:
        store.update(s.name, _replace_with(s))
    registry = CollectorRegistry()
    registry.register(DomainCollector(store, clock=lambda: NOW))
    assert v(registry, "domain_hold", domain="held.example") == 1
    store.sync([("healthy.example", {"team": "web"}, ())])
    assert v(registry, "domain_hold", domain="held.example") is None
    domains = {s.labels.get("domain") for family in registry.collect() for s in family.samples}
    assert domains == {"healthy.example"}


def _replace_with(status: DomainStatus) -> Callable[[DomainStatus], DomainStatus]:
    return lambda _old: status


def test_auto_renewed_but_unpaid_counts_down_to_the_registrar_date(
    registry: CollectorRegistry,
) -> None:
    # The registry moved its date a year ahead; the registrar's says it lapsed 5 days ago.
    assert v(registry, "domain_expiry_days", domain="autorenew.example") == -5.0
    assert v(registry, "domain_expiry_timestamp_seconds", domain="autorenew.example") == (
        NOW - 5 * DAY
    )
    assert v(registry, "domain_registry_expiry_timestamp_seconds", domain="autorenew.example") == (
        NOW + 360 * DAY
    )


def test_unconfirmed_404_leaves_registered_absent(registry: CollectorRegistry) -> None:
    assert v(registry, "domain_registered", domain="pending404.example") is None
    assert v(registry, "domain_registered", domain="gone.example") == 0.0


def test_remote_label_values_are_cleaned_and_capped(registry: CollectorRegistry) -> None:
    text = generate_latest(registry).decode("utf-8")
    line = next(x for x in text.splitlines() if 'domain_info{domain="autorenew.example"' in x)
    registrar = line.split('registrar="', 1)[1].split('"', 1)[0]
    assert registrar.startswith("EvilRegistrar")
    assert len(registrar) == 200
    assert "\\x00" not in line and "\\n" not in registrar


def test_a_huge_delegation_is_capped_to_a_bounded_number_of_series() -> None:
    from exporter.collector import MAX_NAMESERVER_SERIES

    names = tuple(f"ns{i:04d}.hostile.example" for i in range(1000))
    store = StatusStore()
    store.sync([("huge.example", {}, ())])
    store.update(
        "huge.example",
        lambda s: DomainStatus(
            name=s.name,
            dns=DnsResult(
                parent_zone="example",
                parent=names,
                child=names,
                delegated=True,
                lame=dict.fromkeys(names),
                mismatch=None,
            ),
            checks={"dns": ok(NOW)},
        ),
    )
    registry = CollectorRegistry()
    registry.register(DomainCollector(store, clock=lambda: NOW))
    text = generate_latest(registry).decode()
    assert text.count("domain_nameserver_info{") == MAX_NAMESERVER_SERIES
    # The first servers in name order, each listed by both sources that have a set.
    assert _ns_series(registry, "huge.example") == [
        {"nameserver": ns, "parent": "1", "child": "1"} for ns in names[:MAX_NAMESERVER_SERIES]
    ]
    assert text.count("domain_nameserver_lame{") == MAX_NAMESERVER_SERIES


# --- domain_nameserver_info: one series per nameserver, a label per source that has a set -------


def _ns_series(registry: CollectorRegistry, domain: str) -> list[dict[str, str]]:
    """The domain_nameserver_info series of `domain` (labels without `domain`), in order."""
    out = []
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "domain_nameserver_info" and sample.labels["domain"] == domain:
                assert sample.value == 1, sample
                out.append({k: val for k, val in sample.labels.items() if k != "domain"})
    return out


def _ns_info_of(status: DomainStatus) -> list[dict[str, str]]:
    """domain_nameserver_info of one domain, after checking that the fast /metrics path renders
    exactly what the Collector path yields for it."""
    store = StatusStore()
    store.sync([(status.name, dict(status.labels), status.expected_nameservers)])
    store.update(status.name, _replace_with(status))
    collector = DomainCollector(store, clock=lambda: NOW)
    registry = CollectorRegistry()
    registry.register(collector)
    assert collector.exposition() == generate_latest(registry)
    return _ns_series(registry, status.name)


def _dns(parent: tuple[str, ...] | None, child: tuple[str, ...] | None) -> DnsResult:
    return DnsResult(
        parent_zone="example", parent=parent, child=child, delegated=True, lame={}, mismatch=None
    )


def _rdap(nameservers: tuple[str, ...] | None) -> RdapResult:
    return RdapResult(True, SERVER, reg("t.example", nameservers=nameservers))


def test_nameserver_info_listed_is_1_listed_elsewhere_is_0_no_set_is_no_label() -> None:
    # Expected and registry sets that overlap in one server; DNS and a change never seen.
    got = _ns_info_of(
        DomainStatus(
            name="t.example",
            expected_nameservers=("a.ns.example", "b.ns.example"),
            rdap=_rdap(("b.ns.example", "c.ns.example")),
        )
    )
    assert got == [
        {"nameserver": "a.ns.example", "expected": "1", "registry": "0"},
        {"nameserver": "b.ns.example", "expected": "1", "registry": "1"},
        {"nameserver": "c.ns.example", "expected": "0", "registry": "1"},
    ]
    # Only DNS measured: no expected set configured, no registration read: no such labels.
    got = _ns_info_of(
        DomainStatus(name="t.example", dns=_dns(("a.ns.example",), ("a.ns.example", "d.ns.ex")))
    )
    assert got == [
        {"nameserver": "a.ns.example", "parent": "1", "child": "1"},
        {"nameserver": "d.ns.ex", "parent": "0", "child": "1"},
    ]
    # The parent measured, the children not (None): child is unknown, not "0".
    got = _ns_info_of(DomainStatus(name="t.example", dns=_dns(("a.ns.example",), None)))
    assert got == [{"nameserver": "a.ns.example", "parent": "1"}]
    # The set before a change (kept for a day) beside the registry's new one.
    got = _ns_info_of(
        DomainStatus(
            name="t.example",
            rdap=_rdap(("new.ns.example",)),
            changes=ChangeLog(previous_nameservers=("old.ns.example",)),
        )
    )
    assert got == [
        {"nameserver": "new.ns.example", "previous": "0", "registry": "1"},
        {"nameserver": "old.ns.example", "previous": "1", "registry": "0"},
    ]
    # No source has a set (a registration that lists no nameservers, nothing measured): no
    # series at all.
    assert _ns_info_of(DomainStatus(name="t.example", rdap=_rdap(None))) == []
    assert _ns_info_of(DomainStatus(name="t.example")) == []


def test_nameserver_info_all_five_sources_and_config_labels() -> None:
    got = _ns_info_of(
        DomainStatus(
            name="t.example",
            labels={"team": "web"},
            expected_nameservers=("a.ns.example",),
            rdap=_rdap(("a.ns.example",)),
            dns=_dns(("a.ns.example",), ("a.ns.example", "b.ns.example")),
            changes=ChangeLog(previous_nameservers=("b.ns.example",)),
        )
    )
    assert got == [
        {
            "nameserver": "a.ns.example",
            "team": "web",
            **dict.fromkeys(("expected", "registry", "parent", "child"), "1"),
            "previous": "0",
        },
        {
            "nameserver": "b.ns.example",
            "team": "web",
            **dict.fromkeys(("expected", "registry", "parent"), "0"),
            "child": "1",
            "previous": "1",
        },
    ]


def test_nameserver_info_cap_keeps_the_expected_and_registry_servers_first() -> None:
    from exporter.collector import MAX_NAMESERVER_SERIES

    expected = tuple(f"e{i:02d}.ns.example" for i in range(10))
    registry = tuple(f"r{i:02d}.ns.example" for i in range(10))
    # Names that sort before every expected and registry server: a cap over the sorted union
    # would keep only these.
    hostile = tuple(f"a{i:04d}.hostile.example" for i in range(1000))
    got = _ns_info_of(
        DomainStatus(
            name="t.example",
            expected_nameservers=expected,
            rdap=_rdap(registry),
            dns=_dns(hostile, hostile),
        )
    )
    assert len(got) == MAX_NAMESERVER_SERIES
    kept = [row["nameserver"] for row in got]
    assert kept == [*expected, *registry[: MAX_NAMESERVER_SERIES - len(expected)]]
    for row in got:
        # The parent and the child have sets (that list none of these): "0", never absent.
        assert row["parent"] == row["child"] == "0", row
        assert row["expected"] == ("1" if row["nameserver"] in expected else "0"), row
        assert row["registry"] == ("1" if row["nameserver"] in registry else "0"), row


def test_nameserver_info_of_a_hostile_1000_server_parent_set_is_bounded() -> None:
    from exporter.collector import MAX_NAMESERVER_SERIES

    good = ("ns1.good.example", "ns2.good.example")
    hostile = tuple(f"a{i:04d}.hostile.example" for i in range(1000))
    got = _ns_info_of(
        DomainStatus(
            name="t.example",
            expected_nameservers=good,
            rdap=_rdap(good),
            dns=_dns(hostile, None),
        )
    )
    assert len(got) == MAX_NAMESERVER_SERIES
    keep = MAX_NAMESERVER_SERIES - len(good)
    # The configured and registry servers survive, shown as not delegated to; then the
    # hostile servers in name order, each 1 for the parent alone.
    assert got == sorted(
        [{"nameserver": ns, "expected": "1", "registry": "1", "parent": "0"} for ns in good]
        + [
            {"nameserver": ns, "expected": "0", "registry": "0", "parent": "1"}
            for ns in hostile[:keep]
        ],
        key=lambda row: row["nameserver"],
    )


def test_label_text_of_shared_label_sets_matches_the_plain_rendering() -> None:
    # _label_text makes the text around the domain's name once per (shared) label mapping:
    # values with %, quotes, backslashes and newlines, and the same mapping for two names.
    from exporter.collector import _escape, _label_text

    shared = {"team": 'a%sb "q" \\ %%', "zone": "x\ny"}
    for labels in ({}, shared, shared, {"a": "1"}, {"domainx": "2", "do": "3"}):
        for name in ("example.com", "xn--bcher-kva.example"):
            s = DomainStatus(name=name, labels=labels)
            pairs = sorted({**labels, "domain": name}.items())
            expected = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"
            assert _label_text(s) == expected
