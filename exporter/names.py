"""Domain-name normalisation shared by config, RDAP and DNS code.

Every name we store, compare or export is the lower-case A-label with no trailing dot. Input may be
a U-label, an A-label, mixed case or end in a dot; UTS 46 mapping (the `idna` package) turns all of
these into one spelling so that `Ünïcode.example.` and `xn--ncode-...example` compare equal.
"""

from __future__ import annotations

import re

import idna

_LDH_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# A name already in its normal form: lower-case LDH labels, no trailing dot. Such a name without
# an "xn--" label is its own answer, so the common case skips the character loop and the label
# split below (300,000 names for a 100k-domain config).
_NORMAL_NAME = re.compile(r"(?!-)[a-z0-9-]{1,63}+(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}+(?<!-))*+")
# Generous: a 253-octet A-label name is far shorter as U-labels; room for spaces and a dot.
_MAX_INPUT = 1024


class InvalidName(ValueError):
    """The text is not a usable DNS host or domain name."""


def to_alabel(name: str) -> str:
    """Return `name` as a lower-case A-label without trailing dot, or raise InvalidName."""
    if len(name) > _MAX_INPUT:
        # Names come from remote RDAP bodies too; UTS 46 mapping is a Python loop per character,
        # so a megabyte of "name" would cost seconds before failing the 253-octet rule anyway.
        raise InvalidName(name[:80] + "...")
    if len(name) <= 253 and _NORMAL_NAME.fullmatch(name) and "xn--" not in name:
        return name
    text = name.strip()
    if text.endswith("."):
        text = text[:-1]
    if not text or text != name.strip().rstrip(".") or any(c.isspace() for c in text):
        raise InvalidName(name)
    try:
        if text.isascii():
            ascii_name = text.lower()
            # Plain ASCII still goes through idna when it carries an A-label, so that a
            # malformed "xn--" label is rejected rather than exported.
            if "xn--" in ascii_name:
                ascii_name = idna.encode(idna.decode(ascii_name), uts46=True).decode("ascii")
        else:
            ascii_name = idna.encode(text, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidName(name) from exc
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LDH_LABEL.match(label) for label in labels):
        raise InvalidName(name)
    return ascii_name


def normalise_host(name: str) -> str | None:
    """Like to_alabel, but for names found in responses: None instead of an exception."""
    try:
        return to_alabel(name)
    except InvalidName:
        return None


def to_unicode(alabel: str) -> str:
    """The U-label form for display; the A-label itself when it cannot be decoded."""
    try:
        return str(idna.decode(alabel))
    except (idna.IDNAError, UnicodeError):
        return alabel
