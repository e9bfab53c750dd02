"""PostgreSQL's COPY fed from Arrow batches, in its binary format: the server then reads each value as it is
stored, where CSV makes it parse every date, time and number from text."""

from __future__ import annotations

import functools
import io
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from psycopg import sql as pg_sql

from ...streams import prefetched, prefetched_first
from .names import identifier

__all__ = ["HEADER", "TRAILER", "BinaryRows", "CopyFormat", "binary_rows", "copy_parts", "copy_stream"]

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
"""Signature, flags and header extension length of a binary COPY stream."""

TRAILER = b"\xff\xff"
"""The field count -1 that ends a binary COPY stream."""

_MICROSECONDS_2000 = 946_684_800_000_000
"""PostgreSQL counts timestamps from 2000-01-01, Arrow from 1970-01-01."""
_DAYS_2000 = 10_957

TEXT = "text"


@dataclass(frozen=True)
class _Kind:
    """How one PostgreSQL type is written: the Arrow type to cast to, the number type that holds it, the
    big-endian NumPy type of its bytes, and the shift of epoch."""

    arrow: pa.DataType
    number: pa.DataType
    wire: str
    shift: int = 0


_INT2 = _Kind(pa.int16(), pa.int16(), ">i2")
_INT4 = _Kind(pa.int32(), pa.int32(), ">i4")
_INT8 = _Kind(pa.int64(), pa.int64(), ">i8")
_FLOAT8 = _Kind(pa.float64(), pa.float64(), ">f8")
_BOOL = _Kind(pa.bool_(), pa.bool_(), "u1")
_TIMESTAMP = _Kind(pa.timestamp("us"), pa.int64(), ">i8", _MICROSECONDS_2000)
_DATE = _Kind(pa.date32(), pa.int32(), ">i4", _DAYS_2000)
_TIME = _Kind(pa.time64("us"), pa.int64(), ">i8")


def _kind(type_: sa.types.TypeEngine[object]) -> _Kind | str | None:
    """The wire form of a column type, or None where this module does not write it (the caller uses CSV)."""
    # Subclasses before their bases: BigInteger and SmallInteger are Integers, Text is a String.
    for sql_type, kind in (
        (sa.BigInteger, _INT8),
        (sa.SmallInteger, _INT2),
        (sa.Integer, _INT4),
        (sa.Boolean, _BOOL),
        (sa.DateTime, _TIMESTAMP),
        (sa.Date, _DATE),
        (sa.Time, _TIME),
        (sa.Double, _FLOAT8),
        (sa.String, TEXT),
    ):
        if isinstance(type_, sql_type):
            if isinstance(type_, sa.DateTime) and type_.timezone:
                return None
            return kind
    return None


class BinaryRows:
    """Encodes batches for `COPY table (columns) FROM STDIN (FORMAT binary)`, fixed-width columns first, so
    that runs of them without nulls become one block of records built by NumPy in a single pass."""

    def __init__(self, names: Sequence[str], kinds: Sequence[_Kind | str]) -> None:
        order = sorted(range(len(names)), key=lambda i: kinds[i] == TEXT)
        self.columns = [names[i] for i in order]
        self._kinds = [kinds[i] for i in order]

    def encode(self, batch: pa.RecordBatch) -> pa.Buffer:
        """The batch's rows, without the stream's header and trailer."""
        count = batch.num_rows
        if count == 0:
            return pa.py_buffer(b"")
        parts: list[pa.Array] = []
        block: list[tuple[_Kind, pa.Array]] = []
        for name, kind in zip(self.columns, self._kinds, strict=True):
            values = batch.column(name)
            if isinstance(kind, _Kind) and values.null_count == 0:
                block.append((kind, values))
                continue
            if block or not parts:
                parts.append(_records(block, count, field_count=None if parts else len(self.columns)))
                block = []
            parts.extend(_nullable_cells(values, kind) if isinstance(kind, _Kind) else _text_cells(values))
        if block or not parts:
            parts.append(_records(block, count, field_count=None if parts else len(self.columns)))
        rows = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, b"")
        offsets = np.frombuffer(rows.buffers()[1], np.int32, count + 1, rows.offset * 4)
        return rows.buffers()[2][offsets[0] : offsets[-1]]


def binary_rows(table: sa.Table, names: Sequence[str]) -> BinaryRows | None:
    """An encoder for these columns of the table, or None if one has a type this module does not write."""
    kinds = [_kind(table.c[name].type) for name in names]
    if any(k is None for k in kinds):
        return None
    return BinaryRows(names, kinds)  # type: ignore[arg-type]


def _numbers(values: pa.Array, kind: _Kind) -> np.ndarray:
    """The values as NumPy numbers of the wire's meaning (nulls as 0), before byte order."""
    if values.type != kind.arrow:
        values = pc.cast(values, kind.arrow)
    if kind.number != kind.arrow:
        values = values.view(kind.number)  # dates and times: the same bytes, read as their count
    if values.null_count:
        values = pc.fill_null(values, pa.scalar(False if kind is _BOOL else 0, kind.number))
    numbers: np.ndarray = values.to_numpy(zero_copy_only=False)
    return numbers - kind.shift if kind.shift else numbers


def _binary(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """A binary array over NumPy memory, without copying it."""
    return pa.Array.from_buffers(
        pa.binary(), len(offsets) - 1, [None, pa.py_buffer(offsets.astype(np.int32, copy=False)), pa.py_buffer(data)]
    )


def _fixed(records: np.ndarray) -> pa.Array:
    """Each record as one binary value."""
    width = records.dtype.itemsize
    return _binary(records.view(np.uint8).reshape(-1), np.arange(len(records) + 1, dtype=np.int32) * width)


def _records(block: list[tuple[_Kind, pa.Array]], count: int, field_count: int | None) -> pa.Array:
    """Adjacent fixed-width fields without nulls, each its length and value, as one record per row; a row's
    first part starts with its field count."""
    layout, template = _layout(tuple(kind.wire for kind, _ in block), field_count)
    records = np.empty(count, dtype=layout)
    records[:] = template  # the counts and lengths, the same in every row, in one pass
    for i, (kind, values) in enumerate(block):
        records[f"v{i}"] = _numbers(values, kind)
    return _fixed(records)


@functools.cache
def _layout(wires: tuple[str, ...], field_count: int | None) -> tuple[np.dtype, np.ndarray]:
    """The record type of fixed-width fields, and one record holding its field count and lengths."""
    fields = [("count", ">i2")] if field_count is not None else []
    for i, wire in enumerate(wires):
        fields += [(f"n{i}", ">i4"), (f"v{i}", wire)]
    layout = np.dtype(fields)
    template = np.zeros((), dtype=layout)
    if field_count is not None:
        template["count"] = field_count
    for i, wire in enumerate(wires):
        template[f"n{i}"] = np.dtype(wire).itemsize
    return layout, template


def _text_cells(values: pa.Array) -> list[pa.Array]:
    """Length (-1 for null), then the UTF-8 bytes, of each value."""
    text = pc.fill_null(pc.cast(values, pa.string()), "")
    lengths = pc.binary_length(text).to_numpy(zero_copy_only=False).astype(">i4")
    if values.null_count:
        lengths[pc.is_null(values).to_numpy(zero_copy_only=False)] = -1
    return [_fixed(lengths), pc.cast(text, pa.binary())]


def _nullable_cells(values: pa.Array, kind: _Kind) -> list[pa.Array]:
    """Length (-1 for null), then the value's bytes, or nothing for a null."""
    valid = pc.is_valid(values).to_numpy(zero_copy_only=False)
    width = np.dtype(kind.wire).itemsize
    lengths = np.where(valid, width, -1).astype(">i4")
    data = _numbers(values, kind)[valid].astype(kind.wire)
    offsets = np.zeros(len(values) + 1, np.int32)
    np.cumsum(valid * width, out=offsets[1:])
    return [_fixed(lengths), _binary(data.view(np.uint8), offsets)]


def copy_parts(
    conn: sa.Connection, parts: Iterable[tuple[sa.Table, pa.RecordBatch]], frozen: set[str]
) -> dict[str, int]:
    """COPY each batch into its table, one statement per batch; return rows per table. `frozen`: tables emptied or
    created in this transaction, whose rows may be written frozen."""
    raw = conn.connection.driver_connection
    assert raw is not None
    written: dict[str, int] = {}
    formats: dict[str, CopyFormat] = {}

    def encoded(table: sa.Table, batch: pa.RecordBatch) -> tuple[sa.Table, int, CopyFormat, bytes | memoryview]:
        form = formats.get(table.name) or formats.setdefault(table.name, CopyFormat.of(table, batch.schema.names))
        return table, batch.num_rows, form, form.encode(batch)

    # Three threads in a pipeline: one reads and cleans, one derives the parts and encodes them, this one feeds
    # the server.
    for table, count, form, payload in prefetched(encoded(t, b) for t, b in prefetched(parts)):
        with raw.cursor() as cursor, cursor.copy(form.statement(table, table.name in frozen)) as copy:
            for chunk in form.framed([payload]):
                copy.write(chunk)
        written[table.name] = written.get(table.name, 0) + count
    return written


class CopyFormat:
    """How batches of given columns go into one table by COPY: PostgreSQL's binary format, or CSV where a column
    type has no binary writer here."""

    def __init__(self, columns: list[str], binary: BinaryRows | None) -> None:
        self.columns = columns
        self.binary = binary

    @classmethod
    def of(cls, table: sa.Table, names: list[str]) -> CopyFormat:
        binary = binary_rows(table, names)
        return cls(binary.columns if binary is not None else names, binary)

    def encode(self, batch: pa.RecordBatch) -> bytes | memoryview:
        payload = _csv(batch.select(self.columns)) if self.binary is None else memoryview(self.binary.encode(batch))
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

    def framed(self, payloads: Iterable[bytes | memoryview]) -> Iterator[bytes | memoryview]:
        """The payloads as one COPY stream."""
        if self.binary is not None:
            yield HEADER
        yield from payloads
        if self.binary is not None:
            yield TRAILER


def copy_stream(conn: sa.Connection, table: sa.Table, batches: Iterable[pa.RecordBatch], truncated: bool) -> int:
    """One COPY of the whole stream, each batch encoded in a worker thread while the server stores the previous;
    return rows. `truncated`: the table was emptied in this transaction, so its rows may be written frozen."""
    started = prefetched_first(batches)
    if started is None:
        return 0
    first, source = started
    form = CopyFormat.of(table, first.schema.names)
    raw = conn.connection.driver_connection
    assert raw is not None
    # Three threads in a pipeline: one reads and cleans, one encodes, this one feeds the server.
    stream = prefetched((batch.num_rows, form.encode(batch)) for batch in itertools.chain([first], source))
    rows = 0

    def payloads() -> Iterator[bytes | memoryview]:
        nonlocal rows
        for count, payload in stream:
            rows += count
            yield payload

    with raw.cursor() as cursor, cursor.copy(form.statement(table, truncated)) as copy:
        for chunk in form.framed(payloads()):
            copy.write(chunk)
    return rows


def _csv(batch: pa.RecordBatch) -> memoryview:
    buffer = io.BytesIO()
    pa_csv.write_csv(batch, buffer, pa_csv.WriteOptions(include_header=False))
    return buffer.getbuffer()
