"""The run log: each run, each step with its reconciliation, and the rejected or doubted rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from . import engines, locking, rejects
from ._errors import CallmartError
from .progress import StepResult
from .schema import REJECTS, RUN_STEPS, RUNS, Schema
from .status import Status

__all__ = [
    "ReconciliationError",
    "abandon_dead_runs",
    "check_balance",
    "finish_run",
    "last_run_steps",
    "latest_run",
    "record_step",
    "reject_rows",
    "run_exists",
    "start_run",
    "undated",
]


class ReconciliationError(CallmartError):
    """Rows read do not equal rows loaded plus rows rejected: some row went missing."""


def check_balance(result: StepResult) -> None:
    """Fail the step unless every row read was loaded or rejected."""
    if not result.balanced:
        raise ReconciliationError(
            f"{result.table}: {result.read:,} rows read but {result.loaded:,} loaded and {result.rejected:,} rejected"
        )


def start_run(conn: sa.Connection, schema: Schema, started: datetime, source_dir: Path) -> int:
    """Record a new run; return its id."""
    runs = schema[RUNS]
    id_run = int(conn.execute(sa.select(schema.sequences[RUNS].next_value())).scalar_one())
    conn.execute(
        sa.insert(runs).values(id_run=id_run, started_at=started, status=Status.RUNNING, source_dir=str(source_dir))
    )
    return id_run


def finish_run(
    conn: sa.Connection, schema: Schema, id_run: int, ok: bool, error: str | None = None, stopped: bool = False
) -> None:
    """Close a run with its outcome: done, failed, or interrupted when it was asked to stop."""
    runs = schema[RUNS]
    status = Status.INTERRUPTED if stopped else Status.DONE if ok else Status.FAILED
    conn.execute(
        sa.update(runs)
        .where(runs.c.id_run == id_run)
        .values(finished_at=datetime.now(), status=status, error_message=error)
    )


def abandon_dead_runs(conn: sa.Connection, schema: Schema, id_run: int) -> int:
    """Mark abandoned the runs other than `id_run` still recorded as running whose process no longer lives;
    return how many."""
    runs = schema[RUNS]
    running = conn.execute(
        sa.select(runs.c.id_run).where(runs.c.status == Status.RUNNING, runs.c.id_run != id_run).order_by(runs.c.id_run)
    ).scalars()
    dead = [run for run in running if not locking.alive(conn, run)]
    if dead:
        conn.execute(
            sa.update(runs)
            .where(runs.c.id_run.in_(dead))
            .values(status=Status.ABANDONED, error_message=f"stopped without finishing; found by run {id_run}")
        )
    return len(dead)


def record_step(conn: sa.Connection, schema: Schema, id_run: int, step: int, result: StepResult) -> None:
    """Store a step's counts and its reject rows, in the step's own transaction."""
    record_steps(conn, schema, id_run, step, [result])


def record_steps(conn: sa.Connection, schema: Schema, id_run: int, first: int, results: Sequence[StepResult]) -> None:
    """Store the counts and reject rows of consecutive steps from step `first`, in one statement each."""
    rows = [result.run_step(id_run, first + offset) for offset, result in enumerate(results)]
    # A span's many steps by the bulk path; one step by an INSERT, which costs less than setting up the bulk path.
    if len(rows) > 1:
        engines.of(conn).insert_rows(conn, schema[RUN_STEPS], rows)
    else:
        conn.execute(sa.insert(schema[RUN_STEPS]).values(rows))
    found = [rejects.of_step(r.rejects, id_run, r.table, r.period) for r in results if r.rejects is not None]
    # One chunk: the bulk path writes a table chunk by chunk, and a span's steps each bring a few rows.
    found_rows = pa.concat_tables(found).combine_chunks() if found else None
    if found_rows is not None and found_rows.num_rows:
        engines.of(conn).bulk_insert(conn, schema[REJECTS], found_rows.to_batches(max_chunksize=50_000))


def undated(table: str, results: list[StepResult]) -> StepResult | None:
    """One step for the rows no period could claim (their date is unreadable), each counted once per run."""
    found = rejects.concat([r.unplaced for r in results if r.unplaced is not None and r.unplaced.num_rows])
    if not found.num_rows:
        return None
    keys = pc.binary_join_element_wise(
        found[rejects.SOURCE_FILE], pc.cast(found[rejects.SOURCE_ROW], pa.string()), found["reason"], "\x1f"
    )
    distinct = _first_of_each(found, keys)
    rows = rejects.rows_rejected(distinct)
    return StepResult(table=table, note="no readable date", read=rows, rejected=rows, rejects=distinct)


def _first_of_each(found: pa.Table, keys: pa.Array) -> pa.Table:
    """The rows of found whose key has not appeared before (every period re-reads the same undated rows)."""
    seen: set[str] = set()
    keep = []
    for key in keys.to_pylist():
        keep.append(key not in seen)
        seen.add(key)
    return found.filter(pa.array(keep))


def last_run_steps(conn: sa.Connection, schema: Schema) -> list[dict[str, object]]:
    """The steps of the latest run, in order."""
    steps = schema[RUN_STEPS]
    latest = _latest_run(schema)
    rows = conn.execute(sa.select(steps).where(steps.c.id_run == latest).order_by(steps.c.step))
    return [dict(row._mapping) for row in rows]


def reject_rows(conn: sa.Connection, schema: Schema, id_run: int | None, limit: int) -> list[dict[str, object]]:
    """Reject and warning rows of a run (the latest by default), errors first."""
    table = schema[REJECTS]
    run = id_run if id_run is not None else _latest_run(schema)
    rows = conn.execute(
        sa.select(table)
        .where(table.c.id_run == run)
        .order_by(table.c.severity, table.c.table_name, table.c.source_file, table.c.line_number)
        .limit(limit)
    )
    return [dict(row._mapping) for row in rows]


def run_exists(conn: sa.Connection, schema: Schema, id_run: int) -> bool:
    """Whether the run log holds that run."""
    runs = schema[RUNS]
    return conn.execute(sa.select(runs.c.id_run).where(runs.c.id_run == id_run)).first() is not None


def latest_run(conn: sa.Connection, schema: Schema) -> int | None:
    """The id of the latest run, if any."""
    value = conn.execute(sa.select(sa.func.max(schema[RUNS].c.id_run))).scalar()
    return None if value is None else int(value)


def _latest_run(schema: Schema) -> sa.ScalarSelect[int]:
    """The id of the latest run, whatever it recorded."""
    return sa.select(sa.func.max(schema[RUNS].c.id_run)).scalar_subquery()
