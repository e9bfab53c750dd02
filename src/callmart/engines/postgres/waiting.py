"""Small parts of a routed COPY, waiting by table in an unnamed temporary file until they are worth a statement.

A period of many days splits each batch into a small part per day; a COPY statement each, and an encoder each,
cost more than the few hundred rows they carry. Parts wait as Arrow's IPC messages, so that a table's waiting rows
are encoded once, when taken."""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from ...spill import SpillFile

__all__ = ["FILE_BYTES", "STATEMENT_BYTES", "WaitingParts"]

STATEMENT_BYTES = 1 << 20
"""Rows (in Arrow's bytes) worth a COPY statement of their own: its fixed cost is then a small share of the
server's work."""

FILE_BYTES = 256 << 20
"""Bytes the file may hold before every table's waiting rows are taken and the file emptied."""


@dataclass
class _Waiting:
    """One table's waiting batches: their schema and where they lie in the file, in the order kept."""

    schema: pa.Schema
    starts: array[int] = field(default_factory=lambda: array("q"))
    ends: array[int] = field(default_factory=lambda: array("q"))
    size: int = 0


class WaitingParts:
    """Batches kept by table (any key) in an unnamed temporary file, read back when taken; the file is gone with
    the process, even a killed one. Where no file can be written, `keep` declines and the caller writes the batch
    at once."""

    def __init__(self) -> None:
        self._file = SpillFile("callmart-copy-")
        self._waiting: dict[str, _Waiting] = {}

    def __enter__(self) -> WaitingParts:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    @property
    def file_size(self) -> int:
        """Bytes written to the file since it was last emptied."""
        return self._file.size

    def keep(self, key: str, batch: pa.RecordBatch) -> int | None:
        """Keep a batch under `key`; return the bytes now waiting under it, or None if the batch could not be kept
        (nothing of it is then kept)."""
        start = self._file.size
        if not self._file.append([memoryview(batch.serialize())]):
            return None
        end = self._file.size
        waiting = self._waiting.setdefault(key, _Waiting(batch.schema))
        if waiting.ends and waiting.ends[-1] == start:
            waiting.ends[-1] = end  # follows its previous batch: one read
        else:
            waiting.starts.append(start)
            waiting.ends.append(end)
        waiting.size += end - start
        return waiting.size

    def take(self, key: str) -> pa.RecordBatch:
        """The rows waiting under `key` as one batch, in the order kept; they stop waiting. When nothing waits any
        more, the file is emptied."""
        waiting = self._waiting.pop(key)
        # Read into Arrow's memory, which goes back to the system when freed; as Python bytes, into C's heap,
        # where freed blocks under live ones stay resident.
        read = pa.allocate_buffer(waiting.size)
        into = memoryview(read)
        for start, end in zip(waiting.starts, waiting.ends, strict=True):
            self._file.read_into(into[: end - start], start)
            into = into[end - start :]
        messages = pa.ipc.MessageReader.open_stream(read)
        batches = [pa.ipc.read_record_batch(message, waiting.schema) for message in messages]
        if not self._waiting:
            self._file.empty()
        columns = pa.Table.from_batches(batches, waiting.schema).columns
        return pa.RecordBatch.from_arrays([c.combine_chunks() for c in columns], schema=waiting.schema)

    def take_all(self) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Each key with rows waiting and its rows, as `take` gives them, one key after the other."""
        for key in list(self._waiting):
            yield key, self.take(key)
