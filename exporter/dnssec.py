"""DNSSEC chain, glue and SOA-serial verdicts from answers already received: pure, no I/O.

The probe that gathers the answers is `exporter.dnssecprobe`; the check that runs it is
`exporter.checks.dnssec`. Every function here says "unknown" (None) rather than guess: a key
algorithm or DS digest this host cannot compute is no evidence either way.

- `chain_verdict`: does some DS at the parent name a DNSKEY that one child server serves, and
  does that key sign the DNSKEY RRset (the chain a validating resolver follows, RFC 4035 §5.2)?
  Signature validity *times* are deliberately not part of it: an expired signature is its own
  signal (`earliest_expiration`), so one cause raises one alert.
- `earliest_expiration`: the earliest RRSIG expiration among the signatures given.
- `serial_drift`: how far apart the SOA serials of the child's servers are (RFC 1982).
- `glue_mismatch`: the parent's glue for an in-domain nameserver vs the child's own addresses.
- `registry_verdict`: the parent's DS vs the registry's RDAP `secureDNS.delegationSigned`,
  counted only once an RDAP read made after the disagreement was first seen confirms it (the
  same rule as the nameserver mismatch, issue 7).

Signatures are validated with dnspython's `dns.dnssec` (its `cryptography` extra), never by hand.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Collection, Iterable

import dns.dnssec
import dns.dnssecalgs
import dns.exception
import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
import dns.rdtypes.ANY.RRSIG

DNSKEY = dns.rdtypes.ANY.DNSKEY.DNSKEY
DS = dns.rdtypes.ANY.DS.DS
RRSIG = dns.rdtypes.ANY.RRSIG.RRSIG

# RFC 4034 §2.1.1: only keys with the Zone Key flag may sign zone data; REVOKE (RFC 5011) takes
# a key out of use.
ZONE_FLAG = 0x0100
REVOKE_FLAG = 0x0080
_PROTOCOL = 3  # RFC 4034 §2.1.2: anything else is not a DNSSEC key
_SERIAL_SPACE = 2**32  # RFC 1982 with SERIAL_BITS = 32
# DS digest types dnspython computes when validating: SHA-1, SHA-256, SHA-384 (RFC 8624 §3.3).
DIGESTS = frozenset({1, 2, 4})


def chain_verdict(
    domain: dns.name.Name,
    ds_set: Collection[DS],
    dnskeys: Collection[DNSKEY],
    signatures: Iterable[RRSIG],
) -> bool | None:
    """`domain_dnssec_ds_mismatch` for the DNSKEY RRset one child server answered.

    True (mismatch) when no DS names a DNSKEY of `dnskeys`, or when the keys some DS names do
    not sign that RRset; False when a DS-named key signs it; None when it cannot be told: no DS
    (the domain is not signed), or the DS digests or key algorithms involved are ones this host
    cannot compute or a validator must not use (RFC 8624), which resolvers treat as insecure,
    not as bogus. Signature validity times are ignored (see the module docstring).
    """
    if not ds_set:
        return None
    named, unjudged = _named_keys(domain, ds_set, dnskeys)
    if not named:
        # Nothing matched; if some DS could not be computed, it might have matched.
        return None if unjudged else True
    rdataset = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    for key in dnskeys:
        rdataset.add(key)
    verdicts = [_signs(domain, rdataset, key, signatures) for key in named]
    if True in verdicts:
        return False
    if None in verdicts:
        return None
    return True


def _named_keys(
    domain: dns.name.Name, ds_set: Iterable[DS], dnskeys: Iterable[DNSKEY]
) -> tuple[list[DNSKEY], bool]:
    """(zone keys of `dnskeys` that some DS digest names, whether some DS could not be judged)."""
    named: list[DNSKEY] = []
    unjudged = False
    keys = [
        k
        for k in dnskeys
        if k.flags & ZONE_FLAG and not k.flags & REVOKE_FLAG and k.protocol == _PROTOCOL
    ]
    for ds in ds_set:
        if ds.digest_type not in DIGESTS:
            unjudged = True  # GOST, NULL or an unassigned number: resolvers ignore such a DS
            continue
        for key in keys:
            if key.algorithm != ds.algorithm or dns.dnssec.key_id(key) != ds.key_tag:
                continue
            # validating=True: a SHA-1 DS may no longer be created but is still validated.
            computed = dns.dnssec.make_ds(domain, key, ds.digest_type, validating=True)
            if computed.digest == ds.digest and key not in named:
                named.append(key)
    return named, unjudged


def _signs(
    domain: dns.name.Name,
    rdataset: dns.rdataset.Rdataset,
    key: DNSKEY,
    signatures: Iterable[RRSIG],
) -> bool | None:
    """Does `key` sign `rdataset` (the DNSKEY RRset)? None when its algorithm cannot be used."""
    if not _usable_algorithm(key):
        return None
    only = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    only.add(key)
    tag = dns.dnssec.key_id(key)
    for sig in signatures:
        if (
            sig.type_covered != dns.rdatatype.DNSKEY
            or sig.key_tag != tag
            or sig.algorithm != key.algorithm
            or sig.signer != domain
        ):
            continue
        try:
            # `now` inside the signature's own validity window: only the key and the bytes are
            # judged here; expiry is exported on its own.
            dns.dnssec.validate_rrsig(
                (domain, rdataset), sig, {domain: only}, now=float(sig.inception)
            )
        except dns.exception.DNSException:
            continue
        return True
    return False


def _usable_algorithm(key: DNSKEY) -> bool:
    if not dns.dnssec.default_policy.ok_to_validate(key):
        return False  # RFC 8624 "MUST NOT validate" (RSAMD5, DSA)
    try:
        dns.dnssecalgs.get_algorithm_cls(key.algorithm)
    except dns.exception.DNSException:
        return False
    return True


def earliest_expiration(signatures: Iterable[RRSIG]) -> int | None:
    """The earliest RRSIG expiration (Unix time) among `signatures`; None when there are none.

    RRSIG times are 32-bit serial numbers (RFC 4034 §3.1.5) that dnspython reads as the Unix
    time in the current epoch; every signature a server serves today is within 68 years of now.
    """
    times = [int(sig.expiration) for sig in signatures]
    return min(times) if times else None


def serial_drift(serials: Iterable[int]) -> int | None:
    """How far the newest serial is ahead of the oldest, in RFC 1982 serial arithmetic: the
    shortest arc of the 2^32 serial circle that holds every serial (so 4294967295 -> 3 is a
    drift of 4, across the wrap). None for no serials; 0 when all are equal.

    A drift of 2^31 or more has no defined order (RFC 1982 §3.2); the arc is still returned,
    since any such value is far beyond every sensible tolerance.
    """
    points = sorted({s % _SERIAL_SPACE for s in serials})
    if not points:
        return None
    if len(points) == 1:
        return 0
    gaps = [b - a for a, b in itertools.pairwise(points)]
    gaps.append(points[0] + _SERIAL_SPACE - points[-1])  # the gap across the wrap
    return _SERIAL_SPACE - max(gaps)


def glue_mismatch(
    glue_a: Collection[str],
    glue_aaaa: Collection[str],
    child_a: Collection[str] | None,
    child_aaaa: Collection[str] | None,
) -> bool | None:
    """`domain_nameserver_glue_mismatch` for one in-domain nameserver name.

    `glue_*`: the addresses the parent's referral carries for the name; `child_*`: what the
    child's servers answer authoritatively for it (empty: NODATA/NXDOMAIN; None: not known).
    Each address type the parent has glue for is compared as a set; a type without glue is not
    compared (registries often publish no AAAA glue, and resolvers then ask the child). A name
    without any glue is a mismatch when the child gives it addresses: resolvers cannot reach
    that server at all. None when a comparison that is needed has no child answer.
    """
    needed: list[tuple[Collection[str], Collection[str] | None]] = []
    if glue_a:
        needed.append((glue_a, child_a))
    if glue_aaaa:
        needed.append((glue_aaaa, child_aaaa))
    if not needed:
        if child_a is None or child_aaaa is None:
            return True if (child_a or child_aaaa) else None
        return bool(child_a or child_aaaa)
    unknown = False
    for glue, child in needed:
        if child is None:
            unknown = True
        elif _addresses(glue) != _addresses(child):
            return True
    return None if unknown else False


def _addresses(values: Iterable[str]) -> frozenset[str]:
    """Addresses in one canonical form, so 2001:DB8:0::1 and 2001:db8::1 are the same."""
    out = set()
    for value in values:
        try:
            out.add(str(ipaddress.ip_address(value)))
        except ValueError:
            out.add(value.lower())  # not an address at all: compared as text
    return frozenset(out)


def registry_verdict(
    signed: bool | None,
    registry_signed: bool | None,
    registry_read_at: float | None,
    previous: bool | None,
    disagree_since: float | None,
    now: float,
) -> tuple[bool | None, float | None]:
    """(`domain_dnssec_registry_disagrees`, when the disagreement was first seen).

    False when the parent's DS and the registry's `delegationSigned` agree; True once an RDAP
    read that finished at or after the first sight of the disagreement still disagrees (right
    after a DS change the registry's last read is simply older); until then the previous value
    stays (None if none). None when either side is unknown.
    """
    if signed is None or registry_signed is None:
        return None, None
    if signed == registry_signed:
        return False, None
    since = disagree_since if disagree_since is not None else now
    if registry_read_at is not None and registry_read_at >= since:
        return True, since
    return previous, since
