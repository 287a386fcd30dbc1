"""The fast /metrics path must render exactly what the prometheus_client Collector path yields."""

from __future__ import annotations

from dataclasses import replace

import pytest
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


def _gunzip_all(chunks: list[bytes]) -> bytes:
    import gzip

    return gzip.decompress(b"".join(chunks))


def _renew_dns(at: float):
    """What a DNS check that found the same delegation leaves behind (and then its next_due)."""

    def change(s: DomainStatus) -> DomainStatus:
        dns = replace(s.dns, measured_at=at) if s.dns is not None else None
        state = replace(s.check("dns"), success=True, last_attempt=at, last_success=at)
        return replace(s, dns=dns, checks={**s.checks, "dns": state})

    return change


def test_random_changes_keep_every_cell_equal_to_collect() -> None:
    """Many rounds of the changes checks make, spliced into cached cells of several blocks:
    after each round the plain text and the gzip members equal the collect() path."""
    import random

    from exporter.store import DnsResult

    rnd = random.Random(7)
    for keep_plain in (False, True):
        store = populated_store(520)  # three blocks
        fast = DomainCollector(store, clock=lambda: NOW, keep_plain=keep_plain)
        assert fast.exposition() == _reference(store)
        names = [s.name for s in store.snapshot()]
        for round_ in range(4):
            for name in rnd.sample(names, 40):
                kind = rnd.randrange(6)
                at = NOW - rnd.randrange(1, 10_000)
                if kind == 0:
                    store.update(name, _renew_dns(at))
                elif kind == 1:  # the check failed this time
                    store.update(
                        name,
                        lambda s, at=at: replace(
                            s,
                            checks={
                                **s.checks,
                                "rdap": replace(
                                    s.check("rdap"), success=False, last_attempt=at, error="timeout"
                                ),
                            },
                        ),
                    )
                elif kind == 2:  # a different delegation, with a lame server
                    store.update(
                        name,
                        lambda s: replace(
                            s,
                            dns=DnsResult(
                                parent_zone="example",
                                parent=("ns9.other.example",),
                                child=("ns9.other.example",),
                                delegated=True,
                                lame={"ns9.other.example": "timeout"},
                                mismatch=True,
                            ),
                        ),
                    )
                elif kind == 3:  # bookkeeping only: nothing on /metrics changes
                    store.update(
                        name,
                        lambda s, at=at: replace(
                            s, checks={**s.checks, "dns": replace(s.check("dns"), next_due=at)}
                        ),
                    )
                elif kind == 4:  # the registry says it is gone
                    store.update(name, lambda s: replace(s, rdap=RdapResult(False, None, None)))
                else:  # e-mail verdicts dropped
                    store.update(name, lambda s: replace(s, email=None))
            if round_ == 2:  # a reload: labels of some domains change, one is removed
                store.sync(
                    (s.name, {"team": "other"} if i % 7 == 0 else dict(s.labels), ())
                    for i, s in enumerate(store.snapshot())
                    if i != 5
                )
            expected = _reference(store)
            assert fast.exposition() == expected, (keep_plain, round_)
            assert _gunzip_all(fast.exposition_chunks(gzipped=True)) == expected
            length, stream = fast.exposition_stream(gzipped=False)
            body = b"".join(stream)
            assert body == expected and length == len(body)
            length, stream = fast.exposition_stream(gzipped=True)
            assert length == len(b"".join(stream))


def test_bookkeeping_updates_render_nothing_and_a_check_run_only_its_samples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from exporter import collector as collector_module

    store = populated_store(300)
    fast = DomainCollector(store, clock=lambda: NOW)
    fast.exposition_chunks(gzipped=True)
    calls: list[frozenset[str]] = []
    real = collector_module._render

    def counting(s: DomainStatus, now: float, kinds: frozenset[str] = real.__defaults__[0]):
        calls.append(kinds)
        return real(s, now, kinds)

    monkeypatch.setattr(collector_module, "_render", counting)
    names = [s.name for s in store.snapshot()]
    for name in names[:50]:  # next_due and measured_at are not on /metrics
        store.update(
            name,
            lambda s: replace(
                s,
                dns=replace(s.dns, measured_at=NOW + 1),
                checks={**s.checks, "dns": replace(s.check("dns"), next_due=NOW + 300)},
            ),
        )
    fast.exposition_chunks(gzipped=True)
    assert calls == []
    before = fast.exposition_chunks(gzipped=True)
    store.update(names[10], _renew_dns(NOW + 60))
    after = fast.exposition_chunks(gzipped=True)
    assert calls == [frozenset({"dns"})]
    # Only the cell of that block's DNS last-success times is new (success stayed 1).
    assert sum(1 for a, b in zip(before, after, strict=True) if a is not b) == 1
    assert fast.exposition() == _reference(store)


def test_unshown_fields_are_not_rendered() -> None:
    """_changed_part skips UNSHOWN_FIELDS of result records: no family may render them."""
    from dataclasses import fields, is_dataclass

    from exporter import collector as collector_module

    store = populated_store(3)
    reference = _reference(store)
    status = store.snapshot()[0]
    touched = 0
    for f in fields(status):
        value = getattr(status, f.name)
        if not is_dataclass(value):
            continue
        for name in collector_module.UNSHOWN_FIELDS & {g.name for g in fields(value)}:
            changed = replace(value, **{name: 123456789.0})
            store.update(status.name, lambda s, fn=f.name, v=changed: replace(s, **{fn: v}))
            touched += 1
            assert _reference(store) == reference, (f.name, name)
    assert touched >= 2  # dns.measured_at, rdap.read_at at least


def test_expiry_days_follow_the_clock_within_the_render_interval() -> None:
    from exporter import collector as collector_module

    clock = [NOW]
    store = populated_store(700)
    fast = DomainCollector(store, clock=lambda: clock[0])
    fast.exposition_chunks(gzipped=True)

    def days(text: bytes) -> dict[str, float]:
        out = {}
        for line in text.decode().splitlines():
            if line.startswith("domain_expiry_days{"):
                name = line.split('domain="', 1)[1].split('"', 1)[0]
                out[name] = float(line.rsplit(" ", 1)[1])
        return out

    step = collector_module.EXPIRY_RENDER_SECONDS
    for hours in (0.5, 1.0, 30.0):
        clock[0] = NOW + hours * 3600
        got = days(fast.exposition())
        registry = CollectorRegistry()
        registry.register(DomainCollector(store, clock=lambda: clock[0]))
        exact = days(generate_latest(registry))
        assert got.keys() == exact.keys() and len(got) == 700
        worst = max(abs(got[n] - exact[n]) for n in exact)
        assert worst <= step / 86400 + 0.0001, (hours, worst)


def test_prerender_warms_the_cache() -> None:
    store = populated_store(300)
    fast = DomainCollector(store, clock=lambda: NOW)
    assert not fast.warm
    fast.prerender()
    assert fast.warm
    first = fast.exposition_chunks(gzipped=True)
    assert all(a is b for a, b in zip(first, fast.exposition_chunks(gzipped=True), strict=True))


def _serve(app) -> tuple[object, int]:
    import socket

    from exporter.httpserver import HttpServer

    sock = socket.create_server(("127.94.0.1", 0))
    server = HttpServer(sock)
    server.start(app)
    return server, server.port


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.94.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_metrics_streamed_through_the_http_server_plain_and_gzip() -> None:
    """The real server streams the plain body cell by cell (decompressed as it goes) and the
    gzip members as they are; both decode to the same exposition as collect()."""
    import gzip

    from exporter.web import make_app

    store = populated_store(600)
    fast = DomainCollector(store, clock=lambda: NOW)
    registry = CollectorRegistry()
    app = make_app(registry, lambda: True, lambda: None, domain_stream=fast.exposition_stream)
    server, port = _serve(app)
    try:
        expected = _reference(store)
        status, headers, plain = _get(port, "/metrics", {})
        assert status == 200 and "Content-Encoding" not in headers
        assert plain == expected and int(headers["Content-Length"]) == len(plain)
        status, headers, packed = _get(port, "/metrics", {"Accept-Encoding": "gzip"})
        assert status == 200 and headers["Content-Encoding"] == "gzip"
        assert int(headers["Content-Length"]) == len(packed)
        assert gzip.decompress(packed) == expected
    finally:
        server.shutdown()


def test_a_streamed_body_shorter_than_declared_closes_the_connection() -> None:
    import http.client

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "100")])
        return iter([b"only ten b"])  # not a list: streamed

    server, port = _serve(app)
    try:
        with pytest.raises(http.client.IncompleteRead):
            _get(port, "/", {})
    finally:
        server.shutdown()


def test_last_attempt_is_exported_only_while_the_check_fails() -> None:
    store = populated_store(2)
    first, second = (s.name for s in store.snapshot())
    store.update(
        second,
        lambda s: replace(
            s,
            checks={
                **s.checks,
                "dns": replace(s.check("dns"), success=False, last_attempt=NOW, error="timeout"),
            },
        ),
    )
    text = DomainCollector(store, clock=lambda: NOW).exposition().decode()
    attempts = [x for x in text.splitlines() if x.startswith("domain_check_last_attempt_")]
    assert len(attempts) == 1, attempts
    assert 'check="dns"' in attempts[0] and second in attempts[0]
    assert f'domain_check_last_success_timestamp_seconds{{check="dns",domain="{first}"' in text


def test_a_reload_touches_only_new_changed_and_removed_domains(tmp_path) -> None:
    """At 100k domains a reload re-judged and rewrote every record on the event loop (a
    minute). Now a domain whose own config is unchanged keeps its record object (so neither
    the /metrics cache nor the state file sees a change), and only new domains get a first
    schedule."""
    import asyncio

    from exporter import cli
    from exporter.config import Config, DnsSettings, DomainConfig, RdapSettings

    def config(names: list[str], team: str = "a") -> Config:
        return Config(
            rdap=RdapSettings(bootstrap=str(tmp_path / "none.json")),
            dns=DnsSettings(root_servers=("127.94.0.9:9",)),
            domains=tuple(
                DomainConfig(n, nameservers=("ns1.x.example",), labels={"team": team})
                for n in names
            ),
        )

    async def scenario() -> None:
        names = [f"d{i}.example" for i in range(300)]
        filled = populated_store(300)
        _m, store, client, scheduler = cli._wire(config(names), CollectorRegistry())
        try:
            for status, name in zip(filled.snapshot(), names, strict=True):
                store.update(
                    name,
                    lambda s, r=status: replace(
                        r, name=s.name, labels=s.labels, expected_nameservers=s.expected_nameservers
                    ),
                )
            scheduler._schedule_missing()
            before = {s.name: s for s in store.snapshot()}
            pushed: list[tuple[str, str]] = []
            real_push = scheduler._push
            scheduler._push = lambda due, d, k: (pushed.append((d, k)), real_push(due, d, k))
            # Unchanged except: d0 removed, d1 relabelled, new0 added.
            new = config([*names[1:], "new0.example"])
            new = replace(
                new,
                domains=tuple(
                    replace(d, labels={"team": "b"}) if d.name == "d1.example" else d
                    for d in new.domains
                ),
            )
            await scheduler.apply_config(new)
            after = {s.name: s for s in store.snapshot()}
            assert "d0.example" not in after and "new0.example" in after
            assert after["d1.example"] is not before["d1.example"]
            kept = [n for n in names[2:] if after[n] is before[n]]
            assert len(kept) == len(names) - 2  # the very same records
            # New domains get a first schedule; only the changed one may ask for a re-read.
            assert "new0.example" in {d for d, _k in pushed}
            assert {d for d, _k in pushed} <= {"new0.example", "d1.example"}
            assert not [k for k in scheduler._scheduled if k[0] == "d0.example"]
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_keep_fresh_applies_changes_between_scrapes() -> None:
    import threading
    import time

    store = populated_store(300)
    fast = DomainCollector(store, clock=lambda: NOW)
    stop = threading.Event()
    worker = threading.Thread(target=fast.keep_fresh, args=(0.05, stop), daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while not fast.warm and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fast.warm
        name = store.snapshot()[7].name
        store.update(name, lambda s: replace(s, rdap=RdapResult(False, None, None)))
        changed = store.get(name)
        while time.monotonic() < deadline:  # applied without any scrape asking for it
            if any(s is changed for block in fast._blocks for s in block.statuses):
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the change was not applied in the background")
        assert fast.exposition() == _reference(store)
    finally:
        stop.set()
        worker.join(5)
    assert not worker.is_alive()


def _background(fast: DomainCollector, every: float):
    """keep_fresh on a thread, once its first rendering is done; stop with the returned
    function (which checks that the thread ended)."""
    import threading
    import time

    stop = threading.Event()
    worker = threading.Thread(target=fast.keep_fresh, args=(every, stop), daemon=True)
    worker.start()
    deadline = time.monotonic() + 10
    while not fast.warm and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fast.warm

    def end() -> None:
        stop.set()
        worker.join(5)
        assert not worker.is_alive()

    return end


@pytest.mark.parametrize("listed", [False, True], ids=["store", "listed-view"])
def test_a_scrape_serves_the_background_rendering_when_many_changes_landed(listed: bool) -> None:
    """At 100k domains the checks of a few seconds are thousands of changes: with a background
    refresh running, a scrape sends its last rendering rather than apply them (and pay for
    them); a few changes are applied, and without a background refresh every scrape is exact.
    The daemon's collector reads the store through a ListedView (probe-only domains hidden):
    the changes must be counted through it too."""
    from exporter.collector import SCRAPE_APPLIES_AT_MOST
    from exporter.probe import ListedView

    store = populated_store(SCRAPE_APPLIES_AT_MOST + 100)
    seen = ListedView(store, frozenset) if listed else store
    fast = DomainCollector(seen, clock=lambda: NOW)
    end = _background(fast, 3600.0)  # it renders once, then not again during the test
    try:
        rendered = fast.exposition()
        assert rendered == _reference(store)
        names = [s.name for s in store.snapshot()]
        for name in names[:SCRAPE_APPLIES_AT_MOST]:  # not more than the limit: applied
            store.update(name, _renew_dns(NOW + 60))
        applied = fast.exposition()
        assert applied == _reference(store) != rendered
        for name in names[: SCRAPE_APPLIES_AT_MOST + 1]:  # more: the last rendering is served
            store.update(name, _renew_dns(NOW + 120))
        assert fast.exposition() == applied != _reference(store)
        assert _gunzip_all(fast.exposition_chunks(gzipped=True)) == applied
    finally:
        end()
    assert fast.exposition() == _reference(store)  # no background refresh: a scrape applies


def test_a_rendering_older_than_two_refresh_intervals_is_not_served() -> None:
    """A background refresh that falls behind (or hangs) must not leave scrapes on an old
    rendering: past twice its interval, a scrape applies the changes itself."""
    from exporter.collector import SCRAPE_APPLIES_AT_MOST

    store = populated_store(SCRAPE_APPLIES_AT_MOST + 10)
    fast = DomainCollector(store, clock=lambda: NOW)
    end = _background(fast, 3600.0)
    try:
        for s in store.snapshot():
            store.update(s.name, _renew_dns(NOW + 60))
        stale = fast.exposition()
        assert stale != _reference(store)
        view = fast._view
        assert view is not None
        fast._view = replace(view, made=view.made - 2 * 3600.0)  # as if made two intervals ago
        assert fast.exposition() == _reference(store) != stale
    finally:
        end()


def test_scale_benchmark_smoke(tmp_path) -> None:
    """bench/scale.py still runs end to end: a tiny size, one run, the exporter process, the
    floor server and the loop-lag probe included (127.94.0.1 and .2)."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(repo / "bench" / "scale.py"), "--sizes", "60", "--runs", "1",
         "--gap", "0", "--no-dns", "--workdir", str(tmp_path)],
        cwd=repo, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| warm `/metrics`, gzip |" in done.stdout, done.stdout
    assert "| restart with state to ready |" in done.stdout
    assert "n/a" not in done.stdout.split("| RDAP cycle")[1].split("\n")[0]
