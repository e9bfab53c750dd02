"""Spark: the mart as Delta tables, loaded through a Spark session (local, a Databricks job's, or Spark Connect).

The engine opens its session from a URL (url.py, session.py), fetches Delta's jars for a local session (jars.py),
creates the declared mart as Delta tables (tables.py), and runs the mart's operations itself (mart.py: the API
hands them over, Engine.OWN_OPERATIONS): loads (load.py and the steps it composes), the control table and the run
log. docs/spark.md tells the design. Importing this package does not import pyspark: its modules import it where
they use it, so the core install stays free of Spark."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa

from ..._errors import ConfigError
from ..base import Engine, MartOperations
from ..hints import PARTITIONED_BY_DAY
from .replace import replace_period
from .session import open_session
from .sql import qualified
from .tables import Changes, create_tables, fact_day_column
from .url import DEFAULT_DATABASE, SCHEMES, SparkUrl

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["Spark", "SparkUrl"]


class Spark(Engine):
    """Spark with Delta Lake: tables in a catalog, each change a commit of Delta's log, no transaction spanning
    statements; generic code reaches it through a session rather than a SQLAlchemy connection."""

    NAME = "Spark"
    # No SQLAlchemy dialect: statements go through the session's SQL and DataFrame APIs.
    DIALECT = ""
    SCHEMES: ClassVar[frozenset[str]] = SCHEMES
    # The database of the mart unless the URL names one (?database=…).
    DEDICATED_SCHEMA: ClassVar[str | None] = DEFAULT_DATABASE
    OWN_OPERATIONS: ClassVar[bool] = True

    def parse(self, text: str) -> SparkUrl:
        """What a Spark URL names; an error naming what is wrong, never echoing the URL."""
        return SparkUrl.parse(text)

    def url(self, url: sa.URL) -> sa.URL:
        self.parse(url.render_as_string(hide_password=False))
        return url

    def shown(self, url: sa.URL) -> str:
        try:
            parsed = self.parse(url.render_as_string(hide_password=False))
            return f"{parsed.shown} (database {parsed.database})"
        except ConfigError:
            return f"{url.drivername}://…"

    def create_engine(self, url: sa.URL) -> sa.Engine:
        raise ConfigError(f"{self.NAME} is reached through a Spark session (open_session), not a SQLAlchemy engine")

    def open_mart(
        self,
        url: sa.URL,
        tables: Mapping[str, sa.Table],
        mart: Any,
        reading: tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]],
    ) -> MartOperations:
        from .mart import SparkMart

        return SparkMart(self.parse(url.render_as_string(hide_password=False)), tables, mart, *reading)

    def open_session(self, url: SparkUrl | str) -> SparkSession:
        """The session the URL names, ready for callmart's statements."""
        return open_session(url if isinstance(url, SparkUrl) else self.parse(url))

    def create_tables(self, spark: SparkSession, tables: Iterable[sa.Table], url: SparkUrl) -> Changes:
        """Create the mart's tables as Delta tables in the URL's database, and add the columns existing ones lack."""
        return create_tables(spark, tables, url.database, url.catalog)

    def replace_period(self, rows: DataFrame, table: sa.Table, url: SparkUrl, start: datetime, end: datetime) -> None:
        """Put `rows` in place of the rows of [start, end) of a fact table, in one Delta commit."""
        day = fact_day_column(table)
        name = qualified(url.catalog, url.database, table.name)
        replace_period(rows, name, table.info[PARTITIONED_BY_DAY], day, start, end)
