"""Foreign keys of staged rows: known business ids mapped in Arrow as rows stream by, unknown ones resolved in
the database afterwards by creating inferred members."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from .clean import arrow_type
from .declare import DEFAULT_MEMBER_ID, Dimension, Fact
from .dialect import fetch_arrow
from .schema import Schema

__all__ = ["KeyLookup", "lookups_for", "next_keys", "resolve_unknown", "with_keys"]


@dataclass(frozen=True)
class KeyLookup:
    """A dimension's surrogate keys by one of its business columns, as of the step's start; it fills the staged
    column `key_column` from the staged column `value_column`."""

    value_column: str
    key_column: str
    values: pa.Array
    keys: pa.Array
    null_key: int | None = DEFAULT_MEMBER_ID

    @classmethod
    def load(
        cls, conn: sa.Connection, schema: Schema, dimension: str, by: str, value_column: str, key_column: str
    ) -> KeyLookup:
        """Read every (business value, key) pair of the dimension."""
        declared = schema.mart.dimension(dimension)
        dim = schema[dimension]
        value_type = arrow_type(next(c.type for c in declared.columns if c.name == by))
        pairs = fetch_arrow(
            conn,
            sa.select(dim.c[by], dim.c[declared.key]).where(dim.c[by].is_not(None)),
            pa.schema([("value", value_type), ("key", pa.int32())]),
        )
        return cls(value_column, key_column, pairs["value"].combine_chunks(), pairs["key"].combine_chunks())

    def map(self, values: pa.Array) -> pa.Array:
        """Keys for values: `null_key` for null, null where the dimension does not know the value yet."""
        # Hash the batch's few distinct values and scan the dimension's values against them, rather than hash a
        # million-member dimension again for every batch.
        present = pc.is_in(self.values, value_set=pc.unique(values))
        candidates, candidate_keys = pc.filter(self.values, present), pc.filter(self.keys, present)
        keys = pc.take(candidate_keys, pc.index_in(values, value_set=candidates))
        return pc.if_else(pc.is_null(values), pa.scalar(self.null_key, pa.int32()), keys)


def lookups_for(conn: sa.Connection, schema: Schema, table: Dimension | Fact) -> list[KeyLookup]:
    """One lookup per reference of the table."""
    return [KeyLookup.load(conn, schema, ref.dimension, ref.by, ref.value.name, ref.column) for ref in table.references]


def with_keys(batch: pa.RecordBatch, lookups: list[KeyLookup]) -> pa.RecordBatch:
    """The batch with each lookup's key column appended."""
    for lookup in lookups:
        keys = lookup.map(batch.column(lookup.value_column))
        batch = batch.append_column(pa.field(lookup.key_column, pa.int32()), keys)
    return batch


def next_keys(key: sa.Column[Any], order: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
    """Surrogate keys for new members: after the largest key, in `order`. Unlike a sequence, a rolled-back load
    leaves no gap, so a load that crashed and ran again gives the very keys of a clean load; writers of the mart
    take turns (see the run's lock), so two loads never compute the same keys."""
    largest = sa.select(sa.func.max(key)).where(key > 0).scalar_subquery()
    return sa.func.coalesce(largest, 0) + sa.func.row_number().over(order_by=order)


def resolve_unknown(conn: sa.Connection, schema: Schema, table: Dimension | Fact) -> int:
    """Create inferred members for staged business ids the dimensions lack, and fill their keys; return how
    many members were created. Only the few rows left without a key are touched."""
    created = 0
    staging = schema[table.staging]
    for ref in table.references:
        target = schema.mart.dimension(ref.dimension)
        dim = schema[target.name]
        value, by, key = staging.c[ref.value.name], dim.c[ref.by], staging.c[ref.column]
        unresolved = sa.and_(key.is_(None), value.is_not(None))
        if conn.execute(sa.select(value).where(unresolved).limit(1)).first() is None:
            continue
        created += _create_inferred(conn, schema, target, value, by, unresolved)
        conn.execute(sa.update(staging).values({ref.column: dim.c[target.key]}).where(unresolved, by == value))
    return created


def _create_inferred(
    conn: sa.Connection,
    schema: Schema,
    target: Dimension,
    value: sa.Column[Any],
    by: sa.Column[Any],
    unresolved: sa.ColumnElement[bool],
) -> int:
    """Insert one inferred member, with 'unknown' attributes, per business id the dimension lacks."""
    dim = schema[target.name]
    unknown = (
        sa.select(value.label("business_value"))
        .where(unresolved, ~sa.exists().where(by == value))
        .distinct()
        .subquery()
    )
    columns: dict[str, sa.ColumnElement[Any]] = {
        target.key: next_keys(dim.c[target.key], unknown.c.business_value),
        by.name: unknown.c.business_value,
    }
    for column in target.columns:
        if column.name != by.name:
            columns[column.name] = sa.null() if column.unknown is None else sa.literal(column.unknown)
    for reference in target.references:
        columns[reference.column] = sa.literal(DEFAULT_MEMBER_ID)
    columns["is_inferred"] = sa.true()
    select = sa.select(*(expr.label(name) for name, expr in columns.items())).order_by(unknown.c.business_value)
    return int(conn.execute(sa.insert(dim).from_select(list(columns), select)).rowcount)
