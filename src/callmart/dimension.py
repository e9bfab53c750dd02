"""The generic dimension load: stage, resolve references, de-duplicate, then merge by SCD rules."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from . import rejects
from .declare import BEGINNING, IS_CURRENT, VALID_TO, VERSION, Dimension, Scd
from .extract import SOURCE_FILE, SOURCE_ROW
from .keys import KeyLookup, first_version, lookups_for, next_keys, resolve_unknown, with_keys
from .progress import StepResult
from .schema import Schema
from .stage import Staging

__all__ = ["CHANGED", "NEW", "NEW_VERSION", "load_dimension"]

NEW, CHANGED, NEW_VERSION = "new", "changed", "new version"


def load_dimension(
    conn: sa.Connection,
    schema: Schema,
    dim: Dimension,
    source_dir: Path,
    on_rows: Callable[[int], None] | None = None,
    business_date: datetime = BEGINNING,
) -> StepResult:
    """Load a whole dimension extract into its dimension; the caller owns the transaction. New versions of
    members that keep history are valid from `business_date`."""
    # Known members get their key as rows stream by; rows left without one are new.
    own = KeyLookup.load(conn, schema, dim.name, dim.business_key, dim.business_key, dim.key)
    lookups = [*lookups_for(conn, schema, dim), own]

    staged = _MemberStaging(schema, dim, source_dir, lookups, on_rows).run(conn)
    inferred = resolve_unknown(conn, schema, dim)
    superseded = _drop_superseded(conn, schema, dim)
    _match_inferred(conn, schema, dim)
    completed = _mark_changed(conn, schema, dim)
    fixed = _fixed_changes(conn, schema, dim)
    updated = _apply_changes(conn, schema, dim, business_date)
    inserted = _insert_new(conn, schema, dim, business_date)
    return StepResult(
        table=dim.name,
        read=staged.read,
        loaded=staged.staged - superseded.num_rows,
        rejected=staged.rejected + superseded.num_rows,
        warned=staged.warned + fixed.num_rows,
        inserted=inserted,
        updated=updated,
        inferred=inferred,
        completed=completed,
        rejects=rejects.concat([staged.reject_table(), superseded, fixed]),
    )


class _MemberStaging(Staging):
    """The staging of a dimension's extract: each row with its keys, and marked new where its member is."""

    def __init__(
        self,
        schema: Schema,
        dim: Dimension,
        source_dir: Path,
        lookups: list[KeyLookup],
        on_rows: Callable[[int], None] | None,
    ) -> None:
        super().__init__(schema[dim.staging], dim, source_dir, on_rows=on_rows)
        self.dim, self.lookups = dim, lookups

    def enrich(self, rows: pa.RecordBatch) -> pa.RecordBatch:
        rows = with_keys(rows, self.lookups)
        change = pc.if_else(pc.is_null(rows.column(self.dim.key)), pa.scalar(NEW), pa.scalar(None, pa.string()))
        return rows.append_column(pa.field("change", pa.string()), change)


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


def _mark_changed(conn: sa.Connection, schema: Schema, dim: Dimension) -> int:
    """Mark staged rows of known members whose values differ: a new version when a historical attribute changed,
    else a change in place. Unchanged rows keep no mark, so a reload of an unchanged extract writes nothing (and
    NULL compares equal to NULL). Return how many rows complete an inferred member."""
    stg, table = schema[dim.staging], schema[dim.name]
    same_member = (table.c[dim.key] == stg.c[dim.key], stg.c.change.is_(None))
    historical = _of_type(dim, Scd.HISTORICAL)
    if historical:
        differs = sa.or_(*(table.c[n].is_distinct_from(stg.c[n]) for n in historical))
        conn.execute(
            sa.update(stg).values(change=NEW_VERSION).where(*same_member, sa.not_(table.c.is_inferred), differs)
        )
    differs = sa.or_(table.c.is_inferred, *(table.c[n].is_distinct_from(stg.c[n]) for n in _of_type(dim, Scd.CHANGING)))
    conn.execute(sa.update(stg).values(change=CHANGED).where(*same_member, differs))
    completing = (
        sa.select(sa.func.count())
        .select_from(stg.join(table, table.c[dim.key] == stg.c[dim.key]))
        .where(table.c.is_inferred, stg.c.change == CHANGED)
    )
    return int(conn.execute(completing).scalar_one())


def _fixed_changes(conn: sa.Connection, schema: Schema, dim: Dimension) -> pa.Table:
    """Warnings for fixed (type 0) attributes the extract would change: the first value stays."""
    stg, table = schema[dim.staging], schema[dim.name]
    found = []
    for name in _of_type(dim, Scd.FIXED):
        column = dim.column(name)
        rows = conn.execute(
            sa.select(stg.c[SOURCE_FILE], stg.c[SOURCE_ROW], table.c[name], stg.c[name])
            .select_from(stg.join(table, table.c[dim.key] == stg.c[dim.key]))
            .where(sa.not_(table.c.is_inferred), table.c[name].is_distinct_from(stg.c[name]))
        ).all()
        if rows:
            found.append(
                rejects.make(
                    [r[0] for r in rows],
                    [r[1] for r in rows],
                    column.source,
                    [None if r[3] is None else str(r[3]) for r in rows],
                    None,
                    f"fixed {name} would change; it keeps its first value",
                    rejects.WARNING,
                )
            )
    return rejects.concat(found)


def _of_type(dim: Dimension, scd: Scd) -> list[str]:
    """Stored columns a source row can change, of one SCD type (references change in place)."""
    names = [c.name for c in dim.columns if c.name != dim.business_key and c.scd is scd]
    return names + [r.column for r in dim.references] if scd is Scd.CHANGING else names


def _tracked(dim: Dimension) -> list[str]:
    """Stored columns a source row sets."""
    return [c.name for c in dim.columns] + [r.column for r in dim.references]


def _apply_changes(conn: sa.Connection, schema: Schema, dim: Dimension, business_date: datetime) -> int:
    """Complete inferred members, overwrite changing (type 1) attributes in every version of their member, and
    close the versions whose historical attributes changed; return the rows changed in place."""
    stg, table = schema[dim.staging], schema[dim.name]
    completed = conn.execute(
        sa.update(table)
        .values({**{n: stg.c[n] for n in _tracked(dim)}, "is_inferred": sa.false()})
        .where(table.c[dim.key] == stg.c[dim.key], stg.c.change == CHANGED, table.c.is_inferred)
    ).rowcount
    changing = _of_type(dim, Scd.CHANGING)
    updated = 0
    if changing:
        differs = sa.or_(*(table.c[n].is_distinct_from(stg.c[n]) for n in changing))
        updated = conn.execute(
            sa.update(table)
            .values({n: stg.c[n] for n in changing})
            .where(
                table.c[dim.business_key] == stg.c[dim.business_key],
                stg.c.change.in_([CHANGED, NEW_VERSION]),
                differs,
            )
        ).rowcount
    if dim.keeps_history:
        conn.execute(
            sa.update(table)
            .values({VALID_TO: business_date, IS_CURRENT: False})
            .where(table.c[dim.key] == stg.c[dim.key], stg.c.change == NEW_VERSION)
        )
    return int(completed + updated)


def _insert_new(conn: sa.Connection, schema: Schema, dim: Dimension, business_date: datetime) -> int:
    """Insert members never seen before (keys in business-key order), then the new versions of changed members."""
    stg, table = schema[dim.staging], schema[dim.name]
    names = _tracked(dim)
    history = list(first_version()) if dim.keeps_history else []
    select = (
        sa.select(
            next_keys(table.c[dim.key], stg.c[dim.business_key]),
            *(stg.c[n] for n in names),
            sa.false(),
            *first_version().values(),
        )
        if dim.keeps_history
        else sa.select(next_keys(table.c[dim.key], stg.c[dim.business_key]), *(stg.c[n] for n in names), sa.false())
    )
    select = select.where(stg.c.change == NEW).order_by(stg.c[dim.business_key])
    inserted = conn.execute(sa.insert(table).from_select([dim.key, *names, "is_inferred", *history], select)).rowcount
    if not dim.keeps_history:
        return int(inserted)
    old = table.alias("previous")
    # The new version takes the staged values, except fixed attributes, which keep the first value.
    values = [old.c[n] if dim.column(n).scd is Scd.FIXED else stg.c[n] for n in [c.name for c in dim.columns]]
    values += [stg.c[r.column] for r in dim.references]
    versions = (
        sa.select(
            next_keys(table.c[dim.key], stg.c[dim.business_key]),
            *values,
            sa.false(),
            sa.literal(business_date, sa.DateTime),
            sa.null(),
            sa.true(),
            old.c[VERSION] + 1,
        )
        .select_from(stg.join(old, old.c[dim.key] == stg.c[dim.key]))
        .where(stg.c.change == NEW_VERSION)
        .order_by(stg.c[dim.business_key])
    )
    statement = sa.insert(table).from_select([dim.key, *names, "is_inferred", *history], versions)
    return int(inserted + conn.execute(statement).rowcount)
