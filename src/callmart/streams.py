"""Running a batch pipeline in a background thread, so that parsing overlaps the database's bulk load."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["prefetched", "prefetched_first"]

T = TypeVar("T")
_DONE = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield items produced by a worker thread that stays at most `depth` items ahead.

    Arrow's compute functions release the GIL, so reading and cleaning the next batch runs on the second core
    while the database ingests this one. An error in the worker is raised here; stopping early stops it."""
    ready: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as error:  # noqa: BLE001 - handed over to the consuming thread
            put(_Failed(error))
        finally:
            put(_DONE)

    worker = threading.Thread(target=work, name="callmart-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


def prefetched_first(items: Iterable[T]) -> tuple[T, Iterator[T]] | None:
    """The first item and the rest, prefetched as by `prefetched`; None when there are no items."""
    stream = prefetched(items)
    first = next(stream, None)
    return None if first is None else (first, stream)
