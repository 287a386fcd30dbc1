"""The Helm chart (deploy/helm/domainwatch), rendered by the real helm binary and checked offline.

- `helm lint --strict` and `helm template` for the default, sharded and everything-on values;
- every rendered built-in object validated against the Kubernetes OpenAPI schemas bundled in the
  `kubernetes-validate` package (oldest supported and newest Kubernetes), strict: unknown fields
  are errors;
- the ServiceMonitor and PrometheusRule against schemas of their own below (the fields of
  prometheus-operator's CRDs that the chart uses, no unknown keys), and wired to each other: the
  ServiceMonitor selects the Service, which selects the pods, on a port they expose;
- the PrometheusRule's groups are alerting/rules.yml, read now (the chart reaches it through a
  symlink), and `promtool check rules` accepts them; the dashboards are grafana/dashboards/*.json;
- the ConfigMap's config.yml passes the exporter's own `--config.check`.

Helm comes from `bash .ci/chart-test --install-only` (CI runs it). Without helm these tests skip,
except under CI=true, where they fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

import exporter

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "domainwatch"
RULES = ROOT / "alerting" / "rules.yml"
DASHBOARDS = ROOT / "grafana" / "dashboards"
NAMESPACE = "monitoring-test"
RELEASE = "dw"
VALUES = {
    "default": [],
    "sharded": [CHART / "ci" / "sharded-values.yaml"],
    "full": [CHART / "ci" / "full-values.yaml"],
}
# kubeVersion in Chart.yaml is >=1.25; check the oldest and the newest schemas bundled.
KUBE_VERSIONS = ("1.25.0", None)


def _find_helm() -> str | None:
    beside_python = Path(sys.executable).parent / "helm"  # .ci/chart-test installs it there
    return shutil.which("helm") or (str(beside_python) if beside_python.exists() else None)


HELM = _find_helm()


@pytest.fixture(autouse=True)
def _need_helm() -> None:
    if HELM is None:
        message = "helm not found: run `bash .ci/chart-test --install-only`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def helm(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    done = subprocess.run(
        [HELM, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(map(str, args))} failed:\n{done.stderr}")
    return done


@cache
def render(case: str, *sets: str) -> tuple[dict[str, Any], ...]:
    args: list[str | Path] = ["template", RELEASE, CHART, "--namespace", NAMESPACE]
    for f in VALUES[case]:
        args += ["-f", f]
    for s in sets:
        args += ["--set", s]
    out = helm(*args).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def one(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"want one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def config_map(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "config.yml" in d.get("data", {})]
    return cm


def container(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (c,) = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return dict(c)


# --- lint, schemas -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(VALUES))
def test_helm_lint_strict(case: str) -> None:
    args: list[str | Path] = ["lint", "--strict", CHART]
    for f in VALUES[case]:
        args += ["-f", f]
    done = helm(*args)
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("case", sorted(VALUES))
@pytest.mark.parametrize("kube", KUBE_VERSIONS, ids=lambda v: v or "latest")
def test_builtin_objects_match_kubernetes_schemas(case: str, kube: str | None) -> None:
    version = kube or kubernetes_validate.latest_version()
    builtin = [d for d in render(case) if "." not in d["apiVersion"].split("/")[0]]
    assert {d["kind"] for d in builtin} >= {"ConfigMap", "Service", "StatefulSet"}
    for doc in builtin:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']} on {version}: "
                                 f"{exc.message} at {list(exc.path)}") from None


def test_schema_validation_can_fail() -> None:
    """The validator in use rejects a misspelt field and a wrong type (else the above proves
    nothing)."""
    sts = json.loads(json.dumps(one(render("default"), "StatefulSet")))
    sts["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFs"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, "1.25.0", strict=True)
    sts = json.loads(json.dumps(one(render("default"), "StatefulSet")))
    sts["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, "1.25.0", strict=True)


def test_values_schema_rejects_bad_values() -> None:
    for bad in ("shards=0", "log.level=verbose", "port=70000", "serviceMonitor.interval=often"):
        done = helm("template", RELEASE, CHART, "--set", bad, check=False)
        assert done.returncode != 0, f"--set {bad} was accepted"


# --- the workload ------------------------------------------------------------------------------


def test_default_is_one_hardened_replica_with_probes() -> None:
    docs = render("default")
    assert {d["kind"] for d in docs} == {
        "ServiceAccount", "ConfigMap", "Service", "StatefulSet",
    }
    sts = one(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == 1
    pod = sts["spec"]["template"]["spec"]
    c = container(docs)
    assert not [a for a in c["args"] if a.startswith("--shard")]
    assert "--config.file=/etc/domainwatch/config.yml" in c["args"]
    assert "--state.file=/var/lib/domainwatch/state.json" in c["args"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    # Pod Security Standard "restricted" also wants a seccomp profile.
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]

    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert f"--web.listen-address=:{ports['http']}" in c["args"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http", "scheme": "HTTP"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http", "scheme": "HTTP"}

    # Config and state are mounted where the args point; the state is a claim per pod.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/etc/domainwatch"] == "config"
    assert mounts["/var/lib/domainwatch"] == "state"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map(docs)["metadata"]["name"]


def test_sharded_values_pass_the_shard_flags() -> None:
    docs = render("sharded")
    assert one(docs, "StatefulSet")["spec"]["replicas"] == 3
    args = container(docs)["args"]
    assert "--shard.count=3" in args
    assert "--shard.index-from-hostname" in args


def test_config_checksum_follows_the_config() -> None:
    def checksum(*sets: str) -> str:
        sts = one(render("default", *sets), "StatefulSet")
        return str(sts["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    base = checksum()
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum("log.level=debug") == base  # not the config: no restart
    assert checksum("config.rdap.interval=1h") != base
    assert checksum("config.domains[0]=example.com") != base


@pytest.mark.parametrize("case", sorted(VALUES))
def test_configmap_passes_the_exporters_config_check(case: str, tmp_path: Path) -> None:
    cm = config_map(render(case))
    config = tmp_path / "config.yml"
    config.write_text(cm["data"]["config.yml"])
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(config), "--config.check"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    domains = yaml.safe_load(cm["data"]["config.yml"]).get("domains") or []
    assert f"OK, {len(domains)} domains" in done.stdout


def test_web_config_secret_tls_probes_and_scrape() -> None:
    docs = render("full")
    values = yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text())
    secret = one(docs, "Secret")
    assert yaml.safe_load(secret["stringData"]["web-config.yml"]) == values["webConfig"]["config"]
    c = container(docs)
    assert "--web.config.file=/etc/domainwatch-web/web-config.yml" in c["args"]
    assert c["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert c["readinessProbe"]["httpGet"]["httpHeaders"] == values["probeHttpHeaders"]
    annotations = one(docs, "StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/web-config" in annotations
    (endpoint,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["basicAuth"] == values["serviceMonitor"]["basicAuth"]
    # The image digest wins over the tag.
    assert c["image"] == f"ghcr.io/domainwatch/domainwatch@{values['image']['digest']}"


def test_chart_app_version_is_the_exporters() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == exporter.__version__
    assert container(render("default"))["image"].endswith(f":{exporter.__version__}")


# --- prometheus-operator objects ---------------------------------------------------------------

# prometheus-operator's Duration pattern.
DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                            "maxLength": 63},
                   "namespace": {"type": "string"}, "labels": STRING_MAP,
                   "annotations": STRING_MAP},
}
SECRET_KEY = {"type": "object", "required": ["key"], "additionalProperties": False,
              "properties": {"name": {"type": "string"}, "key": {"type": "string"},
                             "optional": {"type": "boolean"}}}
RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod",
                            "HashMod", "labelmap", "LabelMap", "labeldrop", "LabelDrop",
                            "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase",
                            "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"]},
        "sourceLabels": {"type": "array", "items": {"type": "string"}},
        "separator": {"type": "string"}, "targetLabel": {"type": "string"},
        "regex": {"type": "string"}, "modulus": {"type": "integer"},
        "replacement": {"type": "string"},
    },
}
# The subset of monitoring.coreos.com/v1 ServiceMonitor that the chart writes; no unknown keys.
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {"type": "object", "additionalProperties": False,
                             "properties": {"matchLabels": STRING_MAP,
                                            "matchExpressions": {"type": "array"}}},
                "namespaceSelector": {"type": "object", "additionalProperties": False,
                                      "properties": {"any": {"type": "boolean"},
                                                     "matchNames": {"type": "array",
                                                                    "items": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["port"],
                    "properties": {
                        "port": {"type": "string"}, "path": {"type": "string"},
                        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                        "interval": {"type": "string", "pattern": DURATION},
                        "scrapeTimeout": {"type": "string", "pattern": DURATION},
                        "honorLabels": {"type": "boolean"},
                        "tlsConfig": {"type": "object", "additionalProperties": False,
                                      "properties": {
                                          "insecureSkipVerify": {"type": "boolean"},
                                          "serverName": {"type": "string"},
                                          "ca": {"type": "object"}, "cert": {"type": "object"},
                                          "keySecret": SECRET_KEY, "caFile": {"type": "string"},
                                          "certFile": {"type": "string"},
                                          "keyFile": {"type": "string"}}},
                        "basicAuth": {"type": "object", "additionalProperties": False,
                                      "properties": {"username": SECRET_KEY,
                                                     "password": SECRET_KEY}},
                        "relabelings": {"type": "array", "items": RELABEL},
                        "metricRelabelings": {"type": "array", "items": RELABEL},
                    },
                }},
            },
        },
    },
}
RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string", "minLength": 1}, "record": {"type": "string", "minLength": 1},
        "expr": {"type": ["string", "integer"], "minLength": 1},
        "for": {"type": "string", "pattern": DURATION},
        "keep_firing_for": {"type": "string", "pattern": DURATION, "minLength": 1},
        "labels": STRING_MAP, "annotations": STRING_MAP,
    },
}
# The subset of monitoring.coreos.com/v1 PrometheusRule that the chart writes; no unknown keys.
PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": METADATA,
        "spec": {"type": "object", "additionalProperties": False, "required": ["groups"],
                 "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                     "type": "object",
                     "additionalProperties": False,
                     "required": ["name", "rules"],
                     "properties": {
                         "name": {"type": "string", "minLength": 1},
                         "interval": {"type": "string", "pattern": DURATION},
                         "query_offset": {"type": "string", "pattern": DURATION},
                         "limit": {"type": "integer"},
                         "labels": STRING_MAP,
                         "rules": {"type": "array", "minItems": 1, "items": RULE},
                     },
                 }}}},
    },
}


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|[smhdwy])", duration))


def _schema_errors(doc: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("case", ["sharded", "full"])
def test_service_monitor_fields_and_wiring(case: str) -> None:
    docs = render(case)
    sm = one(docs, "ServiceMonitor")
    assert _schema_errors(sm, SERVICE_MONITOR) == []
    svc = one(docs, "Service")
    sts = one(docs, "StatefulSet")
    # ServiceMonitor -> Service -> pods, on a named port that the container exposes.
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert NAMESPACE in sm["spec"]["namespaceSelector"]["matchNames"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    container_ports = {p["name"] for p in container(docs)["ports"]}
    for endpoint in sm["spec"]["endpoints"]:
        assert endpoint["port"] in svc_ports
        assert svc_ports[endpoint["port"]]["targetPort"] in container_ports
        assert endpoint["path"] == "/metrics"
        assert _seconds(endpoint["scrapeTimeout"]) <= _seconds(endpoint["interval"])
        # The rules bridge missed scrapes over 15m: scrape every 2 minutes or faster.
        assert _seconds(endpoint["interval"]) <= 120
        # The job label the rules and dashboards select.
        assert {"action": "replace", "targetLabel": "job",
                "replacement": sm_job(case)} in endpoint["relabelings"]


def sm_job(case: str) -> str:
    return "domains" if case == "full" else "domainwatch"


def test_crd_schemas_can_fail() -> None:
    sm = json.loads(json.dumps(one(render("sharded"), "ServiceMonitor")))
    sm["spec"]["endpoints"][0]["scrapeTimout"] = "10s"
    assert _schema_errors(sm, SERVICE_MONITOR)
    pr = json.loads(json.dumps(one(render("full"), "PrometheusRule")))
    pr["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    assert _schema_errors(pr, PROMETHEUS_RULE)


def test_prometheus_rule_is_alerting_rules_yml() -> None:
    """One source: the chart's rule groups are alerting/rules.yml as it is now."""
    docs = render("default", "prometheusRule.enabled=true")
    pr = one(docs, "PrometheusRule")
    assert _schema_errors(pr, PROMETHEUS_RULE) == []
    assert pr["metadata"]["namespace"] == NAMESPACE
    assert pr["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_prometheus_rule_follows_the_job_name() -> None:
    pr = one(render("full"), "PrometheusRule")
    assert _schema_errors(pr, PROMETHEUS_RULE) == []
    source = RULES.read_text()
    assert 'job="domainwatch"' in source
    want = yaml.safe_load(source.replace('job="domainwatch"', 'job="domains"'))["groups"]
    assert pr["spec"]["groups"] == want
    assert 'job="domainwatch"' not in json.dumps(pr)


def test_promtool_accepts_the_rendered_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing (.ci/run installs Debian's prometheus)")
        pytest.skip("promtool missing")
    for case in ("full",):
        groups = one(render(case), "PrometheusRule")["spec"]["groups"]
        path = tmp_path / f"{case}.rules.yml"
        path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        done = subprocess.run([promtool, "check", "rules", str(path)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert re.search(r"SUCCESS: [1-9][0-9]* rules found", done.stdout)
    # It can fail: a broken expression is refused.
    groups[0]["rules"][0]["expr"] = "domain_expiry_days{"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    done = subprocess.run([promtool, "check", "rules", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0


def test_dashboard_configmaps_are_grafana_dashboards() -> None:
    docs = render("full")
    values = yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text())
    maps = [d for d in docs if d["kind"] == "ConfigMap" and "-dashboard-" in d["metadata"]["name"]]
    sources = sorted(DASHBOARDS.glob("*.json"))
    assert sources
    assert sorted(k for m in maps for k in m["data"]) == [p.name for p in sources]
    for m in maps:
        assert m["metadata"]["labels"]["grafana_dashboard"] == "1"  # the sidecar's default label
        assert m["metadata"]["namespace"] == values["dashboards"]["namespace"]
        assert m["metadata"]["annotations"] == values["dashboards"]["annotations"]
        for name, text in m["data"].items():
            assert json.loads(text) == json.loads((DASHBOARDS / name).read_text())
            assert len(text.encode()) < 1024 * 1024 - 4096  # a ConfigMap holds at most 1 MiB
    assert not [d for d in render("default") if "-dashboard-" in d["metadata"]["name"]]


def test_chart_reaches_the_sources_through_symlinks() -> None:
    """A copy would drift from alerting/ and grafana/; the symlinks cannot."""
    assert (CHART / "files" / "rules.yml").resolve() == RULES.resolve()
    assert (CHART / "files" / "dashboards").resolve() == DASHBOARDS.resolve()


def test_packaged_chart_carries_the_sources(tmp_path: Path) -> None:
    """`helm package` follows the symlinks: the .tgz renders the same rules outside the repo."""
    helm("package", CHART, "--destination", tmp_path)
    (tgz,) = tmp_path.glob("domainwatch-*.tgz")
    with tarfile.open(tgz) as tar:
        member = tar.extractfile("domainwatch/files/rules.yml")
        assert member is not None
        assert hashlib.sha256(member.read()).digest() == hashlib.sha256(RULES.read_bytes()).digest()
        names = tar.getnames()
    for source in DASHBOARDS.glob("*.json"):
        assert f"domainwatch/files/dashboards/{source.name}" in names
    assert not [n for n in names if "/ci/" in n]  # test values stay out (.helmignore)
    out = helm("template", RELEASE, tgz, "--set", "prometheusRule.enabled=true").stdout
    pr = one(tuple(d for d in yaml.safe_load_all(out) if d), "PrometheusRule")
    assert pr["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
