"""Personal contact mailboxes: the consumer mail-provider list and domain_contact_email_personal.

The alert path (a gmail.com contact published in RDAP -> DomainContactEmailPersonal at
Alertmanager) is in tests/test_changes.py; here the list itself, the matching rules, and config
contacts through the running exporter (loopback range 127.96.3.0/24).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from importlib import resources

import pytest
import trustme

from exporter.mailproviders import DATA_FILE, consumer_domains, is_personal
from tests.support.exporter_proc import ExporterProcess
from tests.support.rdapserver import RdapServer, Reply, make_domain, write_bootstrap, write_ca
from tests.support.scenario import DomainEntry, write_exporter_config

_LABEL = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+$")


def _document() -> dict[str, object]:
    text = resources.files("exporter").joinpath(DATA_FILE).read_text("utf-8")
    return dict(json.loads(text))


@pytest.mark.parametrize(
    "domain",
    [
        "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "hotmail.co.uk",
        "hotmail.fr", "live.com", "yahoo.com", "yahoo.co.jp", "icloud.com", "me.com", "qq.com",
        "163.com", "mail.ru", "gmx.de", "gmx.net", "web.de", "yandex.ru", "naver.com",
        "proton.me", "GMAIL.COM", "gmail.com.",
    ],
)
def test_consumer_providers_are_personal(domain: str) -> None:
    assert is_personal(domain)


@pytest.mark.parametrize(
    "domain",
    [
        "example.com", "corp.example", "google.com", "microsoft.com", "zoho.com", "cox.com",
        "facebook.com", "mail.example.com", "gmail.com.evil.example", "notgmail.com",
    ],
)
def test_organisation_domains_are_not(domain: str) -> None:
    assert not is_personal(domain)


def test_the_list_is_clean_and_sourced() -> None:
    document = _document()
    assert document["sources"], "every list needs its sources"
    providers = document["providers"]
    assert isinstance(providers, list) and len(providers) >= 30
    seen: list[str] = []
    for provider in providers:
        assert provider["provider"] and provider["domains"], provider
        for domain in provider["domains"]:
            assert _LABEL.match(domain), domain  # lower case A-labels, no dots at the ends
            seen.append(domain)
    assert len(seen) == len(set(seen)), "a domain listed twice"
    assert consumer_domains() == frozenset(seen)
    # Corporate domains of mail companies are organisations' addresses, not consumers'.
    assert not {"zoho.com", "cox.com", "facebook.com", "amazonses.com", "test.com"} & set(seen)


def test_config_contacts_through_the_exporter(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Config contacts at a consumer provider are 1, at an organisation's domain 0, and a
    domain without contacts has no series: judged without any DNS (the resolver is dead)."""
    tmp = tmp_path_factory.mktemp("personal")
    ca = trustme.CA()
    rdap = RdapServer(ca, host="127.96.3.1")
    future = datetime.now(UTC) + timedelta(days=300)
    for name in ("shop.test", "quiet.test"):
        rdap.set_domain(name, Reply(body=make_domain(
            name, future, ["active"], ["ns1.dns.test"], "Good Registrar", "1111")))
    config = write_exporter_config(
        tmp / "config.yaml",
        rdap={
            "bootstrap": str(write_bootstrap(tmp / "bootstrap.json", {"test": rdap})),
            "ca_file": str(write_ca(ca, tmp / "ca.pem")),
            "allow_private_addresses": True,
            "interval": "1h",
            "timeout": "1s",
            "follow_registrar": False,
        },
        dns={"resolvers": ["127.96.3.9"], "root_servers": ["127.96.3.9"], "interval": "1h",
             "timeout": "0.2s"},
        email={"interval": "1h"},
        domains=[
            DomainEntry("shop.test", contacts=(
                ("registrant", "Owner.Person@GMail.com"),
                ("technical", "hostmaster@corp.example"),
            )),
            DomainEntry("quiet.test"),
        ],
    )
    try:
        with ExporterProcess(config, tmp / "exporter") as exporter:
            s = exporter.wait_for(
                lambda s: s.value("domain_contact_email_personal", domain="shop.test",
                                  role="technical") is not None,
                timeout=15,
            )
            assert s.value("domain_contact_email_personal", domain="shop.test",
                           role="registrant") == 1
            assert s.value("domain_contact_email_personal", domain="shop.test",
                           role="technical") == 0
            assert not s.series("domain_contact_email_personal", domain="quiet.test")
            # No address and no mail domain in any label.
            assert "owner.person" not in s.text.lower() and "gmail" not in s.text.lower()
    finally:
        rdap.stop()
