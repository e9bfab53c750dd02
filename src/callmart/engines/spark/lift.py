"""The lift aggregates (declared in lift.py) on Delta: the calls counted per day, campaign and agent and the
customers not called counted per day on the executors, as lift_analytics counts them in SQL; the rates, lifts and
intervals made from those counts on the driver by the same declarations (a day has a few thousand groups at most),
and each lift table's days replaced in one commit."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from functools import partial, reduce
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ...aggregates import AGENT, CAMPAIGN, Settings, conversion_fact, conversion_metric, day_ranges, midnight
from ...declare import DEFAULT_MEMBER_ID, UNKNOWN, FirstEventWithin, Mart
from ...lift import (
    AGG_LIFT_DAILY,
    CUSTOMERS,
    EFFECTIVE_CALLS,
    LIFTS,
    SHORT_CALLS,
    days_spanned,
    groups_table,
    lift_rebased_days,
    lift_rows_of,
)
from .aggregates import fact_days, of_settings, write_days
from .chains import side_by_side
from .facts import entity_dimension, entity_events, fact_entities, later, with_event
from .replace import span, wall_clock
from .sql import qualified
from .tables import fact_day_column
from .url import SparkUrl

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = ["rebase_lift", "refresh_lift"]

_SHORT = "callmart_short_"
"""Prefix of the short calls' grain columns while their conversions are joined to the other counts."""
_DAYS, _CALLED, _LOGGED = "callmart_days", "callmart_called", "callmart_logged"


@dataclasses.dataclass(frozen=True)
class _Lift:
    """Where the lift is read and written: the session, the mart's tables and the settings' metric."""

    spark: SparkSession
    mart: Mart
    url: SparkUrl
    tables: Mapping[str, sa.Table]
    settings: Settings

    @property
    def metric(self) -> FirstEventWithin:
        """The conversion metric as declared, with the settings' threshold and window."""
        declared = conversion_metric(self.mart)
        return dataclasses.replace(declared, threshold=self.settings.threshold, window=self.settings.window)

    def table(self, name: str) -> DataFrame:
        """The Delta table of the mart by that name."""
        return self.spark.table(qualified(self.url.catalog, self.url.database, name))


def refresh_lift(
    spark: SparkSession,
    mart: Mart,
    url: SparkUrl,
    tables: Mapping[str, sa.Table],
    settings: Settings,
    days: Iterable[date],
    at: datetime,
) -> list[date]:
    """Recompute the lift of these days for these settings; of every day of the fact table when none is stored
    for them yet. The days computed."""
    lift = _Lift(spark, mart, url, tables, settings)
    stored = not lift.table(AGG_LIFT_DAILY).where(of_settings(settings)).isEmpty()
    chosen = sorted(set(days)) if stored else fact_days(spark, mart, url, tables)
    if not chosen:
        return chosen
    ranges = day_ranges(chosen)
    counted: list[dict[str, Any]] = []
    for start, end in ranges:
        counted += [row.asDict() for row in _call_counts(lift, start, end).collect()]
    with_calls = day_ranges(row["dia"] for row in counted)
    # Only the days with calls have rows: a load's last days usually have none yet.
    present = _customers(lift) if counted else 0
    per_day = {day: found for start, end in with_calls for day, found in _not_called(lift, start, end).items()}
    rows = lift_rows_of(groups_table(counted, present, per_day), settings, at)
    side_by_side([partial(_write, lift, a.name, ranges, of_table) for a, of_table in zip(LIFTS, rows, strict=True)])
    return chosen


def rebase_lift(
    spark: SparkSession, mart: Mart, url: SparkUrl, tables: Mapping[str, sa.Table], settings: Settings, at: datetime
) -> None:
    """Bring the lift of days counted among another number of customers than the mart now holds to the present
    number, from their stored counts (lift_analytics.lift_rebased)."""
    from pyspark.sql import functions as F

    lift = _Lift(spark, mart, url, tables, settings)
    present = _customers(lift)
    stale_of = of_settings(settings) & (F.col(CUSTOMERS) != F.lit(present))
    # The three tables are written together, among the same customers: the daily table tells for all.
    if lift.table(AGG_LIFT_DAILY).where(stale_of).isEmpty():
        return

    def rebase(name: str) -> None:
        stale = [row.asDict() for row in lift.table(name).where(stale_of).orderBy("dia").collect()]
        found = lift_rebased_days(name, settings, stale, present, at)
        if found:
            _write(lift, name, [(start, end) for start, end, _ in found], [r for *_, rows in found for r in rows])

    # Three tables, one commit each: side by side, each its own read and write.
    side_by_side([partial(rebase, aggregate.name) for aggregate in LIFTS])


def _write(lift: _Lift, name: str, ranges: list[tuple[date, date]], rows: list[dict[str, Any]]) -> None:
    """The lift table's rows of the day ranges, for the settings, replaced by `rows` in one commit."""
    qualified_name = qualified(lift.url.catalog, lift.url.database, name)
    write_days(lift.spark, lift.tables[name], qualified_name, lift.settings, ranges, rows)


def _customers(lift: _Lift) -> int:
    """How many customers the mart holds: members of the customer dimension but the default member, each business
    id once (lift_analytics.customers)."""
    from pyspark.sql import functions as F

    dimension = entity_dimension(lift.mart, lift.metric)
    members = lift.table(dimension.name).where(F.col(dimension.key) != F.lit(DEFAULT_MEMBER_ID))
    if not dimension.keeps_history:
        return int(members.count())
    return int(members.select(dimension.business_key).distinct().count())


def _call_counts(lift: _Lift, start: date, end: date) -> DataFrame:
    """Per day, campaign and agent with calls in [start, end): the effective and the short calls to known
    customers, and how many of each converted (lift_analytics._call_counts)."""
    from pyspark.sql import functions as F

    metric, fact = lift.metric, conversion_fact(lift.mart)
    day = fact_day_column(lift.tables[fact.name])
    calls = lift.table(fact.name).where(span(metric.fact_time, day, midnight(start), midnight(end)))
    talk = F.col(metric.threshold_column)
    known = F.col(metric.fact_entity) != F.lit(DEFAULT_MEMBER_ID)
    effective = known & (talk >= F.lit(metric.threshold))
    short = known & (talk > F.lit(0)) & (talk < F.lit(metric.threshold))
    # A short call converts by the metric's own pairing, whatever its talk: whether a login pairs with it, not
    # which is first, so a semi-join; counted by group apart and joined to the groups' other counts.
    converted_shorts = with_event(
        lift.spark, lift.mart, lift.url, calls.where(short), metric, midnight(start), midnight(end)
    )
    grain = {
        "dia": F.to_date(metric.fact_time),
        CAMPAIGN: F.coalesce(F.col(CAMPAIGN), F.lit(UNKNOWN)),
        AGENT: F.col(AGENT),
    }
    counted = calls.groupBy(*(value.alias(name) for name, value in grain.items())).agg(
        _count_if(effective).alias(EFFECTIVE_CALLS.counted),
        _count_if(effective & F.col(metric.column).isNotNull()).alias(EFFECTIVE_CALLS.converted),
        _count_if(short).alias(SHORT_CALLS.share.counted),
    )
    converted = converted_shorts.groupBy(*(value.alias(f"{_SHORT}{name}") for name, value in grain.items())).agg(
        F.count(F.lit(1)).cast("bigint").alias(SHORT_CALLS.share.converted)
    )
    same_group = [F.col(name).eqNullSafe(F.col(f"{_SHORT}{name}")) for name in grain]
    return (
        counted.join(converted, reduce(operator.and_, same_group), "left")
        .drop(*(f"{_SHORT}{name}" for name in grain))
        .fillna(0, subset=[SHORT_CALLS.share.converted])
    )


def _count_if(condition: Column) -> Column:
    from pyspark.sql import functions as F

    return F.sum(F.when(condition, 1).otherwise(0)).cast("bigint")


def _not_called(lift: _Lift, start: date, end: date) -> dict[date, tuple[int, int]]:
    """Per day of [start, end): the customers called in the window before its midnight, and the customers not
    called who logged in within the window after it, each business id once (lift_analytics._not_called)."""
    from pyspark.sql import functions as F

    metric, fact = lift.metric, conversion_fact(lift.mart)
    window = metric.window
    micros = int(window.total_seconds() * 1_000_000)
    spanned = days_spanned(window)
    when = F.col(metric.fact_time)
    # A call at t is before day d's midnight and within the window of it when d's midnight is in (t, t + window]:
    # d from the day after t's to the day of t + window; each call is paired with those few days.
    day = fact_day_column(lift.tables[fact.name])
    calls = lift.table(fact.name).where(
        span(metric.fact_time, day, midnight(start) - window, midnight(end - timedelta(days=1)))
        & (F.col(metric.fact_entity) != F.lit(DEFAULT_MEMBER_ID))
    )
    called_day = F.date_add(F.to_date(when), F.col(_DAYS))
    called = (
        fact_entities(lift.spark, lift.mart, lift.url, metric, calls)
        .withColumn(_DAYS, F.explode(F.sequence(F.lit(1), F.lit(spanned))))
        .where(
            (called_day <= F.to_date(later(when, micros))) & (called_day >= F.lit(start)) & (called_day < F.lit(end))
        )
        .select(called_day.alias("dia"), "entity", F.lit(1).alias(_CALLED), F.lit(0).alias(_LOGGED))
    )
    # A login at t is within the window after day d's midnight when d is from the day after t - window's to t's.
    login = F.col(metric.event_time)
    logged_day = F.date_sub(F.to_date(login), F.col(_DAYS))
    logged = (
        entity_events(lift.spark, lift.mart, lift.url, metric)
        .where(
            (F.col("callmart_entity") != F.lit(DEFAULT_MEMBER_ID))
            & (login >= wall_clock(midnight(start)))
            & (login < wall_clock(midnight(end) + window))
        )
        .withColumn(_DAYS, F.explode(F.sequence(F.lit(0), F.lit(spanned - 1))))
        .where(
            (logged_day > F.to_date(later(login, -micros))) & (logged_day >= F.lit(start)) & (logged_day < F.lit(end))
        )
        .select(logged_day.alias("dia"), F.col("callmart_entity").alias("entity"))
        .select("dia", "entity", F.lit(0).alias(_CALLED), F.lit(1).alias(_LOGGED))
    )
    # Each customer once a day, whether called and whether logged in; then the day's counts, in one job.
    customers = (
        called.unionByName(logged)
        .groupBy("dia", "entity")
        .agg(F.max(_CALLED).alias(_CALLED), F.max(_LOGGED).alias(_LOGGED))
    )
    not_called_logged = (F.col(_LOGGED) == F.lit(1)) & (F.col(_CALLED) == F.lit(0))
    per_day = customers.groupBy("dia").agg(
        F.sum(_CALLED).alias("called"), F.sum(F.when(not_called_logged, 1).otherwise(0)).alias("converted")
    )
    return {row["dia"]: (int(row["called"]), int(row["converted"])) for row in per_day.collect()}
