"""Declared cleaning rules applied to all-text Arrow batches: trim, case, missing values, parsing, rejects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from .declare import Case, Column, Parse, Type
from .extract import SOURCE_FILE, SOURCE_ROW

__all__ = ["Cleaned", "arrow_type", "clean_batch"]

_ARROW: dict[Type, pa.DataType] = {
    Type.INTEGER: pa.int32(),
    Type.BIGINT: pa.int64(),
    Type.TEXT: pa.string(),
    Type.TIMESTAMP: pa.timestamp("s"),
    Type.TIME: pa.time32("s"),
    Type.BOOLEAN: pa.bool_(),
}
_INTEGER = r"^[+-]?\d{1,18}$"
_LIMITS = {Type.INTEGER: 2**31 - 1, Type.BIGINT: 2**63 - 1, Type.TIME: 86_399}

REJECT_SCHEMA = pa.schema(
    [
        (SOURCE_FILE, pa.string()),
        (SOURCE_ROW, pa.int64()),
        ("column_name", pa.string()),
        ("raw_value", pa.string()),
        ("reason", pa.string()),
    ]
)


def arrow_type(type_: Type) -> pa.DataType:
    """The Arrow type of a logical type."""
    return _ARROW[type_]


@dataclass(frozen=True)
class Cleaned:
    """Every row typed (a bad field is null), which rows are bad, and one reject row per bad field."""

    rows: pa.RecordBatch
    bad: pa.Array
    rejects: pa.Table


@dataclass(frozen=True)
class _Field:
    values: pa.Array
    bad: pa.Array  # true where the row cannot be loaded because of this field
    reason: str


def clean_batch(batch: pa.RecordBatch, columns: Sequence[Column]) -> Cleaned:
    """Clean every declared column of a raw batch, marking the rows that have a bad field."""
    parsed: dict[tuple[str, Parse, str | None], tuple[pa.Array, pa.Array]] = {}
    fields = {c.name: _clean_column(batch.column(c.source or c.name), c, parsed) for c in columns}
    bad = pa.array([False] * batch.num_rows, pa.bool_())
    reject_parts = []
    for column in columns:
        field = fields[column.name]
        if pc.any(field.bad).as_py():
            bad = pc.or_(bad, field.bad)
            reject_parts.append(_rejects(batch, column, field))
    arrays = [fields[c.name].values for c in columns] + [batch.column(SOURCE_FILE), batch.column(SOURCE_ROW)]
    names = [c.name for c in columns] + [SOURCE_FILE, SOURCE_ROW]
    rejects = pa.concat_tables(reject_parts) if reject_parts else REJECT_SCHEMA.empty_table()
    return Cleaned(pa.RecordBatch.from_arrays(arrays, names=names), bad, rejects)


def _rejects(batch: pa.RecordBatch, column: Column, field: _Field) -> pa.Table:
    raw = batch.column(column.source or column.name)
    picked = pa.table(
        {
            SOURCE_FILE: pc.filter(batch.column(SOURCE_FILE), field.bad),
            SOURCE_ROW: pc.filter(batch.column(SOURCE_ROW), field.bad),
            "raw_value": pc.filter(raw, field.bad),
        }
    )
    n = picked.num_rows
    return pa.table(
        {
            SOURCE_FILE: picked[SOURCE_FILE],
            SOURCE_ROW: picked[SOURCE_ROW],
            "column_name": pa.array([column.source or column.name] * n, pa.string()),
            "raw_value": picked["raw_value"],
            "reason": pa.array([field.reason] * n, pa.string()),
        },
        schema=REJECT_SCHEMA,
    )


def _clean_column(
    raw: pa.Array, column: Column, parsed: dict[tuple[str, Parse, str | None], tuple[pa.Array, pa.Array]]
) -> _Field:
    """Trim, spot missing values, parse and check one column; a source field feeding two columns is parsed once."""
    text = pc.utf8_trim_whitespace(raw)
    missing = pc.fill_null(
        pc.or_(pc.is_null(text), pc.is_in(text, value_set=pa.array(column.missing, pa.string()))), True
    )
    if column.parse is Parse.TEXT:
        values, unparsable = _text(text, column), pa.array([False] * len(text), pa.bool_())
    else:
        cache_key = (column.source or column.name, column.parse, column.fmt)
        if cache_key not in parsed:
            parsed[cache_key] = _PARSERS[column.parse](text, column.fmt or "")
        values, unparsable = _fit(*parsed[cache_key], column.type)
    default = pa.scalar(column.default, arrow_type(column.type))
    values = pc.if_else(missing, default, values)
    if column.required:
        bad = pc.or_(missing, pc.and_not(unparsable, missing))
        reason = f"missing or unparsable {column.source}"
    else:
        bad = pc.and_not(unparsable, missing)
        reason = f"unparsable {column.source}"
    return _Field(values, pc.fill_null(bad, False), reason)


def _text(text: pa.Array, column: Column) -> pa.Array:
    if column.case is Case.UPPER:
        return pc.utf8_upper(text)
    if column.case is Case.LOWER:
        return pc.utf8_lower(text)
    return text


def _integer(text: pa.Array, fmt: str) -> tuple[pa.Array, pa.Array]:
    """Whole numbers as int64; anything else is unparsable."""
    shaped = pc.fill_null(pc.match_substring_regex(text, _INTEGER), False)
    numbers = pc.cast(pc.if_else(shaped, text, None), pa.int64())
    return numbers, pc.invert(shaped)


def _datetime(text: pa.Array, fmt: str) -> tuple[pa.Array, pa.Array]:
    """Timestamps by a strptime format; a value not matching it, or not a real date, is unparsable."""
    values = pc.strptime(text, format=fmt, unit="s", error_is_null=True)
    return values, pc.is_null(values)


def _duration(text: pa.Array, fmt: str) -> tuple[pa.Array, pa.Array]:
    """H:MM:SS as int64 seconds (below 24 h: the exports' durations are times of day)."""
    # strptime validates the fields (minutes and seconds below 60) far faster than a regular expression.
    clock = pc.strptime(text, format="%H:%M:%S", unit="s", error_is_null=True)
    return pc.subtract(pc.cast(clock, pa.int64()), _CLOCK_ZERO), pc.is_null(clock)


_CLOCK_ZERO = pc.cast(pc.strptime(pa.array(["0:00:00"]), format="%H:%M:%S", unit="s"), pa.int64())[0]
"""strptime puts a bare time on a default day; this is that day's midnight in epoch seconds."""

_PARSERS = {Parse.INTEGER: _integer, Parse.DATETIME: _datetime, Parse.DURATION: _duration}


def _fit(values: pa.Array, unparsable: pa.Array, type_: Type) -> tuple[pa.Array, pa.Array]:
    """Cast parsed values to the column's type; a value out of the type's range is unparsable too."""
    if pa.types.is_timestamp(values.type):
        return values, unparsable
    limit = _LIMITS[type_]
    in_range = pc.fill_null(pc.less_equal(pc.abs(values), limit), False)
    fitted = pc.if_else(in_range, values, None)
    if type_ is Type.TIME:
        return pc.cast(pc.cast(fitted, pa.int32()), pa.time32("s")), pc.invert(in_range)
    return pc.cast(fitted, arrow_type(type_)), pc.invert(in_range)
