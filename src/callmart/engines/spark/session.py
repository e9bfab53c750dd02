"""The Spark session a URL names: one with Delta that callmart starts (local, or on a standalone cluster), the one
the process has, or one of Spark Connect.

Only the DataFrame, SQL and catalog APIs are used from here on (no SparkContext, no JVM gateway), so that the same
code runs on a local session, through Spark Connect and on Databricks serverless."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..._errors import ConfigError
from .jars import delta_jars
from .sql import bind_values
from .url import Kind, SparkUrl

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["DELTA_CATALOG", "DELTA_EXTENSION", "METASTORE", "held_elsewhere", "open_session", "session_settings"]

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
WAREHOUSE = "spark.sql.warehouse.dir"
JARS = "spark.jars"
DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"
PYSPARK_PYTHON = "PYSPARK_PYTHON"
DATABRICKS_RUNTIME = "DATABRICKS_RUNTIME_VERSION"
"""Set in every process of a Databricks cluster."""
METASTORE = "metastore_db"
"""The folder of the warehouse that holds its catalog, a Derby database."""


def open_session(url: SparkUrl) -> SparkSession:
    """The session the URL names; a classic one binds values to SQL markers (sql.bind_values)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("Spark is not installed: pip install 'callmart[spark]'") from None
    if url.kind in (Kind.LOCAL, Kind.STANDALONE):
        spark = _started(SparkSession, url)
    elif url.kind is Kind.ACTIVE:
        active = SparkSession.getActiveSession()
        if active is None and os.environ.get(DATABRICKS_RUNTIME):
            # A job's Python task on Databricks has the cluster's session to take, not always made active yet.
            active = SparkSession.builder.getOrCreate()
        if active is None:
            raise ConfigError(
                "spark:// uses the Spark session the process already has, and it has none: on Databricks run "
                "callmart in the job or notebook; elsewhere use spark://local[N]?warehouse=PATH or sc://HOST:PORT"
            )
        spark = active
    else:
        assert url.remote is not None
        try:
            spark = SparkSession.builder.remote(url.remote).getOrCreate()
        except ImportError as error:
            raise ConfigError(
                f"Spark Connect's client is not installed ({error}): pip install 'callmart[spark]'"
            ) from None
        except Exception as error:
            if "SESSION_ALREADY_EXIST" not in str(error):
                raise
            raise ConfigError(
                f"this process runs a local Spark session already: open {url.shown} in another process"
            ) from None
    bind_values(spark)
    return spark


def _started(session: type[SparkSession], url: SparkUrl) -> SparkSession:
    """A session with Delta, local or on a standalone cluster; its catalog (a Derby metastore) lives in the
    warehouse folder beside the tables, so that the next process finds the mart this one made. One process holds a
    warehouse at a time: another one's is a ConfigError."""
    assert url.master is not None and url.warehouse is not None
    warehouse = url.warehouse
    builder = session.builder.master(url.master).appName("callmart")
    for key, value in session_settings(url).items():
        builder = builder.config(key, value)
    warehouse.mkdir(parents=True, exist_ok=True)
    with _python_workers(url):
        spark = builder.getOrCreate()
    # A process runs one such session: asked for another warehouse or cluster, getOrCreate hands back the one it has.
    running = Path(str(spark.conf.get(WAREHOUSE, "")).removeprefix("file:"))
    master = str(spark.conf.get("spark.master", ""))
    same_master = master == url.master if url.kind is Kind.STANDALONE else master.startswith("local")
    if running != warehouse or not same_master:
        raise ConfigError(
            f"this process already runs a Spark session on {running} (master {master}); a process keeps one such "
            f"session, so open {url.shown} in another process"
        )
    _open_catalog(spark, warehouse)
    return spark


def _open_catalog(spark: SparkSession, warehouse: Path) -> None:
    """Open the catalog now, so that one another process holds is a clear error rather than Hive's long trace."""
    try:
        spark.catalog.databaseExists("default")
    except Exception:  # noqa: BLE001 - pyspark raises its own classes; only the lock's case is told apart
        if not held_elsewhere(warehouse / METASTORE):
            raise
        raise ConfigError(
            f"the mart's catalog, {warehouse / METASTORE}, is open in another process: its Derby database takes "
            "one process at a time, so let that run end first (a process that was killed leaves nothing in the way)"
        ) from None


def held_elsewhere(metastore: Path) -> bool:
    """Whether a live process has the Derby database open: Derby holds an OS lock on its dbex.lck while it does.
    Its db.lck file outlives a killed process and means nothing alone, so it is not read."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): Derby's own error stands
        return False
    lock = metastore / "dbex.lck"
    if not lock.exists():
        return False
    with lock.open("rb+") as file:
        try:
            fcntl.lockf(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(file, fcntl.LOCK_UN)
    return False


def session_settings(url: SparkUrl) -> dict[str, str]:
    """The session's Spark settings: Delta's, the catalog's in the warehouse, then the URL's. Jars and the driver's
    Java options the URL names are added to callmart's rather than put in their place, so Delta stays loaded.

    Spark ships the jars of spark.jars from the driver to every executor (standalone ones too) before their first
    task, so the executors that write the tables' files have Delta's classes without any install on the workers."""
    assert url.warehouse is not None
    warehouse = url.warehouse
    conf = dict(url.conf)
    jars = [str(jar) for jar in delta_jars()]
    java_options = [f"-Dderby.system.home={warehouse}"]
    return {
        JARS: ",".join([*jars, *_given(conf.pop(JARS, ""), ",")]),
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        WAREHOUSE: str(warehouse),
        "spark.sql.catalogImplementation": "hive",
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={warehouse / METASTORE};create=true"
        ),
        # Derby's log goes to the warehouse rather than the working folder.
        DRIVER_JAVA_OPTIONS: " ".join([*java_options, *_given(conf.pop(DRIVER_JAVA_OPTIONS, ""), " ")]),
        # A library does not draw progress bars on the caller's terminal.
        "spark.ui.showConsoleProgress": "false",
        **conf,
    }


@contextmanager
def _python_workers(url: SparkUrl) -> Iterator[None]:
    """While a local session starts, PYSPARK_PYTHON names this interpreter, which has callmart: pyspark reads it
    once, when the session's context is made, as the command its Python workers run (else the PATH's python3).
    The caller's own setting wins, and the process's environment is as it was afterwards. A cluster's workers keep
    their own interpreter."""
    if url.kind is not Kind.LOCAL or PYSPARK_PYTHON in os.environ:
        yield
        return
    os.environ[PYSPARK_PYTHON] = sys.executable
    try:
        yield
    finally:
        os.environ.pop(PYSPARK_PYTHON, None)


def _given(value: str, separator: str) -> list[str]:
    return [part for part in value.split(separator) if part.strip()]
