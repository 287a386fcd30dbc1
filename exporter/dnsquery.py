"""One DNS question to one server: the message primitives shared by the delegation check
(`exporter.nameservers`) and the DNSSEC probe (`exporter.dnssecprobe`).

Only the transport lives here: UDP with the TCP fallbacks, the EDNS/FORMERR retry, the outcome
of each message and the ranking of failure reasons. Budgets, deadlines, route memory and the
caller's own failure vocabulary stay with the callers, because the two checks differ there.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable, Iterable
from typing import Literal

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

QueryOutcome = Literal["success", "nxdomain", "timeout", "servfail", "refused", "error"]
Server = tuple[str, int]  # (address, port)
# Sends one prepared message over UDP (tcp=False) or TCP; the caller's budget and counting.
Transport = Callable[[dns.message.Message, bool], Awaitable[dns.message.Message]]

EDNS_PAYLOAD = 1232
# send()/connect() errors that mean "this host cannot reach that address family or network":
# a local fact, never a verdict on the remote server.
NO_ROUTE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})

# When every server failed, report the most telling reason: a made-up answer (an intercepting
# network) first, then an explicit refusal or SERVFAIL, which say more than silence.
REASON_RANK = (
    "not_authoritative",
    "refused",
    "servfail",
    "invalid_response",
    "referral",
    "error",
    "timeout",
    "no_address",
    "no_route",
)


async def ask(
    transport: Transport,
    qname: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    *,
    rd: bool,
    tcp_retry: bool,
    dnssec: bool = False,
) -> dns.message.Message:
    """One question: UDP (TCP on TC=1), with `tcp_retry` one TCP try after a UDP timeout, one
    retry without EDNS after FORMERR. Transport failures are raised for the caller to name
    (dns.exception.Timeout, OSError, other DNSException, EOFError, ValueError)."""
    edns = True
    while True:
        q = dns.message.make_query(
            qname,
            rdtype,
            use_edns=0 if edns else False,
            payload=EDNS_PAYLOAD,
            want_dnssec=dnssec and edns,
        )
        if not rd:
            q.flags &= ~dns.flags.RD
        try:
            response = await transport(q, False)
        except dns.exception.Timeout:
            if not tcp_retry:
                raise
            # A lost datagram or a UDP-hostile path: one TCP try before calling it dead.
            response = await transport(q, True)
        else:
            if response.flags & dns.flags.TC:
                response = await transport(q, True)
        if response.rcode() == dns.rcode.FORMERR and edns:
            edns = False  # an old server that chokes on EDNS: ask once more without
            continue
        return response


async def exchange(
    q: dns.message.Message,
    host: str,
    port: int,
    *,
    tcp: bool,
    wait: float,
    report: Callable[[QueryOutcome], None],
) -> dns.message.Message:
    """Send one message, waiting at most `wait` seconds, and report its outcome exactly once."""
    outcome: QueryOutcome = "error"
    try:
        if tcp:
            response = await dns.asyncquery.tcp(q, host, timeout=wait, port=port)
        else:
            # Replies with another ID or question, from another address, or that do not
            # parse are ignored (spoofing, confused servers); only the timeout ends it.
            response = await dns.asyncquery.udp(
                q,
                host,
                timeout=wait,
                port=port,
                ignore_unexpected=True,
                ignore_errors=True,
            )
        outcome = outcome_of(response.rcode())
        return response
    except (dns.exception.Timeout, asyncio.CancelledError):
        outcome = "timeout"  # a cancelled message was sent and got no answer in time
        raise
    finally:
        report(outcome)


def outcome_of(rcode: dns.rcode.Rcode) -> QueryOutcome:
    """The self-metrics label of one answered message."""
    if rcode == dns.rcode.NOERROR:
        return "success"
    if rcode == dns.rcode.NXDOMAIN:
        return "nxdomain"
    if rcode == dns.rcode.SERVFAIL:
        return "servfail"
    if rcode == dns.rcode.REFUSED:
        return "refused"
    return "error"


def rcode_reason(rcode: dns.rcode.Rcode) -> str:
    """Why an answer other than NOERROR/NXDOMAIN is unusable."""
    if rcode == dns.rcode.REFUSED:
        return "refused"
    if rcode == dns.rcode.SERVFAIL:
        return "servfail"
    return "invalid_response"


def worst(reasons: Iterable[str]) -> str:
    """The most telling of the failure reasons of all servers tried (`REASON_RANK`)."""
    given = set(reasons)
    if not given:
        return "no_address"
    return next((r for r in REASON_RANK if r in given), "invalid_response")


def ns_targets(section: Iterable[dns.rrset.RRset], owner: dns.name.Name) -> list[dns.name.Name]:
    """The NS targets for `owner` in one section of a response, sorted and without repeats."""
    return sorted(
        {
            rr.target
            for rrset in section
            if rrset.rdtype == dns.rdatatype.NS and rrset.name == owner
            for rr in rrset
        }
    )


def soa_zone(response: dns.message.Message, name: dns.name.Name) -> dns.name.Name | None:
    """The zone a resolver's answer to "SOA of `name`" places `name` in: `name` itself when it
    has a SOA, else the enclosing zone whose SOA a NODATA/NXDOMAIN carries (what
    zone_for_name uses); None when the answer names neither."""
    zone: dns.name.Name | None = None
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.SOA and rrset.name == name:
            zone = name
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name):
            zone = zone or rrset.name
    return zone
