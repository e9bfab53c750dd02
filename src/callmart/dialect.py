"""The few ways DuckDB and PostgreSQL differ, each a named capability with its reason."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from psycopg import sql as pg_sql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql.expression import ClauseElement, Executable

from .streams import prefetched

__all__ = [
    "PARTITIONED_BY_DAY",
    "UNLOGGED",
    "Truncate",
    "bulk_insert",
    "clear_period",
    "fetch_arrow",
    "is_postgresql",
    "prepare_period",
    "wants_indexes",
]

UNLOGGED = "unlogged"
"""Table info flag: scratch data that PostgreSQL need not write to its WAL."""

PARTITIONED_BY_DAY = "partitioned_by_day"
"""Table info key naming the timestamp column by whose day PostgreSQL partitions the table."""


def is_postgresql(conn: sa.Connection) -> bool:
    """Whether the connection is to PostgreSQL (else DuckDB)."""
    return conn.dialect.name == "postgresql"


def wants_indexes(conn: sa.Connection) -> bool:
    """PostgreSQL needs B-tree indexes for period deletes and metric lookups; DuckDB scans and hash-joins faster
    than it maintains ART indexes during bulk loads."""
    return is_postgresql(conn)


def tune_for_bulk(conn: sa.Connection) -> None:
    """Give this transaction's sorts and hashes room: PostgreSQL's default 4 MB of work_mem spills a million-row
    sort or hash to disk."""
    if is_postgresql(conn):
        conn.execute(sa.text("SET LOCAL work_mem = '256MB'"))


def enforces_fact_keys(conn: sa.Connection) -> bool:
    """Whether fact tables get a primary key. PostgreSQL's B-tree costs little; DuckDB's ART index made a 1M-row
    period load 3x slower and its reload 10x slower, for a key that is unique by construction anyway."""
    return is_postgresql(conn)


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


class Truncate(Executable, ClauseElement):
    """TRUNCATE TABLE: PostgreSQL reclaims the space at once, where DELETE would leave dead rows to vacuum."""

    inherit_cache = False

    def __init__(self, table: sa.TableClause) -> None:
        self.table = table


@compiles(Truncate)
def _truncate(element: Truncate, compiler: Any, **kw: Any) -> str:
    return "TRUNCATE TABLE " + str(compiler.preparer.format_table(element.table))


def bulk_insert(conn: sa.Connection, table: sa.Table, batches: Iterable[pa.RecordBatch]) -> int:
    """Append Arrow batches (columns named as the table's) by the engine's bulk path; return rows written."""
    if is_postgresql(conn):
        return _copy_into_postgresql(conn, table, batches)
    return _arrow_into_duckdb(conn, table, batches)


def _copy_into_postgresql(conn: sa.Connection, table: sa.Table, batches: Iterable[pa.RecordBatch]) -> int:
    """COPY in CSV written by Arrow's C++ writer (far faster than row inserts or binary rows built in Python),
    encoded in a worker thread while the server parses the previous chunk."""
    raw = conn.connection.driver_connection
    assert raw is not None
    stream = prefetched((batch.schema.names, batch.num_rows, _csv(batch)) for batch in batches)
    first = next(stream, None)
    if first is None:
        return 0
    statement = pg_sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        pg_sql.Identifier(table.name), pg_sql.SQL(", ").join(map(pg_sql.Identifier, first[0]))
    )
    rows = 0
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for _, count, payload in itertools.chain([first], stream):
            copy.write(payload)
            rows += count
    return rows


def _csv(batch: pa.RecordBatch) -> memoryview:
    buffer = io.BytesIO()
    pa_csv.write_csv(batch, buffer, pa_csv.WriteOptions(include_header=False))
    return buffer.getbuffer()


def _arrow_into_duckdb(conn: sa.Connection, table: sa.Table, batches: Iterable[pa.RecordBatch]) -> int:
    """DuckDB scans Arrow memory in place: no serialisation at all."""
    raw = conn.connection.driver_connection
    assert raw is not None
    rows = 0
    view = "callmart_arrow_batch"
    for batch in prefetched(batches):
        raw.register(view, pa.Table.from_batches([batch]))
        source = sa.table(view, *(sa.column(n) for n in batch.schema.names))
        conn.execute(sa.insert(table).from_select(batch.schema.names, sa.select(*source.c)))
        raw.unregister(view)
        rows += batch.num_rows
    return rows


def fetch_arrow(conn: sa.Connection, select: sa.Select[Any], schema: pa.Schema) -> pa.Table:
    """The rows of a parameterless SELECT as an Arrow table, by the engine's bulk path rather than row objects."""
    compiled = select.compile(dialect=conn.dialect)
    if compiled.params:
        raise ValueError("fetch_arrow takes a SELECT without parameters")
    raw = conn.connection.driver_connection
    assert raw is not None
    if not is_postgresql(conn):
        return raw.sql(str(compiled)).to_arrow_table().rename_columns(schema.names).cast(schema)
    buffer = io.BytesIO()
    statement = pg_sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(pg_sql.SQL(str(compiled)))
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for chunk in copy:
            buffer.write(chunk)
    if buffer.tell() == 0:
        return schema.empty_table()
    buffer.seek(0)
    options = pa_csv.ReadOptions(column_names=schema.names)
    return pa_csv.read_csv(buffer, read_options=options, convert_options=pa_csv.ConvertOptions(column_types=schema))


def prepare_period(conn: sa.Connection, table: sa.Table, start: datetime, end: datetime) -> None:
    """Make room for a period's rows: on PostgreSQL, one partition per day the period touches."""
    if not (is_postgresql(conn) and table.info.get(PARTITIONED_BY_DAY)):
        return
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor:
        for day in _days(start, end):
            # Partition bounds are DDL, which takes no parameters: psycopg quotes them as literals.
            cursor.execute(
                pg_sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                    pg_sql.Identifier(_partition_name(table, day)),
                    pg_sql.Identifier(table.name),
                    pg_sql.Literal(day),
                    pg_sql.Literal(day + timedelta(days=1)),
                )
            )


def clear_period(conn: sa.Connection, table: sa.Table, start: datetime, end: datetime) -> int:
    """Remove a period's rows; return how many. Whole days of a partitioned table are truncated, which costs the
    same however many rows they hold and leaves no dead rows behind to slow the next load or to vacuum."""
    time = table.c[table.info[PARTITIONED_BY_DAY]]
    if not is_postgresql(conn):
        return int(conn.execute(sa.delete(table).where(time >= start, time < end)).rowcount)
    whole = [day for day in _days(start, end) if day >= start and day + timedelta(days=1) <= end]
    removed = 0
    for day in whole:
        partition = sa.table(_partition_name(table, day))
        removed += int(conn.execute(sa.select(sa.func.count()).select_from(partition)).scalar_one())
        conn.execute(Truncate(partition))
    for lower, upper in _partial_ranges(start, end, whole):
        removed += int(conn.execute(sa.delete(table).where(time >= lower, time < upper)).rowcount)
    return removed


def _days(start: datetime, end: datetime) -> list[datetime]:
    """Midnight of every day that [start, end) touches."""
    days, day = [], datetime.combine(start.date(), datetime.min.time())
    while day < end:
        days.append(day)
        day += timedelta(days=1)
    return days


def _partial_ranges(start: datetime, end: datetime, whole: list[datetime]) -> list[tuple[datetime, datetime]]:
    """The parts of [start, end) not covered by whole days."""
    if not whole:
        return [(start, end)]
    ranges = []
    if start < whole[0]:
        ranges.append((start, whole[0]))
    last = whole[-1] + timedelta(days=1)
    if last < end:
        ranges.append((last, end))
    return ranges


def _partition_name(table: sa.Table, day: datetime) -> str:
    return f"{table.name}_{day:%Y%m%d}"
