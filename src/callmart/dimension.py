"""The generic dimension load: stage, resolve references, de-duplicate, then merge by SCD rules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from . import rejects
from .declare import Dimension, Scd
from .extract import SOURCE_FILE, SOURCE_ROW
from .keys import KeyLookup, lookups_for, next_keys, resolve_unknown, with_keys
from .progress import StepResult
from .schema import Schema
from .stage import stage

__all__ = ["CHANGED", "NEW", "load_dimension"]

NEW, CHANGED = "new", "changed"


def load_dimension(
    conn: sa.Connection,
    schema: Schema,
    dim: Dimension,
    source_dir: Path,
    on_rows: Callable[[int], None] | None = None,
) -> StepResult:
    """Load a whole dimension extract into its dimension; the caller owns the transaction."""
    # Known members get their key as rows stream by; rows left without one are new.
    own = KeyLookup.load(conn, schema, dim.name, dim.business_key, dim.business_key, dim.key)
    lookups = [*lookups_for(conn, schema, dim), own]

    def enrich(batch: pa.RecordBatch) -> pa.RecordBatch:
        batch = with_keys(batch, lookups)
        change = pc.if_else(pc.is_null(batch.column(dim.key)), pa.scalar(NEW), pa.scalar(None, pa.string()))
        return batch.append_column(pa.field("change", pa.string()), change)

    staged = stage(conn, schema[dim.staging], dim, source_dir, enrich=enrich, on_rows=on_rows)
    inferred = resolve_unknown(conn, schema, dim)
    superseded = _drop_superseded(conn, schema, dim)
    _match_inferred(conn, schema, dim)
    completed = _mark_changed(conn, schema, dim)
    updated = _apply_changes(conn, schema, dim)
    inserted = _insert_new(conn, schema, dim)
    return StepResult(
        table=dim.name,
        read=staged.read,
        loaded=staged.staged - superseded.num_rows,
        rejected=staged.rejected + superseded.num_rows,
        warned=staged.warned,
        inserted=inserted,
        updated=updated,
        inferred=inferred,
        completed=completed,
        rejects=rejects.concat([staged.reject_table(), superseded]),
    )


def _drop_superseded(conn: sa.Connection, schema: Schema, dim: Dimension) -> pa.Table:
    """Of rows sharing a business key, the last in file and row order wins; the others become rejects."""
    stg = schema[dim.staging]
    key = stg.c[dim.business_key]
    if conn.execute(sa.select(key).group_by(key).having(sa.func.count() > 1).limit(1)).first() is None:
        return rejects.REJECT_SCHEMA.empty_table()
    later = stg.alias("later")
    newer = sa.exists().where(
        later.c[dim.business_key] == key,
        sa.or_(
            later.c[SOURCE_FILE] > stg.c[SOURCE_FILE],
            sa.and_(later.c[SOURCE_FILE] == stg.c[SOURCE_FILE], later.c[SOURCE_ROW] > stg.c[SOURCE_ROW]),
        ),
    )
    rows = conn.execute(sa.select(stg.c[SOURCE_FILE], stg.c[SOURCE_ROW], key).where(newer)).all()
    conn.execute(sa.delete(stg).where(newer))
    source = dim.column(dim.business_key).source
    return rejects.make(
        [r[0] for r in rows],
        [r[1] for r in rows],
        source,
        [str(r[2]) for r in rows],
        None,
        f"duplicate {source}: a later row of the extract has the same one",
    )


def _lookup_columns(schema: Schema, dim: Dimension) -> list[str]:
    """Columns other than the business key by which references find this dimension's members."""
    return sorted({r.by for r in schema.mart.references_to(dim.name)} - {dim.business_key})


def _match_inferred(conn: sa.Connection, schema: Schema, dim: Dimension) -> None:
    """Give a new row the key of an inferred member found by a lookup column: an agent inferred from a call
    knows its login name, not its id. Only rows without a key are looked at."""
    stg, table = schema[dim.staging], schema[dim.name]
    for lookup in _lookup_columns(schema, dim):
        conn.execute(
            sa.update(stg)
            .values({dim.key: table.c[dim.key], "change": CHANGED})
            .where(
                stg.c[dim.key].is_(None),
                table.c.is_inferred,
                table.c[dim.business_key].is_(None),
                table.c[lookup] == stg.c[lookup],
            )
        )


def _tracked(dim: Dimension) -> list[str]:
    """Stored columns a source row can change."""
    return [c.name for c in dim.columns] + [r.column for r in dim.references]


def _mark_changed(conn: sa.Connection, schema: Schema, dim: Dimension) -> int:
    """Mark staged rows of known members whose values differ; return how many complete an inferred member.
    Unchanged rows keep no mark, so a reload of an unchanged extract writes nothing."""
    stg, table = schema[dim.staging], schema[dim.name]
    differs = sa.or_(table.c.is_inferred, *(table.c[n].is_distinct_from(stg.c[n]) for n in _tracked(dim)))
    conn.execute(
        sa.update(stg).values(change=CHANGED).where(table.c[dim.key] == stg.c[dim.key], stg.c.change.is_(None), differs)
    )
    completing = (
        sa.select(sa.func.count())
        .select_from(stg.join(table, table.c[dim.key] == stg.c[dim.key]))
        .where(table.c.is_inferred, stg.c.change == CHANGED)
    )
    return int(conn.execute(completing).scalar_one())


def _apply_changes(conn: sa.Connection, schema: Schema, dim: Dimension) -> int:
    """Overwrite changing (type 1) attributes in place, completing inferred members."""
    stg, table = schema[dim.staging], schema[dim.name]
    changing = [n for n in _tracked(dim) if _scd(dim, n) is Scd.CHANGING]
    values: dict[str, object] = {n: stg.c[n] for n in changing}
    values["is_inferred"] = sa.false()
    statement = sa.update(table).values(values).where(table.c[dim.key] == stg.c[dim.key], stg.c.change == CHANGED)
    return conn.execute(statement).rowcount


def _scd(dim: Dimension, name: str) -> Scd:
    declared = {c.name: c.scd for c in dim.columns}
    return declared.get(name, Scd.CHANGING)


def _insert_new(conn: sa.Connection, schema: Schema, dim: Dimension) -> int:
    """Insert members never seen before, keys given in business-key order."""
    stg, table = schema[dim.staging], schema[dim.name]
    names = _tracked(dim)
    select = (
        sa.select(next_keys(table.c[dim.key], stg.c[dim.business_key]), *(stg.c[n] for n in names), sa.false())
        .where(stg.c.change == NEW)
        .order_by(stg.c[dim.business_key])
    )
    statement = sa.insert(table).from_select([dim.key, *names, "is_inferred"], select)
    return conn.execute(statement).rowcount
