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

_SPACE_CODES = [code for code in range(0x3001) if chr(code).isspace()]
# Arrow trims what Python calls whitespace (Unicode White_Space and the ASCII separators 0x1c to 0x1f).
_SPACES = "".join(re.escape(chr(code)) for code in _SPACE_CODES)
_TRIM = f"^[{_SPACES}]+|[{_SPACES}]+$"
_PLAIN = (0x21, min(code for code in _SPACE_CODES if code > 0x20) - 1)
"""Characters between these codes are no space: a field that starts and ends with them needs no trimming."""
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


@dataclass(frozen=True)
class _Read:
    """The raw rows with each source field trimmed once and each of its parses done once, in subqueries one over
    the other: DuckDB shares no expression repeated inside a CASE, and each check and value repeats them."""

    rows: sa.Subquery
    texts: dict[str, str]  # source field -> its trimmed text's column
    parses: dict[tuple[str, Parse, str], str]  # (source field, parse, format) -> its parsed value's column

    @classmethod
    def of(cls, raw: sa.FromClause, columns: Sequence[Column]) -> _Read:
        """Trim and parse the fields the columns read."""
        sources = list(dict.fromkeys(c.source or c.name for c in columns))
        texts = {source: f"_text{i}" for i, source in enumerate(sources)}
        trimmed = sa.select(
            *raw.c,
            *(sa.type_coerce(_trimmed(raw.c[source]), sa.String).label(texts[source]) for source in sources),
        ).subquery("trimmed")
        wanted: list[tuple[str, Parse, str]] = [
            (c.source or c.name, c.parse, c.fmt or "") for c in columns if c.parse is not Parse.TEXT
        ]
        parses = {parse: f"_parsed{i}" for i, parse in enumerate(dict.fromkeys(wanted))}
        parsed = sa.select(
            *trimmed.c,
            *(
                _PARSERS[parse](trimmed.c[texts[source]], fmt).label(name)
                for (source, parse, fmt), name in parses.items()
            ),
        ).subquery("parsed")
        return cls(parsed, texts, parses)

    def raw(self, source: str) -> _Expr:
        """A source field as read."""
        return self.rows.c[source]

    def field(self, column: Column) -> _Field:
        """Spot missing values, check and type one column, as clean._clean_column does."""
        source = column.source or column.name
        text = self.rows.c[self.texts[source]]
        missing = sa.func.coalesce(sa.or_(text.is_(None), text.in_(list(column.missing))), sa.true())
        value: _Expr
        unparsable: _Expr
        if column.parse is Parse.TEXT:
            value, unparsable = _text(text, column), sa.false()
        else:
            parsed = self.rows.c[self.parses[(source, column.parse, column.fmt or "")]]
            value, unparsable = _fit(parsed, column.type)
        default = sa.cast(sa.literal(column.default), _SQL_TYPES[column.type])
        return _Field(
            sa.case((missing, default), else_=value),
            missing if column.required else sa.false(),
            sa.and_(unparsable, sa.not_(missing)) if not isinstance(unparsable, sa.False_) else unparsable,
        )


def cleaned_rows(raw: sa.FromClause, columns: Sequence[Column]) -> sa.Select[Any]:
    """Every row of `raw` (text fields named by their source, with source_file and source_row) typed by the
    declared columns, a bad field null, and `bad` where clean_batch marks the row bad."""
    read = _Read.of(raw, columns)
    fields = {c.name: read.field(c) for c in columns}
    masks = [mask for mask, _, _ in _checks(read, columns, fields)]
    bad = sa.or_(*masks) if masks else sa.false()
    return sa.select(
        *[fields[c.name].value.label(c.name) for c in columns],
        read.rows.c[SOURCE_FILE],
        read.rows.c[SOURCE_ROW],
        bad.label(BAD),
    )


def reject_rows(raw: sa.FromClause, columns: Sequence[Column]) -> sa.CompoundSelect[Any] | sa.Select[Any]:
    """One row per bad field, with rejects.REJECT_SCHEMA's columns, as clean_batch's rejects."""
    read = _Read.of(raw, columns)
    fields = {c.name: read.field(c) for c in columns}
    checks = _checks(read, columns, fields)
    if not checks:
        empty: list[Any] = [sa.null().label(name) for name in rejects.REJECT_SCHEMA.names]
        return sa.select(*empty).where(sa.false())
    fields_read = [
        sa.func.coalesce(read.raw(c.name), sa.literal("")) for c in raw.c if c.name not in (SOURCE_FILE, SOURCE_ROW)
    ]
    sources = list(dict.fromkeys(source for _, source, _ in checks))
    # The rows with a bad field, each check a column, kept once: every reason is then listed from them, the source
    # read once whatever the checks.
    bad = (
        sa.select(
            read.rows.c[SOURCE_FILE],
            sa.cast(read.rows.c[SOURCE_ROW], sa.BigInteger).label(SOURCE_ROW),
            _storable(sa.func.concat_ws(sa.literal(","), *fields_read)).label("raw_line"),
            *(_storable(read.raw(source)).label(f"_raw{i}") for i, source in enumerate(sources)),
            *(mask.label(f"_check{i}") for i, (mask, _, _) in enumerate(checks)),
        )
        .where(sa.or_(*(mask for mask, _, _ in checks)))
        .cte("bad_rows")
        .prefix_with("MATERIALIZED")
    )
    parts = [
        sa.select(
            bad.c[SOURCE_FILE],
            bad.c[SOURCE_ROW],
            sa.literal(source, sa.String).label("column_name"),
            bad.c[f"_raw{sources.index(source)}"].label("raw_value"),
            bad.c.raw_line,
            sa.literal(reason, sa.String).label("reason"),
            sa.literal(rejects.ERROR, sa.String).label("severity"),
        ).where(bad.c[f"_check{i}"])
        for i, (_, source, reason) in enumerate(checks)
    ]
    return parts[0] if len(parts) == 1 else sa.union_all(*parts)


def _checks(read: _Read, columns: Sequence[Column], fields: dict[str, _Field]) -> list[tuple[_Expr, str, str]]:
    """Each check with the source field it names and its reason; a field feeding two columns checked once."""
    found: list[tuple[_Expr, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for column in columns:
        source = column.source or column.name
        field = fields[column.name]
        checks = [(field.missing, clean.missing_reason(column)), (field.unparsable, clean.unparsable_reason(column))]
        if column.source and column.parse is Parse.TEXT:
            has_nul = sa.func.coalesce(sa.func.contains(read.raw(source), "\x00"), sa.false())
            checks.append((has_nul, clean.nul_reason(column)))
        for mask, reason in checks:
            if (source, reason) not in seen and not isinstance(mask, sa.False_):
                seen.add((source, reason))
                found.append((mask, source, reason))
    return found


def _trimmed(raw: _Expr) -> _Expr:
    # Most fields neither start nor end with a space: reading their two ends costs less than a regular expression.
    ends = [sa.func.ord(raw), sa.func.ord(sa.func.right(raw, 1))]
    plain = sa.and_(*(end.between(*_PLAIN) for end in ends))
    return sa.case((plain, raw), else_=sa.func.regexp_replace(raw, _TRIM, "", "g"))


def _text(text: _Expr, column: Column) -> _Expr:
    if column.case is Case.UPPER:
        return sa.func.upper(text)
    if column.case is Case.LOWER:
        return sa.func.lower(text)
    return text


def _integer(text: _Expr, fmt: str) -> _Expr:
    shaped = sa.func.coalesce(sa.func.regexp_matches(text, clean.INTEGER_PATTERN), sa.false())
    return sa.case((shaped, sa.cast(text, sa.BigInteger)))


def _datetime(text: _Expr, fmt: str) -> _Expr:
    # DuckDB refuses a day its month lacks (2/30), which Arrow's strptime rolls over and clean.py then refuses.
    value = sa.func.try_strptime(text, fmt)
    wrong: _Expr = sa.or_(sa.func.coalesce(sa.func.year(value) < 1000, sa.false()), _without_digits(text))
    if fmt.endswith("%S"):
        wrong = sa.or_(wrong, _leap_second(text))
    return sa.case((wrong, sa.null()), else_=value)


def _duration(text: _Expr, fmt: str) -> _Expr:
    wrong = sa.or_(_leap_second(text), _without_digits(text))
    clock = sa.case((wrong, sa.null()), else_=sa.func.try_strptime(text, "%H:%M:%S"))
    seconds = sa.func.hour(clock) * 3600 + sa.func.minute(clock) * 60 + sa.func.second(clock)
    return sa.cast(seconds, sa.BigInteger)


def _without_digits(text: _Expr) -> _Expr:
    """Text with no digit: DuckDB's strptime takes 'infinity', '-infinity' and 'epoch' whatever the format, which
    Arrow's refuses as every format here has digits."""
    return sa.not_(sa.func.coalesce(sa.func.regexp_matches(text, "[0-9]"), sa.false()))


def _leap_second(text: _Expr) -> _Expr:
    return sa.func.coalesce(sa.func.right(text, 2).in_(list(clean.LEAP_SECONDS)), sa.false())


def _fit(value: _Expr, type_: Type) -> tuple[_Expr, _Expr]:
    """The parsed value (null where unparsable) in the column's type; a value out of the type's range is unparsable
    too."""
    if type_ is Type.TIMESTAMP:
        return value, value.is_(None)
    in_range = sa.func.coalesce(sa.func.abs(value) <= clean.LIMITS[type_], sa.false())
    fitted = sa.case((in_range, value))
    if type_ is Type.TIME:
        return sa.literal(time(0), sa.Time) + sa.func.to_seconds(fitted), sa.not_(in_range)
    return sa.cast(fitted, _SQL_TYPES[type_]), sa.not_(in_range)


def _storable(text: _Expr) -> _Expr:
    """As rejects._storable: PostgreSQL's text holds no NUL byte, so it is written as \\0."""
    return sa.func.replace(text, "\x00", "\\0")


_PARSERS = {Parse.INTEGER: _integer, Parse.DATETIME: _datetime, Parse.DURATION: _duration}
