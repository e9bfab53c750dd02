"""How PostgreSQL's CREATE TABLE is written for callmart's tables: registered with SQLAlchemy as the engine's package
loads, before any table is created, and without the driver."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateTable

from ..hints import PARTITIONED_BY_DAY, UNLOGGED

__all__: list[str] = []


@compiles(CreateTable, "postgresql")
def _create_table(create: CreateTable, compiler: Any, **kw: Any) -> str:
    """CREATE TABLE, UNLOGGED for scratch tables and PARTITION BY RANGE for tables partitioned by day."""
    text: str = compiler.visit_create_table(create, **kw)
    if create.element.info.get(UNLOGGED):
        text = text.replace("CREATE TABLE", "CREATE UNLOGGED TABLE", 1)
    partition_column = create.element.info.get(PARTITIONED_BY_DAY)
    if partition_column:
        text = text.rstrip() + f" PARTITION BY RANGE ({compiler.preparer.quote(partition_column)})\n\n"
    return text
