"""The lift aggregates (declared in lift.py) counted by the database for a span of days: effective and short calls
per day, campaign and agent, and the customers not called per day; the rates and intervals follow from the counts."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from . import engines
from .aggregates import (
    THRESHOLD,
    WINDOW,
    Settings,
    conversion_fact,
    conversion_metric,
    grain_values,
    midnight,
)
from .declare import DEFAULT_MEMBER_ID, FirstEventWithin
from .lift import (
    AGG_LIFT_DAILY,
    CUSTOMERS,
    EFFECTIVE_CALLS,
    FINEST_GRAIN,
    LIFTS,
    SHORT_CALLS,
    days_spanned,
    groups_table,
    lift_rebased_days,
    lift_rows_of,
    lift_tables,
)
from .metric import entities, entity_events, fact_entities, has_event
from .schema import Schema

__all__ = ["customers", "lift_groups", "lift_of_days", "lift_rebased", "lift_tables_of"]


def lift_tables_of(schema: Schema) -> list[sa.Table]:
    """The schema's lift tables, in LIFTS order; declared apart when the schema does not list them."""
    if AGG_LIFT_DAILY in schema.tables:
        return [schema[aggregate.name] for aggregate in LIFTS]
    return lift_tables(sa.MetaData(schema=schema.name))


def _metric(schema: Schema, settings: Settings) -> FirstEventWithin:
    """The conversion metric as declared, with these settings' threshold and window."""
    return dataclasses.replace(conversion_metric(schema.mart), threshold=settings.threshold, window=settings.window)


def customers(schema: Schema, settings: Settings) -> sa.ScalarSelect[Any]:
    """How many customers the mart holds: members of the customer dimension but the default member, each business id
    once."""
    return sa.select(sa.func.count()).select_from(entities(schema, _metric(schema, settings))).scalar_subquery()


def _count_if(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
    # DuckDB sums integers into 128 bits.
    return sa.cast(sa.func.sum(sa.case((condition, 1), else_=0)), sa.BigInteger)


def _call_counts(schema: Schema, settings: Settings, start: date, end: date) -> sa.Select[Any]:
    """Per day, campaign and agent with calls in [start, end): the effective and the short calls to known customers,
    and how many of each converted."""
    metric = _metric(schema, settings)
    declared = conversion_fact(schema.mart)
    fact = schema[declared.name]
    when, talk = fact.c[metric.fact_time], fact.c[metric.threshold_column]
    in_days = (when >= midnight(start), when < midnight(end))
    known = fact.c[metric.fact_entity] != DEFAULT_MEMBER_ID
    effective = sa.and_(known, talk >= metric.threshold)
    short = sa.and_(known, talk > 0, talk < metric.threshold)
    grain = grain_values(fact, metric.fact_time)
    # A short call converts by the metric's own pairing, whatever its talk: whether a login pairs with it, not
    # which is first, so a semi-join, counted apart and joined to the groups' other counts by their grain.
    source, entity = fact_entities(schema, metric, fact)
    converted = (
        sa.select(*(grain[name].label(name) for name in FINEST_GRAIN), sa.func.count().label("converted"))
        .select_from(source)
        .where(*in_days, short, has_event(schema, metric, fact, entity, midnight(start), midnight(end)))
        .group_by(*(grain[name] for name in FINEST_GRAIN))
        .subquery("short_converted")
    )
    calls = (
        sa.select(
            *(grain[name].label(name) for name in FINEST_GRAIN),
            _count_if(effective).label(EFFECTIVE_CALLS.counted),
            _count_if(sa.and_(effective, fact.c[metric.column].is_not(None))).label(EFFECTIVE_CALLS.converted),
            _count_if(short).label(SHORT_CALLS.share.counted),
        )
        .where(*in_days)
        .group_by(*(grain[name] for name in FINEST_GRAIN))
        .subquery("calls")
    )
    same_group = [calls.c[name].is_not_distinct_from(converted.c[name]) for name in FINEST_GRAIN]
    return sa.select(
        *(calls.c[name] for name in FINEST_GRAIN),
        calls.c[EFFECTIVE_CALLS.counted],
        calls.c[EFFECTIVE_CALLS.converted],
        calls.c[SHORT_CALLS.share.counted],
        sa.cast(sa.func.coalesce(converted.c.converted, 0), sa.BigInteger).label(SHORT_CALLS.share.converted),
    ).select_from(calls.outerjoin(converted, sa.and_(*same_group)))


def _offsets(first: int, last: int) -> sa.Values:
    """Whole numbers of days from first to last, as a table of one column `days`."""
    return sa.values(sa.column("days", sa.Integer), name="offsets").data([(n,) for n in range(first, last + 1)])


def _not_called(schema: Schema, settings: Settings, start: date, end: date) -> sa.Select[Any, int, int]:
    """Per day of [start, end): the customers called in the window before its midnight (`called`), and the customers
    not called who logged in within the window after it (`converted`). Customers are counted once by business id."""
    metric = _metric(schema, settings)
    fact = schema[conversion_fact(schema.mart).name]
    when, window = fact.c[metric.fact_time], metric.window
    # A call at t is before day d's midnight and within the window of it when d's midnight is in (t, t + window]:
    # d from the day after t's to the day of t + window. Each call is paired with those few days by an offset, not
    # compared with every day: one pass over the calls, however many days. The constant bounds on the times let the
    # database read only the days before the span's last (PostgreSQL: their partitions).
    after = _offsets(1, days_spanned(window))
    calls, called_entity = fact_entities(schema, metric, fact)
    called_day = sa.cast(when, sa.Date) + after.c.days
    called = (
        sa.select(called_day.label("dia"), called_entity.label("entity"))
        .select_from(calls.join(after, sa.true()))
        .where(
            fact.c[metric.fact_entity] != DEFAULT_MEMBER_ID,
            when >= midnight(start) - window,
            when < midnight(end - timedelta(days=1)),
            called_day <= sa.cast(when + window, sa.Date),
            called_day >= start,
            called_day < end,
        )
        .distinct()
        .cte("called")
    )
    # A login at t is within the window after day d's midnight when d is from the day after t - window's to t's.
    before = _offsets(0, days_spanned(window) - 1)
    events = entity_events(schema, metric)
    login = events.c[metric.event_time]
    logged_day = sa.cast(login, sa.Date) - before.c.days
    logged = (
        sa.select(logged_day.label("dia"), events.c.entity)
        .select_from(events.join(before, sa.true()))
        .where(
            events.c.entity != DEFAULT_MEMBER_ID,
            login >= midnight(start),
            login < midnight(end) + window,
            logged_day > sa.cast(login - window, sa.Date),
            logged_day >= start,
            logged_day < end,
        )
        .distinct()
        .subquery("logged")
    )
    called_per_day = (
        sa.select(called.c.dia, sa.func.count().label("n")).group_by(called.c.dia).subquery("called_per_day")
    )
    converted_per_day = (
        sa.select(logged.c.dia, sa.func.count().label("n"))
        .select_from(
            logged.outerjoin(called, sa.and_(called.c.dia == logged.c.dia, called.c.entity == logged.c.entity))
        )
        .where(called.c.entity.is_(None))
        .group_by(logged.c.dia)
        .subquery("converted_per_day")
    )
    return sa.select(
        sa.func.coalesce(called_per_day.c.dia, converted_per_day.c.dia).label("dia"),
        sa.cast(sa.func.coalesce(called_per_day.c.n, 0), sa.BigInteger).label("called"),
        sa.cast(sa.func.coalesce(converted_per_day.c.n, 0), sa.BigInteger).label("converted"),
    ).select_from(
        called_per_day.outerjoin(converted_per_day, converted_per_day.c.dia == called_per_day.c.dia, full=True)
    )


def lift_groups(conn: sa.Connection, schema: Schema, settings: Settings, start: date, end: date) -> pa.Table:
    """The counts of the days [start, end) that have calls, per day, campaign and agent, each row with its day's
    customers not called; as many days at a time as the engine counts at once (COUNTED_DAYS)."""
    at_once = engines.of(conn).COUNTED_DAYS
    present: int | None = None
    found = []
    first = start
    while first < end:
        last = end if at_once is None else min(first + timedelta(days=at_once), end)
        counted = conn.execute(_call_counts(schema, settings, first, last)).mappings().all()
        first = last
        if not counted:
            continue
        if present is None:
            present = conn.execute(sa.select(customers(schema, settings))).scalar_one()
        # Only the days with calls have rows: a load's last days usually have none yet.
        days_with_calls = [row["dia"] for row in counted]
        not_called = _not_called(schema, settings, min(days_with_calls), max(days_with_calls) + timedelta(days=1))
        per_day = {dia: (int(called), int(converted)) for dia, called, converted in conn.execute(not_called)}
        found.append(groups_table(counted, present, per_day))
    return pa.concat_tables(found) if found else groups_table([], 0, {})


def lift_of_days(
    conn: sa.Connection, schema: Schema, settings: Settings, start: date, end: date, at: datetime
) -> list[tuple[sa.Table, list[dict[str, Any]]]]:
    """Each lift table and its rows for the days [start, end) that have calls."""
    rows = lift_rows_of(lift_groups(conn, schema, settings, start, end), settings, at)
    return list(zip(lift_tables_of(schema), rows, strict=True))


def lift_rebased(
    conn: sa.Connection, schema: Schema, settings: Settings, at: datetime
) -> list[tuple[sa.Table, date, date, list[dict[str, Any]]]]:
    """The lift rows of days counted among another number of customers than the mart now holds, counted again among
    it, as (table, first day, day after the last, rows) for each run of consecutive days: from their stored counts,
    without reading calls or logins."""
    present = conn.execute(sa.select(customers(schema, settings))).scalar_one()
    found = []
    for table in lift_tables_of(schema):
        stale = conn.execute(
            sa.select(table)
            .where(
                table.c[THRESHOLD] == settings.threshold,
                table.c[WINDOW] == settings.window_seconds,
                table.c[CUSTOMERS] != present,
            )
            .order_by(table.c.dia)
        ).mappings()
        found += [(table, *of_days) for of_days in lift_rebased_days(table.name, settings, stale.all(), present, at)]
    return found
