"""A period of a fact table computed on Spark: the same rows, keys included, as the generic load (fact.py) gives.

The generic load keys and finishes rows as they stream through the client. Here the staged rows are a DataFrame
(cleaned on the driver or by executors, see docs/spark.md) and everything after is set-based on the executors:

- **Inferred members** first (`inferred_members`): the business ids of the period's rows that a referenced
  dimension lacks become members of it with `unknown` attributes, keys after the largest in business-id order (as
  `keys.InferredMembers` numbers them), by one MERGE per dimension that inserts only ids still missing: a rerun, or
  a concurrent load that inserted them first, adds nothing twice.
- **The period's rows** (`period_rows`): each reference's key by a join on its business value (for a dimension that
  keeps history, the version valid at the row's time), the default member's for a null value; the fact key as
  `fact.MinuteNumbering` makes it, the minute number times CALLS_PER_MINUTE plus the row's place among that minute's
  rows in extract order (file name, then row); each metric by a window join of the rows with the events of their
  entity (`metric.first_events`' rule: the first event at or after the row's time and within the window, ties by
  the event's business id).
- Then the engine's `replace_period` puts them in place of the period's rows in one commit.

`duplicate_rows` gives the warnings the generic load records for rows identical to an earlier row of the extract.
The declarations come as arguments (a `Mart`, its `Fact`), the tables by the URL naming their database: this module
sits below the schema and the load steps."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from ...declare import (
    BEGINNING,
    CALLS_PER_MINUTE,
    DEFAULT_MEMBER_ID,
    IS_CURRENT,
    IS_INFERRED,
    VALID_FROM,
    VALID_TO,
    VERSION,
    Dimension,
    Fact,
    FirstEventWithin,
    Mart,
    Reference,
)
from ...rejects import DUPLICATE_ROW, REJECT_SCHEMA, SOURCE_FILE, SOURCE_ROW, WARNING
from .control import with_retries
from .replace import wall_clock
from .sql import insert_missing, qualified
from .tables import spark_type, spark_type_name
from .url import SparkUrl

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

__all__ = [
    "arrow_frame",
    "duplicate_rows",
    "entity_dimension",
    "entity_events",
    "fact_entities",
    "inferred_members",
    "insert_inferred",
    "later",
    "period_rows",
    "with_key",
    "with_event",
    "with_metric",
]

_VALUE, _KEY, _PLACE = "callmart_value", "callmart_key", "callmart_place"
"""Working columns, named so that no declared column can clash with them."""


# --- inferred members ----------------------------------------------------------------------------------------------


def inferred_members(
    spark: SparkSession, mart: Mart, fact: Fact, url: SparkUrl, staged: DataFrame, start: datetime, end: datetime
) -> dict[str, int]:
    """Insert, into each dimension the fact refers to, an inferred member for every business id of the period's
    staged rows that the dimension lacks; return the members inserted by dimension (none: not named).

    Keys follow the dimension's largest, in order of business id. One MERGE per dimension, on the business value,
    inserting only where it finds none: run again, it inserts nothing; a dimension with nothing to add gets no
    commit. A MERGE that loses to a concurrent commit is decided again on the new state."""
    rows = _in_period(staged, fact, start, end)
    inserted: dict[str, int] = {}
    for reference in fact.references:
        dimension = mart.dimension(reference.dimension)
        name = qualified(url.catalog, url.database, dimension.name)
        insert = functools.partial(insert_inferred, spark, dimension, reference, name, rows)
        count = with_retries(insert, f"inferred members of {dimension.name}")
        if count:
            inserted[dimension.name] = inserted.get(dimension.name, 0) + count
    return inserted


def insert_inferred(spark: SparkSession, dimension: Dimension, reference: Reference, name: str, rows: DataFrame) -> int:
    """One MERGE of the members `rows` name by `reference` that the dimension lacks; how many it inserted."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    members = spark.table(name)
    values = rows.select(F.col(reference.value.name).alias(reference.by)).where(F.col(reference.by).isNotNull())
    missing = values.distinct().join(members.select(reference.by), on=reference.by, how="left_anti")
    if missing.limit(1).count() == 0:
        return 0
    key = F.col(dimension.key)
    largest = members.where(key > F.lit(0)).agg(F.coalesce(F.max(key), F.lit(0)).alias(_KEY))
    place = F.row_number().over(Window.orderBy(F.col(reference.by)))
    numbered = missing.crossJoin(largest).select(reference.by, (F.col(_KEY) + place).alias(dimension.key))
    source = numbered.select(*_member_columns(dimension, reference, members.schema))
    return insert_missing(spark, name, source, reference.by, members.schema.fieldNames())


def _member_columns(dimension: Dimension, reference: Reference, schema: StructType) -> list[Column]:
    """The dimension's columns for an inferred member of `numbered` (key and business value): attributes
    `unknown`, references to the default members, inferred, one version valid from BEGINNING on where it keeps
    history; every column of the table, typed as the table has it."""
    from pyspark.sql import functions as F

    values: dict[str, Column] = {c.name: F.lit(c.unknown) for c in dimension.columns}
    values.update({r.column: F.lit(DEFAULT_MEMBER_ID) for r in dimension.references})
    values[IS_INFERRED] = F.lit(True)
    if dimension.keeps_history:
        values.update(
            {VALID_FROM: wall_clock(BEGINNING), VALID_TO: F.lit(None), IS_CURRENT: F.lit(True), VERSION: F.lit(1)}
        )
    values[dimension.key] = F.col(dimension.key)
    values[reference.by] = F.col(reference.by)
    return [values.get(f.name, F.lit(None)).cast(f.dataType).alias(f.name) for f in schema.fields]


# --- the period's rows ---------------------------------------------------------------------------------------------


def period_rows(
    spark: SparkSession,
    mart: Mart,
    fact: Fact,
    table: sa.Table,
    url: SparkUrl,
    staged: DataFrame,
    start: datetime,
    end: datetime,
) -> DataFrame:
    """The fact rows of [start, end) from the staged rows, as `table`'s columns and types (its generated day
    column left to Delta): references' keys, the fact key, the metrics. Lazy: nothing runs until it is written.

    `staged`: the loadable rows of the extract (its cleaned, not rejected rows; other periods' may be there too),
    with the fact's staged columns (`stage.staged_columns`), SOURCE_FILE and SOURCE_ROW. Every business id must be
    in its dimension by then (`inferred_members`): a row left without a key fails the write (NOT NULL)."""
    rows = _numbered(_in_period(staged, fact, start, end), fact)
    for reference in fact.references:
        rows = with_key(spark, mart, url, rows, reference)
    for metric in fact.metrics:
        rows = with_metric(spark, mart, url, rows, fact, metric, start, end)
    return rows.select(*(_typed(c) for c in table.columns))


def _in_period(staged: DataFrame, fact: Fact, start: datetime, end: datetime) -> DataFrame:
    from pyspark.sql.functions import col

    time = col(fact.time_column)
    return staged.where((time >= wall_clock(start)) & (time < wall_clock(end)))


def _numbered(rows: DataFrame, fact: Fact) -> DataFrame:
    """The rows with the fact key: minute number * CALLS_PER_MINUTE + place among the minute's rows in extract
    order, from 1 (fact.MinuteNumbering's). A minute with too many rows fails the write, as it fails that load."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    time = F.col(fact.time_column)
    # Minutes since the epoch from the wall-clock fields: no time zone enters (TIMESTAMP_NTZ has none).
    days = F.datediff(F.to_date(time), F.lit(datetime(1970, 1, 1).date())).cast("bigint")
    minute = days * F.lit(1440) + F.hour(time) * F.lit(60) + F.minute(time)
    place = F.row_number().over(Window.partitionBy(minute).orderBy(F.col(SOURCE_FILE), F.col(SOURCE_ROW)))
    too_many = f"more than {CALLS_PER_MINUTE - 1:,} rows share one minute of {fact.time_column}"
    key = F.when(place < F.lit(CALLS_PER_MINUTE), minute * F.lit(CALLS_PER_MINUTE) + place).otherwise(
        F.raise_error(F.lit(too_many))
    )
    return rows.withColumn(fact.key, key.cast("bigint"))


def with_key(spark: SparkSession, mart: Mart, url: SparkUrl, rows: DataFrame, reference: Reference) -> DataFrame:
    """The rows with the reference's key column: the member whose business value is the row's (the version valid
    at the row's time where the dimension keeps history, the current one otherwise), the default member for none.

    A business value of several members (a login name two agents share) takes the lowest key."""
    from pyspark.sql import functions as F

    dimension = mart.dimension(reference.dimension)
    members = spark.table(qualified(url.catalog, url.database, dimension.name)).where(F.col(reference.by).isNotNull())
    value = F.col(reference.value.name)
    if dimension.keeps_history and reference.as_of is not None:
        versions = members.select(
            F.col(reference.by).alias(_VALUE),
            F.col(dimension.key).alias(_KEY),
            F.col(VALID_FROM).alias("callmart_valid_from"),
            F.col(VALID_TO).alias("callmart_valid_to"),
        )
        time = F.col(reference.as_of)
        # Versions of a member follow one another (valid_to of one is valid_from of the next): one matches.
        valid = (
            (F.col(_VALUE) == value)
            & (F.col("callmart_valid_from") <= time)
            & (F.col("callmart_valid_to").isNull() | (time < F.col("callmart_valid_to")))
        )
        joined = rows.join(versions, valid, "left").drop(_VALUE, "callmart_valid_from", "callmart_valid_to")
    else:
        if dimension.keeps_history:
            members = members.where(F.col(IS_CURRENT))
        if reference.by == dimension.business_key:
            # One current member per business id: no grouping (a shuffle of the whole dimension) needed.
            keys = members.select(F.col(reference.by).alias(_VALUE), F.col(dimension.key).alias(_KEY))
        else:
            keys = members.groupBy(F.col(reference.by).alias(_VALUE)).agg(F.min(dimension.key).alias(_KEY))
        joined = rows.join(keys, value == F.col(_VALUE), "left").drop(_VALUE)
    key = F.when(value.isNull(), F.lit(DEFAULT_MEMBER_ID)).otherwise(F.col(_KEY))
    return joined.withColumn(reference.column, key.cast("int")).drop(_KEY)


def with_metric(
    spark: SparkSession,
    mart: Mart,
    url: SparkUrl,
    rows: DataFrame,
    fact: Fact,
    metric: FirstEventWithin,
    start: datetime,
    end: datetime,
) -> DataFrame:
    """The rows with the metric's column: for a row of at least the threshold to a known entity, the key of its
    entity's first event at or after its time and before the window's end (ties by the event's business id);
    null otherwise. One join of the qualifying rows with the events of the period's window, then the first per
    row, as metric.first_events does in SQL."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    events = mart.dimension(metric.events)
    event_time = F.col(metric.event_time)
    found = _events_of(spark, mart, url, metric, start, end)
    qualifying = rows.where(
        (F.col(metric.threshold_column) >= F.lit(metric.threshold))
        & (F.col(metric.fact_entity) != F.lit(DEFAULT_MEMBER_ID))
    )
    facts = fact_entities(spark, mart, url, metric, qualifying).select(
        F.col(fact.key).alias("callmart_fact_key"), F.col(metric.fact_time).alias("callmart_fact_time"), "entity"
    )
    matches = facts.join(found, _within_window(metric, F.col("callmart_fact_time")))
    order = Window.partitionBy("callmart_fact_key").orderBy(event_time, F.col(events.business_key))
    firsts = (
        matches.withColumn(_PLACE, F.row_number().over(order))
        .where(F.col(_PLACE) == F.lit(1))
        .select(F.col("callmart_fact_key").alias(fact.key), F.col(events.key).cast("int").alias(metric.column))
    )
    return rows.join(firsts, on=fact.key, how="left")


def later(time: Column, microseconds: int) -> Column:
    """A time that many microseconds later."""
    from pyspark.sql.functions import lit, timestamp_add

    return timestamp_add("MICROSECOND", lit(microseconds), time)


def entity_dimension(mart: Mart, metric: FirstEventWithin) -> Dimension:
    """The dimension both sides' entity keys point at (customers, for calls and logins)."""
    events = mart.dimension(metric.events)
    reference = next(r for r in events.references if r.column == metric.event_entity)
    return mart.dimension(reference.dimension)


def entity_events(spark: SparkSession, mart: Mart, url: SparkUrl, metric: FirstEventWithin) -> DataFrame:
    """The events (key, business id, time) with `callmart_entity`, the same for every version of a member: the
    surrogate key when the entity dimension keeps no history, else its business id."""
    from pyspark.sql import functions as F

    events = mart.dimension(metric.events)
    table = spark.table(qualified(url.catalog, url.database, events.name))
    columns = [F.col(events.key), F.col(events.business_key), F.col(metric.event_time)]
    entity = entity_dimension(mart, metric)
    if not entity.keeps_history:
        return table.select(*columns, F.col(metric.event_entity).alias("callmart_entity"))
    members = spark.table(qualified(url.catalog, url.database, entity.name)).select(
        F.col(entity.key).alias(_KEY), F.col(entity.business_key).alias("callmart_entity")
    )
    return table.join(members, F.col(metric.event_entity) == F.col(_KEY)).select(*columns, "callmart_entity")


def with_event(
    spark: SparkSession,
    mart: Mart,
    url: SparkUrl,
    rows: DataFrame,
    metric: FirstEventWithin,
    start: datetime,
    end: datetime,
) -> DataFrame:
    """The rows of [start, end) that have an event in their window, whatever their talk time: a semi-join, for
    counts that ask whether a row converted, not by which event (metric.has_event)."""
    from pyspark.sql import functions as F

    found = _events_of(spark, mart, url, metric, start, end)
    paired = fact_entities(spark, mart, url, metric, rows).join(
        found, _within_window(metric, F.col(metric.fact_time)), "left_semi"
    )
    return paired.drop("entity")


def _events_of(
    spark: SparkSession, mart: Mart, url: SparkUrl, metric: FirstEventWithin, start: datetime, end: datetime
) -> DataFrame:
    """The events that can pair with a fact row of [start, end)."""
    from pyspark.sql import functions as F

    event_time = F.col(metric.event_time)
    window = int(metric.window.total_seconds() * 1_000_000)
    return entity_events(spark, mart, url, metric).where(
        (event_time >= wall_clock(start)) & (event_time < later(wall_clock(end), window))
    )


def _within_window(metric: FirstEventWithin, fact_time: Column) -> Column:
    """The metric's pairing of an event with a fact row (`entity` from fact_entities): the same entity, at or after
    the row's time, within the window (metric.within_window)."""
    from pyspark.sql import functions as F

    event_time = F.col(metric.event_time)
    window = int(metric.window.total_seconds() * 1_000_000)
    return (
        (F.col("callmart_entity") == F.col("entity"))
        & (event_time >= fact_time)
        & (event_time < later(fact_time, window))
    )


def fact_entities(
    spark: SparkSession, mart: Mart, url: SparkUrl, metric: FirstEventWithin, rows: DataFrame
) -> DataFrame:
    """The rows with `entity`, comparable with the events' `callmart_entity`."""
    from pyspark.sql import functions as F

    entity = entity_dimension(mart, metric)
    if not entity.keeps_history:
        return rows.withColumn("entity", F.col(metric.fact_entity))
    members = spark.table(qualified(url.catalog, url.database, entity.name)).select(
        F.col(entity.key).alias(_KEY), F.col(entity.business_key).alias("entity")
    )
    return rows.join(members, F.col(metric.fact_entity) == F.col(_KEY)).drop(_KEY)


def _typed(column: sa.Column[object]) -> Column:
    """The rows' column of that name as the fact table has it: its type, its name."""
    from pyspark.sql.functions import col

    return col(column.name).cast(spark_type(spark_type_name(column.type))).alias(column.name)


# --- doubts --------------------------------------------------------------------------------------------------------


def duplicate_rows(staged: DataFrame, fact: Fact, start: datetime, end: datetime) -> DataFrame:
    """The warnings for the period's staged rows identical, in every staged column, to an earlier row of the
    extract (file, then row), with rejects.REJECT_SCHEMA's columns: what the generic load records when the fact
    warns of duplicate rows; no rows when it does not."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    rows = _in_period(staged, fact, start, end)
    if not fact.warn_duplicate_rows:
        rows = rows.where(F.lit(False))
    content = [F.col(c.name) for c in (*fact.columns, *(r.value for r in fact.references))]
    earlier = Window.partitionBy(*content).orderBy(F.col(SOURCE_FILE), F.col(SOURCE_ROW))
    values = {
        SOURCE_FILE: F.col(SOURCE_FILE),
        SOURCE_ROW: F.col(SOURCE_ROW),
        "reason": F.lit(DUPLICATE_ROW),
        "severity": F.lit(WARNING),
    }
    repeated = rows.withColumn(_PLACE, F.row_number().over(earlier)).where(F.col(_PLACE) > F.lit(1))
    return repeated.select(
        *(values.get(f.name, F.lit(None)).cast(_arrow_spark_type(f.type)).alias(f.name) for f in REJECT_SCHEMA)
    )


# --- from Arrow ----------------------------------------------------------------------------------------------------


def arrow_frame(spark: SparkSession, rows: pa.Table) -> DataFrame:
    """A DataFrame of Arrow rows as the mart's Delta tables hold them: a timestamp without zone as TIMESTAMP_NTZ
    (given as it is, Spark would read it in the session's time zone), a time of day as its ISO text (tables.py);
    through Spark Connect too."""
    from pyspark.sql.types import StructField, StructType

    columns, fields = [], []
    for field, values in zip(rows.schema, rows.columns, strict=True):
        if pa.types.is_time(field.type):
            values = pc.cast(values, pa.string())
        columns.append(values)
        fields.append(StructField(field.name, _arrow_spark_type(values.type), True))
    return spark.createDataFrame(pa.table(columns, names=rows.schema.names), schema=StructType(fields))


_ARROW_TYPES: dict[pa.DataType, str] = {
    pa.int16(): "smallint",
    pa.int32(): "int",
    pa.int64(): "bigint",
    pa.bool_(): "boolean",
    pa.float64(): "double",
    pa.string(): "string",
    pa.large_string(): "string",
    pa.date32(): "date",
}


def _arrow_spark_type(kind: pa.DataType) -> DataType:
    """The Spark type of an Arrow type the mart's rows have."""
    if pa.types.is_timestamp(kind) and kind.tz is None:
        return spark_type("timestamp_ntz")
    if kind not in _ARROW_TYPES:
        raise TypeError(f"no Spark type for Arrow's {kind}")
    return spark_type(_ARROW_TYPES[kind])
