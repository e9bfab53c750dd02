"""Key lookups: ids laid out by position give the keys that the scan of the dimension gives; a fact's rows are
numbered by minute whatever their order and batches."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from callmart.declare import CALLS_PER_MINUTE
from callmart.fact import MinuteNumbering
from callmart.keys import NAMED_IDS_LIMIT, KeyLookup, Timeline, _direct_table
from callmart.mart import CALLS

ids = st.integers(min_value=-999, max_value=5000)
any_id = st.one_of(st.none(), ids, st.integers(min_value=-(2**31), max_value=2**31 - 1))


@settings(max_examples=200, deadline=None)
@given(members=st.lists(ids, min_size=1, max_size=60, unique=True), asked=st.lists(any_id))
def test_direct_and_scanned_lookups_agree(members: list[int], asked: list[int | None]) -> None:
    versions = pa.table(
        {"value": pa.array(members, pa.int32()), "key": pa.array(range(1, len(members) + 1), pa.int32())}
    )
    direct = _direct_table(versions)
    assert direct is not None
    table, first = direct
    scanned = KeyLookup("id", "key", versions)
    laid_out = KeyLookup("id", "key", versions, by_value=table, first_value=first)
    batch = pa.record_batch({"id": pa.array(asked, pa.int32())})
    expected = [None if a is None else members.index(a) + 1 if a in members else None for a in asked]
    expected = [-999 if a is None else e for a, e in zip(asked, expected, strict=True)]
    assert scanned.map(batch).to_pylist() == expected
    assert laid_out.map(batch).to_pylist() == expected


wide_id = st.integers(min_value=-(2**31), max_value=2**31 - 1)


@settings(max_examples=300, deadline=None)
@given(
    members=st.lists(st.tuples(st.one_of(ids, wide_id), st.integers(1, 100)), min_size=1, max_size=40),
    added=st.lists(st.tuples(st.one_of(ids, ids, wide_id), st.integers(101, 200)), max_size=20),
    asked=st.lists(any_id),
)
def test_a_lookup_given_new_members_finds_what_one_read_of_all_finds(
    members: list[tuple[int, int]], added: list[tuple[int, int]], asked: list[int | None]
) -> None:
    # A run's cache gives the lookup it keeps the members a period inferred: laid out by id, its table is widened
    # (or, the ids too sparse then, built again from its pairs); an id listed twice keeps its first key either way.
    def pairs(listed: list[tuple[int, int]]) -> pa.Table:
        schema = pa.schema([("value", pa.int32()), ("key", pa.int32())])
        return pa.table({"value": [v for v, _ in listed], "key": [k for _, k in listed]}).cast(schema)

    kept = KeyLookup.of_pairs("id", "key", pairs(members))
    appended = kept.with_members(pairs(added))
    whole = KeyLookup("id", "key", pairs(members + added))
    batch = pa.record_batch({"id": pa.array(asked + [v for v, _ in members + added], pa.int32())})
    assert appended.map(batch).to_pylist() == whole.map(batch).to_pylist()


def test_sparse_or_textual_ids_are_not_laid_out() -> None:
    sparse = pa.table({"value": pa.array([1, 2_000_000_000], pa.int32()), "key": pa.array([1, 2], pa.int32())})
    textual = pa.table({"value": pa.array(["ana", "luis"]), "key": pa.array([1, 2], pa.int32())})
    assert _direct_table(sparse) is None
    assert _direct_table(textual) is None


BEGINNING = datetime(1900, 1, 1)
moments = st.integers(min_value=0, max_value=200 * 365 * 86_400).map(lambda s: BEGINNING + timedelta(seconds=s))
Version = tuple[int, int, datetime, datetime | None]


@st.composite
def versions_of(draw: st.DrawFn) -> list[Version]:
    """(id, key, valid_from, valid_to) of some members' versions: the first from the beginning, each until the next
    or, now and then, until some time before it (or, the last, until some time at all), leaving a gap."""
    members = draw(st.lists(ids, min_size=1, max_size=20, unique=True))
    versions: list[Version] = []
    for member in members:
        starts = [BEGINNING, *sorted(draw(st.sets(moments, max_size=4)) - {BEGINNING})]
        for start, after in zip(starts, [*starts[1:], None], strict=True):
            end = after
            if draw(st.integers(0, 4)) == 0:
                longest = int((after - start).total_seconds()) if after else 10**9
                end = start + timedelta(seconds=draw(st.integers(1, longest)))
            versions.append((member, len(versions) + 1, start, end))
    return versions


@settings(max_examples=300, deadline=None)
@given(versions=versions_of(), named=st.booleans(), data=st.data())
def test_a_timeline_finds_the_version_valid_at_each_time(
    versions: list[Version], named: bool, data: st.DataObject
) -> None:
    # Asked: mostly members at their versions' edges, some unknown ids, null ids and null times.
    members = st.sampled_from([v[0] for v in versions])
    edges = st.sampled_from([t for v in versions for t in v[2:] if t is not None])
    nearby = st.tuples(edges, st.sampled_from([-1, 0, 1])).map(lambda e: e[0] + timedelta(seconds=e[1]))
    asked = data.draw(
        st.lists(st.tuples(st.one_of(members, any_id), st.one_of(nearby, moments, st.none())), max_size=40)
    )
    # Ids as whole numbers, or as names (as agents are known by their login).
    id_type = pa.string() if named else pa.int32()

    def id_of(member: int | None) -> str | int | None:
        return f"agent.{member}" if named and member is not None else member

    table = pa.table(
        {
            "value": pa.array([id_of(v[0]) for v in versions[::-1]], id_type),
            "key": pa.array([v[1] for v in versions[::-1]], pa.int32()),
            "valid_from": pa.array([v[2] for v in versions[::-1]], pa.timestamp("s")),
            "valid_to": pa.array([v[3] for v in versions[::-1]], pa.timestamp("s")),
        }
    )
    timeline = Timeline.of(table)
    assert timeline is not None
    searched = KeyLookup("id", "key", table, "at", timeline=timeline)
    scanned = KeyLookup("id", "key", table, "at")
    batch = pa.record_batch(
        {
            "id": pa.array([id_of(a[0]) for a in asked], id_type),
            "at": pa.array([a[1] for a in asked], pa.timestamp("s")),
        }
    )

    def expected(member: int | None, at: datetime | None) -> int | None:
        if member is None:
            return -999
        valid = [k for m, k, start, end in versions if m == member and at and start <= at and (not end or at < end)]
        return valid[0] if valid else None

    assert searched.map(batch).to_pylist() == [expected(m, at) for m, at in asked]
    assert scanned.map(batch).to_pylist() == [expected(m, at) for m, at in asked]


def test_ids_far_apart_or_too_many_names_have_no_timeline() -> None:
    def versions(values: pa.Array) -> pa.Table:
        starts = pa.array([BEGINNING] * len(values), pa.timestamp("s"))
        keys = pa.array(range(len(values)), pa.int32())
        return pa.table(
            {"value": values, "key": keys, "valid_from": starts, "valid_to": pa.nulls(len(values), starts.type)}
        )

    assert Timeline.of(versions(pa.array([0, 2**29], pa.int64()))) is None
    assert Timeline.of(versions(pa.array([0, 2**29 - 1], pa.int64()))) is not None
    names = [f"agent.{i}" for i in range(NAMED_IDS_LIMIT + 1)]
    assert Timeline.of(versions(pa.array(names))) is None
    assert Timeline.of(versions(pa.array(names[:-1]))) is not None


@settings(max_examples=200, deadline=None)
@given(
    minutes=st.lists(st.integers(0, 3 * 24 * 60), min_size=1, max_size=80),
    seconds=st.data(),
    cuts=st.lists(st.integers(0, 80), max_size=4),
)
def test_rows_are_numbered_by_minute_in_the_order_they_stream_by(
    minutes: list[int], seconds: st.DataObject, cuts: list[int]
) -> None:
    # Rows out of time order, in batches whose minutes reach before and after the minutes seen so far.
    start = datetime(2024, 3, 4)
    times = [start + timedelta(minutes=m, seconds=seconds.draw(st.integers(0, 59))) for m in minutes]
    column = CALLS.time_column
    numbering = MinuteNumbering(CALLS)
    bounds = [0, *sorted(min(c, len(times)) for c in cuts), len(times)]
    keys = []
    for lower, upper in zip(bounds, bounds[1:], strict=False):
        batch = pa.record_batch({column: pa.array(times[lower:upper], pa.timestamp("s"))})
        keys += numbering.number(batch).column(CALLS.key).to_pylist()

    numbers = [int((t - datetime(1970, 1, 1)).total_seconds()) // 60 for t in times]
    expected = [n * CALLS_PER_MINUTE + numbers[: i + 1].count(n) for i, n in enumerate(numbers)]
    assert keys == expected
