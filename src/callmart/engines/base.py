"""What every engine offers: its capabilities, each a named flag with its reason, and the operations generic code
calls. An engine's folder overrides them; generic code never asks which database it talks to."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pyarrow as pa
import sqlalchemy as sa

from .._errors import ConfigError
from .arrow import arrow_type
from .sql.replace import DeleteInsert, PeriodReplace

__all__ = ["Engine", "MartOperations"]


class MartOperations(Protocol):
    """The library API's operations on a mart, for an engine that runs them itself (Engine.OWN_OPERATIONS) rather
    than through SQLAlchemy: the API keeps what surrounds them (settings, messages, the run's summary)."""

    def init(self, version: int) -> None:
        """Create the tables and fixed rows; running it again writes nothing."""

    def version(self) -> int | None:
        """The schema version of the mart, None when there is no mart yet."""

    def run(self, source_dir: Path, started: datetime, **options: Any) -> Any:
        """A whole run from the extracts of `source_dir`; its outcome (id_run, business_date, abandoned, freed,
        steps). `options`: what the API decides around it (stop, reporter, reload_dimensions, fingerprint,
        uncovered, undated: the fields of the engine's own run options)."""

    def enqueue(self, fact_table: str, periods: Iterable[tuple[datetime, datetime]], force: bool) -> dict[str, int]:
        """Queue the periods (control.enqueue's rules)."""

    def last_loaded_end(self, fact_table: str) -> datetime | None:
        """The end of the latest period of `fact_table` loaded, if any."""

    def requeue_failed(self) -> int:
        """Queue every failed period again; how many."""

    def listing(self, statuses: Iterable[str], since: date | None, limit: int | None) -> list[dict[str, object]]:
        """The control table's rows, oldest first: of `statuses`, from `since`, the newest `limit`."""

    def counts(self) -> dict[str, int]:
        """How many periods each status holds."""

    def latest_run(self) -> int | None:
        """The id of the latest run, if any."""

    def run_exists(self, id_run: int) -> bool:
        """Whether the run log holds that run."""

    def last_run_steps(self) -> list[dict[str, object]]:
        """The steps of the latest run, in order."""

    def reject_rows(self, id_run: int | None, limit: int) -> list[dict[str, object]]:
        """Reject and warning rows of a run (the latest by default), errors first."""

    def read_tables(
        self, tables: Mapping[str, str | None], first: date | None, end: date | None
    ) -> dict[str, pa.Table]:
        """The rows of the tables named (those the mart has), of the days [first, end) by the column given for
        each (None: every row), rows with no date included."""


class Engine:
    """One database callmart runs on. Subclasses set the flags and override the operations that differ."""

    NAME: ClassVar[str] = ""
    """How people call it."""
    DIALECT: ClassVar[str] = ""
    """SQLAlchemy's name of its dialect."""
    SCHEMES: ClassVar[frozenset[str]] = frozenset()
    """URL schemes that name it."""

    RUNS_SHARE_THE_MART: ClassVar[bool] = False
    """Runs of several processes (and machines) may write the mart at once, so each shows that it lives."""
    SKIP_LOCKED_CLAIMS: ClassVar[bool] = False
    """Runs claim pending periods with FOR UPDATE SKIP LOCKED, so runs started together share them."""
    ROW_SECURITY: ClassVar[bool] = False
    """Other roles may reach the tables: they get row level security and no rights but their readers'."""
    DEDICATED_SCHEMA: ClassVar[str | None] = None
    """The schema a new mart goes to unless the user names one (None: the connection's default)."""
    INDEXES: ClassVar[bool] = False
    """B-tree indexes serve period deletes and metric lookups."""
    ENFORCED_FACT_KEYS: ClassVar[bool] = False
    """Fact tables get their primary key."""
    DAY_PARTITIONS: ClassVar[bool] = False
    """Fact tables are partitioned by day, a period replaced by swapping partitions, its rows made in the client."""
    OWN_OPERATIONS: ClassVar[bool] = False
    """The engine runs the mart's operations itself (open_mart), not through a SQLAlchemy engine."""
    COUNTED_DAYS: ClassVar[int | None] = None
    """Most days of calls one statement counts the lift of, where a longer span outgrows the memory the engine
    gives a statement; None: any span at once."""

    def open_mart(
        self,
        url: sa.URL,
        tables: Mapping[str, sa.Table],
        mart: Any,
        reading: tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]],
    ) -> MartOperations:
        """The mart's operations on the database of `url`, for an engine with OWN_OPERATIONS: `tables` by name, the
        declared `mart`, and callmart's file listing, reader and doubts (extract.find_files, extract.read_source,
        stage.doubts)."""
        raise ConfigError(f"{self.NAME} is reached through SQLAlchemy: callmart runs the mart's operations itself")

    def driver_errors(self) -> tuple[type[Exception], ...]:
        """Errors its driver raises where callmart talks to the driver itself (bulk paths), not through
        SQLAlchemy; asked only once an error is raised, so that the driver loads only where it is used."""
        return ()

    def url(self, url: sa.URL) -> sa.URL:
        """The URL as this engine's driver takes it; an error naming what is wrong, never echoing credentials."""
        return url

    def shown(self, url: sa.URL) -> str:
        """The URL as messages show it: no password, no query (it may hold a password too)."""
        return url.difference_update_query(list(url.query)).render_as_string(hide_password=True)

    def create_engine(self, url: sa.URL) -> sa.Engine:
        """A SQLAlchemy engine for the URL."""
        return sa.create_engine(url, **self._engine_options(url))

    def _engine_options(self, url: sa.URL) -> dict[str, Any]:
        # Row counts of INSERT … SELECT feed the run summary; SQLAlchemy keeps them only when asked.
        return {"execution_options": {"preserve_rowcount": True}}

    def bulk_insert(
        self, conn: sa.Connection, table: sa.Table, batches: Iterable[pa.RecordBatch], truncated: bool = False
    ) -> int:
        """Append Arrow batches (columns named as the table's) by the bulk path; return rows written. `truncated`:
        the table was emptied or made in this transaction, so the engine may write the rows frozen."""
        raise NotImplementedError

    def bulk_insert_routed(
        self,
        conn: sa.Connection,
        parts: Iterable[tuple[sa.Table, pa.RecordBatch]],
        truncated: Sequence[sa.Table] = (),
    ) -> dict[str, int]:
        """Append each batch to its table, one statement per batch; return rows per table. For one stream feeding
        several tables (a statement cannot interleave them); `truncated` as in bulk_insert."""
        written: dict[str, int] = {}
        for table, batch in parts:
            rows = self.bulk_insert(conn, table, [batch], truncated=table in truncated)
            written[table.name] = written.get(table.name, 0) + rows
        return written

    def insert_rows(self, conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> int:
        """Append rows given as mappings of the table's columns by the bulk path; return rows written. An INSERT of
        many parameter sets may run once per row."""
        if not rows:
            return 0
        schema = pa.schema([pa.field(c.name, arrow_type(c.type)) for c in table.columns])
        return self.bulk_insert(conn, table, [pa.RecordBatch.from_pylist(list(rows), schema=schema)])

    def fetch_arrow(self, conn: sa.Connection, select: sa.Select[Any], schema: pa.Schema) -> pa.Table:
        """The rows of a SELECT as an Arrow table of `schema`, by the bulk path rather than row objects."""
        raise NotImplementedError

    def analyze(self, conn: sa.Connection, table: sa.Table) -> None:
        """Statistics of a freshly filled table (of the columns its info names under hints.ANALYZED, if it does),
        where the engine plans from them."""

    def canceller(self, conn: sa.Connection) -> Callable[[], None]:
        """How to cut short the statement the connection runs, from another thread."""
        return lambda: None

    def tune_for_bulk(self, conn: sa.Connection) -> None:
        """Settings for this transaction's bulk work."""

    @contextmanager
    def grouping_by_sort(self, conn: sa.Connection) -> Iterator[None]:
        """Within the block, GROUP BY groups by sorting where hashing nearly unique groups is slow."""
        yield

    def take_write_turn(self, conn: sa.Connection) -> None:
        """Wait for the other writers of the mart, until this transaction ends."""

    @contextmanager
    def run_alive(self, engine: sa.Engine, id_run: int) -> Iterator[None]:
        """Within the block, other runs can tell that this one lives."""
        yield

    def alive(self, conn: sa.Connection, id_run: int) -> bool:
        """Whether another run still lives (where runs cannot share the mart, whoever can ask is the only one)."""
        return False

    def period_replace(self, conn: sa.Connection, table: sa.Table, start: datetime, end: datetime) -> PeriodReplace:
        """What replaces the rows of [start, end) of a fact table within the caller's transaction."""
        return DeleteInsert(conn, table, start, end)

    def secure(
        self,
        conn: sa.Connection,
        tables: Iterable[sa.Table],
        sequences: Iterable[sa.Sequence] = (),
        marker: sa.Table | None = None,
    ) -> None:
        """Close new tables (and a fact table's day partitions) and sequences to all but the owner and the readers
        that the mart whose version table is `marker` has, where other roles may reach them."""

    def grant_read(self, conn: sa.Connection, tables: Sequence[sa.Table], role: str) -> None:
        """Let a database role read the tables, and change none."""
        raise ConfigError(f"a {self.NAME} mart has no roles to grant reading to")

    def revoke_read(self, conn: sa.Connection, tables: Sequence[sa.Table], role: str) -> None:
        """Take back what grant_read gave a role."""
        raise ConfigError(f"a {self.NAME} mart has no roles to grant reading to")

    def day_partitions(self, conn: sa.Connection, table: sa.Table) -> list[sa.Table]:
        """The day partitions of a table partitioned by day."""
        return []

    def move_to_schema(
        self, conn: sa.Connection, tables: Iterable[sa.Table], sequences: Iterable[sa.Sequence], schema: str
    ) -> None:
        """Move tables and sequences to another schema."""
        raise ConfigError(f"a {self.NAME} mart does not move between schemas")
