"""SQLAlchemy tables built from the mart's declarations, and the idempotent creation of the mart."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from . import engines
from .aggregates import aggregate_tables
from .declare import (
    BEGINNING,
    DEFAULT_MEMBER_ID,
    IS_CURRENT,
    IS_INFERRED,
    VALID_FROM,
    VALID_TO,
    VERSION,
    Column,
    Dimension,
    Fact,
    Mart,
    Type,
)
from .engines import hints
from .engines.sql.ddl import AddColumn, AddPrimaryKey
from .lift import lift_tables
from .rowhash import ROW_HASH

__all__ = ["PROCESSES", "REJECTS", "RUNS", "RUN_STEPS", "SCHEMA_VERSION", "SOURCES", "Schema"]

SCHEMA_VERSION = 7
PROCESSES = "dm_processes"
RUNS, RUN_STEPS, REJECTS = "dm_runs", "dm_run_steps", "dm_rejects"
SOURCES = "dm_sources"

_TYPES: dict[Type, Callable[[], sa.types.TypeEngine[Any]]] = {
    Type.INTEGER: sa.Integer,
    Type.BIGINT: sa.BigInteger,
    Type.TEXT: sa.String,
    Type.TIMESTAMP: sa.DateTime,
    Type.TIME: sa.Time,
    Type.BOOLEAN: sa.Boolean,
}


def sql_type(type_: Type) -> sa.types.TypeEngine[Any]:
    """The SQLAlchemy type of a logical type."""
    return _TYPES[type_]()


def _column(col: Column, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(col.name, sql_type(col.type), nullable=nullable)


def _history_columns() -> list[sa.Column[Any]]:
    """valid_from <= time < valid_to (NULL: still valid); is_current marks the latest version."""
    return [
        sa.Column(VALID_FROM, sa.DateTime),
        sa.Column(VALID_TO, sa.DateTime),
        sa.Column(IS_CURRENT, sa.Boolean),
        sa.Column(VERSION, sa.Integer),
    ]


def _key(name: str, type_: Type = Type.INTEGER) -> sa.Column[object]:
    return sa.Column(name, sql_type(type_), primary_key=True, autoincrement=False)


@dataclass
class Schema:
    """Every table and sequence of a mart, with lookups by declared name.

    `name`: the database schema holding them, named in every statement; None for the connection's default."""

    mart: Mart
    name: str | None = None
    metadata: sa.MetaData = field(init=False)
    tables: dict[str, sa.Table] = field(default_factory=dict)
    sequences: dict[str, sa.Sequence] = field(default_factory=dict)
    indexes: list[sa.Index] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.metadata = sa.MetaData(schema=self.name)
        for dim in self.mart.dimensions:
            self._dimension(dim)
        for fact in self.mart.facts:
            self._fact(fact)
        self._processes()
        for table in [*aggregate_tables(self.metadata), *lift_tables(self.metadata)]:
            self._add(table)

    def __getitem__(self, name: str) -> sa.Table:
        return self.tables[name]

    @property
    def processes(self) -> sa.Table:
        """The control table of periods to load."""
        return self.tables[PROCESSES]

    def _add(self, table: sa.Table) -> sa.Table:
        self.tables[table.name] = table
        return table

    def _dimension(self, dim: Dimension) -> None:
        refs = [sa.Column(r.column, sa.Integer, nullable=False) for r in dim.references]
        table = self._add(
            sa.Table(
                dim.name,
                self.metadata,
                _key(dim.key),
                *(_column(c) for c in dim.columns),
                *refs,
                sa.Column(IS_INFERRED, sa.Boolean, nullable=False, server_default=sa.false()),
                *(_history_columns() if dim.keeps_history else []),
            )
        )
        lookups = {dim.business_key} | {r.by for r in self.mart.references_to(dim.name)}
        for name in sorted(lookups):
            self.indexes.append(sa.Index(f"ix_{dim.name}_{name}", table.c[name]))
        self._staging(
            dim.staging, dim.columns, dim, extra=[sa.Column(dim.key, sa.Integer), sa.Column("change", sa.String)]
        )

    def _fact(self, fact: Fact) -> None:
        columns = [_column(c, nullable=c.name != fact.time_column) for c in fact.columns]
        self._add(
            sa.Table(
                fact.name,
                self.metadata,
                sa.Column(fact.key, sa.BigInteger, nullable=False, autoincrement=False),
                *columns,
                *(sa.Column(r.column, sa.Integer, nullable=False) for r in fact.references),
                *(sa.Column(m.column, sa.Integer) for m in fact.metrics),
                # The key is unique by construction (it holds the minute); the time joins it in the primary key so
                # that PostgreSQL can partition the table by day, making a period's replace a swap of its partition.
                info={
                    hints.PARTITIONED_BY_DAY: fact.time_column,
                    hints.PRIMARY_KEY: (fact.key, fact.time_column),
                    # What joins and filters use: a day's load refreshes these statistics in its transaction.
                    # The metric's threshold column too: the lift's baselines select the calls under it.
                    hints.ANALYZED: tuple(
                        dict.fromkeys(
                            (
                                fact.key,
                                fact.time_column,
                                *(r.column for r in fact.references),
                                *(m.column for m in fact.metrics),
                                *(m.threshold_column for m in fact.metrics),
                            )
                        )
                    ),
                },
            )
        )
        extra: list[sa.Column[object]] = [sa.Column(fact.key, sa.BigInteger)]
        if fact.warn_duplicate_rows:
            extra.append(sa.Column(ROW_HASH, sa.BigInteger))
        self._staging(fact.staging, fact.columns, fact, extra=extra)
        for metric in fact.metrics:
            events = self.tables[metric.events]
            self.indexes.append(
                sa.Index(
                    f"ix_{metric.events}_{metric.event_entity}_{metric.event_time}",
                    events.c[metric.event_entity],
                    events.c[metric.event_time],
                )
            )

    def _staging(
        self, name: str, columns: tuple[Column, ...], table: Dimension | Fact, extra: list[sa.Column[object]]
    ) -> None:
        staged = sa.Table(
            name,
            self.metadata,
            *(_column(c) for c in columns),
            *(_column(r.value) for r in table.references),
            *(sa.Column(r.column, sa.Integer) for r in table.references),
            *extra,
            sa.Column("source_file", sa.String),
            sa.Column("source_row", sa.BigInteger),
            info={hints.UNLOGGED: True},
        )
        self._add(staged)

    def _processes(self) -> None:
        self.sequences[PROCESSES] = sa.Sequence("seq_id_process", start=1, metadata=self.metadata)
        self._add(
            sa.Table(
                PROCESSES,
                self.metadata,
                _key("id_process"),
                sa.Column("fact_table", sa.String, nullable=False),
                sa.Column("start_date", sa.DateTime, nullable=False),
                sa.Column("end_date", sa.DateTime, nullable=False),
                sa.Column("status", sa.String, nullable=False),
                sa.Column("process_run_date", sa.DateTime),
                sa.Column("id_run", sa.Integer),
                sa.Column("finished_at", sa.DateTime),
                sa.Column("rows_loaded", sa.BigInteger),
                sa.Column("error_message", sa.String),
                sa.UniqueConstraint("fact_table", "start_date", "end_date"),
            )
        )
        self._add(
            sa.Table(
                "dm_schema",
                self.metadata,
                sa.Column("version", sa.Integer, nullable=False),
            )
        )
        self._run_log()
        self._add(
            sa.Table(
                SOURCES,
                self.metadata,
                sa.Column("table_name", sa.String, primary_key=True),
                sa.Column("fingerprint", sa.String, nullable=False),
                sa.Column("id_run", sa.Integer, nullable=False),
                sa.Column("loaded_at", sa.DateTime, nullable=False),
            )
        )

    def _run_log(self) -> None:
        """Runs, their steps with the reconciliation of rows, and every rejected or doubted source row."""
        self.sequences[RUNS] = sa.Sequence("seq_id_run", start=1, metadata=self.metadata)
        self._add(
            sa.Table(
                RUNS,
                self.metadata,
                _key("id_run"),
                sa.Column("started_at", sa.DateTime, nullable=False),
                sa.Column("finished_at", sa.DateTime),
                sa.Column("status", sa.String, nullable=False),
                sa.Column("source_dir", sa.String),
                sa.Column("error_message", sa.String),
                # A run's latest sign of life where no lock shows it: Spark's runs beat in it (engines/spark/runs.py).
                sa.Column("heartbeat_at", sa.DateTime),
            )
        )
        period = [sa.Column("period_start", sa.DateTime), sa.Column("period_end", sa.DateTime)]
        self._add(
            sa.Table(
                RUN_STEPS,
                self.metadata,
                sa.Column("id_run", sa.Integer, nullable=False),
                sa.Column("step", sa.Integer, nullable=False),
                sa.Column("table_name", sa.String, nullable=False),
                *period,
                sa.Column("rows_read", sa.BigInteger, nullable=False),
                sa.Column("rows_loaded", sa.BigInteger, nullable=False),
                sa.Column("rows_rejected", sa.BigInteger, nullable=False),
                sa.Column("rows_warned", sa.BigInteger, nullable=False),
                sa.Column("rows_inserted", sa.BigInteger, nullable=False),
                sa.Column("rows_updated", sa.BigInteger, nullable=False),
                sa.Column("inferred_members", sa.BigInteger, nullable=False),
                sa.Column("seconds", sa.Float, nullable=False),
                sa.Column("status", sa.String, nullable=False),
                sa.Column("error_message", sa.String),
                sa.PrimaryKeyConstraint("id_run", "step"),
            )
        )
        self._add(
            sa.Table(
                REJECTS,
                self.metadata,
                sa.Column("id_run", sa.Integer, nullable=False),
                sa.Column("table_name", sa.String, nullable=False),
                *(sa.Column(c.name, c.type) for c in period),
                sa.Column("source_file", sa.String),
                sa.Column("line_number", sa.BigInteger),
                sa.Column("column_name", sa.String),
                sa.Column("raw_value", sa.String),
                sa.Column("raw_line", sa.String),
                sa.Column("reason", sa.String, nullable=False),
                sa.Column("severity", sa.String, nullable=False),
            )
        )

    def create(self, conn: sa.Connection) -> None:
        """Create what is missing and the default members; existing tables and rows stay as they are.

        Staging tables only ever hold one step's scratch rows: they are made anew, so that a mart created by an
        earlier callmart gets the staging columns this one needs."""
        if self.name is not None and not sa.inspect(conn).has_schema(self.name):
            # Only when missing: CREATE SCHEMA IF NOT EXISTS still needs the right to create schemas, which a
            # role that owns just its schema does not have.
            conn.execute(sa.schema.CreateSchema(self.name))
        for table in self.tables.values():
            # One table at a time: MetaData.drop_all would drop the sequences too, restarting every key.
            if table.info.get(hints.UNLOGGED):
                table.drop(conn, checkfirst=True)
        inspector = sa.inspect(conn)
        new = {name for name in self.tables if not inspector.has_table(name, schema=self.name)}
        self.metadata.create_all(conn, checkfirst=True)
        for name in sorted(set(self.tables) - new):
            self._add_missing_columns(conn, self.tables[name])
            # create_all commented the new tables; one made by an earlier callmart gets today's comments.
            self._comment(conn, self.tables[name])
        for name in sorted(new):
            columns = self.tables[name].info.get(hints.PRIMARY_KEY)
            if columns and engines.of(conn).ENFORCED_FACT_KEYS:
                conn.execute(AddPrimaryKey(self.tables[name], columns))
        existing = {ix["name"] for name in self.tables for ix in _indexes(conn, self.tables[name])}
        for index in self.indexes:
            if index.name not in existing and engines.of(conn).INDEXES:
                index.create(conn)
        for dim in self.mart.dimensions:
            self._default_member(conn, dim)
            if dim.keeps_history:
                # A dimension that starts keeping history: each member's present row becomes its first version.
                table = self.tables[dim.name]
                conn.execute(
                    sa.update(table)
                    .where(table.c[VERSION].is_(None))
                    .values({VALID_FROM: BEGINNING, VALID_TO: None, IS_CURRENT: True, VERSION: 1})
                )
        version = self.tables["dm_schema"]
        # create_all added what an older version lacked: the mart is now of this version.
        conn.execute(sa.delete(version))
        conn.execute(sa.insert(version).values(version=SCHEMA_VERSION))
        engines.of(conn).secure(conn, self.tables.values(), self.sequences.values(), marker=version)

    def exists(self, conn: sa.Connection) -> bool:
        """Whether a mart (its version table) is there."""
        return sa.inspect(conn).has_table(self.tables["dm_schema"].name, schema=self.name)

    def _comment(self, conn: sa.Connection, table: sa.Table) -> None:
        if table.comment:
            conn.execute(sa.schema.SetTableComment(table))
        for column in table.columns:
            if column.comment:
                conn.execute(sa.schema.SetColumnComment(column))

    def _add_missing_columns(self, conn: sa.Connection, table: sa.Table) -> None:
        """Add the columns an older mart's table lacks (always nullable): its rows and keys stay."""
        present = set(conn.execute(sa.select(sa.text("*")).select_from(table).limit(0)).keys())
        for column in table.columns:
            if column.name not in present:
                conn.execute(AddColumn(table, column))

    def _default_member(self, conn: sa.Connection, dim: Dimension) -> None:
        table = self.tables[dim.name]
        key = table.c[dim.key]
        if conn.execute(sa.select(key).where(key == DEFAULT_MEMBER_ID)).first() is not None:
            return
        conn.execute(sa.insert(table).values(dim.default_member()))


def _indexes(conn: sa.Connection, table: sa.Table) -> list[dict[str, object]]:
    if not engines.of(conn).INDEXES:
        return []
    return list(sa.inspect(conn).get_indexes(table.name, schema=table.schema))  # type: ignore[arg-type]
