"""The declared cleaning rules as DuckDB SQL: the same columns, values and rejects as clean.clean_batch gives on
Arrow, computed by DuckDB over a relation of raw text, so its own readers feed the load without a pass in Python."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from ... import clean, rejects
from ...declare import Case, Column, Parse, Type
from ...rejects import SOURCE_FILE, SOURCE_ROW

__all__ = ["BAD", "cleaned_rows", "reject_rows"]

BAD = "bad"
"""The column of cleaned_rows that is true where a row has a bad field, as Cleaned.bad."""

_Expr = ColumnElement[Any]

_SPACES = "".join(re.escape(c) for c in map(chr, range(0x3001)) if c.isspace())
# Arrow trims what Python calls whitespace (Unicode White_Space and the ASCII separators 0x1c to 0x1f).
_TRIM = f"^[{_SPACES}]+|[{_SPACES}]+$"
_SQL_TYPES: dict[Type, sa.types.TypeEngine[Any]] = {
    Type.INTEGER: sa.Integer(),
    Type.BIGINT: sa.BigInteger(),
    Type.TEXT: sa.String(),
    Type.TIMESTAMP: sa.DateTime(),
    Type.TIME: sa.Time(),
    Type.BOOLEAN: sa.Boolean(),
}


@dataclass(frozen=True)
class _Field:
    value: _Expr
    missing: _Expr  # a required value is missing
    unparsable: _Expr  # a given value cannot be read as its type


def cleaned_rows(raw: sa.FromClause, columns: Sequence[Column]) -> sa.Select[Any]:
    """Every row of `raw` (text fields named by their source, with source_file and source_row) typed by the
    declared columns, a bad field null, and `bad` where clean_batch marks the row bad."""
    fields = {c.name: _field(raw.c[c.source or c.name], c) for c in columns}
    masks = [mask for mask, _, _ in _checks(raw, columns, fields)]
    bad = sa.or_(*masks) if masks else sa.false()
    return sa.select(
        *[fields[c.name].value.label(c.name) for c in columns],
        raw.c[SOURCE_FILE],
        raw.c[SOURCE_ROW],
        bad.label(BAD),
    )


def reject_rows(raw: sa.FromClause, columns: Sequence[Column]) -> sa.CompoundSelect[Any] | sa.Select[Any]:
    """One row per bad field, with rejects.REJECT_SCHEMA's columns, as clean_batch's rejects."""
    fields = {c.name: _field(raw.c[c.source or c.name], c) for c in columns}
    fields_read = [sa.func.coalesce(c, sa.literal("")) for c in raw.c if c.name not in (SOURCE_FILE, SOURCE_ROW)]
    line = _storable(sa.func.concat_ws(sa.literal(","), *fields_read))
    parts = [
        sa.select(
            raw.c[SOURCE_FILE].label(SOURCE_FILE),
            sa.cast(raw.c[SOURCE_ROW], sa.BigInteger).label(SOURCE_ROW),
            sa.literal(source, sa.String).label("column_name"),
            _storable(raw.c[source]).label("raw_value"),
            line.label("raw_line"),
            sa.literal(reason, sa.String).label("reason"),
            sa.literal(rejects.ERROR, sa.String).label("severity"),
        ).where(mask)
        for mask, source, reason in _checks(raw, columns, fields)
    ]
    if not parts:
        empty: list[Any] = [sa.null().label(name) for name in rejects.REJECT_SCHEMA.names]
        return sa.select(*empty).where(sa.false())
    return parts[0] if len(parts) == 1 else sa.union_all(*parts)


def _checks(raw: sa.FromClause, columns: Sequence[Column], fields: dict[str, _Field]) -> list[tuple[_Expr, str, str]]:
    """Each check with the source field it names and its reason; a field feeding two columns checked once."""
    found: list[tuple[_Expr, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for column in columns:
        source = column.source or column.name
        field = fields[column.name]
        checks = [(field.missing, clean.missing_reason(column)), (field.unparsable, clean.unparsable_reason(column))]
        if column.source and column.parse is Parse.TEXT:
            has_nul = sa.func.coalesce(sa.func.contains(raw.c[source], "\x00"), sa.false())
            checks.append((has_nul, clean.nul_reason(column)))
        for mask, reason in checks:
            if (source, reason) not in seen and not isinstance(mask, sa.False_):
                seen.add((source, reason))
                found.append((mask, source, reason))
    return found


def _field(raw: _Expr, column: Column) -> _Field:
    """Trim, spot missing values, parse and check one column, as clean._clean_column does."""
    text = sa.func.regexp_replace(raw, _TRIM, "", "g")
    missing = sa.func.coalesce(sa.or_(text.is_(None), text.in_(list(column.missing))), sa.true())
    value: _Expr
    unparsable: _Expr
    if column.parse is Parse.TEXT:
        value, unparsable = _text(text, column), sa.false()
    else:
        parsed, unparsed = _PARSERS[column.parse](text, column.fmt or "")
        value, unparsable = _fit(parsed, unparsed, column.type)
    default = sa.cast(sa.literal(column.default), _SQL_TYPES[column.type])
    return _Field(
        sa.case((missing, default), else_=value),
        missing if column.required else sa.false(),
        sa.and_(unparsable, sa.not_(missing)) if not isinstance(unparsable, sa.False_) else unparsable,
    )


def _text(text: _Expr, column: Column) -> _Expr:
    if column.case is Case.UPPER:
        return sa.func.upper(text)
    if column.case is Case.LOWER:
        return sa.func.lower(text)
    return text


def _integer(text: _Expr, fmt: str) -> tuple[_Expr, _Expr]:
    shaped = sa.func.coalesce(sa.func.regexp_matches(text, clean.INTEGER_PATTERN), sa.false())
    return sa.case((shaped, sa.cast(text, sa.BigInteger))), sa.not_(shaped)


def _datetime(text: _Expr, fmt: str) -> tuple[_Expr, _Expr]:
    # DuckDB refuses a day its month lacks (2/30), which Arrow's strptime rolls over and clean.py then refuses.
    value = sa.func.try_strptime(text, fmt)
    wrong: _Expr = sa.or_(sa.func.coalesce(sa.func.year(value) < 1000, sa.false()), _without_digits(text))
    if fmt.endswith("%S"):
        wrong = sa.or_(wrong, _leap_second(text))
    checked = sa.case((wrong, sa.null()), else_=value)
    return checked, checked.is_(None)


def _duration(text: _Expr, fmt: str) -> tuple[_Expr, _Expr]:
    wrong = sa.or_(_leap_second(text), _without_digits(text))
    clock = sa.case((wrong, sa.null()), else_=sa.func.try_strptime(text, "%H:%M:%S"))
    seconds = sa.func.hour(clock) * 3600 + sa.func.minute(clock) * 60 + sa.func.second(clock)
    return sa.cast(seconds, sa.BigInteger), clock.is_(None)


def _without_digits(text: _Expr) -> _Expr:
    """Text with no digit: DuckDB's strptime takes 'infinity', '-infinity' and 'epoch' whatever the format, which
    Arrow's refuses as every format here has digits."""
    return sa.not_(sa.func.coalesce(sa.func.regexp_matches(text, "[0-9]"), sa.false()))


def _leap_second(text: _Expr) -> _Expr:
    return sa.func.coalesce(sa.func.right(text, 2).in_(list(clean.LEAP_SECONDS)), sa.false())


def _fit(value: _Expr, unparsable: _Expr, type_: Type) -> tuple[_Expr, _Expr]:
    """The parsed value in the column's type; a value out of the type's range is unparsable too."""
    if type_ is Type.TIMESTAMP:
        return value, unparsable
    in_range = sa.func.coalesce(sa.func.abs(value) <= clean.LIMITS[type_], sa.false())
    fitted = sa.case((in_range, value))
    if type_ is Type.TIME:
        return sa.literal(time(0), sa.Time) + sa.func.to_seconds(fitted), sa.not_(in_range)
    return sa.cast(fitted, _SQL_TYPES[type_]), sa.not_(in_range)


def _storable(text: _Expr) -> _Expr:
    """As rejects._storable: PostgreSQL's text holds no NUL byte, so it is written as \\0."""
    return sa.func.replace(text, "\x00", "\\0")


_PARSERS = {Parse.INTEGER: _integer, Parse.DATETIME: _datetime, Parse.DURATION: _duration}
