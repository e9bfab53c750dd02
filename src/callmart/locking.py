"""Who may write the mart: runs take turns, claim periods one at a time, and a dead run's periods are freed.

PostgreSQL: a run holds a session advisory lock on its id while it lives, each writing transaction takes a
transaction advisory lock on the mart (writers take turns, so dimension merges and inferred members never race),
and pending periods are claimed with FOR UPDATE SKIP LOCKED. DuckDB lets one process open the file for writing:
holding it is holding the mart."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from ._errors import MartBusy
from .dialect import is_postgresql

__all__ = ["alive", "busy_error", "hold_run", "take_write_turn"]

# Advisory lock namespaces (first key of the two-key form): arbitrary, but fixed for every callmart.
_RUN_LOCKS = 0x63616C6C  # "call"
_WRITE_LOCK = 0x6D617274  # "mart"


def take_write_turn(conn: sa.Connection) -> None:
    """Wait for the other writers of the mart, until this transaction ends."""
    if is_postgresql(conn):
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_WRITE_LOCK, 0)))


def hold_run(conn: sa.Connection, id_run: int) -> None:
    """Mark the run alive for as long as this connection stays open."""
    if is_postgresql(conn):
        conn.execute(sa.select(sa.func.pg_advisory_lock(_RUN_LOCKS, id_run)))


def alive(conn: sa.Connection, id_run: int | None) -> bool:
    """Whether the run still lives. On DuckDB, whoever can ask holds the file, so no other run does."""
    if id_run is None or not is_postgresql(conn):
        return False
    free = conn.execute(sa.select(sa.func.pg_try_advisory_lock(_RUN_LOCKS, id_run))).scalar_one()
    if free:
        conn.execute(sa.select(sa.func.pg_advisory_unlock(_RUN_LOCKS, id_run)))
    return not free


def busy_error(error: DBAPIError, where: str) -> MartBusy | None:
    """The one-line error for a DuckDB file that another process holds, if that is what error is."""
    text = str(error.orig)
    if "Could not set lock on file" not in text:
        return None
    holder = text.split("Conflicting lock is held in", 1)[-1].split(". See", 1)[0].strip()
    return MartBusy(f"another process holds the mart in {where} ({holder}); try again when it ends")
