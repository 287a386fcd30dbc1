"""WHOIS (RFC 3912, port 43) for registries without RDAP: a polite transport and a parser.

Transport. One query is one TCP connection: send the query line, read until the server closes.
`whois.timeout` is one deadline over all of it (name resolution, connect, send, the whole answer),
so a server that drips a byte a second fails in time; the answer is capped at MAX_RESPONSE_BYTES.
Every server has a `HostPacer` (`whois.requests_per_second`, one query in flight: registries
count concurrent connections per client and ban for hours), and the addresses a server name
resolves to are checked like RDAP's (`exporter.addresses`) unless `whois.allow_private_addresses`.
`WhoisClient.lookup` never raises for network or protocol trouble: it returns a `WhoisLookup`
whose `error` is one of REASONS.

Parsing. None of the maintained libraries we evaluated (python-whois, asyncwhois, whoisdomain;
see exporter/data/CCTLDS.md) read the registries this fallback exists for correctly (.jp in
either language, co.jp's "Connected (date)", block-style .eu/.ch/.it name servers, a .de "free"
or .it "AVAILABLE" as not-found), so the parser is ours: registry answers are "key: value"
lines (ICANN style, DENIC, CNNIC, RIPN, NIC.br, KISA's "key : value"), JPRS's "[key] value",
or blocks ("Name servers:" then one value per line) -- read generically, with field names
from one alias table. A not-found answer is recognised per registry wording; anything that is
neither a record nor a not-found (a rate-limit notice, a banner only) is `invalid_response`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from exporter.addresses import parse_ip, refusal
from exporter.cctlds import Registry, RegistryTable, builtin_table
from exporter.config import WhoisSettings, split_host_port
from exporter.names import InvalidName, normalise_host, to_alabel
from exporter.pacing import HostPacer, HostPaused
from exporter.registration import Registration, normalise_status

log = logging.getLogger(__name__)

WHOIS_PORT = 43
# The largest real answer we hold is ~3 KiB (a .me record with its terms of use); 256 KiB bounds
# what a hostile or broken server can make us hold and parse.
MAX_RESPONSE_BYTES = 256 * 1024
# Registries count open connections per client; one at a time per server is what they all allow.
MAX_IN_FLIGHT = 1

REASONS = (
    "timeout",
    "rate_limited",
    "invalid_response",
    "connection_error",
    "refused_address",
)


class WhoisParseError(ValueError):
    """The answer is neither a registration record nor a not-found."""


@dataclass(frozen=True)
class WhoisServer:
    host: str  # lower-case A-label or IP literal
    port: int = WHOIS_PORT
    query: str = "{domain}"  # the registry's query syntax, e.g. "{domain}/e" at JPRS
    tz: timezone = UTC  # the zone of the registry's times without one (JST at JPRS)
    registry: Registry | None = None  # the table's row, when the server came from it

    @property
    def label(self) -> str:
        """host, or host:port when not 43 (brackets around IPv6 literals)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == WHOIS_PORT else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """What `domain_info{rdap_server}` and `check` show for a WHOIS source."""
        return "whois://" + self.label


@dataclass(frozen=True)
class WhoisLookup:
    domain: str
    server: WhoisServer | None = None
    registered: bool | None = None  # None when unknown (the lookup failed)
    registration: Registration | None = None
    error: str | None = None  # one of REASONS, None on success
    detail: str = ""  # for logs and `check`

    @property
    def success(self) -> bool:
        return self.error is None


class _Failure(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        detail = detail if len(detail) <= 300 else detail[:300] + "..."
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def parse_server(text: str) -> tuple[str, int]:
    """'whois.jprs.jp', 'whois.example:4343', '127.0.0.1:43', '[::1]:43' -> (host, port).
    Raises ValueError with a readable message."""
    value = text.strip()
    host, port = split_host_port(value, WHOIS_PORT)
    if not 0 < port < 65536:
        raise ValueError(f"{value[:80]!r} has an invalid port")
    ip = parse_ip(host)
    if ip is not None:
        return str(ip), port
    try:
        name = to_alabel(host)
    except InvalidName:
        raise ValueError(f"{value[:80]!r} is not a 'host' or 'host:port'") from None
    if "." not in name:
        raise ValueError(f"{value[:80]!r} is not a fully qualified host name")
    return name, port


class WhoisClient:
    def __init__(
        self,
        settings: WhoisSettings,
        limiter: asyncio.Semaphore | None = None,
        resolve: Resolver | None = None,
        table: RegistryTable | None = None,
    ) -> None:
        self.settings = settings
        self.table = table or builtin_table()
        self._limiter = limiter or asyncio.Semaphore(64)
        self._resolve = resolve or _getaddrinfo
        self._pacers: dict[tuple[str, int], HostPacer] = {}
        # The lowest published limit of any registry seen on a server (one host may answer
        # for several TLDs): the pace of that server never exceeds it.
        self._limits: dict[tuple[str, int], float] = {}

    def reconfigure(self, settings: WhoisSettings) -> None:
        self.settings = settings
        for key, pacer in self._pacers.items():
            pacer.configure(self._rate(self._limits.get(key)), MAX_IN_FLIGHT)

    def _rate(self, limit: float | None) -> float:
        """whois.requests_per_second, never faster than the operator's published limit."""
        rate = self.settings.requests_per_second
        return min(rate, limit) if limit else rate

    def server_for(self, domain: str) -> WhoisServer | None:
        """The WHOIS server for `domain`: `whois.servers` (longest suffix) wins over the table.
        A configured host keeps the table's query syntax for that TLD (the syntax belongs to
        the registry, whoever answers)."""
        registry = self.table.lookup(domain)
        labels = domain.split(".")
        for i in range(1, len(labels)):
            configured = self.settings.servers.get(".".join(labels[i:]))
            if configured:
                host, port = parse_server(configured)
                return _server(host, port, registry)
        if registry is not None and registry.whois:
            host, port = parse_server(registry.whois)
            return _server(host, port, registry)
        return None

    def _pacer(self, server: WhoisServer) -> HostPacer:
        key = (server.host, server.port)
        limit = server.registry.requests_per_second if server.registry else None
        known = self._limits.get(key)
        if limit and (known is None or limit < known):
            self._limits[key] = limit
        pacer = self._pacers.get(key)
        if pacer is None:
            pacer = self._pacers[key] = HostPacer(self._rate(self._limits.get(key)), MAX_IN_FLIGHT)
        elif limit and (known is None or limit < known):
            pacer.configure(self._rate(limit), MAX_IN_FLIGHT)
        return pacer

    async def lookup(self, domain: str, server: WhoisServer | None = None) -> WhoisLookup:
        server = server or self.server_for(domain)
        if server is None:
            return WhoisLookup(domain, error="connection_error", detail="no WHOIS server known")
        try:
            raw = await self._query(server, server.query.format(domain=domain))
        except _Failure as exc:
            return WhoisLookup(domain, server=server, error=exc.reason, detail=exc.detail)
        text = decode(raw)
        try:
            registered, registration = parse_response(domain, text, server.tz)
        except WhoisParseError as exc:
            reason = "rate_limited" if is_rate_limit_notice(text) else "invalid_response"
            if reason == "rate_limited":
                paused = self._pacer(server).rate_limited(None)
                log.warning(
                    "WHOIS server rate-limited us: server=%s paused_for=%.0fs", server.label, paused
                )
            return WhoisLookup(domain, server=server, error=reason, detail=str(exc))
        return WhoisLookup(domain, server, registered=registered, registration=registration)

    async def _query(self, server: WhoisServer, query: str) -> bytes:
        """One exchange. Waiting for the pacer or the global limiter is not network time; the
        deadline starts when the query may go."""
        pacer = self._pacer(server)
        try:
            async with pacer.slot(max_pause=self.settings.timeout), self._limiter:
                try:
                    async with asyncio.timeout(self.settings.timeout):
                        data = await self._exchange(server, query)
                except TimeoutError:
                    pacer.failed()
                    raise _Failure(
                        "timeout",
                        f"{server.label}: no complete answer within {self.settings.timeout:g}s",
                    ) from None
                except _Failure as exc:
                    if exc.reason == "connection_error":
                        pacer.failed()
                    raise
        except HostPaused as exc:
            raise _Failure(
                "rate_limited", f"{server.label} is paused for another {exc.seconds:.0f}s"
            ) from None
        pacer.succeeded()
        return data

    async def _exchange(self, server: WhoisServer, query: str) -> bytes:
        addresses = await self._addresses(server)
        last: OSError | None = None
        for address in addresses:
            try:
                reader, writer = await asyncio.open_connection(address, server.port)
            except OSError as exc:
                last = exc
                continue
            try:
                writer.write(query.encode("utf-8") + b"\r\n")
                await writer.drain()
                return await _read_all(reader, server)
            except (ConnectionError, OSError) as exc:
                raise _Failure("connection_error", f"{server.label}: {exc}") from exc
            finally:
                writer.close()
        raise _Failure("connection_error", f"{server.label}: cannot connect: {last}")

    async def _addresses(self, server: WhoisServer) -> tuple[str, ...]:
        literal = parse_ip(server.host)
        if literal is not None:
            addresses: tuple[str, ...] = (str(literal),)
        else:
            try:
                addresses = tuple(dict.fromkeys(await self._resolve(server.host, server.port)))
            except OSError as exc:
                raise _Failure("connection_error", f"cannot resolve {server.host}: {exc}") from exc
            if not addresses:
                raise _Failure("connection_error", f"{server.host} has no address")
        if not self.settings.allow_private_addresses:
            for address in addresses:
                ip = parse_ip(address)
                why = refusal(ip) if ip is not None else f"unusable address {address!r}"
                if why:
                    # A private address is a misconfiguration or a poisoned resolver, never a
                    # registry: refuse rather than probe whatever answers there.
                    raise _Failure("refused_address", f"{server.host}: {why}")
        return addresses


async def _read_all(reader: asyncio.StreamReader, server: WhoisServer) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise _Failure(
                "invalid_response", f"{server.label}: answer larger than {MAX_RESPONSE_BYTES} bytes"
            )
        chunks.append(chunk)
    if not chunks:
        raise _Failure("connection_error", f"{server.label}: closed without an answer")
    return b"".join(chunks)


def _server(host: str, port: int, registry: Registry | None) -> WhoisServer:
    if registry is None:
        return WhoisServer(host, port)
    return WhoisServer(host, port, query=registry.whois_query, tz=registry.tz, registry=registry)


def decode(raw: bytes) -> str:
    """UTF-8 (what JPRS, KISA, CNNIC and DENIC with -C UTF-8 send); else Latin-1, which never
    fails: a field name is ASCII either way."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# --- parsing ------------------------------------------------------------------------------

# Lower-case field names -> what they are. Registries name the same fact many ways.
_EXPIRY = frozenset(
    {
        "registry expiry date",
        "expiration date",
        "expiration time",
        "expiry date",
        "expire date",
        "expires on",
        "expires",
        "expiry",
        "paid-till",
        "valid until",
        "renewal date",
        "有効期限",
    }
)
_REGISTRAR_EXPIRY = frozenset({"registrar registration expiration date"})
_STATUS = frozenset({"domain status", "status", "state", "状態", "lock status", "ロック状態"})
_REGISTRAR = frozenset({"registrar", "sponsoring registrar", "authorized agency"})
_REGISTRAR_ID = frozenset({"registrar iana id", "sponsoring registrar iana id"})
_NAMESERVER = frozenset({"name server", "name servers", "nameserver", "nameservers", "nserver"})
_NAME = frozenset({"domain name", "domain", "domainname"})
# In a "Registrar" block the organisation is the name; "Name" is a handle at .it.
_REGISTRAR_BLOCK_KEYS = ("organization", "organisation", "name")

_BRACKET = re.compile(r"^(?:[a-z]\.\s*)?\[([^\]]+)\]\s*(.*)$")  # JPRS: "p. [Name Server]  ns1"
_KEY_VALUE = re.compile(r"^([^:\[\]]{1,60}?)\s*:\s*(.*)$")
_NS_NUMBERED = re.compile(r"^ns\s*\d+$")  # the old .io "NS 1   : ns1.example.net"

# Whole lines (lower case, comment marks stripped) that mean "no such domain", per registry.
_NOT_FOUND_PREFIXES = (
    "no match",  # JPRS "No match!!", NIC.br '% No match for domain "..."', ICANN "No match for"
    "no entries found",  # RIPN
    "no matching record",  # CNNIC
    "no data found",
    "not found",
    "domain not found",
    "the queried object does not exist",
    "we do not have an entry in our database",  # SWITCH
    "above domain name is not registered",  # KISA
    "no object found",
    "object does not exist",
)
_FREE_STATUSES = frozenset({"free", "available", "avail"})  # DENIC, .it/.eu "AVAILABLE"
_RATE_LIMIT = re.compile(
    r"limit exceeded|exceeded the|too many|query limit|rate limit|quota|try again later|"
    r"access control limit|slow down|temporarily denied|requests of this client are not permitted",
    re.IGNORECASE,
)
_DATE_FORMATS = (
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%Y. %m. %d.",  # KISA
    "%Y%m%d",  # NIC.br
    "%d.%m.%Y",
    "%d-%b-%Y",
    "%Y-%m-%d %H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
)


@dataclass
class _Fields:
    single: dict[str, str] = field(default_factory=dict)  # first value of each key
    many: dict[str, list[str]] = field(default_factory=dict)  # every value, in order
    blocks: dict[str, list[str]] = field(default_factory=dict)  # "Key:" then lines

    def add(self, key: str, value: str) -> None:
        if not value:
            return
        self.single.setdefault(key, value)
        self.many.setdefault(key, []).append(value)


def _clean_lines(text: str) -> list[str]:
    # Cap the work on a hostile answer: a record is a few hundred lines.
    return [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")][
        :5000
    ]


def _collect(lines: list[str]) -> _Fields:
    """Every field of the answer. A "Key:" with nothing after it, or a heading without a colon
    (.it "Nameservers"), opens a block that a blank line closes: its plain lines are values
    (name servers, .ch's domain name), its indented "Sub: value" lines are `block.sub` fields
    (.it/.eu "Registrar" -> "Organization:", .kr "Primary Name Server" -> "Host Name :")."""
    out = _Fields()
    block: str | None = None
    for raw in lines:
        line = raw.replace("\t", "    ")
        stripped = line.strip()
        if not stripped:
            block = None
            continue
        if stripped.startswith(("%", "#", ">>>", "*")):
            continue
        bracket = _BRACKET.match(stripped)
        if bracket:  # JPRS; also its "[ banner ]" lines, which no alias names
            out.add(bracket.group(1).strip().lower(), bracket.group(2).strip())
            block = None
            continue
        kv = _KEY_VALUE.match(stripped)
        if block is not None:
            if block in _NAMESERVER_BLOCKS:
                # A value line, colons and all: "ns1.eurid.eu (2001:67c:9c:3937::252)".
                out.blocks.setdefault(block, []).append(stripped)
                continue
            if kv is None:
                out.blocks.setdefault(block, []).append(stripped)
                continue
            if line[:1] == " ":
                out.blocks.setdefault(f"{block}.{kv.group(1).strip().lower()}", []).append(
                    kv.group(2).strip()
                )
                continue
            block = None  # a new top-level "Key: value"
        if kv is None:
            block = stripped.lower()
            continue
        key, value = kv.group(1).strip().lower(), kv.group(2).strip()
        if value:
            out.add(key, value)
        else:
            block = key
    return out


_NAMESERVER_BLOCKS = frozenset({"name servers", "nameservers", "name server"})


def _not_found(lines: list[str], fields: _Fields) -> bool:
    for line in lines:
        s = line.strip().lstrip("%#").strip().lower()
        if s and any(s.startswith(p) for p in _NOT_FOUND_PREFIXES):
            return True
    status = fields.single.get("status", "").strip().lower()
    return status in _FREE_STATUSES


def is_rate_limit_notice(text: str) -> bool:
    return bool(_RATE_LIMIT.search(text[:4096]))


def parse_date(raw: str, tz: timezone = UTC) -> datetime | None:
    """A registry date in any of the forms seen, as aware UTC; None when unreadable.
    A time without a zone is in the registry's zone (`tz`); a bare date is midnight there."""
    text = raw.strip()
    text = re.sub(r"\s*\((?:JST|UTC|GMT)\)$", "", text)  # JPRS "2025/06/01 01:05:04 (JST)"
    if not text or len(text) > 40:
        return None
    value = _read_date(text)
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _read_date(text: str) -> datetime | None:
    iso = text[:-1] + "+00:00" if text.endswith("Z") else text
    try:
        return datetime.fromisoformat(iso)
    except ValueError:
        pass
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _statuses(values: list[str]) -> tuple[list[str], datetime | None]:
    """Registry status values -> RFC 8056-style names, plus a date some print with one (JPRS
    "Connected (2025/09/30)": the end of the current registration period for co.jp & co)."""
    out: list[str] = []
    dated: datetime | None = None
    for value in values:
        m = re.match(r"^(.*?)\s*\((\d{4}/\d{2}/\d{2})\)\s*$", value)
        if m:
            value = m.group(1)
            dated = dated or parse_date(m.group(2), _JST)
        for part in re.split(r",|\s/\s", value):
            part = part.strip()
            if part:
                out.append(normalise_status(part))
    return out, dated


_JST = timezone(timedelta(hours=9))


def _nameserver(value: str) -> str | None:
    # "ns1.yandex.ru. 213.180.193.1, 2a02:6b8::1", "ns1.eurid.eu (185.36.4.252)"
    token = value.replace(",", " ").split()
    return normalise_host(token[0]) if token else None


def parse_response(domain: str, text: str, tz: timezone = UTC) -> tuple[bool, Registration | None]:
    """One WHOIS answer for `domain` -> (registered, registration). (False, None) is a
    registry not-found. Raises WhoisParseError for anything else that is not a record of
    this domain (empty, a notice, a record of another name)."""
    lines = _clean_lines(text)
    fields = _collect(lines)
    if _not_found(lines, fields):
        return False, None
    want = normalise_host(domain)
    names = [*fields.many.get("domain name", []), *fields.many.get("domain", [])]
    names += fields.blocks.get("domain name", [])[:1]
    claimed = [n for n in (normalise_host(v.split()[0]) for v in names if v.split()) if n]
    if claimed and want not in claimed:
        raise WhoisParseError(f"answer is for {claimed[0][:80]!r}, not {domain}")

    warnings: list[str] = []
    expiry = _first_date(fields, _EXPIRY, tz, warnings)
    registrar_expiry = _first_date(fields, _REGISTRAR_EXPIRY, tz, warnings)
    status_values = [v for k in _STATUS for v in fields.many.get(k, [])]
    statuses, dated = _statuses(status_values)
    if expiry is None and dated is not None:
        expiry = dated
    nameservers: set[str] = set()
    for key in _NAMESERVER:
        for value in fields.many.get(key, []) + fields.blocks.get(key, []):
            host = _nameserver(value)
            if host:
                nameservers.add(host)
    for key, values in fields.many.items():
        if _NS_NUMBERED.match(key):
            nameservers.update(h for h in (_nameserver(v) for v in values) if h)
    for key, values in fields.blocks.items():
        if key.endswith(".host name"):  # KISA "Primary Name Server" / "Host Name : ns1..."
            nameservers.update(h for h in (_nameserver(v) for v in values) if h)
    registrar = next((fields.single[k] for k in _REGISTRAR if k in fields.single), None)
    if registrar is None:
        registrar = next(
            (
                fields.blocks["registrar." + k][0]
                for k in _REGISTRAR_BLOCK_KEYS
                if fields.blocks.get("registrar." + k)
            ),
            None,
        )
    iana_id = next((fields.single[k] for k in _REGISTRAR_ID if k in fields.single), None)
    if not (claimed or expiry or statuses or nameservers or registrar):
        raise WhoisParseError("no registration record in the answer")
    return True, Registration(
        name=want or domain,
        expiry=expiry,
        registrar_expiry=registrar_expiry,
        statuses=tuple(sorted(set(statuses))),
        nameservers=tuple(sorted(nameservers)) if nameservers else None,
        registrar=registrar[:200] if registrar else None,
        registrar_iana_id=iana_id if iana_id and iana_id.isdigit() else None,
        warnings=tuple(warnings),
    )


def _first_date(
    fields: _Fields, keys: frozenset[str], tz: timezone, warnings: list[str]
) -> datetime | None:
    for key in sorted(keys):
        raw = fields.single.get(key)
        if raw is None:
            continue
        value = parse_date(raw, tz)
        if value is None:
            warnings.append(f"{key}: unreadable date {raw[:40]!r}")
            continue
        return value
    return None
