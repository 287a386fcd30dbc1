"""RDAP over HTTPS: the IANA bootstrap (RFC 9224), polite fetching, and registrar referrals.

`RdapClient.lookup(domain)` never raises for network or protocol trouble: it returns an
`RdapLookup` whose `error` is one of a small fixed set of reasons, so the scheduler can record
success and failure the same way for every probe.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from exporter import __version__
from exporter.config import RdapSettings
from exporter.names import to_alabel
from exporter.pacing import HostPacer
from exporter.registration import InvalidResponse, Registration, merge_registrar, parse_domain

log = logging.getLogger(__name__)

ACCEPT = "application/rdap+json, application/json;q=0.9"
USER_AGENT = f"domainwatch/{__version__} (+https://github.com/domainwatch/domainwatch)"
MAX_REDIRECTS = 5
MAX_BODY_BYTES = 4 * 1024 * 1024  # a domain object is a few KiB; refuse to buffer junk
BOOTSTRAP_REFRESH = 86400.0
BOOTSTRAP_RETRY = 3600.0
_ADDRESS_CACHE_SECONDS = 300.0

# Reasons a lookup fails; they become label values, so the set must stay small and fixed.
REASONS = (
    "timeout",
    "rate_limited",
    "http_error",
    "invalid_response",
    "tls_error",
    "connection_error",
    "unsupported_tld",
    "refused_address",
)


@dataclass(frozen=True)
class Bootstrap:
    services: Mapping[str, tuple[str, ...]]  # suffix (A-label) -> base URLs, https first
    publication: datetime | None = None
    source: str = ""

    def base_urls(self, domain: str) -> tuple[str, ...]:
        """Longest label-wise suffix match (RFC 9224 §5.1)."""
        labels = domain.split(".")
        for i in range(1, len(labels)):
            urls = self.services.get(".".join(labels[i:]))
            if urls:
                return urls
        return ()


def parse_bootstrap(document: object, source: str = "") -> Bootstrap:
    """Parse an RFC 9224 DNS bootstrap document. Raises ValueError if it is not one."""
    if not isinstance(document, dict) or not isinstance(document.get("services"), list):
        raise ValueError("not an RDAP bootstrap file: no 'services' list")
    services: dict[str, tuple[str, ...]] = {}
    for entry in document["services"]:
        if not (isinstance(entry, list) and len(entry) >= 2):
            continue
        suffixes, urls = entry[0], entry[1]
        if not isinstance(suffixes, list) or not isinstance(urls, list):
            continue
        good = [u for u in urls if isinstance(u, str) and u.startswith(("https://", "http://"))]
        # https first, keeping the registry's order otherwise (RFC 9224 §3).
        ordered = tuple(sorted(good, key=lambda u: not u.startswith("https://")))
        for suffix in suffixes:
            if isinstance(suffix, str) and ordered:
                try:
                    services[to_alabel(suffix)] = ordered
                except ValueError:
                    continue
    publication = None
    if isinstance(document.get("publication"), str):
        try:
            publication = datetime.fromisoformat(document["publication"]).astimezone(UTC)
        except ValueError:
            publication = None
    return Bootstrap(services=services, publication=publication, source=source)


def builtin_bootstrap() -> Bootstrap:
    """The IANA snapshot shipped in the package: the fallback when the configured one fails."""
    text = resources.files("exporter").joinpath("data/iana-dns-bootstrap.json").read_text("utf-8")
    return parse_bootstrap(json.loads(text), source="builtin")


@dataclass(frozen=True)
class RdapLookup:
    domain: str
    server: str | None = None  # base URL of the registry's RDAP service
    registered: bool | None = None  # None when unknown (the lookup failed)
    registration: Registration | None = None
    error: str | None = None  # one of REASONS, None on success
    detail: str = ""  # human-readable cause, for logs and `check`
    registrar_error: str | None = None  # the referral failed; registry data still stands
    registrar_server: str | None = None

    @property
    def success(self) -> bool:
        return self.error is None


class _Failure(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class _Response:
    status: int
    body: bytes
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "SSL" in str(exc) or "certificate" in str(exc).lower()


def make_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """System trust store (plus certifi's, as httpx would use) plus the configured extra CA."""
    ctx = ssl.create_default_context()
    try:
        import certifi  # httpx depends on it

        ctx.load_verify_locations(certifi.where())
    except (ImportError, OSError):
        pass
    if ca_file:
        ctx.load_verify_locations(ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class RdapClient:
    def __init__(
        self,
        settings: RdapSettings,
        limiter: asyncio.Semaphore | None = None,
        record: Callable[[str, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap = builtin_bootstrap()
        self._limiter = limiter or asyncio.Semaphore(64)
        self._record = record or (lambda server, outcome: None)
        self._pacers: dict[str, HostPacer] = {}
        self._safe_hosts: dict[str, float] = {}
        self._http = self._make_http(settings)

    @staticmethod
    def _make_http(settings: RdapSettings) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            verify=make_ssl_context(settings.ca_file),
            timeout=httpx.Timeout(settings.timeout),
            follow_redirects=False,  # followed by hand, so every hop is checked
            headers={"Accept": ACCEPT, "User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )

    async def reconfigure(self, settings: RdapSettings) -> None:
        old = self.settings
        self.settings = settings
        for pacer in self._pacers.values():
            pacer.configure(settings.requests_per_second, settings.max_in_flight_per_server)
        if (old.ca_file, old.timeout) != (settings.ca_file, settings.timeout):
            previous, self._http = self._http, self._make_http(settings)
            await previous.aclose()
        if old.bootstrap != settings.bootstrap:
            await self.load_bootstrap()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- bootstrap -------------------------------------------------------------------------

    async def load_bootstrap(self) -> bool:
        """Load the configured bootstrap; on failure keep the current one (initially the
        shipped snapshot). Returns True on success."""
        source = self.settings.bootstrap
        try:
            if source.startswith(("https://", "http://")):
                resp = await self._fetch(source, self._pacer(urlsplit(source).netloc))
                if resp.status != 200:
                    raise _Failure("http_error", f"HTTP {resp.status}")
                document = json.loads(resp.body)
            else:
                # A local file of ~70 KiB: reading it inline is cheaper than a thread hop.
                document = json.loads(Path(source).read_text(encoding="utf-8"))  # noqa: ASYNC240
            self.bootstrap = parse_bootstrap(document, source=source)
        except (_Failure, OSError, ValueError) as exc:
            log.warning(
                "RDAP bootstrap load failed, keeping %s bootstrap: source=%s error=%s",
                self.bootstrap.source,
                source,
                exc,
            )
            return False
        log.info(
            "RDAP bootstrap loaded: source=%s suffixes=%d publication=%s",
            source,
            len(self.bootstrap.services),
            self.bootstrap.publication,
        )
        return True

    def base_urls(self, domain: str) -> tuple[str, ...]:
        labels = domain.split(".")
        for i in range(1, len(labels)):
            override = self.settings.servers.get(".".join(labels[i:]))
            if override:
                return (override,)
        return self.bootstrap.base_urls(domain)

    def server_key(self, domain: str) -> str:
        """The host:port whose pacing governs this domain's registry lookup ('' if none)."""
        urls = self._usable(self.base_urls(domain))
        return urlsplit(urls[0]).netloc if urls else ""

    def _usable(self, urls: tuple[str, ...]) -> tuple[str, ...]:
        if self.settings.allow_http:
            return urls
        return tuple(u for u in urls if u.startswith("https://"))

    def _pacer(self, netloc: str) -> HostPacer:
        pacer = self._pacers.get(netloc)
        if pacer is None:
            pacer = HostPacer(
                self.settings.requests_per_second, self.settings.max_in_flight_per_server
            )
            self._pacers[netloc] = pacer
        return pacer

    # --- lookups ---------------------------------------------------------------------------

    async def lookup(self, domain: str, follow_registrar: bool | None = None) -> RdapLookup:
        all_urls = self.base_urls(domain)
        urls = self._usable(all_urls)
        if not urls:
            detail = "no RDAP service in bootstrap or rdap.servers"
            if all_urls:
                detail = f"only plain-http RDAP ({all_urls[0]}); set rdap.allow_http to use it"
            return RdapLookup(domain, error="unsupported_tld", detail=detail)
        last: RdapLookup | None = None
        for base in urls:
            last = await self._lookup_at(domain, base, follow_registrar)
            # Several base URLs: fall back to the next only when this one was unreachable.
            if last.error not in ("connection_error", "tls_error"):
                return last
        assert last is not None
        return last

    async def _lookup_at(self, domain: str, base: str, follow_registrar: bool | None) -> RdapLookup:
        url = base.rstrip("/") + "/domain/" + domain
        try:
            resp = await self._fetch(url, self._pacer(urlsplit(url).netloc))
            if resp.status == 404:
                # The authoritative registry says the name does not exist: a measurement.
                return RdapLookup(domain, server=base, registered=False, detail="registry 404")
            registration = self._decode(resp)
        except _Failure as exc:
            return RdapLookup(domain, server=base, error=exc.reason, detail=exc.detail)

        follow = self.settings.follow_registrar if follow_registrar is None else follow_registrar
        link = registration.registrar_link
        if not follow or not link:
            return RdapLookup(domain, server=base, registered=True, registration=registration)
        # Thin registries keep contacts (and the registrar's own expiry) behind this link. Its
        # failure never touches the registry's facts.
        try:
            reg_resp = await self._fetch(link, self._pacer(urlsplit(link).netloc))
            if reg_resp.status == 404:
                raise _Failure("http_error", "registrar answered 404 for the referral")
            registration = merge_registrar(registration, self._decode(reg_resp))
        except _Failure as exc:
            log.warning(
                "registrar RDAP referral failed: domain=%s server=%s reason=%s error=%s",
                domain,
                urlsplit(link).netloc,
                exc.reason,
                exc.detail,
            )
            return RdapLookup(
                domain,
                server=base,
                registered=True,
                registration=registration,
                registrar_error=exc.reason,
                registrar_server=link,
            )
        return RdapLookup(
            domain, server=base, registered=True, registration=registration, registrar_server=link
        )

    @staticmethod
    def _decode(resp: _Response) -> Registration:
        if not 200 <= resp.status < 300:
            raise _Failure("http_error", f"HTTP {resp.status} from {resp.url}")
        try:
            return parse_domain(json.loads(resp.body))
        except (ValueError, InvalidResponse) as exc:
            # json.JSONDecodeError is a ValueError; any content type is accepted (A1).
            raise _Failure("invalid_response", f"{resp.url}: {exc}") from exc

    async def _fetch(self, url: str, pacer: HostPacer) -> _Response:
        """GET with manual redirects; every hop is address-checked and counted."""
        for _hop in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            server = parts.netloc
            if parts.scheme != "https" and not self.settings.allow_http:
                raise _Failure("refused_address", f"refusing non-https URL {url}")
            try:
                await self._check_address(parts.hostname or "", parts.port or 443, server)
            except _Failure as exc:
                self._record(server, exc.reason)
                raise
            async with pacer.slot(), self._limiter:
                outcome = "connection_error"
                try:
                    resp = await self._get(url)
                    outcome = self._classify(resp.status)
                except _Failure as exc:
                    outcome = exc.reason
                    if exc.reason in ("timeout", "connection_error"):
                        pacer.failed()
                    raise
                finally:
                    self._record(server, outcome)
            if resp.status == 429:
                paused = pacer.rate_limited(retry_after_seconds(resp.headers.get("retry-after")))
                log.warning(
                    "RDAP server rate-limited us: server=%s paused_for=%.0fs", server, paused
                )
                raise _Failure("rate_limited", f"HTTP 429 from {server}, paused {paused:.0f}s")
            if resp.status >= 500:
                pacer.failed()
            else:
                pacer.succeeded()
            if resp.status in (301, 302, 303, 307, 308) and "location" in resp.headers:
                url = urljoin(url, resp.headers["location"])
                pacer = self._pacer(urlsplit(url).netloc)
                continue
            return resp
        raise _Failure("http_error", f"more than {MAX_REDIRECTS} redirects")

    @staticmethod
    def _classify(status: int) -> str:
        if 200 <= status < 400:
            return "success"
        if status == 404:
            return "not_found"
        if status == 429:
            return "rate_limited"
        return "http_error"

    async def _get(self, url: str) -> _Response:
        try:
            async with self._http.stream("GET", url) as resp:
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise _Failure("invalid_response", f"body larger than {MAX_BODY_BYTES}")
                    chunks.append(chunk)
                headers = {k.lower(): v for k, v in resp.headers.items()}
                return _Response(resp.status_code, b"".join(chunks), url, headers)
        except httpx.TimeoutException as exc:
            raise _Failure("timeout", f"{url}: timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            reason = "tls_error" if _is_tls_failure(exc) else "connection_error"
            raise _Failure(reason, f"{url}: {exc or type(exc).__name__}") from exc

    async def _check_address(self, host: str, port: int, server: str) -> None:
        """Refuse private, loopback and link-local targets unless configured to allow them:
        a registry's referral or redirect must not be able to make us probe an internal host."""
        if self.settings.allow_private_addresses:
            return
        if self._safe_hosts.get(host, 0.0) > time.monotonic():
            return
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port)
            except OSError as exc:
                raise _Failure("connection_error", f"cannot resolve {host}: {exc}") from exc
            addresses = [str(info[4][0]) for info in infos]
        for addr in addresses:
            ip = ipaddress.ip_address(addr.split("%")[0])
            if not ip.is_global:
                raise _Failure("refused_address", f"{server} resolves to non-public address {ip}")
        self._safe_hosts[host] = time.monotonic() + _ADDRESS_CACHE_SECONDS
