"""Statements SQLAlchemy does not offer, compiled for any SQL engine."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement, Executable

__all__ = ["AddColumn", "AddPrimaryKey", "CreateLike", "TableCommand", "Truncate"]


class AddPrimaryKey(Executable, ClauseElement):
    """ALTER TABLE … ADD PRIMARY KEY, for keys that only some engines should enforce."""

    inherit_cache = False

    def __init__(self, table: sa.Table, columns: tuple[str, ...]) -> None:
        self.table = table
        self.columns = columns


@compiles(AddPrimaryKey)
def _add_primary_key(element: AddPrimaryKey, compiler: Any, **kw: Any) -> str:
    columns = ", ".join(compiler.preparer.quote(c) for c in element.columns)
    return f"ALTER TABLE {compiler.preparer.format_table(element.table)} ADD PRIMARY KEY ({columns})"


class AddColumn(Executable, ClauseElement):
    """ALTER TABLE … ADD COLUMN, nullable, to bring an older mart up to date."""

    inherit_cache = False

    def __init__(self, table: sa.Table, column: sa.Column[Any]) -> None:
        self.table = table
        self.column = column


@compiles(AddColumn)
def _add_column(element: AddColumn, compiler: Any, **kw: Any) -> str:
    kind = compiler.dialect.type_compiler_instance.process(element.column.type)
    name = compiler.preparer.format_column(element.column)
    return f"ALTER TABLE {compiler.preparer.format_table(element.table)} ADD COLUMN {name} {kind}"


class TableCommand(Executable, ClauseElement):
    """A command on one whole table, named by `command`."""

    inherit_cache = False
    command = ""

    def __init__(self, table: sa.TableClause) -> None:
        self.table = table


@compiles(TableCommand)
def _table_command(element: TableCommand, compiler: Any, **kw: Any) -> str:
    return f"{element.command} {compiler.preparer.format_table(element.table)}"


class Truncate(TableCommand):
    """TRUNCATE TABLE: the space comes back at once, where DELETE would leave dead rows to vacuum."""

    inherit_cache = False
    command = "TRUNCATE TABLE"


class CreateLike(Executable, ClauseElement):
    """CREATE TABLE … (LIKE …): a bare table with another's columns, without its indexes or partitioning."""

    inherit_cache = False

    def __init__(self, table: sa.Table, like: sa.Table) -> None:
        self.table = table
        self.like = like


@compiles(CreateLike)
def _create_like(element: CreateLike, compiler: Any, **kw: Any) -> str:
    preparer = compiler.preparer
    return (
        f"CREATE TABLE {preparer.format_table(element.table)} "
        f"(LIKE {preparer.format_table(element.like)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    )
