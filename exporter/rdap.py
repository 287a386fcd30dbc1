"""RDAP over HTTPS: the IANA bootstrap (RFC 9224), polite fetching, and registrar referrals.

`RdapClient.lookup(domain)` never raises for network or protocol trouble: it returns an
`RdapLookup` whose `error` is one of a small fixed set of reasons, so the scheduler can record
success and failure the same way for every probe.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import re
import socket
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from exporter import __version__
from exporter.addresses import IPAddress, PinnedBackend, parse_ip, pinned_transport, refusal
from exporter.config import RdapSettings
from exporter.names import normalise_host, to_alabel
from exporter.pacing import HostPacer, HostPaused
from exporter.registration import InvalidResponse, Registration, merge_registrar, parse_domain

log = logging.getLogger(__name__)

ACCEPT = "application/rdap+json, application/json;q=0.9"
USER_AGENT = f"domainwatch/{__version__} (+https://github.com/domainwatch/domainwatch)"
MAX_REDIRECTS = 5
# A domain object is a few KiB (the largest fixture 29 KiB), IANA's bootstrap 70 KiB. The cap is on
# the decoded size; 1 MiB of small JSON arrays still costs ~30 MB of Python objects, hence no more.
MAX_BODY_BYTES = 1024 * 1024
ACCEPT_ENCODING = "gzip, deflate"  # exactly what _BodyDecoder undoes
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
        detail = detail if len(detail) <= 500 else detail[:500] + "..."  # remote text: bounded
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class _Response:
    status: int
    body: bytes
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


# Retry-After is only ever 1*DIGIT (RFC 9110 §10.2.3) or an HTTP-date; `str.isdigit()` and
# `float()` also accept "²", "١٢" or " 1e9", so both forms are matched on ASCII first.
_DELTA_SECONDS = re.compile(r"[0-9]+", re.ASCII)
_HTTP_DATE = re.compile(r"[A-Za-z0-9 ,:\-]{10,40}", re.ASCII)
# A Retry-After beyond this is treated as this long: a registry asking for more is either
# misconfigured or hostile, and the pause silences every domain it serves.
RETRY_AFTER_MAX = 3600.0


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as delta-seconds or an HTTP-date (RFC 9110 §10.2.3), clamped to
    [0, RETRY_AFTER_MAX]. Anything else -- negative, fractional, non-ASCII digits, garbage --
    is None: treated as absent, so the caller falls back to its default back-off."""
    if not value:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        # Valid however long; more than 12 digits is past the cap (and int() of 5,000 digits
        # would raise), so it is not converted at all.
        return RETRY_AFTER_MAX if len(text) > 12 else min(float(int(text)), RETRY_AFTER_MAX)
    if not _HTTP_DATE.fullmatch(text):
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        delta = when.timestamp() - (time.time() if now is None else now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, delta), RETRY_AFTER_MAX)


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


class _BodyDecoder:
    """Collects a response body, undoing Content-Encoding, and fails as soon as the *decoded* size
    passes `limit`: a few KiB of gzip can inflate to gigabytes, so the cap must apply while
    inflating, not after (httpx's own decoders inflate each network chunk in one go)."""

    def __init__(self, content_encoding: str, limit: int) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            # We only ever advertise gzip and deflate (ACCEPT_ENCODING).
            raise _Failure("invalid_response", f"unsupported Content-Encoding {content_encoding!r}")
        self._coding = codings[0] if codings else ""
        self._limit = limit
        self._size = 0
        self._parts: list[bytes] = []
        self._inflater: zlib._Decompress | None = None
        self._pending = b""  # deflate input seen before the first output (see _inflate)
        if self._coding:
            self._inflater = zlib.decompressobj(
                16 + zlib.MAX_WBITS if "gzip" in self._coding else zlib.MAX_WBITS
            )

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            what = f"{self._coding}-decoded body" if self._inflater else "body"
            raise _Failure("invalid_response", f"{what} larger than {self._limit} bytes")
        self._parts.append(data)

    def _inflate(self, data: bytes) -> None:
        assert self._inflater is not None
        try:
            out = self._inflater.decompress(data, self._limit - self._size + 1)
        except zlib.error as exc:
            if self._coding == "deflate" and self._size == 0 and len(self._pending) < 65536:
                # "deflate" is meant to be zlib-wrapped, but some servers send raw deflate
                # (httpx and browsers accept both): retry what we have as raw deflate, once.
                self._pending += data
                self._coding = "raw-deflate"
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                data, self._pending = self._pending, b""
                self._inflate(data)
                return
            raise _Failure("invalid_response", f"bad {self._coding} body: {exc}") from exc
        if self._size == 0 and not out and self._coding == "deflate":
            self._pending += data[:65536]
        self._keep(out)
        if self._inflater.unconsumed_tail:  # stopped at the size cap with input left
            what = f"{self._coding}-decoded body"
            raise _Failure("invalid_response", f"{what} larger than {self._limit} bytes")

    def feed(self, data: bytes) -> None:
        if self._inflater is None:
            self._keep(data)
        elif data:
            self._inflate(data)

    def finish(self) -> bytes:
        if self._inflater is not None:
            self._keep(self._inflater.flush(self._limit - self._size + 1))
            if not self._inflater.eof:
                raise _Failure("invalid_response", f"truncated {self._coding} body")
        return b"".join(self._parts)


def _reject_constant(name: str) -> object:
    raise ValueError(f"non-standard JSON number {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"JSON number out of range: {text[:40]}")
    return value


def load_json(body: bytes) -> object:
    """Decode a JSON body; any defect -> _Failure('invalid_response'), never another exception.

    Strict where Python's json is lenient: UTF-8 only, no NaN/Infinity literals, no number that
    overflows to infinity. Too-deep nesting (RecursionError) and too-long integers (ValueError,
    Python's int-parsing limit) are caught here as well."""
    try:
        text = body.decode("utf-8-sig")  # a leading BOM is harmless; other encodings are not
        document = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
        if "\\ud" in text or "\\uD" in text:
            # A lone surrogate escape ("\ud800") decodes to a str that cannot be encoded as
            # UTF-8: as a registrar name it would break every later /metrics response.
            json.dumps(document, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError) as exc:  # Unicode*Error, JSONDecodeError included
        raise _Failure("invalid_response", f"not JSON: {type(exc).__name__}: {exc}") from exc
    return document


def _object_names(document: object) -> list[tuple[str, str]]:
    """The names a domain object claims to be, as (member, published text)."""
    if not isinstance(document, dict):
        return []
    return [(k, v) for k in ("ldhName", "unicodeName") if isinstance(v := document.get(k), str)]


class RdapClient:
    def __init__(
        self,
        settings: RdapSettings,
        limiter: asyncio.Semaphore | None = None,
        record: Callable[[str, str], None] | None = None,
        resolve: Resolver | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap = builtin_bootstrap()
        self._limiter = limiter or asyncio.Semaphore(64)
        self._record = record or (lambda server, outcome: None)
        self._resolve = resolve or _getaddrinfo
        self._pacers: dict[str, HostPacer] = {}
        self._resolved: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._backend = PinnedBackend()
        self._http = self._make_http(settings, self._backend)

    @staticmethod
    def _make_http(settings: RdapSettings, backend: PinnedBackend) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        return httpx.AsyncClient(
            transport=pinned_transport(make_ssl_context(settings.ca_file), limits, backend),
            # Per-phase timeouts stay as a second line; the overall deadline is _fetch's.
            timeout=httpx.Timeout(settings.timeout),
            follow_redirects=False,  # followed by hand, so every hop is checked
            headers={
                "Accept": ACCEPT,
                "User-Agent": USER_AGENT,
                "Accept-Encoding": ACCEPT_ENCODING,
            },
            trust_env=False,  # a proxy from the environment would connect to unchecked addresses
        )

    async def reconfigure(self, settings: RdapSettings) -> None:
        old = self.settings
        self.settings = settings
        for pacer in self._pacers.values():
            pacer.configure(settings.requests_per_second, settings.max_in_flight_per_server)
        if (old.ca_file, old.timeout, old.allow_private_addresses) != (
            settings.ca_file,
            settings.timeout,
            settings.allow_private_addresses,
        ):
            # New pins and no pooled connection survive a change of the address policy.
            self._resolved.clear()
            self._backend = PinnedBackend()
            previous, self._http = self._http, self._make_http(settings, self._backend)
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
                resp = await self._fetch(source)
                if resp.status != 200:
                    raise _Failure("http_error", f"HTTP {resp.status}")
                document = load_json(resp.body)
            else:
                # A local file of ~70 KiB: reading it inline is cheaper than a thread hop.
                document = json.loads(Path(source).read_text(encoding="utf-8"))  # noqa: ASYNC240
            self.bootstrap = parse_bootstrap(document, source=source)
        except (_Failure, OSError, ValueError, RecursionError) as exc:
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
            resp = await self._fetch(url)
            if resp.status == 404:
                # The authoritative registry says the name does not exist: a measurement.
                return RdapLookup(domain, server=base, registered=False, detail="registry 404")
            registration = self._decode(resp, domain)
        except _Failure as exc:
            return RdapLookup(domain, server=base, error=exc.reason, detail=exc.detail)

        follow = self.settings.follow_registrar if follow_registrar is None else follow_registrar
        link = registration.registrar_link
        if not follow or not link:
            return RdapLookup(domain, server=base, registered=True, registration=registration)
        # Thin registries keep contacts (and the registrar's own expiry) behind this link. Its
        # failure never touches the registry's facts. The registry's slot was released when its
        # answer was read; the referral runs under the registrar's own pacer and deadline, and
        # gives up at once while the registrar is paused rather than wait out its back-off.
        try:
            reg_resp = await self._fetch(link, max_pause=self.settings.timeout)
            if reg_resp.status == 404:
                raise _Failure("http_error", "registrar answered 404 for the referral")
            registration = merge_registrar(registration, self._decode(reg_resp, domain))
        except _Failure as exc:
            log.warning(
                "registrar RDAP referral failed: domain=%s server=%s reason=%s error=%s",
                domain,
                _netloc(link),
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
    def _decode(resp: _Response, domain: str) -> Registration:
        if not 200 <= resp.status < 300:
            raise _Failure("http_error", f"HTTP {resp.status} from {resp.url}")
        document = load_json(resp.body)  # any content type is accepted (A1)
        # An answer about another name must not become this domain's data (a registrar that
        # answers every referral with one object, a cache keyed wrongly, a hostile server).
        want = normalise_host(domain)
        for key, claimed in _object_names(document):
            name = normalise_host(claimed)
            # An unreadable unicodeName is only a display oddity; the ldhName must match.
            if name != want and (name is not None or key == "ldhName"):
                raise _Failure(
                    "invalid_response", f"{resp.url}: object is for {claimed[:80]!r}, not {domain}"
                )
        try:
            return parse_domain(document)
        except InvalidResponse as exc:
            raise _Failure("invalid_response", f"{resp.url}: {exc}") from exc

    async def _fetch(self, url: str, max_pause: float | None = None) -> _Response:
        """GET with manual redirects; every hop is address-checked, pinned and counted.

        One deadline of `rdap.timeout` covers the network time of the whole request -- name
        resolution, connect, TLS, headers and the entire body, across redirects -- so a server
        that drips a byte a second still fails in time. Waiting for a pacer slot or the global
        limiter is not network time and does not count against it."""
        budget = self.settings.timeout
        for _hop in range(MAX_REDIRECTS + 1):
            target = self._target(url)
            server = target.netloc
            pacer = self._pacer(server)
            started = time.monotonic()
            try:
                async with asyncio.timeout(budget):
                    await self._pin(target)
            except TimeoutError:
                self._record(server, "timeout")
                raise _Failure("timeout", f"{url}: name resolution took too long") from None
            except _Failure as exc:
                self._record(server, exc.reason)
                raise
            budget -= time.monotonic() - started
            try:
                async with pacer.slot(max_pause), self._limiter:
                    started = time.monotonic()
                    resp = await self._exchange(url, server, pacer, budget)
                    budget -= time.monotonic() - started
            except HostPaused as exc:
                detail = f"{server} is paused for another {exc.seconds:.0f}s"
                raise _Failure("rate_limited", detail) from None
            if resp.status == 429:
                paused = pacer.rate_limited(retry_after_seconds(resp.headers.get("retry-after")))
                log.warning(
                    "RDAP server rate-limited us: server=%s paused_for=%.0fs", server, paused
                )
                raise _Failure("rate_limited", f"HTTP 429 from {server}, paused {paused:.0f}s")
            if resp.status >= 500:
                pacer.failed()
                retry_after = retry_after_seconds(resp.headers.get("retry-after"))
                if resp.status == 503 and retry_after:
                    pacer.pause(retry_after)  # RFC 9110 §15.6.4: maintenance with an end time
            else:
                pacer.succeeded()
            if resp.status in (301, 302, 303, 307, 308) and "location" in resp.headers:
                url = urljoin(url, resp.headers["location"])
                continue
            return resp
        raise _Failure("http_error", f"more than {MAX_REDIRECTS} redirects")

    async def _exchange(self, url: str, server: str, pacer: HostPacer, budget: float) -> _Response:
        """One HTTP exchange inside a held slot, bounded by `budget` seconds, and counted."""
        outcome = "connection_error"
        try:
            async with asyncio.timeout(max(budget, 0.0)):
                resp = await self._get(url)
            outcome = self._classify(resp.status)
            return resp
        except TimeoutError:
            outcome = "timeout"
            pacer.failed()
            raise _Failure(
                "timeout", f"{url}: no complete answer within {self.settings.timeout:g}s"
            ) from None
        except _Failure as exc:
            outcome = exc.reason
            if exc.reason in ("timeout", "connection_error"):
                pacer.failed()
            raise
        finally:
            self._record(server, outcome)

    def _target(self, url: str) -> _Target:
        """Parse a URL the way httpx will use it; refuse what we must not fetch."""
        try:
            parsed = httpx.URL(url)
            netloc = urlsplit(url).netloc
            host = parsed.raw_host.decode("ascii").lower()
            port = parsed.port or {"https": 443, "http": 80}.get(parsed.scheme, 0)
        except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
            raise _Failure("http_error", f"unusable URL {url[:200]!r}: {exc}") from exc
        if parsed.scheme != "https" and not (parsed.scheme == "http" and self.settings.allow_http):
            self._record(netloc, "refused_address")
            raise _Failure("refused_address", f"refusing non-https URL {url[:200]}")
        if not host:
            raise _Failure("http_error", f"URL without a host: {url[:200]!r}")
        return _Target(netloc=netloc, host=host, port=port)

    async def _pin(self, target: _Target) -> None:
        """Resolve once, check every address, and pin the result for the connection.

        Refuse private, loopback, link-local and other non-public targets (also when wrapped in
        NAT64, 6to4, Teredo or IPv4-mapped form, see exporter.addresses) unless configured to
        allow them: a registry's referral or redirect must not make us probe an internal host."""
        host = target.host
        cached = self._resolved.get(host)
        if cached is not None and cached[0] > time.monotonic():
            addresses = cached[1]
        else:
            literal = parse_ip(host)
            if literal is not None:
                addresses = (str(literal),)
            else:
                try:
                    addresses = tuple(dict.fromkeys(await self._resolve(host, target.port)))
                except OSError as exc:
                    raise _Failure("connection_error", f"cannot resolve {host}: {exc}") from exc
                if not addresses:
                    raise _Failure("connection_error", f"{host} has no address")
            if not self.settings.allow_private_addresses:
                for address in addresses:
                    ip = parse_ip(address)
                    why = self._refusal(ip) if ip is not None else f"unusable address {address!r}"
                    if why is not None:
                        raise _Failure("refused_address", f"{target.netloc} resolves to {why}")
            self._resolved[host] = (time.monotonic() + _ADDRESS_CACHE_SECONDS, addresses)
            if len(self._resolved) > 4096:
                now = time.monotonic()
                self._resolved = {h: v for h, v in self._resolved.items() if v[0] > now}
        self._backend.pin(host, addresses)

    @staticmethod
    def _refusal(ip: IPAddress) -> str | None:
        """Why `ip` is refused (None: public). A method so tests can widen it to their own
        loopback range."""
        return refusal(ip)

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
                headers = {k.lower(): v for k, v in resp.headers.items()}
                body = b""
                if 200 <= resp.status_code < 300:
                    # Only a success body is ever read: an error page cannot hold us.
                    body = await self._read_body(resp, headers)
                return _Response(resp.status_code, body, url, headers)
        except httpx.TimeoutException as exc:
            raise _Failure("timeout", f"{url}: timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            reason = "tls_error" if _is_tls_failure(exc) else "connection_error"
            raise _Failure(reason, f"{url}: {exc or type(exc).__name__}") from exc
        except httpx.InvalidURL as exc:
            raise _Failure("http_error", f"{url}: {exc}") from exc

    @staticmethod
    async def _read_body(resp: httpx.Response, headers: Mapping[str, str]) -> bytes:
        declared = headers.get("content-length", "").strip()
        if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise _Failure("invalid_response", f"Content-Length {declared} over {MAX_BODY_BYTES}")
        decoder = _BodyDecoder(headers.get("content-encoding", ""), MAX_BODY_BYTES)
        async for chunk in resp.aiter_raw():
            decoder.feed(chunk)
        return decoder.finish()


@dataclass(frozen=True)
class _Target:
    netloc: str  # as written in the URL: the `server` label and the pacer's key
    host: str  # as httpx connects to it: lower-case A-label or IP literal, no brackets
    port: int


Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _netloc(url: str) -> str:
    try:
        return urlsplit(url).netloc
    except ValueError:
        return url[:100]
