"""Static checks of the Grafana dashboards, their provisioning files and the deploy artefacts.

The helpers at the top (`load_dashboards`, `iter_panel_queries`, `substitute`, `metric_names`) are
also imported by the end-to-end test that runs every panel query against a real Prometheus, so
keep their signatures stable.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
PROVISIONING_DIR = ROOT / "grafana" / "provisioning"
METRICS_DOC = ROOT / "docs" / "metrics.md"

# Where the dashboard provider in grafana/provisioning/dashboards/domainwatch.yml looks; the
# README.md and grafana/README.md tell users to copy the JSON files there.
PROVISIONED_DASHBOARD_PATH = "/var/lib/grafana/dashboards/domainwatch"

DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}

# domain_nameserver_info's per-source labels, in the nameserver table's column order.
NAMESERVER_SOURCES = ("expected", "registry", "parent", "child", "previous")

# Values for the dashboard variables when a query is run outside Grafana. `domain` must be a
# configured, checked domain in whatever Prometheus the query runs against.
DEFAULT_VARIABLES: dict[str, str] = {
    "job": "domainwatch",
    "domain": "example.com",
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
}

# Grafana variable syntaxes: ${name}, ${name:format}, [[name]] and $name.
_VARIABLE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard under grafana/dashboards, keyed by file name."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARD_DIR.glob("*.json"))
    }


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """All panels, including those nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def iter_panel_queries(
    dashboard_json: Mapping[str, Any] | str | Path,
) -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, PromQL expr) for every panel target, variables unsubstituted.

    Accepts the parsed dashboard or a path to its JSON file.
    """
    dashboard: Mapping[str, Any] = (
        json.loads(Path(dashboard_json).read_text(encoding="utf-8"))
        if isinstance(dashboard_json, str | Path)
        else dashboard_json
    )
    uid = str(dashboard["uid"])
    return [
        (uid, str(panel.get("title", "")), str(target["expr"]))
        for panel in iter_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace Grafana variables in `expr`; an unknown one raises KeyError (a typo in a query)."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        if name not in variables:
            raise KeyError(f"variable ${name} in {expr!r} has no value")
        return variables[name]

    return _VARIABLE.sub(value, expr)


# PromQL words that look like identifiers but are not metric names.
_PROMQL_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "atan2",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: selectors only, not functions, labels or keywords."""
    stripped = _STRING.sub('""', expr)
    stripped = _BRACES.sub(" ", stripped)
    stripped = _RANGE.sub(" ", stripped)
    stripped = _GROUPING.sub(" ", stripped)
    return {name for name in _IDENTIFIER.findall(stripped) if name not in _PROMQL_KEYWORDS}


def documented_metrics() -> set[str]:
    """Metric names in the first column of the tables in docs/metrics.md."""
    table_row = re.compile(r"^\|\s*`([a-zA-Z_:][\w:]*)`\s*\|", re.MULTILINE)
    names = set(table_row.findall(METRICS_DOC.read_text()))
    assert names, f"no metric table found in {METRICS_DOC}"
    return names


def variable_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(variable name, series selector) of each `label_values(selector, label)` query variable."""
    out = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert match, f"{variable['name']}: unsupported variable query {query!r}"
        out.append((variable["name"], match.group(1)))
    return out


def promtool_check_exprs(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Parse PromQL with promtool: a recording rule per expression, then `promtool check rules`."""
    rules = {
        "groups": [
            {
                "name": "dashboard_queries",
                "rules": [
                    {"record": f"dashboard_query_{index}", "expr": expr}
                    for index, expr in enumerate(exprs)
                ],
            }
        ]
    }
    rule_file = tmp_path / "dashboard_queries.yml"
    rule_file.write_text(yaml.safe_dump(rules, sort_keys=False))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (Debian package 'prometheus')"
    return subprocess.run(
        [promtool, "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ---------------------------------------------------------------------------------------------
# Dashboards

DASHBOARDS = load_dashboards()
ALL_QUERIES = [
    query for dashboard in DASHBOARDS.values() for query in iter_panel_queries(dashboard)
]


def test_expected_dashboards_exist_and_parse() -> None:
    assert set(DASHBOARDS) == {"domainwatch-overview.json", "domainwatch-domain.json"}
    for name, dashboard in DASHBOARDS.items():
        assert dashboard["title"].startswith("domainwatch"), name
        assert dashboard["refresh"] == "1m", name
        assert "domainwatch" in dashboard["tags"], name
        assert dashboard["time"]["from"].startswith("now-"), name
        assert dashboard.get("id") is None, f"{name}: an instance-specific id breaks import"
        assert list(iter_panels(dashboard)), name


def test_uids_unique() -> None:
    uids = [dashboard["uid"] for dashboard in DASHBOARDS.values()]
    assert len(uids) == len(set(uids))
    assert set(uids) == {"domainwatch-overview", "domainwatch-domain"}


def test_panel_ids_unique_and_layout_does_not_overlap() -> None:
    for name, dashboard in DASHBOARDS.items():
        panels = list(iter_panels(dashboard))
        ids = [panel["id"] for panel in panels]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        cells: dict[tuple[int, int], str] = {}
        for panel in panels:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, f"{name}: {panel['title']} is wider than the grid"
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    other = cells.setdefault((x, y), panel["title"])
                    assert other == panel["title"], f"{name}: {panel['title']} overlaps {other}"


def test_every_panel_uses_the_datasource_variable() -> None:
    for name, dashboard in DASHBOARDS.items():
        for panel in iter_panels(dashboard):
            if panel["type"] == "row":
                continue
            assert panel.get("datasource") == DATASOURCE_REF, f"{name}: {panel['title']}"
            assert panel.get("targets"), f"{name}: {panel['title']} has no query"
            for target in panel["targets"]:
                assert target.get("datasource", DATASOURCE_REF) == DATASOURCE_REF, panel["title"]
                assert target.get("expr"), f"{name}: {panel['title']} target {target['refId']}"


def test_variables() -> None:
    for name, dashboard in DASHBOARDS.items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", name
        assert variables["datasource"]["query"] == "prometheus", name
        assert variables["job"]["current"]["value"] == "domainwatch", name
        for variable in variables.values():
            if variable["type"] == "query":
                assert variable["datasource"] == DATASOURCE_REF, f"{name}: ${variable['name']}"
    domain = {v["name"]: v for v in DASHBOARDS["domainwatch-domain.json"]["templating"]["list"]}
    assert (
        domain["domain"]["definition"] == 'label_values(domain_check_success{job="$job"}, domain)'
    )


def test_every_query_only_uses_documented_metrics() -> None:
    allowed = documented_metrics() | {"up"}
    used: set[str] = set()
    for uid, title, expr in ALL_QUERIES:
        names = metric_names(expr)
        assert names, f"{uid} / {title}: no metric in {expr!r}"
        assert names <= allowed, f"{uid} / {title}: undocumented {sorted(names - allowed)}"
        used |= names
    for name, dashboard in DASHBOARDS.items():
        for variable, selector in variable_queries(dashboard):
            assert metric_names(selector) <= allowed, f"{name}: ${variable}"
    # The dashboards show the headline facts of the metric contract.
    assert {
        "domain_expiry_days",
        "domain_hold",
        "domain_status",
        "domain_info",
        "domain_nameserver_mismatch",
        "domain_nameserver_info",
        "domain_nameserver_lame",
        "domain_check_success",
        "domain_check_error_info",
        "domain_check_last_success_timestamp_seconds",
        "domain_contact_email_deliverable",
        "domain_registered",
        "domain_delegated",
    } <= used


def test_metric_name_extraction() -> None:
    # The documented-metrics check above is only as good as this parser.
    assert metric_names(
        'max by (check, reason) (domain_check_error_info{job="$job", reason=~"a|b"})'
        ' or label_replace(foo_total{x="domain_hold"} == 1, "reason", "-", "", "")'
    ) == {"domain_check_error_info", "foo_total"}
    assert metric_names(
        "sum by (outcome) (rate(bar_total[10m])) * on(domain) group_left(registrar) baz offset 1h"
    ) == {"bar_total", "baz"}
    assert metric_names("count(x == 1) or vector(0)") == {"x"}
    assert metric_names("time() - 1e3 * 86400") == set()


def test_substitute() -> None:
    assert substitute(
        'a{job="$job", d="${domain}", e="[[job]]"}[$__rate_interval]', DEFAULT_VARIABLES
    ) == ('a{job="domainwatch", d="example.com", e="domainwatch"}[5m]')
    assert substitute('x{job="${job:raw}"}', {"job": "j"}) == 'x{job="j"}'
    with pytest.raises(KeyError):
        substitute('x{job="$jobs"}', DEFAULT_VARIABLES)


def test_every_query_parses_with_promtool(tmp_path: Path) -> None:
    exprs = [substitute(expr, DEFAULT_VARIABLES) for _, _, expr in ALL_QUERIES]
    exprs += [
        substitute(selector, DEFAULT_VARIABLES)
        for dashboard in DASHBOARDS.values()
        for _, selector in variable_queries(dashboard)
    ]
    result = promtool_check_exprs(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


def test_promtool_check_rejects_a_bad_query(tmp_path: Path) -> None:
    result = promtool_check_exprs(['sum by (domain) (domain_hold{job="x"}'], tmp_path)
    assert result.returncode != 0


def test_problem_counts_return_zero_instead_of_no_data() -> None:
    # count() of nothing is no series, and a stat panel would show "No data" for "0 problems".
    for uid, title, expr in ALL_QUERIES:
        if expr.startswith("count("):
            assert expr.endswith(" or vector(0)"), f"{uid} / {title}: {expr}"
    counted = {title for uid, title, expr in ALL_QUERIES if uid == "domainwatch-overview"}
    assert {
        "Domains on hold",
        "Nameserver mismatch",
        "Undeliverable contacts",
        "Failing checks",
        "Expiring < 30 d",
        "Not registered",
    } <= counted


def test_table_queries_are_instant_and_transformations_name_real_queries() -> None:
    for name, dashboard in DASHBOARDS.items():
        for panel in iter_panels(dashboard):
            targets = panel.get("targets", [])
            refs = [target["refId"] for target in targets]
            assert len(refs) == len(set(refs)), f"{name}: {panel['title']}"
            if panel["type"] == "table":
                for target in targets:
                    assert target.get("format") == "table", f"{name}: {panel['title']}"
                    assert target["instant"] is True and target["range"] is False, panel["title"]
            for transformation in panel.get("transformations", []):
                options = json.dumps(transformation["options"])
                for ref in re.findall(r"Value #(\w+)", options):
                    assert ref in refs, f"{name}: {panel['title']} names missing query {ref}"


def test_overview_domains_table() -> None:
    overview = DASHBOARDS["domainwatch-overview.json"]
    (table,) = [p for p in iter_panels(overview) if p["title"] == "Domains"]
    assert table["options"]["sortBy"] == [{"displayName": "Days to expiry", "desc": False}]
    assert [t["id"] for t in table["transformations"]] == ["merge", "organize"]
    overrides = {
        o["matcher"]["options"]: o["properties"] for o in table["fieldConfig"]["overrides"]
    }
    expiry = {p["id"]: p["value"] for p in overrides["Days to expiry"]}
    assert expiry["thresholds"]["steps"] == [
        {"color": "red", "value": None},
        {"color": "orange", "value": 7},
        {"color": "green", "value": 30},
    ]
    links = {p["id"]: p["value"] for p in overrides["Domain"]}["links"]
    assert links[0]["url"].startswith("/d/domainwatch-domain/")
    assert "var-domain=${__value.raw}" in links[0]["url"]
    exprs = " ".join(t["expr"] for t in table["targets"])
    for metric in (
        "domain_expiry_days",
        "domain_info",
        "domain_hold",
        "domain_nameserver_mismatch",
        "domain_contact_email_deliverable",
        "domain_check_success",
    ):
        assert metric in exprs


def test_domain_dashboard_nameserver_matrix() -> None:
    # domain_nameserver_info is already a matrix: a series (row) per nameserver, a label
    # (column) per source that has a set, "1" listed / "0" not listed. The table keeps every
    # source label and maps the two values; a source without a set has no column (unknown).
    domain = DASHBOARDS["domainwatch-domain.json"]
    (table,) = [p for p in iter_panels(domain) if p["title"] == "Nameservers by source"]
    (target,) = table["targets"]
    grouping = re.fullmatch(
        r'max by \(([\w, ]+)\) \(domain_nameserver_info\{job="\$job", domain="\$domain"\}\)',
        target["expr"],
    )
    assert grouping, target["expr"]
    assert grouping.group(1).split(", ") == ["nameserver", *NAMESERVER_SOURCES]
    assert [t["id"] for t in table["transformations"]] == ["organize"]
    organize = table["transformations"][0]["options"]
    assert organize["excludeByName"] == {"Time": True, "Value": True}
    assert organize["indexByName"] == {
        name: i for i, name in enumerate(["nameserver", *NAMESERVER_SOURCES])
    }
    assert organize["renameByName"] == {"nameserver": "Nameserver"}
    mappings = table["fieldConfig"]["defaults"]["mappings"]
    values = next(m["options"] for m in mappings if m["type"] == "value")
    assert (values["1"]["text"], values["1"]["color"]) == ("\u2714", "green")
    assert (values["0"]["text"], values["0"]["color"]) == ("\u2718", "red")
    # A cell without a value (a row whose label set differs, e.g. two exporters) is unknown.
    specials = {
        m["options"]["match"]: m["options"]["result"] for m in mappings if m["type"] == "special"
    }
    assert specials["null+nan"]["text"] == specials["empty"]["text"] == "?"
    (timeline,) = [p for p in iter_panels(domain) if p["title"] == "RDAP status history"]
    assert timeline["type"] == "state-timeline"
    assert 'domain_status{job="$job", domain="$domain"}' in timeline["targets"][0]["expr"]


# ---------------------------------------------------------------------------------------------
# Provisioning


def test_datasource_provisioning() -> None:
    config = yaml.safe_load((PROVISIONING_DIR / "datasources" / "prometheus.yml").read_text())
    assert config["apiVersion"] == 1
    (datasource,) = config["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"].startswith("http")


def test_dashboard_provisioning_points_at_the_documented_path() -> None:
    config = yaml.safe_load((PROVISIONING_DIR / "dashboards" / "domainwatch.yml").read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == PROVISIONED_DASHBOARD_PATH
    for doc in (ROOT / "grafana" / "README.md", ROOT / "README.md"):
        assert PROVISIONED_DASHBOARD_PATH in doc.read_text(), doc


# ---------------------------------------------------------------------------------------------
# Dockerfile, systemd unit, deploy docs


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_shape() -> None:
    instructions = _dockerfile_instructions()
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert froms and all(rest.startswith("python:3.11-slim") for rest in froms)
    final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("EXPOSE", "9877") in final
    entrypoint = json.loads(next(rest for keyword, rest in final if keyword == "ENTRYPOINT"))
    assert entrypoint == ["domainwatch"]
    cmd = json.loads(next(rest for keyword, rest in final if keyword == "CMD"))
    assert cmd[cmd.index("--config.file") + 1] == "/etc/domainwatch/config.yml"
    assert cmd[cmd.index("--state.file") + 1] == "/var/lib/domainwatch/state.json"
    # Dependencies get their own layer: pyproject.toml is copied before the package source.
    copies = [rest for keyword, rest in instructions if keyword == "COPY"]
    first_pyproject = next(i for i, c in enumerate(copies) if "pyproject.toml" in c)
    first_source = next(i for i, c in enumerate(copies) if "exporter" in c.split())
    assert first_pyproject < first_source


def _healthcheck_command() -> list[str]:
    (rest,) = [rest for keyword, rest in _dockerfile_instructions() if keyword == "HEALTHCHECK"]
    command: list[str] = json.loads(rest[rest.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    assert "http://127.0.0.1:9877/-/healthy" in command[2]
    return command


class _Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/-/healthy" else 404)
        self.end_headers()
        self.wfile.write(b"Healthy\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_dockerfile_healthcheck_runs() -> None:
    code = _healthcheck_command()[2]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        ok = subprocess.run(
            [sys.executable, "-c", code.replace(":9877/", f":{port}/")],
            capture_output=True,
            timeout=20,
            check=False,
        )
        assert ok.returncode == 0, ok.stderr
        wrong_path = code.replace(":9877/-/healthy", f":{port}/-/missing")
        missing = subprocess.run(
            [sys.executable, "-c", wrong_path], capture_output=True, timeout=20, check=False
        )
        assert missing.returncode != 0
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as probe:  # a port with nothing listening: the check must fail
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    down = subprocess.run(
        [sys.executable, "-c", code.replace(":9877/", f":{closed}/")],
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert down.returncode != 0


def test_dockerignore_keeps_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"  # allow-list: only what the image needs reaches the build context
    for needed in ("pyproject.toml", "README.md", "exporter"):
        assert f"!{needed}" in lines or f"!{needed}/" in lines


def test_systemd_unit() -> None:
    sections: dict[str, dict[str, list[str]]] = {}
    current = ""
    for raw in (ROOT / "deploy" / "domainwatch.service").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = {}
            continue
        key, _, value = line.partition("=")
        sections[current].setdefault(key, []).append(value)
    service = sections["Service"]
    assert service.get("DynamicUser") == ["yes"] or "User" in service
    assert service["ProtectSystem"] == ["strict"]
    assert service["StateDirectory"] == ["domainwatch"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["NoNewPrivileges"] == ["yes"]
    (exec_start,) = service["ExecStart"]
    assert exec_start.split()[0].endswith("/domainwatch")
    assert "--config.file=/etc/domainwatch/config.yml" in exec_start.split()
    assert "--state.file=/var/lib/domainwatch/state.json" in exec_start.split()
    assert sections["Install"]["WantedBy"] == ["multi-user.target"]


def _yaml_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL)


def test_deploy_doc_prometheus_snippet_passes_promtool(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    for needed in (
        "alerting/rules.yml",
        "alerting/alertmanager.example.yml",
        "deploy/domainwatch.service",
        "docker run",
        "/etc/domainwatch/config.yml",
        "grafana/README.md",
    ):
        assert needed in text, needed
    blocks = [yaml.safe_load(block) for block in _yaml_blocks(text)]
    (config,) = [block for block in blocks if isinstance(block, dict) and "scrape_configs" in block]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "domainwatch"
    assert job["scrape_interval"] == "1m"
    assert config["rule_files"]
    # promtool resolves rule_files on disk: point them at a valid empty rule file here.
    rules = tmp_path / "rules.yml"
    rules.write_text("groups: []\n")
    config["rule_files"] = [str(rules)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        ["promtool", "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# Issue 11: a panel per new signal on the per-domain dashboard; the overview counts and lists them

ISSUE_11_SIGNALS = {
    "domain_dnssec_signed",
    "domain_dnssec_ds_mismatch",
    "domain_dnssec_signature_expiry_timestamp_seconds",
    "domain_nameserver_glue_mismatch",
    "domain_soa_serial_drift",
    "domain_nameserver_domain_healthy",
    "domain_transfer_lock",
    "domain_last_changed_timestamp_seconds",
    "domain_nameservers_changed_timestamp_seconds",
    "domain_registrar_changed_timestamp_seconds",
    "domain_contact_email_personal",
}


def _used(uid: str) -> dict[str, set[str]]:
    """metric -> titles of the panels of dashboard `uid` that query it."""
    out: dict[str, set[str]] = {}
    for dashboard_uid, title, expr in ALL_QUERIES:
        if dashboard_uid == uid:
            for name in metric_names(expr):
                out.setdefault(name, set()).add(title)
    return out


def test_domain_dashboard_has_a_panel_per_issue_11_signal() -> None:
    used = _used("domainwatch-domain")
    assert set(used) >= ISSUE_11_SIGNALS, sorted(ISSUE_11_SIGNALS - set(used))
    # Each signal on a panel of its own (not only folded into another panel's query).
    titles = {name: used[name] for name in ISSUE_11_SIGNALS}
    owners = [t for t in titles.values() if len(t) == 1]
    assert len({next(iter(t)) for t in owners}) == len(owners), titles


def test_overview_counts_and_lists_issue_11_problems() -> None:
    used = _used("domainwatch-overview")
    # The domain-level problems (not the informational timestamps) each have a count ...
    counted = {
        "domain_nameserver_domain_healthy",
        "domain_dnssec_ds_mismatch",
        "domain_dnssec_signature_expiry_timestamp_seconds",
        "domain_nameservers_changed_timestamp_seconds",
        "domain_transfer_lock",
        "domain_contact_email_personal",
    }
    assert counted <= set(used), sorted(counted - set(used))
    # ... and a column in the problem table.
    overview = DASHBOARDS["domainwatch-overview.json"]
    (table,) = [p for p in iter_panels(overview) if p["title"] == "Domains"]
    exprs = " ".join(t["expr"] for t in table["targets"])
    for metric in (
        "domain_nameserver_domain_healthy",
        "domain_transfer_lock",
        "domain_contact_email_personal",
        "domain_dnssec_ds_mismatch",
    ):
        assert metric in exprs, metric
    renamed = next(t for t in table["transformations"] if t["id"] == "organize")["options"]
    assert {"NS domains", "Transfer lock", "Personal contact", "DNSSEC"} <= set(
        renamed["renameByName"].values()
    )


def test_panels_of_metrics_that_may_be_absent_fall_back_to_a_value() -> None:
    """A series that is legitimately absent (no change seen yet, an unsigned domain, only
    in-bailiwick nameservers) must not leave its panel on "No data": each such query has an
    `or` fallback whose value a mapping names."""
    maybe_absent = {
        "domain_nameservers_changed_timestamp_seconds",
        "domain_registrar_changed_timestamp_seconds",
        "domain_dnssec_ds_mismatch",
        "domain_dnssec_signature_expiry_timestamp_seconds",
        "domain_nameserver_domain_healthy",
        "domain_nameserver_glue_mismatch",
    }
    for uid, title, expr in ALL_QUERIES:
        if uid == "domainwatch-domain" and metric_names(expr) & maybe_absent:
            assert " or " in expr, f"{title}: {expr}"
