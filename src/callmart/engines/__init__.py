"""The engines callmart runs on, one folder each, and the registry that picks one from a URL or a connection.

Generic code asks the engine object (its capability flags and operations), never which database it talks to. A
new engine is a new folder with an Engine subclass, added to ENGINES."""

from __future__ import annotations

import sqlalchemy as sa

from .._errors import ConfigError
from .base import Engine
from .duckdb import DuckDB
from .postgres import PostgreSQL
from .spark import Spark

__all__ = ["ENGINES", "Engine", "for_dialect", "for_url", "of"]

ENGINES: tuple[Engine, ...] = (DuckDB(), PostgreSQL(), Spark())


def for_url(url: sa.URL) -> Engine:
    """The engine a URL names by its scheme."""
    for engine in ENGINES:
        if url.drivername in engine.SCHEMES:
            return engine
    schemes = " or ".join(sorted(f"{s}://" for e in ENGINES for s in e.SCHEMES if "+" not in s))
    raise ConfigError(f"unsupported database {url.drivername!r}: use {schemes}")


def for_dialect(dialect: sa.Dialect) -> Engine:
    """The engine behind a SQLAlchemy dialect."""
    return next(engine for engine in ENGINES if dialect.name == engine.DIALECT)


def of(conn: sa.Connection) -> Engine:
    """The engine a connection talks to."""
    return for_dialect(conn.dialect)
