"""A metric kept right when its events arrive late: after a merge of the events' dimension (logins) changed it, the
metric of the fact rows those events can reach is computed again and written where it differs, as
metric.refresh_after_events does on SQL engines.

What changed is read from Delta itself: the events' table at its version before the merge against its rows after
it (rows added, and rows replaced, whose old time the window must reach as well)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ...declare import Fact, FirstEventWithin, Mart
from .control import with_retries
from .facts import with_metric
from .replace import span
from .url import SparkUrl

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["changed_since", "event_span", "refresh_metric", "table_version"]

_KEY, _NEW, _OLD = "callmart_key", "callmart_new", "callmart_old"


def table_version(spark: SparkSession, name: str) -> int:
    """The Delta table's current version."""
    latest = spark.sql(f"DESCRIBE HISTORY {name} LIMIT 1").first()
    return int(latest["version"]) if latest is not None else 0


def changed_since(spark: SparkSession, name: str, version: int, columns: list[str]) -> DataFrame:
    """The rows of `columns` that the table gained or lost since `version`."""
    before = spark.read.option("versionAsOf", version).table(name).select(*columns)
    after = spark.table(name).select(*columns)
    return after.exceptAll(before).unionByName(before.exceptAll(after))


def event_span(events: DataFrame, column: str) -> tuple[datetime, datetime] | None:
    """The first and last time of `column` among the events, None when there are none."""
    from pyspark.sql import functions as F

    bounds = events.select(F.min(column), F.max(column)).first()
    return None if bounds is None or bounds[0] is None else (bounds[0], bounds[1])


def refresh_metric(
    spark: SparkSession,
    mart: Mart,
    fact: Fact,
    url: SparkUrl,
    table: tuple[str, str],
    metric: FirstEventWithin,
    first: datetime,
    last: datetime,
) -> int:
    """Compute the metric again for the fact rows (of `table`: its qualified name and day column) that the events
    that changed, of times in [first, last], can reach: those of their window before them; write it where it
    differs, in one MERGE that reads and rewrites only the days reached (none when nothing differs). How many rows
    changed."""
    from pyspark.sql import functions as F

    name, day = table
    # The rows of (first - window, last]: times are whole microseconds, so [first - window + 1 µs, last + 1 µs).
    tick = timedelta(microseconds=1)
    reached = span(metric.fact_time, day, first - metric.window + tick, last + tick)
    # The events of [start, end + window) reach every row of (first - window, last].
    start, end = first - metric.window, last + tick

    def attempt() -> int:
        rows = spark.table(name).where(reached)
        fresh = with_metric(spark, mart, url, rows.drop(metric.column), fact, metric, start, end)
        old = rows.select(F.col(fact.key).alias(_KEY), F.col(metric.column).alias(_OLD))
        changed = (
            fresh.select(F.col(fact.key).alias(_KEY), F.col(metric.column).alias(_NEW))
            .join(old, _KEY)
            .where(~F.col(_NEW).eqNullSafe(F.col(_OLD)))
            .drop(_OLD)
        )
        count = int(changed.count())
        if count:
            # The source's columns have names of their own, so that the condition's names are the target's.
            (
                changed.mergeInto(name, (F.col(fact.key) == F.col(_KEY)) & reached)
                .whenMatched(~F.col(metric.column).eqNullSafe(F.col(_NEW)))
                .update({metric.column: F.col(_NEW)})
                .merge()
            )
        return count

    return with_retries(attempt, f"refreshing {metric.column} of {fact.name}")
