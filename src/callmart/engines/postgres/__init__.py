"""PostgreSQL (Supabase included): several runs share the mart, through a transaction-mode pooler too."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from psycopg import sql as pg_sql
from sqlalchemy.dialects.postgresql import REGCLASS

from ... import pgcopy
from ...pgnames import identifier, regclass_name
from ..base import Engine

__all__ = ["PostgreSQL"]

_RUN_LOCKS = 0x63616C6C  # "call"
_WRITE_LOCK = 0x6D617274  # "mart"
"""Advisory lock namespaces (first key of the two-key form): arbitrary, but fixed for every callmart."""


class PostgreSQL(Engine):
    """PostgreSQL: binary COPY, day partitions swapped in, row level security, runs that take turns."""

    NAME = "PostgreSQL"
    DIALECT = "postgresql"
    SCHEMES: ClassVar[frozenset[str]] = frozenset({"postgres", "postgresql", "postgresql+psycopg"})
    DRIVER_ERRORS: ClassVar[tuple[type[Exception], ...]] = (psycopg.Error,)

    RUNS_SHARE_THE_MART = True
    SKIP_LOCKED_CLAIMS = True
    ROW_SECURITY = True
    DEDICATED_SCHEMA = "callmart"
    # Supabase's Data API serves `public` to anyone holding the project's public key; `callmart` it does not.
    INDEXES = True
    ENFORCED_FACT_KEYS = True
    # A B-tree costs PostgreSQL little; DuckDB's ART index made a period load 3x and a reload 10x slower.
    DAY_PARTITIONS = True

    def url(self, url: sa.URL) -> sa.URL:
        return url.set(drivername="postgresql+psycopg")

    def _engine_options(self, url: sa.URL) -> dict[str, Any]:
        # No server-side prepared statements: through a transaction-mode pooler (Supabase's, PgBouncer's) the next
        # transaction may run on another server connection, where a statement prepared on this one does not exist.
        return {**super()._engine_options(url), "connect_args": {"prepare_threshold": None}}

    def bulk_insert(
        self, conn: sa.Connection, table: sa.Table, batches: Iterable[pa.RecordBatch], truncated: bool
    ) -> int:
        """Binary COPY; rows of a table emptied in this transaction are written frozen (later reads then need not
        set hint bits, which rewrites every page of a freshly loaded table)."""
        return pgcopy.copy_stream(conn, table, batches, truncated)

    def bulk_insert_routed(
        self, conn: sa.Connection, parts: Iterable[tuple[sa.Table, pa.RecordBatch]], truncated: Sequence[sa.Table]
    ) -> dict[str, int]:
        return pgcopy.copy_parts(conn, parts, {t.name for t in truncated})

    def fetch_arrow(self, conn: sa.Connection, select: sa.Select[Any], schema: pa.Schema) -> pa.Table:
        """COPY … TO STDOUT as CSV, parsed by Arrow."""
        compiled = select.compile(dialect=conn.dialect)
        raw = conn.connection.driver_connection
        assert raw is not None
        # COPY takes no parameters: psycopg binds the values into the query text itself, quoted by type.
        query = psycopg.ClientCursor(raw).mogrify(str(compiled), compiled.params or None)
        buffer = io.BytesIO()
        statement = pg_sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(pg_sql.SQL(query))
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for chunk in copy:
                buffer.write(chunk)
        if buffer.tell() == 0:
            return schema.empty_table()
        buffer.seek(0)
        # Parsed in this thread: the reader's worker threads would each keep the memory they used.
        options = pa_csv.ReadOptions(column_names=schema.names, use_threads=False)
        types = pa_csv.ConvertOptions(column_types=schema)
        return pa_csv.read_csv(buffer, read_options=options, convert_options=types)

    def analyze(self, conn: sa.Connection, table: sa.Table, columns: Sequence[str]) -> None:
        """Without statistics PostgreSQL takes a million rows for a few thousand and plans sorts that spill to disk
        where hash joins fit in memory. Of the named columns only: autovacuum analyzes the rest soon after."""
        named = (
            pg_sql.SQL(" ({})").format(pg_sql.SQL(", ").join(map(pg_sql.Identifier, columns)))
            if columns
            else pg_sql.SQL("")
        )
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor:
            cursor.execute(pg_sql.SQL("ANALYZE {}{}").format(identifier(table), named))

    def canceller(self, conn: sa.Connection) -> Callable[[], None]:
        raw = conn.connection.driver_connection
        assert raw is not None
        cancel: Callable[[], None] = raw.cancel_safe  # a cancel request, which poolers pass on
        return cancel

    def tune_for_bulk(self, conn: sa.Connection) -> None:
        """Room for this transaction's sorts and hashes (the default 4 MB of work_mem spills a million-row sort),
        and no JIT: compiling each big statement costs more than it saves on a load's simple plans."""
        conn.execute(sa.text("SET LOCAL work_mem = '256MB'"))
        conn.execute(sa.text("SET LOCAL jit = off"))

    @contextmanager
    def grouping_by_sort(self, conn: sa.Connection) -> Iterator[None]:
        """PostgreSQL's hash aggregate slows to a crawl when nearly every row is its own group."""
        before = conn.execute(sa.select(sa.func.current_setting("enable_hashagg"))).scalar_one()
        conn.execute(sa.select(sa.func.set_config("enable_hashagg", "off", True)))
        try:
            yield
        finally:
            conn.execute(sa.select(sa.func.set_config("enable_hashagg", before, True)))

    def take_write_turn(self, conn: sa.Connection) -> None:
        """A transaction advisory lock on the mart: writers take turns, so merges and inferred members never race."""
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_WRITE_LOCK, 0)))

    @contextmanager
    def run_alive(self, engine: sa.Engine, id_run: int) -> Iterator[None]:
        """A transaction of the run's own holds its lock until the block ends, or until the process dies and the
        server (or the pooler, which keeps a transaction on one server connection) rolls it back. It takes no
        snapshot, so it holds back no vacuum."""
        with engine.connect() as conn, conn.begin():
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_RUN_LOCKS, id_run)))
            yield

    def alive(self, conn: sa.Connection, id_run: int) -> bool:
        """Whether the run's lock is held. A lock this asks for and gets stays until this transaction ends: its
        run is dead anyway."""
        free = conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_RUN_LOCKS, id_run))).scalar_one()
        return not free

    def day_partitions(self, conn: sa.Connection, table: sa.Table) -> list[sa.Table]:
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

    def move_to_schema(
        self, conn: sa.Connection, tables: Iterable[sa.Table], sequences: Iterable[sa.Sequence], schema: str
    ) -> None:
        """ALTER … SET SCHEMA for each table (its indexes and constraints go with it) and sequence, the schema made
        first if missing (a mart an earlier callmart made in `public`)."""
        if not sa.inspect(conn).has_schema(schema):
            conn.execute(sa.schema.CreateSchema(schema))
        raw = conn.connection.driver_connection
        assert raw is not None
        to = pg_sql.Identifier(schema)
        with raw.cursor() as cursor:
            for table in tables:
                cursor.execute(pg_sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(identifier(table), to))
            for sequence in sequences:
                cursor.execute(pg_sql.SQL("ALTER SEQUENCE {} SET SCHEMA {}").format(identifier(sequence), to))
