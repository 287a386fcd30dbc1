"""Run the fault-matrix suite (tests/faults) and print its table: cell, outcome, time, RSS.

    python bench/faultmatrix.py [--report PATH] [--markdown] [-- extra pytest args]

Every cell of tests/faults records one line through tests/faults/report.py when the environment
variable DOMAINWATCH_FAULT_REPORT names a file; this script sets it, runs pytest on tests/faults,
and prints one row per cell (a cell recorded twice, e.g. HTTP and HTTPS variants with the same
name, keeps both rows). Exit status: pytest's, or 1 if any recorded cell says ok=false.
Only loopback servers are involved, as in the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path) -> list[dict[str, object]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def table(rows: list[dict[str, object]], markdown: bool) -> str:
    header = ("cell", "outcome", "time to fail (s)", "RSS (MB)", "ok")
    body = [
        (
            str(r["cell"]),
            str(r["outcome"]),
            f"{float(r['seconds']):.2f}",  # type: ignore[arg-type]
            "-" if r.get("rss_mb") is None else f"{float(r['rss_mb']):.0f}",  # type: ignore[arg-type]
            "yes" if r.get("ok") else "NO",
        )
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*row) for row in [header, *body])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="keep the JSON-lines report here")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest")
    args = parser.parse_args()
    report = args.report or Path(tempfile.mkstemp(prefix="faultmatrix-", suffix=".jsonl")[1])
    report.write_text("")
    env = {**os.environ, "DOMAINWATCH_FAULT_REPORT": str(report)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/faults",
         *args.pytest_args],
        cwd=ROOT,
        env=env,
        check=False,
    )
    rows = load(report)
    print()
    print(table(rows, args.markdown))
    bad = sum(1 for r in rows if not r.get("ok"))
    print(f"\n{len(rows)} cells, {bad} not ok; report: {report}")
    if proc.returncode:
        return proc.returncode
    return 0 if all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
