"""Property tests (hypothesis) for what remote RDAP servers control: Retry-After, the JSON body and
the domain object. Whatever they send, the parsers answer with a value or their one typed error.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.rdap import RETRY_AFTER_MAX, _Failure, load_json, retry_after_seconds
from exporter.registration import InvalidResponse, Registration, parse_domain

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- Retry-After -------------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.none(), st.text(max_size=60), st.from_regex(r"\A\s*[0-9]{1,30}\s*\Z")))
def test_retry_after_is_none_or_a_clamped_number(value: str | None) -> None:
    seconds = retry_after_seconds(value, now=1_000_000_000.0)
    if seconds is not None:
        assert isinstance(seconds, float)
        assert 0.0 <= seconds <= RETRY_AFTER_MAX


@FUZZ
@given(st.integers(min_value=0, max_value=10**40))
def test_retry_after_delta_seconds(n: int) -> None:
    assert retry_after_seconds(str(n)) == min(float(n), RETRY_AFTER_MAX)


@FUZZ
@given(
    st.text(
        alphabet=st.characters(categories=["Nd", "No"], exclude_characters="0123456789"),
        min_size=1,
        max_size=8,
    )
)
def test_retry_after_non_ascii_digits_are_absent(value: str) -> None:
    # "²".isdigit() is True and float("٣") == 3.0: neither is an HTTP delta-seconds.
    assert retry_after_seconds(value) is None


@pytest.mark.parametrize(
    "value",
    ["²", "-1", "1.5", "1e9", "NaN", "inf", "0x10", "+5", "5 s", "١٢٣", "\x00", "Tue, 99 Foo"],
)
def test_retry_after_odd_values_are_absent(value: str) -> None:
    assert retry_after_seconds(value) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("999999999999", RETRY_AFTER_MAX),  # huge but well-formed: clamped
        ("9" * 5000, RETRY_AFTER_MAX),  # past Python's int-parsing limit, still just "long"
        ("Fri, 31 Dec 9999 23:59:59 GMT", RETRY_AFTER_MAX),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
    ],
)
def test_retry_after_is_clamped(value: str, seconds: float) -> None:
    assert retry_after_seconds(value) == seconds


# --- JSON bodies -------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=400))
def test_load_json_any_bytes(body: bytes) -> None:
    try:
        load_json(body)
    except _Failure as exc:
        assert exc.reason == "invalid_response"


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b"NaN",
        b'{"x": Infinity}',
        b'{"x": -Infinity}',
        b'{"x": 1e999}',
        b'{"x": ' + b"9" * 5000 + b"}",
        b"\xff\xfe{}",
        b'{"x": "\xc3"}',
        "{}".encode("utf-16"),
        b'{"registrar": "\\ud800"}',
        b'{"registrar": "x\\uDFFF"}',
    ],
    ids=[
        "deep-arrays", "deep-objects", "nan", "infinity", "minus-infinity", "overflow-float",
        "huge-int", "not-utf8", "truncated-utf8", "utf16", "lone-surrogate",
        "lone-low-surrogate",
    ],
)
def test_load_json_rejects(body: bytes) -> None:
    with pytest.raises(_Failure) as caught:
        load_json(body)
    assert caught.value.reason == "invalid_response"


def test_load_json_accepts_a_bom_and_plain_numbers() -> None:
    assert load_json(b'\xef\xbb\xbf{"a": [1, 2.5, -0.0, 1e300]}') == {"a": [1, 2.5, -0.0, 1e300]}


def test_load_json_accepts_paired_surrogate_escapes() -> None:
    assert load_json(b'{"n": "\\ud83d\\ude00 \\\\ud800"}') == {"n": "\U0001f600 \\ud800"}


# --- parse_domain ------------------------------------------------------------------------

RDAP_KEYS = [
    "objectClassName", "ldhName", "unicodeName", "status", "events", "eventAction", "eventDate",
    "entities", "roles", "vcardArray", "publicIds", "type", "identifier", "links", "rel", "href",
    "nameservers", "redacted", "name", "description", "errorCode", "handle",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**5000), max_value=10**5000),  # beyond the int->str limit
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from([
        "domain", "example.test", "EXAMPLE.TEST.", "registrar", "technical", "expiration",
        "registrar expiration", "2030-01-01T00:00:00Z", "99999-01-01", "related",
        "application/rdap+json", "https://rdap.example/domain/example.test", "vcard", "email",
        "fn", "a@b.example", "mailto:x@y.test", "clientHold", "xn--", "\x00", "\ud800",
    ]),
)
KEYS = st.one_of(st.sampled_from(RDAP_KEYS), st.text(max_size=8))
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(KEYS, inner, max_size=6),
    ),
    max_leaves=40,
)


@FUZZ
@given(JSONISH)
def test_parse_domain_any_value(payload: Any) -> None:
    try:
        result = parse_domain(payload)
    except InvalidResponse:
        return
    assert isinstance(result, Registration)


@FUZZ
@given(st.dictionaries(st.sampled_from(RDAP_KEYS), JSONISH, max_size=8))
def test_parse_domain_named_objects(extra: dict[str, Any]) -> None:
    payload = {"objectClassName": "domain", "ldhName": "example.test", **extra}
    try:
        result = parse_domain(payload)
    except InvalidResponse:
        return
    assert isinstance(result, Registration)


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_VALUES = {
    "deep": _nested(5000, "x"),  # deeper than repr() can go
    "huge-int": 10**5000,  # str() of it raises ValueError
    "regex-trap": "a@" + "." * 200_000 + "@",  # backtracking trap for a naive e-mail pattern
    "nan": float("nan"),
    "int": 5,
}


@pytest.mark.parametrize("key", RDAP_KEYS)
@pytest.mark.parametrize("kind", sorted(HOSTILE_VALUES))
def test_parse_domain_hostile_field_values(key: str, kind: str) -> None:
    value = HOSTILE_VALUES[kind]
    entity = {
        "roles": ["registrar", "technical"],
        "vcardArray": ["vcard", [["email", {}, "text", value], ["fn", {}, "text", value]]],
        "publicIds": [{"type": "IANA Registrar ID", key: value}],
        key: value,
    }
    top = {"objectClassName": "domain", "ldhName": "example.test", key: value}
    for payload in (top, {**top, "entities": [entity]}, {**top, "events": [{key: value}]}):
        with contextlib.suppress(InvalidResponse):
            parse_domain(payload)


def test_parse_domain_hostile_values_finish_quickly() -> None:
    trap = "a@" + "." * 200_000 + "@"
    card = ["vcard", [["email", {}, "text", trap], ["fn", {}, "text", trap]]]
    payload = {
        "objectClassName": "domain",
        "ldhName": "example.test",
        "entities": [{"roles": ["technical"], "vcardArray": card}],
    }
    started = time.monotonic()
    parse_domain(payload)
    assert time.monotonic() - started < 1.0
