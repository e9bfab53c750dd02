"""Who may write the mart: runs take turns, claim periods one at a time, and a dead run's periods are freed.

PostgreSQL: while a run lives, a transaction of its own stays open holding a transaction advisory lock on its id;
each writing transaction takes a transaction advisory lock on the mart (writers take turns, so dimension merges and
inferred members never race), and pending periods are claimed with FOR UPDATE SKIP LOCKED. Nothing outlives a
transaction, so all of it holds through a transaction-mode pooler (Supabase's, PgBouncer's), which keeps a
transaction on one server connection until it ends, and rolls it back when its client goes. DuckDB lets one
process open the file for writing: holding it is holding the mart."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from . import engines
from ._errors import MartBusy

__all__ = ["alive", "busy_error", "run_alive", "take_write_turn"]


def take_write_turn(conn: sa.Connection) -> None:
    """Wait for the other writers of the mart, until this transaction ends."""
    engines.of(conn).take_write_turn(conn)


@contextmanager
def run_alive(engine: sa.Engine, id_run: int) -> Iterator[None]:
    """Mark the run alive within the block, as its engine does (nothing where one process holds the mart)."""
    with engines.for_dialect(engine.dialect).run_alive(engine, id_run):
        yield


def alive(conn: sa.Connection, id_run: int | None) -> bool:
    """Whether the run still lives. Where runs cannot share the mart, whoever can ask holds it, so no other run
    does."""
    return id_run is not None and engines.of(conn).alive(conn, id_run)


def busy_error(error: DBAPIError, where: str) -> MartBusy | None:
    """The one-line error for a DuckDB file that another process holds, if that is what error is."""
    text = str(error.orig)
    if "Could not set lock on file" not in text:
        return None
    holder = text.split("Conflicting lock is held in", 1)[-1].split(". See", 1)[0].strip()
    return MartBusy(f"another process holds the mart in {where} ({holder}); try again when it ends")
