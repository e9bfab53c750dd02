"""The declared cleaning rules run by DuckDB's SQL give the rows and rejects that clean_batch gives on Arrow, for
every table of the mart and any raw text: near-valid dates, durations and numbers, stray whitespace, missing
markers, NUL bytes and arbitrary Unicode."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callmart.clean import clean_batch
from callmart.declare import Dimension, Fact
from callmart.engines.duckdb.cleaning import BAD, cleaned_rows, reject_rows
from callmart.mart import MART
from callmart.rejects import SOURCE_FILE, SOURCE_ROW
from callmart.stage import source_fields, staged_columns

TABLES: list[Dimension | Fact] = [*MART.dimensions, *MART.facts]
SPACES = [" ", "\t", "\u00a0", "\u2003", "\u3000", "\x1c", "\x85", "\x84", "\u200b", "\n"]


@pytest.fixture(scope="module")
def duckdb_conn() -> Iterator[sa.Connection]:
    engine = sa.create_engine("duckdb:///:memory:")
    with engine.connect() as conn:
        yield conn
    engine.dispose()


def _padded(number: int, pad: bool) -> str:
    return f"{number:02d}" if pad else str(number)


@st.composite
def _dates(draw: st.DrawFn) -> str:
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    year = draw(st.sampled_from([2023, 2024, 1999, 24, 999, 12024, 2100]))
    hour, minute = draw(st.integers(0, 25)), draw(st.integers(0, 61))
    pad = draw(st.booleans())
    stamp = f"{_padded(month, pad)}/{_padded(day, pad)}/{year} {hour}:{_padded(minute, True)}"
    return stamp + draw(st.sampled_from(["", ":00", ":60", " PM"]))


@st.composite
def _durations(draw: st.DrawFn) -> str:
    hour, minute, second = draw(st.integers(-1, 25)), draw(st.integers(0, 61)), draw(st.integers(0, 62))
    return f"{hour}:{_padded(minute, draw(st.booleans()))}:{_padded(second, draw(st.booleans()))}"


_SPECIAL = ["infinity", "-Infinity", "INFINITY", "epoch", " epoch"]
"""Words DuckDB's strptime reads as times whatever the format."""
_NUMBERS = st.one_of(
    st.integers(-(2**63), 2**63).map(str),
    st.integers(0, 10**20).map(lambda n: "+" + str(n)),
    st.sampled_from(["2147483647", "2147483648", "-2147483648", "007", "1e3", "1.0", "--1", "+-1"]),
)
_VALUES = st.one_of(
    _dates(),
    _durations(),
    _NUMBERS,
    st.sampled_from(["", "NA", "N/A", "NULL", "na", "unknown", "ß", "İstanbul", "a\x00b", "0:00:00", *_SPECIAL]),
    st.text(max_size=12),
)


@st.composite
def _raw(draw: st.DrawFn) -> str | None:
    if draw(st.integers(0, 9)) == 0:
        return None
    value = draw(_VALUES)
    before = "".join(draw(st.lists(st.sampled_from(SPACES), max_size=2)))
    after = "".join(draw(st.lists(st.sampled_from(SPACES), max_size=2)))
    return before + value + after


def _batch(table: Dimension | Fact, rows: list[list[str | None]]) -> pa.RecordBatch:
    fields = source_fields(table)
    data: dict[str, list[Any]] = {f: [row[i] for row in rows] for i, f in enumerate(fields)}
    data[SOURCE_FILE] = ["extract.csv"] * len(rows)
    data[SOURCE_ROW] = list(range(2, len(rows) + 2))
    schema = pa.schema([(f, pa.string()) for f in fields] + [(SOURCE_FILE, pa.string()), (SOURCE_ROW, pa.int64())])
    return pa.RecordBatch.from_pydict(data, schema=schema)


def _by_duckdb(conn: sa.Connection, table: Dimension | Fact, batch: pa.RecordBatch) -> tuple[list[Any], list[Any]]:
    conn.connection.driver_connection.register("raw_rows", pa.Table.from_batches([batch]))  # type: ignore[union-attr]
    raw = sa.table("raw_rows", *[sa.column(name) for name in batch.schema.names])
    columns = staged_columns(table)
    cleaned = cleaned_rows(raw, columns)
    rows = [dict(r) for r in conn.execute(cleaned.order_by(cleaned.selected_columns[SOURCE_ROW])).mappings()]
    found = sorted(tuple(r) for r in conn.execute(reject_rows(raw, columns)))
    return rows, found


def _by_arrow(table: Dimension | Fact, batch: pa.RecordBatch) -> tuple[list[Any], list[Any]]:
    cleaned = clean_batch(batch, staged_columns(table))
    rows = [{**row, BAD: bad} for row, bad in zip(cleaned.rows.to_pylist(), cleaned.bad.to_pylist(), strict=True)]
    return rows, sorted(tuple(r.values()) for r in cleaned.rejects.to_pylist())


@pytest.mark.parametrize("table", TABLES, ids=[t.name for t in TABLES])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_duckdb_sql_cleans_as_arrow_does(
    duckdb_conn: sa.Connection, table: Dimension | Fact, data: st.DataObject
) -> None:
    width = len(source_fields(table))
    rows = data.draw(st.lists(st.lists(_raw(), min_size=width, max_size=width), min_size=1, max_size=12))
    batch = _batch(table, rows)
    assert _by_duckdb(duckdb_conn, table, batch) == _by_arrow(table, batch)


@pytest.mark.parametrize("word", _SPECIAL)
def test_words_duckdb_reads_as_times_are_no_dates_or_durations(duckdb_conn: sa.Connection, word: str) -> None:
    """'infinity' or 'epoch' as a call's date and its durations: a bad row and its rejects, as Arrow has them."""
    fact = MART.facts[0]
    row: list[str | None] = [word, "c", "555", word, word, "7", "12"]
    batch = _batch(fact, [row])
    rows, rejects = _by_duckdb(duckdb_conn, fact, batch)
    assert (rows, rejects) == _by_arrow(fact, batch)
    assert rows[0][BAD] and len(rejects) == 3


def test_a_leading_plus_reads_as_the_number() -> None:
    """`+7` matches the declared shape of a whole number; Arrow's cast alone refuses it."""
    fact = MART.facts[0]
    fields = source_fields(fact)
    row: list[str | None] = ["3/4/2024 7:05", "c", "555", "0:00:40", "0:01:00", "+7", "+12"]
    assert len(row) == len(fields)
    cleaned = clean_batch(_batch(fact, [row]), staged_columns(fact))
    assert not cleaned.bad[0].as_py() and cleaned.rejects.num_rows == 0
    assert 7 in cleaned.rows.to_pylist()[0].values()
