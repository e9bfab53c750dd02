"""The generic fact load of one period: stage the period's rows, resolve keys, replace the period."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from . import engines, rejects
from .coverage import LatestTime
from .declare import CALLS_PER_MINUTE, Fact, FirstEventWithin
from .extract import SOURCE_FILE, SOURCE_ROW
from .keys import InferredMembers, LookupCache, lookups_for, with_keys
from .metric import FirstEventsInClient, first_events
from .progress import StepResult
from .rowhash import ROW_HASH, RepeatedHashes, RowHasher, prefix
from .schema import Schema
from .stage import RawRows, Staging, staged_columns

__all__ = ["FactRowsInClient", "MinuteNumbering", "PeriodLoad", "Watcher"]

MAX_LISTED_HASHES = 10_000
"""Most repeated hash prefixes passed to the database as values; beyond, repeated hashes are found by a subquery."""


class Watcher(Protocol):
    """Sees a period's final fact rows as they are written, where the load makes them in the client (PostgreSQL)."""

    def event_columns(self, metric: FirstEventWithin) -> tuple[str, ...]:
        """Columns of the metric's events to report with each row's first event."""

    def begin(self) -> None:
        """Every final row of the period will be shown to `watch`."""

    def watch(self, rows: pa.RecordBatch, firsts: Mapping[str, pa.RecordBatch]) -> None:
        """A batch of final rows, and each row's first events by metric column (FirstEventsInClient.firsts)."""


class PeriodLoad:
    """Replaces the fact rows of one period [start, end) with the period's rows of the source, in the caller's
    transaction: stage them (keys, inferred members, and where the engine takes them, the final rows), write the
    inferred members, note the doubtful rows, replace the period."""

    def __init__(
        self,
        conn: sa.Connection,
        schema: Schema,
        fact: Fact,
        start: datetime,
        end: datetime,
        cache: LookupCache | None = None,
        watcher: Watcher | None = None,
    ) -> None:
        """`cache`: the lookups of the run's earlier periods. `watcher`: shown the final rows, where they are made
        in the client."""
        self.conn, self.schema, self.fact, self.start, self.end = conn, schema, fact, start, end
        self.lookups = lookups_for(conn, schema, fact) if cache is None else cache.lookups_for(conn, schema, fact)
        self.numbering = MinuteNumbering(fact)
        self.hasher = RowHasher([c.name for c in staged_columns(fact)]) if fact.warn_duplicate_rows else None
        self.repeats = RepeatedHashes()
        self.replace = engines.of(conn).period_replace(conn, schema[fact.name], start, end)
        self.in_client = FactRowsInClient(self, watcher) if self.replace.FINAL_ROWS_IN_CLIENT else None
        # Ids the dimensions lack get their keys as the rows stream by, before staging: no update of staged rows.
        self.inferred = InferredMembers(conn, schema, fact)
        # What the extract reaches tells whether it covers the period (coverage.py): seen as its rows go by.
        self.latest = LatestTime(fact)

    def run(
        self, source_dir: Path, raw_rows: RawRows | None = None, on_rows: Callable[[int], None] | None = None
    ) -> StepResult:
        """Load the period from the source (or from `raw_rows`, the source's rows set apart for the period); the
        caller commits."""
        conn, schema, fact = self.conn, self.schema, self.fact
        staged = _PeriodStaging(self, source_dir, raw_rows, on_rows).run(conn)
        created = self.inferred.write(conn)
        doubts = [
            staged.reject_table(),
            *(_duplicate_rows(conn, schema, fact, self.repeats.repeated()) if fact.warn_duplicate_rows else []),
        ]
        # Rows made in the client are already in the period's tables; otherwise they come from staging.
        deleted, inserted = self.replace.finish(
            None if self.in_client is not None else lambda lower, upper: _rows_from_staging(schema, fact, lower, upper)
        )
        found = rejects.concat(doubts)
        return StepResult(
            table=fact.name,
            period=(self.start, self.end),
            read=staged.read,
            loaded=inserted,
            rejected=staged.rejected,
            warned=rejects.warnings(found),
            inserted=inserted,
            deleted=deleted,
            inferred=created,
            rejects=found,
            unplaced=rejects.concat(staged.unplaced),
            source_latest=self.latest.value,
        )


class _PeriodStaging(Staging):
    """The staging of a period's rows, each batch with its keys, then its inferred members and row hash; where
    the engine takes the final rows, those go to the period's tables as the batch is staged."""

    SCOPED = True
    FINISHES = True

    def __init__(
        self, load: PeriodLoad, source_dir: Path, raw_rows: RawRows | None, on_rows: Callable[[int], None] | None
    ) -> None:
        super().__init__(load.schema[load.fact.staging], load.fact, source_dir, raw_rows, on_rows)
        self.load = load
        self.time = load.fact.time_column

    def in_scope(self, rows: pa.RecordBatch) -> pa.Array:
        self.load.latest.note(rows)
        time = rows.column(self.time)
        lower, upper = pa.scalar(self.load.start, time.type), pa.scalar(self.load.end, time.type)
        return pc.and_(pc.greater_equal(time, lower), pc.less(time, upper))

    def enrich(self, rows: pa.RecordBatch) -> pa.RecordBatch:
        return self.load.numbering.number(with_keys(rows, self.load.lookups))

    def finish(self, rows: pa.RecordBatch) -> pa.RecordBatch:
        rows = self.load.inferred.fill(rows)
        return rows if self.load.hasher is None else self.load.repeats.add(self.load.hasher(rows))

    @property
    def routed(self) -> list[sa.Table]:
        return self.load.replace.new_tables if self.load.in_client is not None else []

    def parts(self, rows: pa.RecordBatch) -> list[tuple[sa.Table, pa.RecordBatch]]:
        assert self.load.in_client is not None
        return [(self.staging, rows), *self.load.in_client.parts(rows)]


class FactRowsInClient:
    """Each staged batch and the fact table's rows made from it in the client (keys, metrics, the table's
    columns), as the parts to write while staging."""

    def __init__(self, load: PeriodLoad, watcher: Watcher | None) -> None:
        self.table = load.schema[load.fact.name]
        carry = watcher.event_columns if watcher is not None else lambda metric: ()
        self.metrics = [
            (m.column, FirstEventsInClient(load.conn, load.schema, m, load.start, load.end, carry(m)))
            for m in load.fact.metrics
        ]
        self.replace = load.replace
        self.watcher = watcher
        if watcher is not None:
            watcher.begin()

    def parts(self, batch: pa.RecordBatch) -> list[tuple[sa.Table, pa.RecordBatch]]:
        """The period's tables' parts of one staged batch."""
        rows = batch
        firsts = {}
        for column, events in self.metrics:
            firsts[column] = events.firsts(rows)
            rows = rows.append_column(pa.field(column, pa.int32()), firsts[column].column(column))
        rows = rows.select([c.name for c in self.table.columns])
        if self.watcher is not None:
            self.watcher.watch(rows, firsts)
        return self.replace.parts(rows)


def _duplicate_rows(conn: sa.Connection, schema: Schema, fact: Fact, repeated: list[int]) -> list[pa.Table]:
    """Warnings for staged rows identical to an earlier row of the extract: loaded, but worth a look.

    `repeated`: the hash prefixes that occur more than once; only the rows that have one are compared, column by
    column, so that neither a shared prefix nor a hash collision can make a warning."""
    stg = schema[fact.staging]
    content = [stg.c[c.name] for c in staged_columns(fact)]
    if not repeated:
        return []
    row_hash = stg.c[ROW_HASH]
    # Exact duplicates are few: their prefixes go as values. A file loaded twice over would make too many for
    # one statement's parameters: the database groups the hashes instead.
    listed = len(repeated) <= MAX_LISTED_HASHES
    if listed:
        chosen = prefix(row_hash).in_(repeated)
    else:
        chosen = row_hash.in_(sa.select(row_hash).group_by(row_hash).having(sa.func.count() > 1))
    candidates = sa.select(stg).where(chosen).subquery()
    same = [candidates.c[c.name] for c in content]
    place = sa.func.row_number().over(partition_by=same, order_by=(candidates.c[SOURCE_FILE], candidates.c[SOURCE_ROW]))
    numbered = sa.select(candidates.c[SOURCE_FILE], candidates.c[SOURCE_ROW], place.label("place")).subquery()
    with contextlib.nullcontext() if listed else engines.of(conn).grouping_by_sort(conn):
        found = conn.execute(
            sa.select(numbered.c[SOURCE_FILE], numbered.c[SOURCE_ROW]).where(numbered.c.place > 1)
        ).all()
    return [
        rejects.make(
            [r[0] for r in found],
            [r[1] for r in found],
            None,
            None,
            None,
            rejects.DUPLICATE_ROW,
            rejects.WARNING,
        )
    ]


class MinuteNumbering:
    """Numbers a period's rows as they stream by: key = minute number * CALLS_PER_MINUTE + the row's place among
    that minute's rows in extract order. Loading the same extract again, or the same day from a longer extract,
    gives every row the same key, with no sort of the period and no state beyond one counter per minute."""

    def __init__(self, fact: Fact) -> None:
        self.fact = fact
        self.seen: dict[int, int] = {}

    def number(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch with the fact's key column appended."""
        minutes = pc.divide(pc.cast(batch.column(self.fact.time_column), pa.int64()), pa.scalar(60, pa.int64()))
        if len(minutes) == 0:
            return batch.append_column(pa.field(self.fact.key, pa.int64()), pa.array([], pa.int64()))
        # Place within this batch's minute: rank among equal minutes in order of appearance, from 0.
        place = pc.subtract(pc.rank(minutes, tiebreaker="first"), pc.rank(minutes, tiebreaker="min"))
        counts = pc.value_counts(minutes)
        distinct, how_many = counts.field("values"), counts.field("counts")
        before = pa.array([self.seen.get(m, 0) for m in distinct.to_pylist()], pa.int64())
        offset = pc.take(before, pc.index_in(minutes, value_set=distinct))
        rank = pc.add(pc.add(pc.cast(place, pa.int64()), offset), pa.scalar(1, pa.int64()))
        for minute, previous, added in zip(distinct.to_pylist(), before.to_pylist(), how_many.to_pylist(), strict=True):
            self.seen[minute] = previous + added
        if pc.max(rank).as_py() >= CALLS_PER_MINUTE:
            raise ValueError(f"more than {CALLS_PER_MINUTE - 1:,} rows share one minute of {self.fact.time_column}")
        key = pc.add(pc.multiply(minutes, pa.scalar(CALLS_PER_MINUTE, pa.int64())), rank)
        return batch.append_column(pa.field(self.fact.key, pa.int64()), key)


def _rows_from_staging(schema: Schema, fact: Fact, start: datetime, end: datetime) -> sa.Select[Any]:
    """The staged rows of [start, end) as fact rows, with their keys and the metrics, named as the fact's columns."""
    stg = schema[fact.staging]
    table = schema[fact.name]
    exprs: dict[str, sa.ColumnElement[Any]] = {
        name: stg.c[name] for name in [fact.key, *(c.name for c in fact.columns), *(r.column for r in fact.references)]
    }
    rows: sa.FromClause = stg
    for metric in fact.metrics:
        firsts = first_events(schema, metric, stg, fact.key, start, end)
        rows = rows.outerjoin(firsts, firsts.c.fact_key == stg.c[fact.key])
        exprs[metric.column] = firsts.c.event_key
    time = stg.c[fact.time_column]
    return (
        sa.select(*(exprs[c.name].label(c.name) for c in table.columns))
        .select_from(rows)
        .where(time >= start, time < end)
    )
