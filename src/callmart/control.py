"""The control table dm_processes: which periods of which fact table to load, and how each went."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TypeVar

import sqlalchemy as sa

from . import engines, locking
from ._errors import ConfigError
from .schema import Schema
from .status import Status, queued_again

__all__ = [
    "Period",
    "business_date",
    "catch_up_periods",
    "claim_run_of",
    "daily_periods",
    "owed_days",
    "enqueue",
    "free_abandoned",
    "counts",
    "listing",
    "mark",
    "mark_loaded",
    "pending_periods",
    "requeue_failed",
    "requeue_running",
    "wake_waiting",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Period:
    """One row of the control table."""

    id_process: int
    fact_table: str
    start: datetime
    end: datetime


def daily_periods(first: date, last: date) -> list[tuple[datetime, datetime]]:
    """One [day, next day) period per day in [first, last)."""
    if last <= first:
        raise ConfigError(f"empty period: --to {last} must be after --from {first}")
    days = (last - first).days
    return [
        (datetime.combine(first + timedelta(d), time()), datetime.combine(first + timedelta(d + 1), time()))
        for d in range(days)
    ]


def enqueue(
    conn: sa.Connection, schema: Schema, fact_table: str, periods: Iterable[tuple[datetime, datetime]], force: bool
) -> dict[str, int]:
    """Queue periods as pending; skip those already pending, waiting, running or done unless forced (a failed
    one is queued again). Set-based: one read of the range, then inserts and an update of many rows each."""
    table = schema.processes
    wanted = sorted(set(periods))
    counts = {"added": 0, "requeued": 0, "skipped": 0}
    if not wanted:
        return counts
    present = {
        (start, end): (id_process, status)
        for id_process, start, end, status in conn.execute(
            sa.select(table.c.id_process, table.c.start_date, table.c.end_date, table.c.status).where(
                table.c.fact_table == fact_table,
                table.c.start_date >= wanted[0][0],
                table.c.start_date <= wanted[-1][0],
            )
        )
    }
    new = [period for period in wanted if period not in present]
    again = [present[period][0] for period in wanted if period in present and queued_again(present[period][1], force)]
    sequence = schema.sequences["dm_processes"]
    for chunk in _chunks(new):
        rows = sa.values(sa.column("start_date", sa.DateTime), sa.column("end_date", sa.DateTime), name="periods")
        source = rows.data(chunk).alias("periods")
        conn.execute(
            sa.insert(table).from_select(
                ["id_process", "fact_table", "start_date", "end_date", "status"],
                sa.select(
                    sequence.next_value(),
                    sa.literal(fact_table, sa.String),
                    source.c.start_date,
                    source.c.end_date,
                    sa.literal(Status.PENDING, sa.String),
                ),
            )
        )
    for chunk in _chunks(again):
        conn.execute(
            sa.update(table).where(table.c.id_process.in_(chunk)).values(status=Status.PENDING, error_message=None)
        )
    counts.update(added=len(new), requeued=len(again), skipped=len(wanted) - len(new) - len(again))
    return counts


def _chunks(items: list[T], size: int = 5_000) -> Iterator[list[T]]:
    """Bound values a statement at a time: PostgreSQL takes at most 65,535 parameters in one."""
    for first in range(0, len(items), size):
        yield items[first : first + size]


def claim_run_of(conn: sa.Connection, schema: Schema, id_run: int, run_date: datetime, most: int) -> list[Period]:
    """Take for this run (marking them running) the oldest pending period and the pending periods of its fact
    table that follow it without a gap, `most` in all; none when no period is pending.

    On PostgreSQL, FOR UPDATE SKIP LOCKED lets concurrent runs claim different periods without waiting."""
    table = schema.processes
    columns = (table.c.id_process, table.c.fact_table, table.c.start_date, table.c.end_date)
    order = (table.c.start_date, table.c.end_date, table.c.id_process)
    oldest = sa.select(*columns).where(table.c.status == Status.PENDING).order_by(*order).limit(1)
    skip_locked = engines.of(conn).SKIP_LOCKED_CLAIMS
    if skip_locked:
        oldest = oldest.with_for_update(skip_locked=True)
    row = conn.execute(oldest).first()
    if row is None:
        return []
    claimed = [Period(*row)]
    if most > 1:
        following = (
            sa.select(*columns)
            .where(
                table.c.status == Status.PENDING,
                table.c.fact_table == claimed[0].fact_table,
                table.c.start_date >= claimed[0].end,
            )
            .order_by(*order)
            .limit(most - 1)
        )
        if skip_locked:
            following = following.with_for_update(skip_locked=True)
        for period in (Period(*r) for r in conn.execute(following)):
            if period.start != claimed[-1].end:
                break
            claimed.append(period)
    conn.execute(
        sa.update(table)
        .where(table.c.id_process.in_([p.id_process for p in claimed]))
        .values(status=Status.RUNNING, id_run=id_run, process_run_date=run_date, error_message=None)
    )
    return claimed


def pending_periods(conn: sa.Connection, schema: Schema, fact_table: str) -> list[tuple[datetime, datetime]]:
    """The pending periods of a fact table, oldest first."""
    table = schema.processes
    rows = conn.execute(
        sa.select(table.c.start_date, table.c.end_date)
        .where(table.c.fact_table == fact_table, table.c.status == Status.PENDING)
        .order_by(table.c.start_date, table.c.end_date)
    )
    return [(start, end) for start, end in rows]


def free_abandoned(conn: sa.Connection, schema: Schema) -> int:
    """Queue again the periods left running by runs that died (a killed process, a lost machine)."""
    table = schema.processes
    running = conn.execute(
        sa.select(table.c.id_process, table.c.id_run)
        .where(table.c.status == Status.RUNNING)
        .with_for_update(skip_locked=True)
        if engines.of(conn).SKIP_LOCKED_CLAIMS
        else sa.select(table.c.id_process, table.c.id_run).where(table.c.status == Status.RUNNING)
    ).all()
    freed = 0
    for id_process, id_run in running:
        if not locking.alive(conn, id_run):
            conn.execute(
                sa.update(table)
                .where(table.c.id_process == id_process)
                .values(status=Status.PENDING, error_message="queued again: the run loading it stopped")
            )
            freed += 1
    return freed


def wake_waiting(conn: sa.Connection, schema: Schema) -> int:
    """Queue again the periods waiting for their extracts, for this run to try; return how many."""
    table = schema.processes
    return int(
        conn.execute(sa.update(table).where(table.c.status == Status.WAITING).values(status=Status.PENDING)).rowcount
    )


def requeue_running(conn: sa.Connection, schema: Schema, id_run: int, message: str) -> int:
    """Queue again the periods a run still holds as running (it was stopped while loading them)."""
    table = schema.processes
    statement = (
        sa.update(table)
        .where(table.c.status == Status.RUNNING, table.c.id_run == id_run)
        .values(status=Status.PENDING, error_message=message)
    )
    return int(conn.execute(statement).rowcount)


def mark(conn: sa.Connection, schema: Schema, period: Period, status: Status, **values: object) -> None:
    """Set a period's status and any other columns of its row."""
    table = schema.processes
    conn.execute(sa.update(table).where(table.c.id_process == period.id_process).values(status=status, **values))


def mark_loaded(conn: sa.Connection, schema: Schema, periods: Sequence[Period], rows_loaded: Sequence[int]) -> None:
    """Mark periods loaded, each with its count of rows, in one statement."""
    table = schema.processes
    loaded = sa.values(sa.column("id_process", sa.Integer), sa.column("rows_loaded", sa.Integer), name="loaded").data(
        [(period.id_process, rows) for period, rows in zip(periods, rows_loaded, strict=True)]
    )
    conn.execute(
        sa.update(table)
        .where(table.c.id_process == loaded.c.id_process)
        .values(status=Status.DONE, rows_loaded=loaded.c.rows_loaded, finished_at=datetime.now())
    )


def listing(
    conn: sa.Connection,
    schema: Schema,
    statuses: Iterable[str] = (),
    since: date | None = None,
    limit: int | None = None,
) -> list[dict[str, object]]:
    """Rows of the control table, oldest period first: of the given statuses (all by default), starting on or
    after `since`, the newest `limit` of them."""
    table = schema.processes
    where: list[sa.ColumnElement[bool]] = []
    if statuses:
        where.append(table.c.status.in_(list(statuses)))
    if since is not None:
        where.append(table.c.start_date >= datetime.combine(since, time()))
    newest = (
        sa.select(table)
        .where(*where)
        .order_by(table.c.start_date.desc(), table.c.fact_table, table.c.id_process.desc())
        .limit(limit)
    )
    rows = [dict(row._mapping) for row in conn.execute(newest)]
    return rows[::-1]


def counts(conn: sa.Connection, schema: Schema) -> dict[str, int]:
    """How many periods each status holds."""
    table = schema.processes
    found = conn.execute(sa.select(table.c.status, sa.func.count()).group_by(table.c.status).order_by(table.c.status))
    return {str(status): int(n) for status, n in found}


def catch_up_periods(
    conn: sa.Connection, schema: Schema, fact_table: str, as_of: date
) -> list[tuple[datetime, datetime]]:
    """Every day from the end of the last loaded period up to the day before `as_of`: what a daily schedule
    that missed some days still owes. With nothing loaded yet, just the day before `as_of`."""
    table = schema.processes
    last_end = conn.execute(
        sa.select(sa.func.max(table.c.end_date)).where(table.c.fact_table == fact_table, table.c.status == Status.DONE)
    ).scalar()
    return owed_days(last_end, as_of)


def owed_days(last_end: datetime | None, as_of: date) -> list[tuple[datetime, datetime]]:
    """The days from `last_end` (the end of the last loaded period) up to the day before `as_of`; with nothing
    loaded yet, the day before `as_of`."""
    first = last_end.date() if last_end is not None else as_of - timedelta(days=1)
    return daily_periods(first, as_of) if first < as_of else []


def requeue_failed(conn: sa.Connection, schema: Schema) -> int:
    """Queue every failed period again."""
    table = schema.processes
    statement = (
        sa.update(table).where(table.c.status == Status.FAILED).values(status=Status.PENDING, error_message=None)
    )
    return int(conn.execute(statement).rowcount)


def business_date(conn: sa.Connection, schema: Schema, started: datetime) -> datetime:
    """The date the run's dimension changes take effect: the end of the latest queued period (an extract is the
    state at the end of the days it covers); with no period queued, the run's day. Never the time of day."""
    table = schema.processes
    latest = conn.execute(sa.select(sa.func.max(table.c.end_date))).scalar()
    return latest if latest is not None else datetime.combine(started.date(), time())
