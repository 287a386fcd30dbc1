"""Benchmark: one full RDAP cycle of N domains against a local HTTPS RDAP server.

    python bench/cycle.py [--domains 1000] [--rps 500] [--in-flight 16]

Starts the test RDAP server (tests/support/rdapserver.py, TLS with a trustme CA) serving N
registrations, runs `python -m exporter` as a subprocess with per-server pacing set to --rps,
and reports the wall time until every domain has an RDAP result, and the exporter's peak RSS
(VmHWM). DNS points at a closed local port, so those checks fail at once and cost nothing.
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trustme  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.support.exporter_proc import free_port  # noqa: E402
from tests.support.rdapserver import (  # noqa: E402
    RdapServer,
    Reply,
    make_domain,
    write_bootstrap,
    write_ca,
)


def rdap_done(port: int) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    done = 0
    for family in text_string_to_metric_families(text):
        if family.name == "domain_check_success":
            done += sum(
                1 for s in family.samples if s.labels.get("check") == "rdap" and s.value == 1
            )
    return done


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--rps", type=float, default=500.0)
    parser.add_argument("--in-flight", type=int, default=16)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="domainwatch-bench-"))
    ca = trustme.CA()
    server = RdapServer(ca)
    write_ca(ca, tmp / "ca.pem")
    write_bootstrap(tmp / "bootstrap.json", {"bench": server})
    names = [f"d{i:05d}.bench" for i in range(args.domains)]
    expiry = datetime.now(UTC) + timedelta(days=90)
    for name in names:
        body = make_domain(name, expiry, ["active", "client transfer prohibited"],
                           ["ns1.dns.bench", "ns2.dns.bench"], "Bench Registrar", "9999")
        server.set_domain(name, Reply(body=body))
    domains = "\n".join(f"  - {n}" for n in names)
    (tmp / "config.yaml").write_text(f"""
concurrency: 64
rdap:
  bootstrap: {tmp / 'bootstrap.json'}
  ca_file: {tmp / 'ca.pem'}
  allow_private_addresses: true
  requests_per_second: {args.rps}
  max_in_flight_per_server: {args.in_flight}
  timeout: 10s
dns:
  root_servers: ["127.0.0.1:9"]
  timeout: 0.2s
domains:
{domains}
""")
    port = free_port()
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config.file", str(tmp / "config.yaml"),
         "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "error"],
        cwd=ROOT,
    )
    try:
        done = 0
        deadline = start + 600
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                done = rdap_done(port)
            except OSError:
                continue
            if done >= args.domains:
                break
        wall = time.monotonic() - start
        rss = peak_rss_kib(proc.pid)
        print(f"domains={args.domains} rps_per_server={args.rps} in_flight={args.in_flight} "
              f"rdap_results={done} wall_seconds={wall:.1f} "
              f"peak_rss_mib={rss / 1024:.1f} "
              f"server_requests={len(server.requests)}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        server.stop()


if __name__ == "__main__":
    main()
