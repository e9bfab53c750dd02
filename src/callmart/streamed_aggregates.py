"""The conversion aggregates of a period's whole days, summed in the client as the period's fact rows stream by, so
that a loaded day is not scanned again to aggregate it; and the lift of the days the period's calls count in,
computed by the database in the period's transaction."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from .aggregates import (
    AGENT,
    AGGREGATES,
    CAMPAIGN,
    COUNT,
    EFFECTIVE,
    LOGIN_CHANNEL,
    POSITIVE,
    ROWS,
    SUM,
    TOTAL_SECONDS,
    Aggregate,
    Calls,
    Part,
    aggregate_rows,
    conversion_fact,
    conversion_metric,
    settings_of,
)
from .analytics import aggregates_of, has_aggregates, has_lift, midnight, write_days, write_lift
from .declare import UNKNOWN, Fact, FirstEventWithin
from .lift import affected_days
from .metric import SECONDS_TO_EVENT
from .schema import Schema

__all__ = ["COMPACT_AFTER", "GROUP_EVERY", "Settled", "StreamedAggregates"]

GROUP_EVERY = 1 << 15
"""Calls kept before they are grouped: small batches cost more in the grouping's fixed costs than in rows; many
calls kept hold their batches' memory."""

COMPACT_AFTER = 16
"""Groups' tables kept before they are summed into one."""

DAYS_PER_WRITE = 28
"""Days of groups written at a time: a year's, as rows of Python values, held tens of MB."""


class Settled(NamedTuple):
    """The days whose aggregates, and whose lift, a period's load wrote."""

    aggregates: list[date]
    lift: list[date]


class StreamedAggregates:
    """Watches a period's final fact rows (fact.Watcher): each batch's groups and their parts, kept per aggregate;
    `write` sums them and writes the aggregates of the period's whole days, and the lift of the days its calls count
    in, in the load's transaction."""

    def __init__(self, schema: Schema, fact: Fact) -> None:
        self.schema = schema
        self.metric = conversion_metric(schema.mart)
        self.settings = settings_of(schema.mart)
        self.applies = fact.name == conversion_fact(schema.mart).name
        self.watched = False
        self._groups: dict[str, list[pa.Table]] = {a.name: [] for a in AGGREGATES}
        self._calls: list[pa.RecordBatch] = []
        self._waiting = 0

    def event_columns(self, metric: FirstEventWithin) -> tuple[str, ...]:
        """The events' columns the aggregates need with each call's first event: the login's channel."""
        return (LOGIN_CHANNEL,) if self.applies and metric.column == self.metric.column else ()

    def begin(self) -> None:
        """The load will show every final row of the period."""
        self.watched = self.applies

    def watch(self, rows: pa.RecordBatch, firsts: Mapping[str, pa.RecordBatch]) -> None:
        """Add a batch of final fact rows, with each row's first events by metric column."""
        if not self.watched:
            return
        metric = self.metric
        first = firsts[metric.column]
        calls = {
            "day": pc.cast(rows.column(metric.fact_time), pa.date32()),
            "campaign": pc.coalesce(rows.column(CAMPAIGN), pa.scalar(UNKNOWN, rows.schema.field(CAMPAIGN).type)),
            "agent": rows.column(AGENT),
            "channel": first.column(LOGIN_CHANNEL),
            "talk": rows.column(metric.threshold_column),
            "total": rows.column(TOTAL_SECONDS),
            "login": first.column(metric.column),
            "to_login": first.column(SECONDS_TO_EVENT),
        }
        self._calls.append(pa.RecordBatch.from_pydict(calls))
        self._waiting += rows.num_rows
        if self._waiting >= GROUP_EVERY:
            self._group()

    def _group(self) -> None:
        """Group the calls kept, and keep their groups instead."""
        if not self._calls:
            return
        table = pa.Table.from_batches(self._calls)
        self._calls, self._waiting = [], 0
        threshold = pa.scalar(self.settings.threshold, pa.int32())
        for aggregate in AGGREGATES:
            chosen = table.filter(pc.is_valid(table["login"])) if aggregate.converted_only else table
            calls = Calls(**{name: chosen[name] for name in chosen.column_names}, threshold=threshold)
            kept = self._groups[aggregate.name]
            kept.append(_groups(aggregate, calls))
            if len(kept) >= COMPACT_AFTER:
                # Each small table pins pages of its own, which add up at the load's peak.
                kept[:] = [_summed(aggregate, kept)]

    def write(self, conn: sa.Connection, start: datetime, end: datetime) -> Settled:
        """Write the aggregates of the whole days of [start, end) from the rows watched, and the lift of the days
        the period's calls count in from the mart as it now stands; return those days. Writes none of either while
        it was never computed for these settings and the fact table holds other days: the run's refresh then
        computes every day."""
        if not self.watched:
            return Settled([], [])
        at = datetime.now().replace(microsecond=0)
        return Settled(self._write_aggregates(conn, start, end, at), self._write_lift(conn, start, end, at))

    def _write_aggregates(self, conn: sa.Connection, start: datetime, end: datetime, at: datetime) -> list[date]:
        first = start.date() if start == midnight(start.date()) else start.date() + timedelta(days=1)
        last = end.date()  # the day after the last whole day
        if first >= last:
            return []
        self._group()
        if not has_aggregates(conn, self.schema, self.settings) and _other_days(conn, self.schema, first, last):
            return []
        for aggregate, table in zip(AGGREGATES, aggregates_of(self.schema), strict=True):
            kept = self._groups[aggregate.name]
            summed = _summed(aggregate, kept) if kept else None
            for offset in range(0, (last - first).days, DAYS_PER_WRITE):
                days = first + timedelta(days=offset), min(last, first + timedelta(days=offset + DAYS_PER_WRITE))
                rows = aggregate_rows(aggregate, self.settings, _of_days(summed, *days), at)
                write_days(conn, table, self.settings, *days, rows)
        return [first + timedelta(days=n) for n in range((last - first).days)]

    def _write_lift(self, conn: sa.Connection, start: datetime, end: datetime, at: datetime) -> list[date]:
        days = affected_days(start, end, self.settings.window)
        first, last = days[0], days[-1] + timedelta(days=1)
        if not has_lift(conn, self.schema, self.settings) and _other_days(conn, self.schema, first, last):
            return []
        write_lift(conn, self.schema, self.settings, first, last, at)
        return days


def _part(part: Part, calls: Calls) -> tuple[pa.Array, str, pc.CountOptions | None]:
    """The part's input column and how a group sums it."""
    if part.kind == ROWS:
        return calls.day, "count", pc.CountOptions(mode="all")
    values = getattr(calls, part.of)
    if part.kind == COUNT:
        return values, "count", pc.CountOptions(mode="only_valid")
    if part.kind == SUM:
        return pc.cast(values, pa.int64()), "sum", None
    if part.kind == POSITIVE:
        test = pc.greater(values, pa.scalar(0, values.type))
    elif part.kind == EFFECTIVE:
        test = pc.greater_equal(values, pc.cast(calls.threshold, values.type))
    else:
        raise ValueError(f"unknown kind of part: {part.kind}")
    return pc.cast(pc.fill_null(test, False), pa.int64()), "sum", None


def _groups(aggregate: Aggregate, calls: Calls) -> pa.Table:
    """The batch's groups of the aggregate's grain, with their parts."""
    columns: dict[str, Any] = {g.name: g.of(calls) for g in aggregate.grain}
    sums = []
    for part in aggregate.parts:
        values, how, options = _part(part, calls)
        columns[part.name] = values
        sums.append((part.name, how, options))
    table = pa.table(columns)
    grouped = table.group_by([g.name for g in aggregate.grain], use_threads=False).aggregate(sums)
    return grouped.rename_columns([n.removesuffix("_count").removesuffix("_sum") for n in grouped.column_names])


def _summed(aggregate: Aggregate, groups: list[pa.Table]) -> pa.Table:
    """The groups of several tables as one table, their parts summed."""
    grain = [g.name for g in aggregate.grain]
    summed = (
        pa.concat_tables(groups)
        .group_by(grain, use_threads=False)
        .aggregate([(p.name, "sum") for p in aggregate.parts])
    )
    return summed.rename_columns([n.removesuffix("_sum") for n in summed.column_names]).combine_chunks()


def _of_days(summed: pa.Table | None, first: date, last: date) -> list[dict[str, Any]]:
    """The summed groups of the days [first, last)."""
    if summed is None:
        return []
    day = summed["dia"]
    chosen: list[dict[str, Any]] = summed.filter(
        pc.and_(pc.greater_equal(day, pa.scalar(first)), pc.less(day, pa.scalar(last)))
    ).to_pylist()
    return chosen


def _other_days(conn: sa.Connection, schema: Schema, first: date, last: date) -> bool:
    """Whether the fact table holds calls outside the days [first, last)."""
    fact = conversion_fact(schema.mart)
    when = schema[fact.name].c[fact.time_column]
    outside = sa.select(when).where(sa.or_(when < midnight(first), when >= midnight(last))).limit(1)
    return conn.execute(outside).first() is not None
