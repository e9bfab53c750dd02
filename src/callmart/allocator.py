"""The allocators of a run: jemalloc for Arrow, which hands the memory of finished batches back to the system; and
C's malloc kept from holding on to large blocks, but not from reusing the top of its heaps."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

__all__ = ["CHOICE_ENV", "MMAP_THRESHOLD", "TOP_PAD", "returning_memory"]

CHOICE_ENV = "ARROW_DEFAULT_MEMORY_POOL"
"""Arrow's own setting: where it names an allocator, that one is kept."""

MMAP_THRESHOLD = 1 << 20
"""Blocks this large and larger are mapped apart, and unmapped when freed. glibc starts at 128 KB: a 5M-call load
peaked as low with either, but below 1 MB more of the batches' scratch arrays are mapped and zeroed afresh. Fixed:
glibc raises the threshold each time a mapped block is freed (up to 32 MB), after which blocks of that size come
from the heap, where a freed block below a live one stays resident (large blocks of a load: key tables, COPY
buffers, NumPy's scratch arrays): a 5M-call load peaked at 335-345 MB that way, at 280-283 MB with the threshold
fixed, in the same time."""
_M_MMAP_THRESHOLD = -3
_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"

TOP_PAD = 4 << 20
"""Free memory each malloc heap keeps at its top instead of handing it back to the system. glibc keeps 128 KB:
each batch's scratch arrays (NumPy's, under 1 MB) were then mapped and zeroed afresh, 200,000 page faults in a
1M-call load (250,000 with no pad at all). With 4 MB, 67,000, and about 0.3 s less CPU, for 4-6 MB more at the
peak; 2 MB left 128,000, 8 MB 51,000-76,000 for 4 MB more (measured side by side)."""
_M_TOP_PAD = -2
_PAD_ENV = "MALLOC_TOP_PAD_"


def _tune_malloc() -> None:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD and pad its heaps' tops with TOP_PAD, for the rest of the
    process. glibc's own settings (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TOP_PAD_`), where set, are kept."""
    if not sys.platform.startswith("linux"):
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # glibc has it; musl does not
    if mallopt is None:
        return
    for option, value, env in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD, _THRESHOLD_ENV), (_M_TOP_PAD, TOP_PAD, _PAD_ENV)):
        if not os.environ.get(env):
            mallopt(option, value)


@contextmanager
def returning_memory() -> Iterator[None]:
    """Within the block, Arrow allocates from jemalloc where this build of Arrow has it.

    Arrow's default, mimalloc, keeps the pages that a streamed load's threads free for their next batches, so
    the process grows with the batches in flight: a load of 5M calls peaked at 315 MB with it and 300 MB with
    jemalloc (1M calls: 268 MB and 246 MB), in the same time. Arrays made in the block stay valid after it. C's
    malloc keeps a fixed mmap threshold and a padded heap top from then on (_tune_malloc)."""
    _tune_malloc()
    if os.environ.get(CHOICE_ENV):
        yield
        return
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # Arrow built without it (Windows)
        yield
        return
    before = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(before)
