"""Spark beyond one process: a standalone cluster (a master and two workers, started here from pyspark's own
launcher) whose executors build and write a day of the fact table, and a driver killed while writing a day, which
leaves the table as it was for the next run.

Each session runs in a driver of its own (tests/spark_drivers/fact_day.py): a process holds one classic session,
and these need another master, or a process to kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from callmart.engines.spark import Spark, SparkUrl
from callmart.engines.spark.session import DRIVER_JAVA_OPTIONS, JARS, held_elsewhere, session_settings
from callmart.engines.spark.standalone import LOOPBACK, StandaloneCluster, loopback_environment, standalone_cluster
from callmart.engines.spark.url import Kind
from callmart.mart import MART

pytestmark = pytest.mark.spark

ENGINE = Spark()
FACT = MART.facts[0]
DAY = datetime(2024, 3, 5)
DRIVER = Path(__file__).parent / "spark_drivers" / "fact_day.py"
QUICK = {
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.databricks.delta.snapshotPartitions": "2",
}
"""Settings of a small test session: no web UI, few partitions."""
STARTUP = 300
"""Seconds a Spark process may take to start on a busy machine."""


# --- the URL of a standalone cluster -------------------------------------------------------------------------------


def test_a_standalone_master_is_host_and_port(tmp_path: Path) -> None:
    url = SparkUrl.parse(f"spark://127.0.0.1:7077?warehouse={tmp_path}&spark.cores.max=2&database=mart")
    assert (url.kind, url.master, url.warehouse, url.database) == (
        Kind.STANDALONE,
        "spark://127.0.0.1:7077",
        tmp_path,
        "mart",
    )
    assert url.conf == {"spark.cores.max": "2"}
    assert url.shown == f"spark://127.0.0.1:7077?warehouse={tmp_path}"
    standby = SparkUrl.parse("spark://m1.example.com:7077,m2.example.com:7077/?warehouse=/mnt/mart")
    assert standby.master == "spark://m1.example.com:7077,m2.example.com:7077"
    assert SparkUrl.parse("spark://[::1]:7077?warehouse=/mnt/mart").master == "spark://[::1]:7077"
    # `local` is a session in this process, whatever follows; with a port it is a host of that name.
    assert SparkUrl.parse("spark://local?warehouse=/w").kind is Kind.LOCAL
    assert SparkUrl.parse("spark://local:7077?warehouse=/w").master == "spark://local:7077"
    # Through SQLAlchemy's URL, as callmart's settings parse a database URL.
    assert ENGINE.url(sa.make_url("spark://10.0.0.5:7077?warehouse=/mnt/mart")).port == 7077


def test_jars_and_java_options_of_the_url_are_added_to_deltas(spark_url: SparkUrl, tmp_path: Path) -> None:
    url = SparkUrl.parse(
        f"spark://127.0.0.1:7077?warehouse={tmp_path}&spark.jars=/opt/extra.jar&{DRIVER_JAVA_OPTIONS}=-Dx=1"
    )
    settings = session_settings(url)
    jars = settings[JARS].split(",")
    assert jars[-1] == "/opt/extra.jar"
    assert any(Path(jar).name.startswith("delta-spark_") for jar in jars)
    assert settings[DRIVER_JAVA_OPTIONS] == f"-Dderby.system.home={tmp_path} -Dx=1"
    assert settings["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"


def test_a_derby_database_is_held_only_while_its_process_lives(tmp_path: Path) -> None:
    """Derby's OS lock on dbex.lck tells a live holder from the lock files a killed one leaves."""
    metastore = tmp_path / "metastore_db"
    assert not held_elsewhere(metastore)
    metastore.mkdir()
    (metastore / "db.lck").write_text("left by a killed process")
    (metastore / "dbex.lck").write_bytes(b"\x00")
    assert not held_elsewhere(metastore)
    hold = (
        "import fcntl, sys, time; f = open(sys.argv[1], 'rb+'); fcntl.lockf(f, fcntl.LOCK_EX); "
        "print(1, flush=True); time.sleep(60)"
    )
    with subprocess.Popen([sys.executable, "-c", hold, metastore / "dbex.lck"], stdout=subprocess.PIPE) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == b"1"
            assert held_elsewhere(metastore)
        finally:
            holder.kill()
    assert not held_elsewhere(metastore)


# --- a driver of its own -------------------------------------------------------------------------------------------


def _command(url: str, steps: list[list[Any]]) -> list[str]:
    return [sys.executable, str(DRIVER), url, json.dumps(steps)]


def _drive(url: str, steps: list[list[Any]]) -> dict[str, Any]:
    """Run the steps in a driver of their own; what each said, by step (the last of a name wins)."""
    done = subprocess.run(
        _command(url, steps), capture_output=True, text=True, timeout=900, check=False, env=loopback_environment()
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return _said(done.stdout)


def _said(output: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return {line["step"]: line["said"] for line in lines}


def _wait_for(condition: Callable[[], object], what: str, seconds: float = STARTUP) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(1)


def _expected(first: int, count: int) -> list[list[object]]:
    """The rows fact_day.py's rows_of_day gives, worked out here: key, time, client, agent."""
    keys = range(first, first + count)
    return [[k, (DAY + timedelta(seconds=k % 86400)).isoformat(sep=" "), k % 100, k % 7] for k in keys]


def _url(master: str, warehouse: Path, **settings: str) -> str:
    query = "&".join(f"{key}={value}" for key, value in {**QUICK, **settings}.items())
    return f"spark://{master}?warehouse={warehouse}&{query}"


# --- a standalone cluster ------------------------------------------------------------------------------------------


@pytest.fixture
def cluster(spark_url: SparkUrl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    """A standalone master and two workers of one core and 1 GiB each, stopped after the test, even on failure."""
    with standalone_cluster(tmp_path_factory.mktemp("cluster"), 2, "1g") as started:
        assert all(process.poll() is None for process in started.workers)
        yield started


def test_a_standalone_cluster_builds_and_writes_a_day_in_its_workers_executors(
    cluster: StandaloneCluster, tmp_path: Path
) -> None:
    """The session's executors run in the workers' JVMs (none in the driver's), build the day's rows from
    spark.range, and write them with Delta's classes shipped by the driver (spark.jars)."""
    url = _url(
        cluster.master,
        tmp_path / "warehouse",
        **{
            "spark.driver.host": LOOPBACK,
            "spark.driver.bindAddress": LOOPBACK,
            "spark.cores.max": "2",
            "spark.executor.memory": "512m",
            # The first job waits for both executors, so that both get tasks.
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s",
        },
    )
    said = _drive(url, [["create"], ["replace", DAY.isoformat(), 0, 40, 4], ["read", DAY.isoformat()]])
    assert said["create"] == [FACT.name]
    rows = said["read"]["rows"]
    assert [row[:4] for row in rows] == _expected(0, 40)
    # Each row names the JVM that built it and that JVM's parent: executors started by each of the two workers.
    jvms = {tuple(int(pid) for pid in row[4].split(":")) for row in rows}
    assert {parent for _, parent in jvms} == {worker.pid for worker in cluster.workers}
    assert len({pid for pid, _ in jvms}) == 2
    # Delta's jar reached every executor from the driver: each one's log says it joined its class loader.
    for folder in cluster.worker_folders:
        logs = "".join(log.read_text(errors="replace") for log in folder.rglob("stderr"))
        assert "delta-spark_" in logs and "to class loader" in logs


# --- a driver killed while writing ---------------------------------------------------------------------------------


def _files(folder: Path, pattern: str) -> set[str]:
    return {path.name for path in folder.glob(pattern)} if folder.is_dir() else set()


def test_a_driver_killed_while_writing_a_day_leaves_the_table_as_it_was(spark_url: SparkUrl, tmp_path: Path) -> None:
    """SIGKILL to a driver (its Python, its JVM, its Python workers) in the middle of replacing a day: the table
    stays at its version with its rows, the catalog opens despite Derby's lock file, and the next run loads. While
    the driver lived, another was refused the catalog with a clear error."""
    warehouse = tmp_path / "warehouse"
    url = _url("local[2]", warehouse)
    first = _drive(url, [["create"], ["replace", DAY.isoformat(), 0, 5, 2], ["read", DAY.isoformat()]])
    version, rows = first["read"]["version"], first["read"]["rows"]
    assert [row[:4] for row in rows] == _expected(0, 5)

    table = warehouse / "callmart.db" / FACT.name
    day_folder = table / f"{FACT.time_column}_day={DAY.date()}"
    files, commits = _files(day_folder, "*.parquet"), _files(table / "_delta_log", "*.json")
    output = tmp_path / "killed.out"
    streaming = _url("local[2]", warehouse, **{"spark.sql.maxConcurrentOutputFileWriters": "2"})
    with output.open("wb") as out:
        driver = subprocess.Popen(
            # Two tasks of 20,000 rows at 50 ms a row: still writing long after it is killed. Its writers take rows
            # as they come rather than after sorting them all by day, so its files appear from the first rows on.
            _command(streaming, [["replace_slowly", DAY.isoformat(), 1000, 40_000]]),
            stdout=out,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=loopback_environment(),
        )
    try:
        # Under way: it said so, and its tasks' files are in the day's folder, none committed.
        _wait_for(
            lambda: _files(day_folder, "*.parquet") - files or driver.poll() is not None, "the write started", 600
        )
        assert driver.poll() is None, "the slow write ended before it could be killed"
        assert _said(output.read_text()) == {"replace_slowly": "started"}
        assert _files(table / "_delta_log", "*.json") == commits
        # Meanwhile another driver on the warehouse is told the catalog is in use, rather than Hive's trace.
        contender = subprocess.run(
            _command(url, [["read", DAY.isoformat()]]),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            env=loopback_environment(),
        )
        assert contender.returncode != 0
        assert "metastore_db, is open in another process" in contender.stderr.splitlines()[-1]
        assert driver.poll() is None and _files(table / "_delta_log", "*.json") == commits
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    assert _files(day_folder, "*.parquet") - files, "the killed write left its files"
    assert (warehouse / "metastore_db" / "db.lck").exists(), "Derby's lock file outlives the killed driver"

    after = _drive(
        url,
        [
            ["read", DAY.isoformat()],
            ["replace", DAY.isoformat(), 500, 3, 2],
            ["read_again", DAY.isoformat()],
        ],
    )
    assert after["read"] == {"version": version, "rows": rows}
    assert after["read_again"]["version"] == version + 1
    assert [row[:4] for row in after["read_again"]["rows"]] == _expected(500, 3)
