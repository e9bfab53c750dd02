"""A dimension merged into its Delta table by its attributes' SCD types: what dimension.load_dimension does on SQL,
as DataFrames joined to the dimension and one MERGE.

The staged rows (the staging table's columns: attributes, reference keys, source file and row) are de-duplicated
(the last row of a business key wins), given their member's key (the current version's, by business key, or an
inferred member's found by a lookup column) and marked as load_dimension marks them: new, changed in place, or a
new version where a historical (type 2) attribute changed. From them one source of rows, each the final state of a
dimension row, feeds one MERGE on the key: matched rows complete an inferred member, take changing (type 1)
attributes in every version, or close the version a change supersedes; unmatched rows (a null key to match on) are
new members and new versions, with keys after the largest, in business-key order, new members first (as
keys.next_keys numbers them). Fixed (type 0) attributes are never updated: a change becomes a warning.

The source reads the dimension within the MERGE, so a concurrent writer makes the commit conflict, and the merge is
decided again (control.with_retries). An extract already merged gives an empty source: nothing is committed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING

from ...declare import (
    BEGINNING,
    IS_CURRENT,
    IS_INFERRED,
    VALID_FROM,
    VALID_TO,
    VERSION,
    Dimension,
    Mart,
    Scd,
)
from ...rejects import ERROR, SOURCE_FILE, SOURCE_ROW, WARNING
from .control import with_retries
from .replace import wall_clock
from .sql import insert_clause, quote, sql, temporary_view

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import DataType

__all__ = ["MergeCounts", "lookup_columns", "merge_dimension"]

NEW, CHANGED, NEW_VERSION = "new", "changed", "new version"
"""A staged row's change, as dimension.py names them."""

# Working columns of the plan; the MERGE's source keeps the first two.
_MATCH, _COMPLETES = "callmart_match_key", "callmart_completes"
_KEY, _CHANGE, _VIA_LOOKUP, _COUNTED, _ORDER = "m_key", "m_change", "m_via_lookup", "m_counted", "m_order"
_INSERTS = "m_inserts"
_TARGET = "t_"
"""Prefix of the dimension's columns beside the staged ones."""


@dataclass(frozen=True)
class MergeCounts:
    """What a merge did, in load_dimension's terms: its StepResult has loaded = staged - superseded, rejected +=
    superseded, warned += warned, and inserted, updated and completed as here."""

    superseded: int
    """Staged rows dropped for a later row of the same business key (errors among the rejects)."""
    warned: int
    """Fixed attributes the extract would have changed (warnings among the rejects)."""
    completed: int
    """Staged rows that completed an inferred member."""
    updated: int
    """Rows changed in place: inferred members completed, changing attributes overwritten (closing a version
    is not counted)."""
    inserted: int
    """Rows inserted: new members and new versions."""
    new_versions: int
    """Of the rows inserted, new versions of known members."""
    rejects: DataFrame
    """The superseded rows and the warnings, in dm_rejects' columns (rejects.REJECT_SCHEMA). Read when the caller
    reads it: the merge does not change them (it never changes a fixed attribute, and the members it adds or
    completes take the staged values)."""


def lookup_columns(mart: Mart, dim: Dimension) -> list[str]:
    """Columns other than the business key by which references find the dimension's members (an agent inferred
    from a call knows its login name, not its id): merge_dimension's `lookups`."""
    return sorted({r.by for r in mart.references_to(dim.name)} - {dim.business_key})


def merge_dimension(
    spark: SparkSession,
    dim: Dimension,
    table_name: str,
    staged: DataFrame,
    business_date: datetime = BEGINNING,
    lookups: Sequence[str] = (),
) -> MergeCounts:
    """Merge the staged rows of a whole extract into the dimension `table_name` (qualified); new versions of
    members that keep history are valid from `business_date`. `staged` has the staging table's columns, its
    reference keys resolved (an own key and change in it are ignored); `lookups` as lookup_columns gives them."""

    def attempt() -> MergeCounts:
        plan = _Plan(dim, spark.table(table_name), staged, business_date, lookups)
        counts = plan.counts()
        if counts.inserted or counts.touched:
            _merge(spark, dim, table_name, plan.source(), plan.columns)
        return MergeCounts(
            superseded=counts.superseded,
            warned=counts.warned,
            completed=counts.completed,
            updated=counts.updated,
            inserted=counts.inserted,
            new_versions=counts.new_versions,
            rejects=plan.rejects(),
        )

    return with_retries(attempt, f"merging {dim.name}")


@dataclass(frozen=True)
class _Counts:
    superseded: int
    warned: int
    completed: int
    updated: int
    inserted: int
    new_versions: int
    touched: int
    """Rows the MERGE would update, counted or not (closing a version is not counted)."""


class _Plan:
    """The staged rows against one state of the dimension: their changes, the MERGE's source and the rejects."""

    def __init__(
        self,
        dim: Dimension,
        table: DataFrame,
        staged: DataFrame,
        business_date: datetime,
        lookups: Sequence[str],
    ) -> None:
        self.dim, self.table, self.business_date, self.lookups = dim, table, business_date, lookups
        self.columns = table.columns
        self.types: dict[str, DataType] = {f.name: f.dataType for f in table.schema.fields}
        self.tracked = [c.name for c in dim.columns] + [r.column for r in dim.references]
        self.staged, self.superseded = _latest_rows(self._typed(staged), dim.business_key)
        self.marked = self._marked()

    def _typed(self, staged: DataFrame) -> DataFrame:
        """The staged columns the merge reads, in the dimension's types."""
        from pyspark.sql.functions import col

        return staged.select(
            *(col(n).cast(self.types[n]).alias(n) for n in self.tracked),
            col(SOURCE_FILE).cast("string").alias(SOURCE_FILE),
            col(SOURCE_ROW).cast("bigint").alias(SOURCE_ROW),
        )

    # --- which member each row is, and what changed ---------------------------------------------------------------

    def _marked(self) -> DataFrame:
        """The staged rows with their member's key, its current row (columns prefixed t_) and their change."""
        from pyspark.sql.functions import col, lit, when

        dim = self.dim
        current = self.table.filter(col(IS_CURRENT)) if dim.keeps_history else self.table
        own = current.filter(col(dim.business_key).isNotNull()).select(
            col(dim.business_key).alias("m_business_key"), col(dim.key).alias(_KEY)
        )
        rows = self.staged.join(own, self.staged[dim.business_key] == own["m_business_key"], "left").drop(
            "m_business_key"
        )
        rows = rows.withColumn(_VIA_LOOKUP, lit(False))
        for lookup in self.lookups:
            rows = self._match_inferred(rows, lookup)
        target = _prefixed(self.table)
        rows = rows.join(target, rows[_KEY] == target[_TARGET + dim.key], "left")
        inferred = col(_TARGET + IS_INFERRED)
        change = when(col(_KEY).isNull(), lit(NEW)).when(col(_VIA_LOOKUP), lit(CHANGED))
        historical = _of_type(dim, Scd.HISTORICAL)
        if historical:
            change = change.when(~inferred & _differs(historical), lit(NEW_VERSION))
        changing = _of_type(dim, Scd.CHANGING)
        change = change.when(inferred | _differs(changing), lit(CHANGED))
        return rows.withColumn(_CHANGE, change)

    def _match_inferred(self, rows: DataFrame, lookup: str) -> DataFrame:
        """Give rows still without a key the key of an inferred member (no business key) of the same `lookup`
        value. Of rows sharing that value, the one of the lowest business key takes it (SQL's update would pick
        any); the others stay new."""
        from pyspark.sql import Window
        from pyspark.sql.functions import coalesce, col, row_number, when

        dim = self.dim
        inferred = self.table.filter(col(IS_INFERRED) & col(dim.business_key).isNull()).select(
            col(lookup).alias("m_lookup"), col(dim.key).alias("m_inferred_key")
        )
        joined = rows.join(inferred, col(_KEY).isNull() & (rows[lookup] == inferred["m_lookup"]), "left")
        first = Window.partitionBy("m_inferred_key").orderBy(dim.business_key)
        found = when(col("m_inferred_key").isNotNull() & (row_number().over(first) == 1), col("m_inferred_key"))
        return (
            joined.withColumn("m_found", found)
            .withColumn(_VIA_LOOKUP, col(_VIA_LOOKUP) | col("m_found").isNotNull())
            .withColumn(_KEY, coalesce(col(_KEY), col("m_found")))
            .drop("m_lookup", "m_inferred_key", "m_found")
        )

    # --- the MERGE's source ---------------------------------------------------------------------------------------

    def source(self) -> DataFrame:
        """Every dimension row the merge writes, in its final state: changes in place with the key they match,
        inserts with a null one; `_COMPLETES` marks inferred members completed, `_COUNTED` the rows that count as
        updated, `_ORDER` 1 the new versions inserted."""
        source = self._of_staged_rows()
        for part in self._other_versions():
            source = source.unionByName(part)
        return source

    def _of_staged_rows(self) -> DataFrame:
        """The rows the changed staged rows make, in one pass: a new member inserted, a member's current row
        changed in place, and for a new version both the current row closed and the new version inserted."""
        from pyspark.sql import Window
        from pyspark.sql.functions import array, coalesce, col, explode, lit, row_number
        from pyspark.sql.functions import max as max_

        dim = self.dim
        change = col(_CHANGE)
        is_version = change == lit(NEW_VERSION)
        inserts = array(change == lit(NEW))
        if dim.keeps_history:
            inserts = _when(is_version, array(lit(False), lit(True)), inserts)
        rows = self.marked.filter(change.isNotNull()).withColumn(_INSERTS, explode(inserts))
        # Keys after the largest, in business-key order, new members first: keys.next_keys run twice.
        largest = self.table.filter(col(dim.key) > lit(0)).agg(coalesce(max_(dim.key), lit(0)).alias("m_largest"))
        order = _when(is_version, lit(1), lit(0))
        numbered = Window.partitionBy(_INSERTS).orderBy(order, dim.business_key)
        rows = rows.crossJoin(largest).withColumn("m_new_key", col("m_largest") + row_number().over(numbered))
        inserting, new_version = col(_INSERTS), col(_INSERTS) & is_version
        values = {n: col(n) for n in self.tracked}
        values[dim.key] = _when(inserting, col("m_new_key"), col(_TARGET + dim.key))
        values[IS_INFERRED] = lit(False)
        if dim.keeps_history:
            for name in _of_type(dim, Scd.FIXED):
                # A new version keeps the first value of a fixed attribute.
                values[name] = _when(new_version, col(_TARGET + name), col(name))
            date, beginning = wall_clock(self.business_date), wall_clock(BEGINNING)
            values[VALID_FROM] = _when(inserting, _when(is_version, date, beginning), col(_TARGET + VALID_FROM))
            values[VALID_TO] = _when(inserting, lit(None), _when(is_version, date, col(_TARGET + VALID_TO)))
            values[IS_CURRENT] = inserting | (~is_version & col(_TARGET + IS_CURRENT))
            values[VERSION] = _when(
                inserting, coalesce(col(_TARGET + VERSION) + lit(1), lit(1)), col(_TARGET + VERSION)
            )
        completes = ~inserting & (change == lit(CHANGED)) & col(_TARGET + IS_INFERRED)
        overwrites = _differs(_of_type(dim, Scd.CHANGING))
        return self._rows(
            rows,
            values,
            match=_when(inserting, lit(None), col(_TARGET + dim.key)),
            completes=completes,
            counted=~inserting & (completes | overwrites),
            order=_when(new_version, lit(1), lit(0)),
        )

    def _other_versions(self) -> list[DataFrame]:
        """The earlier versions of members whose changing attributes changed: they take them too."""
        from pyspark.sql.functions import col, lit

        dim, changing = self.dim, _of_type(self.dim, Scd.CHANGING)
        if not dim.keeps_history or not changing:
            return []
        target = _prefixed(self.table)
        staged = self.marked.filter(col(_CHANGE).isin(CHANGED, NEW_VERSION)).select(
            *(col(n) for n in self.tracked), col(_KEY)
        )
        rows = staged.join(
            target,
            (staged[dim.business_key] == target[_TARGET + dim.business_key])
            & (staged[_KEY] != target[_TARGET + dim.key]),
        ).filter(_differs(changing))
        values = {c: col(_TARGET + c) for c in self.columns}
        values.update({n: col(n) for n in changing})
        return [
            self._rows(
                rows, values, match=col(_TARGET + dim.key), completes=lit(False), counted=lit(True), order=lit(0)
            )
        ]

    def _rows(
        self,
        rows: DataFrame,
        values: dict[str, Column],
        match: Column,
        completes: Column,
        counted: Column,
        order: Column,
    ) -> DataFrame:
        """Rows of the source: the dimension's columns in its types, the key to match, and what counts them."""
        return rows.select(
            *(values[c].cast(self.types[c]).alias(c) for c in self.columns),
            match.cast(self.types[self.dim.key]).alias(_MATCH),
            completes.alias(_COMPLETES),
            counted.alias(_COUNTED),
            order.cast("int").alias(_ORDER),
        )

    # --- what it does, and the rejects ----------------------------------------------------------------------------

    def counts(self) -> _Counts:
        """The merge's counts and the rejects', in one small query."""
        from pyspark.sql.functions import col, lit, when
        from pyspark.sql.functions import sum as sum_

        def total(condition: Column, name: str) -> Column:
            return sum_(when(condition, lit(1)).otherwise(lit(0))).alias(name)

        inserting, severity = col(_MATCH).isNull(), col("severity")
        of_source = self.source().agg(
            total(inserting, "inserted"),
            total(inserting & (col(_ORDER) == lit(1)), "new_versions"),
            total(~inserting & col(_COUNTED), "updated"),
            total(~inserting & col(_COMPLETES), "completed"),
            total(~inserting, "touched"),
        )
        of_rejects = self.rejects().agg(
            total(severity == lit(ERROR), "superseded"), total(severity == lit(WARNING), "warned")
        )
        row = of_source.crossJoin(of_rejects).first()
        found = {f.name: int(row[f.name] or 0) if row is not None else 0 for f in fields(_Counts)}
        return _Counts(**found)

    def rejects(self) -> DataFrame:
        """The superseded rows (errors) and the fixed attributes the extract would change (warnings)."""
        from pyspark.sql.functions import col

        dim = self.dim
        source = dim.column(dim.business_key).source
        found = [
            _reject_rows(
                self.superseded,
                source,
                _text(col(dim.business_key), self.types[dim.business_key]),
                f"duplicate {source}: a later row of the extract has the same one",
                ERROR,
            )
        ]
        known = self.marked.filter(col(_TARGET + dim.key).isNotNull() & ~col(_TARGET + IS_INFERRED))
        for name in _of_type(dim, Scd.FIXED):
            found.append(
                _reject_rows(
                    known.filter(~col(name).eqNullSafe(col(_TARGET + name))),
                    dim.column(name).source,
                    _text(col(name), self.types[name]),
                    f"fixed {name} would change; it keeps its first value",
                    WARNING,
                )
            )
        rejects = found[0]
        for more in found[1:]:
            rejects = rejects.unionByName(more)
        return rejects


# --- helpers -------------------------------------------------------------------------------------------------------


def _latest_rows(staged: DataFrame, business_key: str) -> tuple[DataFrame, DataFrame]:
    """Of rows sharing a business key, the last in file and row order, and the others."""
    from pyspark.sql import Window
    from pyspark.sql.functions import col, row_number

    later_first = Window.partitionBy(business_key).orderBy(col(SOURCE_FILE).desc(), col(SOURCE_ROW).desc())
    ranked = staged.withColumn("m_rank", row_number().over(later_first))
    return ranked.filter(col("m_rank") == 1).drop("m_rank"), ranked.filter(col("m_rank") > 1).drop("m_rank")


def _prefixed(table: DataFrame) -> DataFrame:
    """The dimension's columns named t_<column>, to stand beside the staged ones."""
    from pyspark.sql.functions import col

    return table.select(*(col(c).alias(_TARGET + c) for c in table.columns))


def _differs(names: Iterable[str]) -> Column:
    """Whether any staged column differs from the dimension's (NULL equal to NULL)."""
    from functools import reduce

    from pyspark.sql.functions import col, lit

    differences = [~col(n).eqNullSafe(col(_TARGET + n)) for n in names]
    return reduce(lambda a, b: a | b, differences) if differences else lit(False)


def _when(condition: Column, then: Column, otherwise: Column) -> Column:
    from pyspark.sql.functions import when

    return when(condition, then).otherwise(otherwise)


def _of_type(dim: Dimension, scd: Scd) -> list[str]:
    """Stored columns a source row can change, of one SCD type (references change in place)."""
    names = [c.name for c in dim.columns if c.name != dim.business_key and c.scd is scd]
    return names + [r.column for r in dim.references] if scd is Scd.CHANGING else names


def _text(value: Column, type_: DataType) -> Column:
    """A value as the SQL path writes it in a reject: Python's str of it."""
    from pyspark.sql.functions import lit, when
    from pyspark.sql.types import BooleanType

    if isinstance(type_, BooleanType):
        return when(value, lit("True")).when(~value, lit("False"))
    return value.cast("string")


def _reject_rows(rows: DataFrame, column: str | None, raw_value: Column, reason: str, severity: str) -> DataFrame:
    """Rows as rejects (rejects.make's columns), all with the same column, reason and severity."""
    from pyspark.sql.functions import col, lit

    return rows.select(
        col(SOURCE_FILE),
        col(SOURCE_ROW),
        lit(column).cast("string").alias("column_name"),
        raw_value.alias("raw_value"),
        lit(None).cast("string").alias("raw_line"),
        lit(reason).alias("reason"),
        lit(severity).alias("severity"),
    )


def _merge(spark: SparkSession, dim: Dimension, table_name: str, source: DataFrame, columns: list[str]) -> None:
    """One MERGE of the source on the key: completions, changes in place and closed versions, then inserts."""
    tracked = [c.name for c in dim.columns] + [r.column for r in dim.references]
    in_place = _of_type(dim, Scd.CHANGING) + ([VALID_TO, IS_CURRENT] if dim.keeps_history else [])
    clauses = [
        f"WHEN MATCHED AND s.{quote(_COMPLETES)} THEN UPDATE SET {_assign([*tracked, IS_INFERRED])}",
        *([f"WHEN MATCHED THEN UPDATE SET {_assign(in_place)}"] if in_place else []),
        f"WHEN NOT MATCHED THEN INSERT {insert_clause(columns)}",
    ]
    with temporary_view(spark, source) as view:
        sql(
            spark,
            f"MERGE INTO {table_name} AS t USING {view} AS s ON t.{quote(dim.key)} = s.{quote(_MATCH)} "
            + " ".join(clauses),
        ).collect()


def _assign(names: Iterable[str]) -> str:
    return ", ".join(f"{quote(n)} = s.{quote(n)}" for n in names)
