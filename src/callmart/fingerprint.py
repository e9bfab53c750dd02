"""Fingerprints of a dimension's source files and declaration, so that a run can skip a dimension whose
extract has not changed since it was last merged."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from .declare import Dimension
from .extract import find_files
from .schema import SOURCES, Schema

__all__ = ["fingerprint", "is_current", "remember"]


def fingerprint(source_dir: Path, dimension: Dimension) -> str:
    """A digest of the declaration (so a changed rule or history setting reloads) and of every matching file's
    name and bytes (not its timestamp: an extract copied again unchanged is unchanged)."""
    digest = hashlib.sha256(repr(dimension).encode())
    for path in find_files(source_dir, dimension.source):
        digest.update(f"\0{path.name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def is_current(conn: sa.Connection, schema: Schema, dimension: Dimension, digest: str) -> bool:
    """Whether the dimension was last merged from exactly these sources, by these rules."""
    sources = schema[SOURCES]
    found = conn.execute(sa.select(sources.c.fingerprint).where(sources.c.table_name == dimension.name)).all()
    return [row.fingerprint for row in found] == [digest]


def remember(conn: sa.Connection, schema: Schema, dimension: Dimension, digest: str, id_run: int) -> None:
    """Record what the dimension was merged from, in the transaction of the merge."""
    sources = schema[SOURCES]
    conn.execute(sa.delete(sources).where(sources.c.table_name == dimension.name))
    conn.execute(
        sa.insert(sources).values(
            table_name=dimension.name, fingerprint=digest, id_run=id_run, loaded_at=datetime.now()
        )
    )
