"""Foreign keys of staged rows: known business ids mapped in Arrow as rows stream by; unknown ones get inferred
members, created in the database after staging, or (a fact load on PostgreSQL) keyed as they stream by and
written at the end."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from . import engines
from .clean import arrow_type
from .declare import BEGINNING, DEFAULT_MEMBER_ID, IS_CURRENT, VALID_FROM, VALID_TO, VERSION, Dimension, Fact, Reference
from .schema import Schema

__all__ = [
    "InferredMembers",
    "KeyLookup",
    "LookupCache",
    "first_version",
    "lookups_for",
    "next_keys",
    "resolve_unknown",
    "with_keys",
]


@dataclass(frozen=True)
class KeyLookup:
    """A dimension's surrogate keys by one of its business columns, as of the step's start; it fills the staged
    column `key_column` from the staged column `value_column`. With `time_column`, each row gets the version of
    its member valid at that time (valid_from <= time < valid_to); without, the current version."""

    value_column: str
    key_column: str
    versions: pa.Table  # value, key, and for point-in-time lookups valid_from and valid_to; none where by_value
    time_column: str | None = None
    null_key: int | None = DEFAULT_MEMBER_ID
    by_value: pa.Array | None = None  # for dense whole-number ids: the key of id `first_value + i` at i, or null
    first_value: int = 0
    timeline: Timeline | None = None  # point in time: versions in one searchable order

    @classmethod
    def load(
        cls,
        conn: sa.Connection,
        schema: Schema,
        dimension: str,
        by: str,
        value_column: str,
        key_column: str,
        as_of: str | None = None,
        keys_after: int | None = None,
    ) -> KeyLookup:
        """Read the (business value, key) pairs of the dimension, with validity when a time picks the version; with
        `keys_after`, only the members whose key is larger."""
        declared = schema.mart.dimension(dimension)
        dim = schema[dimension]
        value_type = arrow_type(next(c.type for c in declared.columns if c.name == by))
        columns = [dim.c[by], dim.c[declared.key]]
        fields = [("value", value_type), ("key", pa.int32())]
        select = sa.select(*columns).where(dim.c[by].is_not(None))
        if keys_after is not None:
            select = select.where(dim.c[declared.key] > keys_after)
        point_in_time = declared.keeps_history and as_of is not None
        if point_in_time:
            select = select.add_columns(dim.c[VALID_FROM], dim.c[VALID_TO])
            fields += [("valid_from", pa.timestamp("s")), ("valid_to", pa.timestamp("s"))]
        elif declared.keeps_history:
            select = select.where(dim.c[IS_CURRENT])
        versions = engines.of(conn).fetch_arrow(conn, select, pa.schema(fields)).combine_chunks()
        # The reading's scratch memory goes back now rather than stay with the allocator through the load.
        pa.default_memory_pool().release_unused()
        if point_in_time:
            return cls(value_column, key_column, versions, as_of, timeline=Timeline.of(versions))
        return cls.of_pairs(value_column, key_column, versions)

    @classmethod
    def of_pairs(
        cls, value_column: str, key_column: str, pairs: pa.Table, null_key: int | None = DEFAULT_MEMBER_ID
    ) -> KeyLookup:
        """A lookup of the current keys in `pairs` (value, key), laid out by id when the ids allow it (the pairs
        are then not kept: a million customers' held 8 MB beside their table)."""
        direct = _direct_table(pairs)
        if direct is None:
            return cls(value_column, key_column, pairs, null_key=null_key)
        by_value, first_value = direct
        kept = pairs.slice(0, 0)
        return cls(value_column, key_column, kept, null_key=null_key, by_value=by_value, first_value=first_value)

    def with_members(self, added: pa.Table) -> KeyLookup:
        """This lookup of current keys with the (value, key) pairs of members added since; an id it knows keeps its
        key. Laid out by id, its table is widened for them rather than built again from every pair."""
        widened = None if self.by_value is None else _widened(self.by_value, self.first_value, added)
        if widened is None:
            pairs = pa.concat_tables([self.pairs(), added.cast(self.versions.schema)]).combine_chunks()
            return KeyLookup.of_pairs(self.value_column, self.key_column, pairs, null_key=self.null_key)
        by_value, first_value = widened
        return dataclasses.replace(self, by_value=by_value, first_value=first_value)

    def pairs(self) -> pa.Table:
        """The (value, key) pairs the lookup finds, for a lookup of the current keys."""
        if self.by_value is None:
            return self.versions
        known = self.by_value.is_valid()
        places = pc.indices_nonzero(known).cast(pa.int64())
        values = pc.add(places, pa.scalar(self.first_value, pa.int64())).cast(self.versions.schema.field("value").type)
        return pa.table([values, pc.filter(self.by_value, known)], schema=self.versions.schema)

    def map(self, batch: pa.RecordBatch) -> pa.Array:
        """Keys for the batch's values: `null_key` for null, null where the dimension does not know the value yet."""
        values = batch.column(self.value_column)
        if self.by_value is not None:
            keys = self._by_position(values)
        elif self.timeline is not None and self.time_column is not None:
            keys = self.timeline.keys_at(values, batch.column(self.time_column))
        else:
            # Hash the batch's few distinct values and scan the dimension's values against them, rather than hash a
            # million-member dimension again for every batch.
            candidates = self.versions.filter(pc.is_in(self.versions["value"], value_set=pc.unique(values)))
            if self.time_column is None:
                keys = pc.take(candidates["key"], pc.index_in(values, value_set=candidates["value"]))
            else:
                keys = _valid_keys(values, batch.column(self.time_column), candidates)
        mapped = pc.if_else(pc.is_null(values), pa.scalar(self.null_key, pa.int32()), keys)
        return mapped.combine_chunks() if isinstance(mapped, pa.ChunkedArray) else mapped

    def _by_position(self, values: pa.Array) -> pa.Array:
        """Keys read from the table laid out by id: null for an id outside it or missing from it."""
        assert self.by_value is not None
        place = pc.subtract(pc.cast(values, pa.int64()), pa.scalar(self.first_value, pa.int64()))
        inside = pc.and_(
            pc.greater_equal(place, pa.scalar(0, pa.int64())),
            pc.less(place, pa.scalar(len(self.by_value), pa.int64())),
        )
        return pc.take(self.by_value, pc.if_else(inside, place, pa.scalar(None, pa.int64())))


DIRECT_TABLE_LIMIT = 1 << 24
"""Widest span of ids (16M: a 64 MB table at most) for which ids index a table of keys directly."""


def _direct_table(versions: pa.Table) -> tuple[pa.Array, int] | None:
    """The keys laid out by id, and the first id, when ids are whole numbers spanning at most a few times the
    members (or 1M): each batch then finds its keys by position, at a cost that does not grow with the dimension.
    Sparse or textual ids keep the scan of `map`, whose cost per batch grows with the dimension's size."""
    bounds = _id_bounds(versions["value"])
    if bounds is None or not _dense(bounds, len(versions)):
        return None
    lowest, highest = bounds
    table = np.zeros(highest - lowest + 1, np.int32)
    known = np.zeros(len(table), bool)
    _place_first(table, known, versions, lowest)
    return pa.array(table, pa.int32(), mask=~known), lowest


def _widened(by_value: pa.Array, first_value: int, added: pa.Table) -> tuple[pa.Array, int] | None:
    """A table laid out by id with the `added` pairs placed where their ids are not known yet, and its first id;
    None where the ids would be too sparse to lay out."""
    bounds = _id_bounds(added["value"])
    if bounds is None:
        return None if len(added) else (by_value, first_value)
    lowest, highest = min(bounds[0], first_value), max(bounds[1], first_value + len(by_value) - 1)
    if not _dense((lowest, highest), len(by_value) - by_value.null_count + len(added)):
        return None
    table = np.zeros(highest - lowest + 1, np.int32)
    known = np.zeros(len(table), bool)
    at = first_value - lowest
    table[at : at + len(by_value)] = pc.fill_null(by_value, 0).to_numpy(zero_copy_only=False)
    known[at : at + len(by_value)] = by_value.is_valid().to_numpy(zero_copy_only=False)
    _place_first(table, known, added, lowest)
    return pa.array(table, pa.int32(), mask=~known), lowest


def _id_bounds(value: pa.Array | pa.ChunkedArray) -> tuple[int, int] | None:
    """The lowest and highest of whole-number ids; None for other ids, or none."""
    if not pa.types.is_integer(value.type) or len(value) == 0:
        return None
    lowest, highest = pc.min(value).as_py(), pc.max(value).as_py()
    return None if lowest is None else (lowest, highest)


def _dense(bounds: tuple[int, int], members: int) -> bool:
    """Whether `members` ids spanning `bounds` leave few enough gaps to be laid out by id."""
    return bounds[1] - bounds[0] + 1 <= min(DIRECT_TABLE_LIMIT, 4 * members + (1 << 20))


def _place_first(table: np.ndarray, known: np.ndarray, pairs: pa.Table, lowest: int) -> None:
    """Write the keys of `pairs` at their ids' places (id - lowest) not known yet; an id listed twice keeps its
    first key, as a lookup by value finds."""
    value = pairs["value"]
    valid = pc.is_valid(value).to_numpy(zero_copy_only=False)
    places = pc.fill_null(value, lowest).to_numpy(zero_copy_only=False).astype(np.int64)[valid] - lowest
    keys = pairs["key"].to_numpy().astype(np.int32)[valid]
    fresh = ~known[places]
    places, keys = places[fresh], keys[fresh]
    # Written last to first, so that where an id appears twice its first key stays.
    table[places[::-1]] = keys[::-1]
    known[places] = True


_TIME_BITS = 34
"""Bits of a version's start in its place in a Timeline: seconds after the earliest start, 544 years."""

_NONE = pa.scalar(-1, pa.int64())  # no id number

NAMED_IDS_LIMIT = 1 << 14
"""Most distinct ids of another type than whole numbers (agents' login names) that a Timeline numbers: looking up
a batch's names among few is cheap; among a million, it costs several times the scan of `map`."""


@dataclass(frozen=True)
class Timeline:
    """A dimension's versions as one ascending integer each, id number << _TIME_BITS | seconds from the earliest
    start to its own, so that a batch finds each row's version by one binary search, at a cost that does not grow
    with the dimension (scanning the versions for the batch's ids did). An id's number is the id minus the lowest
    for whole numbers, else its place among the distinct ids (`names`)."""

    lowest: int
    names: pa.Array | None
    earliest: int
    starts: np.ndarray  # int64, ascending
    ends: np.ndarray  # valid_to in epoch seconds, int64's largest where still valid
    keys: np.ndarray  # int32

    @classmethod
    def of(cls, versions: pa.Table) -> Timeline | None:
        """The timeline of versions (value, key, valid_from, valid_to), or None where it would not be faster than
        the scan: ids spread over 2**29 or more, or too many distinct ids that are not whole numbers."""
        value, valid_from = versions["value"].combine_chunks(), versions["valid_from"]
        if len(value) == 0 or value.null_count or valid_from.null_count:
            return None
        lowest, names = 0, None
        if pa.types.is_integer(value.type):
            lowest = pc.min(value).as_py()
            if pc.max(value).as_py() - lowest >= 1 << (63 - _TIME_BITS):
                return None
        else:
            names = pc.unique(value)
            if len(names) > NAMED_IDS_LIMIT:
                return None
        numbers, begins = _id_numbers(value, lowest, names), _seconds(valid_from, 0)
        earliest = int(begins.min())
        if int(begins.max()) - earliest >= 1 << _TIME_BITS:
            return None
        starts = numbers << _TIME_BITS | (begins - earliest)
        order = np.argsort(starts, kind="stable")
        ends = _seconds(versions["valid_to"], np.iinfo(np.int64).max)[order]
        keys = versions["key"].to_numpy().astype(np.int32)[order]
        return cls(lowest, names, earliest, starts[order], ends, keys)

    def keys_at(self, values: pa.Array, times: pa.Array) -> pa.Array:
        """The key of the version of each value valid at its time; null for an unknown value or an uncovered time."""
        numbers = _id_numbers(values, self.lowest, self.names)
        seconds = _seconds(times, np.iinfo(np.int64).min)
        since = np.minimum(seconds - self.earliest, (1 << _TIME_BITS) - 1)
        known = (numbers >= 0) & (seconds >= self.earliest)
        wanted = np.where(known, numbers << _TIME_BITS | since, 0)
        # The last version of the id starting at or before the time, if it has not ended by then. Searched in
        # order: each search then starts near the last one, faster than in the batch's order.
        order = np.argsort(wanted)
        found = np.empty_like(order)
        found[order] = np.searchsorted(self.starts, wanted[order], side="right") - 1
        at = np.maximum(found, 0)
        valid = known & (found >= 0) & (self.starts[at] >> _TIME_BITS == numbers) & (seconds < self.ends[at])
        return pa.array(self.keys[at], pa.int32(), mask=~valid)


def _id_numbers(values: pa.Array, lowest: int, names: pa.Array | None) -> np.ndarray:
    """Each id's number in a Timeline: its place among `names`, else the id minus `lowest`; -1 for null, for an
    unknown name, or for an id too far from `lowest` for a Timeline to hold."""
    if names is not None:
        numbers = pc.cast(pc.index_in(values, value_set=names), pa.int64())
    else:
        numbers = pc.subtract(pc.cast(values, pa.int64()), pa.scalar(lowest, pa.int64()))
        outside = pc.or_(pc.less(numbers, _NONE), pc.greater_equal(numbers, pa.scalar(1 << (63 - _TIME_BITS))))
        numbers = pc.if_else(outside, _NONE, numbers)
    filled: np.ndarray = pc.fill_null(numbers, _NONE).to_numpy(zero_copy_only=False)
    return filled


def _seconds(times: pa.Array | pa.ChunkedArray, missing: int) -> np.ndarray:
    """Epoch seconds of timestamps as int64, `missing` for null."""
    whole = pc.cast(pc.cast(times, pa.timestamp("s")), pa.int64())
    filled: np.ndarray = pc.fill_null(whole, pa.scalar(missing, pa.int64())).to_numpy(zero_copy_only=False)
    return filled.astype(np.int64, copy=False)


def _valid_keys(values: pa.Array, times: pa.Array, versions: pa.Table) -> pa.Array:
    """For each (value, time), the key of the version valid at that time."""
    rows = pa.table({"row": pa.array(range(len(values)), pa.int64()), "value": values, "time": times})
    joined = rows.join(versions, keys="value", join_type="inner")
    valid = pc.and_(
        pc.less_equal(joined["valid_from"], joined["time"]),
        pc.fill_null(pc.less(joined["time"], joined["valid_to"]), True),
    )
    joined = joined.filter(valid)
    return pc.take(joined["key"], pc.index_in(rows["row"], value_set=joined["row"]))


def lookups_for(conn: sa.Connection, schema: Schema, table: Dimension | Fact) -> list[KeyLookup]:
    """One lookup per reference of the table."""
    return [
        KeyLookup.load(conn, schema, ref.dimension, ref.by, ref.value.name, ref.column, ref.as_of)
        for ref in table.references
    ]


class LookupCache:
    """A run's key lookups, kept from one period to the next: a dimension whose largest key is the same is not read
    again, and one without history that gained members (the previous period's inferred ones) is read for those
    alone. Members are never deleted and get keys after the largest, and a change in place keeps a member's
    business id; writers of the mart take turns, so between the check and the reading nothing else changes."""

    def __init__(self) -> None:
        self._kept: dict[Reference, tuple[int, KeyLookup]] = {}

    def lookups_for(self, conn: sa.Connection, schema: Schema, table: Dimension | Fact) -> list[KeyLookup]:
        """One lookup per reference of the table, as `lookups_for` reads them."""
        return [self._lookup(conn, schema, ref) for ref in table.references]

    def _lookup(self, conn: sa.Connection, schema: Schema, ref: Reference) -> KeyLookup:
        declared = schema.mart.dimension(ref.dimension)
        key = schema[ref.dimension].c[declared.key]
        # The primary key's index answers this without reading the dimension.
        largest = int(conn.execute(sa.select(sa.func.max(key))).scalar_one() or 0)
        kept = self._kept.get(ref)
        if kept is not None and kept[0] == largest:
            lookup = kept[1]
        elif kept is not None and not declared.keeps_history:
            # Members were only added (no history: no version of an old one changed): append them.
            lookup = kept[1].with_members(self._read(conn, schema, ref, kept[0]).pairs())
        else:
            lookup = self._read(conn, schema, ref, None)
        self._kept[ref] = (largest, lookup)
        return lookup

    @staticmethod
    def _read(conn: sa.Connection, schema: Schema, ref: Reference, keys_after: int | None) -> KeyLookup:
        return KeyLookup.load(conn, schema, ref.dimension, ref.by, ref.value.name, ref.column, ref.as_of, keys_after)


def with_keys(batch: pa.RecordBatch, lookups: list[KeyLookup]) -> pa.RecordBatch:
    """The batch with each lookup's key column appended."""
    for lookup in lookups:
        batch = batch.append_column(pa.field(lookup.key_column, pa.int32()), lookup.map(batch))
    return batch


def first_version() -> dict[str, sa.ColumnElement[Any]]:
    """History columns of a member's first version."""
    return {
        VALID_FROM: sa.literal(BEGINNING, sa.DateTime),
        VALID_TO: sa.null(),
        IS_CURRENT: sa.true(),
        VERSION: sa.literal(1),
    }


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
        matches = [unresolved, by == value]
        if target.keeps_history:
            # Inferred members have a single version, valid from the beginning.
            matches.append(dim.c[IS_CURRENT])
        conn.execute(sa.update(staging).values({ref.column: dim.c[target.key]}).where(*matches))
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
    unknown = (
        sa.select(value.label("business_value"))
        .where(unresolved, ~sa.exists().where(by == value))
        .distinct()
        .subquery()
    )
    return int(conn.execute(_inferred_members(schema, target, by, unknown)).rowcount)


def _inferred_members(
    schema: Schema,
    target: Dimension,
    by: sa.Column[Any],
    unknown: sa.Subquery,
    keys: sa.ColumnElement[Any] | None = None,
) -> sa.Insert:
    """INSERT of one inferred member per `unknown.c.business_value` (distinct ids the dimension lacks), with the
    given keys, else the next ones."""
    dim = schema[target.name]
    columns: dict[str, sa.ColumnElement[Any]] = {
        target.key: keys if keys is not None else next_keys(dim.c[target.key], unknown.c.business_value),
        by.name: unknown.c.business_value,
    }
    for column in target.columns:
        if column.name != by.name:
            columns[column.name] = sa.null() if column.unknown is None else sa.literal(column.unknown)
    for reference in target.references:
        columns[reference.column] = sa.literal(DEFAULT_MEMBER_ID)
    columns["is_inferred"] = sa.true()
    if target.keeps_history:
        columns.update(first_version())
    select = sa.select(*(expr.label(name) for name, expr in columns.items())).order_by(unknown.c.business_value)
    return sa.insert(dim).from_select(list(columns), select)


def _id_order(new: pa.Array, values: pa.Array, places: pa.Array | None) -> pa.Array:
    """The order new ids get keys in: by id, within the part of each one's first row where there are parts."""
    if places is None:
        return pc.sort_indices(new)
    first = pc.take(places, pc.index_in(new, value_set=values))
    order = [("place", "ascending"), ("id", "ascending")]
    return pc.sort_indices(pa.table({"place": first, "id": new}), sort_keys=order)


class InferredMembers:
    """Gives business ids a dimension lacks their keys as the batches stream by, so that no row waits for the end
    of the load: keys after the dimension's largest, in order of id within each batch (the same extract gives the
    same keys). The members themselves are written at the end, in the load's transaction; writers of the mart take
    turns, so no one else takes those keys meanwhile."""

    def __init__(self, conn: sa.Connection, schema: Schema, table: Dimension | Fact) -> None:
        self.schema = schema
        self.references = table.references
        self.known: dict[str, pa.Table] = {}
        self.next_key: dict[str, int] = {}
        for ref in table.references:
            target = schema.mart.dimension(ref.dimension)
            key = schema[target.name].c[target.key]
            largest = conn.execute(sa.select(sa.func.max(key)).where(key > 0)).scalar()
            self.next_key[ref.column] = (largest or 0) + 1
            self.known[ref.column] = pa.table(
                {"value": pa.array([], arrow_type(ref.value.type)), "key": pa.array([], pa.int32())}
            )

    @property
    def created(self) -> int:
        """Members given keys so far."""
        return sum(t.num_rows for t in self.known.values())

    def sizes(self) -> dict[str, int]:
        """Members given keys so far, by key column: `added_since` tells which came after."""
        return {column: known.num_rows for column, known in self.known.items()}

    def added_since(self, sizes: dict[str, int]) -> list[tuple[str, pa.Array]]:
        """The business ids given keys since `sizes`, with the name of the column they come from."""
        added = []
        for ref in self.references:
            new = self.known[ref.column]["value"].slice(sizes[ref.column])
            if len(new):
                added.append((ref.value.name, new.combine_chunks()))
        return added

    def fill(self, batch: pa.RecordBatch, places: pa.Array | None = None) -> pa.RecordBatch:
        """The batch with every key set. `places`: the part of a load (a period of a span) of each row, where a
        batch holds several; ids new to the batch then get keys part after part, as if each part were loaded
        apart."""
        for ref in self.references:
            keys, values = batch.column(ref.column), batch.column(ref.value.name)
            missing = pc.and_(pc.is_null(keys), pc.is_valid(values))
            if not pc.any(missing).as_py():
                continue
            known = self.known[ref.column]
            unknown = pc.unique(pc.filter(values, missing))
            new = pc.filter(unknown, pc.invert(pc.is_in(unknown, value_set=known["value"])))
            if len(new):
                new_values = pc.take(new, _id_order(new, values, places))
                first = self.next_key[ref.column]
                self.next_key[ref.column] = first + len(new_values)
                numbered = pa.table(
                    {"value": new_values, "key": pa.array(range(first, first + len(new_values)), pa.int32())}
                )
                known = self.known[ref.column] = pa.concat_tables([known, numbered]).combine_chunks()
            # Arrays, not the table's chunked columns: a batch takes an array as a column without converting it.
            found = pc.take(known["key"].chunk(0), pc.index_in(values, value_set=known["value"].chunk(0)))
            column = batch.schema.get_field_index(ref.column)
            batch = batch.set_column(column, batch.schema.field(column), pc.coalesce(keys, found))
        return batch

    def write(self, conn: sa.Connection) -> int:
        """Insert the members given keys; return how many."""
        for ref in self.references:
            pairs = self.known[ref.column]
            if not pairs.num_rows:
                continue
            target = self.schema.mart.dimension(ref.dimension)
            by = self.schema[target.name].c[ref.by]
            # The pairs go by the bulk path into a scratch table, and from there into the dimension in one
            # statement, however many: thousands of bound values would cost more to send than the rows.
            scratch = sa.Table(
                f"callmart_new_{target.name}",
                sa.MetaData(),
                sa.Column("business_value", by.type),
                sa.Column("key", sa.Integer),
                prefixes=["TEMPORARY"],
            )
            scratch.create(conn)
            engines.of(conn).bulk_insert(conn, scratch, pairs.rename_columns(["business_value", "key"]).to_batches())
            unknown = sa.select(scratch).subquery()
            conn.execute(_inferred_members(self.schema, target, by, unknown, keys=unknown.c.key))
            scratch.drop(conn)
        return self.created
