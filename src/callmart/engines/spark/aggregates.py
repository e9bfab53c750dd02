"""The conversion aggregates (declared in aggregates.py) on Delta: the parts of each group of the days a run touched
summed on the executors, the measures made from them on the driver by the same declarations as on SQL engines (a
day has a few thousand groups at most), and each aggregate table's days replaced in one commit."""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa

from ...aggregates import (
    AGENT,
    AGG_DAILY,
    AGGREGATES,
    CAMPAIGN,
    COUNT,
    LOGIN_CHANNEL,
    POSITIVE,
    ROWS,
    SUM,
    THRESHOLD,
    TOTAL_SECONDS,
    WINDOW,
    Aggregate,
    Calls,
    Part,
    Settings,
    aggregate_rows,
    conversion_fact,
    conversion_metric,
    day_ranges,
    midnight,
)
from ...declare import UNKNOWN, Mart
from ...lift import affected_days
from .chains import side_by_side
from .control import rows_frame, with_retries
from .replace import span, wall_clock
from .sql import qualified
from .tables import fact_day_column
from .url import SparkUrl

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = ["AggregateDays", "fact_days", "of_settings", "refresh_aggregates", "write_days"]

_MICROS = 1_000_000


class AggregateDays:
    """The days whose aggregates, and whose lift, a run may have changed: those of the periods it loaded (and, for
    the lift, the days their calls count in), and those whose calls could meet the events (logins) that changed."""

    def __init__(self, window: timedelta) -> None:
        self.window = window
        self.days: set[date] = set()
        self.lift_days: set[date] = set()

    def add_period(self, start: datetime, end: datetime) -> None:
        """A loaded period [start, end)."""
        self.days.update(_days(start.date(), (end - timedelta(microseconds=1)).date()))
        self.lift_days.update(affected_days(start, end, self.window))

    def add_events(self, first: datetime, last: datetime) -> None:
        """Events of [first, last] that changed: a call meets an event in [its time, its time + window), and a
        day's customers not called meet one in [its midnight, midnight + window): the same days."""
        reached = _days((first - self.window).date(), last.date())
        self.days.update(reached)
        self.lift_days.update(reached)


def _days(first: date, last: date) -> list[date]:
    """Every day from first to last, both included."""
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def refresh_aggregates(
    spark: SparkSession,
    mart: Mart,
    url: SparkUrl,
    tables: Mapping[str, sa.Table],
    settings: Settings,
    touched: AggregateDays,
    at: datetime,
) -> list[date]:
    """Recompute the aggregates of the days touched, for these settings; every day of the fact table when none
    is stored for them yet (a new mart, changed parameters). The days computed."""

    daily = qualified(url.catalog, url.database, AGG_DAILY)
    stored = spark.table(daily).where(of_settings(settings))
    days = sorted(touched.days) if not stored.isEmpty() else fact_days(spark, mart, url, tables)
    if not days:
        return days
    ranges = day_ranges(days)
    calls = _calls(spark, mart, url, tables, ranges)

    def refresh(aggregate: Aggregate) -> None:
        groups = [row.asDict() for row in _parts(calls, aggregate, settings).collect()]
        rows = aggregate_rows(aggregate, settings, groups, at)
        name = qualified(url.catalog, url.database, aggregate.name)
        write_days(spark, tables[aggregate.name], name, settings, ranges, rows)

    # One table's job and commit beside the other's.
    side_by_side([functools.partial(refresh, aggregate) for aggregate in AGGREGATES])
    return days


def write_days(
    spark: SparkSession,
    table: sa.Table,
    name: str,
    settings: Settings,
    ranges: list[tuple[date, date]],
    rows: list[dict[str, Any]],
) -> None:
    """The rows of the table (`name`: qualified) of the day ranges, for these settings, replaced by `rows` in one
    commit."""
    from pyspark.sql import functions as F

    frame = rows_frame(spark, table, rows)
    days = functools.reduce(
        operator.or_, ((F.col("dia") >= F.lit(start)) & (F.col("dia") < F.lit(end)) for start, end in ranges)
    )
    these = of_settings(settings) & days
    with_retries(functools.partial(_replace_days, frame, name, these), f"writing {table.name}")


def _replace_days(rows: DataFrame, name: str, days: Column) -> None:
    """The rows in place of the table's rows of those days, in one commit."""
    rows.writeTo(name).overwrite(days)


def of_settings(settings: Settings) -> Column:
    from pyspark.sql import functions as F

    return (F.col(THRESHOLD) == F.lit(settings.threshold)) & (F.col(WINDOW) == F.lit(settings.window_seconds))


def fact_days(spark: SparkSession, mart: Mart, url: SparkUrl, tables: Mapping[str, sa.Table]) -> list[date]:
    """The days of the fact table's calls."""

    fact = conversion_fact(mart)
    day = fact_day_column(tables[fact.name])
    found = spark.table(qualified(url.catalog, url.database, fact.name)).select(day).distinct().collect()
    return sorted(row[0] for row in found if row[0] is not None)


def _calls(
    spark: SparkSession, mart: Mart, url: SparkUrl, tables: Mapping[str, sa.Table], ranges: Iterable[tuple[date, date]]
) -> DataFrame:
    """The per-call inputs of the measures (aggregates.Calls' fields), for the calls of the day ranges."""
    from pyspark.sql import functions as F

    metric = conversion_metric(mart)
    fact = conversion_fact(mart)
    logins = mart.dimension(metric.events)
    day = fact_day_column(tables[fact.name])
    ranges = list(ranges)
    in_days = functools.reduce(
        operator.or_, (span(metric.fact_time, day, midnight(start), midnight(end)) for start, end in ranges)
    )
    calls = spark.table(qualified(url.catalog, url.database, fact.name)).where(in_days).alias("c")
    # A call's login is at or after the call: no login before the first day can be one.
    first = midnight(min(start for start, _ in ranges))
    events = spark.table(qualified(url.catalog, url.database, logins.name))
    events = events.where(F.col(metric.event_time) >= wall_clock(first)).alias("e")
    call_time, login_time = F.col(f"c.{metric.fact_time}"), F.col(f"e.{metric.event_time}")
    joined = calls.join(events, F.col(f"c.{metric.column}") == F.col(f"e.{logins.key}"), "left")
    return joined.select(
        F.to_date(call_time).alias("day"),
        F.coalesce(F.col(f"c.{CAMPAIGN}"), F.lit(UNKNOWN)).alias("campaign"),
        F.col(f"c.{AGENT}").alias("agent"),
        F.col(f"e.{LOGIN_CHANNEL}").alias("channel"),
        F.col(f"c.{metric.threshold_column}").alias("talk"),
        F.col(f"c.{TOTAL_SECONDS}").alias("total"),
        F.col(f"c.{metric.column}").alias("login"),
        (F.timestamp_diff("MICROSECOND", call_time, login_time) / F.lit(_MICROS)).alias("to_login"),
    )


def _parts(calls: DataFrame, aggregate: Aggregate, settings: Settings) -> DataFrame:
    """The parts of the aggregate's groups, named as its grain and its parts."""
    from pyspark.sql import functions as F

    # The grain's values are read from a Calls by attribute: Spark columns in its fields give Spark's values.
    c = cast(Any, Calls)(*(F.col(name) for name in Calls._fields[:-1]), F.lit(settings.threshold))
    rows = calls.where(F.col("login").isNotNull()) if aggregate.converted_only else calls
    grain = [cast("Column", g.of(c)).alias(g.name) for g in aggregate.grain]
    return rows.groupBy(*grain).agg(*(_part(p, c).alias(p.name) for p in aggregate.parts))


def _part(part: Part, c: Any) -> Column:
    """The part's Spark aggregate over a group's calls, a whole number as on SQL engines."""
    from pyspark.sql import functions as F

    if part.kind == ROWS:
        return F.count(F.lit(1))
    value = getattr(c, part.of)
    if part.kind == COUNT:
        return F.count(value)
    if part.kind == SUM:
        return F.round(F.sum(value)).cast("bigint")
    met = value > F.lit(0) if part.kind == POSITIVE else value >= c.threshold
    return F.sum(F.when(met, 1).otherwise(0)).cast("bigint")
