"""A metric kept right when its events arrive late: after a merge of the events' dimension (logins) changed it, the
metric of the fact rows those events can reach is computed again and written where it differs, as
metric.refresh_after_events does on SQL engines.

What changed is read from Delta itself: the events' table at its version before the merge against its rows after
it (rows added, and rows replaced, whose old time the window must reach as well)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from ...declare import Fact, FirstEventWithin, Mart
from .control import with_retries
from .facts import with_metric
from .replace import wall_clock
from .sql import quote, sql, temporary_view
from .url import SparkUrl

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["changed_since", "refresh_metric", "table_version"]


def table_version(spark: SparkSession, name: str) -> int:
    """The Delta table's current version."""
    latest = spark.sql(f"DESCRIBE HISTORY {name} LIMIT 1").first()
    return int(latest["version"]) if latest is not None else 0


def changed_since(spark: SparkSession, name: str, version: int, columns: list[str]) -> DataFrame:
    """The rows of `columns` that the table gained or lost since `version`."""
    before = spark.read.option("versionAsOf", version).table(name).select(*columns)
    after = spark.table(name).select(*columns)
    return after.exceptAll(before).unionByName(before.exceptAll(after))


def refresh_metric(
    spark: SparkSession, mart: Mart, fact: Fact, url: SparkUrl, name: str, metric: FirstEventWithin, events: DataFrame
) -> int:
    """Compute the metric again for the fact rows (of table `name`) that `events`, the events that changed, can
    reach: those of their window before them; write it where it differs. How many rows changed."""
    from pyspark.sql import functions as F

    bounds = events.select(F.min(metric.event_time), F.max(metric.event_time)).first()
    if bounds is None or bounds[0] is None:
        return 0
    first, last = bounds[0], bounds[1]
    time = F.col(metric.fact_time)
    reached = (time > wall_clock(first - metric.window)) & (time <= wall_clock(last))
    rows = spark.table(name).where(reached).drop(metric.column)
    # The events of [start, end + window) reach every row of (first - window, last].
    start, end = first - metric.window, last + timedelta(microseconds=1)
    fresh = with_metric(spark, mart, url, rows, fact, metric, start, end).select(fact.key, metric.column)
    key, column = quote(fact.key), quote(metric.column)

    def attempt() -> int:
        with temporary_view(spark, fresh) as view:
            done = sql(
                spark,
                f"MERGE INTO {name} AS t USING {view} AS s ON t.{key} = s.{key} "
                f"WHEN MATCHED AND NOT (t.{column} <=> s.{column}) THEN UPDATE SET {column} = s.{column}",
            ).first()
        return int(done["num_updated_rows"]) if done else 0

    return with_retries(attempt, f"refreshing {metric.column} of {fact.name}")
