"""Command line: flags, logging, wiring, signals. The only module that imports everything."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from prometheus_client import CollectorRegistry

from exporter import __version__, report
from exporter.capacity import CapacityCollector
from exporter.checks.registration import RegistrationCheck
from exporter.collector import EXPOSITION_FORMAT, DomainCollector, pack_exposition
from exporter.config import Config, ConfigError, DomainConfig, config_warnings, load_config
from exporter.gcpause import gc_paused, release_free_memory
from exporter.httpserver import HttpServer, ListenError, bind
from exporter.logformat import LEVELS, setup_logging
from exporter.names import InvalidName, to_alabel
from exporter.probe import ListedView, Prober
from exporter.rdap import RdapClient
from exporter.scheduler import Scheduler
from exporter.selfmetrics import ExporterMetrics
from exporter.shard import Shard, ShardError, from_flags
from exporter.statuspage import StatusPages
from exporter.store import DomainStatus, StatusStore
from exporter.web import (
    WebConfigError,
    check_telemetry_path,
    load_web_config,
    make_app,
    register_runtime_collectors,
    tls_context,
)

log = logging.getLogger("domainwatch")
DEFAULT_PORT = 9877
RENDER_EVERY = 5.0  # seconds between background refreshes of the /metrics cache


class StartupError(Exception):
    """A reason not to start, printed as one line naming the flag or file, exit code 1."""


class _Parser(argparse.ArgumentParser):
    """A bad flag is one line on stderr (exit 2): argparse's usage block would bury it."""

    def __init__(self, **kwargs: Any) -> None:
        # No abbreviations: "--web.listen" must not quietly mean --web.listen-address.
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common_flags(p: argparse.ArgumentParser, config_default: str | None) -> None:
    p.add_argument(
        "--config.file",
        dest="config_file",
        default=config_default,
        help="YAML configuration file (default: config.yaml)",
    )
    p.add_argument("--log.level", dest="log_level", choices=list(LEVELS), default="info")
    p.add_argument("--log.format", dest="log_format", choices=["logfmt", "json"], default="logfmt")


def _shard_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shard.count",
        dest="shard_count",
        type=int,
        default=1,
        metavar="N",
        help="split the configured domains over N replicas (rendezvous hashing; default 1)",
    )
    p.add_argument(
        "--shard.index",
        dest="shard_index",
        type=int,
        default=None,
        metavar="I",
        help="this replica's shard, 0 to N-1",
    )
    p.add_argument(
        "--shard.index-from-hostname",
        dest="shard_from_hostname",
        action="store_true",
        help="take the shard index from the hostname's trailing -<number> (StatefulSet pod "
        "ordinal)",
    )


def _shard(args: argparse.Namespace) -> Shard | None:
    try:
        return from_flags(args.shard_count, args.shard_index, args.shard_from_hostname)
    except ShardError as exc:
        raise StartupError(str(exc)) from exc


def _serve_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="domainwatch",
        description="Prometheus exporter for domain expiry, holds, delegation and contact "
        "mailboxes. Sub-command: 'domainwatch check DOMAIN...' (see 'domainwatch check -h').",
    )
    _common_flags(p, "config.yaml")
    _shard_flags(p)
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        default=":9877",
        help="address to serve /metrics on (default: %(default)s)",
    )
    p.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        help="path under which to expose metrics (default: %(default)s)",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config",
        default=None,
        help="Prometheus web-config file for TLS and basic auth",
    )
    p.add_argument(
        "--state.file",
        dest="state_file",
        default=None,
        help="JSON file where last results survive restarts",
    )
    p.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration, print every problem, exit 0/1",
    )
    p.add_argument("--version", action="version", version=f"domainwatch {__version__}")
    return p


def _check_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="domainwatch check",
        description="Run every check once and print a verdict per domain. Exit code: 0 healthy, "
        "1 needs attention, 2 could not check.",
    )
    _common_flags(p, None)  # optional for check: defaults apply without a file
    _shard_flags(p)  # only when given: `check` checks every named domain otherwise
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("domains", nargs="+", metavar="DOMAIN")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Every failure to start is one line on stderr and a non-zero exit, never a traceback
    (the traceback of an unexpected one is logged at --log.level=debug)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list and args_list[0] == "check":
            args = _check_parser().parse_args(args_list[1:])
            setup_logging(args.log_level if args.log_level != "info" else "warn", args.log_format)
            return _run_check(args)
        args = _serve_parser().parse_args(args_list)
        setup_logging(args.log_level, args.log_format)
        return _run_daemon(args)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while starting up
        return 130
    except Exception as exc:  # the outermost boundary: one line, not a traceback
        log.debug("unexpected error", exc_info=True)
        print(f"error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1


def _run_daemon(args: argparse.Namespace) -> int:
    args.shard = _shard(args)  # before the config: a wrong pod ordinal is the first thing said
    try:
        config = load_config(args.config_file)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"config error: {line}", file=sys.stderr)
        return 1
    if args.config_check:
        for warning in config_warnings(config):
            print(f"{args.config_file}: warning: {warning}")
        mine = ""
        if args.shard is not None:
            owned = sum(args.shard.owns(d.name) for d in config.domains)
            mine = f" ({owned} in shard {args.shard.index} of {args.shard.count})"
        print(f"{args.config_file}: OK, {len(config.domains)} domains{mine}")
        return 0
    try:
        check_telemetry_path(args.telemetry_path)
    except ValueError as exc:
        raise StartupError(f"--web.telemetry-path {exc}") from exc
    tls = None
    web_config = None
    if args.web_config:
        try:
            web_config = load_web_config(args.web_config)
            tls = tls_context(web_config, args.web_config)
        except WebConfigError as exc:
            raise StartupError(f"--web.config.file {exc}") from exc
    if args.state_file:
        _check_state_file(args.state_file)
    try:
        # Bound before anything starts, so "address in use" is a start-up error, not a crash.
        server = HttpServer(bind(args.listen, DEFAULT_PORT), tls)
    except ListenError as exc:
        raise StartupError(f"--web.listen-address {exc}") from exc
    users = web_config.basic_auth_users if web_config else None
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args, config, server, users))
    finally:
        server.shutdown()
    return 0


def _check_state_file(path: str) -> None:
    """The state file's directory must exist and take a new file (checked by writing one:
    permission bits say nothing when running as root, a read-only mount does)."""
    state = Path(path)
    folder = state.parent
    if state.is_dir():
        raise StartupError(f"--state.file {path}: is a directory")
    if folder.exists() and not folder.is_dir():
        raise StartupError(f"--state.file {path}: {folder} is not a directory")
    if not folder.is_dir():
        raise StartupError(f"--state.file {path}: directory {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".domainwatch-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StartupError(
            f"--state.file {path}: directory {folder} is not writable: {exc.strerror or exc}"
        ) from exc
    if state.exists() and not os.access(state, os.R_OK):
        raise StartupError(f"--state.file {path}: not readable")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


class ConfigReloader:
    """Re-read the config file and apply it, from SIGHUP or POST /-/reload.

    Parsing runs on a worker thread so a large file does not stall the checks. Any failure,
    including an exception load_config should never raise, keeps the running config, sets
    domainwatch_config_last_reload_successful to 0 and is logged as one line. Reloads are
    serialized: two at once would race in apply_config.
    """

    def __init__(
        self,
        path: str,
        load: Callable[[str], Config],
        apply: Callable[[Config], Awaitable[object]],
        metrics: ExporterMetrics,
    ) -> None:
        self.path = path
        self._load = load
        self._apply = apply
        self._metrics = metrics
        self._lock = asyncio.Lock()

    async def reload(self) -> str | None:
        """None on success, else the reason (one line per config problem)."""
        async with self._lock:
            try:
                new = await asyncio.to_thread(self._load, self.path)
                await self._apply(new)
            except ConfigError as exc:
                return self._failed("\n".join(exc.errors), "; ".join(exc.errors))
            except Exception as exc:
                log.debug("config reload traceback", exc_info=True)
                reason = f"{self.path}: {type(exc).__name__}: {_one_line(exc)}"
                return self._failed(reason, reason)
            self._metrics.reload_ok.set(1)
            self._metrics.reload_ts.set(time.time())
            log.info("config reloaded: domains=%d", len(new.domains))
            return None

    def _failed(self, reason: str, logged: str) -> str:
        self._metrics.reload_ok.set(0)
        log.error("config reload failed, keeping the running config: %s", logged)
        return reason


async def _serve(
    args: argparse.Namespace, config: Config, server: HttpServer, users: dict[str, str] | None
) -> None:
    loop = asyncio.get_running_loop()
    registry = CollectorRegistry()
    register_runtime_collectors(registry)
    # Config and restored state live as long as the process: they are moved out of the cyclic
    # collector's sight (frozen) once built, or every full collection walks them all again (at
    # 100k domains the first rendering took 19 s with them in sight, 14 s without). Until then
    # the collector stays off: switched on at the end of the restore, it spent ~1 s collecting
    # the 100k records just made before they were frozen.
    with gc_paused(freeze=True):
        metrics, store, rdap, scheduler = _wire(config, registry, args.state_file, args.shard)
        # /metrics and the status page never show domains watched only because /probe asked.
        listed = ListedView(store, lambda: scheduler.unlisted)
        # Not registered: /metrics appends its cached text rendering to the registry's output.
        # Each record's lines are saved with it, so a restart renders only what changed since.
        store.keep_expositions(pack_exposition, EXPOSITION_FORMAT)
        domains = DomainCollector(
            listed, restored=store.take_exposition, restored_done=store.forget_expositions
        )
        prober = Prober(store, scheduler, loop.call_soon_threadsafe, registry)
        if args.state_file:
            # Results older than twice their check's interval are not exported as current. On a
            # worker thread: 100k domains take seconds to decode, and the loop serves meanwhile.
            loading = time.monotonic()
            restored = await asyncio.to_thread(
                store.load,
                args.state_file,
                # Every check's own interval (rdap, whois, dns, dnssec, email, nsdomain, ...).
                max_age={name: 2 * check.interval() for name, check in scheduler.checks.items()},
            )
            log.info(
                "state restored: path=%s domains=%d seconds=%.1f",
                args.state_file,
                restored,
                time.monotonic() - loading,
            )
        # Render /metrics once now, on a thread of its own, so that the first scrape finds it
        # cached (at 100k domains the first rendering takes many seconds of CPU), then keep the
        # cache a few seconds fresh, so that a scrape never pays for a scrape interval of changes.
        # After the first rendering, start-up's garbage (config text, rows, saved lines) is gone.
        threading.Thread(
            target=domains.keep_fresh,
            args=(RENDER_EVERY, None, release_free_memory),
            name="render",
            daemon=True,
        ).start()
    metrics.reload_ok.set(1)
    metrics.reload_ts.set(time.time())
    reloader = ConfigReloader(args.config_file, load_config, scheduler.apply_config, metrics)
    # One HTTP reload at a time: each holds a web worker thread until the loop answers.
    http_reload = threading.Lock()

    def reload_from_http() -> str | None:
        # Called on a web thread: hand the work to the event loop and wait for its verdict.
        if not http_reload.acquire(blocking=False):
            return "a reload is already running"
        try:
            future = asyncio.run_coroutine_threadsafe(reloader.reload(), loop)
            return future.result(timeout=60)
        except TimeoutError:
            return "the reload did not finish within 60s"
        finally:
            http_reload.release()

    app = make_app(
        registry,
        # Ready once checks are scheduled and /metrics is rendered: before that a scrape would
        # wait for the first rendering (seconds at 100k domains), past a scrape timeout.
        ready=lambda: scheduler.ready and domains.warm,
        reload=reload_from_http,
        users=users,
        domain_stream=domains.exposition_stream,
        telemetry_path=args.telemetry_path,
        pages=StatusPages(listed.snapshot, args.telemetry_path),
        probe=prober.app,
    )
    server.start(app)
    scheduler.spawn(prober.sweeper())
    pending: set[asyncio.Task[str | None]] = set()

    def reload_from_signal() -> None:
        task = asyncio.ensure_future(reloader.reload())
        pending.add(task)  # keep a reference until it is done
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_from_signal)
    loop.add_signal_handler(signal.SIGTERM, scheduler.stop)
    loop.add_signal_handler(signal.SIGINT, scheduler.stop)
    log.info(
        "domainwatch started: version=%s listen=%s domains=%d",
        __version__,
        args.listen,
        len(config.domains),
    )
    try:
        await scheduler.run()
    finally:
        await asyncio.to_thread(server.shutdown)
        await rdap.aclose()
        log.info("domainwatch stopped")


def _run_check(args: argparse.Namespace) -> int:
    # `check` works without a config file; one that is named must exist.
    path = Path(args.config_file or "config.yaml")
    try:
        config = load_config(path) if args.config_file or path.exists() else Config()
    except ConfigError as exc:
        for line in exc.errors:
            print(f"config error: {line}", file=sys.stderr)
        return 2
    known = {d.name: d for d in config.domains}
    domains: dict[str, DomainConfig] = {}
    for raw in args.domains:
        try:
            name = to_alabel(raw)
        except InvalidName:
            print(f"error: {raw!r} is not a domain name", file=sys.stderr)
            return 2
        domains[name] = known.get(name) or DomainConfig(name=name)
    try:
        shard = from_flags(args.shard_count, args.shard_index, args.shard_from_hostname)
    except ShardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if shard is not None:
        others = [name for name in domains if not shard.owns(name)]
        if others:
            print(
                f"skipped {len(others)} domain(s) of other shards than {shard.index} of "
                f"{shard.count}: {' '.join(others)}",
                file=sys.stderr,
            )
        domains = {name: d for name, d in domains.items() if shard.owns(name)}
    config = replace(config, domains=tuple(domains.values()))
    statuses = asyncio.run(_check(config))
    now = time.time()
    if args.json:
        print(json.dumps({"domains": [report.as_json(s, now) for s in statuses]}, indent=2))
    else:
        sys.stdout.write(report.as_table(statuses, now))
    return report.exit_code(statuses, now)


def _wire(
    config: Config,
    registry: CollectorRegistry,
    state_file: str | None = None,
    shard: Shard | None = None,
) -> tuple[ExporterMetrics, StatusStore, RdapClient, Scheduler]:
    """config -> scheduler -> probes -> store: the same wiring for the daemon and `check`."""
    metrics = ExporterMetrics(registry)
    store = StatusStore()
    # One cap on network operations, shared by RDAP requests, DNS and mail checks.
    limiter = asyncio.Semaphore(config.concurrency)
    rdap = RdapClient(config.rdap, limiter=limiter, record=metrics.record_rdap)
    scheduler = Scheduler(config, store, rdap, metrics, limiter, state_file=state_file, shard=shard)
    registration = scheduler.checks["rdap"]
    assert isinstance(registration, RegistrationCheck)
    registry.register(
        CapacityCollector(
            backlog=scheduler.backlog,
            cycles=registration.cycles,
            config_domains=lambda: len(scheduler.config.domains),
            shard=shard,
        )
    )
    return metrics, store, rdap, scheduler


async def _check(config: Config) -> list[DomainStatus]:
    _metrics, store, rdap, scheduler = _wire(config, CollectorRegistry())
    try:
        await scheduler.check_once([d.name for d in config.domains])
    finally:
        await rdap.aclose()
    return store.snapshot()
