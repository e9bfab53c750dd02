"""Staging: extract a source, clean it and bulk-load the loadable rows into a staging table."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from . import dialect, rejects
from .clean import clean_batch, raw_lines
from .declare import Check, Column, Dimension, Fact
from .extract import SOURCE_FILE, SOURCE_ROW, read_source
from .streams import prefetched

__all__ = ["RawRows", "Staged", "source_fields", "stage", "staged_columns"]

RowFilter = Callable[[pa.RecordBatch], pa.Array]
"""Selects the rows of a cleaned batch that belong to the step (null where a bad field hides it)."""

RawRows = Callable[[list[pa.Table]], Iterable[pa.RecordBatch]]
"""The raw rows a step reads (text fields, source file and row), adding the rows it cannot split to the list."""


@dataclass
class Staged:
    """What one staging step read, staged, rejected and doubted; rows no step can claim are kept apart."""

    read: int = 0
    staged: int = 0
    rejects: list[pa.Table] = field(default_factory=list)
    unplaced: list[pa.Table] = field(default_factory=list)

    def reject_table(self) -> pa.Table:
        """Every error and warning of the step's rows."""
        return rejects.concat(self.rejects)

    @property
    def rejected(self) -> int:
        """Distinct source rows of the step that could not be loaded."""
        return rejects.rows_rejected(self.reject_table())

    @property
    def warned(self) -> int:
        """Warnings recorded for loaded rows."""
        return rejects.warnings(self.reject_table())


def staged_columns(table: Dimension | Fact) -> tuple[Column, ...]:
    """The declared columns a staging table receives from the source: own columns, then reference values."""
    return (*table.columns, *(r.value for r in table.references))


def source_fields(table: Dimension | Fact) -> list[str]:
    """The source fields a staging step reads, in declaration order."""
    return list(dict.fromkeys(c.source for c in staged_columns(table) if c.source))


def stage(
    conn: sa.Connection,
    staging: sa.Table,
    table: Dimension | Fact,
    source_dir: Path,
    keep: RowFilter | None = None,
    enrich: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
    on_rows: Callable[[int], None] | None = None,
    finish: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
    route: Callable[[pa.RecordBatch], list[tuple[sa.Table, pa.RecordBatch]]] | None = None,
    also_fresh: Sequence[sa.Table] = (),
    raw_rows: RawRows | None = None,
) -> Staged:
    """Truncate the staging table, then fill it with the cleaned rows of the source that `keep` selects.

    Bad rows in scope are rejects of the step; bad rows that `keep` cannot place (say, an unparsable date in a
    fact extract) belong to no step and go to `unplaced`. `enrich` adds columns (keys) to the loadable rows;
    like reading and cleaning, it runs in a worker thread, so it must not use the connection. `finish` adds more
    columns in a thread of its own, while the next batches are read and cleaned; `route`, in that thread too,
    turns each finished batch into the parts to write, (table, rows), the staging table's part among them
    (`also_fresh`: the other tables, created in this transaction). `raw_rows`: where the rows come from, if not
    from the source's files (a backfill's rows of one period, set apart beforehand)."""
    conn.execute(dialect.Truncate(staging))
    columns = staged_columns(table)
    fields = source_fields(table)
    checks = table.checks if isinstance(table, Fact) else ()
    sources = {c.name: c.source for c in columns if c.source}
    result = Staged()
    problems: list[pa.Table] = []

    def extracted(problems: list[pa.Table]) -> Iterable[pa.RecordBatch]:
        return read_source(source_dir, table.source, fields, problems)

    def cleaned() -> Iterator[pa.RecordBatch]:
        for raw in (raw_rows or extracted)(problems):
            outcome = clean_batch(raw, columns)
            scope = pa.repeat(pa.scalar(True), raw.num_rows) if keep is None else keep(outcome.rows)
            in_scope = pc.fill_null(scope, False)
            unplaced = pc.and_(pc.is_null(scope), outcome.bad)
            _keep_rejects(result.rejects, outcome.rejects, outcome.rows.column(SOURCE_ROW), in_scope)
            _keep_rejects(result.unplaced, outcome.rejects, outcome.rows.column(SOURCE_ROW), unplaced)
            result.read += pc.sum(in_scope).as_py() or 0
            rows = outcome.rows.filter(pc.and_not(in_scope, outcome.bad))
            result.rejects.extend(_doubts(rows, raw.filter(pc.and_not(in_scope, outcome.bad)), checks, sources))
            if on_rows is not None:
                on_rows(raw.num_rows)
            yield rows if enrich is None else enrich(rows)

    batches: Iterable[pa.RecordBatch] = cleaned()
    if finish is not None:
        batches = map(finish, prefetched(batches))
    if route is None:
        result.staged = dialect.bulk_insert(conn, staging, batches, truncated=True)
        dialect.analyze(conn, staging)
    else:
        # No statistics: with its rows already routed, the staging table only feeds the duplicate-row check.
        parts = (part for batch in batches for part in route(batch))
        result.staged = dialect.bulk_insert_routed(conn, parts, truncated=[staging, *also_fresh]).get(staging.name, 0)
    _settle_problems(result, problems, placeable=keep is None)
    return result


def _keep_rejects(into: list[pa.Table], found: pa.Table, rows: pa.Array, mask: pa.Array) -> None:
    """Add the rejects of the rows that mask selects."""
    if found.num_rows and pc.any(mask).as_py():
        picked = found.filter(pc.is_in(found[SOURCE_ROW], value_set=pc.filter(rows, mask)))
        if picked.num_rows:
            into.append(picked)


def _settle_problems(result: Staged, problems: list[pa.Table], placeable: bool) -> None:
    """Rows that could not even be split into fields: rejects of a whole-extract step, unplaced otherwise."""
    for problem in problems:
        if not placeable and pc.all(pc.equal(problem["severity"], rejects.ERROR)).as_py():
            result.unplaced.append(problem)
            continue
        result.rejects.append(problem)
        result.read += rejects.rows_rejected(problem)


def _doubts(
    rows: pa.RecordBatch, raw: pa.RecordBatch, checks: Sequence[Check], sources: dict[str, str]
) -> list[pa.Table]:
    """Warnings for loadable rows that fail a declared check, naming the source field and its text as read."""
    found = []
    for check in checks:
        value = rows.column(check.column)
        limit = rows.column(check.limit) if isinstance(check.limit, str) else pa.scalar(check.limit, value.type)
        doubtful = pc.fill_null(pc.greater(value, limit), False)
        if pc.any(doubtful).as_py():
            source = sources.get(check.column, check.column)
            shown = raw.column(source) if source in raw.schema.names else pc.cast(value, pa.string())
            found.append(
                rejects.make(
                    pc.filter(rows.column(SOURCE_FILE), doubtful),
                    pc.filter(rows.column(SOURCE_ROW), doubtful),
                    source,
                    pc.filter(shown, doubtful),
                    raw_lines(raw.filter(doubtful)),
                    check.reason,
                    rejects.WARNING,
                )
            )
    return found
