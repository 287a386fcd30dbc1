"""The fast /metrics path must render exactly what the prometheus_client Collector path yields."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry, generate_latest

from bench.render import populated_store
from exporter.collector import DomainCollector
from exporter.store import CheckState, DomainStatus, RdapResult

NOW = 1_800_000_000.0


def _reference(store) -> bytes:
    registry = CollectorRegistry()
    registry.register(DomainCollector(store, clock=lambda: NOW))
    return generate_latest(registry)


def test_fast_path_matches_generate_latest_including_escaping() -> None:
    store = populated_store(20)
    # A label value with every character the text format escapes.
    store.sync(
        [(s.name, dict(s.labels), s.expected_nameservers) for s in store.snapshot()]
        + [("weird.example", {"team": 'a"b\\c\nd'}, ())]
    )
    store.update(
        "weird.example",
        lambda s: replace(
            s,
            rdap=RdapResult(registered=False, server=None, registration=None),
            checks={"rdap": CheckState(success=False, last_attempt=NOW, error="timeout")},
        ),
    )
    fast = DomainCollector(store, clock=lambda: NOW)
    assert fast.exposition() == _reference(store)
    assert b'team="a\\"b\\\\c\\nd"' in fast.exposition()


def test_cache_follows_updates_and_removals() -> None:
    store = populated_store(5)
    fast = DomainCollector(store, clock=lambda: NOW)
    first = fast.exposition()
    name = store.snapshot()[0].name
    store.update(name, lambda s: replace(s, rdap=RdapResult(False, None, None)))
    second = fast.exposition()
    assert second != first
    assert second == _reference(store)
    store.sync([(s.name, dict(s.labels), s.expected_nameservers) for s in store.snapshot()[1:]])
    third = fast.exposition()
    assert name.encode() not in third
    assert third == _reference(store)


def test_never_checked_domain_has_no_samples() -> None:
    store = populated_store(1)
    store.sync([("fresh.example", {}, ())])
    assert store.get("fresh.example") == DomainStatus(name="fresh.example")
    assert b"fresh.example" not in DomainCollector(store, clock=lambda: NOW).exposition()


def test_gzip_members_decompress_to_the_plain_exposition() -> None:
    import gzip
    import zlib

    store = populated_store(700)  # several blocks
    fast = DomainCollector(store, clock=lambda: NOW)
    body = b"".join(fast.exposition_chunks(gzipped=True))
    assert gzip.decompress(body) == _reference(store)  # Python reads every member
    # One member at a time, as a multistream-unaware reader would stop after the first.
    first = zlib.decompressobj(wbits=31)
    assert first.decompress(body) and first.unused_data, "expected several gzip members"


def test_one_change_re_renders_one_block_only() -> None:
    from exporter import collector as collector_module

    store = populated_store(700)
    fast = DomainCollector(store, clock=lambda: NOW)
    before = fast.exposition_chunks(gzipped=True)
    name = store.snapshot()[300].name
    store.update(name, lambda s: replace(s, rdap=RdapResult(False, None, None)))
    after = fast.exposition_chunks(gzipped=True)
    changed = sum(1 for a, b in zip(before, after, strict=False) if a is not b)
    families = len(collector_module.FAMILIES)
    # Only the chunks of the changed block (at most one per family) are new objects.
    assert 0 < changed <= families, changed
    assert b"".join(fast.exposition_chunks()) == _reference(store)
