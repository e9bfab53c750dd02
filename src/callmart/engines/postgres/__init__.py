"""PostgreSQL (Supabase included): several runs share the mart, through a transaction-mode pooler too.

Importing this package does not import psycopg: its modules do, and the engine's operations import them where
used, so that a process loading a DuckDB mart never loads the driver. `ddl` (no driver) registers how CREATE TABLE
is written as the package loads."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa

from ..base import Engine
from ..hints import PARTITIONED_BY_DAY
from . import ddl  # noqa: F401 - registers the CREATE TABLE hook

if TYPE_CHECKING:
    import pyarrow as pa

    from ..sql.replace import PeriodReplace

__all__ = ["PostgreSQL"]

_RUN_LOCKS = 0x63616C6C  # "call"
_WRITE_LOCK = 0x6D617274  # "mart"
"""Advisory lock namespaces (first key of the two-key form): arbitrary, but fixed for every callmart."""


class PostgreSQL(Engine):
    """PostgreSQL: binary COPY, day partitions swapped in, row level security, runs that take turns."""

    NAME = "PostgreSQL"
    DIALECT = "postgresql"
    SCHEMES: ClassVar[frozenset[str]] = frozenset({"postgres", "postgresql", "postgresql+psycopg"})

    RUNS_SHARE_THE_MART = True
    SKIP_LOCKED_CLAIMS = True
    ROW_SECURITY = True
    DEDICATED_SCHEMA = "callmart"
    # Supabase's Data API serves `public` to anyone holding the project's public key; `callmart` it does not.
    INDEXES = True
    ENFORCED_FACT_KEYS = True
    # A B-tree costs PostgreSQL little; DuckDB's ART index made loads and reloads several times slower.
    DAY_PARTITIONS = True
    COUNTED_DAYS = 31
    # The customers called per day of a year of millions of calls outgrow work_mem, and the hashes spill to disk;
    # DuckDB counts a year at once faster than a month at a time.

    def driver_errors(self) -> tuple[type[Exception], ...]:
        import psycopg

        return (psycopg.Error,)

    def url(self, url: sa.URL) -> sa.URL:
        return url.set(drivername="postgresql+psycopg")

    def _engine_options(self, url: sa.URL) -> dict[str, Any]:
        # No server-side prepared statements: through a transaction-mode pooler (Supabase's, PgBouncer's) the next
        # transaction may run on another server connection, where a statement prepared on this one does not exist.
        return {**super()._engine_options(url), "connect_args": {"prepare_threshold": None}}

    def bulk_insert(
        self, conn: sa.Connection, table: sa.Table, batches: Iterable[pa.RecordBatch], truncated: bool = False
    ) -> int:
        """Binary COPY; rows of a table emptied in this transaction are written frozen (later reads then need not
        set hint bits, which rewrites every page of a freshly loaded table)."""
        from . import copy

        return copy.copy_stream(conn, table, batches, truncated)

    def bulk_insert_routed(
        self,
        conn: sa.Connection,
        parts: Iterable[tuple[sa.Table, pa.RecordBatch]],
        truncated: Sequence[sa.Table] = (),
    ) -> dict[str, int]:
        from . import copy

        return copy.copy_parts(conn, parts, {t.name for t in truncated})

    def fetch_arrow(self, conn: sa.Connection, select: sa.Select[Any], schema: pa.Schema) -> pa.Table:
        """COPY … TO STDOUT as CSV, parsed by Arrow."""
        from . import copy

        return copy.copy_out(conn, select, schema)

    def analyze(self, conn: sa.Connection, table: sa.Table) -> None:
        from . import statistics

        statistics.analyze(conn, table)

    def period_replace(self, conn: sa.Connection, table: sa.Table, start: datetime, end: datetime) -> PeriodReplace:
        from .partitions import PartitionSwap

        return PartitionSwap(conn, table, start, end)

    def secure(
        self,
        conn: sa.Connection,
        tables: Iterable[sa.Table],
        sequences: Iterable[sa.Sequence] = (),
        marker: sa.Table | None = None,
    ) -> None:
        """Row level security and no rights but the owner's and the readers' (access.py)."""
        from . import access

        tables = list(tables)
        readers = access.readers(conn, marker) if marker is not None else []
        access.secure(conn, tables, readers, sequences)
        partitions = [p for t in tables if t.info.get(PARTITIONED_BY_DAY) for p in self.day_partitions(conn, t)]
        access.secure(conn, partitions)

    def grant_read(self, conn: sa.Connection, tables: Sequence[sa.Table], role: str) -> None:
        from . import access

        access.grant_read(conn, tables, role)

    def revoke_read(self, conn: sa.Connection, tables: Sequence[sa.Table], role: str) -> None:
        from . import access

        access.revoke_read(conn, tables, role)

    def canceller(self, conn: sa.Connection) -> Callable[[], None]:
        raw = conn.connection.driver_connection
        assert raw is not None
        cancel: Callable[[], None] = raw.cancel_safe  # a cancel request, which poolers pass on
        return cancel

    def tune_for_bulk(self, conn: sa.Connection) -> None:
        """Room for this transaction's sorts and hashes (the default 4 MB of work_mem spills a million-row sort) and
        for a day's primary key (the default 64 MB, shared by the build's parallel workers, sorts a million-row day
        on disk), and no JIT: compiling each big statement costs more than it saves on a load's simple plans."""
        conn.execute(sa.text("SET LOCAL work_mem = '256MB'"))
        conn.execute(sa.text("SET LOCAL maintenance_work_mem = '256MB'"))
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
        from .partitions import day_partitions

        return day_partitions(conn, table)

    def move_to_schema(
        self, conn: sa.Connection, tables: Iterable[sa.Table], sequences: Iterable[sa.Sequence], schema: str
    ) -> None:
        """ALTER … SET SCHEMA for each table and sequence (access.py)."""
        from . import access

        access.move_to_schema(conn, tables, sequences, schema)
