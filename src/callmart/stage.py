"""Staging: extract a source, clean it and bulk-load the loadable rows into a staging table."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from . import engines, rejects
from .clean import clean_batch, raw_lines
from .declare import Check, Column, Dimension, Fact
from .engines.sql.ddl import Truncate
from .extract import SOURCE_FILE, SOURCE_ROW, read_source
from .streams import prefetched

__all__ = ["PLACE", "RawRows", "Staged", "Staging", "doubts", "source_fields", "staged_columns"]

RawRows = Callable[[list[pa.Table]], Iterable[pa.RecordBatch]]
"""The raw rows a step reads (text fields, source file and row), adding the rows it cannot split to the list."""

PLACE = "place"
"""Column of a step's rejects naming the part of the step (a period of a group) their row belongs to; null where
the reject is every part's (a file no part can claim)."""


@dataclass
class Staged:
    """What one staging step read, staged, rejected and doubted; rows no step can claim are kept apart."""

    read: int = 0
    staged: int = 0
    rejects: list[pa.Table] = field(default_factory=list)
    unplaced: list[pa.Table] = field(default_factory=list)
    read_by_place: dict[int, int] = field(default_factory=dict)
    """Where the step has parts (`Staging.places`): rows read by part; `rejects` then have a PLACE column."""

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


class Staging:
    """One staging step: truncate the staging table, then fill it with the cleaned rows of the source.

    Each batch goes through the steps below in turn; a load adds its work by overriding them. Reading, cleaning,
    `in_scope` and `enrich` run in a worker thread, so they must not use the connection; `finish` and `parts` run
    in a thread of their own while the next batches are read and cleaned."""

    SCOPED: ClassVar[bool] = False
    """The step loads only the rows `in_scope` selects (a period of a fact extract); bad rows it cannot place
    (say, an unparsable date) belong to no step and go to `unplaced`, not to its rejects."""
    FINISHES: ClassVar[bool] = False
    """`finish` has work to do, worth a thread of its own."""

    def __init__(
        self,
        staging: sa.Table,
        table: Dimension | Fact,
        source_dir: Path,
        raw_rows: RawRows | None = None,
        on_rows: Callable[[int], None] | None = None,
    ) -> None:
        """`raw_rows`: where the rows come from, if not from the source's files (a backfill's rows of one period,
        set apart beforehand). `on_rows`: told how many source rows each batch read."""
        self.staging, self.table, self.source_dir = staging, table, source_dir
        self.raw_rows, self.on_rows = raw_rows, on_rows

    def in_scope(self, rows: pa.RecordBatch) -> pa.Array:
        """The rows of a cleaned batch that belong to the step (null where a bad field hides it)."""
        return pa.repeat(pa.scalar(True), rows.num_rows)

    def places(self, rows: pa.RecordBatch) -> pa.Array | None:
        """Where one step loads several parts at once (a group of periods), the part of each in-scope row of a
        cleaned batch, from 0; None: the step is one part."""
        return None

    def enrich(self, rows: pa.RecordBatch) -> pa.RecordBatch:
        """The loadable rows with more columns (keys)."""
        return rows

    def finish(self, rows: pa.RecordBatch) -> pa.RecordBatch:
        """The enriched rows with the columns that need the order of the stream (inferred members)."""
        return rows

    @property
    def routed(self) -> list[sa.Table]:
        """Tables besides the staging table that `parts` writes, created in this transaction; none: the
        staging table alone is written, and analyzed."""
        return []

    def parts(self, rows: pa.RecordBatch) -> list[tuple[sa.Table, pa.RecordBatch]]:
        """The finished rows as the parts to write, (table, rows), the staging table's part among them."""
        return [(self.staging, rows)]

    def run(self, conn: sa.Connection) -> Staged:
        """Stage the source's rows; return what was read, staged, rejected and doubted."""
        conn.execute(Truncate(self.staging))
        result = Staged()
        problems: list[pa.Table] = []
        batches: Iterable[pa.RecordBatch] = self._cleaned(result, problems)
        if self.FINISHES:
            batches = map(self.finish, prefetched(batches))
        engine = engines.of(conn)
        if not self.routed:
            result.staged = engine.bulk_insert(conn, self.staging, batches, truncated=True)
            engine.analyze(conn, self.staging)
        else:
            # No statistics: with its rows already routed, the staging table only feeds the duplicate-row check.
            parts = (part for batch in batches for part in self.parts(batch))
            written = engine.bulk_insert_routed(conn, parts, truncated=[self.staging, *self.routed])
            result.staged = written.get(self.staging.name, 0)
        _settle_problems(result, problems, placeable=not self.SCOPED)
        return result

    def _cleaned(self, result: Staged, problems: list[pa.Table]) -> Iterator[pa.RecordBatch]:
        """The source's loadable rows of the step, enriched; rejects and doubts noted in `result`."""
        table = self.table
        columns = staged_columns(table)
        checks = table.checks if isinstance(table, Fact) else ()
        sources = {c.name: c.source for c in columns if c.source}
        raw_batches = (
            self.raw_rows(problems)
            if self.raw_rows is not None
            else read_source(self.source_dir, table.source, source_fields(table), problems)
        )
        for raw in raw_batches:
            outcome = clean_batch(raw, columns)
            scope = self.in_scope(outcome.rows)
            in_scope = pc.fill_null(scope, False)
            unplaced = pc.and_(pc.is_null(scope), outcome.bad)
            source_rows = outcome.rows.column(SOURCE_ROW)
            where = self.places(outcome.rows)
            placed = _Placing(outcome.rows, where)
            _keep_rejects(result.rejects, outcome.rejects, source_rows, in_scope, placed)
            _keep_rejects(result.unplaced, outcome.rejects, source_rows, unplaced)
            result.read += pc.sum(in_scope).as_py() or 0
            if where is not None:
                _count_places(result.read_by_place, pc.filter(where, in_scope))
            loadable = pc.and_not(in_scope, outcome.bad)
            rows = outcome.rows.filter(loadable)
            result.rejects.extend(placed(d) for d in doubts(rows, raw.filter(loadable), checks, sources))
            if self.on_rows is not None:
                self.on_rows(raw.num_rows)
            yield self.enrich(rows)


class _Placing:
    """Gives a batch's rejects the part of their row, where the step has parts."""

    def __init__(self, rows: pa.RecordBatch, where: pa.Array | None) -> None:
        self.rows, self.where = rows, where
        self._keys: pa.Array | None = None

    def __call__(self, found: pa.Table) -> pa.Table:
        """`found` with its PLACE column, where the step has parts."""
        if self.where is None:
            return found
        if self._keys is None:
            self._keys = _row_keys(self.rows.column(SOURCE_FILE), self.rows.column(SOURCE_ROW))
        at = pc.index_in(_row_keys(found[SOURCE_FILE], found[SOURCE_ROW]), value_set=self._keys)
        return found.append_column(PLACE, pc.cast(pc.take(self.where, at), pa.int32()))


def _row_keys(files: pa.Array | pa.ChunkedArray, rows: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One text per source row: its file and line."""
    keys = pc.binary_join_element_wise(files, pc.cast(rows, pa.string()), "\x1f")
    return keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys


def _keep_rejects(
    into: list[pa.Table], found: pa.Table, rows: pa.Array, mask: pa.Array, placed: _Placing | None = None
) -> None:
    """Add the rejects of the rows that mask selects."""
    if found.num_rows and pc.any(mask).as_py():
        picked = found.filter(pc.is_in(found[SOURCE_ROW], value_set=pc.filter(rows, mask)))
        if picked.num_rows:
            into.append(picked if placed is None else placed(picked))


def _count_places(counts: dict[int, int], places: pa.Array) -> None:
    """Add each part's rows among `places` to `counts`."""
    tally = pc.value_counts(places)
    for place, count in zip(tally.field("values").to_pylist(), tally.field("counts").to_pylist(), strict=True):
        if place is not None:
            counts[place] = counts.get(place, 0) + count


def _settle_problems(result: Staged, problems: list[pa.Table], placeable: bool) -> None:
    """Rows that could not even be split into fields: rejects of a whole-extract step, unplaced otherwise."""
    for problem in problems:
        if not placeable and pc.all(pc.equal(problem["severity"], rejects.ERROR)).as_py():
            result.unplaced.append(problem)
            continue
        result.rejects.append(problem)
        result.read += rejects.rows_rejected(problem)


def doubts(
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
