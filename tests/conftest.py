"""One fresh mart per test, on DuckDB and on PostgreSQL; one Spark session for the tests marked `spark`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from callmart.config import create_engine, parse_url
from callmart.engines.spark import Spark, SparkUrl

PG_ADMIN_URL = os.environ.get("CALLMART_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_POOLER_URL = os.environ.get("CALLMART_TEST_PG_POOLER_URL", "postgresql://postgres@127.0.0.1:6543/postgres")
"""A transaction-mode PgBouncer in front of the test PostgreSQL, as Supabase's pooler is (.ci/services starts it)."""

ENGINES = ["duckdb", "postgresql"]
WITH_POOLER = [*ENGINES, "pooler"]
"""For `@pytest.mark.parametrize("new_database", WITH_POOLER, indirect=True)`: PostgreSQL also through the pooler."""
ON_SPARK = pytest.param("spark", marks=pytest.mark.spark)
"""A database of the Spark engine (Delta tables in the tests' local session), for the end-to-end tests that also
run there: `@pytest.mark.parametrize("new_database", [*ENGINES, ON_SPARK], indirect=True)`."""
WITH_SPARK = [*ENGINES, ON_SPARK]
SEED = Path(os.environ.get("CALLMART_TEST_SEED_DIR") or Path(__file__).resolve().parents[2] / "shared" / "seed-sample")
"""The real extracts the data team shared, beside the repository (or where CALLMART_TEST_SEED_DIR says): the tests
that need them are skipped without them, unless CALLMART_REQUIRE_SEED=1 (CI), where that fails."""


@pytest.fixture(autouse=True)
def historical_extracts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' extracts are final, historical exports: complete through whatever day a test queues, so a
    period whose last calls end before midnight loads. The tests of late exports unset it (test_late_exports)."""
    monkeypatch.setenv("CALLMART_COMPLETE_THROUGH", "2099-12-31")


@pytest.fixture(params=ENGINES)
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Makes URLs of empty databases of the parametrized engine; all are dropped after the test."""
    spark = request.getfixturevalue("spark_database") if request.param == "spark" else None
    yield from _databases(request.param, tmp_path, spark)


@pytest.fixture(params=["postgresql"])
def new_postgres_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Makes URLs of empty PostgreSQL databases, for what only PostgreSQL can do (concurrent writers)."""
    yield from _databases(request.param, tmp_path)


def _databases(engine: str, tmp_path: Path, spark: Any = None) -> Iterator[Callable[[], str]]:
    created: list[str] = []

    def make() -> str:
        name = f"callmart_test_{uuid.uuid4().hex[:12]}"
        if engine == "duckdb":
            return f"duckdb:///{tmp_path / name}.duckdb"
        if engine == "spark":
            created.append(name)
            return f"{spark.text}&database={name}"
        # A missing server fails the test: the suite is only green when both engines ran.
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            # The tests read the mart as an analyst would after `SET search_path`: callmart itself names its
            # schema in every statement (the Supabase tests load with the server's default search path).
            admin.execute(sql.SQL("ALTER DATABASE {} SET search_path TO callmart, public").format(sql.Identifier(name)))
        created.append(name)
        server = PG_POOLER_URL if engine == "pooler" else PG_ADMIN_URL
        return sa.make_url(server).set(database=name).render_as_string(hide_password=False)

    yield make
    if created and engine == "spark":
        for name in created:
            spark.session.sql(f"DROP DATABASE IF EXISTS {name} CASCADE")
    elif created:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            for name in created:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database_url(new_database: Callable[[], str]) -> str:
    """The URL of an empty database, DuckDB or PostgreSQL."""
    return new_database()


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """A SQLAlchemy engine on an empty database, DuckDB or PostgreSQL."""
    engine = create_engine(parse_url(database_url))
    yield engine
    engine.dispose()


@pytest.fixture
def seed_dir() -> Path:
    """The real extracts shared with the project (read, never copied)."""
    if not SEED.is_dir():
        message = f"the shared real extracts are not at {SEED}: set CALLMART_TEST_SEED_DIR to their folder"
        if os.environ.get("CALLMART_REQUIRE_SEED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return SEED


# --- Spark (the modules marked `spark`) ---------------------------------------------------------------------------

REQUIRE_SPARK = os.environ.get("CALLMART_REQUIRE_SPARK") == "1"
SPARK = Spark()


def _missing() -> str | None:
    """What a local Spark session with Delta needs and the machine lacks."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed: pip install -e '.[dev,spark]'"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "Java is not installed (Spark 4 needs 17 or later)"
    if shutil.which("mvn") is None:
        return "Maven's client (mvn) is not installed: it fetches Delta's jars"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def connect_port() -> int:
    """The port of the Spark Connect server the session runs (its plugin)."""
    return _free_port()


@pytest.fixture(scope="session")
def spark_url(tmp_path_factory: pytest.TempPathFactory, connect_port: int) -> SparkUrl:
    missing = _missing()
    if missing is not None:
        if REQUIRE_SPARK:
            pytest.fail(f"CALLMART_REQUIRE_SPARK=1 but {missing}")
        pytest.skip(missing)
    warehouse = tmp_path_factory.mktemp("warehouse")
    settings = {
        "spark.ui.enabled": "false",
        # One session runs every Spark test: Delta's cached table states and the plans Spark keeps of its last
        # queries outgrow the default 1 GB heap over a hundred tests, and a broadcast join then fails for memory.
        "spark.driver.memory": "3g",
        "spark.sql.ui.retainedExecutions": "20",
        # A laptop's worth of data: Spark's 200 shuffle partitions and Delta's 50 snapshot ones only cost time.
        "spark.sql.shuffle.partitions": "2",
        "spark.databricks.delta.snapshotPartitions": "2",
        # The tests' queries are many and their rows few: compiling each plan to Java (whole-stage and expression
        # code generation) and re-planning it between stages (adaptive execution) cost more than they save here.
        "spark.sql.codegen.wholeStage": "false",
        "spark.sql.codegen.factoryMode": "NO_CODEGEN",
        "spark.sql.adaptive.enabled": "false",
        # The session also serves Spark Connect, for the test of the sc:// form.
        "spark.plugins": "org.apache.spark.sql.connect.SparkConnectPlugin",
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(connect_port),
    }
    query = "&".join(f"{key}={value}" for key, value in settings.items())
    return SPARK.parse(f"spark://local[2]?warehouse={warehouse}&{query}")


@pytest.fixture(scope="session")
def spark(spark_url: SparkUrl) -> Iterator[Any]:
    session = SPARK.open_session(spark_url)
    yield session
    session.stop()


@dataclass(frozen=True)
class SparkDatabases:
    """The tests' session, and the text of its URL, to which a test adds `&database=NAME`."""

    session: Any
    text: str


@pytest.fixture(scope="session")
def spark_database(spark: Any, spark_url: SparkUrl) -> SparkDatabases:
    """What new_database needs to make databases of the Spark engine in the tests' session."""
    settings = "&".join(f"{key}={value}" for key, value in spark_url.conf.items())
    return SparkDatabases(spark, f"spark://{spark_url.master}?warehouse={spark_url.warehouse}&{settings}")
