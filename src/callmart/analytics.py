"""The conversion aggregates (declared in aggregates.py) and the lift (lift.py), computed by the database for the days
a run touched."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
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
    day_ranges,
    grain_values,
    midnight,
    settings_of,
)
from .declare import Dimension
from .dimension import CHANGED, NEW, NEW_VERSION
from .lift import affected_days
from .lift_analytics import lift_of_days, lift_rebased, lift_tables_of
from .schema import Schema

__all__ = [
    "Aggregates",
    "Touched",
    "aggregates_of",
    "has_aggregates",
    "has_lift",
    "create_aggregate_tables",
    "day_ranges",
    "landed_events",
    "midnight",
    "rebuild_aggregates",
    "rebase_lift",
    "refresh_aggregates",
    "write_days",
    "write_lift",
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
    """Create the aggregate and lift tables if missing (`callmart init` does it once the schema lists them)."""
    for table in [*aggregates_of(schema), *lift_tables_of(schema)]:
        table.create(conn, checkfirst=True)


@dataclass
class Touched:
    """What a run changed: the periods it loaded, in order, and the time spans of the events (logins) that landed;
    and the days whose aggregates and lift a period's load already wrote."""

    periods: list[tuple[datetime, datetime]] = field(default_factory=list)
    events: list[tuple[datetime, datetime]] = field(default_factory=list)
    settled: set[date] = field(default_factory=set)
    lift_settled: dict[date, int] = field(default_factory=dict)
    """The days whose lift a period's load wrote, each with the place of that period in `periods`."""

    def add_period(
        self, start: datetime, end: datetime, settled: Iterable[date] = (), lift_settled: Iterable[date] = ()
    ) -> None:
        """A loaded period [start, end), the days of it whose aggregates its load wrote, and the days whose lift it
        wrote."""
        self.periods.append((start, end))
        self.settled.update(settled)
        self.lift_settled.update(dict.fromkeys(lift_settled, len(self.periods) - 1))

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

    def lift_days(self, window: timedelta) -> list[date]:
        """The days whose lift may have changed and is not settled yet: the days the periods' calls count in, and
        the days whose calls or customers not called could meet the events."""
        last_load: dict[date, int] = {}
        for place, (start, end) in enumerate(self.periods):
            last_load.update(dict.fromkeys(affected_days(start, end, window), place))
        days = set(last_load)
        for first, last in self.events:
            # A day's customers not called meet a login in [midnight, midnight + window): the same days as calls.
            days.update(_days((first - window).date(), last))
        # A load writes the lift of the days its calls count in as the mart then stands, after the run's events
        # landed: those days stay settled unless a later period of the run loaded calls that count in them too.
        return sorted(d for d in days if self.lift_settled.get(d, -1) < last_load.get(d, 0))


def _days(first: date, last: datetime | date) -> list[date]:
    """Every day from first to the day of last, both included."""
    end = last.date() if isinstance(last, datetime) else last
    return [first + timedelta(days=n) for n in range((end - first).days + 1)]


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
    grain = grain_values(fact, metric.fact_time)
    rows = (
        sa.select(
            grain["dia"].label("day"),
            grain[CAMPAIGN].label("campaign"),
            grain[AGENT].label("agent"),
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


def write_lift(conn: sa.Connection, schema: Schema, settings: Settings, start: date, end: date, at: datetime) -> None:
    """Recompute the lift of the days [start, end) for these settings: delete their rows, insert those of the days
    that have calls."""
    for table, rows in lift_of_days(conn, schema, settings, start, end, at):
        write_days(conn, table, settings, start, end, rows)


def rebase_lift(conn: sa.Connection, schema: Schema, settings: Settings, at: datetime) -> None:
    """Bring the lift of days computed when the mart held another number of customers to the present number (new
    customers are customers not called on those days)."""
    for table, start, end, rows in lift_rebased(conn, schema, settings, at):
        write_days(conn, table, settings, start, end, rows)


def has_lift(conn: sa.Connection, schema: Schema, settings: Settings) -> bool:
    """Whether any lift row exists for these settings."""
    daily = lift_tables_of(schema)[0]
    return conn.execute(sa.select(daily.c.dia).where(*_of_settings(daily, settings)).limit(1)).first() is not None


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
    """Recompute the aggregates and the lift of the days a run touched, for the declared settings; return daily
    aggregate rows written."""
    # With no row yet for these settings (a new mart, one upgraded to aggregates, changed parameters) every day of
    # the fact table is computed instead. Like a load, it waits for the mart's other writers (PostgreSQL).
    settings = settings or settings_of(schema.mart)
    locking.take_write_turn(conn)
    if not has_aggregates(conn, schema, settings):
        return rebuild_aggregates(conn, schema, settings, computed_at=computed_at)
    at = computed_at or datetime.now().replace(microsecond=0)
    written = sum(
        _replace(conn, schema, settings, start, end, at) for start, end in day_ranges(touched.days(settings.window))
    )
    # Only a mart that had aggregates before it had the lift tables needs the fact table's days: finding them reads
    # every day of it.
    span = None if has_lift(conn, schema, settings) else _fact_days(conn, schema)
    if span is not None:
        write_lift(conn, schema, settings, span[0], span[1] + timedelta(days=1), at)
    else:
        for start, end in day_ranges(touched.lift_days(settings.window)):
            write_lift(conn, schema, settings, start, end, at)
    # The customers the run added count among the customers not called of every day.
    rebase_lift(conn, schema, settings, at)
    return written


def rebuild_aggregates(
    conn: sa.Connection,
    schema: Schema,
    settings: Settings | None = None,
    first: date | None = None,
    last: date | None = None,
    computed_at: datetime | None = None,
) -> int:
    """Recompute the aggregates and the lift of every day in [first, last] (by default every day of the fact
    table); return daily aggregate rows written."""
    settings = settings or settings_of(schema.mart)
    locking.take_write_turn(conn)
    span = _fact_days(conn, schema)
    start, end = first or (span and span[0]), last or (span and span[1])
    if start is None or end is None:
        return 0
    at = computed_at or datetime.now().replace(microsecond=0)
    write_lift(conn, schema, settings, start, end + timedelta(days=1), at)
    rebase_lift(conn, schema, settings, at)
    return _replace(conn, schema, settings, start, end + timedelta(days=1), at)
