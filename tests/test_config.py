"""The config loader: every key read, every problem reported at once with its exact path.

Bad files live in tests/testdata/config/; each is compared against the complete list of error
lines, so a lost, reworded or reordered message shows up as a diff.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from exporter.config import (
    Config,
    ConfigError,
    Contact,
    DnsSettings,
    DomainConfig,
    EmailSettings,
    ProbeSettings,
    RdapSettings,
    WhoisSettings,
    config_warnings,
    load_config,
    parse_config,
    parse_duration,
)

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "testdata" / "config"
EXAMPLE = REPO / "config.example.yaml"
NOT_A_DURATION = "is not a duration (use e.g. 90s, 5m, 6h, 1d)"


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    # Relative paths in a config (bootstrap, ca_file) are resolved from the working directory.
    monkeypatch.chdir(REPO)


def _errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.errors


# --- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("6h", 21600.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("250ms", 0.25),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("1d12h", 129600.0),
        (" 5m ", 300.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", f"'soon' {NOT_A_DURATION}"),
        ("", f"'' {NOT_A_DURATION}"),
        ("m", f"'m' {NOT_A_DURATION}"),
        ("5x", f"'5x' {NOT_A_DURATION}"),
        ("5m5", f"'5m5' {NOT_A_DURATION}"),
        ("1h 30m", f"'1h 30m' {NOT_A_DURATION}"),
        ("-1s", f"'-1s' {NOT_A_DURATION}"),
        (5, "5 has no unit (use e.g. 5s)"),
        (2.5, "2.5 has no unit (use e.g. 2.5s)"),
        (True, f"True {NOT_A_DURATION}"),
        (None, f"None {NOT_A_DURATION}"),
        ([], f"[] {NOT_A_DURATION}"),
    ],
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == message


# --- good files -------------------------------------------------------------------------


def test_good_file_reads_every_key() -> None:
    expected = Config(
        rdap=RdapSettings(
            bootstrap="exporter/data/iana-dns-bootstrap.json",
            servers={
                "de": "https://rdap.denic.de/",
                "co.uk": "https://rdap.nominet.uk/uk/",
                "xn--90ae": "https://rdap.example.bg/",
                "kg": "http://rdap.cctld.kg/",
                "ch": "https://rdap.nic.ch/",
            },
            ca_file="tests/testdata/config/good.yaml",
            interval=12 * 3600.0,
            timeout=20.0,
            requests_per_second=0.5,
            follow_registrar=False,
            allow_private_addresses=True,
            max_in_flight_per_server=4,
            allow_http=True,
            hold_interval=5400.0,
        ),
        dns=DnsSettings(
            resolvers=("127.0.0.1", "127.0.0.2:5353", "[::1]:53", "::1"),
            root_servers=("127.0.0.53",),
            interval=600.0,
            timeout=1.5,
            dnssec_interval=1800.0,
        ),
        email=EmailSettings(
            interval=7200.0,
            smtp_probe=True,
            smtp_port=2525,
            smtp_timeout=5.0,
            smtp_helo="probe.example.net",
            smtp_interval=7 * 86400.0,
            allow_private_addresses=True,
        ),
        whois=WhoisSettings(
            servers={"jp": "whois.jprs.jp", "co.uk": "127.0.0.1:4343", "vn": "[::1]:43"},
            timeout=4.0,
            requests_per_second=2.0,
            allow_private_addresses=True,
        ),
        probe=ProbeSettings(
            allow_unlisted=True, max_unlisted=7, idle_timeout=7200.0, max_wait=3.0
        ),
        domains=(
            DomainConfig(
                name="example.com",
                nameservers=("ns1.example.net", "ns2.example.net"),  # normalised, deduplicated
                contacts=(
                    Contact(role="registrant", email="hostmaster@example.org"),
                    Contact(role="billing_team", email="billing@example.org"),
                ),
                labels={"team": "web", "tier": "1"},
                expires=datetime(2031, 3, 31, tzinfo=UTC),
            ),
            DomainConfig(name="xn--bcher-kva.example"),
            DomainConfig(name="example.org"),
        ),
        concurrency=8,
    )
    config = load_config(DATA / "good.yaml")
    assert config == expected
    # Field by field too, so a failure names the setting rather than dumping two Configs.
    for section in ("rdap", "whois", "dns", "email", "probe"):
        for f in dataclasses.fields(getattr(expected, section)):
            got = getattr(getattr(config, section), f.name)
            assert got == getattr(getattr(expected, section), f.name), f"{section}.{f.name}"


def _section_fields() -> dict[str, set[str]]:
    return {
        "rdap": {f.name for f in dataclasses.fields(RdapSettings)},
        "whois": {f.name for f in dataclasses.fields(WhoisSettings)},
        "dns": {f.name for f in dataclasses.fields(DnsSettings)},
        "email": {f.name for f in dataclasses.fields(EmailSettings)},
        "probe": {f.name for f in dataclasses.fields(ProbeSettings)},
    }


@pytest.mark.parametrize("path", [DATA / "good.yaml", EXAMPLE], ids=["good", "example"])
def test_file_names_every_setting(path: Path) -> None:
    """A new setting must appear in good.yaml (tested) and config.example.yaml (documented)."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(document) == {"rdap", "whois", "dns", "email", "domains", "concurrency", "probe"}
    for section, fields in _section_fields().items():
        assert set(document[section]) == fields, section
    assert set(document["domains"][0]) == {"name", "nameservers", "contacts", "labels", "expires"}


def test_good_file_differs_from_defaults_everywhere() -> None:
    # Otherwise a key the loader ignores would still "load with the expected value".
    config = load_config(DATA / "good.yaml")
    for section in ("rdap", "whois", "dns", "email", "probe"):
        default = getattr(Config(), section)
        for f in dataclasses.fields(default):
            assert getattr(getattr(config, section), f.name) != getattr(default, f.name), (
                f"{section}.{f.name}"
            )
    assert config.concurrency != Config().concurrency


def test_example_config_loads_with_documented_defaults() -> None:
    config = load_config(EXAMPLE)
    assert [d.name for d in config.domains] == [
        "example.com",
        "xn--bcher-kva.example",
        "example.org",
    ]
    first = config.domains[0]
    assert first.nameservers == ("a.iana-servers.net", "b.iana-servers.net")
    assert first.contacts == (Contact(role="registrant", email="hostmaster@example.org"),)
    assert first.labels == {"team": "web"}
    assert config.rdap.servers == {}  # the curated table needs no entry for .de or .ch
    # The header promises "every key is shown with its default".
    assert config.rdap == RdapSettings()
    assert config.whois == WhoisSettings()
    assert first.expires is None
    assert config.dns == DnsSettings()
    assert config.email == EmailSettings()
    assert config.probe == ProbeSettings()
    assert config.concurrency == Config().concurrency


@pytest.mark.parametrize("name", ["empty.yaml", "comments-only.yaml"])
def test_empty_file_is_the_default_config(name: str) -> None:
    assert load_config(DATA / name) == Config()
    assert Config().domains == ()


def test_idn_and_punycode_are_one_name() -> None:
    unicode_form = parse_config({"domains": ["bücher.example"]})
    ascii_form = parse_config({"domains": [{"name": "XN--BCHER-KVA.example."}]})
    assert unicode_form.domains[0].name == "xn--bcher-kva.example"
    assert ascii_form == unicode_form


# --- bad files --------------------------------------------------------------------------

BAD_FILES: dict[str, list[str]] = {
    "bad-domain-names.yaml": [
        "domains[1].name: 'exa mple.com' is not a domain name",
        "domains[2].name: 'com' is not a domain name",
        "domains[3].name: 123 is not a domain name",
        "domains[4].name: '-x.com' is not a domain name",
        "domains[5].name: 'xn--zz.com' is not a domain name",
        "domains[6]: missing required key 'name'",
        "domains[7].nameservers[1]: 'ns 2.example.net' is not a host name",
        "domains[7].nameservers[2]: 7 is not a host name",
    ],
    "bad-unknown-keys.yaml": [
        "domain: unknown key",
        "rdap.intervall: unknown key",
        "dns.resolver: unknown key",
        "email.smtp-probe: unknown key",
        "domains[0].nameserver: unknown key",
        "domains[0].contacts[0].phone: unknown key",
    ],
    "bad-durations.yaml": [
        f"rdap.interval: 'soon' {NOT_A_DURATION}",
        "rdap.timeout: 5 has no unit (use e.g. 5s)",
        "rdap.hold_interval: '0s' must be longer than zero",
        f"dns.interval: '-5m' {NOT_A_DURATION}",
        f"dns.timeout: '1 h' {NOT_A_DURATION}",
        f"email.interval: '6 hours' {NOT_A_DURATION}",
        f"email.smtp_timeout: '' {NOT_A_DURATION}",
        f"email.smtp_interval: True {NOT_A_DURATION}",
    ],
    "bad-duplicates.yaml": [
        "domains[2].name: 'xn--bcher-kva.example' duplicates domains[0]",
        "domains[3].name: 'example.com' duplicates domains[1]",
        "domains[4].name: 'xn--bcher-kva.example' duplicates domains[0]",
    ],
    "bad-labels.yaml": [
        "domains[0].labels.bad-name: 'bad-name' is not a valid Prometheus label name",
        "domains[0].labels.__meta: '__meta' is not a valid Prometheus label name",
        "domains[0].labels.0lead: '0lead' is not a valid Prometheus label name",
        "domains[0].labels.domain: 'domain' is reserved for domainwatch's own labels",
        "domains[0].labels.job: 'job' is reserved for domainwatch's own labels",
        "domains[0].labels.team: value must be a string, got a list",
        "domains[0].labels.flag: value must be a string, got bool",
        "domains[1].labels: must be a mapping, got a list",
    ],
    "bad-contacts.yaml": [
        "domains[0].contacts[0].email: missing or not an e-mail address",
        "domains[0].contacts[1].email: missing or not an e-mail address",
        "domains[0].contacts[2].email: missing or not an e-mail address",
        "domains[0].contacts[3].role: 'bad role' must be a word such as registrant, technical",
        "domains[0].contacts[4].role: '__private' must be a word such as registrant, technical",
        "domains[0].contacts[5].email: missing or not an e-mail address",
        "domains[1].contacts: must be a list, got a mapping",
    ],
    "bad-numbers.yaml": [
        "rdap.requests_per_second: must be a number greater than zero, got -2",
        "rdap.max_in_flight_per_server: must be a whole number greater than zero, got 0",
        "email.smtp_port: must be a port number 1-65535, got 0",
        "concurrency: must be a whole number greater than zero, got -1",
    ],
    "bad-types.yaml": [
        "rdap.servers.de: 'ftp://rdap.denic.de/' is not an http(s) URL",
        "rdap.servers.bad tld!: 'bad tld!' is not a TLD or suffix",
        "rdap.bootstrap: must be a non-empty string, got 5",
        "rdap.requests_per_second: must be a number greater than zero, got True",
        "rdap.follow_registrar: must be true or false, got 'yes'",
        "rdap.allow_http: must be true or false, got 1",
        "dns.resolvers: must be a list, got a string",
        "dns.root_servers[0]: must be a non-empty string, got 5",
        "dns.root_servers[1]: '127.0.0.1:99999' has an invalid port",
        "dns.root_servers[2]: 'a.root-servers.net' is not an 'ip' or 'ip:port' address",
        "email.smtp_probe: must be true or false, got 'true'",
        "email.smtp_helo: 'bad helo' is not a host name",
        "concurrency: must be a whole number greater than zero, got '8'",
        "domains[0].nameservers: must be a list, got a string",
        "domains[0].contacts: must be a list, got a mapping",
    ],
    "bad-sections.yaml": [
        "rdap: must be a mapping, got a list",
        "dns: must be a mapping, got a string",
        "email: must be a mapping, got int",
        "domains: must be a list, got a mapping",
    ],
    "bad-files.yaml": [
        "rdap.bootstrap: 'does/not/exist.json' is neither an http(s) URL nor an existing file",
        "rdap.ca_file: file 'does/not/exist.pem' does not exist",
    ],
    "bad-many.yaml": [
        "rdap.colour: unknown key",
        f"rdap.interval: 'soon' {NOT_A_DURATION}",
        "dns.resolvers[0]: '127.0.0.1:99999' has an invalid port",
        "email.smtp_port: must be a port number 1-65535, got 70000",
        "concurrency: must be a whole number greater than zero, got 0",
        "domains[0].name: 'exa mple.com' is not a domain name",
        "domains[1].labels.domain: 'domain' is reserved for domainwatch's own labels",
        "domains[2].name: 'example.com' duplicates domains[1]",
    ],
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_reports_every_problem(name: str) -> None:
    errors = _errors(DATA / name)
    assert errors == BAD_FILES[name]


def test_every_bad_file_has_expectations() -> None:
    on_disk = {p.name for p in DATA.glob("bad-*.yaml")} - {"bad-syntax.yaml"}
    assert on_disk == set(BAD_FILES)


def test_config_error_message_is_all_lines() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DATA / "bad-numbers.yaml")
    assert str(info.value) == "\n".join(BAD_FILES["bad-numbers.yaml"])


def test_contact_addresses_never_appear_in_errors() -> None:
    errors = _errors(DATA / "bad-contacts.yaml")
    text = "\n".join(errors)
    for fragment in ("secret", "hostmaster@", "example.org", "42"):
        assert fragment not in text
    # The repr guards logs too.
    contact = Contact(role="registrant", email="secret@example.org")
    assert "secret" not in repr(contact)


def test_yaml_syntax_error_names_line_and_column() -> None:
    path = DATA / "bad-syntax.yaml"
    assert _errors(path) == [
        f"{path}: line 4, column 8: invalid YAML: expected ',' or ']', but got ':'"
    ]


def test_yaml_tab_indentation_is_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "tabs.yaml"
    path.write_text("rdap:\n\tinterval: 6h\n", encoding="utf-8")
    assert _errors(path) == [
        f"{path}: line 2, column 1: invalid YAML: found character '\\t' that cannot start any token"
    ]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert _errors(path) == [f"{path}: cannot read: No such file or directory"]


def test_domain_shorthand_and_mapping_forms_agree() -> None:
    assert parse_config({"domains": ["Example.COM"]}) == parse_config(
        {"domains": [{"name": "example.com"}]}
    )


def test_label_values_become_strings() -> None:
    config = parse_config({"domains": [{"name": "example.com", "labels": {"n": 3, "f": 1.5}}]})
    assert config.domains[0].labels == {"n": "3", "f": "1.5"}


# --- edge cases that were bugs once --------------------------------------------------


@pytest.mark.parametrize("value", [5, True])
def test_scalar_rdap_servers_is_a_config_error(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"rdap": {"servers": value}})
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith("rdap.servers: must be a mapping")


def test_null_domain_item_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"domains": ["example.com", None, "example.org"]})
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith("domains[1]: ")


@pytest.mark.parametrize(
    "label", ["expected", "registry", "parent", "child", "previous", "nameserver_domain"]
)
def test_nameserver_info_source_labels_are_reserved(label: str) -> None:
    # domain_nameserver_info carries one label per source: a config label of that name would
    # overwrite "listed by the parent" with a team name.
    with pytest.raises(ConfigError) as info:
        parse_config({"domains": [{"name": "example.com", "labels": {label: "x", "team": "a"}}]})
    assert info.value.errors == [
        f"domains[0].labels.{label}: '{label}' is reserved for domainwatch's own labels"
    ]
    # Names that merely start like one are free.
    config = parse_config({"domains": [{"name": "example.com", "labels": {f"{label}_team": "x"}}]})
    assert config.domains[0].labels == {f"{label}_team": "x"}


def test_nan_requests_per_second_is_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_load("rdap: {requests_per_second: .nan}"))
    assert info.value.errors == [
        "rdap.requests_per_second: must be a number greater than zero, got nan"
    ]


@pytest.mark.parametrize("key", ["ca_file", "bootstrap"])
def test_overlong_path_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"rdap": {key: "a" * 5000}})
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith(f"rdap.{key}: ")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("domains:\n  - bücher.example\n".encode("latin-1"))
    errors = _errors(path)
    assert len(errors) == 1
    assert errors[0].startswith(f"{path}: ")


@pytest.mark.parametrize(("text", "kind"), [("[1, 2]", "a list"), ("hello", "a string")])
def test_top_level_not_a_mapping_has_a_readable_path(text: str, kind: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_load(text))
    assert len(info.value.errors) == 1
    line = info.value.errors[0]
    assert line.endswith(f"must be a mapping, got {kind}")
    assert not line.startswith(":")


def test_contact_reports_role_and_email_problems_together() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "domains": [
                    {"name": "example.com", "contacts": [{"role": "bad role", "email": "nope"}]}
                ]
            }
        )
    assert sorted(info.value.errors) == [
        "domains[0].contacts[0].email: missing or not an e-mail address",
        "domains[0].contacts[0].role: 'bad role' must be a word such as registrant, technical",
    ]


# --- the command line ------------------------------------------------------------------


def _config_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(path), "--config.check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_config_check_lists_every_error_and_exits_1() -> None:
    path = DATA / "bad-many.yaml"
    proc = _config_check(path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [f"config error: {e}" for e in BAD_FILES["bad-many.yaml"]]
    assert proc.stdout == ""


def test_config_check_good_file_exits_0() -> None:
    path = DATA / "good.yaml"
    proc = _config_check(path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{path}: OK, 3 domains"
    assert "Traceback" not in proc.stderr


def test_config_check_warns_about_an_empty_config(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("domains: []\n")
    proc = _config_check(path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"{path}: warning: no domains configured",
        f"{path}: OK, 0 domains",
    ]


# --- hostile and ambiguous input (issue 8): only ConfigError, one clear line each ----------


def _load_text(tmp_path: Path, text: str | bytes) -> list[str]:
    path = tmp_path / "config.yaml"
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return [line.removeprefix(f"{path}: ") for line in _errors(path)]


def test_duplicate_keys_are_errors_naming_the_key_path(tmp_path: Path) -> None:
    text = (
        "rdap:\n"
        "  interval: 1h\n"
        "  timeout: 5s\n"
        "  interval: 2h\n"
        "domains:\n"
        "  - name: example.com\n"
        "    labels: {team: web, team: ops}\n"
        "    name: example.org\n"
        "rdap:\n"
        "  timeout: 1s\n"
    )
    assert _load_text(tmp_path, text) == [  # in file order
        "rdap.interval: duplicate key (line 4, first at line 2)",
        "domains[0].labels.team: duplicate key (line 7, first at line 7)",
        "domains[0].name: duplicate key (line 8, first at line 6)",
        "rdap: duplicate key (line 9, first at line 1)",
    ]


def test_keys_equal_after_yaml_typing_are_duplicates(tmp_path: Path) -> None:
    # `1` and `0x1` are the same integer key once parsed: the second silently won before.
    assert _load_text(tmp_path, "domains:\n  - name: a.example\n    labels: {1: a, 0x1: b}\n") == [
        "domains[0].labels.0x1: duplicate key (line 3, first at line 3)"
    ]


def test_merge_keys_may_override_without_being_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "base: &base {team: web, tier: '1'}\n"
        "domains:\n  - name: example.com\n    labels: {<<: *base, tier: '2'}\n".replace(
            "base: &base", "domains_base: &base"
        ),
        encoding="utf-8",
    )
    # The anchor host key is unknown (reported), but the merge itself is not a duplicate.
    assert _errors(path) == ["domains_base: unknown key"]
    path.write_text(
        "domains:\n  - &d {name: example.com, labels: {team: web}}\n"
        "  - {<<: *d, name: example.org}\n",
        encoding="utf-8",
    )
    config = load_config(path)
    assert [(d.name, dict(d.labels)) for d in config.domains] == [
        ("example.com", {"team": "web"}),
        ("example.org", {"team": "web"}),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rdap: {requests_per_second: .inf}",
            "rdap.requests_per_second: must be a finite number greater than zero, got inf",
        ),
        (
            "rdap: {requests_per_second: 1.0e+999}",
            "rdap.requests_per_second: must be a finite number greater than zero, got inf",
        ),
        (
            "rdap: {requests_per_second: -.inf}",
            "rdap.requests_per_second: must be a number greater than zero, got -inf",
        ),
        (
            "rdap: {requests_per_second: .NaN}",
            "rdap.requests_per_second: must be a number greater than zero, got nan",
        ),
        (
            "domains: [{name: example.com, labels: {weight: .inf}}]",
            "domains[0].labels.weight: value must be a string or a finite number, got inf",
        ),
        (
            "domains: [{name: example.com, labels: {weight: .nan}}]",
            "domains[0].labels.weight: value must be a string or a finite number, got nan",
        ),
        ("dns: {interval: 3651d}", "dns.interval: '3651d' is longer than 3650d"),
    ],
    ids=["inf", "overflow", "minus-inf", "nan", "label-inf", "label-nan", "too-long"],
)
def test_non_finite_numbers_are_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert _load_text(tmp_path, text) == [expected]


def test_a_400_digit_duration_is_not_infinity(tmp_path: Path) -> None:
    (line,) = _load_text(tmp_path, "rdap: {interval: " + "9" * 400 + "s}")
    assert line.startswith("rdap.interval: '999") and line.endswith("s' is longer than 3650d")
    assert len(line) < 200


@pytest.mark.parametrize(
    "name",
    [
        "127.0.0.1",
        "192.0.2.1.",
        "::1",
        "[::1]",
        "[2001:db8::1]",
        "2001:db8::1",
        "fe80::1%eth0",
        "::ffff:127.0.0.1",
        "127.1",
        "0x7f.0.0.1",
        "10.0.0.010",
    ],
)
def test_ip_literals_are_not_domain_names(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"domains": [name]})
    assert info.value.errors == [f"domains[0].name: {name!r} is an IP address, not a domain name"]
    with pytest.raises(ConfigError) as info:
        parse_config({"domains": [{"name": "example.com", "nameservers": [name]}]})
    assert info.value.errors == [
        f"domains[0].nameservers[0]: {name!r} is an IP address, not a host name"
    ]


@pytest.mark.parametrize("name", ["1.example", "123.example.com", "example.x1", "0x.example"])
def test_numeric_labels_before_the_last_are_names(name: str) -> None:
    assert parse_config({"domains": [name]}).domains[0].name == name


_LAUGHS = "".join(
    f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}" if i else "lol"] * 9) + "]\n"
    for i in range(9)
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("domains: " + "[" * 10_000 + "]" * 10_000, "nested deeper than 64 levels"),
        ("".join(" " * i + "-\n" for i in range(10_000)), "nested deeper than 64 levels"),
        ("domains: " + "{a: " * 10_000 + "1" + "}" * 10_000, "nested deeper than 64 levels"),
        ("concurrency: " + "9" * 5000, "line 1, column 14: invalid YAML: number longer"),
        ("domains: [{name: a.example, labels: {n: " + "1" * 5000 + "}}]", "number longer"),
        (
            "domains:\n- name: a.example\n  labels:\n    ? " + "1" * 5000 + "\n    : x\n",
            "number longer",
        ),
        ("rdap: {interval: 0x" + "f" * 5000 + "}", "number longer"),
        ("concurrency: 2020-13-45", "line 1, column 14: invalid YAML: unreadable value"),
        (_LAUGHS + "domains: [*i,*i,*i,*i,*i,*i,*i,*i,*i]\n", "(alias bomb?)"),
        (_LAUGHS + "rdap: {requests_per_second: *i}\n", "(alias bomb?)"),
        ("domains: &a [*a]", "recursive alias (domains[0])"),
        ("domains: &a {name: *a}", "recursive alias (domains.name)"),
        ("rdap: {interval: \x00}", "invalid YAML: unacceptable character #x0000"),
        ("domains: [a.example]\n---\nconcurrency: 1\n", "invalid YAML: but found another document"),
        ("rdap: !!python/object:os.system x", "invalid YAML: could not determine a constructor"),
        ("{[a]: 1}", "invalid YAML: found unhashable key"),
    ],
    ids=[
        "deep-flow",
        "deep-block",
        "deep-mapping",
        "bigint",
        "bigint-label",
        "bigint-key",
        "bighex",
        "bad-date",
        "billion-laughs",
        "laughs-in-number",
        "recursive-seq",
        "recursive-map",
        "nul",
        "two-documents",
        "python-tag",
        "list-key",
    ],
)
def test_hostile_documents_raise_one_config_error(tmp_path: Path, text: str, expected: str) -> None:
    started = time.monotonic()
    errors = _load_text(tmp_path, text)
    assert time.monotonic() - started < 5
    assert len(errors) == 1, errors
    assert expected in errors[0]
    assert len(errors[0]) < 300 and "\n" not in errors[0]


def test_huge_values_are_echoed_briefly(tmp_path: Path) -> None:
    text = (
        "domains: ['"
        + "a" * 2_000_000
        + "', {name: x.example, labels: {k: ["
        + "1," * 10_000
        + "1]}}]\nrdap: {bootstrap: ["
        + "[1]," * 10_000
        + "1]}\n"
    )
    errors = _load_text(tmp_path, text)
    assert len(errors) == 3
    assert all(len(line) < 300 for line in errors), [line[:300] for line in errors]
    assert errors[0].startswith("rdap.bootstrap: must be a non-empty string, got [[1], [1], ")


def test_too_many_problems_are_summarised(tmp_path: Path) -> None:
    errors = _load_text(tmp_path, "domains: [" + ", ".join(["'bad name'"] * 5000) + "]")
    assert len(errors) == 101
    assert errors[-1] == "... and 4900 more problems"


def test_oversized_and_unreadable_files(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        fh.truncate(65 * 1024 * 1024)  # sparse: cheap to make, still read up to the cap
    assert _errors(big) == [f"{big}: larger than 64 MiB"]
    assert _errors(tmp_path) == [f"{tmp_path}: cannot read: Is a directory"]
    errors = _errors(Path("nul\x00byte.yaml"))
    assert len(errors) == 1 and "cannot read" in errors[0]


def test_non_utf8_bytes(tmp_path: Path) -> None:
    assert _load_text(tmp_path, b"domains: [\xff\xfe]\n") == ["not UTF-8 text (byte 10)"]


def test_config_warnings_for_an_empty_config() -> None:
    assert config_warnings(Config()) == ["no domains configured"]
    assert config_warnings(parse_config({"domains": ["example.com"]})) == []


def test_hostile_reload_fails_cleanly_in_the_running_exporter(tmp_path: Path) -> None:
    """A 10k-deep file used to escape as RecursionError: HTTP 500 with a traceback, SIGHUP
    failing silently, and the reload gauge left at 1."""
    import signal
    import urllib.error
    import urllib.request

    from tests.support.exporter_proc import ExporterProcess

    config = tmp_path / "config.yaml"
    good = "rdap: {bootstrap: exporter/data/iana-dns-bootstrap.json}\ndomains: []\n"
    config.write_text(good, encoding="utf-8")
    with ExporterProcess(config, tmp_path / "run") as exporter:
        assert exporter.value("domainwatch_config_last_reload_successful") == 1
        config.write_text("domains: " + "[" * 10_000 + "]" * 10_000, encoding="utf-8")
        request = urllib.request.Request(exporter.url + "/-/reload", method="POST", data=b"")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 500
        body = info.value.read().decode()
        assert "nested deeper than 64 levels" in body and "Traceback" not in body
        assert exporter.value("domainwatch_config_last_reload_successful") == 0

        config.write_text(good, encoding="utf-8")
        assert exporter.proc is not None
        exporter.proc.send_signal(signal.SIGHUP)
        exporter.wait_for(lambda s: s.value("domainwatch_config_last_reload_successful") == 1)
        config.write_text("concurrency: " + "9" * 5000 + "\n", encoding="utf-8")
        exporter.proc.send_signal(signal.SIGHUP)
        exporter.wait_for(lambda s: s.value("domainwatch_config_last_reload_successful") == 0)
        log = exporter.log_path.read_text(errors="replace")
        assert "number longer than 100 digits" in log and "Traceback" not in log


# --- WHOIS and manual expiry (issue 10) -----------------------------------------------------


def test_tld_keys_take_a_leading_dot_in_both_server_maps() -> None:
    config = parse_config(
        {
            "rdap": {"servers": {".de": "https://rdap.denic.de/"}},
            "whois": {"servers": {".JP": "whois.jprs.jp", "co.jp": "whois.jprs.jp:4343"}},
        }
    )
    assert config.rdap.servers == {"de": "https://rdap.denic.de/"}
    assert config.whois.servers == {"jp": "whois.jprs.jp", "co.jp": "whois.jprs.jp:4343"}


def test_whois_and_expires_errors_name_their_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "whois": {
                    "servers": {"jp": "bad host", "de": "whois.denic.de:0", "..": "x.example"},
                    "timeout": "soon",
                    "requests_per_second": 0,
                    "allow_private_addresses": "yes",
                    "port": 43,
                },
                "domains": [
                    {"name": "a.de", "expires": "31.03.2031"},
                    {"name": "b.de", "expires": "2031-02-30"},
                    {"name": "c.de", "expires": 20310331},
                ],
            }
        )
    assert info.value.errors == [
        "whois.port: unknown key",
        "whois.servers.jp: 'bad host' is not a 'host' or 'host:port'",
        "whois.servers.de: 'whois.denic.de:0' has an invalid port",
        "whois.servers...: '..' is not a TLD or suffix",
        "whois.timeout: 'soon' is not a duration (use e.g. 90s, 5m, 6h, 1d)",
        "whois.requests_per_second: must be a number greater than zero, got 0",
        "whois.allow_private_addresses: must be true or false, got 'yes'",
        "domains[0].expires: '31.03.2031' is not a date (use YYYY-MM-DD, e.g. 2027-03-31)",
        "domains[1].expires: '2031-02-30' is not a valid date",
        "domains[2].expires: 20310331 is not a date (use YYYY-MM-DD, e.g. 2027-03-31)",
    ]


def test_expires_is_midnight_utc_from_a_yaml_date_or_string(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("domains:\n  - {name: a.de, expires: 2031-03-31}\n  - {name: b.de}\n")
    config = load_config(path)
    assert config.domains[0].expires == datetime(2031, 3, 31, tzinfo=UTC)
    assert config.domains[1].expires is None
