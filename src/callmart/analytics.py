"""Conversion aggregates by day, campaign and agent (and by digital channel), refreshed for the days a run touched."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa

from . import locking
from .declare import UNKNOWN, Dimension, FirstEventWithin, Mart
from .mart import CALLS

if TYPE_CHECKING:  # schema.py declares these tables: importing it here would be circular
    from .schema import Schema

__all__ = [
    "AGG_CHANNEL",
    "AGG_DAILY",
    "Aggregates",
    "Settings",
    "Touched",
    "aggregate_tables",
    "aggregates_of",
    "create_aggregate_tables",
    "day_ranges",
    "landed_events",
    "rebuild_aggregates",
    "refresh_aggregates",
    "settings_of",
]

AGG_DAILY = "agg_conversion_diaria"
AGG_CHANNEL = "agg_conversion_canal_diaria"
THRESHOLD, WINDOW, COMPUTED_AT = "umbral_segundos", "ventana_segundos", "calculado_en"

CONVERSION = CALLS.metrics[0].column
"""The fact column holding the conversion: the first login after the call (key_login_post_llamada)."""
TOTAL_SECONDS = "segundos_totales_llamada"
CAMPAIGN, AGENT = "campania_llamada", "key_agente_llamada"
CHANNEL = "key_canal_digital"
LOGIN_CHANNEL = "key_canal_digital_login"


@dataclass(frozen=True)
class Settings:
    """The conversion's parameters, recorded with every aggregate row so that recomputed history can be told apart."""

    threshold: int
    window: timedelta

    @property
    def window_seconds(self) -> int:
        """The window in whole seconds, as stored."""
        return int(self.window.total_seconds())

    def describe(self) -> str:
        """The parameters in words, e.g. 'talk time >= 30 s, login within 48 h'."""
        hours = self.window.total_seconds() / 3600
        return f"talk time >= {self.threshold} s, login within {hours:g} h"


def conversion_metric(mart: Mart) -> FirstEventWithin:
    """The calls' first-login-after-the-call metric, as the mart declares it."""
    return next(m for m in mart.fact(CALLS.name).metrics if m.column == CONVERSION)


def settings_of(mart: Mart) -> Settings:
    """The threshold and window declared by the mart's conversion metric."""
    metric = conversion_metric(mart)
    return Settings(threshold=metric.threshold, window=metric.window)


class Calls(NamedTuple):
    """Per-call inputs of the measures: one row per call of the days being computed."""

    day: sa.ColumnElement[Any]
    campaign: sa.ColumnElement[Any]
    agent: sa.ColumnElement[Any]
    channel: sa.ColumnElement[Any]
    talk: sa.ColumnElement[Any]
    total: sa.ColumnElement[Any]
    login: sa.ColumnElement[Any]
    to_login: sa.ColumnElement[Any]
    threshold: sa.ColumnElement[Any]


@dataclass(frozen=True)
class Grain:
    """A column of an aggregate's grain and the per-call value it groups by."""

    name: str
    type: Callable[[], sa.types.TypeEngine[Any]]
    of: Callable[[Calls], sa.ColumnElement[Any]]


@dataclass(frozen=True)
class Measure:
    """An aggregate column, its meaning and its SQL over the calls of one group."""

    name: str
    type: Callable[[], sa.types.TypeEngine[Any]]
    doc: str
    of: Callable[[Calls], sa.ColumnElement[Any]]


def _count_if(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
    return sa.func.sum(sa.case((condition, 1), else_=0))


def _ratio(numerator: sa.ColumnElement[Any], denominator: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.cast(numerator, sa.Double) / sa.func.nullif(sa.cast(denominator, sa.Double), 0)


def _effective(c: Calls) -> sa.ColumnElement[Any]:
    return _count_if(c.talk >= c.threshold)


GRAIN = (
    Grain("dia", sa.Date, lambda c: c.day),
    Grain(CAMPAIGN, sa.String, lambda c: c.campaign),
    Grain(AGENT, sa.Integer, lambda c: c.agent),
)
CHANNEL_GRAIN = (*GRAIN, Grain(CHANNEL, sa.Integer, lambda c: c.channel))

_CONVERSIONS = Measure(
    "conversiones", sa.BigInteger, "calls followed by a login within the window", lambda c: sa.func.count(c.login)
)
_TO_LOGIN = Measure(
    "segundos_hasta_login",
    sa.BigInteger,
    "sum over conversions of seconds from call to login",
    lambda c: sa.cast(sa.func.sum(c.to_login), sa.BigInteger),
)
_HOURS_TO_LOGIN = Measure(
    "horas_hasta_login_promedio",
    sa.Double,
    "average hours from call to its first login, over conversions",
    lambda c: sa.cast(sa.func.avg(c.to_login), sa.Double) / 3600.0,
)

MEASURES = (
    Measure("llamadas", sa.BigInteger, "calls", lambda c: sa.func.count()),
    Measure("contactos", sa.BigInteger, "calls with talk time > 0", lambda c: _count_if(c.talk > 0)),
    Measure("contactos_efectivos", sa.BigInteger, "calls with talk time >= the threshold", _effective),
    _CONVERSIONS,
    Measure(
        "tasa_conversion",
        sa.Double,
        "conversions / effective contacts (NULL without effective contacts)",
        lambda c: _ratio(sa.func.count(c.login), _effective(c)),
    ),
    Measure("segundos_hablados", sa.BigInteger, "total talk time, seconds", lambda c: sa.func.sum(c.talk)),
    Measure("segundos_totales", sa.BigInteger, "total call time, seconds", lambda c: sa.func.sum(c.total)),
    Measure(
        "promedio_segundos_hablados",
        sa.Double,
        "average talk time per call, seconds",
        lambda c: sa.cast(sa.func.avg(c.talk), sa.Double),
    ),
    Measure(
        "promedio_segundos_totales",
        sa.Double,
        "average total time per call, seconds",
        lambda c: sa.cast(sa.func.avg(c.total), sa.Double),
    ),
    _TO_LOGIN,
    _HOURS_TO_LOGIN,
)
CHANNEL_MEASURES = (_CONVERSIONS, _TO_LOGIN, _HOURS_TO_LOGIN)


@dataclass(frozen=True)
class Aggregate:
    """One aggregate table: its grain, its measures, and whether it counts converted calls only."""

    name: str
    grain: tuple[Grain, ...]
    measures: tuple[Measure, ...]
    converted_only: bool
    doc: str


AGGREGATES = (
    Aggregate(AGG_DAILY, GRAIN, MEASURES, False, "Calls and conversions per day, campaign and agent."),
    Aggregate(AGG_CHANNEL, CHANNEL_GRAIN, CHANNEL_MEASURES, True, "Conversions per day, campaign, agent and channel."),
)


def _table(metadata: sa.MetaData, aggregate: Aggregate) -> sa.Table:
    keys = [sa.Column(g.name, g.type(), nullable=False) for g in aggregate.grain]
    parameters = [sa.Column(THRESHOLD, sa.Integer, nullable=False), sa.Column(WINDOW, sa.Integer, nullable=False)]
    measures = [sa.Column(m.name, m.type(), comment=m.doc) for m in aggregate.measures]
    return sa.Table(
        aggregate.name,
        metadata,
        *keys,
        *parameters,
        *measures,
        sa.Column(COMPUTED_AT, sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint(THRESHOLD, WINDOW, *(g.name for g in aggregate.grain)),
        comment=aggregate.doc,
    )


def aggregate_tables(metadata: sa.MetaData) -> list[sa.Table]:
    """The aggregate tables, declared on metadata (the mart's schema adds them to its own)."""
    return [_table(metadata, aggregate) for aggregate in AGGREGATES]


class Aggregates(NamedTuple):
    """The aggregate tables of a mart."""

    daily: sa.Table
    channel: sa.Table


def aggregates_of(schema: Schema) -> Aggregates:
    """The schema's aggregate tables; declared apart when the schema does not list them."""
    if AGG_DAILY in schema.tables:
        return Aggregates(schema[AGG_DAILY], schema[AGG_CHANNEL])
    daily, channel = aggregate_tables(sa.MetaData())
    return Aggregates(daily, channel)


def create_aggregate_tables(conn: sa.Connection, schema: Schema) -> None:
    """Create the aggregate tables if missing (`callmart init` does it once the schema lists them)."""
    for table in aggregates_of(schema):
        table.create(conn, checkfirst=True)


@dataclass
class Touched:
    """What a run changed: the periods it loaded, and the time spans of the events (logins) that landed."""

    periods: list[tuple[datetime, datetime]] = field(default_factory=list)
    events: list[tuple[datetime, datetime]] = field(default_factory=list)

    def add_period(self, start: datetime, end: datetime) -> None:
        """A loaded period [start, end)."""
        self.periods.append((start, end))

    def add_events(self, span: tuple[datetime, datetime] | None) -> None:
        """The first and last time of the events that landed in a dimension load, if any."""
        if span is not None:
            self.events.append(span)

    def days(self, window: timedelta) -> list[date]:
        """The days whose aggregates may have changed: the periods' days, and the days a call could meet the events."""
        # A call meets an event in [its time, its time + window): from the first event minus the window to the last.
        days: set[date] = set()
        for start, end in self.periods:
            days.update(_days(start.date(), end - timedelta(microseconds=1)))
        for first, last in self.events:
            days.update(_days((first - window).date(), last))
        return sorted(days)


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
    from .dimension import CHANGED, NEW, NEW_VERSION  # the dimension loader imports the schema, which imports this

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
    fact, logins = schema[CALLS.name], schema[metric.events]
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
                sa.and_(logins.c[login_key] == fact.c[metric.column], login_time >= _midnight(start)),
            )
        )
        .where(call_time >= _midnight(start), call_time < _midnight(end))
        .subquery("calls")
    )
    c = rows.c
    threshold = sa.literal(settings.threshold, sa.Integer)
    return Calls(c.day, c.campaign, c.agent, c.channel, c.talk, c.total, c.login, c.to_login, threshold)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time())


def _rows(
    schema: Schema, aggregate: Aggregate, settings: Settings, start: date, end: date, at: datetime
) -> sa.Select[Any]:
    """The aggregate's rows for the days [start, end), named as its table's columns."""
    calls = _calls(schema, settings, start, end)
    grain = [g.of(calls) for g in aggregate.grain]
    select = sa.select(
        *(expression.label(g.name) for g, expression in zip(aggregate.grain, grain, strict=True)),
        sa.literal(settings.threshold, sa.Integer).label(THRESHOLD),
        sa.literal(settings.window_seconds, sa.Integer).label(WINDOW),
        *(m.of(calls).label(m.name) for m in aggregate.measures),
        sa.literal(at, sa.DateTime).label(COMPUTED_AT),
    ).group_by(*grain)
    if aggregate.converted_only:
        select = select.where(calls.login.is_not(None))
    return select


def _of_settings(table: sa.Table, settings: Settings) -> list[sa.ColumnElement[bool]]:
    return [table.c[THRESHOLD] == settings.threshold, table.c[WINDOW] == settings.window_seconds]


def _replace(conn: sa.Connection, schema: Schema, settings: Settings, start: date, end: date, at: datetime) -> int:
    """Recompute the days [start, end) for these settings: delete their rows, insert them again; return rows."""
    written = 0
    for aggregate, table in zip(AGGREGATES, aggregates_of(schema), strict=True):
        conn.execute(sa.delete(table).where(*_of_settings(table, settings), table.c.dia >= start, table.c.dia < end))
        # Read, then written: PostgreSQL runs the SELECT of an INSERT ... SELECT in one process, a plain SELECT
        # with parallel workers (a day of a million calls: 0.28 s against 0.6 s); the groups are few.
        found = [dict(r) for r in conn.execute(_rows(schema, aggregate, settings, start, end, at)).mappings()]
        if found:
            conn.execute(sa.insert(table), found)
        rows = len(found)
        if aggregate.name == AGG_DAILY:
            written += rows
    return written


def _computed(conn: sa.Connection, schema: Schema, settings: Settings) -> bool:
    """Whether any aggregate row exists for these settings."""
    daily = aggregates_of(schema).daily
    return conn.execute(sa.select(daily.c.dia).where(*_of_settings(daily, settings)).limit(1)).first() is not None


def _fact_days(conn: sa.Connection, schema: Schema) -> tuple[date, date] | None:
    """The first and last day of the fact table, if it holds calls."""
    when = schema[CALLS.name].c[CALLS.time_column]
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
    if not _computed(conn, schema, settings):
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
