"""Helpers for tests: write small extracts, dump a mart by business values, run the CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from callmart.engines.spark import Spark, SparkUrl
from callmart.mart import MART
from callmart.schema import Schema

TIME_OF_DAY = re.compile(r"\d{2}:\d{2}:\d{2}")
CALL_HEADER = "Fecha,IDCliente,Campania,Telefono,Agente,Tiempohablado,Tiempototal"
CUSTOMER_HEADER = "CustomerID,Gender,Type"
AGENT_HEADER = "idagente,agente,nivelexpertise,nombre,apellido"
CHANNEL_HEADER = "idcanal,desc_canal"


def drawn(table: str) -> list[tuple[str, ...]]:
    """Rows of a table drawn as text: one row a line, cells split by '|', the first line a header."""
    lines = [
        line.strip() for line in table.strip().splitlines() if line.strip() and not set(line.strip()) <= {"-", "+", "|"}
    ]
    return [tuple(cell.strip() for cell in line.strip("|").split("|")) for line in lines[1:]]


def write_csv(path: Path, header: str, rows: Sequence[Sequence[object]]) -> None:
    """A latin-1 CSV in the call center's style."""
    body = "".join(",".join(str(v) for v in row) + "\n" for row in rows)
    path.write_bytes((header + "\n" + body).encode("latin-1"))


def write_logins(path: Path, rows: Sequence[tuple[int, int | None, str, int | None]]) -> None:
    """A JSON array of logins: (callid, customerid, logindate, channel)."""
    data = [{"callid": c, "customerid": cu, "logindate": d, "channel": ch} for c, cu, d, ch in rows]
    path.write_text(json.dumps(data, indent=2))


def write_extracts(
    folder: Path,
    calls: Sequence[Sequence[object]] = (),
    customers: Sequence[Sequence[object]] = (),
    agents: Sequence[Sequence[object]] = ((1, "ana.lopez", 1, "Ana", "López"),),
    channels: Sequence[Sequence[object]] = ((1, "Whatsapp"), (2, "AppCallCore")),
    logins: Sequence[tuple[int, int | None, str, int | None]] = (),
) -> Path:
    """One extract of each kind in folder, replacing what was there."""
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "Llamadas_t.csv", CALL_HEADER, calls)
    write_csv(folder / "Customers_t.csv", CUSTOMER_HEADER, customers)
    write_csv(folder / "Agentes_t.csv", AGENT_HEADER, agents)
    write_csv(folder / "CanalDigital_t.csv", CHANNEL_HEADER, channels)
    write_logins(folder / "logins_t.json", logins)
    return folder


BUSINESS_QUERIES = {
    "dim_clientes": "SELECT id_cliente, genero_cliente, tipo_cliente, is_inferred FROM dim_clientes",
    "dim_agentes": "SELECT id_agente, agente, nivel_expertise_agente, nombre_agente, apellido_agente, is_inferred "
    "FROM dim_agentes",
    "dim_canales_digitales": "SELECT id_canal_digital, descripcion_canal_digital, is_inferred "
    "FROM dim_canales_digitales",
    "dim_logins": "SELECT l.id_login, l.fecha_login, c.id_cliente, d.id_canal_digital, l.is_inferred FROM dim_logins l "
    "JOIN dim_clientes c ON c.key_cliente = l.key_cliente_login "
    "JOIN dim_canales_digitales d ON d.key_canal_digital = l.key_canal_digital_login",
    "fact_llamadas": "SELECT f.key_llamada, f.fecha_llamada, c.id_cliente, f.campania_llamada, f.telefono_llamada, "
    "a.agente, f.tiempo_hablado_llamada, f.tiempo_total_llamada, l.id_login FROM fact_llamadas f "
    "JOIN dim_clientes c ON c.key_cliente = f.key_cliente_llamada "
    "JOIN dim_agentes a ON a.key_agente = f.key_agente_llamada "
    "LEFT JOIN dim_logins l ON l.key_login = f.key_login_post_llamada",
}
TABLES = ["dim_clientes", "dim_agentes", "dim_canales_digitales", "dim_logins", "fact_llamadas", "dm_processes"]


def spark_session(url: str) -> Any | None:
    """For a URL of the Spark engine, the tests' session with the URL's database as its current one; else None.
    The helpers below read a Spark mart through it, by the same SQL where Spark takes it."""
    if not url.startswith("spark://"):
        return None
    parsed = SparkUrl.parse(url)
    session = Spark().open_session(parsed)
    # The helpers' SQL names tables alone; the database it reads is put back to the session's default once they
    # are done (a test drops its databases, and the next one must not find a dropped one current).
    session.catalog.setCurrentDatabase(parsed.database)
    return session


def _restored(session: Any, found: Any) -> Any:
    """What a helper read, the session's current database put back to `default`."""
    session.catalog.setCurrentDatabase("default")
    return found


def _plain(value: object) -> object:
    """A value as the SQL engines give it: Delta keeps a time of day as its ISO text."""
    if isinstance(value, str) and TIME_OF_DAY.fullmatch(value):
        return time.fromisoformat(value)
    return value


def _spark_rows(session: Any, text: str, **params: object) -> list[tuple[object, ...]]:
    frame = session.sql(text, args=params or None)
    if text.lstrip().split(None, 1)[0].upper() != "SELECT":
        return []
    return [tuple(_plain(v) for v in row) for row in frame.collect()]


def business_dump(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every table by business values (surrogate keys of dimensions resolved), sorted."""
    session = spark_session(url)
    if session is not None:
        return _restored(
            session, {name: sorted(_spark_rows(session, text), key=repr) for name, text in BUSINESS_QUERIES.items()}
        )
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                name: sorted((tuple(r) for r in conn.execute(sa.text(query))), key=repr)
                for name, query in BUSINESS_QUERIES.items()
            }
    finally:
        engine.dispose()


def full_dump(url: str, tables: Sequence[str] = TABLES) -> dict[str, list[tuple[object, ...]]]:
    """Every column of every mart table, keys included, sorted."""
    session = spark_session(url)
    if session is not None:
        schema = Schema(MART)
        return _restored(
            session,
            {
                name: sorted(
                    (
                        tuple(_plain(v) for v in row)
                        for row in session.table(name).select(*schema[name].c.keys()).collect()
                    ),
                    key=repr,
                )
                for name in tables
            },
        )
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            schema = Schema(MART)
            return {
                name: sorted((tuple(r) for r in conn.execute(sa.select(schema[name]))), key=repr) for name in tables
            }
    finally:
        engine.dispose()


def query(url: str, text: str, **params: object) -> list[tuple[object, ...]]:
    """Rows of one statement, committed."""
    session = spark_session(url)
    if session is not None:
        return _restored(session, _spark_rows(session, text, **params))
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(text), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def count_rows(url: str, table: str) -> int:
    """How many rows a mart table holds."""
    session = spark_session(url)
    if session is not None:
        return _restored(session, int(session.table(table).count()))
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(Schema(MART)[table])).scalar_one())
    finally:
        engine.dispose()


def select(url: str, table: str, *columns: str, **equal: object) -> list[tuple[object, ...]]:
    """Some columns of a mart table, where the given columns equal the given values, sorted."""
    session = spark_session(url)
    if session is not None:
        from pyspark.sql import functions as F

        frame = session.table(table)
        for column, value in equal.items():
            frame = frame.where(F.col(column) == F.lit(value))
        return _restored(
            session, sorted((tuple(_plain(v) for v in row) for row in frame.select(*columns).collect()), key=repr)
        )
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = Schema(MART)[table]
            statement = sa.select(*(t.c[c] for c in columns)).where(*(t.c[k] == v for k, v in equal.items()))
            return sorted((tuple(r) for r in conn.execute(statement)), key=repr)
    finally:
        engine.dispose()
