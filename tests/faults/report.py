"""Shared recorder for fault-matrix cells.

Every fault test calls :func:`record` once per cell. When the environment
variable ``DOMAINWATCH_FAULT_REPORT`` names a file, one JSON object per line is
appended to it (append mode so several test files and processes can share one
report); otherwise recording is a no-op, so the tests run the same with or
without a report being collected.
"""

from __future__ import annotations

import json
import os

REPORT_ENV = "DOMAINWATCH_FAULT_REPORT"


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB, read from /proc (VmRSS)."""
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                # "VmRSS:     12345 kB"
                return int(line.split()[1]) / 1024.0
    raise ValueError(f"no VmRSS for pid {pid}")


def record(cell: str, outcome: str, seconds: float, rss_mb: float | None, ok: bool) -> None:
    """Append one cell result to the report file named by DOMAINWATCH_FAULT_REPORT."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    line = json.dumps(
        {
            "cell": cell,
            "outcome": outcome,
            "seconds": round(float(seconds), 4),
            "rss_mb": None if rss_mb is None else round(float(rss_mb), 2),
            "ok": bool(ok),
        },
        sort_keys=False,
    )
    # One write() of a single short line with O_APPEND: concurrent writers from
    # several pytest processes do not interleave within a line.
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
