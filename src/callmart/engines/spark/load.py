"""A whole run on Spark: the dimensions merged in the mart's order, then the queued periods claimed one by one and
loaded, each step recorded in the run log, as api.Callmart.run does on SQL engines.

A step is a chain of idempotent Delta commits, the period's status last (docs/spark.md, "How the loads plug in"):
inferred members, the period's rows (one replaceWhere), the conversion aggregates and the lift of its days, the
step's run log lines (with those of the run's dimension steps, written once), then `done`. A crash before the
status leaves the period running; a later run frees it and writes the same rows again.

Engine code sits below the schema, staging and extract modules: the caller passes the tables (by name), callmart's
file listing and reader (extract.find_files, read_source) and its doubts (stage.doubts); and, for a run, what the
operations around it decide (RunOptions): when to stop, whether a dimension's sources changed, whether the
extract covers a period, the step of rows no period could place.

At its end the run writes the aggregates of the days the changed logins reach that no period rewrote
(aggregates.py), and the lift likewise (lift.py), every day's brought to the customers the mart then holds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as time_of_day
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa
import sqlalchemy as sa

from ... import rejects
from ..._errors import CallmartError
from ...aggregates import AGG_DAILY, conversion_fact, conversion_metric, settings_of
from ...declare import IS_CURRENT, Check, Column, Dimension, Fact, FirstEventWithin, Mart, Reference, Source
from ...lift import AGG_LIFT_DAILY
from ...progress import Reporter, SilentReporter, StepResult
from ...status import Status
from ...stopping import RunStopped, StopRequest, reason_of
from . import Spark
from .aggregates import AggregateDays, refresh_aggregates
from .chains import side_by_side
from .control import (
    Claimed,
    claim_next,
    free_abandoned,
    mark,
    requeue_running,
    wake_waiting,
    with_retries,
    write_fixed_rows,
)
from .dimensions import lookup_columns, merge_dimension
from .facts import duplicate_rows, inferred_members, insert_inferred, period_rows, with_key
from .lift import rebase_lift, refresh_lift
from .metrics import changed_since, event_span, refresh_metric, table_version
from .reading import Period, ReadSource, SourceReading, StagedFrames, read_staged, source_errors
from .runs import abandon_dead_runs, finish_run, record_steps, run_alive, start_run
from .sources import merged_from, remember
from .sql import qualified
from .tables import fact_day_column
from .url import SparkUrl

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["CheckDoubts", "FindFiles", "RunOptions", "SparkLoad", "SparkRun"]

log = logging.getLogger(__name__)

PROCESSES, RUNS, RUN_STEPS, REJECTS, VERSION_TABLE, SOURCES = (
    "dm_processes",
    "dm_runs",
    "dm_run_steps",
    "dm_rejects",
    "dm_schema",
    "dm_sources",
)
"""The control table, the run log's tables, the version table and the dimensions' sources, as schema.py names
them."""

Uncovered = Callable[[Fact, datetime, datetime, datetime | None], StepResult | None]
"""Whether the extract covers a period of a fact, given the latest time it holds: None when it does, else the
period's step, waiting or (waited too long) failed, its message in `note` or `error`."""

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


@dataclass
class RunOptions:
    """What the operations around a run decide (api.Callmart.run): a stop request checked between steps, where
    progress goes, whether an unchanged dimension is merged anyway, the digest of a dimension's sources
    (fingerprint.fingerprint; None merges every time), the coverage of a period, the undated rows' step."""

    stop: StopRequest = field(default_factory=StopRequest)
    reporter: Reporter = field(default_factory=SilentReporter)
    reload_dimensions: bool = False
    fingerprint: Callable[[Dimension], str] | None = None
    uncovered: Uncovered | None = None
    undated: Callable[[str, list[StepResult]], StepResult | None] | None = None


@dataclass
class SparkRun:
    """A run's id, when its dimension changes took effect, what it found left by dead runs, and its steps."""

    id_run: int
    business_date: datetime
    abandoned: int = 0
    freed: int = 0
    steps: list[StepResult] = field(default_factory=list)
    events: list[tuple[FirstEventWithin, datetime, datetime]] = field(default_factory=list)
    """The span of the events that changed, by metric: the days whose aggregates they touch."""
    settled: set[date] = field(default_factory=set)
    """The days whose aggregates a period's load wrote."""
    lift_settled: set[date] = field(default_factory=set)
    """The days whose lift a period's load wrote."""
    unrecorded: list[tuple[int, StepResult]] = field(default_factory=list)
    """Steps not yet written to the run log: a dimension's wait for the next period's, or the run's end."""
    last_sources: dict[str, str] = field(default_factory=dict)
    """The digest of the sources each dimension was last merged from, read once when the run starts its
    dimensions, and updated by their merges."""
    unremembered: dict[str, str] = field(default_factory=dict)
    """Digests of the dimensions merged and not yet recorded in dm_sources: written once, after the last."""

    @property
    def ok(self) -> bool:
        """Whether no step failed."""
        return all(step.status is not Status.FAILED for step in self.steps)


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

    def run(
        self, business_date: datetime | None = None, now: datetime | None = None, options: RunOptions | None = None
    ) -> SparkRun:
        """Merge every dimension, then load every pending period oldest first; a failed period does not stop the
        rest, a failed dimension stops the run. New versions of members are valid from `business_date` (by
        default the end of the latest queued period, else the run's day); `now`: the run's start.

        A stop asked for (options.stop), or KeyboardInterrupt, ends the run between steps: the periods it holds are
        queued again, it is recorded as interrupted, and the exception goes on."""
        spark, options = self.spark, options or RunOptions()
        started = now or datetime.now().replace(microsecond=0)
        runs_table, runs = self._named(RUNS)
        done = SparkRun(start_run(spark, runs_table, runs, started, self.extracts.folder), started)
        try:
            # Before the heartbeat's thread starts: its commits would conflict with these reads' writes.
            done.abandoned = abandon_dead_runs(spark, runs, done.id_run, started)
            done.freed = free_abandoned(spark, *self._named(PROCESSES), runs, started)
            wake_waiting(spark, *self._named(PROCESSES))
            with run_alive(spark, runs, done.id_run, just_started=True):
                done.business_date = business_date or self.business_date(started)
                self._steps(done, started, options)
                self._flush(done)
        except (RunStopped, KeyboardInterrupt) as stopped:
            reason = reason_of(stopped)
            message = f"queued again: run {done.id_run} was {reason}"
            self._flush_after_failure(done)
            requeue_running(spark, *self._named(PROCESSES), done.id_run, message)
            finish_run(spark, runs_table, runs, done.id_run, ok=False, error=reason, stopped=True)
            raise
        except BaseException as error:
            self._flush_after_failure(done)
            finish_run(spark, runs_table, runs, done.id_run, ok=False, error=describe(error))
            raise
        finish_run(spark, runs_table, runs, done.id_run, ok=done.ok)
        return done

    def _steps(self, done: SparkRun, started: datetime, options: RunOptions) -> None:
        steps = done.steps
        if options.fingerprint is not None and not options.reload_dimensions:
            done.last_sources = merged_from(self.spark, self.name(SOURCES))
        for dim in self.mart.dimensions:
            options.stop.check()
            steps.append(self._dimension_step(dim, done, len(steps) + 1, options))
        self._remember(done)
        while True:
            options.stop.check()
            claimed = claim_next(self.spark, *self._named(PROCESSES), done.id_run, started)
            if claimed is None:
                break
            steps.append(self._period_step(claimed, done, len(steps) + 1, options))
        undated = options.undated
        for fact in self.mart.facts:
            loaded = [s for s in steps if s.period is not None and s.table == fact.name]
            extra = undated(fact.name, loaded) if undated is not None else None
            if extra is not None:
                done.unrecorded.append((len(steps) + 1, extra))
                steps.append(extra)
        options.stop.check()
        self._aggregates(done)

    def business_date(self, started: datetime) -> datetime:
        """When the run's dimension changes take effect, as control.business_date says: the end of the latest
        queued period, else the run's day."""
        from pyspark.sql.functions import max as max_

        latest = self.spark.table(self.name(PROCESSES)).select(max_("end_date")).first()
        found = latest[0] if latest is not None else None
        return found if isinstance(found, datetime) else datetime.combine(started.date(), time_of_day())

    # --- a dimension -----------------------------------------------------------------------------------------------

    def _dimension_step(self, dim: Dimension, done: SparkRun, step: int, options: RunOptions) -> StepResult:
        """Stage the extract, make the members its references lack, fill their keys, merge, refresh the metrics
        whose events it holds; record the step. A dimension merged last from the same sources is skipped."""
        options.reporter.step_started(dim.name)
        began = time.perf_counter()
        # Hashed before the merge: a file replaced during it then differs from the digest kept, and loads next time.
        digest = options.fingerprint(dim) if options.fingerprint is not None else None
        if digest is not None and not options.reload_dimensions and done.last_sources.get(dim.name) == digest:
            result = StepResult(table=dim.name, note="source unchanged since its last merge")
        else:
            result = self._merge(dim, done)
        result.seconds = time.perf_counter() - began
        # Written with the next period's step (or at the run's end): one commit of the run log, not one a dimension;
        # and the sources after the last dimension, one commit for all.
        done.unrecorded.append((step, result))
        if digest is not None and result.note is None:
            done.unremembered[dim.name] = digest
        options.reporter.step_finished(result)
        return result

    def _merge(self, dim: Dimension, done: SparkRun) -> StepResult:
        """The dimension's extract merged, and the metrics of the events it changed refreshed; the step's counts."""
        frames = self._read(dim, None)
        name = self.name(dim.name)
        events_of = [(f, m) for f in self.mart.facts for m in f.metrics if m.events == dim.name]
        version = table_version(self.spark, name) if events_of else None
        with persisted(frames.everything), source_errors():
            staged_rejects = arrow_rejects(frames.rejects)
            inferred = sum(self._infer(ref, frames.rows) for ref in dim.references)
            keyed = self._with_reference_keys(dim, frames.rows)
            staged = frames.rows.count()
            merged = merge_dimension(self.spark, dim, name, keyed, done.business_date, lookup_columns(self.mart, dim))
            merge_rejects = arrow_rejects(merged.rejects)
        rejected = rejects.rows_rejected(staged_rejects)
        return StepResult(
            table=dim.name,
            read=staged + rejected,
            loaded=staged - merged.superseded,
            rejected=rejected + merged.superseded,
            warned=rejects.warnings(staged_rejects) + merged.warned,
            inserted=merged.inserted,
            updated=merged.updated,
            inferred=inferred,
            completed=merged.completed,
            metric_updated=self._refresh_metrics(dim, events_of, version, done) if version is not None else 0,
            rejects=rejects.concat([staged_rejects, merge_rejects]),
        )

    def _refresh_metrics(
        self, dim: Dimension, metrics: list[tuple[Fact, FirstEventWithin]], version: int, done: SparkRun
    ) -> int:
        """The metrics whose events `dim` holds, refreshed for the events its merge changed since `version`; the
        span of those events kept in `done` for the aggregates."""
        name = self.name(dim.name)
        if table_version(self.spark, name) == version:
            return 0
        changed = changed_since(self.spark, name, version, list(self.tables[dim.name].columns.keys()))
        updated = 0
        for fact, metric in metrics:
            found = event_span(changed, metric.event_time)
            if found is None:
                continue
            done.events.append((metric, *found))
            updated += refresh_metric(self.spark, self.mart, fact, self.url, self._fact_days(fact), metric, *found)
        return updated

    def _aggregates(
        self, done: SparkRun, fact: Fact | None = None, period: tuple[datetime, datetime] | None = None
    ) -> None:
        """The aggregates and the lift of the days of a period of `fact` just loaded, written before its status; or,
        at the run's end, of the days the changed events touched that no period of the run wrote since (the
        dimensions merge first), and the lift of every day brought to the customers the mart now holds. A mart
        declared without aggregate tables has none."""
        if AGG_DAILY not in self.tables or (fact is not None and fact != conversion_fact(self.mart)):
            return
        settings = settings_of(self.mart)
        touched = AggregateDays(settings.window)
        if period is not None:
            touched.add_period(*period)
        else:
            for metric, first, last in done.events:
                if metric == conversion_metric(self.mart):
                    touched.add_events(first, last)
            touched.days -= done.settled
            touched.lift_days -= done.lift_settled
        at = datetime.now().replace(microsecond=0)
        chains: list[Callable[[], None]] = []
        if touched.days:

            def aggregates() -> None:
                written = refresh_aggregates(self.spark, self.mart, self.url, self.tables, settings, touched, at)
                if period is not None:
                    done.settled.update(written)

            chains.append(aggregates)
        if AGG_LIFT_DAILY in self.tables:

            def lift() -> None:
                # Every period's load writes the lift of the days its calls count in, after the run's events
                # landed: a later period's load writes again the days it shares with an earlier one.
                if touched.lift_days:
                    days = touched.lift_days
                    lifted = refresh_lift(self.spark, self.mart, self.url, self.tables, settings, days, at)
                    if period is not None:
                        done.lift_settled.update(lifted)
                if period is None:
                    # The customers the run added (inferred members too) count among every day's not called.
                    rebase_lift(self.spark, self.mart, self.url, self.tables, settings, at)

            chains.append(lift)
        side_by_side(chains)

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

    def _period_step(self, claimed: Claimed, done: SparkRun, step: int, options: RunOptions) -> StepResult:
        """Load a claimed period and mark it done, its status the last commit; leave it waiting when the extract
        does not cover it yet; or mark it failed."""
        id_process, fact_name, start, end = claimed
        options.reporter.step_started(f"{fact_name} {start:%Y-%m-%d}")
        began = time.perf_counter()
        table, name = self._named(PROCESSES)
        try:
            fact = self.mart.fact(fact_name)
            result = self._load_period(fact, start, end, options)
            status = result.status
            if status is Status.DONE:
                self._aggregates(done, fact, (start, end))
            message = result.error or result.note if status is not Status.DONE else None
            finished = datetime.now() if status is not Status.WAITING else None
            result.seconds = time.perf_counter() - began
            self._record(done, step, result)
            counts = {"rows_loaded": result.inserted} if status is Status.DONE else {"error_message": message}
            mark(self.spark, table, name, id_process, done.id_run, status, finished_at=finished, **counts)
        except Exception as error:  # noqa: BLE001 - any failure fails the period, and the run goes on
            if options.stop.requested:
                # The failure is the stop cutting the load short: the period is queued again, not failed.
                raise RunStopped(options.stop.reason, options.stop.signal_number) from error
            message = describe(error)
            result = StepResult(table=fact_name, period=(start, end), status=Status.FAILED, error=message)
            result.seconds = time.perf_counter() - began
            finished = datetime.now()
            mark(
                self.spark,
                table,
                name,
                id_process,
                done.id_run,
                Status.FAILED,
                error_message=message,
                finished_at=finished,
            )
            self._record(done, step, result)
        options.reporter.step_finished(result)
        return result

    def _load_period(self, fact: Fact, start: datetime, end: datetime, options: RunOptions) -> StepResult:
        """Inferred members, then the period's rows in place of the old ones; the step's counts. A period the
        extract does not cover gives the step options.uncovered says, and writes nothing."""
        spark, table = self.spark, self.tables[fact.name]
        frames = self._read(fact, Period(fact.time_column, start, end))
        with persisted(frames.everything), source_errors():
            if options.uncovered is not None:
                waiting = options.uncovered(fact, start, end, frames.latest_time(fact.time_column))
                if waiting is not None:
                    return waiting
            staged_rejects = arrow_rejects(frames.rejects)
            duplicates = arrow_rejects(duplicate_rows(frames.rows, fact, start, end))
            unplaced = arrow_rejects(frames.unplaced)
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
            unplaced=unplaced,
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

    def _fact_days(self, fact: Fact) -> tuple[str, str]:
        """A fact table's qualified name and its day column."""
        return self.name(fact.name), fact_day_column(self.tables[fact.name])

    def _record(self, done: SparkRun, step: int, result: StepResult) -> None:
        """Write a step to the run log, with those waiting for a write."""
        done.unrecorded.append((step, result))
        self._flush(done)

    def _flush(self, done: SparkRun) -> None:
        """Write the steps waiting for a write to the run log, in one commit to each of its tables."""
        record_steps(self.spark, self._named(RUN_STEPS), self._named(REJECTS), done.id_run, done.unrecorded)
        done.unrecorded.clear()

    def _remember(self, done: SparkRun) -> None:
        """Record the sources of the dimensions merged since the last record, in one commit."""
        remember(self.spark, self.tables[SOURCES], self.name(SOURCES), done.unremembered, done.id_run)
        done.last_sources.update(done.unremembered)
        done.unremembered.clear()

    def _flush_after_failure(self, done: SparkRun) -> None:
        """Write the steps waiting for a write, and the sources of the dimensions merged, if the failure that ends
        the run leaves it possible: the run's outcome is recorded either way."""
        for record, what in ((self._remember, "the sources of its dimensions"), (self._flush, "its last steps")):
            try:
                record(done)
            except Exception:  # noqa: BLE001 - the run's own error is the one to raise
                log.warning("run %d could not record %s", done.id_run, what, exc_info=True)


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
