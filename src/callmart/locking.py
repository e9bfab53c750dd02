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

from ._errors import MartBusy
from .dialect import is_postgresql, runs_share_the_mart

__all__ = ["alive", "busy_error", "run_alive", "take_write_turn"]

# Advisory lock namespaces (first key of the two-key form): arbitrary, but fixed for every callmart.
_RUN_LOCKS = 0x63616C6C  # "call"
_WRITE_LOCK = 0x6D617274  # "mart"


def take_write_turn(conn: sa.Connection) -> None:
    """Wait for the other writers of the mart, until this transaction ends."""
    if is_postgresql(conn):
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_WRITE_LOCK, 0)))


@contextmanager
def run_alive(engine: sa.Engine, id_run: int) -> Iterator[None]:
    """Mark the run alive within the block: a transaction of its own holds the run's lock until the block ends, or
    until the process dies and the server (or the pooler) rolls it back. It takes no snapshot, so it holds back
    no vacuum."""
    if not runs_share_the_mart(engine.dialect):
        yield
        return
    with engine.connect() as conn, conn.begin():
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_RUN_LOCKS, id_run)))
        yield


def alive(conn: sa.Connection, id_run: int | None) -> bool:
    """Whether the run still lives (its lock is held). On DuckDB, whoever can ask holds the file, so no other run
    does. A lock this asks for and gets stays until this transaction ends: its run is dead anyway."""
    if id_run is None or not is_postgresql(conn):
        return False
    free = conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_RUN_LOCKS, id_run))).scalar_one()
    return not free


def busy_error(error: DBAPIError, where: str) -> MartBusy | None:
    """The one-line error for a DuckDB file that another process holds, if that is what error is."""
    text = str(error.orig)
    if "Could not set lock on file" not in text:
        return None
    holder = text.split("Conflicting lock is held in", 1)[-1].split(". See", 1)[0].strip()
    return MartBusy(f"another process holds the mart in {where} ({holder}); try again when it ends")
