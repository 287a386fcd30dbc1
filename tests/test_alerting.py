"""The alerting bundle: rules, their promtool tests, the runbook and the Alertmanager example.

The rule behaviour itself is proven by `promtool test rules alerting/tests/*.yml`; this file runs
the tools, and checks what promtool cannot: that every alert is documented and tested both ways,
that every metric it reads is in the contract (docs/metrics.md), that every selector carries the
job matcher, and that the example Alertmanager config routes and inhibits as documented (in a
real Alertmanager on 127.0.0.1).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ALERTING = ROOT / "alerting"
RULES = ALERTING / "rules.yml"
RULE_TESTS = sorted((ALERTING / "tests").glob("*.yml"))
RUNBOOK = ALERTING / "runbook.md"
AM_EXAMPLE = ALERTING / "alertmanager.example.yml"
METRICS_DOC = ROOT / "docs" / "metrics.md"

JOB_MATCHER = 'job="domainwatch"'
RUNBOOK_BASE = "https://github.com/domainwatch/domainwatch/blob/main/alerting/runbook.md"
SEVERITIES = {"critical", "warning", "info"}
# Identifiers in PromQL that are neither metric names nor followed by "(".
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # CI installs every tool: a missing one is a failure, not a skip
        pytest.fail(f"{name} is not installed (apt-get install prometheus prometheus-alertmanager)")
    return path


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [binary(args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, (
        f"{' '.join(args)} exited {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    return proc


def load_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


ALERTS = [rule for rule in load_rules() if "alert" in rule]
ALERT_IDS = [rule["alert"] for rule in ALERTS]
RECORDED = {rule["record"] for rule in load_rules() if "record" in rule}


def template_queries(rule: dict[str, Any]) -> list[str]:
    """The PromQL inside annotation templates: `printf `QUERY` args | query`."""
    text = "\n".join(str(v) for v in rule.get("annotations", {}).values())
    return re.findall(r"printf\s+`([^`]*)`", text)


def promql_texts(rule: dict[str, Any]) -> list[str]:
    return [rule["expr"], *template_queries(rule)]


def strip_comments(promql: str) -> str:
    return re.sub(r"#[^\n]*", "", promql)


def metric_names(promql: str) -> set[str]:
    """Metric names a PromQL expression reads (enough of a parser for our rule file)."""
    s = strip_comments(promql)
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', s)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range and subquery durations
    s = re.sub(r"\b(?:on|ignoring|by|without|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        if s[m.end() :].lstrip().startswith("("):
            continue  # a function call
        if m.group(0).lower() in PROMQL_KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def contract_metrics() -> set[str]:
    text = METRICS_DOC.read_text()
    names = set(re.findall(r"^\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|", text, re.MULTILINE))
    assert len(names) > 20, f"could not parse the metric table of {METRICS_DOC}"
    return names


def github_anchor(heading: str) -> str:
    """GitHub's heading slug: lower case, punctuation dropped, spaces to hyphens."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def runbook_anchors() -> list[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", RUNBOOK.read_text(), re.MULTILINE)
    return [github_anchor(h) for h in headings]


# --- the tools ------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    proc = run("promtool", "check", "rules", str(RULES))
    assert f"SUCCESS: {len(load_rules())} rules found" in proc.stdout, proc.stdout


def test_promtool_test_rules() -> None:
    assert len(RULE_TESTS) >= 5, RULE_TESTS
    proc = run("promtool", "test", "rules", *map(str, RULE_TESTS))
    assert proc.stdout.count("SUCCESS") == len(RULE_TESTS), proc.stdout


def test_amtool_check_config() -> None:
    proc = run("amtool", "check-config", str(AM_EXAMPLE))
    assert "SUCCESS" in proc.stdout, proc.stdout


# --- every alert: labels, annotations, runbook, tests -------------------------------------


def test_alerts_are_loaded() -> None:
    assert len(ALERTS) >= 15, ALERT_IDS
    assert len(set(ALERT_IDS)) == len(ALERT_IDS), "duplicate alert names"


def aggregates_per_instance(rule: dict[str, Any]) -> bool:
    """An alert about an exporter instance built from per-domain series (`count by (job,
    instance)`): it has no domain label, so it cannot name one."""
    return re.search(r"\bby\s*\(\s*job\s*,\s*instance\s*\)", rule["expr"]) is not None


def is_per_domain(rule: dict[str, Any]) -> bool:
    reads_domain_series = any(n.startswith("domain_") for n in metric_names(rule["expr"]))
    return reads_domain_series and not aggregates_per_instance(rule)


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_alert_has_severity_and_annotations(rule: dict[str, Any]) -> None:
    assert rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"{rule['alert']}: no {key}"
    if is_per_domain(rule):
        # A per-domain page must say which domain.
        assert "$labels.domain" in annotations["summary"]
        assert "$labels.domain" in annotations["description"]
    elif aggregates_per_instance(rule):
        # ... and an instance-level one which exporter.
        assert "$labels.instance" in annotations["summary"]
        assert "$labels.instance" in annotations["description"]


# --- for: and keep_firing_for: one bad reading never pages, an outage never resolves a page --


DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def seconds(duration: str | None) -> float:
    """A Prometheus duration ("1h30m", "7d") in seconds; None (no `for:`) is 0."""
    if duration is None:
        return 0.0
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", str(duration))
    assert parts and "".join(n + u for n, u in parts) == str(duration), duration
    return float(sum(int(n) * DURATION_UNITS[u] for n, u in parts))


def test_duration_parser() -> None:
    assert seconds("1h30m") == 5400 and seconds("7d") == 604800 and seconds(None) == 0


CRITICALS = [rule for rule in ALERTS if rule["labels"]["severity"] == "critical"]
DNS_METRICS = {"domain_nameserver_mismatch", "domain_delegated"}
BRIDGE = 15 * 60  # the last_over_time(...[15m]) window of every per-domain expression
DNS_INTERVAL = 5 * 60  # the exporter's default dns.interval


@pytest.mark.parametrize("rule", CRITICALS, ids=[r["alert"] for r in CRITICALS])
def test_no_critical_fires_on_its_first_evaluation(rule: dict[str, Any]) -> None:
    assert seconds(rule.get("for")) >= 5 * 60, f"{rule['alert']} would page on one bad reading"


@pytest.mark.parametrize("rule", CRITICALS, ids=[r["alert"] for r in CRITICALS])
def test_dns_based_criticals_wait_two_dns_intervals(rule: dict[str, Any]) -> None:
    if metric_names(rule["expr"]) & DNS_METRICS:
        assert seconds(rule.get("for")) >= 2 * DNS_INTERVAL, rule["alert"]


def test_per_domain_criticals_outlast_an_exporter_outage_until_it_pages() -> None:
    """Every per-domain critical keeps firing for the same `keep_firing_for`, and the critical
    exporter-down alert fires before the first of them can resolve (bridge + keep)."""
    per_domain = [rule for rule in CRITICALS if is_per_domain(rule)]
    assert len(per_domain) >= 8, [r["alert"] for r in per_domain]
    keeps = {rule["alert"]: seconds(rule.get("keep_firing_for")) for rule in per_domain}
    assert len(set(keeps.values())) == 1 and min(keeps.values()) >= 3600, keeps
    keep = min(keeps.values())
    down = next(rule for rule in ALERTS if rule["alert"] == "DomainwatchDownPersistent")
    assert down["labels"]["severity"] == "critical"
    assert 'up{job="domainwatch"} == 0' in down["expr"] and "absent(" in down["expr"]
    assert seconds(down["for"]) <= BRIDGE + keep, "criticals could resolve before the page"
    # Warnings and infos resolve normally: holding them would only delay good news.
    for rule in ALERTS:
        if rule["labels"]["severity"] != "critical":
            assert "keep_firing_for" not in rule, rule["alert"]


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_runbook_url_points_at_a_runbook_heading(rule: dict[str, Any]) -> None:
    url = rule["annotations"]["runbook_url"]
    base, _, anchor = url.partition("#")
    assert base == RUNBOOK_BASE
    assert anchor == rule["alert"].lower(), "the anchor is the lower-cased alert name"
    assert anchor in runbook_anchors(), f"no heading '{rule['alert']}' in {RUNBOOK}"


def test_runbook_has_no_section_without_an_alert() -> None:
    sections = re.findall(r"^## (.+?)\s*$", RUNBOOK.read_text(), re.MULTILINE)
    assert sorted(sections) == sorted(ALERT_IDS)


def test_every_alert_has_a_firing_and_a_quiet_promtool_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../rules.yml"], path
        for group in doc["tests"]:
            for case in group.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert set(ALERT_IDS) - firing == set(), "alerts never tested firing"
    assert set(ALERT_IDS) - quiet == set(), "alerts never tested quiet"
    assert (firing | quiet) - set(ALERT_IDS) == set(), "tests name unknown alerts"


def readme_alert_table() -> dict[str, tuple[str, str]]:
    """alert -> (severity, for) from the table in the README's "## Alerts" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\w+) \| (\w+) \| [^|]+ \| (\w+) \|$", section, re.MULTILINE)
    return {name: (severity, duration) for name, severity, duration in rows}


def test_readme_alert_list_matches_the_rules() -> None:
    """Every alert is in the README's alert list with its shipped severity and `for:`."""
    table = readme_alert_table()
    shipped = {rule["alert"]: (rule["labels"]["severity"], rule["for"]) for rule in ALERTS}
    assert table == shipped


# --- metric names and the job matcher -----------------------------------------------------


def test_metric_name_parser() -> None:
    # The checks below are only as good as this parser.
    expr = (
        '(time() - last_over_time(a_b{job="x", check="rdap"}[15m]) > 24 * 3600 # c d\n'
        'or up{job="x"} == 0) unless ignoring(reason) (c_d == 1) and on(job, domain) absent(e)'
    )
    assert metric_names(expr) == {"a_b", "up", "c_d", "e"}


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_alert_reads_only_contract_metrics(rule: dict[str, Any]) -> None:
    allowed = contract_metrics() | RECORDED | {"up"}
    for promql in promql_texts(rule):
        names = metric_names(promql)
        assert names, f"no metric found in {promql!r}"
        assert names <= allowed, f"not in docs/metrics.md: {sorted(names - allowed)}"


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_every_selector_has_the_job_matcher(rule: dict[str, Any]) -> None:
    for promql in promql_texts(rule):
        text = strip_comments(promql)
        for name in metric_names(promql) - RECORDED:
            for m in re.finditer(rf"(?<![\w:]){re.escape(name)}(?![\w:])\s*(\{{[^}}]*\}})?", text):
                assert m.group(1) and JOB_MATCHER in m.group(1), (
                    f"{rule['alert']}: selector {m.group(0)!r} lacks {JOB_MATCHER}"
                )


def test_job_rename_in_one_command_keeps_the_tests_green(tmp_path: Path) -> None:
    """The README's sed renames the job everywhere; the renamed rules still pass their tests."""
    readme = (ALERTING / "README.md").read_text()
    found = re.search(r"^sed -i (-e '[^']*' -e '[^']*') \\$", readme, re.MULTILINE)
    assert found, "alerting/README.md lost its sed command"
    expressions = found.group(1)
    assert expressions in RULES.read_text(), "rules.yml and README.md show different commands"
    (tmp_path / "tests").mkdir()
    for src in [RULES, *RULE_TESTS]:
        shutil.copy(src, tmp_path / src.relative_to(ALERTING))
    files = ["rules.yml", *(f"tests/{p.name}" for p in RULE_TESTS)]
    run("sed", "-i", *shlex.split(expressions.replace("my-job", "dw-prod")), *files, cwd=tmp_path)
    renamed = (tmp_path / "rules.yml").read_text()
    assert JOB_MATCHER not in renamed and 'job="dw-prod"' in renamed
    run("promtool", "test", "rules", *sorted(str(p) for p in (tmp_path / "tests").glob("*.yml")))


def test_for_durations_can_be_zeroed_for_end_to_end_tests(tmp_path: Path) -> None:
    text = re.sub(r"(?m)^( +for: ).*", r"\g<1>0s", RULES.read_text())
    assert text.count("for: 0s") == sum(1 for rule in ALERTS if "for" in rule)
    fast = tmp_path / "rules.yml"
    fast.write_text(text)
    run("promtool", "check", "rules", str(fast))


def test_thresholds_are_marked() -> None:
    # Code lines ending in "# THRESHOLD: ..." (the header comment explains the convention).
    marked = re.findall(r"^ *[^#\s].*# THRESHOLD: .*$", RULES.read_text(), re.MULTILINE)
    # 30d, 7d, persistent 7d, four staleness limits (rdap/whois, dns, email, dnssec), the
    # not-authoritative count and share, the three change windows (transfer lock, nameservers,
    # registrar), DNSSEC signatures within 3 days and 1 day, SOA serial drift
    assert len(marked) == 15, marked


# --- the Alertmanager example -------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=DomainOnHold", "domain=a.example"], "pager"),
        (["severity=warning", "alertname=DomainExpiringSoon", "domain=a.example"], "ticket"),
        # Nothing ships at info level any more; the route stays for users' own info rules.
        (["severity=info", "alertname=SomeInfoAlert", "domain=a.zz"], "null"),
        # An unsupported TLD must reach a person (issue 10).
        (["severity=warning", "alertname=DomainRdapUnsupported", "domain=a.zz"], "ticket"),
        (["severity=warning", "alertname=DomainwatchDown", "instance=x:9877"], "ticket"),
        (["severity=critical", "alertname=DomainwatchDownPersistent", "instance=x:9877"], "pager"),
        (["severity=warning", "alertname=DomainwatchDnsNotAuthoritative", "instance=x"], "ticket"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    run(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={AM_EXAMPLE}",
        f"--verify.receivers={receiver}",
        *labels,
    )


def test_alertmanager_groups_by_alert_and_domain() -> None:
    route = yaml.safe_load(AM_EXAMPLE.read_text())["route"]
    assert route["group_by"] == ["alertname", "domain"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """The example config in a real Alertmanager on loopback; returns its base URL."""
    config = yaml.safe_load(AM_EXAMPLE.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = "http://127.0.0.1:9/"  # never the placeholder hosts; nothing listens
    config_file = tmp_path / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [
            binary("prometheus-alertmanager"),
            f"--config.file={config_file}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        with httpx.Client(trust_env=False, timeout=2) as client:
            while True:
                assert proc.poll() is None, f"alertmanager exited:\n{proc.communicate()[0]}"
                try:
                    if client.get(f"{url}/-/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "alertmanager did not become ready"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_alertmanager_inhibits_by_domain(alertmanager: str) -> None:
    def alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
        return {"labels": {"alertname": name, "severity": severity, **labels}}

    posted = {
        # critical mutes the same domain's warning ...
        "critical-a": alert("DomainExpiringVerySoon", "critical", domain="a.example"),
        "warning-a": alert("DomainExpiringSoon", "warning", domain="a.example"),
        # ... and nothing of another domain, nor the domain-less exporter alerts.
        "warning-b": alert("DomainExpiringSoon", "warning", domain="b.example"),
        "exporter": alert("DomainwatchDown", "warning", instance="dw:9877"),
        # warning mutes info on the same domain.
        "warning-c": alert("DomainContactEmailSelfHosted", "warning", domain="c.example"),
        "info-c": alert("SomeInfoAlert", "info", domain="c.example"),
        # a hold explains a missing delegation: one page, for the cause.
        "hold-d": alert("DomainOnHold", "critical", domain="d.example"),
        "undelegated-d": alert("DomainNotDelegated", "critical", domain="d.example"),
        "undelegated-e": alert("DomainNotDelegated", "critical", domain="e.example"),
        # ... and every nameserver alert of a held, dying, deleted or expired domain.
        "mismatch-d": alert("DomainNameserverMismatch", "critical", domain="d.example"),
        "inconsistent-d": alert("DomainNameserverInconsistent", "warning", domain="d.example"),
        "lame-d": alert("DomainNameserverLame", "warning", domain="d.example", nameserver="n"),
        "expired-f": alert("DomainExpired", "critical", domain="f.example"),
        "mismatch-f": alert("DomainNameserverMismatch", "critical", domain="f.example"),
        "unregistered-g": alert("DomainNotRegistered", "critical", domain="g.example"),
        "undelegated-g": alert("DomainNotDelegated", "critical", domain="g.example"),
        "dying-h": alert("DomainPendingDelete", "critical", domain="h.example", status="x"),
        "mismatch-h": alert("DomainNameserverMismatch", "critical", domain="h.example"),
        # A mismatch alone is a hijack page.
        "mismatch-i": alert("DomainNameserverMismatch", "critical", domain="i.example"),
        # An intercepting network at exporter dw-n: its per-domain DNS symptoms are muted, the
        # network alert itself never is, not even by a domain-less critical of the same
        # instance; dw-m's symptoms are not touched.
        "network-n": alert("DomainwatchDnsNotAuthoritative", "warning", instance="dw-n", job="dw"),
        "down-n": alert("DomainwatchDownPersistent", "critical", instance="dw-n", job="dw"),
        "undelegated-n": alert("DomainNotDelegated", "critical", domain="n.example",
                               instance="dw-n"),
        "dnsfail-n": alert("DomainCheckFailing", "warning", domain="n2.example", check="dns",
                           instance="dw-n"),
        "rdapfail-n": alert("DomainCheckFailing", "warning", domain="n3.example", check="rdap",
                            instance="dw-n"),
        "hold-n": alert("DomainOnHold", "critical", domain="n4.example", instance="dw-n"),
        "undelegated-m": alert("DomainNotDelegated", "critical", domain="m.example",
                               instance="dw-m"),
        # The 5-minute warning under the hour-long page of the same instance only.
        "downwarn-n": alert("DomainwatchDown", "warning", instance="dw-n", job="dw"),
        "downwarn-m": alert("DomainwatchDown", "warning", instance="dw-m", job="dw"),
    }
    expected = {
        "critical-a": "active",
        "warning-a": "suppressed",
        "warning-b": "active",
        "exporter": "active",
        "warning-c": "active",
        "info-c": "suppressed",
        "hold-d": "active",
        "undelegated-d": "suppressed",
        "undelegated-e": "active",
        "mismatch-d": "suppressed",
        "inconsistent-d": "suppressed",
        "lame-d": "suppressed",
        "expired-f": "active",
        "mismatch-f": "suppressed",
        "unregistered-g": "active",
        "undelegated-g": "suppressed",
        "dying-h": "active",
        "mismatch-h": "suppressed",
        "mismatch-i": "active",
        "network-n": "active",
        "down-n": "active",
        "undelegated-n": "suppressed",
        "dnsfail-n": "suppressed",
        "rdapfail-n": "active",
        "hold-n": "active",
        "undelegated-m": "active",
        "downwarn-n": "suppressed",
        "downwarn-m": "active",
    }
    with httpx.Client(trust_env=False, timeout=5) as client:
        r = client.post(f"{alertmanager}/api/v2/alerts", json=list(posted.values()))
        assert r.status_code == 200, r.text

        def states() -> dict[str, str]:
            got = client.get(f"{alertmanager}/api/v2/alerts").json()
            by_labels = {json.dumps(a["labels"], sort_keys=True): a["status"] for a in got}
            out = {}
            for key, sent in posted.items():
                status = by_labels.get(json.dumps(sent["labels"], sort_keys=True))
                out[key] = status["state"] if status else "missing"
            return out

        # The inhibitor learns about alerts asynchronously: poll briefly.
        deadline = time.monotonic() + 10
        while (got := states()) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        assert got == expected
