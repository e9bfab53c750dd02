"""The first-event-within-a-window metric: computed as facts load, and refreshed where new events land."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from .declare import DEFAULT_MEMBER_ID, Fact, FirstEventWithin
from .dimension import CHANGED, NEW
from .schema import Schema

__all__ = ["first_event_key", "first_events", "refresh_after_events"]


def first_event_key(schema: Schema, metric: FirstEventWithin, facts: sa.FromClause) -> sa.ColumnElement[object]:
    """The key of the first event of the fact row's entity at or after its time and within the window."""
    events = schema[metric.events]
    declared = schema.mart.dimension(metric.events)
    time, entity = facts.c[metric.fact_time], facts.c[metric.fact_entity]
    event_time = events.c[metric.event_time]
    first = (
        sa.select(events.c[declared.key])
        .where(
            events.c[metric.event_entity] == entity,
            event_time >= time,
            event_time < time + metric.window,
        )
        .order_by(event_time, events.c[declared.business_key])
        .limit(1)
        .scalar_subquery()
    )
    # The default member stands for "no known customer": such calls and logins never match.
    qualifies = sa.and_(facts.c[metric.threshold_column] >= metric.threshold, entity != DEFAULT_MEMBER_ID)
    return sa.case((qualifies, first), else_=sa.null())


def first_events(
    schema: Schema, metric: FirstEventWithin, facts: sa.FromClause, fact_key: str, start: datetime, end: datetime
) -> sa.Subquery:
    """(fact_key, event_key) of every qualifying fact row of [start, end) that has an event in its window.

    Set-based: one hash join of the facts with the events of the period's window, then the first per fact row.
    For a whole period this is far cheaper than looking each row's first event up on its own."""
    events = schema[metric.events]
    declared = schema.mart.dimension(metric.events)
    time, entity = facts.c[metric.fact_time], facts.c[metric.fact_entity]
    event_time = events.c[metric.event_time]
    place = sa.func.row_number().over(
        partition_by=facts.c[fact_key], order_by=(event_time, events.c[declared.business_key])
    )
    matches = (
        sa.select(facts.c[fact_key].label("fact_key"), events.c[declared.key].label("event_key"), place.label("place"))
        .select_from(
            facts.join(
                events,
                sa.and_(events.c[metric.event_entity] == entity, event_time >= time, event_time < time + metric.window),
            )
        )
        .where(
            facts.c[metric.threshold_column] >= metric.threshold,
            entity != DEFAULT_MEMBER_ID,
            event_time >= start,
            event_time < end + metric.window,
        )
        .subquery("matches")
    )
    return sa.select(matches.c.fact_key, matches.c.event_key).where(matches.c.place == 1).subquery(metric.column)


def refresh_after_events(conn: sa.Connection, schema: Schema, fact: Fact, metric: FirstEventWithin) -> int:
    """Recompute the metric only for fact rows that the events just staged and merged can affect."""
    table = schema[fact.name]
    declared = schema.mart.dimension(metric.events)
    staged = schema[declared.staging]
    time, entity = table.c[metric.fact_time], table.c[metric.fact_entity]
    event_time = staged.c[metric.event_time]
    landed = staged.c.change.in_([NEW, CHANGED])
    first, last = conn.execute(sa.select(sa.func.min(event_time), sa.func.max(event_time)).where(landed)).one()
    if first is None:
        return 0
    qualifies = table.c[metric.threshold_column] >= metric.threshold
    recompute = {metric.column: first_event_key(schema, metric, table)}
    # A new or moved event can become the first one of calls in the window before it; the time bounds let the
    # database read only those days of the fact table.
    in_window = sa.exists().where(
        landed,
        staged.c[metric.event_entity] == entity,
        event_time >= time,
        event_time < time + metric.window,
    )
    bounds = (time > first - metric.window, time <= last)
    updated = conn.execute(sa.update(table).values(recompute).where(qualifies, *bounds, in_window)).rowcount
    # A changed event can also stop being the first one of the calls that point at it (rare: logins are events).
    moved = sa.select(staged.c[declared.key]).where(staged.c.change == CHANGED)
    if conn.execute(moved.limit(1)).first() is not None:
        pointed = table.c[metric.column].in_(moved)
        updated += conn.execute(sa.update(table).values(recompute).where(qualifies, pointed)).rowcount
    return updated
