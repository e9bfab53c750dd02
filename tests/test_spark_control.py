"""The control table's bulk operations and the run log on Delta, against the SQL functions on DuckDB: the same rows
before, the same operation, the same rows after. Then what only Delta has to show: runs started together get
distinct ids, a run that beats is alive and one whose heartbeat is stale is abandoned, and a step recorded again
replaces its rows.

Only Spark beats in dm_runs.heartbeat_at (engines/spark/runs.py): the comparisons leave it out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from callmart import control, rejects, runlog
from callmart.engines.spark import Spark, SparkUrl
from callmart.engines.spark import control as spark_control
from callmart.engines.spark import runs as spark_runs
from callmart.engines.spark.control import HEARTBEAT
from callmart.engines.spark.sql import qualified
from callmart.engines.spark.tables import spark_schema
from callmart.mart import MART
from callmart.progress import StepResult
from callmart.schema import REJECTS, RUN_STEPS, RUNS, Schema
from callmart.status import Status

pytestmark = pytest.mark.spark

ENGINE = Spark()
DATABASE = "callmart_control"
FACT = MART.facts[0].name
NOW = datetime(2024, 3, 8, 12, 0)
STALE = timedelta(minutes=5)
SOURCE = Path("/exports")

Tables = dict[str, tuple[sa.Table, str]]


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema(MART)


@pytest.fixture(scope="module")
def delta(spark: Any, spark_url: SparkUrl, schema: Schema) -> Tables:
    """The control table and the run log as Delta tables of a database of their own: each table and its name."""
    url = ENGINE.parse(f"spark://local[2]?warehouse={spark_url.warehouse}&database={DATABASE}")
    tables = [schema.processes, schema[RUNS], schema[RUN_STEPS], schema[REJECTS]]
    ENGINE.create_tables(spark, tables, url)
    return {table.name: (table, qualified(DATABASE, table.name)) for table in tables}


@pytest.fixture
def duck(tmp_path: Path, schema: Schema) -> Iterator[sa.Connection]:
    """A fresh DuckDB mart, in a transaction."""
    engine = sa.create_engine(f"duckdb:///{tmp_path / 'mart.duckdb'}")
    with engine.begin() as conn:
        schema.create(conn)
        yield conn
    engine.dispose()


# --- rows in, rows out ---------------------------------------------------------------------------------------------


def _period(id_process: int, status: Status, id_run: int | None = None, error: str | None = None) -> dict[str, Any]:
    start = datetime(2024, 3, id_process)
    return {
        "id_process": id_process,
        "fact_table": FACT,
        "start_date": start,
        "end_date": start + timedelta(days=1),
        "status": status.value,
        "process_run_date": None if id_run is None else datetime(2024, 3, 8),
        "id_run": id_run,
        "finished_at": None,
        "rows_loaded": None,
        "error_message": error,
    }


PERIODS = [
    _period(1, Status.RUNNING, 1),
    _period(2, Status.RUNNING, 2),
    _period(3, Status.PENDING),
    _period(4, Status.WAITING, 1, "no extract yet"),
    _period(5, Status.FAILED, 1, "boom"),
    _period(6, Status.FAILED, 2, "bang"),
    _period(7, Status.DONE, 2),
    _period(8, Status.WAITING, 2),
    _period(9, Status.RUNNING, 9),
]
"""Periods of every status; run 9, holding period 9, is not in the run log."""


def _run(id_run: int, status: Status, heartbeat: datetime | None, error: str | None = None) -> dict[str, Any]:
    started = datetime(2024, 3, 8, id_run)
    finished = None if status == Status.RUNNING else started + timedelta(minutes=30)
    return {
        "id_run": id_run,
        "started_at": started,
        "finished_at": finished,
        "status": status.value,
        "source_dir": str(SOURCE),
        "error_message": error,
        HEARTBEAT: heartbeat,
    }


RUNS_LOG = [
    _run(1, Status.RUNNING, NOW - timedelta(minutes=10)),
    _run(2, Status.RUNNING, NOW - timedelta(minutes=6)),
    _run(3, Status.DONE, NOW - timedelta(hours=1)),
    _run(4, Status.RUNNING, NOW),
    _run(5, Status.FAILED, NOW - timedelta(hours=1), "bad extract"),
    _run(6, Status.RUNNING, None),
]
"""Runs 1, 2 and 6 are still recorded as running but are dead at NOW: 1 and 2 stopped beating, 6 never beat and
started hours ago. Run 4 is alive."""


def _put(spark: Any, delta: Tables, table: str, rows: list[dict[str, Any]]) -> None:
    """Make `rows` the rows of the Delta table."""
    from pyspark.sql.functions import lit

    declared, name = delta[table]
    data = [tuple(row.get(c.name) for c in declared.columns) for row in rows]
    spark.createDataFrame(data, spark_schema(declared, nullable=True)).writeTo(name).overwrite(lit(True))


def _put_duck(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    conn.execute(sa.insert(table), [{c.name: row.get(c.name) for c in table.columns} for row in rows])


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: [(v is not None, v) for v in row.values()])


def _got(spark: Any, delta: Tables, table: str) -> list[dict[str, Any]]:
    """The rows of the Delta table, without the heartbeat (only Spark beats), in a stable order."""
    rows = [row.asDict() for row in spark.table(delta[table][1]).collect()]
    return _sorted([{k: v for k, v in row.items() if k != HEARTBEAT} for row in rows])


def _got_duck(conn: sa.Connection, table: sa.Table) -> list[dict[str, Any]]:
    return _sorted(
        [{k: v for k, v in row._mapping.items() if k != HEARTBEAT} for row in conn.execute(sa.select(table))]
    )


# --- the control table ---------------------------------------------------------------------------------------------

Operation = tuple[Callable[[sa.Connection, Schema], int], Callable[[Any, Tables], int]]

OPERATIONS: dict[str, Operation] = {
    "requeue_running": (
        lambda conn, schema: control.requeue_running(conn, schema, 1, "queued again: run 1 was stopped"),
        lambda spark, delta: spark_control.requeue_running(
            spark, *delta["dm_processes"], 1, "queued again: run 1 was stopped"
        ),
    ),
    "requeue_failed": (
        control.requeue_failed,
        lambda spark, delta: spark_control.requeue_failed(spark, *delta["dm_processes"]),
    ),
    "wake_waiting": (
        control.wake_waiting,
        lambda spark, delta: spark_control.wake_waiting(spark, *delta["dm_processes"]),
    ),
    # DuckDB knows of no other run alive (one process holds the file): every running period is freed. On Delta the
    # runs holding them are dead by their heartbeats, or missing from the run log.
    "free_abandoned": (
        control.free_abandoned,
        lambda spark, delta: spark_control.free_abandoned(spark, *delta["dm_processes"], delta[RUNS][1], NOW, STALE),
    ),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_a_control_operation_changes_the_rows_the_sql_one_does(
    spark: Any, delta: Tables, duck: sa.Connection, schema: Schema, operation: str
) -> None:
    on_sql, on_spark = OPERATIONS[operation]
    _put_duck(duck, schema.processes, PERIODS)
    _put(spark, delta, "dm_processes", PERIODS)
    _put(spark, delta, RUNS, RUNS_LOG)
    expected = on_sql(duck, schema)
    assert expected > 0
    assert on_spark(spark, delta) == expected
    assert _got(spark, delta, "dm_processes") == _got_duck(duck, schema.processes)
    assert _got(spark, delta, "dm_processes") != _sorted(PERIODS)


def test_the_periods_of_a_beating_run_are_not_freed(spark: Any, delta: Tables) -> None:
    log = [_run(1, Status.RUNNING, NOW - timedelta(minutes=10)), _run(2, Status.RUNNING, NOW - timedelta(minutes=1))]
    _put(spark, delta, "dm_processes", PERIODS)
    _put(spark, delta, RUNS, log)
    assert not spark_runs.alive(spark, delta[RUNS][1], 1, NOW, STALE)
    assert spark_runs.alive(spark, delta[RUNS][1], 2, NOW, STALE)
    assert spark_control.free_abandoned(spark, *delta["dm_processes"], delta[RUNS][1], NOW, STALE) == 2
    freed = {"status": Status.PENDING.value, "error_message": "queued again: the run loading it stopped"}
    expected = [{**row, **freed} if row["id_process"] in (1, 9) else row for row in PERIODS]
    assert _got(spark, delta, "dm_processes") == _sorted(expected)


# --- the run log ---------------------------------------------------------------------------------------------------


def test_a_run_starts_with_the_next_id_as_on_sql(
    spark: Any, delta: Tables, duck: sa.Connection, schema: Schema
) -> None:
    _put_duck(duck, schema[RUNS], RUNS_LOG)
    # The SQL run log numbers runs by a sequence: it stands where the runs of the log left it.
    for _ in RUNS_LOG:
        duck.execute(sa.select(schema.sequences[RUNS].next_value()))
    _put(spark, delta, RUNS, RUNS_LOG)
    assert runlog.start_run(duck, schema, NOW, SOURCE) == 7
    assert spark_runs.start_run(spark, *delta[RUNS], NOW, SOURCE) == 7
    assert _got(spark, delta, RUNS) == _got_duck(duck, schema[RUNS])
    # A run is alive from its start.
    assert spark_runs.alive(spark, delta[RUNS][1], 7, NOW, STALE)


def test_runs_finish_as_on_sql(spark: Any, delta: Tables, duck: sa.Connection, schema: Schema) -> None:
    _put_duck(duck, schema[RUNS], RUNS_LOG)
    _put(spark, delta, RUNS, RUNS_LOG)
    outcomes: list[dict[str, Any]] = [
        {"id_run": 1, "ok": True},
        {"id_run": 2, "ok": False, "error": "boom"},
        {"id_run": 4, "ok": False, "error": "stopped by SIGTERM", "stopped": True},
    ]
    before = datetime.now()
    for outcome in outcomes:
        runlog.finish_run(duck, schema, **outcome)
        spark_runs.finish_run(spark, *delta[RUNS], **outcome)
    got, expected = _got(spark, delta, RUNS), _got_duck(duck, schema[RUNS])
    # finish_run stamps the time it ran: the same rows but for that.
    for row in got + expected:
        if row["id_run"] in (1, 2, 4):
            assert row.pop("finished_at") >= before
    assert got == expected


def test_dead_runs_are_abandoned_as_on_sql(spark: Any, delta: Tables, duck: sa.Connection, schema: Schema) -> None:
    _put_duck(duck, schema[RUNS], RUNS_LOG)
    _put(spark, delta, RUNS, RUNS_LOG)
    assert runlog.abandon_dead_runs(duck, schema, 4) == 3
    assert spark_runs.abandon_dead_runs(spark, delta[RUNS][1], 4, NOW, STALE) == 3
    assert _got(spark, delta, RUNS) == _got_duck(duck, schema[RUNS])


def test_a_beating_run_is_not_abandoned_and_stops_beating_on_exit(spark: Any, delta: Tables) -> None:
    """Run 2's heartbeat is stale when its block starts: its beats make it alive again, runs 1 and 6 stay dead.
    The runs are abandoned while run 2's thread beats (their commits conflict and are retried)."""
    name = delta[RUNS][1]
    _put(spark, delta, RUNS, RUNS_LOG)
    beats: list[datetime] = []

    def clock() -> datetime:
        beats.append(datetime.now())
        return beats[-1]

    with spark_runs.run_alive(spark, name, 2, every=1.0, clock=clock):
        assert spark_runs.abandon_dead_runs(spark, name, 4, datetime.now(), STALE) == 2
        deadline = time.monotonic() + 120
        while len(beats) < 2:
            assert time.monotonic() < deadline, "the thread did not beat"
            time.sleep(0.2)
    stopped = len(beats)
    time.sleep(2.5)
    assert len(beats) == stopped
    rows = {row["id_run"]: (row["status"], row[HEARTBEAT]) for row in spark.table(name).collect()}
    assert {id_run: status for id_run, (status, _) in rows.items()} == {
        1: Status.ABANDONED,
        2: Status.RUNNING,
        3: Status.DONE,
        4: Status.RUNNING,
        5: Status.FAILED,
        6: Status.ABANDONED,
    }
    assert rows[2][1] in beats
    # An abandoned run does not beat back to life.
    assert not spark_runs.beat(spark, name, 1, datetime.now())


def test_runs_starting_together_get_distinct_ids(spark: Any, delta: Tables) -> None:
    _put(spark, delta, RUNS, [])
    ids: list[int] = []
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def starter() -> None:
        try:
            start.wait()
            for _ in range(2):
                ids.append(spark_runs.start_run(spark, *delta[RUNS], NOW, SOURCE))
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=starter) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert sorted(ids) == [1, 2, 3, 4]
    assert sorted(row["id_run"] for row in spark.table(delta[RUNS][1]).collect()) == [1, 2, 3, 4]


def _step(table: str, day: int | None, files: list[tuple[int, str]], **counts: Any) -> StepResult:
    """A step's result; `files`: its reject rows (line, severity) of one file."""
    found = rejects.concat(
        [rejects.make(["x.csv"], [line], "fecha", [f"v{line}"], [f"l{line}"], "unreadable", sev) for line, sev in files]
    )
    period = None if day is None else (datetime(2024, 3, day), datetime(2024, 3, day + 1))
    return StepResult(table=table, period=period, rejects=found if files else None, **counts)


def test_a_step_recorded_again_replaces_its_rows(
    spark: Any, delta: Tables, duck: sa.Connection, schema: Schema
) -> None:
    """Steps 1 and 3 are recorded twice on Delta, as a retry does (3 with its rejects gone the second time): the
    rows are those the SQL function leaves from recording each step's last try once."""
    error, warning = rejects.ERROR, rejects.WARNING
    first = {
        1: _step(FACT, 4, [(2, error), (3, error), (4, warning)], read=10, loaded=8, rejected=2, seconds=1.5),
        3: _step(FACT, 5, [(9, error)], read=3, loaded=2, rejected=1, seconds=0.5),
    }
    last = {
        1: _step(FACT, 4, [(2, error), (5, warning)], read=10, loaded=9, rejected=1, warned=1, seconds=2.0),
        2: _step("dim_clientes", None, [(7, warning)], read=5, loaded=5, warned=1, inserted=5, seconds=0.25),
        3: _step(FACT, 5, [], read=3, loaded=0, seconds=0.5, status=Status.FAILED, error="boom"),
    }
    # None found, as a Spark step gives them: two reject frames' batches of no rows.
    none = pa.Table.from_batches([pa.RecordBatch.from_pylist([], schema=rejects.REJECT_SCHEMA)])
    last[3].rejects = rejects.concat([none, none])
    for step, result in last.items():
        runlog.record_step(duck, schema, 1, step, result)
    _put(spark, delta, RUN_STEPS, [])
    _put(spark, delta, REJECTS, [])
    tables = delta[RUN_STEPS], delta[REJECTS]
    # As a run writes them: several steps at once (a period's, with the dimensions' before it), or one; the last
    # write's first step has no rejects, its second some.
    for results in ([(1, first[1]), (2, last[2])], [(3, first[3])], [(3, last[3]), (1, last[1])]):
        spark_runs.record_steps(spark, *tables, 1, results)
    assert _got(spark, delta, RUN_STEPS) == _got_duck(duck, schema[RUN_STEPS])
    assert _got(spark, delta, REJECTS) == _got_duck(duck, schema[REJECTS])
    assert len(_got(spark, delta, REJECTS)) == 3
