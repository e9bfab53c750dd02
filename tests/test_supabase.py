"""The mart on a PostgreSQL set up as Supabase sets up its databases: its Data API roles see and change nothing.

Supabase serves tables to the roles `anon` and `authenticated` (anyone holding the project's public key acts as
`anon`), and its default privileges give them every right on new tables. Here those roles and privileges are made
on a test database, the real sample is loaded by a role that is no superuser and owns only its schema (directly
and through the transaction-mode pooler), and every table it owns afterwards is tried as each API role."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from psycopg import sql

from callmart import Callmart
from callmart._errors import ConfigError
from callmart.cli import cli
from callmart.mart import MART
from callmart.schema import Schema
from conftest import PG_ADMIN_URL, PG_POOLER_URL

OWNER, READER = "callmart_owner", "callmart_reader"
API_ROLES = ("anon", "authenticated")


def _url(base: str, database: str, user: str) -> str:
    return sa.make_url(base).set(database=database, username=user).render_as_string(hide_password=False)


@pytest.fixture
def supabase_like(new_postgres_database: object) -> Iterator[str]:
    """A database with Supabase's API roles and default privileges, a schema owned by the loading role, and that
    schema exposed to the API roles by mistake; yields the database's name."""
    url = new_postgres_database()  # type: ignore[operator]
    database = str(sa.make_url(url).database)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        # Roles belong to the whole server: tests running side by side (pytest -n) make them one at a time.
        admin.execute("SELECT pg_advisory_lock(hashtext('callmart tests: roles'))")
        for role, login in [("anon", False), ("authenticated", False), (OWNER, True), (READER, True)]:
            exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            if not exists:
                admin.execute(
                    sql.SQL("CREATE ROLE {} {}").format(sql.Identifier(role), sql.SQL("LOGIN" if login else "NOLOGIN"))
                )
    with psycopg.connect(_url(PG_ADMIN_URL, database, "postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} RESET search_path").format(sql.Identifier(database)))
        admin.execute(f"CREATE SCHEMA callmart AUTHORIZATION {OWNER}")
        for where in ["IN SCHEMA public", "IN SCHEMA callmart", ""]:
            admin.execute(
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} {where} GRANT ALL ON TABLES TO anon, authenticated"
            )
            admin.execute(
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} {where} GRANT ALL ON SEQUENCES TO anon, authenticated"
            )
        admin.execute("GRANT USAGE ON SCHEMA public, callmart TO anon, authenticated")
        admin.execute("GRANT ALL ON SCHEMA public TO anon, authenticated")
    yield database


def _tried_as(database: str, role: str, table: str) -> dict[str, object]:
    """What `role` gets when it reads, deletes, updates and truncates `table`: a row count or the error's class."""
    outcome: dict[str, object] = {}
    with psycopg.connect(_url(PG_ADMIN_URL, database, "postgres")) as conn:
        column = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum = 1", [f"callmart.{table}"]
        ).fetchone()
        assert column is not None
        first = sql.Identifier(column[0])
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        target = sql.Identifier("callmart", table)
        statements = {
            "select": sql.SQL("SELECT count(*) FROM {}").format(target),
            "delete": sql.SQL("DELETE FROM {}").format(target),
            "update": sql.SQL("UPDATE {} SET {} = {}").format(target, first, first),
            "truncate": sql.SQL("TRUNCATE {}").format(target),
        }
        for action, statement in statements.items():
            try:
                with conn.transaction():
                    cursor = conn.execute(statement)
                    outcome[action] = cursor.fetchone()[0] if action == "select" else cursor.rowcount  # type: ignore[index]
            except psycopg.Error as error:
                outcome[action] = type(error).__name__
    return outcome


def _owned_tables(database: str) -> list[str]:
    with psycopg.connect(_url(PG_ADMIN_URL, database, "postgres")) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relowner = %s::regrole AND c.relkind IN ('r', 'p') ORDER BY 1",
            [OWNER],
        ).fetchall()
    return [name for (name,) in rows]


def _count(database: str, table: str) -> int:
    with psycopg.connect(_url(PG_ADMIN_URL, database, "postgres")) as conn:
        found = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("callmart", table))).fetchone()
    assert found is not None
    return int(found[0])


@pytest.mark.parametrize("through", ["direct", "pooler"])
def test_the_public_api_roles_read_and_change_nothing(
    supabase_like: str, seed_dir: Path, through: str, tmp_path: Path
) -> None:
    database = supabase_like
    url = _url(PG_ADMIN_URL if through == "direct" else PG_POOLER_URL, database, OWNER)
    with Callmart(url, seed_dir) as mart:
        mart.init()
        mart.enqueue(date(2023, 6, 1), date(2023, 9, 1))
        assert mart.run().ok
    # Everything else a team runs, as the same role.
    for command in [["grant-read", READER], ["status"], ["rejects"], ["report", "--out", str(tmp_path / "r.html")]]:
        result = CliRunner().invoke(cli, ["--database-url", url, *command])
        assert result.exit_code == 0, (command, result.output)

    owned = _owned_tables(database)
    partitions = [t for t in owned if t.startswith("fact_llamadas_")]
    mart_tables = sorted(Schema(MART, "callmart").tables)
    # One partition per day with calls (7 of the 92 days loaded): a day without calls leaves none behind.
    assert set(mart_tables) <= set(owned) and len(partitions) == 7
    assert _count(database, "fact_llamadas") == 1326
    denied = {"select": 0, "delete": 0, "update": 0, "truncate": "InsufficientPrivilege"}
    for table in owned:
        for role in API_ROLES:
            outcome = _tried_as(database, role, table)
            # No right at all (the default privileges were taken back), or rights and no row behind them.
            assert outcome["truncate"] == "InsufficientPrivilege", (role, table, outcome)
            assert all(outcome[a] in (denied[a], "InsufficientPrivilege") for a in denied), (role, table, outcome)
    for table in mart_tables:
        outcome = _tried_as(database, READER, table)
        assert outcome == {
            "select": _count(database, table),
            "delete": "InsufficientPrivilege",
            "update": "InsufficientPrivilege",
            "truncate": "InsufficientPrivilege",
        }, table
    # The fact's rows are there to be hidden: the owner sees them, the reader too, the API roles none.
    assert _tried_as(database, READER, "fact_llamadas")["select"] == 1326


def test_callmart_grants_nothing_to_the_api_roles(supabase_like: str, seed_dir: Path) -> None:
    url = _url(PG_ADMIN_URL, supabase_like, OWNER)
    runner = CliRunner()
    assert runner.invoke(cli, ["--database-url", url, "init"]).exit_code == 0
    for role in ["anon", "authenticated", "PUBLIC"]:
        result = runner.invoke(cli, ["--database-url", url, "grant-read", role])
        assert result.exit_code == 2
        assert "grants it nothing" in result.output
    result = runner.invoke(cli, ["--database-url", url, "grant-read", "no_such_role"])
    assert result.exit_code == 2 and "no role 'no_such_role'" in result.output


def test_a_reader_taken_back_reads_nothing(supabase_like: str, seed_dir: Path) -> None:
    url = _url(PG_ADMIN_URL, supabase_like, OWNER)
    with Callmart(url, seed_dir) as mart:
        mart.init()
        mart.enqueue(date(2023, 6, 27), date(2023, 6, 28))
        assert mart.run().ok
        mart.grant_read(READER)
        assert _tried_as(supabase_like, READER, "fact_llamadas")["select"] == _count(supabase_like, "fact_llamadas") > 0
        mart.revoke_read(READER)
    assert _tried_as(supabase_like, READER, "fact_llamadas")["select"] == "InsufficientPrivilege"


def test_a_reader_reads_tables_an_upgrade_adds(supabase_like: str, seed_dir: Path) -> None:
    url = _url(PG_ADMIN_URL, supabase_like, OWNER)
    with Callmart(url, seed_dir) as mart:
        mart.init()
        mart.grant_read(READER)
    with psycopg.connect(_url(PG_ADMIN_URL, supabase_like, "postgres"), autocommit=True) as admin:
        admin.execute("DROP TABLE callmart.agg_conversion_diaria")
    with Callmart(url, seed_dir) as mart:
        mart.init()
    assert _tried_as(supabase_like, READER, "agg_conversion_diaria")["select"] == 0
    assert _tried_as(supabase_like, "anon", "agg_conversion_diaria")["select"] in (0, "InsufficientPrivilege")


def test_the_schema_is_the_users_choice_on_both_engines(
    database_url: str, seed_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLMART_SCHEMA", "mart_calls")
    with Callmart(database_url, seed_dir) as mart:
        mart.init()
        mart.enqueue(date(2023, 6, 27), date(2023, 6, 29))
        assert mart.run().ok
        assert mart.where.endswith("(schema mart_calls)")
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            loaded = conn.execute(sa.text("SELECT count(*) FROM mart_calls.fact_llamadas")).scalar_one()
            elsewhere = conn.execute(
                sa.text(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_name = 'fact_llamadas' AND table_schema <> 'mart_calls'"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert loaded > 0 and not elsewhere
    # The URL's parameter wins over the environment.
    monkeypatch.setenv("CALLMART_SCHEMA", "")
    with pytest.raises(ConfigError, match="CALLMART_SCHEMA is set but empty"):
        Callmart(database_url, seed_dir)
    with Callmart(database_url + "?schema=mart_calls", seed_dir) as mart:
        assert mart.status()


def test_a_mart_left_in_public_keeps_working_and_moves(new_postgres_database: object, seed_dir: Path) -> None:
    url = new_postgres_database()  # type: ignore[operator]
    with Callmart(url + "?schema=public", seed_dir) as mart:
        mart.init()
        mart.enqueue(date(2023, 6, 27), date(2023, 6, 29))
        assert mart.run().ok
    # As an earlier callmart left it: no row level security.
    database = str(sa.make_url(url).database)
    with psycopg.connect(_url(PG_ADMIN_URL, database, "postgres"), autocommit=True) as admin:
        for (table,) in admin.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall():
            admin.execute(sql.SQL("ALTER TABLE {} DISABLE ROW LEVEL SECURITY").format(sql.Identifier("public", table)))
        before = admin.execute("SELECT count(*) FROM public.fact_llamadas").fetchone()
    runner = CliRunner()
    result = runner.invoke(cli, ["--database-url", url, "init"])
    assert result.exit_code == 0 and "(schema public)" in result.output and "callmart move-schema" in result.output
    with Callmart(url, seed_dir) as mart:
        assert [row["status"] for row in mart.status()] == ["exitoso", "exitoso"]
    result = runner.invoke(cli, ["--database-url", url, "move-schema"])
    assert result.exit_code == 0, result.output
    assert "(schema callmart)" in result.output
    with psycopg.connect(_url(PG_ADMIN_URL, database, "postgres")) as admin:
        left = admin.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S')"
        ).fetchone()
        after = admin.execute("SELECT count(*) FROM callmart.fact_llamadas").fetchone()
        open_tables = admin.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'callmart' AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity"
        ).fetchone()
    assert left == (0,) and after == before and open_tables == (0,)
    # The next run finds the mart in its new schema and goes on loading.
    with Callmart(url, seed_dir) as mart:
        mart.enqueue(date(2023, 6, 29), date(2023, 6, 30))
        assert mart.run().ok
        assert len(mart.status()) == 3 and mart.schema.name == "callmart"
