"""The Arrow types that hold the values of SQL column types, for rows written by the bulk paths."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import sqlalchemy as sa

__all__ = ["arrow_type"]

# Subclasses before their bases: BigInteger and SmallInteger are Integers, Text is a String.
_TYPES: tuple[tuple[type[sa.types.TypeEngine[Any]], pa.DataType], ...] = (
    (sa.BigInteger, pa.int64()),
    (sa.SmallInteger, pa.int16()),
    (sa.Integer, pa.int32()),
    (sa.Boolean, pa.bool_()),
    (sa.DateTime, pa.timestamp("us")),
    (sa.Date, pa.date32()),
    (sa.Time, pa.time64("us")),
    (sa.Float, pa.float64()),
    (sa.String, pa.string()),
)


def arrow_type(type_: sa.types.TypeEngine[object]) -> pa.DataType:
    """The Arrow type of a column type's values."""
    for sql_type, arrow in _TYPES:
        if isinstance(type_, sql_type):
            return arrow
    raise TypeError(f"no Arrow type for {type_!r}")
