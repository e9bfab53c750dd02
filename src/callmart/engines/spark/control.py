"""The mart's fixed rows and its control table on Delta, under Delta's optimistic concurrency instead of locks.

Fixed rows: each dimension's default member and the version row of dm_schema, written once: a second init reads
them and commits nothing. The control table (dm_processes): periods queued (`enqueue`), the oldest pending one
claimed by a run (`claim_next`), its outcome set by the run that holds it (`mark`), and periods made pending again
in bulk: those a stopped run held (`requeue_running`), the failed ones (`requeue_failed`), those waiting for their
extracts (`wake_waiting`), and those held by runs that died (`free_abandoned`: a run lives while its heartbeat in
the run log is recent, runs.py).

Every change is a MERGE whose condition holds the state it expects (a period still pending, still running by this
run): of two runs that read the same state, Delta lets one commit and fails the other with a concurrent
modification error; the loser reads again and finds the row taken, so its MERGE changes nothing. `with_retries`
runs such a step again after a short, growing, random pause, a bounded number of times. Values are rows of a small
DataFrame that the MERGE reads as a temporary view (sql.py: no value goes into SQL text); Spark 4's
`DataFrame.mergeInto` is not used, as it fails on Delta (DELTA_MERGE_UNRESOLVED_EXPRESSION).

The rules are the generic code's: which periods a new enqueue makes pending again is status.queued_again, the
default member is Dimension.default_member, the statuses are status.Status; the tables are the schema's."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa

from ..._errors import CommitConflicts
from ...declare import Dimension
from ...status import Status, queued_again
from .replace import wall_clock
from .sql import insert_clause, insert_missing, qualified, quote, sql, temporary_view
from .tables import spark_schema, spark_type, spark_type_name

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = [
    "ATTEMPTS",
    "CONCURRENT_MODIFICATION",
    "HEARTBEAT",
    "STALE_AFTER",
    "Claimed",
    "claim_next",
    "enqueue",
    "free_abandoned",
    "is_concurrent_modification",
    "lives",
    "mark",
    "requeue_failed",
    "requeue_running",
    "wake_waiting",
    "with_retries",
    "write_fixed_rows",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

CONCURRENT_MODIFICATION = re.compile(
    r"\b(?:Concurrent\w*Exception|DELTA_CONCURRENT_\w+|DELTA_METADATA_CHANGED|DELTA_PROTOCOL_CHANGED"
    r"|MetadataChangedException|ProtocolChangedException)\b"
)
"""Delta's errors of a commit that lost to a concurrent one (ConcurrentAppendException, ConcurrentDeleteRead…,
ConcurrentTransaction…, MetadataChanged…), by class name or error class. Classic pyspark shows them as a
Py4JJavaError (it cannot look Delta's error classes up), Spark Connect as its own classes: the message names them."""

ATTEMPTS = 8
"""How many times a step is tried before CommitConflicts."""
PAUSE = 0.2
"""Seconds of the first pause between tries; each later one doubles, with a random part so runs fall apart."""

HEARTBEAT = "heartbeat_at"
"""The run log's column of a run's latest sign of life (runs.py writes it)."""
STALE_AFTER = timedelta(minutes=5)
"""How long after its latest heartbeat a run counts as dead: several beats, so a slow commit or a little clock skew
between machines does not kill a living run."""

Claimed = tuple[int, str, datetime, datetime]
"""A claimed period: id_process, fact_table, start_date, end_date (control.Period's fields, in its order)."""


def is_concurrent_modification(error: BaseException) -> bool:
    """Whether an error is Delta's refusal of a commit that a concurrent one made stale."""
    return CONCURRENT_MODIFICATION.search(str(error)) is not None


def with_retries(step: Callable[[], T], what: str, attempts: int = ATTEMPTS, pause: float = PAUSE) -> T:
    """Run `step`; on a concurrent modification, again after a pause, at most `attempts` times in all; then
    CommitConflicts. Any other error goes through at once. `step` must read what it decides on anew each time."""
    for attempt in range(1, attempts + 1):
        try:
            return step()
        except Exception as error:  # noqa: BLE001 - pyspark raises its own classes, classic and Connect alike
            if not is_concurrent_modification(error):
                raise
            found = CONCURRENT_MODIFICATION.search(str(error))
            conflict = found.group(0) if found else "a concurrent commit"
            if attempt == attempts:
                raise CommitConflicts(
                    f"{what}: other runs kept changing the table ({conflict}); gave up after {attempts} tries"
                ) from None
            log.info("%s: %s, trying again (%d of %d)", what, conflict, attempt + 1, attempts)
            time.sleep(pause * 2 ** (attempt - 1) * (0.5 + random.random()))  # noqa: S311 - a pause, not a secret
    raise AssertionError("unreachable")


# --- the fixed rows ------------------------------------------------------------------------------------------------


def write_fixed_rows(
    spark: SparkSession,
    dimensions: Iterable[tuple[Dimension, sa.Table]],
    version_table: sa.Table,
    version: int,
    database: str,
    catalog: str | None = None,
) -> list[str]:
    """Give each dimension its default member and `version_table` the single row `version`, where missing; return
    the tables written. A table that has its row is not written (no commit); a default member two inits insert at
    once is inserted once (a MERGE on its key)."""
    written = []
    for dimension, table in dimensions:
        if _insert_default_member(spark, dimension, table, qualified(catalog, database, table.name)):
            written.append(table.name)
    if _set_version(spark, version_table, version, qualified(catalog, database, version_table.name)):
        written.append(version_table.name)
    return written


def _insert_default_member(spark: SparkSession, dimension: Dimension, table: sa.Table, name: str) -> bool:
    from pyspark.sql.functions import col, lit

    row = dimension.default_member()
    key = row[dimension.key]

    def insert() -> bool:
        if spark.table(name).filter(col(dimension.key) == lit(key)).limit(1).count():
            return False
        frame = rows_frame(spark, table, [row])
        return insert_missing(spark, name, frame, dimension.key, table.columns.keys()) > 0

    return with_retries(insert, f"the default member of {table.name}")


def _set_version(spark: SparkSession, table: sa.Table, version: int, name: str) -> bool:
    """Make the table's rows [version]: one overwrite commit, none when they already are."""
    from pyspark.sql.functions import lit

    column = table.columns[0].name
    if [r[column] for r in spark.table(name).select(column).collect()] == [version]:
        return False
    rows_frame(spark, table, [{column: version}]).writeTo(name).overwrite(lit(True))
    return True


# --- the control table ---------------------------------------------------------------------------------------------


def enqueue(
    spark: SparkSession,
    table: sa.Table,
    name: str,
    fact_table: str,
    periods: Iterable[tuple[datetime, datetime]],
    force: bool,
) -> dict[str, int]:
    """Queue periods of `fact_table` as pending in the control table `table` (qualified `name`), as
    control.enqueue does: periods it lacks are added, with ids after the largest; those it has are made pending
    again where status.queued_again says (a failed one; any but a running one when forced), the rest skipped. One
    MERGE, on the period, whose update also requires the status that was read: a concurrent enqueue that added
    or changed them first makes it conflict, and it is decided again."""
    from pyspark.sql.functions import col, lit
    from pyspark.sql.functions import max as max_

    wanted = sorted(set(periods))
    if not wanted:
        return {"added": 0, "requeued": 0, "skipped": 0}

    def attempt() -> dict[str, int]:
        rows = spark.table(name)
        present = {
            (r["start_date"], r["end_date"]): r["status"]
            for r in rows.filter(
                (col("fact_table") == lit(fact_table))
                & (col("start_date") >= wall_clock(wanted[0][0]))
                & (col("start_date") <= wall_clock(wanted[-1][0]))
            )
            .select("start_date", "end_date", "status")
            .collect()
        }
        new = [period for period in wanted if period not in present]
        again = [period for period in wanted if period in present and queued_again(present[period], force)]
        counts = {"added": len(new), "requeued": len(again), "skipped": len(wanted) - len(new) - len(again)}
        if not new and not again:
            return counts
        largest = rows.select(max_("id_process")).first()
        first = int(largest[0] or 0) + 1 if largest else 1
        source = [
            {"id_process": first + n, "fact_table": fact_table, "start_date": s, "end_date": e, "old": None}
            for n, (s, e) in enumerate(new)
        ] + [{"fact_table": fact_table, "start_date": s, "end_date": e, "old": present[(s, e)]} for s, e in again]
        for row in source:
            row.update(status=Status.PENDING.value, error_message=None)
        frame = rows_frame(spark, table, source, extra={"old": "string"})
        on = " AND ".join(f"t.{c} = s.{c}" for c in (quote("fact_table"), quote("start_date"), quote("end_date")))
        with temporary_view(spark, frame) as view:
            sql(
                spark,
                f"MERGE INTO {name} AS t USING {view} AS s ON {on} "
                f"WHEN MATCHED AND t.{quote('status')} = s.{quote('old')} THEN UPDATE SET "
                f"{quote('status')} = s.{quote('status')}, {quote('error_message')} = s.{quote('error_message')} "
                f"WHEN NOT MATCHED AND s.{quote('old')} IS NULL THEN INSERT {insert_clause(table.columns.keys())}",
            ).collect()
        return counts

    return with_retries(attempt, f"queueing periods of {fact_table}")


def claim_next(spark: SparkSession, table: sa.Table, name: str, id_run: int, run_date: datetime) -> Claimed | None:
    """Take the oldest pending period of the control table for run `id_run` (now running, by it, its error
    cleared), or None when none is pending. The MERGE that takes it requires it still pending: its count of
    rows updated says whether this run won it; when another run took it first, the next oldest is tried."""
    from pyspark.sql.functions import col, lit

    def attempt() -> Claimed | None | bool:
        oldest = (
            spark.table(name)
            .filter(col("status") == lit(Status.PENDING.value))
            .orderBy("start_date", "end_date", "id_process")
            .select("id_process", "fact_table", "start_date", "end_date")
            .first()
        )
        if oldest is None:
            return None
        claim = {
            "id_process": oldest["id_process"],
            "status": Status.RUNNING.value,
            "id_run": id_run,
            "process_run_date": run_date,
            "error_message": None,
        }
        won = _update(spark, table, name, claim, expected={"status": Status.PENDING.value})
        return (oldest[0], oldest[1], oldest[2], oldest[3]) if won else False

    while True:
        taken = with_retries(attempt, f"claiming a period for run {id_run}")
        if taken is not False:
            return taken if isinstance(taken, tuple) else None


def mark(
    spark: SparkSession,
    table: sa.Table,
    name: str,
    id_process: int,
    id_run: int,
    status: Status,
    **values: object,
) -> bool:
    """Set the status (and other columns: finished_at, rows_loaded, error_message…) of a period that run `id_run`
    holds, only while it is running by that run; return whether it was (a period freed and taken by another run
    since, or already marked, is left as it is)."""
    changes = {"id_process": id_process, "status": status.value, **values}
    expected = {"status": Status.RUNNING.value, "id_run": id_run}
    return with_retries(
        lambda: _update(spark, table, name, changes, expected), f"marking period {id_process} {status.value}"
    )


def requeue_running(spark: SparkSession, table: sa.Table, name: str, id_run: int, message: str) -> int:
    """Make pending again, with `message`, the periods run `id_run` still holds as running (it was stopped while
    loading them); return how many."""
    changes = {"status": Status.PENDING.value, "error_message": message}
    where = {"status": Status.RUNNING.value, "id_run": id_run}
    return with_retries(lambda: _set(spark, table, name, changes, where), f"queueing again the periods of run {id_run}")


def requeue_failed(spark: SparkSession, table: sa.Table, name: str) -> int:
    """Make every failed period pending again, its error cleared; return how many."""
    changes = {"status": Status.PENDING.value, "error_message": None}
    where = {"status": Status.FAILED.value}
    return with_retries(lambda: _set(spark, table, name, changes, where), "queueing the failed periods again")


def wake_waiting(spark: SparkSession, table: sa.Table, name: str) -> int:
    """Make pending again the periods waiting for their extracts, for this run to try; return how many."""
    changes = {"status": Status.PENDING.value}
    where = {"status": Status.WAITING.value}
    return with_retries(lambda: _set(spark, table, name, changes, where), "waking the waiting periods")


def free_abandoned(
    spark: SparkSession, table: sa.Table, name: str, runs: str, now: datetime, stale_after: timedelta = STALE_AFTER
) -> int:
    """Make pending again the periods left running by runs that died: whose run in the run log `runs` (qualified
    name) has given no sign of life within `stale_after` of `now` (`lives`), or is not there; return how many.
    One MERGE whose source is the periods found, matched again on their status and run: a period claimed anew
    since is left as it is."""
    from pyspark.sql.functions import col, lit

    message = "queued again: the run loading it stopped"

    def attempt() -> int:
        living = spark.table(runs).filter(lives(now, stale_after)).select("id_run")
        dead = (
            spark.table(name)
            .filter(col("status") == lit(Status.RUNNING.value))
            .join(living, on="id_run", how="left_anti")
            .select(
                "id_process",
                "id_run",
                lit(Status.RUNNING.value).alias("where_status"),
                lit(Status.PENDING.value).alias("status"),
                lit(message).alias("error_message"),
            )
        )
        if dead.isEmpty():
            return 0
        match = {"id_process": "id_process", "id_run": "id_run", "status": "where_status"}
        return update_from(spark, name, dead, match, ["status", "error_message"])

    return with_retries(attempt, "freeing the periods of runs that stopped")


def lives(now: datetime, stale_after: timedelta) -> Column:
    """Whether a row of the run log is of a living run: its latest heartbeat (its start, before its first one) is
    within `stale_after` of `now`."""
    from pyspark.sql.functions import coalesce, col

    return coalesce(col(HEARTBEAT), col("started_at")) >= wall_clock(now - stale_after)


def _update(
    spark: SparkSession, table: sa.Table, name: str, changes: dict[str, object], expected: dict[str, object]
) -> bool:
    """Set `changes` on the row of changes["id_process"] if its columns hold `expected`; whether it did. The caller
    has just read the row so (a claim) or holds it (a mark): the MERGE is written without a read first."""
    kept = {c: v for c, v in changes.items() if c != "id_process"}
    where = {"id_process": changes["id_process"], **expected}
    return _set(spark, table, name, kept, where, read_first=False) > 0


def _set(
    spark: SparkSession,
    table: sa.Table,
    name: str,
    changes: Mapping[str, object],
    where: Mapping[str, object],
    read_first: bool = True,
) -> int:
    """Set `changes` on the rows whose columns hold the values of `where`, as UPDATE … SET … WHERE would; how many
    rows changed. The source of the MERGE is one row: the values of `where` in columns named `where_<column>`.
    With `read_first`, nothing is written when no row matches: a read costs less than a MERGE's commit, and most
    runs find no waiting, failed or abandoned period."""
    from pyspark.sql.functions import col, lit

    if read_first:
        matching = spark.table(name)
        for column, value in where.items():
            matching = matching.where(col(column).eqNullSafe(lit(value)))
        if matching.isEmpty():
            return 0
    row = {**changes, **{f"where_{c}": v for c, v in where.items()}}
    types = {f"where_{c}": spark_type_name(table.c[c].type) for c in where}
    frame = rows_frame(spark, table, [row], columns=list(changes), extra=types)
    return update_from(spark, name, frame, {c: f"where_{c}" for c in where}, list(changes))


def update_from(spark: SparkSession, name: str, source: DataFrame, match: dict[str, str], changes: list[str]) -> int:
    """Set the `changes` columns of each row of `name` that a row of `source` matches (for each pair of `match`, the
    target's column equals the source's, null equal to null) to that row's values; how many rows changed."""
    condition = " AND ".join(f"t.{quote(t)} <=> s.{quote(s)}" for t, s in match.items())
    assignments = ", ".join(f"{quote(c)} = s.{quote(c)}" for c in changes)
    with temporary_view(spark, source) as view:
        done = sql(
            spark, f"MERGE INTO {name} AS t USING {view} AS s ON {condition} WHEN MATCHED THEN UPDATE SET {assignments}"
        ).first()
    return int(done["num_updated_rows"]) if done else 0


# --- rows as data --------------------------------------------------------------------------------------------------


def rows_frame(
    spark: SparkSession,
    table: sa.Table,
    rows: list[dict[str, object]],
    columns: list[str] | None = None,
    extra: dict[str, str] | None = None,
) -> DataFrame:
    """A DataFrame of `rows` with the table's column types (of `columns`, all by default; nullable, as a source's
    are), then the `extra` columns of the given Spark types; a column a row lacks is null."""
    from pyspark.sql.types import StructField, StructType

    fields = {f.name: f for f in spark_schema(table, nullable=True).fields}
    names = columns if columns is not None else [c.name for c in table.columns]
    chosen = [fields[n] for n in names]
    added = [StructField(n, spark_type(t), True) for n, t in (extra or {}).items()]
    schema = StructType(chosen + added)
    data = [tuple(_cell(row.get(f.name), f.dataType.simpleString()) for f in schema.fields) for row in rows]
    return spark.createDataFrame(data, schema)


def _cell(value: object, type_name: str) -> object:
    """A value as a column of that Spark type takes it: an id into a text column as its text (as SQL would cast
    it), a StrEnum as its text, a time of day as its ISO text (tables.py)."""
    if value is None:
        return None
    if type_name == "string":
        return value.isoformat() if hasattr(value, "isoformat") else str(value)
    return value
