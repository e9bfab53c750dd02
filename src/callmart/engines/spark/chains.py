"""Chains of Spark jobs and commits run side by side in threads of one session."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["side_by_side"]


def side_by_side(chains: list[Callable[[], None]]) -> None:
    """Run the chains of Spark jobs and commits in threads of their own, side by side, and return when all are
    done; the first error, if any, is raised then."""
    # A Delta commit is mostly waiting (planning, listing the log, writing it), a second or more each: chains of
    # commits to different tables overlap well in one session.
    if len(chains) <= 1:
        for chain in chains:
            chain()
        return
    with ThreadPoolExecutor(max_workers=len(chains), thread_name_prefix="callmart-chain") as pool:
        running = [pool.submit(chain) for chain in chains]
    for finished in running:
        finished.result()
