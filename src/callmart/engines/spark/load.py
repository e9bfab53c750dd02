"""A whole run on Spark: the dimensions merged in the mart's order, then the queued periods claimed one by one and
loaded, each step recorded in the run log, as api.Callmart.run does on SQL engines.

A step is a chain of idempotent Delta commits, the period's status last (docs/spark.md, "How the loads plug in"):
inferred members, the period's rows (one replaceWhere), the step's run log lines, then `done`. A crash before the
status leaves the period running; a later run frees it and writes the same rows again.

Engine code sits below the schema, staging and extract modules: the caller passes the tables (by name), callmart's
file listing and reader (extract.find_files, read_source) and its doubts (stage.doubts).

Not here yet: the aggregates and lift of the periods loaded, the metric refresh after a dimension of events, the
fingerprint that skips an unchanged dimension, the coverage check that leaves a period waiting, and the step of
rows no period could place (runlog.undated)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from datetime import time as time_of_day
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa
import sqlalchemy as sa

from ... import rejects
from ..._errors import CallmartError
from ...declare import IS_CURRENT, Check, Column, Dimension, Fact, Mart, Reference, Source
from ...progress import StepResult
from ...status import Status
from . import Spark
from .control import (
    Claimed,
    claim_next,
    free_abandoned,
    mark,
    wake_waiting,
    with_retries,
    write_fixed_rows,
)
from .dimensions import lookup_columns, merge_dimension
from .facts import duplicate_rows, inferred_members, insert_inferred, period_rows, with_key
from .reading import Period, ReadSource, SourceReading, StagedFrames, read_staged, source_errors
from .runs import abandon_dead_runs, finish_run, record_step, run_alive, start_run
from .sql import qualified
from .url import SparkUrl

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["CheckDoubts", "FindFiles", "SparkLoad"]

PROCESSES, RUNS, RUN_STEPS, REJECTS, VERSION_TABLE = (
    "dm_processes",
    "dm_runs",
    "dm_run_steps",
    "dm_rejects",
    "dm_schema",
)
"""The control table, the run log's tables and the version table, as schema.py names them."""

FindFiles = Callable[[Path, Source], list[Path]]
"""`extract.find_files`: a source's files in the folder, in name order; none is a SourceError."""


class CheckDoubts(Protocol):
    """`stage.doubts`: warnings for loadable rows (cleaned, and as read) that fail a table's checks."""

    def __call__(
        self, rows: pa.RecordBatch, raw: pa.RecordBatch, checks: Sequence[Check], sources: dict[str, str]
    ) -> list[pa.Table]: ...


_VALUE, _FALLBACK = "callmart_value", "callmart_fallback"
"""Working columns of the reference keys."""


@dataclass(frozen=True)
class Extracts:
    """Where a run reads its sources, and callmart's functions to list, read and doubt them."""

    folder: Path
    find_files: FindFiles
    read: ReadSource
    doubts: CheckDoubts


class SparkLoad:
    """The mart on Delta tables of `url`'s database, loaded from the extracts of `source_dir`."""

    def __init__(
        self,
        spark: SparkSession,
        url: SparkUrl,
        tables: Mapping[str, sa.Table],
        mart: Mart,
        source_dir: Path,
        find_files: FindFiles,
        read_source: ReadSource,
        doubts: CheckDoubts,
    ) -> None:
        self.spark, self.url, self.tables, self.mart = spark, url, tables, mart
        self.extracts = Extracts(source_dir, find_files, read_source, doubts)

    def name(self, table: str) -> str:
        """A table's qualified name in the mart's database."""
        return qualified(self.url.catalog, self.url.database, table)

    def _named(self, table: str) -> tuple[sa.Table, str]:
        return self.tables[table], self.name(table)

    # --- init ------------------------------------------------------------------------------------------------------

    def init(self, version: int) -> None:
        """Create the mart's tables (but the staging ones: Spark stages in DataFrames) and its fixed rows, the
        version table's `version` among them; running it again writes nothing."""
        loaded: tuple[Dimension | Fact, ...] = (*self.mart.dimensions, *self.mart.facts)
        staging = {t.staging for t in loaded}
        Spark().create_tables(self.spark, [t for n, t in self.tables.items() if n not in staging], self.url)
        dimensions = [(dim, self.tables[dim.name]) for dim in self.mart.dimensions]
        write_fixed_rows(
            self.spark, dimensions, self.tables[VERSION_TABLE], version, self.url.database, self.url.catalog
        )

    # --- the run ---------------------------------------------------------------------------------------------------

    def run(self, business_date: datetime | None = None, now: datetime | None = None) -> list[StepResult]:
        """Merge every dimension, then load every pending period oldest first; a failed period does not stop the
        rest, a failed dimension stops the run. New versions of members are valid from `business_date` (by
        default the end of the latest queued period, else the run's day); `now`: the run's start."""
        spark = self.spark
        started = now or datetime.now().replace(microsecond=0)
        runs_table, runs = self._named(RUNS)
        id_run = start_run(spark, runs_table, runs, started, self.extracts.folder)
        steps: list[StepResult] = []
        with run_alive(spark, runs, id_run):
            try:
                abandon_dead_runs(spark, runs, id_run, started)
                free_abandoned(spark, *self._named(PROCESSES), runs, started)
                wake_waiting(spark, *self._named(PROCESSES))
                effective = business_date or self.business_date(started)
                for dim in self.mart.dimensions:
                    steps.append(self._dimension_step(dim, effective, id_run, len(steps) + 1))
                while (claimed := claim_next(spark, *self._named(PROCESSES), id_run, started)) is not None:
                    steps.append(self._period_step(claimed, id_run, len(steps) + 1))
            except BaseException as error:
                finish_run(spark, runs_table, runs, id_run, ok=False, error=describe(error))
                raise
            ok = all(step.status is not Status.FAILED for step in steps)
            finish_run(spark, runs_table, runs, id_run, ok=ok)
        return steps

    def business_date(self, started: datetime) -> datetime:
        """When the run's dimension changes take effect, as control.business_date says: the end of the latest
        queued period, else the run's day."""
        from pyspark.sql.functions import max as max_

        latest = self.spark.table(self.name(PROCESSES)).select(max_("end_date")).first()
        found = latest[0] if latest is not None else None
        return found if isinstance(found, datetime) else datetime.combine(started.date(), time_of_day())

    # --- a dimension -----------------------------------------------------------------------------------------------

    def _dimension_step(self, dim: Dimension, business_date: datetime, id_run: int, step: int) -> StepResult:
        """Stage the extract, make the members its references lack, fill their keys, merge; record the step."""
        began = time.perf_counter()
        frames = self._read(dim, None)
        with persisted(frames.everything), source_errors():
            staged_rejects = arrow_rejects(frames.rejects)
            inferred = sum(self._infer(ref, frames.rows) for ref in dim.references)
            keyed = self._with_reference_keys(dim, frames.rows)
            staged = frames.rows.count()
            merged = merge_dimension(
                self.spark, dim, self.name(dim.name), keyed, business_date, lookup_columns(self.mart, dim)
            )
            merge_rejects = arrow_rejects(merged.rejects)
        rejected = rejects.rows_rejected(staged_rejects)
        result = StepResult(
            table=dim.name,
            read=staged + rejected,
            loaded=staged - merged.superseded,
            rejected=rejected + merged.superseded,
            warned=rejects.warnings(staged_rejects) + merged.warned,
            inserted=merged.inserted,
            updated=merged.updated,
            inferred=inferred,
            completed=merged.completed,
            rejects=rejects.concat([staged_rejects, merge_rejects]),
        )
        result.seconds = time.perf_counter() - began
        self._record(id_run, step, result)
        return result

    def _infer(self, reference: Reference, rows: DataFrame) -> int:
        """Members of the referenced dimension for the values of `rows` it lacks; how many were made."""
        target = self.mart.dimension(reference.dimension)
        insert = partial(insert_inferred, self.spark, target, reference, self.name(target.name), rows)
        return with_retries(insert, f"inferred members of {target.name}")

    def _with_reference_keys(self, dim: Dimension, rows: DataFrame) -> DataFrame:
        """The staged rows with each reference's key, as keys.with_keys and resolve_unknown give them: the
        member's (the version valid at the row's time where it keeps history), the default member's for no
        value; a value none of whose versions was valid then takes its current member."""
        from pyspark.sql import functions as F

        for reference in dim.references:
            rows = with_key(self.spark, self.mart, self.url, rows, reference)
            target = self.mart.dimension(reference.dimension)
            if not (target.keeps_history and reference.as_of is not None):
                continue
            current = (
                self.spark.table(self.name(target.name))
                .where(F.col(IS_CURRENT) & F.col(reference.by).isNotNull())
                .groupBy(F.col(reference.by).alias(_VALUE))
                .agg(F.min(target.key).alias(_FALLBACK))
            )
            key = F.coalesce(F.col(reference.column), F.col(_FALLBACK))
            rows = (
                rows.join(current, F.col(reference.value.name) == F.col(_VALUE), "left")
                .withColumn(reference.column, key)
                .drop(_VALUE, _FALLBACK)
            )
        return rows

    # --- a period --------------------------------------------------------------------------------------------------

    def _period_step(self, claimed: Claimed, id_run: int, step: int) -> StepResult:
        """Load a claimed period and mark it done, its status the last commit; or mark it failed."""
        id_process, fact_name, start, end = claimed
        began = time.perf_counter()
        table, name = self._named(PROCESSES)
        try:
            fact = self.mart.fact(fact_name)
            result = self._load_period(fact, start, end)
            result.seconds = time.perf_counter() - began
            self._record(id_run, step, result)
            finished = datetime.now()
            mark(
                self.spark,
                table,
                name,
                id_process,
                id_run,
                Status.DONE,
                rows_loaded=result.inserted,
                finished_at=finished,
            )
        except Exception as error:  # noqa: BLE001 - any failure fails the period, and the run goes on
            message = describe(error)
            result = StepResult(table=fact_name, period=(start, end), status=Status.FAILED, error=message)
            result.seconds = time.perf_counter() - began
            finished = datetime.now()
            mark(
                self.spark, table, name, id_process, id_run, Status.FAILED, error_message=message, finished_at=finished
            )
            self._record(id_run, step, result)
        return result

    def _load_period(self, fact: Fact, start: datetime, end: datetime) -> StepResult:
        """Inferred members, then the period's rows in place of the old ones; the step's counts."""
        spark, table = self.spark, self.tables[fact.name]
        frames = self._read(fact, Period(fact.time_column, start, end))
        with persisted(frames.everything), source_errors():
            staged_rejects = arrow_rejects(frames.rejects)
            duplicates = arrow_rejects(duplicate_rows(frames.rows, fact, start, end))
            made = inferred_members(spark, self.mart, fact, self.url, frames.rows, start, end)
            # One fact row per staged row (each key join finds one member): the count written, without a recount.
            staged = frames.rows.count()
            rows = period_rows(spark, self.mart, fact, table, self.url, frames.rows, start, end)
            Spark().replace_period(rows, table, self.url, start, end)
        found = rejects.concat([staged_rejects, duplicates])
        rejected = rejects.rows_rejected(staged_rejects)
        return StepResult(
            table=fact.name,
            period=(start, end),
            read=staged + rejected,
            loaded=staged,
            rejected=rejected,
            warned=rejects.warnings(found),
            inserted=staged,
            inferred=sum(made.values()),
            rejects=found,
        )

    # --- shared ----------------------------------------------------------------------------------------------------

    def _read(self, table: Dimension | Fact, period: Period | None) -> StagedFrames:
        """The source's staged frames, read and cleaned on the executors."""
        extracts = self.extracts
        columns = staged_columns(table)
        checks = table.checks if isinstance(table, Fact) else ()
        sources = {c.name: c.source for c in columns if c.source}
        fields = tuple(dict.fromkeys(c.source for c in columns if c.source))
        doubts = partial(extracts.doubts, checks=checks, sources=sources)
        reading = SourceReading(table.source, fields, columns, extracts.read, doubts, period)
        files = extracts.find_files(extracts.folder, table.source)
        return read_staged(self.spark, files, reading, self.tables[table.staging])

    def _record(self, id_run: int, step: int, result: StepResult) -> None:
        record_step(self.spark, self._named(RUN_STEPS), self._named(REJECTS), id_run, step, result)


def staged_columns(table: Dimension | Fact) -> tuple[Column, ...]:
    """The declared columns staged from the source, as stage.staged_columns lists them: own, then references'."""
    return (*table.columns, *(r.value for r in table.references))


def arrow_rejects(frame: DataFrame) -> pa.Table:
    """A step's rejects on the driver, as the run log records them (runs.record_step takes Arrow)."""
    return frame.toArrow().cast(rejects.REJECT_SCHEMA)


def describe(error: BaseException) -> str:
    """An error as the run log and control table keep it: its message, its first line only."""
    if isinstance(error, CallmartError):
        return str(error)
    return (f"{type(error).__name__}: {error}".splitlines() or [type(error).__name__])[0]


@contextmanager
def persisted(frame: DataFrame) -> Iterator[DataFrame]:
    """The frame kept by Spark within the block, so the frames selected from it read the files once."""
    frame.persist()
    try:
        yield frame
    finally:
        frame.unpersist()
