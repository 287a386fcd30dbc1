"""Property tests: whatever a config file holds, `load_config` returns a Config or raises
ConfigError with one-line messages, and never anything else (issue 8).

Three generators: arbitrary Python documents dumped as YAML (every shape the validator can meet),
YAML-ish token soup (anchors, aliases, merges, tags, flow/block mixes: the parser's corners) and
raw bytes (encodings).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import Config, ConfigError, is_ip_literal, load_config

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

KEYS = [
    "rdap", "dns", "email", "domains", "concurrency", "name", "nameservers", "contacts",
    "labels", "role", "email", "interval", "timeout", "requests_per_second", "servers",
    "resolvers", "root_servers", "smtp_port", "smtp_helo", "bootstrap", "hold_interval",
    "max_in_flight_per_server", "follow_registrar", "team",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        ["example.com", "127.0.0.1", "[::1]", "6h", "0s", "9" * 400 + "s", "a@b.example"]
    ),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), inner, max_size=5),
    ),
    max_leaves=40,
)

TOKENS = [
    "rdap:", "domains:", "dns:", "labels:", "name:", " ", "  ", "\n", "\n  ", "\n    ", "- ",
    "[", "]", "{", "}", ",", ": ", "? ", "&a ", "&b ", "*a", "*b", "<<: ", "!!int ", "!!str ",
    "!!float ", "!!binary ", "!!set ", "!!omap ", "!!timestamp ", "!!python/name:os.system ",
    "!x ", "|", ">", "'", '"', "#", "---", "...", "%YAML 1.1", ".inf", ".nan", "-.inf", "1e5",
    "0x1f", "0o17", "1_000", "12:30:00", "2020-13-45", "2020-01-01", "~", "null", "yes", "on",
    "example.com", "127.0.0.1", "6h", "\t", "\x00", "\ufeff", "\u2028", "\x85", "é", "\U0001f600",
    "9" * 60, "\\", "=", "@", "`",
]  # fmt: skip
token_soup = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-config-") as tmp:
        yield Path(tmp)


def _check(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert exc.errors, "a ConfigError must say what is wrong"
        assert len(exc.errors) <= 101
        for line in exc.errors:
            assert isinstance(line, str) and line.strip()
            assert len(line.splitlines()) == 1, line
            assert len(line) < 2000, line[:300]
        return
    _assert_sane(config)


def _assert_sane(config: Config) -> None:
    """What a Config that loaded may be relied on for."""
    for section in (config.rdap, config.dns, config.email):
        for value in vars(section).values():
            if isinstance(value, float):
                assert math.isfinite(value) and value > 0
    for domain in config.domains:
        assert not is_ip_literal(domain.name) and "." in domain.name
        assert all(not is_ip_literal(ns) for ns in domain.nameservers)
        assert all(isinstance(v, str) and v not in ("inf", "nan") for v in domain.labels.values())


@FUZZ
@given(document=documents)
def test_any_yaml_document(workdir: Path, document: object) -> None:
    text = yaml.safe_dump(document, allow_unicode=True)
    _check(workdir / "doc.yaml", text.encode("utf-8"))


@FUZZ
@given(document=documents)
def test_any_document_as_a_config_body(workdir: Path, document: object) -> None:
    # Put the generated value where the validator looks, not only at the top level.
    for wrapper in (
        {"domains": document},
        {"domains": [{"name": "example.com", "labels": document, "contacts": document}]},
        {"rdap": document, "dns": {"resolvers": document}},
        {"email": {"smtp_port": document, "interval": document}, "concurrency": document},
    ):
        text = yaml.safe_dump(wrapper, allow_unicode=True)
        _check(workdir / "body.yaml", text.encode("utf-8"))


@FUZZ
@given(text=token_soup)
def test_yaml_token_soup(workdir: Path, text: str) -> None:
    _check(workdir / "soup.yaml", text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=st.binary(max_size=200))
def test_any_bytes(workdir: Path, data: bytes) -> None:
    _check(workdir / "bytes.yaml", data)


@settings(FUZZ, max_examples=40)
@given(depth=st.integers(min_value=1, max_value=3000), kind=st.sampled_from("[{-?"))
def test_any_depth(workdir: Path, depth: int, kind: str) -> None:
    text = {
        "[": "domains: " + "[" * depth + "]" * depth,
        "{": "domains: " + "{a: " * depth + "1" + "}" * depth,
        "-": "domains:\n" + "".join(" " * i + "-\n" for i in range(depth)),
        "?": "".join(" " * i + "? a\n" for i in range(depth)),
    }[kind]
    _check(workdir / "deep.yaml", text.encode())
