"""domainwatch's own health metrics, directly instrumented on an explicit registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

from exporter import __version__
from exporter.nameservers import SERVER_KINDS

DNS_OUTCOMES = ("success", "nxdomain", "timeout", "servfail", "refused", "error")
SMTP_OUTCOMES = ("accepted", "rejected", "unknown")


class ExporterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # `_created` series double the counters' cardinality and no rule or dashboard uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        build = Gauge(
            "domainwatch_build_info", "domainwatch version.", ["version"], registry=registry
        )
        build.labels(version=__version__).set(1)
        self.reload_ok = Gauge(
            "domainwatch_config_last_reload_successful",
            "1 if the last configuration (re)load succeeded.",
            registry=registry,
        )
        self.reload_ts = Gauge(
            "domainwatch_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration (re)load.",
            registry=registry,
        )
        self.domains = Gauge(
            "domainwatch_domains", "Number of configured domains.", registry=registry
        )
        self.rdap_requests = Counter(
            "domainwatch_rdap_requests",
            "RDAP HTTP requests by server (host:port) and outcome.",
            ["server", "outcome"],
            registry=registry,
        )
        self.dns_queries = Counter(
            "domainwatch_dns_queries",
            "DNS messages sent, by outcome and kind of server asked "
            "(root, tld, parent, child, resolver).",
            ["outcome", "server_kind"],
            registry=registry,
        )
        self.smtp_probes = Counter(
            "domainwatch_smtp_probes",
            "SMTP RCPT probes, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.bootstrap_publication = Gauge(
            "domainwatch_rdap_bootstrap_publication_timestamp_seconds",
            "'publication' time of the RDAP bootstrap file in use.",
            registry=registry,
        )
        # Create the fixed label sets up front so rate() works from the first scrape.
        for outcome in DNS_OUTCOMES:
            for kind in SERVER_KINDS:
                self.dns_queries.labels(outcome=outcome, server_kind=kind)
        for outcome in SMTP_OUTCOMES:
            self.smtp_probes.labels(outcome=outcome)

    def record_rdap(self, server: str, outcome: str) -> None:
        self.rdap_requests.labels(server=server, outcome=outcome).inc()

    def record_dns(self, outcome: str, server_kind: str = "resolver") -> None:
        """One DNS message. Mail-domain lookups go through a resolver (the default kind);
        delegation checks say which kind of server they asked."""
        self.dns_queries.labels(
            outcome=outcome if outcome in DNS_OUTCOMES else "error",
            server_kind=server_kind if server_kind in SERVER_KINDS else "resolver",
        ).inc()

    def record_smtp(self, outcome: str) -> None:
        self.smtp_probes.labels(outcome=outcome).inc()
