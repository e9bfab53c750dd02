"""The allocators a run may opt into: jemalloc for Arrow, which hands the memory of finished batches back to the
system; and C's malloc kept from holding on to large blocks, but not from reusing the top of its heaps.

Arrow is imported where it is used, so that a program can call `choose_for_process` before Arrow loads."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "ARENA_MAX",
    "CHOICE_ENV",
    "JEMALLOC_CONF",
    "JEMALLOC_ENV",
    "MMAP_THRESHOLD",
    "PROCESS_POOL",
    "TOP_PAD",
    "choose_for_process",
    "process_settings",
    "returning_memory",
]

CHOICE_ENV = "ARROW_DEFAULT_MEMORY_POOL"
"""Arrow's own setting: where it names an allocator, that one is kept."""

PROCESS_POOL = "jemalloc"
"""The allocator `choose_for_process` names in CHOICE_ENV. Arrow reads that setting once, as it loads, for its C++
internals too (IPC compression, its thread pools' scratch), which `returning_memory` cannot reach: they would
otherwise allocate from mimalloc, whose per-thread pages stay resident."""

JEMALLOC_ENV = "JE_ARROW_MALLOC_CONF"
"""Arrow's jemalloc reads its settings here as Arrow loads, after its own (where a setting is in both, this one)."""

JEMALLOC_CONF = "dirty_decay_ms:100,muzzy_decay_ms:100"
"""What `choose_for_process` sets in JEMALLOC_ENV: freed pages go back to the system within a tenth of a second.
Arrow's own setting keeps them a second; a streamed load frees batches many times a second, and its peak held
pages freed within that second. At once (0) costs a load time: each batch's pages are faulted in afresh."""

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

ARENA_MAX = 2
"""Most malloc arenas. glibc gives each new thread one of its own, up to 8 per core, and memory freed in one arena
serves only the threads using it: a load's reader and worker threads each kept their own resident."""
_M_ARENA_MAX = -8
_ARENA_ENV = "MALLOC_ARENA_MAX"


def choose_for_process() -> None:
    """Name PROCESS_POOL as Arrow's allocator for the whole process, unless CHOICE_ENV names one already, and
    give it JEMALLOC_CONF, unless JEMALLOC_ENV holds settings already.

    For the program that owns the process (the `callmart` command), before anything imports pyarrow: Arrow reads
    the setting as it loads, and the setting passes to the process's children. Where Arrow has no jemalloc
    (Windows), nothing changes."""
    for name, value in process_settings().items():
        os.environ.setdefault(name, value)


def process_settings() -> dict[str, str]:
    """The environment settings `choose_for_process` gives a process where it has none of its own."""
    return {} if sys.platform == "win32" else {CHOICE_ENV: PROCESS_POOL, JEMALLOC_ENV: JEMALLOC_CONF}


def _tune_malloc() -> None:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD, pad its heaps' tops with TOP_PAD and keep at most ARENA_MAX
    arenas, for the rest of the process. glibc's own settings (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TOP_PAD_`,
    `MALLOC_ARENA_MAX`), where set, are kept."""
    if not sys.platform.startswith("linux"):
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # glibc has it; musl does not
    if mallopt is None:
        return
    settings = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD, _THRESHOLD_ENV),
        (_M_TOP_PAD, TOP_PAD, _PAD_ENV),
        (_M_ARENA_MAX, ARENA_MAX, _ARENA_ENV),
    )
    for option, value, env in settings:
        if not os.environ.get(env):
            mallopt(option, value)


@contextmanager
def returning_memory() -> Iterator[None]:
    """Within the block, Arrow allocates from jemalloc where this build of Arrow has it.

    Arrow's default, mimalloc, keeps the pages that a streamed load's threads free for their next batches, so
    the process grows with the batches in flight; jemalloc hands them back, for a lower peak in the same time.
    Arrays made in the block stay valid after it. C's malloc keeps a fixed mmap threshold, a padded heap top and
    at most ARENA_MAX arenas from then on (_tune_malloc), for the rest of the process. Arrow's C++ internals keep
    the allocator Arrow chose as it loaded: the `callmart` command calls `choose_for_process` first.

    The library never applies this by itself, since in a host that stays up (an Airflow worker, an Azure
    Functions host) the malloc settings would outlive the run. `callmart run` wraps its run in it; a program
    using the API opts in the same way:

        with allocator.returning_memory():
            mart.run()
    """
    import pyarrow as pa

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
