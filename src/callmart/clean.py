"""Declared cleaning rules applied to all-text Arrow batches: trim, case, missing values, parsing, rejects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from . import rejects
from .declare import Case, Column, Parse, Type
from .rejects import SOURCE_FILE, SOURCE_ROW

__all__ = [
    "INTEGER_PATTERN",
    "LEAP_SECONDS",
    "LIMITS",
    "Cleaned",
    "arrow_type",
    "clean_batch",
    "clean_values",
    "missing_reason",
    "nul_reason",
    "unparsable_reason",
]

_ARROW: dict[Type, pa.DataType] = {
    Type.INTEGER: pa.int32(),
    Type.BIGINT: pa.int64(),
    Type.TEXT: pa.string(),
    Type.TIMESTAMP: pa.timestamp("s"),
    Type.TIME: pa.time32("s"),
    Type.BOOLEAN: pa.bool_(),
}
INTEGER_PATTERN = r"^[+-]?\d{1,18}$"
"""A whole number as the exports write it; longer ones overflow int64 before the range check."""
LIMITS = {Type.INTEGER: 2**31 - 1, Type.BIGINT: 2**63 - 1, Type.TIME: 86_399}
"""The largest magnitude each type holds (a time: seconds of a day)."""
LEAP_SECONDS = ("60", "61")
"""Seconds strptime's %S takes and no export means."""


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
    missing: pa.Array  # true where a required value is missing
    unparsable: pa.Array  # true where a given value cannot be read as its type


def clean_batch(batch: pa.RecordBatch, columns: Sequence[Column]) -> Cleaned:
    """Clean every declared column of a raw batch, marking the rows that have a bad field."""
    parsed: dict[tuple[str, Parse, str | None], tuple[pa.Array, pa.Array]] = {}
    fields = {c.name: _clean_column(batch.column(c.source or c.name), c, parsed) for c in columns}
    bad = _all(False, batch.num_rows)
    reject_parts = []
    seen: set[tuple[str | None, str]] = set()
    for column in columns:
        field = fields[column.name]
        checks = [(field.missing, missing_reason(column)), (field.unparsable, unparsable_reason(column))]
        if column.source and column.parse is Parse.TEXT:
            # A NUL byte is no text: PostgreSQL cannot store it, and no export means it.
            checks.append((_has_nul(batch.column(column.source)), nul_reason(column)))
        for mask, reason in checks:
            # A source field feeding two columns (a duration as time and as seconds) is reported once.
            if (column.source, reason) not in seen and pc.any(mask).as_py():
                seen.add((column.source, reason))
                bad = pc.or_(bad, mask)
                reject_parts.append(_rejects(batch, column, mask, reason))
    arrays = [fields[c.name].values for c in columns] + [batch.column(SOURCE_FILE), batch.column(SOURCE_ROW)]
    names = [c.name for c in columns] + [SOURCE_FILE, SOURCE_ROW]
    return Cleaned(pa.RecordBatch.from_arrays(arrays, names=names), bad, rejects.concat(reject_parts))


def _has_nul(raw: pa.Array) -> pa.Array:
    return pc.fill_null(pc.match_substring(raw, "\x00"), False)


def clean_values(raw: pa.Array, column: Column) -> pa.Array:
    """One raw column cleaned as `clean_batch` cleans it: its typed values, null where a value is bad."""
    return _clean_column(raw, column, {}).values


def _all(value: bool, length: int) -> pa.Array:
    """A boolean array of one value."""
    return pa.repeat(pa.scalar(value, pa.bool_()), length)


def _int(value: int) -> pa.Scalar:
    """An int64 scalar. Compute functions given a bare Python number look for optional converters (dateutil,
    decimal) on every call, which costs more than the computation on a small batch."""
    return pa.scalar(value, pa.int64())


def raw_lines(batch: pa.RecordBatch) -> pa.Array:
    """The source fields of each row joined by commas, as near to the raw line as the read columns allow."""
    fields = [batch.column(n) for n in batch.schema.names if n not in (SOURCE_FILE, SOURCE_ROW)]
    return pc.binary_join_element_wise(*fields, ",", null_handling="replace", null_replacement="")


def _rejects(batch: pa.RecordBatch, column: Column, mask: pa.Array, reason: str) -> pa.Table:
    source = column.source or column.name
    return rejects.make(
        pc.filter(batch.column(SOURCE_FILE), mask),
        pc.filter(batch.column(SOURCE_ROW), mask),
        source,
        pc.filter(batch.column(source), mask),
        raw_lines(batch.filter(mask)),
        reason,
    )


def missing_reason(column: Column) -> str:
    """Why a row whose required field is missing is rejected."""
    return f"missing {column.source}"


def nul_reason(column: Column) -> str:
    """Why a row whose text holds a NUL byte is rejected."""
    return f"a NUL byte in {column.source}"


def unparsable_reason(column: Column) -> str:
    """Why a row whose field cannot be read as its column's type is rejected."""
    if column.parse is Parse.DATETIME:
        shape = (column.fmt or "").replace("%m", "M").replace("%d", "D").replace("%Y", "YYYY")
        expected = "a date like " + shape.replace("%H", "H").replace("%M", "MM").replace("%S", "SS")
    else:
        expected = _EXPECTED[column.parse]
    return f"unparsable {column.source}: expected {expected}"


def _clean_column(
    raw: pa.Array, column: Column, parsed: dict[tuple[str, Parse, str | None], tuple[pa.Array, pa.Array]]
) -> _Field:
    """Trim, spot missing values, parse and check one column; a source field feeding two columns is parsed once."""
    text = pc.utf8_trim_whitespace(raw)
    missing = pc.fill_null(
        pc.or_(pc.is_null(text), pc.is_in(text, value_set=pa.array(column.missing, pa.string()))), True
    )
    if column.parse is Parse.TEXT:
        values, unparsable = _text(text, column), _all(False, len(text))
    else:
        cache_key = (column.source or column.name, column.parse, column.fmt)
        if cache_key not in parsed:
            parsed[cache_key] = _PARSERS[column.parse](text, column.fmt or "")
        values, unparsable = _fit(*parsed[cache_key], column.type)
    default = pa.scalar(column.default, arrow_type(column.type))
    values = pc.if_else(missing, default, values)
    no_value = missing if column.required else _all(False, len(text))
    return _Field(values, no_value, pc.fill_null(pc.and_not(unparsable, missing), False))


def _text(text: pa.Array, column: Column) -> pa.Array:
    if column.case is Case.UPPER:
        return pc.utf8_upper(text)
    if column.case is Case.LOWER:
        return pc.utf8_lower(text)
    return text


def _integer(text: pa.Array, fmt: str) -> tuple[pa.Array, pa.Array]:
    """Whole numbers as int64; anything else is unparsable."""
    shaped = pc.fill_null(pc.match_substring_regex(text, INTEGER_PATTERN), False)
    # Arrow's cast reads -7 but not +7.
    unsigned = pc.replace_substring_regex(text, pattern=r"^\+", replacement="")
    numbers = pc.cast(pc.if_else(shaped, unsigned, pa.scalar(None, pa.string())), pa.int64())
    return numbers, pc.invert(shaped)


def _datetime(text: pa.Array, fmt: str) -> tuple[pa.Array, pa.Array]:
    """Timestamps by a strptime format; a value not matching it, or not a real date, is unparsable."""
    values = pc.strptime(text, format=fmt, unit="s", error_is_null=True)
    # strptime reads a two-digit %Y (a spreadsheet's 3/4/24) as year 24, and rolls a day the month lacks over
    # (2/30 becomes 3/1, so only days 1 to 3 can be such): neither is the date written.
    wrong = pc.fill_null(pc.less(pc.year(values), _int(1000)), False)
    if fmt.endswith("%S"):
        wrong = pc.or_(wrong, _leap_second(text))
    rolled = pc.fill_null(pc.less_equal(pc.day(values), _int(3)), False)
    if pc.any(rolled).as_py():
        written = _unpadded(pc.filter(text, rolled))
        again = _unpadded(pc.strftime(pc.filter(values, rolled), format=fmt, locale="C"))
        wrong = pc.or_(wrong, pc.replace_with_mask(_all(False, len(text)), rolled, pc.not_equal(written, again)))
    values = pc.if_else(wrong, pa.scalar(None, values.type), values)
    return values, pc.is_null(values)


def _unpadded(text: pa.Array) -> pa.Array:
    """Text with the leading zeros of its numbers dropped, to compare dates written with or without them."""
    return pc.replace_substring_regex(text, pattern=r"\b0+(\d)", replacement=r"\1")


def _duration(text: pa.Array, fmt: str) -> tuple[pa.Array, pa.Array]:
    """H:MM:SS as int64 seconds (below 24 h: the exports' durations are times of day)."""
    # strptime validates the fields (minutes and seconds below 60) far faster than a regular expression, but
    # takes leap seconds (:60, :61) as well.
    clock = pc.strptime(text, format="%H:%M:%S", unit="s", error_is_null=True)
    clock = pc.if_else(_leap_second(text), pa.scalar(None, clock.type), clock)
    return pc.subtract(pc.cast(clock, pa.int64()), _CLOCK_ZERO), pc.is_null(clock)


def _leap_second(text: pa.Array) -> pa.Array:
    """Where text ending in seconds has second 60 or 61, which strptime's %S accepts."""
    return pc.fill_null(pc.is_in(pc.utf8_slice_codeunits(text, -2), value_set=_LEAP_SECONDS), False)


_LEAP_SECONDS = pa.array(LEAP_SECONDS)


_CLOCK_ZERO = pc.cast(pc.strptime(pa.array(["0:00:00"]), format="%H:%M:%S", unit="s"), pa.int64())[0]
"""strptime puts a bare time on a default day; this is that day's midnight in epoch seconds."""

_EXPECTED = {
    Parse.TEXT: "text",
    Parse.INTEGER: "a whole number",
    Parse.DURATION: "a duration H:MM:SS under 24 hours",
}

_PARSERS = {Parse.INTEGER: _integer, Parse.DATETIME: _datetime, Parse.DURATION: _duration}


def _fit(values: pa.Array, unparsable: pa.Array, type_: Type) -> tuple[pa.Array, pa.Array]:
    """Cast parsed values to the column's type; a value out of the type's range is unparsable too."""
    if pa.types.is_timestamp(values.type):
        return values, unparsable
    limit = LIMITS[type_]
    in_range = pc.fill_null(pc.less_equal(pc.abs(values), pa.scalar(limit, values.type)), False)
    fitted = pc.if_else(in_range, values, pa.scalar(None, values.type))
    if type_ is Type.TIME:
        return pc.cast(pc.cast(fitted, pa.int32()), pa.time32("s")), pc.invert(in_range)
    return pc.cast(fitted, arrow_type(type_)), pc.invert(in_range)
