"""The mart's fixed rows and its control table on Delta, under Delta's optimistic concurrency instead of locks.

Fixed rows: each dimension's default member and the version row of dm_schema, written once: a second init reads
them and commits nothing. The control table (dm_processes): periods queued (`enqueue`), the oldest pending one
claimed by a run (`claim_next`), and its outcome set by the run that holds it (`mark`).

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
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa

from ..._errors import CommitConflicts
from ...declare import Dimension
from ...status import Status, queued_again
from .replace import wall_clock
from .sql import qualified, quote, sql
from .tables import spark_schema, spark_type, spark_type_name

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "ATTEMPTS",
    "CONCURRENT_MODIFICATION",
    "Claimed",
    "claim_next",
    "enqueue",
    "is_concurrent_modification",
    "mark",
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
        with _view(spark, _frame(spark, table, [row])) as source:
            done = sql(
                spark,
                f"MERGE INTO {name} AS t USING {source} AS s ON t.{quote(dimension.key)} = s.{quote(dimension.key)} "
                f"WHEN NOT MATCHED THEN INSERT {_insert(table)}",
            ).first()
        return bool(done and done["num_inserted_rows"])

    return with_retries(insert, f"the default member of {table.name}")


def _set_version(spark: SparkSession, table: sa.Table, version: int, name: str) -> bool:
    """Make the table's rows [version]: one overwrite commit, none when they already are."""
    from pyspark.sql.functions import lit

    column = table.columns[0].name
    if [r[column] for r in spark.table(name).select(column).collect()] == [version]:
        return False
    _frame(spark, table, [{column: version}]).writeTo(name).overwrite(lit(True))
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
        frame = _frame(spark, table, source, extra={"old": "string"})
        on = " AND ".join(f"t.{c} = s.{c}" for c in (quote("fact_table"), quote("start_date"), quote("end_date")))
        with _view(spark, frame) as view:
            sql(
                spark,
                f"MERGE INTO {name} AS t USING {view} AS s ON {on} "
                f"WHEN MATCHED AND t.{quote('status')} = s.{quote('old')} THEN UPDATE SET "
                f"{quote('status')} = s.{quote('status')}, {quote('error_message')} = s.{quote('error_message')} "
                f"WHEN NOT MATCHED AND s.{quote('old')} IS NULL THEN INSERT {_insert(table)}",
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


def _update(
    spark: SparkSession, table: sa.Table, name: str, changes: dict[str, object], expected: dict[str, object]
) -> bool:
    """Set `changes` on the row of changes["id_process"] if its columns hold `expected`; whether it did. One MERGE
    of a one-row view: the expected values in columns named `expected_<column>`."""
    kept = [c for c in changes if c != "id_process"]
    row = {**changes, **{f"expected_{c}": v for c, v in expected.items()}}
    types = {f"expected_{c}": spark_type_name(table.c[c].type) for c in expected}
    condition = " AND ".join(
        [f"t.{quote('id_process')} = s.{quote('id_process')}"]
        + [f"t.{quote(c)} = s.{quote('expected_' + c)}" for c in expected]
    )
    assignments = ", ".join(f"{quote(c)} = s.{quote(c)}" for c in kept)
    frame = _frame(spark, table, [row], columns=["id_process", *kept], extra=types)
    with _view(spark, frame) as view:
        done = sql(
            spark, f"MERGE INTO {name} AS t USING {view} AS s ON {condition} WHEN MATCHED THEN UPDATE SET {assignments}"
        ).first()
    return bool(done and done["num_updated_rows"])


# --- rows as data --------------------------------------------------------------------------------------------------


def _frame(
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


def _insert(table: sa.Table) -> str:
    """The INSERT clause of a MERGE that inserts the table's columns from the source's same-named ones."""
    columns = [quote(c.name) for c in table.columns]
    return f"({', '.join(columns)}) VALUES ({', '.join('s.' + c for c in columns)})"


@contextmanager
def _view(spark: SparkSession, frame: DataFrame) -> Iterator[str]:
    """The DataFrame as a temporary view of a name of its own (threads of a session share its views), dropped
    after the block."""
    name = f"callmart_source_{uuid.uuid4().hex}"
    frame.createOrReplaceTempView(name)
    try:
        yield quote(name)
    finally:
        spark.catalog.dropTempView(name)
