"""The library API: create the mart, queue periods, run a load, read the control table."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as time_of_day
from functools import partial
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from . import (
    analytics,
    backfill,
    control,
    coverage,
    dictionary,
    engines,
    extract,
    fingerprint,
    locking,
    runlog,
    stage,
)
from ._errors import CallmartError, ConfigError, DatabaseError, MartNotReady, PeriodNotCovered
from .config import create_engine, mask, parse_url, schema_setting, scrub, setting
from .declare import BEGINNING, Dimension, Fact, Mart
from .dimension import load_dimension
from .fact import PeriodLoad
from .keys import LookupCache
from .mart import MART
from .metric import refresh_after_events
from .progress import Reporter, SilentReporter, StepResult
from .report import ReportData, report_data, report_of_tables, tables_read
from .schema import SCHEMA_VERSION, Schema
from .settings import find_config, load_mart
from .status import Status
from .stopping import RunStopped, StopRequest, reason_of
from .streamed_aggregates import StreamedAggregates

__all__ = ["DEFAULT_MAX_WAIT", "Callmart", "RunSummary"]

DEFAULT_MAX_WAIT = timedelta(days=3)
"""How long after its end a period may wait for its extract before it fails."""


@dataclass
class RunSummary:
    """Every step of one run, in order."""

    started: datetime
    id_run: int = 0
    abandoned: int = 0
    freed: int = 0
    business_date: datetime = BEGINNING
    touched: analytics.Touched = field(default_factory=analytics.Touched)
    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0
    """The run's whole wall time: its steps, and what lies between and around them (claims, the final refresh)."""

    @property
    def failed(self) -> list[StepResult]:
        """Steps that did not load."""
        return [s for s in self.steps if s.status == Status.FAILED]

    @property
    def waiting(self) -> list[StepResult]:
        """Periods left waiting for their extracts (a late or missing export)."""
        return [s for s in self.steps if s.status == Status.WAITING]

    @property
    def loaded(self) -> list[StepResult]:
        """Periods loaded."""
        return [s for s in self.steps if s.period is not None and s.status == Status.DONE]

    @property
    def ok(self) -> bool:
        """Whether every step loaded."""
        return not self.failed


class Callmart:
    """One mart in one database, fed from one folder of extracts."""

    def __init__(
        self,
        database_url: str | None = None,
        source_dir: Path | str | None = None,
        reporter: Reporter | None = None,
        mart: Mart = MART,
        config: Path | str | None = None,
        schema: str | None = None,
    ) -> None:
        self.url, self._schema_name = schema_setting(parse_url(database_url), schema)
        if source_dir is not None and not str(source_dir).strip():
            raise ConfigError("the extracts folder is empty: name one, or unset CALLMART_SOURCE_DIR")
        source_dir = source_dir or setting("CALLMART_SOURCE_DIR")
        self._source_dir = Path(source_dir) if source_dir else None
        self.reporter: Reporter = reporter or SilentReporter()
        self._mart = load_mart(mart, find_config(config))
        self._schema: Schema | None = None
        self._stop = StopRequest()
        host = engines.for_url(self.url)
        # An engine that runs the mart's operations itself (Spark) gets them handed over; the others, SQL.
        self._own = (
            host.open_mart(
                self.url, self.schema.tables, self._mart, (extract.find_files, extract.read_source, stage.doubts)
            )
            if host.OWN_OPERATIONS
            else None
        )
        self._engine = None if self._own is not None else create_engine(self.url)

    @contextmanager
    def _own_errors(self) -> Iterator[None]:
        """Within the block, an error of an engine that runs the operations itself becomes a one-line error, as
        `_transaction` makes a database's."""
        try:
            yield
        except CallmartError:
            raise
        except Exception as error:
            raise DatabaseError(self._describe(error)) from error

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine of the mart's database (not for an engine that runs the operations itself)."""
        if self._engine is None:
            raise ConfigError(f"{self.where} is not reached through SQLAlchemy")
        return self._engine

    @property
    def schema(self) -> Schema:
        """The mart's tables, in the schema the settings name, else in the engine's own (on PostgreSQL
        `callmart`); a mart that an earlier callmart made in the connection's default schema stays there."""
        if self._schema is None:
            self._schema = Schema(self._mart, self._locate_schema())
            dictionary.annotate(self._schema)
        return self._schema

    def _locate_schema(self) -> str | None:
        host = engines.for_url(self.url)
        if host.OWN_OPERATIONS:
            # Its URL names the database (Spark's ?database=); the tables' own names are all it needs.
            return None
        dedicated = host.DEDICATED_SCHEMA
        if self._schema_name is not None or dedicated is None:
            return self._schema_name
        with self._transaction() as conn:
            inspector = sa.inspect(conn)
            default = inspector.default_schema_name
            if not inspector.has_table("dm_schema", schema=dedicated) and inspector.has_table(
                "dm_schema", schema=default
            ):
                return default
        return dedicated

    @property
    def source_dir(self) -> Path:
        """The folder of extracts a run loads: named by the caller or CALLMART_SOURCE_DIR, never guessed (the
        packaged sample's made-up customers must not reach a real mart unless asked for, by `sample_dir()`)."""
        if self._source_dir is None:
            raise ConfigError(
                "no extracts folder: set CALLMART_SOURCE_DIR or --source-dir (--sample loads the packaged sample)"
            )
        return self._source_dir

    @property
    def where(self) -> str:
        """The database URL, password hidden, and the mart's schema if it has one."""
        # The schema once known: finding it needs the database, whose errors name the mart by this very text.
        name = self._schema.name if self._schema is not None else self._schema_name
        return mask(self.url) + (f" (schema {name})" if name else "")

    @property
    def schema_name(self) -> str:
        """The database schema holding the mart: the one named, else the connection's default one."""
        if self.schema.name is not None:
            return self.schema.name
        with self._transaction() as conn:
            return str(sa.inspect(conn).default_schema_name)

    @property
    def exposed_schema(self) -> str | None:
        """The schema of a mart left where an earlier callmart made it, the connection's default one rather than
        a schema of its own (Supabase's Data API serves `public`); None when the mart is where it belongs."""
        host = engines.for_url(self.url)
        dedicated = None if host.OWN_OPERATIONS else host.DEDICATED_SCHEMA
        if self._schema_name is None and dedicated is not None and self.schema.name != dedicated:
            return self.schema.name
        return None

    def close(self) -> None:
        """Release the database connections."""
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Callmart:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """A transaction whose database errors become one-line errors without the password."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except DBAPIError as error:
            raise locking.busy_error(error, self.where) or DatabaseError(self._describe(error)) from error
        except engines.for_url(self.url).driver_errors() as error:
            # Raised by the bulk paths, which talk to the driver itself.
            raise DatabaseError(self._describe(error)) from error

    def _describe(self, error: BaseException) -> str:
        if isinstance(error, CallmartError):
            return str(error)
        if isinstance(error, DBAPIError):
            detail = str(error.orig).strip().splitlines()[0] if error.orig is not None else str(error)
            if error.connection_invalidated or "connect" in detail.lower():
                return scrub(f"cannot use the database {self.where}: {detail}", self.url)
            return scrub(f"database error: {detail}", self.url)
        if isinstance(error, engines.for_url(self.url).driver_errors()):
            return scrub(f"database error: {(str(error).strip().splitlines() or [type(error).__name__])[0]}", self.url)
        return scrub(f"{type(error).__name__}: {error}".splitlines()[0], self.url)

    def init(self) -> None:
        """Create the mart's tables and default members; running it again changes nothing."""
        if self._own is not None:
            with self._own_errors():
                self._own.init(SCHEMA_VERSION)
                return
        with self._transaction() as conn:
            self.schema.create(conn)

    def grant_read(self, role: str) -> None:
        """Let a database role read every table of the mart, and change none (PostgreSQL)."""
        with self._transaction() as conn:
            self._check_ready(conn)
            self._check_roles(conn)
            engines.of(conn).grant_read(conn, list(self.schema.tables.values()), role)

    def revoke_read(self, role: str) -> None:
        """Take back what grant_read gave a role."""
        with self._transaction() as conn:
            self._check_ready(conn)
            self._check_roles(conn)
            engines.of(conn).revoke_read(conn, list(self.schema.tables.values()), role)

    def _check_roles(self, conn: sa.Connection) -> None:
        if not engines.of(conn).ROW_SECURITY:
            raise ConfigError(f"{self.where} has no roles to grant to: only its file's readers can read it")

    def move_schema(self, to: str | None = None) -> str:
        """Move the mart (its tables, day partitions and sequences) to schema `to`, by default the engine's own;
        return the schema it is in now."""
        target = to or engines.for_url(self.url).DEDICATED_SCHEMA
        if target is None:
            raise ConfigError(f"name the schema to move {self.where} to")
        _, target = schema_setting(self.url, target)
        assert target is not None
        with self._transaction() as conn:
            self._check_ready(conn)
            if target == self.schema.name:
                return target
            locking.take_write_turn(conn)
            moved = Schema(self._mart, target)
            dictionary.annotate(moved)
            if sa.inspect(conn).has_table("dm_schema", schema=target):
                raise ConfigError(f"schema {target} already holds a mart; drop it or choose another schema")
            engines.of(conn).move_to_schema(
                conn, [*self.schema.tables.values(), *self._partitions(conn)], self.schema.sequences.values(), target
            )
            moved.create(conn)
        self._schema, self._schema_name = moved, target
        return target

    def _partitions(self, conn: sa.Connection) -> list[sa.Table]:
        return [
            p for fact in self.schema.mart.facts for p in engines.of(conn).day_partitions(conn, self.schema[fact.name])
        ]

    def _check_ready(self, conn: sa.Connection | None = None) -> None:
        if conn is None:
            assert self._own is not None
            version = self._own.version()
        elif self.schema.exists(conn):
            version = conn.execute(sa.select(self.schema["dm_schema"].c.version)).scalar()
        else:
            version = None
        if version is None:
            raise MartNotReady(f"{self.where} holds no callmart mart yet; run `callmart init` first")
        if version != SCHEMA_VERSION:
            raise MartNotReady(
                f"the mart in {self.where} has schema version {version}, this callmart needs "
                f"{SCHEMA_VERSION}; run `callmart init` to upgrade it"
            )

    def enqueue(
        self,
        first: DateLike | None = None,
        last: DateLike | None = None,
        force: bool = False,
        fact_table: str | None = None,
    ) -> dict[str, int]:
        """Queue one pending period per day in [first, last); by default yesterday. Days may be dates, datetimes
        (their day) or ISO strings."""
        first, last = as_day(first), as_day(last)
        if last is not None and first is None:
            raise ConfigError("the last day needs a first day too (without days, yesterday is queued)")
        if first is None:
            first = date.today() - timedelta(days=1)
        if last is None:
            last = first + timedelta(days=1)
        periods = control.daily_periods(first, last)
        table = fact_table or self.schema.mart.facts[0].name
        self.schema.mart.fact(table)
        if self._own is not None:
            with self._own_errors():
                self._check_ready()
                return self._own.enqueue(table, periods, force)
        with self._transaction() as conn:
            self._check_ready(conn)
            return control.enqueue(conn, self.schema, table, periods, force)

    def catch_up(self, as_of: DateLike | None = None, fact_table: str | None = None) -> dict[str, int]:
        """Queue every day since the last loaded period up to the day before `as_of` (today by default)."""
        as_of = as_day(as_of)
        table = fact_table or self.schema.mart.facts[0].name
        if self._own is not None:
            with self._own_errors():
                self._check_ready()
                owed = control.owed_days(self._own.last_loaded_end(table), as_of or date.today())
                return self._own.enqueue(table, owed, force=False)
        with self._transaction() as conn:
            self._check_ready(conn)
            periods = control.catch_up_periods(conn, self.schema, table, as_of or date.today())
            return control.enqueue(conn, self.schema, table, periods, force=False)

    def requeue_failed(self) -> int:
        """Queue every failed period again; return how many."""
        if self._own is not None:
            with self._own_errors():
                self._check_ready()
                return self._own.requeue_failed()
        with self._transaction() as conn:
            self._check_ready(conn)
            return control.requeue_failed(conn, self.schema)

    def status(
        self, statuses: Sequence[str] = (), since: DateLike | None = None, limit: int | None = None
    ) -> list[dict[str, object]]:
        """The control table, oldest period first: of the given statuses (all by default), starting on or after
        `since`, the newest `limit` of them."""
        if self._own is not None:
            with self._own_errors():
                self._check_ready()
                return self._own.listing(statuses, as_day(since), limit)
        with self._transaction() as conn:
            self._check_ready(conn)
            return control.listing(conn, self.schema, statuses, as_day(since), limit)

    def status_counts(self) -> dict[str, int]:
        """How many periods each status holds."""
        if self._own is not None:
            with self._own_errors():
                self._check_ready()
                return self._own.counts()
        with self._transaction() as conn:
            self._check_ready(conn)
            return control.counts(conn, self.schema)

    def report(self, first: DateLike | None = None, end: DateLike | None = None) -> ReportData:
        """The conversion report's figures for the days [first, end); by default every day the aggregates hold."""
        first_day, end_day = as_day(first), as_day(end)
        if self._own is not None:
            with self._own_errors():
                self._check_ready()
                read = {table.name: dated_by for table, dated_by in tables_read(self.schema).items()}
                rows = self._own.read_tables(read, first_day, end_day)
            return report_of_tables(self.schema, rows, first_day, end_day)
        with self.engine.connect() as conn:
            return report_data(conn, self.schema, first_day, end_day)

    def last_run(self) -> list[dict[str, object]]:
        """The steps of the latest run with their reconciliation (rows read, loaded, rejected, warned)."""
        if self._own is not None:
            with self._own_errors():
                self._check_ready()
                return self._own.last_run_steps()
        with self._transaction() as conn:
            self._check_ready(conn)
            return runlog.last_run_steps(conn, self.schema)

    def rejects(self, id_run: int | None = None, limit: int = 100) -> list[dict[str, object]]:
        """Rows of a run (the latest by default) that were rejected or loaded with a warning."""
        if self._own is not None:
            with self._own_errors():
                self._check_ready()
                if id_run is not None and not self._own.run_exists(id_run):
                    raise self._no_run(id_run, self._own.latest_run())
                return self._own.reject_rows(id_run, limit)
        with self._transaction() as conn:
            self._check_ready(conn)
            if id_run is not None and not runlog.run_exists(conn, self.schema, id_run):
                raise self._no_run(id_run, runlog.latest_run(conn, self.schema))
            return runlog.reject_rows(conn, self.schema, id_run, limit)

    def _no_run(self, id_run: int, latest: int | None) -> ConfigError:
        runs = f"the latest is {latest}" if latest is not None else "no run yet"
        return ConfigError(f"no run {id_run} in {self.where} ({runs})")

    def run(
        self,
        reload_dimensions: bool = False,
        stop: StopRequest | None = None,
        max_wait: timedelta | None = DEFAULT_MAX_WAIT,
        complete_through: DateLike | None = None,
    ) -> RunSummary:
        """Load every dimension, then every pending period oldest first; a failed period does not stop the rest.

        A dimension whose source files and rules are those of its last merge is skipped, unless
        `reload_dimensions`. Periods are claimed one at a time, so runs started together share the work; periods
        left running by a run that died are queued again first.

        `stop`: when it is requested (see `stopping.on_signals`), the statement under way is cut short, the period
        being loaded rolls back and is queued again, the run is recorded as interrupted, and RunStopped is raised.
        KeyboardInterrupt is handled the same way.

        A period its extract does not cover yet (coverage.py) is left `esperando`, and tried again by the next run;
        `max_wait` after the period's end, it fails instead (None: it waits for ever). `complete_through`: the
        extracts are known to hold every row up to the end of that day (a final, historical export), so the
        periods up to then are covered whatever their last rows (else CALLMART_COMPLETE_THROUGH, if set).

        The process's allocators are left as they are, since they outlive the run in a host that stays up: to have
        a run hand its memory back, wrap it in `allocator.returning_memory()`, as the command line does."""
        self._stop = stop or StopRequest()
        self._max_wait = max_wait
        self._dated: dict[str, frozenset[date]] = {}
        complete_through = as_day(complete_through) or _day_setting("CALLMART_COMPLETE_THROUGH")
        self._complete_through = (
            None if complete_through is None else datetime.combine(complete_through + timedelta(days=1), time_of_day())
        )
        began = time.perf_counter()
        summary = RunSummary(started=datetime.now().replace(microsecond=0))
        if self._own is not None:
            with self._own_errors():
                self._run_own(summary, reload_dimensions)
                summary.seconds = time.perf_counter() - began
                return summary
        with self._transaction() as conn:
            self._check_ready(conn)
            summary.id_run = runlog.start_run(conn, self.schema, summary.started, self.source_dir)
            summary.business_date = control.business_date(conn, self.schema, summary.started)
        with locking.run_alive(self.engine, summary.id_run):
            try:
                with self._transaction() as conn:
                    summary.abandoned = runlog.abandon_dead_runs(conn, self.schema, summary.id_run)
                    summary.freed = control.free_abandoned(conn, self.schema)
                    control.wake_waiting(conn, self.schema)
                self._run_steps(summary, reload_dimensions)
            except (RunStopped, KeyboardInterrupt) as stopped:
                reason = reason_of(stopped)
                # A connection whose statement was interrupted in the driver is not to be used again.
                self.engine.dispose()
                with self._transaction() as conn:
                    control.requeue_running(
                        conn, self.schema, summary.id_run, f"queued again: run {summary.id_run} was {reason}"
                    )
                    runlog.finish_run(conn, self.schema, summary.id_run, ok=False, error=reason, stopped=True)
                raise
            except BaseException as error:
                with self._transaction() as conn:
                    runlog.finish_run(conn, self.schema, summary.id_run, ok=False, error=self._describe(error))
                raise
            with self._transaction() as conn:
                runlog.finish_run(conn, self.schema, summary.id_run, ok=summary.ok, error=None)
        summary.seconds = time.perf_counter() - began
        return summary

    def _run_own(self, summary: RunSummary, reload_dimensions: bool) -> None:
        """A run by an engine that runs the mart's operations itself, with this run's settings and checks."""
        assert self._own is not None
        self._check_ready()
        done = self._own.run(
            self.source_dir,
            summary.started,
            stop=self._stop,
            reporter=self.reporter,
            reload_dimensions=reload_dimensions,
            fingerprint=partial(fingerprint.fingerprint, self.source_dir),
            uncovered=self._uncovered,
            undated=runlog.undated,
        )
        summary.id_run, summary.business_date = done.id_run, done.business_date
        summary.abandoned, summary.freed, summary.steps = done.abandoned, done.freed, done.steps

    def _uncovered(self, fact: Fact, start: datetime, end: datetime, latest: datetime | None) -> StepResult | None:
        """The step of a period the extract does not cover yet (waiting, or failed once overdue); None if it does."""
        period = control.Period(0, fact.name, start, end)
        try:
            self._check_covered(fact, period, latest)
        except PeriodNotCovered as uncovered:
            return self._waiting(period, str(uncovered))
        return None

    def _run_steps(self, summary: RunSummary, reload_dimensions: bool) -> None:
        for dim in self.schema.mart.dimensions:
            self._stop.check()
            summary.steps.append(self._run_dimension(dim, summary, reload_dimensions))
        cache = LookupCache()
        with backfill.Backfill(self.source_dir) as split:
            while True:
                self._stop.check()
                # A period's time counts from its claim: over a backfill of many days, the claims add up.
                began = time.perf_counter()
                with self._transaction() as conn:
                    periods = control.claim_run_of(
                        conn, self.schema, summary.id_run, summary.started, backfill.CLAIMED_PERIODS
                    )
                if not periods:
                    break
                if len(periods) == 1:
                    summary.steps.append(self._run_period(periods[0], summary, split, cache, began))
                else:
                    self._run_group(periods, summary, split, cache, began)
        for fact in self.schema.mart.facts:
            loaded = [s for s in summary.steps if s.period is not None and s.table == fact.name]
            extra = runlog.undated(fact.name, loaded)
            if extra is not None:
                with self._transaction() as conn:
                    runlog.record_step(conn, self.schema, summary.id_run, len(summary.steps) + 1, extra)
                summary.steps.append(extra)
        with self._transaction() as conn:
            engines.of(conn).tune_for_bulk(conn)
            analytics.refresh_aggregates(conn, self.schema, summary.touched)

    def _run_dimension(self, dim: Dimension, summary: RunSummary, reload: bool) -> StepResult:
        """Merge one dimension and refresh the metrics whose events it holds, in one transaction; a failure
        stops the run, since facts must not be loaded against a dimension that is not."""
        self.reporter.step_started(dim.name)
        began = time.perf_counter()
        # Hashed before the merge: a file replaced during it then differs from the digest kept, and loads next time.
        digest = fingerprint.fingerprint(self.source_dir, dim)
        with self._transaction() as conn, self._stop.cancelling(engines.of(conn).canceller(conn)):
            locking.take_write_turn(conn)
            if not reload and fingerprint.is_current(conn, self.schema, dim, digest):
                result = StepResult(table=dim.name, note="source unchanged since its last merge")
                result.seconds = time.perf_counter() - began
                runlog.record_step(conn, self.schema, summary.id_run, len(summary.steps) + 1, result)
                self.reporter.step_finished(result)
                return result
            engines.of(conn).tune_for_bulk(conn)
            result = load_dimension(
                conn, self.schema, dim, self.source_dir, self._progress(dim.name), summary.business_date
            )
            runlog.check_balance(result)
            for fact in self.schema.mart.facts:
                for metric in fact.metrics:
                    if metric.events == dim.name:
                        result.metric_updated += refresh_after_events(conn, self.schema, fact, metric)
            summary.touched.add_events(analytics.landed_events(conn, self.schema, dim))
            fingerprint.remember(conn, self.schema, dim, digest, summary.id_run)
            result.seconds = time.perf_counter() - began
            runlog.record_step(conn, self.schema, summary.id_run, len(summary.steps) + 1, result)
        self.reporter.step_finished(result)
        return result

    def _run_period(
        self,
        period: control.Period,
        summary: RunSummary,
        split: backfill.Backfill,
        cache: LookupCache,
        began: float,
    ) -> StepResult:
        """Load one period claimed at `began`; its replace, metric, run log and status commit together, or it is
        marked failed. `split` and `cache` carry what the run's earlier periods read: the extract's rows, the
        dimensions' keys."""
        name = f"{period.fact_table} {period.start:%Y-%m-%d}"
        self.reporter.step_started(name)
        fact = self.schema.mart.fact(period.fact_table)
        step = len(summary.steps) + 1
        # The calls' aggregates of the period's days, summed as its rows stream by, commit with them.
        aggregates = StreamedAggregates(self.schema, fact)
        try:
            with self.engine.begin() as conn, self._stop.cancelling(engines.of(conn).canceller(conn)):
                locking.take_write_turn(conn)
                engines.of(conn).tune_for_bulk(conn)
                # Several days pending: the first one's load reads the extract once for all of them.
                raw_rows = split.rows_of(
                    fact,
                    [(period.start, period.end)],
                    lambda: control.pending_periods(conn, self.schema, fact.name),
                    self._progress(name),
                )
                made = split.split_of(fact)
                if made is not None:
                    # The split read the whole extract: a period it does not cover waits without a load.
                    self._check_covered(fact, period, made.latest)
                load = PeriodLoad(conn, self.schema, fact, period.start, period.end, cache, aggregates)
                result = load.run(self.source_dir, raw_rows, self._progress(name))
                if made is None:
                    # The load read the whole extract: what it reaches tells whether it covers the period.
                    self._check_covered(fact, period, result.source_latest)
                runlog.check_balance(result)
                settled = aggregates.write(conn, period.start, period.end)
                result.seconds = time.perf_counter() - began
                runlog.record_step(conn, self.schema, summary.id_run, step, result)
                control.mark(
                    conn, self.schema, period, Status.DONE, rows_loaded=result.inserted, finished_at=datetime.now()
                )
                summary.touched.add_period(period.start, period.end, settled.aggregates, settled.lift)
        except PeriodNotCovered as uncovered:
            result = self._wait(period, summary, step, str(uncovered), began)
        except Exception as error:  # noqa: BLE001 - any failure fails the period, and the run goes on
            if self._stop.requested:
                # The failure is the stop cutting the load short: the period is queued again, not failed.
                raise RunStopped(self._stop.reason, self._stop.signal_number) from error
            message = self._describe(error)
            result = StepResult(table=fact.name, period=(period.start, period.end), status=Status.FAILED, error=message)
            result.seconds = time.perf_counter() - began
            with self._transaction() as conn:
                control.mark(
                    conn, self.schema, period, Status.FAILED, error_message=message, finished_at=datetime.now()
                )
                runlog.record_step(conn, self.schema, summary.id_run, step, result)
        split.release(fact, [(period.start, period.end)])
        self.reporter.step_finished(result)
        return result

    def _run_group(
        self,
        periods: list[control.Period],
        summary: RunSummary,
        split: backfill.Backfill,
        cache: LookupCache,
        began: float,
    ) -> None:
        """Load consecutive periods of one fact claimed at `began` as spans of up to SPAN_ROWS rows, each in one
        transaction: its replace, metric, and each period's run-log step and status commit together. The periods the
        extract does not cover yet, and every period of a span that fails, go one at a time (`_run_period`)."""
        fact = self.schema.mart.fact(periods[0].fact_table)
        name = _span_name(fact, periods)
        self.reporter.step_started(name)
        try:
            with self._transaction() as conn:
                # The first span of the run reads the extract once for it and every period pending.
                split.rows_of(
                    fact,
                    [(p.start, p.end) for p in periods],
                    lambda: control.pending_periods(conn, self.schema, fact.name),
                    self._progress(name),
                )
        except Exception as error:  # noqa: BLE001 - each period then meets the extract's error in its own load
            if self._stop.requested:
                raise RunStopped(self._stop.reason, self._stop.signal_number) from error
        made = split.split_of(fact)
        covered = [] if made is None else self._covered_first(fact, periods, made.latest)
        sizes = [] if made is None else backfill.span_sizes([made.rows_in((p.start, p.end)) for p in covered])
        for first, size in zip(itertools.accumulate([0, *sizes]), sizes, strict=False):
            span = covered[first : first + size]
            if size == 1 or not self._load_span(span, summary, split, cache, began):
                for period in span:
                    summary.steps.append(self._run_period(period, summary, split, cache, began))
                    began = time.perf_counter()
            began = time.perf_counter()
        for period in periods[len(covered) :]:
            summary.steps.append(self._run_period(period, summary, split, cache, time.perf_counter()))

    def _covered_first(
        self, fact: Fact, periods: list[control.Period], latest: datetime | None
    ) -> list[control.Period]:
        """The periods up to the first one the extract does not cover."""
        covered = []
        for period in periods:
            try:
                self._check_covered(fact, period, latest)
            except PeriodNotCovered:
                break
            covered.append(period)
        return covered

    def _load_span(
        self,
        span: list[control.Period],
        summary: RunSummary,
        split: backfill.Backfill,
        cache: LookupCache,
        began: float,
    ) -> bool:
        """Load the covered periods `span` as one; False (nothing written) if it failed."""
        fact = self.schema.mart.fact(span[0].fact_table)
        name = _span_name(fact, span)
        self.reporter.step_started(name)
        bounds = [(p.start, p.end) for p in span]
        start, end = bounds[0][0], bounds[-1][1]
        aggregates = StreamedAggregates(self.schema, fact)
        try:
            with self.engine.begin() as conn, self._stop.cancelling(engines.of(conn).canceller(conn)):
                locking.take_write_turn(conn)
                engines.of(conn).tune_for_bulk(conn)
                load = PeriodLoad(conn, self.schema, fact, start, end, cache, aggregates, parts=bounds)
                whole = load.run(self.source_dir, split.rows_of(fact, bounds, lambda: []), self._progress(name))
                runlog.check_balance(whole)
                results = load.part_results(whole)
                for result in results:
                    runlog.check_balance(result)
                settled = aggregates.write(conn, start, end)
                for result, seconds in zip(results, _shares(time.perf_counter() - began, results), strict=True):
                    result.seconds = seconds
                runlog.record_steps(conn, self.schema, summary.id_run, len(summary.steps) + 1, results)
                control.mark_loaded(conn, self.schema, span, [r.inserted for r in results])
                summary.touched.add_period(start, end, settled.aggregates, settled.lift)
        except Exception as error:  # noqa: BLE001 - the span's periods are loaded one at a time instead
            if self._stop.requested:
                raise RunStopped(self._stop.reason, self._stop.signal_number) from error
            self.reporter.span_failed(name, self._describe(error))
            return False
        split.release(fact, bounds)
        summary.steps.extend(results)
        for result in results:
            self.reporter.step_finished(result)
        return True

    def _check_covered(self, fact: Fact, period: control.Period, latest: datetime | None) -> None:
        if fact.name not in self._dated:
            self._dated[fact.name] = coverage.dated_days(self.source_dir, fact)
        if self._complete_through is not None:
            latest = self._complete_through if latest is None else max(latest, self._complete_through)
        extracts = coverage.Coverage(latest, self._dated[fact.name])
        if not extracts.covers(period.start, period.end):
            raise PeriodNotCovered(extracts.why_not(period.start, period.end))

    def _wait(self, period: control.Period, summary: RunSummary, step: int, reason: str, began: float) -> StepResult:
        """Leave a period its extract does not cover to a later run; fail it once it waited `max_wait`."""
        result = self._waiting(period, reason)
        result.seconds = time.perf_counter() - began
        with self._transaction() as conn:
            finished = datetime.now() if result.status == Status.FAILED else None
            message = result.error or result.note
            control.mark(conn, self.schema, period, result.status, error_message=message, finished_at=finished)
            runlog.record_step(conn, self.schema, summary.id_run, step, result)
        return result

    def _waiting(self, period: control.Period, reason: str) -> StepResult:
        """The step of a period its extract does not cover: waiting, or failed once it waited `max_wait`."""
        overdue = self._max_wait is not None and datetime.now() - period.end > self._max_wait
        late = f"{reason}; still so {_spoken(self._max_wait)} after the period ended (--max-wait)"
        return StepResult(
            table=period.fact_table,
            period=(period.start, period.end),
            status=Status.FAILED if overdue else Status.WAITING,
            error=late if overdue else None,
            note=None if overdue else reason,
        )

    def _progress(self, name: str) -> Callable[[int], None]:
        def on_rows(rows: int) -> None:
            # Between batches is a safe place to stop: the step's transaction then rolls back.
            self._stop.check()
            self.reporter.rows_read(name, rows)

        return on_rows


def _span_name(fact: Fact, periods: Sequence[control.Period]) -> str:
    """The name a span's load is reported by: its fact and first and last days."""
    return f"{fact.name} {periods[0].start:%Y-%m-%d} to {periods[-1].start:%Y-%m-%d}"


def _shares(seconds: float, results: Sequence[StepResult]) -> list[float]:
    """A span's seconds shared among its periods' steps by the rows each read (evenly where none read any)."""
    weights = [r.read for r in results]
    total = sum(weights)
    if not total:
        return [seconds / len(results)] * len(results)
    return [seconds * weight / total for weight in weights]


def _spoken(span: timedelta | None) -> str:
    """A duration as people say it: 3 days, 12 hours, 90 minutes."""
    seconds = int(span.total_seconds()) if span is not None else 0
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def _day_setting(name: str) -> date | None:
    """A day (YYYY-MM-DD) from an environment setting, if set."""
    value = setting(name)
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a day: write it as YYYY-MM-DD") from None


DateLike = date | datetime | str
"""A day as the API takes it: a date, a datetime (its day) or an ISO string (2024-03-04)."""


def as_day(value: DateLike | None) -> date | None:
    """The day a date, datetime or ISO string names."""
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, datetime):
        return value.date()
    try:
        return date.fromisoformat(value.strip()[:10]) if len(value.strip()) >= 10 else date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{value!r} is not a day: write it as YYYY-MM-DD") from None
