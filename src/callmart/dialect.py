"""The few ways DuckDB and PostgreSQL differ, each a named capability with its reason."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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
    "replace_period",
    "fetch_arrow",
    "is_postgresql",
    "wants_indexes",
]

UNLOGGED = "unlogged"
"""Table info flag: scratch data that PostgreSQL need not write to its WAL."""

PARTITIONED_BY_DAY = "partitioned_by_day"
"""Table info key naming the timestamp column by whose day PostgreSQL partitions the table."""

PRIMARY_KEY = "primary_key"
"""Table info key naming the columns of a primary key that only some engines enforce (see enforces_fact_keys)."""


def is_postgresql(conn: sa.Connection) -> bool:
    """Whether the connection is to PostgreSQL (else DuckDB)."""
    return conn.dialect.name == "postgresql"


def wants_indexes(conn: sa.Connection) -> bool:
    """PostgreSQL needs B-tree indexes for period deletes and metric lookups; DuckDB scans and hash-joins faster
    than it maintains ART indexes during bulk loads."""
    return is_postgresql(conn)


def tune_for_bulk(conn: sa.Connection) -> None:
    """Give this transaction's sorts and hashes room: PostgreSQL's default 4 MB of work_mem spills a million-row
    sort or hash to disk. And no JIT: compiling each big statement costs PostgreSQL about 0.4 s, more than it
    saves on the simple scans, joins and aggregates of a load."""
    if is_postgresql(conn):
        conn.execute(sa.text("SET LOCAL work_mem = '256MB'"))
        conn.execute(sa.text("SET LOCAL jit = off"))


@contextmanager
def grouping_by_sort(conn: sa.Connection) -> Iterator[None]:
    """Within the block, PostgreSQL groups by sorting. Its hash aggregate slows to a crawl when nearly every row
    is its own group (5M distinct hashes: 4.7 s against 2.0 s by sorting); DuckDB's does not."""
    if not is_postgresql(conn):
        yield
        return
    before = conn.execute(sa.select(sa.func.current_setting("enable_hashagg"))).scalar_one()
    conn.execute(sa.select(sa.func.set_config("enable_hashagg", "off", True)))
    try:
        yield
    finally:
        conn.execute(sa.select(sa.func.set_config("enable_hashagg", before, True)))


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


class Analyze(TableCommand):
    """ANALYZE: statistics of one table, for the planner."""

    inherit_cache = False
    command = "ANALYZE"


def bulk_insert(
    conn: sa.Connection, table: sa.Table, batches: Iterable[pa.RecordBatch], truncated: bool = False
) -> int:
    """Append Arrow batches (columns named as the table's) by the engine's bulk path; return rows written.

    `truncated`: the table was emptied in this transaction, so PostgreSQL may write the rows frozen (later reads
    then need not set hint bits, which rewrites every page of a freshly loaded table)."""
    if is_postgresql(conn):
        return _copy_into_postgresql(conn, table, batches, truncated)
    return _arrow_into_duckdb(conn, table, batches)


def _copy_into_postgresql(
    conn: sa.Connection, table: sa.Table, batches: Iterable[pa.RecordBatch], truncated: bool
) -> int:
    """COPY in CSV written by Arrow's C++ writer (far faster than row inserts or binary rows built in Python),
    encoded in a worker thread while the server parses the previous chunk."""
    raw = conn.connection.driver_connection
    assert raw is not None
    # Three threads in a pipeline: one reads and cleans, one writes CSV, this one feeds the server.
    stream = prefetched((batch.schema.names, batch.num_rows, _csv(batch)) for batch in prefetched(batches))
    first = next(stream, None)
    if first is None:
        return 0
    statement = pg_sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv{})").format(
        pg_sql.Identifier(table.name),
        pg_sql.SQL(", ").join(map(pg_sql.Identifier, first[0])),
        pg_sql.SQL(", FREEZE" if truncated else ""),
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
    """DuckDB scans Arrow memory in place: no serialisation at all. One INSERT pulls the whole stream, so the
    statement's fixed cost is paid once, not once per batch."""
    raw = conn.connection.driver_connection
    assert raw is not None
    stream = prefetched(batches)
    first = next(stream, None)
    if first is None:
        return 0
    rows, failure = 0, []

    def counted() -> Iterator[pa.RecordBatch]:
        nonlocal rows
        try:
            for batch in itertools.chain([first], stream):
                rows += batch.num_rows
                yield batch
        except Exception as error:  # noqa: BLE001 - raised below as itself, not wrapped in a DuckDB error
            failure.append(error)

    view = "callmart_arrow_stream"
    raw.register(view, pa.RecordBatchReader.from_batches(first.schema, counted()))
    try:
        source = sa.table(view, *(sa.column(n) for n in first.schema.names))
        conn.execute(sa.insert(table).from_select(first.schema.names, sa.select(*source.c)))
    finally:
        raw.unregister(view)
    if failure:
        raise failure[0]
    return rows


def analyze(conn: sa.Connection, table: sa.Table) -> None:
    """Give PostgreSQL statistics of a freshly filled table: without them it takes a million rows for a few
    thousand and plans sorts that spill to disk where hash joins fit in memory. DuckDB needs none."""
    if is_postgresql(conn):
        conn.execute(Analyze(table))


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


RowsOf = Callable[[datetime, datetime], sa.Select[Any]]
"""The rows to load for [lower, upper), named as the table's columns."""


def replace_period(
    conn: sa.Connection, table: sa.Table, start: datetime, end: datetime, rows: RowsOf
) -> tuple[int, int]:
    """Replace the rows of [start, end) with `rows(lower, upper)` for each part of it; return (deleted, inserted).

    PostgreSQL: each day is written into a new bare table that then takes the place of the day's partition, so no
    row goes through partition routing or an index one at a time: the primary key is built in one sort,
    and the old rows leave with their table instead of as dead rows to vacuum. Elsewhere: DELETE, then INSERT."""
    time = table.c[table.info[PARTITIONED_BY_DAY]]
    names = [c.name for c in table.columns]
    if not is_postgresql(conn):
        deleted = int(conn.execute(sa.delete(table).where(time >= start, time < end)).rowcount)
        inserted = int(conn.execute(sa.insert(table).from_select(names, rows(start, end))).rowcount)
        return deleted, inserted
    deleted = inserted = 0
    for day in _days(start, end):
        lower, upper = max(day, start), min(day + timedelta(days=1), end)
        removed, added = _swap_partition(conn, table, day, lower, upper, rows(lower, upper))
        deleted, inserted = deleted + removed, inserted + added
    return deleted, inserted


def _swap_partition(
    conn: sa.Connection, table: sa.Table, day: datetime, lower: datetime, upper: datetime, rows: sa.Select[Any]
) -> tuple[int, int]:
    """Build the day's partition anew, with the rows of [lower, upper) from `rows` and the day's other rows kept.

    Everything slow (rows, primary key, bounds check, statistics) happens on the new table, which no one else
    sees; the fact table itself is locked only for the swap, a few catalog changes, until the load commits."""
    name = _partition_name(table, day)
    time = table.c[table.info[PARTITIONED_BY_DAY]]
    names = [c.name for c in table.columns]
    fresh = sa.Table(f"{name}_new", sa.MetaData(), *(c._copy() for c in table.columns))
    old = sa.Table(name, sa.MetaData(), *(c._copy() for c in table.columns))
    exists = conn.execute(sa.select(sa.func.to_regclass(name))).scalar() is not None
    conn.execute(CreateLike(fresh, table))
    inserted = int(conn.execute(sa.insert(fresh).from_select(names, rows)).rowcount)
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
    parent, partition, new = q(table.name), q(name), q(fresh.name)
    first, after = pg_sql.Literal(day), pg_sql.Literal(day + timedelta(days=1))
    with raw.cursor() as cursor:
        # DDL takes no parameters: psycopg quotes the bounds as literals. The check lets ATTACH skip its scan;
        # the key index, built in one sort, becomes the partition's part of the fact table's primary key.
        cursor.execute(
            pg_sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} >= {} AND {} < {})").format(
                new, q(f"{name}_bounds"), q(time.name), first, q(time.name), after
            )
        )
        cursor.execute(
            pg_sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
                new, q(f"{name}_new_pkey"), pg_sql.SQL(", ").join(map(q, table.info[PRIMARY_KEY]))
            )
        )
    # Statistics now: the planner would otherwise take a million rows for a few thousand, and the aggregates
    # refreshed next (and analysts' queries) get nested loops instead of hash joins.
    analyze(conn, fresh)
    with raw.cursor() as cursor:
        if exists:
            cursor.execute(pg_sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, partition))
            cursor.execute(pg_sql.SQL("DROP TABLE {}").format(partition))
        cursor.execute(pg_sql.SQL("ALTER TABLE {} RENAME TO {}").format(new, partition))
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
    return deleted, inserted


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
