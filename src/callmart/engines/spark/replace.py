"""A period's rows of a Delta fact table replaced in one commit: Delta's replaceWhere, from the DataFrame API."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

__all__ = ["replace_period", "span", "wall_clock"]


def replace_period(
    rows: DataFrame, table: str, time_column: str, day_column: str, start: datetime, end: datetime
) -> None:
    """Put `rows` in place of the rows of [start, end) of `table` (a qualified name), in one Delta commit.

    The commit removes the files of the period's days (the table is partitioned by `day_column`, tables.py) and
    adds the new rows; readers see the old period or the new one, never a mix. A row of `rows` outside the period
    fails the commit (Delta checks every written row against the predicate), so nothing is written then.

    The predicate names the days as well as the times: Delta derives no partition filter from a TIMESTAMP_NTZ
    column, and without one it would read every file of the table, and conflict with a concurrent load of another
    day (ConcurrentAppendException). Its bounds are typed literals of Spark expressions: no text of it is SQL."""
    rows.writeTo(table).overwrite(span(time_column, day_column, start, end))


def span(time_column: str, day_column: str, start: datetime, end: datetime) -> Column:
    """The rows of a fact table whose time is in [start, end), their days named too, so that Delta reads only
    the files of those days."""
    from pyspark.sql.functions import col, lit

    time, day = col(time_column), col(day_column)
    days = (day >= lit(start.date())) & (day <= lit(_last_day(start, end)))
    return days & (time >= wall_clock(start)) & (time < wall_clock(end))


def _last_day(start: datetime, end: datetime) -> date:
    """The day of the period's last moment."""
    return max(start, end - timedelta(microseconds=1)).date()


def wall_clock(moment: datetime) -> Column:
    """A TIMESTAMP_NTZ literal of a naive datetime. A datetime handed to Spark as is becomes a TIMESTAMP in the
    session's time zone; its ISO text cast to TIMESTAMP_NTZ is the wall-clock time itself."""
    from pyspark.sql.functions import lit

    if moment.tzinfo is not None:
        raise ValueError(f"callmart's times are wall-clock times without a zone, not {moment.isoformat()}")
    return lit(moment.isoformat(sep=" ")).cast("timestamp_ntz")
