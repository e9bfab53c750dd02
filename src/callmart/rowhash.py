"""A 64-bit hash of each staged row's content, computed in the client as batches stream by, so that finding exact
duplicate rows in the database is a group by one integer column instead of by every column."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from .spill import SpillFile

__all__ = ["ROW_HASH", "RepeatedHashes", "RowHasher", "row_hashes"]

ROW_HASH = "row_hash"

PREFIX_BITS = 32
"""Bits of each hash kept in the client to find repeats: 4 bytes a row; the few prefixes shared by chance are
sorted out by the exact comparison that follows."""

HELD_PREFIXES = 1 << 18
"""Prefixes RepeatedHashes holds (1 MB) before writing them to its file."""

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BASE = 0x100000001B3  # odd, so it has an inverse modulo 2**64
_BASE_INVERSE = pow(_BASE, -1, 1 << 64)
_NULL = np.uint64(0x6A09E667F3BCC909)
"""Stands for a null field: distinct from the hash of any value with overwhelming odds."""


class RowHasher:
    """Appends ROW_HASH over `columns` to each batch."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch with its rows' hashes appended."""
        return batch.append_column(pa.field(ROW_HASH, pa.int64()), row_hashes(batch, self.columns))


def row_hashes(batch: pa.RecordBatch, columns: Sequence[str]) -> pa.Array:
    """A 64-bit hash of each row's values in `columns`, as signed integers (PostgreSQL has no unsigned type).

    Arrow has no row hash; NumPy computes one in a few passes over each column's memory. It need not resist an
    adversary: a shared hash only sends rows to the exact comparison."""
    combined = np.full(batch.num_rows, _GOLDEN, np.uint64)
    for name in columns:  # NumPy's unsigned arithmetic on arrays wraps modulo 2**64, as hashing wants
        combined = _finalized(combined * _GOLDEN + _column_hashes(batch.column(name)))
    return pa.array(combined.view(np.int64))


def _column_hashes(values: pa.Array) -> np.ndarray:
    """A 64-bit hash of each value: its text's bytes, or its number's bits; _NULL for a null."""
    kind = values.type
    if pa.types.is_boolean(kind):
        numbers = pc.cast(values, pa.int8())
    elif pa.types.is_integer(kind):
        numbers = values
    elif (pa.types.is_temporal(kind) or pa.types.is_floating(kind)) and kind.bit_width in (32, 64):
        # Timestamps, dates, times, floats: their bits as a whole number of the same width (-0.0 made 0.0 first,
        # since SQL takes them for equal).
        bits = pc.add(values, pa.scalar(0.0, kind)) if pa.types.is_floating(kind) else values
        numbers = bits.view(pa.int64() if kind.bit_width == 64 else pa.int32())
    else:
        numbers = None
    if numbers is None:
        text = values if _is_text(kind) else pc.cast(values, pa.string())
        hashes = _text_hashes(text)
    else:
        filled = pc.fill_null(numbers, pa.scalar(0, numbers.type))
        hashes = _finalized(filled.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64))
    if values.null_count:
        hashes[pc.is_null(values).to_numpy(zero_copy_only=False)] = _NULL
    return hashes


def _is_text(kind: pa.DataType) -> bool:
    return any(
        test(kind)
        for test in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    )


def _text_hashes(values: pa.Array) -> np.ndarray:
    """Each value's bytes as a polynomial in _BASE modulo 2**64, mixed with its length.

    One prefix sum over all the bytes gives every value's sum at once, each shifted by its start's power of
    _BASE; multiplying by the inverse power takes the shift back out, so a value hashes the same wherever it
    lies in the buffer."""
    large = pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type)
    offset_type = np.int64 if large else np.int32
    width = np.dtype(offset_type).itemsize
    offsets = np.frombuffer(values.buffers()[1], offset_type, len(values) + 1, values.offset * width)
    data = values.buffers()[2]
    first, last = int(offsets[0]), int(offsets[-1])
    raw = np.frombuffer(data, np.uint8, last - first, first) if data is not None else np.empty(0, np.uint8)
    starts = (offsets[:-1] - first).astype(np.intp)
    ends = (offsets[1:] - first).astype(np.intp)
    powers, inverses = _powers(len(raw))
    sums = np.zeros(len(raw) + 1, np.uint64)
    np.multiply(raw, powers[: len(raw)], out=sums[1:])
    np.cumsum(sums[1:], out=sums[1:])
    polynomial = (sums[ends] - sums[starts]) * inverses[starts]
    return _finalized(polynomial ^ (ends - starts).astype(np.uint64) * _GOLDEN)


_powers_known: tuple[np.ndarray, np.ndarray] = (np.ones(1, np.uint64), np.ones(1, np.uint64))


def _powers(count: int) -> tuple[np.ndarray, np.ndarray]:
    """_BASE ** i and _BASE_INVERSE ** i modulo 2**64 for i in 0 .. count at least, kept from batch to batch:
    computed afresh, they cost more than the hashing itself."""
    global _powers_known
    known = _powers_known
    if len(known[0]) <= count:
        size = count + 1 + count // 4
        known = (_power_series(_BASE, size), _power_series(_BASE_INVERSE, size))
        _powers_known = known  # replaced whole, so a thread reading the old pair still reads a consistent one
    return known


def _power_series(base: int, count: int) -> np.ndarray:
    """base**0 .. base**(count - 1) modulo 2**64."""
    factors = np.full(count, np.uint64(base), np.uint64)
    factors[0] = 1
    return np.cumprod(factors, dtype=np.uint64)


def _finalized(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: every input bit moves every output bit."""
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xFF51AFD7ED558CCD)
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xC4CEB9FE1A85EC53)
    mixed: np.ndarray = x ^ (x >> np.uint64(33))
    return mixed


class RepeatedHashes:
    """Keeps the first PREFIX_BITS of each row hash as batches stream by, to tell at the end which prefixes
    occur more than once: a sort in the client instead of a group by of every staged row in the database.

    Beyond HELD_PREFIXES they wait in an unnamed temporary file, so that a load does not hold 4 bytes per row
    while its rows stream; where no file can be written, they stay in memory."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._held = 0
        self._written = SpillFile("callmart-hashes-")

    def add(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Keep the batch's hash prefixes; the batch passes through."""
        hashes = batch.column(ROW_HASH).to_numpy(zero_copy_only=False)
        part = (hashes >> (64 - PREFIX_BITS)).astype(np.int32)
        self._parts.append(part)
        self._held += len(part)
        # Where no file can be written, they stay in memory.
        if self._held >= HELD_PREFIXES and self._written.append(p.data for p in self._parts):
            self._parts, self._held = [], 0
        return batch

    def repeated(self) -> list[int]:
        """The prefixes seen more than once, ascending, as `prefix` computes them in SQL."""
        parts, self._parts, self._held = self._parts, [], 0
        if self._written.size:
            written = np.empty(self._written.size // np.dtype(np.int32).itemsize, np.int32)
            self._written.read_into(written.data, 0)
            parts.insert(0, written)
        self._written.close()
        if not parts:
            return []
        prefixes = np.concatenate(parts)
        del parts
        prefixes.sort()
        same = prefixes[1:] == prefixes[:-1]
        return [int(p) for p in np.unique(prefixes[1:][same])]


def prefix(row_hash: sa.ColumnElement[int]) -> sa.ColumnElement[int]:
    """The hash's first PREFIX_BITS, signed, as RepeatedHashes keeps them."""
    return row_hash.op(">>")(sa.cast(sa.literal(64 - PREFIX_BITS), sa.Integer))
