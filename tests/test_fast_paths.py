"""The fast paths of a period load give what the plain ones give: row hashes tell rows apart, rows written by the
bulk path read back as they were, a loaded day has the statistics its queries need, and a day's run reads only the
days its windows reach."""

from __future__ import annotations

import errno
import itertools
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from callmart import Callmart, engines, rowhash, spill
from callmart.engines.postgres import copy
from callmart.mart.sample import generate
from callmart.rowhash import row_hashes

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

WIDE = sa.Table(
    "wide",
    sa.MetaData(),
    sa.Column("i4", sa.Integer),
    sa.Column("i8", sa.BigInteger),
    sa.Column("txt", sa.String),
    sa.Column("ts", sa.DateTime),
    sa.Column("tm", sa.Time),
    sa.Column("flag", sa.Boolean),
)
TYPES = pa.schema(
    [
        ("i4", pa.int32()),
        ("i8", pa.int64()),
        ("txt", pa.string()),
        ("ts", pa.timestamp("s")),
        ("tm", pa.time32("s")),
        ("flag", pa.bool_()),
    ]
)


def maybe(values: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(st.none(), values)


rows = st.tuples(
    maybe(st.integers(-(2**31), 2**31 - 1)),
    maybe(st.integers(-(2**63), 2**63 - 1)),
    # Text as CSV would mangle it: separators, quotes, line breaks, accents, the empty string.
    maybe(st.text(alphabet=st.sampled_from(list("ab,;\"\n\r\\\t ñé€'NULL")), max_size=12)),
    maybe(
        st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)).map(
            lambda d: d.replace(microsecond=0)
        )
    ),
    maybe(st.times().map(lambda t: t.replace(microsecond=0))),
    maybe(st.booleans()),
)


@FAST
@given(data=st.lists(rows, max_size=30), cut=st.integers(0, 30))
# Text that differs only by trailing zero bytes, which add nothing to a polynomial of the bytes.
@example(data=[(1, 1, "a", None, None, None), (1, 1, "a\0", None, None, None), (1, 1, "", None, None, None)], cut=1)
def test_row_hashes_tell_rows_apart_wherever_they_lie(data: list[tuple[object, ...]], cut: int) -> None:
    # Repeats made likely: each row also comes back later, so that equal rows sit at different places.
    data = data + data[::2]
    batch = pa.RecordBatch.from_pylist([dict(zip(TYPES.names, r, strict=True)) for r in data], schema=TYPES)
    hashes = row_hashes(batch, TYPES.names).to_pylist()
    for i, j in itertools.combinations(range(len(data)), 2):
        assert (hashes[i] == hashes[j]) == (data[i] == data[j]), (data[i], data[j])
    # A row's hash does not depend on its batch or its place there (slices, reversed order).
    cut = min(cut, len(data))
    assert row_hashes(batch.slice(cut), TYPES.names).to_pylist() == hashes[cut:]
    assert row_hashes(batch.slice(0, cut), TYPES.names).to_pylist() == hashes[:cut]
    backwards = batch.take(pa.array(range(len(data) - 1, -1, -1), pa.int64()))
    assert row_hashes(backwards, TYPES.names).to_pylist() == hashes[::-1]


class _FullDisk:
    """An unbuffered temporary file that takes `room` bytes, then fails as a full disk does."""

    OPEN = staticmethod(tempfile.TemporaryFile)

    def __init__(self, room: int) -> None:
        self.file, self.room = self.OPEN(buffering=0), room

    def write(self, data: bytes) -> int:
        # As write(2): what fits is written and counted; with no room left at all, the error.
        room = self.room - self.file.tell()
        if room <= 0 and data:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.file.write(data[:room])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def __enter__(self) -> Any:
        return self.file

    def __exit__(self, *exc: object) -> None:
        self.file.close()


@FAST
@given(
    batches=st.lists(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=12), max_size=12),
    repeats=st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11)), max_size=6),
    held=st.integers(1, 20),
    room=st.one_of(st.none(), st.integers(0, 120)),
)
def test_repeated_hashes_are_those_of_every_batch_however_many_wait_in_the_file(
    batches: list[list[int]], repeats: list[tuple[int, int]], held: int, room: int | None
) -> None:
    # Some hashes of earlier batches come again in later ones, and some hashes share only their prefix.
    seen = [h for hashes in batches for h in hashes]
    for at, (batch, place) in enumerate(repeats):
        if seen and batch < len(batches):
            batches[batch].insert(place, seen[(at * 7) % len(seen)] ^ (at & 1))
    expected = sorted(p for p, n in Counter(h >> 32 for b in batches for h in b).items() if n > 1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rowhash, "HELD_PREFIXES", held)
        if room is not None:
            patch.setattr(spill.tempfile, "TemporaryFile", lambda **_: _FullDisk(room))
        repeated = rowhash.RepeatedHashes()
        for hashes in batches:
            batch = pa.RecordBatch.from_arrays([pa.array(hashes, pa.int64())], names=[rowhash.ROW_HASH])
            assert repeated.add(batch) is batch
        assert repeated.repeated() == expected


@FAST
@pytest.mark.parametrize("encoder", ["binary", "csv"])
@given(data=st.lists(rows, max_size=30))
def test_bulk_rows_read_back_as_written(
    engine: sa.Engine, encoder: str, monkeypatch: pytest.MonkeyPatch, data: list[tuple[object, ...]]
) -> None:
    # Without pgpq (no wheel for Linux on ARM) PostgreSQL's COPY takes CSV.
    monkeypatch.setattr(copy, "_pgpq_installed", lambda: encoder == "binary")
    batch = pa.record_batch([pa.array([r[i] for r in data], f.type) for i, f in enumerate(TYPES)], schema=TYPES)
    with engine.begin() as conn:
        WIDE.drop(conn, checkfirst=True)
        WIDE.create(conn)
        # A stream of two batches; then the columns in another order; then the stream for several tables.
        assert engines.of(conn).bulk_insert(conn, WIDE, [batch, batch]) == 2 * len(data)
        assert engines.of(conn).bulk_insert(conn, WIDE, [batch.select(list(reversed(TYPES.names)))]) == len(data)
        assert engines.of(conn).bulk_insert_routed(conn, [(WIDE, batch)]).get("wide", 0) == len(data)
        back = conn.execute(sa.select(WIDE)).all()
    assert sorted(map(tuple, back), key=repr) == sorted(data * 4, key=repr)


ROUTED = [sa.Table(f"routed_{n}", sa.MetaData(), *(c._copy() for c in WIDE.columns)) for n in range(3)]


def _batch(data: list[tuple[object, ...]]) -> pa.RecordBatch:
    return pa.record_batch([pa.array([r[i] for r in data], f.type) for i, f in enumerate(TYPES)], schema=TYPES)


@FAST
@given(
    parts=st.lists(st.tuples(st.integers(0, len(ROUTED) - 1), st.lists(rows, max_size=8)), max_size=12),
    statement=st.integers(1, 2048),
    file_bytes=st.integers(1, 4096),
    room=st.one_of(st.none(), st.integers(0, 2048)),
)
# Parts of two tables between each other's, waiting until the end; then the file full at every part.
@example(
    parts=[(0, [(1, 1, "a", None, None, None)]), (1, [(2,) * 2 + (None,) * 4]), (0, [(3,) * 2 + (None,) * 4])],
    statement=2048,
    file_bytes=4096,
    room=None,
)
@example(
    parts=[(0, [(1, 1, "a", None, None, None)]), (1, [(2,) * 2 + (None,) * 4]), (0, [(3,) * 2 + (None,) * 4])],
    statement=2048,
    file_bytes=1,
    room=None,
)
def test_routed_parts_reach_their_tables_however_many_wait_and_wherever_the_disk_fills(
    engine: sa.Engine,
    parts: list[tuple[int, list[tuple[object, ...]]]],
    statement: int,
    file_bytes: int,
    room: int | None,
) -> None:
    # Small bounds make parts wait (PostgreSQL: in a file, until a table's rows make a statement or the file is
    # full), and a disk that fills at any byte makes them go at once.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(copy, "STATEMENT_BYTES", statement)
        patch.setattr(copy, "FILE_BYTES", file_bytes)
        if room is not None:
            patch.setattr(spill.tempfile, "TemporaryFile", lambda **_: _FullDisk(room))
        with engine.begin() as conn:
            for table in ROUTED:
                table.drop(conn, checkfirst=True)
                table.create(conn)
            written = engines.of(conn).bulk_insert_routed(conn, [(ROUTED[t], _batch(data)) for t, data in parts])
            back = [conn.execute(sa.select(table)).all() for table in ROUTED]
    for n, table in enumerate(ROUTED):
        expected = [row for t, data in parts if t == n for row in data]
        assert sorted(map(tuple, back[n]), key=repr) == sorted(expected, key=repr)
        assert written.get(table.name, 0) == len(expected)


START = datetime(2024, 3, 4)
END = START + timedelta(days=1)


def test_a_loaded_day_has_the_statistics_its_joins_and_filters_need(
    new_postgres_database: Callable[[], str], tmp_path: Path
) -> None:
    """PostgreSQL plans from statistics: the day's partition gets them in its load, not when autovacuum comes."""
    url = new_postgres_database()
    generate(tmp_path / "src", calls=3000, days=1, customers=300, start=START.date())
    with Callmart(url, tmp_path / "src") as mart:
        mart.init()
        mart.enqueue(START.date(), END.date())
        assert mart.run().ok
        with mart.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT reltuples FROM pg_class WHERE relname = 'fact_llamadas_20240304'"))
            counted = conn.execute(sa.text("SELECT count(*) FROM fact_llamadas")).scalar_one()
            analyzed = conn.execute(
                sa.text("SELECT attname FROM pg_stats WHERE tablename = 'fact_llamadas_20240304'")
            ).scalars()
            assert rows.scalar_one() == counted > 2000
            assert set(analyzed) >= {"key_llamada", "fecha_llamada", "key_cliente_llamada", "key_login_post_llamada"}


def test_a_days_run_reads_no_day_its_windows_do_not_reach(
    new_postgres_database: Callable[[], str], tmp_path: Path
) -> None:
    """A daily run's cost must not grow with the mart: the days before the metric's and the lift's windows are
    not read (PostgreSQL's own counts of the scans of each day's partition)."""
    url = new_postgres_database()
    generate(tmp_path / "src", calls=3000, days=6, customers=300, start=START.date())
    last = START + timedelta(days=5)
    with Callmart(url, tmp_path / "src") as mart:
        mart.init()
        mart.enqueue(START.date(), last.date())
        assert mart.run().ok
    before = _scans_once_flushed(url, Counter(), "fact_llamadas_20240308")
    with Callmart(url, tmp_path / "src") as mart:
        mart.enqueue(last.date(), (last + timedelta(days=1)).date())
        assert mart.run().ok
    after = _scans_once_flushed(url, before, "fact_llamadas_20240309")
    assert after["fact_llamadas_20240304"] == before["fact_llamadas_20240304"]
    assert after["fact_llamadas_20240305"] == before["fact_llamadas_20240305"]


def _scans(engine: sa.Engine) -> Counter[str]:
    """Sequential and index scans so far, per day partition of the fact table."""
    with engine.connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT relname, seq_scan + coalesce(idx_scan, 0) FROM pg_stat_user_tables "
                "WHERE relname LIKE 'fact_llamadas_2%'"
            )
        ).all()
    return Counter({name: int(scans) for name, scans in found})


def _scans_once_flushed(url: str, before: Counter[str], read: str) -> Counter[str]:
    """The scans once a run's connections have ended and their counts arrived: those of `read`, a partition the run
    surely reads, grew, and all stayed the same for a second."""
    with Callmart(url, Path()) as mart:
        for _ in range(100):
            seen = _scans(mart.engine)
            if seen[read] > before[read]:
                time.sleep(1)
                if _scans(mart.engine) == seen:
                    return seen
            time.sleep(0.1)
    raise AssertionError(f"the run's scans of {read} never reached PostgreSQL's statistics")
