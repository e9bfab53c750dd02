"""Key lookups: ids laid out by position give the keys that the scan of the dimension gives."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from callmart.keys import KeyLookup, _direct_table

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


def test_sparse_or_textual_ids_are_not_laid_out() -> None:
    sparse = pa.table({"value": pa.array([1, 2_000_000_000], pa.int32()), "key": pa.array([1, 2], pa.int32())})
    textual = pa.table({"value": pa.array(["ana", "luis"]), "key": pa.array([1, 2], pa.int32())})
    assert _direct_table(sparse) is None
    assert _direct_table(textual) is None
