"""The curated registry table (exporter/data/cctlds.json): for the largest ccTLDs, the RDAP service
an operator runs outside the IANA bootstrap, its WHOIS server and query syntax, and whether it
publishes an expiry date at all. Each row cites the operator's own documentation (CCTLDS.md).

`rdap.servers` and `whois.servers` in the config win over the table; the table wins over
nothing, so a new user's .jp or .de domain is read without any configuration.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timezone
from importlib import resources


@dataclass(frozen=True)
class Registry:
    tld: str  # A-label, may be a suffix ("co.uk") though the table holds TLDs
    operator: str
    rdap: str | None = None  # an RDAP base URL the IANA bootstrap does not list
    rdap_in_bootstrap: bool = False
    whois: str | None = None  # "host" or "host:port"
    whois_query: str = "{domain}"
    # A server the operator runs for registered clients only (e.g. Red.es): never used unless
    # configured, but `check` suggests it.
    whois_restricted: str | None = None
    expiry_published: bool | None = None  # None: unverified
    requests_per_second: float | None = None  # the operator's published WHOIS limit
    tz: timezone = UTC  # zone of the registry's WHOIS times printed without one
    sources: Mapping[str, str] = field(default_factory=dict)
    unverified: tuple[str, ...] = ()
    notes: str = ""


@dataclass(frozen=True)
class RegistryTable:
    rows: Mapping[str, Registry]

    def lookup(self, domain: str) -> Registry | None:
        """The row of the longest suffix of `domain` (an A-label) in the table."""
        labels = domain.split(".")
        for i in range(1, len(labels)):
            row = self.rows.get(".".join(labels[i:]))
            if row is not None:
                return row
        return None

    def rdap_servers(self) -> dict[str, str]:
        """TLD -> RDAP base URL for operators that run RDAP outside the IANA bootstrap."""
        return {tld: row.rdap for tld, row in self.rows.items() if row.rdap}


def _tz(text: object) -> timezone:
    if not isinstance(text, str) or not text:
        return UTC
    offset = datetime.strptime(text, "%z").utcoffset()
    return timezone(offset) if offset else UTC


def parse_table(document: object) -> RegistryTable:
    """Raises ValueError (KeyError, TypeError) for a malformed table: it ships with the package
    and tests/test_cctld_table.py checks it, so this only guards against editing mistakes."""
    if not isinstance(document, dict) or not isinstance(document.get("tlds"), list):
        raise ValueError("not a registry table: no 'tlds' list")
    rows: dict[str, Registry] = {}
    for item in document["tlds"]:
        tld = str(item["tld"]).lower()
        if tld in rows:
            raise ValueError(f"duplicate row for {tld}")
        rows[tld] = Registry(
            tld=tld,
            operator=str(item["operator"]),
            rdap=item.get("rdap") or None,
            rdap_in_bootstrap=bool(item.get("rdap_in_bootstrap", False)),
            whois=item.get("whois") or None,
            whois_query=str(item.get("whois_query") or "{domain}"),
            whois_restricted=item.get("whois_restricted") or None,
            expiry_published=item.get("expiry_published"),
            requests_per_second=item.get("requests_per_second"),
            tz=_tz(item.get("tz")),
            sources=dict(item.get("sources") or {}),
            unverified=tuple(item.get("unverified") or ()),
            notes=str(item.get("notes") or ""),
        )
    return RegistryTable(rows=rows)


@functools.cache
def builtin_table() -> RegistryTable:
    text = resources.files("exporter").joinpath("data/cctlds.json").read_text("utf-8")
    return parse_table(json.loads(text))
