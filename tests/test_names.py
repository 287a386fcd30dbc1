"""Name normalisation: every stored, compared or exported name is the lower-case A-label."""

from __future__ import annotations

import pytest

from exporter.names import InvalidName, normalise_host, to_alabel, to_unicode

LABEL_63 = "a" * 63
# Four labels, 253 characters in all: the longest name DNS allows (without the root dot).
LONGEST = f"{LABEL_63}.{LABEL_63}.{LABEL_63}.{'a' * 61}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("Example.COM.", "example.com"),  # the root dot is dropped
        ("  example.com\n", "example.com"),  # surrounding whitespace from YAML is tolerated
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.Example.", "xn--bcher-kva.example"),  # UTS 46 maps case before encoding
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.EXAMPLE", "xn--bcher-kva.example"),
        ("bücher\u3002example", "xn--bcher-kva.example"),  # ideographic full stop
        ("straße.de", "xn--strae-oqa.de"),  # IDNA 2008: ß is kept, not mapped to "ss"
        ("ñ.com", "xn--ida.com"),
        (f"{LABEL_63}.com", f"{LABEL_63}.com"),
        (LONGEST, LONGEST),
        ("com", "com"),  # a bare TLD is a valid name; config demands a dot separately
    ],
)
def test_to_alabel_normalises(raw: str, expected: str) -> None:
    assert to_alabel(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        ".",
        "example.com..",
        ".example.com",
        "ex..ample.com",
        "exa mple.com",
        "exa\tmple.com",
        "example .com",
        "-abc.com",
        "abc-.com",
        "a_b.com",
        "example.com/",
        "*.example.com",
        "xn--zz.com",  # not valid punycode
        "xn--.com",
        "☃.net",  # symbols are DISALLOWED in IDNA 2008
        f"{'a' * 64}.com",  # label longer than 63
        f"{'ü' * 60}.com",  # U-label whose A-label exceeds 63
        f"{LONGEST}a",  # 254 characters
    ],
)
def test_to_alabel_rejects(raw: str) -> None:
    with pytest.raises(InvalidName):
        to_alabel(raw)


def test_invalid_name_is_a_value_error() -> None:
    # config.py and rdap.py catch ValueError around to_alabel.
    assert issubclass(InvalidName, ValueError)


def test_normalise_host_returns_none_instead_of_raising() -> None:
    assert normalise_host("NS1.Example.NET.") == "ns1.example.net"
    assert normalise_host("nsgbr.comlaude.co.uk.") == "nsgbr.comlaude.co.uk"
    assert normalise_host("not a host") is None
    assert normalise_host("") is None


def test_to_unicode_round_trip_and_fallback() -> None:
    assert to_unicode("xn--bcher-kva.example") == "bücher.example"
    assert to_unicode("example.com") == "example.com"
    assert to_unicode("xn--zz.com") == "xn--zz.com"  # undecodable: shown as is
