"""Issue 7, items 9 and 12 (SMTP): contact verdicts that must not page wrongly.

- A contact in a delegated sub-zone (`eu.corp.test`, its own zone under `corp.test`) is judged on
  the registration of its registrable domain: the registry's 404 for the sub-zone must not make
  it "unregistered" (deliverable 0).
- An SMTP 5.7.x or other policy/blocklist rejection is unknown, not "mailbox rejected"; only a
  reply that says the mailbox does not exist is.

Real servers only: Knot + unbound with a real delegation (`tests/support/mailworld.py`,
127.85.0.0/16), the HTTPS RDAP test server, an aiosmtpd mail exchanger of our own on
127.85.1.25, and the exporter's `check --json` (the scheduler, end to end) as a subprocess.
Behaviour tests reach the code through `exporter.mail` attributes, so they can be run against
an older mail.py to see them fail.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from exporter import mail
from exporter.config import EmailSettings
from exporter.suffixes import public_suffix, registrable_domain
from tests.support.exporter_proc import run_check
from tests.support.mailworld import MAIL_HOST, MailWorld, mail_world  # noqa: F401
from tests.support.rdapserver import RdapServer, Reply, make_domain, write_bootstrap, write_ca
from tests.support.scenario import DomainEntry, check_json_domain, write_exporter_config

EXPIRY = datetime.now(UTC).replace(microsecond=0) + timedelta(days=365)

# --------------------------------------------------------------------------- registrable domain


@pytest.mark.parametrize(
    ("name", "registrable"),
    [
        ("eu.corp.example", "corp.example"),
        ("EU.Corp.Example.", "corp.example"),
        ("corp.example", "corp.example"),
        ("a.b.c.example.co.uk", "example.co.uk"),
        ("mail.google.com", "google.com"),
        # ICANN section only: private entries are registered as ordinary second-level names.
        ("pages.github.io", "github.io"),
        ("x.eu.org", "eu.org"),
        ("foo.uk.com", "uk.com"),
        # IDN in either spelling, answered as an A-label.
        ("mail.bücher.de", "xn--bcher-kva.de"),
        ("a.пример.рф", "xn--e1afmkfd.xn--p1ai"),
        # Unknown TLDs (the test world) take the PSL default rule: a one-label suffix. For the
        # test world's two-label suffix co.test that names the suffix itself (documented).
        ("eu.corp.test", "corp.test"),
        ("shop.co.test", "co.test"),
        # Public suffixes themselves and non-names have no registrable domain.
        ("co.uk", None),
        ("com", None),
        ("test", None),
        ("not a name", None),
        ("", None),
    ],
)
def test_registrable_domain(name: str, registrable: str | None) -> None:
    assert registrable_domain(name) == registrable


def test_public_suffix() -> None:
    assert public_suffix("a.b.example.co.uk") == "co.uk"
    assert public_suffix("pages.github.io") == "io"  # ICANN section only
    assert public_suffix("bad name") is None


# --------------------------------------------------------------------------- DNS verdicts

LAB = EmailSettings(allow_private_addresses=True, smtp_probe=True, smtp_timeout=1.0)


def verdict(world: MailWorld, domain: str) -> mail.MailVerdict:
    return asyncio.run(mail.check_mail_domain(domain, world.settings(), LAB))


@pytest.mark.parametrize(
    ("domain", "deliverable", "reason", "zone"),
    [
        # The sub-zone has its own SOA, but its registration is corp.test's.
        ("eu.corp.test", True, "mx_ok", "corp.test"),
        ("ok.eu.corp.test", True, "mx_ok", "corp.test"),
        ("corp.test", True, "mx_ok", "corp.test"),
        ("missing.eu.corp.test", False, "nxdomain", "corp.test"),
    ],
)
def test_subzone_verdict_names_the_registrable_domain(
    mail_world: MailWorld,  # noqa: F811
    domain: str,
    deliverable: bool,
    reason: str,
    zone: str,
) -> None:
    v = verdict(mail_world, domain)
    assert (v.deliverable, v.reason, v.zone) == (deliverable, reason, zone)


# --------------------------------------------------------------------------- SMTP replies

RCPT_REPLIES = {
    "ok": "250 2.1.5 Recipient OK",
    "gone": "550 5.1.1 <gone@gone.eu.corp.test>: Recipient address rejected: User unknown",
    # A mailbox whose name is a policy word: the echoed address must not count as text.
    "blocked": "550 5.7.1 Service unavailable; client host [127.85.0.1] blocked using "
    "zen.spamhaus.org",
    "policy": "554 5.7.1 <policy@policy.eu.corp.test>: rejected by local policy",
    "listed": "553 sorry, your IP address is listed at spamhaus",
    "nosuch": "550 no such user here",
    "bare": "550 Requested action not taken: mailbox unavailable",
    "full": "552 5.2.2 Mailbox full",
    "grey": "450 4.2.0 Greylisted, try again later",
}


class _Handler:
    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        return RCPT_REPLIES.get(address.split("@")[0].lower(), "550 5.1.1 Unknown recipient")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def smtp_port() -> Iterator[int]:
    """aiosmtpd on 127.85.1.25 (every MX host of the mail world), an ephemeral port."""
    port = _free_port(MAIL_HOST)
    controller = Controller(_Handler(), hostname=MAIL_HOST, port=port, ready_timeout=5.0)
    controller.start()
    yield port
    controller.stop()


@pytest.mark.parametrize(
    ("code", "text", "accepted", "reason"),
    [
        (250, "2.1.5 OK", True, "accepted"),
        (450, "4.7.1 Greylisted", None, "greylisted"),
        (550, "5.7.1 Service unavailable; client host blocked using zen.spamhaus.org",
         None, "policy"),
        (554, "5.7.1 Relay access denied", None, "policy"),
        (550, "5.7.26 Unauthenticated email is not accepted", None, "policy"),
        (553, "sorry, rejected by policy", None, "policy"),
        (553, "your address is listed at spamhaus", None, "policy"),
        (550, "Administrative prohibition", None, "policy"),
        (550, "5.1.1 <blocked@x.test>: Recipient address rejected: User unknown",
         False, "rejected"),
        (550, "5.1.0 Address rejected", False, "rejected"),
        (550, "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found", False, "rejected"),
        (550, "5.1.1 The email account that you tried to reach does not exist.\n"
              "5.1.1 https://support.google.com/mail/?p=NoSuchUser", False, "rejected"),
        (550, "no such user here", False, "rejected"),
        (550, "Requested action not taken: mailbox unavailable", False, "rejected"),
        (550, "sorry, no mailbox here by that name. (#5.1.1)", False, "rejected"),
        (553, "no such user", False, "rejected"),
        (551, "User unknown", False, "rejected"),
        (553, "mailbox name not allowed", None, "other_rejection"),
        (552, "5.2.2 Mailbox full", None, "other_rejection"),
        (550, "mailbox quota exceeded", None, "other_rejection"),
        (550, "5.5.0 Requested action not taken: mailbox unavailable", None, "other_rejection"),
        (554, "Transaction failed", None, "other_rejection"),
        (550, "4.1.1 inconsistent class", None, "other_rejection"),
        (354, "odd", None, "protocol_error"),
    ],
)
def test_classify_rcpt(code: int, text: str, accepted: bool | None, reason: str) -> None:
    assert mail.classify_rcpt(code, text, "blocked@x.test") == (accepted, reason)


@pytest.mark.parametrize(
    ("kind", "accepted", "reason", "enhanced"),
    [
        ("ok", True, "accepted", "2.1.5"),
        ("gone", False, "rejected", "5.1.1"),
        ("nosuch", False, "rejected", None),
        ("bare", False, "rejected", None),
        ("blocked", None, "policy", "5.7.1"),
        ("policy", None, "policy", "5.7.1"),
        ("listed", None, "policy", None),
        ("full", None, "other_rejection", "5.2.2"),
        ("grey", None, "greylisted", "4.2.0"),
    ],
)
def test_probe_classifies_real_replies(
    mail_world: MailWorld,  # noqa: F811
    smtp_port: int,
    kind: str,
    accepted: bool | None,
    reason: str,
    enhanced: str | None,
) -> None:
    email = EmailSettings(
        allow_private_addresses=True, smtp_probe=True, smtp_port=smtp_port, smtp_timeout=1.0
    )
    result = asyncio.run(mail.probe_mailbox(
        f"{kind}@{kind}.eu.corp.test", (f"mx-{kind}.eu.corp.test",), mail_world.settings(),
        email,
    ))
    assert result.accepted is accepted, result
    assert result.reason == reason
    assert result.enhanced == enhanced
    # And the combination the scheduler applies: only "no such mailbox" turns 1 into 0.
    combined = mail.apply_probe(True, "mx_ok", result.accepted)
    assert combined == {True: (True, "mx_ok"), False: (False, "smtp_rejected"),
                        None: (None, "smtp_unknown")}[accepted]


# --------------------------------------------------------------------------- through the scheduler


@dataclass
class Registry:
    server: RdapServer
    rdap_settings: dict[str, Any]

    def program(self, corp_statuses: list[str]) -> None:
        for name, statuses in (("corp.test", corp_statuses), ("watched.test", ["active"])):
            self.server.set_domain(name, Reply(body=make_domain(
                name, EXPIRY, statuses, ["ns.corp.test"], "Example Registrar, Inc.", "1234",
            )))
        # eu.corp.test is not programmed: the registry answers 404, as a real one would.


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("rdap")
    ca = trustme.CA()
    server = RdapServer(ca)
    try:
        settings = {
            "bootstrap": str(write_bootstrap(tmp / "bootstrap.json", {"test": server})),
            "ca_file": str(write_ca(ca, tmp / "ca.pem")),
            "allow_private_addresses": True,
            "timeout": "2s",
            "requests_per_second": 50,
        }
        yield Registry(server, settings)
    finally:
        server.stop()


def check_contacts(
    tmp: Path, world: MailWorld, registry: Registry, contacts: tuple[tuple[str, str], ...],
    email: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """`python -m exporter check --json watched.test` -> the e-mail verdicts by role."""
    config = write_exporter_config(
        tmp / "config.yaml",
        rdap=registry.rdap_settings,
        dns={"resolvers": list(world.settings().resolvers), "timeout": "500ms"},
        email={"allow_private_addresses": True, **(email or {})},
        domains=[DomainEntry("watched.test", contacts=contacts)],
    )
    _code, out = run_check(config, "watched.test", timeout=30)
    d = check_json_domain(out, "watched.test")
    return {c["role"]: c for c in d["email"]["contacts"]}


def test_subzone_contact_is_judged_on_its_registrable_domain(
    tmp_path: Path, mail_world: MailWorld, registry: Registry  # noqa: F811
) -> None:
    registry.program(["active"])
    before = len(registry.server.requests_for("corp.test"))
    contacts = check_contacts(
        tmp_path, mail_world, registry, (("registrant", "ops@eu.corp.test"),)
    )
    c = contacts["registrant"]
    assert (c["deliverable"], c["reason"], c["mail_domain"]) == (True, "mx_ok", "eu.corp.test"), c
    # The registration that was read is the registrable domain's; the sub-zone was never asked.
    assert len(registry.server.requests_for("corp.test")) > before
    assert registry.server.requests_for("eu.corp.test") == []


def test_subzone_contact_follows_its_registrable_domain_onto_hold(
    tmp_path: Path, mail_world: MailWorld, registry: Registry  # noqa: F811
) -> None:
    # The registrable domain's registration really decides: put it on hold and the contact
    # in its sub-zone is dying mail.
    registry.program(["client hold"])
    contacts = check_contacts(
        tmp_path, mail_world, registry, (("technical", "noc@eu.corp.test"),)
    )
    c = contacts["technical"]
    assert (c["deliverable"], c["reason"]) == (False, "mail_domain_held"), c


def test_policy_rejection_is_unknown_through_the_scheduler(
    tmp_path: Path, mail_world: MailWorld, registry: Registry, smtp_port: int  # noqa: F811
) -> None:
    registry.program(["active"])
    contacts = check_contacts(
        tmp_path, mail_world, registry,
        (
            ("registrant", "ok@ok.eu.corp.test"),
            ("administrative", "blocked@blocked.eu.corp.test"),
            ("technical", "gone@gone.eu.corp.test"),
        ),
        email={"smtp_probe": True, "smtp_port": smtp_port, "smtp_timeout": "1s"},
    )
    got = {role: (c["deliverable"], c["reason"]) for role, c in contacts.items()}
    assert got == {
        "registrant": (True, "mx_ok"),
        "administrative": (None, "smtp_unknown"),  # 550 5.7.1 blocklisted: not a verdict
        "technical": (False, "smtp_rejected"),  # 550 5.1.1 user unknown
    }
