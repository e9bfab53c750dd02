"""The allocators a run may opt into: jemalloc for Arrow, which hands the memory of finished batches back to the
system; and C's malloc kept from holding on to large blocks, but not from reusing the top of its heaps."""

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
"""Blocks this large and larger are mapped apart, and unmapped when freed. glibc starts at 128 KB: a load peaks as
low with either, but below 1 MB more of the batches' scratch arrays are mapped and zeroed afresh. Fixed: glibc
raises the threshold each time a mapped block is freed (up to 32 MB), after which blocks of that size come from the
heap, where a freed block below a live one stays resident (large blocks of a load: key tables, COPY buffers,
NumPy's scratch arrays), and a load peaks markedly higher in the same time."""
_M_MMAP_THRESHOLD = -3
_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"

TOP_PAD = 4 << 20
"""Free memory each malloc heap keeps at its top instead of handing it back to the system. glibc keeps 128 KB:
each batch's scratch arrays (NumPy's, under 1 MB) are then mapped and zeroed afresh, page fault after page fault.
With 4 MB they reuse the last batch's pages: a fraction of the page faults and less CPU, for a few MB more at the
peak; a smaller pad leaves many of the faults, a larger one saves no more time for more memory."""
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
    the process grows with the batches in flight; jemalloc hands them back, for a lower peak in the same time.
    Arrays made in the block stay valid after it. C's malloc keeps a fixed mmap threshold and a padded heap top
    from then on (_tune_malloc), for the rest of the process.

    The library never applies this by itself, since in a host that stays up (an Airflow worker, an Azure
    Functions host) the malloc settings would outlive the run. `callmart run` wraps its run in it; a program
    using the API opts in the same way:

        with allocator.returning_memory():
            mart.run()
    """
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
