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
  - `invalid_response`: an answer could not be used (malformed, YXDOMAIN);
  - `invalid_address`: the input is not a mail domain at all.

A failed lookup only makes the verdict unknown when it could have changed the answer: one MX
target that times out while another resolves is still `mx_ok`, but one that times out while the
others are NXDOMAIN is `timeout`, never `mx_unresolvable`. MX targets that are CNAMEs are followed
(RFC 2181 §10.3 forbids them, but every common MTA follows them, so the mail still arrives).

The SMTP probe (`probe_mailbox`) is **off by default** (`email.smtp_probe: false`) because its
answer is weak and its cost is real. Catch-all domains accept every RCPT. Large providers accept
and bounce later, or reject by sender reputation. Greylisting answers 4xx, tarpits stall, and
many clouds block outbound port 25. Repeated RCPT probes look like address harvesting, which can
get the monitor's IP (and the organisation's real mail) blocklisted. So a 4xx is *unknown*, a
probe never overrides a DNS `undeliverable` (`apply_probe`), hosts are paced by an `SmtpPacer`
that the caller owns (the module keeps no global state), and the conversation stops before DATA:
EHLO, MAIL FROM:<>, RCPT TO, QUIT. The address never appears in a log line; only MX host names
and reply codes do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
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

from exporter.config import DnsSettings, EmailSettings, split_host_port
from exporter.names import InvalidName, to_alabel

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
        "invalid_address",
    }
)
# Outcomes passed to `on_query`; they match the `outcome` label of domainwatch_dns_queries_total.
QUERY_OUTCOMES = frozenset({"success", "nxdomain", "timeout", "servfail", "refused", "error"})

# A domain with dozens of MX records gains nothing from resolving them all; the best few decide.
_MAX_MX_TARGETS = 10
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
    zone: str | None  # apex of the zone holding the mail domain (SOA owner), None if unknown


@dataclass(frozen=True)
class ProbeResult:
    """The answer of one SMTP RCPT probe.

    `accepted` is True for a 2xx to RCPT, False for a 5xx to RCPT, None otherwise. `code` is the
    reply code that ended the conversation (normally RCPT's), `host` the MX name we talked to.
    `reason` is one of: accepted, rejected, greylisted (4xx to RCPT), refused_session (the
    banner, EHLO/HELO or MAIL FROM was not accepted), timeout, connection_error, protocol_error,
    no_address (no MX host had a usable address), invalid_address, disabled (smtp_probe is off).
    """

    accepted: bool | None
    code: int | None
    host: str | None
    reason: str = ""


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
    """Combine a DNS verdict with an RCPT probe's answer (None: 4xx, timeout, no connection).

    A probe only refines a DNS "deliverable": 5xx makes it 0 (`smtp_rejected`), a 4xx or a
    failed probe makes it unknown (`smtp_unknown`), 2xx leaves it. It never overrides a DNS
    "undeliverable", and DNS unknown stays unknown.
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

    `on_query(outcome)` is called once per DNS lookup (see QUERY_OUTCOMES), for the caller's
    query counter. Raises only for configuration errors, never for network trouble: ValueError
    when `dns.resolvers` holds something that is not an IP address, and dnspython's
    NoResolverConfiguration when `dns.resolvers` is empty and the system has no resolver.
    """
    try:
        alabel = to_alabel(mail_domain)
    except InvalidName:
        return MailVerdict(None, "invalid_address", (), None)
    lookups = _Lookups(dns, email.allow_private_addresses, on_query)
    name = dns_name(alabel)
    mx, zone = await asyncio.gather(lookups.lookup(name, _MX), lookups.zone_of(name))
    deliverable, reason, hosts = await _judge(lookups, name, mx)
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
    targets: list[dns.name.Name] = []
    for _pref, exchange in records:
        if exchange != dns.name.root and exchange not in targets:
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
    outcome: str  # one of QUERY_OUTCOMES
    rrset: dns.rrset.RRset | None  # None for NODATA and every failure
    response: dns.message.Message | None  # the NOERROR/NXDOMAIN message, for SOA in authority

    @property
    def unknown_reason(self) -> str | None:
        """The verdict reason when this lookup failed to give an answer, else None."""
        return {
            "timeout": "timeout",
            "servfail": "servfail",
            "refused": "servfail",
            "error": "invalid_response",
        }.get(self.outcome)


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
    ) -> None:
        self._allow_private = allow_private
        self._on_query = on_query
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
        try:
            answer = await self._resolver.resolve(
                name, rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN as exc:
            responses: dict[dns.name.Name, dns.message.Message] = exc.kwargs.get("responses", {})
            return self._done(_Lookup("nxdomain", None, responses.get(name)))
        except dns.resolver.NoNameservers as exc:
            return self._done(_Lookup(_classify_no_nameservers(exc), None, None))
        except dns.exception.Timeout:
            return self._done(_Lookup("timeout", None, None))
        except dns.exception.DNSException as exc:
            log.debug("DNS %s %s failed: %s", _text(name), dns.rdatatype.to_text(rdtype), exc)
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

    async def zone_of(self, name: dns.name.Name) -> str | None:
        """Walk up from `name` with SOA queries, as dns.asyncresolver.zone_for_name does, but
        counting every query and stopping (None) at the first failure instead of raising: a
        timeout part-way would otherwise report a zone further up that is not the real one."""
        current = name
        while current != dns.name.root:
            result = await self.lookup(current, dns.rdatatype.SOA)
            if result.outcome not in ("success", "nxdomain"):
                return None
            if result.rrset is not None and result.rrset.name == current:
                return _text(current)
            if result.response is not None:
                for rrset in result.response.authority:
                    if rrset.rdtype == dns.rdatatype.SOA and (
                        current.is_subdomain(rrset.name) and rrset.name != current
                    ):
                        return None if rrset.name == dns.name.root else _text(rrset.name)
            current = current.parent()
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
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_multicast:
        return False
    return allow_private or ip.is_global


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

    async def wait(self, host: str) -> None:
        delay = self.reserve(host)
        if delay > 0:
            await asyncio.sleep(delay)


class _SmtpError(Exception):
    """The server broke the protocol (closed mid-reply, garbage, or an endless reply)."""


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

    Hosts are tried in order, moving on only when a connection cannot be made; once a server
    answers, its answer stands. Does nothing (reason `disabled`) unless `email.smtp_probe` is set.
    `pacer` spaces probes per MX host; without one there is no pacing (one-shot use only).
    """
    if not email.smtp_probe:
        return ProbeResult(None, None, None, "disabled")
    parts = _split_address(address)
    if parts is None or not parts[0].isascii():
        # A non-ASCII local part needs SMTPUTF8; not worth the risk for a weak signal.
        return ProbeResult(None, None, None, "invalid_address")
    mailbox = f"{parts[0]}@{parts[1]}"
    lookups = _Lookups(dns, email.allow_private_addresses, on_query)
    last = ProbeResult(None, None, None, "no_address")
    for host in mx_hosts:
        try:
            host_name = dns_name(to_alabel(host))
        except InvalidName:
            continue
        found = await lookups.addresses(host_name)
        if not found.usable:
            log.debug("SMTP probe: %s has no usable address", host)
            continue
        if pacer is not None:
            await pacer.wait(host)
        for ip in found.usable:
            try:
                async with asyncio.timeout(email.smtp_timeout):
                    reader, writer = await asyncio.open_connection(
                        ip, email.smtp_port, limit=_MAX_LINE_BYTES
                    )
            except (OSError, TimeoutError) as exc:
                kind = "timeout" if isinstance(exc, TimeoutError) else "connection_error"
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
                result = await _converse(reader, writer, mailbox, host, email)
            finally:
                writer.close()
                with contextlib.suppress(OSError, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await writer.wait_closed()
            log.debug("SMTP probe via %s (%s): %s, code %s", host, ip, result.reason, result.code)
            return result
    return last


async def _converse(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    mailbox: str,
    host: str,
    email: EmailSettings,
) -> ProbeResult:
    """One session under a single deadline, so a tarpit costs at most `smtp_timeout`."""

    async def command(line: str) -> int:
        writer.write(line.encode("ascii") + b"\r\n")
        await writer.drain()
        return await _read_reply(reader)

    def stop(code: int, reason: str) -> ProbeResult:
        return ProbeResult(None, code, host, reason)

    try:
        async with asyncio.timeout(email.smtp_timeout):
            code = await _read_reply(reader)
            if code != 220:
                return stop(code, "refused_session")
            code = await command(f"EHLO {email.smtp_helo}")
            if 500 <= code < 600:  # an old server without ESMTP
                code = await command(f"HELO {email.smtp_helo}")
            if not 200 <= code < 300:
                return stop(code, "refused_session")
            code = await command("MAIL FROM:<>")
            if not 200 <= code < 300:
                return stop(code, "refused_session")
            code = await command(f"RCPT TO:<{mailbox}>")
            if 200 <= code < 300:
                result = ProbeResult(True, code, host, "accepted")
            elif 500 <= code < 600:
                result = ProbeResult(False, code, host, "rejected")
            else:
                result = ProbeResult(None, code, host, "greylisted")
    except TimeoutError:
        return ProbeResult(None, None, host, "timeout")
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
    with contextlib.suppress(
        OSError, TimeoutError, _SmtpError, asyncio.IncompleteReadError, ValueError
    ):
        async with asyncio.timeout(min(email.smtp_timeout, 2.0)):
            await command("QUIT")
    return result


async def _read_reply(reader: asyncio.StreamReader) -> int:
    """Read one (possibly multi-line) reply and return its code."""
    for _ in range(_MAX_REPLY_LINES):
        line = await reader.readline()  # raises ValueError past the stream's line limit
        if not line.endswith(b"\n"):
            raise _SmtpError("connection closed mid-reply")
        text = line.rstrip(b"\r\n")
        if len(text) < 3 or not text[:3].isdigit() or (len(text) > 3 and text[3:4] not in b" -"):
            raise _SmtpError("malformed reply line")
        if text[3:4] != b"-":
            return int(text[:3])
    raise _SmtpError("reply too long")
