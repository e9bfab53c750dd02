"""The generic fact load of one period: stage the period's rows, resolve keys, replace the period."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from .declare import Fact
from .keys import resolve_references
from .metric import first_event_key
from .progress import StepResult
from .schema import Schema
from .stage import stage, staged_columns

__all__ = ["CALLS_PER_MINUTE", "load_period"]

CALLS_PER_MINUTE = 100_000
"""Room for rows sharing one minute in the fact key: key = minute number * CALLS_PER_MINUTE + rank."""


def load_period(
    conn: sa.Connection,
    schema: Schema,
    fact: Fact,
    source_dir: Path,
    start: datetime,
    end: datetime,
    on_rows: Callable[[int], None] | None = None,
) -> StepResult:
    """Replace the fact rows of [start, end) with the period's rows of the source; the caller commits."""
    staged = stage(conn, schema[fact.staging], fact, source_dir, keep=_in_period(fact, start, end), on_rows=on_rows)
    inferred = resolve_references(conn, schema, fact)
    table = schema[fact.name]
    time = table.c[fact.time_column]
    deleted = conn.execute(sa.delete(table).where(time >= start, time < end)).rowcount
    inserted = conn.execute(_insert_from_staging(schema, fact)).rowcount
    return StepResult(
        table=fact.name,
        period=(start, end),
        read=staged.read,
        staged=staged.staged,
        rejected=staged.rejected,
        unplaced=staged.unplaced,
        inserted=inserted,
        deleted=deleted,
        inferred=inferred,
        rejects=staged.reject_table(),
    )


def _in_period(fact: Fact, start: datetime, end: datetime) -> Callable[[pa.RecordBatch], pa.Array]:
    def keep(batch: pa.RecordBatch) -> pa.Array:
        time = batch.column(fact.time_column)
        lower = pa.scalar(start, time.type)
        upper = pa.scalar(end, time.type)
        return pc.and_(pc.greater_equal(time, lower), pc.less(time, upper))

    return keep


def _insert_from_staging(schema: Schema, fact: Fact) -> sa.Insert:
    """One set-based insert: staged columns, reference keys, a deterministic key and the metrics."""
    stg = schema[fact.staging]
    time = stg.c[fact.time_column]
    content = [stg.c[c.name] for c in staged_columns(fact)]
    # A key made of the minute and the row's rank among that minute's rows (by content, not file order)
    # is the same whenever the same rows are loaded: reloads and incremental loads keep every key.
    minute = sa.cast(sa.func.floor(sa.extract("epoch", time) / 60), sa.BigInteger)
    rank = sa.func.row_number().over(partition_by=time, order_by=content)
    key = (minute * CALLS_PER_MINUTE + rank).label(fact.key)
    names = [fact.key, *(c.name for c in fact.columns), *(r.column for r in fact.references)]
    exprs: list[sa.ColumnElement[Any]] = [key, *(stg.c[c.name] for c in fact.columns)]
    exprs += [stg.c[r.column] for r in fact.references]
    for metric in fact.metrics:
        names.append(metric.column)
        exprs.append(first_event_key(schema, metric, stg).label(metric.column))
    return sa.insert(schema[fact.name]).from_select(names, sa.select(*exprs))
