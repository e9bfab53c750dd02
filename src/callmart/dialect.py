"""The few ways DuckDB and PostgreSQL differ, each a named capability with its reason."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from psycopg import sql as pg_sql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql.expression import ClauseElement, Executable

from . import access, engines, pgcopy
from .pgnames import identifier, regclass_name

__all__ = [
    "PARTITIONED_BY_DAY",
    "UNLOGGED",
    "Truncate",
    "bulk_insert",
    "PeriodReplace",
    "bulk_insert_routed",
    "fetch_arrow",
    "insert_rows",
]

UNLOGGED = "unlogged"
"""Table info flag: scratch data that PostgreSQL need not write to its WAL."""

PARTITIONED_BY_DAY = "partitioned_by_day"
"""Table info key naming the timestamp column by whose day PostgreSQL partitions the table."""

ANALYZED = "analyzed"
"""Table info key naming the columns whose statistics a load refreshes at once (joins, filters, groups)."""

PRIMARY_KEY = "primary_key"
"""Table info key naming the columns of a primary key that only some engines enforce (see enforces_fact_keys)."""


class AddPrimaryKey(Executable, ClauseElement):
    """ALTER TABLE … ADD PRIMARY KEY, for keys that only some engines should enforce."""

    inherit_cache = False

    def __init__(self, table: sa.Table, columns: tuple[str, ...]) -> None:
        self.table = table
        self.columns = columns


@compiles(AddPrimaryKey)
def _add_primary_key(element: AddPrimaryKey, compiler: Any, **kw: Any) -> str:
    columns = ", ".join(compiler.preparer.quote(c) for c in element.columns)
    return f"ALTER TABLE {compiler.preparer.format_table(element.table)} ADD PRIMARY KEY ({columns})"


class AddColumn(Executable, ClauseElement):
    """ALTER TABLE … ADD COLUMN, nullable, to bring an older mart up to date."""

    inherit_cache = False

    def __init__(self, table: sa.Table, column: sa.Column[Any]) -> None:
        self.table = table
        self.column = column


@compiles(AddColumn)
def _add_column(element: AddColumn, compiler: Any, **kw: Any) -> str:
    kind = compiler.dialect.type_compiler_instance.process(element.column.type)
    name = compiler.preparer.format_column(element.column)
    return f"ALTER TABLE {compiler.preparer.format_table(element.table)} ADD COLUMN {name} {kind}"


@compiles(CreateTable, "postgresql")
def _create_unlogged(create: CreateTable, compiler: Any, **kw: Any) -> str:
    text: str = compiler.visit_create_table(create, **kw)
    if create.element.info.get(UNLOGGED):
        text = text.replace("CREATE TABLE", "CREATE UNLOGGED TABLE", 1)
    partition_column = create.element.info.get(PARTITIONED_BY_DAY)
    if partition_column:
        text = text.rstrip() + f" PARTITION BY RANGE ({compiler.preparer.quote(partition_column)})\n\n"
    return text


class TableCommand(Executable, ClauseElement):
    """A command on one whole table, named by `command`."""

    inherit_cache = False
    command = ""

    def __init__(self, table: sa.TableClause) -> None:
        self.table = table


@compiles(TableCommand)
def _table_command(element: TableCommand, compiler: Any, **kw: Any) -> str:
    return f"{element.command} {compiler.preparer.format_table(element.table)}"


class Truncate(TableCommand):
    """TRUNCATE TABLE: PostgreSQL reclaims the space at once, where DELETE would leave dead rows to vacuum."""

    inherit_cache = False
    command = "TRUNCATE TABLE"


def bulk_insert(
    conn: sa.Connection, table: sa.Table, batches: Iterable[pa.RecordBatch], truncated: bool = False
) -> int:
    """Append Arrow batches (columns named as the table's) by the engine's bulk path; return rows written.

    `truncated`: the table was emptied in this transaction, so the engine may write the rows frozen."""
    return engines.of(conn).bulk_insert(conn, table, batches, truncated)


def bulk_insert_routed(
    conn: sa.Connection, parts: Iterable[tuple[sa.Table, pa.RecordBatch]], truncated: Iterable[sa.Table] = ()
) -> dict[str, int]:
    """Append each batch to its table by the engine's bulk path, one statement per batch; return rows per table.

    For one stream feeding several tables (a statement cannot interleave them). `truncated` as in bulk_insert."""
    return engines.of(conn).bulk_insert_routed(conn, parts, list(truncated))


def insert_rows(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> int:
    """Append rows given as mappings of the table's columns by the bulk path; return rows written. An INSERT of
    many parameter sets runs once per row on DuckDB: a hundred rows took 50 ms."""
    if not rows:
        return 0
    schema = pa.schema([pa.field(c.name, pgcopy.arrow_type(c.type)) for c in table.columns])
    return bulk_insert(conn, table, [pa.RecordBatch.from_pylist(list(rows), schema=schema)])


def analyze(conn: sa.Connection, table: sa.Table) -> None:
    """Statistics of a freshly filled table, where the engine plans from them: only of the columns the table's
    info names under ANALYZED, if it does."""
    engines.of(conn).analyze(conn, table, table.info.get(ANALYZED, ()))


def fetch_arrow(conn: sa.Connection, select: sa.Select[Any], schema: pa.Schema) -> pa.Table:
    """The rows of a SELECT as an Arrow table, by the engine's bulk path rather than row objects."""
    return engines.of(conn).fetch_arrow(conn, select, schema)


RowsOf = Callable[[datetime, datetime], sa.Select[Any]]
"""The rows to load for [lower, upper), named as the table's columns."""


class PeriodReplace:
    """Replaces the rows of [start, end) of a fact table, within the caller's transaction.

    PostgreSQL (`direct`): each day of the period gets a new bare table, which the load fills while it stages
    (`route`) and which then takes the place of the day's partition (`finish`), so no row goes through partition
    routing, an index or an INSERT ... SELECT one at a time: the primary key is built in one sort, and the old rows
    leave with their table instead of as dead rows to vacuum. Elsewhere: `finish` deletes, then inserts."""

    def __init__(self, conn: sa.Connection, table: sa.Table, start: datetime, end: datetime) -> None:
        self.conn, self.table, self.start, self.end = conn, table, start, end
        self.direct = engines.of(conn).DAY_PARTITIONS
        self.written = 0
        self._days: list[tuple[datetime, datetime, datetime, sa.Table]] = []
        if self.direct:
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
    def tables(self) -> list[sa.Table]:
        """The new tables of the period's days (PostgreSQL), created in this transaction."""
        return [fresh for *_, fresh in self._days]

    def route(self, rows: pa.RecordBatch) -> list[tuple[sa.Table, pa.RecordBatch]]:
        """The period's final rows (named as the table's columns) as parts for each day's new table."""
        time = rows.column(self.table.info[PARTITIONED_BY_DAY])
        parts = []
        for _, lower, upper, fresh in self._days:
            part = rows
            if len(self._days) > 1:
                inside = pc.and_(
                    pc.greater_equal(time, pa.scalar(lower, time.type)), pc.less(time, pa.scalar(upper, time.type))
                )
                part = rows.filter(inside)
            if part.num_rows:
                parts.append((fresh, part))
                self.written += part.num_rows
        return parts

    def finish(self, rows: RowsOf | None) -> tuple[int, int]:
        """Put the rows routed and `rows(lower, upper)`, if given, in place of the period's rows; return
        (deleted, inserted)."""
        table, conn = self.table, self.conn
        time = table.c[table.info[PARTITIONED_BY_DAY]]
        names = [c.name for c in table.columns]
        if not self.direct:
            deleted = int(conn.execute(sa.delete(table).where(time >= self.start, time < self.end)).rowcount)
            if rows is None:
                return deleted, 0
            return deleted, int(conn.execute(sa.insert(table).from_select(names, rows(self.start, self.end))).rowcount)
        deleted, inserted = 0, self.written
        for day, lower, upper, fresh in self._days:
            if rows is not None:
                inserted += int(conn.execute(sa.insert(fresh).from_select(names, rows(lower, upper))).rowcount)
            deleted += _swap_partition(conn, table, day, lower, upper, fresh)
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
    raw = conn.connection.driver_connection
    assert raw is not None
    q = pg_sql.Identifier
    parent, partition, new = identifier(table), identifier(old), identifier(fresh)
    if conn.execute(sa.select(sa.exists().select_from(fresh))).scalar_one() is False:
        # A day without rows keeps no partition: the fact table is not left with empty ones.
        with raw.cursor() as cursor:
            if exists:
                cursor.execute(pg_sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, partition))
                cursor.execute(pg_sql.SQL("DROP TABLE {}").format(partition))
            cursor.execute(pg_sql.SQL("DROP TABLE {}").format(new))
        return deleted
    first, after = pg_sql.Literal(day), pg_sql.Literal(day + timedelta(days=1))
    with raw.cursor() as cursor:
        # The key index, built in one sort, becomes the partition's part of the fact table's primary key.
        cursor.execute(
            pg_sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
                new, q(f"{name}_new_pkey"), pg_sql.SQL(", ").join(map(q, table.info[PRIMARY_KEY]))
            )
        )
    # Statistics now: the planner would otherwise take a million rows for a few thousand, and the metric's and
    # aggregates' later refreshes (and analysts' queries) get nested loops instead of hash joins.
    analyze(conn, fresh)
    with raw.cursor() as cursor:
        if exists:
            cursor.execute(pg_sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, partition))
            cursor.execute(pg_sql.SQL("DROP TABLE {}").format(partition))
        cursor.execute(pg_sql.SQL("ALTER TABLE {} RENAME TO {}").format(new, q(name)))
        cursor.execute(
            pg_sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                partition, q(f"{name}_new_pkey"), q(f"{name}_pkey")
            )
        )
        cursor.execute(
            pg_sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                parent, partition, first, after
            )
        )
    return deleted


def _add_bounds(conn: sa.Connection, table: sa.Table, day: datetime, fresh: sa.Table) -> None:
    """Constrain the new, empty table to the day: rows are checked as they arrive, and ATTACH then skips the
    scan of the whole table that would prove them in the day."""
    raw = conn.connection.driver_connection
    assert raw is not None
    q = pg_sql.Identifier
    time = q(table.info[PARTITIONED_BY_DAY])
    first, after = pg_sql.Literal(day), pg_sql.Literal(day + timedelta(days=1))
    with raw.cursor() as cursor:
        # DDL takes no parameters: psycopg quotes the bounds as literals.
        cursor.execute(
            pg_sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} >= {} AND {} < {})").format(
                identifier(fresh), q(f"{_partition_name(table, day)}_bounds"), time, first, time, after
            )
        )


class CreateLike(Executable, ClauseElement):
    """CREATE TABLE … (LIKE …): a bare table with another's columns, without its indexes or partitioning."""

    inherit_cache = False

    def __init__(self, table: sa.Table, like: sa.Table) -> None:
        self.table = table
        self.like = like


@compiles(CreateLike)
def _create_like(element: CreateLike, compiler: Any, **kw: Any) -> str:
    preparer = compiler.preparer
    return (
        f"CREATE TABLE {preparer.format_table(element.table)} "
        f"(LIKE {preparer.format_table(element.like)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
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
