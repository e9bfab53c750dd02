"""What each dimension was last merged from (dm_sources), so that a run skips a dimension whose extract and rules
have not changed, as fingerprint.py does on SQL engines. The digest itself is the caller's (fingerprint.fingerprint)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from .control import rows_frame, with_retries
from .sql import insert_clause, quote, sql, temporary_view

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["merged_from", "remember"]


def merged_from(spark: SparkSession, name: str) -> dict[str, str]:
    """The digest of the sources each dimension was last merged from, by table name: one read for a run."""
    return {
        row["table_name"]: row["fingerprint"] for row in spark.table(name).select("table_name", "fingerprint").collect()
    }


def remember(spark: SparkSession, table: sa.Table, name: str, digests: Mapping[str, str], id_run: int) -> None:
    """Record what the dimensions were merged from (digests by table name), in one commit after their merges' (a
    crash between them merges the same extracts again next time, which changes nothing)."""
    if not digests:
        return
    loaded_at = datetime.now()
    rows = [
        {"table_name": table_name, "fingerprint": digest, "id_run": id_run, "loaded_at": loaded_at}
        for table_name, digest in digests.items()
    ]
    frame = rows_frame(spark, table, rows)
    columns = [c.name for c in table.columns]
    assignments = ", ".join(f"{quote(c)} = s.{quote(c)}" for c in columns if c != "table_name")

    def attempt() -> None:
        with temporary_view(spark, frame) as view:
            sql(
                spark,
                f"MERGE INTO {name} AS t USING {view} AS s ON t.{quote('table_name')} = s.{quote('table_name')} "
                f"WHEN MATCHED THEN UPDATE SET {assignments} WHEN NOT MATCHED THEN INSERT {insert_clause(columns)}",
            ).collect()

    with_retries(attempt, f"recording the sources of {', '.join(digests)}")
