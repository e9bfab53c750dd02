"""One fresh mart per test, on DuckDB and on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from callmart.config import create_engine, parse_url

PG_ADMIN_URL = os.environ.get("CALLMART_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_POOLER_URL = os.environ.get("CALLMART_TEST_PG_POOLER_URL", "postgresql://postgres@127.0.0.1:6543/postgres")
"""A transaction-mode PgBouncer in front of the test PostgreSQL, as Supabase's pooler is (.ci/services starts it)."""

ENGINES = ["duckdb", "postgresql"]
WITH_POOLER = [*ENGINES, "pooler"]
"""For `@pytest.mark.parametrize("new_database", WITH_POOLER, indirect=True)`: PostgreSQL also through the pooler."""
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
    yield from _databases(request.param, tmp_path)


@pytest.fixture(params=["postgresql"])
def new_postgres_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Makes URLs of empty PostgreSQL databases, for what only PostgreSQL can do (concurrent writers)."""
    yield from _databases(request.param, tmp_path)


def _databases(engine: str, tmp_path: Path) -> Iterator[Callable[[], str]]:
    created: list[str] = []

    def make() -> str:
        name = f"callmart_test_{uuid.uuid4().hex[:12]}"
        if engine == "duckdb":
            return f"duckdb:///{tmp_path / name}.duckdb"
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
    if created:
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
