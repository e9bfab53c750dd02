"""A period's rows replaced by DELETE and INSERT … SELECT, within the caller's transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from ..hints import PARTITIONED_BY_DAY

__all__ = ["DeleteInsert", "PeriodReplace", "RowsOf"]

RowsOf = Callable[[datetime, datetime], sa.Select[Any]]
"""The rows to load for [lower, upper), named as the table's columns."""


class PeriodReplace:
    """Replaces the rows of [start, end) of a fact table, within the caller's transaction."""

    FINAL_ROWS_IN_CLIENT = False
    """The load makes the period's final rows in the client and hands them to `parts`, rather than leaving them
    to a query over the staging table (`finish`'s `rows`)."""

    def __init__(self, conn: sa.Connection, table: sa.Table, start: datetime, end: datetime) -> None:
        self.conn, self.table, self.start, self.end = conn, table, start, end

    @property
    def new_tables(self) -> list[sa.Table]:
        """Tables this replace created in the transaction, which the bulk path may fill frozen."""
        return []

    def parts(self, rows: pa.RecordBatch) -> list[tuple[sa.Table, pa.RecordBatch]]:
        """The period's final rows (named as the table's columns) as the parts to write and their tables."""
        raise NotImplementedError(f"{type(self).__name__} takes its rows from a query")

    def finish(self, rows: RowsOf | None) -> tuple[int, int]:
        """Put the rows given to `parts` and `rows(lower, upper)`, if given, in place of the period's rows; return
        (deleted, inserted)."""
        raise NotImplementedError


class DeleteInsert(PeriodReplace):
    """The period's rows deleted, then the new ones inserted from a query."""

    def finish(self, rows: RowsOf | None) -> tuple[int, int]:
        table, conn = self.table, self.conn
        time = table.c[table.info[PARTITIONED_BY_DAY]]
        deleted = int(conn.execute(sa.delete(table).where(time >= self.start, time < self.end)).rowcount)
        if rows is None:
            return deleted, 0
        names = [c.name for c in table.columns]
        return deleted, int(conn.execute(sa.insert(table).from_select(names, rows(self.start, self.end))).rowcount)
