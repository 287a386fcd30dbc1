"""exporter.mail against real servers: the Knot + unbound DNS world, an aiosmtpd mail exchanger,
and a small in-process authoritative DNS server for the corner cases the shared world lacks
(mixed null MX, IP-literal MX, a target that never answers, SERVFAIL/REFUSED, IPv6, CNAME)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import dns.asyncresolver
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.resolver
import dns.rrset
import dns.zone
import pytest

from exporter.config import DnsSettings, EmailSettings
from exporter.mail import (
    QUERY_OUTCOMES,
    REASONS,
    MailVerdict,
    ProbeResult,
    SmtpPacer,
    apply_probe,
    check_mail_domain,
    mail_domain_of,
    probe_mailbox,
    usable_address,
)
from tests.support.dnsworld import DnsWorld, dns_world  # noqa: F401
from tests.support.smtpserver import SMTP_PORT, SmtpServer, smtp_server  # noqa: F401

# Tests run on loopback, so private addresses must be allowed except where a test says otherwise.
LAB_EMAIL = EmailSettings(
    allow_private_addresses=True, smtp_probe=True, smtp_port=SMTP_PORT, smtp_timeout=1.0
)


def check(
    domain: str, dns_settings: DnsSettings, email: EmailSettings = LAB_EMAIL
) -> tuple[MailVerdict, list[str]]:
    outcomes: list[str] = []
    verdict = asyncio.run(check_mail_domain(domain, dns_settings, email, outcomes.append))
    assert verdict.reason in REASONS
    assert set(outcomes) <= QUERY_OUTCOMES
    return verdict, outcomes


@pytest.fixture(scope="module")
def world_dns(dns_world: DnsWorld) -> DnsSettings:  # noqa: F811
    return dns_world.settings(mode="resolver", timeout=0.5)


# --------------------------------------------------------------------------- the DNS world


@pytest.mark.parametrize(
    ("domain", "deliverable", "reason", "hosts", "zone"),
    [
        ("mx-ok.test", True, "mx_ok", ("mail.mx-ok.test",), "mx-ok.test"),
        ("good.test", True, "mx_ok", ("mail.good.test",), "good.test"),
        ("held-mail.test", True, "mx_ok", ("mail.held-mail.test",), "held-mail.test"),
        ("a-only.test", True, "implicit_mx", ("a-only.test",), "a-only.test"),
        ("null-mx.test", False, "null_mx", (), "null-mx.test"),
        ("mx-broken.test", False, "mx_unresolvable", (), "mx-broken.test"),
        # provider.test has neither MX nor an apex address.
        ("provider.test", False, "no_mail_host", (), "provider.test"),
        # NXDOMAIN: the registrable name is no zone apex, so there is no registration to judge.
        ("nxdomain.test", False, "nxdomain", (), None),
        # A host name inside a zone: implicit MX on its own A; judged on its registrable domain.
        ("mail.mx-ok.test", True, "implicit_mx", ("mail.mx-ok.test",), "mx-ok.test"),
        # A name in the two-label suffix co.test, which the Public Suffix List does not know:
        # the PSL default rule makes co.test the registrable domain (documented in suffixes.py).
        ("shop.co.test", True, "implicit_mx", ("shop.co.test",), "co.test"),
    ],
)
def test_verdicts_from_the_dns_world(
    world_dns: DnsSettings,
    domain: str,
    deliverable: bool | None,
    reason: str,
    hosts: tuple[str, ...],
    zone: str | None,
) -> None:
    verdict, outcomes = check(domain, world_dns)
    assert verdict == MailVerdict(deliverable, reason, hosts, zone)
    assert outcomes, "every lookup is reported to on_query"


def test_outcomes_are_reported_once_per_lookup(world_dns: DnsSettings) -> None:
    # MX + SOA for the domain, then A + AAAA for the one target.
    assert check("mx-ok.test", world_dns)[1] == ["success"] * 4
    # MX and SOA both NXDOMAIN; nothing else is asked.
    assert check("nxdomain.test", world_dns)[1] == ["nxdomain", "nxdomain"]
    # mail.nowhere.test: A and AAAA both NXDOMAIN.
    assert sorted(check("mx-broken.test", world_dns)[1]) == ["nxdomain"] * 2 + ["success"] * 2


def test_input_spelling_is_normalised(world_dns: DnsSettings) -> None:
    verdict, _ = check("MX-OK.Test.", world_dns)
    assert verdict == MailVerdict(True, "mx_ok", ("mail.mx-ok.test",), "mx-ok.test")


def test_not_a_domain_is_unknown_without_any_query(world_dns: DnsSettings) -> None:
    verdict, outcomes = check("not a domain", world_dns)
    assert verdict == MailVerdict(None, "invalid_address", (), None)
    assert outcomes == []


def test_dead_delegation_is_unknown_not_undeliverable(world_dns: DnsSettings) -> None:
    started = time.monotonic()
    verdict, outcomes = check("slow-mail.test", world_dns)
    assert verdict.deliverable is None
    # unbound either gives up itself (SERVFAIL) or our 0.5 s timeout fires first.
    assert verdict.reason in ("timeout", "servfail")
    assert verdict.zone is None  # walking up past a failure would name the wrong zone
    assert set(outcomes) <= {"timeout", "servfail"}
    assert time.monotonic() - started < 3.0


def test_unreachable_resolver_is_unknown_timeout() -> None:
    dead = DnsSettings(resolvers=("127.53.9.9",), timeout=0.5)
    started = time.monotonic()
    verdict, outcomes = check("mx-ok.test", dead)
    assert verdict == MailVerdict(None, "timeout", (), None)
    assert outcomes and set(outcomes) == {"timeout"}
    assert time.monotonic() - started < 2.0


def test_private_mail_hosts_are_unusable_unless_allowed(world_dns: DnsSettings) -> None:
    # Every mail host in the world is on 127.53/16: nobody on the internet could deliver there.
    strict = replace(LAB_EMAIL, allow_private_addresses=False)
    assert check("mx-ok.test", world_dns, strict)[0] == MailVerdict(
        False, "private_address", (), "mx-ok.test"
    )
    assert check("a-only.test", world_dns, strict)[0] == MailVerdict(
        False, "private_address", (), "a-only.test"
    )
    # The reasons that do not depend on addresses are unchanged.
    assert check("mx-broken.test", world_dns, strict)[0].reason == "mx_unresolvable"
    assert check("null-mx.test", world_dns, strict)[0].reason == "null_mx"


def test_global_default_resolvers_are_untouched(world_dns: DnsSettings) -> None:
    before_sync = dns.resolver.default_resolver
    before_async = dns.asyncresolver.default_resolver
    check("mx-ok.test", world_dns)
    assert dns.resolver.default_resolver is before_sync
    assert dns.asyncresolver.default_resolver is before_async


def test_resolver_entry_that_is_not_an_address_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        asyncio.run(check_mail_domain("mx-ok.test", DnsSettings(resolvers=("localhost",)),
                                      LAB_EMAIL))


# --------------------------------------------------------------------------- corner cases

CASES_HOST = "127.53.5.53"
CASES_ORIGIN = dns.name.from_text("cases.test.")
CASES_ZONE = """
@ 60 SOA ns hostmaster 1 3600 600 86400 5
@ 60 NS ns
ns 60 A 127.53.5.53
mixed-null 60 MX 0 .
mixed-null 60 MX 10 mail.mixed-null
mail.mixed-null 60 A 127.53.1.25
null10 60 MX 10 .
literal 60 MX 10 127.53.1.25.
partial 60 MX 10 missing
partial 60 MX 20 mail.partial
mail.partial 60 A 127.53.1.25
order 60 MX 20 a.order
order 60 MX 10 b.order
order 60 MX 30 missing
a.order 60 A 127.53.1.25
b.order 60 A 127.53.1.26
stalled 60 MX 10 missing
stalled 60 MX 20 drop-host
broken-target 60 MX 10 missing
broken-target 60 MX 20 fail-host
slow-ok 60 MX 10 drop-host
slow-ok 60 MX 20 mail.partial
cname 60 MX 10 alias
alias 60 CNAME mail.partial
v6-private 60 MX 10 mail.v6-private
mail.v6-private 60 AAAA fd00::25
v6-global 60 MX 10 mail.v6-global
mail.v6-global 60 AAAA 2a00:1450:4001:80b::201a
v4-global 60 MX 10 mail.v4-global
mail.v4-global 60 A 93.184.215.14
mapped 60 MX 10 mail.mapped
mail.mapped 60 AAAA ::ffff:10.0.0.25
zero 60 MX 10 mail.zero
mail.zero 60 A 0.0.0.0
a-private 60 A 10.1.2.3
"""
# Names the server treats specially, for every query type.
DROP = {dns.name.from_text("drop-host.cases.test.")}
RCODES = {
    dns.name.from_text("fail-host.cases.test."): dns.rcode.SERVFAIL,
    dns.name.from_text("servfail-mx.cases.test."): dns.rcode.SERVFAIL,
    dns.name.from_text("refused-mx.cases.test."): dns.rcode.REFUSED,
}


class CasesDns:
    """A tiny authoritative server for cases.test on CASES_HOST, an ephemeral UDP port.

    It answers from a dnspython zone (following CNAMEs, SOA in the authority section of NXDOMAIN
    and NODATA answers), never answers names in DROP, and answers names in RCODES with that
    rcode. The checker queries it as its "resolver", as a stub would query a recursive one.
    (These cases exercise this module's logic; the shared Knot world has none of them.)
    The answers carry the 60 s TTLs above; mail.py keeps no cache, so no test sees another's.
    (Remote addresses in the zone, 93.184.215.14 and 2a00:…, are data only: nothing connects.)
    """

    def __init__(self) -> None:
        self.zone = dns.zone.from_text(CASES_ZONE, origin=CASES_ORIGIN, relativize=False)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((CASES_HOST, 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def settings(self, timeout: float = 0.3) -> DnsSettings:
        return DnsSettings(resolvers=(f"{CASES_HOST}:{self.port}",), timeout=timeout)

    def start(self) -> CasesDns:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            response = self.answer(dns.message.from_wire(wire))
            if response is not None:
                self.sock.sendto(response.to_wire(), peer)

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        name, rdtype = question.name, question.rdtype
        if name in DROP:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in RCODES:
            response.set_rcode(RCODES[name])
            return response
        for _ in range(8):
            if not name.is_subdomain(CASES_ORIGIN):
                if not response.answer:
                    response.set_rcode(dns.rcode.REFUSED)
                return response
            node = self.zone.get_node(name)
            if node is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                return self._with_soa(response)
            found = node.get_rdataset(dns.rdataclass.IN, rdtype)
            if found is not None:
                self._add(response, name, found)
                return response
            alias = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if alias is None:
                return self._with_soa(response)  # NODATA
            self._add(response, name, alias)
            name = alias[0].target
        return response

    def _with_soa(self, response: dns.message.Message) -> dns.message.Message:
        soa = self.zone.get_rdataset(CASES_ORIGIN, dns.rdatatype.SOA)
        assert soa is not None
        response.authority.append(dns.rrset.from_rdata_list(CASES_ORIGIN, soa.ttl, list(soa)))
        return response

    @staticmethod
    def _add(
        response: dns.message.Message, name: dns.name.Name, rdataset: dns.rdataset.Rdataset
    ) -> None:
        response.answer.append(dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset)))


@pytest.fixture(scope="module")
def cases() -> Iterator[CasesDns]:
    server = CasesDns().start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("domain", "deliverable", "reason", "hosts"),
    [
        # A null MX beside a real one is a misconfiguration: the real one still takes mail.
        ("mixed-null", True, "mx_ok", ("mail.mixed-null.cases.test",)),
        ("null10", False, "null_mx", ()),
        # An IP literal written as an MX name is unusable, and there is no A fallback.
        ("literal", False, "mx_unresolvable", ()),
        # One dead target is only a warning when another works.
        ("partial", True, "mx_ok", ("mail.partial.cases.test",)),
        # Usable hosts come best preference first; the NXDOMAIN one is left out.
        ("order", True, "mx_ok", ("b.order.cases.test", "a.order.cases.test")),
        # A target that times out while the other is NXDOMAIN: unknown, never undeliverable.
        ("stalled", None, "timeout", ()),
        ("broken-target", None, "servfail", ()),
        # ...but a timeout does not spoil a working target.
        ("slow-ok", True, "mx_ok", ("mail.partial.cases.test",)),
        # CNAME'd exchanges are followed, as MTAs do.
        ("cname", True, "mx_ok", ("alias.cases.test",)),
        ("v6-private", True, "mx_ok", ("mail.v6-private.cases.test",)),
        ("servfail-mx", None, "servfail", ()),
        ("refused-mx", None, "servfail", ()),
        # 0.0.0.0 is never a mail host, even where private addresses are allowed.
        ("zero", False, "private_address", ()),
        ("no-such-name", False, "nxdomain", ()),
    ],
)
def test_corner_cases(
    cases: CasesDns,
    domain: str,
    deliverable: bool | None,
    reason: str,
    hosts: tuple[str, ...],
) -> None:
    verdict, _ = check(f"{domain}.cases.test", cases.settings())
    assert (verdict.deliverable, verdict.reason, verdict.mx_hosts) == (deliverable, reason, hosts)


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        ("v4-global", "mx_ok"),
        ("v6-global", "mx_ok"),
        ("v6-private", "private_address"),
        ("mapped", "private_address"),  # ::ffff:10.0.0.25 is judged as 10.0.0.25
        ("a-private", "private_address"),  # implicit MX on a private A
        ("zero", "private_address"),
    ],
)
def test_routability_rule_when_private_addresses_are_refused(
    cases: CasesDns, domain: str, reason: str
) -> None:
    strict = replace(LAB_EMAIL, allow_private_addresses=False)
    verdict, _ = check(f"{domain}.cases.test", cases.settings(), strict)
    assert verdict.reason == reason
    assert verdict.deliverable is (reason == "mx_ok")


def test_rcodes_are_reported_to_on_query(cases: CasesDns) -> None:
    # MX of the name (refused), SOA of its registrable domain cases.test (answered).
    _, outcomes = check("refused-mx.cases.test", cases.settings())
    assert sorted(outcomes) == ["refused", "success"]
    _, outcomes = check("servfail-mx.cases.test", cases.settings())
    assert sorted(outcomes) == ["servfail", "success"]


def test_zone_is_found_for_names_below_an_apex(cases: CasesDns) -> None:
    verdict, _ = check("deep.under.partial.cases.test", cases.settings())
    assert verdict.reason == "nxdomain"
    assert verdict.zone == "cases.test"
    assert check("partial.cases.test", cases.settings())[0].zone == "cases.test"


def test_query_budget_makes_a_deciding_lookup_unknown(
    cases: CasesDns, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MX and SOA spend the budget; the exchanges' addresses are never asked, so nothing is
    # known about them: unknown, never mx_unresolvable.
    monkeypatch.setattr("exporter.mail.MAIL_CHECK_QUERY_BUDGET", 2)
    verdict, outcomes = check("order.cases.test", cases.settings())
    assert (verdict.deliverable, verdict.reason) == (None, "query_budget")
    assert len(outcomes) == 2  # lookups not sent are not counted as queries


def test_default_query_budget_covers_every_lookup_of_a_check() -> None:
    import exporter.mail as mail

    # MX + SOA + A and AAAA of each exchange resolved.
    assert mail.MAIL_CHECK_QUERY_BUDGET >= 2 + 2 * mail._MAX_MX_TARGETS
    assert mail.SMTP_QUERY_BUDGET >= 2 * mail.SMTP_MAX_HOSTS


def test_deadline_cuts_a_slow_lookup_and_says_so(
    cases: CasesDns, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Deadline 0.5 x 0.4 s = 0.2 s, shorter than one lookup's lifetime (0.4 s): drop-host's
    # A/AAAA (never answered) are cut at the deadline, and the verdict says why.
    monkeypatch.setattr("exporter.mail.MAIL_CHECK_DEADLINE_FACTOR", 0.5)
    started = time.monotonic()
    verdict, outcomes = check("stalled.cases.test", cases.settings(timeout=0.4))
    elapsed = time.monotonic() - started
    assert (verdict.deliverable, verdict.reason) == (None, "deadline")
    assert 0.15 <= elapsed < 0.4, elapsed
    assert "timeout" in outcomes  # the queries were sent and timed out: they count


@pytest.mark.parametrize(
    ("address", "allow_private", "usable"),
    [
        ("93.184.215.14", False, True),
        ("127.53.1.25", False, False),
        ("127.53.1.25", True, True),
        ("10.0.0.1", False, False),
        ("169.254.1.1", False, False),
        ("fe80::1", False, False),
        ("::ffff:10.0.0.1", False, False),
        # A v4-mapped address is judged by its IPv4 part, whichever way that cuts.
        ("::ffff:93.184.215.14", False, True),
        ("::ffff:0.0.0.0", True, False),
        ("0.0.0.0", True, False),
        ("::", True, False),
        ("224.0.0.1", True, False),
        ("not-an-ip", True, False),
        # NAT64, 6to4 and IPv4-compatible forms of a private IPv4 address are private too.
        ("64:ff9b::7f00:1", False, False),
        ("2002:7f00:1::1", False, False),
        ("::7f00:1", False, False),
    ],
)
def test_usable_address(address: str, allow_private: bool, usable: bool) -> None:
    assert usable_address(address, allow_private) is usable


# --------------------------------------------------------------------------- mail_domain_of


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("hostmaster@example.com", "example.com"),
        ("Hostmaster@EXAMPLE.Com", "example.com"),
        ("  admin@example.org  ", "example.org"),
        ("user@bücher.example", "xn--bcher-kva.example"),
        ("user@XN--BCHER-KVA.example.", "xn--bcher-kva.example"),
        ("user@Bücher.Example", "xn--bcher-kva.example"),
        ('"john doe"@example.net', "example.net"),
        ("first.last+tag@sub.example.co.uk", "sub.example.co.uk"),
        ("δοκιμή@παράδειγμα.δοκιμή", "xn--hxajbheg2az3al.xn--jxalpdlp"),
    ],
)
def test_mail_domain_of_addresses(address: str, domain: str) -> None:
    assert mail_domain_of(address) == domain


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "no-at-sign.example.com",
        "@example.com",
        "user@",
        "user@localhost",  # single label: nobody's contact address
        "user@[192.0.2.1]",
        "user@192.0.2.1",
        "user@exa mple.com",
        "user@-bad-.example",
        "user@xn--invalid-.example",
        "a..b@example.com",
        ".a@example.com",
        "a b@example.com",
        "a@b@example.com",
        "ok@mx-ok.test\r\nDATA",
        "Please query the RDDS service of the Registrar of Record identified in this output",
        "https://example.com/contact-form",
    ],
)
def test_mail_domain_of_junk(junk: str) -> None:
    assert mail_domain_of(junk) is None


# --------------------------------------------------------------------------- SMTP probe


def probe(
    address: str,
    hosts: tuple[str, ...],
    dns_settings: DnsSettings,
    email: EmailSettings = LAB_EMAIL,
    pacer: SmtpPacer | None = None,
) -> ProbeResult:
    return asyncio.run(probe_mailbox(address, hosts, dns_settings, email, pacer=pacer))


MX = ("mail.mx-ok.test",)


@pytest.mark.parametrize(
    ("address", "accepted", "code", "reason", "enhanced"),
    [
        ("ok@mx-ok.test", True, 250, "accepted", "2.1.5"),
        ("gone@mx-ok.test", False, 550, "rejected", "5.1.1"),
        ("grey@mx-ok.test", None, 450, "greylisted", "4.7.1"),
    ],
)
def test_probe_answers(
    world_dns: DnsSettings,
    smtp_server: SmtpServer,  # noqa: F811
    address: str,
    accepted: bool | None,
    code: int,
    reason: str,
    enhanced: str,
) -> None:
    smtp_server.clear()
    assert probe(address, MX, world_dns) == ProbeResult(
        accepted, code, "mail.mx-ok.test", reason, enhanced
    )
    assert smtp_server.sessions == [
        ["EHLO domainwatch.invalid", "MAIL FROM:<>", f"RCPT TO:<{address}>", "QUIT"]
    ]
    assert "DATA" not in smtp_server.verbs()


def test_probe_falls_back_to_helo(world_dns: DnsSettings, smtp_server: SmtpServer) -> None:  # noqa: F811
    smtp_server.clear()
    smtp_server.reject_ehlo = True
    try:
        result = probe("ok@mx-ok.test", MX, world_dns)
    finally:
        smtp_server.reject_ehlo = False
    assert result.accepted is True
    assert smtp_server.verbs() == ["EHLO", "HELO", "MAIL", "RCPT", "QUIT"]


def test_probe_uses_the_configured_helo_name(
    world_dns: DnsSettings, smtp_server: SmtpServer  # noqa: F811
) -> None:
    smtp_server.clear()
    probe("ok@mx-ok.test", MX, world_dns, replace(LAB_EMAIL, smtp_helo="probe.example.org"))
    assert smtp_server.commands[0] == "EHLO probe.example.org"


def test_probe_connection_refused_is_unknown(
    world_dns: DnsSettings, smtp_server: SmtpServer  # noqa: F811
) -> None:
    smtp_server.clear()
    # mail.good.test is 127.53.1.28, where nothing listens on the SMTP port.
    result = probe("ok@mx-ok.test", ("mail.good.test",), world_dns)
    assert result == ProbeResult(None, None, "mail.good.test", "connection_error")
    assert smtp_server.commands == []


def test_probe_moves_to_next_mx_only_when_it_cannot_connect(
    world_dns: DnsSettings, smtp_server: SmtpServer  # noqa: F811
) -> None:
    smtp_server.clear()
    result = probe("ok@mx-ok.test", ("mail.good.test", "mail.mx-ok.test"), world_dns)
    assert result == ProbeResult(True, 250, "mail.mx-ok.test", "accepted", "2.1.5")
    # A 4xx from the first MX that answers is the answer: no second opinion is sought.
    result = probe("grey@mx-ok.test", ("mail.mx-ok.test", "mail.good.test"), world_dns)
    assert result == ProbeResult(None, 450, "mail.mx-ok.test", "greylisted", "4.7.1")
    assert "DATA" not in smtp_server.verbs()


def test_probe_tarpit_times_out(world_dns: DnsSettings, smtp_server: SmtpServer) -> None:  # noqa: F811
    # a-only.test is 127.53.1.26: a socket that listens but never accepts or greets.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tarpit:
        tarpit.bind(("127.53.1.26", SMTP_PORT))
        tarpit.listen(8)
        started = time.monotonic()
        result = probe("ok@a-only.test", ("a-only.test",), world_dns,
                       replace(LAB_EMAIL, smtp_timeout=0.5))
        elapsed = time.monotonic() - started
    assert result == ProbeResult(None, None, "a-only.test", "timeout")
    assert elapsed < 2.0


def test_probe_is_off_by_default(world_dns: DnsSettings, smtp_server: SmtpServer) -> None:  # noqa: F811
    smtp_server.clear()
    default = replace(EmailSettings(), allow_private_addresses=True, smtp_port=SMTP_PORT)
    assert default.smtp_probe is False
    assert probe("ok@mx-ok.test", MX, world_dns, default) == ProbeResult(
        None, None, None, "disabled"
    )
    assert smtp_server.sessions == []


def test_probe_refuses_private_hosts_unless_allowed(
    world_dns: DnsSettings, smtp_server: SmtpServer  # noqa: F811
) -> None:
    smtp_server.clear()
    strict = replace(LAB_EMAIL, allow_private_addresses=False)
    assert probe("ok@mx-ok.test", MX, world_dns, strict) == ProbeResult(
        None, None, None, "no_address"
    )
    assert smtp_server.sessions == []


@pytest.mark.parametrize(
    "address", ["junk", "ok@mx-ok.test\r\nDATA", "ok@mx-ok.test>\r\nDATA", "δοκιμή@mx-ok.test"]
)
def test_probe_rejects_bad_addresses_before_connecting(
    world_dns: DnsSettings, smtp_server: SmtpServer, address: str  # noqa: F811
) -> None:
    smtp_server.clear()
    assert probe(address, MX, world_dns).reason == "invalid_address"
    assert smtp_server.sessions == []


def test_probe_never_logs_the_address(
    world_dns: DnsSettings,
    smtp_server: SmtpServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="exporter"):
        probe("ok@mx-ok.test", ("mail.good.test", "mail.mx-ok.test"), world_dns)
        probe("gone@mx-ok.test", MX, world_dns)
        check("mx-ok.test", world_dns)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("exporter")]
    assert any("mail.good.test" in m for m in messages)  # the logs are there...
    assert not any("ok@" in m or "gone@" in m for m in messages)  # ...without the mailbox


def test_pacer_spaces_probes_per_host() -> None:
    now = [100.0]
    pacer = SmtpPacer(min_interval=10.0, clock=lambda: now[0])
    assert pacer.reserve("mail.mx-ok.test") == 0
    assert pacer.reserve("MAIL.mx-ok.test.") == 10  # same host, any spelling
    assert pacer.reserve("mail.mx-ok.test") == 20  # queued behind the previous booking
    assert pacer.reserve("mail.good.test") == 0  # other hosts are independent
    now[0] = 135.0
    assert pacer.reserve("mail.mx-ok.test") == 0  # all earlier slots have passed


def test_pacer_delays_a_real_second_probe(
    world_dns: DnsSettings, smtp_server: SmtpServer  # noqa: F811
) -> None:
    pacer = SmtpPacer(min_interval=0.4)

    async def two_probes() -> tuple[ProbeResult, ProbeResult]:
        first = probe_mailbox("ok@mx-ok.test", MX, world_dns, LAB_EMAIL, pacer=pacer)
        second = probe_mailbox("gone@mx-ok.test", MX, world_dns, LAB_EMAIL, pacer=pacer)
        return await asyncio.gather(first, second)

    started = time.monotonic()
    results = asyncio.run(two_probes())
    assert [r.accepted for r in results] == [True, False]
    assert time.monotonic() - started >= 0.4


def test_pacer_wait_does_not_count_against_the_probe_deadline(
    world_dns: DnsSettings, smtp_server: SmtpServer  # noqa: F811
) -> None:
    # Probe deadline 2 x 0.3 s = 0.6 s; the second probe waits 0.8 s for its pacer slot first.
    pacer = SmtpPacer(min_interval=0.8)
    quick = replace(LAB_EMAIL, smtp_timeout=0.3)

    async def two_probes() -> tuple[ProbeResult, ProbeResult]:
        first = probe_mailbox("ok@mx-ok.test", MX, world_dns, quick, pacer=pacer)
        second = probe_mailbox("gone@mx-ok.test", MX, world_dns, quick, pacer=pacer)
        return await asyncio.gather(first, second)

    started = time.monotonic()
    results = asyncio.run(two_probes())
    assert [r.reason for r in results] == ["accepted", "rejected"]
    assert time.monotonic() - started >= 0.8


@pytest.mark.parametrize(
    ("dns_verdict", "probe_accepted", "combined"),
    [
        ((False, "null_mx"), True, (False, "null_mx")),  # never overrides DNS undeliverable
        ((None, "timeout"), True, (None, "timeout")),
        ((True, "mx_ok"), None, (None, "smtp_unknown")),  # 4xx / timeout: unknown (issue 3)
        ((True, "mx_ok"), False, (False, "smtp_rejected")),
        ((True, "mx_ok"), True, (True, "mx_ok")),
    ],
)
def test_apply_probe(
    dns_verdict: tuple[bool | None, str],
    probe_accepted: bool | None,
    combined: tuple[bool | None, str],
) -> None:
    assert apply_probe(*dns_verdict, probe_accepted) == combined
