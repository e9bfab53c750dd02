"""Exploratory profile of the source extracts: columns, candidate keys and foreign-key coverage between files."""

from __future__ import annotations

import csv
import glob
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ._errors import SourceError
from .declare import Case, Dimension, Fact, Format, Mart, Parse, Reference
from .extract import SOURCE_FILE, SOURCE_ROW, detect_encoding, find_files, read_source

__all__ = ["ColumnProfile", "FileProfile", "KeyCoverage", "SourceProfile", "profile_source"]

TOP_VALUES = 3
EXAMPLES = 5
KEY_SEARCH_MAX_COLUMNS = 10
ROW_SEPARATOR = "\x1f"  # the ASCII unit separator: not found in exported text

# Type guesses, most specific first: a column gets the one most of its values match (ties: the earlier).
TYPE_PATTERNS = (
    ("integer", r"^[+-]?\d+$"),
    ("decimal", r"^[+-]?(\d+[.,]\d*|[.,]\d+)$"),
    ("duration", r"^\d{1,3}:[0-5]\d:[0-5]\d$"),
    ("datetime", r"^\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2}(:\d{2})?$|^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?"),
    ("date", r"^\d{1,2}/\d{1,2}/\d{4}$|^\d{4}-\d{2}-\d{2}$"),
)
DATETIME_FORMATS = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%m/%d/%Y")


@dataclass(frozen=True)
class ColumnProfile:
    """One source column: what it looks like and where it goes."""

    name: str
    loads_into: str | None
    type_guess: str
    present: int
    conforming: int
    missing: int
    distinct: int
    top: tuple[tuple[str, int], ...]
    minimum: str | None = None
    maximum: str | None = None


@dataclass(frozen=True)
class FileProfile:
    """One extract file: its rows, columns, candidate keys and reading problems."""

    file: str
    table: str
    encoding: str
    rows: int
    columns: tuple[ColumnProfile, ...]
    candidate_keys: tuple[tuple[str, ...], ...]
    duplicate_rows: int
    problems: tuple[str, ...]


@dataclass(frozen=True)
class KeyCoverage:
    """How many values of a referencing column the referenced extract knows."""

    table: str
    column: str
    refers_to: str
    by: str
    rows: int
    missing: int
    found: int
    not_found: int
    orphan_values: int
    examples: tuple[str, ...]

    @property
    def coverage(self) -> float | None:
        """Share of the present values that the referenced extract knows."""
        present = self.found + self.not_found
        return self.found / present if present else None


@dataclass(frozen=True)
class SourceProfile:
    """The profile of every extract of a source folder."""

    source_dir: str
    files: tuple[FileProfile, ...]
    coverage: tuple[KeyCoverage, ...]
    errors: tuple[str, ...]


def profile_source(source_dir: Path | str, mart: Mart) -> SourceProfile:
    """Profile every extract the mart reads from source_dir, and the foreign keys between them."""
    folder = Path(source_dir)
    files: list[FileProfile] = []
    errors: list[str] = []
    read: dict[str, pa.Table] = {}
    tables: tuple[Dimension | Fact, ...] = (*mart.dimensions, *mart.facts)
    for table in tables:
        try:
            for path in find_files(folder, table.source):
                profile, data = _profile_file(folder, path, table, mart.missing)
                files.append(profile)
                data = data.select([f for f in _key_fields(table, mart) if f in data.column_names])
                read[table.name] = pa.concat_tables([read[table.name], data]) if table.name in read else data
        except SourceError as error:
            errors.append(f"{table.name}: {error}")
    coverage = [
        _coverage(table, ref, read[table.name], mart.dimension(ref.dimension), read[ref.dimension])
        for table in tables
        for ref in table.references
        if table.name in read and ref.dimension in read
    ]
    return SourceProfile(str(folder), tuple(files), tuple(coverage), tuple(errors))


def _key_fields(table: Dimension | Fact, mart: Mart) -> list[str]:
    """The source fields the foreign-key coverage compares: the table's references and what others refer to."""
    fields = [r.value.source for r in table.references if r.value.source]
    for ref in mart.references_to(table.name):
        source = table.column(ref.by).source if isinstance(table, Dimension) else None
        if source:
            fields.append(source)
    return list(dict.fromkeys(fields))


def _declared_fields(table: Dimension | Fact) -> dict[str, str]:
    """Source field -> the mart column it loads into."""
    fields: dict[str, str] = {}
    for column in table.columns:
        if column.source:
            fields.setdefault(column.source, column.name)
    for ref in table.references:
        if ref.value.source:
            fields.setdefault(ref.value.source, ref.column)
    return fields


def _csv_header(path: Path, encoding: str) -> list[str]:
    with path.open("r", encoding=encoding, newline="") as handle:
        first = next(csv.reader(handle), [])
    return [name.lstrip("\ufeff").strip() for name in first]


def _profile_file(
    folder: Path, path: Path, table: Dimension | Fact, not_given: Sequence[str]
) -> tuple[FileProfile, pa.Table]:
    declared = _declared_fields(table)
    encoding = detect_encoding(path, table.source.encoding) if path.stat().st_size else table.source.encoding
    problems: list[str] = []
    fields = list(declared)
    if table.source.format is Format.CSV and path.stat().st_size:
        header = _csv_header(path, encoding)
        lacking = [f for f in declared if f not in header]
        if lacking:
            problems.append(f"lacks the column(s) {', '.join(lacking)}: the load stops on this file")
        extra = [f for f in header if f not in declared]
        if extra:
            problems.append(f"column(s) the load ignores: {', '.join(extra)}")
        fields = [f for f in header if f]
    found: list[pa.Table] = []
    one_file = replace(table.source, pattern=glob.escape(path.name))
    batches = list(read_source(folder, one_file, fields, found))
    data = pa.Table.from_batches(batches) if batches else _empty(fields)
    data = data.drop_columns([c for c in (SOURCE_FILE, SOURCE_ROW) if c in data.column_names])
    problems.extend(_reading_problems(found))
    columns = tuple(_profile_column(name, data[name], declared.get(name), not_given) for name in data.column_names)
    keys, duplicates = _candidate_keys(data, columns)
    profile = FileProfile(path.name, table.name, encoding, data.num_rows, columns, keys, duplicates, tuple(problems))
    return profile, data


def _empty(fields: Sequence[str]) -> pa.Table:
    return pa.table({name: pa.array([], pa.string()) for name in fields})


def _reading_problems(found: list[pa.Table]) -> list[str]:
    """Rows that could not be split into the header's fields, counted by reason."""
    if not found:
        return []
    reasons = pa.concat_tables(found).filter(pc.field("severity") == "error")["reason"]
    counts = pc.value_counts(reasons).to_pylist()
    return [f"{c['counts']:,} row(s): {c['values']}" for c in sorted(counts, key=lambda c: -c["counts"])]


def _missing(values: pa.ChunkedArray, not_given: Sequence[str]) -> pa.ChunkedArray:
    given = pc.is_in(pc.utf8_upper(pc.utf8_trim_whitespace(values)), value_set=pa.array(not_given, pa.string()))
    return pc.or_(pc.is_null(values), pc.fill_null(given, True))


def _profile_column(
    name: str, values: pa.ChunkedArray, loads_into: str | None, not_given: Sequence[str]
) -> ColumnProfile:
    missing = _missing(values, not_given)
    present = pc.utf8_trim_whitespace(pc.filter(values, pc.invert(missing)))
    n = len(present)
    matches = {kind: pc.sum(pc.match_substring_regex(present, pattern)).as_py() or 0 for kind, pattern in TYPE_PATTERNS}
    kind, conforming = max(matches.items(), key=lambda item: item[1]) if n else ("empty", 0)
    if conforming * 2 < n:  # most values are not of any one type
        kind, conforming = "text", n
    counts = sorted(pc.value_counts(present).to_pylist(), key=lambda c: (-c["counts"], c["values"]))
    top = tuple((c["values"], c["counts"]) for c in counts[:TOP_VALUES])
    low, high = _range(present, kind, [c["values"] for c in counts])
    return ColumnProfile(
        name=name,
        loads_into=loads_into,
        type_guess=kind,
        present=n,
        conforming=conforming,
        missing=len(values) - n,
        distinct=len(counts),
        top=top,
        minimum=low,
        maximum=high,
    )


def _range(present: pa.ChunkedArray, kind: str, distinct: list[str]) -> tuple[str | None, str | None]:
    """The smallest and largest value, as written, of a numeric, duration or date column."""
    pattern = dict(TYPE_PATTERNS).get(kind)
    if pattern is None or not distinct:
        return None, None
    written = pa.array(distinct, pa.string())
    written = pc.filter(written, pc.match_substring_regex(written, pattern))
    if kind in ("integer", "decimal"):
        order = pc.cast(pc.replace_substring(written, ",", "."), pa.float64())
    elif kind == "duration":
        parts = pc.split_pattern(written, ":")
        h, m, s = (pc.cast(pc.list_element(parts, i), pa.int64()) for i in range(3))
        order = pc.add(pc.add(pc.multiply(h, 3600), pc.multiply(m, 60)), s)
    else:
        parsed = [pc.strptime(written, format=f, unit="s", error_is_null=True) for f in DATETIME_FORMATS]
        order = pc.coalesce(*parsed)
    if len(written) == 0 or order.null_count == len(order):
        return None, None
    return written[pc.index(order, pc.min(order))].as_py(), written[pc.index(order, pc.max(order))].as_py()


def _candidate_keys(data: pa.Table, columns: tuple[ColumnProfile, ...]) -> tuple[tuple[tuple[str, ...], ...], int]:
    """Columns, else pairs of columns, present and unique in every row; and how many rows repeat an earlier one."""
    # With a repeated row no set of columns is a key: the pairs are not searched.
    rows = data.num_rows
    if not rows:
        return (), 0
    duplicates = rows - _distinct_rows(data.columns)
    single = tuple((c.name,) for c in columns if c.missing == 0 and c.distinct == rows)
    if single or duplicates or len(columns) > KEY_SEARCH_MAX_COLUMNS:
        return single, duplicates
    complete = [c for c in columns if c.missing == 0]
    pairs = [
        (a.name, b.name) for a, b in itertools.combinations(complete, 2) if a.distinct * b.distinct >= rows
    ]  # fewer combinations than rows cannot tell every row apart
    found = tuple(pair for pair in pairs if data.group_by(list(pair)).aggregate([]).num_rows == rows)
    return found, duplicates


def _distinct_rows(columns: Sequence[pa.ChunkedArray]) -> int:
    """How many distinct rows the columns make: joined into one text per row, since grouping by each column took
    far more memory."""
    joined = pc.binary_join_element_wise(*columns, ROW_SEPARATOR, null_handling="replace", null_replacement="\x00")
    return int(pc.count_distinct(joined, mode="all").as_py())


def _normalised(values: pa.ChunkedArray, parse: Parse, case: Case | None) -> pa.ChunkedArray:
    """Values as the load compares them: trimmed, case-folded, integers without leading zeros."""
    text = pc.utf8_trim_whitespace(values)
    if case is Case.UPPER:
        text = pc.utf8_upper(text)
    elif case is Case.LOWER:
        text = pc.utf8_lower(text)
    if parse is Parse.INTEGER:
        numeric = pc.match_substring_regex(text, r"^[+-]?\d{1,18}$")
        as_int = pc.cast(pc.if_else(numeric, text, pa.scalar(None, pa.string())), pa.int64())
        text = pc.if_else(numeric, pc.cast(as_int, pa.string()), text)
    return text


def _coverage(
    table: Dimension | Fact, ref: Reference, data: pa.Table, parent: Dimension, parent_data: pa.Table
) -> KeyCoverage:
    by = parent.column(ref.by)
    field, parent_field = ref.value.source, by.source
    assert field is not None and parent_field is not None
    raw = data[field] if field in data.column_names else pa.chunked_array([pa.nulls(data.num_rows, pa.string())])
    given = pc.utf8_trim_whitespace(raw)
    declared = pc.fill_null(pc.is_in(given, value_set=pa.array(ref.value.missing, pa.string())), True)
    missing = pc.or_(pc.is_null(given), declared)
    present = _normalised(pc.filter(given, pc.invert(missing)), ref.value.parse, ref.value.case or by.case)
    known = pa.array([], pa.string())
    if parent_field in parent_data.column_names:
        known = pc.unique(_normalised(parent_data[parent_field], by.parse, by.case or ref.value.case))
    orphan = pc.filter(present, pc.invert(pc.is_in(present, value_set=known)))
    counts = sorted(pc.value_counts(orphan).to_pylist(), key=lambda c: (-c["counts"], c["values"]))
    return KeyCoverage(
        table=table.name,
        column=field,
        refers_to=parent.name,
        by=parent_field,
        rows=data.num_rows,
        missing=data.num_rows - len(present),
        found=len(present) - len(orphan),
        not_found=len(orphan),
        orphan_values=len(counts),
        examples=tuple(c["values"] for c in counts[:EXAMPLES]),
    )
