"""Command line: flags, logging, wiring, signals. The only module that imports everything."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from prometheus_client import CollectorRegistry

from exporter import __version__, report
from exporter.collector import DomainCollector
from exporter.config import Config, ConfigError, DomainConfig, load_config
from exporter.logformat import LEVELS, setup_logging
from exporter.names import InvalidName, to_alabel
from exporter.rdap import RdapClient
from exporter.scheduler import Scheduler
from exporter.selfmetrics import ExporterMetrics
from exporter.store import DomainStatus, StatusStore
from exporter.web import WebConfig, WebConfigError, load_web_config, make_app, serve

log = logging.getLogger("domainwatch")


def _common_flags(p: argparse.ArgumentParser, config_default: str | None) -> None:
    p.add_argument(
        "--config.file",
        dest="config_file",
        default=config_default,
        help="YAML configuration file (default: config.yaml)",
    )
    p.add_argument("--log.level", dest="log_level", choices=list(LEVELS), default="info")
    p.add_argument("--log.format", dest="log_format", choices=["logfmt", "json"], default="logfmt")


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="domainwatch",
        description="Prometheus exporter for domain expiry, holds, delegation and contact "
        "mailboxes. Sub-command: 'domainwatch check DOMAIN...' (see 'domainwatch check -h').",
    )
    _common_flags(p, "config.yaml")
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        default=":9877",
        help="address to serve /metrics on (default: %(default)s)",
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
    p = argparse.ArgumentParser(
        prog="domainwatch check",
        description="Run every check once and print a verdict per domain. Exit code: 0 healthy, "
        "1 needs attention, 2 could not check.",
    )
    _common_flags(p, None)  # optional for check: defaults apply without a file
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("domains", nargs="+", metavar="DOMAIN")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "check":
        args = _check_parser().parse_args(args_list[1:])
        setup_logging(args.log_level if args.log_level != "info" else "warn", args.log_format)
        return _run_check(args)
    args = _serve_parser().parse_args(args_list)
    setup_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config_file)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"config error: {line}", file=sys.stderr)
        return 1
    if args.config_check:
        print(f"{args.config_file}: OK, {len(config.domains)} domains")
        return 0
    web_config = None
    if args.web_config:
        try:
            web_config = load_web_config(args.web_config)
        except WebConfigError as exc:
            print(f"web config error: {exc}", file=sys.stderr)
            return 1
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args, config, web_config))
    return 0


async def _serve(args: argparse.Namespace, config: Config, web_config: WebConfig | None) -> None:
    loop = asyncio.get_running_loop()
    registry = CollectorRegistry()
    metrics, store, rdap, scheduler = _wire(config, registry, args.state_file)
    # Not registered: /metrics appends its cached text rendering to the registry's output.
    domains = DomainCollector(store)
    if args.state_file:
        restored = store.load(args.state_file)
        log.info("state restored: path=%s domains=%d", args.state_file, restored)
    metrics.reload_ok.set(1)
    metrics.reload_ts.set(time.time())

    async def reload() -> str | None:
        try:
            new = load_config(args.config_file)
        except ConfigError as exc:
            metrics.reload_ok.set(0)
            log.error("config reload failed, keeping the running config: %s", "; ".join(exc.errors))
            return "\n".join(exc.errors)
        await scheduler.apply_config(new)
        metrics.reload_ok.set(1)
        metrics.reload_ts.set(time.time())
        log.info("config reloaded: domains=%d", len(new.domains))
        return None

    def reload_from_http() -> str | None:
        # Called on a web thread: hand the work to the event loop and wait for its verdict.
        future = asyncio.run_coroutine_threadsafe(reload(), loop)
        return future.result(timeout=60)

    app = make_app(
        registry,
        ready=lambda: scheduler.ready,
        reload=reload_from_http,
        users=web_config.basic_auth_users if web_config else None,
        domain_exposition=domains.exposition,
    )
    server, _thread = serve(args.listen, app, web_config)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reload()))
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
        server.shutdown()
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
    config = replace(config, domains=tuple(domains.values()))
    statuses = asyncio.run(_check(config))
    now = time.time()
    if args.json:
        print(json.dumps({"domains": [report.as_json(s, now) for s in statuses]}, indent=2))
    else:
        sys.stdout.write(report.as_table(statuses, now))
    return report.exit_code(statuses, now)


def _wire(
    config: Config, registry: CollectorRegistry, state_file: str | None = None
) -> tuple[ExporterMetrics, StatusStore, RdapClient, Scheduler]:
    """config -> scheduler -> probes -> store: the same wiring for the daemon and `check`."""
    metrics = ExporterMetrics(registry)
    store = StatusStore()
    # One cap on network operations, shared by RDAP requests, DNS and mail checks.
    limiter = asyncio.Semaphore(config.concurrency)
    rdap = RdapClient(config.rdap, limiter=limiter, record=metrics.record_rdap)
    scheduler = Scheduler(config, store, rdap, metrics, limiter, state_file=state_file)
    return metrics, store, rdap, scheduler


async def _check(config: Config) -> list[DomainStatus]:
    _metrics, store, rdap, scheduler = _wire(config, CollectorRegistry())
    try:
        await scheduler.check_once([d.name for d in config.domains])
    finally:
        await rdap.aclose()
    return store.snapshot()
