"""The contacts check: can each contact mailbox of a domain still receive mail?

Contacts come from the config and from the registry's RDAP record (when it publishes real
addresses). A mailbox's mail domain is judged by DNS (MX / null MX / implicit MX), by the
registration of its registrable domain (a dead or held mail domain bounces everything), and,
opt-in, by an SMTP RCPT probe. Shared mail domains are judged once per half interval.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from exporter import mail, mailproviders, verdicts
from exporter.checks import Check, Context, Result
from exporter.rdap import RdapClient, RdapLookup
from exporter.registration import Registration
from exporter.store import ContactVerdict, DomainStatus, EmailResult, RdapResult

log = logging.getLogger(__name__)

MAIL_REGISTRATION_TTL = 6 * 3600.0
SKIPPED = Result(ok=True, record=False)


@dataclass(frozen=True)
class _MailRegistration:
    expires: float
    problem: str | None  # mail_domain_held | mail_domain_expired | mail_domain_unregistered
    first_404: float | None = None  # an unconfirmed 404: confirmed by a second one later


class ContactsCheck(Check):
    name = "email"
    after = ("rdap",)

    def __init__(self, ctx: Context, client: RdapClient) -> None:
        super().__init__(ctx)
        self.client = client
        self._mail_verdicts: dict[str, tuple[float, mail.MailVerdict]] = {}
        self._mail_registrations: dict[str, _MailRegistration] = {}
        self._smtp_results: dict[str, tuple[float, bool | None]] = {}
        self._smtp_pacer = mail.SmtpPacer()  # one per process: paces probes per MX host

    def interval(self) -> float:
        return self.ctx.config.email.interval

    def observe(
        self, domain: str, kind: str, before: DomainStatus | None, after: DomainStatus
    ) -> None:
        self._prune_contacts(domain)
        if kind == "rdap" and _real_contacts(after.rdap.registration if after.rdap else None) != (
            _real_contacts(before.rdap.registration if before and before.rdap else None)
        ):
            # New or changed published mailboxes: judge them now, not an e-mail interval later.
            self.ctx.request(domain, "email")

    async def run(self, domain: str) -> Result:
        status = self.ctx.store.get(domain)
        cfg = self.ctx.domain(domain)
        if status is None or cfg is None:
            return SKIPPED
        contacts: list[tuple[str, str, str]] = [(c.role, "config", c.email) for c in cfg.contacts]
        if status.rdap and status.rdap.registration:
            contacts += [
                (c.role, "rdap", c.email)
                for c in status.rdap.registration.contacts
                if c.kind == "real" and c.email
            ]
        # Verdicts on RDAP addresses restored from the state file, which keeps no addresses:
        # carry them over until the next RDAP read brings the addresses back.
        reg = status.rdap.registration if status.rdap else None
        restored = reg is not None and any(c.kind == "real" and not c.email for c in reg.contacts)
        carried = (
            tuple(v for v in (status.email.verdicts if status.email else ()) if v.source == "rdap")
            if restored
            else ()
        )
        if not contacts and not carried:
            if status.email is not None and status.email.verdicts:
                # Every contact left the record: their series go at once.
                self.ctx.store.update(domain, lambda s: replace(s, email=EmailResult(())))
            return SKIPPED  # nothing to judge: no series, no check state
        previous = {
            (v.role, v.source, v.mail_domain): v
            for v in (status.email.verdicts if status.email else ())
        }
        judged: list[ContactVerdict] = []
        failure: str | None = None
        for role, source, address in contacts:
            verdict = await self._judge_contact(domain, role, source, address)
            if verdict.reason == "invalid_address":
                # Not an address at all (RDAP placeholder text): nothing to judge, and no
                # DNS failure either, so it neither fails the check nor yields a verdict.
                log.debug("contact is not an address: domain=%s role=%s", domain, role)
                continue
            if verdict.deliverable is None:
                failure = failure or _email_reason(verdict.reason)
                old = previous.get((role, source, verdict.mail_domain))
                if old is not None and old.deliverable is not None:
                    verdict = old  # keep the last good value; success=0 says it is stale
            judged.append(verdict)
        result = EmailResult(tuple(judged) + carried)
        if failure:
            log.warning("e-mail check incomplete: domain=%s reason=%s", domain, failure)
        return Result(ok=failure is None, error=failure, land=lambda s: replace(s, email=result))

    async def _judge_contact(
        self, domain: str, role: str, source: str, address: str
    ) -> ContactVerdict:
        mail_domain = mail.mail_domain_of(address)
        if mail_domain is None:
            return ContactVerdict(role, source, "", None, "invalid_address", False)
        self_hosted = mail_domain == domain or mail_domain.endswith("." + domain)
        verdict = await self._mail_verdict(mail_domain)
        deliverable, reason = verdict.deliverable, verdict.reason
        if deliverable is not False and verdict.zone:
            problem = await self._mail_registration_problem(verdict.zone)
            if problem:
                deliverable, reason = False, problem
        if deliverable is True and self.ctx.config.email.smtp_probe and verdict.mx_hosts:
            accepted = await self._smtp_verdict(address, verdict.mx_hosts)
            deliverable, reason = mail.apply_probe(deliverable, reason, accepted)
        log.debug(
            "contact judged: domain=%s role=%s mail_domain=%s deliverable=%s reason=%s",
            domain,
            role,
            mail_domain,
            deliverable,
            reason,
        )
        # Judged on the address alone: a person's free-mail box is a risk however deliverable.
        personal = mailproviders.is_personal(mail_domain)
        return ContactVerdict(role, source, mail_domain, deliverable, reason, self_hosted, personal)

    async def _mail_verdict(self, mail_domain: str) -> mail.MailVerdict:
        now = self.ctx.now()
        cached = self._mail_verdicts.get(mail_domain)
        if cached and cached[0] > now:
            return cached[1]
        async with self.ctx.limiter:
            verdict = await mail.check_mail_domain(
                mail_domain,
                self.ctx.config.dns,
                self.ctx.config.email,
                on_query=self.ctx.metrics.record_dns,
            )
        if verdict.deliverable is not None:
            # Many monitored domains share a mail provider: judge it once per half interval.
            self._mail_verdicts[mail_domain] = (now + self.ctx.config.email.interval / 2, verdict)
        return verdict

    async def _mail_registration_problem(self, zone: str) -> str | None:
        """Is the mail domain's own registration dead or dying? Unknown is not a problem."""
        now = self.ctx.now()
        monitored = self.ctx.store.get(zone)
        if monitored is not None and monitored.rdap is not None:
            return _registration_problem(monitored.rdap, now)
        cached = self._mail_registrations.get(zone)
        if cached and cached.expires > now:
            return cached.problem
        result = await self.client.lookup(zone, follow_registrar=False)
        if not result.success:
            log.debug("mail domain registration unknown: zone=%s reason=%s", zone, result.error)
            return None
        ttl = min(MAIL_REGISTRATION_TTL, self.ctx.config.rdap.interval)
        if result.registered is False:
            # Like a monitored domain's: one 404 is not a deletion. Unknown until a second
            # 404 at least rdap.hold_interval later confirms it.
            hold = self.ctx.config.rdap.hold_interval
            first = cached.first_404 if cached and cached.first_404 is not None else now
            if not verdicts.registration_confirmed_gone(
                first_404=first, now=now, hold_interval=hold, parent_nxdomain=False
            ):
                self._mail_registrations[zone] = _MailRegistration(now + hold, None, first)
                return None
            self._mail_registrations[zone] = _MailRegistration(
                now + ttl, "mail_domain_unregistered", first
            )
            return "mail_domain_unregistered"
        problem = _registration_problem(_rdap_result(result), now)
        self._mail_registrations[zone] = _MailRegistration(now + ttl, problem)
        return problem

    async def _smtp_verdict(self, address: str, mx_hosts: tuple[str, ...]) -> bool | None:
        now = self.ctx.now()
        key = address.lower()
        cached = self._smtp_results.get(key)
        if cached and cached[0] > now:
            return cached[1]
        # Not under the global limiter: the probe waits for its MX host's pacer (seconds),
        # and holding a global slot meanwhile would starve every other check.
        probe = await mail.probe_mailbox(
            address,
            mx_hosts,
            self.ctx.config.dns,
            self.ctx.config.email,
            pacer=self._smtp_pacer,
            on_query=self.ctx.metrics.record_dns,
        )
        outcome = {True: "accepted", False: "rejected", None: "unknown"}[probe.accepted]
        self.ctx.metrics.record_smtp(outcome)
        # Probing is intrusive: at most once per smtp_interval per address, whatever the
        # answer (re-probing after an "unknown" is what greylisting and blocklists punish).
        self._smtp_results[key] = (now + self.ctx.config.email.smtp_interval, probe.accepted)
        return probe.accepted

    def _prune_contacts(self, domain: str) -> None:
        """Drop verdicts of contacts no longer on record (an RDAP contact that became redacted
        or was removed, a config contact removed by a reload): a verdict is about a mailbox,
        and without the mailbox there is nothing to report."""
        status = self.ctx.store.get(domain)
        cfg = self.ctx.domain(domain)
        if status is None or cfg is None or status.email is None:
            return
        on_record = {(c.role, "config", mail.mail_domain_of(c.email) or "") for c in cfg.contacts}
        rdap_roles_unread: set[str] = set()
        reg = status.rdap.registration if status.rdap else None
        for c in reg.contacts if reg else ():
            if c.kind != "real":
                continue
            if c.email:
                on_record.add((c.role, "rdap", mail.mail_domain_of(c.email) or ""))
            else:
                rdap_roles_unread.add(c.role)  # restored from the state file: no address kept
        kept = tuple(
            v
            for v in status.email.verdicts
            if (v.role, v.source, v.mail_domain) in on_record
            or (v.source == "rdap" and v.role in rdap_roles_unread)
        )
        if len(kept) != len(status.email.verdicts):
            log.info(
                "contact no longer on record, verdict dropped: domain=%s dropped=%d",
                domain,
                len(status.email.verdicts) - len(kept),
            )
            self.ctx.store.update(domain, lambda s: replace(s, email=EmailResult(kept)))


def _rdap_result(result: RdapLookup) -> RdapResult:
    return RdapResult(
        registered=bool(result.registered), server=result.server, registration=result.registration
    )


def _real_contacts(reg: Registration | None) -> set[tuple[str, str]]:
    return {(c.role, c.email) for c in reg.contacts if c.email} if reg else set()


def _registration_problem(rdap: RdapResult, now: float) -> str | None:
    if rdap.registered is False:
        return "mail_domain_unregistered"
    reg = rdap.registration
    if reg is None:
        return None
    if reg.on_hold or reg.dying:
        return "mail_domain_held"
    paid_until = reg.paid_until
    if paid_until is not None and paid_until < datetime.fromtimestamp(now, UTC):
        return "mail_domain_expired"
    return None


def _email_reason(reason: str) -> str:
    """Map a verdict's reason onto the small fixed set exported as a label."""
    known = ("timeout", "servfail", "smtp_unknown", "deadline", "query_budget")
    return reason if reason in known else "invalid_response"
