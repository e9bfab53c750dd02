"""The conversion aggregates' declarations: the metric they count, their grain, measures and table shapes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa

from .declare import UNKNOWN, Fact, FirstEventWithin, Mart, Reference

__all__ = [
    "AGGREGATES",
    "AGG_CHANNEL",
    "AGG_DAILY",
    "AGENT",
    "CAMPAIGN",
    "CHANNEL",
    "COMPUTED_AT",
    "CONVERSION",
    "COUNT",
    "EFFECTIVE",
    "GRAIN",
    "LOGIN_CHANNEL",
    "POSITIVE",
    "ROWS",
    "SUM",
    "THRESHOLD",
    "TOTAL_SECONDS",
    "WINDOW",
    "Aggregate",
    "Calls",
    "Grain",
    "Measure",
    "Part",
    "Settings",
    "agent_reference",
    "aggregate_table",
    "aggregate_tables",
    "channel_reference",
    "conversion_fact",
    "conversion_metric",
    "aggregate_rows",
    "day_ranges",
    "grain_values",
    "midnight",
    "settings_of",
]

AGG_DAILY = "agg_conversion_diaria"
AGG_CHANNEL = "agg_conversion_canal_diaria"
THRESHOLD, WINDOW, COMPUTED_AT = "umbral_segundos", "ventana_segundos", "calculado_en"

CONVERSION = "key_login_post_llamada"
"""The fact column holding the conversion: the first login after the call."""
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


def conversion_fact(mart: Mart) -> Fact:
    """The fact whose rows the aggregates count: the one declaring the conversion metric."""
    return next(f for f in mart.facts if any(m.column == CONVERSION for m in f.metrics))


def conversion_metric(mart: Mart) -> FirstEventWithin:
    """The first-login-after-the-call metric, as the mart declares it."""
    return next(m for m in conversion_fact(mart).metrics if m.column == CONVERSION)


def agent_reference(mart: Mart) -> Reference:
    """The calls' reference to their agent: the agent grain holds its keys."""
    return mart.reference(conversion_fact(mart).name, AGENT)


def channel_reference(mart: Mart) -> Reference:
    """The events' reference to their digital channel: the channel grain holds its keys."""
    return mart.reference(conversion_metric(mart).events, LOGIN_CHANNEL)


def settings_of(mart: Mart) -> Settings:
    """The threshold and window declared by the mart's conversion metric."""
    metric = conversion_metric(mart)
    return Settings(threshold=metric.threshold, window=metric.window)


def midnight(day: date) -> datetime:
    """The day's first moment."""
    return datetime.combine(day, time())


def day_ranges(days: Iterable[date]) -> list[tuple[date, date]]:
    """Consecutive days as half-open ranges [first, day after last)."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if ranges and ranges[-1][1] == day:
            ranges[-1] = (ranges[-1][0], day + timedelta(days=1))
        else:
            ranges.append((day, day + timedelta(days=1)))
    return ranges


def grain_values(fact: sa.FromClause, time_column: str) -> dict[str, sa.ColumnElement[Any]]:
    """The SQL values a call of the fact table is grouped by, by grain column: its day, its campaign ('unknown' when
    none) and its agent."""
    return {
        "dia": sa.cast(fact.c[time_column], sa.Date),
        CAMPAIGN: sa.func.coalesce(fact.c[CAMPAIGN], UNKNOWN),
        AGENT: fact.c[AGENT],
    }


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


def aggregate_table(metadata: sa.MetaData, aggregate: Aggregate) -> sa.Table:
    """The aggregate's table: its grain and the settings as primary key, its measures, when each row was computed."""
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
    return [aggregate_table(metadata, aggregate) for aggregate in AGGREGATES]


def aggregate_rows(
    aggregate: Aggregate, settings: Settings, groups: Iterable[Parts], at: datetime
) -> list[dict[str, Any]]:
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
