"""A fact period computed on Spark equals, row for row and key for key, what the DuckDB engine loads.

The oracle is DuckDB through the API: the extracts loaded in two runs, the first merging the dimensions alone, so
that the dimensions as they stood before the fact periods can be copied into Delta tables; the second loading the
periods (making inferred members). Spark then stages the same extract on the driver by the generic Arrow path,
makes the inferred members, computes each period's rows, and writes them with the engine's replaceWhere. The Delta
fact table must equal DuckDB's fact_llamadas (keys, inferred members' keys and the metric included), the dimensions
DuckDB's after its load; a second load of a period must leave the same rows and add no member."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from callmart import Callmart
from callmart.clean import clean_batch
from callmart.declare import Fact, Mart
from callmart.engines.spark import Spark, SparkUrl
from callmart.engines.spark.facts import arrow_frame, duplicate_rows, inferred_members, period_rows
from callmart.engines.spark.sql import qualified
from callmart.extract import read_source
from callmart.mart import MART
from callmart.mart.sample import generate
from callmart.rejects import DUPLICATE_ROW
from callmart.schema import Schema
from callmart.settings import find_config, load_mart
from callmart.stage import source_fields, staged_columns
from marts import write_extracts

pytestmark = pytest.mark.spark

ENGINE = Spark()
FACT = MART.facts[0]
FIRST = date(2024, 3, 4)
DAYS = 3


@dataclass
class Oracle:
    """What DuckDB loaded: its mart file, the dimensions before the last run's periods, and its periods."""

    path: Path
    mart: Mart
    before: dict[str, pa.Table]
    periods: list[tuple[datetime, datetime]]

    def rows(self, table: str, order: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.path), read_only=True) as conn:
            return [_plain(row) for row in conn.table(table).order(order).fetchall()]

    def records(self, table: str, order: str) -> list[dict[str, Any]]:
        """The rows of a table by column name."""
        with duckdb.connect(str(self.path), read_only=True) as conn:
            found = conn.table(table).order(order)
            return [dict(zip(found.columns, row, strict=True)) for row in found.fetchall()]


def _plain(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row as Delta gives it back: a time of day as its ISO text."""
    return tuple(value.isoformat() if isinstance(value, time) else value for value in row)


def _dimensions(path: Path, mart: Mart) -> dict[str, pa.Table]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return {dim.name: conn.table(dim.name).to_arrow_table() for dim in mart.dimensions}


def _load(path: Path, folder: Path, days: list[date], config: Path | None = None) -> dict[str, pa.Table]:
    """Merge the dimensions in a run of their own, then load `days` in a second; the dimensions between them."""
    url = f"duckdb:///{path}"
    with Callmart(url, folder, config=config) as mart:
        mart.init()
        assert mart.run().ok
    before = _dimensions(path, mart.schema.mart)
    with Callmart(url, folder, config=config) as mart:
        mart.enqueue(days[0], days[-1] + timedelta(days=1))
        summary = mart.run(complete_through=days[-1])
    assert summary.ok, [s.error for s in summary.failed]
    assert len(summary.loaded) == len(days)
    return before


def _periods(path: Path) -> list[tuple[datetime, datetime]]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.sql("SELECT start_date, end_date FROM dm_processes WHERE status = 'exitoso' ORDER BY 1").fetchall()


def _add_calls(folder: Path) -> None:
    """Calls naming an agent and customers that the extracts of the dimensions lack, on two days (the second day
    names the first one's unknown customer again), and an exact copy of an earlier call."""
    calls = next(folder.glob("Llamadas*.csv"))
    if not calls.read_bytes().endswith(b"\n"):
        calls.write_bytes(calls.read_bytes() + b"\n")
    with calls.open(encoding="latin-1", newline="") as handle:
        first = next(csv.DictReader(handle))
    added = [
        ["3/4/2024 11:07", "990001", "NUEVA", "5550001", "zz.nueva", "0:02:10", "0:02:40"],
        ["3/4/2024 11:07", "990007", "NUEVA", "5550002", "aa.nuevo", "0:00:10", "0:00:40"],
        ["3/5/2024 09:30", "990001", "NUEVA", "5550001", "zz.nueva", "0:01:10", "0:01:40"],
        ["3/5/2024 09:31", "990002", "", "5550003", "", "0:00:50", "0:01:00"],
        list(first.values()),
    ]
    with calls.open("a", encoding="latin-1", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(added)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Oracle]:
    """A small generated sample with unknown ids and a duplicate call, loaded on DuckDB."""
    folder = tmp_path_factory.mktemp("sample")
    generate(folder, calls=400, days=DAYS, customers=120, seed=3)
    _add_calls(folder)
    path = tmp_path_factory.mktemp("duckdb") / "mart.duckdb"
    days = [FIRST + timedelta(days=n) for n in range(DAYS)]
    before = _load(path, folder, days)
    return folder, Oracle(path, MART, before, _periods(path))


def _staged(folder: Path, fact: Fact) -> pa.Table:
    """The extract's loadable rows, read and cleaned as the generic staging does, on the driver."""
    problems: list[pa.Table] = []
    batches = []
    for raw in read_source(folder, fact.source, source_fields(fact), problems):
        cleaned = clean_batch(raw, staged_columns(fact))
        batches.append(cleaned.rows.filter(pc.invert(cleaned.bad)))
    return pa.Table.from_batches(batches)


@dataclass
class Lake:
    """The mart's dimensions and fact table on Delta, fed by the engine's fact load."""

    spark: Any
    url: SparkUrl
    mart: Mart
    schema: Schema
    staged: Any
    inferred: list[dict[str, int]] = field(default_factory=list)

    def name(self, table: str) -> str:
        return qualified(self.url.database, table)

    def load(self, start: datetime, end: datetime) -> dict[str, int]:
        """Inferred members, then the period's rows in one replaceWhere commit."""
        fact = self.mart.facts[0]
        inferred = inferred_members(self.spark, self.mart, fact, self.url, self.staged, start, end)
        rows = period_rows(self.spark, self.mart, fact, self.schema[fact.name], self.url, self.staged, start, end)
        ENGINE.replace_period(rows, self.schema[fact.name], self.url, start, end)
        return inferred

    def rows(self, table: str, order: str) -> list[tuple[Any, ...]]:
        columns = [c.name for c in self.schema[table].columns]
        return [tuple(row) for row in self.spark.table(self.name(table)).select(*columns).orderBy(order).collect()]

    def version(self, table: str) -> int:
        return int(self.spark.sql(f"DESCRIBE HISTORY {self.name(table)} LIMIT 1").first()["version"])


def _lake(spark: Any, spark_url: SparkUrl, database: str, oracle: Oracle, folder: Path) -> Lake:
    """The dimensions and the fact table as Delta tables in a database of their own, the dimensions holding
    DuckDB's rows as they stood before its periods; the extract staged."""
    url = ENGINE.parse(f"spark://local[2]?warehouse={spark_url.warehouse}&database={database}")
    schema = Schema(oracle.mart)
    tables = [schema[dim.name] for dim in oracle.mart.dimensions] + [schema[f.name] for f in oracle.mart.facts]
    ENGINE.create_tables(spark, tables, url)
    lake = Lake(spark, url, oracle.mart, schema, arrow_frame(spark, _staged(folder, oracle.mart.facts[0])))
    for name, rows in oracle.before.items():
        columns = [c.name for c in schema[name].columns]
        arrow_frame(spark, rows).select(*columns).writeTo(lake.name(name)).append()
    return lake


@pytest.fixture(scope="module")
def lake(spark: Any, spark_url: SparkUrl, sample: tuple[Path, Oracle]) -> Iterator[Lake]:
    folder, oracle = sample
    loaded = _lake(spark, spark_url, "callmart_facts", oracle, folder)
    loaded.inferred = [loaded.load(start, end) for start, end in oracle.periods]
    yield loaded


def test_the_fact_rows_equal_duckdbs_keys_and_metric_included(sample: tuple[Path, Oracle], lake: Lake) -> None:
    _, oracle = sample
    assert len(oracle.periods) == DAYS
    expected = oracle.rows(FACT.name, FACT.key)
    got = lake.rows(FACT.name, FACT.key)
    assert len(got) == len(expected) > 400
    assert got == expected
    # The comparison means something: the metric found logins, and keys count calls sharing a minute.
    metric = [c.name for c in lake.schema[FACT.name].columns].index(FACT.metrics[0].column)
    assert sum(row[metric] is not None for row in got) > 10
    assert any(row[0] % 100_000 > 1 for row in got)


def test_unknown_ids_become_the_same_inferred_members(sample: tuple[Path, Oracle], lake: Lake) -> None:
    _, oracle = sample
    for dim in MART.dimensions:
        assert lake.rows(dim.name, dim.key) == oracle.rows(dim.name, dim.key), dim.name
    made = lake.inferred
    assert made[0]["dim_clientes"] >= 2 and made[1]["dim_clientes"] >= 1 and made[0]["dim_agentes"] >= 2
    inferred = {row["id_cliente"]: row["key_cliente"] for row in oracle.records("dim_clientes", "key_cliente")}
    assert 990002 in inferred and inferred[990001] < inferred[990007] < inferred[990002]
    before = oracle.before["dim_clientes"]["key_cliente"]
    assert inferred[990001] > pc.max(before).as_py()


def test_loading_a_period_again_leaves_the_same_rows(sample: tuple[Path, Oracle], lake: Lake) -> None:
    _, oracle = sample
    versions = {dim.name: lake.version(dim.name) for dim in MART.dimensions}
    fact_version = lake.version(FACT.name)
    start, end = oracle.periods[1]
    assert lake.load(start, end) == {}
    assert {dim.name: lake.version(dim.name) for dim in MART.dimensions} == versions
    assert lake.version(FACT.name) == fact_version + 1
    assert lake.rows(FACT.name, FACT.key) == oracle.rows(FACT.name, FACT.key)


def test_duplicate_rows_are_the_warnings_duckdb_records(sample: tuple[Path, Oracle], lake: Lake) -> None:
    _, oracle = sample
    with duckdb.connect(str(oracle.path), read_only=True) as conn:
        expected = conn.execute(
            "SELECT source_file, line_number, severity FROM dm_rejects WHERE reason = ? ORDER BY 1, 2", [DUPLICATE_ROW]
        ).fetchall()
    got = sorted(
        (row["source_file"], row["source_row"], row["severity"])
        for start, end in oracle.periods
        for row in duplicate_rows(lake.staged, FACT, start, end).collect()
    )
    assert got == expected and expected


# --- dimensions that keep history ----------------------------------------------------------------------------------

HISTORY = """
[scd.dim_clientes]
tipo_cliente = "historical"
genero_cliente = "fixed"

[scd.dim_agentes]
nivel_expertise_agente = "historical"
"""

TALK = "0:01:00"
HISTORY_CALLS = [
    ("3/4/2024 10:00", 101, "CAMP", "5550000001", "ana.lopez", TALK, TALK),
    ("3/4/2024 10:00", 102, "CAMP", "5550000002", "ana.lopez", TALK, TALK),
    ("3/5/2024 18:00", 101, "CAMP", "5550000001", "ana.lopez", TALK, TALK),
    ("3/6/2024 09:00", 101, "CAMP", "5550000001", "ana.lopez", TALK, TALK),
    ("3/6/2024 09:05", 102, "CAMP", "5550000002", "ana.lopez", "0:00:20", TALK),
    ("3/6/2024 11:00", 555, "CAMP", "5550000005", "beto.ruiz", TALK, TALK),
]
HISTORY_LOGINS = [(1, 101, "3/6/2024 10:00:00", 1), (2, 102, "3/6/2024 10:00:00", 2), (3, 102, "3/4/2024 10:00:00", 1)]
AGENTS = [(1, "ana.lopez", 1, "Ana", "López")]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Oracle]:
    """Customers and agents keeping history: a customer's type and an agent's level change between runs, so
    calls of different days meet different versions; the last day names an unknown customer and agent."""
    root = tmp_path_factory.mktemp("history")
    config = root / "callmart.toml"
    config.write_text(HISTORY)
    folder, path = root / "src", root / "mart.duckdb"
    states = [
        ([(101, "F", "REGULAR"), (102, "M", "GEM")], AGENTS),
        ([(101, "F", "GEM"), (102, "M", "GEM")], [(1, "ana.lopez", 2, "Ana", "López")]),
        ([(101, "F", "GEM"), (102, "M", "REGULAR")], [(1, "ana.lopez", 2, "Ana", "López")]),
    ]
    before: dict[str, pa.Table] = {}
    for day, (customers, agents) in enumerate(states):
        write_extracts(folder, calls=HISTORY_CALLS, customers=customers, agents=agents, logins=HISTORY_LOGINS)
        before = _load(path, folder, [FIRST + timedelta(days=day)], config)
    mart = load_mart(MART, find_config(config))
    return folder, Oracle(path, mart, before, _periods(path))


def test_history_dimensions_give_each_row_the_version_valid_then(
    spark: Any, spark_url: SparkUrl, history: tuple[Path, Oracle]
) -> None:
    folder, oracle = history
    assert oracle.mart.dimension("dim_clientes").keeps_history
    lake = _lake(spark, spark_url, "callmart_facts_history", oracle, folder)
    made = [lake.load(start, end) for start, end in oracle.periods]
    assert made[-1] == {"dim_clientes": 1, "dim_agentes": 1}
    expected = oracle.rows(FACT.name, FACT.key)
    assert lake.rows(FACT.name, FACT.key) == expected
    for dim in oracle.mart.dimensions:
        assert lake.rows(dim.name, dim.key) == oracle.rows(dim.name, dim.key), dim.name
    # Calls met both versions of customer 101, and the metric followed the customer across them.
    customers = {row["key_cliente"]: row for row in oracle.records("dim_clientes", "key_cliente")}
    calls = [
        {**c, "id_cliente": customers[c["key_cliente_llamada"]]["id_cliente"]}
        for c in oracle.records(FACT.name, FACT.key)
    ]
    met = {customers[c["key_cliente_llamada"]]["version"] for c in calls if c["id_cliente"] == 101}
    assert met == {1, 2}
    logins = {row["key_login"]: row["id_login"] for row in oracle.records("dim_logins", "key_login")}
    found = [(c["fecha_llamada"].day, logins.get(c["key_login_post_llamada"], 0)) for c in calls]
    assert sorted(found) == [(4, 0), (4, 3), (5, 1), (6, 0), (6, 0), (6, 1)]
