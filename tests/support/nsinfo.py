"""Reads domain_nameserver_info back into one nameserver set per source, checking its shape.

The family has one series per nameserver, with a label per source that has a set: "1" if the
source lists that server, "0" if it lists others. A source without a set has no label (unknown,
not "lists none"). Tests compare sets, so they read the series through `nameserver_sets`, which
also fails on a series that breaks the shape (a value other than 1, a source label other than
"0"/"1", a nameserver twice, series of one domain that disagree on which sources have a set).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

SOURCES = ("expected", "registry", "parent", "child", "previous")


def nameserver_sets(series: Iterable[tuple[Mapping[str, str], float]]) -> dict[str, set[str]]:
    """source -> the nameservers it lists, from the domain_nameserver_info series of ONE domain
    (e.g. `scrape.series("domain_nameserver_info", domain=d)`). A source is a key only when the
    series carry its label; its set may then be empty when the 16-series cap left only other
    servers (a source's set is never empty in the exposition itself)."""
    out: dict[str, set[str]] = {}
    seen: set[str] = set()
    label_sets: set[frozenset[str]] = set()
    for labels, value in series:
        assert value == 1, f"domain_nameserver_info is always 1: {dict(labels)} {value}"
        ns = labels["nameserver"]
        assert ns not in seen, f"nameserver {ns} has more than one series"
        seen.add(ns)
        present = frozenset(source for source in SOURCES if source in labels)
        label_sets.add(present)
        assert present, f"a series without any source label: {dict(labels)}"
        assert any(labels[source] == "1" for source in present), (
            f"a nameserver that no source lists: {dict(labels)}"
        )
        for source in present:
            assert labels[source] in ("0", "1"), f"{source}={labels[source]!r}: {dict(labels)}"
            listed = out.setdefault(source, set())
            if labels[source] == "1":
                listed.add(ns)
    assert len(label_sets) <= 1, f"the series disagree on which sources have a set: {label_sets}"
    return out
