"""Statements composed with psycopg (DDL and the like, which take no parameters): names schema-qualified and quoted,
literals quoted by psycopg, never formatted by hand."""

from __future__ import annotations

import sqlalchemy as sa
from psycopg import sql as pg_sql

__all__ = ["execute", "identifier", "regclass_name"]


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


def execute(conn: sa.Connection, *statements: pg_sql.Composable) -> None:
    """Run composed statements on the connection's driver connection, in its transaction."""
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
