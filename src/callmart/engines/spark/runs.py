"""The run log on Delta (dm_runs, dm_run_steps, dm_rejects): runs started and finished, their steps recorded, and
runs that died found by their heartbeat, under Delta's optimistic concurrency as control.py does the control table.

A run's id is the largest one + 1 with no sequence: an insert MERGE keyed on the id, so of two runs that read the
same largest id, one inserts it and the other finds it taken (or conflicts) and reads again. A step's row and its
reject rows replace those an earlier try of the same step wrote (Delta's replaceWhere), so a retried step leaves
one set of rows; several steps go in one write (a run's dimension steps with its first period's), since each write
is a commit of its own.

A run shows that it lives by beating: a thread of its own sets `heartbeat_at` on its row every minute
(`run_alive`), where PostgreSQL holds an advisory lock; a run whose heartbeat is older than `stale_after` is dead
(`alive`, `abandon_dead_runs`, control.free_abandoned)."""

from __future__ import annotations

import functools
import logging
import operator
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ... import rejects
from ...progress import StepResult
from ...status import Status
from .control import HEARTBEAT, STALE_AFTER, lives, rows_frame, update_from, with_retries
from .replace import wall_clock
from .sql import insert_missing
from .tables import spark_schema

if TYPE_CHECKING:
    from pyspark.sql import Column, SparkSession

__all__ = [
    "BEAT_EVERY",
    "abandon_dead_runs",
    "alive",
    "beat",
    "finish_run",
    "record_steps",
    "run_alive",
    "start_run",
]

log = logging.getLogger(__name__)

BEAT_EVERY = 60.0
"""Seconds between two heartbeats of a run."""


def start_run(spark: SparkSession, table: sa.Table, name: str, started: datetime, source_dir: Path) -> int:
    """Record a new run, running, its heartbeat its start; return its id, the largest one + 1."""
    from pyspark.sql.functions import max as max_

    def attempt() -> int | None:
        largest = spark.table(name).select(max_("id_run")).first()
        id_run = int(largest[0] or 0) + 1 if largest else 1
        row = {
            "id_run": id_run,
            "started_at": started,
            "status": Status.RUNNING.value,
            "source_dir": str(source_dir),
            HEARTBEAT: started,
        }
        inserted = insert_missing(spark, name, rows_frame(spark, table, [row]), "id_run", table.columns.keys())
        return id_run if inserted else None

    while True:
        # None: a run that started meanwhile took the id; the next one is tried.
        id_run = with_retries(attempt, "starting a run")
        if id_run is not None:
            return id_run


def finish_run(
    spark: SparkSession,
    table: sa.Table,
    name: str,
    id_run: int,
    ok: bool,
    error: str | None = None,
    stopped: bool = False,
    finished_at: datetime | None = None,
) -> None:
    """Close a run with its outcome: done, failed, or interrupted when it was asked to stop."""
    status = Status.INTERRUPTED if stopped else Status.DONE if ok else Status.FAILED
    row = {
        "id_run": id_run,
        "finished_at": finished_at or datetime.now(),
        "status": status.value,
        "error_message": error,
    }
    frame = rows_frame(spark, table, [row], columns=list(row))
    changes = ["finished_at", "status", "error_message"]
    with_retries(lambda: update_from(spark, name, frame, {"id_run": "id_run"}, changes), f"finishing run {id_run}")


def abandon_dead_runs(
    spark: SparkSession, name: str, id_run: int, now: datetime, stale_after: timedelta = STALE_AFTER
) -> int:
    """Mark abandoned the runs other than `id_run` still recorded as running whose heartbeat is older than
    `stale_after` at `now`; return how many. One MERGE, matched again on the status: a run that finished since
    keeps its outcome; none when no run is dead (most runs find none, and a read costs less than a commit)."""
    from pyspark.sql.functions import col, lit

    message = f"stopped without finishing; found by run {id_run}"
    dead = (
        spark.table(name)
        .filter((col("status") == lit(Status.RUNNING.value)) & (col("id_run") != lit(id_run)))
        .filter(~lives(now, stale_after))
    )
    if dead.isEmpty():
        return 0
    changes = dead.select(
        "id_run",
        lit(Status.RUNNING.value).alias("where_status"),
        lit(Status.ABANDONED.value).alias("status"),
        lit(message).alias("error_message"),
    )
    # The read above is not repeated before each try: the run's own heartbeat commits to this table, and the
    # longer the time between reading and committing, the likelier a conflict with it.
    match = {"id_run": "id_run", "status": "where_status"}
    return with_retries(
        lambda: update_from(spark, name, changes, match, ["status", "error_message"]),
        f"abandoning the runs that died, for run {id_run}",
    )


# --- liveness ------------------------------------------------------------------------------------------------------


def beat(spark: SparkSession, name: str, id_run: int, now: datetime) -> bool:
    """Set the heartbeat of run `id_run` to `now` while it is running; whether it was (a run found dead and marked
    abandoned stays so)."""
    schema = f"id_run int, where_status string, {HEARTBEAT} timestamp_ntz"
    frame = spark.createDataFrame([(id_run, Status.RUNNING.value, now)], schema)
    match = {"id_run": "id_run", "status": "where_status"}
    return with_retries(lambda: update_from(spark, name, frame, match, [HEARTBEAT]), f"run {id_run}'s heartbeat") > 0


def alive(spark: SparkSession, name: str, id_run: int, now: datetime, stale_after: timedelta = STALE_AFTER) -> bool:
    """Whether run `id_run` has beaten within `stale_after` of `now`."""
    from pyspark.sql.functions import col, lit

    found = spark.table(name).filter((col("id_run") == lit(id_run)) & lives(now, stale_after))
    return bool(found.limit(1).count() > 0)


@contextmanager
def run_alive(
    spark: SparkSession,
    name: str,
    id_run: int,
    every: float = BEAT_EVERY,
    clock: Callable[[], datetime] = datetime.now,
    just_started: bool = False,
) -> Iterator[None]:
    """Within the block, run `id_run` beats: once on entry (not when it `just_started`: start_run's row holds its
    heartbeat), then every `every` seconds from a daemon thread, which stops on exit. A beat that fails is logged
    and the next one tried: a run is only found dead after several."""
    if not just_started:
        beat(spark, name, id_run, clock())
    stop = threading.Event()

    def beating() -> None:
        while not stop.wait(every):
            try:
                beat(spark, name, id_run, clock())
            except Exception:  # noqa: BLE001 - the run goes on; missing beats only make it look dead later
                log.warning("run %d could not beat", id_run, exc_info=True)

    thread = threading.Thread(target=beating, name=f"callmart-heartbeat-{id_run}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# --- steps ---------------------------------------------------------------------------------------------------------


def record_steps(
    spark: SparkSession,
    steps: tuple[sa.Table, str],
    rejected: tuple[sa.Table, str],
    id_run: int,
    results: Sequence[tuple[int, StepResult]],
) -> None:
    """Store steps' counts in the steps table and their reject rows in the rejects table (each a table and its
    qualified name), one write to each, in place of those an earlier try of the same steps stored: a step's row is
    replaced by (id_run, step); its reject rows, which name no step, by (id_run, table, period), which only that
    step writes."""
    from pyspark.sql.functions import col, lit

    if not results:
        return
    numbers = [step for step, _ in results]
    table, name = steps
    frame = rows_frame(spark, table, [result.run_step(id_run, step) for step, result in results])
    these = (col("id_run") == lit(id_run)) & col("step").isin(numbers)
    with_retries(lambda: frame.writeTo(name).overwrite(these), f"recording steps {numbers} of run {id_run}")
    table, name = rejected
    found = rejects.concat(
        [
            rejects.of_step(
                result.rejects if result.rejects is not None else rejects.REJECT_SCHEMA.empty_table(),
                id_run,
                result.table,
                result.period,
            )
            for _, result in results
        ]
    ).combine_chunks()  # one batch: pyspark made no rows of a table starting with empty batches
    where = functools.reduce(operator.or_, (_step_rejects(id_run, result) for _, result in results))
    if not found.num_rows and not spark.table(name).filter(where).limit(1).count():
        return
    rows = spark.createDataFrame(found, schema=spark_schema(table, nullable=True))
    what = f"recording the rejects of steps {numbers} of run {id_run}"
    with_retries(lambda: rows.writeTo(name).overwrite(where), what)


def _step_rejects(id_run: int, result: StepResult) -> Column:
    """The reject rows of a step: of its run, table and period (a dimension's step has none)."""
    from pyspark.sql.functions import col, lit

    where = (col("id_run") == lit(id_run)) & (col("table_name") == lit(result.table))
    for column, moment in zip(("period_start", "period_end"), result.period or (None, None), strict=True):
        where &= col(column).isNull() if moment is None else col(column) == wall_clock(moment)
    return where
