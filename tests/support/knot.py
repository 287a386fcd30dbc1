"""The knotd start-up shared by the test DNS worlds (dnsworld, mailworld, signedworld and the
fault lab in tests/faults/hostile_dns.py): a knot.conf for a set of zones and addresses, one
knotd per server with its own rundir and storage, an flock on the world's fixed addresses, and
a stop that ends exactly the processes started (by pid).

What a world serves and how it decides that it is ready stay with the world.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

_PR_SET_PDEATHSIG = 1


class Proc(NamedTuple):
    """One server process a world started, with the file its output goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when pytest dies, so no server outlives its run and
    keeps the fixed addresses bound."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(name: str, argv: list[str], log: Path) -> Proc:
    """Start one server process, its stdout and stderr going to `log`."""
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
    return Proc(name, popen, log)


def start_knotd(name: str, rundir: Path, conf: str) -> Proc:
    """One knotd with `conf` (from `knot_conf`) in its own rundir, log in rundir/knotd.log."""
    (rundir / "storage").mkdir(parents=True, exist_ok=True)
    path = rundir / "knot.conf"
    path.write_text(conf)
    return spawn(name, ["knotd", "-c", str(path)], rundir / "knotd.log")


def stop(procs: list[Proc]) -> None:
    """Stop exactly these processes (by pid), newest first; SIGKILL after 5 s. Empties `procs`."""
    for _name, popen, _log in reversed(procs):
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, signal.SIGTERM)
    for _name, popen, _log in reversed(procs):
        try:
            popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, signal.SIGKILL)
            popen.wait(timeout=5)
    procs.clear()


def check_alive(procs: Sequence[Proc]) -> None:
    """Raise, with its log, when a server has exited (often: its address was already bound)."""
    for name, popen, log in procs:
        if popen.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {popen.returncode}:\n{log.read_text(errors='replace')}"
            )


def acquire_flock(path: Path, wait: float) -> int:
    """An exclusive flock on `path`, waiting up to `wait` seconds for another test process to
    let go; the descriptor is returned (closing it releases the lock)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RuntimeError(f"{path} held by another test process for {wait:.0f}s") from None
            time.sleep(0.2)


def zone_entry(origin: str, file: Path, extra: str = "") -> str:
    """One item of knot.conf's zone list; `extra`: more indented lines for that zone."""
    return f'  - domain: "{origin}"\n    file: "{file}"' + (f"\n{extra}" if extra else "")


def knot_conf(
    rundir: Path,
    addresses: Iterable[str],
    zones: Iterable[str],
    *,
    zone_storage: Path | None = None,
    extra: str = "",
) -> str:
    """A small single-worker knotd serving `zones` (`zone_entry` items) on port 53 of
    `addresses`, zone files read whole and never written back. `extra`: top-level sections
    (e.g. DNSSEC policies) placed before the template."""
    listen = ", ".join(f"{a}@53" for a in addresses)
    storage = f'    storage: "{zone_storage}"\n' if zone_storage is not None else ""
    body = "\n".join(zones)
    return f"""server:
    rundir: "{rundir}"
    pidfile: "{rundir}/knot.pid"
    listen: [ {listen} ]
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1

database:
    storage: "{rundir}/storage"

control:
    listen: "{rundir}/knot.sock"

log:
  - target: stderr
    any: warning
{extra}
template:
  - id: default
{storage}    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off

zone:
{body}
"""
