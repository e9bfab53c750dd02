"""PostgreSQL's COPY fed from Arrow batches, in its binary format (encoded by pgpq): the server then reads each value
as it is stored, where CSV makes it parse every date, time and number from text. And COPY … TO read back as Arrow."""

from __future__ import annotations

import importlib.util
import io
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from psycopg import sql as pg_sql

from ...streams import prefetched, prefetched_first
from .names import identifier
from .waiting import FILE_BYTES, STATEMENT_BYTES, WaitingParts

__all__ = ["HEADER", "TRAILER", "BinaryRows", "CopyFormat", "binary_rows", "copy_out", "copy_parts", "copy_stream"]

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
"""Signature, flags and header extension length of a binary COPY stream."""

TRAILER = b"\xff\xff"
"""The field count -1 that ends a binary COPY stream."""

Payload = list[bytes | memoryview]
"""One batch's rows in the binary format, in pieces, without the stream's header and trailer."""

# pgpq writes the PostgreSQL type an Arrow type stands for (int64 as bigint): each column's values are cast to the
# Arrow type of its column's type, unless they already are of a type pgpq writes as that PostgreSQL type.
# Subclasses before their bases: BigInteger and SmallInteger are Integers, Text is a String.
_ARROW: tuple[tuple[type[sa.types.TypeEngine[Any]], pa.DataType, frozenset[pa.DataType]], ...] = (
    (sa.BigInteger, pa.int64(), frozenset()),
    (sa.SmallInteger, pa.int16(), frozenset()),
    (sa.Integer, pa.int32(), frozenset()),
    (sa.Boolean, pa.bool_(), frozenset()),
    (sa.DateTime, pa.timestamp("us"), frozenset({pa.timestamp("s"), pa.timestamp("ms")})),
    (sa.Date, pa.date32(), frozenset()),
    (sa.Time, pa.time64("us"), frozenset({pa.time32("s"), pa.time32("ms")})),
    (sa.Double, pa.float64(), frozenset()),
    (sa.String, pa.string(), frozenset()),
)


def _wire_type(type_: sa.types.TypeEngine[Any], given: pa.DataType) -> pa.DataType | None:
    """The Arrow type to hand pgpq for a column type, or None where this module does not write it (the caller uses
    CSV)."""
    for sql_type, arrow, also in _ARROW:
        if isinstance(type_, sql_type):
            if isinstance(type_, sa.DateTime) and type_.timezone:
                return None
            return given if given in also else arrow
    return None


class BinaryRows:
    """Encodes batches for `COPY table (columns) FROM STDIN (FORMAT binary)`."""

    def __init__(self, schema: pa.Schema) -> None:
        self.columns: list[str] = schema.names
        self._schema = schema

    def encode(self, batch: pa.RecordBatch) -> Payload:
        """The batch's rows, without the stream's header and trailer."""
        if batch.num_rows == 0:
            return []
        # pgpq keeps back up to 1 MB of output until finish(), which ends its encoder: an encoder per batch, so
        # that each batch's rows can end a COPY statement of their own.
        from pgpq import ArrowToPostgresBinaryEncoder

        encoder = ArrowToPostgresBinaryEncoder(self._schema)
        encoder.write_header()
        rows = encoder.write_batch(self._cast(batch))
        return [rows, memoryview(encoder.finish())[: -len(TRAILER)]]

    def _cast(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch's columns, in this encoder's order and types."""
        columns = [batch.column(field.name) for field in self._schema]
        cast = [c if c.type == f.type else pc.cast(c, f.type) for c, f in zip(columns, self._schema, strict=True)]
        return pa.RecordBatch.from_arrays(cast, schema=self._schema)


def binary_rows(table: sa.Table, schema: pa.Schema) -> BinaryRows | None:
    """An encoder for these columns of the table, or None if one has a type this module does not write, or pgpq
    is not installed (it has no wheel for Linux on ARM, where pyproject.toml leaves it out)."""
    types = [_wire_type(table.c[field.name].type, field.type) for field in schema]
    if any(t is None for t in types) or not _pgpq_installed():
        return None
    return BinaryRows(pa.schema([pa.field(field.name, t) for field, t in zip(schema, types, strict=True)]))


def _pgpq_installed() -> bool:
    return importlib.util.find_spec("pgpq") is not None


def copy_parts(
    conn: sa.Connection, parts: Iterable[tuple[sa.Table, pa.RecordBatch]], frozen: set[str]
) -> dict[str, int]:
    """COPY each batch into its table; return rows per table. `frozen`: tables emptied or created in this
    transaction, whose rows may be written frozen."""
    raw = conn.connection.driver_connection
    assert raw is not None
    written: dict[str, int] = {}
    formats: dict[str, CopyFormat] = {}

    def encoded(table: sa.Table, batch: pa.RecordBatch) -> tuple[sa.Table, int, CopyFormat, Payload]:
        form = formats.get(table.name) or formats.setdefault(table.name, CopyFormat.of(table, batch.schema))
        return table, batch.num_rows, form, form.encode(batch)

    # Three threads in a pipeline: one reads and cleans, one derives the parts and encodes them, this one feeds
    # the server.
    for table, count, form, payload in prefetched(itertools.starmap(encoded, _statements(prefetched(parts)))):
        with raw.cursor() as cursor, cursor.copy(form.statement(table, table.name in frozen)) as copy:
            for chunk in form.framed(payload):
                copy.write(chunk)
        written[table.name] = written.get(table.name, 0) + count
    return written


def _statements(parts: Iterable[tuple[sa.Table, pa.RecordBatch]]) -> Iterator[tuple[sa.Table, pa.RecordBatch]]:
    """The parts as the batches to write in a statement each: a part smaller than a statement's worth waits
    (`waiting.py`) until its table's waiting rows make one, or the parts end."""
    tables: dict[str, sa.Table] = {}
    with WaitingParts() as waiting:
        for table, batch in parts:
            if not batch.num_rows:
                continue
            tables[table.name] = table
            kept = waiting.keep(table.name, batch) if batch.nbytes < STATEMENT_BYTES else None
            if kept is None:
                yield table, batch
            elif kept >= STATEMENT_BYTES:
                yield table, waiting.take(table.name)
            if waiting.file_size >= FILE_BYTES:
                yield from ((tables[name], rows) for name, rows in waiting.take_all())
        yield from ((tables[name], rows) for name, rows in waiting.take_all())


class CopyFormat:
    """How batches of given columns go into one table by COPY: PostgreSQL's binary format, or CSV where a column
    type has no binary writer here."""

    def __init__(self, columns: list[str], binary: BinaryRows | None) -> None:
        self.columns = columns
        self.binary = binary

    @classmethod
    def of(cls, table: sa.Table, schema: pa.Schema) -> CopyFormat:
        binary = binary_rows(table, schema)
        return cls(schema.names, binary)

    def encode(self, batch: pa.RecordBatch) -> Payload:
        payload: Payload = [_csv(batch.select(self.columns))] if self.binary is None else self.binary.encode(batch)
        # The allocator keeps a thread's freed pages for its next allocations; across the pipeline's threads that
        # adds up to memory a streamed load does not need.
        pa.default_memory_pool().release_unused()
        return payload

    def statement(self, table: sa.Table, truncated: bool) -> pg_sql.Composed:
        return pg_sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {}{})").format(
            identifier(table),
            pg_sql.SQL(", ").join(map(pg_sql.Identifier, self.columns)),
            pg_sql.SQL("csv" if self.binary is None else "binary"),
            pg_sql.SQL(", FREEZE" if truncated else ""),
        )

    def framed(self, pieces: Iterable[bytes | memoryview]) -> Iterator[bytes | memoryview]:
        """The pieces of the batches' payloads as one COPY stream."""
        if self.binary is not None:
            yield HEADER
        yield from pieces
        if self.binary is not None:
            yield TRAILER


def copy_stream(conn: sa.Connection, table: sa.Table, batches: Iterable[pa.RecordBatch], truncated: bool) -> int:
    """One COPY of the whole stream, each batch encoded in a worker thread while the server stores the previous;
    return rows. `truncated`: the table was emptied in this transaction, so its rows may be written frozen."""
    started = prefetched_first(batches)
    if started is None:
        return 0
    first, source = started
    form = CopyFormat.of(table, first.schema)
    raw = conn.connection.driver_connection
    assert raw is not None
    # Three threads in a pipeline: one reads and cleans, one encodes, this one feeds the server.
    stream = prefetched((batch.num_rows, form.encode(batch)) for batch in itertools.chain([first], source))
    rows = 0

    def pieces() -> Iterator[bytes | memoryview]:
        nonlocal rows
        for count, payload in stream:
            rows += count
            yield from payload

    with raw.cursor() as cursor, cursor.copy(form.statement(table, truncated)) as copy:
        for chunk in form.framed(pieces()):
            copy.write(chunk)
    return rows


def _csv(batch: pa.RecordBatch) -> memoryview:
    buffer = io.BytesIO()
    pa_csv.write_csv(batch, buffer, pa_csv.WriteOptions(include_header=False))
    return buffer.getbuffer()


def copy_out(conn: sa.Connection, select: sa.Select[Any], schema: pa.Schema) -> pa.Table:
    """The rows of `select`, by COPY … TO STDOUT as CSV, parsed by Arrow."""
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
