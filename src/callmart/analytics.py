"""The conversion aggregates (declared in aggregates.py), summed by the database for the days a run touched."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa

from . import engines, locking
from .aggregates import (
    AGENT,
    AGG_CHANNEL,
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
    aggregate_tables,
    conversion_fact,
    conversion_metric,
    settings_of,
)
from .declare import UNKNOWN, Dimension
from .dimension import CHANGED, NEW, NEW_VERSION
from .schema import Schema

__all__ = [
    "Aggregates",
    "Touched",
    "aggregates_of",
    "has_aggregates",
    "create_aggregate_tables",
    "day_ranges",
    "landed_events",
    "midnight",
    "rebuild_aggregates",
    "refresh_aggregates",
    "write_days",
]


class Aggregates(NamedTuple):
    """The aggregate tables of a mart."""

    daily: sa.Table
    channel: sa.Table


def aggregates_of(schema: Schema) -> Aggregates:
    """The schema's aggregate tables; declared apart when the schema does not list them."""
    if AGG_DAILY in schema.tables:
        return Aggregates(schema[AGG_DAILY], schema[AGG_CHANNEL])
    daily, channel = aggregate_tables(sa.MetaData(schema=schema.name))
    return Aggregates(daily, channel)


def create_aggregate_tables(conn: sa.Connection, schema: Schema) -> None:
    """Create the aggregate tables if missing (`callmart init` does it once the schema lists them)."""
    for table in aggregates_of(schema):
        table.create(conn, checkfirst=True)


@dataclass
class Touched:
    """What a run changed: the periods it loaded, and the time spans of the events (logins) that landed; and the
    days whose aggregates a period's load already wrote."""

    periods: list[tuple[datetime, datetime]] = field(default_factory=list)
    events: list[tuple[datetime, datetime]] = field(default_factory=list)
    settled: set[date] = field(default_factory=set)

    def add_period(self, start: datetime, end: datetime, settled: Iterable[date] = ()) -> None:
        """A loaded period [start, end), and the days of it whose aggregates its load wrote."""
        self.periods.append((start, end))
        self.settled.update(settled)

    def add_events(self, span: tuple[datetime, datetime] | None) -> None:
        """The first and last time of the events that landed in a dimension load, if any."""
        if span is not None:
            self.events.append(span)

    def days(self, window: timedelta) -> list[date]:
        """The days whose aggregates may have changed and are not settled yet: the periods' days, and the days a
        call could meet the events."""
        # A call meets an event in [its time, its time + window): from the first event minus the window to the last.
        days: set[date] = set()
        loads: Counter[date] = Counter()
        for start, end in self.periods:
            loads.update(_days(start.date(), end - timedelta(microseconds=1)))
        days.update(loads)
        for first, last in self.events:
            days.update(_days((first - window).date(), last))
        # A period's load writes its days after the run's events landed, so they already count; unless another
        # period of the run loaded calls of the same day.
        return sorted(d for d in days if not (d in self.settled and loads[d] == 1))


def _days(first: date, last: datetime | date) -> list[date]:
    """Every day from first to the day of last, both included."""
    end = last.date() if isinstance(last, datetime) else last
    return [first + timedelta(days=n) for n in range((end - first).days + 1)]


def day_ranges(days: Iterable[date]) -> list[tuple[date, date]]:
    """Consecutive days as half-open ranges [first, day after last)."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if ranges and ranges[-1][1] == day:
            ranges[-1] = (ranges[-1][0], day + timedelta(days=1))
        else:
            ranges.append((day, day + timedelta(days=1)))
    return ranges


def landed_events(conn: sa.Connection, schema: Schema, dimension: Dimension) -> tuple[datetime, datetime] | None:
    """First and last time of the conversion's events just merged into dimension (None: none, or not its events)."""
    # Read from the staging table: call it in the dimension load's transaction, before the next load clears it.
    metric = conversion_metric(schema.mart)
    if dimension.name != metric.events:
        return None
    staged = schema[dimension.staging]
    when = staged.c[metric.event_time]
    landed = staged.c.change.in_([NEW, CHANGED, NEW_VERSION])
    first, last = conn.execute(sa.select(sa.func.min(when), sa.func.max(when)).where(landed)).one()
    return None if first is None else (first, last)


def _calls(schema: Schema, settings: Settings, start: date, end: date) -> Calls:
    """The per-call inputs of the measures, for the calls of [start, end)."""
    metric = conversion_metric(schema.mart)
    fact, logins = schema[conversion_fact(schema.mart).name], schema[metric.events]
    login_key = schema.mart.dimension(metric.events).key
    call_time, login_time = fact.c[metric.fact_time], logins.c[metric.event_time]
    rows = (
        sa.select(
            sa.cast(call_time, sa.Date).label("day"),
            sa.func.coalesce(fact.c[CAMPAIGN], UNKNOWN).label("campaign"),
            fact.c[AGENT].label("agent"),
            logins.c[LOGIN_CHANNEL].label("channel"),
            fact.c[metric.threshold_column].label("talk"),
            fact.c[TOTAL_SECONDS].label("total"),
            fact.c[metric.column].label("login"),
            (sa.extract("epoch", login_time) - sa.extract("epoch", call_time)).label("to_login"),
        )
        # A call's login is at or after the call, so no login before the first day can be one: the join then hashes
        # the logins of those days and after, not every login the mart holds.
        .select_from(
            fact.outerjoin(
                logins,
                sa.and_(logins.c[login_key] == fact.c[metric.column], login_time >= midnight(start)),
            )
        )
        .where(call_time >= midnight(start), call_time < midnight(end))
        .subquery("calls")
    )
    c = rows.c
    threshold = sa.literal(settings.threshold, sa.Integer)
    return Calls(c.day, c.campaign, c.agent, c.channel, c.talk, c.total, c.login, c.to_login, threshold)


def midnight(day: date) -> datetime:
    """The day's first moment."""
    return datetime.combine(day, time())


def _count_if(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
    return sa.func.sum(sa.case((condition, 1), else_=0))


def _part_sql(part: Part, c: Calls) -> sa.ColumnElement[Any]:
    """The part's SQL aggregate over the calls of a group, as a whole number on every engine."""
    if part.kind == ROWS:
        return sa.func.count()
    value = getattr(c, part.of)
    if part.kind == COUNT:
        return sa.func.count(value)
    # DuckDB sums integers into 128 bits, PostgreSQL seconds between timestamps into numeric.
    if part.kind == SUM:
        return sa.cast(sa.func.sum(value), sa.BigInteger)
    return sa.cast(_count_if(value > 0 if part.kind == POSITIVE else value >= c.threshold), sa.BigInteger)


def _parts(schema: Schema, aggregate: Aggregate, settings: Settings, start: date, end: date) -> sa.Select[Any]:
    """The parts of the aggregate's groups for the days [start, end), named as its grain and its parts."""
    calls = _calls(schema, settings, start, end)
    grain = [g.of(calls) for g in aggregate.grain]
    select = sa.select(
        *(expression.label(g.name) for g, expression in zip(aggregate.grain, grain, strict=True)),
        *(_part_sql(p, calls).label(p.name) for p in aggregate.parts),
    ).group_by(*grain)
    if aggregate.converted_only:
        select = select.where(calls.login.is_not(None))
    return select


def _of_settings(table: sa.Table, settings: Settings) -> list[sa.ColumnElement[bool]]:
    return [table.c[THRESHOLD] == settings.threshold, table.c[WINDOW] == settings.window_seconds]


def write_days(
    conn: sa.Connection, table: sa.Table, settings: Settings, start: date, end: date, rows: list[dict[str, Any]]
) -> None:
    """Replace the table's rows of the days [start, end) for these settings with `rows`."""
    conn.execute(sa.delete(table).where(*_of_settings(table, settings), table.c.dia >= start, table.c.dia < end))
    engines.of(conn).insert_rows(conn, table, rows)


def _replace(conn: sa.Connection, schema: Schema, settings: Settings, start: date, end: date, at: datetime) -> int:
    """Recompute the days [start, end) for these settings: delete their rows, insert them again; return rows."""
    written = 0
    for aggregate, table in zip(AGGREGATES, aggregates_of(schema), strict=True):
        # Read, then written: PostgreSQL runs the SELECT of an INSERT ... SELECT in one process, a plain SELECT
        # with parallel workers; the groups are few.
        groups = conn.execute(_parts(schema, aggregate, settings, start, end)).mappings().all()
        rows = aggregate_rows(aggregate, settings, groups, at)
        write_days(conn, table, settings, start, end, rows)
        if aggregate.name == AGG_DAILY:
            written += len(rows)
    return written


def has_aggregates(conn: sa.Connection, schema: Schema, settings: Settings) -> bool:
    """Whether any aggregate row exists for these settings."""
    daily = aggregates_of(schema).daily
    return conn.execute(sa.select(daily.c.dia).where(*_of_settings(daily, settings)).limit(1)).first() is not None


def _fact_days(conn: sa.Connection, schema: Schema) -> tuple[date, date] | None:
    """The first and last day of the fact table, if it holds calls."""
    fact = conversion_fact(schema.mart)
    when = schema[fact.name].c[fact.time_column]
    first, last = conn.execute(sa.select(sa.func.min(when), sa.func.max(when))).one()
    return None if first is None else (first.date(), last.date())


def refresh_aggregates(
    conn: sa.Connection,
    schema: Schema,
    touched: Touched,
    settings: Settings | None = None,
    computed_at: datetime | None = None,
) -> int:
    """Recompute the aggregates of the days a run touched, for the declared settings; return daily rows written."""
    # With no row yet for these settings (a new mart, one upgraded to aggregates, changed parameters) every day of
    # the fact table is computed instead. Like a load, it waits for the mart's other writers (PostgreSQL).
    settings = settings or settings_of(schema.mart)
    locking.take_write_turn(conn)
    if not has_aggregates(conn, schema, settings):
        return rebuild_aggregates(conn, schema, settings, computed_at=computed_at)
    at = computed_at or datetime.now().replace(microsecond=0)
    return sum(
        _replace(conn, schema, settings, start, end, at) for start, end in day_ranges(touched.days(settings.window))
    )


def rebuild_aggregates(
    conn: sa.Connection,
    schema: Schema,
    settings: Settings | None = None,
    first: date | None = None,
    last: date | None = None,
    computed_at: datetime | None = None,
) -> int:
    """Recompute every day in [first, last] (by default every day of the fact table); return daily rows written."""
    settings = settings or settings_of(schema.mart)
    locking.take_write_turn(conn)
    span = _fact_days(conn, schema)
    start, end = first or (span and span[0]), last or (span and span[1])
    if start is None or end is None:
        return 0
    at = computed_at or datetime.now().replace(microsecond=0)
    return _replace(conn, schema, settings, start, end + timedelta(days=1), at)
