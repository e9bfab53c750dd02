"""Statistics of freshly filled tables: without them PostgreSQL takes a million rows for a few thousand and plans
sorts that spill to disk where hash joins fit in memory."""

from __future__ import annotations

import sqlalchemy as sa
from psycopg import sql as pg_sql

from ..hints import ANALYZED
from .names import execute, identifier

__all__ = ["analyze"]


def analyze(conn: sa.Connection, table: sa.Table) -> None:
    """ANALYZE the table, of the columns its info names under ANALYZED if it does: autovacuum analyzes the rest
    soon after."""
    columns = table.info.get(ANALYZED, ())
    named = (
        pg_sql.SQL(" ({})").format(pg_sql.SQL(", ").join(map(pg_sql.Identifier, columns)))
        if columns
        else pg_sql.SQL("")
    )
    execute(conn, pg_sql.SQL("ANALYZE {}{}").format(identifier(table), named))
