"""The YAML configuration: frozen dataclasses, defaults in one place, strict validation.

`load_config(path)` either returns a complete `Config` or raises `ConfigError` listing *every*
problem, each prefixed with its key path (`domains[3].name: ...`), so that one `--config.check`
run shows the user everything to fix.
"""

from __future__ import annotations

import ipaddress
import math
import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from exporter import yamlload
from exporter.gcpause import gc_paused
from exporter.names import InvalidName, to_alabel

DEFAULT_BOOTSTRAP = "https://data.iana.org/rdap/dns.json"

# Labels our own metrics use; a per-domain `labels:` entry may not shadow them.
RESERVED_LABELS = frozenset(
    {
        "domain",
        "check",
        "status",
        "source",
        "nameserver",
        "nameserver_domain",
        # domain_nameserver_info's per-source labels
        "expected",
        "registry",
        "parent",
        "child",
        "previous",
        "role",
        "reason",
        "registrar",
        "registrar_iana_id",
        "rdap_server",
        "server",
        "outcome",
        "version",
        "job",
        "instance",
    }
)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
# A config file is a few MB even for 100k domains; the cap bounds what a wrong path
# (/dev/zero, a log file) can cost.
MAX_CONFIG_BYTES = 64 * 1024 * 1024
# Longer than any duration anyone means; keeps timers far from OverflowError.
MAX_DURATION = 3650 * 86400.0
MAX_ERRORS = 100
_MAX_NAME_CHARS = 1000  # DNS names are <= 253; a cheap bound before IDNA work
# WHATWG URL "ends in a number": such a host is parsed as IPv4 (127.1, 0x7f.1), never as a name.
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9a-fA-F]*)$")
_DIGITS = frozenset("0123456789")  # ASCII only: what ipaddress and _NUMERIC_LABEL accept

# Values are echoed in error messages; a 10 MB string or a huge nested list must not be.
_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlong = 40
_repr.maxlevel = 2
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 4


def _show(value: object) -> str:
    """repr() bounded in size and effort, for error messages."""
    return _repr.repr(value)


class ConfigError(Exception):
    """One or more problems in a config file; `errors` holds 'path: message' lines."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class RdapSettings:
    bootstrap: str = DEFAULT_BOOTSTRAP
    servers: Mapping[str, str] = field(default_factory=dict)
    ca_file: str | None = None
    interval: float = 6 * 3600
    timeout: float = 15.0
    requests_per_second: float = 1.0
    follow_registrar: bool = True
    allow_private_addresses: bool = False
    # Extensions beyond interface.md:
    max_in_flight_per_server: int = 2
    allow_http: bool = False
    hold_interval: float = 15 * 60


@dataclass(frozen=True)
class WhoisSettings:
    """WHOIS (port 43) for TLDs without RDAP (exporter/whois.py)."""

    servers: Mapping[str, str] = field(default_factory=dict)  # TLD/suffix -> "host[:port]"
    timeout: float = 10.0  # one deadline per query: connect, send, the whole answer
    requests_per_second: float = 0.5  # per WHOIS server; registries ban eager clients
    allow_private_addresses: bool = False


@dataclass(frozen=True)
class DnsSettings:
    resolvers: tuple[str, ...] = ()
    root_servers: tuple[str, ...] = ()
    interval: float = 5 * 60
    timeout: float = 3.0
    # How often the DNSSEC check (DS, signatures, glue, SOA serials) runs: its questions cost
    # the parent and the child about twice a delegation check, and signatures live for days.
    dnssec_interval: float = 15 * 60


@dataclass(frozen=True)
class EmailSettings:
    interval: float = 3600.0
    smtp_probe: bool = False
    # Extensions beyond interface.md:
    smtp_port: int = 25
    smtp_timeout: float = 10.0
    smtp_helo: str = "domainwatch.invalid"
    smtp_interval: float = 86400.0
    allow_private_addresses: bool = False


@dataclass(frozen=True)
class ProbeSettings:
    """`/probe?target=NAME` (domain_exporter's interface). A listed domain always answers from
    its cached results; an unlisted one only when `allow_unlisted` is set."""

    allow_unlisted: bool = False
    max_unlisted: int = 100  # probe-only domains watched at once; more is HTTP 429
    idle_timeout: float = 86400.0  # a probe-only domain not probed this long is dropped
    max_wait: float = 10.0  # a probe without results waits this long at most for the first


@dataclass(frozen=True)
class Contact:
    role: str
    email: str

    def __repr__(self) -> str:  # never print the address by accident
        return f"Contact(role={self.role!r}, email=<redacted>)"


@dataclass(frozen=True)
class DomainConfig:
    name: str  # A-label, lower case, no trailing dot
    nameservers: tuple[str, ...] = ()  # normalised; empty = no expectation
    contacts: tuple[Contact, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    # Manual expiry (`expires: YYYY-MM-DD`, midnight UTC) for registries that publish none;
    # used only when no registry source gives a date.
    expires: datetime | None = None


@dataclass(frozen=True)
class Config:
    rdap: RdapSettings = field(default_factory=RdapSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    email: EmailSettings = field(default_factory=EmailSettings)
    whois: WhoisSettings = field(default_factory=WhoisSettings)
    domains: tuple[DomainConfig, ...] = ()
    concurrency: int = 32
    probe: ProbeSettings = field(default_factory=ProbeSettings)


def parse_duration(text: object) -> float:
    """'90s', '5m', '1h30m', '1d' -> seconds. Raises ValueError with a readable message."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"{_show(text)} is not a duration (use e.g. 90s, 5m, 6h, 1d)")
    if isinstance(text, int | float):
        raise ValueError(f"{_show(text)} has no unit (use e.g. {_show(text)}s)")
    s = text.strip()
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"{_show(text)} is not a duration (use e.g. 90s, 5m, 6h, 1d)")
    if not total <= MAX_DURATION:  # also catches inf from a 400-digit number
        raise ValueError(f"{_show(text)} is longer than {MAX_DURATION / 86400:.0f}d")
    return total


class _Reader:
    """Collects errors while reading one mapping, so every problem is reported at once."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        # What one parse already worked out (100k domains name the same few nameservers and
        # labels): normalised host names, and the nameserver tuples and label mappings of
        # domains read without error, shared by every domain that lists the same ones.
        self.hosts: dict[str, str] = {}
        self.shared: dict[object, Any] = {}

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def mapping(self, value: object, path: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping, got {_kind(value)}")
            return {}
        for key in value:
            if key not in allowed:
                self.error(_join(path, _key(key)), "unknown key")
        return {str(k): v for k, v in value.items() if k in allowed}

    def get(
        self,
        raw: dict[str, Any],
        key: str,
        path: str,
        default: Any,
        convert: Callable[[Any], Any],
    ) -> Any:
        if key not in raw:
            return default
        try:
            return convert(raw[key])
        except ValueError as exc:
            self.error(_join(path, key), str(exc))
            return default


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_PLAIN_KEY = re.compile(r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029'\"]{1,80}$")


def _key(key: object) -> str:
    """A mapping key as it appears in an error path: as typed when plain, else quoted (one line,
    bounded)."""
    return key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else _show(key)


_TOP = "(top level)"


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {_show(value)}")
    return value


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{_show(value)} must be longer than zero")
    return seconds


def _positive_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        # `not > 0` rather than `<= 0`: NaN compares false both ways.
        raise ValueError(f"must be a number greater than zero, got {_show(value)}")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number greater than zero, got {_show(value)}")
    return float(value)


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a whole number greater than zero, got {_show(value)}")
    return value


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"must be a port number 1-65535, got {_show(value)}")
    return value


def _string(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, got {_show(value)}")
    return value


def _optional_file(value: object) -> str | None:
    if value is None:
        return None
    path = _string(value)
    if not _is_file(path):
        raise ValueError(f"file {_show(path)} does not exist")
    return path


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):  # name too long, NUL byte
        return False


def _url_or_file(value: object) -> str:
    text = _string(value)
    if text.startswith(("https://", "http://")):
        return text
    if not _is_file(text):
        raise ValueError(f"{_show(text)} is neither an http(s) URL nor an existing file")
    return text


def _server_address(value: object) -> str:
    text = _string(value).strip()
    host, port = split_host_port(text, 53)
    try:
        # An IP, not a name: resolving the resolver would need a resolver.
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{_show(text)} is not an 'ip' or 'ip:port' address") from None
    if not 0 < port < 65536:
        raise ValueError(f"{_show(text)} has an invalid port")
    return text


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """'1.2.3.4', '1.2.3.4:5353', '[::1]:53', '::1' -> (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if len(port) > 5:  # int() of a 5,000-digit string raises; no port is that long
        return host, -1
    try:
        return host, int(port) if port else default_port
    except ValueError:
        return host, -1


def _string_list(
    r: _Reader, value: object, path: str, item: Callable[[Any], str]
) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        r.error(path, f"must be a list, got {_kind(value)}")
        return ()
    out: list[str] = []
    for i, v in enumerate(value):
        try:
            out.append(item(v))
        except ValueError as exc:
            r.error(f"{path}[{i}]", str(exc))
    return tuple(out)


def _hostname(value: object) -> str:
    if not isinstance(value, str) or len(value) > _MAX_NAME_CHARS:
        raise ValueError(f"{_show(value)} is not a host name")
    if is_ip_literal(value):
        raise ValueError(f"{_show(value)} is an IP address, not a host name")
    try:
        return to_alabel(value)
    except InvalidName:
        raise ValueError(f"{_show(value)} is not a host name") from None


def is_ip_literal(text: str) -> bool:
    """True for what a resolver or URL parser would take as an address, not a name:
    '192.0.2.1', '::1', '[2001:db8::1]', 'fe80::1%eth0', and WHATWG's IPv4 forms whose last
    label is a number ('127.1', '0x7f.0.0.1')."""
    t = text.strip().rstrip(".")
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    # Names answer here, cheaply: without a ':' only a dotted quad (its last character a digit)
    # or a WHATWG number (its last label's first character a digit) is an address.
    if (
        ":" not in t
        and t.partition("%")[0][-1:] not in _DIGITS
        and t[t.rfind(".") + 1 :][:1] not in _DIGITS
    ):
        return False
    try:
        ipaddress.ip_address(t.split("%", 1)[0])
        return True
    except ValueError:
        pass
    return bool(_NUMERIC_LABEL.match(t.rsplit(".", 1)[-1])) and "." in t


def _server_map(
    r: _Reader, raw: dict[str, Any], section: str, parse: Callable[[object], str]
) -> dict[str, str]:
    """`<section>.servers`: TLD or suffix (a leading dot allowed) -> server, each value checked
    by `parse` (which raises ValueError with the message to show)."""
    raw_value = raw.get("servers")
    raw_servers = r.mapping(
        raw_value, f"{section}.servers", set(raw_value) if isinstance(raw_value, dict) else set()
    )
    servers: dict[str, str] = {}
    for tld, server in raw_servers.items():
        path = f"{section}.servers.{_key(tld)}"
        key = _suffix_key(r, tld, path)
        if key is None:
            continue
        try:
            servers[key] = parse(server)
        except ValueError as exc:
            r.error(path, str(exc))
    return servers


def _rdap_url(value: object) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise ValueError(f"{_show(value)} is not an http(s) URL")
    return value


def _read_rdap(r: _Reader, value: object) -> RdapSettings:
    d = RdapSettings()
    raw = r.mapping(value, "rdap", set(RdapSettings.__dataclass_fields__))
    servers = _server_map(r, raw, "rdap", _rdap_url)
    return RdapSettings(
        bootstrap=r.get(raw, "bootstrap", "rdap", d.bootstrap, _url_or_file),
        servers=servers,
        ca_file=r.get(raw, "ca_file", "rdap", d.ca_file, _optional_file),
        interval=r.get(raw, "interval", "rdap", d.interval, _positive_duration),
        timeout=r.get(raw, "timeout", "rdap", d.timeout, _positive_duration),
        requests_per_second=r.get(
            raw, "requests_per_second", "rdap", d.requests_per_second, _positive_number
        ),
        follow_registrar=r.get(raw, "follow_registrar", "rdap", d.follow_registrar, _bool),
        allow_private_addresses=r.get(
            raw, "allow_private_addresses", "rdap", d.allow_private_addresses, _bool
        ),
        max_in_flight_per_server=r.get(
            raw, "max_in_flight_per_server", "rdap", d.max_in_flight_per_server, _positive_int
        ),
        allow_http=r.get(raw, "allow_http", "rdap", d.allow_http, _bool),
        hold_interval=r.get(raw, "hold_interval", "rdap", d.hold_interval, _positive_duration),
    )


def _suffix_key(r: _Reader, tld: str, path: str) -> str | None:
    """A TLD or suffix key of rdap.servers / whois.servers: ".de" and "de" are the same key
    (the README once wrote ".de"), stored as the A-label without dots at either end."""
    try:
        if len(tld) > _MAX_NAME_CHARS:
            raise InvalidName(tld)
        return to_alabel(tld[1:] if tld.startswith(".") else tld)
    except InvalidName:
        r.error(path, f"{_show(tld)} is not a TLD or suffix")
        return None


def _whois_server(value: object) -> str:
    """'host' or 'host:port' (IPv6 literal in brackets); a name or an IP literal."""
    text = _string(value).strip()
    host, port = split_host_port(text, 43)
    if not 0 < port < 65536:
        raise ValueError(f"{_show(text)} has an invalid port")
    if host.startswith("[") or ":" in host or is_ip_literal(host):
        try:
            ipaddress.ip_address(host.strip("[]"))
            return text
        except ValueError:
            raise ValueError(f"{_show(text)} is not a 'host' or 'host:port'") from None
    try:
        name = to_alabel(host)
    except InvalidName:
        raise ValueError(f"{_show(text)} is not a 'host' or 'host:port'") from None
    if "." not in name:
        raise ValueError(f"{_show(text)} is not a fully qualified host name")
    return text


def _read_whois(r: _Reader, value: object) -> WhoisSettings:
    d = WhoisSettings()
    raw = r.mapping(value, "whois", set(WhoisSettings.__dataclass_fields__))
    servers = _server_map(r, raw, "whois", _whois_server)
    return WhoisSettings(
        servers=servers,
        timeout=r.get(raw, "timeout", "whois", d.timeout, _positive_duration),
        requests_per_second=r.get(
            raw, "requests_per_second", "whois", d.requests_per_second, _positive_number
        ),
        allow_private_addresses=r.get(
            raw, "allow_private_addresses", "whois", d.allow_private_addresses, _bool
        ),
    )


def _expiry_date(value: object) -> datetime | None:
    """`expires: 2027-03-31` (YAML may hand us a date object or a string) -> midnight UTC;
    `expires: null` (the example config's default) is no manual expiry."""
    if value is None:
        return None
    text = value
    if isinstance(value, date) and not isinstance(value, datetime):
        text = value.isoformat()
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
        raise ValueError(f"{_show(value)} is not a date (use YYYY-MM-DD, e.g. 2027-03-31)")
    try:
        return datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{_show(value)} is not a valid date") from None


def _read_dns(r: _Reader, value: object) -> DnsSettings:
    d = DnsSettings()
    raw = r.mapping(value, "dns", set(DnsSettings.__dataclass_fields__))
    return DnsSettings(
        resolvers=_string_list(r, raw.get("resolvers"), "dns.resolvers", _server_address),
        root_servers=_string_list(r, raw.get("root_servers"), "dns.root_servers", _server_address),
        interval=r.get(raw, "interval", "dns", d.interval, _positive_duration),
        timeout=r.get(raw, "timeout", "dns", d.timeout, _positive_duration),
        dnssec_interval=r.get(
            raw, "dnssec_interval", "dns", d.dnssec_interval, _positive_duration
        ),
    )


def _read_email(r: _Reader, value: object) -> EmailSettings:
    d = EmailSettings()
    raw = r.mapping(value, "email", set(EmailSettings.__dataclass_fields__))
    return EmailSettings(
        interval=r.get(raw, "interval", "email", d.interval, _positive_duration),
        smtp_probe=r.get(raw, "smtp_probe", "email", d.smtp_probe, _bool),
        smtp_port=r.get(raw, "smtp_port", "email", d.smtp_port, _port),
        smtp_timeout=r.get(raw, "smtp_timeout", "email", d.smtp_timeout, _positive_duration),
        smtp_helo=r.get(raw, "smtp_helo", "email", d.smtp_helo, _hostname),
        smtp_interval=r.get(raw, "smtp_interval", "email", d.smtp_interval, _positive_duration),
        allow_private_addresses=r.get(
            raw, "allow_private_addresses", "email", d.allow_private_addresses, _bool
        ),
    )


MAX_UNLISTED = 10_000  # every probe-only domain is checked like a listed one
MAX_PROBE_WAIT = 60.0


def _probe_wait(value: object) -> float:
    seconds = parse_duration(value)  # "0s" is allowed: never wait, answer what is known
    if seconds > MAX_PROBE_WAIT:
        raise ValueError(f"{_show(value)} is longer than {MAX_PROBE_WAIT:.0f}s")
    return seconds


def _max_unlisted(value: object) -> int:
    count = _positive_int(value)
    if count > MAX_UNLISTED:
        raise ValueError(f"must be at most {MAX_UNLISTED}, got {_show(value)}")
    return count


def _read_probe(r: _Reader, value: object) -> ProbeSettings:
    d = ProbeSettings()
    raw = r.mapping(value, "probe", set(ProbeSettings.__dataclass_fields__))
    return ProbeSettings(
        allow_unlisted=r.get(raw, "allow_unlisted", "probe", d.allow_unlisted, _bool),
        max_unlisted=r.get(raw, "max_unlisted", "probe", d.max_unlisted, _max_unlisted),
        idle_timeout=r.get(raw, "idle_timeout", "probe", d.idle_timeout, _positive_duration),
        max_wait=r.get(raw, "max_wait", "probe", d.max_wait, _probe_wait),
    )


_DOMAIN_KEYS = {"name", "nameservers", "contacts", "labels", "expires"}


def _read_domain(r: _Reader, value: object, path: str) -> DomainConfig | None:
    if isinstance(value, str):  # shorthand: "- example.com"
        value = {"name": value}
    if not isinstance(value, dict):
        r.error(path, f"must be a domain name or a mapping with 'name', got {_kind(value)}")
        return None
    # Only known keys (the common case): the mapping itself, not the checked copy.
    raw = value if value.keys() <= _DOMAIN_KEYS else r.mapping(value, path, _DOMAIN_KEYS)
    if "name" not in raw:
        r.error(path, "missing required key 'name'")
        return None
    name_raw = raw["name"]
    if isinstance(name_raw, str) and is_ip_literal(name_raw):
        r.error(f"{path}.name", f"{_show(name_raw)} is an IP address, not a domain name")
        return None
    try:
        if not isinstance(name_raw, str) or len(name_raw) > _MAX_NAME_CHARS:
            raise InvalidName("")
        name = to_alabel(name_raw)
        if "." not in name:
            raise InvalidName(name_raw)
    except InvalidName:
        r.error(f"{path}.name", f"{_show(name_raw)} is not a domain name")
        return None
    if name is name_raw:
        # A string of its own (lower() of a lower-case name always copies): the document's
        # strings share memory pools with its lists, so keeping them would keep the freed
        # document from going back to the system (92 MB instead of 48 MB RSS at 100k domains).
        name = name_raw.lower()

    nameservers = _nameservers(r, raw.get("nameservers"), path)
    contacts: list[Contact] = []
    raw_contacts = raw.get("contacts")
    if raw_contacts is not None and not isinstance(raw_contacts, list):
        r.error(f"{path}.contacts", f"must be a list, got {_kind(raw_contacts)}")
        raw_contacts = []
    for i, c in enumerate(raw_contacts or []):
        cpath = f"{path}.contacts[{i}]"
        craw = r.mapping(c, cpath, {"role", "email"})
        role, email = craw.get("role"), craw.get("email")
        role_ok = isinstance(role, str) and bool(_LABEL_NAME.match(role)) and role[:2] != "__"
        email_ok = isinstance(email, str) and bool(_EMAIL.match(email.strip()))
        if not role_ok:
            r.error(f"{cpath}.role", f"{_show(role)} must be a word such as registrant, technical")
        if not email_ok:
            # Never echo the address back: config errors end up in logs.
            r.error(f"{cpath}.email", "missing or not an e-mail address")
        if role_ok and email_ok:
            assert isinstance(role, str) and isinstance(email, str)
            contacts.append(Contact(role=role.lower(), email=email.strip()))

    return DomainConfig(
        name=name,
        nameservers=nameservers,
        contacts=tuple(contacts),
        labels=_labels(r, raw.get("labels"), path),
        expires=r.get(raw, "expires", path, None, _expiry_date),
    )


def _nameservers(r: _Reader, value: object, path: str) -> tuple[str, ...]:
    """A domain's `nameservers:`, normalised, sorted, without repeats. A list read without error
    is remembered: every domain listing the same names gets the same tuple."""
    key: tuple[object, ...] | None = None
    if isinstance(value, list):
        try:
            key = ("nameservers", *value)
            found: tuple[str, ...] | None = r.shared.get(key)
        except TypeError:  # a list or mapping among the items: an error below
            key = found = None
        if found is not None:
            return found
    hosts = r.hosts

    def hostname(item: object) -> str:
        if not isinstance(item, str):
            return _hostname(item)
        host = hosts.get(item)
        if host is None:
            host = hosts[item] = _hostname(item)
        return host

    errors = len(r.errors)
    nameservers = tuple(sorted(set(_string_list(r, value, f"{path}.nameservers", hostname))))
    # Only all-string lists get here without an error, and only a string equals a string: a
    # list equal to this one yields the same tuple.
    if key is not None and len(r.errors) == errors:
        r.shared[key] = nameservers
    return nameservers


def _labels(r: _Reader, value: object, path: str) -> dict[str, str]:
    """A domain's `labels:`; like nameservers, equal label sets read without error (and with
    string values: 1 and 1.0 are equal keys, not equal labels) share one mapping."""
    if value is not None and not isinstance(value, dict):
        r.error(f"{path}.labels", f"must be a mapping, got {_kind(value)}")
        return {}
    items = value.items() if value is not None else ()
    try:
        key: tuple[object, ...] | None = ("labels", *items)
        found: dict[str, str] | None = r.shared.get(key)
    except TypeError:  # a list or mapping as a value: an error below
        key = found = None
    if found is not None:
        return found
    errors = len(r.errors)
    shareable = key is not None
    labels: dict[str, str] = {}
    for name, val in items:
        problem = _label_problem(name, val)
        if problem is not None:
            r.error(f"{path}.labels.{_key(name)}", problem)
        else:
            shareable = shareable and isinstance(val, str)
            labels[name] = str(val)
    if shareable and len(r.errors) == errors:
        r.shared[key] = labels
    return labels


def _label_problem(name: object, value: object) -> str | None:
    if not isinstance(name, str) or not _LABEL_NAME.match(name) or name.startswith("__"):
        return f"{_show(name)} is not a valid Prometheus label name"
    if name in RESERVED_LABELS:
        return f"{_show(name)} is reserved for domainwatch's own labels"
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return f"value must be a string, got {_kind(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"value must be a string or a finite number, got {_show(value)}"
    return None


def parse_config(document: object) -> Config:
    """Validate an already-parsed YAML document. Raises ConfigError with every problem."""
    errors: list[str] = []
    r = _Reader(errors)
    if document is not None and not isinstance(document, dict):
        raise ConfigError([f"{_TOP}: must be a mapping, got {_kind(document)}"])
    raw = r.mapping(
        document or {}, "", {"rdap", "whois", "dns", "email", "domains", "concurrency", "probe"}
    )
    rdap = _read_rdap(r, raw.get("rdap"))
    whois = _read_whois(r, raw.get("whois"))
    probe = _read_probe(r, raw.get("probe"))
    dns = _read_dns(r, raw.get("dns"))
    email = _read_email(r, raw.get("email"))
    concurrency = r.get(raw, "concurrency", "", Config.concurrency, _positive_int)
    domains: list[DomainConfig] = []
    seen: dict[str, int] = {}
    raw_domains = raw.get("domains")
    if raw_domains is not None and not isinstance(raw_domains, list):
        r.error("domains", f"must be a list, got {_kind(raw_domains)}")
        raw_domains = []
    for i, item in enumerate(raw_domains or []):
        dom = _read_domain(r, item, f"domains[{i}]")
        if dom is None:
            continue
        if dom.name in seen:
            r.error(f"domains[{i}].name", f"{_show(dom.name)} duplicates domains[{seen[dom.name]}]")
            continue
        seen[dom.name] = i
        domains.append(dom)
    if errors:
        if len(errors) > MAX_ERRORS:  # a generated file can hold 100k mistakes; 100 show the kind
            errors = [*errors[:MAX_ERRORS], f"... and {len(errors) - MAX_ERRORS} more problems"]
        raise ConfigError(errors)
    return Config(
        rdap=rdap,
        whois=whois,
        dns=dns,
        email=email,
        domains=tuple(domains),
        concurrency=concurrency,
        probe=probe,
    )


def config_warnings(config: Config) -> list[str]:
    """Things that are valid but probably not meant; `--config.check` prints them (exit 0)."""
    return [] if config.domains else ["no domains configured"]


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file. Raises ConfigError (never anything else), whatever
    the file holds: size, nesting, aliases, numbers and encodings are all bounded."""
    try:
        with Path(path).open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: NUL byte in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError([f"{path}: cannot read: {reason}"]) from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: larger than {MAX_CONFIG_BYTES // 2**20} MiB"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from exc
    del data  # 11 MB at 100k domains: freed before the document is built
    try:
        document = yamlload.load(text)
    except yamlload.YamlProblem as exc:
        raise ConfigError([f"{path}: {line}" for line in exc.lines]) from None
    del text
    try:
        with gc_paused():  # ~1M long-lived objects at 100k domains
            return parse_config(document)
    except (RecursionError, MemoryError, ValueError, TypeError) as exc:
        # The loader bounds depth and size, so this is a bug; still a config error, not a crash.
        raise ConfigError([f"{path}: cannot read config: {type(exc).__name__}"]) from None
