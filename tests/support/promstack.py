"""Real Prometheus + Alertmanager on loopback, wired to the project's own alerting files.

    with PromStack(workdir, exporter_target="127.0.0.1:9123") as stack:   # or a list of them
        stack.prometheus.query('domain_hold{domain="x.test"}')         # /api/v1/query -> data
        stack.prometheus.query_range("up", start, end, step=1)         # /api/v1/query_range
        stack.webhook.wait_for(lambda n: ..., timeout=20)              # Alertmanager's POSTs
        stack.webhook.alerts()                                         # every alert received
        stack.alertmanager.alerts()                                    # active / suppressed

What runs, all on 127.0.0.1 with free ports, fresh storage, and configs generated here (never
the distribution's files in /etc):

- `prometheus` (Debian package `prometheus`): scrape and evaluation interval 1 s, one scrape job
  `job_name: domainwatch` (the job name alerting/rules.yml selects on) with the exporter (or
  each of several exporters, one `instance` each) as its targets,
  `--rules.alert.resend-delay=2s` (the default re-send of 1 minute would lose an alert that
  fired before the notifier had discovered Alertmanager), and alerting to the Alertmanager
  below.
- `prometheus-alertmanager` (Debian's name for alertmanager): `--cluster.listen-address=`
  (clustering would bind 0.0.0.0:9094) and a fresh `--storage.path` (the notification log
  survives restarts and would swallow a repeat notification).
- `WebhookReceiver`: an in-process `http.server` that records every JSON body POSTed to it.

THE RULES UNDER TEST ARE A REWRITTEN COPY. `shorten_for_durations` loads alerting/rules.yml,
replaces every rule's `for:` (15m, 1h, 7d, ...) with `for: 2s` (DomainwatchAbsent and
DomainwatchDownPersistent: 30s, see FOR_OVERRIDES; a test may pass its own overrides) and every
`keep_firing_for:` (1h) with `keep_firing_for: 2s`, and writes the result to the work
directory; expressions, labels and annotations are copied untouched (and checked to be
identical). Alerts therefore fire about 2 s after their expression becomes true instead of after
minutes or days, and resolve about 2 s after it stops. A test that passes here proves the
expressions, labels, routing and inhibition, not the production `for:` / `keep_firing_for:`
values (alerting/tests/*.yml pins those with promtool unit tests).

THE ALERTMANAGER CONFIG IS A REWRITTEN COPY of alerting/alertmanager.example.yml
(`rewrite_alertmanager_config`): every receiver's `webhook_configs[*].url` becomes
`<receiver base>/<receiver name>` (so a test can see which receiver a notification was routed
to, e.g. `/pager`), every route's `group_wait`/`group_interval` becomes 1s and every
`repeat_interval` 24h (no repeats during a test, so each notification is a state change).
Routes, matchers, inhibit rules and `send_resolved` are kept as written. A receiver with any
integration other than a webhook (PagerDuty, Slack, e-mail...) is refused: it would try to reach
the internet.

Both generated configs are validated with `promtool check config` (which also checks the rule
file) and `amtool check-config` before the servers start; a rejected config fails the fixture
with the tool's output. Missing binaries fail loudly (CI installs them), never skip.

Processes are started with PR_SET_PDEATHSIG (they die if pytest dies) and stopped by pid only,
after checking `/proc/<pid>/cmdline` still names our config file (pid reuse guard).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import json
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.support.exporter_proc import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = REPO_ROOT / "alerting" / "rules.yml"
ALERTMANAGER_EXAMPLE = REPO_ROOT / "alerting" / "alertmanager.example.yml"

JOB_NAME = "domainwatch"  # what every selector in alerting/rules.yml reads (job="domainwatch")
SHORT_FOR = "2s"
# Alerts whose `for:` must stay longer than SHORT_FOR in the test. Prometheus's discovery manager
# hands the scrape manager its first targets only after its 5 s update throttle (measured: first
# `up` sample 5.5 s after start), so `absent(up{job="domainwatch"})` is true for the first ~5
# evaluations of every fresh Prometheus. Production's `for: 15m` covers that start-up gap; a 2 s
# `for:` would page DomainwatchAbsent on every test run. 30 s is longer than the gap and longer
# than the tests run after it. DomainwatchDownPersistent reads the same absent() and gets the same.
FOR_OVERRIDES: Mapping[str, str] = {"DomainwatchAbsent": "30s", "DomainwatchDownPersistent": "30s"}
SHORT_KEEP_FIRING = "2s"
SCRAPE_INTERVAL = "1s"
EVALUATION_INTERVAL = "1s"
RESEND_DELAY = "2s"
GROUP_WAIT = "1s"
GROUP_INTERVAL = "1s"
REPEAT_INTERVAL = "24h"

_PR_SET_PDEATHSIG = 1
_READY_TIMEOUT = 20.0


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when pytest dies, so no server outlives its run."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        # CI installs these: a missing binary is an environment bug, never a skip.
        raise RuntimeError(f"{name} not found on PATH (apt-get install {package})")
    return path


def wait_until(
    predicate: Callable[[], Any], timeout: float, message: str | Callable[[], str],
    interval: float = 0.2,
) -> Any:
    """Call `predicate` until it returns something truthy; return that, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"not within {timeout:g}s: {text}")
        time.sleep(interval)


# --- config rewriting ----------------------------------------------------------------------------

def shorten_for_durations(
    rules: Mapping[str, Any],
    duration: str = SHORT_FOR,
    overrides: Mapping[str, str] | None = None,
    keep_firing: str = SHORT_KEEP_FIRING,
) -> dict[str, Any]:
    """A deep copy of a parsed rule file in which every `for:` is `duration`, except for the
    alerts named in `overrides` (alert name -> their shortened `for:`; default FOR_OVERRIDES),
    and every `keep_firing_for:` is `keep_firing`.

    Only those keys change: the test asserts the expressions themselves, so they must be
    the shipped ones byte for byte (checked here, in case a future edit touches more).
    """
    overrides = FOR_OVERRIDES if overrides is None else overrides
    out = copy.deepcopy(dict(rules))
    for group in out.get("groups", []):
        for rule in group.get("rules", []):
            if "for" in rule:
                rule["for"] = overrides.get(rule.get("alert", ""), duration)
            if "keep_firing_for" in rule:
                rule["keep_firing_for"] = keep_firing
    before = [r.get("expr") for g in rules.get("groups", []) for r in g.get("rules", [])]
    after = [r.get("expr") for g in out.get("groups", []) for r in g.get("rules", [])]
    assert before == after, "rewriting for: durations changed an expression"
    return out


def rewrite_alertmanager_config(
    example: Mapping[str, Any], webhook_base: str
) -> dict[str, Any]:
    """alertmanager.example.yml with loopback webhooks and test-speed grouping (see module doc)."""
    out = copy.deepcopy(dict(example))
    for receiver in out.get("receivers", []):
        name = receiver["name"]
        others = sorted(k for k in receiver if k.endswith("_configs") and k != "webhook_configs")
        if others:
            raise AssertionError(
                f"receiver {name!r} has {others}: only webhooks can be redirected to loopback"
            )
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{webhook_base}/{urllib.parse.quote(name, safe='')}"
            hook.pop("url_file", None)

    def fast(route: dict[str, Any], top: bool) -> None:
        if top or "group_wait" in route:
            route["group_wait"] = GROUP_WAIT
        if top or "group_interval" in route:
            route["group_interval"] = GROUP_INTERVAL
        if top or "repeat_interval" in route:
            route["repeat_interval"] = REPEAT_INTERVAL
        for child in route.get("routes", []):
            fast(child, False)

    fast(out["route"], True)
    return out


def prometheus_config(
    exporter_targets: Sequence[str], alertmanager_target: str, rule_file: Path
) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": EVALUATION_INTERVAL,
        },
        "rule_files": [str(rule_file)],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [alertmanager_target]}]}],
        },
        "scrape_configs": [
            {"job_name": JOB_NAME, "static_configs": [{"targets": list(exporter_targets)}]},
        ],
    }


def _check(argv: list[str], what: str) -> None:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{what} rejected the generated config ({' '.join(argv)} -> {done.returncode}):\n"
            f"{done.stdout}\n{done.stderr}"
        )


# --- the webhook receiver ------------------------------------------------------------------------

@dataclass(frozen=True)
class Notification:
    """One POST from Alertmanager: the receiver path (`/pager`) and the parsed JSON body."""

    path: str
    received: float  # time.time()
    payload: dict[str, Any]

    @property
    def receiver(self) -> str:
        return self.path.strip("/")

    @property
    def status(self) -> str:
        return str(self.payload.get("status", ""))

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return list(self.payload.get("alerts", []))


class _WebhookHandler(BaseHTTPRequestHandler):
    server: _WebhookServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {"_unparsable": body.decode(errors="replace")}
        self.server.owner._record(Notification(self.path, time.time(), payload))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _WebhookServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: WebhookReceiver) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _WebhookHandler)


class WebhookReceiver:
    """Records every notification Alertmanager POSTs; `base_url/<receiver>` is a webhook URL."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notifications: list[Notification] = []
        self._httpd = _WebhookServer(self)
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"webhook-{self.port}", daemon=True,
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _record(self, notification: Notification) -> None:
        with self._lock:
            self._notifications.append(notification)

    @property
    def notifications(self) -> list[Notification]:
        with self._lock:
            return list(self._notifications)

    def alerts(self) -> list[tuple[Notification, dict[str, Any]]]:
        """(notification, alert) for every alert in every notification, in arrival order."""
        return [(n, a) for n in self.notifications for a in n.alerts]

    def find(
        self, *, status: str | None = None, receiver: str | None = None, **labels: str
    ) -> list[tuple[Notification, dict[str, Any]]]:
        """Alerts whose own status (firing/resolved) and labels match."""
        return [
            (n, a) for n, a in self.alerts()
            if (status is None or a.get("status") == status)
            and (receiver is None or n.receiver == receiver)
            and all(a.get("labels", {}).get(k) == v for k, v in labels.items())
        ]

    def wait_for(
        self, *, timeout: float, status: str | None = None, receiver: str | None = None,
        **labels: str,
    ) -> tuple[Notification, dict[str, Any]]:
        """The first alert matching `find(...)`, waiting up to `timeout` seconds for it."""
        found = wait_until(
            lambda: self.find(status=status, receiver=receiver, **labels), timeout,
            lambda: (
                f"no {status or 'any-status'} alert {labels} at receiver {receiver or 'any'}; "
                f"received: {self.summary()}"
            ),
        )
        return found[0]  # type: ignore[no-any-return]

    def summary(self) -> str:
        rows = [
            f"{n.receiver}:{a.get('status')}:{a.get('labels', {}).get('alertname')}"
            f"{{domain={a.get('labels', {}).get('domain')}}}"
            for n, a in self.alerts()
        ]
        return "[" + ", ".join(rows) + "]"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


# --- the two servers -----------------------------------------------------------------------------

class _Server:
    """A subprocess on 127.0.0.1:<free port> with a /-/ready endpoint."""

    name = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.config_path = workdir / "config.yml"
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _spawn(self, argv: list[str]) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir, preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + _READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"{self.name} not ready in {_READY_TIMEOUT}s ({last})\n"
                             f"{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no {self.name} log)"

    def _is_ours(self, pid: int) -> bool:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return any(str(self.config_path).encode() in arg for arg in argv)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None and self._is_ours(proc.pid):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                if self._is_ours(proc.pid):
                    proc.kill()
                proc.wait(timeout=5)


class Alertmanager(_Server):
    name = "prometheus-alertmanager"

    def __init__(self, workdir: Path, config: Mapping[str, Any]) -> None:
        super().__init__(workdir)
        self.config = config

    def alerts(self) -> list[dict[str, Any]]:
        """GET /api/v2/alerts: every alert Alertmanager holds, with `status.state` (active,
        suppressed) and `status.inhibitedBy` (fingerprints of the alerts inhibiting it)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=10) as resp:
            return list(json.loads(resp.read()))

    def start(self) -> Alertmanager:
        binary = _binary("prometheus-alertmanager", "prometheus-alertmanager")
        amtool = _binary("amtool", "prometheus-alertmanager")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(dict(self.config), sort_keys=False))
        _check([amtool, "check-config", str(self.config_path)], "amtool check-config")
        storage = self.workdir / "data"
        storage.mkdir()  # fresh: fails if a previous run left one behind in this directory
        self.port = free_port()
        self._spawn([
            binary,
            f"--config.file={self.config_path}",
            f"--storage.path={storage}",
            f"--web.listen-address={self.hostport}",
            "--cluster.listen-address=",
            "--log.level=debug",
        ])
        return self


class Prometheus(_Server):
    name = "prometheus"

    def __init__(
        self,
        workdir: Path,
        exporter_targets: Sequence[str],
        alertmanager_target: str,
        rules: Path,
        for_overrides: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(workdir)
        self.exporter_targets = list(exporter_targets)
        self.alertmanager_target = alertmanager_target
        self.rules_source = rules
        self.for_overrides = for_overrides
        self.rule_file = workdir / "rules.yml"
        self.started = 0.0

    def start(self) -> Prometheus:
        binary = _binary("prometheus", "prometheus")
        promtool = _binary("promtool", "prometheus")
        self.workdir.mkdir(parents=True, exist_ok=True)
        rules = yaml.safe_load(self.rules_source.read_text(encoding="utf-8"))
        short = shorten_for_durations(rules, overrides=self.for_overrides)
        self.rule_file.write_text(yaml.safe_dump(short, sort_keys=False))
        config = prometheus_config(self.exporter_targets, self.alertmanager_target, self.rule_file)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        # Also checks the rule file it references.
        _check([promtool, "check", "config", str(self.config_path)], "promtool check config")
        storage = self.workdir / "data"
        storage.mkdir()
        self.port = free_port()
        self.started = time.time()
        self._spawn([
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address={self.hostport}",
            f"--rules.alert.resend-delay={RESEND_DELAY}",
            "--log.level=debug",
        ])
        return self

    # -- HTTP API ---------------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns `data`, raises AssertionError on any API error."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            raise AssertionError(f"GET {url} -> HTTP {exc.code}: {text}") from exc
        if body.get("status") != "success":
            raise AssertionError(f"GET {url}: {body}")
        if body.get("warnings"):
            raise AssertionError(f"GET {url}: warnings {body['warnings']}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the result list (vector or matrix entries; a scalar is one entry)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(
        self, expr: str, start: float, end: float, step: float = 1.0
    ) -> list[dict[str, Any]]:
        data = self.api(
            "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}"
        )
        return list(data["result"])

    def label_values(self, label: str, match: str) -> list[str]:
        return list(self.api(f"label/{label}/values", **{"match[]": match}))

    def alerts(self) -> list[dict[str, Any]]:
        """Prometheus's own view: every pending and firing alert right now."""
        return list(self.api("alerts")["alerts"])


# --- everything together -------------------------------------------------------------------------

@dataclass
class PromStack:
    """Webhook receiver, Alertmanager and Prometheus scraping `exporter_target` (host:port, or
    a list of them). `for_overrides` replaces FOR_OVERRIDES (alert name -> shortened `for:`)."""

    workdir: Path
    exporter_target: str | Sequence[str]
    rules: Path = RULES_FILE
    alertmanager_example: Path = ALERTMANAGER_EXAMPLE
    for_overrides: Mapping[str, str] | None = None
    webhook: WebhookReceiver = field(init=False)
    alertmanager: Alertmanager = field(init=False)
    prometheus: Prometheus = field(init=False)

    def start(self) -> PromStack:
        self.workdir = Path(self.workdir)
        self.webhook = WebhookReceiver()
        try:
            example = yaml.safe_load(self.alertmanager_example.read_text(encoding="utf-8"))
            self.alertmanager = Alertmanager(
                self.workdir / "alertmanager",
                rewrite_alertmanager_config(example, self.webhook.base_url),
            ).start()
            targets = (
                [self.exporter_target] if isinstance(self.exporter_target, str)
                else list(self.exporter_target)
            )
            self.prometheus = Prometheus(
                self.workdir / "prometheus", targets, self.alertmanager.hostport,
                self.rules, self.for_overrides,
            ).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for name in ("prometheus", "alertmanager"):
            server = getattr(self, name, None)
            if server is not None:
                server.stop()
        with contextlib.suppress(AttributeError):
            self.webhook.stop()

    def logs(self) -> str:
        """Both servers' log tails, for assertion messages."""
        parts = []
        for name in ("prometheus", "alertmanager"):
            server = getattr(self, name, None)
            if server is not None:
                parts.append(f"--- {name} log tail ---\n{server.log_tail()}")
        return "\n".join(parts)

    def __enter__(self) -> PromStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def prom_stack(workdir: Path, exporter_target: str) -> Iterator[PromStack]:
    with PromStack(workdir, exporter_target) as stack:
        yield stack
