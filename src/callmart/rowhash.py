"""A 64-bit hash of each staged row's content, computed in the client as batches stream by, so that finding exact
duplicate rows in the database is a group by one integer column instead of by every column."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

__all__ = ["ROW_HASH", "RepeatedHashes", "RowHasher"]

ROW_HASH = "row_hash"

PREFIX_BITS = 32
"""Bits of each hash kept in the client to find repeats: 4 bytes a row; the few prefixes shared by chance are
sorted out by the exact comparison that follows."""


class RowHasher:
    """Appends ROW_HASH over `columns` to each batch. Arrow has no row hash; DuckDB, already at hand to read
    JSON, hashes an Arrow batch in place. One engine per hasher, used by one thread at a time."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self._engine: duckdb.DuckDBPyConnection | None = None

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch with its rows' hashes appended."""
        if self._engine is None:
            self._engine = duckdb.connect()
            # The other core is busy with the database's bulk load.
            self._engine.execute("SET threads = 1")
        content = duckdb.FunctionExpression("hash", *(duckdb.ColumnExpression(c) for c in self.columns))
        hashed = self._engine.from_arrow(batch.select(self.columns)).select(content).to_arrow_table().column(0)
        # Reinterpreted, not converted: equal hashes stay equal, and PostgreSQL has no unsigned 64-bit type.
        signed = pc.cast(hashed, pa.int64(), safe=False).combine_chunks()
        return batch.append_column(pa.field(ROW_HASH, pa.int64()), signed)

    def close(self) -> None:
        """Release the engine."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None


class RepeatedHashes:
    """Keeps the first PREFIX_BITS of each row hash as batches stream by, to tell at the end which prefixes
    occur more than once: a sort in the client instead of a group by of every staged row in the database."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []

    def add(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Keep the batch's hash prefixes; the batch passes through."""
        hashes = batch.column(ROW_HASH).to_numpy(zero_copy_only=False)
        self._parts.append((hashes >> (64 - PREFIX_BITS)).astype(np.int32))
        return batch

    def repeated(self) -> list[int]:
        """The prefixes seen more than once, ascending, as `prefix` computes them in SQL."""
        if not self._parts:
            return []
        prefixes = np.concatenate(self._parts)
        self._parts = []
        prefixes.sort()
        same = prefixes[1:] == prefixes[:-1]
        return [int(p) for p in np.unique(prefixes[1:][same])]


def prefix(row_hash: sa.ColumnElement[int]) -> sa.ColumnElement[int]:
    """The hash's first PREFIX_BITS, signed, as RepeatedHashes keeps them."""
    return row_hash.op(">>")(sa.cast(sa.literal(64 - PREFIX_BITS), sa.Integer))
