"""Conversion aggregates by day, campaign and agent (and by digital channel), refreshed for the days a run touched."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa

from . import dialect, locking
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
    "computed",
    "create_aggregate_tables",
    "day_ranges",
    "finished",
    "landed_events",
    "midnight",
    "rebuild_aggregates",
    "refresh_aggregates",
    "settings_of",
    "write_days",
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
    doc: str


GRAIN = (
    Grain("dia", sa.Date, lambda c: c.day, "day of the calls (fecha_llamada's day)"),
    Grain(CAMPAIGN, sa.String, lambda c: c.campaign, "campaign of the calls (fact_llamadas.campania_llamada)"),
    Grain(AGENT, sa.Integer, lambda c: c.agent, "agent of the calls: dim_agentes.key_agente"),
)
CHANNEL_GRAIN = (
    *GRAIN,
    Grain(CHANNEL, sa.Integer, lambda c: c.channel, "digital channel of the first login: dim_canales_digitales key"),
)


@dataclass(frozen=True)
class Part:
    """A sum over a group's calls that measures are computed from: the parts of two sets of calls add up to the
    parts of their union, so a load can sum them batch by batch as its rows stream by, and the database a day.

    `kind`: ROWS (calls), COUNT (calls where the input `of` is not null), SUM (of `of`), POSITIVE or EFFECTIVE
    (calls where `of` is above 0, or at least the threshold)."""

    name: str
    kind: str
    of: str = ""


ROWS, COUNT, SUM, POSITIVE, EFFECTIVE = "rows", "count", "sum", "positive", "effective"

_CALLS = Part("llamadas", ROWS)
_CONTACTS = Part("contactos", POSITIVE, "talk")
_EFFECTIVE = Part("contactos_efectivos", EFFECTIVE, "talk")
_CONVERTED = Part("conversiones", COUNT, "login")
_TALK = Part("segundos_hablados", SUM, "talk")
_TALKED = Part("llamadas_con_hablado", COUNT, "talk")
_TOTAL = Part("segundos_totales", SUM, "total")
_TIMED = Part("llamadas_con_total", COUNT, "total")
_TO_LOGIN_SUM = Part("segundos_hasta_login", SUM, "to_login")


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


Parts = Mapping[Any, Any]
"""A group's parts by name."""


def _ratio(numerator: Any, denominator: Any) -> float | None:
    return None if not denominator or numerator is None else numerator / denominator


@dataclass(frozen=True)
class Measure:
    """An aggregate column, its meaning, the parts it is computed from and how."""

    name: str
    type: Callable[[], sa.types.TypeEngine[Any]]
    doc: str
    parts: tuple[Part, ...]
    of: Callable[[Parts], Any]


def _the(part: Part, type_: Callable[[], sa.types.TypeEngine[Any]], doc: str) -> Measure:
    """A measure that is one of the parts as it is."""
    return Measure(part.name, type_, doc, (part,), lambda p: p[part.name])


def _hours_to_login(p: Parts) -> float | None:
    mean = _ratio(p[_TO_LOGIN_SUM.name], p[_CONVERTED.name])
    return None if mean is None else mean / 3600.0


_CONVERSIONS = _the(_CONVERTED, sa.BigInteger, "calls followed by a login within the window")
_TO_LOGIN = _the(_TO_LOGIN_SUM, sa.BigInteger, "sum over conversions of seconds from call to login")
_HOURS_TO_LOGIN = Measure(
    "horas_hasta_login_promedio",
    sa.Double,
    "average hours from call to its first login, over conversions",
    (_TO_LOGIN_SUM, _CONVERTED),
    _hours_to_login,
)

MEASURES = (
    _the(_CALLS, sa.BigInteger, "calls"),
    _the(_CONTACTS, sa.BigInteger, "calls with talk time > 0"),
    _the(_EFFECTIVE, sa.BigInteger, "calls with talk time >= the threshold"),
    _CONVERSIONS,
    Measure(
        "tasa_conversion",
        sa.Double,
        "conversions / effective contacts (NULL without effective contacts)",
        (_CONVERTED, _EFFECTIVE),
        lambda p: _ratio(p[_CONVERTED.name], p[_EFFECTIVE.name]),
    ),
    _the(_TALK, sa.BigInteger, "total talk time, seconds"),
    _the(_TOTAL, sa.BigInteger, "total call time, seconds"),
    Measure(
        "promedio_segundos_hablados",
        sa.Double,
        "average talk time per call, seconds",
        (_TALK, _TALKED),
        lambda p: _ratio(p[_TALK.name], p[_TALKED.name]),
    ),
    Measure(
        "promedio_segundos_totales",
        sa.Double,
        "average total time per call, seconds",
        (_TOTAL, _TIMED),
        lambda p: _ratio(p[_TOTAL.name], p[_TIMED.name]),
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

    @property
    def parts(self) -> tuple[Part, ...]:
        """The parts its measures are computed from, each once."""
        return tuple(dict.fromkeys(p for m in self.measures for p in m.parts))


AGGREGATES = (
    Aggregate(
        AGG_DAILY,
        GRAIN,
        MEASURES,
        False,
        "Calls and conversions per day, campaign and agent, for one threshold and window (filter on umbral_segundos "
        "and ventana_segundos). Sums are stored beside averages: roll up by adding sums, never averaging averages.",
    ),
    Aggregate(
        AGG_CHANNEL,
        CHANNEL_GRAIN,
        CHANNEL_MEASURES,
        True,
        "Conversions per day, campaign, agent and digital channel of the first login, for one threshold and window.",
    ),
)


def _table(metadata: sa.MetaData, aggregate: Aggregate) -> sa.Table:
    keys = [sa.Column(g.name, g.type(), nullable=False, comment=g.doc) for g in aggregate.grain]
    parameters = [
        sa.Column(THRESHOLD, sa.Integer, nullable=False, comment="talk-time threshold of the metric, seconds"),
        sa.Column(WINDOW, sa.Integer, nullable=False, comment="window of the metric after the call, seconds"),
    ]
    measures = [sa.Column(m.name, m.type(), comment=m.doc) for m in aggregate.measures]
    return sa.Table(
        aggregate.name,
        metadata,
        *keys,
        *parameters,
        *measures,
        sa.Column(COMPUTED_AT, sa.DateTime, nullable=False, comment="when this row was computed"),
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


def finished(aggregate: Aggregate, settings: Settings, groups: Iterable[Parts], at: datetime) -> list[dict[str, Any]]:
    """The aggregate table's rows of groups given by their grain and parts."""
    return [
        {
            **{g.name: group[g.name] for g in aggregate.grain},
            THRESHOLD: settings.threshold,
            WINDOW: settings.window_seconds,
            **{m.name: m.of(group) for m in aggregate.measures},
            COMPUTED_AT: at,
        }
        for group in groups
    ]


def _of_settings(table: sa.Table, settings: Settings) -> list[sa.ColumnElement[bool]]:
    return [table.c[THRESHOLD] == settings.threshold, table.c[WINDOW] == settings.window_seconds]


def write_days(
    conn: sa.Connection, table: sa.Table, settings: Settings, start: date, end: date, rows: list[dict[str, Any]]
) -> None:
    """Replace the table's rows of the days [start, end) for these settings with `rows`."""
    conn.execute(sa.delete(table).where(*_of_settings(table, settings), table.c.dia >= start, table.c.dia < end))
    dialect.insert_rows(conn, table, rows)


def _replace(conn: sa.Connection, schema: Schema, settings: Settings, start: date, end: date, at: datetime) -> int:
    """Recompute the days [start, end) for these settings: delete their rows, insert them again; return rows."""
    written = 0
    for aggregate, table in zip(AGGREGATES, aggregates_of(schema), strict=True):
        # Read, then written: PostgreSQL runs the SELECT of an INSERT ... SELECT in one process, a plain SELECT
        # with parallel workers (a day of a million calls: 0.28 s against 0.6 s); the groups are few.
        groups = conn.execute(_parts(schema, aggregate, settings, start, end)).mappings().all()
        rows = finished(aggregate, settings, groups, at)
        write_days(conn, table, settings, start, end, rows)
        if aggregate.name == AGG_DAILY:
            written += len(rows)
    return written


def computed(conn: sa.Connection, schema: Schema, settings: Settings) -> bool:
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
    if not computed(conn, schema, settings):
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
