"""The status page at `/` and /api/v1/domains/NAME, through the running exporter, rendered by a
real headless Chromium from Debian. Loopback range 127.90.0.0/16.

The world: an HTTPS RDAP server (127.90.1.2) and our own authoritative DNS (a Python server from
tests/faults/hostile_dns.py, answering truthfully) for the root (127.90.53.1), `test.`
(127.90.53.2) and the domains' zones (127.90.53.3), so that healthy domains are really "ok".

| domain         | RDAP                            | verdict   |
| expired.test   | expired 3 days ago              | attention |
| soon.test      | expires in 5 days               | attention |
| held.test      | client hold, 200 days           | attention |
| broken.test    | HTTP 500                        | unknown   |
| hostile.test   | registrar name is HTML/JS, 100 d| ok        |
| fine.test      | 300 days                        | ok        |
| bücher.test    | 400 days (IDN)                  | ok        |
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from exporter import report
from exporter.statuspage import Filters, Row, matches, render_page
from tests.faults.hostile_dns import HostileDns, MiniZone, serve
from tests.support.exporter_proc import ExporterProcess, run_check
from tests.support.rdapserver import RdapServer, Reply, make_domain, write_bootstrap, write_ca

HOST = "127.90.1.1"
RDAP_HOST = "127.90.1.2"
ROOT, TLD, CHILD = "127.90.53.1", "127.90.53.2", "127.90.53.3"
NOW = datetime.now(UTC).replace(microsecond=0)
HOSTILE = (
    "<script>document.title='pwned'</script>"
    "<img src=x onerror=\"document.title='pwned'\">Evil & Co"
)
DOMAINS: dict[str, tuple[float, list[str], str]] = {
    # name: (expiry in days, statuses, registrar)
    "expired.test": (-3, ["active"], "Good Registrar"),
    "soon.test": (5, ["active"], "Good Registrar"),
    "held.test": (200, ["client hold"], "Good Registrar"),
    "hostile.test": (100, ["active"], HOSTILE),
    "fine.test": (300, ["active"], "Good Registrar"),
    "xn--bcher-kva.test": (400, ["active"], "Good Registrar"),
}
ORDER = [
    "expired.test", "soon.test", "held.test", "broken.test",
    "hostile.test", "fine.test", "xn--bcher-kva.test",
]
VERDICT = {
    "expired.test": "attention", "soon.test": "attention", "held.test": "attention",
    "broken.test": "unknown",
    "hostile.test": "ok", "fine.test": "ok", "xn--bcher-kva.test": "ok",
}
CHROMIUM = shutil.which("chromium")


class Exporter(ExporterProcess):
    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        return [
            f"{HOST}:{self.port}" if arg == f"127.0.0.1:{self.port}" else arg
            for arg in super().command()
        ]

    def fetch(self, path: str) -> tuple[int, str, dict[str, str]]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as resp:
                return resp.status, resp.read().decode(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace"), dict(exc.headers)


def dns_servers() -> HostileDns:
    names = [*DOMAINS, "broken.test"]
    root = MiniZone(".", f"@ NS a.root.lab.\ntest. NS ns.nic.test.\nns.nic.test. A {TLD}")
    tld = MiniZone(
        "test.",
        "\n".join(
            ["@ NS ns.nic.test.", f"ns.nic A {TLD}", f"ns1.prov A {CHILD}"]
            + [f"{n.removesuffix('.test')} NS ns1.prov.test." for n in names]
        ),
    )
    children = [MiniZone(f"{n}.", "@ NS ns1.prov.test.\n@ A 192.0.2.1") for n in names]
    return HostileDns({ROOT: serve(root), TLD: serve(tld), CHILD: serve(*children)})


def write_config(path: Path, bootstrap: Path, ca_file: Path) -> Path:
    document = {
        "rdap": {
            "bootstrap": str(bootstrap), "ca_file": str(ca_file),
            "allow_private_addresses": True, "interval": "1h", "timeout": "2s",
            "requests_per_second": 50,
        },
        "dns": {"root_servers": [ROOT], "interval": "1h", "timeout": "0.5s"},
        "email": {"interval": "1h"},
        "domains": [*ORDER[:-1], "bücher.test"],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return path


@dataclass
class World:
    exporter: Exporter
    config: Path
    tmp: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("statuspage")
    ca = trustme.CA()
    with dns_servers(), RdapServer(ca, host=RDAP_HOST) as rdap:
        for name, (days, statuses, registrar) in DOMAINS.items():
            rdap.set_domain(name, Reply(body=make_domain(
                name, NOW + timedelta(days=days), statuses, ["ns1.prov.test"], registrar, "42",
            )))
        rdap.set_domain("broken.test", Reply(status=500, body=b"oops"))
        bootstrap = write_bootstrap(tmp / "bootstrap.json", {"test": rdap})
        config = write_config(tmp / "config.yaml", bootstrap, write_ca(ca, tmp / "ca.pem"))
        exporter = Exporter(config, tmp / "exporter")
        with exporter:
            # Every check has run once: rdap (ok or failed) and dns for each domain.
            exporter.wait_for(
                lambda s: len(s.series("domain_check_success", check="rdap")) == 7
                and len(s.series("domain_check_success", check="dns")) == 7,
                timeout=20,
            )
            yield World(exporter, config, tmp)


# --- the DOM, as a browser or html.parser sees it -------------------------------------------


@dataclass
class Dom:
    title: str = ""
    scripts: int = 0
    handlers: int = 0  # on* attributes
    rows: list[dict[str, str]] = field(default_factory=list)  # tr attributes + cell texts
    links: list[str] = field(default_factory=list)
    form: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    text: str = ""


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.dom = Dom()
        self._stack: list[str] = []
        self._row: dict[str, str] | None = None
        self._cell: str | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.dom.handlers += sum(k.startswith("on") for k in a)
        if tag == "script":
            self.dom.scripts += 1
        elif tag == "title":
            self._in_title = True
        elif tag == "tr" and "data-domain" in a:
            self._row = {"_name": a["data-domain"], "_class": a.get("class", "")}
            self.dom.rows.append(self._row)
        elif tag == "td" and self._row is not None:
            self._cell = a.get("class", "") or "verdict"
            self._row.setdefault(self._cell, "")
        elif tag == "a":
            self.dom.links.append(a.get("href", ""))
            if self._row is not None and self._cell == "domain":
                self._row["href"] = a.get("href", "")
        elif tag == "form":
            self.dom.form = a
        elif tag in ("input", "select"):
            self.dom.inputs.append(a.get("name", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "td":
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        self.dom.text += data
        if self._in_title:
            self.dom.title += data
        if self._row is not None and self._cell is not None:
            self._row[self._cell] += data


def parse_dom(html_text: str) -> Dom:
    p = _Parser()
    p.feed(html_text)
    p.close()
    return p.dom


def chromium(args: list[str], url: str, tmp: Path) -> str:
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp / 'chromium-profile'}", *args, url],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def names(dom: Dom) -> list[str]:
    return [r["_name"] for r in dom.rows]


def browser_dom(world: World, query: str = "") -> Dom:
    url = world.exporter.url + "/" + (f"?{query}" if query else "")
    return parse_dom(chromium(["--dump-dom"], url, world.tmp))


# --- tests -------------------------------------------------------------------------------------


def test_status_page_in_headless_chromium(world: World, tmp_path: Path) -> None:
    if CHROMIUM is None:
        # CI installs it (.ci/run): there a missing browser is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run should have installed it")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    dom = browser_dom(world)
    # Worst first: attention (soonest expiry first), unknown, ok (soonest expiry first).
    assert names(dom) == ORDER, dom.rows
    assert {r["_name"]: r["_class"] for r in dom.rows} == VERDICT
    # Nothing a registry sent ran or became markup: no script element, the title untouched,
    # the registrar name shown as the text it is.
    assert dom.scripts == 0
    assert dom.title.startswith("domainwatch"), dom.title
    rows = {r["_name"]: r for r in dom.rows}
    assert rows["hostile.test"]["registrar"] == HOSTILE
    assert "expires in 5.0 days" in rows["soon.test"]["problems"]
    assert "expired 3.0 days ago" in rows["expired.test"]["problems"]
    assert "on hold (client hold)" in rows["held.test"]["problems"]
    assert "rdap check failed" in rows["broken.test"]["problems"]
    assert rows["fine.test"]["problems"] == "none"
    assert rows["xn--bcher-kva.test"]["domain"] == "xn--bcher-kva.test (bücher.test)"
    # The page links to the exporter's endpoints, and each row to its JSON document.
    for link in ("metrics", "-/healthy", "-/ready", "api/v1/domains"):
        assert link in dom.links, dom.links
    assert rows["fine.test"]["href"] == "api/v1/domains/fine.test"

    # The filter is a plain GET form; the browser loads what submitting it loads.
    assert dom.form.get("method") == "get"
    assert {"q", "status", "problem"} <= set(dom.inputs)
    attention = browser_dom(world, "status=attention")
    assert names(attention) == ORDER[:3]
    assert names(browser_dom(world, "q=" + urllib.parse.quote("BÜCHER"))) == [
        "xn--bcher-kva.test"
    ]
    assert names(browser_dom(world, "problem=hold&status=")) == ["held.test"]
    none = browser_dom(world, "q=" + urllib.parse.quote("<script>x</script>"))
    assert none.rows == [] and none.scripts == 0 and "No domain matches" in none.text

    assert names(browser_dom(world, "status=ok")) == ORDER[4:]
    # The page needs no JavaScript: it has none (and its CSP would refuse any).
    assert dom.handlers == 0

    shot = tmp_path / "statuspage.png"
    chromium(["--screenshot=" + str(shot), "--window-size=1280,800", "--hide-scrollbars"],
             world.exporter.url + "/", world.tmp)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    print(f"\nstatus page screenshot: {shot}")


def test_status_page_html_and_headers(world: World) -> None:
    """The same page over plain HTTP, parsed by html.parser (the fallback without Chromium)."""
    status, body, headers = world.exporter.fetch("/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'none' applies
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "<script" not in body.lower()
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in body
    dom = parse_dom(body)
    assert names(dom) == ORDER
    assert world.exporter.fetch("/?status=unknown")[1].count('data-domain="') == 1
    # HEAD answers like GET without a body; other methods are refused.
    req = urllib.request.Request(world.exporter.url + "/", method="HEAD")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b""


def test_api_document_is_check_json(world: World) -> None:
    status, body, headers = world.exporter.fetch("/api/v1/domains/soon.test")
    assert status == 200 and headers["Content-Type"] == "application/json"
    served = json.loads(body)
    code, checked = run_check(world.config, "soon.test")
    assert code == 1, checked
    assert shape(served) == shape(checked)
    mine, theirs = served["domains"][0], checked["domains"][0]
    for key in ("domain", "status", "problems"):
        assert mine[key] == theirs[key], key
    for key in ("registrar", "expiry", "statuses", "nameservers"):
        assert mine["rdap"][key] == theirs["rdap"][key], key
    assert mine["dns"]["nameservers"] == theirs["dns"]["nameservers"]

    # Unicode in the path, percent-encoded as browsers send it.
    status, body, _ = world.exporter.fetch("/api/v1/domains/" + urllib.parse.quote("bücher.test"))
    assert status == 200 and json.loads(body)["domains"][0]["domain"] == "xn--bcher-kva.test"
    status, body, _ = world.exporter.fetch("/api/v1/domains")
    assert [d["domain"] for d in json.loads(body)["domains"]] == ORDER  # config order
    assert world.exporter.fetch("/api/v1/domains/other.test")[0] == 404
    assert world.exporter.fetch("/api/v1/domains/not%20a%20name")[0] == 400
    hostile = json.loads(world.exporter.fetch("/api/v1/domains/hostile.test")[1])
    assert hostile["domains"][0]["rdap"]["registrar"] == HOSTILE  # JSON keeps it verbatim


def shape(value: Any) -> Any:
    """The structure of a JSON document: keys and value types, list items merged."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return ["list"]
    return "value"


# --- pure rendering (no server) ---------------------------------------------------------------


def test_filters_parse_hostile_and_odd_queries() -> None:
    f = Filters.parse("q=%3Cb%3E&status=bogus&problem=&limit=-5&limit=3")
    assert f == Filters(q="<b>", status="", problem="", limit=1000)
    assert Filters.parse("limit=999999999").limit == 100_000
    assert Filters.parse("status=OK").status == "ok"


def test_render_escapes_every_remote_value() -> None:
    from exporter.store import DomainStatus

    doc = report.as_json(DomainStatus(name="x.test"), time.time())
    doc["problems"] = ['<img src=x onerror="alert(1)">']
    doc["rdap"]["registrar"] = '"><script>alert(1)</script>'
    row = Row(doc)
    page = render_page([row], [row], Filters(q='"><script>'), "/metrics")
    assert "<script>" not in page and "<img" not in page
    assert 'value="&quot;&gt;&lt;script&gt;"' in page
    assert matches(row, Filters(problem="ONERROR")) and not matches(row, Filters(status="ok"))
