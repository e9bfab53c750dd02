"""Arrow batches as rows of PostgreSQL's binary COPY format: the server then reads each value as it is stored,
where CSV makes it parse every date, time and number from text (half of a COPY's server time, measured)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

__all__ = ["HEADER", "TRAILER", "BinaryRows", "binary_rows"]

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
    typed = pc.cast(pc.cast(values, kind.arrow), kind.number)
    filled = pc.fill_null(typed, pa.scalar(False if kind is _BOOL else 0, kind.number))
    numbers: np.ndarray = filled.to_numpy(zero_copy_only=False)
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
    layout = [("count", ">i2")] if field_count is not None else []
    for i, (kind, _) in enumerate(block):
        layout += [(f"n{i}", ">i4"), (f"v{i}", kind.wire)]
    records = np.empty(count, dtype=layout)
    if field_count is not None:
        records["count"] = field_count
    for i, (kind, values) in enumerate(block):
        records[f"n{i}"] = np.dtype(kind.wire).itemsize
        records[f"v{i}"] = _numbers(values, kind)
    return _fixed(records)


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
