"""The mart's data dictionary: a comment for every table and column, made from the declarations, stored in the
database's catalog (COMMENT ON) and printed by `callmart docs` as Markdown or as a dbt sources file."""

from __future__ import annotations

import yaml

from .declare import DEFAULT_MEMBER_ID, IS_CURRENT, UNKNOWN, VALID_FROM, VALID_TO, VERSION, Dimension, Fact, Mart
from .rowhash import ROW_HASH
from .schema import PROCESSES, REJECTS, RUN_STEPS, RUNS, SOURCES, Schema
from .status import PERIOD_STATUSES, RUN_STATUSES, Status

__all__ = ["annotate", "dbt_sources", "markdown"]

_SYSTEM_TABLES = {
    PROCESSES: "The control table: the periods of each fact table to load and how each went "
    f"({Status.PENDING} -> {Status.RUNNING} -> {Status.DONE} | {Status.FAILED}; {Status.WAITING}: its extract does "
    "not cover it yet).",
    RUNS: f"One row per run: when it started and ended, and how it ended ({Status.DONE}, {Status.FAILED}, "
    f"{Status.INTERRUPTED} when stopped, {Status.ABANDONED} when it died without a word).",
    RUN_STEPS: "One row per step of a run (a dimension, a period): rows read, loaded and rejected, which must balance "
    "(rows_read = rows_loaded + rows_rejected).",
    REJECTS: "Every source row a run rejected (severity error) or loaded with a doubt (warning), with file, line, "
    "column, raw value and reason.",
    SOURCES: "Per dimension, the fingerprint of the extract files and rules of its last merge: an unchanged "
    "dimension is not merged again.",
    "dm_schema": "The version of the mart's tables, for `callmart init` to upgrade.",
}

_SYSTEM_COLUMNS = {
    "id_process": "the period's id",
    "fact_table": "the fact table the period belongs to",
    "start_date": "first moment of the period",
    "end_date": "end of the period, excluded",
    "status": f"{', '.join(PERIOD_STATUSES)} (periods); {', '.join(RUN_STATUSES)} (runs)",
    "process_run_date": "when the run that last took the period started",
    "id_run": "the run (dm_runs.id_run)",
    "finished_at": "when it ended",
    "rows_loaded": "rows loaded (in dm_processes: fact rows of the period)",
    "error_message": "why it failed, waits or was queued again",
    "version": "the version of the mart's tables",
    "started_at": "when the run started",
    "source_dir": "the folder of extracts the run read",
    "heartbeat_at": "the run's latest sign of life, where runs show it so (Spark); NULL elsewhere",
    "step": "the step's number in its run",
    "table_name": "the table the step loaded",
    "period_start": "the period's start, for a fact step",
    "period_end": "the period's end (excluded), for a fact step",
    "rows_read": "source rows read",
    "rows_rejected": "source rows rejected (not loaded)",
    "rows_warned": "source rows loaded with a doubt",
    "rows_inserted": "rows inserted",
    "rows_updated": "rows updated",
    "inferred_members": "inferred members created",
    "seconds": "seconds the step took",
    "source_file": "the extract file the row came from",
    "source_row": "the row's line in its file (1 = the first data line after the header)",
    "line_number": "the row's line in its file",
    "column_name": "the source column at fault, if one",
    "raw_value": "the value as exported (a NUL byte written as \\0)",
    "raw_line": "the row as exported, its fields joined by commas",
    "reason": "why it was rejected or doubted",
    "severity": "error (rejected) or warning (loaded)",
    "fingerprint": "SHA-256 of the dimension's rules and its files' bytes",
    "loaded_at": "when the merge was done",
    "change": "how the merge treats the staged row (new, changed, same)",
    "is_inferred": f"true for an inferred member: an id a call or login referred to before its own row arrived; its "
    f"attributes are '{UNKNOWN}' until that row completes it in place",
    VALID_FROM: "first moment this version of the member is valid (1900-01-01 for a first version)",
    VALID_TO: "moment this version stops being valid, excluded (NULL: still valid)",
    IS_CURRENT: "true for the member's latest version",
    VERSION: "the version's number, from 1",
    ROW_HASH: "hash of the row's fields, to find exact duplicate rows",
}


def annotate(schema: Schema) -> None:
    """Set the comment of every table and column of the schema."""
    for table in schema.tables.values():
        owner = _declared(schema.mart, table.name)
        if table.name.startswith("stg_") and owner is not None:
            table.comment = (
                f"Staging of {owner.name}: the rows of its latest load, cleaned, with their business ids and keys; "
                "emptied by each load (scratch, not for analysis)."
            )
        elif owner is not None:
            table.comment = owner.doc
        elif table.name in _SYSTEM_TABLES:
            table.comment = _SYSTEM_TABLES[table.name]
        for column in table.columns:
            if not column.comment:
                column.comment = _column_doc(schema.mart, owner, column.name)


def _declared(mart: Mart, table: str) -> Dimension | Fact | None:
    name = table.removeprefix("stg_")
    declarations: tuple[Dimension | Fact, ...] = (*mart.dimensions, *mart.facts)
    for declared in declarations:
        if declared.name == name:
            return declared
    return None


def _column_doc(mart: Mart, owner: Dimension | Fact | None, name: str) -> str:
    if owner is not None:
        found = _declared_column_doc(mart, owner, name)
        if found:
            return found
    return _SYSTEM_COLUMNS.get(name, name.replace("_", " "))


def _declared_column_doc(mart: Mart, owner: Dimension | Fact, name: str) -> str | None:
    for column in owner.columns:
        if column.name == name:
            default = f"; '{column.default}' when the export gives none" if column.default is not None else ""
            return f"{column.doc}{default} (export column {column.source})" if column.source else column.doc
    for ref in owner.references:
        if ref.column == name:
            return (
                f"{ref.doc}: the key of its {ref.dimension} member, found by {ref.by}; {DEFAULT_MEMBER_ID} (the "
                f"default member) when the export gives none; an id {ref.dimension} lacks gets an inferred member"
            )
        if ref.value.name == name:
            return f"{ref.value.doc} as exported (export column {ref.value.source}), staged to find the key"
    if name == owner.key:
        if isinstance(owner, Fact):
            return (
                "The call's key: the minute of the call times 100000 plus its place among that minute's calls in "
                "the extract; a reload gives every call the same key"
            )
        return (
            f"surrogate key; {DEFAULT_MEMBER_ID} is the default member (for a row that names no {owner.business_key}), "
            "other members get the keys after the largest, in load order"
        )
    if isinstance(owner, Fact):
        for metric in owner.metrics:
            if metric.column == name:
                return metric.describe()
    return None


def markdown(schema: Schema) -> str:
    """The data dictionary as Markdown: each table, then its columns with their types and meanings."""
    lines = ["# The callmart data dictionary", "", "Generated by `callmart docs` from the mart's declarations.", ""]
    for table in schema.tables.values():
        lines += [
            f"## `{table.name}`",
            "",
            str(table.comment or ""),
            "",
            "| column | type | meaning |",
            "|---|---|---|",
        ]
        for column in table.columns:
            meaning = str(column.comment or "").replace("|", "\\|")
            lines.append(f"| `{column.name}` | {str(column.type).lower()} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


def dbt_sources(schema: Schema, schema_name: str, source_name: str = "callmart") -> str:
    """A dbt `sources.yml` for the mart: its tables and columns with their meanings, and data tests: keys unique
    and not null, every fact and login key found in its dimension."""
    tables = []
    declarations: tuple[Dimension | Fact, ...] = (*schema.mart.dimensions, *schema.mart.facts)
    for declared in declarations:
        table = schema[declared.name]
        columns = []
        for column in table.columns:
            entry: dict[str, object] = {"name": str(column.name), "description": str(column.comment or "")}
            tests: list[object] = []
            if column.name == declared.key:
                tests += ["unique", "not_null"]
            for ref in declared.references:
                if ref.column == column.name:
                    tests += ["not_null", _found_in(schema, source_name, ref.dimension)]
            if isinstance(declared, Fact):
                for metric in declared.metrics:
                    if metric.column == column.name:
                        tests.append(_found_in(schema, source_name, metric.events))
            if tests:
                entry["data_tests"] = tests
            columns.append(entry)
        tables.append({"name": str(table.name), "description": str(table.comment or ""), "columns": columns})
    source: dict[str, object] = {"name": source_name, "schema": schema_name, "tables": tables}
    return str(yaml.safe_dump({"version": 2, "sources": [source]}, sort_keys=False, allow_unicode=True, width=120))


def _found_in(schema: Schema, source_name: str, dimension: str) -> dict[str, object]:
    """dbt's relationships test: every value is a key of the dimension (NULLs aside)."""
    key = schema.mart.dimension(dimension).key
    return {"relationships": {"arguments": {"to": f"source('{source_name}', '{dimension}')", "field": key}}}
