"""The Spark engine on a real local Spark session with Delta: Delta's jars fetched by Maven, the declared mart
created as Delta tables (again without a change, upgraded by a missing column), a day of the fact table replaced
in one commit, the same code through Spark Connect.

The session tests run where pyspark is installed (pip install -e '.[dev,spark]'), and are skipped elsewhere, unless
CALLMART_REQUIRE_SPARK=1 (CI, .ci/spark), where a missing pyspark, Java or Maven fails them. `-m spark` selects
the Spark modules, `-m "not spark"` leaves them out. One session (tests/conftest.py) serves them all: a Spark
session takes ~15 s to start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from callmart import dictionary
from callmart._errors import CommitConflicts, ConfigError
from callmart.config import mask, parse_url
from callmart.control import Period, daily_periods
from callmart.declare import BEGINNING, DEFAULT_MEMBER_ID, IS_CURRENT, VALID_FROM, VALID_TO, VERSION, Scd
from callmart.engines import hints
from callmart.engines.spark import Spark, SparkUrl
from callmart.engines.spark import control as spark_control
from callmart.engines.spark.control import claim_next, mark, with_retries, write_fixed_rows
from callmart.engines.spark.control import enqueue as spark_enqueue
from callmart.engines.spark.jars import delta_artifact, delta_jars, version_range
from callmart.engines.spark.sql import qualified, quote, sql
from callmart.engines.spark.tables import NOT_NULL_CONSTRAINT, day_column, spark_schema, spark_type_name
from callmart.engines.spark.url import Kind
from callmart.mart import MART
from callmart.schema import PROCESSES, SCHEMA_VERSION, Schema
from callmart.status import Status

pytestmark = pytest.mark.spark

REQUIRE_SPARK = os.environ.get("CALLMART_REQUIRE_SPARK") == "1"
ENGINE = Spark()
DATABASE = "callmart"
FACT = MART.facts[0]


@pytest.fixture(scope="module")
def schema() -> Schema:
    """The business mart's tables, with the comments `callmart init` gives them."""
    built = Schema(MART)
    dictionary.annotate(built)
    return built


# --- without Spark -------------------------------------------------------------------------------------------------


def test_the_core_never_imports_spark() -> None:
    """Importing callmart, its engines (the Spark one included) and its API leaves pyspark and delta unimported."""
    code = (
        "import sys, callmart, callmart.engines, callmart.api, callmart.cli, callmart.engines.spark; "
        "loaded = sorted(m for m in ('pyspark', 'delta', 'py4j') if m in sys.modules); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_urls_name_a_local_session_the_active_one_or_spark_connect(tmp_path: Path) -> None:
    local = SparkUrl.parse(f"spark://local[2]?warehouse={tmp_path}&spark.sql.shuffle.partitions=4")
    assert (local.kind, local.master, local.warehouse, local.database) == (Kind.LOCAL, "local[2]", tmp_path, DATABASE)
    assert local.conf == {"spark.sql.shuffle.partitions": "4"}
    assert SparkUrl.parse("spark://local[*]?warehouse=rel").warehouse == Path("rel").absolute()
    assert SparkUrl.parse("spark://").kind is Kind.ACTIVE
    active = SparkUrl.parse("spark://?database=mart&catalog=main")
    assert (active.kind, active.database, active.catalog) == (Kind.ACTIVE, "mart", "main")
    remote = SparkUrl.parse("sc://dbc.example.com:443/;token=s3cret;x-databricks-cluster-id=1?database=mart")
    assert (remote.kind, remote.database) == (Kind.CONNECT, "mart")
    assert remote.remote == "sc://dbc.example.com:443/;token=s3cret;x-databricks-cluster-id=1"
    assert "s3cret" not in remote.shown
    # Through callmart's settings and back (SQLAlchemy writes the parameters percent-encoded), the same server and
    # parameters; messages show neither the token nor the parameters.
    through = parse_url("sc://dbc.example.com:443/;token=s3cret;x-databricks-cluster-id=1?database=mart")
    assert ENGINE.parse(through.render_as_string(hide_password=False)).remote == remote.remote
    assert mask(through) == "sc://dbc.example.com:443 (database mart)"
    # Through SQLAlchemy's URL, as callmart's settings parse a database URL, the same forms hold.
    assert ENGINE.url(sa.make_url("spark://local[2]?warehouse=rel")).host == "local[2]"
    with pytest.raises(ConfigError, match="not a SQLAlchemy engine"):
        ENGINE.create_engine(sa.make_url("spark://"))


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("spark://yarn", "local session"),
        ("spark://local[2]?warehouse=", "warehouse is empty"),
        ("spark://local[2]?wharehouse=x", "unknown parameter(s) of a local Spark URL: wharehouse"),
        ("spark://?spark.sql.shuffle.partitions=2", "the session the process already has"),
        ("spark://local[2]?database=1st", "not a database name"),
        ("sc://?token=s3cret", "names its server"),
        ("sc://host:port/;token=s3cret", "names its server"),
        ("duckdb:///x.duckdb", "not a Spark URL"),
        # A standalone cluster's master.
        ("spark://10.0.0.5:7077", "names its warehouse"),
        ("spark://admin:s3cret@10.0.0.5:7077?warehouse=/w", "takes no user or password"),
        ("spark://admin:s3cret@local[2]?warehouse=/w", "takes no user or password"),
        ("spark://s3cret.example.com?warehouse=/w", "spark://HOST:PORT"),
        ("spark://s3cret.example.com:99999?warehouse=/w", "standalone cluster's master"),
        ("spark://s3cret.example.com:7077,?warehouse=/w", "standalone cluster's master"),
        ("spark://s3cret.example.com:7077/s3cret?warehouse=/w", "standalone cluster's master"),
        ("spark://10.0.0.5:7077?warehouse=/w&token=s3cret", "unknown parameter(s) of a standalone Spark URL: token"),
    ],
)
def test_a_bad_url_says_what_is_wrong_without_echoing_it(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        SparkUrl.parse(url)
    assert says in str(raised.value)
    assert "s3cret" not in str(raised.value)


def test_the_delta_jar_matches_spark_and_falls_back_within_its_line() -> None:
    assert delta_artifact("4.0.1", "4.0.1") == "delta-spark_2.13"
    assert delta_artifact("4.4.1", "4.2.0") == "delta-spark_4.2_2.13"
    assert delta_artifact("4.4.1", "4.1.1") == "delta-spark_4.1_2.13"
    # A delta-spark published to PyPI alone (4.4.1) takes the newest jar of its line up to it (4.4.0).
    assert version_range("4.4.1") == "[4.4.0,4.4.1]"
    with pytest.raises(ConfigError, match="Spark 3"):
        delta_artifact("3.3.2", "3.5.5")
    with pytest.raises(ConfigError, match="release version"):
        version_range("4.4</version>")


def test_every_declared_column_has_a_spark_type(schema: Schema) -> None:
    expected = {
        sa.BigInteger: "bigint",
        sa.Integer: "int",
        sa.SmallInteger: "smallint",
        sa.String: "string",
        sa.Text: "string",
        sa.DateTime: "timestamp_ntz",
        sa.Date: "date",
        sa.Boolean: "boolean",
        sa.Float: "double",
        sa.Time: "string",
    }
    for kind, name in expected.items():
        assert spark_type_name(kind()) == name
    for table in schema.tables.values():
        for column in table.columns:
            spark_type_name(column.type)


# --- on a local Spark session --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mart(spark: Any, spark_url: SparkUrl, schema: Schema) -> Schema:
    """The business mart created in the session's catalog."""
    changes = ENGINE.create_tables(spark, schema.tables.values(), spark_url)
    assert sorted(changes.created) == sorted(schema.tables) and not changes.added
    return schema


def _name(table: str, database: str = DATABASE) -> str:
    return qualified(database, table)


def _version(spark: Any, table: str, database: str = DATABASE) -> int:
    """The latest version of a Delta table."""
    return int(spark.sql(f"DESCRIBE HISTORY {_name(table, database)} LIMIT 1").first()["version"])


def test_delta_jars_are_fetched_once(spark: Any) -> None:
    jars = delta_jars()
    names = [jar.name for jar in jars]
    assert names[0].startswith("delta-spark_") and "_2.13-" in names[0]
    assert any(name.startswith("delta-storage-") for name in names)
    assert not any(name.startswith(("spark-", "scala-library-", "jackson-databind-")) for name in names)
    # Cached: asked again, no Maven is needed.
    assert delta_jars(maven="/nowhere/mvn") == jars
    assert spark.conf.get("spark.jars").split(",") == [str(jar) for jar in jars]


def test_the_mart_is_made_of_delta_tables_like_the_schema(spark: Any, mart: Schema) -> None:
    for table in mart.tables.values():
        detail = spark.sql(f"DESCRIBE DETAIL {_name(table.name)}").first()
        assert detail["format"] == "delta", table.name
        assert detail["description"] == table.comment, table.name
        day = day_column(table)
        assert detail["partitionColumns"] == ([day] if day else []), table.name
        fields = {f.name: f for f in spark.table(_name(table.name)).schema.fields}
        assert list(fields) == [c.name for c in table.columns] + ([day] if day else []), table.name
        for column in table.columns:
            field = fields[column.name]
            assert field.dataType.simpleString() == spark_type_name(column.type), (table.name, column.name)
            assert field.metadata.get("comment") == column.comment, (table.name, column.name)
            if day is None:
                assert field.nullable == bool(column.nullable), (table.name, column.name)
        if day is not None:
            assert fields[day].dataType.simpleString() == "date"
            properties = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {_name(table.name)}").collect()}
            required = [c.name for c in table.columns if not c.nullable]
            assert properties[f"delta.constraints.{NOT_NULL_CONSTRAINT}"] == " AND ".join(
                f"{quote(c)} IS NOT NULL" for c in required
            )
    assert spark.catalog.tableExists(_name(FACT.name))


def test_creating_the_mart_again_changes_nothing(spark: Any, spark_url: SparkUrl, mart: Schema) -> None:
    versions = {name: _version(spark, name) for name in mart.tables}
    changes = ENGINE.create_tables(spark, mart.tables.values(), spark_url)
    assert not changes.changed
    assert {name: _version(spark, name) for name in mart.tables} == versions


def test_a_column_added_by_an_upgrade_appears(spark: Any, spark_url: SparkUrl, schema: Schema) -> None:
    """An older mart lacks a column the declarations now have: creating the mart adds it, nullable, commented, in
    one commit, and the rows it had stay; doing it again changes nothing."""
    url = ENGINE.parse(f"spark://local[2]?warehouse={spark_url.warehouse}&database=callmart_upgrade")
    for name in ("dim_agentes", FACT.name):
        older = schema[name]
        ENGINE.create_tables(spark, [older], url)
        upgraded = older.to_metadata(sa.MetaData())
        upgraded.append_column(sa.Column("turno_agente", sa.String, comment="the agent's shift"))
        before = _version(spark, name, url.database)
        rows = spark.table(_name(name, url.database)).count()
        changes = ENGINE.create_tables(spark, [upgraded], url)
        assert changes.added == {name: ["turno_agente"]} and not changes.created
        assert _version(spark, name, url.database) == before + 1
        field = spark.table(_name(name, url.database)).schema["turno_agente"]
        assert (field.dataType.simpleString(), field.nullable, field.metadata["comment"]) == (
            "string",
            True,
            "the agent's shift",
        )
        assert spark.table(_name(name, url.database)).count() == rows
        assert not ENGINE.create_tables(spark, [upgraded], url).changed


def _rows(spark: Any, table: sa.Table, rows: list[dict[str, object]]) -> Any:
    """A DataFrame of the table's columns (its generated day column left to Delta), each column of a row that
    `rows` does not give filled by its type."""
    filled = [tuple(row[c.name] if c.name in row else _filler(c) for c in table.columns) for row in rows]
    return spark.createDataFrame(filled, spark_schema(table, nullable=True)[: len(table.columns)])


def _filler(column: sa.Column[Any]) -> object:
    if isinstance(column.type, sa.Time):
        return "00:01:30"  # a time of day as Delta keeps it, its ISO text
    return {
        "bigint": 1,
        "int": 1,
        "smallint": 1,
        "string": "x",
        "boolean": False,
        "double": 1.0,
        "timestamp_ntz": datetime(2024, 3, 4, 10),
        "date": datetime(2024, 3, 4).date(),
    }[spark_type_name(column.type)]


def _fact_rows(spark: Any, table: sa.Table, day: datetime, keys: range) -> Any:
    """Fact rows of one day, one per key, a minute apart."""
    time = table.info[hints.PARTITIONED_BY_DAY]
    return _rows(spark, table, [{FACT.key: key, time: day + timedelta(minutes=key % 1440)} for key in keys])


def test_a_day_of_the_fact_table_is_replaced_in_one_commit(spark: Any, spark_url: SparkUrl, mart: Schema) -> None:
    table = mart[FACT.name]
    name = _name(FACT.name)
    time = FACT.time_column
    days = [datetime(2024, 3, 4), datetime(2024, 3, 5), datetime(2024, 3, 6)]
    for number, day in enumerate(days):
        ENGINE.replace_period(
            _fact_rows(spark, table, day, range(number * 100, number * 100 + 3)),
            table,
            spark_url,
            day,
            day + timedelta(1),
        )

    def files_by_day() -> dict[str, set[tuple[int, str]]]:
        """Each day's rows, by key and the file holding them."""
        found: dict[str, set[tuple[int, str]]] = {}
        for key, moment, file in spark.table(name).select(FACT.key, time, "_metadata.file_path").collect():
            found.setdefault(moment.date().isoformat(), set()).add((key, file))
        return found

    before, version = files_by_day(), _version(spark, FACT.name)
    assert sorted(before) == ["2024-03-04", "2024-03-05", "2024-03-06"]
    ENGINE.replace_period(_fact_rows(spark, table, days[1], range(500, 505)), table, spark_url, days[1], days[2])
    after = files_by_day()
    assert _version(spark, FACT.name) == version + 1
    commit = spark.sql(f"DESCRIBE HISTORY {name} LIMIT 1").first()
    assert commit["operation"] == "WRITE" and commit["operationParameters"]["mode"] == "Overwrite"
    assert "2024-03-05 00:00:00" in commit["operationParameters"]["predicate"]
    assert commit["operationMetrics"]["numRemovedFiles"] == str(len({f for _, f in before["2024-03-05"]}))
    # The other days: the same rows in the same files, untouched.
    assert after["2024-03-04"] == before["2024-03-04"] and after["2024-03-06"] == before["2024-03-06"]
    assert sorted(k for k, _ in after["2024-03-05"]) == list(range(500, 505))
    assert not {f for _, f in after["2024-03-05"]} & {f for _, f in before["2024-03-05"]}

    # A row outside the period fails the commit: nothing is written.
    stray = _fact_rows(spark, table, days[2], range(900, 901))
    with pytest.raises(Exception, match="DELTA_REPLACE_WHERE_MISMATCH"):
        ENGINE.replace_period(stray, table, spark_url, days[1], days[2])
    assert _version(spark, FACT.name) == version + 1 and files_by_day() == after


def test_loads_of_different_days_commit_side_by_side(spark: Any, spark_url: SparkUrl, mart: Schema) -> None:
    """Two days replaced at the same time both commit: each reads and removes only its own day's files."""
    table = mart[FACT.name]
    days = [datetime(2024, 3, 10), datetime(2024, 3, 11)]
    for day in days:
        ENGINE.replace_period(_fact_rows(spark, table, day, range(3)), table, spark_url, day, day + timedelta(1))
    version, failures = _version(spark, FACT.name), []

    def load(day: datetime, keys: range) -> None:
        try:
            ENGINE.replace_period(_fact_rows(spark, table, day, keys), table, spark_url, day, day + timedelta(1))
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=load, args=(day, range(10, 12))) for day in days]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert _version(spark, FACT.name) == version + 2
    rows = spark.table(_name(FACT.name)).select(FACT.key, FACT.time_column).collect()
    assert sorted(key for key, moment in rows if moment >= days[0]) == [10, 10, 11, 11]


def test_a_not_null_column_refuses_nulls(spark: Any, mart: Schema) -> None:
    """NOT NULL holds on both kinds of table: the fact table's by its CHECK constraint, the others' by their schema."""
    for table_name, column in ((FACT.name, FACT.references[0].column), ("dim_clientes", "is_inferred")):
        version = _version(spark, table_name)
        rows = _rows(spark, mart[table_name], [{column: None}])
        with pytest.raises(Exception, match="NOT NULL|DELTA_NOT_NULL_CONSTRAINT_VIOLATED|callmart_not_null"):
            rows.writeTo(_name(table_name)).append()
        assert _version(spark, table_name) == version


def test_a_classic_session_binds_values_to_markers(spark: Any) -> None:
    """Delta's parser drops the values Spark 4.1+ binds before parsing; the session binds them during analysis."""
    row = sql(spark, "SELECT :day AS day, :n + 1 AS n", day="it's 2024-03-05", n=41).first()
    assert (row["day"], row["n"]) == ("it's 2024-03-05", 42)


def test_spark_url_uses_the_session_the_process_has(spark: Any, mart: Schema) -> None:
    active = ENGINE.open_session("spark://")
    assert active.conf.get("spark.sql.warehouse.dir") == spark.conf.get("spark.sql.warehouse.dir")
    assert active.catalog.tableExists(_name(FACT.name))


def test_the_mart_is_created_through_spark_connect(spark: Any, connect_port: int, mart: Schema) -> None:
    """The same code through a Spark Connect client (another process: one process holds one kind of session)
    creates a dimension and the fact table as the local session does."""
    database = "callmart_connect"
    script = textwrap.dedent(
        f"""
        import json
        from callmart import dictionary
        from callmart.engines.spark import Spark
        from callmart.mart import MART
        from callmart.schema import Schema

        schema = Schema(MART)
        dictionary.annotate(schema)
        engine = Spark()
        url = engine.parse("sc://127.0.0.1:{connect_port}?database={database}")
        spark = engine.open_session(url)
        tables = [schema["dim_clientes"], schema["{FACT.name}"]]
        first = engine.create_tables(spark, tables, url)
        again = engine.create_tables(spark, tables, url)
        print(json.dumps({{"kind": type(spark).__module__, "created": first.created, "again": again.changed}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said == {"kind": "pyspark.sql.connect.session", "created": ["dim_clientes", FACT.name], "again": False}
    for table in ("dim_clientes", FACT.name):
        detail = spark.sql(f"DESCRIBE DETAIL {_name(table, database)}").first()
        assert detail["format"] == "delta" and detail["description"] == mart[table].comment
    assert spark.sql(f"DESCRIBE DETAIL {_name(FACT.name, database)}").first()["partitionColumns"] == [
        day_column(mart[FACT.name])
    ]


# --- the fixed rows and the control table ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixed(spark: Any, spark_url: SparkUrl, mart: Schema) -> list[str]:
    """The mart's default members and version row, written once; the tables that were written."""
    dimensions = [(dim, mart[dim.name]) for dim in MART.dimensions]
    return write_fixed_rows(spark, dimensions, mart["dm_schema"], SCHEMA_VERSION, spark_url.database)


def test_init_writes_default_members_and_the_version_row_once(
    spark: Any, spark_url: SparkUrl, mart: Schema, fixed: list[str]
) -> None:
    assert sorted(fixed) == sorted([dim.name for dim in MART.dimensions] + ["dm_schema"])
    for dim in MART.dimensions:
        rows = [row.asDict() for row in spark.table(_name(dim.name)).collect()]
        expected = {c.name: None for c in mart[dim.name].columns}
        expected.update({dim.key: DEFAULT_MEMBER_ID, dim.business_key: DEFAULT_MEMBER_ID, "is_inferred": False})
        expected.update({c.name: c.unknown for c in dim.attributes})
        expected.update({r.column: DEFAULT_MEMBER_ID for r in dim.references})
        assert rows == [expected], dim.name
    assert [tuple(row) for row in spark.table(_name("dm_schema")).collect()] == [(SCHEMA_VERSION,)]
    # Again: nothing to write, no table gets a new version.
    versions = {name: _version(spark, name) for name in mart.tables}
    dimensions = [(dim, mart[dim.name]) for dim in MART.dimensions]
    assert write_fixed_rows(spark, dimensions, mart["dm_schema"], SCHEMA_VERSION, spark_url.database) == []
    assert {name: _version(spark, name) for name in mart.tables} == versions
    assert spark.table(_name("dm_schema")).count() == 1


def test_a_default_member_keeps_history_where_its_dimension_does() -> None:
    dim = MART.dimensions[0]
    historical = replace(dim, columns=tuple(replace(c, scd=Scd.HISTORICAL) for c in dim.columns))
    row = historical.default_member()
    assert (row[VALID_FROM], row[VALID_TO], row[IS_CURRENT], row[VERSION]) == (BEGINNING, None, True, 1)
    assert VERSION not in dim.default_member()


@pytest.fixture
def queue(spark: Any, spark_url: SparkUrl, schema: Schema, request: pytest.FixtureRequest) -> tuple[sa.Table, str]:
    """An empty control table of its own (a database per test), and its qualified name."""
    database = "callmart_" + request.node.name.removeprefix("test_")[:40]
    url = ENGINE.parse(f"spark://local[2]?warehouse={spark_url.warehouse}&database={database}")
    ENGINE.create_tables(spark, [schema.processes], url)
    return schema.processes, _name(PROCESSES, database)


def _queue_rows(spark: Any, name: str) -> dict[tuple[datetime, datetime], tuple[str, int | None, str | None]]:
    return {
        (r["start_date"], r["end_date"]): (r["status"], r["id_run"], r["error_message"])
        for r in spark.table(name).collect()
    }


DAYS = daily_periods(date(2024, 3, 1), date(2024, 3, 7))


def test_periods_are_queued_and_queued_again_as_control_enqueue_does(spark: Any, queue: tuple[sa.Table, str]) -> None:
    table, name = queue
    assert spark_enqueue(spark, table, name, FACT.name, DAYS[:4], force=False) == {
        "added": 4,
        "requeued": 0,
        "skipped": 0,
    }
    ids = sorted(r["id_process"] for r in spark.table(name).collect())
    assert ids == [1, 2, 3, 4]
    # Again with more days: the four are skipped, the new ones get the next ids.
    assert spark_enqueue(spark, table, name, FACT.name, DAYS, force=False) == {"added": 2, "requeued": 0, "skipped": 4}
    assert sorted(r["id_process"] for r in spark.table(name).collect()) == [1, 2, 3, 4, 5, 6]
    assert {status for status, _, _ in _queue_rows(spark, name).values()} == {Status.PENDING}
    # One failed, one done, one running: a plain enqueue takes the failed one again; forced, the done one too.
    failed = claim_next(spark, table, name, 7, datetime(2024, 3, 8))
    done = claim_next(spark, table, name, 7, datetime(2024, 3, 8))
    running = claim_next(spark, table, name, 7, datetime(2024, 3, 8))
    assert failed and done and running
    assert mark(spark, table, name, failed[0], 7, Status.FAILED, error_message="boom")
    assert mark(spark, table, name, done[0], 7, Status.DONE)
    assert spark_enqueue(spark, table, name, FACT.name, DAYS, force=False) == {"added": 0, "requeued": 1, "skipped": 5}
    rows = _queue_rows(spark, name)
    assert rows[(failed[2], failed[3])] == (Status.PENDING, 7, None)
    assert rows[(done[2], done[3])][0] == Status.DONE
    assert spark_enqueue(spark, table, name, FACT.name, DAYS, force=True) == {"added": 0, "requeued": 5, "skipped": 1}
    rows = _queue_rows(spark, name)
    assert rows[(done[2], done[3])][0] == Status.PENDING
    assert rows[(running[2], running[3])][0] == Status.RUNNING
    assert spark.table(name).count() == len(DAYS)


def test_claims_take_the_oldest_pending_period_and_none_when_none_is_left(
    spark: Any, queue: tuple[sa.Table, str]
) -> None:
    table, name = queue
    assert claim_next(spark, table, name, 1, datetime(2024, 3, 8)) is None
    spark_enqueue(spark, table, name, FACT.name, DAYS[2:4], force=False)
    spark_enqueue(spark, table, name, FACT.name, DAYS[:1], force=False)
    first = claim_next(spark, table, name, 1, datetime(2024, 3, 8))
    assert first is not None and Period(*first) == Period(3, FACT.name, *DAYS[0])
    assert [Period(*p).start for p in (claim_next(spark, table, name, 1, datetime(2024, 3, 8)),) if p] == [DAYS[2][0]]
    row = spark.table(name).filter(f"id_process = {first[0]}").first()
    assert (row["status"], row["id_run"], row["process_run_date"]) == (Status.RUNNING, 1, datetime(2024, 3, 8))
    assert claim_next(spark, table, name, 2, datetime(2024, 3, 8)) is not None
    assert claim_next(spark, table, name, 2, datetime(2024, 3, 8)) is None


def test_only_the_run_holding_a_period_marks_it(spark: Any, queue: tuple[sa.Table, str]) -> None:
    table, name = queue
    spark_enqueue(spark, table, name, FACT.name, DAYS[:1], force=False)
    claimed = claim_next(spark, table, name, 1, datetime(2024, 3, 8))
    assert claimed is not None
    assert not mark(spark, table, name, claimed[0], 2, Status.DONE)
    assert _queue_rows(spark, name)[DAYS[0]] == (Status.RUNNING, 1, None)
    assert mark(spark, table, name, claimed[0], 1, Status.FAILED, error_message="no extract", rows_loaded=0)
    assert _queue_rows(spark, name)[DAYS[0]] == (Status.FAILED, 1, "no extract")
    # No longer running: marking it again changes nothing.
    assert not mark(spark, table, name, claimed[0], 1, Status.DONE)
    assert _queue_rows(spark, name)[DAYS[0]][0] == Status.FAILED


def test_two_runs_claiming_together_take_each_period_once(spark: Any, queue: tuple[sa.Table, str]) -> None:
    """Two claimers on two threads of the session, started together over pending periods: each period is taken by
    exactly one of them, none twice, none left; Delta's concurrent-modification errors are retried."""
    table, name = queue
    spark_enqueue(spark, table, name, FACT.name, DAYS, force=False)
    taken: dict[int, list[int]] = {1: [], 2: []}
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def run(id_run: int) -> None:
        try:
            start.wait()
            while (claimed := claim_next(spark, table, name, id_run, datetime(2024, 3, 8))) is not None:
                taken[id_run].append(claimed[0])
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=run, args=(id_run,)) for id_run in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert not set(taken[1]) & set(taken[2])
    assert sorted(taken[1] + taken[2]) == list(range(1, len(DAYS) + 1))
    final = {r["id_process"]: (r["status"], r["id_run"]) for r in spark.table(name).collect()}
    assert final == {id_process: (Status.RUNNING, id_run) for id_run, ids in taken.items() for id_process in ids}
    merges = spark.sql(f"DESCRIBE HISTORY {name}").filter("operation = 'MERGE'").count()
    # One enqueue, then one MERGE per period: a claim that lost committed nothing.
    assert merges == 1 + len(DAYS)


def test_a_run_through_spark_connect_and_one_in_this_session_take_each_period_once(
    spark: Any, connect_port: int, queue: tuple[sa.Table, str]
) -> None:
    """The same over two sessions in two processes: a Spark Connect client (another process, its own session on
    the server) and a thread of this session claim together."""
    table, name = queue
    spark_enqueue(spark, table, name, FACT.name, DAYS, force=False)
    script = textwrap.dedent(
        f"""
        import json, sys
        from datetime import datetime
        from callmart.engines.spark import Spark
        from callmart.engines.spark.control import claim_next
        from callmart.schema import Schema
        from callmart.mart import MART

        table = Schema(MART).processes
        spark = Spark().open_session("sc://127.0.0.1:{connect_port}")
        spark.sql("SELECT 1").collect()
        print("ready", flush=True)
        sys.stdin.readline()
        taken = []
        while (claimed := claim_next(spark, table, {name!r}, 2, datetime(2024, 3, 8))) is not None:
            taken.append(claimed[0])
        print(json.dumps(taken), flush=True)
        """
    )
    other = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert other.stdout is not None and other.stdin is not None
    assert other.stdout.readline().strip() == "ready", other.stderr.read()[-3000:] if other.stderr else ""
    mine: list[int] = []

    def run() -> None:
        while (claimed := claim_next(spark, table, name, 1, datetime(2024, 3, 8))) is not None:
            mine.append(claimed[0])

    thread = threading.Thread(target=run)
    other.stdin.write("go\n")
    other.stdin.flush()
    thread.start()
    out, err = other.communicate(timeout=600)
    thread.join()
    assert other.returncode == 0, err[-3000:]
    theirs = json.loads(out.strip().splitlines()[-1])
    assert not set(mine) & set(theirs)
    assert sorted(mine + theirs) == list(range(1, len(DAYS) + 1))
    final = {r["id_process"]: (r["status"], r["id_run"]) for r in spark.table(name).collect()}
    assert final == {**{i: (Status.RUNNING, 1) for i in mine}, **{i: (Status.RUNNING, 2) for i in theirs}}
    print(f"this session took {mine}, the Connect process {theirs}")


def test_a_claim_that_read_a_period_taken_since_takes_the_next(
    spark: Any, queue: tuple[sa.Table, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run 2 reads the oldest pending period; before its MERGE, run 1 claims that period and commits. Run 2's
    MERGE, which requires the period still pending, updates nothing, and run 2 takes the next one."""
    table, name = queue
    spark_enqueue(spark, table, name, FACT.name, DAYS[:2], force=False)
    update = spark_control._update
    first: list[Any] = []

    def late(*args: Any, **kwargs: Any) -> bool:
        if not first:
            monkeypatch.setattr(spark_control, "_update", update)
            first.append(claim_next(spark, table, name, 1, datetime(2024, 3, 8)))
        return update(*args, **kwargs)

    monkeypatch.setattr(spark_control, "_update", late)
    second = claim_next(spark, table, name, 2, datetime(2024, 3, 8))
    assert first[0] is not None and second is not None
    assert (first[0][0], second[0]) == (1, 2)
    assert {k: v[:2] for k, v in _queue_rows(spark, name).items()} == {
        DAYS[0]: (Status.RUNNING, 1),
        DAYS[1]: (Status.RUNNING, 2),
    }


def test_retries_stop_with_a_clear_error() -> None:
    tries = []

    def conflicting() -> None:
        tries.append(1)
        raise RuntimeError("io.delta.exceptions.ConcurrentAppendException: [DELTA_CONCURRENT_APPEND] Files added")

    with pytest.raises(CommitConflicts, match="claiming: other runs kept changing the table.*after 3 tries"):
        with_retries(conflicting, "claiming", attempts=3, pause=0.001)
    assert len(tries) == 3
    with pytest.raises(ValueError, match="other"):
        with_retries(lambda: (_ for _ in ()).throw(ValueError("other")), "claiming", attempts=3, pause=0.001)
