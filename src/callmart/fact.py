"""The generic fact load of one period: stage the period's rows, resolve keys, replace the period."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
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
from .stage import PLACE, RawRows, Staging, staged_columns

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
    inferred members, note the doubtful rows, replace the period.

    A backfill's consecutive periods load as one such span, in `parts`: what each part read, rejected, replaced
    and inferred is counted apart, for its own step (`part_results`)."""

    def __init__(
        self,
        conn: sa.Connection,
        schema: Schema,
        fact: Fact,
        start: datetime,
        end: datetime,
        cache: LookupCache | None = None,
        watcher: Watcher | None = None,
        parts: Sequence[tuple[datetime, datetime]] = (),
    ) -> None:
        """`cache`: the lookups of the run's earlier periods. `watcher`: shown the final rows, where they are made
        in the client. `parts`: the consecutive periods that make up [start, end), if it is several."""
        self.conn, self.schema, self.fact, self.start, self.end = conn, schema, fact, start, end
        self.parts = _Parts(start, end, parts)
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
            *(
                _duplicate_rows(conn, schema, fact, self.repeats.repeated(), self.parts)
                if fact.warn_duplicate_rows
                else []
            ),
        ]
        self.parts.count_before(conn, schema[fact.name].c[fact.time_column])
        # Rows made in the client are already in the period's tables; otherwise they come from staging.
        deleted, inserted = self.replace.finish(
            None if self.in_client is not None else lambda lower, upper: _rows_from_staging(schema, fact, lower, upper)
        )
        self.parts.read = staged.read_by_place
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

    def part_results(self, whole: StepResult) -> list[StepResult]:
        """The step of each part, from the span's step `whole` that `run` returned."""
        return self.parts.results(whole)


class _Parts:
    """The periods a load's span is made of, and what each read, replaced and inferred, for its own step."""

    def __init__(self, start: datetime, end: datetime, parts: Sequence[tuple[datetime, datetime]]) -> None:
        self.bounds = list(parts) or [(start, end)]
        if self.bounds[0][0] != start or self.bounds[-1][1] != end:
            raise ValueError("a load's parts must span its period")
        if any(later[0] != earlier[1] for earlier, later in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError("a load's parts must follow one another")
        self.starts = pc.cast(pa.array([lower for lower, _ in self.bounds[1:]], pa.timestamp("us")), pa.int64())
        self.read: dict[int, int] = {}
        self.inferred: dict[int, int] = {}
        self.staged: dict[int, int] = {}
        self.before: list[int] = []

    @property
    def several(self) -> bool:
        """Whether the span is more than one part."""
        return len(self.bounds) > 1

    def of(self, times: pa.Array) -> pa.Array:
        """The part each time falls in (the first for a time before the span, the last for one after it)."""
        micros = pc.fill_null(pc.cast(pc.cast(times, pa.timestamp("us")), pa.int64()), 0)
        later = np.searchsorted(self.starts.to_numpy(), micros.to_numpy(zero_copy_only=False), "right")
        return pa.array(later, pa.int32())

    def note_inferred(self, rows: pa.RecordBatch, time: str, added: list[tuple[str, pa.Array]]) -> None:
        """Count each member inferred from `rows` (`added`: its ids, by column) in the part of its first row."""
        for column, ids in added:
            first = pc.index_in(ids, value_set=rows.column(column))
            tally = pc.value_counts(self.of(pc.take(rows.column(time), first)))
            for place, count in zip(tally.field("values").to_pylist(), tally.field("counts").to_pylist(), strict=True):
                self.inferred[place] = self.inferred.get(place, 0) + count

    def note_staged(self, rows: pa.RecordBatch, time: str) -> None:
        """`rows` are staged: each will be its part's."""
        tally = pc.value_counts(self.of(rows.column(time)))
        for place, count in zip(tally.field("values").to_pylist(), tally.field("counts").to_pylist(), strict=True):
            self.staged[place] = self.staged.get(place, 0) + count

    def count_before(self, conn: sa.Connection, time: sa.Column[Any]) -> None:
        """The fact's rows in each part before the replace."""
        if self.several:
            self.before = _rows_by_part(conn, time, self.bounds)

    def results(self, whole: StepResult) -> list[StepResult]:
        """Each part's step."""
        if not self.several:
            return [whole]
        if sum(self.staged.values()) != whole.inserted:
            raise RuntimeError(f"the span's parts staged {sum(self.staged.values()):,} rows, {whole.inserted:,} loaded")
        found = whole.rejects if whole.rejects is not None else rejects.concat([])
        # Rows every part reads (a file no part can claim) are read and rejected in each, as by one period's load.
        shared_reads = whole.read - sum(self.read.values())
        places = found[PLACE] if PLACE in found.schema.names else pa.nulls(found.num_rows, pa.int32())
        results = []
        for index, bounds in enumerate(self.bounds):
            mine = pc.fill_null(pc.equal(places, pa.scalar(index, pa.int32())), True)
            own = found.filter(mine)
            if PLACE in own.schema.names:
                own = own.drop_columns([PLACE])
            results.append(
                StepResult(
                    table=whole.table,
                    period=bounds,
                    read=self.read.get(index, 0) + shared_reads,
                    loaded=self.staged.get(index, 0),
                    rejected=rejects.rows_rejected(own),
                    warned=rejects.warnings(own),
                    inserted=self.staged.get(index, 0),
                    deleted=self.before[index],
                    inferred=self.inferred.get(index, 0),
                    rejects=own,
                    unplaced=whole.unplaced if index == 0 else None,
                    source_latest=whole.source_latest,
                )
            )
        return results


def _rows_by_part(conn: sa.Connection, time: sa.Column[Any], bounds: list[tuple[datetime, datetime]]) -> list[int]:
    """Rows of time's table in each of the consecutive periods `bounds`."""
    span = sa.and_(time >= bounds[0][0], time < bounds[-1][1])
    if not conn.execute(sa.select(sa.func.count()).select_from(time.table).where(span)).scalar_one():
        return [0] * len(bounds)  # a first load: the common case of a backfill
    parts = sa.values(
        sa.column("place", sa.Integer), sa.column("lower", sa.DateTime), sa.column("upper", sa.DateTime), name="parts"
    ).data([(place, lower, upper) for place, (lower, upper) in enumerate(bounds)])
    # Each part counted apart: a join on the ranges, one for all, took PostgreSQL a nested loop comparing every row
    # of the span with every part, where each count reads its part's rows only (its day's partition).
    rows = (
        sa.select(sa.func.count().label("rows"))
        .select_from(time.table)
        .where(time >= parts.c.lower, time < parts.c.upper)
        .lateral("counted")
    )
    counted = sa.select(parts.c.place, rows.c.rows).select_from(parts.join(rows, sa.true()))
    found: dict[int, int] = {place: count for place, count in conn.execute(counted)}
    return [int(found.get(place, 0)) for place in range(len(bounds))]


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

    def places(self, rows: pa.RecordBatch) -> pa.Array | None:
        return self.load.parts.of(rows.column(self.time)) if self.load.parts.several else None

    def enrich(self, rows: pa.RecordBatch) -> pa.RecordBatch:
        return self.load.numbering.number(with_keys(rows, self.load.lookups))

    def finish(self, rows: pa.RecordBatch) -> pa.RecordBatch:
        inferred, parts = self.load.inferred, self.load.parts
        before = inferred.sizes()
        rows = inferred.fill(rows, parts.of(rows.column(self.time)) if parts.several else None)
        if parts.several:
            parts.note_inferred(rows, self.time, inferred.added_since(before))
            parts.note_staged(rows, self.time)
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


def _duplicate_rows(
    conn: sa.Connection, schema: Schema, fact: Fact, repeated: list[int], parts: _Parts
) -> list[pa.Table]:
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
    time = candidates.c[fact.time_column]
    numbered = sa.select(candidates.c[SOURCE_FILE], candidates.c[SOURCE_ROW], time, place.label("place")).subquery()
    with contextlib.nullcontext() if listed else engines.of(conn).grouping_by_sort(conn):
        found = conn.execute(
            sa.select(numbered.c[SOURCE_FILE], numbered.c[SOURCE_ROW], numbered.c[time.name]).where(
                numbered.c.place > 1
            )
        ).all()
    warned = rejects.make(
        [r[0] for r in found], [r[1] for r in found], None, None, None, rejects.DUPLICATE_ROW, rejects.WARNING
    )
    if parts.several:
        warned = warned.append_column(PLACE, parts.of(pa.array([r[2] for r in found], pa.timestamp("us"))))
    return [warned]


class MinuteNumbering:
    """Numbers a period's rows as they stream by: key = minute number * CALLS_PER_MINUTE + the row's place among
    that minute's rows in extract order. Loading the same extract again, or the same day from a longer extract,
    gives every row the same key, with no sort of the period and no state beyond one counter per minute."""

    def __init__(self, fact: Fact) -> None:
        self.fact = fact
        # Rows seen in each minute from minute `first` on: an array rather than a dict, as a period of a year has
        # half a million minutes (some 2 MB as an array, tens of MB as Python ints).
        self.first = 0
        self.seen = np.zeros(0, np.int32)

    def number(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch with the fact's key column appended."""
        minutes = pc.divide(pc.cast(batch.column(self.fact.time_column), pa.int64()), pa.scalar(60, pa.int64()))
        if len(minutes) == 0:
            return batch.append_column(pa.field(self.fact.key, pa.int64()), pa.array([], pa.int64()))
        # Place within this batch's minute: rank among equal minutes in order of appearance, from 0.
        place = pc.subtract(pc.rank(minutes, tiebreaker="first"), pc.rank(minutes, tiebreaker="min"))
        counts = pc.value_counts(minutes)
        distinct = counts.field("values")
        at = self._counters(distinct.to_numpy())
        before = self.seen[at]
        self.seen[at] = before + counts.field("counts").to_numpy()
        offset = pc.take(pa.array(before, pa.int64()), pc.index_in(minutes, value_set=distinct))
        rank = pc.add(pc.add(pc.cast(place, pa.int64()), offset), pa.scalar(1, pa.int64()))
        if pc.max(rank).as_py() >= CALLS_PER_MINUTE:
            raise ValueError(f"more than {CALLS_PER_MINUTE - 1:,} rows share one minute of {self.fact.time_column}")
        key = pc.add(pc.multiply(minutes, pa.scalar(CALLS_PER_MINUTE, pa.int64())), rank)
        return batch.append_column(pa.field(self.fact.key, pa.int64()), key)

    def _counters(self, minutes: np.ndarray) -> np.ndarray:
        """Where the minutes' counters are in `seen`, which grows to hold them."""
        low, high = int(minutes.min()), int(minutes.max()) + 1
        if not len(self.seen):
            self.first, self.seen = low, np.zeros(high - low, np.int32)
        elif low < self.first or high > self.first + len(self.seen):
            first = min(low, self.first)
            grown = np.zeros(max(high, self.first + len(self.seen)) - first, np.int32)
            grown[self.first - first : self.first - first + len(self.seen)] = self.seen
            self.first, self.seen = first, grown
        return minutes - self.first


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
