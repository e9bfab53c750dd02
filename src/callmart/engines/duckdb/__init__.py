"""DuckDB: the embedded engine, one process writing a file at a time."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import sqlalchemy as sa

from ..._errors import ConfigError
from ...streams import prefetched_first
from ..base import Engine

__all__ = ["DuckDB"]

MEMORY_PER_THREAD_MB = 64
MEMORY_LEAST_MB = 128


class DuckDB(Engine):
    """DuckDB: scans Arrow in place, needs no index, and lets one process write its file."""

    NAME = "DuckDB"
    DIALECT = "duckdb"
    SCHEMES: ClassVar[frozenset[str]] = frozenset({"duckdb"})

    def driver_errors(self) -> tuple[type[Exception], ...]:
        import duckdb

        return (duckdb.Error,)

    def url(self, url: sa.URL) -> sa.URL:
        if url.username or url.password or url.host or "@" in str(url.database or ""):
            raise ConfigError("a DuckDB URL names a file, with no user, password or host: duckdb:///FILE")
        if url.database not in (None, "", ":memory:"):
            # Every message names the file where it is: duckdb:///m.duckdb is relative to the working folder, an
            # absolute path takes four slashes (duckdb:////data/m.duckdb).
            return url.set(database=str(Path(str(url.database)).expanduser().absolute()))
        return url

    def create_engine(self, url: sa.URL) -> sa.Engine:
        """An engine for the URL; a DuckDB file is created on first connect, its folder first."""
        on_file = url.database not in (None, "", ":memory:")
        if on_file:
            Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)
        engine = super().create_engine(url)
        # A mart in memory keeps DuckDB's own limit: capped, its data would spill to a folder in the working directory.
        if on_file and not {"memory_limit", "max_memory"} & set(url.query):
            sa.event.listen(engine, "connect", _limit_memory)
        return engine

    def bulk_insert(
        self, conn: sa.Connection, table: sa.Table, batches: Iterable[pa.RecordBatch], truncated: bool = False
    ) -> int:
        return _arrow_scan(conn, table, batches)

    def fetch_arrow(self, conn: sa.Connection, select: sa.Select[Any], schema: pa.Schema) -> pa.Table:
        compiled = select.compile(dialect=conn.dialect)
        raw = conn.connection.driver_connection
        assert raw is not None
        values = [compiled.params[name] for name in compiled.positiontup or ()]
        return raw.sql(str(compiled), params=values or None).to_arrow_table().rename_columns(schema.names).cast(schema)

    def canceller(self, conn: sa.Connection) -> Callable[[], None]:
        raw = conn.connection.driver_connection
        assert raw is not None
        interrupt: Callable[[], None] = raw.interrupt
        return interrupt


def _arrow_scan(conn: sa.Connection, table: sa.Table, batches: Iterable[pa.RecordBatch]) -> int:
    """DuckDB scans Arrow memory in place: no serialisation at all. One INSERT pulls the whole stream, so the
    statement's fixed cost is paid once, not once per batch."""
    raw = conn.connection.driver_connection
    assert raw is not None
    started = prefetched_first(batches)
    if started is None:
        return 0
    first, stream = started
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


def _limit_memory(dbapi_connection: Any, record: Any) -> None:
    """Cap DuckDB's buffers by its threads, never above DuckDB's own limit: by default DuckDB may keep 80% of the
    machine's memory, and a load's buffers grew with the extract; each thread needs some room of its own."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT current_setting('threads'), parse_formatted_bytes(current_setting('memory_limit'))")
        threads, default = cursor.fetchone()
        megabytes = max(MEMORY_LEAST_MB, MEMORY_PER_THREAD_MB * int(threads))
        if megabytes * 1_000_000 < int(default):
            cursor.execute("SET memory_limit = $1", [f"{megabytes}MB"])
    finally:
        cursor.close()
