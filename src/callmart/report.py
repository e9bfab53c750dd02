"""The conversion report's data: aggregates of a period by day, campaign, agent and channel, the lift over two
baselines, and data quality. One set of queries for every engine: a mart whose engine takes no SQLAlchemy hands over
the rows they read (`tables_read`), which an in-memory DuckDB then holds (`report_of_tables`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from . import engines
from ._errors import MartNotReady
from .aggregates import (
    AGENT,
    CAMPAIGN,
    CHANNEL,
    THRESHOLD,
    WINDOW,
    Settings,
    agent_reference,
    channel_reference,
    settings_of,
)
from .analytics import aggregates_of
from .declare import UNKNOWN, Dimension, Fact
from .lift import BASELINES, COUNTS, EFFECTIVE_CALLS, TOO_FEW, lift_values
from .lift_analytics import lift_tables_of
from .schema import REJECTS, RUN_STEPS, RUNS, Schema
from .status import Status

__all__ = [
    "Balance",
    "ChannelGroup",
    "Group",
    "Lift",
    "LiftData",
    "LiftGroup",
    "RejectCount",
    "ReportData",
    "RunLine",
    "report_data",
    "report_of_tables",
    "tables_read",
]

SUMS = (
    "llamadas",
    "contactos",
    "contactos_efectivos",
    "conversiones",
    "segundos_hablados",
    "segundos_totales",
    "segundos_hasta_login",
)
RECENT_RUNS = 10


@dataclass(frozen=True)
class Group:
    """Sums of one group of calls: a day, a campaign, an agent, or the whole period."""

    label: str
    calls: int
    contacts: int
    effective: int
    conversions: int
    talk_seconds: int
    total_seconds: int
    to_login_seconds: int

    @property
    def rate(self) -> float | None:
        """Conversions per effective contact."""
        return self.conversions / self.effective if self.effective else None

    @property
    def average_talk(self) -> float | None:
        """Average talk time per call, seconds."""
        return self.talk_seconds / self.calls if self.calls else None

    @property
    def average_total(self) -> float | None:
        """Average total time per call, seconds."""
        return self.total_seconds / self.calls if self.calls else None

    @property
    def hours_to_login(self) -> float | None:
        """Average hours from a converted call to its first login."""
        return self.to_login_seconds / self.conversions / 3600 if self.conversions else None


@dataclass(frozen=True)
class ChannelGroup:
    """Conversions that went to one digital channel."""

    label: str
    conversions: int
    to_login_seconds: int

    @property
    def hours_to_login(self) -> float | None:
        """Average hours from call to login on this channel."""
        return self.to_login_seconds / self.conversions / 3600 if self.conversions else None


@dataclass(frozen=True)
class Lift:
    """The conversion rate of effective calls minus a baseline's, and the interval of that difference (None: a side
    with nobody in it)."""

    estimate: float | None
    low: float | None
    high: float | None

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of 0."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


@dataclass(frozen=True)
class LiftGroup:
    """The counts behind the lift of a group of calls (a day, a campaign, an agent, every day), and what follows from
    them: rates, and each baseline's lift with its interval, computed by the lift tables' own function."""

    label: str
    effective: int
    effective_converted: int
    short: int
    short_converted: int
    not_called: int
    not_called_converted: int
    rate: float | None
    short_rate: float | None
    not_called_rate: float | None
    vs_short: Lift
    vs_not_called: Lift

    @classmethod
    def of(cls, label: str, counts: Mapping[Any, Any]) -> LiftGroup:
        """The group of these counts (named as the lift tables' columns)."""
        row = lift_values([counts])[0]
        lifts = [Lift(row[b.lift], row[b.low], row[b.high]) for b in BASELINES]
        rates = [row[s.rate] for s in (EFFECTIVE_CALLS, *(b.share for b in BASELINES))]
        return cls(label, *(row[name] for name in COUNTS), *rates, *lifts)

    @property
    def too_small(self) -> bool:
        """Fewer than TOO_FEW effective calls or short calls: too small to tell its lift over short calls."""
        return min(self.effective, self.short) < TOO_FEW


@dataclass(frozen=True)
class LiftData:
    """The lift over the report's days: in all, per day (days without calls have no counts), and per campaign and
    agent, their counts summed over the days; those too small to tell apart from the ranked ones."""

    total: LiftGroup
    days: tuple[tuple[date, LiftGroup], ...]
    campaigns: tuple[LiftGroup, ...]
    agents: tuple[LiftGroup, ...]

    @staticmethod
    def ranked(groups: Sequence[LiftGroup]) -> tuple[list[LiftGroup], list[LiftGroup]]:
        """The groups large enough to tell, by lift over short calls (highest first), and the others by calls."""
        ranked = [g for g in groups if not g.too_small and g.vs_short.estimate is not None]
        ranked.sort(key=lambda g: (-(g.vs_short.estimate or 0.0), -g.effective, g.label))
        small = sorted((g for g in groups if g not in ranked), key=lambda g: (-g.effective, -g.short, g.label))
        return ranked, small


@dataclass(frozen=True)
class RejectCount:
    """Source rows rejected (errors) or loaded with a doubt (warnings), for one table and reason."""

    severity: str
    table: str
    source: str
    reason: str
    rows: int


@dataclass(frozen=True)
class Balance:
    """Reconciliation of one table's loads behind the period: rows read = loaded + rejected."""

    table: str
    source: str
    steps: int
    read: int
    loaded: int
    rejected: int
    warned: int
    inferred: int


@dataclass(frozen=True)
class RunLine:
    """One recent run."""

    id_run: int
    started: datetime
    finished: datetime | None
    status: str
    steps: int
    failed_steps: int
    error: str | None


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows for the days first to last (both included)."""

    first: date
    last: date
    settings: Settings
    total: Group
    days: tuple[tuple[date, Group], ...]
    campaigns: tuple[Group, ...]
    agents: tuple[Group, ...]
    channels: tuple[ChannelGroup, ...]
    lift: LiftData
    rejects: tuple[RejectCount, ...]
    balance: tuple[Balance, ...]
    runs: tuple[RunLine, ...]


def _group(label: str, row: Any) -> Group:
    values = [int(row[name] or 0) for name in SUMS]
    return Group(label, *values)


def _sums(table: sa.Table) -> list[sa.Label[Any]]:
    return [sa.func.sum(table.c[name]).label(name) for name in SUMS]


def report_data(
    conn: sa.Connection,
    schema: Schema,
    first: date | None = None,
    end: date | None = None,
    settings: Settings | None = None,
) -> ReportData:
    """The report's figures for the days [first, end); by default every day the aggregates hold."""
    settings = settings or settings_of(schema.mart)
    daily = aggregates_of(schema).daily
    if not sa.inspect(conn).has_table(daily.name, schema=daily.schema):
        raise MartNotReady(f"the mart has no {daily.name} table yet; run `callmart init` to add it")
    mine = [daily.c[THRESHOLD] == settings.threshold, daily.c[WINDOW] == settings.window_seconds]
    low, high = conn.execute(sa.select(sa.func.min(daily.c.dia), sa.func.max(daily.c.dia)).where(*mine)).one()
    if low is None and (first is None or end is None):
        raise MartNotReady(
            f"no aggregates for {settings.describe()} yet: load calls with `callmart run`, which computes them"
        )
    first = first or low
    last = (end - timedelta(days=1)) if end else high
    assert first is not None and last is not None
    where = [*mine, daily.c.dia >= first, daily.c.dia <= last]
    return ReportData(
        first=first,
        last=last,
        settings=settings,
        total=_group("all calls", conn.execute(sa.select(*_sums(daily)).where(*where)).mappings().one()),
        days=_by_day(conn, daily, where, first, last),
        campaigns=_by_campaign(conn, daily, where),
        agents=_by_agent(conn, schema, daily, where),
        channels=_by_channel(conn, schema, settings, first, last),
        lift=_lift(conn, schema, settings, first, last),
        rejects=_rejects(conn, schema, first, last),
        balance=_balance(conn, schema, first, last),
        runs=_runs(conn, schema),
    )


def tables_read(schema: Schema) -> dict[sa.Table, str | None]:
    """The tables the report reads, each with the column that dates its rows for the days asked (None: every row
    counts; rows with no date count too)."""
    aggregates = aggregates_of(schema)
    dated = [aggregates.daily, aggregates.channel, *lift_tables_of(schema)]
    dimensions = [agent_reference(schema.mart).dimension, channel_reference(schema.mart).dimension]
    # The run log's steps are all read: the recent runs count their steps whatever their days.
    return {
        **{table: "dia" for table in dated},
        **dict.fromkeys(schema[name] for name in dimensions),
        schema[REJECTS]: "period_start",
        schema[RUN_STEPS]: None,
        schema[RUNS]: None,
    }


def report_of_tables(
    schema: Schema, rows: Mapping[str, pa.Table], first: date | None = None, end: date | None = None
) -> ReportData:
    """report_data over the rows of the tables `tables_read` names, handed over as Arrow tables by name (a table
    missing is one the mart lacks)."""
    # DuckDB scans Arrow in place, in memory: no file, and the same declared queries as on the mart itself.
    url = sa.make_url("duckdb:///:memory:")
    memory = engines.for_url(url)
    engine = memory.create_engine(url)
    try:
        with engine.begin() as conn:
            tables = [table for table in tables_read(schema) if table.name in rows]
            for table in tables:
                table.create(conn)
                memory.bulk_insert(conn, table, rows[table.name].to_batches())
            return report_data(conn, schema, first, end)
    finally:
        engine.dispose()


def _by_day(
    conn: sa.Connection, daily: sa.Table, where: list[Any], first: date, last: date
) -> tuple[tuple[date, Group], ...]:
    """Every day from first to last; a day without calls has zeros (and no rate), so charts show the gap."""
    rows = conn.execute(sa.select(daily.c.dia, *_sums(daily)).where(*where).group_by(daily.c.dia)).mappings()
    found = {row["dia"]: _group(f"{row['dia']:%Y-%m-%d}", row) for row in rows}
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return tuple((day, found.get(day) or Group(f"{day:%Y-%m-%d}", 0, 0, 0, 0, 0, 0, 0)) for day in days)


def _by_campaign(conn: sa.Connection, daily: sa.Table, where: list[Any]) -> tuple[Group, ...]:
    campaign = daily.c[CAMPAIGN]
    rows = conn.execute(sa.select(campaign, *_sums(daily)).where(*where).group_by(campaign)).mappings()
    return tuple(sorted((_group(row[CAMPAIGN], row) for row in rows), key=lambda g: (-g.calls, g.label)))


def _by_agent(conn: sa.Connection, schema: Schema, daily: sa.Table, where: list[Any]) -> tuple[Group, ...]:
    """By agent login; the versions of an agent (history) are one agent."""
    agent = agent_reference(schema.mart)
    dimension = schema.mart.dimension(agent.dimension)
    agents = schema[dimension.name]
    login = agents.c[agent.by]
    name = sa.func.max(_label(agents, dimension)).label("name")
    rows = conn.execute(
        sa.select(login.label("login"), name, *_sums(daily))
        .select_from(daily.join(agents, agents.c[dimension.key] == daily.c[AGENT]))
        .where(*where)
        .group_by(login)
    ).mappings()
    return tuple(sorted((_group(_agent_label(r), r) for r in rows), key=lambda g: (-g.calls, g.label)))


def _label(table: sa.Table, dimension: Dimension) -> sa.ColumnElement[Any]:
    """A member's name for people: the dimension's label attributes joined by spaces."""
    first, *rest = (table.c[name] for name in dimension.label)
    label: sa.ColumnElement[Any] = first
    for column in rest:
        label = label + " " + column
    return label


def _agent_label(row: Any) -> str:
    login, name = row["login"], row["name"]
    if login in (None, UNKNOWN):
        return "unknown agent"
    if not name or UNKNOWN in name:
        return f"{login} (not in agents file)"
    return f"{name} ({login})"


def _by_channel(
    conn: sa.Connection, schema: Schema, settings: Settings, first: date, last: date
) -> tuple[ChannelGroup, ...]:
    channel = aggregates_of(schema).channel
    dimension = schema.mart.dimension(channel_reference(schema.mart).dimension)
    channels = schema[dimension.name]
    label = _label(channels, dimension).label("label")
    rows = conn.execute(
        sa.select(
            label,
            sa.func.sum(channel.c.conversiones).label("conversions"),
            sa.func.sum(channel.c.segundos_hasta_login).label("seconds"),
        )
        .select_from(channel.join(channels, channels.c[dimension.key] == channel.c[CHANNEL]))
        .where(
            channel.c[THRESHOLD] == settings.threshold,
            channel.c[WINDOW] == settings.window_seconds,
            channel.c.dia >= first,
            channel.c.dia <= last,
        )
        .group_by(label)
    ).mappings()
    found = [
        ChannelGroup(
            "unknown channel" if r["label"] in (None, UNKNOWN) else r["label"],
            int(r["conversions"] or 0),
            int(r["seconds"] or 0),
        )
        for r in rows
    ]
    return tuple(sorted(found, key=lambda c: (-c.conversions, c.label)))


def _count_sums(table: sa.Table) -> list[sa.Label[Any]]:
    return [sa.func.sum(table.c[name]).label(name) for name in COUNTS]


def _lift(conn: sa.Connection, schema: Schema, settings: Settings, first: date, last: date) -> LiftData:
    """The lift tables' counts over the days, summed per day, campaign and agent; rates and intervals from the sums."""
    daily, by_campaign, by_agent = lift_tables_of(schema)
    if not sa.inspect(conn).has_table(daily.name, schema=daily.schema):
        raise MartNotReady(f"the mart has no {daily.name} table yet; run `callmart init` to add it")

    def where(table: sa.Table) -> list[Any]:
        return [
            table.c[THRESHOLD] == settings.threshold,
            table.c[WINDOW] == settings.window_seconds,
            table.c.dia >= first,
            table.c.dia <= last,
        ]

    total = conn.execute(sa.select(*_count_sums(daily)).where(*where(daily))).mappings().one()
    per_day = sa.select(daily.c.dia, *_count_sums(daily)).where(*where(daily)).group_by(daily.c.dia)
    found = {row["dia"]: row for row in conn.execute(per_day).mappings().all()}
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    campaign = by_campaign.c[CAMPAIGN]
    per_campaign = sa.select(campaign, *_count_sums(by_campaign)).where(*where(by_campaign)).group_by(campaign)
    # Read before the next statement: DuckDB's connection runs one at a time.
    campaigns = [LiftGroup.of(row[CAMPAIGN], row) for row in conn.execute(per_campaign).mappings().all()]
    agent = agent_reference(schema.mart)
    dimension = schema.mart.dimension(agent.dimension)
    agents = schema[dimension.name]
    login = agents.c[agent.by]
    per_agent = (
        sa.select(login.label("login"), sa.func.max(_label(agents, dimension)).label("name"), *_count_sums(by_agent))
        .select_from(by_agent.join(agents, agents.c[dimension.key] == by_agent.c[AGENT]))
        .where(*where(by_agent))
        .group_by(login)
    )
    return LiftData(
        total=LiftGroup.of("all calls", total),
        days=tuple((day, LiftGroup.of(f"{day:%Y-%m-%d}", found.get(day, {}))) for day in days),
        campaigns=_largest_first(campaigns),
        agents=_largest_first(LiftGroup.of(_agent_label(row), row) for row in conn.execute(per_agent).mappings()),
    )


def _largest_first(groups: Iterable[LiftGroup]) -> tuple[LiftGroup, ...]:
    """The groups by effective calls, largest first, then by label: one order whatever order the engine groups in."""
    return tuple(sorted(groups, key=lambda g: (-g.effective, g.label)))


def _latest_steps(schema: Schema, first: date, last: date) -> sa.Subquery:
    """Per table and period, the latest run's successful step: the load whose rows the mart holds now."""
    # A failed reload leaves the previous load in place; dimensions and undated rows have no period.
    steps = schema[RUN_STEPS]
    start = datetime.combine(first, datetime.min.time())
    end = datetime.combine(last + timedelta(days=1), datetime.min.time())
    return (
        sa.select(steps.c.table_name, steps.c.period_start, sa.func.max(steps.c.id_run).label("id_run"))
        .where(
            steps.c.status == Status.DONE,
            sa.or_(steps.c.period_start.is_(None), sa.and_(steps.c.period_start >= start, steps.c.period_start < end)),
        )
        .group_by(steps.c.table_name, steps.c.period_start)
        .subquery("latest")
    )


def _same_step(latest: sa.Subquery, table: sa.Table) -> sa.ColumnElement[bool]:
    return sa.and_(
        table.c.table_name == latest.c.table_name,
        table.c.id_run == latest.c.id_run,
        table.c.period_start.is_not_distinct_from(latest.c.period_start),
    )


def _rejects(conn: sa.Connection, schema: Schema, first: date, last: date) -> tuple[RejectCount, ...]:
    rejects = schema[REJECTS]
    latest = _latest_steps(schema, first, last)
    columns = (rejects.c.severity, rejects.c.table_name, rejects.c.reason)
    rows = conn.execute(
        sa.select(*columns, sa.func.count().label("rows"))
        .select_from(rejects.join(latest, _same_step(latest, rejects)))
        .group_by(*columns)
    )
    found = [
        RejectCount(severity, table, _source(schema, table), reason, int(n)) for severity, table, reason, n in rows
    ]
    return tuple(sorted(found, key=lambda r: (r.severity != "error", -r.rows, r.table, r.reason)))


def _source(schema: Schema, table: str) -> str:
    """The files a table is loaded from, e.g. Llamadas*.csv."""
    tables: tuple[Dimension | Fact, ...] = (*schema.mart.dimensions, *schema.mart.facts)
    return next((t.source.pattern for t in tables if t.name == table), "")


def _balance(conn: sa.Connection, schema: Schema, first: date, last: date) -> tuple[Balance, ...]:
    steps = schema[RUN_STEPS]
    latest = _latest_steps(schema, first, last)
    counts = ("rows_read", "rows_loaded", "rows_rejected", "rows_warned", "inferred_members")
    order = [*(d.name for d in schema.mart.dimensions), *(f.name for f in schema.mart.facts)]
    rows = conn.execute(
        sa.select(steps.c.table_name, sa.func.count(), *(sa.func.sum(steps.c[c]) for c in counts))
        .select_from(steps.join(latest, _same_step(latest, steps)))
        .where(steps.c.table_name.in_(order))
        .group_by(steps.c.table_name)
    )
    found = [
        Balance(table, _source(schema, table), int(n), *(int(v or 0) for v in values)) for table, n, *values in rows
    ]
    return tuple(sorted(found, key=lambda b: order.index(b.table)))


def _runs(conn: sa.Connection, schema: Schema) -> tuple[RunLine, ...]:
    runs, steps = schema[RUNS], schema[RUN_STEPS]
    counted = (
        sa.select(
            steps.c.id_run,
            sa.func.count().label("steps"),
            sa.func.sum(sa.case((steps.c.status != Status.DONE, 1), else_=0)).label("failed"),
        )
        .group_by(steps.c.id_run)
        .subquery("counted")
    )
    rows = conn.execute(
        sa.select(runs, counted.c.steps, counted.c.failed)
        .select_from(runs.outerjoin(counted, counted.c.id_run == runs.c.id_run))
        .order_by(runs.c.id_run.desc())
        .limit(RECENT_RUNS)
    ).mappings()
    return tuple(
        RunLine(
            id_run=r["id_run"],
            started=r["started_at"],
            finished=r["finished_at"],
            status=r["status"],
            steps=int(r["steps"] or 0),
            failed_steps=int(r["failed"] or 0),
            error=r["error_message"],
        )
        for r in rows
    )
