"""A source's extracts read and cleaned on Spark's executors by callmart's own reader and rules, file by file.

Spark's CSV reader splits a file across tasks and keeps no line numbers, and its parsing is not callmart's
(encodings, byte order marks, JSON arrays, rows that cannot be split). So each file arrives whole as one row of
`binaryFile` (path, content), and `mapInArrow` runs on it, on an executor, what staging runs on the driver: the
source's reader (`extract.read_source`, given as an argument: it sits above the engines), `clean.clean_batch`, the
selection of a period's rows, and the table's doubts. Every row keeps its file and line; the rules are the same
code, so the rows and rejects are those of the other engines.

The reader takes a folder, not bytes: the file's bytes are written to a temporary folder of the executor under the
file's own name (rows and rejects name it), and read from there.

One pass yields rows and rejects together, tagged, in one DataFrame (`StagedFrames.everything`); `rows`, `rejects`
and `unplaced` select from it. Each is lazy: reading two of them reads the files twice, unless `everything` is
persisted first (Spark's cache matches the plans derived from it)."""

from __future__ import annotations

import glob
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from ..._errors import SourceError
from ...clean import Cleaned, clean_batch
from ...declare import Column, Source
from ...rejects import ERROR, REJECT_SCHEMA, SOURCE_FILE, SOURCE_ROW
from .tables import spark_type, spark_type_name

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

__all__ = ["Doubts", "Period", "ReadSource", "SourceReading", "StagedFrames", "read_staged", "source_errors"]

ReadSource = Callable[[Path, Source, Sequence[str], list[pa.Table]], Iterable[pa.RecordBatch]]
"""`extract.read_source`: the raw rows of a folder's files of a source, adding the rows it cannot split to the list."""
Doubts = Callable[[pa.RecordBatch, pa.RecordBatch], list[pa.Table]]
"""Warnings for loadable rows (cleaned, and as read) that fail the table's checks."""

KIND, ROW, REJECT = "kind", "row", "reject"
ROWS, REJECTS, UNPLACED, LATEST = "rows", "rejects", "unplaced", "latest"

_ARROW = {
    "int": pa.int32(),
    "bigint": pa.int64(),
    "smallint": pa.int16(),
    "boolean": pa.bool_(),
    "timestamp_ntz": pa.timestamp("us"),
    "date": pa.date32(),
    "double": pa.float64(),
    "string": pa.string(),
}
"""The Arrow type Spark exchanges for each Spark type callmart uses (a time of day is `string`: HH:MM:SS)."""

_SOURCE_ERROR = re.compile(r"\b(?:callmart\._errors\.)?SourceError: (.+)")
"""The last line of an executor's traceback for an unreadable extract."""


@dataclass(frozen=True)
class Period:
    """The rows a step takes: those whose `column` is in [start, end)."""

    column: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class SourceReading:
    """What executors need to read and clean one source; it travels to them, so it holds declarations and
    importable functions only.

    `fields`: the source fields read; `columns`: the declared columns cleaned from them (a staging table's, in its
    order); `period`: set for a step that loads one period, whose bad rows with no readable time are unplaced."""

    source: Source
    fields: tuple[str, ...]
    columns: tuple[Column, ...]
    read: ReadSource
    doubts: Doubts | None = None
    period: Period | None = None


@dataclass(frozen=True)
class StagedFrames:
    """A source's cleaned rows, typed as the staging table has them; the rejects and doubts of its step; the bad
    rows no period can claim (when reading for a period); when reading for a period, a row of the latest time of
    each batch read, whatever its period (the extract's reach: coverage.py); and `everything`, the one tagged pass
    they select from (persisted, the files are read once for all of them)."""

    everything: DataFrame
    rows: DataFrame
    rejects: DataFrame
    unplaced: DataFrame
    latest: DataFrame

    def latest_time(self, column: str) -> datetime | None:
        """The latest time of `column` among every row read, in the period or not."""
        from pyspark.sql.functions import max as max_

        found = self.latest.select(max_(column)).first()
        value = found[0] if found is not None else None
        return value if isinstance(value, datetime) else None


def read_staged(
    spark: SparkSession, files: Sequence[Path | str], reading: SourceReading, staging: sa.Table
) -> StagedFrames:
    """The source's files read and cleaned on the executors, a file per task where the files allow; `staging`
    gives the types of the rows' columns. Nothing runs until a frame is read."""
    from pyspark.sql import functions as F

    skipped = [str(f) for f in files if _skipped_by_spark(PurePosixPath(str(f)).name)]
    if skipped:
        raise SourceError(f"{skipped[0]}: Spark reads no file whose name starts with _ or . (rename it)")
    row_schema, reject_schema = _row_schema(reading, staging), _reject_schema()
    contents = spark.read.format("binaryFile").load([_literal_path(f) for f in files]).select("path", "content")
    map_files = partial(_map_files, reading, _arrow_struct(row_schema), _arrow_struct(reject_schema))
    everything = contents.mapInArrow(map_files, _tagged_schema(row_schema, reject_schema))

    def tagged_as(kind: str, part: str) -> DataFrame:
        return everything.where(F.col(KIND) == F.lit(kind)).select(f"{part}.*")

    return StagedFrames(
        everything,
        tagged_as(ROWS, ROW),
        tagged_as(REJECTS, REJECT),
        tagged_as(UNPLACED, REJECT),
        tagged_as(LATEST, ROW),
    )


@contextmanager
def source_errors() -> Iterator[None]:
    """Raise an extract that an executor could not read as the SourceError the driver would have raised."""
    try:
        yield
    except Exception as error:
        # Spark reports an executor's exception by its traceback's text, classic and Connect alike.
        found = _SOURCE_ERROR.findall(str(error))
        if not found:
            raise
        raise SourceError(found[-1].strip()) from None


def _row_schema(reading: SourceReading, staging: sa.Table) -> StructType:
    """The cleaned rows' columns as staging has them: declared columns, then source file and row."""
    from pyspark.sql.types import StructField, StructType

    names = [*(c.name for c in reading.columns), SOURCE_FILE, SOURCE_ROW]
    return StructType([StructField(n, spark_type(spark_type_name(staging.c[n].type))) for n in names])


def _reject_schema() -> StructType:
    """The rejects' columns, as rejects.make builds them."""
    from pyspark.sql.types import StructField, StructType

    return StructType([StructField(f.name, spark_type(_spark_name(f.type))) for f in REJECT_SCHEMA])


def _tagged_schema(row_schema: StructType, reject_schema: StructType) -> StructType:
    """What the executors yield: each part's kind, and its columns in the struct of that kind (the other null)."""
    from pyspark.sql.types import StringType, StructField, StructType

    kind = StructField(KIND, StringType(), False)
    return StructType([kind, StructField(ROW, row_schema), StructField(REJECT, reject_schema)])


def _spark_name(type_: pa.DataType) -> str:
    return next(name for name, arrow in _ARROW.items() if arrow == type_)


def _arrow_struct(schema: StructType) -> pa.StructType:
    return pa.struct([pa.field(f.name, _ARROW[f.dataType.simpleString()]) for f in schema.fields])


def _skipped_by_spark(name: str) -> bool:
    """Whether Spark's file listing leaves the file out, even when named: it takes such names for its own."""
    hidden = (name.startswith("_") and "=" not in name) or name.startswith(".") or name.endswith("._COPYING_")
    return hidden and not name.startswith(("_common_metadata", "_metadata"))


def _literal_path(path: Path | str) -> str:
    """A path Spark reads as it is: it takes the characters of a glob as one (Hadoop's globs escape by backslash)."""
    return re.sub(r"([\\{}\[\]*?])", r"\\\1", str(path))


def _map_files(
    reading: SourceReading, row_type: pa.StructType, reject_type: pa.StructType, batches: Iterable[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """On an executor: each file of the batches (path, content) staged, as tagged batches."""
    for batch in batches:
        for path, content in zip(batch.column("path"), batch.column("content"), strict=True):
            for kind, part in _staged_file(reading, _file_name(path.as_py()), content.as_buffer()):
                yield _tagged(kind, part, row_type, reject_type)


def _file_name(path: str) -> str:
    """The file's name, as the reader's rows and rejects name it."""
    return PurePosixPath(path).name


def _staged_file(reading: SourceReading, name: str, content: pa.Buffer) -> Iterator[tuple[str, pa.RecordBatch]]:
    """One file's bytes (as Arrow holds them: not copied) read from a temporary folder under its own name, then
    staged."""
    with tempfile.TemporaryDirectory(prefix="callmart-") as folder:
        (Path(folder) / name).write_bytes(content)
        yield from _staged(reading, Path(folder), replace(reading.source, pattern=glob.escape(name)))


def _staged(reading: SourceReading, folder: Path, source: Source) -> Iterator[tuple[str, pa.RecordBatch]]:
    """What staging makes of a source's rows (stage.Staging): the loadable rows of the step, the rejects and
    doubts of its rows, and the bad rows it cannot place; then the rows the reader could not split."""
    problems: list[pa.Table] = []
    for raw in reading.read(folder, source, list(reading.fields), problems):
        cleaned = clean_batch(raw, reading.columns)
        if reading.period is not None:
            yield from _parts(LATEST, _latest_row(cleaned.rows, reading.period.column))
        scope = _scope(cleaned.rows, reading.period)
        in_scope = pc.fill_null(scope, False)
        yield from _parts(REJECTS, _rejects_of(cleaned, in_scope))
        yield from _parts(UNPLACED, _rejects_of(cleaned, pc.and_(pc.is_null(scope), cleaned.bad)))
        loadable = pc.and_not(in_scope, cleaned.bad)
        rows = cleaned.rows.filter(loadable)
        for doubt in reading.doubts(rows, raw.filter(loadable)) if reading.doubts is not None else []:
            yield from _parts(REJECTS, doubt)
        yield from _parts(ROWS, rows)
    for problem in problems:
        # A period's step cannot place a row that could not be split: its errors belong to no period.
        errors_only = pc.all(pc.equal(problem["severity"], ERROR)).as_py()
        yield from _parts(UNPLACED if reading.period is not None and errors_only else REJECTS, problem)


def _scope(rows: pa.RecordBatch, period: Period | None) -> pa.Array:
    """Which cleaned rows the step takes; null where a bad field hides it."""
    if period is None:
        return pa.repeat(pa.scalar(True), rows.num_rows)
    time = rows.column(period.column)
    lower, upper = pa.scalar(period.start, time.type), pa.scalar(period.end, time.type)
    return pc.and_(pc.greater_equal(time, lower), pc.less(time, upper))


def _latest_row(rows: pa.RecordBatch, column: str) -> pa.RecordBatch:
    """The first row of the batch's latest time (none when no row has a time): a batch's reach, in one row."""
    time = rows.column(column)
    latest = pc.max(time)
    if not latest.is_valid:
        return rows.slice(0, 0)
    return rows.filter(pc.fill_null(pc.equal(time, latest), False)).slice(0, 1)


def _rejects_of(cleaned: Cleaned, mask: pa.Array) -> pa.Table:
    """The rejects of the rows that `mask` selects."""
    found = cleaned.rejects
    if not found.num_rows or not pc.any(mask).as_py():
        return REJECT_SCHEMA.empty_table()
    chosen = pc.filter(cleaned.rows.column(SOURCE_ROW), mask)
    return found.filter(pc.is_in(found[SOURCE_ROW], value_set=chosen))


def _parts(kind: str, part: pa.Table | pa.RecordBatch) -> Iterator[tuple[str, pa.RecordBatch]]:
    """A non-empty part as record batches of its kind."""
    batches = part.to_batches() if isinstance(part, pa.Table) else [part]
    yield from ((kind, batch) for batch in batches if batch.num_rows)


def _tagged(kind: str, part: pa.RecordBatch, row_type: pa.StructType, reject_type: pa.StructType) -> pa.RecordBatch:
    """A part as a batch of the tagged schema: its kind, and its columns in the struct of that kind."""
    of_rows = kind in (ROWS, LATEST)
    typed = _struct(part, row_type if of_rows else reject_type)
    row = typed if of_rows else pa.nulls(part.num_rows, row_type)
    reject = pa.nulls(part.num_rows, reject_type) if of_rows else typed
    kinds = pa.repeat(pa.scalar(kind, pa.string()), part.num_rows)
    return pa.RecordBatch.from_arrays([kinds, row, reject], names=[KIND, ROW, REJECT])


def _struct(part: pa.RecordBatch, type_: pa.StructType) -> pa.StructArray:
    """The part's columns cast to the types Spark expects (a time of day as its text, times to microseconds)."""
    fields = [type_.field(i) for i in range(type_.num_fields)]
    arrays = [pc.cast(part.column(f.name), f.type) for f in fields]
    return pa.StructArray.from_arrays(arrays, fields=fields)
