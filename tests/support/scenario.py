"""Building blocks for end-to-end scenarios that run the exporter as a subprocess.

    entries = [DomainEntry("good.test", nameservers=("ns1.good.test",),
                           contacts=(("technical", "hostmaster@good.test"),))]
    config = write_exporter_config(tmp / "c.yaml", rdap={...}, dns={...}, email={...},
                                   domains=entries)
    checks = BackgroundChecks()
    checks.start("root", config, ["good.test"])      # `check --json` runs while you do other work
    ...
    code, out = checks.result("root")
    check_json_domain(out, "good.test")["dns"]["mismatch"]

    s = wait_after_rdap(exporter, "good.test", "dns", lambda s: ..., timeout=10)

`wait_after_rdap` exists because the DNS and e-mail checks use what the domain's RDAP check
found (the registry's nameserver set, the registration of a monitored mail domain): a verdict
reached before RDAP answered is not the verdict under test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.exporter_proc import CheckResult, ExporterProcess, Scrape, run_check_raw


@dataclass(frozen=True)
class DomainEntry:
    """One `domains:` item of the exporter config."""

    name: str
    nameservers: tuple[str, ...] = ()
    contacts: tuple[tuple[str, str], ...] = ()  # (role, address)

    def as_config(self) -> dict[str, Any]:
        item: dict[str, Any] = {"name": self.name}
        if self.nameservers:
            item["nameservers"] = list(self.nameservers)
        if self.contacts:
            item["contacts"] = [{"role": r, "email": e} for r, e in self.contacts]
        return item


def write_exporter_config(
    path: Path,
    *,
    rdap: Mapping[str, Any],
    dns: Mapping[str, Any],
    email: Mapping[str, Any],
    domains: Iterable[DomainEntry],
) -> Path:
    document = {
        "rdap": dict(rdap),
        "dns": dict(dns),
        "email": dict(email),
        "domains": [d.as_config() for d in domains],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def contact_addresses(entries: Iterable[DomainEntry]) -> list[str]:
    return [address for d in entries for _role, address in d.contacts]


class BackgroundChecks:
    """`python -m exporter check --json` runs started in threads, read when a test needs them.

    Each run is a separate process that does every check once; starting them early lets them
    overlap with the long-running exporters' warm-up instead of adding to the test time.
    """

    def __init__(self, workers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="check")
        self._runs: dict[str, Future[CheckResult]] = {}

    def start(self, key: str, config: Path, domains: Sequence[str], timeout: float = 60) -> None:
        self._runs[key] = self._pool.submit(run_check_raw, config, *domains, timeout=timeout)

    def raw(self, key: str, timeout: float = 70) -> CheckResult:
        return self._runs[key].result(timeout=timeout)

    def result(self, key: str, timeout: float = 70) -> tuple[int, dict[str, Any]]:
        """(exit code, parsed JSON); a run that printed no JSON fails with its stderr."""
        raw = self.raw(key, timeout)
        try:
            return raw.code, json.loads(raw.stdout)
        except ValueError as exc:
            raise AssertionError(
                f"check --json ({key}) printed no JSON (exit {raw.code}): {exc}\n"
                f"--- stdout ---\n{raw.stdout[-3000:]}\n--- stderr ---\n{raw.stderr[-3000:]}"
            ) from exc

    def close(self) -> None:
        # Each run is bounded by its subprocess timeout, so waiting cannot hang forever.
        self._pool.shutdown(wait=True, cancel_futures=True)


def check_json_domain(out: Mapping[str, Any], domain: str) -> dict[str, Any]:
    """The one entry of `domain` in a `check --json` document."""
    found = [d for d in out["domains"] if d["domain"] == domain]
    assert len(found) == 1, f"{domain}: {len(found)} entries in\n{json.dumps(out, indent=1)}"
    return dict(found[0])


def check_state(scrape: Scrape, domain: str, check: str) -> tuple[float | None, float | None]:
    """(domain_check_success, time of its last attempt) of one check. The attempt time is
    domain_check_last_attempt_timestamp_seconds while the check fails, else the last success."""
    name = "domain_check_last_attempt_timestamp_seconds"
    attempt = scrape.value(name, domain=domain, check=check)
    if attempt is None:
        attempt = scrape.value(
            "domain_check_last_success_timestamp_seconds", domain=domain, check=check
        )
    return scrape.value("domain_check_success", domain=domain, check=check), attempt


def wait_after_rdap(
    exporter: ExporterProcess,
    domain: str,
    check: str,
    predicate: Callable[[Scrape], Any],
    timeout: float = 15.0,
    margin: float = 0.3,
) -> Scrape:
    """Wait until `check` (dns or email) of `domain` ran after its RDAP check had succeeded,
    and `predicate` holds on that scrape.

    "Ran after" is judged from the exposition itself: the check's last attempt (stamped when it
    ended) must be later than the RDAP check's first success plus `margin`, which is more than
    a delegation or mail check of a healthy domain takes on loopback.
    """
    first = exporter.wait_for(
        lambda s: s.value("domain_check_success", domain=domain, check="rdap") is not None
        and s.value("domain_check_last_success_timestamp_seconds", domain=domain, check="rdap")
        is not None,
        timeout=timeout,
        message=f"{domain}: the RDAP check never succeeded",
    )
    rdap_done = first.value(
        "domain_check_last_success_timestamp_seconds", domain=domain, check="rdap"
    )
    assert rdap_done is not None

    def ready(s: Scrape) -> bool:
        _ok, attempt = check_state(s, domain, check)
        return attempt is not None and attempt > rdap_done + margin and bool(predicate(s))

    return exporter.wait_for(
        ready,
        timeout=timeout,
        message=lambda s: f"{domain}: no {check} check after RDAP satisfied the condition\n"
        + s.for_domain(domain),
    )
