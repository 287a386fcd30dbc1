"""End to end: exporters -> real Prometheus (the shipped alert rules) -> real Alertmanager (the
shipped example routing and inhibition) -> a webhook, plus every Grafana panel query against that
Prometheus.

The world (one module-scoped stack, well under a minute in all):

- DNS: the Knot + unbound world of tests/support/dnsworld.py, and `InterceptingDns` below: a
  "network" on 127.86.0.1 that answers every query itself with NXDOMAIN and no AA bit, as captive
  portals and DNS-rewriting firewalls do.
- RDAP: one HTTPS `RdapServer` for .test and .zz:
    good.test       healthy: status active, expiry in 200 days (the registrar's own date 230),
                    NS ns1/ns2.good.test (= its DNS). Config contact registrant
                    hostmaster@mx-ok.test (a deliverable mail domain), so the contact panels
                    have data.
    parked.test     RDAP and config say NS ns1/ns2.good.test, but the parent delegates it to
                    ns1/ns2.parking.zz: DomainNameserverMismatch.
    good.zz         status `client hold`; its DNS is consistent (ns1/ns2.provider.test
                    everywhere), so only DomainOnHold fires. The test later lifts the hold.
    nxdomain.test   status `client hold`, and the .test servers answer an authoritative NXDOMAIN
                    (the registry pulled it): DomainOnHold pages, DomainNotDelegated fires in
                    Prometheus and is inhibited by the hold.
    childdiff.test  status `client hold`, still delegated (the registry has not republished yet)
                    to ns1/ns2.provider.test while the config expects ns1/ns2.good.test, and its
                    zone adds ns3.provider.test: DomainOnHold pages; DomainNameserverMismatch and
                    DomainNameserverInconsistent fire and are inhibited by the hold.
    mx-ok.test      healthy, not monitored: the exporter reads the RDAP record of a contact's mail
                    domain, and a 404 there would make good.test's contact undeliverable.
    net1..3.test    healthy RDAP; watched only by the second exporter.
- Exporters, every check every 2 s: "main" (good.test ... childdiff.test, on the DNS world) and
  "intercepted" (net1..3.test, whose root servers and resolver are `InterceptingDns`): every DNS
  check fails with reason not_authoritative, so DomainwatchDnsNotAuthoritative (one warning for
  the instance) is delivered and the per-domain DNS symptoms (DomainCheckFailing{check="dns"})
  are inhibited.
- Prometheus/Alertmanager: tests/support/promstack.py, both exporters as targets of one job. Its
  rules are alerting/rules.yml with every `for:` shortened to 2s and `keep_firing_for:` to 2s
  (expressions untouched), except `FOR_E2E` below; Alertmanager's routing is
  alerting/alertmanager.example.yml with webhook URLs pointing at the in-process receiver, one
  path per receiver (`/pager`, `/ticket`), group_wait/group_interval 1s.

The "nothing else fires" check reads two places: every notification the webhook received, and
Prometheus's own `ALERTS` series (pending and firing) over the whole run, because Alertmanager
routes `severity: info` to the "null" receiver, and inhibited alerts never reach the webhook.

Tests marked CONTRACT below assert issue-7 exporter semantics (docs/metrics.md, the README's truth
tables): no mismatch for an undelegated domain, only the parent's servers probed, the new
`domain_nameserver_inconsistent`, and `not_authoritative` instead of `domain_delegated 0` on an
intercepted network. They fail on an exporter without those semantics.
"""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import pytest
import trustme
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.dnsworld import DnsWorld, dns_world  # noqa: F401  (session fixture)
from tests.support.exporter_proc import ExporterProcess
from tests.support.promstack import FOR_OVERRIDES, JOB_NAME, PromStack, wait_until
from tests.support.rdapserver import RdapServer, Reply, make_domain, write_bootstrap, write_ca
from tests.test_dashboards import (
    DEFAULT_VARIABLES,
    iter_panel_queries,
    iter_panels,
    load_dashboards,
    metric_names,
    substitute,
    variable_queries,
)

GOOD, PARKED, HELD, MAIL = "good.test", "parked.test", "good.zz", "mx-ok.test"
HELD_GONE, HELD_PARKED = "nxdomain.test", "childdiff.test"
NET_DOMAINS = ("net1.test", "net2.test", "net3.test")
GOOD_NS = ["ns1.good.test", "ns2.good.test"]
PROVIDER_NS = ["ns1.provider.test", "ns2.provider.test"]
EXPIRY = datetime.now(UTC).replace(microsecond=0) + timedelta(days=200)
MAIN, NET = "main", "intercepted"  # the two exporters (their `instance` differs)
INTERCEPTOR_ADDRESS = "127.86.0.1"  # this module's own loopback range: 127.86.0.0/16

# Every alert this world may raise, anywhere: (alertname, domain, exporter).
HOLD_ALERT = ("DomainOnHold", HELD, MAIN)
MISMATCH_ALERT = ("DomainNameserverMismatch", PARKED, MAIN)
NETWORK_ALERT = ("DomainwatchDnsNotAuthoritative", "", NET)
# ... the ones that reach the webhook ...
DELIVERED = {
    HOLD_ALERT,
    MISMATCH_ALERT,
    ("DomainOnHold", HELD_GONE, MAIN),
    ("DomainOnHold", HELD_PARKED, MAIN),
    NETWORK_ALERT,
}
# ... and the ones that fire in Prometheus but are inhibited in Alertmanager (by the hold of
# their domain, or by the network alert of their exporter).
HOLD_INHIBITED = {
    ("DomainNotDelegated", HELD_GONE, MAIN),
    ("DomainNameserverMismatch", HELD_PARKED, MAIN),
    ("DomainNameserverInconsistent", HELD_PARKED, MAIN),
}
NETWORK_INHIBITED = {("DomainCheckFailing", name, NET) for name in NET_DOMAINS}
EXPECTED_ALERTS = DELIVERED | HOLD_INHIBITED | NETWORK_INHIBITED

# Shortened `for:` durations in the same ORDER as production's, because an inhibition only
# works if the inhibiting alert reaches Alertmanager first: DomainOnHold (5m) before the
# nameserver alerts (10m, 30m); DomainwatchDnsNotAuthoritative (10m) before DomainCheckFailing
# (1h) and DomainCheckStale. Everything else gets promstack's 2s.
FOR_E2E = {
    **FOR_OVERRIDES,
    "DomainNotDelegated": "10s",
    "DomainNameserverMismatch": "10s",
    "DomainNameserverInconsistent": "10s",
    "DomainNameserverLame": "10s",
    "DomainCheckFailing": "12s",
    "DomainCheckStale": "12s",
}

# Every check of these must have succeeded before an absence of alerts means anything.
REQUIRED_CHECKS = {
    (GOOD, "rdap"), (GOOD, "dns"), (GOOD, "email"),
    (PARKED, "rdap"), (PARKED, "dns"),
    (HELD, "rdap"), (HELD, "dns"),
    (HELD_GONE, "rdap"), (HELD_GONE, "dns"),
    (HELD_PARKED, "rdap"), (HELD_PARKED, "dns"),
    *((name, "rdap") for name in NET_DOMAINS),
}

# From "good.test's data is in Prometheus" to "any alert on it would have reached the webhook":
# for: 2s + evaluation 1s + resend delay 2s + group_wait 1s, plus margin for a 2 s check cycle.
# A longer `for:` (FOR_E2E) is covered too: its pending phase shows in ALERTS at once.
SETTLE = 9.0

# Metrics a dashboard may name that legitimately have no series in this all-healthy-checks
# world. The panels using them must still return data (through their `or` fallback).
NO_DATA_WHEN_HEALTHY = {
    "domain_check_error_info": "exported only while a check fails; none of good.test's do",
    "domain_nameservers_changed_timestamp_seconds": "set only once a nameserver change is seen",
    "domain_registrar_changed_timestamp_seconds": "set only once a registrar change is seen",
    "domain_dnssec_ds_mismatch": "signed domains only; this world is unsigned",
    "domain_dnssec_signature_expiry_timestamp_seconds": "signed domains only",
}
ALERT_TIMEOUT = 45.0


class InterceptingDns:
    """A network that intercepts DNS: every query, to any server, over UDP or TCP, is answered
    here with NXDOMAIN, the AA bit clear and RA set (a resolver pretending), echoing the
    question. `queries` counts what it answered, so a test can tell it was used."""

    def __init__(self, address: str = INTERCEPTOR_ADDRESS) -> None:
        self.queries = 0
        self._lock = threading.Lock()
        owner = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = owner.answer(data)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while len(head := self.rfile.read(2)) == 2:
                    reply = owner.answer(self.rfile.read(int.from_bytes(head, "big")))
                    if reply is None:
                        return
                    self.wfile.write(len(reply).to_bytes(2, "big") + reply)

        for _ in range(20):  # UDP and TCP on the same free port
            self._udp = socketserver.ThreadingUDPServer((address, 0), Udp)
            self.port = int(self._udp.server_address[1])
            try:
                socketserver.ThreadingTCPServer.allow_reuse_address = True
                self._tcp = socketserver.ThreadingTCPServer((address, self.port), Tcp)
                break
            except OSError:
                self._udp.server_close()
        else:
            raise AssertionError(f"no port free for both UDP and TCP on {address}")
        self.address = address
        for server in (self._udp, self._tcp):
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True).start()

    @property
    def hostport(self) -> str:
        return f"{self.address}:{self.port}"

    def answer(self, data: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.flags &= ~dns.flags.AA
        response.flags |= dns.flags.RA
        with self._lock:
            self.queries += 1
        return bytes(response.to_wire())

    def stop(self) -> None:
        for server in (self._udp, self._tcp):
            server.shutdown()
            server.server_close()


@dataclass
class E2E:
    stack: PromStack
    exporter: ExporterProcess  # "main"
    net_exporter: ExporterProcess  # "intercepted"
    interceptor: InterceptingDns
    rdap: RdapServer
    started: float
    checks_ready: float | None = None  # when REQUIRED_CHECKS were first all 1 in Prometheus
    roles: dict[str, str] = field(default_factory=dict)  # instance label -> MAIN / NET

    def diagnostics(self) -> str:
        return (
            f"webhook: {self.stack.webhook.summary()}\n{self.stack.logs()}\n"
            f"--- main exporter log tail ---\n{self.exporter.log_tail(30)}\n"
            f"--- intercepted exporter log tail ---\n{self.net_exporter.log_tail(15)}"
        )


def rdap_reply(
    name: str, statuses: list[str], nameservers: list[str], registrar_expiry: datetime | None = None
) -> Reply:
    return Reply(body=make_domain(name, EXPIRY, statuses, nameservers, "Example Registrar, Inc.",
                                  "1234", registrar_expiry=registrar_expiry))


def write_exporter_config(
    path: Path, bootstrap: Path, ca_file: Path, dns_settings: dict[str, Any],
    domains: list[dict[str, Any]],
) -> Path:
    document = {
        "rdap": {
            "bootstrap": str(bootstrap),
            "ca_file": str(ca_file),
            "allow_private_addresses": True,  # the RDAP server is on 127.0.0.1
            "interval": "2s",
            "hold_interval": "2s",
            "timeout": "2s",
            "requests_per_second": 20,
        },
        "dns": {**dns_settings, "interval": "2s", "timeout": "0.5s"},
        "email": {"interval": "2s", "allow_private_addresses": True},
        "domains": domains,
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


MAIN_DOMAINS: list[dict[str, Any]] = [
    {
        "name": GOOD,
        "nameservers": GOOD_NS,
        "contacts": [{"role": "registrant", "email": f"hostmaster@{MAIL}"}],
    },
    {"name": PARKED, "nameservers": GOOD_NS},
    {"name": HELD, "nameservers": PROVIDER_NS},
    {"name": HELD_GONE},
    {"name": HELD_PARKED, "nameservers": GOOD_NS},
]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory, dns_world: DnsWorld) -> Iterator[E2E]:  # noqa: F811
    started = time.time()
    tmp = tmp_path_factory.mktemp("monitoring-e2e")
    ca = trustme.CA()
    rdap = RdapServer(ca)
    interceptor = InterceptingDns()
    exporters: list[ExporterProcess] = []
    stack: PromStack | None = None
    try:
        # A registrar date later than the registry's: both raw dates have series (dashboards).
        rdap.set_domain(GOOD, rdap_reply(GOOD, ["active"], GOOD_NS, EXPIRY + timedelta(days=30)))
        rdap.set_domain(PARKED, rdap_reply(PARKED, ["active"], GOOD_NS))
        rdap.set_domain(HELD, rdap_reply(HELD, ["client hold"], PROVIDER_NS))
        rdap.set_domain(HELD_GONE, rdap_reply(HELD_GONE, ["client hold"], PROVIDER_NS))
        rdap.set_domain(HELD_PARKED, rdap_reply(HELD_PARKED, ["client hold"], PROVIDER_NS))
        rdap.set_domain(MAIL, rdap_reply(MAIL, ["active"], PROVIDER_NS))
        # The nameservers' own domains (issue 11's nameserver-domain check reads them): healthy.
        rdap.set_domain("provider.test", rdap_reply("provider.test", ["active"], PROVIDER_NS))
        rdap.set_domain("parking.zz", rdap_reply("parking.zz", ["active"], PROVIDER_NS))
        for name in NET_DOMAINS:
            rdap.set_domain(name, rdap_reply(name, ["active"], PROVIDER_NS))
        bootstrap = write_bootstrap(tmp / "bootstrap.json", {"test": rdap, "zz": rdap})
        ca_file = write_ca(ca, tmp / "ca.pem")
        # Mail verdicts ask a recursive resolver (exporter/mail.py); delegation checks find the
        # zone cut through it and then ask the world's servers directly.
        world_dns = {"resolvers": [dns_world.resolver],
                     "root_servers": list(dns_world.root_servers)}
        # Intercepted: every server the exporter asks is the interceptor.
        net_dns = {"resolvers": [interceptor.hostport], "root_servers": [interceptor.hostport]}
        main_config = write_exporter_config(tmp / "main.yaml", bootstrap, ca_file, world_dns,
                                            MAIN_DOMAINS)
        net_config = write_exporter_config(tmp / "net.yaml", bootstrap, ca_file, net_dns,
                                           [{"name": name} for name in NET_DOMAINS])
        exporters.append(ExporterProcess(main_config, tmp / "exporter").start())
        exporters.append(ExporterProcess(net_config, tmp / "exporter-net").start())
        main, net = exporters
        stack = PromStack(
            tmp / "stack", [f"127.0.0.1:{main.port}", f"127.0.0.1:{net.port}"],
            for_overrides=FOR_E2E,
        ).start()
        roles = {f"127.0.0.1:{main.port}": MAIN, f"127.0.0.1:{net.port}": NET}
        yield E2E(stack, main, net, interceptor, rdap, started, roles=roles)
    finally:
        if stack is not None:
            stack.stop()
        for exporter in exporters:
            exporter.stop()
        interceptor.stop()
        rdap.stop()
        print(f"monitoring e2e stack lifetime: {time.time() - started:.1f}s")


# --- helpers -------------------------------------------------------------------------------------

def checks_ok(e2e: E2E) -> set[tuple[str, str]]:
    """(domain, check) pairs whose last attempt succeeded, as Prometheus has scraped them."""
    result = e2e.stack.prometheus.query(f'domain_check_success{{job="{JOB_NAME}"}} == 1')
    return {(r["metric"]["domain"], r["metric"]["check"]) for r in result}


def wait_checks_ok(e2e: E2E, timeout: float = 30.0) -> float:
    """Wait until every REQUIRED_CHECKS pair is 1 in Prometheus; return when that was first
    seen (an upper bound of when it became true: polled every 0.2 s)."""
    wait_until(
        lambda: checks_ok(e2e) >= REQUIRED_CHECKS, timeout,
        lambda: f"checks still not ok in Prometheus: {sorted(REQUIRED_CHECKS - checks_ok(e2e))}"
        f"\n{e2e.diagnostics()}",
    )
    if e2e.checks_ready is None:
        e2e.checks_ready = time.time()
    return e2e.checks_ready


def alert_key(e2e: E2E, labels: dict[str, str]) -> tuple[str, str, str]:
    """(alertname, domain, exporter role); "" for a label the alert does not have."""
    return (labels.get("alertname", "?"), labels.get("domain", ""),
            e2e.roles.get(labels.get("instance", ""), ""))


def firing_in_prometheus(e2e: E2E) -> set[tuple[str, str, str]]:
    return {alert_key(e2e, a["labels"]) for a in e2e.stack.prometheus.alerts()
            if a.get("state") == "firing"}


def alertmanager_states(e2e: E2E) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Alertmanager's view of every alert it holds: key -> `status` (state, inhibitedBy)."""
    return {alert_key(e2e, a["labels"]): a["status"] for a in e2e.stack.alertmanager.alerts()}


def assert_inhibited(e2e: E2E, keys: set[tuple[str, str, str]]) -> None:
    """Each alert fires in Prometheus, is `suppressed` by an inhibition in Alertmanager, and
    never reached the webhook (it was inhibited from its first notification on)."""
    wait_until(
        lambda: keys <= firing_in_prometheus(e2e), ALERT_TIMEOUT,
        lambda: f"not firing in Prometheus: {sorted(keys - firing_in_prometheus(e2e))}\n"
        f"{e2e.diagnostics()}",
    )

    def suppressed() -> bool:
        states = alertmanager_states(e2e)
        return all(states.get(k, {}).get("state") == "suppressed"
                   and states[k].get("inhibitedBy") for k in keys)

    wait_until(suppressed, 10, lambda: f"Alertmanager states: {alertmanager_states(e2e)}")
    time.sleep(3)  # group_wait 1s + group_interval 1s: a notification would have gone out
    hook = e2e.stack.webhook
    leaked = [(n.receiver, k) for n, a in hook.alerts()
              if (k := alert_key(e2e, a.get("labels", {}))) in keys]
    assert not leaked, f"inhibited alerts reached the webhook: {leaked}\n{hook.summary()}"


# --- alerting ------------------------------------------------------------------------------------

def test_hold_and_nameserver_mismatch_alerts_fire(e2e: E2E) -> None:
    wait_checks_ok(e2e)  # every check works, so a missing alert is the rules' or routing's fault
    hook = e2e.stack.webhook
    _, hold = hook.wait_for(timeout=ALERT_TIMEOUT, status="firing", alertname=HOLD_ALERT[0],
                            domain=HELD)
    notification, mismatch = hook.wait_for(timeout=ALERT_TIMEOUT, status="firing",
                                           alertname=MISMATCH_ALERT[0], domain=PARKED)

    assert hold["labels"]["severity"] == "critical", hold
    assert hold["labels"]["job"] == JOB_NAME, hold
    # Critical routes to the pager receiver in alertmanager.example.yml.
    assert hook.find(receiver="pager", alertname=HOLD_ALERT[0], domain=HELD), hook.summary()
    # The description's template queries domain_status: the status must be named in it.
    assert '"client hold"' in hold["annotations"]["description"], hold["annotations"]

    assert mismatch["labels"]["severity"] == "critical", mismatch
    assert notification.receiver == "pager", hook.summary()
    description = mismatch["annotations"]["description"]
    # The description lists each source's set from domain_nameserver_info.
    assert "ns1.parking.zz, ns2.parking.zz" in description, description
    assert "ns1.good.test, ns2.good.test" in description, description


def test_a_hold_inhibits_the_nameserver_and_delegation_alerts_of_its_domain(e2e: E2E) -> None:
    """CONTRACT. nxdomain.test (held, pulled from the zone) and childdiff.test (held, still
    delegated elsewhere than expected, zone inconsistent) page once each, for the hold; their
    DNS alerts fire in Prometheus but Alertmanager suppresses them."""
    hook = e2e.stack.webhook
    for domain in (HELD_GONE, HELD_PARKED):
        notification, _ = hook.wait_for(timeout=ALERT_TIMEOUT, status="firing",
                                        alertname="DomainOnHold", domain=domain)
        assert notification.receiver == "pager", hook.summary()
    assert_inhibited(e2e, HOLD_INHIBITED)
    # The same mismatch without a hold (parked.test) is not inhibited: it pages.
    assert alertmanager_states(e2e)[MISMATCH_ALERT]["state"] == "active"


def test_an_intercepting_network_raises_one_uninhibited_warning(e2e: E2E) -> None:
    """CONTRACT. Every DNS answer of the intercepted exporter is a non-authoritative NXDOMAIN:
    its checks fail with not_authoritative (no flag changes), DomainwatchDnsNotAuthoritative is
    delivered and never inhibited, and the per-domain DNS failures are inhibited by it."""
    hook = e2e.stack.webhook
    notification, alert = hook.wait_for(timeout=ALERT_TIMEOUT, status="firing",
                                        alertname=NETWORK_ALERT[0])
    assert notification.receiver == "ticket", hook.summary()
    assert e2e.roles.get(alert["labels"]["instance"]) == NET, alert["labels"]
    assert "domain" not in alert["labels"], alert["labels"]
    assert alert["annotations"]["description"].startswith(
        f"The DNS checks of 3 of the {len(NET_DOMAINS)} domains watched by"
    ), alert["annotations"]
    assert e2e.interceptor.queries > 0, "the intercepted exporter never asked the interceptor"

    scrape = e2e.net_exporter.scrape()
    for name in NET_DOMAINS:
        assert scrape.value("domain_check_error_info", domain=name, check="dns",
                            reason="not_authoritative") == 1, scrape.for_domain(name)
        # A non-authoritative answer is no evidence: nothing was measured, nothing is 0.
        for flag in ("domain_delegated", "domain_nameserver_mismatch",
                     "domain_nameserver_inconsistent"):
            assert scrape.value(flag, domain=name) is None, (flag, scrape.for_domain(name))
    assert_inhibited(e2e, NETWORK_INHIBITED)
    assert alertmanager_states(e2e)[NETWORK_ALERT]["state"] == "active"


@dataclass(frozen=True, order=True)
class SeenAlert:
    """One alert series as seen at the webhook or in Prometheus's ALERTS."""

    where: str  # "webhook:<receiver>" or "prometheus"
    state: str  # webhook: firing/resolved; prometheus: pending/firing
    alertname: str
    domain: str  # "" for the exporter's own alerts
    exporter: str  # MAIN, NET, or "" without an instance label
    samples: int = 1  # ALERTS samples (one per evaluation)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.alertname, self.domain, self.exporter


def alerts_seen(e2e: E2E) -> list[SeenAlert]:
    """Wait until any alert good.test could raise would have been delivered, then collect every
    alert seen anywhere since the start."""
    ready = wait_checks_ok(e2e)
    hook = e2e.stack.webhook
    for name, domain, _ in sorted(DELIVERED):  # the pipeline demonstrably delivers
        hook.wait_for(timeout=ALERT_TIMEOUT, status="firing", alertname=name,
                      **({"domain": domain} if domain else {}))
    time.sleep(max(0.0, ready + SETTLE - time.time()))
    seen = {
        SeenAlert(f"webhook:{n.receiver}", a.get("status", "?"),
                  *alert_key(e2e, a.get("labels", {})))
        for n, a in hook.alerts()
    }
    # Every raw ALERTS sample since Prometheus started: pending and firing, any receiver
    # (info alerts route to the "null" receiver and never reach the webhook).
    prometheus = e2e.stack.prometheus
    window = int(time.time() - prometheus.started) + 5
    # Prometheus scrapes its first target ~5.5 s after start (discovery throttle), so until
    # then `absent(up{job="domainwatch"})` is true and DomainwatchAbsent and
    # DomainwatchDownPersistent are pending; their shortened for: (30 s,
    # promstack.FOR_OVERRIDES) keeps them from firing. Those samples, and only those, are not a
    # finding; a pending one after the first scrape is.
    ups = prometheus.query(f'up{{job="{JOB_NAME}"}}[{window}s]')
    assert ups, "Prometheus never scraped the exporter"
    first_scrape = min(float(r["values"][0][0]) for r in ups)
    for r in prometheus.query(f"ALERTS[{window}s]"):
        metric, values = r["metric"], r["values"]
        if (metric.get("alertname") in ("DomainwatchAbsent", "DomainwatchDownPersistent")
                and metric.get("alertstate") == "pending" and "instance" not in metric):
            values = [v for v in values if float(v[0]) > first_scrape + 1.5]
            if not values:
                continue
        seen.add(SeenAlert("prometheus", metric.get("alertstate", "?"),
                           *alert_key(e2e, metric), len(values)))
    return sorted(seen)


def test_healthy_domain_and_exporter_raise_no_alert(e2e: E2E) -> None:
    """good.test raises nothing (not even pending), and no exporter-level alert fires except the
    intercepted exporter's network warning."""
    seen = alerts_seen(e2e)
    good = [a for a in seen if a.domain == GOOD]
    assert not good, f"{GOOD} is healthy but raised: {good}\n{e2e.diagnostics()}"
    # Alerts without a domain label are the exporters' own (DomainwatchDown, ...Absent, ...).
    exporter_level = [a for a in seen if a.domain == "" and a.key != NETWORK_ALERT]
    assert not exporter_level, f"exporter-level alerts: {exporter_level}\n{e2e.diagnostics()}"


def test_only_the_expected_alerts_fire(e2e: E2E) -> None:
    """CONTRACT. Each domain raises exactly its expected alerts, anywhere (webhook or
    Prometheus, pending or firing), and the inhibited ones never reach the webhook."""
    seen = alerts_seen(e2e)
    unexpected = [a for a in seen if a.key not in EXPECTED_ALERTS]
    assert not unexpected, f"unexpected alerts: {unexpected}\n{e2e.diagnostics()}"
    at_webhook = {a.key for a in seen if a.where.startswith("webhook:")}
    assert at_webhook == DELIVERED, f"{sorted(at_webhook ^ DELIVERED)}\n{e2e.diagnostics()}"


def test_lifting_the_hold_sends_resolved(e2e: E2E) -> None:
    hook = e2e.stack.webhook
    hook.wait_for(timeout=ALERT_TIMEOUT, status="firing", alertname=HOLD_ALERT[0], domain=HELD)
    lifted = time.time()
    e2e.rdap.set_domain(HELD, rdap_reply(HELD, ["active"], PROVIDER_NS))

    notification, alert = hook.wait_for(
        timeout=ALERT_TIMEOUT, status="resolved", alertname=HOLD_ALERT[0], domain=HELD
    )
    assert notification.received > lifted
    assert notification.receiver == "pager", hook.summary()
    # The whole group (alertname + domain) is resolved, not just one of several alerts.
    assert notification.status == "resolved", notification.payload
    assert alert["endsAt"] >= alert["startsAt"], alert
    print(f"resolved notification {notification.received - lifted:.1f}s after the hold was lifted")


# --- dashboards ----------------------------------------------------------------------------------

def panel_targets() -> list[tuple[str, str, str, bool]]:
    """(dashboard uid, panel title, expr, instant?) for every panel target of every dashboard."""
    out: list[tuple[str, str, str, bool]] = []
    for dashboard in load_dashboards().values():
        mine = [
            (str(dashboard["uid"]), str(panel.get("title", "")), str(target["expr"]),
             bool(target.get("instant")))
            for panel in iter_panels(dashboard)
            for target in panel.get("targets", [])
            if target.get("expr")
        ]
        # iter_panel_queries is the shared definition of "every panel query"; this walk only
        # adds the instant flag, so both must agree.
        assert [t[:3] for t in mine] == iter_panel_queries(dashboard)
        out += mine
    assert out, "no dashboard panel queries found"
    return out


def test_dashboard_queries_return_data(e2e: E2E) -> None:
    """Every panel query, with job=domainwatch and domain=good.test, returns at least one series
    from this Prometheus, and every metric a dashboard names is one the exporter serves.

    good.test has data of every kind (registration, statuses, DNS sets, lame flags at 0, a
    deliverable contact, all three checks), so no panel is run against another domain.
    """
    wait_checks_ok(e2e)
    prometheus = e2e.stack.prometheus
    variables = {**DEFAULT_VARIABLES, "job": JOB_NAME, "domain": GOOD}
    # Served = declared on /metrics (HELP/TYPE), with or without samples right now.
    served = {
        name
        for family in text_string_to_metric_families(e2e.exporter.scrape().text)
        for name in (family.name, *(sample.name for sample in family.samples))
    }
    prometheus_made = {"up"}  # synthesized by Prometheus for each target, not exported
    now = time.time()
    problems: list[str] = []
    checked = 0
    for uid, title, expr, instant in panel_targets():
        query = substitute(expr, variables)
        unknown = metric_names(query) - served - prometheus_made
        if unknown:
            problems.append(f"{uid} / {title}: metrics not served by the exporter: "
                            f"{sorted(unknown)} in {query}")
        for name in sorted(metric_names(query) - unknown - set(NO_DATA_WHEN_HEALTHY)):
            if not prometheus.query(f'{name}{{job="{JOB_NAME}"}}'):
                problems.append(f"{uid} / {title}: Prometheus has no {name}{{job={JOB_NAME}}}")
        try:
            result = (
                prometheus.query(query, at=now) if instant
                else prometheus.query_range(query, now - 60, now, step=1)
            )
        except AssertionError as exc:
            problems.append(f"{uid} / {title}: query failed: {exc}")
            continue
        if not result:
            kind = "instant" if instant else "range (last minute)"
            problems.append(f"{uid} / {title}: {kind} query returned no series: {query}")
        checked += 1

    for dashboard in load_dashboards().values():
        for variable, selector in variable_queries(dashboard):
            label = variable  # both variables read the label they are named after
            values = prometheus.label_values(label, substitute(selector, variables))
            if variables.get(variable) not in values:
                problems.append(f"{dashboard['uid']}: variable ${variable} "
                                f"(label_values({selector}, {label})) offers {values}, "
                                f"not {variables.get(variable)!r}")
    assert not problems, "\n".join(problems)
    assert checked >= 30, f"only {checked} panel queries ran"
