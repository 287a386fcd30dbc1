"""Benchmark: deflate and inflate of the collector's cached cells, zlib against ISA-L.

    python bench/codec.py [--domains 10000] [--rounds 5]

Renders N populated domains (bench/render.py's store) through the real collector, takes every
cached cell's text (one family, or family and check, of 256 domains: what a refresh deflates and
a plain scrape inflates), and times level-1 gzip deflate and inflate of all of them with the
standard library's zlib and with python-isal's isal_zlib, one thread. Also the ~3.5 KB per-domain
text a state row packs. Prints MB/s (median, min-max) and the compression ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isal import isal_zlib

from bench.render import populated_store
from exporter.collector import DomainCollector, _render


def _rate(work: Callable[[], object], size: int, rounds: int) -> tuple[float, float, float]:
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        rates.append(size / (time.perf_counter() - start) / 1e6)
    return statistics.median(rates), min(rates), max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    store = populated_store(args.domains)
    collector = DomainCollector(store, keep_plain=True)
    collector.prerender()
    cells = [p for block in collector._blocks for p in block.plain if p]
    rows = ["\x00".join(_render(s, 0.0)).encode() for s in store.snapshot()]
    print(
        f"{args.domains} domains: {len(cells)} cells, {sum(map(len, cells)) / 1e6:.1f} MB; "
        f"{len(rows)} state rows, {sum(map(len, rows)) / len(rows):.0f} B each; "
        f"{args.rounds} rounds, MB/s median (min-max)"
    )
    libraries: list[tuple[str, ModuleType]] = [("zlib", zlib), ("isal", isal_zlib)]
    for what, texts, wbits in (("cells (gzip)", cells, 31), ("state rows (zlib)", rows, 15)):
        for name, lib in libraries:
            print(f"{what:18} {name:5} {_measure(lib, texts, wbits, args.rounds)}")


def _measure(lib: ModuleType, texts: list[bytes], wbits: int, rounds: int) -> str:
    size = sum(map(len, texts))
    packed = [lib.compress(t, 1, wbits=wbits) for t in texts]
    assert [zlib.decompress(p, wbits=wbits) for p in packed] == texts  # standard streams

    def deflate() -> object:
        return [lib.compress(t, 1, wbits=wbits) for t in texts]

    def inflate() -> object:
        return [lib.decompress(p, wbits=wbits) for p in packed]

    d, i = _rate(deflate, size, rounds), _rate(inflate, size, rounds)
    return (
        f"deflate {d[0]:5.0f} ({d[1]:.0f}-{d[2]:.0f})  inflate {i[0]:5.0f} ({i[1]:.0f}-{i[2]:.0f})"
        f"  ratio {size / sum(map(len, packed)):.1f}"
    )


if __name__ == "__main__":
    main()
