"""The fast readers of exporter/yamlload.py against the checked path (issue 9).

`load()` first tries a line-by-line reader for block-style documents (`_fast_block`), then a
one-pass reader over libyaml's events (`_fast_load`), and only then the checked three-step path
(`_checked_load`), which alone words errors. A fast reader may decline any document (it returns
`_FALLBACK`), but what it returns must be exactly what the checked path returns: equal values of
the same types, and the same objects shared where the text uses aliases. Documents that do not
load must never be answered by a fast reader, so every error keeps its wording.

Generators: block-style documents inside the line reader's subset (which it must answer), the
same with anything YAML allows or forbids mixed in and then mutated character by character,
Python documents dumped by PyYAML in every style (with shared containers: anchors and aliases),
token soup, arbitrary Unicode in scalars, and hand-written cases at each boundary.

Last, the config reader's shortcuts of the same change: names already in normal form skip IDNA
and ipaddress (the verdicts of the full route, as they were before, are the oracle), and domains
share equal nameserver tuples and label mappings without sharing each other's errors.
"""

from __future__ import annotations

import datetime
import gc
import ipaddress
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter import names, yamlload
from exporter.config import ConfigError, is_ip_literal, parse_config
from exporter.yamlload import YamlProblem

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FAST = (yamlload._fast_block, yamlload._fast_load)


def _checked(text: str) -> tuple[bool, Any]:
    try:
        return True, yamlload._checked_load(text)
    except YamlProblem as exc:
        return False, exc.lines


def assert_same(got: object, want: object) -> None:
    """Equal values of identical types (NaN, -0.0 and time zones included), with the same shape
    of sharing: two places hold one object in `got` exactly where they do in `want`."""
    pairs: dict[int, object] = {}  # id in got -> object in want
    back: dict[int, object] = {}  # id in want -> object in got
    stack: list[tuple[object, object, str]] = [(got, want, "")]
    while stack:
        a, b, path = stack.pop()
        assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
        if isinstance(a, dict | list):
            assert isinstance(b, dict | list)
            if id(a) in pairs or id(b) in back:
                assert pairs.get(id(a)) is b and back.get(id(b)) is a, f"{path}: sharing differs"
                continue
            pairs[id(a)], back[id(b)] = b, a
            assert len(a) == len(b), f"{path}: {len(a)} != {len(b)} items"
            if isinstance(a, dict):
                assert isinstance(b, dict)
                for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True):
                    assert type(ka) is type(kb) and repr(ka) == repr(kb), f"{path}: key {ka!r}"
                    stack.append((va, vb, f"{path}.{ka!r}"))
            else:
                assert isinstance(b, list)
                stack.extend(
                    (x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True))
                )
        else:
            assert repr(a) == repr(b), f"{path}: {a!r} != {b!r}"


def compare(text: str) -> tuple[bool, ...]:
    """Checks every fast reader and load() against the checked path; which readers answered."""
    ok, want = _checked(text)
    answered = []
    for fast in FAST:
        got = fast(text)
        answered.append(got is not yamlload._FALLBACK)
        if answered[-1]:
            assert ok, f"{fast.__name__} answered a document the checked path refuses: {want}"
            assert_same(got, want)
    try:
        loaded: tuple[bool, Any] = (True, yamlload.load(text))
    except YamlProblem as exc:
        loaded = (False, exc.lines)
    assert loaded[0] == ok, (loaded, want)
    if ok:
        assert_same(loaded[1], want)
    else:
        assert loaded[1] == want
    return tuple(answered)


# Block-style documents. ---------------------------------------------------------------------

# Texts the line reader must accept as they are (plain, quoted, flow), with their resolution.
SAFE_SCALARS = [
    "example.com", "ns1.example.net", "team0", "6h", "1h30m", "0", "1", "-1", "+1", "1.5",
    "-2.5e3", "1e5", ".inf", "-.inf", ".nan", ".NaN", "0x1f", "0o17", "017", "0b101", "1_000",
    "12:30:00", "190:20:30.15", "true", "false", "True", "yes", "no", "on", "off", "Off", "y",
    "n", "null", "Null", "~", "2020-01-01", "2001-12-14t21:59:43.10-05:00",
    "2001-12-14 21:59:43.10", "a b", "a  b", "a#b", "a:b", "a'b", 'a"b', "a[b]", "a{b}",
    "a,b", "a|b", "a&b", "a*b", "a!b", "a%b", "a@b", "a\\b", "a`b", "http://x.example/y?z=1&w",
    "/etc/ssl/ca.pem", "(x)", "x-", ".de", "...", "bücher.example", "日本語", "café au lait",
    "'quoted'", "'a: b # c'", "''", "'\"'", '"dq"', '""', '"it\'s"', "'ü'", "[]", "[ ]",
    "[a, 'b', \"c\"]", "[1, 2.5, true, ~, null]", "['a, b', \"c: d\"]", "[ns1.x, ns2.x]", "{}",
    "{ }", "{k: v}", "{k: 1, j: 'x', n: ~}", "{team: web}", "[ü, 'é']",
]  # fmt: skip
# Texts that are something else: refused, unusual, or read in a way the subset does not cover.
TRICKY_SCALARS = [
    "=", "<<", "9" * 150, "-" + "9" * 101, "2020-13-45", "2020-02-30", "a: b", "a :b", "- x",
    "-", "&a x", "*a", "*b", "!!str 1", "!!int x", "!x y", "! z", "|", ">", "|-\n  text",
    "'it''s'", '"esc\\n"', '"\\x41"', "'unterminated", "[a, [b]]", "{a: {b: c}}", "[a,]",
    "{a}", "x\ty", "@x", "`x", "%x", "? x", "a #", "#", "---", "\u2028", "\ufeff", "\x85",
    "\x00", " ", "b:", "[a b, c]", "[a: b]", "{a: b: c}", "[-1]", "{a: 1, a: 2}", "{1: a, 1.0: b}",
    "!!binary aGk=", "!!set {a}", "!!omap [a: 1]", "&x [1, *x]", "0x", "0b", "1__0", ":x",
    "?x", "-x", "x\r", "\r\nx", "'a\n  b'", "a\n  b", "[a,\n b]", "2001-12-14 21:59:43.10 -5",
]  # fmt: skip
SAFE_KEYS = [
    "name", "nameservers", "labels", "team", "a", "b_c", ".de", "co.uk", "1", "2.5", "null",
    "x-y", "domains", "interval", "0x20", "k" * 60,
]  # fmt: skip
TRICKY_KEYS = [
    "true", "yes", "<<", "=", "a b", "'q'", '"d"', "? x", "~", "-x", "k" * 1100, "...x", "a:b",
    "[a]", "{a: b}", "&a k", "*a", "!!str k", "1", "1.0", "name", "ü", "", "#", "- k",
]  # fmt: skip


class _Renderer:
    """Writes a random tree as block YAML: indentation widths, compact or indented sequences,
    inline mappings in items, comments, blank lines, trailing spaces, all chosen at random."""

    def __init__(self, rnd: random.Random, safe: bool) -> None:
        self.rnd, self.safe = rnd, safe
        self.unit = rnd.choice([1, 2, 3, 4])
        self.lines: list[str] = []
        # How often a tricky text is used: rarely, so most documents are nearly right.
        self.tricky = 0.0 if safe else rnd.choice([0.02, 0.1, 0.5])

    def scalar(self) -> str:
        tricky = self.rnd.random() < self.tricky
        return self.rnd.choice(TRICKY_SCALARS if tricky else SAFE_SCALARS)

    def sp(self) -> str:
        return " " * self.rnd.choice([1, 1, 1, 2])

    def tail(self) -> str:
        return self.rnd.choice(["", "", "", " ", "  # c", " #", " # ü: - x"])

    def emit(self, line: str) -> None:
        self.lines.append(line)
        if self.rnd.random() < 0.1:
            self.lines.append(" " * self.rnd.randrange(8) + self.rnd.choice(["", "# note", "#"]))

    def mapping(self, col: int, depth: int, first: str | None = None) -> None:
        """Keys at `col`; `first` is the prefix ("- ") the first key shares its line with."""
        count = self.rnd.randrange(1, 5)
        keys = self.rnd.sample(SAFE_KEYS, count)  # no duplicates unless tricky
        for i in range(count):
            if self.rnd.random() < self.tricky:
                keys[i] = self.rnd.choice(TRICKY_KEYS + SAFE_KEYS)
        for i, key in enumerate(keys):
            lead = first if i == 0 and first is not None else " " * col
            self.value(f"{lead}{key}:", col, depth)

    def value(self, head: str, col: int, depth: int) -> None:
        """The value after `head` ("key:" or "-" at `col`)."""
        kind = self.rnd.random() if depth < 4 else 0.0
        if kind < 0.55:
            self.emit(f"{head}{self.sp()}{self.scalar()}{self.tail()}")
        elif kind < 0.62:
            self.emit(head + self.tail())  # null
        elif kind < 0.8:
            self.emit(head + self.tail())
            self.mapping(col + self.unit, depth + 1)
        else:
            self.emit(head + self.tail())
            is_key = not head.rstrip().endswith("-")
            compact = is_key and self.rnd.random() < 0.5
            self.sequence(col if compact else col + self.unit, depth + 1)

    def sequence(self, col: int, depth: int) -> None:
        for _ in range(self.rnd.randrange(1, 4)):
            dash = " " * col + "-"
            choice = self.rnd.random() if depth < 4 else 0.0
            if choice < 0.3 and depth < 4:  # "- key: value" and keys below it
                gap = self.sp()
                self.mapping(col + 1 + len(gap), depth + 1, first=f"{dash}{gap}")
            else:
                self.value(dash, col, depth)

    def document(self) -> str:
        self.mapping(0, 0)
        return "\n".join(self.lines) + self.rnd.choice(["", "\n", "\n\n", "\n# end\n"])


@given(st.randoms(use_true_random=False))
@EXAMPLES
def test_block_subset_is_read_by_the_line_reader(rnd: random.Random) -> None:
    text = _Renderer(rnd, safe=True).document()
    assert compare(text) == (True, True), text


def _mutate(text: str, rnd: random.Random) -> str:
    chars = list(text)
    for _ in range(rnd.randrange(4)):
        at = rnd.randrange(len(chars) + 1)
        op = rnd.random()
        if op < 0.4 and chars:
            del chars[min(at, len(chars) - 1)]
        elif op < 0.8:
            chars.insert(at, rnd.choice([" ", "\n", "-", ":", "#", "'", '"', "[", "{", "\t", "ü"]))
        else:
            chars.insert(at, rnd.choice(["  ", "\n  ", "- ", ": ", " #", "\n- ", "\r\n"]))
    return "".join(chars)


@given(st.randoms(use_true_random=False))
@EXAMPLES
def test_block_near_misses_agree_with_the_checked_path(rnd: random.Random) -> None:
    text = _Renderer(rnd, safe=False).document()
    compare(text)
    compare(_mutate(text, rnd))


# Dumped Python documents. -------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["yes", "no", "on", "~", "null", "0x1f", "1_000", "12:30", "2020-01-01", ""]),
    st.dates(),
    st.datetimes(timezones=st.sampled_from([None, datetime.UTC])),
)
keys = st.one_of(st.text(max_size=8), st.integers(-3, 3), st.none(), st.booleans(), st.dates())
containers = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=25,
)


@st.composite
def shared_documents(draw: st.DrawFn) -> object:
    """A document that holds some containers more than once: PyYAML dumps anchors and aliases."""
    parts = draw(
        st.lists(st.one_of(st.lists(scalars, max_size=3), containers), min_size=1, max_size=3)
    )
    order = draw(st.lists(st.integers(0, len(parts) - 1), max_size=6))
    placed = [parts[i] for i in order]
    if draw(st.booleans()):
        return placed
    return {f"k{i}": part for i, part in enumerate(placed)}


@given(
    st.one_of(containers, shared_documents()),
    st.sampled_from([False, None, True]),
    st.booleans(),
    st.sampled_from([2, 4]),
    st.booleans(),
)
@EXAMPLES
def test_dumped_documents_are_read_by_the_event_reader(
    document: object, flow: bool | None, unicode: bool, indent: int, start: bool
) -> None:
    text = yaml.safe_dump(
        document,
        default_flow_style=flow,
        allow_unicode=unicode,
        indent=indent,
        sort_keys=False,
        explicit_start=start,
    )
    answered = compare(text)
    if "!!" not in text:  # the dumper tags some timestamps; otherwise nothing unusual
        assert answered[1], text


# Token soup and Unicode. --------------------------------------------------------------------

TOKENS = [
    "rdap:", "domains:", "labels:", "name:", "a:", " ", "  ", "\n", "\n  ", "\n    ", "- ", "-",
    "[", "]", "{", "}", ",", ": ", ":", "? ", "&a ", "&b ", "*a", "*b", "<<: ", "!!int ",
    "!!str ", "!!float ", "!!binary ", "!!set ", "!!omap ", "!x ", "! ", "|", ">", "'", '"',
    "#", "---", "...", "%YAML 1.1\n", ".inf", ".nan", "1e5", "0x1f", "0o17", "1_000",
    "12:30:00", "2020-13-45", "2020-01-01", "~", "null", "yes", "on", "example.com", "x",
    "6h", "\t", "\x00", "\ufeff", "\u2028", "\x85", "é", "\U0001f600", "9" * 60, "\\", "=",
    "@", "`", "\r\n", "\r",
]  # fmt: skip


@st.composite
def merge_documents(draw: st.DrawFn) -> str:
    """Anchored mappings merging earlier ones (`<<: *m0`, `<<: [*m1, *m0]`, twice, inline),
    with keys that override, repeat or equal each other (1, 1.0, true)."""
    items = st.sampled_from(
        ["x: 1", "y: 2", "x: 3", "z: [1]", "1: a", "1.0: b", "true: c", "w: {q: 1}", "'<<': 4"]
    )
    lines = []
    count = draw(st.integers(1, 4))
    for i in range(count + 1):
        pairs = draw(st.lists(items, max_size=3, unique=True))
        for _ in range(draw(st.integers(0, 2)) if i else 0):
            refs = draw(st.lists(st.integers(0, i - 1), min_size=1, max_size=3))
            merge = draw(
                st.sampled_from(
                    [
                        f"<<: *m{refs[0]}",
                        "<<: [" + ", ".join(f"*m{r}" for r in refs) + "]",
                        "<<: {v: 9}",
                        "<<: 1",
                    ]
                )
            )
            pairs.insert(draw(st.integers(0, len(pairs))), merge)
        name = f"m{i}: &m{i}" if i < count else "last:"
        if draw(st.booleans()):
            lines.append(f"{name} {{{', '.join(pairs)}}}")
        else:
            lines.append(name + "".join(f"\n  {pair}" for pair in pairs) if pairs else name)
    return "\n".join(lines) + "\n"


@given(merge_documents())
@EXAMPLES
def test_merge_keys_agree_with_the_checked_path(text: str) -> None:
    compare(text)


@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
@EXAMPLES
def test_token_soup_agrees_with_the_checked_path(text: str) -> None:
    compare(text)


@given(
    st.text(max_size=12),
    st.sampled_from(
        [
            "a: {}\n",
            "a: '{}'\n",
            'a: "{}"\n',
            "- {}\n",
            "a: [{}, x]\n",
            "a: {{k: {}}}\n",
            "{}: 1\n",
            "a:\n  - b: {}\n    c: 1\n",
        ]
    ),
)
@EXAMPLES
def test_any_character_in_a_scalar_agrees(scalar: str, template: str) -> None:
    compare(template.format(scalar))


# Hand-written boundaries: (text, (line reader answers, event reader answers)). ------------

CASES = [
    ("", (True, True)),
    ("# only a comment\n", (True, True)),
    ("a: 1\n", (True, True)),
    ("---\na: 1\n", (False, True)),
    ("a: 1\n...\n", (False, True)),
    ("a: 1\n---\nb: 2\n", (False, False)),  # two documents: refused
    ("- a\n- b\n", (False, True)),  # not a mapping at the top: the event reader's
    ("plain\n", (False, True)),
    ("a:\n- x\n- y\nb:\n  - z\n", (True, True)),
    ("a:\n  b:\n    c:\n  d: 1\ne:\n", (True, True)),
    ("- a:\n  - x\n", (False, True)),
    ("a:\n  - b: 1\n    c: [x]\n  -\n  - - y\n", (False, True)),
    ("a: &x [1, 2]\nb: *x\nc: *x\n", (False, True)),  # one list, three places
    ("a: &x {k: v}\nb: *x\n", (False, True)),
    ("a: &x s\nb: *x\n", (False, True)),
    ("a: *x\n", (False, False)),  # unknown alias
    ("a: &x [*x]\n", (False, False)),  # recursive
    ("a: &x 1\nb: &x 2\n", (False, False)),  # duplicate anchor
    ("a: &x [1]\n*x : 2\n", (False, False)),  # alias as a key
    ("base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n", (False, True)),  # merge keys
    ("a: &a {x: 1, y: 2}\nb: &b {z: 4}\nc:\n  <<: [*a, *b]\n  w: 5\n", (False, True)),
    # A key merged twice: PyYAML keeps the first when both keys are one string object (any
    # one-character key), else the last. The fast reader leaves that to the checked path.
    ("a: &a {x: 1, y: 2}\nb: &b {y: 3, z: 4}\nc:\n  <<: [*a, *b]\n", (False, False)),
    ("a: &a {xx: 1}\nb: &b {xx: 2}\nc: {<<: [*a, *b]}\n", (False, False)),
    ("a: &a {x: 1}\nb: {x: 2, <<: *a, y: 3}\n", (False, True)),  # own keys win, order kept
    ("a: &a {x: 1}\nb: &b {y: 2}\nc: {<<: *a, <<: *b}\n", (False, True)),
    ("a: &a {x: 1}\nb: &b {x: 2}\nc: {<<: *a, <<: *b}\n", (False, False)),
    ("a: &a {x: 1}\nb: &b {<<: *a, y: 2}\nc: {<<: *b, z: 3}\n", (False, True)),
    ("a: &a {x: 1}\nb: &b {<<: *a, x: 2}\nc: {<<: *b, 1: 3}\n", (False, False)),  # b has x twice
    ("a: &a {1: x}\nb: {<<: *a, 1.0: y, true: z}\n", (False, False)),  # 1.0 == True: duplicate
    ("a: &a {1: x}\nb: {<<: *a, 1.0: y}\n", (False, True)),  # the key stays the int 1
    ("c: {<<: {x: 1}, y: 2}\n", (False, True)),
    ("c: {<<: []}\n", (False, True)),
    ("a: &a {l: [1]}\nb: {<<: *a}\n", (False, True)),  # b.l is a.l
    ("a: &a [{x: 1}, {y: 2}]\nb: {<<: *a}\n", (False, True)),
    ("c: {<<: 1}\n", (False, False)),
    ("c: {<<: [1]}\n", (False, False)),
    ("a: &a {x: 1}\nc: {<<: [*a, [1]]}\n", (False, False)),
    ("c: <<\n", (False, False)),
    ("- <<\n", (False, False)),
    ("<<: {x: 1}\n", (False, True)),  # at the top level too
    ('"<<": 1\n', (False, True)),  # quoted: a plain string key
    ("a: &a {x: 1}\nb: {&k <<: *a}\n", (False, False)),  # an anchored key: no fast path
    ("a: !!str 1\n", (False, False)),
    ("a: !!binary aGk=\n", (False, False)),
    ("a: ! 1\n", (False, False)),
    ("a: yes\nb: no\nc: on\nd: off\ne: null\nf: ~\ng: Yes\nh: NULL\n", (True, True)),
    ("a: 0x1f\nb: 0o17\nc: 017\nd: 1_000\ne: 12:30:00\nf: 1.5e3\ng: .inf\n", (True, True)),
    ("a: 2020-01-01\nb: 2001-12-14t21:59:43.10-05:00\nc: 2001-12-14 21:59:43.10 -5\n",
     (True, True)),
    ("a: 2020-13-45\n", (False, False)),
    ("a: " + "9" * 100 + "\n", (True, True)),
    ("a: " + "9" * 101 + "\n", (False, False)),  # the number bound holds on every path
    ("a: '1'\nb: \"yes\"\nc: 1\nd: yes\n", (True, True)),
    ("a: 1\na: 2\n", (False, False)),  # duplicate key
    ("a: 1\n1: 2\n", (True, True)),  # "a" and 1 differ
    ("1: a\n1.0: b\n", (False, False)),  # equal keys
    ("true: a\n1: b\n", (False, False)),
    (".nan: a\n.NaN: b\n", (False, False)),  # PyYAML's NaN is one object: a duplicate
    ("? [a]\n: 1\n", (False, False)),  # complex key
    ("a: x\n  y\n", (False, True)),  # a multi-line plain scalar
    ("a: |\n  text\n", (False, True)),
    ("a: 'it''s'\n", (False, True)),
    ("a: \"tab\\t\"\n", (False, True)),
    ("a:\tb\n", (False, True)),  # a tab separates too
    ("a: 1\r\nb: 2\r\n", (False, True)),
    ("\ufeffa: 1\n", (False, True)),
    ("a: bücher.example\nb: '日本'\n", (True, True)),
    ("a: x\u2028y\n", (False, False)),
    ("a: b: c\n", (False, False)),
    ("a: [a, [b]]\n", (False, True)),
    ("a: {k: 1, j: [2]}\n", (False, True)),
    ("a: {k: 1, j: 2}\n", (True, True)),
    ("a: {k: 1, k: 2}\n", (False, False)),
    ("a: [x]\nb: {1: x, 1.0: y}\n", (False, False)),
    ("a: x\ufeffy\n", (False, True)),
    ("a: 1\n\ufeffb: 2\n", (False, False)),  # a BOM at a line's start is skipped
    ("...x: 1\n", (False, True)),
    ("a: 1\n... x: 2\n", (False, False)),
    ("a: {k: v, j: [1]}\n", (False, True)),
    ("k" * 1000 + ": 1\n", (True, True)),
    ("k" * 1100 + ": 1\n", (False, False)),  # libyaml: simple keys are at most 1024 long
    ("a:\n" + "".join(" " * i + "b:\n" for i in range(1, 62)), (True, True)),
    ("a:\n" + "".join(" " * i + "b:\n" for i in range(1, 64)), (False, True)),  # 64 levels
    ("a:\n" + "".join(" " * i + "b:\n" for i in range(1, 65)), (False, False)),  # 65
    ("a:\n" + "".join(" " * i + "b:\n" for i in range(1, 70)) + " " * 70 + "c: 1\n",
     (False, False)),
    ("a: " + "[" * 64 + "]" * 64 + "\n", (False, False)),  # 65 levels
    ("a: " + "[" * 63 + "]" * 63 + "\n", (False, True)),  # 64 levels
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
     + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
               for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
     (False, False)),  # an alias bomb: 10^9 values
    ("a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c, *b, *a]\n", (False, True)),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_boundaries(text: str, expected: tuple[bool, bool]) -> None:
    assert compare(text) == expected


def test_aliases_share_one_object_as_in_the_checked_path() -> None:
    document = yamlload.load("a: &x [1, {k: v}]\nb: *x\nc: [*x]\n")
    assert isinstance(document, dict)
    assert document["a"] is document["b"] is document["c"][0]
    assert yamlload._fast_load("a: &x [1]\nb: *x\n") is not yamlload._FALLBACK


def test_errors_keep_their_wording() -> None:
    with pytest.raises(YamlProblem) as duplicate:
        yamlload.load("domains:\n  - name: a.example\n    name: b.example\n")
    assert duplicate.value.lines == ["domains[0].name: duplicate key (line 3, first at line 2)"]
    with pytest.raises(YamlProblem) as number:
        yamlload.load("concurrency: " + "9" * 101 + "\n")
    assert number.value.lines == ["line 1, column 14: invalid YAML: number longer than 100 digits"]


def test_a_generated_config_is_read_by_the_line_reader() -> None:
    """The shape bench/scale.py writes, and config.example.yaml's: no fallback."""
    text = "concurrency: 64\nrdap:\n  bootstrap: /tmp/b.json\n  timeout: 1s\ndns:\n"
    text += '  resolvers: ["127.0.0.1:53"]\n  interval: 1d\ndomains:\n'
    text += "".join(
        f"  - name: domain-{i:05d}.example\n"
        "    nameservers: [ns1.dns.example, ns2.dns.example]\n"
        f"    labels:\n      team: team{i % 10}\n"
        for i in range(300)
    )
    assert compare(text) == (True, True)
    example = Path(__file__).resolve().parent.parent / "config.example.yaml"
    assert compare(example.read_text(encoding="utf-8")) == (True, True)


def test_the_collector_is_paused_only_during_the_load() -> None:
    assert gc.isenabled()
    yamlload.load("a: 1\n")
    assert gc.isenabled()
    with pytest.raises(YamlProblem):
        yamlload.load("a: [\n")
    assert gc.isenabled()
    gc.disable()
    try:
        yamlload.load("a: 1\n")
        assert not gc.isenabled()  # not switched on behind the caller's back
    finally:
        gc.enable()


def test_nan_sharing_does_not_hide_a_difference() -> None:
    """The comparison itself must be able to fail."""
    with pytest.raises(AssertionError):
        assert_same([1], [1.0])
    with pytest.raises(AssertionError):
        shared = [1]
        assert_same([shared, shared], [[1], [1]])
    with pytest.raises(AssertionError):
        assert_same({"a": math.nan}, {"a": 0.0})
    assert_same({"a": math.nan}, {"a": math.nan})


# The config reader's shortcuts. -------------------------------------------------------------

_LDH_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9a-fA-F]*)$")


def _full_route_to_alabel(name: str) -> str:
    """names.to_alabel as it was before its shortcut (the oracle)."""
    import idna

    if len(name) > 1024:
        raise names.InvalidName(name[:80] + "...")
    text = name.strip()
    if text.endswith("."):
        text = text[:-1]
    if not text or text != name.strip().rstrip(".") or any(c.isspace() for c in text):
        raise names.InvalidName(name)
    try:
        if text.isascii():
            ascii_name = text.lower()
            if "xn--" in ascii_name:
                ascii_name = idna.encode(idna.decode(ascii_name), uts46=True).decode("ascii")
        else:
            ascii_name = idna.encode(text, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise names.InvalidName(name) from exc
    if len(ascii_name) > 253 or not all(_LDH_LABEL.match(x) for x in ascii_name.split(".")):
        raise names.InvalidName(name)
    return ascii_name


def _full_route_is_ip_literal(text: str) -> bool:
    """config.is_ip_literal as it was before its shortcut (the oracle)."""
    t = text.strip().rstrip(".")
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    try:
        ipaddress.ip_address(t.split("%", 1)[0])
        return True
    except ValueError:
        pass
    return bool(_NUMERIC_LABEL.match(t.rsplit(".", 1)[-1])) and "." in t


def _outcome(convert: Any, text: str) -> tuple[str, str]:
    try:
        return "ok", convert(text)
    except names.InvalidName as exc:
        return "invalid", str(exc)


host_texts = st.one_of(
    st.text(alphabet="abcXn019-.:[]%x \t\nü\u0663", max_size=24),
    st.from_regex(r"[a-z0-9-]{1,66}(\.[a-z0-9-]{1,66}){0,4}\.?", fullmatch=True),
    st.from_regex(r"[0-9a-fx.]{1,20}(%[a-z0-9]{0,3})?", fullmatch=True),
    st.sampled_from(
        [
            "xn--bcher-kva.example", "xn--zz.example", "axn--b.example", "a" * 63 + ".com",
            "a" * 64 + ".com", ("a" * 62 + ".") * 4 + "com", ("a" * 61 + ".") * 4 + "ab",
            "1.2.3.4", "01.2.3.4", "1.2.3.256", "127.1", "0x7f.1", "0X7F.0.0.1", "a.0x", "::1",
            "[::1]", "fe80::1%eth0", "1.2.3.4%x", "1.2.3.4.", "a.1", "a.1b", "a.1\n",
            "example.com.", "example.com..", " example.com", "-a.com", "a-.com", "ab--cd.com",
            "EXAMPLE.com", "exämple.com", "a..b", ".a", "a" * 1100,
            "\u0661.\u0662.\u0663.\u0664", "a.\u0661",
        ]
    ),
)  # fmt: skip


@given(host_texts)
@settings(max_examples=600, deadline=None)
def test_name_shortcuts_keep_every_verdict(text: str) -> None:
    assert _outcome(names.to_alabel, text) == _outcome(_full_route_to_alabel, text)
    assert is_ip_literal(text) == _full_route_is_ip_literal(text)


def test_domains_share_equal_nameservers_and_labels() -> None:
    listed = ["NS2.x.example", "ns1.x.example."]
    config = parse_config(
        {
            "domains": [
                {"name": "a.example", "nameservers": listed, "labels": {"team": "web"}},
                {"name": "b.example", "nameservers": list(listed), "labels": {"team": "web"}},
                {"name": "c.example", "nameservers": ["ns1.x.example"], "labels": {"team": 1}},
                {"name": "d.example", "labels": {"team": 1.0}},
                {"name": "e.example"},
                {"name": "f.example", "labels": {}},
            ]
        }
    )
    a, b, c, d, e, f = config.domains
    assert a.nameservers == ("ns1.x.example", "ns2.x.example")
    assert b.nameservers is a.nameservers and b.labels is a.labels
    assert c.nameservers == ("ns1.x.example",)
    assert (c.labels, d.labels) == ({"team": "1"}, {"team": "1.0"})  # 1 == 1.0, not as labels
    assert e.labels == f.labels == {} and e.nameservers == f.nameservers == ()


def test_shared_readings_never_hide_an_error() -> None:
    bad = {"name": "x.example", "nameservers": ["1.2.3.4", "ns.example"]}
    with pytest.raises(ConfigError) as exc:
        parse_config(
            {
                "domains": [
                    bad,
                    {**bad, "name": "y.example"},
                    {"name": "a.example", "labels": {"team": 1}},  # valid, read, not shared
                    {"name": "b.example", "labels": {"team": True}},  # equal to the above
                    {"name": "c.example", "nameservers": [1]},
                    {"name": "d.example", "nameservers": [True]},
                ]
            }
        )
    assert exc.value.errors == [
        "domains[0].nameservers[0]: '1.2.3.4' is an IP address, not a host name",
        "domains[1].nameservers[0]: '1.2.3.4' is an IP address, not a host name",
        "domains[3].labels.team: value must be a string, got bool",
        "domains[4].nameservers[0]: 1 is not a host name",
        "domains[5].nameservers[0]: True is not a host name",
    ]
