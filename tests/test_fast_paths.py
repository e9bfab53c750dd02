"""The fast paths of a period load give what the plain ones give: rows written by the bulk path read back as
they were, and the metric found in the client is the one the rule defines."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from callmart import Callmart, dialect
from callmart.config import create_engine, parse_url
from callmart.generate import generate
from callmart.mart import CALLS, MART
from callmart.metric import SECONDS_TO_EVENT, FirstEventsInClient
from callmart.rowhash import row_hashes
from callmart.schema import Schema

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


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(parse_url(database_url))
    yield engine
    engine.dispose()


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


@FAST
@given(data=st.lists(rows, max_size=30))
def test_bulk_rows_read_back_as_written(engine: sa.Engine, data: list[tuple[object, ...]]) -> None:
    batch = pa.record_batch([pa.array([r[i] for r in data], f.type) for i, f in enumerate(TYPES)], schema=TYPES)
    with engine.begin() as conn:
        WIDE.drop(conn, checkfirst=True)
        WIDE.create(conn)
        # A stream of two batches; then the columns in another order; then the stream for several tables.
        assert dialect.bulk_insert(conn, WIDE, [batch, batch]) == 2 * len(data)
        assert dialect.bulk_insert(conn, WIDE, [batch.select(list(reversed(TYPES.names)))]) == len(data)
        assert dialect.bulk_insert_routed(conn, [(WIDE, batch)]).get("wide", 0) == len(data)
        back = conn.execute(sa.select(WIDE)).all()
    assert sorted(map(tuple, back), key=repr) == sorted(data * 4, key=repr)


START = datetime(2024, 3, 4)
END = START + timedelta(days=1)
WINDOW = timedelta(hours=48)
moments = st.integers(0, 4 * 24 * 60).map(lambda m: START - timedelta(hours=12) + timedelta(minutes=m))
login = st.tuples(st.integers(1, 4), moments.map(lambda t: t + timedelta(seconds=17)))
call = st.tuples(st.sampled_from([1, 2, 3, 4, 5, -999]), moments, st.integers(0, 90))


def channel_of(login: int) -> int:
    """The channel key the test gives a login."""
    return 10 + login % 3


def expected_first(calls: list[tuple[int, datetime, int]], logins: list[tuple[int, datetime]]) -> list[int | None]:
    """The rule, written plainly: the first login (by time, then id) of the call's customer within the window."""
    found: list[int | None] = []
    for customer, when, talk in calls:
        if talk < 30 or customer == -999:
            found.append(None)
            continue
        after = [
            (at, i + 1)
            for i, (who, at) in enumerate(logins)
            if who == customer and when <= at < when + WINDOW and START <= at < END + WINDOW
        ]
        found.append(min(after)[1] if after else None)
    return found


@pytest.fixture
def mart(engine: sa.Engine) -> Callable[[list[tuple[int, datetime]]], None]:
    schema = Schema(MART)
    with engine.begin() as conn:
        schema.create(conn)
        clientes = schema["dim_clientes"]
        conn.execute(
            sa.insert(clientes),
            [
                {"key_cliente": k, "id_cliente": 100 + k, "genero_cliente": "F", "tipo_cliente": "A"}
                for k in range(1, 6)
            ],
        )

    def logins(rows: list[tuple[int, datetime]]) -> None:
        table = schema["dim_logins"]
        with engine.begin() as conn:
            conn.execute(sa.delete(table).where(table.c.key_login > 0))
            if rows:
                conn.execute(
                    sa.insert(table),
                    [
                        {
                            "key_login": i + 1,
                            "id_login": i + 1,
                            "fecha_login": at,
                            "key_cliente_login": who,
                            "key_canal_digital_login": channel_of(i + 1),
                        }
                        for i, (who, at) in enumerate(rows)
                    ],
                )

    return logins


@FAST
@given(logins=st.lists(login, max_size=25), calls=st.lists(call, max_size=25))
def test_metric_in_the_client_follows_the_rule(
    engine: sa.Engine,
    mart: Callable[[list[tuple[int, datetime]]], None],
    logins: list[tuple[int, datetime]],
    calls: list[tuple[int, datetime, int]],
) -> None:
    mart(logins)
    calls = [(who, min(max(at, START), END - timedelta(minutes=1)), talk) for who, at, talk in calls]
    batch = pa.record_batch(
        {
            "key_cliente_llamada": pa.array([c[0] for c in calls], pa.int32()),
            "fecha_llamada": pa.array([c[1] for c in calls], pa.timestamp("s")),
            "segundos_hablados_llamada": pa.array([c[2] for c in calls], pa.int32()),
        }
    )
    with engine.connect() as conn:
        events = FirstEventsInClient(conn, Schema(MART), CALLS.metrics[0], START, END, ["key_canal_digital_login"])
    expected = expected_first(calls, logins)
    assert events.keys(batch).to_pylist() == expected
    # With each first login, the seconds from the call to it and the login's channel.
    firsts = events.firsts(batch).to_pydict()
    seconds = [
        None if k is None else int((logins[k - 1][1] - c[1]).total_seconds())
        for k, c in zip(expected, calls, strict=True)
    ]
    assert firsts[SECONDS_TO_EVENT] == seconds
    assert firsts["key_canal_digital_login"] == [None if k is None else channel_of(k) for k in expected]


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
