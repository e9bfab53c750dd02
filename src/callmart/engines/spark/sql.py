"""Statements to a Spark session: SQL text is code (keywords, and identifiers quoted by one helper); values never
go into it.

Values enter as data instead: typed literals in DataFrame expressions (`lit(value)` in a filter, a write's
overwrite condition, a merge's condition), or rows of a small DataFrame that a statement reads as a view. That
works the same on a local session, through Spark Connect and on Databricks. Spark's own binding of values to
markers (`spark.sql(text, args={...})`, `:name`) is the other way, and `sql` takes values for it; but since Spark
4.1 moved the binding into a pass before its parser, Delta's SQL parser drops them (delta-io/delta#7640,
SPARK-59672): with Delta's extension, markers arrive unbound. In a classic session Spark's former binding, during
analysis, still works (`bind_values` turns it on where needed); it binds markers wherever an expression takes a
literal, not in DDL clauses such as COMMENT. Through Spark Connect no setting helps. So callmart's statements
carry no values: DDL holds identifiers and types, and comments go in through the DataFrame and catalog APIs (a
schema's field metadata, a table's description)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "LEGACY_BINDING",
    "bind_values",
    "qualified",
    "quote",
    "insert_clause",
    "insert_missing",
    "sql",
    "temporary_view",
]

LEGACY_BINDING = "spark.sql.legacy.parameterSubstitution.constantsOnly"
"""Spark's setting for binding values during analysis (its behaviour before 4.1)."""
_UNBOUND = "UNBOUND_SQL_PARAMETER"


def quote(identifier: str) -> str:
    """An identifier as Spark SQL reads it whatever it holds: in backticks, a backtick doubled."""
    return "`" + identifier.replace("`", "``") + "`"


def qualified(*parts: str | None) -> str:
    """A multi-part name (catalog, database, table), each part quoted; parts that are None are left out."""
    return ".".join(quote(part) for part in parts if part is not None)


def sql(spark: SparkSession, text: str, **values: Any) -> DataFrame:
    """Run a statement: `text` is code, never data; values, if any, are bound to its `:name` markers."""
    return spark.sql(text, args=values or None)


def bind_values(spark: SparkSession) -> bool:
    """Make values bound to markers work in a classic session: where Spark's parser pass binds none (Delta's
    parser is in the way), bind them during analysis instead. Return whether the session binds them now; a Spark
    Connect session is not asked (no setting of its server changes how it binds)."""
    if type(spark).__module__.startswith("pyspark.sql.connect"):
        return False
    if _binds(spark):
        return True
    spark.conf.set(LEGACY_BINDING, "true")
    return _binds(spark)


def _binds(spark: SparkSession) -> bool:
    try:
        with _quiet(_QUERY_LOGGER):
            row = spark.sql("SELECT :callmart_probe AS bound", args={"callmart_probe": 1}).first()
    except Exception as error:  # noqa: BLE001 - pyspark raises its own classes, classic and Connect alike
        if _UNBOUND in str(error):
            return False
        raise
    return row is not None and row["bound"] == 1


_QUERY_LOGGER = "SQLQueryContextLogger"
"""pyspark's logger of failed statements, which writes each one's whole stack trace to standard error."""


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Within the block, the logger reports nothing below CRITICAL: a probe's expected failure is no error."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def temporary_view(spark: SparkSession, frame: DataFrame) -> Iterator[str]:
    """The DataFrame as a temporary view of a name of its own (threads of a session share its views), quoted,
    dropped after the block: how values reach a statement."""
    name = f"callmart_source_{uuid.uuid4().hex}"
    frame.createOrReplaceTempView(name)
    try:
        yield quote(name)
    finally:
        spark.catalog.dropTempView(name)


def insert_clause(columns: Iterable[str]) -> str:
    """The INSERT clause of a MERGE that inserts the columns from the source's same-named ones."""
    quoted = [quote(c) for c in columns]
    return f"({', '.join(quoted)}) VALUES ({', '.join('s.' + c for c in quoted)})"


def insert_missing(spark: SparkSession, name: str, rows: DataFrame, on: str, columns: Iterable[str]) -> int:
    """Insert the rows whose `on` the table lacks, by one insert-only MERGE (so two writers insert a row once);
    how many went in."""
    with temporary_view(spark, rows) as view:
        done = sql(
            spark,
            f"MERGE INTO {name} AS t USING {view} AS s ON t.{quote(on)} = s.{quote(on)} "
            f"WHEN NOT MATCHED THEN INSERT {insert_clause(columns)}",
        ).first()
    return int(done["num_inserted_rows"]) if done else 0
