"""The first-event-within-a-window metric: computed as facts load, and refreshed where new events land."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from . import engines
from .clean import arrow_type
from .declare import DEFAULT_MEMBER_ID, Dimension, Fact, FirstEventWithin
from .dimension import CHANGED, NEW, NEW_VERSION
from .keys import KeyLookup
from .schema import Schema

__all__ = [
    "SECONDS_TO_EVENT",
    "FirstEventsInClient",
    "entities",
    "entity_events",
    "fact_entities",
    "first_event_key",
    "first_events",
    "has_event",
    "refresh_after_events",
    "within_window",
]

SECONDS_TO_EVENT = "seconds_to_event"
"""Column of FirstEventsInClient.firsts: whole seconds from the fact's time to its first event."""


def _entity_dimension(schema: Schema, metric: FirstEventWithin) -> Dimension:
    """The dimension both sides' entity keys point at (customers, for calls and logins)."""
    events = schema.mart.dimension(metric.events)
    reference = next(r for r in events.references if r.column == metric.event_entity)
    return schema.mart.dimension(reference.dimension)


def entity_events(schema: Schema, metric: FirstEventWithin, carry: Sequence[str] = ()) -> sa.FromClause:
    """The events with an `entity` column that is the same for every version of a member: the surrogate key when
    the entity dimension keeps no history, else its business id (a customer's calls and logins may point at
    different versions of the customer). `carry`: more of the events' columns."""
    events = schema[metric.events]
    declared = schema.mart.dimension(metric.events)
    entity_dim = _entity_dimension(schema, metric)
    columns = [events.c[declared.key], events.c[declared.business_key], events.c[metric.event_time]]
    columns += [events.c[name] for name in carry if name not in {c.name for c in columns}]
    if not entity_dim.keeps_history:
        return sa.select(*columns, events.c[metric.event_entity].label("entity")).subquery("events")
    dim = schema[entity_dim.name]
    return (
        sa.select(*columns, dim.c[entity_dim.business_key].label("entity"))
        .select_from(events.join(dim, dim.c[entity_dim.key] == events.c[metric.event_entity]))
        .subquery("events")
    )


def _fact_entity(schema: Schema, metric: FirstEventWithin, facts: sa.FromClause) -> sa.ColumnElement[Any]:
    """The fact row's entity, comparable with `entity_events(...).c.entity`."""
    entity_dim = _entity_dimension(schema, metric)
    key = facts.c[metric.fact_entity]
    if not entity_dim.keeps_history:
        return key
    dim = schema[entity_dim.name]
    # Tied to the fact row explicitly: nested in another subquery, SQLAlchemy would otherwise add the fact table to
    # this one's FROM and return a row for every fact row.
    return (
        sa.select(dim.c[entity_dim.business_key]).where(dim.c[entity_dim.key] == key).correlate(facts).scalar_subquery()
    )


def fact_entities(
    schema: Schema, metric: FirstEventWithin, facts: sa.FromClause
) -> tuple[sa.FromClause, sa.ColumnElement[Any]]:
    """The fact rows joined to what gives each its entity, comparable with `entity_events(...).c.entity`, and that
    entity: joined, not looked up row by row (the entity's business id when its dimension keeps history)."""
    entity_dim = _entity_dimension(schema, metric)
    if not entity_dim.keeps_history:
        return facts, facts.c[metric.fact_entity]
    members = schema[entity_dim.name].alias("fact_entity")
    return (
        facts.join(members, members.c[entity_dim.key] == facts.c[metric.fact_entity]),
        members.c[entity_dim.business_key],
    )


def entities(schema: Schema, metric: FirstEventWithin) -> sa.Subquery:
    """Every member of the entity dimension but the default member, once (one row per business id when the
    dimension keeps history), as an `entity` column comparable with `entity_events(...).c.entity`."""
    entity_dim = _entity_dimension(schema, metric)
    dim = schema[entity_dim.name]
    members = dim.c[entity_dim.key] != DEFAULT_MEMBER_ID
    if not entity_dim.keeps_history:
        return sa.select(dim.c[entity_dim.key].label("entity")).where(members).subquery("entities")
    return sa.select(dim.c[entity_dim.business_key].label("entity")).where(members).distinct().subquery("entities")


def within_window(
    metric: FirstEventWithin,
    event_entity: sa.ColumnElement[Any],
    event_time: sa.ColumnElement[Any],
    fact_entity: sa.ColumnElement[Any],
    fact_time: sa.ColumnElement[Any],
) -> sa.ColumnElement[bool]:
    """The metric's pairing of an event with a fact row: the same entity, at or after the row's time, within the
    window."""
    return sa.and_(event_entity == fact_entity, event_time >= fact_time, event_time < fact_time + metric.window)


def has_event(
    schema: Schema,
    metric: FirstEventWithin,
    facts: sa.FromClause,
    fact_entity: sa.ColumnElement[Any],
    start: datetime,
    end: datetime,
) -> sa.Exists:
    """Whether the fact row of [start, end) has an event in its window, whatever its talk time: a semi-join, for
    counts that ask whether a row converted, not by which event. `fact_entity`: from `fact_entities`."""
    events = entity_events(schema, metric)
    event_time = events.c[metric.event_time]
    return sa.exists().where(
        within_window(metric, events.c.entity, event_time, fact_entity, facts.c[metric.fact_time]),
        event_time >= start,
        event_time < end + metric.window,
    )


def first_event_key(schema: Schema, metric: FirstEventWithin, facts: sa.FromClause) -> sa.ColumnElement[object]:
    """The key of the first event of the fact row's entity at or after its time and within the window."""
    events = entity_events(schema, metric)
    declared = schema.mart.dimension(metric.events)
    time = facts.c[metric.fact_time]
    event_time = events.c[metric.event_time]
    first = (
        sa.select(events.c[declared.key])
        .where(within_window(metric, events.c.entity, event_time, _fact_entity(schema, metric, facts), time))
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
    events = entity_events(schema, metric)
    declared = schema.mart.dimension(metric.events)
    time, entity = facts.c[metric.fact_time], facts.c[metric.fact_entity]
    event_time = events.c[metric.event_time]
    place = sa.func.row_number().over(
        partition_by=facts.c[fact_key], order_by=(event_time, events.c[declared.business_key])
    )
    source, fact_entity = fact_entities(schema, metric, facts)
    matches = (
        sa.select(facts.c[fact_key].label("fact_key"), events.c[declared.key].label("event_key"), place.label("place"))
        .select_from(source.join(events, within_window(metric, events.c.entity, event_time, fact_entity, time)))
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
        landed, within_window(metric, staged_entity, event_time, _fact_entity(schema, metric, table), time)
    )
    bounds = (time > first - metric.window, time <= last)
    updated = conn.execute(sa.update(table).values(recompute).where(qualifies, *bounds, in_window)).rowcount
    # A changed event can also stop being the first one of the calls that point at it (rare: logins are events).
    moved = sa.select(staged.c[declared.key]).where(staged.c.change == CHANGED)
    if conn.execute(moved.limit(1)).first() is not None:
        pointed = table.c[metric.column].in_(moved)
        updated += conn.execute(sa.update(table).values(recompute).where(qualifies, pointed)).rowcount
    return updated


class FirstEventsInClient:
    """The metric computed in the client as a period's rows stream by, by the rule of `first_events`: the events
    of the period's window are read once, sorted by (entity, time, business id); each row's first event is then
    found by one binary search over that order, so the fact rows go into the fact table finished, with no
    INSERT ... SELECT joining them to the events in the database. Times count in whole seconds, as loaded.
    `carry`: key columns of the events (references to other dimensions, never null) that `firsts` reports with
    each row's first event."""

    def __init__(
        self,
        conn: sa.Connection,
        schema: Schema,
        metric: FirstEventWithin,
        start: datetime,
        end: datetime,
        carry: Sequence[str] = (),
    ) -> None:
        self.metric = metric
        self.start = start
        declared = schema.mart.dimension(metric.events)
        events = entity_events(schema, metric, carry)
        event_time = events.c[metric.event_time]
        entity_dim = _entity_dimension(schema, metric)
        entity_type = pa.int32() if not entity_dim.keeps_history else _business_type(entity_dim)
        in_window = (event_time >= start, event_time < end + metric.window)
        select = sa.select(events.c.entity, event_time, events.c[declared.key], *(events.c[n] for n in carry)).where(
            *in_window
        )
        fields = [("entity", entity_type), ("time", pa.timestamp("us")), ("event_key", pa.int32())]
        fields += [(name, pa.int32()) for name in carry]
        found = engines.of(conn).fetch_arrow(
            conn, select.order_by(events.c.entity, event_time, events.c[declared.business_key]), pa.schema(fields)
        )
        self.carried = {name: found[name].to_numpy() for name in carry}
        entities = pc.unique(found["entity"].combine_chunks())
        codes = pc.index_in(found["entity"], value_set=entities).to_numpy(zero_copy_only=False).astype(np.int64)
        if entity_dim.keeps_history:
            # The fact row points at a version of its member; events match on the member's business id, so each
            # version's key stands for its member's code.
            # Only the versions of members with an event in the window: every version of a million members was
            # read for the few thousand who logged in.
            dim = schema[entity_dim.name]
            with_events = sa.select(events.c.entity).where(*in_window)
            members = sa.select(dim.c[entity_dim.key], dim.c[entity_dim.business_key]).where(
                dim.c[entity_dim.business_key].in_(with_events)
            )
            versions = engines.of(conn).fetch_arrow(
                conn, members, pa.schema([("key", pa.int32()), ("entity", entity_type)])
            )
            code = pc.index_in(versions["entity"], value_set=entities)
            numbered = pa.table({"value": versions["key"], "key": pc.cast(code, pa.int32())}).filter(pc.is_valid(code))
        else:
            numbered = pa.table({"value": entities, "key": pa.array(range(len(entities)), pa.int32())})
        # Each row's code by position when the keys are dense (surrogate keys are), not by a hash table built again
        # for every batch.
        self.codes = KeyLookup.of_pairs(metric.fact_entity, "code", numbered.combine_chunks(), null_key=None)
        # One sorted number per event: entity code in the high bits, seconds since the period's start in the low.
        self.order = (codes << 32) | self._seconds(found["time"])
        self.keys_of = found["event_key"].to_numpy(zero_copy_only=False)
        self.window = int(metric.window.total_seconds())
        pa.default_memory_pool().release_unused()

    def _seconds(self, times: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Whole seconds since the period's start."""
        since = pc.subtract(pc.cast(times, pa.timestamp("us")), pa.scalar(self.start, pa.timestamp("us")))
        seconds: np.ndarray = pc.divide(pc.cast(since, pa.int64()), pa.scalar(1_000_000, pa.int64())).to_numpy(
            zero_copy_only=False
        )
        return seconds

    def keys(self, batch: pa.RecordBatch) -> pa.Array:
        """The metric column for the batch's rows: the first event's key, or null."""
        return self.firsts(batch).column(self.metric.column)

    def firsts(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Each row's first event, nulls for none: its key (named as the metric's column), the seconds from the
        row's time to it (SECONDS_TO_EVENT) and the carried columns."""
        metric = self.metric
        entity = batch.column(metric.fact_entity)
        qualifies = pc.and_(
            pc.greater_equal(batch.column(metric.threshold_column), pa.scalar(metric.threshold, pa.int32())),
            pc.not_equal(entity, pa.scalar(DEFAULT_MEMBER_ID, entity.type)),
        )
        code = self.codes.map(batch)
        eligible = pc.fill_null(pc.and_(qualifies, pc.is_valid(code)), False).to_numpy(zero_copy_only=False)
        if not eligible.any() or len(self.order) == 0:
            return self._found(np.zeros(batch.num_rows, np.intp), np.zeros(batch.num_rows, np.int64), ~eligible)
        codes = pc.fill_null(code, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        seconds = self._seconds(batch.column(metric.fact_time))
        # The first event at or after the call's second, if it is of the call's entity and within the window.
        wanted = (codes << 32) | seconds
        place = np.searchsorted(self.order, wanted)
        inside = place < len(self.order)
        place = np.where(inside, place, 0)
        found = self.order[place]
        after = (found & 0xFFFFFFFF) - seconds
        hit = eligible & inside & (found >> 32 == codes) & (after < self.window)
        return self._found(place, after, ~hit)

    def _found(self, place: np.ndarray, after: np.ndarray, missed: np.ndarray) -> pa.RecordBatch:
        """The events at `place` in the sorted order, null where `missed`."""
        keys = self.keys_of[place] if len(self.keys_of) else np.zeros(len(place), np.int32)
        columns = {
            self.metric.column: pa.array(keys, pa.int32(), mask=missed),
            SECONDS_TO_EVENT: pa.array(after, pa.int64(), mask=missed),
        }
        for name, values in self.carried.items():
            taken = values[place] if len(values) else np.zeros(len(place), np.int32)
            columns[name] = pa.array(taken, pa.int32(), mask=missed)
        return pa.RecordBatch.from_pydict(columns)


def _business_type(dim: Dimension) -> pa.DataType:
    """The Arrow type of a dimension's business id."""
    return arrow_type(next(c.type for c in dim.columns if c.name == dim.business_key))
