"""Is a contact's mailbox a person's own, at a consumer mail provider (gmail.com, outlook.com,
yahoo, icloud, qq.com, mail.ru, gmx, yandex, naver, ...)?

A registration whose contact is somebody's free-mail address depends on that person: when they
leave, the registrar's renewal and ICANN accuracy mail goes to a mailbox nobody reads (the
airline incident of issue 11). `deliverable 1` says nothing about that risk.

The list is `exporter/data/consumer_mail_domains.json`, curated by provider with its sources
(see its `sources`). The maintained PyPI lists we evaluated mix consumer providers with
disposable-mail services and corporate domains, so the project keeps its own short one.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from exporter.suffixes import registrable_domain

DATA_FILE = "data/consumer_mail_domains.json"


@cache
def consumer_domains() -> frozenset[str]:
    """Every listed consumer mail domain, lower case (loaded once per process)."""
    text = resources.files("exporter").joinpath(DATA_FILE).read_text("utf-8")
    document = json.loads(text)
    return frozenset(
        domain.lower() for provider in document["providers"] for domain in provider["domains"]
    )


def is_personal(mail_domain: str) -> bool:
    """True when `mail_domain` (or its registrable domain: `eu.yahoo.co.jp` style hosts) is a
    consumer mailbox provider's."""
    name = mail_domain.strip().rstrip(".").lower()
    listed = consumer_domains()
    if name in listed:
        return True
    base = registrable_domain(name)
    return base is not None and base in listed
