"""Issue 7 DNS verdicts on real servers of our own (127.84.0.0/16 and ::1, see hostile_dns.py).

- Only authoritative answers are facts: a network that answers NXDOMAIN without AA to every
  query (as the only root server, and as the resolver) fails the check `not_authoritative`;
  `delegated` stays unknown, never False.
- `delegated False` needs an authoritative NXDOMAIN/NODATA confirmed by a second parent server;
  parent servers that disagree are named, and a referral wins.
- IPv6: every NS address is asked; a dual-stack server whose IPv6 address fails is lame; an
  address this host has no route to is `no_route`, never lame (checked in a network namespace
  without an IPv6 route, where 2001:db8::53 is unreachable).

The lab (Knot unless noted)::

    root       127.84.0.1   .     lab. -> ns1.nic.lab (.0.2), ns2.nic.lab (.0.3)
                                  one. -> ns1.nic.one (.0.4), ns2.nic.one (127.84.9.1, dead)
                                  mix. -> ns1.nic.mix (127.84.5.2, Python, intercepting),
                                          ns2.nic.mix (.0.3)
    nic1       127.84.0.2   lab   an older copy: has fresh.lab, lacks split.lab
    nic2       127.84.0.3   lab   the current copy: has split.lab, lacks fresh.lab; and mix.
    nic-one    127.84.0.4   one
    prov       127.84.1.1/.2      the child zones (ok, split, fresh, dual*, far, *.mix)
    v6         ::1                v6only.lab, dual.lab (not dualrefused.lab: REFUSED there)
    intercept  127.84.5.1/.2      Python: NXDOMAIN without AA to everything
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from exporter.config import DnsSettings
from exporter.nameservers import Delegation, check_delegation
from tests.faults.hostile_dns import HostileDns, KnotLab, KnotServer, intercept, lab_lock

TIMEOUT = 0.4
ROOT = "127.84.0.1"
INTERCEPT = "127.84.5.1"
REPO = Path(__file__).resolve().parent.parent

_LAB_COMMON = """
@ NS ns1.nic.lab.
@ NS ns2.nic.lab.
ns1.nic A 127.84.0.2
ns2.nic A 127.84.0.3
ns1.prov A 127.84.1.1
ns2.prov A 127.84.1.2
ns-v6 AAAA ::1
ns-dual A 127.84.1.1
ns-dual AAAA ::1
ns-dualdead A 127.84.1.1
; an IPv6 address that never answers, without leaving loopback (IPv4-mapped 127.84.9.9)
ns-dualdead AAAA ::ffff:127.84.9.9
ns-far A 127.84.1.1
ns-far AAAA 2001:db8::53
ns-v6far AAAA 2001:db8::53
host A 127.84.1.80
ok NS ns1.prov
ok NS ns2.prov
v6only NS ns-v6
dual NS ns-dual
dualrefused NS ns-dual
dualrefused NS ns1.prov
dualdead NS ns-dualdead
dualdead NS ns1.prov
far NS ns-far
v6far NS ns-v6far
"""


def _apex(*names: str) -> str:
    return "".join(f"@ NS {n}.\n" for n in names)


PROV = ("ns1.prov.lab", "ns2.prov.lab")
SERVERS = (
    KnotServer(
        "root",
        ("127.84.0.1",),
        {
            ".": """
@ NS a.root.lab.
a.root.lab. A 127.84.0.1
lab. NS ns1.nic.lab.
lab. NS ns2.nic.lab.
ns1.nic.lab. A 127.84.0.2
ns2.nic.lab. A 127.84.0.3
one. NS ns1.nic.one.
one. NS ns2.nic.one.
ns1.nic.one. A 127.84.0.4
ns2.nic.one. A 127.84.9.1
mix. NS ns1.nic.mix.
mix. NS ns2.nic.mix.
ns1.nic.mix. A 127.84.5.2
ns2.nic.mix. A 127.84.0.3
"""
        },
    ),
    KnotServer("nic1", ("127.84.0.2",), {"lab": _LAB_COMMON + "fresh NS ns1.prov\n"}),
    KnotServer(
        "nic2",
        ("127.84.0.3",),
        {
            "lab": _LAB_COMMON + "split NS ns1.prov\n",
            "mix": _apex("ns1.nic.mix", "ns2.nic.mix")
            + "ns1.nic A 127.84.5.2\nns2.nic A 127.84.0.3\nok NS ns1.prov.lab.\n",
        },
    ),
    KnotServer(
        "nic-one",
        ("127.84.0.4",),
        {
            "one": _apex("ns1.nic.one", "ns2.nic.one")
            + "ns1.nic A 127.84.0.4\nns2.nic A 127.84.9.1\nok NS ns1.prov.lab.\n"
        },
    ),
    KnotServer(
        "prov",
        ("127.84.1.1", "127.84.1.2"),
        {
            "ok.lab": _apex(*PROV),
            "split.lab": _apex("ns1.prov.lab"),
            "fresh.lab": _apex("ns1.prov.lab"),
            "dual.lab": _apex("ns-dual.lab"),
            "dualrefused.lab": _apex("ns-dual.lab", "ns1.prov.lab"),
            "dualdead.lab": _apex("ns-dualdead.lab", "ns1.prov.lab"),
            "far.lab": _apex("ns-far.lab"),
            "ok.mix": _apex("ns1.prov.lab"),
            "ok.one": _apex("ns1.prov.lab"),
        },
    ),
    KnotServer(
        "v6",
        ("::1",),
        {"v6only.lab": _apex("ns-v6.lab"), "dual.lab": _apex("ns-dual.lab")},
    ),
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileDns]:
    with (
        lab_lock("lab"),
        KnotLab(tmp_path_factory.mktemp("knotlab"), SERVERS),
        HostileDns({INTERCEPT: intercept(), "127.84.5.2": intercept()}) as fake,
    ):
        yield fake


def run(domain: str, settings: DnsSettings) -> tuple[Delegation, Counter[str]]:
    outcomes: Counter[str] = Counter()
    d = asyncio.run(check_delegation(domain, settings, on_query=lambda o: outcomes.update([o])))
    assert d.queries == sum(outcomes.values())
    return d, outcomes


def rooted(*roots: str) -> DnsSettings:
    return DnsSettings(root_servers=roots or (ROOT,), timeout=TIMEOUT)


# -- an intercepting network (issue 7 case 2) --------------------------------------------------


@pytest.mark.parametrize("mode", ["root", "resolver"])
def test_intercepting_network_is_no_verdict(lab: HostileDns, mode: str) -> None:
    settings = (
        rooted(INTERCEPT)
        if mode == "root"
        else DnsSettings(resolvers=(INTERCEPT,), root_servers=(INTERCEPT,), timeout=TIMEOUT)
    )
    before = lab.count(INTERCEPT)
    for domain in ("ok.lab", "gone.lab"):
        d, _ = run(domain, settings)
        assert d.error == "not_authoritative", d
        assert d.delegated is None  # never False
        assert (d.parent, d.parent_zone, d.child) == (None, None, None)
        assert d.mismatch(PROV, PROV) is None
        assert d.inconsistent is None
        assert d.lame == {}
    assert lab.count(INTERCEPT) > before  # the made-up answers were really received


def test_intercepting_root_then_a_real_one(lab: HostileDns) -> None:
    d, _ = run("ok.lab", rooted(INTERCEPT, ROOT))
    assert (d.error, d.delegated, d.parent) == (None, True, PROV)
    assert d.child == PROV
    gone, _ = run("gone.lab", rooted(INTERCEPT, ROOT))
    assert (gone.error, gone.delegated, gone.parent) == (None, False, ())


# -- parent-side evidence ----------------------------------------------------------------------


def test_confirmed_nxdomain_is_not_delegated(lab: HostileDns) -> None:
    d, outcomes = run("gone.lab", rooted())
    assert (d.error, d.delegated, d.parent, d.parent_zone) == (None, False, (), "lab")
    assert d.mismatch(PROV, PROV) is None  # DomainNotDelegated pages, not a mismatch too
    assert d.disagreeing == ()
    assert outcomes["nxdomain"] == 2  # nic1 said it, nic2 confirmed it


def test_authoritative_nodata_is_not_delegated(lab: HostileDns) -> None:
    d, _ = run("host.lab", rooted())  # a name in the parent zone, but no zone cut
    assert (d.error, d.delegated, d.parent) == (None, False, ())


def test_parent_servers_disagree_referral_wins(
    lab: HostileDns, caplog: pytest.LogCaptureFixture
) -> None:
    d, outcomes = run("split.lab", rooted())
    # nic1 (asked first) has an older zone without split.lab; nic2 delegates it.
    assert (d.error, d.delegated, d.parent) == (None, True, ("ns1.prov.lab",))
    assert d.disagreeing == ("ns1.nic.lab (127.84.0.2)",)
    assert d.child == ("ns1.prov.lab",)
    assert outcomes["nxdomain"] == 1
    assert any(
        "parent servers disagree" in r.getMessage() and "split.lab" in r.getMessage()
        for r in caplog.records
    )


def test_a_referral_from_the_first_parent_server_is_enough(lab: HostileDns) -> None:
    d, _ = run("fresh.lab", rooted())  # only nic1 has it; nic2 is not asked
    assert (d.error, d.delegated, d.parent, d.disagreeing) == (None, True, ("ns1.prov.lab",), ())


def test_unconfirmed_nxdomain_fails_the_check(lab: HostileDns) -> None:
    # ns1.nic.one says NXDOMAIN (AA); ns2.nic.one is dead, so nobody confirms it.
    d, outcomes = run("gone.one", rooted())
    assert d.error == "timeout", d
    assert (d.delegated, d.parent) == (None, None)
    assert outcomes["nxdomain"] == 1 and outcomes["timeout"] == 1
    ok, _ = run("ok.one", rooted())
    assert (ok.error, ok.delegated) == (None, True)


def test_non_authoritative_parent_server_is_skipped_not_believed(lab: HostileDns) -> None:
    # mix. has an intercepting server (asked first) and a real one.
    d, _ = run("ok.mix", rooted())
    assert (d.error, d.delegated, d.parent) == (None, True, ("ns1.prov.lab",))
    assert d.disagreeing == ()  # a made-up answer is no authoritative opinion
    # The real server's NXDOMAIN cannot be confirmed by a made-up one.
    gone, _ = run("gone.mix", rooted())
    assert (gone.error, gone.delegated, gone.parent) == ("not_authoritative", None, None)


# -- IPv6 (issue 7 case 10) --------------------------------------------------------------------


def test_ipv6_only_nameserver(lab: HostileDns) -> None:
    d, _ = run("v6only.lab", rooted())
    assert d.error is None, d
    assert d.lame == {"ns-v6.lab": None}
    assert d.child == ("ns-v6.lab",)
    assert d.skipped == {} and d.unroutable == ()


def test_dual_stack_nameserver_both_addresses_asked(lab: HostileDns) -> None:
    d, outcomes = run("dual.lab", rooted())
    assert (d.error, d.lame, d.child) == (None, {"ns-dual.lab": None}, ("ns-dual.lab",))
    # Knot on ::1 serves dual.lab too; the REFUSED case below proves the IPv6 address is asked.
    bad, outcomes = run("dualrefused.lab", rooted())
    assert bad.lame == {"ns-dual.lab": "refused", "ns1.prov.lab": None}
    assert outcomes["refused"] == 1
    assert bad.error is None


def test_dual_stack_nameserver_with_dead_ipv6_address_is_lame(lab: HostileDns) -> None:
    start = time.monotonic()
    d, _ = run("dualdead.lab", rooted())
    assert d.lame == {"ns-dualdead.lab": "timeout", "ns1.prov.lab": None}
    assert d.error is None
    assert d.inconsistent is False
    assert time.monotonic() - start < 4 * TIMEOUT + 1.0


# -- no route for a family: in a network namespace without IPv6 (or any global) routes ---------


def _loopback_up() -> None:
    """`ip link set lo up` without needing iproute2: SIOCGIFFLAGS / SIOCSIFFLAGS."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def _netns_main(workdir: str) -> None:
    """Runs inside `unshare -n`: loopback only, so 2001:db8::53 has no route."""
    _loopback_up()
    out: dict[str, Any] = {}
    with KnotLab(Path(workdir), SERVERS):
        for domain in ("far.lab", "v6far.lab", "v6only.lab"):
            d = asyncio.run(check_delegation(domain, rooted()))
            out[domain] = asdict(d)
    print(json.dumps(out))


@pytest.fixture(scope="module")
def netns_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("netns-lab")
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "tests.test_dns_verdicts", str(workdir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert proc.returncode == 0, f"netns run failed (needs root for unshare -n):\n{proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_unroutable_ipv6_address_is_not_lame(netns_results: dict[str, Any]) -> None:
    d = netns_results["far.lab"]
    assert d["error"] is None, d
    assert d["lame"] == {"ns-far.lab": None}  # its IPv4 address answered; IPv6 not asked
    assert d["unroutable"] == ["ns-far.lab 2001:db8::53"]
    assert d["skipped"] == {}


def test_ipv6_only_nameserver_on_an_ipv4_only_host(netns_results: dict[str, Any]) -> None:
    d = netns_results["v6far.lab"]
    assert d["error"] == "no_route", d
    assert d["lame"] == {}  # never "lame" because of where we stand
    assert d["skipped"] == {"ns-v6far.lab": "no_route"}
    assert (d["delegated"], d["parent"]) == (True, ["ns-v6far.lab"])
    # root, lab (its referral carries the AAAA as glue), A of ns-v6far.lab (NODATA); the
    # unroutable address itself costs no message.
    assert d["queries"] == 3
    assert netns_results["v6only.lab"]["lame"] == {"ns-v6.lab": None}  # ::1 is routable


if __name__ == "__main__":
    _netns_main(sys.argv[1])
