"""Who may read the mart on PostgreSQL: row level security on every table, no rights but the owner's and its readers'.

Supabase's Data API serves tables to the roles `anon` and `authenticated`, and default privileges may hand them
(or PUBLIC) rights on every new table. So each table callmart creates has row level security enabled with no policy
but its readers' (fail closed: a role with rights but no policy sees no row), and any right a default privilege gave
is taken back. The owner, which loads the mart, is not bound by row level security. A reader, given by `grant_read`,
has USAGE on the schema, SELECT on each table and a read policy on it, and nothing else; the readers are known by
those policies, so tables created later (an upgrade) get them too."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from psycopg import sql as pg_sql

from ..._errors import ConfigError
from .names import execute, identifier, regclass_name

__all__ = ["PUBLIC_API_ROLES", "grant_read", "move_to_schema", "readers", "revoke_read", "secure"]

PUBLIC_API_ROLES = frozenset({"anon", "authenticated", "public"})
"""Roles that anyone holding a public API key acts as: callmart never grants them anything."""

_POLICY_PREFIX = "callmart_read_"
_MARKER_TABLE = "dm_schema"


def readers(conn: sa.Connection, marker: sa.Table) -> list[str]:
    """The roles given read access to the mart whose marker table (dm_schema) is `marker`."""
    rows = conn.execute(
        sa.text(
            "SELECT substr(policyname, :from_) FROM pg_policies "
            "WHERE schemaname = :schema AND tablename = :table AND policyname LIKE :pattern ORDER BY 1"
        ),
        {
            "from_": len(_POLICY_PREFIX) + 1,
            "schema": marker.schema or conn.execute(sa.text("SELECT current_schema()")).scalar_one(),
            "table": marker.name,
            "pattern": _POLICY_PREFIX.replace("_", r"\_") + "%",
        },
    )
    return [str(role) for (role,) in rows]


def secure(
    conn: sa.Connection,
    tables: Iterable[sa.Table],
    reader_roles: Sequence[str] = (),
    sequences: Iterable[sa.Sequence] = (),
) -> None:
    """Enable row level security on each table and leave rights on the tables and sequences to the owner and, on
    the tables, the readers alone."""
    tables, sequences = list(tables), list(sequences)
    others = _grantees(conn, [*tables, *sequences])
    for table in tables:
        target = identifier(table)
        execute(conn, pg_sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(target))
        _revoke(
            conn,
            pg_sql.SQL("TABLE {}").format(target),
            others.get(regclass_name(conn, table), set()) - set(reader_roles),
        )
        for reader in reader_roles:
            _let_read(conn, table, reader)
    for sequence in sequences:
        _revoke(
            conn,
            pg_sql.SQL("SEQUENCE {}").format(identifier(sequence)),
            others.get(regclass_name(conn, sequence), set()),
        )


def _grantees(conn: sa.Connection, objects: Sequence[sa.Table | sa.Sequence]) -> dict[str, set[str]]:
    """The roles other than the owner that hold rights on each table or sequence, '' for PUBLIC, by name."""
    if not objects:
        return {}
    granted = conn.execute(
        sa.text(
            "SELECT t.name, CASE WHEN a.grantee = 0 THEN '' ELSE pg_get_userbyid(a.grantee) END "
            "FROM unnest(CAST(:objects AS text[])) AS t(name) JOIN pg_class c ON c.oid = CAST(t.name AS regclass) "
            "CROSS JOIN LATERAL aclexplode(c.relacl) a WHERE a.grantee <> c.relowner GROUP BY 1, 2"
        ),
        {"objects": [regclass_name(conn, o) for o in objects]},
    ).all()
    found: dict[str, set[str]] = {}
    for name, grantee in granted:
        found.setdefault(name, set()).add(grantee)
    return found


def _revoke(conn: sa.Connection, target: pg_sql.Composable, grantees: set[str]) -> None:
    for grantee in sorted(grantees):
        revoked = pg_sql.SQL("PUBLIC") if grantee == "" else pg_sql.Identifier(grantee)
        execute(conn, pg_sql.SQL("REVOKE ALL ON {} FROM {}").format(target, revoked))


def grant_read(conn: sa.Connection, tables: Sequence[sa.Table], role: str) -> None:
    """Let `role` read every table (schema usage, SELECT, a read policy), and change none."""
    _check_role(conn, role)
    schemas = sorted({t.schema for t in tables if t.schema})
    for schema in schemas:
        execute(conn, pg_sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(pg_sql.Identifier(schema), _role(role)))
    secure(conn, tables, [*readers(conn, _marker(tables)), role])


def revoke_read(conn: sa.Connection, tables: Sequence[sa.Table], role: str) -> None:
    """Take back what grant_read gave `role`."""
    _check_role(conn, role)
    for table in tables:
        execute(conn, pg_sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(identifier(table), _role(role)))
        execute(
            conn,
            pg_sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(
                pg_sql.Identifier(_POLICY_PREFIX + role), identifier(table)
            ),
        )
    for schema in sorted({t.schema for t in tables if t.schema}):
        execute(conn, pg_sql.SQL("REVOKE USAGE ON SCHEMA {} FROM {}").format(pg_sql.Identifier(schema), _role(role)))


def move_to_schema(
    conn: sa.Connection, tables: Iterable[sa.Table], sequences: Iterable[sa.Sequence], schema: str
) -> None:
    """ALTER … SET SCHEMA for each table (its indexes and constraints go with it) and sequence, the schema made
    first if missing (a mart an earlier callmart made in `public`)."""
    if not sa.inspect(conn).has_schema(schema):
        conn.execute(sa.schema.CreateSchema(schema))
    to = pg_sql.Identifier(schema)
    execute(
        conn,
        *(pg_sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(identifier(t), to) for t in tables),
        *(pg_sql.SQL("ALTER SEQUENCE {} SET SCHEMA {}").format(identifier(s), to) for s in sequences),
    )


def _marker(tables: Sequence[sa.Table]) -> sa.Table:
    return next(t for t in tables if t.name == _MARKER_TABLE)


def _role(role: str) -> pg_sql.Composable:
    return pg_sql.Identifier(role)


def _check_role(conn: sa.Connection, role: str) -> None:
    if role.lower() in PUBLIC_API_ROLES:
        raise ConfigError(
            f"{role} is a role that anyone with the public API key acts as: callmart grants it nothing; "
            "create a role for the analysts and grant them that role"
        )
    found = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}).first()
    if found is None:
        raise ConfigError(f"no role {role!r} in the database; create it first (CREATE ROLE {role} LOGIN ...)")


def _let_read(conn: sa.Connection, table: sa.Table, role: str) -> None:
    target, grantee = identifier(table), _role(role)
    execute(conn, pg_sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(target, grantee))
    exists = conn.execute(
        sa.text(
            "SELECT 1 FROM pg_policy WHERE polrelid = CAST(:table AS regclass) AND polname = :name",
        ),
        {"table": regclass_name(conn, table), "name": _POLICY_PREFIX + role},
    ).first()
    if exists is None:
        execute(
            conn,
            pg_sql.SQL("CREATE POLICY {} ON {} AS PERMISSIVE FOR SELECT TO {} USING (true)").format(
                pg_sql.Identifier(_POLICY_PREFIX + role), target, grantee
            ),
        )
