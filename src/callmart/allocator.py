"""The allocators of a run: jemalloc for Arrow, which hands the memory of finished batches back to the system; and
C's malloc kept from holding on to large blocks."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

__all__ = ["CHOICE_ENV", "MMAP_THRESHOLD", "returning_memory"]

CHOICE_ENV = "ARROW_DEFAULT_MEMORY_POOL"
"""Arrow's own setting: where it names an allocator, that one is kept."""

MMAP_THRESHOLD = 1 << 20
"""Blocks this large and larger are mapped apart, and unmapped when freed. glibc starts at 128 KB: a 5M-call load
peaked as low with either, but below 1 MB more of the batches' scratch arrays are mapped and zeroed afresh."""
_M_MMAP_THRESHOLD = -3
_GLIBC_ENV = "MALLOC_MMAP_THRESHOLD_"


def _fix_mmap_threshold() -> None:
    """Keep glibc's malloc from raising its mmap threshold, for the rest of the process.

    glibc raises the threshold each time a mapped block is freed (up to 32 MB), after which blocks of that size
    come from the heap, where a freed block below a live one stays resident (large blocks of a load: key tables,
    COPY buffers, NumPy's scratch arrays): a 5M-call load peaked at 335-345 MB that way, at 280-283 MB with the
    threshold fixed, in the same time. `MALLOC_MMAP_THRESHOLD_`, where set, is glibc's own choice and is kept."""
    if not sys.platform.startswith("linux") or os.environ.get(_GLIBC_ENV):
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # glibc has it; musl does not
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


@contextmanager
def returning_memory() -> Iterator[None]:
    """Within the block, Arrow allocates from jemalloc where this build of Arrow has it.

    Arrow's default, mimalloc, keeps the pages that a streamed load's threads free for their next batches, so
    the process grows with the batches in flight: a load of 5M calls peaked at 315 MB with it and 300 MB with
    jemalloc (1M calls: 268 MB and 246 MB), in the same time. Arrays made in the block stay valid after it. C's
    malloc keeps a fixed mmap threshold from then on (_fix_mmap_threshold)."""
    _fix_mmap_threshold()
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
