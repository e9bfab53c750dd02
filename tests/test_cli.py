"""The command line: help, the four commands of a first load, exit codes and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from callmart.cli import cli
from conftest import ON_SPARK, WITH_SPARK
from marts import query


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.mark.parametrize("command", ["init", "enqueue", "run", "status", "rejects", "generate", "report", "profile"])
def test_every_command_has_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output
    assert cli.commands[command].help, f"{command} has no help text"


def test_the_group_help_teaches_a_first_load() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for word in ["CALLMART_DATABASE_URL", "CALLMART_SOURCE_DIR", "init", "enqueue", "run", "status"]:
        assert word in result.output


def test_first_load_through_the_cli(database_url: str, seed_dir: Path) -> None:
    env = {"CALLMART_DATABASE_URL": database_url, "CALLMART_SOURCE_DIR": str(seed_dir)}
    assert invoke("init", env=env).exit_code == 0
    again = invoke("init", env=env)
    assert again.exit_code == 0 and "mart ready" in again.output

    enqueued = invoke("enqueue", "--from", "2023-06-01", "--to", "2023-09-01", env=env)
    assert enqueued.exit_code == 0
    assert enqueued.output.startswith("92 period(s) added")
    assert invoke("enqueue", "--from", "2023-06-27", "--to", "2023-06-29", env=env).output.startswith(
        "0 period(s) added, 0 queued again, 2 already pending"
    )

    # A historical export: complete through the last day queued, though its last call is on 2023-08-28.
    ran = invoke("run", "--complete-through", "2023-08-31", env=env)
    assert ran.exit_code == 0, ran.output
    assert "inserted" in ran.output and "dim_clientes" in ran.output
    assert "fact_llamadas [2023-06-27 00:00, 2023-06-28 00:00)" in ran.output

    shown = invoke("status", env=env)
    assert shown.exit_code == 0
    assert "92 exitoso" in shown.output

    forced = invoke("enqueue", "--from", "2023-06-27", "--to", "2023-06-28", "--force", env=env)
    assert forced.output.startswith("0 period(s) added, 1 queued again")
    assert query(database_url, "SELECT count(*) FROM dm_processes WHERE status = 'pendiente'") == [(1,)]

    # The dimension extracts have not changed: skipped, unless asked for.
    assert "dim_clientes (source unchanged since its last merge)" in invoke("run", env=env).output
    reloaded = invoke("run", "--reload-dimensions", env=env)
    assert reloaded.exit_code == 0 and "dim_clientes (source unchanged" not in reloaded.output


def test_enqueue_without_dates_queues_yesterday(database_url: str, seed_dir: Path) -> None:
    env = {"CALLMART_DATABASE_URL": database_url, "CALLMART_SOURCE_DIR": str(seed_dir)}
    invoke("init", env=env)
    assert invoke("enqueue", env=env).output.startswith("1 period(s) added")
    rows = query(
        database_url, "SELECT end_date - start_date, CAST(start_date AS DATE) = CURRENT_DATE - 1 FROM dm_processes"
    )
    assert len(rows) == 1 and rows[0][1] is True


@pytest.mark.parametrize("new_database", WITH_SPARK, indirect=True)
def test_a_failed_period_exits_1_and_the_rest_still_load(database_url: str, seed_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    for f in seed_dir.iterdir():
        if not f.name.startswith("Llamadas"):
            (folder / f.name).write_bytes(f.read_bytes())
    env = {"CALLMART_DATABASE_URL": database_url, "CALLMART_SOURCE_DIR": str(folder)}
    invoke("init", env=env)
    invoke("enqueue", "--from", "2023-06-27", "--to", "2023-06-29", env=env)
    ran = invoke("run", env=env)
    assert ran.exit_code == 1
    assert "2 period(s) failed" in ran.output
    assert "no file matches Llamadas*.csv" in invoke("status", env=env).output


@pytest.mark.parametrize("new_database", [ON_SPARK], indirect=True)
def test_the_daily_commands_of_a_scheduled_job_load_a_spark_mart(database_url: str, seed_dir: Path) -> None:
    # What the Databricks bundle's Spark variant runs: init, then run --daily (yesterday queued and loaded).
    env = {"CALLMART_DATABASE_URL": database_url, "CALLMART_SOURCE_DIR": str(seed_dir)}
    assert invoke("init", env=env).exit_code == 0
    ran = invoke("run", "--daily", env=env)
    assert ran.exit_code == 0, ran.output
    assert "dim_clientes" in ran.output and "(database callmart_test_" in ran.output
    shown = invoke("status", env=env)
    assert shown.exit_code == 0 and shown.output.startswith("periods: 1 exitoso")
    again = invoke("run", "--daily", env=env)
    assert again.exit_code == 0 and "dim_clientes (source unchanged since its last merge)" in again.output


@pytest.mark.parametrize("new_database", WITH_SPARK, indirect=True)
def test_a_mart_not_initialized_is_a_one_line_error(database_url: str) -> None:
    result = invoke("--database-url", database_url, "status")
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "callmart init" in result.output


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://root:hunter2@localhost/db", "unsupported database"),
        ("not a url", "not a database URL"),
        ("postgresql://postgres:hunter2@127.0.0.1:1/mart?sslmode=disable", "cannot use the database"),
    ],
)
def test_bad_urls_are_one_line_errors_without_the_password(url: str, expected: str) -> None:
    result = invoke("--database-url", url, "init")
    assert result.exit_code == 2
    assert expected in result.output
    assert "hunter2" not in result.output
    assert result.output.count("\n") == 1


def test_supabase_style_urls_are_accepted() -> None:
    from callmart.config import mask, parse_url

    url = parse_url("postgresql://postgres.abc:s3cret@aws-0-eu.pooler.supabase.com:6543/postgres?sslmode=require")
    assert url.drivername == "postgresql+psycopg" and url.query["sslmode"] == "require"
    assert "s3cret" not in mask(url)
    assert parse_url("postgres://u:p@h/db").drivername == "postgresql+psycopg"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?threads=1", "128MB"),
        ("?threads=2", "128MB"),
        ("?threads=16", "1024MB"),
        ("?threads=16&memory_limit=300MB", "300MB"),
        ("?max_memory=2000MB", "2000MB"),
        # In memory, DuckDB's own default; and never more than it (400 threads: 25.6 GB).
        (":memory:", None),
        ("?threads=400", "25600MB"),
    ],
)
def test_duckdb_memory_is_capped_by_its_threads_unless_the_url_sets_it(
    tmp_path: Path, query: str, expected: str | None
) -> None:
    import duckdb
    import sqlalchemy as sa

    from callmart.config import create_engine, parse_url

    database = ":memory:" if query == ":memory:" else f"{tmp_path / 'mart.duckdb'}{query}"
    engine = create_engine(parse_url(f"duckdb:///{database}"))
    try:
        with engine.connect() as conn:
            limit = conn.execute(sa.select(sa.func.current_setting("memory_limit"))).scalar_one()
    finally:
        engine.dispose()
    # DuckDB shows a limit in its own units (MiB, GiB): compare with how it shows the expected one, which is a
    # cap only where it is below DuckDB's own limit, and the URL's limit as given.
    reference = duckdb.connect()
    [(default,)] = reference.execute("SELECT parse_formatted_bytes(current_setting('memory_limit'))").fetchall()
    given = "memory_limit" in query or "max_memory" in query
    if expected is not None and (given or int(expected.removesuffix("MB")) * 10**6 < default):
        reference.execute("SET memory_limit = $1", [expected])
    assert limit == reference.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    reference.close()


def test_an_empty_period_is_refused() -> None:
    result = invoke("--database-url", "duckdb:///:memory:", "enqueue", "--from", "2024-03-05", "--to", "2024-03-05")
    assert result.exit_code == 2
    assert "must be after" in result.output


@pytest.mark.parametrize("setting", ["CALLMART_DATABASE_URL", "CALLMART_SOURCE_DIR", "CALLMART_SCHEMA"])
def test_an_empty_setting_is_an_error_naming_it(setting: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"CALLMART_DATABASE_URL": f"duckdb:///{tmp_path / 'm.duckdb'}", "CALLMART_SOURCE_DIR": str(tmp_path)}
    for command in [["init"], ["run"], ["status"]]:
        result = CliRunner().invoke(cli, command, env={**env, setting: ""})
        assert result.exit_code == 2, result.output
        assert result.output == f"Error: {setting} is set but empty: give it a value, or unset it\n"
    assert list(tmp_path.iterdir()) == []


def test_the_sample_loads_only_when_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"CALLMART_DATABASE_URL": f"duckdb:///{tmp_path / 'm.duckdb'}", "CALLMART_SOURCE_DIR": None}
    assert invoke("init", env=env).exit_code == 0
    assert invoke("enqueue", "--from", "2024-03-04", "--to", "2024-03-05", env=env).exit_code == 0
    result = CliRunner().invoke(cli, ["run"], env=env)
    assert result.exit_code == 2
    assert "no extracts folder: set CALLMART_SOURCE_DIR or --source-dir (--sample" in result.output
    assert "1 pendiente" in invoke("status", env=env).output
    result = CliRunner().invoke(cli, ["--sample", "run"], env=env)
    assert result.exit_code == 0, result.output
    assert "run 1: 1 period(s)," in result.output and " 0 failed" in result.output


def test_global_options_work_after_the_subcommand(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'm.duckdb'}"
    for args in (
        ["init", "--database-url", url],
        [f"--database-url={url}", "status"],
        ["status", f"--database-url={url}"],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "m.duckdb").exists()


def test_a_duckdb_file_is_named_by_its_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--database-url", "duckdb:///no/such/dir/m.duckdb", "init"])
    assert result.exit_code == 0
    assert result.output == f"mart ready in duckdb:///{tmp_path}/no/such/dir/m.duckdb\n"
    assert f"duckdb:///{tmp_path}".startswith("duckdb:////")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["enqueue", "--from", "2023-02-30"], "'2023-02-30' is not a valid date (no such day)"),
        (["enqueue", "--from", "30/02/2023"], "'30/02/2023' is not a date: write it as YYYY-MM-DD"),
        (["enqueue", "--to", "2023-03-01"], "--to needs --from"),
        (["enqueue", "--failed", "--from", "2023-03-01"], "--failed queues every failed period: give it no dates"),
        (["run", "--as-of", "2023-03-01"], "--as-of goes with --daily"),
        (["enqueue", "--from", "1900-01-01", "--to", "2100-01-01"], "more than 10 years: add --yes"),
    ],
)
def test_dates_people_type(args: list[str], says: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--database-url", f"duckdb:///{tmp_path / 'm.duckdb'}", *args])
    assert result.exit_code == 2
    assert says in result.output


def test_the_api_takes_dates_datetimes_and_iso_strings(tmp_path: Path) -> None:
    from datetime import date, datetime

    from callmart import Callmart

    with Callmart(f"duckdb:///{tmp_path / 'm.duckdb'}") as mart:
        mart.init()
        assert mart.enqueue(date(2024, 3, 4), "2024-03-06")["added"] == 2
        assert mart.enqueue(datetime(2024, 3, 6, 15, 30), "2024-03-07")["added"] == 1
        assert [str(row["start_date"])[:10] for row in mart.status()] == ["2024-03-04", "2024-03-05", "2024-03-06"]


def test_a_century_of_days_is_queued_in_seconds_when_asked_for(database_url: str) -> None:
    import time

    invoke("--database-url", database_url, "init")
    began = time.perf_counter()
    result = invoke("--database-url", database_url, "enqueue", "--from", "1900-01-01", "--to", "2100-01-01", "--yes")
    assert result.output.startswith("73049 period(s) added")
    again = invoke("--database-url", database_url, "enqueue", "--from", "1999-01-01", "--to", "2000-01-01", "--force")
    assert again.output.startswith("0 period(s) added, 365 queued again")
    assert time.perf_counter() - began < 60


def test_a_readable_status_and_scripts_json(database_url: str, seed_dir: Path) -> None:
    import json

    env = {"CALLMART_DATABASE_URL": database_url, "CALLMART_SOURCE_DIR": str(seed_dir)}
    invoke("init", env=env)
    invoke("enqueue", "--from", "2023-06-01", "--to", "2023-09-01", env=env)
    ran = CliRunner().invoke(cli, ["run", "--complete-through", "2023-08-31"], env=env)
    # 92 days, most of them empty: consecutive empty days are one line each.
    assert "fact_llamadas [2023-06-01, 2023-06-27): 26 empty days" in ran.output
    assert len(ran.output.splitlines()) < 50
    shown = invoke("status", env=env).output
    assert shown.startswith("periods: 92 exitoso\n")
    assert "needing attention" not in shown and len(shown.splitlines()) < 40
    document = json.loads(invoke("status", "--all", "--format", "json", env=env).output)
    assert document["counts"] == {"exitoso": 92} and len(document["periods"]) == 92
    assert document["periods"][0]["start_date"] == "2023-06-01T00:00:00"
    some = json.loads(
        invoke("status", "--since", "2023-08-30", "--status", "exitoso", "--format", "json", env=env).output
    )
    assert [p["start_date"][:10] for p in some["periods"]] == ["2023-08-30", "2023-08-31"]
    rejects = json.loads(invoke("rejects", "--format", "json", env=env).output)
    assert rejects and all(isinstance(r["line_number"], int) for r in rejects)
    missing = CliRunner().invoke(cli, ["rejects", "--run", "999"], env=env)
    assert missing.exit_code == 2 and "no run 999" in missing.output and "the latest is 1" in missing.output


def test_the_data_dictionary_in_docs_is_the_one_callmart_prints(tmp_path: Path) -> None:
    printed = invoke("--database-url", f"duckdb:///{tmp_path / 'm.duckdb'}", "docs").output
    kept = (Path(__file__).resolve().parents[1] / "docs" / "mart.md").read_text(encoding="utf-8")
    # Run `callmart docs > docs/mart.md` after changing a declaration.
    assert printed == kept
    assert "at least 30 seconds" in printed and "48 hours" in printed


def test_templates_are_copied_where_a_team_keeps_them(tmp_path: Path) -> None:
    for scheduler, expected in [
        ("airflow", ["callmart_dag.py"]),
        ("azure", ["function_app.py", "host.json", "requirements.txt"]),
        ("azure-pipelines", ["azure-pipelines.yml"]),
        ("databricks", ["databricks-spark.yml", "databricks.yml"]),
        ("github", ["callmart-daily.yml", "callmart-deploy.yml"]),
    ]:
        result = invoke("templates", scheduler, str(tmp_path / scheduler))
        assert result.exit_code == 0
        assert sorted(p.name for p in (tmp_path / scheduler).iterdir()) == expected
    again = CliRunner().invoke(cli, ["templates", "github", str(tmp_path / "github")])
    assert again.exit_code == 2 and "exists already" in again.output


def test_the_readme_first_commands_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    import shlex
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    first = re.search(r"\*\*Try it\*\*.*?```sh\n(.*?)\n```", readme, re.S)
    assert first is not None
    commands = [shlex.split(c) for c in first.group(1).split("&&")]
    assert commands[0][:3] == ["python3", "-m", "venv"] and commands[1][0] == ".venv/bin/pip"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("CALLMART_")}
    for command in commands[2:]:
        assert command[0] == ".venv/bin/callmart"
        done = subprocess.run(
            [sys.executable, "-m", "callmart", *command[1:]], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    assert "6 period(s), " in done.stdout and " 0 failed" in done.stdout
    assert (tmp_path / "callmart.duckdb").exists()
