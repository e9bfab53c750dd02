"""A whole run on Spark (engines/spark/load.py) loads what a run of the DuckDB engine loads, step for step.

The oracle is the API on DuckDB: init, the sample's days queued, a run. The same extracts go through SparkLoad on
Delta tables of a database of their own, the same days queued by the engine's enqueue. Every dimension and the fact
table must hold the same rows (surrogate keys, inferred members and the metric included), the control table the
same statuses and row counts, the run log the same counts and rejects. Then a day queued again and reloaded
changes no row, and a change of changing (type 1) attributes in the customers' extract gives DuckDB's dimension."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa

from callmart import Callmart, stage
from callmart.aggregates import AGG_DAILY, COMPUTED_AT, aggregate_tables
from callmart.control import daily_periods
from callmart.engines.spark import Spark, SparkUrl
from callmart.engines.spark.control import enqueue
from callmart.engines.spark.load import SparkLoad
from callmart.engines.spark.sql import qualified
from callmart.extract import find_files, read_source
from callmart.lift import AGG_LIFT_DAILY, EFFECTIVE_CALLS, SHORT_CALLS, lift_tables
from callmart.lift import CUSTOMERS as CUSTOMERS_COUNTED
from callmart.mart import MART
from callmart.mart.sample import generate
from callmart.progress import StepResult
from callmart.schema import PROCESSES, REJECTS, RUN_STEPS, SCHEMA_VERSION, Schema
from callmart.status import Status
from marts import full_dump, select

pytestmark = pytest.mark.spark


ENGINE = Spark()
FACT = MART.facts[0]
FIRST = date(2024, 3, 4)
DAYS = 3
DATABASE = "callmart_load"
CUSTOMERS = "Customers_sample.csv"

Rows = list[tuple[Any, ...]]
Counts = tuple[Any, ...]


def counts(step: StepResult) -> Counts:
    """What a step reports that both engines must agree on."""
    return (
        step.table,
        step.period,
        step.status,
        step.read,
        step.loaded,
        step.rejected,
        step.warned,
        step.inserted,
        step.updated,
        step.inferred,
        step.completed,
    )


def _plain(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row as Delta gives it back: a time of day as its ISO text."""
    return tuple(value.isoformat() if isinstance(value, time) else value for value in row)


@dataclass
class Marts:
    """The same mart on DuckDB (through the API) and on Delta (through SparkLoad)."""

    spark: Any
    folder: Path
    duck_path: Path
    load: SparkLoad
    schema: Schema = field(default_factory=lambda: Schema(MART))

    def duck_run(self) -> list[StepResult]:
        with Callmart(f"duckdb:///{self.duck_path}", self.folder) as api:
            summary = api.run(complete_through=FIRST + timedelta(days=DAYS - 1))
        assert summary.ok, [s.error for s in summary.failed]
        # The step of rows no period could place is not the Spark run's yet.
        return [s for s in summary.steps if not (s.table == FACT.name and s.period is None)]

    def duck_rows(self, table: str, columns: list[str] | None = None) -> Rows:
        names = columns or [c.name for c in self.schema[table].columns]
        with duckdb.connect(str(self.duck_path), read_only=True) as conn:
            found = conn.table(table).select(*names).fetchall()
        return sorted((_plain(row) for row in found), key=repr)

    def delta_rows(self, table: str, columns: list[str] | None = None) -> Rows:
        names = columns or [c.name for c in self.schema[table].columns]
        frame = self.spark.table(qualified(DATABASE, table)).select(*names)
        return sorted((tuple(row) for row in frame.collect()), key=repr)

    def agree(self, table: str, columns: list[str] | None = None) -> Rows:
        """The table's rows (sorted alike: the engines order nulls apart), equal on both engines."""
        expected = self.duck_rows(table, columns)
        assert self.delta_rows(table, columns) == expected, table
        return expected

    def mart_rows(self) -> dict[str, Rows]:
        """Every dimension's and the fact table's rows, after checking both engines hold the same."""
        found = {dim.name: self.agree(dim.name) for dim in MART.dimensions}
        found[FACT.name] = self.agree(FACT.name)
        return found


@dataclass
class FirstLoad:
    marts: Marts
    duck: list[StepResult]
    delta: list[StepResult]
    rows: dict[str, Rows]


@pytest.fixture(scope="module")
def first(spark: Any, spark_url: SparkUrl, tmp_path_factory: pytest.TempPathFactory) -> FirstLoad:
    """The sample's days loaded by both engines from an empty mart."""
    folder = tmp_path_factory.mktemp("extracts")
    generate(folder, calls=300, days=DAYS, customers=100, seed=5)
    _add_bad_rows(folder)
    duck_path = tmp_path_factory.mktemp("duckdb") / "mart.duckdb"
    with Callmart(f"duckdb:///{duck_path}", folder) as api:
        api.init()
        api.enqueue(FIRST, FIRST + timedelta(days=DAYS))

    url = ENGINE.parse(f"spark://local[2]?warehouse={spark_url.warehouse}&database={DATABASE}")
    schema = Schema(MART)
    load = SparkLoad(spark, url, schema.tables, MART, folder, find_files, read_source, stage.doubts)
    load.init(SCHEMA_VERSION)
    marts = Marts(spark, folder, duck_path, load, schema)
    queue(marts, FIRST, DAYS, force=False)
    duck, delta = marts.duck_run(), load.run().steps
    return FirstLoad(marts, duck, delta, marts.mart_rows())


def _add_bad_rows(folder: Path) -> None:
    """Rows for the run log: a call repeated, a call whose talk time cannot be read, one talking longer than it
    lasted (a doubt), and an agent whose level is not a number."""
    calls = folder / "Llamadas_sample.csv"
    with calls.open(encoding="latin-1", newline="") as handle:
        first_call = list(csv.reader(handle))[1]
    added = [
        first_call,
        ["3/5/2024 10:15", "1000001", "CAMP", "5550001", "nadie", "abc", "0:01:00"],
        ["3/5/2024 10:16", "1000002", "CAMP", "5550002", "nadie", "0:05:00", "0:01:00"],
    ]
    with calls.open("a", encoding="latin-1", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(added)
    with (folder / "Agentes_sample.csv").open("a", encoding="latin-1") as handle:
        handle.write("99,zz.nueva,experta,Zoe,Ruiz\n")


def queue(marts: Marts, day: date, days: int, force: bool) -> dict[str, int]:
    """Queue days on Delta, as the API queues them on DuckDB."""
    table = marts.schema.processes
    periods = daily_periods(day, day + timedelta(days=days))
    return enqueue(marts.spark, table, qualified(DATABASE, table.name), FACT.name, periods, force)


def test_a_run_loads_the_rows_duckdb_loads(first: FirstLoad) -> None:
    rows = first.rows
    assert len(rows[FACT.name]) >= 300
    # The comparison means something: calls named unknown customers, and the metric found logins.
    inferred = [c.name for c in first.marts.schema["dim_clientes"].columns].index("is_inferred")
    assert any(row[inferred] for row in rows["dim_clientes"])
    metric = [c.name for c in first.marts.schema[FACT.name].columns].index(FACT.metrics[0].column)
    assert sum(row[metric] is not None for row in rows[FACT.name]) > 5


def test_the_control_table_and_the_run_log_agree(first: FirstLoad) -> None:
    marts = first.marts
    processes = marts.agree(PROCESSES, ["fact_table", "start_date", "end_date", "status", "rows_loaded"])
    assert [row[3] for row in processes] == [Status.DONE.value] * DAYS
    assert [counts(s) for s in first.delta] == [counts(s) for s in first.duck]
    assert [s.table for s in first.delta] == [*(d.name for d in MART.dimensions), *[FACT.name] * DAYS]
    steps = "step table_name period_start rows_read rows_loaded rows_rejected rows_warned rows_inserted rows_updated"
    marts.agree(RUN_STEPS, [*steps.split(), "inferred_members", "status"])
    rejected = "table_name period_start source_file line_number column_name raw_value raw_line reason severity"
    assert marts.agree(REJECTS, rejected.split())


def test_the_aggregates_and_the_lift_are_duckdbs(first: FirstLoad) -> None:
    marts = first.marts
    for table in [*aggregate_tables(sa.MetaData()), *lift_tables(sa.MetaData())]:
        marts.agree(table.name, [c.name for c in table.columns if c.name != COMPUTED_AT])
    # Each day's lift was written by its period's load, among the customers then known; later periods inferred
    # more: every day counts among the customers the mart holds at the end.
    customers = marts.delta_rows("dim_clientes", ["key_cliente"])
    lift = marts.delta_rows(AGG_LIFT_DAILY, ["dia", CUSTOMERS_COUNTED, SHORT_CALLS.share.counted])
    assert len(lift) == DAYS and {row[1] for row in lift} == {len(customers) - 1}
    assert sum(row[2] for row in lift) > 0


def test_a_day_loaded_again_leaves_the_same_rows(first: FirstLoad) -> None:
    marts = first.marts
    assert queue(marts, FIRST + timedelta(days=1), 1, force=True) == {"added": 0, "requeued": 1, "skipped": 0}
    steps = marts.load.run().steps
    again = [s for s in steps if s.period is not None]
    before = next(s for s in first.delta if s.period == again[0].period)
    assert len(again) == 1 and again[0].status is Status.DONE and again[0].inferred == 0
    assert (again[0].read, again[0].inserted, again[0].rejected) == (before.read, before.inserted, before.rejected)
    # Dimensions merged again from the same extracts change nothing.
    assert all((s.inserted, s.updated, s.inferred) == (0, 0, 0) for s in steps if s.period is None)
    assert marts.mart_rows() == first.rows


def test_changed_customers_give_duckdbs_dimension(first: FirstLoad) -> None:
    marts = first.marts
    path = marts.folder / CUSTOMERS
    lines = path.read_text(encoding="latin-1").splitlines()
    header, rows = lines[0], lines[1:]
    flipped = {"GEM": "REGULAR", "REGULAR": "GEM"}
    changed = []
    for line in rows[:3]:
        customer, gender, kind = line.split(",")
        changed.append(f"{customer},{gender},{flipped.get(kind, 'GEM')}")
    # A new customer, and a customer twice: the later row wins, the earlier one is rejected.
    added = ["999000001,M,GEM", f"{rows[5].split(',')[0]},F,REGULAR"]
    path.write_text("\n".join([header, *changed, *rows[3:], *added]) + "\n", encoding="latin-1")

    duck = {s.table: s for s in marts.duck_run()}
    delta = {s.table: s for s in marts.load.run().steps}
    customers = MART.dimension("dim_clientes")
    assert counts(delta[customers.name]) == counts(duck[customers.name])
    assert delta[customers.name].updated >= 3 and delta[customers.name].inserted == 1
    assert delta[customers.name].rejected == 1
    for dim in MART.dimensions:
        marts.agree(dim.name)
    marts.agree(FACT.name)


SEED_DAYS = [date(2023, 6, 27), date(2023, 6, 28), date(2023, 7, 25), date(2023, 7, 27), date(2023, 8, 25)]
"""Days of the real extracts with calls, some of them a day apart, some weeks."""


def test_the_real_extracts_give_duckdbs_mart_through_the_api(
    spark_database: Any, seed_dir: Path, tmp_path: Path
) -> None:
    duck = f"duckdb:///{tmp_path / 'seed.duckdb'}"
    delta = f"{spark_database.text}&database=callmart_seed"
    try:
        for url in (duck, delta):
            with Callmart(url, seed_dir) as api:
                api.init()
                for day in SEED_DAYS:
                    api.enqueue(day, day + timedelta(days=1))
                summary = api.run()
            assert summary.ok and len(summary.loaded) == len(SEED_DAYS), [s.error for s in summary.failed]
        tables = [*(d.name for d in MART.dimensions), FACT.name]
        expected = full_dump(duck, tables)
        assert full_dump(delta, tables) == expected
        # The comparison means something: the days' calls, some of which met their first login.
        assert len(expected[FACT.name]) > 100
        assert sum(row[-1] is not None for row in expected[FACT.name]) > 10
        # The conversion aggregates and the lift of those days, all but when each row was computed: the lift's
        # customers are those after the last period's inferred members, every day's brought to them at the end.
        for table in [*aggregate_tables(sa.MetaData()), *lift_tables(sa.MetaData())]:
            columns = [c.name for c in table.columns if c.name != COMPUTED_AT]
            assert select(delta, table.name, *columns) == select(duck, table.name, *columns), table.name
        conversions = select(duck, AGG_DAILY, "conversiones")
        assert len(conversions) > 10 and sum(row[0] for row in conversions) > 10
        counts = (EFFECTIVE_CALLS.converted, SHORT_CALLS.share.counted, CUSTOMERS_COUNTED)
        lift = select(duck, AGG_LIFT_DAILY, "dia", *counts)
        assert len(lift) >= len(SEED_DAYS) and sum(row[1] for row in lift) > 10 and sum(row[2] for row in lift) > 10
        assert len({row[3] for row in lift}) == 1 and lift[0][3] > 100
    finally:
        spark_database.session.sql("DROP DATABASE IF EXISTS callmart_seed CASCADE")
