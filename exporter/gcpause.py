"""Pausing Python's cyclic garbage collector around bulk building of long-lived objects.

Loading a 100k-domain config or state builds millions of objects that all live on: the cyclic
collector would walk the growing heap again and again (a 12 s config load spent 9 s in it).
Reference counting still frees everything short-lived meanwhile.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Collector off for the block. Only ever re-enables what was enabled, so a pause that
    overlaps another on another thread (a reload, the state restore) can shorten it but never
    leave the collector off."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
