"""Can a contact's mail domain receive mail? A DNS-only verdict, plus an opt-in SMTP RCPT probe.

`check_mail_domain()` answers from DNS alone (design doc C1): it reads the MX set, honours null MX
(RFC 7505) and the implicit MX of RFC 5321 §5.1, and resolves every exchange to an address, because
an MX whose targets do not resolve is as dead as no MX at all (and RFC 5321 forbids falling back to
the domain's own A record then). It never sends a packet to a mail server.

`MailVerdict.reason` is one of this fixed set (safe as a label value):

- deliverable True:
  - `mx_ok`: at least one MX target has a usable address;
  - `implicit_mx`: no MX records, and the domain's own A/AAAA is the mail host.
- deliverable False:
  - `null_mx`: only `MX 0 .` (RFC 7505), so the domain declares that it takes no mail;
  - `nxdomain`: the mail domain does not exist;
  - `no_mail_host`: no MX and no A/AAAA on the domain;
  - `mx_unresolvable`: MX records exist but no target has an address (NXDOMAIN, NODATA, or an
    IP literal written as an exchange name);
  - `private_address`: the mail hosts resolve, but only to loopback, private, link-local or
    unspecified addresses, which nobody on the internet can deliver to (allowed only with
    `email.allow_private_addresses`, which tests set).
- deliverable None (unknown; never export it as 0):
  - `timeout`: a lookup that decides the answer timed out, or no server answered at all;
  - `servfail`: the resolver answered SERVFAIL or REFUSED;
  - `invalid_response`: an answer could not be used (malformed, YXDOMAIN, a CNAME loop);
  - `deadline`: the check ran out of its wall-clock deadline before a deciding lookup finished;
  - `query_budget`: the check used up its lookup budget before a deciding lookup was made;
  - `invalid_address`: the input is not a mail domain at all.

A failed lookup only makes the verdict unknown when it could have changed the answer: one MX
target that times out while another resolves is still `mx_ok`, but one that times out while the
others are NXDOMAIN is `timeout`, never `mx_unresolvable`. MX targets that are CNAMEs are followed
(RFC 2181 §10.3 forbids them, but every common MTA follows them, so the mail still arrives).

**Whose registration decides** (`MailVerdict.zone`): the mail domain's *registrable domain*, the
ICANN public suffix plus one label (`exporter.suffixes`), not the zone that holds the mail domain.
A contact at `eu.corp.example`, a delegated sub-zone, is judged on `corp.example`: the registry
has no record of `eu.corp.example`, and its 404 is not "unregistered". One SOA query at the
registrable name confirms that it is a zone apex, i.e. delegated as a registration; if it is not
(the name lives inside its suffix operator's own zone, or does not exist) there is no
registration to judge and `zone` is None, as it is when that query fails.

**Bounds** (issue 8): one mail-domain check ends after `MAIL_CHECK_DEADLINE_FACTOR` x
`dns.timeout` of wall time and makes at most `MAIL_CHECK_QUERY_BUDGET` lookups; a lookup cut short
by either makes the verdict unknown (`deadline`, `query_budget`) only where it could have decided.

The SMTP probe (`probe_mailbox`) is **off by default** (`email.smtp_probe: false`) because its
answer is weak and its cost is real. Catch-all domains accept every RCPT. Large providers accept
and bounce later, or reject by sender reputation. Greylisting answers 4xx, tarpits stall, and
many clouds block outbound port 25. Repeated RCPT probes look like address harvesting, which can
get the monitor's IP (and the organisation's real mail) blocklisted. So a 4xx is *unknown*, a
probe never overrides a DNS `undeliverable` (`apply_probe`), hosts are paced by an `SmtpPacer`
that the caller owns (the module keeps no global state), and the conversation stops before DATA:
EHLO, MAIL FROM:<>, RCPT TO, QUIT. The address never appears in a log line; only MX host names,
reply codes and enhanced status codes do (never reply text, which often echoes the address).

Only a reply that says *the mailbox does not exist* counts as a rejection (`classify_rcpt`): an
enhanced status 5.1.0/5.1.1/5.1.10 (RFC 3463), or, without one, a 550 or a "user unknown"-style
text.
A 5.7.x status, or any 5xx whose text speaks of policy, blocklists, reputation or relaying, is the
server refusing *us*, not a verdict on the mailbox: unknown. So is any other 5xx (mailbox full,
system or syntax trouble). The whole probe (address lookups, connect, banner, EHLO, MAIL, RCPT,
across at most `SMTP_MAX_HOSTS` MX hosts) ends after `SMTP_PROBE_DEADLINE_FACTOR` x
`email.smtp_timeout` (time spent waiting for the pacer does not count), so a tarpit that drips its
banner a byte a second costs a bounded time and yields unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.rrset

from exporter import addresses
from exporter.config import DnsSettings, EmailSettings, split_host_port
from exporter.names import InvalidName, to_alabel
from exporter.suffixes import registrable_domain

log = logging.getLogger(__name__)

REASONS = frozenset(
    {
        "mx_ok",
        "implicit_mx",
        "null_mx",
        "nxdomain",
        "no_mail_host",
        "mx_unresolvable",
        "private_address",
        "timeout",
        "servfail",
        "invalid_response",
        "deadline",
        "query_budget",
        "invalid_address",
    }
)
# Outcomes passed to `on_query`; they match the `outcome` label of domainwatch_dns_queries_total.
QUERY_OUTCOMES = frozenset({"success", "nxdomain", "timeout", "servfail", "refused", "error"})

# A domain with dozens of MX records gains nothing from resolving them all; the best few decide.
# (This also bounds what a hostile MX set of 1,000 names can cost.)
_MAX_MX_TARGETS = 10

# --- Bounds on one check (issue 8). Each lookup already has a lifetime (dns.timeout per server,
# at most 3 servers); these bound the check as a whole, whatever the answers are.
# A mail-domain check is two rounds of parallel lookups (MX + SOA, then A/AAAA of the exchanges),
# so 4 x dns.timeout (12 s by default) leaves room for a slow server without letting a hostile
# one hold the check.
MAIL_CHECK_DEADLINE_FACTOR = 4.0
# Lookups (resolver calls) per mail-domain check: MX + SOA + A and AAAA for each of the
# _MAX_MX_TARGETS exchanges is 22; the budget is the backstop should any path ask more.
MAIL_CHECK_QUERY_BUDGET = 24
# A probe ends after 2 x email.smtp_timeout (20 s by default) of network time in all: enough for
# one slow but honest server, or one host that cannot be reached and then one that answers.
SMTP_PROBE_DEADLINE_FACTOR = 2.0
# MX hosts a probe tries, best preference first, and addresses per host (A before AAAA).
SMTP_MAX_HOSTS = 3
SMTP_MAX_ADDRESSES = 2
# Lookups a probe may make: A and AAAA for each host it tries.
SMTP_QUERY_BUDGET = 2 * SMTP_MAX_HOSTS
# The outer guard around a check fires this long after its deadline: the per-lookup lifetimes are
# clamped to the deadline, so it only catches what they do not (it should never fire).
_BACKSTOP_GRACE = 0.5
# Bounds on what we accept from an SMTP server, so a hostile one cannot make us buffer forever.
_MAX_REPLY_LINES = 64
_MAX_LINE_BYTES = 4096
# Module-level because the public functions take a parameter named `dns` (the settings), which
# shadows the dnspython package inside them.
_MX = dns.rdatatype.MX


@dataclass(frozen=True)
class MailVerdict:
    """The DNS-only answer for one mail domain; see the module docstring for `reason`."""

    deliverable: bool | None  # None = unknown: never export it as 0
    reason: str
    mx_hosts: tuple[str, ...]  # usable mail hosts (A-labels), best preference first
    # The registrable domain whose registration decides (`corp.example` for a contact at
    # `eu.corp.example`); None when there is none to judge or the DNS could not tell.
    zone: str | None


@dataclass(frozen=True)
class ProbeResult:
    """The answer of one SMTP RCPT probe.

    `accepted` is True for a 2xx to RCPT, False only for a 5xx that says the mailbox does not
    exist (see `classify_rcpt`), None otherwise. `code` is the reply code that ended the
    conversation (normally RCPT's), `enhanced` its RFC 3463 status code if it had one, `host`
    the MX name we talked to. `reason` is one of: accepted, rejected (no such mailbox), policy
    (5.7.x or a policy/blocklist text: the server refused us, not the mailbox), other_rejection
    (another 5xx: mailbox full, system or syntax trouble), greylisted (4xx to RCPT),
    refused_session (the banner, EHLO/HELO or MAIL FROM was not accepted), timeout (one
    connection or session hit email.smtp_timeout), deadline (the probe's overall deadline),
    connection_error, protocol_error, no_address (no MX host had a usable address),
    invalid_address, disabled (smtp_probe is off).
    """

    accepted: bool | None
    code: int | None
    host: str | None
    reason: str = ""
    enhanced: str | None = None


def mail_domain_of(address: str) -> str | None:
    """The domain part of `address` as a lower-case A-label, or None if it is not an address.

    Address literals (`user@[192.0.2.1]`) and single-label domains count as "not an address":
    neither is a contact a registrar could write to.
    """
    parts = _split_address(address)
    return parts[1] if parts else None


def apply_probe(
    deliverable: bool | None, reason: str, accepted: bool | None
) -> tuple[bool | None, str]:
    """Combine a DNS verdict with an RCPT probe's `ProbeResult.accepted`.

    A probe only refines a DNS "deliverable": a "no such mailbox" rejection (accepted False)
    makes it 0 (`smtp_rejected`); any other non-answer (4xx, 5.7.x and other policy or unclear
    5xx, timeout, no connection: accepted None) makes it unknown (`smtp_unknown`); 2xx leaves it.
    It never overrides a DNS "undeliverable", and DNS unknown stays unknown.
    """
    if deliverable is not True:
        return deliverable, reason
    if accepted is False:
        return False, "smtp_rejected"
    if accepted is None:
        return None, "smtp_unknown"
    return True, reason


async def check_mail_domain(
    mail_domain: str,
    dns: DnsSettings,
    email: EmailSettings,
    on_query: Callable[[str], None] | None = None,
) -> MailVerdict:
    """Decide from DNS whether `mail_domain` can receive mail. Never raises for network trouble.

    `on_query(outcome)` is called once per DNS lookup sent (see QUERY_OUTCOMES), for the
    caller's query counter. The check ends within MAIL_CHECK_DEADLINE_FACTOR x `dns.timeout`
    and makes at most MAIL_CHECK_QUERY_BUDGET lookups. Raises only for configuration errors,
    never for network trouble: ValueError when `dns.resolvers` holds something that is not an
    IP address, and dnspython's NoResolverConfiguration when `dns.resolvers` is empty and the
    system has no resolver.
    """
    try:
        alabel = to_alabel(mail_domain)
    except InvalidName:
        return MailVerdict(None, "invalid_address", (), None)
    seconds = MAIL_CHECK_DEADLINE_FACTOR * dns.timeout
    lookups = _Lookups(
        dns,
        email.allow_private_addresses,
        on_query,
        _Deadline(seconds),
        MAIL_CHECK_QUERY_BUDGET,
    )
    name = dns_name(alabel)
    try:
        async with asyncio.timeout(seconds + _BACKSTOP_GRACE):
            mx, zone = await asyncio.gather(
                lookups.lookup(name, _MX), lookups.registration_zone(registrable_domain(alabel))
            )
            deliverable, reason, hosts = await _judge(lookups, name, mx)
    except TimeoutError:
        log.warning("mail domain check of %s hit its %.1fs deadline", alabel, seconds)
        return MailVerdict(None, "deadline", (), None)
    return MailVerdict(deliverable, reason, hosts, zone)


def dns_name(alabel: str) -> dns.name.Name:
    """An absolute dnspython name for an A-label we produced ourselves."""
    return dns.name.from_text(alabel.rstrip(".") + ".")


async def _judge(
    lookups: _Lookups, name: dns.name.Name, mx: _Lookup
) -> tuple[bool | None, str, tuple[str, ...]]:
    if mx.outcome == "nxdomain":
        return False, "nxdomain", ()
    if mx.unknown_reason:
        return None, mx.unknown_reason, ()
    if mx.rrset is None:
        # NODATA: RFC 5321 §5.1 implicit MX, the domain itself is the mail host.
        host = await lookups.addresses(name)
        if host.usable:
            return True, "implicit_mx", (_text(name),)
        if host.unknown_reason:
            return None, host.unknown_reason, ()
        return False, ("private_address" if host.had_addresses else "no_mail_host"), ()

    records = sorted(
        ((rd.preference, rd.exchange) for rd in mx.rrset),
        key=lambda pe: (pe[0], _text(pe[1])),
    )
    # A null MX mixed with real ones is a misconfiguration; the real ones still receive mail.
    # (A set for "seen": a list scan would make a 1,000-name MX set cost a second of CPU.)
    targets: list[dns.name.Name] = []
    seen: set[dns.name.Name] = set()
    for _pref, exchange in records:
        if exchange != dns.name.root and exchange not in seen:
            seen.add(exchange)
            targets.append(exchange)
    if not targets:
        return False, "null_mx", ()
    # An IP literal in an MX is invalid (RFC 7505 §3, RFC 5321 §5.1): no MTA will use it.
    names = [t for t in targets[:_MAX_MX_TARGETS] if not _is_ip_literal(t)]
    results = await asyncio.gather(*(lookups.addresses(t) for t in names))
    usable = tuple(_text(t) for t, r in zip(names, results, strict=True) if r.usable)
    if usable:
        if len(usable) < len(targets):
            log.debug(
                "%s: %d of %d MX targets unusable",
                _text(name),
                len(targets) - len(usable),
                len(targets),
            )
        return True, "mx_ok", usable
    for r in results:
        if r.unknown_reason:
            return None, r.unknown_reason, ()
    if any(r.had_addresses for r in results):
        return False, "private_address", ()
    return False, "mx_unresolvable", ()


@dataclass(frozen=True)
class _Lookup:
    outcome: str  # one of QUERY_OUTCOMES, or "not_sent" when a bound stopped it beforehand
    rrset: dns.rrset.RRset | None  # None for NODATA and every failure
    response: dns.message.Message | None  # the NOERROR/NXDOMAIN message, for SOA in authority
    limit: str | None = None  # "deadline" / "query_budget" when one of our bounds cut it short

    @property
    def unknown_reason(self) -> str | None:
        """The verdict reason when this lookup failed to give an answer, else None."""
        if self.limit is not None:
            return self.limit
        return {
            "timeout": "timeout",
            "servfail": "servfail",
            "refused": "servfail",
            "error": "invalid_response",
        }.get(self.outcome)


class _Deadline:
    """A point on the monotonic clock by which a check must be done.

    `extend()` pushes it back by time we chose to spend (waiting for the SMTP pacer), so only
    time spent on the network counts against it.
    """

    def __init__(self, seconds: float) -> None:
        self._at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._at - time.monotonic()

    def extend(self, seconds: float) -> None:
        self._at += max(0.0, seconds)


@dataclass(frozen=True)
class _HostAddresses:
    usable: tuple[str, ...]  # addresses we may deliver to, IPv4 first
    had_addresses: bool  # some A/AAAA existed, usable or not
    unknown_reason: str | None  # set when a failed lookup might have found a usable address


class _Lookups:
    """One resolver per check, so nothing leaks between checks or into dnspython's global one."""

    def __init__(
        self,
        settings: DnsSettings,
        allow_private: bool,
        on_query: Callable[[str], None] | None,
        deadline: _Deadline,
        budget: int,
    ) -> None:
        self._allow_private = allow_private
        self._on_query = on_query
        self._deadline = deadline
        self._budget = budget
        self.used = 0  # lookups sent so far
        if settings.resolvers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            servers: list[str | dns.nameserver.Nameserver] = []
            for entry in settings.resolvers:
                host, port = split_host_port(entry, 53)
                try:
                    ipaddress.ip_address(host)
                except ValueError:
                    raise ValueError(
                        f"dns.resolvers entry {entry!r} is not an IP address"
                    ) from None
                servers.append(dns.nameserver.Do53Nameserver(host, port))
            resolver.nameservers = servers
        else:
            resolver = dns.asyncresolver.Resolver(configure=True)
        count = max(1, len(resolver.nameservers))
        # `timeout` bounds each try; the lifetime lets every configured server have one try
        # (capped, so a long resolv.conf cannot stretch a check without bound).
        resolver.timeout = settings.timeout
        resolver.lifetime = settings.timeout * min(count, 3)
        resolver.cache = None  # fresh answers each check; the recursive resolver caches
        self._resolver = resolver

    async def lookup(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> _Lookup:
        if self.used >= self._budget:
            log.debug("DNS %s %s not sent: query budget spent", _text(name), rdtype.name)
            return _Lookup("not_sent", None, None, "query_budget")
        remaining = self._deadline.remaining()
        if remaining <= 0:
            return _Lookup("not_sent", None, None, "deadline")
        self.used += 1
        # A lifetime cut down to what is left of the deadline: when it expires, say so.
        lifetime = self._resolver.lifetime
        clamped = remaining < lifetime
        try:
            answer = await self._resolver.resolve(
                name,
                rdtype,
                search=False,
                raise_on_no_answer=False,
                lifetime=min(lifetime, remaining),
            )
        except dns.resolver.NXDOMAIN as exc:
            responses: dict[dns.name.Name, dns.message.Message] = exc.kwargs.get("responses", {})
            return self._done(_Lookup("nxdomain", None, responses.get(name)))
        except dns.resolver.NoNameservers as exc:
            outcome = _classify_no_nameservers(exc)
            limit = "deadline" if clamped and outcome == "timeout" else None
            return self._done(_Lookup(outcome, None, None, limit))
        except dns.exception.Timeout:
            return self._done(_Lookup("timeout", None, None, "deadline" if clamped else None))
        except dns.exception.DNSException as exc:
            # Includes a CNAME chain that loops or is too long (dns.message.ChainTooLong).
            log.debug("DNS %s %s failed: %s", _text(name), rdtype.name, type(exc).__name__)
            return self._done(_Lookup("error", None, None))
        rrset = answer.rrset
        if rrset is not None and rrset.rdtype != rdtype:
            rrset = None
        return self._done(_Lookup("success", rrset, answer.response))

    def _done(self, result: _Lookup) -> _Lookup:
        if self._on_query is not None:
            self._on_query(result.outcome)
        return result

    async def addresses(self, host: dns.name.Name) -> _HostAddresses:
        a, aaaa = await asyncio.gather(
            self.lookup(host, dns.rdatatype.A), self.lookup(host, dns.rdatatype.AAAA)
        )
        found = [rd.to_text() for r in (a, aaaa) if r.rrset is not None for rd in r.rrset]
        usable = tuple(ip for ip in found if usable_address(ip, self._allow_private))
        unknown = next((r.unknown_reason for r in (a, aaaa) if r.unknown_reason), None)
        return _HostAddresses(usable, bool(found), unknown)

    async def registration_zone(self, registrable: str | None) -> str | None:
        """`registrable` if it is a zone apex (a delegated registration), else None.

        Not a walk up from the mail domain: the zone that holds `eu.corp.example` may be that
        sub-zone itself, which has no registration. One SOA query at the registrable name tells
        whether the registry delegated it. NODATA or NXDOMAIN there means the name lives inside
        its suffix operator's zone or does not exist (no registration to judge); a failed query
        means we cannot tell. Both give None, which never counts against the contact.
        """
        if registrable is None:
            return None
        name = dns_name(registrable)
        result = await self.lookup(name, dns.rdatatype.SOA)
        if result.rrset is not None and result.rrset.name == name:
            return registrable
        return None


def _classify_no_nameservers(exc: dns.resolver.NoNameservers) -> str:
    """Every server failed: say how, worst-informative first."""
    errors = exc.kwargs.get("errors") or []
    answers = [str(err[3]) for err in errors]
    if "SERVFAIL" in answers:
        return "servfail"
    if "REFUSED" in answers:
        return "refused"
    # Only network errors (e.g. ICMP port unreachable on loopback): nobody answered.
    if errors and all(isinstance(err[3], OSError | dns.exception.Timeout) for err in errors):
        return "timeout"
    return "error"


def usable_address(text: str, allow_private: bool) -> bool:
    """May we deliver to this IP? Only globally routable ones, unless private ones are allowed.

    Unspecified and multicast addresses are never usable; an IPv4-mapped IPv6 address is judged
    by its IPv4 part so `::ffff:10.0.0.1` cannot slip past the private check.
    """
    ip = addresses.parse_ip(text)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_multicast:
        return False
    # The same policy as RDAP: NAT64, 6to4, Teredo and IPv4-compatible forms of a private
    # IPv4 address are private too.
    return allow_private or addresses.refusal(ip) is None


def _is_ip_literal(name: dns.name.Name) -> bool:
    text = _text(name).strip("[]")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


# Characters allowed unquoted in a local part (RFC 5322 atext, plus any non-ASCII per RFC 6531).
_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)


def _split_address(address: str) -> tuple[str, str] | None:
    """(local part, A-label domain) for a plausible mailbox, else None."""
    if not isinstance(address, str):
        return None
    text = address.strip()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or len(local.encode("utf-8")) > 64:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return None  # control characters (CR/LF above all) must never reach an SMTP line
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        inner = local[1:-1].replace('\\"', "").replace("\\\\", "")
        if '"' in inner or "\\" in inner:
            return None
    else:
        if local.startswith(".") or local.endswith(".") or ".." in local:
            return None
        if not all(c in _ATEXT or c == "." or ord(c) > 0x7F for c in local):
            return None
    try:
        alabel = to_alabel(domain)
    except InvalidName:
        return None
    if "." not in alabel or _is_ip_literal(dns_name(alabel)):
        return None
    return local, alabel


# --------------------------------------------------------------------------- SMTP probe


class SmtpPacer:
    """At most one probe per MX host per `min_interval` seconds, owned by the caller.

    The scheduler keeps one for the life of the process and passes it to every `probe_mailbox`
    call; there is no module-level pacer, so tests and reloads start clean. `reserve()` books the
    next free slot for a host and says how long to wait for it, so concurrent probes queue
    instead of racing (single event loop: no lock needed).
    """

    def __init__(
        self, min_interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.min_interval = min_interval
        self._clock = clock
        self._next_free: dict[str, float] = {}

    def reserve(self, host: str) -> float:
        """Book a probe slot for `host`; returns the seconds to wait before using it."""
        key = host.lower().rstrip(".")
        now = self._clock()
        start = max(now, self._next_free.get(key, now))
        self._next_free[key] = start + self.min_interval
        return start - now

    async def wait(self, host: str) -> float:
        """Wait for `host`'s next slot; returns the seconds waited."""
        delay = self.reserve(host)
        if delay > 0:
            await asyncio.sleep(delay)
        return max(0.0, delay)


# --- What a reply to RCPT TO says about the mailbox (RFC 5321 §4.2, RFC 3463).

# An enhanced status code opens the text of each reply line: class.subject.detail.
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# The server refused *us* (our address, reputation, the null sender, relaying), not the mailbox.
_POLICY_TEXT = re.compile(
    r"polic|block|black ?list|deny|denied|listed|spamhaus|spamcop|barracuda|sorbs|\bs?rbl\b|"
    r"dnsbl|\bspam|reputation|relay|not permitted|prohibit|refused|\bbann?ed\b|abuse|"
    r"authenticat|\bspf\b|dmarc|dkim|sender|reverse dns|\brdns\b|\bptr\b|client host|"
    r"too many|rate limit|throttl|gr[ae]ylist|try again|later|temporar",
    re.IGNORECASE,
)
# The mailbox exists but cannot take mail now: not "does not exist".
_MAILBOX_BUSY_TEXT = re.compile(
    r"full|quota|storage|exceed|over ?limit|disabled|inactive|suspended|locked|frozen",
    re.IGNORECASE,
)
# The mailbox does not exist, said in words (for replies without an enhanced status code).
_NO_MAILBOX_TEXT = re.compile(
    r"user unknown|unknown user|unknown recipient|recipient unknown|unknown mailbox|"
    r"no such (user|mailbox|recipient|address|account)|(does not|doesn't|no longer) exists?|"
    r"(mailbox|user|recipient|account) not found|invalid (recipient|mailbox|user)|unroutable|"
    r"unrouteable",
    re.IGNORECASE,
)
# Enhanced codes that say the destination mailbox does not exist: 5.1.1 bad mailbox, 5.1.0 other
# address status (what many servers send for an unknown user), and 5.1.10, which is RFC 7505's
# "null MX" (no mail for that domain at all) and Microsoft 365's RecipientNotFound.
_NO_MAILBOX_STATUS = frozenset({"5.1.0", "5.1.1", "5.1.10"})
# Where a reply echoes the address (`<gone@example>:`), its words must not count as the
# server's: a mailbox named `blocked@` is not a blocklist entry.
_ANGLE_ADDRESS = re.compile(r"<[^<>]*>")


def enhanced_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code opening a reply's text (`5.1.1`), if any."""
    match = _ENHANCED.match(text.lstrip())
    return ".".join(match.groups()) if match else None


def classify_rcpt(code: int, text: str, mailbox: str = "") -> tuple[bool | None, str]:
    """(accepted, reason) for a reply to RCPT TO; `text` is the reply without its code.

    - 2xx: (True, accepted). 4xx: (None, greylisted): try later, nothing is known.
    - 5xx whose text speaks of policy, blocklists, reputation, relaying or the sender, or whose
      enhanced code is X.7.Y (security or policy status): (None, policy).
    - 5xx with enhanced code 5.1.0, 5.1.1 or 5.1.10 (no such mailbox): (False, rejected).
    - 5xx without an enhanced code: a 550, or a text that says the mailbox does not exist
      ("user unknown", "no such user"): (False, rejected).
    - Anything else, e.g. 5.2.2 mailbox full, 5.5.x syntax, 5.3.x system, 553/554 without
      such text: (None, other_rejection). Unknown is never "undeliverable".
    """
    if 200 <= code < 300:
        return True, "accepted"
    if 400 <= code < 500:
        return None, "greylisted"
    if not 500 <= code < 600:
        return None, "protocol_error"
    words = _ANGLE_ADDRESS.sub(" ", text)
    if mailbox:
        words = re.sub(re.escape(mailbox), " ", words, flags=re.IGNORECASE)
    enhanced = enhanced_status(text)
    if _POLICY_TEXT.search(words) or (enhanced is not None and enhanced.split(".")[1] == "7"):
        return None, "policy"
    if _MAILBOX_BUSY_TEXT.search(words):
        return None, "other_rejection"
    if enhanced is not None:
        gone = enhanced in _NO_MAILBOX_STATUS
        return (False, "rejected") if gone else (None, "other_rejection")
    if code == 550 or _NO_MAILBOX_TEXT.search(words):
        return False, "rejected"
    return None, "other_rejection"


class _SmtpError(Exception):
    """The server broke the protocol (closed mid-reply, garbage, or an endless reply)."""


@dataclass(frozen=True)
class _Reply:
    code: int
    text: str  # every line's text after the code, joined by newlines; may echo the address


async def probe_mailbox(
    address: str,
    mx_hosts: Sequence[str],
    dns: DnsSettings,
    email: EmailSettings,
    *,
    pacer: SmtpPacer | None = None,
    on_query: Callable[[str], None] | None = None,
) -> ProbeResult:
    """Ask the best reachable MX whether it would take mail for `address`; never sends DATA.

    Hosts are tried in order (at most SMTP_MAX_HOSTS, SMTP_MAX_ADDRESSES addresses each),
    moving on only when a connection cannot be made; once a server answers, its answer stands.
    The whole probe ends within SMTP_PROBE_DEADLINE_FACTOR x `email.smtp_timeout` of network
    time. Does nothing (reason `disabled`) unless `email.smtp_probe` is set. `pacer` spaces
    probes per MX host; without one there is no pacing (one-shot use only).
    """
    if not email.smtp_probe:
        return ProbeResult(None, None, None, "disabled")
    parts = _split_address(address)
    if parts is None or not parts[0].isascii():
        # A non-ASCII local part needs SMTPUTF8; not worth the risk for a weak signal.
        return ProbeResult(None, None, None, "invalid_address")
    mailbox = f"{parts[0]}@{parts[1]}"
    deadline = _Deadline(SMTP_PROBE_DEADLINE_FACTOR * email.smtp_timeout)
    lookups = _Lookups(
        dns, email.allow_private_addresses, on_query, deadline, SMTP_QUERY_BUDGET
    )
    last = ProbeResult(None, None, None, "no_address")
    for host in list(mx_hosts)[:SMTP_MAX_HOSTS]:
        try:
            host_name = dns_name(to_alabel(host))
        except InvalidName:
            continue
        found = await lookups.addresses(host_name)
        if found.unknown_reason == "deadline":
            return _out_of_time(host)
        if not found.usable:
            log.debug("SMTP probe: %s has no usable address", host)
            continue
        if pacer is not None:
            deadline.extend(await pacer.wait(host))
        for ip in found.usable[:SMTP_MAX_ADDRESSES]:
            remaining = deadline.remaining()
            if remaining <= 0:
                return _out_of_time(host)
            limit = min(email.smtp_timeout, remaining)
            try:
                async with asyncio.timeout(limit):
                    reader, writer = await asyncio.open_connection(
                        ip, email.smtp_port, limit=_MAX_LINE_BYTES
                    )
            except (OSError, TimeoutError) as exc:
                kind = "connection_error"
                if isinstance(exc, TimeoutError):
                    kind = "deadline" if limit < email.smtp_timeout else "timeout"
                log.warning(
                    "SMTP probe: cannot connect to %s (%s) port %d: %s",
                    host,
                    ip,
                    email.smtp_port,
                    kind,
                )
                last = ProbeResult(None, None, host, kind)
                continue
            try:
                result = await _converse(reader, writer, mailbox, host, email, deadline)
            finally:
                writer.close()
                with contextlib.suppress(OSError, TimeoutError):
                    async with asyncio.timeout(min(1.0, max(deadline.remaining(), 0.1))):
                        await writer.wait_closed()
            log.debug(
                "SMTP probe via %s (%s): %s, code %s %s",
                host,
                ip,
                result.reason,
                result.code,
                result.enhanced or "",
            )
            return result
    return last


def _out_of_time(host: str) -> ProbeResult:
    log.warning("SMTP probe: deadline reached at %s", host)
    return ProbeResult(None, None, host, "deadline")


async def _converse(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    mailbox: str,
    host: str,
    email: EmailSettings,
    deadline: _Deadline,
) -> ProbeResult:
    """One session under a single limit: `smtp_timeout`, or less if the probe's deadline is
    nearer, so a tarpit (a banner dripped a byte a second, or none at all) costs no more."""

    async def command(line: str) -> _Reply:
        writer.write(line.encode("ascii") + b"\r\n")
        await writer.drain()
        return await _read_reply(reader)

    def stop(reply: _Reply, reason: str) -> ProbeResult:
        return ProbeResult(None, reply.code, host, reason, enhanced_status(reply.text))

    limit = min(email.smtp_timeout, deadline.remaining())
    try:
        async with asyncio.timeout(limit):
            reply = await _read_reply(reader)
            if reply.code != 220:
                return stop(reply, "refused_session")
            reply = await command(f"EHLO {email.smtp_helo}")
            if 500 <= reply.code < 600:  # an old server without ESMTP
                reply = await command(f"HELO {email.smtp_helo}")
            if not 200 <= reply.code < 300:
                return stop(reply, "refused_session")
            reply = await command("MAIL FROM:<>")
            if not 200 <= reply.code < 300:
                return stop(reply, "refused_session")
            reply = await command(f"RCPT TO:<{mailbox}>")
            accepted, reason = classify_rcpt(reply.code, reply.text, mailbox)
            result = ProbeResult(accepted, reply.code, host, reason, enhanced_status(reply.text))
    except TimeoutError:
        reason = "deadline" if limit < email.smtp_timeout else "timeout"
        return ProbeResult(None, None, host, reason)
    except (
        OSError,
        _SmtpError,
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
        ValueError,
    ) as exc:
        log.warning("SMTP probe: session with %s failed: %s", host, type(exc).__name__)
        return ProbeResult(None, None, host, "protocol_error")
    # Polite goodbye; the verdict is already known, so a slow or rude QUIT changes nothing.
    goodbye = min(email.smtp_timeout, 2.0, deadline.remaining())
    if goodbye > 0:
        with contextlib.suppress(
            OSError, TimeoutError, _SmtpError, asyncio.IncompleteReadError, ValueError
        ):
            async with asyncio.timeout(goodbye):
                await command("QUIT")
    return result


async def _read_reply(reader: asyncio.StreamReader) -> _Reply:
    """Read one (possibly multi-line) reply: its code and its text."""
    lines: list[str] = []
    for _ in range(_MAX_REPLY_LINES):
        line = await reader.readline()  # raises ValueError past the stream's line limit
        if not line.endswith(b"\n"):
            raise _SmtpError("connection closed mid-reply")
        text = line.rstrip(b"\r\n")
        if len(text) < 3 or not text[:3].isdigit() or (len(text) > 3 and text[3:4] not in b" -"):
            raise _SmtpError("malformed reply line")
        lines.append(text[4:].decode("utf-8", "replace"))
        if text[3:4] != b"-":
            return _Reply(int(text[:3]), "\n".join(lines))
    raise _SmtpError("reply too long")
