"""Rows that could not be loaded (errors) or were loaded with a doubt (warnings), as Arrow tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "DUPLICATE_ROW",
    "ERROR",
    "REJECT_SCHEMA",
    "SOURCE_FILE",
    "SOURCE_ROW",
    "WARNING",
    "concat",
    "make",
    "of_step",
    "rows_rejected",
    "warnings",
]

SOURCE_FILE = "source_file"
SOURCE_ROW = "source_row"
ERROR, WARNING = "error", "warning"
DUPLICATE_ROW = "exact duplicate of an earlier row of the extract"
"""Why a row repeating an earlier one of the extract, field for field, is not loaded again."""

REJECT_SCHEMA = pa.schema(
    [
        (SOURCE_FILE, pa.string()),
        (SOURCE_ROW, pa.int64()),
        ("column_name", pa.string()),
        ("raw_value", pa.string()),
        ("raw_line", pa.string()),
        ("reason", pa.string()),
        ("severity", pa.string()),
    ]
)


def make(
    files: pa.Array | Sequence[str],
    rows: pa.Array | Sequence[int],
    column: str | None,
    raw_values: pa.Array | Sequence[str | None] | None,
    raw_lines: pa.Array | Sequence[str | None] | None,
    reason: str,
    severity: str = ERROR,
) -> pa.Table:
    """One reject row per (file, row), all with the same column, reason and severity."""
    n = len(rows)
    return pa.table(
        {
            SOURCE_FILE: pa.array(files, pa.string()),
            SOURCE_ROW: pa.array(rows, pa.int64()),
            "column_name": pa.array([column] * n, pa.string()),
            "raw_value": _storable(pa.array(raw_values if raw_values is not None else [None] * n, pa.string())),
            "raw_line": _storable(pa.array(raw_lines if raw_lines is not None else [None] * n, pa.string())),
            "reason": pa.array([reason] * n, pa.string()),
            "severity": pa.array([severity] * n, pa.string()),
        },
        schema=REJECT_SCHEMA,
    )


def _storable(text: pa.Array) -> pa.Array:
    """Raw text as every engine can store it: PostgreSQL's text holds no NUL byte, so it is written as \\0."""
    return pc.replace_substring(text, "\x00", "\\0")


def concat(tables: Sequence[pa.Table]) -> pa.Table:
    """All reject rows of several tables; a column some lack (a row's part of its step) is null in their rows."""
    return pa.concat_tables(tables, promote_options="default") if tables else REJECT_SCHEMA.empty_table()


def rows_rejected(table: pa.Table) -> int:
    """Distinct source rows with at least one error."""
    errors = table.filter(pc.equal(table["severity"], ERROR))
    return len(set(zip(errors[SOURCE_FILE].to_pylist(), errors[SOURCE_ROW].to_pylist(), strict=True)))


def warnings(table: pa.Table) -> int:
    """Warning rows: doubts about rows that were loaded."""
    return int(pc.sum(pc.equal(table["severity"], WARNING)).as_py() or 0)


def of_step(found: pa.Table, id_run: int, table: str, period: tuple[datetime, datetime] | None) -> pa.Table:
    """A step's rejects as rows of the mart's rejects table (dm_rejects), in its columns' order."""
    n = found.num_rows
    start, end = period or (None, None)
    return pa.table(
        {
            "id_run": pa.array([id_run] * n, pa.int32()),
            "table_name": pa.array([table] * n, pa.string()),
            "period_start": pa.array([start] * n, pa.timestamp("us")),
            "period_end": pa.array([end] * n, pa.timestamp("us")),
            "source_file": found[SOURCE_FILE],
            "line_number": found[SOURCE_ROW],
            "column_name": found["column_name"],
            "raw_value": found["raw_value"],
            "raw_line": found["raw_line"],
            "reason": found["reason"],
            "severity": found["severity"],
        }
    )
