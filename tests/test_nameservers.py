"""exporter.nameservers against the real DNS world (Knot + unbound on 127.53.0.0/16).

Every delegation test runs twice: walking referrals from the test root ("root" mode) and
starting from the zone cut the unbound resolver reports ("resolver" mode; the configured root
is then a dead address, so a walk from the root would fail the test).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections import Counter
from collections.abc import Iterator

import dns.message
import dns.query
import dns.rcode
import pytest

from exporter.config import DnsSettings
from exporter.nameservers import Delegation, check_delegation, nameserver_mismatch
from tests.support.dnsworld import (
    BIG_EXTRA_NS,
    GOOD_NS,
    PARKING_NS,
    PROVIDER_NS,
    DnsWorld,
    dns_world,  # noqa: F401
)

TIMEOUT = 0.5
DEAD = "127.53.9.9"  # nothing listens here


@pytest.fixture(params=["root", "resolver"])
def settings(request: pytest.FixtureRequest, dns_world: DnsWorld) -> DnsSettings:  # noqa: F811
    if request.param == "root":
        return DnsSettings(root_servers=(dns_world.root_server,), timeout=TIMEOUT)
    return DnsSettings(resolvers=(dns_world.resolver,), root_servers=(DEAD,), timeout=TIMEOUT)


def run(
    domain: str, settings: DnsSettings, extra: tuple[str, ...] = ()
) -> tuple[Delegation, Counter[str]]:
    outcomes: Counter[str] = Counter()
    result = asyncio.run(
        check_delegation(
            domain, settings, extra_names=extra, on_query=lambda o: outcomes.update([o])
        )
    )
    assert result.queries == sum(outcomes.values()), "every message is reported to on_query"
    return result, outcomes


# -- nameserver_mismatch (pure) -------------------------------------------------------------


def test_mismatch_unknown_parent_is_no_verdict() -> None:
    assert nameserver_mismatch(None, ["a.test"], ["b.test"]) is None


def test_mismatch_same_set_in_another_spelling_is_equal() -> None:
    parent = ["ns1.good.test", "ns2.good.test"]
    assert nameserver_mismatch(parent, ["NS2.Good.TEST.", "ns1.good.test."], None) is False
    assert nameserver_mismatch(parent, None, ["ns2.good.test", "NS1.GOOD.TEST"]) is False


def test_mismatch_idn_u_label_equals_a_label() -> None:
    assert nameserver_mismatch(["ns.xn--bcher-kva.test"], ["ns.bücher.test"], None) is False


@pytest.mark.parametrize(
    ("expected", "registry", "verdict"),
    [
        (["ns1.good.test", "ns2.good.test"], None, False),
        (["ns1.good.test"], None, True),  # a subset is not the same set
        ([], None, None),  # empty expectation = none configured, and no registry set either
        (None, None, None),  # nothing to compare with: no verdict, never "all clear"
        (None, ["ns1.good.test", "ns2.good.test"], False),
        (None, ["ns1.parking.zz", "ns2.parking.zz"], True),
        ([], ["ns1.parking.zz", "ns2.parking.zz"], True),  # empty expected falls back
        (None, [], True),  # the registry said "no nameservers": that is a set
        # The expected set, when configured, is the only reference: a registry that lags
        # behind a planned change does not page.
        (["ns1.good.test", "ns2.good.test"], ["ns1.parking.zz"], False),
        (["ns1.parking.zz"], ["ns1.good.test", "ns2.good.test"], True),
    ],
)
def test_mismatch_table(
    expected: list[str] | None, registry: list[str] | None, verdict: bool | None
) -> None:
    assert nameserver_mismatch(["ns1.good.test", "ns2.good.test"], expected, registry) is verdict


def test_mismatch_ignores_the_child_set() -> None:
    """The old four-argument form still works; the child argument no longer decides anything."""
    parent = ["ns1.good.test", "ns2.good.test"]
    assert nameserver_mismatch(parent, None, parent, ["ns3.good.test"]) is False
    assert nameserver_mismatch(parent, None, None, ["ns3.good.test"]) is None


def test_mismatch_not_delegated_is_no_verdict() -> None:
    """A held or deleted domain (empty parent set) is DomainNotDelegated, not a second page."""
    assert nameserver_mismatch((), ["ns1.good.test"], None) is None
    assert nameserver_mismatch((), None, ["ns1.good.test"]) is None
    assert nameserver_mismatch((), None, None) is None


def test_delegation_helpers() -> None:
    d = Delegation(
        "test", ("a.test", "b.test"), True, ("a.test", "b.test", "c.test"),
        child_sets={"a.test": ("a.test", "b.test"), "b.test": ("a.test", "b.test", "c.test")},
        lame={"a.test": None, "b.test": None, "x.test": "refused"},
    )
    assert d.child_sets_differ is True
    assert d.lame_servers == ("x.test",)
    assert d.inconsistent is True  # the child union has c.test
    assert d.mismatch(None, ["a.test", "b.test"]) is False  # ...which is no mismatch
    assert d.mismatch(None, None) is None
    same = Delegation("test", ("a.test",), True, ("A.test.",))
    assert same.inconsistent is False
    # unreachable: the parent set is still measured, so the comparison still stands.
    failed = Delegation("test", ("a.test",), True, None, error="unreachable")
    assert failed.mismatch(["z.test"], None) is True
    assert failed.inconsistent is None  # no child answered
    gone = Delegation("test", (), False, None)
    assert gone.mismatch(["a.test"], ["a.test"]) is None
    assert gone.inconsistent is None
    unmeasured = Delegation(None, None, None, None, error="not_authoritative")
    assert unmeasured.mismatch(["a.test"], None) is None


# -- against the real world ------------------------------------------------------------------


def test_consistent_domain(settings: DnsSettings) -> None:
    d, outcomes = run("good.test", settings)
    assert d.error is None
    assert d.delegated is True
    assert d.parent_zone == "test"
    assert d.parent == GOOD_NS
    assert d.child == GOOD_NS
    assert d.child_sets == {"ns1.good.test": GOOD_NS, "ns2.good.test": GOOD_NS}
    assert d.lame == {"ns1.good.test": None, "ns2.good.test": None}
    assert d.mismatch(GOOD_NS, GOOD_NS) is False
    assert d.inconsistent is False
    assert d.skipped == {} and d.disagreeing == () and d.unroutable == ()
    assert set(outcomes) == {"success"}
    # root: root + test + AAAA of both glue names (the glue has only A; the child zone answers
    # NODATA) + two child servers; resolver: + SOA and NS of the parent zone (the parent's
    # address comes along in unbound's additional section or costs one more query).
    assert d.queries <= (6 if settings.root_servers and not settings.resolvers else 8)


def test_input_spelling_does_not_matter(settings: DnsSettings) -> None:
    d, _ = run("GOOD.Test.", settings)
    assert d.parent == GOOD_NS
    assert d.mismatch(["NS2.GOOD.TEST.", "Ns1.good.test"], ["ns1.good.test.", "ns2.good.test"]) is (
        False
    )


def test_parked_domain_is_a_mismatch_with_both_sets_visible(settings: DnsSettings) -> None:
    d, _ = run("parked.test", settings)
    assert d.error is None
    assert d.parent == PARKING_NS  # what the TLD publishes now
    assert d.child == PARKING_NS  # the parking servers agree with themselves...
    assert d.inconsistent is False
    assert d.mismatch(GOOD_NS, None) is True  # ...but not with what we expect
    assert d.mismatch(None, GOOD_NS) is True  # nor with the registry's set
    assert d.mismatch(PARKING_NS, PARKING_NS) is False


def test_lame_server_refuses(settings: DnsSettings) -> None:
    d, outcomes = run("lame.test", settings)
    assert d.error is None
    assert d.parent == ("ns1.provider.test", "ns3.provider.test")
    assert d.lame == {"ns1.provider.test": None, "ns3.provider.test": "refused"}
    assert d.lame_servers == ("ns3.provider.test",)
    assert d.child_sets == {"ns1.provider.test": ("ns1.provider.test", "ns3.provider.test")}
    assert outcomes["refused"] == 1


def test_dead_servers_fail_the_check_but_keep_the_parent(
    settings: DnsSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.nameservers")
    d, outcomes = run("dead.test", settings)
    assert d.error == "unreachable"
    assert d.delegated is True
    assert d.parent == ("ns-dead1.provider.test", "ns-dead2.provider.test")
    assert d.child is None
    assert d.lame == {"ns-dead1.provider.test": "timeout", "ns-dead2.provider.test": "timeout"}
    # The parent set is a fact even though no child answered (issue 7 case 5).
    assert d.mismatch(("ns-dead1.provider.test", "ns-dead2.provider.test"), None) is False
    assert d.mismatch(GOOD_NS, None) is True
    assert d.inconsistent is None
    assert outcomes["timeout"] == 2  # one UDP timeout per server (TCP is then refused)
    failing = [r.getMessage() for r in caplog.records if "127.53.9." in r.getMessage()]
    assert any("dead.test" in m and "127.53.9.1" in m for m in failing)
    assert any("dead.test" in m and "127.53.9.2" in m for m in failing)


def test_parent_and_child_disagree(settings: DnsSettings) -> None:
    d, _ = run("childdiff.test", settings)
    assert d.error is None
    assert d.parent == PROVIDER_NS
    assert d.child == (*PROVIDER_NS, "ns3.provider.test")
    # The zone lists one server more than the parent: a warning (inconsistent), not the
    # hijack page (mismatch), which compares the parent with the expected/registry set only.
    assert d.inconsistent is True
    assert d.mismatch(PROVIDER_NS, PROVIDER_NS) is False
    assert d.mismatch(None, PROVIDER_NS) is False
    assert d.child_sets_differ is False


def test_two_label_public_suffix(settings: DnsSettings) -> None:
    d, _ = run("shop.co.test", settings)
    assert d.error is None
    assert d.parent_zone == "co.test"
    assert d.parent == PROVIDER_NS
    assert d.mismatch(PROVIDER_NS, PROVIDER_NS) is False


def test_second_tld(settings: DnsSettings) -> None:
    d, _ = run("good.zz", settings)
    assert (d.parent_zone, d.parent, d.child, d.error) == ("zz", PROVIDER_NS, PROVIDER_NS, None)


def test_nxdomain_at_the_parent_is_a_measured_fact(settings: DnsSettings) -> None:
    d, outcomes = run("nxdomain.test", settings)
    assert d.error is None
    assert d.delegated is False
    assert d.parent == ()
    assert d.parent_zone == "test"
    assert d.child is None
    assert outcomes["nxdomain"] == 1


def test_truncated_answer_is_retried_over_tcp(settings: DnsSettings) -> None:
    d, _ = run("big.test", settings)
    assert d.error is None
    assert d.parent == PROVIDER_NS
    assert d.child == tuple(sorted((*PROVIDER_NS, *BIG_EXTRA_NS)))  # the full TCP answer
    assert d.inconsistent is True
    assert d.mismatch(None, PROVIDER_NS) is False


def test_ns_name_without_address(settings: DnsSettings) -> None:
    d, _ = run("orphan.test", settings)
    assert d.error is None
    assert d.lame == {"ns1.provider.test": None, "ns9.gone.test": "no_address"}


def test_extra_names_are_not_probed(settings: DnsSettings) -> None:
    """Only the servers the parent delegates to are asked: a stale registry name (here
    ns3.provider.test, which REFUSES good.test) is neither lame nor part of the child set."""
    plain, _ = run("good.test", settings)
    d, outcomes = run("good.test", settings, extra=("NS3.Provider.Test.",))
    assert d.parent == GOOD_NS
    assert set(d.lame) == set(GOOD_NS)
    assert d.child == GOOD_NS
    assert outcomes["refused"] == 0
    assert d.queries == plain.queries


def test_dead_root_server_is_no_verdict(dns_world: DnsWorld) -> None:  # noqa: F811
    d, outcomes = run("good.test", DnsSettings(root_servers=(DEAD,), timeout=TIMEOUT))
    assert d.error == "timeout"
    assert d.parent is None
    assert d.delegated is None
    assert d.child is None
    assert nameserver_mismatch(d.parent, GOOD_NS, GOOD_NS, None) is None
    assert outcomes["timeout"] >= 1


def test_dead_resolver_is_no_verdict(dns_world: DnsWorld) -> None:  # noqa: F811
    d, _ = run("good.test", DnsSettings(resolvers=(DEAD,), timeout=TIMEOUT))
    assert (d.error, d.parent, d.delegated) == ("timeout", None, None)


def test_next_root_server_after_a_dead_one(dns_world: DnsWorld) -> None:  # noqa: F811
    d, outcomes = run(
        "good.test",
        DnsSettings(root_servers=(DEAD, f"{dns_world.root_server}:53"), timeout=TIMEOUT),
    )
    assert d.error is None
    assert d.parent == GOOD_NS
    assert outcomes["timeout"] == 1


def test_next_resolver_after_a_dead_one(dns_world: DnsWorld) -> None:  # noqa: F811
    d, _ = run("good.test", DnsSettings(resolvers=(DEAD, dns_world.resolver), timeout=TIMEOUT))
    assert d.error is None
    assert d.parent == GOOD_NS


# -- FORMERR on EDNS: a small relay in front of the test root that rejects EDNS queries ------


@pytest.fixture
def edns_hostile_root(dns_world: DnsWorld) -> Iterator[tuple[str, list[bool]]]:  # noqa: F811
    """A UDP server on 127.53.0.99 that answers FORMERR to any EDNS query and relays
    plain ones to the test root (like old middleboxes and servers do)."""
    address = "127.53.0.99"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 53))
    sock.settimeout(0.1)
    seen: list[bool] = []  # per query: did it carry EDNS?
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            seen.append(query.edns >= 0)
            if query.edns >= 0:
                reply = dns.message.make_response(query)
                reply.use_edns(False)
                reply.set_rcode(dns.rcode.FORMERR)
            else:
                reply = dns.query.udp(query, dns_world.root_server, timeout=1.0)
            sock.sendto(reply.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield address, seen
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()


def test_formerr_retries_once_without_edns(edns_hostile_root: tuple[str, list[bool]]) -> None:
    address, seen = edns_hostile_root
    d, outcomes = run("good.test", DnsSettings(root_servers=(address,), timeout=TIMEOUT))
    assert d.error is None
    assert d.parent == GOOD_NS
    assert seen == [True, False]  # one EDNS try, one plain retry, nothing more
    assert outcomes["error"] == 1  # the FORMERR reply
