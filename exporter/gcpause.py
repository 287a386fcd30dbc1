"""Memory housekeeping around bulk loads: pausing Python's cyclic garbage collector while
long-lived objects are built, and giving freed memory back afterwards.

Loading a 100k-domain config or state builds millions of objects that all live on: the cyclic
collector would walk the growing heap again and again (a 12 s config load spent 9 s in it).
Reference counting still frees everything short-lived meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused(freeze: bool = False) -> Iterator[None]:
    """Collector off for the block. Only ever re-enables what was enabled, so a pause that
    overlaps another on another thread (a reload, the state restore) can shorten it but never
    leave the collector off. With `freeze`, everything alive at the end is moved out of the
    collector's sight for good first (gc.freeze()): only for objects that live as long as the
    process, the daemon's start-up."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if enabled:
            gc.enable()


def release_free_memory() -> None:
    """Hand memory freed after start-up back to the system (glibc's malloc_trim): the config
    document, decoded rows and saved lines are garbage once the first rendering is done, but
    the allocator keeps their pages (~60 MB at 100k domains). A no-op where there is no glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
