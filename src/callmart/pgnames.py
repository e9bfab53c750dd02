"""Table names in PostgreSQL statements composed with psycopg: schema-qualified, quoted, never formatted by hand."""

from __future__ import annotations

import sqlalchemy as sa
from psycopg import sql as pg_sql

__all__ = ["identifier", "regclass_name"]


def identifier(table: sa.TableClause | sa.Sequence) -> pg_sql.Identifier:
    """The table's (or sequence's) name for psycopg's SQL composition, with its schema if it has one."""
    schema = getattr(table, "schema", None)
    return pg_sql.Identifier(schema, table.name) if schema else pg_sql.Identifier(table.name)


def regclass_name(conn: sa.Connection, table: sa.TableClause | sa.Sequence) -> str:
    """The table's (or sequence's) name as PostgreSQL's regclass reads it (schema-qualified, quoted where
    needed), to bind as a value."""
    preparer = conn.dialect.identifier_preparer
    if isinstance(table, sa.Sequence):
        return str(preparer.format_sequence(table))
    return str(preparer.format_table(table))
