"""The first-event-within-a-window metric: computed as facts load, and refreshed where new events land."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .declare import DEFAULT_MEMBER_ID, Dimension, Fact, FirstEventWithin
from .dimension import CHANGED, NEW, NEW_VERSION
from .schema import Schema

__all__ = ["first_event_key", "first_events", "refresh_after_events"]


def _entity_dimension(schema: Schema, metric: FirstEventWithin) -> Dimension:
    """The dimension both sides' entity keys point at (customers, for calls and logins)."""
    events = schema.mart.dimension(metric.events)
    reference = next(r for r in events.references if r.column == metric.event_entity)
    return schema.mart.dimension(reference.dimension)


def _events(schema: Schema, metric: FirstEventWithin) -> sa.FromClause:
    """The events with an `entity` column that is the same for every version of a member: the surrogate key when
    the entity dimension keeps no history, else its business id (a customer's calls and logins may point at
    different versions of the customer)."""
    events = schema[metric.events]
    declared = schema.mart.dimension(metric.events)
    entity_dim = _entity_dimension(schema, metric)
    columns = [events.c[declared.key], events.c[declared.business_key], events.c[metric.event_time]]
    if not entity_dim.keeps_history:
        return sa.select(*columns, events.c[metric.event_entity].label("entity")).subquery("events")
    dim = schema[entity_dim.name]
    return (
        sa.select(*columns, dim.c[entity_dim.business_key].label("entity"))
        .select_from(events.join(dim, dim.c[entity_dim.key] == events.c[metric.event_entity]))
        .subquery("events")
    )


def _fact_entity(schema: Schema, metric: FirstEventWithin, facts: sa.FromClause) -> sa.ColumnElement[Any]:
    """The fact row's entity, comparable with `_events(...).c.entity`."""
    entity_dim = _entity_dimension(schema, metric)
    key = facts.c[metric.fact_entity]
    if not entity_dim.keeps_history:
        return key
    dim = schema[entity_dim.name]
    return sa.select(dim.c[entity_dim.business_key]).where(dim.c[entity_dim.key] == key).scalar_subquery()


def first_event_key(schema: Schema, metric: FirstEventWithin, facts: sa.FromClause) -> sa.ColumnElement[object]:
    """The key of the first event of the fact row's entity at or after its time and within the window."""
    events = _events(schema, metric)
    declared = schema.mart.dimension(metric.events)
    time = facts.c[metric.fact_time]
    event_time = events.c[metric.event_time]
    first = (
        sa.select(events.c[declared.key])
        .where(
            events.c.entity == _fact_entity(schema, metric, facts),
            event_time >= time,
            event_time < time + metric.window,
        )
        .order_by(event_time, events.c[declared.business_key])
        .limit(1)
        .scalar_subquery()
    )
    # The default member stands for "no known customer": such calls and logins never match.
    qualifies = sa.and_(
        facts.c[metric.threshold_column] >= metric.threshold, facts.c[metric.fact_entity] != DEFAULT_MEMBER_ID
    )
    return sa.case((qualifies, first), else_=sa.null())


def first_events(
    schema: Schema, metric: FirstEventWithin, facts: sa.FromClause, fact_key: str, start: datetime, end: datetime
) -> sa.Subquery:
    """(fact_key, event_key) of every qualifying fact row of [start, end) that has an event in its window.

    Set-based: one hash join of the facts with the events of the period's window, then the first per fact row.
    For a whole period this is far cheaper than looking each row's first event up on its own."""
    events = _events(schema, metric)
    declared = schema.mart.dimension(metric.events)
    time, entity = facts.c[metric.fact_time], facts.c[metric.fact_entity]
    event_time = events.c[metric.event_time]
    place = sa.func.row_number().over(
        partition_by=facts.c[fact_key], order_by=(event_time, events.c[declared.business_key])
    )
    # Joined, not looked up row by row: the entity's business id when its dimension keeps history.
    source: sa.FromClause = facts
    fact_entity: sa.ColumnElement[Any] = facts.c[metric.fact_entity]
    entity_dim = _entity_dimension(schema, metric)
    if entity_dim.keeps_history:
        members = schema[entity_dim.name].alias("fact_entity")
        source = facts.join(members, members.c[entity_dim.key] == facts.c[metric.fact_entity])
        fact_entity = members.c[entity_dim.business_key]
    matches = (
        sa.select(facts.c[fact_key].label("fact_key"), events.c[declared.key].label("event_key"), place.label("place"))
        .select_from(
            source.join(
                events,
                sa.and_(events.c.entity == fact_entity, event_time >= time, event_time < time + metric.window),
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
    time = table.c[metric.fact_time]
    event_time = staged.c[metric.event_time]
    landed = staged.c.change.in_([NEW, CHANGED, NEW_VERSION])
    first, last = conn.execute(sa.select(sa.func.min(event_time), sa.func.max(event_time)).where(landed)).one()
    if first is None:
        return 0
    qualifies = table.c[metric.threshold_column] >= metric.threshold
    recompute = {metric.column: first_event_key(schema, metric, table)}
    # A new or moved event can become the first one of calls in the window before it; the time bounds let the
    # database read only those days of the fact table.
    reference = next(r for r in declared.references if r.column == metric.event_entity)
    staged_entity = (
        staged.c[reference.value.name]
        if _entity_dimension(schema, metric).keeps_history
        else staged.c[metric.event_entity]
    )
    in_window = sa.exists().where(
        landed,
        staged_entity == _fact_entity(schema, metric, table),
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
