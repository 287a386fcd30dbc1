"""Sharding across replicas: rendezvous hashing, the flags, and N real exporters on loopback that
together export every domain exactly once.

The replicas' own servers (the dead DNS root) are in this module's range 127.91.0.0/16; each
exporter listens on 127.0.0.1:<ephemeral>. RDAP is left unsupported for the test TLD (an empty
bootstrap), so every domain gets `domain_check_success{check="rdap"} 0` at once: the point here is
which replica exports which domain, not the results.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from prometheus_client import CollectorRegistry

from exporter import cli, shard
from exporter.config import Config, DomainConfig
from exporter.shard import Shard, ShardError, ShardFilter, from_flags, index_from_hostname, owner
from tests.support.exporter_proc import REPO_ROOT, ExporterProcess, Scrape, _child_env, run_check
from tests.support.promstack import PromStack, wait_until
from tests.support.rdapserver import RdapServer, Reply, make_domain, write_bootstrap, write_ca

DEAD_ROOT = "127.91.0.1:9"  # nothing listens: DNS checks fail fast, no test depends on them
LISTEN = "127.91.0.1:0"  # never bound: the flags are refused first
NAMES = [f"name{i}.example.com" for i in range(10_000)]
WAIT = 20.0


# --- the hash -------------------------------------------------------------------------------


def test_owner_is_pinned() -> None:
    # Every replica, every restart and every release must agree: a changed hash would move
    # every domain at the next upgrade. These values pin blake2b(f"{shard}:{domain}").
    assert [owner("example.com", n) for n in (1, 2, 3, 4, 5)] == [0, 1, 2, 2, 2]
    assert [owner("domainwatch.io", n) for n in (2, 3, 4)] == [0, 2, 2]
    assert [owner("xn--bcher-kva.example", n) for n in (2, 3, 4)] == [0, 0, 0]


def test_every_name_has_exactly_one_owner_and_the_split_is_even() -> None:
    for count in (2, 3, 7):
        sizes = [0] * count
        for name in NAMES:
            owners = [i for i in range(count) if Shard(i, count).owns(name)]
            assert len(owners) == 1, (name, owners)
            sizes[owners[0]] += 1
        expected = len(NAMES) / count
        assert all(abs(size - expected) < 0.08 * expected for size in sizes), (count, sizes)


@pytest.mark.parametrize("before", [1, 2, 3, 5])
def test_adding_a_shard_moves_only_what_the_new_shard_takes(before: int) -> None:
    after = before + 1
    moved = [n for n in NAMES if owner(n, before) != owner(n, after)]
    share = len(moved) / len(NAMES)
    # Rendezvous hashing moves ~1/(N+1); modulo hashing would move ~N/(N+1).
    assert abs(share - 1 / after) < 0.03, share
    if before == 3:
        assert share <= 0.30  # the bound for 3 -> 4
    # Nothing moves between two old shards: every moved domain lands on the new one.
    assert {owner(n, after) for n in moved} == {before}
    # And removing it again puts every domain back where it was.
    assert all(owner(n, before) == owner(n, after) for n in NAMES if owner(n, after) != before)


# --- the flags ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hostname", "index"),
    [
        ("domainwatch-0", 0),
        ("domainwatch-2", 2),
        ("my-release-domainwatch-11", 11),
        ("domainwatch-1.domainwatch.monitoring.svc.cluster.local", 1),
    ],
)
def test_index_from_hostname(hostname: str, index: int) -> None:
    assert index_from_hostname(hostname) == index


@pytest.mark.parametrize(
    "hostname", ["vm", "domainwatch", "domainwatch-", "domainwatch-a", "dw-1x", "node.dw-3", ""]
)
def test_hostname_without_an_ordinal_is_one_clear_line(hostname: str) -> None:
    with pytest.raises(ShardError) as info:
        index_from_hostname(hostname)
    message = str(info.value)
    assert "\n" not in message and "--shard.index-from-hostname" in message
    assert repr(hostname) in message


@pytest.mark.parametrize(
    ("count", "index", "from_hostname", "hostname", "words"),
    [
        (3, None, False, None, "--shard.count 3 needs --shard.index"),
        (3, 3, False, None, "--shard.index 3: must be from 0 to 2"),
        (3, -1, False, None, "--shard.index -1: must be from 0 to 2"),
        (0, 0, False, None, "--shard.count 0: must be at least 1"),
        (3, 1, True, "dw-1", "exclude each other"),
        (3, None, True, "dw-3", "gives index 3, not below --shard.count 3"),
        (3, None, True, "vm", "does not end in -<number>"),
    ],
)
def test_bad_shard_flags(
    count: int, index: int | None, from_hostname: bool, hostname: str | None, words: str
) -> None:
    with pytest.raises(ShardError, match=words.replace("(", r"\(")):
        from_flags(count, index, from_hostname, hostname)


def test_good_shard_flags() -> None:
    assert from_flags(1, None, False) is None  # no flag: sharding off
    assert from_flags(3, 2, False) == Shard(2, 3)
    assert from_flags(3, None, True, "domainwatch-1") == Shard(1, 3)
    assert from_flags(1, 0, False) == Shard(0, 1)
    assert all(Shard(0, 1).owns(n) for n in NAMES[:100])


def test_daemon_refuses_bad_flags_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("domains: [a.test]\n")
    for argv, words in (
        (["--shard.count", "3"], "needs --shard.index"),
        (["--shard.count", "3", "--shard.index", "3"], "must be from 0 to 2"),
        (["--shard.count", "2", "--shard.index", "0", "--shard.index-from-hostname"], "exclude"),
        (["--shard.count", "x"], "invalid int value"),
    ):
        try:
            code = cli.main(["--config.file", str(config), "--web.listen-address", LISTEN, *argv])
        except SystemExit as exc:  # argparse's own errors (exit 2)
            code = int(str(exc.code))
        err = capsys.readouterr().err
        assert code in (1, 2), (argv, code, err)
        assert len(err.strip().splitlines()) == 1 and words in err, (argv, err)


def test_config_check_says_how_many_are_this_shards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = NAMES[:30]
    config = tmp_path / "config.yaml"
    config.write_text("domains:\n" + "".join(f"  - {n}\n" for n in names))
    mine = sum(Shard(1, 3).owns(n) for n in names)
    argv = ["--config.file", str(config), "--config.check", "--shard.count", "3", "--shard.index"]
    assert cli.main([*argv, "1"]) == 0
    assert f"OK, 30 domains ({mine} in shard 1 of 3)" in capsys.readouterr().out


def test_the_helm_charts_shard_flags_are_ours() -> None:
    # deploy/helm/domainwatch renders these for `shards: N`; a renamed flag would crash-loop pods.
    template = (REPO_ROOT / "deploy/helm/domainwatch/templates/statefulset.yaml").read_text()
    rendered = [
        line.strip().removeprefix("- ").replace("{{ $shards }}", "3")
        for line in template.splitlines()
        if line.strip().startswith("- --shard.")
    ]
    assert rendered == ["--shard.count=3", "--shard.index-from-hostname"]
    args = cli._serve_parser().parse_args(rendered)
    assert from_flags(args.shard_count, args.shard_index, args.shard_from_hostname, "dw-2") == (
        Shard(2, 3)
    )


# --- the filter in the scheduler's domain sync ---------------------------------------------------


def test_filter_hashes_only_names_it_has_not_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = shard.weight

    def counting(index: int, domain: str) -> bytes:
        calls.append(domain)
        return real(index, domain)

    monkeypatch.setattr(shard, "weight", counting)
    keep = ShardFilter(Shard(0, 3))
    first = keep.select(DomainConfig(n) for n in NAMES[:1000])
    assert len(calls) == 3000
    calls.clear()
    # A reload that adds 10 names and drops 100 hashes the 10 new ones only.
    second = keep.select(DomainConfig(n) for n in NAMES[100:1010])
    assert sorted(set(calls)) == sorted(NAMES[1000:1010])
    assert {d.name for d in second} == {d.name for d in first if d.name in set(NAMES[100:1000])} | {
        n for n in NAMES[1000:1010] if Shard(0, 3).owns(n)
    }


def _gauge(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_scheduler_keeps_only_its_shard_across_reloads() -> None:
    async def scenario() -> None:
        one = Shard(1, 3)
        config = Config(domains=tuple(DomainConfig(n) for n in NAMES[:90]))
        registry = CollectorRegistry()
        _metrics, store, rdap, scheduler = cli._wire(config, registry, shard=one)
        try:
            mine = {n for n in NAMES[:90] if one.owns(n)}
            assert {s.name for s in store.snapshot()} == mine
            assert _gauge(registry, "domainwatch_domains") == len(mine)
            assert _gauge(registry, "domainwatch_config_domains") == 90
            assert _gauge(registry, "domainwatch_shard_info", index="1", count="3") == 1
            # A reload re-filters: new names of this shard come in, removed ones go.
            await scheduler.apply_config(
                Config(domains=tuple(DomainConfig(n) for n in NAMES[30:150]))
            )
            mine = {n for n in NAMES[30:150] if one.owns(n)}
            assert {s.name for s in store.snapshot()} == mine
            assert _gauge(registry, "domainwatch_domains") == len(mine)
            assert _gauge(registry, "domainwatch_config_domains") == 120
        finally:
            await rdap.aclose()

    asyncio.run(scenario())


def test_unsharded_replica_says_shard_0_of_1() -> None:
    registry = CollectorRegistry()

    async def wire() -> None:
        _m, _s, rdap, _sch = cli._wire(Config(domains=(DomainConfig("a.test"),)), registry)
        await rdap.aclose()

    asyncio.run(wire())
    assert _gauge(registry, "domainwatch_shard_info", index="0", count="1") == 1
    assert _gauge(registry, "domainwatch_domains") == _gauge(registry, "domainwatch_config_domains")


# --- N real exporters on loopback ------------------------------------------------------------


def _can_set_hostname() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    done = subprocess.run([unshare, "-u", "hostname", "dw-probe-0"], capture_output=True)
    return done.returncode == 0


CAN_SET_HOSTNAME = _can_set_hostname()


class PodProcess(ExporterProcess):
    """An exporter whose hostname is a StatefulSet pod's (own UTS namespace via unshare -u)."""

    def __init__(self, *args: object, hostname: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.hostname = hostname

    def command(self) -> list[str]:
        # `exec` keeps the pid: stop() signals the exporter itself.
        script = 'hostname "$0" && exec "$@"'
        return ["unshare", "-u", "sh", "-c", script, self.hostname, *super().command()]


def _write_config(path: Path, tmp: Path, names: list[str]) -> Path:
    bootstrap = tmp / "bootstrap.json"
    bootstrap.write_text(json.dumps({"version": "1.0", "services": []}))
    path.write_text(
        json.dumps(
            {
                "rdap": {"bootstrap": str(bootstrap), "interval": "1h"},
                "dns": {"root_servers": [DEAD_ROOT], "interval": "1h", "timeout": "0.2s"},
                "domains": names,
            }
        )
    )
    return path


def _exported(scrape: Scrape) -> set[str]:
    return {labels["domain"] for labels, _ in scrape.series("domain_check_success", check="rdap")}


def _settled(scrape: Scrape) -> bool:
    """Every domain of this replica has its first RDAP result on /metrics."""
    return len(_exported(scrape)) == scrape.value("domainwatch_domains")


def _start_all(procs: list[ExporterProcess]) -> None:
    with ThreadPoolExecutor(len(procs)) as pool:  # start-ups overlap: ~1 s each, not N s
        errors = [f.exception() for f in [pool.submit(p.start) for p in procs]]
    if any(errors):
        for p in procs:
            p.stop()
        raise next(e for e in errors if e is not None)


@pytest.fixture()
def stopper() -> Iterator[Callable[[ExporterProcess], ExporterProcess]]:
    started: list[ExporterProcess] = []

    def track(proc: ExporterProcess) -> ExporterProcess:
        started.append(proc)
        return proc

    yield track
    for proc in started:
        proc.stop()


def _shard_of(scrape: Scrape) -> tuple[int, int]:
    labels = scrape.labels("domainwatch_shard_info")
    assert labels is not None, "no domainwatch_shard_info"
    return int(labels["index"]), int(labels["count"])


def _exports_by_index(procs: list[ExporterProcess]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for proc in procs:
        scrape = proc.wait_for(_settled, timeout=WAIT, message="first results of every domain")
        index, _count = _shard_of(scrape)
        assert index not in out, f"two replicas claim shard {index}"
        out[index] = _exported(scrape)
    return out


def _assert_exactly_once(parts: dict[int, set[str]], names: list[str]) -> None:
    seen: dict[str, list[int]] = {}
    for index, domains in parts.items():
        for domain in domains:
            seen.setdefault(domain, []).append(index)
    twice = {d: i for d, i in seen.items() if len(i) > 1}
    assert not twice, f"exported by more than one replica: {twice}"
    assert set(seen) == set(names), f"missing: {sorted(set(names) - set(seen))}"
    for index, domains in parts.items():
        assert domains, f"shard {index} exports nothing"


def test_replicas_export_every_domain_exactly_once(
    tmp_path: Path, stopper: Callable[[ExporterProcess], ExporterProcess]
) -> None:
    names = [f"d{i:02d}.test" for i in range(60)]
    config = _write_config(tmp_path / "config.json", tmp_path, names)

    # Three pods of a StatefulSet: the index comes from the hostname when we can set one.
    def pod(i: int) -> ExporterProcess:
        if CAN_SET_HOSTNAME:
            return PodProcess(
                config,
                tmp_path / f"pod{i}",
                hostname=f"domainwatch-{i}",
                extra_args=("--shard.count", "3", "--shard.index-from-hostname"),
            )
        return ExporterProcess(
            config, tmp_path / f"pod{i}", extra_args=("--shard.count", "3", "--shard.index", str(i))
        )

    three = [stopper(pod(i)) for i in range(3)]
    _start_all(three)
    parts = _exports_by_index(three)
    assert sorted(parts) == [0, 1, 2]
    _assert_exactly_once(parts, names)
    for proc in three:
        scrape = proc.scrape()
        assert scrape.value("domainwatch_config_domains") == 60
        assert _shard_of(scrape)[1] == 3
        index = _shard_of(scrape)[0]
        assert parts[index] == {n for n in names if Shard(index, 3).owns(n)}
        assert scrape.value("domainwatch_domains") == len(parts[index])

    # A reload (same file on every replica) keeps the split: 15 names added, 10 removed.
    renamed = names[10:] + [f"new{i:02d}.test" for i in range(15)]
    _write_config(config, tmp_path, renamed)
    for proc in three:
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGHUP)
    for proc in three:
        proc.wait_for(
            lambda s: s.value("domainwatch_config_domains") == 65 and _settled(s),
            timeout=WAIT,
            message="reloaded config with every domain of the shard checked",
        )
    after_reload = _exports_by_index(three)
    _assert_exactly_once(after_reload, renamed)
    for index, domains in after_reload.items():
        # Every domain that stayed stays on its replica.
        assert parts[index] & set(renamed) <= domains
    for proc in three:
        proc.stop()

    # 3 -> 4 replicas: the fourth takes ~1/4, nothing moves between the first three.
    four = [
        stopper(
            ExporterProcess(
                config,
                tmp_path / f"four{i}",
                extra_args=("--shard.count", "4", "--shard.index", str(i)),
            )
        )
        for i in range(4)
    ]
    _start_all(four)
    parts4 = _exports_by_index(four)
    _assert_exactly_once(parts4, renamed)
    moved = {d for i in range(3) for d in after_reload[i] - parts4[i]}
    assert moved == parts4[3], "a domain moved between two of the old replicas"
    assert len(moved) / len(renamed) <= 0.30, (len(moved), len(renamed))


# --- the StatefulSet ordinal at start-up -----------------------------------------------------


@pytest.mark.skipif(not CAN_SET_HOSTNAME, reason="cannot set a hostname (unshare -u)")
@pytest.mark.parametrize(
    ("hostname", "words"),
    [
        ("domainwatch", "hostname 'domainwatch' does not end in -<number>"),
        ("domainwatch-3", "hostname 'domainwatch-3' gives index 3, not below --shard.count 3"),
    ],
)
def test_pod_ordinal_errors_at_start_up(tmp_path: Path, hostname: str, words: str) -> None:
    config = _write_config(tmp_path / "config.json", tmp_path, ["a.test"])
    cmd = [
        "unshare",
        "-u",
        "sh",
        "-c",
        'hostname "$0" && exec "$@"',
        hostname,
        sys.executable,
        "-m",
        "exporter",
        "--config.file",
        str(config),
        "--web.listen-address",
        "127.91.0.1:0",
        "--shard.count",
        "3",
        "--shard.index-from-hostname",
    ]
    done = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: --shard.index-from-hostname: ") and words in lines[0]


# --- `domainwatch check` --------------------------------------------------------------------


def test_check_ignores_sharding_unless_asked(tmp_path: Path) -> None:
    names = [f"c{i}.test" for i in range(9)]
    config = _write_config(tmp_path / "config.json", tmp_path, names)
    _code, everything = run_check(config, *names)
    assert [d["domain"] for d in everything["domains"]] == names
    mine = [n for n in names if Shard(2, 3).owns(n)]
    assert 0 < len(mine) < len(names)
    cmd = [
        sys.executable,
        "-m",
        "exporter",
        "check",
        "--json",
        "--config.file",
        str(config),
        "--shard.count",
        "3",
        "--shard.index",
        "2",
        *names,
    ]
    done = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert [d["domain"] for d in json.loads(done.stdout)["domains"]] == mine, done.stderr
    assert f"skipped {len(names) - len(mine)} domain(s) of other shards than 2 of 3" in done.stderr


# --- two replicas behind one Prometheus, with the shipped rules --------------------------------

REGISTRY_HOST = "127.91.2.1"


def _split(count: int, per_shard: list[int]) -> list[list[str]]:
    """Test domain names, `per_shard[i]` of them owned by shard i of `count`."""
    out: list[list[str]] = [[] for _ in range(count)]
    i = 0
    while any(len(out[k]) < n for k, n in enumerate(per_shard)):
        name = f"s{i}.test"
        k = owner(name, count)
        if len(out[k]) < per_shard[k]:
            out[k].append(name)
        i += 1
    return out


def _rules_config(path: Path, tmp: Path, names: list[str]) -> Path:
    path.write_text(
        json.dumps(
            {
                "rdap": {
                    "bootstrap": str(tmp / "bootstrap.json"),
                    "ca_file": str(tmp / "ca.pem"),
                    "allow_private_addresses": True,
                    # 1 request/s and 4 s: a cycle of 5 domains does not fit, one of 3 does.
                    "interval": "4s",
                    "hold_interval": "4s",
                    "timeout": "1s",
                    "requests_per_second": 1,
                },
                "dns": {"root_servers": [DEAD_ROOT], "interval": "1h", "timeout": "0.2s"},
                "domains": names,
            }
        )
    )
    return path


def test_two_replicas_behind_one_prometheus(tmp_path: Path) -> None:
    zero, one = _split(2, [5, 3])
    held = {zero[0], zero[1], one[0]}
    expiry = datetime.now(UTC) + timedelta(days=200)
    ca = trustme.CA()
    procs: list[ExporterProcess] = []
    stack: PromStack | None = None
    with RdapServer(ca, host=REGISTRY_HOST) as registry:
        for name in zero + one:
            statuses = ["client hold"] if name in held else ["active"]
            body = make_domain(name, expiry, statuses, [f"ns1.{name}"], "Registrar", "9999")
            registry.set_domain(name, Reply(body=body))
        write_ca(ca, tmp_path / "ca.pem")
        write_bootstrap(tmp_path / "bootstrap.json", {"test": registry})
        config = _rules_config(tmp_path / "config.json", tmp_path, zero + one)
        try:
            procs = [
                ExporterProcess(
                    config,
                    tmp_path / f"r{i}",
                    extra_args=("--shard.count", "2", "--shard.index", str(i)),
                )
                for i in range(2)
            ]
            _start_all(procs)
            instance = {i: f"127.0.0.1:{p.port}" for i, p in enumerate(procs)}
            stack = PromStack(tmp_path / "stack", list(instance.values())).start()
            prom = stack.prometheus

            def firing(alertname: str) -> list[dict[str, str]]:
                return [
                    a["labels"]
                    for a in prom.alerts()
                    if a["labels"]["alertname"] == alertname and a["state"] == "firing"
                ]

            # Every domain reaches Prometheus exactly once, from the replica that owns it.
            def once_each() -> bool:
                rows = prom.query(
                    "count by (domain, instance) "
                    '(domain_check_success{job="domainwatch",check="rdap"})'
                )
                seen = [(r["metric"]["domain"], r["metric"]["instance"]) for r in rows]
                return sorted(seen) == sorted(
                    [(n, instance[0]) for n in zero] + [(n, instance[1]) for n in one]
                )

            wait_until(once_each, timeout=30, message=lambda: stack.logs())
            # The README's coverage check holds.
            assert prom.query(
                'sum(domainwatch_domains{job="domainwatch"}) == '
                'max(domainwatch_config_domains{job="domainwatch"})'
            ), "sum of the shards is not the config"

            # Per-domain alerts fire once per domain, labelled with the owning replica.
            def holds() -> list[tuple[str, str]]:
                return sorted((a["domain"], a["instance"]) for a in firing("DomainOnHold"))

            wait_until(lambda: len(holds()) == 3, timeout=20, message=lambda: str(prom.alerts()))
            assert holds() == sorted(
                [(zero[0], instance[0]), (zero[1], instance[0]), (one[0], instance[1])]
            )
            # Capacity: only the replica with 5 domains (5 s a cycle) exceeds the 4 s interval.
            wait_until(
                lambda: firing("DomainwatchRdapCycleTooLong"),
                timeout=15,
                message=lambda: str(prom.alerts()),
            )
            too_long = firing("DomainwatchRdapCycleTooLong")
            assert [(a["instance"], a["server"]) for a in too_long] == [
                (instance[0], registry.hostport)
            ]

            # Shard 1's share empties (its domains leave the config): it is not "no domains".
            _rules_config(config, tmp_path, zero)
            for p in procs:
                assert p.proc is not None
                p.proc.send_signal(signal.SIGHUP)
            wait_until(
                lambda: prom.query(
                    f'domainwatch_domains{{job="domainwatch",instance="{instance[1]}"}} == 0'
                ),
                timeout=15,
                message="shard 1 reloaded to an empty share",
            )
            quiet_until = time.monotonic() + 5  # `for:` is 2 s in this stack, evaluation 1 s
            while time.monotonic() < quiet_until:
                assert not [
                    a for a in prom.alerts() if a["labels"]["alertname"] == "DomainwatchNoDomains"
                ], prom.alerts()
                time.sleep(0.5)
        finally:
            if stack is not None:
                stack.stop()
            for p in procs:
                p.stop()
