"""End to end: exporter -> real Prometheus (the shipped alert rules) -> real Alertmanager (the
shipped example routing) -> a webhook, plus every Grafana panel query against that Prometheus.

The world (one module-scoped stack, about 30 s in all):

- DNS: the Knot + unbound world of tests/support/dnsworld.py.
- RDAP: one HTTPS `RdapServer` for .test and .zz:
    good.test    healthy: status active, expiry in 200 days, NS ns1/ns2.good.test (= its DNS).
                 Config contact registrant hostmaster@mx-ok.test (a deliverable mail domain), so
                 the contact panels have data.
    parked.test  RDAP and config say NS ns1/ns2.good.test, but the parent delegates it to
                 ns1/ns2.parking.zz: DomainNameserverMismatch.
    good.zz      status `client hold`; its DNS is consistent (ns1/ns2.provider.test
                 everywhere), so only DomainOnHold fires. The test later lifts the hold.
    mx-ok.test   healthy, not monitored: the exporter reads the RDAP record of a contact's mail
                 domain, and a 404 there would make good.test's contact undeliverable.
- Exporter: every check every 2 s.
- Prometheus/Alertmanager: tests/support/promstack.py. Its rules are alerting/rules.yml with
  every `for:` shortened to 2s (expressions untouched); Alertmanager's routing is
  alerting/alertmanager.example.yml with webhook URLs pointing at the in-process receiver, one
  path per receiver (`/pager`, `/ticket`), group_wait/group_interval 1s.

The "nothing else fires" check reads two places: every notification the webhook received, and
Prometheus's own `ALERTS` series (pending and firing) over the whole run, because Alertmanager
routes `severity: info` to the "null" receiver, which never reaches the webhook.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.dnsworld import DnsWorld, dns_world  # noqa: F401  (session fixture)
from tests.support.exporter_proc import ExporterProcess
from tests.support.promstack import JOB_NAME, PromStack, wait_until
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
GOOD_NS = ["ns1.good.test", "ns2.good.test"]
PROVIDER_NS = ["ns1.provider.test", "ns2.provider.test"]
EXPIRY = datetime.now(UTC).replace(microsecond=0) + timedelta(days=200)

# The only alerts this world may raise, anywhere: (alertname, domain).
HOLD_ALERT = ("DomainOnHold", HELD)
MISMATCH_ALERT = ("DomainNameserverMismatch", PARKED)
EXPECTED_ALERTS = {HOLD_ALERT, MISMATCH_ALERT}

# Every check of these must have succeeded before an absence of alerts means anything.
REQUIRED_CHECKS = {
    (GOOD, "rdap"), (GOOD, "dns"), (GOOD, "email"),
    (PARKED, "rdap"), (PARKED, "dns"),
    (HELD, "rdap"), (HELD, "dns"),
}

# From "good.test's data is in Prometheus" to "any alert on it would have reached the webhook":
# for: 2s + evaluation 1s + resend delay 2s + group_wait 1s, plus margin for a 2 s check cycle.
SETTLE = 9.0

# Metrics a dashboard may name that legitimately have no series in this all-healthy-checks
# world. The panels using them must still return data (through their `or` fallback).
NO_DATA_WHEN_HEALTHY = {
    "domain_check_error_info": "exported only while a check is failing; no check fails here",
}
ALERT_TIMEOUT = 30.0


@dataclass
class E2E:
    stack: PromStack
    exporter: ExporterProcess
    rdap: RdapServer
    started: float
    checks_ready: float | None = None  # when REQUIRED_CHECKS were first all 1 in Prometheus

    def diagnostics(self) -> str:
        return (
            f"webhook: {self.stack.webhook.summary()}\n{self.stack.logs()}\n"
            f"--- exporter log tail ---\n{self.exporter.log_tail(30)}"
        )


def rdap_reply(name: str, statuses: list[str], nameservers: list[str]) -> Reply:
    return Reply(body=make_domain(name, EXPIRY, statuses, nameservers, "Example Registrar, Inc.",
                                  "1234"))


def write_exporter_config(
    path: Path, bootstrap: Path, ca_file: Path, world: DnsWorld
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
        "dns": {
            # Mail verdicts ask a recursive resolver (exporter/mail.py); delegation checks find
            # the zone cut through it and then ask the world's servers directly.
            "resolvers": [world.resolver],
            "root_servers": list(world.root_servers),
            "interval": "2s",
            "timeout": "0.5s",
        },
        "email": {"interval": "2s", "allow_private_addresses": True},
        "domains": [
            {
                "name": GOOD,
                "nameservers": GOOD_NS,
                "contacts": [{"role": "registrant", "email": f"hostmaster@{MAIL}"}],
            },
            {"name": PARKED, "nameservers": GOOD_NS},
            {"name": HELD, "nameservers": PROVIDER_NS},
        ],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory, dns_world: DnsWorld) -> Iterator[E2E]:  # noqa: F811
    started = time.time()
    tmp = tmp_path_factory.mktemp("monitoring-e2e")
    ca = trustme.CA()
    rdap = RdapServer(ca)
    exporter: ExporterProcess | None = None
    stack: PromStack | None = None
    try:
        rdap.set_domain(GOOD, rdap_reply(GOOD, ["active"], GOOD_NS))
        rdap.set_domain(PARKED, rdap_reply(PARKED, ["active"], GOOD_NS))
        rdap.set_domain(HELD, rdap_reply(HELD, ["client hold"], PROVIDER_NS))
        rdap.set_domain(MAIL, rdap_reply(MAIL, ["active"], PROVIDER_NS))
        bootstrap = write_bootstrap(tmp / "bootstrap.json", {"test": rdap, "zz": rdap})
        config = write_exporter_config(
            tmp / "config.yaml", bootstrap, write_ca(ca, tmp / "ca.pem"), dns_world
        )
        exporter = ExporterProcess(config, tmp / "exporter").start()
        stack = PromStack(tmp / "stack", f"127.0.0.1:{exporter.port}").start()
        yield E2E(stack, exporter, rdap, started)
    finally:
        if stack is not None:
            stack.stop()
        if exporter is not None:
            exporter.stop()
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


def alert_key(alert: dict[str, Any]) -> tuple[str, str]:
    labels = alert.get("labels", {})
    return labels.get("alertname", "?"), labels.get("domain", "")


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


@dataclass(frozen=True, order=True)
class SeenAlert:
    """One alert series as seen at the webhook or in Prometheus's ALERTS."""

    where: str  # "webhook:<receiver>" or "prometheus"
    state: str  # webhook: firing/resolved; prometheus: pending/firing
    alertname: str
    domain: str  # "" for the exporter's own alerts
    samples: int = 1  # ALERTS samples (one per evaluation)

    @property
    def key(self) -> tuple[str, str]:
        return self.alertname, self.domain


def alerts_seen(e2e: E2E) -> list[SeenAlert]:
    """Wait until any alert good.test could raise would have been delivered, then collect every
    alert seen anywhere since the start."""
    ready = wait_checks_ok(e2e)
    hook = e2e.stack.webhook
    for name, domain in sorted(EXPECTED_ALERTS):  # the pipeline demonstrably delivers
        hook.wait_for(timeout=ALERT_TIMEOUT, status="firing", alertname=name, domain=domain)
    time.sleep(max(0.0, ready + SETTLE - time.time()))
    seen = {
        SeenAlert(f"webhook:{n.receiver}", a.get("status", "?"), *alert_key(a))
        for n, a in hook.alerts()
    }
    # Every raw ALERTS sample since Prometheus started: pending and firing, any receiver
    # (info alerts route to the "null" receiver and never reach the webhook).
    prometheus = e2e.stack.prometheus
    window = int(time.time() - prometheus.started) + 5
    # Prometheus scrapes its first target ~5.5 s after start (discovery throttle), so until
    # then `absent(up{job="domainwatch"})` is true and DomainwatchAbsent is pending; its
    # shortened for: (30 s, promstack.FOR_OVERRIDES) keeps it from firing. Those samples, and
    # only those, are not a finding; a pending DomainwatchAbsent after the first scrape is.
    ups = prometheus.query(f'up{{job="{JOB_NAME}"}}[{window}s]')
    assert ups, "Prometheus never scraped the exporter"
    first_scrape = min(float(r["values"][0][0]) for r in ups)
    for r in prometheus.query(f"ALERTS[{window}s]"):
        metric, values = r["metric"], r["values"]
        if (metric.get("alertname"), metric.get("alertstate")) == ("DomainwatchAbsent", "pending"):
            values = [v for v in values if float(v[0]) > first_scrape + 1.5]
            if not values:
                continue
        seen.add(SeenAlert("prometheus", metric.get("alertstate", "?"),
                           metric.get("alertname", "?"), metric.get("domain", ""), len(values)))
    return sorted(seen)


def test_healthy_domain_and_exporter_raise_no_alert(e2e: E2E) -> None:
    """good.test raises nothing (not even pending), and no exporter-level alert fires."""
    seen = alerts_seen(e2e)
    good = [a for a in seen if a.domain == GOOD]
    assert not good, f"{GOOD} is healthy but raised: {good}\n{e2e.diagnostics()}"
    # Alerts without a domain label are the exporter's own (DomainwatchDown, ...Absent, ...).
    exporter_level = [a for a in seen if a.domain == ""]
    assert not exporter_level, f"exporter-level alerts: {exporter_level}\n{e2e.diagnostics()}"


def test_only_the_expected_alerts_fire(e2e: E2E) -> None:
    """parked.test raises only the mismatch and good.zz only the hold: nothing else anywhere."""
    seen = alerts_seen(e2e)
    unexpected = [a for a in seen if a.key not in EXPECTED_ALERTS]
    assert not unexpected, f"unexpected alerts: {unexpected}\n{e2e.diagnostics()}"
    assert {a.key for a in seen} == EXPECTED_ALERTS


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
