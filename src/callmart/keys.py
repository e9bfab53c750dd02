"""Foreign keys of a staging table: inferred members for unknown business ids, then surrogate keys."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .declare import DEFAULT_MEMBER_ID, Dimension, Fact, Reference
from .schema import Schema

__all__ = ["resolve_references"]


def resolve_references(conn: sa.Connection, schema: Schema, table: Dimension | Fact) -> int:
    """Fill every reference key of the staging table; return how many inferred members were created."""
    return sum(_resolve(conn, schema, table, ref) for ref in table.references)


def _resolve(conn: sa.Connection, schema: Schema, table: Dimension | Fact, ref: Reference) -> int:
    staging = schema[table.staging]
    target = schema.mart.dimension(ref.dimension)
    dim = schema[target.name]
    value, by = staging.c[ref.value.name], dim.c[ref.by]

    inferred = _create_inferred(conn, schema, target, value, by)
    conn.execute(sa.update(staging).values({ref.column: dim.c[target.key]}).where(by == value))
    conn.execute(sa.update(staging).values({ref.column: DEFAULT_MEMBER_ID}).where(value.is_(None)))
    return inferred


def _create_inferred(
    conn: sa.Connection, schema: Schema, target: Dimension, value: sa.Column[object], by: sa.Column[object]
) -> int:
    """Insert one inferred member, with 'unknown' attributes, per business id the dimension lacks."""
    dim = schema[target.name]
    unknown = (
        sa.select(value.label("business_value"))
        .where(value.is_not(None), ~sa.exists().where(by == value))
        .distinct()
        .subquery()
    )
    columns: dict[str, sa.ColumnElement[Any]] = {
        target.key: schema.sequences[target.name].next_value(),
        by.name: unknown.c.business_value,
    }
    for column in target.columns:
        if column.name != by.name:
            columns[column.name] = sa.null() if column.unknown is None else sa.literal(column.unknown)
    for reference in target.references:
        columns[reference.column] = sa.literal(DEFAULT_MEMBER_ID)
    columns["is_inferred"] = sa.true()
    select = sa.select(*(expr.label(name) for name, expr in columns.items())).order_by(unknown.c.business_value)
    return conn.execute(sa.insert(dim).from_select(list(columns), select)).rowcount
