"""A 64-bit hash of each staged row's content, computed in the client as batches stream by, so that finding exact
duplicate rows in the database is a group by one integer column instead of by every column."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["ROW_HASH", "RowHasher"]

ROW_HASH = "row_hash"


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
