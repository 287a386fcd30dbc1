"""Issue 11, DNS side: DNSSEC chain, glue and SOA serial drift.

Pure verdicts (exporter/dnssec.py) with keys and signatures made here by dnspython; the probe
(exporter/dnssecprobe.py) against Knot signing real zones (tests/support/signedworld.py, on
127.95.0.0/16); and the running exporter's /metrics for every case, with an RDAP registry whose
`secureDNS.delegationSigned` disagrees for one domain.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rrset
import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import ec

from exporter import dnssec, dnssecprobe
from exporter.checks.dnssec import _merge, with_registry_verdict
from exporter.config import DnsSettings
from exporter.registration import Registration, parse_domain
from exporter.store import DnssecResult, DomainStatus, RdapResult
from tests.faults.hostile_dns import HostileDns, intercept
from tests.support import signedworld as sw
from tests.support.exporter_proc import ExporterProcess, Scrape
from tests.support.rdapserver import RdapServer, Reply, make_domain, write_bootstrap, write_ca

TIMEOUT = 0.5
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "rdap"
NAME = dns.name.from_text("example.test.")
DAY = 86400.0

# -- keys and signatures made here -------------------------------------------------------------


def _key(flags: int) -> tuple[ec.EllipticCurvePrivateKey, dns.rdtypes.ANY.DNSKEY.DNSKEY]:
    private = ec.generate_private_key(ec.SECP256R1())
    return private, dns.dnssec.make_dnskey(private.public_key(), "ECDSAP256SHA256", flags=flags)


KSK_PRIV, KSK = _key(257)
ZSK_PRIV, ZSK = _key(256)
OTHER_PRIV, OTHER = _key(257)


def _dnskey_rrset(*keys: dns.rdtypes.ANY.DNSKEY.DNSKEY) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(NAME, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    for key in keys:
        rrset.add(key)
    return rrset


def _sign(rrset: dns.rrset.RRset, private: Any, key: Any, *, expires: float | None = None) -> Any:
    now = time.time()
    return dns.dnssec.sign(
        rrset, private, NAME, key, inception=now - 3600, expiration=expires or now + 14 * DAY
    )


def _ds(key: Any, digest: str = "SHA256", owner: dns.name.Name = NAME) -> Any:
    # validating=True: SHA-1 may no longer be created, but a parent may still publish it.
    return dns.dnssec.make_ds(owner, key, digest, validating=True)


KEYS = _dnskey_rrset(KSK, ZSK)
KSK_SIG = _sign(KEYS, KSK_PRIV, KSK)


@pytest.mark.parametrize(
    ("case", "ds", "keys", "sigs", "expected"),
    [
        ("DS names the KSK that signs the DNSKEY RRset", [_ds(KSK)], [KSK, ZSK], [KSK_SIG], False),
        ("a SHA-1 DS still validates", [_ds(KSK, "SHA1")], [KSK, ZSK], [KSK_SIG], False),
        ("one of two DS matches", [_ds(OTHER), _ds(KSK)], [KSK, ZSK], [KSK_SIG], False),
        ("DS for a key the child does not serve", [_ds(OTHER)], [KSK, ZSK], [KSK_SIG], True),
        ("DS digested for another owner", [_ds(KSK, owner=dns.name.from_text("other.test."))],
         [KSK, ZSK], [KSK_SIG], True),
        ("DS names the ZSK, which signs no DNSKEY RRset", [_ds(ZSK)], [KSK, ZSK], [KSK_SIG], True),
        ("DS names the KSK but its signature is missing", [_ds(KSK)], [KSK, ZSK], [], True),
        ("the child serves no DNSKEY at all", [_ds(KSK)], [], [], True),
        ("no DS: not signed, no verdict", [], [KSK, ZSK], [KSK_SIG], None),
    ],
)
def test_chain_verdict(case: str, ds: list[Any], keys: list[Any], sigs: list[Any],
                       expected: bool | None) -> None:
    assert dnssec.chain_verdict(NAME, ds, keys, sigs) is expected, case


def test_chain_verdict_validates_the_signature_bytes() -> None:
    # Signed over {KSK, ZSK}, served with a third key added: the signature no longer matches.
    served = [KSK, ZSK, OTHER]
    assert dnssec.chain_verdict(NAME, [_ds(KSK)], served, [KSK_SIG]) is True
    # The same set, signed as served: fine.
    sig = _sign(_dnskey_rrset(*served), KSK_PRIV, KSK)
    assert dnssec.chain_verdict(NAME, [_ds(KSK)], served, [sig]) is False
    # A signature with the KSK's tag made by another private key (a forged or corrupt RRSIG).
    forged = _sign(KEYS, OTHER_PRIV, KSK)
    assert dnssec.chain_verdict(NAME, [_ds(KSK)], [KSK, ZSK], [forged]) is True


def test_chain_verdict_ignores_signature_times() -> None:
    """Expiry is its own metric: an expired (or not yet valid) signature by the right key is
    still the right key."""
    expired = dns.dnssec.sign(KEYS, KSK_PRIV, NAME, KSK, inception=1_000_000, expiration=2_000_000)
    assert dnssec.chain_verdict(NAME, [_ds(KSK)], [KSK, ZSK], [expired]) is False


def test_chain_verdict_unknown_when_it_cannot_be_computed() -> None:
    # A DS digest type dnspython cannot compute (GOST, 3): resolvers ignore it; no verdict.
    gost = dns.rdata.from_text("IN", "DS", f"{dns.dnssec.key_id(KSK)} 13 3 " + "ab" * 32)
    assert dnssec.chain_verdict(NAME, [gost], [KSK, ZSK], [KSK_SIG]) is None
    # RSAMD5 (1): RFC 8624 says MUST NOT validate; a DS that names such a key is no verdict.
    md5 = dns.rdata.from_text("IN", "DNSKEY", "257 3 1 AwEAAc0=")
    assert dnssec.chain_verdict(NAME, [_ds(md5)], [md5], []) is None
    # A revoked KSK (RFC 5011) signs nothing any more.
    revoked = dns.rdata.from_text(
        "IN", "DNSKEY", KSK.to_text().replace("257 ", "385 ", 1)
    )
    assert dnssec.chain_verdict(NAME, [_ds(revoked)], [revoked, ZSK], [KSK_SIG]) is True


def test_earliest_expiration() -> None:
    a = _sign(KEYS, KSK_PRIV, KSK, expires=2_000_000_000)
    b = _sign(KEYS, KSK_PRIV, KSK, expires=1_900_000_000)
    assert dnssec.earliest_expiration([a, b]) == 1_900_000_000
    assert dnssec.earliest_expiration([]) is None


@pytest.mark.parametrize(
    ("serials", "drift"),
    [
        ([], None),
        ([7], 0),
        ([2026112701, 2026112701], 0),
        ([2026112701, 2026112705, 2026112703], 4),
        # Across the 2^32 wrap: 3 is 4 ahead of 4294967295 (RFC 1982), not 4294967292 behind.
        ([4294967295, 3], 4),
        ([4294967290, 4294967295, 2], 8),
        ([0, 2**31], 2**31),  # undefined order; still far beyond any tolerance
    ],
)
def test_serial_drift(serials: list[int], drift: int | None) -> None:
    assert dnssec.serial_drift(serials) == drift


A1, A2, V6 = ("192.0.2.1",), ("192.0.2.2",), ("2001:db8::1",)


@pytest.mark.parametrize(
    ("glue_a", "glue_aaaa", "child_a", "child_aaaa", "expected"),
    [
        (A1, (), A1, (), False),
        (A1, (), A1, V6, False),  # no AAAA glue: that type is not compared
        (A1, (), A2, V6, True),
        (A1 + A2, (), A1, (), True),  # a stale extra address
        (A1, V6, A1, ("2001:db8::2",), True),
        (A1, V6, A1, ("2001:DB8:0::1",), False),  # case and zero compression do not matter
        (A1, (), (), (), True),  # the child says the name has no address
        ((), (), A1, (), True),  # no glue at all for an in-domain server
        ((), (), (), (), False),
        (A1, (), None, None, None),  # the child did not answer: unknown
        ((), (), None, V6, True),
        ((), (), None, (), None),
    ],
)
def test_glue_mismatch(glue_a: tuple[str, ...], glue_aaaa: tuple[str, ...],
                       child_a: tuple[str, ...] | None, child_aaaa: tuple[str, ...] | None,
                       expected: bool | None) -> None:
    assert dnssec.glue_mismatch(glue_a, glue_aaaa, child_a, child_aaaa) is expected


def test_registry_verdict() -> None:
    rv = dnssec.registry_verdict
    assert rv(True, True, 100.0, None, None, 200.0) == (False, None)
    assert rv(None, True, 100.0, None, None, 200.0) == (None, None)
    assert rv(True, None, 100.0, None, None, 200.0) == (None, None)
    # First seen at 200 with a registry read from 100: not confirmed, previous value kept.
    assert rv(True, False, 100.0, None, None, 200.0) == (None, 200.0)
    assert rv(True, False, 100.0, False, None, 200.0) == (False, 200.0)
    # A read at or after the first sight confirms it.
    assert rv(True, False, 250.0, None, 200.0, 300.0) == (True, 200.0)
    # Agreement again clears it.
    assert rv(False, False, 250.0, True, 200.0, 300.0) == (False, None)


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("verisign-thin_google.com.json", True),
        ("nomulus-google-registry_redemption.lol.json", False),
        ("afnic_lemonde.fr.json", None),
    ],
)
def test_rdap_delegation_signed(fixture: str, expected: bool | None) -> None:
    payload = json.loads((FIXTURES / fixture).read_text())
    if expected is None:
        assert "secureDNS" not in payload or "delegationSigned" not in payload["secureDNS"]
    assert parse_domain(payload).dnssec_signed is expected


@pytest.mark.parametrize("value", ["true", 1, None, [True], {"x": True}])
def test_rdap_delegation_signed_of_the_wrong_type_is_unknown(value: object) -> None:
    body = {"objectClassName": "domain", "ldhName": "x.test",
            "secureDNS": {"delegationSigned": value}}
    assert parse_domain(body).dnssec_signed is None
    assert parse_domain({**body, "secureDNS": value}).dnssec_signed is None


# -- what lands in the store -------------------------------------------------------------------


def _probe(**kw: Any) -> dnssecprobe.DnssecProbe:
    base: dict[str, Any] = {"parent_zone": "sec", "delegated": True}
    return dnssecprobe.DnssecProbe(**{**base, **kw})


def test_merge_keeps_what_a_failed_check_could_not_measure() -> None:
    prev = DnssecResult(signed=True, ds_mismatch=False, signature_expiry=5.0, serial_drift=0,
                        glue_mismatch={"ns1.x.sec": False})
    # The children did not answer this time; the parent still publishes DS.
    now = _merge(prev, _probe(signed=True, error="unreachable"), 10.0)
    assert (now.signed, now.ds_mismatch, now.signature_expiry, now.serial_drift) == (
        True, False, 5.0, 0)
    assert now.glue_mismatch == {"ns1.x.sec": False}
    # ... but the DS is gone: nothing left to judge, whatever the children said before.
    gone = _merge(prev, _probe(signed=False, error="unreachable"), 10.0)
    assert (gone.signed, gone.ds_mismatch, gone.signature_expiry) == (False, None, None)
    # A successful check is taken as it is: absent means absent.
    fresh = _merge(prev, _probe(signed=True, ds_mismatch=True), 10.0)
    assert (fresh.ds_mismatch, fresh.signature_expiry, fresh.glue_mismatch) == (True, None, {})
    # Not delegated: every series goes.
    assert _merge(prev, _probe(delegated=False), 10.0) == DnssecResult(
        parent_zone="sec", measured_at=10.0)


def test_registry_disagreement_needs_a_later_rdap_read() -> None:
    reg = Registration(name="x.sec", dnssec_signed=False)
    status = DomainStatus(
        name="x.sec",
        rdap=RdapResult(registered=True, server=None, registration=reg, read_at=100.0),
        dnssec=DnssecResult(signed=True),
    )
    first = with_registry_verdict(status, 200.0)
    assert first.dnssec is not None
    assert (first.dnssec.registry_disagrees, first.dnssec.registry_disagree_since) == (None, 200.0)
    assert first.rdap is not None
    reread = replace(
        first, rdap=RdapResult(registered=True, server=None, registration=reg, read_at=201.0)
    )
    confirmed = with_registry_verdict(reread, 202.0)
    assert confirmed.dnssec is not None and confirmed.dnssec.registry_disagrees is True


# -- the probe against Knot --------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sw.SignedWorld]:
    with sw.SignedWorld(tmp_path_factory.mktemp("signedworld")) as w:
        yield w


def probe(domain: str, settings: DnsSettings) -> dnssecprobe.DnssecProbe:
    return asyncio.run(dnssecprobe.check_dnssec(domain, settings))


def served_expiry(domain: str) -> int:
    """The earliest RRSIG expiration over the apex SOA, NS, DNSKEY, asked directly."""
    times = []
    for address in sw.PROV:
        for rdtype in ("SOA", "NS", "DNSKEY"):
            for rrset in sw.query(domain, rdtype, address).answer:
                if rrset.rdtype == dns.rdatatype.RRSIG:
                    times += [int(sig.expiration) for sig in rrset]
    return min(times)


def test_signed_domain_with_a_good_ds(world: sw.SignedWorld) -> None:
    p = probe("good.sec", world.settings(TIMEOUT))
    assert (p.error, p.parent_zone, p.delegated, p.signed, p.ds_mismatch) == (
        None, "sec", True, True, False)
    assert p.ds == (world.ds["good.sec"],)
    assert p.signature_expiry == served_expiry("good.sec")
    assert 13 * DAY < p.signature_expiry - time.time() < 15 * DAY  # Knot's default 14 days
    # Both in-domain servers: the glue is what the child says.
    assert p.glue_mismatch == {"ns1.good.sec": False, "ns2.good.sec": False}
    assert p.serial_drift == 0
    assert {(v.nameserver, v.address) for v in p.servers} == {
        ("ns1.good.sec", "127.95.1.1"), ("ns2.good.sec", "127.95.1.2")}
    # The cost the module doc states: the walk (root, then the parent's NS referral), the DS,
    # SOA/NS/DNSKEY per address, A and AAAA per in-domain name.
    assert p.queries == 1 + 2 + 2 * 3 + 2 * 2


@pytest.mark.parametrize("domain", ["wrongds.sec", "zskds.sec"])
def test_ds_that_matches_no_signing_key(world: sw.SignedWorld, domain: str) -> None:
    p = probe(domain, world.settings(TIMEOUT))
    assert (p.error, p.signed, p.ds_mismatch) == (None, True, True)
    assert set(p.mismatched) == {"ns1.prov.sec (127.95.1.1)", "ns2.prov.sec (127.95.1.2)"}
    assert p.glue_mismatch == {}  # out-of-domain servers: no glue verdict, and not asked
    assert p.queries == 1 + 2 + 2 * 3
    # The keys are fine otherwise: the same DNSKEY RRset with its own KSK's DS is good.
    keys, sigs = sw.dnskeys(domain), [
        sig for rrset in sw.query(domain, "DNSKEY", sw.PROV[0]).answer
        if rrset.rdtype == dns.rdatatype.RRSIG for sig in rrset]
    own = dns.dnssec.make_ds(domain + ".", sw.ksk(domain), "SHA256")
    assert dnssec.chain_verdict(dns.name.from_text(domain), [own], keys, sigs) is False


def test_signatures_near_expiry(world: sw.SignedWorld) -> None:
    now = time.time()
    soon = probe("soon.sec", world.settings(TIMEOUT))
    very = probe("verysoon.sec", world.settings(TIMEOUT))
    assert (soon.signed, soon.ds_mismatch, very.signed, very.ds_mismatch) == (
        True, False, True, False)
    assert soon.signature_expiry is not None and very.signature_expiry is not None
    assert 1 * DAY < soon.signature_expiry - now < 3 * DAY
    assert 0 < very.signature_expiry - now < 1 * DAY
    assert very.signature_expiry == served_expiry("verysoon.sec")


def test_unsigned_domain(world: sw.SignedWorld) -> None:
    p = probe("unsigned.sec", world.settings(TIMEOUT))
    assert (p.error, p.signed, p.ds_mismatch, p.signature_expiry, p.ds) == (
        None, False, None, None, ())


def test_glue_differs_from_the_childs_own_address(world: sw.SignedWorld) -> None:
    p = probe("glue.sec", world.settings(TIMEOUT))
    assert p.error is None
    assert p.glue_mismatch == {"ns1.glue.sec": False, "ns2.glue.sec": True}
    child = sw.query("ns2.glue.sec", "A", sw.PROV[0], dnssec=False)
    assert child.flags & dns.flags.AA and sw.GLUE_WRONG in child.answer[0].to_text()


def test_soa_serial_drift_between_child_servers(world: sw.SignedWorld) -> None:
    p = probe("drift.sec", world.settings(TIMEOUT))
    assert p.error is None
    assert p.serial_drift == sw.DRIFT
    assert {v.address: v.serial for v in p.servers} == {
        "127.95.1.1": sw.BASE_SERIAL, "127.95.1.3": sw.BASE_SERIAL + sw.DRIFT}


def test_not_delegated_is_no_verdict(world: sw.SignedWorld) -> None:
    p = probe("gone.sec", world.settings(TIMEOUT))
    assert (p.error, p.delegated, p.signed, p.servers) == (None, False, None, ())


def test_dead_child_is_unreachable_within_the_deadline(world: sw.SignedWorld) -> None:
    settings = world.settings(0.3)
    started = time.monotonic()
    p = probe("dead.sec", settings)
    took = time.monotonic() - started
    # The parent's answer is a fact even when no child answers.
    assert (p.error, p.delegated, p.signed, p.serial_drift) == ("unreachable", True, False, None)
    assert took < dnssecprobe.check_deadline(settings) + 0.5, took


def test_query_budget_stops_the_check(world: sw.SignedWorld,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dnssecprobe, "QUERY_BUDGET", 4)
    p = probe("good.sec", world.settings(TIMEOUT))
    assert p.error == "query_budget"
    assert p.queries <= 4
    assert p.parent_zone == "sec"  # what was measured before the stop is kept


def test_shared_zone_cache_skips_the_root(world: sw.SignedWorld) -> None:
    from exporter.zonecache import ZoneCache

    cache = ZoneCache()
    kinds: list[str] = []

    async def two() -> None:
        for domain in ("good.sec", "unsigned.sec"):
            kinds.clear()
            await dnssecprobe.check_dnssec(domain, world.settings(TIMEOUT), cache=cache,
                                           on_query_kind=lambda _o, k: kinds.append(k))

    asyncio.run(two())
    assert "root" not in kinds and kinds.count("tld") == 2, kinds  # NS referral + DS


# -- only authoritative answers are facts ------------------------------------------------------

FAKE_ROOT, FAKE_TLD = "127.95.5.1", "127.95.5.2"


def _fake_root(q: dns.message.Message, transport: str) -> dns.message.Message:
    r = dns.message.make_response(q)
    r.flags &= ~dns.flags.AA
    r.authority.append(dns.rrset.from_text("sec.", 60, "IN", "NS", "ns.sec."))
    r.additional.append(dns.rrset.from_text("ns.sec.", 60, "IN", "A", FAKE_TLD))
    return r


def _fake_tld(q: dns.message.Message, transport: str) -> dns.message.Message:
    """Refers unsigned.sec properly, but answers its DS question without AA (a middlebox that
    strips DNSSEC data, say)."""
    r = dns.message.make_response(q)
    r.flags &= ~dns.flags.AA
    if q.question[0].rdtype == dns.rdatatype.NS:
        r.authority.append(dns.rrset.from_text("unsigned.sec.", 60, "IN", "NS", "ns1.prov.sec."))
        r.additional.append(dns.rrset.from_text("ns1.prov.sec.", 60, "IN", "A", sw.PROV[0]))
    return r


def test_non_authoritative_answers_are_no_facts(world: sw.SignedWorld) -> None:
    with HostileDns({FAKE_ROOT: _fake_root, FAKE_TLD: _fake_tld, "127.95.5.3": intercept()}):
        # A DS "NODATA" without AA: signed stays unknown, the check says why; the children's
        # answers (authoritative) still count.
        p = probe("unsigned.sec", DnsSettings(root_servers=(FAKE_ROOT,), timeout=TIMEOUT))
        assert (p.error, p.delegated, p.signed, p.ds_mismatch) == (
            "not_authoritative", True, None, None)
        assert p.serial_drift == 0
        # An intercepting network (NXDOMAIN without AA to everything): nothing is known.
        q = probe("good.sec", DnsSettings(root_servers=("127.95.5.3",), timeout=TIMEOUT))
        assert (q.error, q.delegated, q.signed, q.parent_zone) == (
            "not_authoritative", None, None, None)


# -- through the running exporter --------------------------------------------------------------


def _rdap_body(name: str, signed: bool | None) -> dict[str, Any]:
    body = make_domain(name, datetime.now(UTC) + timedelta(days=300), ["active"],
                       ["ns1.prov.sec"], "Example Registrar", "9999")
    if signed is None:
        body.pop("secureDNS", None)
    else:
        body["secureDNS"] = {"delegationSigned": signed}
    return body


def test_exporter_exports_the_dnssec_verdicts(world: sw.SignedWorld, tmp_path: Path) -> None:
    ca = trustme.CA()
    registry_says = {"good.sec": False, "unsigned.sec": False, "wrongds.sec": True}
    with RdapServer(ca) as registry:
        for name in (*sw.DOMAINS, "gone.sec"):
            registry.set_domain(name, Reply(body=_rdap_body(name, registry_says.get(name))))
        config = {
            "rdap": {
                "bootstrap": str(write_bootstrap(tmp_path / "bootstrap.json", {"sec": registry})),
                "ca_file": str(write_ca(ca, tmp_path / "ca.pem")),
                "allow_private_addresses": True,
                "timeout": "2s",
                "requests_per_second": 50,
                "hold_interval": "1s",
            },
            # A DNS check every 2 s retries a registry re-read that the pacing (hold_interval,
            # shared with the nameserver verdict's re-reads) held back.
            "dns": {"root_servers": [sw.ROOT], "timeout": f"{TIMEOUT}s", "interval": "2s"},
            "domains": [*sw.DOMAINS, "gone.sec"],
        }
        path = tmp_path / "config.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        with ExporterProcess(path, tmp_path) as exporter:
            # Every check and every RDAP read lands in its own order: wait for the whole
            # picture, then assert it (with a readable message) on that scrape.
            s = exporter.wait_for(
                lambda s: _problem(s, exporter.log_tail(400)) is None,
                timeout=20,
                message=lambda s: _problem(s, exporter.log_tail(400)) or "",
            )
            log = exporter.log_tail(400)
    _assert_exported(s, log)


def _problem(s: Scrape, log: str) -> str | None:
    try:
        _assert_exported(s, log)
    except AssertionError as exc:
        return f"{exc}"
    return None


def _assert_exported(s: Scrape, log: str) -> None:
    def v(metric: str, domain: str, **labels: str) -> float | None:
        return s.value(metric, domain=domain, **labels)

    for domain in (*sw.DOMAINS, "gone.sec"):
        assert v("domain_check_success", domain, check="dnssec") == 1, s.for_domain(domain)
    signed = {d: v("domain_dnssec_signed", d) for d in (*sw.DOMAINS, "gone.sec")}
    assert signed == {**dict.fromkeys(sw.SIGNED, 1.0), "unsigned.sec": 0.0, "glue.sec": 0.0,
                      "drift.sec": 0.0, "gone.sec": None}
    mismatch = {d: v("domain_dnssec_ds_mismatch", d) for d in sw.DOMAINS}
    assert mismatch == {"good.sec": 0.0, "wrongds.sec": 1.0, "zskds.sec": 1.0, "soon.sec": 0.0,
                        "verysoon.sec": 0.0, "unsigned.sec": None, "glue.sec": None,
                        "drift.sec": None}
    now = s.taken
    expiry = {d: v("domain_dnssec_signature_expiry_timestamp_seconds", d) for d in sw.DOMAINS}
    assert expiry["unsigned.sec"] is None and expiry["drift.sec"] is None
    assert expiry["good.sec"] is not None and expiry["good.sec"] - now > 13 * DAY
    assert expiry["soon.sec"] is not None and DAY < expiry["soon.sec"] - now < 3 * DAY
    assert expiry["verysoon.sec"] is not None and 0 < expiry["verysoon.sec"] - now < DAY
    assert s.series("domain_nameserver_glue_mismatch", domain="glue.sec") == [
        ({"domain": "glue.sec", "nameserver": "ns1.glue.sec"}, 0.0),
        ({"domain": "glue.sec", "nameserver": "ns2.glue.sec"}, 1.0),
    ]
    assert {lbl["nameserver"]: val for lbl, val in
            s.series("domain_nameserver_glue_mismatch", domain="good.sec")} == {
        "ns1.good.sec": 0.0, "ns2.good.sec": 0.0}
    assert s.series("domain_nameserver_glue_mismatch", domain="wrongds.sec") == []
    assert v("domain_soa_serial_drift", "drift.sec") == sw.DRIFT
    assert v("domain_soa_serial_drift", "good.sec") == 0
    assert v("domain_soa_serial_drift", "gone.sec") is None
    # The registry says "not signed" for good.sec while the parent publishes DS: flagged once
    # an RDAP read after the first sight confirms it; agreement is 0, no statement is absent.
    assert v("domain_dnssec_registry_disagrees", "good.sec") == 1
    assert v("domain_dnssec_registry_disagrees", "unsigned.sec") == 0
    assert v("domain_dnssec_registry_disagrees", "wrongds.sec") == 0
    assert v("domain_dnssec_registry_disagrees", "soon.sec") is None
    assert re.search(r"DNSSEC DS mismatch: domain=wrongds\.sec servers=\S*ns1\.prov\.sec", log)
    assert "glue mismatch: domain=glue.sec nameserver=ns2.glue.sec" in log
    assert re.search(r"SOA serial drift: domain=drift\.sec drift=4 ", log)
    assert "detection path: domain=good.sec trigger=dnssec_registry_disagrees -> rdap" in log \
        or "DNSSEC registry disagreement: domain=good.sec" in log
    # Messages to the servers are counted like every other DNS check's.
    assert (s.value("domainwatch_dns_queries_total", outcome="success", server_kind="child")
            or 0) > 0
