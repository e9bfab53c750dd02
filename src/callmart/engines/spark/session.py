"""The Spark session a URL names: a local one with Delta, the one the process has, or one of Spark Connect.

Only the DataFrame, SQL and catalog APIs are used from here on (no SparkContext, no JVM gateway), so that the same
code runs on a local session, through Spark Connect and on Databricks serverless."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..._errors import ConfigError
from .jars import delta_jars
from .sql import bind_values
from .url import Kind, SparkUrl

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["DELTA_CATALOG", "DELTA_EXTENSION", "open_session"]

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
WAREHOUSE = "spark.sql.warehouse.dir"


def open_session(url: SparkUrl) -> SparkSession:
    """The session the URL names; a classic one binds values to SQL markers (sql.bind_values)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("Spark is not installed: pip install 'callmart[spark]'") from None
    if url.kind is Kind.LOCAL:
        spark = _local(SparkSession, url)
    elif url.kind is Kind.ACTIVE:
        active = SparkSession.getActiveSession()
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


def _local(session: type[SparkSession], url: SparkUrl) -> SparkSession:
    """A local session with Delta; its catalog (a Derby metastore) lives in the warehouse folder beside the tables,
    so that the next process finds the mart this one made. One process holds a local warehouse at a time."""
    assert url.master is not None and url.warehouse is not None
    warehouse = url.warehouse
    settings = {
        "spark.jars": ",".join(str(jar) for jar in delta_jars()),
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        WAREHOUSE: str(warehouse),
        "spark.sql.catalogImplementation": "hive",
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={warehouse / 'metastore_db'};create=true"
        ),
        # Derby's log goes to the warehouse rather than the working folder.
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={warehouse}",
        # A library does not draw progress bars on the caller's terminal.
        "spark.ui.showConsoleProgress": "false",
        **url.conf,
    }
    builder = session.builder.master(url.master).appName("callmart")
    for key, value in settings.items():
        builder = builder.config(key, value)
    warehouse.mkdir(parents=True, exist_ok=True)
    spark = builder.getOrCreate()
    # A process runs one local session: asked for another warehouse, getOrCreate hands back the one it has.
    running = Path(str(spark.conf.get(WAREHOUSE, "")).removeprefix("file:"))
    if running != warehouse:
        raise ConfigError(
            f"this process already runs a local Spark session on {running}; a process keeps one local session, "
            f"so open {warehouse} in another process"
        )
    return spark
