"""Every row of the truth tables in verdicts.py (and the README), plus the scheduler's clock.

The scheduler test runs the real Scheduler against the real HTTPS RDAP test server while the
wall clock it is given steps back a day: checks must keep running on the monotonic clock.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from prometheus_client import CollectorRegistry

from exporter.config import Config, DnsSettings, DomainConfig, EmailSettings, RdapSettings
from exporter.rdap import RdapClient
from exporter.scheduler import Scheduler
from exporter.selfmetrics import ExporterMetrics
from exporter.store import CheckState, StatusStore
from exporter.verdicts import (
    nameserver_inconsistent,
    nameserver_verdict,
    registration_confirmed_gone,
)
from tests.support.rdapserver import RdapServer, Reply, make_domain

BOOTSTRAP = Path(__file__).resolve().parents[1] / "exporter" / "data" / "iana-dns-bootstrap.json"
A = ("ns1.a.example", "ns2.a.example")
B = ("ns1.b.example", "ns2.b.example")


def verdict(**kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "parent": A,
        "delegated": True,
        "expected": (),
        "registry": A,
        "registry_read_at": 100.0,
        "previous": None,
        "disagree_since": None,
        "now": 200.0,
    }
    args.update(kw)
    return nameserver_verdict(**args)  # type: ignore[arg-type]


# --- domain_nameserver_mismatch ----------------------------------------------------------------


def test_mismatch_absent_when_parent_not_measured() -> None:
    assert verdict(parent=None).mismatch is None


@pytest.mark.parametrize("delegated", [False, None])
def test_mismatch_absent_when_not_delegated(delegated: bool | None) -> None:
    # A held or deleted domain with an expected set is DomainOnHold's page, not a hijack.
    assert verdict(parent=(), delegated=delegated, expected=B).mismatch is None


def test_mismatch_expected_set_wins_over_registry() -> None:
    assert verdict(expected=B, registry=A).mismatch is True
    assert verdict(expected=tuple(n.upper() + "." for n in A), registry=B).mismatch is False


def test_mismatch_absent_without_expected_or_registry() -> None:
    assert verdict(registry=None).mismatch is None
    assert verdict(registry=()).mismatch is None


def test_mismatch_zero_when_registry_agrees_in_any_order_or_case() -> None:
    v = verdict(registry=("NS2.A.EXAMPLE.", "ns1.a.example"))
    assert v.mismatch is False and v.disagree_since is None


def test_mismatch_unconfirmed_keeps_previous_and_asks_for_a_reread() -> None:
    # The registry was read (t=100) before the disagreement was first seen (now=200).
    v = verdict(registry=B, previous=False)
    assert (v.mismatch, v.disagree_since, v.needs_registry_reread) == (False, 200.0, True)
    assert verdict(registry=B, previous=None).mismatch is None


def test_mismatch_confirmed_by_a_read_after_the_disagreement() -> None:
    v = verdict(registry=B, registry_read_at=250.0, disagree_since=200.0, now=260.0)
    assert (v.mismatch, v.needs_registry_reread) == (True, False)


def test_persistent_disagreement_never_flaps_however_old_the_rdap_data() -> None:
    since = 200.0
    for step in range(1, 500):
        now = since + step * 300.0  # a DNS check every 5 minutes for ~42 hours
        v = verdict(
            registry=B, registry_read_at=201.0, disagree_since=since, now=now, previous=True
        )
        assert v.mismatch is True and v.disagree_since == since


# --- domain_nameserver_inconsistent ------------------------------------------------------------


@pytest.mark.parametrize(
    ("parent", "child", "expected"),
    [
        (A, A, False),
        (A, (*A, "ns3.a.example"), True),  # the zone lists one extra server
        (A, None, None),  # no child answered
        (None, A, None),
        ((), A, None),
    ],
)
def test_inconsistent_rows(
    parent: tuple[str, ...] | None, child: tuple[str, ...] | None, expected: bool | None
) -> None:
    assert nameserver_inconsistent(parent, child) is expected


# --- domain_registered 0 -----------------------------------------------------------------------


def test_registered_zero_needs_confirmation() -> None:
    assert not registration_confirmed_gone(
        first_404=100.0, now=100.0, hold_interval=900.0, parent_nxdomain=False
    )
    assert registration_confirmed_gone(
        first_404=100.0, now=1000.0, hold_interval=900.0, parent_nxdomain=False
    )
    assert registration_confirmed_gone(
        first_404=100.0, now=100.0, hold_interval=900.0, parent_nxdomain=True
    )


# --- the scheduler's clock ---------------------------------------------------------------------


def _one_domain_world(
    ca: trustme.CA, server: RdapServer, tmp_path: Path, domain: str
) -> tuple[RdapSettings, Config]:
    """RDAP from `server` every 0.5 s for `domain` alone; DNS pointed at a dead port."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    rdap = RdapSettings(
        servers={"test": server.base_url},
        ca_file=str(ca_file),
        interval=0.5,
        hold_interval=0.5,
        allow_private_addresses=True,
        requests_per_second=20.0,
        bootstrap=str(BOOTSTRAP),
    )
    config = Config(
        rdap=rdap,
        dns=DnsSettings(root_servers=("127.0.0.1:9",), interval=3600.0, timeout=0.2),
        email=EmailSettings(),
        domains=(DomainConfig(name=domain),),
    )
    return rdap, config


def test_a_backward_wall_clock_step_does_not_stall_checks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ca = trustme.CA()
    expiry = datetime.now(UTC) + timedelta(days=100)
    with RdapServer(ca) as server:
        server.set_domain(
            "clock.test",
            Reply(body=make_domain("clock.test", expiry, ["active"], A, "R", "1")),
        )
        rdap, config = _one_domain_world(ca, server, tmp_path, "clock.test")
        step = {"offset": 0.0}

        def wall() -> float:
            return time.time() + step["offset"]

        async def run() -> int:
            limiter = asyncio.Semaphore(8)
            metrics = ExporterMetrics(CollectorRegistry())
            client = RdapClient(rdap, limiter, metrics.record_rdap)
            scheduler = Scheduler(config, StatusStore(), client, metrics, limiter, clock=wall)
            task = asyncio.create_task(scheduler.run())
            try:
                await asyncio.sleep(1.2)
                before = len(server.requests_for("clock.test"))
                step["offset"] = -86400.0  # the wall clock jumps a day back
                await asyncio.sleep(2.5)
                return len(server.requests_for("clock.test")) - before
            finally:
                scheduler.stop()
                await task
                await client.aclose()

        after_step = asyncio.run(run())
    # ~0.5 s interval: several reads in 2.5 s; a wall-clock heap would have stalled for a day.
    assert after_step >= 3, after_step


def test_a_check_failing_for_weeks_keeps_being_retried(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The back-off doubles per consecutive failure up to the check's interval. The failure
    count has no bound (a domain whose DNS has been broken for four days has failed ~1,000
    five-minute checks): 30 s * 2**1025 is not a float, and the check must still be retried
    rather than dropped from the schedule (it would then never see the domain recover)."""
    ca = trustme.CA()
    with RdapServer(ca) as server:
        server.set_domain("broken.test", Reply(status=503, body={"errorCode": 503}))
        rdap, config = _one_domain_world(ca, server, tmp_path, "broken.test")
        store = StatusStore()
        store.sync([("broken.test", {}, ())])
        failing = CheckState(success=False, last_attempt=time.time() - 1, error="http_503")
        store.update(
            "broken.test",
            lambda s: replace(s, checks={"rdap": replace(failing, failures=5000)}),
        )

        async def run() -> int:
            limiter = asyncio.Semaphore(8)
            metrics = ExporterMetrics(CollectorRegistry())
            client = RdapClient(rdap, limiter, metrics.record_rdap)
            scheduler = Scheduler(config, store, client, metrics, limiter)
            task = asyncio.create_task(scheduler.run())
            try:
                await asyncio.sleep(2.5)
                return len(server.requests_for("broken.test"))
            finally:
                scheduler.stop()
                await task
                await client.aclose()

        requests = asyncio.run(run())
        state = store.get("broken.test")
    # ~0.5 s interval caps the back-off: several reads in 2.5 s, not one and then silence.
    assert requests >= 3, requests
    assert state is not None and state.checks["rdap"].failures >= 5002
