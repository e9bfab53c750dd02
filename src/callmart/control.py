"""The control table dm_processes: which periods of which fact table to load, and how each went."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa

from ._errors import ConfigError
from .schema import Schema

__all__ = ["DONE", "FAILED", "PENDING", "RUNNING", "Period", "daily_periods", "enqueue", "pending"]

PENDING, RUNNING, DONE, FAILED = "pendiente", "corriendo", "exitoso", "fallido"


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
    """Queue periods as pending; skip those already pending, running or done unless forced."""
    table = schema.processes
    counts = {"added": 0, "requeued": 0, "skipped": 0}
    for start, end in periods:
        where = (table.c.fact_table == fact_table, table.c.start_date == start, table.c.end_date == end)
        status = conn.execute(sa.select(table.c.status).where(*where)).scalar_one_or_none()
        if status is None:
            conn.execute(
                sa.insert(table).values(
                    id_process=schema.sequences["dm_processes"].next_value(),
                    fact_table=fact_table,
                    start_date=start,
                    end_date=end,
                    status=PENDING,
                )
            )
            counts["added"] += 1
        elif status == FAILED or (force and status != RUNNING):
            conn.execute(sa.update(table).where(*where).values(status=PENDING, error_message=None))
            counts["requeued"] += 1
        else:
            counts["skipped"] += 1
    return counts


def pending(conn: sa.Connection, schema: Schema) -> list[Period]:
    """Pending periods, oldest first."""
    table = schema.processes
    rows = conn.execute(
        sa.select(table.c.id_process, table.c.fact_table, table.c.start_date, table.c.end_date)
        .where(table.c.status == PENDING)
        .order_by(table.c.start_date, table.c.end_date, table.c.id_process)
    )
    return [Period(*row) for row in rows]


def mark(conn: sa.Connection, schema: Schema, period: Period, status: str, **values: object) -> None:
    """Set a period's status and any other columns of its row."""
    table = schema.processes
    conn.execute(sa.update(table).where(table.c.id_process == period.id_process).values(status=status, **values))


def listing(conn: sa.Connection, schema: Schema) -> list[dict[str, object]]:
    """Every row of the control table, oldest period first."""
    table = schema.processes
    rows = conn.execute(sa.select(table).order_by(table.c.start_date, table.c.fact_table, table.c.id_process))
    return [dict(row._mapping) for row in rows]
