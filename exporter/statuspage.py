"""The status page at `/` and the JSON documents behind it, at `/api/v1/domains[/NAME]`.

Server-rendered HTML without scripts: a plain GET form filters on the server, so the page works
in any browser, with JavaScript off, and behind a path prefix (every link is relative). Every
value that reaches the HTML goes through html.escape, and the Content-Security-Policy forbids
scripts anyway: registrar names, statuses and errors come from servers we do not control.

Verdicts, problems and expiry come from exporter.report, the module behind `check --json`, and
`/api/v1/domains/NAME` answers `{"domains": [...]}` exactly as `domainwatch check --json NAME`
prints it, so a script can use either.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import parse_qs, quote

from exporter import __version__, report
from exporter.names import InvalidName, to_alabel
from exporter.store import DomainStatus

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

API_PREFIX = "/api/v1/domains"
VERDICTS = ("attention", "unknown", "ok")  # worst first
DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000
_HTML_HEADERS = [
    ("Content-Type", "text/html; charset=utf-8"),
    # Nothing on the page runs: no script may, whatever a registry puts in a name.
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]


@dataclass(frozen=True)
class Filters:
    """The form's fields, which are also the page's query parameters."""

    q: str = ""  # part of the domain name (A-label or Unicode), any case
    status: str = ""  # one of VERDICTS, or "" for every verdict
    problem: str = ""  # part of any problem text, any case
    limit: int = DEFAULT_LIMIT

    @classmethod
    def parse(cls, query: str) -> Filters:
        params = parse_qs(query, keep_blank_values=True)

        def one(key: str) -> str:
            return (params.get(key) or [""])[0].strip()[:200]

        status = one("status").lower()
        limit_text = one("limit")
        limit = int(limit_text) if limit_text.isascii() and limit_text.isdigit() else 0
        return cls(
            q=one("q"),
            status=status if status in VERDICTS else "",
            problem=one("problem"),
            limit=min(limit, MAX_LIMIT) if limit > 0 else DEFAULT_LIMIT,
        )


@dataclass(frozen=True)
class Row:
    doc: dict[str, Any]  # report.as_json of the domain

    @property
    def verdict(self) -> str:
        return str(self.doc["status"])

    def sort_key(self) -> tuple[int, float, str]:
        days = self.doc["rdap"]["expiry_days"]
        rank = VERDICTS.index(self.verdict) if self.verdict in VERDICTS else 0
        return (rank, days if days is not None else float("inf"), self.doc["domain"])


def rows(statuses: Iterable[DomainStatus], now: float) -> list[Row]:
    """Every domain, worst first: attention, unknown, ok; within each, the soonest expiry
    (expired ones first), then those without a known expiry; then by name."""
    return sorted((Row(report.as_json(s, now)) for s in statuses), key=Row.sort_key)


def matches(row: Row, f: Filters) -> bool:
    doc = row.doc
    if f.status and row.verdict != f.status:
        return False
    if f.q:
        needle = f.q.lower()
        if needle not in doc["domain"] and needle not in doc["unicode"].lower():
            return False
    if f.problem:
        needle = f.problem.lower()
        if not any(needle in p.lower() for p in doc["problems"]):
            return False
    return True


class StatusPages:
    """WSGI app for `/` and `/api/v1/domains[/NAME]`; `statuses()` gives the listed domains."""

    def __init__(
        self,
        statuses: Callable[[], Sequence[DomainStatus]],
        telemetry_path: str = "/metrics",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._statuses = statuses
        self._telemetry = telemetry_path
        self._clock = clock

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/":
            return self.page(environ, start_response)
        if path in (API_PREFIX, API_PREFIX + "/"):
            return self.api_all(start_response)
        if path.startswith(API_PREFIX + "/"):
            return self.api_one(path[len(API_PREFIX) + 1 :], start_response)
        return _json(start_response, "404 Not Found", {"error": "not found"})

    # --- JSON -------------------------------------------------------------------------------

    def api_all(self, start_response: StartResponse) -> list[bytes]:
        now = self._clock()
        docs = [report.as_json(s, now) for s in self._statuses()]
        return _json(start_response, "200 OK", {"domains": docs})

    def api_one(self, raw: str, start_response: StartResponse) -> list[bytes]:
        # PATH_INFO is percent-decoded as Latin-1 (WSGI); a Unicode name arrives as UTF-8.
        try:
            text = raw.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            text = raw
        try:
            name = to_alabel(text)
        except InvalidName:
            return _json(start_response, "400 Bad Request", {"error": "not a domain name"})
        for s in self._statuses():
            if s.name == name:
                doc = {"domains": [report.as_json(s, self._clock())]}
                return _json(start_response, "200 OK", doc)
        return _json(start_response, "404 Not Found", {"error": f"{name} is not configured"})

    # --- HTML -------------------------------------------------------------------------------

    def page(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        f = Filters.parse(environ.get("QUERY_STRING", ""))
        all_rows = rows(self._statuses(), self._clock())
        shown = [r for r in all_rows if matches(r, f)]
        body = render_page(all_rows, shown, f, self._telemetry)
        start_response("200 OK", list(_HTML_HEADERS))
        return [body.encode()]


def _json(start_response: StartResponse, status: str, doc: object) -> list[bytes]:
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("X-Content-Type-Options", "nosniff"),
            ("Cache-Control", "no-store"),
        ],
    )
    return [json.dumps(doc, indent=2).encode() + b"\n"]


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.4rem;margin:0 0 .3rem}
nav a{margin-right:.8rem}
form{margin:1rem 0;display:flex;gap:.8rem;flex-wrap:wrap;align-items:end}
label{display:flex;flex-direction:column;font-size:.85rem}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}
td ul{margin:0;padding-left:1.1rem}
.verdict{font-weight:600;padding:.1rem .4rem;border-radius:.2rem}
.attention .verdict{background:#fdd;color:#900}
.unknown .verdict{background:#ffe9b3;color:#7a5200}
.ok .verdict{background:#dfd;color:#060}
.muted{color:#777}
td.expiry{white-space:nowrap}
"""


def render_page(all_rows: list[Row], shown: list[Row], f: Filters, telemetry_path: str) -> str:
    counts = {v: 0 for v in VERDICTS}
    for r in all_rows:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    e = escape
    telemetry = e(telemetry_path.lstrip("/") or ".", quote=True)
    options = "".join(
        f'<option value="{v}"{" selected" if f.status == v else ""}>{v or "any"}</option>'
        for v in ("", *VERDICTS)
    )
    summary = ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>domainwatch {e(__version__)}</title><style>{STYLE}</style></head><body>",
        f"<header><h1>domainwatch {e(__version__)}</h1>",
        '<nav id="links">',
        f'<a href="{telemetry}">{e(telemetry_path)}</a>',
        '<a href="-/healthy">/-/healthy</a>',
        '<a href="-/ready">/-/ready</a>',
        '<a href="api/v1/domains">/api/v1/domains</a>',
        '<span class="muted">POST /-/reload re-reads the configuration</span>',
        "</nav></header>",
        '<form id="filter" method="get" action="./">',
        '<label>Domain contains<input type="search" name="q" value="'
        f'{e(f.q, quote=True)}"></label>',
        f'<label>Verdict<select name="status">{options}</select></label>',
        '<label>Problem contains<input type="search" name="problem" value="'
        f'{e(f.problem, quote=True)}"></label>',
        '<button type="submit">Filter</button> <a href="./">Reset</a>',
        "</form>",
        f'<p id="summary">{len(all_rows)} domains: {e(summary)}. '
        f"{len(shown)} match{'es' if len(shown) == 1 else ''} the filter"
        + (f", the first {f.limit} are shown" if len(shown) > f.limit else "")
        + ".</p>",
        '<table id="domains"><thead><tr><th>Domain</th><th>Verdict</th><th>Expiry</th>'
        "<th>Registrar</th><th>Problems</th></tr></thead><tbody>",
    ]
    for r in shown[: f.limit]:
        out.append(_row(r))
    out.append("</tbody></table>")
    if not shown:
        out.append('<p id="empty">No domain matches the filter.</p>')
    out.append("</body></html>\n")
    return "\n".join(out)


def _row(r: Row) -> str:
    e = escape
    doc = r.doc
    rdap = doc["rdap"]
    name = doc["domain"]
    shown_name = e(name) + (
        f' <span class="muted">({e(doc["unicode"])})</span>' if doc["unicode"] != name else ""
    )
    if rdap["expiry"]:
        expiry = f"{e(rdap['expiry'][:10])} ({rdap['expiry_days']:.1f} days)"
    elif rdap["registered"] is False:
        expiry = "not registered"
    else:
        expiry = '<span class="muted">unknown</span>'
    problems = doc["problems"]
    problem_html = (
        "<ul>" + "".join(f"<li>{e(p)}</li>" for p in problems) + "</ul>"
        if problems
        else '<span class="muted">none</span>'
    )
    href = e("api/v1/domains/" + quote(name, safe=""), quote=True)
    return (
        f'<tr class="{e(r.verdict, quote=True)}" data-domain="{e(name, quote=True)}">'
        f'<td class="domain"><a href="{href}">{shown_name}</a></td>'
        f'<td><span class="verdict">{e(r.verdict)}</span></td>'
        f'<td class="expiry">{expiry}</td>'
        f'<td class="registrar">{e(rdap["registrar"] or "-")}</td>'
        f'<td class="problems">{problem_html}</td></tr>'
    )
