"""The state's two JSON parsers read every text alike (exporter/statefile.py, Decoder.decode).

A restart parses every saved record: orjson first (a third of the time), the standard library's
parser for whatever orjson refuses. Mixing them is safe only if no text reads one way through
one and another way through the other. The one known difference is an integer past 64 bits,
which orjson reads as a float; these tests pin that it is the only one.
"""

from __future__ import annotations

import json
import math

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.statefile import Decoder, StateError

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(min_value=1e9, max_value=3e9)  # Unix times, the most common value
    | st.text()
    | st.text(alphabet=st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010))
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)

# Texts no encoder writes: what a damaged or hand-edited file may hold.
_ODD = [
    b'{"a":1,"a":2}',
    b'{"n":-0}',
    b'{"n":-0.0}',
    b'{"n":1E400}',
    b'{"n":-1e400}',
    b'{"n":1e-400}',
    b'{"n":4.9e-324}',
    b'{"n":2.2250738585072011e-308}',
    b'{"n":123456789012345678901234567890}',
    b'{"n":18446744073709551615}',
    b'{"n":18446744073709551616}',
    b'{"n":-9223372036854775808}',
    b'{"n":-9223372036854775809}',
    b'{"n":9007199254740993}',
    b'{"n":1795805762.4063082}',
    b'{"n":0.1e1}',
    b'{"n":01}',
    b'{"n":1.}',
    b'{"n":.5}',
    b'{"n":+1}',
    b'{"n":NaN}',
    b'{"n":Infinity}',
    b'{"s":"\\ud800"}',
    b'{"s":"\\ud800\\udc00"}',
    b'{"s":"\\udc00\\ud800"}',
    b'{"s":"\xed\xa0\x80"}',
    b'{"s":"\xff"}',
    b'{"s":"a\\u0000b"}',
    b'{"s":"tab\there"}',
    b'{"s":"\\x41"}',
    b'{"a":[1,]}',
    b'{"a":1,}',
    b'{"a":1} ',
    b'{"a":1}\n{"b":2}',
    b'{"a":{"b":' * 600 + b"1" + b"}" * 1201,
    b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}",
    b'{"\\u00e9":1,"\xc3\xa9":2}',
    b'{"a":true,"b":false,"c":null}',
    b'{"a":tru}',
]


def _alike(fast: object, slow: object) -> bool:
    """Equal, and of the same types throughout (1 == 1.0 == True for ==), except that an
    integer past 64 bits may be a float of the same value."""
    if type(slow) is int and type(fast) is float and not -(2**63) <= slow < 2**64:
        return float(slow) == fast
    if type(fast) is not type(slow):
        return False
    if isinstance(slow, float):
        assert isinstance(fast, float)
        return (math.isnan(fast) and math.isnan(slow)) or (
            fast == slow and math.copysign(1, fast) == math.copysign(1, slow)
        )
    if isinstance(slow, list):
        assert isinstance(fast, list)
        return len(fast) == len(slow) and all(map(_alike, fast, slow))
    if isinstance(slow, dict):
        assert isinstance(fast, dict)
        return list(fast) == list(slow) and all(_alike(fast[k], slow[k]) for k in slow)
    return fast == slow


def _check(text: bytes) -> None:
    try:
        fast = orjson.loads(text)
    except orjson.JSONDecodeError:
        return  # refused: the standard parser alone decides, as before orjson
    slow = json.loads(text.decode("utf-8", "surrogatepass"))
    assert _alike(fast, slow), (text[:200], fast, slow)


@settings(max_examples=400, deadline=None)
@given(value=_VALUES, ascii_only=st.booleans())
def test_orjson_reads_what_json_writes_as_json_reads_it(value: object, ascii_only: bool) -> None:
    _check(json.dumps({"v": value}, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))


@settings(max_examples=400, deadline=None)
@given(value=_VALUES, cut=st.integers(min_value=0, max_value=400), junk=st.binary(max_size=4))
def test_damaged_texts_read_alike_or_go_to_the_standard_parser(
    value: object, cut: int, junk: bytes
) -> None:
    text = json.dumps({"v": value}).encode("utf-8", "surrogatepass")
    _check(text[:cut] + junk + text[cut:])


def test_odd_texts_read_alike() -> None:
    for text in _ODD:
        _check(text)


def test_the_decoder_reads_as_the_standard_parser_does() -> None:
    # Through Decoder.decode itself: the same documents, and the same refusals.
    for text in _ODD:
        try:
            slow: object = json.loads(text.decode("utf-8", "surrogatepass"))
        except (ValueError, RecursionError):
            slow = StateError
        try:
            fast: object = Decoder().decode(text)
        except StateError:
            fast = StateError
        if slow is StateError or fast is StateError:
            assert fast is slow, text[:80]
        else:
            assert _alike(fast, slow), text[:80]
