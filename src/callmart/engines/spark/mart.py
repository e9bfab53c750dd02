"""The library API's operations on a mart of Delta tables: api.Callmart hands them to this object when its URL
names a Spark session (Engine.open_mart), and keeps what surrounds them (settings, messages, the run's summary).

The session is opened on first use and left open: it may be the caller's own (a Databricks job's)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlalchemy as sa

from ...declare import Mart
from ...status import Status
from .control import enqueue, requeue_failed
from .load import (
    PROCESSES,
    REJECTS,
    RUN_STEPS,
    RUNS,
    VERSION_TABLE,
    CheckDoubts,
    FindFiles,
    RunOptions,
    SparkLoad,
    SparkRun,
)
from .reading import ReadSource
from .replace import wall_clock
from .session import open_session
from .sql import qualified
from .url import SparkUrl

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SparkMart"]


class SparkMart:
    """One mart's Delta tables in the database `url` names, loaded from `source_dir` by callmart's own reader."""

    def __init__(
        self,
        url: SparkUrl,
        tables: Mapping[str, sa.Table],
        mart: Mart,
        find_files: FindFiles,
        read_source: ReadSource,
        doubts: CheckDoubts,
    ) -> None:
        self.url, self.tables, self.mart = url, tables, mart
        self._reading = (find_files, read_source, doubts)
        self._spark: SparkSession | None = None

    @property
    def spark(self) -> SparkSession:
        """The session, opened on first use."""
        if self._spark is None:
            self._spark = open_session(self.url)
        return self._spark

    def name(self, table: str) -> str:
        """A table's qualified name in the mart's database."""
        return qualified(self.url.catalog, self.url.database, table)

    def load(self, source_dir: Path) -> SparkLoad:
        """The loads of the mart from the extracts of `source_dir`."""
        return SparkLoad(self.spark, self.url, self.tables, self.mart, source_dir, *self._reading)

    def init(self, version: int) -> None:
        """Create the tables and fixed rows; running it again writes nothing."""
        self.load(Path()).init(version)

    def version(self) -> int | None:
        """The schema version of the mart, None when there is no mart yet."""
        name = self.name(VERSION_TABLE)
        if not self.spark.catalog.tableExists(name.replace("`", "")):
            return None
        found = self.spark.table(name).select("version").first()
        return int(found[0]) if found is not None else None

    def run(self, source_dir: Path, started: datetime, **options: Any) -> SparkRun:
        """A whole run (SparkLoad.run), with the RunOptions given by name."""
        return self.load(source_dir).run(now=started, options=RunOptions(**options))

    def enqueue(self, fact_table: str, periods: Iterable[tuple[datetime, datetime]], force: bool) -> dict[str, int]:
        """Queue the periods (control.enqueue's rules)."""
        return enqueue(self.spark, self.tables[PROCESSES], self.name(PROCESSES), fact_table, periods, force)

    def last_loaded_end(self, fact_table: str) -> datetime | None:
        """The end of the latest period of `fact_table` loaded, if any."""
        from pyspark.sql import functions as F

        done = self.spark.table(self.name(PROCESSES)).where(
            (F.col("fact_table") == F.lit(fact_table)) & (F.col("status") == F.lit(Status.DONE.value))
        )
        found = done.select(F.max("end_date")).first()
        return found[0] if found is not None and isinstance(found[0], datetime) else None

    def requeue_failed(self) -> int:
        """Queue every failed period again; how many."""
        return requeue_failed(self.spark, self.tables[PROCESSES], self.name(PROCESSES))

    def listing(self, statuses: Iterable[str], since: date | None, limit: int | None) -> list[dict[str, object]]:
        """The control table's rows, oldest first: of `statuses`, from `since`, the newest `limit`."""
        from pyspark.sql import functions as F

        rows = self.spark.table(self.name(PROCESSES))
        wanted = [str(s) for s in statuses]
        if wanted:
            rows = rows.where(F.col("status").isin(wanted))
        if since is not None:
            rows = rows.where(F.col("start_date") >= wall_clock(datetime.combine(since, time())))
        newest = rows.orderBy(F.col("start_date").desc(), "fact_table", F.col("id_process").desc())
        return self._dicts(newest.limit(limit) if limit is not None else newest)[::-1]

    def counts(self) -> dict[str, int]:
        """How many periods each status holds."""
        rows = self.spark.table(self.name(PROCESSES)).groupBy("status").count().orderBy("status").collect()
        return {str(row["status"]): int(row["count"]) for row in rows}

    def latest_run(self) -> int | None:
        """The id of the latest run, if any."""
        from pyspark.sql import functions as F

        found = self.spark.table(self.name(RUNS)).select(F.max("id_run")).first()
        return None if found is None or found[0] is None else int(found[0])

    def run_exists(self, id_run: int) -> bool:
        """Whether the run log holds that run."""
        from pyspark.sql import functions as F

        return self.spark.table(self.name(RUNS)).where(F.col("id_run") == F.lit(id_run)).first() is not None

    def last_run_steps(self) -> list[dict[str, object]]:
        """The steps of the latest run, in order."""
        from pyspark.sql import functions as F

        latest = self.latest_run()
        steps = self.spark.table(self.name(RUN_STEPS)).where(F.col("id_run") == F.lit(latest)).orderBy("step")
        return self._dicts(steps) if latest is not None else []

    def reject_rows(self, id_run: int | None, limit: int) -> list[dict[str, object]]:
        """Reject and warning rows of a run (the latest by default), errors first."""
        from pyspark.sql import functions as F

        run = id_run if id_run is not None else self.latest_run()
        if run is None:
            return []
        rows = (
            self.spark.table(self.name(REJECTS))
            .where(F.col("id_run") == F.lit(run))
            .orderBy("severity", "table_name", "source_file", "line_number")
            .limit(limit)
        )
        return self._dicts(rows)

    def read_tables(
        self, tables: Mapping[str, str | None], first: date | None, end: date | None
    ) -> dict[str, pa.Table]:
        """The rows of the tables named (those the mart has), of the days [first, end) by the column given for
        each (None: every row), rows with no date included."""
        from pyspark.sql import functions as F

        found = {}
        for table, dated_by in tables.items():
            name = self.name(table)
            if not self.spark.catalog.tableExists(name.replace("`", "")):
                continue
            rows = self.spark.table(name)
            if dated_by is not None:
                day = F.col(dated_by).cast("date")
                if first is not None:
                    rows = rows.where(day.isNull() | (day >= F.lit(first)))
                if end is not None:
                    rows = rows.where(day.isNull() | (day < F.lit(end)))
            found[table] = rows.toArrow()
        return found

    def _dicts(self, frame: DataFrame) -> list[dict[str, object]]:
        return [row.asDict() for row in frame.collect()]
