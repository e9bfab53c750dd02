"""Time the declared cleaning rules on a calls extract two ways, in turn: callmart's Arrow reader and clean_batch (what
every load runs, here on one thread), and DuckDB's own read_csv with the rules compiled to DuckDB SQL
(engines/duckdb/cleaning.py), the cleaned rows written into a table, then the rejects as a second query.

    callmart generate --calls 1000000 --out /tmp/extract
    python benchmarks/bench_cleaning.py /tmp/extract [--repeat 2] [--memory-limit 1GB]

DuckDB runs with two threads in a file of a temporary folder; `--memory-limit` is its buffers' cap (callmart caps
them at 128 MB, where the rules' query fits, a little slower). Each round prints both; the rows and rejects counted by
each must agree.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import sqlalchemy as sa

from callmart import rejects
from callmart.clean import clean_batch
from callmart.engines.duckdb.cleaning import BAD, cleaned_rows, reject_rows
from callmart.extract import find_files, read_source
from callmart.mart import CALLS
from callmart.stage import source_fields, staged_columns


def arrow_path(folder: Path) -> tuple[float, int, int]:
    """Seconds, loadable rows and rejects (one per bad field) of reading and cleaning the extract in Arrow, on one
    thread."""
    columns, fields = staged_columns(CALLS), source_fields(CALLS)
    started = time.perf_counter()
    loadable = rejected = 0
    for batch in read_source(folder, CALLS.source, fields, []):
        cleaned = clean_batch(batch, columns)
        loadable += cleaned.rows.num_rows - (pc.sum(cleaned.bad).as_py() or 0)
        rejected += cleaned.rejects.num_rows
    return time.perf_counter() - started, loadable, rejected


def duckdb_path(folder: Path, memory_limit: str) -> tuple[float, float, int, int]:
    """Seconds to read and clean the extract into a table, seconds to list its rejects, loadable rows and rejects
    (one per bad field), all in DuckDB."""
    columns, fields = staged_columns(CALLS), source_fields(CALLS)
    path = find_files(folder, CALLS.source)[0]
    with tempfile.TemporaryDirectory() as scratch:
        url = f"duckdb:///{scratch}/cleaning.duckdb"
        engine = sa.create_engine(url, connect_args={"config": {"memory_limit": memory_limit, "threads": "2"}})
        with engine.begin() as conn:
            # No line numbers: DuckDB's reader gives none, so this times the rules alone, a lower bound.
            read: list[sa.ColumnElement[Any]] = [
                *(sa.literal_column(f'"{name}"', sa.String).label(name) for name in fields),
                sa.literal_column("filename", sa.String).label(rejects.SOURCE_FILE),
                sa.cast(sa.literal(0), sa.BigInteger).label(rejects.SOURCE_ROW),
            ]
            raw = sa.select(*read).select_from(
                sa.func.read_csv(
                    str(path), sa.text("all_varchar = true, header = true, encoding = 'latin-1', filename = true")
                )
            )
            source = raw.subquery("raw")
            rows = cleaned_rows(source, columns)
            table = sa.Table("cleaned", sa.MetaData(), *(sa.Column(c.name, c.type) for c in rows.selected_columns))
            table.create(conn)
            started = time.perf_counter()
            conn.execute(sa.insert(table).from_select([c.name for c in rows.selected_columns], rows))
            cleaned = time.perf_counter() - started
            started = time.perf_counter()
            listed = reject_rows(source, columns).subquery()
            rejected = conn.execute(sa.select(sa.func.count()).select_from(listed)).scalar_one()
            listing = time.perf_counter() - started
            loadable = conn.execute(
                sa.select(sa.func.count()).select_from(table).where(sa.not_(table.c[BAD]))
            ).scalar_one()
        engine.dispose()
    return cleaned, listing, loadable, rejected


def main() -> None:
    """Run the rounds and print them."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("extract", type=Path, help="a folder holding a Llamadas*.csv extract")
    parser.add_argument("--repeat", type=int, default=2, help="rounds, each running both in turn")
    parser.add_argument("--memory-limit", default="1GB", help="DuckDB's buffers' cap")
    args = parser.parse_args()
    for round_ in range(1, args.repeat + 1):
        seconds, loadable, rejected = arrow_path(args.extract)
        print(f"round {round_}: Arrow reader and clean_batch, one thread: {seconds:.2f} s ({loadable:,} rows)")
        cleaned, listing, rows, listed = duckdb_path(args.extract, args.memory_limit)
        print(
            f"round {round_}: DuckDB read_csv and the rules as SQL: {cleaned:.2f} s into a table, "
            f"{listing:.2f} s for the rejects ({rows:,} rows)"
        )
        if (rows, listed) != (loadable, rejected):
            raise SystemExit(f"the two ways disagree: {rows} and {listed} against {loadable} and {rejected}")


if __name__ == "__main__":
    main()
