"""What each dimension was last merged from (dm_sources), so that a run skips a dimension whose extract and rules
have not changed, as fingerprint.py does on SQL engines. The digest itself is the caller's (fingerprint.fingerprint)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from .control import rows_frame, with_retries
from .sql import insert_clause, quote, sql, temporary_view

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["is_current", "remember"]


def is_current(spark: SparkSession, name: str, table_name: str, digest: str) -> bool:
    """Whether the dimension `table_name` was last merged from exactly the sources of `digest`."""
    from pyspark.sql.functions import col, lit

    found = spark.table(name).where(col("table_name") == lit(table_name)).select("fingerprint").collect()
    return [row["fingerprint"] for row in found] == [digest]


def remember(spark: SparkSession, table: sa.Table, name: str, table_name: str, digest: str, id_run: int) -> None:
    """Record what the dimension was merged from, in one commit (after the merge's: a crash between them merges
    the same extract again next time, which changes nothing)."""
    row = {"table_name": table_name, "fingerprint": digest, "id_run": id_run, "loaded_at": datetime.now()}
    frame = rows_frame(spark, table, [row])
    columns = [c.name for c in table.columns]
    assignments = ", ".join(f"{quote(c)} = s.{quote(c)}" for c in columns if c != "table_name")

    def attempt() -> None:
        with temporary_view(spark, frame) as view:
            sql(
                spark,
                f"MERGE INTO {name} AS t USING {view} AS s ON t.{quote('table_name')} = s.{quote('table_name')} "
                f"WHEN MATCHED THEN UPDATE SET {assignments} WHEN NOT MATCHED THEN INSERT {insert_clause(columns)}",
            ).collect()

    with_retries(attempt, f"recording the sources of {table_name}")
