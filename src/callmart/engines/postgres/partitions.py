"""Fact tables partitioned by day, and a period replaced by swapping in its days' partitions.

Each day of the period gets a new bare table, which the load fills while it stages (`parts`) and which then takes
the place of the day's partition (`finish`), so no row goes through partition routing, an index or an INSERT …
SELECT one at a time: the primary key is built in one sort, and the old rows leave with their table instead of as
dead rows to vacuum."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from psycopg import sql as pg_sql
from sqlalchemy.dialects.postgresql import REGCLASS

from ..hints import ANALYZED, PARTITIONED_BY_DAY, PRIMARY_KEY
from ..sql.ddl import CreateLike
from ..sql.replace import PeriodReplace, RowsOf
from . import access
from .names import execute, identifier, regclass_name
from .statistics import analyze

__all__ = ["PartitionSwap", "day_partitions"]


class PartitionSwap(PeriodReplace):
    """The period's days filled as new tables, each then swapped in as its day's partition."""

    FINAL_ROWS_IN_CLIENT = True

    def __init__(self, conn: sa.Connection, table: sa.Table, start: datetime, end: datetime) -> None:
        super().__init__(conn, table, start, end)
        self.written = 0
        self._days: list[tuple[datetime, datetime, datetime, sa.Table]] = []
        for day in _days(start, end):
            fresh = sa.Table(
                f"{_partition_name(table, day)}_new",
                sa.MetaData(schema=table.schema),
                *(c._copy() for c in table.columns),
                info={ANALYZED: table.info.get(ANALYZED, ())},
            )
            conn.execute(CreateLike(fresh, table))
            # The day's partition to be: closed to other roles from the start, as the fact table is.
            access.secure(conn, [fresh])
            _add_bounds(conn, table, day, fresh)
            self._days.append((day, max(day, start), min(day + timedelta(days=1), end), fresh))

    @property
    def new_tables(self) -> list[sa.Table]:
        return [fresh for *_, fresh in self._days]

    def parts(self, rows: pa.RecordBatch) -> list[tuple[sa.Table, pa.RecordBatch]]:
        time = rows.column(self.table.info[PARTITIONED_BY_DAY])
        if len(self._days) == 1 or not rows.num_rows:
            parts = [(self._days[0][-1], rows)] if rows.num_rows else []
        else:
            # One sort by day, then a slice per day: a filter per day would read the whole batch once a day.
            day = pc.days_between(pa.scalar(self._days[0][0], time.type), time)
            order = pc.sort_indices(day)
            tally = pc.value_counts(pc.take(day, order))
            ordered, at, parts = rows.take(order), 0, []
            for index, count in zip(tally.field("values").to_pylist(), tally.field("counts").to_pylist(), strict=True):
                if not 0 <= index < len(self._days):
                    raise ValueError(f"rows outside the period {self.start} to {self.end}")
                parts.append((self._days[index][-1], ordered.slice(at, count)))
                at += count
        for _, part in parts:
            self.written += part.num_rows
        return parts

    def finish(self, rows: RowsOf | None) -> tuple[int, int]:
        names = [c.name for c in self.table.columns]
        deleted, inserted = 0, self.written
        for day, lower, upper, fresh in self._days:
            if rows is not None:
                inserted += int(self.conn.execute(sa.insert(fresh).from_select(names, rows(lower, upper))).rowcount)
            deleted += _swap_partition(self.conn, self.table, day, lower, upper, fresh)
        return deleted, inserted


def _swap_partition(
    conn: sa.Connection, table: sa.Table, day: datetime, lower: datetime, upper: datetime, fresh: sa.Table
) -> int:
    """Make the filled table `fresh` the day's partition, keeping the day's rows outside [lower, upper); return
    how many rows of [lower, upper) the old partition had.

    Everything slow (kept rows, primary key, statistics) happens on the new table, which no one else
    sees; the fact table itself is locked only for the swap, a few catalog changes, until the load commits."""
    name = _partition_name(table, day)
    time = table.c[table.info[PARTITIONED_BY_DAY]]
    names = [c.name for c in table.columns]
    old = sa.Table(name, sa.MetaData(schema=table.schema), *(c._copy() for c in table.columns))
    exists = conn.execute(sa.select(sa.func.to_regclass(regclass_name(conn, old)))).scalar() is not None
    deleted = 0
    if exists:
        in_range = sa.and_(old.c[time.name] >= lower, old.c[time.name] < upper)
        deleted = int(conn.execute(sa.select(sa.func.count()).select_from(old).where(in_range)).scalar_one())
        if (lower, upper) != (day, day + timedelta(days=1)):
            kept = sa.select(*(old.c[n] for n in names)).where(sa.not_(in_range))
            conn.execute(sa.insert(fresh).from_select(names, kept))
    q = pg_sql.Identifier
    parent, partition, new = identifier(table), identifier(old), identifier(fresh)
    detach_old = (
        [
            pg_sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, partition),
            pg_sql.SQL("DROP TABLE {}").format(partition),
        ]
        if exists
        else []
    )
    if conn.execute(sa.select(sa.exists().select_from(fresh))).scalar_one() is False:
        # A day without rows keeps no partition: the fact table is not left with empty ones.
        execute(conn, *detach_old, pg_sql.SQL("DROP TABLE {}").format(new))
        return deleted
    # The key index, built in one sort, becomes the partition's part of the fact table's primary key.
    execute(
        conn,
        pg_sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
            new, q(f"{name}_new_pkey"), pg_sql.SQL(", ").join(map(q, table.info[PRIMARY_KEY]))
        ),
    )
    # Statistics now: the planner would otherwise take a million rows for a few thousand, and the metric's and
    # aggregates' later refreshes (and analysts' queries) get nested loops instead of hash joins.
    analyze(conn, fresh)
    first, after = pg_sql.Literal(day), pg_sql.Literal(day + timedelta(days=1))
    execute(
        conn,
        *detach_old,
        pg_sql.SQL("ALTER TABLE {} RENAME TO {}").format(new, q(name)),
        pg_sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
            partition, q(f"{name}_new_pkey"), q(f"{name}_pkey")
        ),
        pg_sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            parent, partition, first, after
        ),
    )
    return deleted


def _add_bounds(conn: sa.Connection, table: sa.Table, day: datetime, fresh: sa.Table) -> None:
    """Constrain the new, empty table to the day: rows are checked as they arrive, and ATTACH then skips the
    scan of the whole table that would prove them in the day."""
    q = pg_sql.Identifier
    time = q(table.info[PARTITIONED_BY_DAY])
    first, after = pg_sql.Literal(day), pg_sql.Literal(day + timedelta(days=1))
    execute(
        conn,
        pg_sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} >= {} AND {} < {})").format(
            identifier(fresh), q(f"{_partition_name(table, day)}_bounds"), time, first, time, after
        ),
    )


def _days(start: datetime, end: datetime) -> list[datetime]:
    """Midnight of every day that [start, end) touches."""
    days, day = [], datetime.combine(start.date(), datetime.min.time())
    while day < end:
        days.append(day)
        day += timedelta(days=1)
    return days


def _partition_name(table: sa.Table, day: datetime) -> str:
    return f"{table.name}_{day:%Y%m%d}"


def day_partitions(conn: sa.Connection, table: sa.Table) -> list[sa.Table]:
    """The day partitions of a table partitioned by day, by name."""
    names = conn.execute(
        sa.select(sa.column("relname", sa.String))
        .select_from(sa.table("pg_class"))
        .where(
            sa.column("oid").in_(
                sa.select(sa.column("inhrelid"))
                .select_from(sa.table("pg_inherits"))
                .where(sa.column("inhparent") == sa.cast(regclass_name(conn, table), REGCLASS))
            )
        )
        .order_by(sa.column("relname"))
    ).scalars()
    return [sa.Table(name, sa.MetaData(schema=table.schema)) for name in names]
