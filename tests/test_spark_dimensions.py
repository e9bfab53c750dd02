"""Dimensions merged into Delta tables by their SCD types give the DuckDB engine's rows, surrogate keys included.

Each test loads the same extracts into a DuckDB mart (dimension.load_dimension, the oracle) and into Delta tables
(engines/spark/dimensions.merge_dimension, from rows staged on the driver by the functions stage.py uses), then
compares every dimension row, the counts and the rejects."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa

from callmart.api import Callmart
from callmart.clean import arrow_type, clean_batch
from callmart.config import sample_dir
from callmart.declare import BEGINNING, DEFAULT_MEMBER_ID, IS_CURRENT, VALID_FROM, VALID_TO, VERSION, Dimension, Mart
from callmart.dimension import load_dimension
from callmart.engines.spark import Spark, SparkUrl
from callmart.engines.spark.control import write_fixed_rows
from callmart.engines.spark.dimensions import MergeCounts, lookup_columns, merge_dimension
from callmart.engines.spark.sql import qualified
from callmart.engines.spark.tables import spark_schema
from callmart.extract import read_source
from callmart.keys import InferredMembers, KeyLookup, Timeline, with_keys
from callmart.mart import CALLS, MART
from callmart.progress import StepResult
from callmart.rejects import REJECT_SCHEMA, SOURCE_FILE, SOURCE_ROW
from callmart.schema import SCHEMA_VERSION, Schema
from callmart.settings import apply_scd
from callmart.stage import source_fields, staged_columns
from marts import write_extracts

pytestmark = pytest.mark.spark

ENGINE = Spark()
HISTORY = apply_scd(
    MART,
    {
        "dim_clientes": {"tipo_cliente": "historical", "genero_cliente": "fixed"},
        "dim_agentes": {"nivel_expertise_agente": "historical", "apellido_agente": "fixed"},
    },
)
"""The mart that keeps history: customers' type and agents' level make versions, gender and last name stay."""

PEOPLE = 2
"""Customers and agents, the dimensions whose attributes have SCD types in HISTORY: the first two of the mart."""
MARCH_6, MARCH_7, MARCH_8 = datetime(2024, 3, 6), datetime(2024, 3, 7), datetime(2024, 3, 8)


# --- the two marts -------------------------------------------------------------------------------------------------


@dataclass
class DuckMart:
    """The oracle: the mart on DuckDB, loaded by load_dimension."""

    schema: Schema
    engine: sa.Engine

    def load(self, dim: Dimension, folder: Path, business_date: datetime) -> StepResult:
        with self.engine.begin() as conn:
            return load_dimension(conn, self.schema, dim, folder, business_date=business_date)

    def rows(self, name: str) -> list[tuple[object, ...]]:
        with self.engine.connect() as conn:
            return sorted((tuple(r) for r in conn.execute(sa.select(self.schema[name]))), key=repr)

    def infer(self, values: dict[str, list[object]]) -> None:
        """Inferred members, as a fact load makes them: InferredMembers, from a batch of reference values."""
        refs = {r.value.name: r for r in CALLS.references}
        batch = pa.RecordBatch.from_pydict(
            {
                **{refs[name].column: pa.nulls(len(v), pa.int32()) for name, v in values.items()},
                **{name: pa.array(v, arrow_type(refs[name].value.type)) for name, v in values.items()},
            }
        )
        fact = replace(CALLS, references=tuple(refs[n] for n in values))
        with self.engine.begin() as conn:
            members = InferredMembers(conn, self.schema, fact)
            members.fill(batch)
            members.write(conn)


@dataclass
class DeltaMart:
    """The mart's dimensions as Delta tables, merged by merge_dimension."""

    spark: Any
    mart: Mart
    schema: Schema
    database: str
    versions: dict[str, int] = field(default_factory=dict)

    def name(self, table: str) -> str:
        return qualified(self.database, table)

    def load(self, dim: Dimension, folder: Path, business_date: datetime) -> MergeCounts:
        rows = self._staged(dim, folder)
        for ref in dim.references:
            unknown = pc.unique(pc.filter(rows[ref.value.name], pc.is_null(rows[ref.column]))).to_pylist()
            if unknown:
                self._infer(ref.dimension, ref.by, [v for v in unknown if v is not None])
                rows = self._staged(dim, folder)
        staged = self.spark.createDataFrame(rows)
        return merge_dimension(
            self.spark, dim, self.name(dim.name), staged, business_date, lookup_columns(self.mart, dim)
        )

    def _staged(self, dim: Dimension, folder: Path) -> pa.Table:
        """The loadable rows of the extract with their reference keys: what the staging table would hold."""
        columns, problems = staged_columns(dim), list[pa.Table]()
        lookups = [self._lookup(ref.dimension, ref.by, ref.value.name, ref.column, ref.as_of) for ref in dim.references]
        batches = []
        for raw in read_source(folder, dim.source, source_fields(dim), problems):
            cleaned = clean_batch(raw, columns)
            batches.append(with_keys(cleaned.rows.filter(pc.invert(cleaned.bad)), lookups))
        empty = pa.schema(
            [(c.name, arrow_type(c.type)) for c in columns]
            + [(SOURCE_FILE, pa.string()), (SOURCE_ROW, pa.int64())]
            + [(ref.column, pa.int32()) for ref in dim.references]
        )
        return pa.Table.from_batches(batches) if batches else empty.empty_table()

    def _lookup(self, target_name: str, by: str, value: str, key_column: str, as_of: str | None) -> KeyLookup:
        """KeyLookup.load's pairs, read from the Delta table."""
        from pyspark.sql.functions import col

        target = self.mart.dimension(target_name)
        frame = self.spark.table(self.name(target_name)).filter(col(by).isNotNull())
        fields = [("value", arrow_type(target.column(by).type)), ("key", pa.int32())]
        if target.keeps_history and as_of is not None:
            fields += [("valid_from", pa.timestamp("s")), ("valid_to", pa.timestamp("s"))]
            versions = frame.select(by, target.key, VALID_FROM, VALID_TO).toArrow()
            versions = versions.rename_columns([n for n, _ in fields]).cast(pa.schema(fields))
            return KeyLookup(value, key_column, versions, as_of, timeline=Timeline.of(versions))
        if target.keeps_history:
            frame = frame.filter(col(IS_CURRENT))
        pairs = frame.select(by, target.key).toArrow().rename_columns(["value", "key"]).cast(pa.schema(fields))
        return KeyLookup.of_pairs(value, key_column, pairs)

    def infer(self, values: dict[str, list[object]]) -> None:
        refs = {r.value.name: r for r in CALLS.references}
        for name, found in values.items():
            self._infer(refs[name].dimension, refs[name].by, found)

    def _infer(self, target_name: str, by: str, values: list[Any]) -> None:
        """Members for business values the dimension lacks, as keys.InferredMembers and resolve_unknown make them:
        keys after the largest in order of value, attributes unknown, references to the default members."""
        from pyspark.sql.functions import col
        from pyspark.sql.functions import max as max_

        target, table = self.mart.dimension(target_name), self.schema[target_name]
        current = self.spark.table(self.name(target_name))
        present: set[object] = {r[0] for r in current.select(by).collect()}
        largest = current.filter(col(target.key) > 0).agg(max_(target.key)).first()[0] or 0
        rows = []
        for n, value in enumerate(sorted(v for v in set(values) if v not in present), start=1):
            row: dict[str, object] = {target.key: largest + n, by: value, "is_inferred": True}
            row.update({c.name: c.unknown for c in target.columns if c.name != by})
            row.update({r.column: DEFAULT_MEMBER_ID for r in target.references})
            if target.keeps_history:
                row.update({VALID_FROM: BEGINNING, VALID_TO: None, IS_CURRENT: True, VERSION: 1})
            rows.append(tuple(row.get(c.name) for c in table.columns))
        if rows:
            self.spark.createDataFrame(rows, spark_schema(table, nullable=True)).writeTo(
                self.name(target_name)
            ).append()

    def rows(self, name: str) -> list[tuple[object, ...]]:
        return sorted((tuple(r) for r in self.spark.table(self.name(name)).collect()), key=repr)

    def version(self, name: str) -> int:
        return int(self.spark.sql(f"DESCRIBE HISTORY {self.name(name)} LIMIT 1").first()["version"])


@pytest.fixture
def duck(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Makes an empty DuckDB mart of the given declarations."""
    opened: list[Callmart] = []

    def make(mart: Mart) -> DuckMart:
        api = Callmart(f"duckdb:///{tmp_path / 'oracle.duckdb'}", tmp_path, mart=mart)
        api.init()
        opened.append(api)
        return DuckMart(api.schema, api.engine)

    yield make
    for api in opened:
        api.close()


@pytest.fixture
def delta(spark: Any, spark_url: SparkUrl, request: pytest.FixtureRequest) -> Any:
    """Makes the dimensions of the given declarations as Delta tables of a database of the test's own, with their
    default members."""

    def make(mart: Mart) -> DeltaMart:
        database = "dims_" + request.node.name.removeprefix("test_")[:40]
        url = ENGINE.parse(f"spark://local[2]?warehouse={spark_url.warehouse}&database={database}")
        schema = Schema(mart)
        tables = [schema[d.name] for d in mart.dimensions] + [schema["dm_schema"]]
        ENGINE.create_tables(spark, tables, url)
        dimensions = [(d, schema[d.name]) for d in mart.dimensions]
        write_fixed_rows(spark, dimensions, schema["dm_schema"], SCHEMA_VERSION, database)
        return DeltaMart(spark, mart, schema, database)

    return make


# --- what must agree -----------------------------------------------------------------------------------------------


def rejects_of(result: StepResult) -> list[tuple[object, ...]]:
    table = result.rejects if result.rejects is not None else REJECT_SCHEMA.empty_table()
    return sorted((tuple(r.values()) for r in table.to_pylist()), key=repr)


def later_versions(oracle: DuckMart, dim: Dimension) -> int:
    """Rows of the oracle's dimension that are a member's second version or later."""
    if not dim.keeps_history:
        return 0
    with oracle.engine.connect() as conn:
        table = oracle.schema[dim.name]
        return int(conn.execute(sa.select(sa.func.count()).where(table.c[VERSION] > 1)).scalar_one())


def load_both(
    oracle: DuckMart, mart: DeltaMart, dim: Dimension, folder: Path, business_date: datetime = BEGINNING
) -> MergeCounts:
    """Load one extract on both engines; the dimension's rows, keys included, the counts and the rejects agree."""
    before = later_versions(oracle, dim)
    expected = oracle.load(dim, folder, business_date)
    counts = mart.load(dim, folder, business_date)
    assert mart.rows(dim.name) == oracle.rows(dim.name), dim.name
    after = later_versions(oracle, dim)
    assert (counts.inserted, counts.updated, counts.completed, counts.new_versions) == (
        expected.inserted,
        expected.updated,
        expected.completed,
        after - before,
    ), dim.name
    assert (counts.superseded, counts.warned) == (expected.rejected, expected.warned), dim.name
    spark_rejects = sorted((tuple(r) for r in counts.rejects.collect()), key=repr)
    assert spark_rejects == rejects_of(expected), dim.name
    return counts


def load_all(
    oracle: DuckMart, mart: DeltaMart, folder: Path, business_date: datetime = BEGINNING, only: int | None = None
) -> None:
    """Load the extracts of the first `only` dimensions (all by default) on both engines, in the mart's order."""
    for dim in mart.mart.dimensions[:only]:
        load_both(oracle, mart, dim, folder, business_date)
    for dim in mart.mart.dimensions:
        # Members inferred by a later dimension (customers of logins) agree too.
        assert mart.rows(dim.name) == oracle.rows(dim.name), dim.name


def unchanged_by_a_rerun(mart: DeltaMart, folder: Path, business_date: datetime, only: int | None = None) -> None:
    """Merging the same extracts again commits nothing and counts nothing."""
    versions = {d.name: mart.version(d.name) for d in mart.mart.dimensions}
    for dim in mart.mart.dimensions[:only]:
        counts = mart.load(dim, folder, business_date)
        assert (counts.inserted, counts.updated, counts.completed, counts.new_versions) == (0, 0, 0, 0), dim.name
    assert {d.name: mart.version(d.name) for d in mart.mart.dimensions} == versions


# --- the tests -----------------------------------------------------------------------------------------------------


def test_the_sample_gets_the_keys_duckdb_gives(duck: Any, delta: Any) -> None:
    oracle, mart = duck(MART), delta(MART)
    load_all(oracle, mart, sample_dir())
    assert len(mart.rows("dim_clientes")) > 600  # logins inferred some customers
    unchanged_by_a_rerun(mart, sample_dir(), MARCH_6)


def test_changes_follow_each_attributes_type(duck: Any, delta: Any, tmp_path: Path) -> None:
    oracle, mart = duck(HISTORY), delta(HISTORY)
    folder = tmp_path / "extracts"
    agents = [
        (1, "ana.lopez", 1, "Ana", "López"),
        (2, "juan.perez", 2, "Juan", "Pérez"),
        (3, "eva.diaz", 1, "Eva", "Díaz"),
    ]
    customers = [(101, "F", "REGULAR"), (102, "M", "GEM"), (103, "F", "REGULAR")]
    write_extracts(folder, customers=customers, agents=agents)
    load_all(oracle, mart, folder, only=PEOPLE)

    # A new version (102, agent 1), a fixed change warned (101, agent 3), a change in place (agent 2), new
    # members (104, agent 4), and a customer twice in the extract: the later row wins.
    agents = [
        (1, "ana.lopez", 2, "Ana", "López"),
        (2, "juan.perez", 2, "Juanito", "Pérez"),
        (3, "eva.diaz", 1, "Eva", "Diaz"),
        (4, "luis.gil", 3, "Luis", "Gil"),
    ]
    customers = [(101, "M", "REGULAR"), (102, "M", "REGULAR"), (103, "F", "REGULAR"), (105, "F", "GEM")]
    customers += [(104, "F", "GEM"), (105, "M", "REGULAR")]
    write_extracts(folder, customers=customers, agents=agents)
    clientes = load_both(oracle, mart, HISTORY.dimension("dim_clientes"), folder, MARCH_6)
    assert (clientes.inserted, clientes.new_versions, clientes.warned, clientes.superseded) == (3, 1, 1, 1)
    agentes = load_both(oracle, mart, HISTORY.dimension("dim_agentes"), folder, MARCH_6)
    assert (agentes.inserted, agentes.new_versions, agentes.updated, agentes.warned) == (2, 1, 1, 1)

    # Again a version of each: the first name changes in place in both of agent 1's versions.
    agents[0] = (1, "ana.lopez", 3, "Anita", "López")
    customers[1] = (102, "M", "GEM")
    write_extracts(folder, customers=customers, agents=agents)
    load_all(oracle, mart, folder, MARCH_7, only=PEOPLE)
    versions = sorted((r[-1], r[4], r[-2]) for r in mart.rows("dim_agentes") if r[1] == 1)
    assert versions == [(1, "Anita", False), (2, "Anita", False), (3, "Anita", True)]
    unchanged_by_a_rerun(mart, folder, MARCH_8, only=PEOPLE)


def test_inferred_members_are_completed_in_place(duck: Any, delta: Any, tmp_path: Path) -> None:
    oracle, mart = duck(HISTORY), delta(HISTORY)
    folder = tmp_path / "extracts"
    write_extracts(folder, customers=[(101, "F", "REGULAR")])
    load_all(oracle, mart, folder, only=PEOPLE)
    # A call names a customer and an agent (by login) the dimensions lack.
    inferred = {"id_cliente_llamada": [500], "agente_llamada": ["zoe.ruiz"]}
    oracle.infer(inferred)
    mart.infer(inferred)
    for dim in HISTORY.dimensions:
        assert mart.rows(dim.name) == oracle.rows(dim.name), dim.name

    agents = [(1, "ana.lopez", 1, "Ana", "López"), (7, "zoe.ruiz", 2, "Zoe", "Ruiz")]
    write_extracts(folder, customers=[(101, "F", "REGULAR"), (500, "M", "GEM")], agents=agents)
    completed = [load_both(oracle, mart, dim, folder, MARCH_6).completed for dim in HISTORY.dimensions[:PEOPLE]]
    assert completed == [1, 1]
    assert [r for r in mart.rows("dim_agentes") if r[1] == 7][0][-5:-1] == (False, BEGINNING, None, True)
    unchanged_by_a_rerun(mart, folder, MARCH_7, only=PEOPLE)
