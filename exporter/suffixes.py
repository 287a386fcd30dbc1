"""Registrable domains: which name under a public suffix a registry actually registered.

A host or mail domain such as `eu.corp.example` can sit in a delegated sub-zone that has no
registration of its own: asking the registry's RDAP about it yields 404, which must not read as
"unregistered". Its registration is the *registrable domain*: the public suffix plus one label
(`corp.example`), per the Public Suffix List (PSL).

We use the `publicsuffixlist` package with the snapshot of the list bundled in its wheel (the
package is re-released with every list update; nothing is downloaded at run time), restricted to
the list's ICANN section. The PRIVATE section lists names such as `github.io`, `eu.org` or
`uk.com` that their owners sub-delegate; a registry's RDAP knows only the name registered under
the ICANN suffix (`github.io` at .io), never `foo.github.io`, so using private entries would turn
every such contact into a registry 404.

A TLD missing from the bundled list (one delegated after the snapshot, or test TLDs such as
`.test`) falls under the PSL's default rule `*`: a one-label suffix. That is right for every
single-label-suffix TLD, which includes all new gTLDs; for a ccTLD with unlisted second-level
suffixes it names the suffix itself (in the test DNS world, `shop.co.test` -> `co.test`).
"""

from __future__ import annotations

from functools import cache

from publicsuffixlist import PublicSuffixList

from exporter.names import InvalidName, to_alabel


@cache
def _psl() -> PublicSuffixList:
    # Parsing the bundled list takes ~70 ms: once per process, on first use.
    return PublicSuffixList(only_icann=True)


def registrable_domain(name: str) -> str | None:
    """The registrable domain (ICANN public suffix + one label) of `name`, as a lower-case
    A-label; None when `name` is not a valid domain name or is itself a public suffix."""
    try:
        alabel = to_alabel(name)
    except InvalidName:
        return None
    found = _psl().privatesuffix(alabel)
    return found.lower() if found else None


def public_suffix(name: str) -> str | None:
    """The ICANN public suffix of `name` (`co.uk` for `a.b.co.uk`), None for an invalid name."""
    try:
        alabel = to_alabel(name)
    except InvalidName:
        return None
    found = _psl().publicsuffix(alabel)
    return found.lower() if found else None
