"""The scheduler adapters: the Airflow DAG run by Airflow, the Azure timer function, the Databricks job and the
GitHub Actions workflow, each loading the packaged sample into a DuckDB mart."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import pytest
import yaml

from callmart._errors import ConfigError
from callmart.config import sample_dir
from callmart.engines.spark import SparkUrl
from callmart.engines.spark.url import Kind
from callmart.scheduling import PeriodsFailed

SCHEDULING = Path(__file__).resolve().parents[1] / "src" / "callmart" / "scheduling"
REQUIRE_AIRFLOW = os.environ.get("CALLMART_REQUIRE_AIRFLOW") == "1"
HAS_AIRFLOW = importlib.util.find_spec("airflow") is not None
needs_airflow = pytest.mark.skipif(
    not HAS_AIRFLOW and not REQUIRE_AIRFLOW,
    reason="Airflow is not installed; .ci/scheduling runs these in a virtual environment of its own",
)


def periods(database: Path) -> list[tuple[str, str]]:
    """Each period of the control table as (day, status), oldest first."""
    with duckdb.connect(str(database), read_only=True) as conn:
        rows = conn.execute("SELECT start_date, status FROM dm_processes ORDER BY start_date").fetchall()
    return [(start.date().isoformat(), status) for start, status in rows]


def days(*numbers: int) -> list[tuple[str, str]]:
    """Loaded periods of March 2024, the month of the packaged sample."""
    return [(f"2024-03-{n:02d}", "exitoso") for n in numbers]


def clean_environment(**extra: str) -> dict[str, str]:
    """The environment without any callmart or Airflow setting of the machine, the packaged sample as the extracts,
    plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLMART_", "AIRFLOW"))}
    return {**env, "CALLMART_SOURCE_DIR": str(sample_dir()), **extra}


def broken_sample(folder: Path) -> Path:
    """The packaged sample whose calls extract lacks columns: every period fails, the dimensions load."""
    shutil.copytree(sample_dir(), folder)
    (folder / "Llamadas_sample.csv").write_text("Fecha,IDCliente\n2024-03-05 10:00:00,1\n")
    return folder


# Airflow: the DAG as Airflow parses it and `airflow dags test` runs it, on a SQLite metadata database.


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An Airflow home with a migrated SQLite database and a DAGs folder holding the one-line DAG file."""
    if not HAS_AIRFLOW:
        pytest.fail("CALLMART_REQUIRE_AIRFLOW=1 but airflow cannot be imported: pip install 'callmart[airflow]'")
    home = tmp_path_factory.mktemp("airflow")
    (home / "dags").mkdir()
    (home / "dags" / "callmart_dag.py").write_text("from callmart.scheduling.airflow import dag  # noqa: F401\n")
    env = clean_environment(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    airflow("db", "migrate", env=env)
    yield env


def airflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The Airflow command line; its output is shown when it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"airflow {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


PARSE_DAGS = """
import json, sys
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("callmart_daily")
print(json.dumps({
    "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "dag_ids": sorted(bag.dag_ids),
    "tasks": {t.task_id: t.retries for t in dag.tasks} if dag else {},
    "max_active_runs": dag.max_active_runs if dag else None,
    "fileloc": dag.fileloc if dag else None,
}))
"""


@needs_airflow
def test_the_dag_parses_with_no_import_errors(airflow_home: dict[str, str]) -> None:
    folder = airflow_home["AIRFLOW__CORE__DAGS_FOLDER"]
    done = subprocess.run(
        [sys.executable, "-c", PARSE_DAGS, folder], env=airflow_home, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    bag = json.loads(done.stdout.strip().splitlines()[-1])
    assert bag["import_errors"] == {}
    assert bag["dag_ids"] == ["callmart_daily"]
    assert bag["tasks"] == {"load": 2}
    assert bag["max_active_runs"] == 1
    assert bag["fileloc"] == str(Path(folder) / "callmart_dag.py")


@needs_airflow
def test_airflow_runs_the_dag_for_its_data_interval_with_the_connection(
    airflow_home: dict[str, str], tmp_path: Path
) -> None:
    mart = tmp_path / "mart.duckdb"
    env = {**airflow_home, "AIRFLOW_CONN_CALLMART_MART": f"duckdb:///{mart}"}
    done = airflow("dags", "test", "callmart_daily", "2024-03-08", env=env)
    # A manual run at 2024-03-08 gets the daily interval that ends then: [2024-03-07, 2024-03-08).
    assert periods(mart) == days(7)
    assert "state=success" in done.stdout + done.stderr


@needs_airflow
def test_airflow_takes_the_url_from_the_environment_and_catches_up(
    airflow_home: dict[str, str], tmp_path: Path
) -> None:
    mart = tmp_path / "mart.duckdb"
    env = {**airflow_home, "CALLMART_DATABASE_URL": f"duckdb:///{mart}"}
    airflow("dags", "test", "callmart_daily", "2024-03-06", env=env)
    assert periods(mart) == days(5)
    # Airflow missed two intervals (catchup is off): the next run loads them with its own.
    airflow("dags", "test", "callmart_daily", "2024-03-09", env=env)
    assert periods(mart) == days(5, 6, 7, 8)


RUN_WITHOUT_LOGICAL_DATE = """
import sys
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag
run = DagBag(dag_folder=sys.argv[1]).dags["callmart_daily"].test(logical_date=None)
print(run.state)
"""


@needs_airflow
def test_an_airflow_run_without_a_logical_date_loads_what_the_daily_command_would(
    airflow_home: dict[str, str], tmp_path: Path
) -> None:
    mart = tmp_path / "mart.duckdb"
    env = {**airflow_home, "CALLMART_DATABASE_URL": f"duckdb:///{mart}"}
    folder = airflow_home["AIRFLOW__CORE__DAGS_FOLDER"]
    done = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_LOGICAL_DATE, folder], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "success"
    # No data interval: yesterday, as `callmart run --daily`; the sample holds no call that day or after, so the
    # day waits for its export.
    assert periods(mart) == [((date.today() - timedelta(days=1)).isoformat(), "esperando")]


@needs_airflow
def test_airflow_replays_days_of_2023(airflow_home: dict[str, str], tmp_path: Path, seed_dir: Path) -> None:
    """History before any default start date: each replayed day runs its task and loads the day's calls."""
    mart = tmp_path / "mart.duckdb"
    env = {**airflow_home, "CALLMART_DATABASE_URL": f"duckdb:///{mart}", "CALLMART_SOURCE_DIR": str(seed_dir)}
    for day in ("2023-06-28", "2023-06-29"):
        done = airflow("dags", "test", "callmart_daily", day, env=env)
        assert "state=success" in done.stdout + done.stderr
    with duckdb.connect(str(mart), read_only=True) as conn:
        loaded = conn.execute(
            "SELECT CAST(start_date AS DATE), status, rows_loaded FROM dm_processes ORDER BY start_date"
        ).fetchall()
    assert [(str(day), status) for day, status, _ in loaded] == [("2023-06-27", "exitoso"), ("2023-06-28", "exitoso")]
    assert all(rows > 0 for _, _, rows in loaded)


# Azure Functions: the timer function called as the Functions host would, with a real TimerRequest.


@pytest.fixture
def function_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ModuleType]:
    """The template function_app.py, imported by path, its mart a DuckDB file set by app settings."""
    monkeypatch.setenv("CALLMART_DATABASE_URL", f"duckdb:///{tmp_path / 'mart.duckdb'}")
    monkeypatch.setenv("CALLMART_SOURCE_DIR", str(sample_dir()))
    spec = importlib.util.spec_from_file_location("callmart_function_app", SCHEDULING / "azure" / "function_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module


@pytest.fixture
def timer(function_app: ModuleType) -> Callable[[bool], None]:
    """Invokes the timer function the way the host does, with the TimerRequest its converter makes."""
    from azure.functions.timer import TimerRequest

    functions = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}

    def invoke(past_due: bool) -> None:
        functions["callmart_daily"](TimerRequest(past_due=past_due))

    return invoke


def test_the_function_app_declares_a_timer_from_app_settings_with_retries(function_app: ModuleType) -> None:
    (function,) = function_app.app.get_functions()
    (binding,) = json.loads(function.get_function_json())["bindings"]
    assert binding == {
        "direction": "IN",
        "type": "timerTrigger",
        "name": "timer",
        "schedule": "%CALLMART_SCHEDULE%",
        "runOnStartup": False,
        "useMonitor": True,
    }
    assert function.get_setting("retry_policy") is not None
    host = json.loads((SCHEDULING / "azure" / "host.json").read_text())
    assert host["version"] == "2.0" and host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    requirements = (SCHEDULING / "azure" / "requirements.txt").read_text().split()
    assert "callmart" in requirements and any(r.startswith("azure-functions") for r in requirements)


def test_the_timer_loads_yesterday_then_catches_up_when_past_due(
    function_app: ModuleType,
    timer: Callable[[bool], None],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="callmart")
    monkeypatch.setattr(function_app, "today", lambda: date(2024, 3, 6))
    timer(False)
    assert periods(tmp_path / "mart.duckdb") == days(5)
    assert "past due" not in caplog.text

    # The host was down for three days: the late invocation loads every day owed since the last load.
    monkeypatch.setattr(function_app, "today", lambda: date(2024, 3, 9))
    timer(True)
    assert periods(tmp_path / "mart.duckdb") == days(5, 6, 7, 8)
    assert "past due" in caplog.text
    assert "fact_llamadas [2024-03-08 00:00, 2024-03-09 00:00): exitoso" in caplog.text


def test_the_timer_fails_the_invocation_when_a_period_fails(
    function_app: ModuleType, timer: Callable[[bool], None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CALLMART_SOURCE_DIR", str(broken_sample(tmp_path / "extracts")))
    monkeypatch.setattr(function_app, "today", lambda: date(2024, 3, 6))
    with pytest.raises(PeriodsFailed, match=r"1 step\(s\) failed .*lacks the column"):
        timer(False)
    assert periods(tmp_path / "mart.duckdb") == [("2024-03-05", "fallido")]


# Databricks and GitHub Actions: the definitions, and the very commands they run, run here.


def databricks_job() -> dict[str, Any]:
    bundle = yaml.safe_load((SCHEDULING / "databricks" / "databricks.yml").read_text())
    job: dict[str, Any] = bundle["resources"]["jobs"]["callmart_daily"]
    return job


def workflow() -> dict[str, Any]:
    data: dict[Any, Any] = yaml.safe_load((SCHEDULING / "github" / "callmart-daily.yml").read_text())
    # YAML 1.1 reads the key `on` as true.
    data["on"] = data.pop(True, data.get("on"))
    return data


def test_the_databricks_job_runs_the_daily_command_on_a_schedule_with_the_url_from_a_secret() -> None:
    job = databricks_job()
    assert job["name"] and job["max_concurrent_runs"] == 1
    cron = job["schedule"]["quartz_cron_expression"].split()
    assert len(cron) in (6, 7) and "?" in (cron[3], cron[5])
    tasks = {t["task_key"]: t for t in job["tasks"]}
    load = tasks["load"]
    assert load["python_wheel_task"] == {
        "package_name": "callmart",
        "entry_point": "callmart",
        "parameters": ["run", "--daily"],
    }
    assert load["depends_on"] == [{"task_key": "init"}] and tasks["init"]["python_wheel_task"]["parameters"] == ["init"]
    assert load["max_retries"] >= 1
    (cluster,) = [c for c in job["job_clusters"] if c["job_cluster_key"] == load["job_cluster_key"]]
    assert cluster["new_cluster"]["spark_env_vars"]["CALLMART_DATABASE_URL"] == "{{secrets/callmart/database_url}}"
    # The entry point the wheel task names is callmart's console script.
    (script,) = metadata.entry_points(group="console_scripts", name="callmart")
    assert script.value == "callmart.__main__:main"


def bundle_file(name: str) -> dict[str, Any]:
    bundle: dict[str, Any] = yaml.safe_load((SCHEDULING / "databricks" / name).read_text())
    return bundle


def with_defaults(text: str, variables: dict[str, Any]) -> str:
    """The text with each ${var.NAME} replaced by the variable's default, as the prod target deploys it."""
    return re.sub(r"\$\{var\.(\w+)\}", lambda m: str(variables[m.group(1)]["default"]), text)


def runtime_spark_major(runtime: str) -> int:
    """The Spark major of a Databricks Runtime: 17 is the first on Spark 4 (Python 3.12), 13 to 16 run Spark 3."""
    return 4 if int(runtime.split(".")[0]) >= 17 else 3


def test_the_databricks_spark_bundle_loads_unity_catalog_from_a_multi_node_cluster_without_a_secret() -> None:
    bundle, plain = bundle_file("databricks-spark.yml"), bundle_file("databricks.yml")
    variables = bundle["variables"]
    # The PostgreSQL bundle's name and job key: deploying one after the other replaces the job, never adds one.
    assert bundle["bundle"]["name"] == plain["bundle"]["name"]
    assert list(bundle["resources"]["jobs"]) == list(plain["resources"]["jobs"]) == ["callmart_daily"]
    job, plain_job = bundle["resources"]["jobs"]["callmart_daily"], plain["resources"]["jobs"]["callmart_daily"]
    assert job["max_concurrent_runs"] == 1 and job["schedule"] == plain_job["schedule"]
    (cluster,) = job["job_clusters"]
    new = cluster["new_cluster"]
    workers = new["autoscale"]["min_workers"] if "autoscale" in new else new["num_workers"]
    assert workers >= 2 and "spark_conf" not in new
    runtime = with_defaults(new["spark_version"], variables)
    assert runtime_spark_major(runtime) >= 4 and runtime.endswith("-scala2.13")
    assert new["data_security_mode"] in ("SINGLE_USER", "DATA_SECURITY_MODE_DEDICATED")
    tasks = job["tasks"]
    assert [t["python_wheel_task"] for t in tasks] == [
        {"package_name": "callmart", "entry_point": "callmart", "parameters": ["init"]},
        {"package_name": "callmart", "entry_point": "callmart", "parameters": ["run", "--daily"]},
    ]
    assert tasks[1]["depends_on"] == [{"task_key": tasks[0]["task_key"]}]
    assert all(t["job_cluster_key"] == cluster["job_cluster_key"] for t in tasks)
    # The wheel's plain install: pyspark and Delta are the runtime's.
    assert all(t["libraries"] == [{"whl": "./dist/*.whl"}] for t in tasks)
    retries = ("max_retries", "min_retry_interval_millis", "retry_on_timeout", "timeout_seconds")
    (plain_load,) = [t for t in plain_job["tasks"] if t["task_key"] == "load"]
    assert {k: tasks[1][k] for k in retries} == {k: plain_load[k] for k in retries}
    env = {name: with_defaults(value, variables) for name, value in new["spark_env_vars"].items()}
    url = SparkUrl.parse(env["CALLMART_DATABASE_URL"])
    assert url.kind is Kind.ACTIVE
    assert (url.catalog, url.database) == (variables["catalog"]["default"], variables["schema"]["default"])
    assert env["CALLMART_SOURCE_DIR"].startswith("/Volumes/")
    assert not any("secrets" in value for value in env.values())
    assert "{{secrets/" not in (SCHEDULING / "databricks" / "databricks-spark.yml").read_text()
    # A development deployment loads a schema of its own, never the production mart.
    assert bundle["targets"]["dev"]["variables"]["schema"] != variables["schema"]["default"]


def test_the_github_workflow_runs_the_daily_command_on_a_schedule_with_the_url_from_a_secret() -> None:
    flow = workflow()
    assert len(flow["on"]["schedule"][0]["cron"].split()) == 5
    assert "workflow_dispatch" in flow["on"]
    job = flow["jobs"]["load"]
    assert job["env"]["CALLMART_DATABASE_URL"] == "${{ secrets.CALLMART_DATABASE_URL }}"
    commands = [step["run"] for step in job["steps"] if "run" in step]
    assert any(command.startswith("callmart run --daily") for command in commands)


def callmart(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callmart", *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_databricks_tasks_run_here_load_the_day_before(tmp_path: Path) -> None:
    mart = tmp_path / "mart.duckdb"
    env = clean_environment(CALLMART_DATABASE_URL=f"duckdb:///{mart}")
    for task in databricks_job()["tasks"]:
        parameters = task["python_wheel_task"]["parameters"]
        replay = ["--as-of", "2024-03-08"] if parameters[0] == "run" else []
        done = callmart(*parameters, *replay, env=env)
        assert done.returncode == 0, done.stderr
    assert periods(mart) == days(7)
    # A failed period makes the task fail, so Databricks retries it.
    other = tmp_path / "other.duckdb"
    env = clean_environment(
        CALLMART_DATABASE_URL=f"duckdb:///{other}", CALLMART_SOURCE_DIR=str(broken_sample(tmp_path / "broken"))
    )
    assert callmart("init", env=env).returncode == 0
    assert callmart("run", "--daily", "--as-of", "2024-03-08", env=env).returncode == 1


def test_the_github_workflow_steps_run_here_load_the_day_before(tmp_path: Path) -> None:
    mart = tmp_path / "mart.duckdb"
    bin_dir = str(Path(sys.executable).parent)
    env = clean_environment(
        CALLMART_DATABASE_URL=f"duckdb:///{mart}",
        AS_OF="2024-03-08",
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    for step in workflow()["jobs"]["load"]["steps"]:
        if step.get("run", "").startswith("callmart"):
            done = subprocess.run(["bash", "-c", step["run"]], env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr
    assert periods(mart) == days(7)


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("CALLMART_SOURCE_DIR", None, "set CALLMART_SOURCE_DIR"),
        ("CALLMART_SOURCE_DIR", "", "CALLMART_SOURCE_DIR is set but empty"),
        ("CALLMART_DATABASE_URL", None, "set CALLMART_DATABASE_URL"),
        ("CALLMART_DATABASE_URL", "", "CALLMART_DATABASE_URL is set but empty"),
    ],
)
def test_the_function_refuses_to_start_without_its_settings(
    function_app: ModuleType,
    timer: Callable[[bool], None],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    setting: str,
    value: str | None,
    says: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    if value is None:
        monkeypatch.delenv(setting)
    else:
        monkeypatch.setenv(setting, value)
    with pytest.raises(ConfigError, match=says):
        timer(False)
    # Nothing was made: neither the mart the settings name (in tmp_path) nor a default one in the working folder.
    assert list(tmp_path.iterdir()) == []
