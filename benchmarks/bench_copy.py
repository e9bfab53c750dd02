"""Time pgpq's Arrow -> binary COPY encoder, which engines/postgres/copy.py uses, against the NumPy encoder callmart
had written itself before (kept below), on the batches callmart writes for a period.

    python benchmarks/bench_copy.py [--calls 300000 1000000] [--repeat 3] [--out FILE]

For each size, one extract is generated and loaded by callmart into a scratch PostgreSQL database; the batches it
hands to COPY for the period (its staging rows and its fact rows) are kept. Each round then writes those same
batches with each encoder in turn (the NumPy one, then pgpq through copy.py), into empty copies of the two tables
in one transaction, one COPY per batch with the next batch encoded in a worker thread, as copy.copy_parts does.
Reported: the encoding alone (no server) and the COPY as a whole, each in wall seconds, this process's CPU seconds
and its peak resident memory above the start; medians of the rounds, and pgpq over NumPy. Then the rows each
stored are compared, and a batch of every column type callmart writes (NULLs, non-ASCII text, timestamps on either
side of 1970 and 2000, times of day, int64 values into an integer column) is written by each and read back
against the values Arrow holds.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from _measure import START, Meter
from psycopg import sql
from psycopg.rows import dict_row
from sqlalchemy.dialects import postgresql

from callmart import Callmart, allocator
from callmart.engines.postgres import copy
from callmart.mart.sample import generate
from callmart.streams import prefetched

PG_URL_ENV = "CALLMART_BENCH_PG_URL"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
STAGING = "stg_fact_llamadas"
FACT = "fact_llamadas"
SEED = 7
Part = tuple[sa.Table, pa.RecordBatch]


class Encoder(Protocol):
    """One table's binary COPY stream, batch by batch."""

    columns: list[str]

    def encode(self, batch: pa.RecordBatch) -> list[bytes | memoryview]:
        """The batch's rows, in pieces, without the stream's header and trailer."""
        ...


# The NumPy encoder: each run of fixed-width columns without nulls becomes one block of records built by NumPy in a
# single pass; text and nullable columns are joined to it by Arrow.

_MICROSECONDS_2000 = 946_684_800_000_000
"""PostgreSQL counts timestamps from 2000-01-01, Arrow from 1970-01-01."""
_DAYS_2000 = 10_957
TEXT = "text"


@dataclass(frozen=True)
class Kind:
    """How one PostgreSQL type is written: the Arrow type to cast to, the number type that holds it, the
    big-endian NumPy type of its bytes, and the shift of epoch."""

    arrow: pa.DataType
    number: pa.DataType
    wire: str
    shift: int = 0


_INT2 = Kind(pa.int16(), pa.int16(), ">i2")
_INT4 = Kind(pa.int32(), pa.int32(), ">i4")
_INT8 = Kind(pa.int64(), pa.int64(), ">i8")
_FLOAT8 = Kind(pa.float64(), pa.float64(), ">f8")
_BOOL = Kind(pa.bool_(), pa.bool_(), "u1")
_TIMESTAMP = Kind(pa.timestamp("us"), pa.int64(), ">i8", _MICROSECONDS_2000)
_DATE = Kind(pa.date32(), pa.int32(), ">i4", _DAYS_2000)
_TIME = Kind(pa.time64("us"), pa.int64(), ">i8")
_KINDS: tuple[tuple[type[sa.types.TypeEngine[Any]], Kind | str], ...] = (
    # Subclasses before their bases: BigInteger and SmallInteger are Integers, Text is a String.
    (sa.BigInteger, _INT8),
    (sa.SmallInteger, _INT2),
    (sa.Integer, _INT4),
    (sa.Boolean, _BOOL),
    (sa.DateTime, _TIMESTAMP),
    (sa.Date, _DATE),
    (sa.Time, _TIME),
    (sa.Double, _FLOAT8),
    (sa.String, TEXT),
)


def kind_of(type_: sa.types.TypeEngine[Any]) -> Kind | str:
    """The wire form of a column type."""
    for sql_type, kind in _KINDS:
        if isinstance(type_, sql_type) and not (isinstance(type_, sa.DateTime) and type_.timezone):
            return kind
    raise TypeError(f"{type_!r} has no binary writer here")


class NumPyRows:
    """The NumPy encoder of a table's columns, fixed-width columns first."""

    def __init__(self, table: sa.Table, schema: pa.Schema) -> None:
        names = schema.names
        kinds = [kind_of(table.c[name].type) for name in names]
        order = sorted(range(len(names)), key=lambda i: kinds[i] == TEXT)
        self.columns = [names[i] for i in order]
        self._kinds = [kinds[i] for i in order]

    def encode(self, batch: pa.RecordBatch) -> list[bytes | memoryview]:
        count = batch.num_rows
        if count == 0:
            return []
        parts: list[pa.Array] = []
        block: list[tuple[Kind, pa.Array]] = []
        for name, kind in zip(self.columns, self._kinds, strict=True):
            values = batch.column(name)
            if isinstance(kind, Kind) and values.null_count == 0:
                block.append((kind, values))
                continue
            if block or not parts:
                parts.append(_records(block, count, field_count=None if parts else len(self.columns)))
                block = []
            parts.extend(_nullable_cells(values, kind) if isinstance(kind, Kind) else _text_cells(values))
        if block or not parts:
            parts.append(_records(block, count, field_count=None if parts else len(self.columns)))
        rows = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, b"")
        offsets = np.frombuffer(rows.buffers()[1], np.int32, count + 1, rows.offset * 4)
        payload = memoryview(rows.buffers()[2][offsets[0] : offsets[-1]])
        pa.default_memory_pool().release_unused()  # as copy.CopyFormat.encode does
        return [payload]


def _numbers(values: pa.Array, kind: Kind) -> np.ndarray:
    """The values as NumPy numbers of the wire's meaning (nulls as 0), before byte order."""
    if values.type != kind.arrow:
        values = pc.cast(values, kind.arrow)
    if kind.number != kind.arrow:
        values = values.view(kind.number)  # dates and times: the same bytes, read as their count
    if values.null_count:
        values = pc.fill_null(values, pa.scalar(False if kind is _BOOL else 0, kind.number))
    numbers: np.ndarray = values.to_numpy(zero_copy_only=False)
    return numbers - kind.shift if kind.shift else numbers


def _binary(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """A binary array over NumPy memory, without copying it."""
    return pa.Array.from_buffers(
        pa.binary(), len(offsets) - 1, [None, pa.py_buffer(offsets.astype(np.int32, copy=False)), pa.py_buffer(data)]
    )


def _fixed(records: np.ndarray) -> pa.Array:
    """Each record as one binary value."""
    width = records.dtype.itemsize
    return _binary(records.view(np.uint8).reshape(-1), np.arange(len(records) + 1, dtype=np.int32) * width)


def _records(block: list[tuple[Kind, pa.Array]], count: int, field_count: int | None) -> pa.Array:
    """Adjacent fixed-width fields without nulls, each its length and value, as one record per row; a row's
    first part starts with its field count."""
    layout, template = _layout(tuple(kind.wire for kind, _ in block), field_count)
    records = np.empty(count, dtype=layout)
    records[:] = template  # the counts and lengths, the same in every row, in one pass
    for i, (kind, values) in enumerate(block):
        records[f"v{i}"] = _numbers(values, kind)
    return _fixed(records)


@functools.cache
def _layout(wires: tuple[str, ...], field_count: int | None) -> tuple[np.dtype[Any], np.ndarray]:
    """The record type of fixed-width fields, and one record holding its field count and lengths."""
    fields = [("count", ">i2")] if field_count is not None else []
    for i, wire in enumerate(wires):
        fields += [(f"n{i}", ">i4"), (f"v{i}", wire)]
    layout = np.dtype(fields)
    template = np.zeros((), dtype=layout)
    if field_count is not None:
        template["count"] = field_count
    for i, wire in enumerate(wires):
        template[f"n{i}"] = np.dtype(wire).itemsize
    return layout, template


def _text_cells(values: pa.Array) -> Sequence[pa.Array]:
    """Length (-1 for null), then the UTF-8 bytes, of each value."""
    text = pc.fill_null(pc.cast(values, pa.string()), "")
    lengths = pc.binary_length(text).to_numpy(zero_copy_only=False).astype(">i4")
    if values.null_count:
        lengths[pc.is_null(values).to_numpy(zero_copy_only=False)] = -1
    return [_fixed(lengths), pc.cast(text, pa.binary())]


def _nullable_cells(values: pa.Array, kind: Kind) -> Sequence[pa.Array]:
    """Length (-1 for null), then the value's bytes, or nothing for a null."""
    valid = pc.is_valid(values).to_numpy(zero_copy_only=False)
    width = np.dtype(kind.wire).itemsize
    lengths = np.where(valid, width, -1).astype(">i4")
    data = _numbers(values, kind)[valid].astype(kind.wire)
    offsets = np.zeros(len(values) + 1, np.int32)
    np.cumsum(valid * width, out=offsets[1:])
    return [_fixed(lengths), _binary(data.view(np.uint8), offsets)]


class Pgpq:
    """pgpq, as copy.py drives it."""

    def __init__(self, table: sa.Table, schema: pa.Schema) -> None:
        self._form = copy.CopyFormat.of(table, schema)
        assert self._form.binary is not None, f"{table.name}: a column type without a binary writer"
        self.columns = self._form.columns

    def encode(self, batch: pa.RecordBatch) -> list[bytes | memoryview]:
        return self._form.encode(batch)


CONTENDERS: dict[str, Callable[[sa.Table, pa.Schema], Encoder]] = {"numpy": NumPyRows, "pgpq": Pgpq}


def admin_url() -> str:
    return os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A new empty database, dropped afterwards."""
    with psycopg.connect(admin_url(), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield sa.make_url(admin_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def recording_parts(kept: list[Part]) -> Iterator[None]:
    """Keep every (table, batch) callmart hands to copy.copy_parts inside the block."""
    original = copy.copy_parts

    def recorded(conn: sa.Connection, parts: Iterable[Part], frozen: set[str]) -> dict[str, int]:
        def passing() -> Iterator[Part]:
            for part in parts:
                kept.append(part)
                yield part

        return original(conn, passing(), frozen)

    copy.copy_parts = recorded
    try:
        yield
    finally:
        copy.copy_parts = original


def period_parts(database: str, calls: int, work: Path) -> list[Part]:
    """The staging and fact batches callmart writes when it loads one generated day of `calls` calls."""
    generate(work, calls=calls, days=1, customers=max(1000, calls // 5), start=START, seed=SEED)
    kept: list[Part] = []
    with Callmart(database, work) as mart, allocator.returning_memory():
        mart.init()
        mart.run()
        mart.enqueue(START, START + timedelta(days=1))
        with recording_parts(kept):
            summary = mart.run(complete_through=START)
    assert not summary.failed and not summary.waiting, summary
    return [(table, batch) for table, batch in kept if table.name == STAGING or table.name.startswith(FACT)]


def targets(conn: psycopg.Connection[Any], parts: list[Part], contender: str) -> dict[str, str]:
    """Empty copies of the parts' tables for a contender (the staging copy unlogged, as callmart's is)."""
    names: dict[str, str] = {}
    for table, _ in parts:
        if table.name in names:
            continue
        kind = "staging" if table.name == STAGING else "fact"
        name = names[table.name] = f"bench_copy_{kind}_{contender}"
        like = STAGING if kind == "staging" else FACT  # the period's partition is swapped in under another name
        source = sql.Identifier(table.schema, like) if table.schema else sql.Identifier(like)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("CREATE {} TABLE {} (LIKE {})").format(
                sql.SQL("UNLOGGED" if kind == "staging" else ""), sql.Identifier(name), source
            )
        )
    conn.commit()
    return names


def encoders(parts: list[Part], contender: str) -> dict[str, Encoder]:
    """One encoder per table, for its first batch's columns."""
    found: dict[str, Encoder] = {}
    for table, batch in parts:
        if table.name not in found:
            found[table.name] = CONTENDERS[contender](table, batch.schema)
    return found


@contextmanager
def metered(figures: dict[str, list[float]], what: str) -> Iterator[None]:
    """Append the block's wall seconds, this process's CPU seconds (all its threads) and its peak resident MB above
    the start to figures[what + '_s'], [what + '_cpu_s'] and [what + '_mb']."""
    cpu = time.process_time()
    with Meter() as meter:
        yield
    figures[f"{what}_cpu_s"].append(time.process_time() - cpu)
    figures[f"{what}_s"].append(meter.seconds)
    figures[f"{what}_mb"].append(meter.peak_mb - (meter.base_mb or 0.0))


def encode_only(parts: list[Part], contender: str, figures: dict[str, list[float]]) -> int:
    """Encode every batch in this thread, no server; return the bytes written."""
    forms = encoders(parts, contender)
    size = 0
    with metered(figures, "encode"):
        for table, batch in parts:
            size += sum(len(piece) for piece in forms[table.name].encode(batch))
    return size


def copy_all(
    conn: psycopg.Connection[Any],
    parts: list[Part],
    contender: str,
    into: dict[str, str],
    figures: dict[str, list[float]],
) -> None:
    """One transaction: the copies emptied, then one COPY per batch with the next batch encoded in a worker thread
    (as copy.copy_parts does), then the commit."""
    with metered(figures, "copy"):
        forms = encoders(parts, contender)
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, into.values()))))

        def encoded(table: sa.Table, batch: pa.RecordBatch) -> tuple[str, list[bytes | memoryview]]:
            return table.name, forms[table.name].encode(batch)

        for name, payload in prefetched(encoded(t, b) for t, b in parts):
            form = forms[name]
            statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary, FREEZE)").format(
                sql.Identifier(into[name]), sql.SQL(", ").join(map(sql.Identifier, form.columns))
            )
            with conn.cursor() as cursor, cursor.copy(statement) as stream:
                stream.write(copy.HEADER)
                for piece in payload:
                    stream.write(piece)
                stream.write(copy.TRAILER)
        conn.commit()


def differing_rows(conn: psycopg.Connection[Any], one: str, other: str) -> int:
    """Rows of either table the other lacks, counting duplicates."""
    query = sql.SQL(
        "SELECT (SELECT count(*) FROM (TABLE {a} EXCEPT ALL TABLE {b}) x)"
        " + (SELECT count(*) FROM (TABLE {b} EXCEPT ALL TABLE {a}) y)"
    ).format(a=sql.Identifier(one), b=sql.Identifier(other))
    found = conn.execute(query).fetchone()
    return int(found[0]) if found else -1


def row_count(conn: psycopg.Connection[Any], table: str) -> int:
    found = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    return int(found[0]) if found else -1


def measure(database: str, parts: list[Part], repeat: int) -> dict[str, Any]:
    """Every round, each contender in turn: encoding alone, then the COPY; then the stored rows compared."""
    measures = [f"{what}_{unit}" for what in ("encode", "copy") for unit in ("s", "cpu_s", "mb")]
    runs = {c: {m: list[float]() for m in measures} for c in CONTENDERS}
    sizes: dict[str, int] = {}
    with psycopg.connect(database) as conn, allocator.returning_memory():
        into = {c: targets(conn, parts, c) for c in CONTENDERS}
        for number in range(1, repeat + 1):
            for contender, figures in runs.items():
                sizes[contender] = encode_only(parts, contender, figures)
                copy_all(conn, parts, contender, into[contender], figures)
                print(
                    f"  round {number} {contender}: encode {figures['encode_s'][-1]:.2f} s "
                    f"(CPU {figures['encode_cpu_s'][-1]:.2f} s), COPY {figures['copy_s'][-1]:.2f} s "
                    f"(client CPU {figures['copy_cpu_s'][-1]:.2f} s)",
                    flush=True,
                )
        first, second = (into[c] for c in CONTENDERS)
        compared = {
            kind: {
                "rows": [row_count(conn, first[kind]), row_count(conn, second[kind])],
                "differing": differing_rows(conn, first[kind], second[kind]),
            }
            for kind in first
        }
    medians = {c: {k: statistics.median(v) for k, v in r.items()} for c, r in runs.items()}
    return {"runs": runs, "medians": medians, "bytes": sizes, "compared": compared}


def types_table() -> tuple[sa.Table, pa.RecordBatch]:
    """A table of every column type callmart writes, and a batch of awkward values in the Arrow types callmart's
    batches carry (timestamp[s] and [us], time32[s] and time64[us], int64 into an integer column)."""
    table = sa.Table(
        "bench_copy_types",
        sa.MetaData(),
        sa.Column("n", sa.BigInteger),
        sa.Column("at_s", sa.DateTime),
        sa.Column("at_us", sa.DateTime),
        sa.Column("at_ms", sa.DateTime),
        sa.Column("day", sa.Date),
        sa.Column("talk_s", sa.Time),
        sa.Column("talk_us", sa.Time),
        sa.Column("talk_ms", sa.Time),
        sa.Column("small", sa.SmallInteger),
        sa.Column("i4", sa.Integer),
        sa.Column("i4_from_i8", sa.Integer),
        sa.Column("i8", sa.BigInteger),
        sa.Column("f8", sa.Double),
        sa.Column("flag", sa.Boolean),
        sa.Column("label", sa.String),
        sa.Column("note", sa.Text),
    )
    stamps = [
        datetime(1969, 12, 31, 23, 59, 59),
        datetime(2000, 1, 1),
        datetime(1999, 12, 31, 23, 59, 59),
        None,
        datetime(2024, 3, 4, 13, 7, 2),
        datetime(2262, 4, 11, 0, 0, 0),
    ]
    micro = [
        datetime(1900, 1, 1, 0, 0, 0, 1),
        datetime(2000, 1, 1, 0, 0, 0, 999_999),
        None,
        datetime(1970, 1, 1),
        datetime(2024, 2, 29, 23, 59, 59, 123_456),
        datetime(9999, 12, 31, 23, 59, 59, 999_999),
    ]
    days = [date(1, 1, 1), date(1999, 12, 31), date(2000, 1, 1), None, date(1970, 1, 1), date(9999, 12, 31)]
    times = [clock(0, 0, 0), clock(23, 59, 59), None, clock(12, 0, 1), clock(0, 0, 59), clock(1, 2, 3)]
    micro_times = [clock(23, 59, 59, 999_999), None, clock(0, 0, 0, 1), clock(0, 0), clock(13, 7, 2, 500_000), clock(6)]
    texts = ["Atención al cliente", "", None, "日本語 ✓ 🙂", "ça va, Ñandú", "a" * 5000]
    columns = {
        "n": pa.array(range(6), pa.int64()),
        "at_s": pa.array(stamps, pa.timestamp("s")),
        "at_us": pa.array(micro, pa.timestamp("us")),
        "at_ms": pa.array(
            [m and m.replace(microsecond=m.microsecond // 1000 * 1000) for m in micro], pa.timestamp("ms")
        ),
        "day": pa.array(days, pa.date32()),
        "talk_s": pa.array(times, pa.time32("s")),
        "talk_us": pa.array(micro_times, pa.time64("us")),
        "talk_ms": pa.array(
            [t and t.replace(microsecond=t.microsecond // 1000 * 1000) for t in micro_times], pa.time32("ms")
        ),
        "small": pa.array([-32768, 32767, 0, None, 1, -1], pa.int16()),
        "i4": pa.array([-(2**31), 2**31 - 1, None, 0, 7, -7], pa.int32()),
        "i4_from_i8": pa.array([-(2**31), 2**31 - 1, 0, None, 42, -1], pa.int64()),
        "i8": pa.array([-(2**63), 2**63 - 1, 0, 1, None, -999], pa.int64()),
        "f8": pa.array([0.5, -1e300, None, 3.141592653589793, -0.0, 1e-300], pa.float64()),
        "flag": pa.array([True, False, None, True, False, True], pa.bool_()),
        "label": pa.array(texts, pa.string()),
        "note": pa.array(list(reversed(texts)), pa.large_string()),
    }
    return table, pa.RecordBatch.from_pydict(columns)


def types_check(database: str) -> dict[str, list[str]]:
    """Each contender writes the awkward batch; what it stored, read back, against the values Arrow holds."""
    table, batch = types_table()
    expected = batch.to_pylist()
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    ddl = sa.schema.CreateTable(table).compile(dialect=dialect)
    problems: dict[str, list[str]] = {}
    with psycopg.connect(database) as conn:
        for contender, make in CONTENDERS.items():
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table.name)))
            conn.execute(str(ddl))
            try:
                form = make(table, batch.schema)
                statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
                    sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, form.columns))
                )
                with conn.cursor() as cursor, cursor.copy(statement) as stream:
                    stream.write(copy.HEADER)
                    for piece in form.encode(batch):
                        stream.write(piece)
                    stream.write(copy.TRAILER)
                with conn.cursor(row_factory=dict_row) as reader:
                    stored = reader.execute(
                        sql.SQL("SELECT * FROM {} ORDER BY n").format(sql.Identifier(table.name))
                    ).fetchall()
            except Exception as error:  # noqa: BLE001 - a contender that cannot write a type is a finding
                conn.rollback()
                problems[contender] = [f"failed: {type(error).__name__}: {error}".splitlines()[0]]
                continue
            conn.rollback()
            problems[contender] = [
                f"row {row['n']} {name}: stored {row[name]!r:.60}, expected {want[name]!r:.60}"
                for row, want in zip(stored, expected, strict=False)
                for name in want
                if row[name] != want[name] or str(row[name]) != str(want[name])
            ] + ([] if len(stored) == len(expected) else [f"{len(stored)} rows stored of {len(expected)}"])
    return problems


def report(calls: int, parts: list[Part], result: dict[str, Any]) -> None:
    """One size's figures on stdout."""
    rows = {
        name: sum(b.num_rows for t, b in parts if t.name == name) for name in dict.fromkeys(t.name for t, _ in parts)
    }
    print(f"{calls:,} calls: {len(parts)} batches, rows per table {rows}")
    print(
        f"  {'encoder':10} {'encode s':>9} {'CPU s':>6} {'MB':>4} {'COPY s':>7} {'CPU s':>6} {'MB':>4}"
        f" {'MB written':>11}"
    )
    for contender, m in result["medians"].items():
        print(
            f"  {contender:10} {m['encode_s']:9.2f} {m['encode_cpu_s']:6.2f} {m['encode_mb']:4.0f} {m['copy_s']:7.2f}"
            f" {m['copy_cpu_s']:6.2f} {m['copy_mb']:4.0f} {result['bytes'][contender] / 2**20:11.1f}"
        )
    a, b = (result["medians"][c] for c in CONTENDERS)
    ratios = ", ".join(f"{k} {b[k] / a[k]:.2f}x" for k in a if a[k])
    print(f"  pgpq over NumPy (medians): {ratios}")
    for kind, found in result["compared"].items():
        print(f"  {kind}: rows stored {found['rows']}, rows differing {found['differing']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[300_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each contender; medians reported")
    parser.add_argument("--out", type=Path, help="also save everything measured as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from importlib import metadata

    import pgpq  # noqa: F401 - fail early without it

    print(
        f"pgpq {metadata.version('pgpq')}, pyarrow {pa.__version__}, psycopg {psycopg.__version__},"
        f" load average {os.getloadavg()}"
    )
    saved: dict[str, Any] = {"when": datetime.now().isoformat(timespec="seconds"), "sizes": {}}
    failed = False
    with scratch_database(f"callmart_bench_copy_{os.getpid()}") as database:
        problems = types_check(database)
    saved["types"] = problems
    for contender, found in problems.items():
        print(f"every type, {contender}: {'identical' if not found else ''}")
        for problem in found:
            print(f"    {problem}")
        failed |= bool(found)
    for calls in args.calls:
        name = f"callmart_bench_copy_{os.getpid()}_{calls}"
        with scratch_database(name) as database, tempfile.TemporaryDirectory(prefix=name) as work:
            began = time.perf_counter()
            parts = period_parts(database, calls, Path(work))
            print(f"{calls:,} calls loaded by callmart in {time.perf_counter() - began:.1f} s; measuring", flush=True)
            result = measure(database, parts, args.repeat)
        report(calls, parts, result)
        failed |= any(c["differing"] or len(set(c["rows"])) > 1 for c in result["compared"].values())
        saved["sizes"][calls] = result
        del parts
    if args.out:
        args.out.write_text(json.dumps(saved, indent=2, default=str) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
