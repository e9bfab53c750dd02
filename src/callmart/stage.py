"""Staging: extract a source, clean it and bulk-load the loadable rows into a staging table."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from . import dialect
from .clean import REJECT_SCHEMA, clean_batch
from .declare import Column, Dimension, Fact
from .extract import SOURCE_ROW, read_source

__all__ = ["Staged", "stage", "staged_columns"]

RowFilter = Callable[[pa.RecordBatch], pa.Array]
"""Selects the rows of a cleaned batch that belong to the step (null where a bad field hides it)."""


@dataclass
class Staged:
    """What one staging step read, kept and rejected."""

    read: int = 0
    staged: int = 0
    unplaced: int = 0
    rejects: list[pa.Table] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        """Distinct source rows of the step rejected."""
        table = self.reject_table()
        return len(set(zip(table["source_file"].to_pylist(), table[SOURCE_ROW].to_pylist(), strict=True)))

    def reject_table(self) -> pa.Table:
        """Every reject row of the step."""
        return pa.concat_tables(self.rejects) if self.rejects else REJECT_SCHEMA.empty_table()


def staged_columns(table: Dimension | Fact) -> tuple[Column, ...]:
    """The declared columns a staging table receives from the source: own columns, then reference values."""
    return (*table.columns, *(r.value for r in table.references))


def stage(
    conn: sa.Connection,
    staging: sa.Table,
    table: Dimension | Fact,
    source_dir: Path,
    keep: RowFilter | None = None,
    enrich: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> Staged:
    """Truncate the staging table, then fill it with the cleaned rows of the source that `keep` selects.

    Bad rows in scope are counted as rejects; bad rows that `keep` cannot place (say, an unparsable date
    in a fact extract) belong to no step and are counted as unplaced. `enrich` adds columns (keys) to the
    loadable rows; like reading and cleaning, it runs in a worker thread, so it must not use the connection."""
    conn.execute(dialect.Truncate(staging))
    columns = staged_columns(table)
    fields = list(dict.fromkeys(c.source for c in columns if c.source))
    result = Staged()

    def cleaned() -> Iterator[pa.RecordBatch]:
        for raw in read_source(source_dir, table.source, fields):
            outcome = clean_batch(raw, columns)
            scope = pa.array([True] * raw.num_rows) if keep is None else keep(outcome.rows)
            in_scope = pc.fill_null(scope, False)
            result.unplaced += pc.sum(pc.and_(pc.is_null(scope), outcome.bad)).as_py() or 0
            rows = outcome.rows.filter(pc.and_not(in_scope, outcome.bad))
            if outcome.rejects.num_rows:
                scoped_rows = pc.filter(outcome.rows.column(SOURCE_ROW), in_scope)
                rejects = outcome.rejects.filter(pc.is_in(outcome.rejects[SOURCE_ROW], value_set=scoped_rows))
                if rejects.num_rows:
                    result.rejects.append(rejects)
            result.read += pc.sum(in_scope).as_py() or 0
            if on_rows is not None:
                on_rows(raw.num_rows)
            yield rows if enrich is None else enrich(rows)

    result.staged = dialect.bulk_insert(conn, staging, cleaned())
    return result
