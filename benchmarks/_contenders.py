"""The contenders run in child processes: one phase per process, its measurement printed as one JSON line.

    CALLMART_BENCH_TARGET=URL python benchmarks/_contenders.py PHASE --source EXTRACT_DIR --days N

bench_load.py runs this; each phase imports only the libraries it uses, so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields, replace
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from _measure import CALLS_FILE, DEFAULT_KEY, FACT, TARGET_ENV, Job, Meter, Timed, fact_census, lap
from _notebook import phase_pandas_load
from psycopg import sql

if TYPE_CHECKING:
    import sqlalchemy as sa
    from pyspark.sql import SparkSession

    from callmart import RunSummary
    from callmart.engines.spark import SparkUrl
    from callmart.progress import StepResult

__all__ = ["PHASES", "main"]

RAW_TABLE = "bench_raw_calls"
STAGING = "stg_fact_llamadas"
STORED_STAGING, STORED_FACT = "bench_stored_staging", "bench_stored_fact"
STORED_STAGING_OF, STORED_FACT_OF = (STORED_STAGING, STAGING), (STORED_FACT, FACT)
COPY_CHUNK_BYTES = 1 << 20
DUCKDB_URL_PREFIX = "duckdb:///"
DUCKDB_FLOOR = """
CREATE TABLE bench_raw_calls AS
SELECT strptime(Fecha, '%m/%d/%Y %H:%M') AS fecha,
       CAST(IDCliente AS INTEGER) AS id_cliente,
       Campania AS campania,
       Telefono AS telefono,
       Agente AS agente,
       CAST(Tiempohablado AS TIME) AS tiempo_hablado,
       CAST(Tiempototal AS TIME) AS tiempo_total
FROM read_csv($path, encoding = 'latin-1', all_varchar = true, header = true)
"""


def csv_header(path: Path) -> list[str]:
    """The column names of a latin-1 CSV file."""
    with path.open(encoding="latin-1") as handle:
        return handle.readline().strip().split(",")


def create_raw_table(conn: psycopg.Connection[Any], columns: list[str]) -> None:
    """An UNLOGGED, all-text, index-free table with the CSV's columns."""
    text_columns = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in columns)
    conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(sql.Identifier(RAW_TABLE), text_columns))


def copy_from_server_file(conn: psycopg.Connection[Any], path: Path) -> int:
    """COPY the file as the server reads it from its own disk; return rows."""
    statement = sql.SQL("COPY {} FROM {} WITH (FORMAT csv, HEADER, ENCODING 'LATIN1')").format(
        sql.Identifier(RAW_TABLE), sql.Literal(str(path))
    )
    with conn.cursor() as cursor:
        cursor.execute(statement)
        return cursor.rowcount


def copy_from_stdin(conn: psycopg.Connection[Any], path: Path) -> int:
    """COPY the file streamed by the client in 1 MB chunks, as psql's \\copy does; return rows."""
    statement = sql.SQL("COPY {} FROM STDIN WITH (FORMAT csv, HEADER, ENCODING 'LATIN1')").format(
        sql.Identifier(RAW_TABLE)
    )
    with conn.cursor() as cursor:
        with cursor.copy(statement) as copy, path.open("rb") as handle:
            while chunk := handle.read(COPY_CHUNK_BYTES):
                copy.write(chunk)
        return cursor.rowcount


def phase_pg_copy(job: Job) -> Timed:
    """The PostgreSQL floor: raw COPY of the calls file into an UNLOGGED text table."""
    path = job.source / CALLS_FILE
    with psycopg.connect(job.database) as conn:
        create_raw_table(conn, csv_header(path))
        conn.commit()
        with Meter() as meter:
            try:
                method, rows = "server-side file", copy_from_server_file(conn, path)
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFile) as error:
                conn.rollback()
                method = f"STDIN in 1 MB chunks (the server could not read the file: {error})"
                rows = copy_from_stdin(conn, path)
            conn.commit()
    return meter.result(rows, {"copy": method.splitlines()[0]})


def phase_duckdb_read_csv(job: Job) -> Timed:
    """The DuckDB floor: one CREATE TABLE AS over read_csv, with typed columns."""
    import duckdb

    with duckdb.connect(job.database.removeprefix(DUCKDB_URL_PREFIX)) as conn:
        with Meter() as meter:
            conn.execute(DUCKDB_FLOOR, {"path": str(job.source / CALLS_FILE)})
        counted = conn.execute("SELECT count(*) FROM bench_raw_calls").fetchone()
        threads = conn.execute("SELECT current_setting('threads')").fetchone()
    return meter.result(int(counted[0]) if counted else 0, {"threads": int(threads[0]) if threads else None})


class StepClock:
    """A callmart reporter noting when each step starts, reads its last source batch, and ends."""

    def __init__(self) -> None:
        self.current = ""
        self.started: dict[str, float] = {}
        self.last_read: dict[str, float] = {}
        self.finished: dict[str, float] = {}

    def step_started(self, name: str) -> None:
        """Note the start."""
        self.current = name
        self.started[name] = time.perf_counter()

    def rows_read(self, name: str, rows: int) -> None:
        """Note the latest batch read (called from callmart's reader thread)."""
        self.last_read[name] = time.perf_counter()

    def step_finished(self, result: StepResult) -> None:
        """Note the end."""
        self.finished[self.current] = time.perf_counter()

    def span_failed(self, name: str, error: str) -> None:
        """A span's days load one at a time: their own steps are timed."""

    def splits(self) -> dict[str, dict[str, float]]:
        """Per step: seconds until its last source batch was read, and seconds after that."""
        return {
            name: {
                "until_last_batch_read_s": round(self.last_read[name] - began, 3),
                "after_last_batch_read_s": round(self.finished[name] - self.last_read[name], 3),
            }
            for name, began in self.started.items()
            if name in self.last_read and name in self.finished
        }


class StatementClock:
    """Seconds spent in each SQL statement an engine runs through SQLAlchemy (COPY on the raw driver is not seen)."""

    def __init__(self, engine: sa.Engine) -> None:
        import sqlalchemy as sa

        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: sa.Connection, *args: Any) -> None:
        conn.info.setdefault("bench_began", []).append(time.perf_counter())

    def _after(self, conn: sa.Connection, cursor: Any, statement: str, *args: Any) -> None:
        key = " ".join(statement.split())[:110]
        self.seconds[key] += time.perf_counter() - conn.info["bench_began"].pop()
        self.calls[key] += 1

    def top(self, count: int) -> list[dict[str, Any]]:
        """The statements that took longest, in total."""
        ranked = sorted(self.seconds.items(), key=lambda item: item[1], reverse=True)[:count]
        return [{"seconds": round(s, 3), "calls": self.calls[k], "sql": k} for k, s in ranked]


def step_rows(steps: list[StepResult]) -> list[dict[str, Any]]:
    """callmart's step results as plain data: every plain field, whatever this version of callmart reports."""
    return [step_row(step) for step in steps]


def step_row(step: StepResult) -> dict[str, Any]:
    """One step result's plain fields (counts, seconds, status); the period as its first day."""
    row = {f.name: getattr(step, f.name) for f in fields(step)}
    plain = {name: value for name, value in row.items() if value is None or isinstance(value, int | float | str)}
    return {**plain, "period": f"{step.period[0]:%Y-%m-%d}" if step.period else None}


def phase_callmart_setup(job: Job) -> Timed:
    """Untimed preparation: init the mart and load the dimensions once."""
    from callmart import Callmart, allocator

    began = time.perf_counter()
    with Callmart(job.database, job.source) as mart, allocator.returning_memory():
        mart.init()
        summary = mart.run()
    check_loaded(summary)
    return Timed(time.perf_counter() - began, details={"steps": step_rows(summary.steps)})


def check_loaded(summary: RunSummary) -> None:
    """Raise if a callmart step did not load."""
    for step in [*summary.failed, *summary.waiting]:
        raise RuntimeError(f"callmart step {step.table} {step.status}: {step.error or step.note}")


def callmart_load(job: Job, force: bool, one_period: bool = False) -> Timed:
    """Time enqueue + run of the days: every dimension, then the fact's periods, one a day (or, `one_period`, one
    period of all the days: the same rows at once)."""
    from callmart import Callmart, allocator, control

    clock = StepClock()
    with Callmart(job.database, job.source, reporter=clock) as mart:
        statements = StatementClock(mart.engine)
        with Meter() as meter:
            if one_period:
                with mart.engine.begin() as conn:
                    control.enqueue(conn, mart.schema, FACT, [(job.first, job.last)], force)
            else:
                mart.enqueue(job.first.date(), job.last.date(), force=force)
            # As `callmart run` does: the library leaves the allocators alone, the command line opts in.
            with allocator.returning_memory():
                # The generated extract is final: its last day loads though no call follows it.
                summary = mart.run(complete_through=job.last.date() - timedelta(days=1))
        census = fact_census(mart.engine, job)
    check_loaded(summary)
    rows = sum(s.inserted for s in summary.steps if s.period is not None)
    details = {"steps": step_rows(summary.steps), "splits": clock.splits(), "top_sql": statements.top(6)}
    return meter.result(rows, {**details, "census": census})


def phase_callmart_load(job: Job) -> Timed:
    """First load of the period."""
    return callmart_load(job, force=False)


def phase_callmart_reload(job: Job) -> Timed:
    """Reload of the same period (enqueue with force=True)."""
    return callmart_load(job, force=True)


def phase_callmart_all_but_last(job: Job) -> Timed:
    """Untimed preparation of the daily run: every day but the last loaded, one period a day."""
    from callmart import Callmart, allocator

    began = time.perf_counter()
    last = job.last.date() - timedelta(days=1)
    with Callmart(job.database, job.source) as mart, allocator.returning_memory():
        mart.enqueue(job.first.date(), last)
        summary = mart.run(complete_through=last - timedelta(days=1))
    check_loaded(summary)
    return Timed(time.perf_counter() - began, rows=sum(s.inserted for s in summary.steps if s.period is not None))


def phase_callmart_daily(job: Job) -> Timed:
    """What a scheduler pays each day: `callmart run --daily` as a process of its own (Python's start, imports,
    the dimensions' checks, the new day's load, the aggregates), the day after the last loaded taken as today."""
    import resource
    import subprocess

    last = job.last.date() - timedelta(days=1)
    command = [sys.executable, "-m", "callmart", "run", "--daily", "--as-of", f"{job.last:%Y-%m-%d}"]
    environment = {**os.environ, "CALLMART_DATABASE_URL": job.database, "CALLMART_SOURCE_DIR": str(job.source)}
    began = time.perf_counter()
    done = subprocess.run(
        [*command, "--complete-through", f"{last:%Y-%m-%d}"], env=environment, capture_output=True, text=True
    )
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"callmart run --daily exited {done.returncode}: {done.stderr[-2000:]}")
    # The largest resident set of this process's waited-for children: the command's, the only one.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    from callmart import Callmart

    with Callmart(job.database, job.source) as mart:
        loaded = [row for row in mart.status() if row.get("start_date") == job.last - timedelta(days=1)]
    rows = int(loaded[0].get("rows_loaded") or 0) if loaded else 0
    return Timed(seconds, rows, peak, None, True, {"output": done.stdout.splitlines()[-3:]})


def phase_callmart_one_period(job: Job) -> Timed:
    """First load of all the days as one period: what a backfill of daily periods is compared with."""
    return callmart_load(job, force=False, one_period=True)


def phase_pg_stored_rows(job: Job) -> Timed:
    """What storing the rows callmart stored costs the server alone: the period's staged rows and fact rows, read
    back beforehand, each written by binary COPY into an empty copy of its table, then the fact's primary key (with
    the sort memory callmart's load has), in one transaction. No parsing, cleaning, keys, checks or statistics: the
    floor of the mart's own design."""
    with psycopg.connect(job.database) as conn:
        key = primary_key(conn, FACT)
        payloads = {
            STORED_STAGING: copy_out(conn, sql.SQL("SELECT * FROM {}").format(sql.Identifier(STAGING))),
            STORED_FACT: copy_out(
                conn,
                sql.SQL("SELECT * FROM {} WHERE fecha_llamada >= {} AND fecha_llamada < {}").format(
                    sql.Identifier(FACT), sql.Literal(job.first), sql.Literal(job.last)
                ),
            ),
        }
        conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} (LIKE {})").format(*map(sql.Identifier, STORED_STAGING_OF)))
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE {})").format(*map(sql.Identifier, STORED_FACT_OF)))
        conn.commit()
        with Meter() as meter:
            # The key's sort gets the memory callmart's load gives it (engines/postgres tune_for_bulk).
            conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
            # Emptied in the transaction, as callmart's staging and new partition are, so the rows go in frozen.
            conn.execute(sql.SQL("TRUNCATE {}, {}").format(*map(sql.Identifier, payloads)))
            for table, payload in payloads.items():
                copy_in(conn, table, payload)
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                    sql.Identifier(STORED_FACT), sql.SQL(", ").join(map(sql.Identifier, key))
                )
            )
            conn.commit()
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(STORED_FACT))).fetchone()
    sizes = {table: f"{len(payload) / 2**20:.0f} MB" for table, payload in payloads.items()}
    return meter.result(int(rows[0]) if rows else 0, {"binary COPY": sizes, "primary key": ", ".join(key)})


def primary_key(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """The primary key columns of a table, in key order."""
    found = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
        [table],
    ).fetchall()
    return [row[0] for row in found]


def copy_out(conn: psycopg.Connection[Any], query: sql.Composable) -> bytes:
    """A query's rows as one binary COPY stream."""
    with conn.cursor() as cursor, cursor.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(query)) as copy:
        return b"".join(bytes(data) for data in copy)


def copy_in(conn: psycopg.Connection[Any], table: str, payload: bytes) -> None:
    """Write a binary COPY stream into a table emptied in this transaction, in 1 MB chunks."""
    statement = sql.SQL("COPY {} FROM STDIN (FORMAT binary, FREEZE)").format(sql.Identifier(table))
    view = memoryview(payload)
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for start in range(0, len(view), COPY_CHUNK_BYTES):
            copy.write(view[start : start + COPY_CHUNK_BYTES])


def phase_duckdb_stored_rows(job: Job) -> Timed:
    """DuckDB's counterpart: the period's staged rows and fact rows, read back into Arrow beforehand, each inserted
    into an empty copy of its table, in one transaction."""
    import duckdb

    with duckdb.connect(job.database.removeprefix(DUCKDB_URL_PREFIX)) as conn:
        in_period = (duckdb.ColumnExpression("fecha_llamada") >= duckdb.ConstantExpression(job.first)) & (
            duckdb.ColumnExpression("fecha_llamada") < duckdb.ConstantExpression(job.last)
        )
        rows = {
            STORED_STAGING: conn.table(STAGING).fetch_arrow_table(),
            STORED_FACT: conn.table(FACT).filter(in_period).fetch_arrow_table(),
        }
        for copy, original in (STORED_STAGING_OF, STORED_FACT_OF):
            conn.table(original).limit(0).create(copy)
        with Meter() as meter:
            conn.begin()
            for table, arrow in rows.items():
                conn.from_arrow(arrow).insert_into(table)
            conn.commit()
    return meter.result(rows[STORED_FACT].num_rows, {"from Arrow": {t: a.num_rows for t, a in rows.items()}})


def phase_pandas_setup(job: Job) -> Timed:
    """Untimed preparation for the notebook: the mart's tables and dimensions as callmart creates them."""
    timed = phase_callmart_setup(job)
    with psycopg.connect(job.database, autocommit=True) as conn:
        if is_partitioned(conn, FACT):
            # callmart adds a partition per day as it loads; the notebook writes to the parent table.
            partition = sql.Identifier(f"{FACT}_bench_default")
            conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} DEFAULT").format(partition, sql.Identifier(FACT)))
            timed.details["partition"] = "a DEFAULT partition was added to the partitioned fact table"
    return timed


def is_partitioned(conn: psycopg.Connection[Any], table: str) -> bool:
    """Whether a PostgreSQL table is partitioned."""
    found = conn.execute("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", [table]).fetchone()
    return found is not None


SPARK_LAPPED = (
    "start_run",
    "abandon_dead_runs",
    "free_abandoned",
    "wake_waiting",
    "read_staged",
    "arrow_rejects",
    "insert_inferred",
    "merge_dimension",
    "claim_next",
    "duplicate_rows",
    "inferred_members",
    "period_rows",
    "record_steps",
    "refresh_aggregates",
    "refresh_lift",
    "rebase_lift",
    "mark",
    "finish_run",
    "is_current",
    "merged_from",
    "remember",
    "refresh_metric",
)
"""The functions engines/spark/load.py calls for a run's steps (those it has), timed one by one in the callmart
contenders: Spark
is lazy, so a step's time lands in the call that runs its first action (arrow_rejects: reading and caching the
extract; replace_period: building and writing the fact rows)."""


def open_spark(job: Job) -> tuple[SparkSession, SparkUrl]:
    """The session of the job's Spark URL, started before any timing (the JVM's start is no contender's)."""
    from callmart.engines.spark import Spark, SparkUrl

    url = SparkUrl.parse(job.database)
    return Spark().open_session(url), url


def spark_timed(timed: Timed, spark: SparkSession) -> Timed:
    """A Spark contender's measurement: its work runs in JVMs, so the Python process's memory says nothing."""
    conf = {key: spark.conf.get(key, None) for key in ("spark.master", "spark.sql.shuffle.partitions")}
    return replace(timed, peak_rss_mb=None, base_rss_mb=None, details={**timed.details, "spark": conf})


def phase_spark_csv(job: Job) -> Timed:
    """The Spark floor: the calls file read by spark.read.csv (latin-1, header) and written unchanged, all text, as
    a Delta table of the same warehouse."""
    spark, _ = open_spark(job)
    try:
        with Meter() as meter:
            frame = spark.read.csv(str(job.source / CALLS_FILE), header=True, encoding="ISO-8859-1")
            frame.write.format("delta").mode("overwrite").saveAsTable(RAW_TABLE)
        rows = spark.table(RAW_TABLE).count()
        return spark_timed(meter.result(rows, {}), spark)
    finally:
        spark.stop()


def spark_callmart(
    spark: SparkSession, url: SparkUrl, source: Path, period: tuple[date, date] | None, force: bool, init: bool
) -> list[StepResult]:
    """callmart on Spark: init the mart if asked, queue the period's days if any, and run. The one place that drives
    the Spark run (SparkLoad, until Callmart reaches it: then this becomes Callmart's init, enqueue and run)."""
    from callmart import stage
    from callmart.control import daily_periods
    from callmart.engines.spark.control import enqueue
    from callmart.engines.spark.load import SparkLoad
    from callmart.engines.spark.sql import qualified
    from callmart.extract import find_files, read_source
    from callmart.mart import MART
    from callmart.schema import SCHEMA_VERSION, Schema

    schema = Schema(MART)
    load = SparkLoad(spark, url, schema.tables, MART, source, find_files, read_source, stage.doubts)
    if init:
        load.init(SCHEMA_VERSION)
    if period is not None:
        processes = schema.processes
        name = qualified(url.catalog, url.database, processes.name)
        enqueue(spark, processes, name, FACT, daily_periods(*period), force)
    options = run_options(source)
    done: Any = load.run() if options is None else load.run(options=options)
    # A SparkRun where the run takes options, else the list of its steps.
    return list(getattr(done, "steps", done))


def run_options(source: Path) -> Any:
    """What Callmart.run decides around a Spark run, where this SparkLoad takes it: dimensions whose extracts are
    unchanged since their last merge are skipped (their sources' digests), as on the SQL engines. None where the
    run takes no options (every dimension is merged)."""
    from functools import partial

    from callmart import fingerprint
    from callmart.engines.spark import load

    options = getattr(load, "RunOptions", None)
    return None if options is None else options(fingerprint=partial(fingerprint.fingerprint, source))


def phase_spark_setup(job: Job) -> Timed:
    """Untimed preparation on Spark: the mart's tables, its fixed rows and the dimensions, in one run."""
    spark, url = open_spark(job)
    try:
        began = time.perf_counter()
        steps = spark_callmart(spark, url, job.source, None, force=False, init=True)
        check_steps(steps)
        return spark_timed(Timed(time.perf_counter() - began, details={"steps": step_rows(steps)}), spark)
    finally:
        spark.stop()


def check_steps(steps: list[StepResult]) -> None:
    """Raise if a step of a Spark run did not load."""
    from callmart.status import Status

    for step in steps:
        if step.status is not Status.DONE:
            raise RuntimeError(f"callmart step {step.table} {step.status}: {step.error or step.note}")


def spark_load(job: Job, force: bool) -> Timed:
    """Time enqueue + run on Spark: every dimension merged (the Spark run does not skip unchanged ones yet), then
    the period; each of the run's functions timed on the side."""
    spark, url = open_spark(job)
    try:
        laps: dict[str, float] = {}
        with lapping(laps), Meter() as meter:
            steps = spark_callmart(spark, url, job.source, (job.first.date(), job.last.date()), force, False)
        check_steps(steps)
        rows = sum(s.inserted for s in steps if s.period is not None)
        details = {"steps": step_rows(steps), "laps": laps, "census": spark_census(spark, url, job)}
        return spark_timed(meter.result(rows, details), spark)
    finally:
        spark.stop()


@contextmanager
def lapping(laps: dict[str, float]) -> Iterator[None]:
    """Within the block, each of SPARK_LAPPED (and Spark.replace_period) adds its seconds to laps[its name]."""
    from callmart.engines.spark import Spark, load

    originals = {name: getattr(load, name) for name in SPARK_LAPPED if hasattr(load, name)}
    replace_period = Spark.replace_period
    try:
        for name, function in originals.items():
            setattr(load, name, timing(function, name, laps))
        Spark.replace_period = timing(replace_period, "replace_period", laps)  # type: ignore[method-assign]
        yield
    finally:
        for name, function in originals.items():
            setattr(load, name, function)
        Spark.replace_period = replace_period  # type: ignore[method-assign]


def timing(function: Callable[..., Any], name: str, laps: dict[str, float]) -> Callable[..., Any]:
    """`function`, adding the seconds of each call to laps[name]."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        with lap(laps, name):
            return function(*args, **kwargs)

    return timed


def spark_census(spark: SparkSession, url: SparkUrl, job: Job) -> dict[str, int]:
    """What the Spark load left in the period of fact_llamadas, as fact_census counts it on SQL engines."""
    from pyspark.sql import functions as F

    from callmart.engines.spark.replace import wall_clock
    from callmart.engines.spark.sql import qualified

    moment = F.col("fecha_llamada")
    fact = spark.table(qualified(url.catalog, url.database, FACT))
    in_period = fact.where((moment >= wall_clock(job.first)) & (moment < wall_clock(job.last)))
    found = in_period.agg(
        F.count(F.lit(1)),
        F.count("key_login_post_llamada"),
        F.count(F.when(F.col("key_cliente_llamada") == F.lit(DEFAULT_KEY), 1)),
    ).first()
    rows, with_login, unknown = (int(v) for v in found) if found else (0, 0, 0)
    return {"rows": rows, "with_login_after": with_login, "default_customer": unknown}


def phase_spark_load(job: Job) -> Timed:
    """First load of the period on Spark."""
    return spark_load(job, force=False)


def phase_spark_reload(job: Job) -> Timed:
    """Reload of the same period on Spark (enqueue with force=True)."""
    return spark_load(job, force=True)


PHASES: dict[str, Callable[[Job], Timed]] = {
    "pg-copy": phase_pg_copy,
    "duckdb-read-csv": phase_duckdb_read_csv,
    "callmart-setup": phase_callmart_setup,
    "callmart-load": phase_callmart_load,
    "callmart-reload": phase_callmart_reload,
    "callmart-one-period": phase_callmart_one_period,
    "callmart-all-but-last": phase_callmart_all_but_last,
    "callmart-daily": phase_callmart_daily,
    "pg-stored-rows": phase_pg_stored_rows,
    "duckdb-stored-rows": phase_duckdb_stored_rows,
    "pandas-setup": phase_pandas_setup,
    "pandas-load": phase_pandas_load,
    "spark-csv": phase_spark_csv,
    "spark-setup": phase_spark_setup,
    "spark-load": phase_spark_load,
    "spark-reload": phase_spark_reload,
}


def main(argv: list[str] | None = None) -> int:
    """Run one phase and print its measurement as the last line of stdout."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=sorted(PHASES))
    parser.add_argument("--source", type=Path, required=True, help="the extract folder")
    parser.add_argument("--days", type=int, default=1, help="days in the period")
    args = parser.parse_args(argv)
    job = Job(args.phase, os.environ[TARGET_ENV], args.source, args.days)
    try:
        timed = PHASES[job.phase](job)
    except Exception as error:  # any failure is reported to the parent as data
        traceback.print_exc()
        print(json.dumps({"error": f"{type(error).__name__}: {error}".splitlines()[0]}))
        return 1
    print(json.dumps(asdict(timed), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
