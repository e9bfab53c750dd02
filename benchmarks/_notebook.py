"""The pandas contender: the usual notebook that loads a day of calls into the mart with pandas and to_sql."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _measure import CALLS_FILE, DEFAULT_KEY, FACT, Job, Meter, Timed, fact_census, lap

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

__all__ = ["NOTES", "phase_pandas_load"]

# pandas is optional: it is imported where it is used, so that the other contenders run without it.

PANDAS_STAGING = "stg_llamadas_pandas"
US_MINUTE = "%m/%d/%Y %H:%M"
TALK_THRESHOLD_SECONDS = 30
METRIC_WINDOW = timedelta(hours=48)
PG_MAX_PARAMETERS = 65_535  # per statement: pandas' method="multi" must keep rows x columns below it
NOTEBOOK_CHUNKSIZE = 10_000
NOTES = {
    "pandas keys": f"unknown customers and agents get the default key {DEFAULT_KEY} (the notebook creates no inferred "
    "members)",
    "pandas metric": "computed: merge_asof per customer, forward, window 48 h - 1 s, calls with talk >= 30 s",
    "pandas chunksize": f"method='multi' with chunksize {NOTEBOOK_CHUNKSIZE:,} overflows PostgreSQL's "
    f"{PG_MAX_PARAMETERS:,} parameters per statement; the chunksize is lowered to fit the column count",
}


def phase_pandas_load(job: Job) -> Timed:
    """The usual notebook: read_csv, parse, to_sql staging, per-row lookups, merge_asof metric, delete + append."""
    import sqlalchemy as sa

    engine = sa.create_engine(sa.make_url(job.database).set(drivername="postgresql+psycopg"))
    laps: dict[str, float] = {}
    with Meter() as meter:
        with lap(laps, "read_csv + parse"):
            calls = read_calls(job.source / CALLS_FILE, job.first, job.last)
        with lap(laps, "to_sql staging"):
            stage_calls(calls, engine)
        with lap(laps, "apply lookups"):
            add_keys(calls, engine)
        with lap(laps, "metric (merge_asof)"):
            add_metric(calls, engine)
        with lap(laps, "delete + to_sql fact"):
            rows = replace_period(fact_frame(calls), engine, job.first, job.last)
    census = fact_census(engine, job)
    engine.dispose()
    return meter.result(rows, {"laps": laps, "census": census})


def read_calls(path: Path, first: datetime, last: datetime) -> pd.DataFrame:
    """The period's calls, parsed and cleaned the pandas way."""
    import pandas as pd

    df = pd.read_csv(path, encoding="latin-1", dtype={"Telefono": str, "Agente": str, "Campania": str})
    df["Fecha"] = pd.to_datetime(df["Fecha"], format=US_MINUTE, errors="coerce")
    df["talk"] = pd.to_timedelta(df["Tiempohablado"], errors="coerce")
    df["total"] = pd.to_timedelta(df["Tiempototal"], errors="coerce")
    df = df.dropna(subset=["Fecha", "talk", "total"])
    df = df[(df["Fecha"] >= first) & (df["Fecha"] < last)].reset_index(drop=True)
    df["Campania"] = df["Campania"].fillna("unknown").str.upper()
    df["Agente"] = df["Agente"].str.lower()
    df["segundos_hablados"] = df["talk"].dt.total_seconds().astype("int64")
    df["segundos_totales"] = df["total"].dt.total_seconds().astype("int64")
    return df


def multi_chunksize(columns: int) -> int:
    """The notebook's chunksize, lowered so that one multi-row INSERT stays within PostgreSQL's parameters."""
    return min(NOTEBOOK_CHUNKSIZE, PG_MAX_PARAMETERS // columns)


def stage_calls(df: pd.DataFrame, engine: sa.Engine) -> None:
    """Write the cleaned calls to a staging table, replacing it."""
    staged = df[["Fecha", "IDCliente", "Campania", "Telefono", "Agente", "segundos_hablados", "segundos_totales"]]
    chunksize = multi_chunksize(len(staged.columns))
    staged.to_sql(PANDAS_STAGING, engine, if_exists="replace", index=False, method="multi", chunksize=chunksize)


def key_map(engine: sa.Engine, table: str, by: str, key: str) -> dict[Any, int]:
    """Business value -> surrogate key of a dimension, read with pandas."""
    import pandas as pd
    import sqlalchemy as sa

    dim = sa.table(table, sa.column(by), sa.column(key))
    frame = pd.read_sql(sa.select(dim.c[by], dim.c[key]), engine)
    return dict(zip(frame[by], frame[key], strict=True))


def lookup(keys: dict[Any, int], value: Any) -> int:
    """The notebook's lookup: the key, or the default member for anything unknown."""
    return keys.get(value, DEFAULT_KEY)


def add_keys(df: pd.DataFrame, engine: sa.Engine) -> None:
    """Customer and agent keys, looked up row by row with DataFrame.apply."""
    clientes = key_map(engine, "dim_clientes", "id_cliente", "key_cliente")
    agentes = key_map(engine, "dim_agentes", "agente", "key_agente")
    df["key_cliente_llamada"] = df.apply(lambda r: lookup(clientes, r["IDCliente"]), axis=1)
    df["key_agente_llamada"] = df.apply(lambda r: lookup(agentes, r["Agente"]), axis=1)


def add_metric(df: pd.DataFrame, engine: sa.Engine) -> None:
    """key_login_post_llamada: the customer's first login at or after the call and less than 48 h later."""
    import pandas as pd
    import sqlalchemy as sa

    dim = sa.table("dim_logins", *(sa.column(c) for c in ("key_login", "id_login", "fecha_login", "key_cliente_login")))
    logins = pd.read_sql(sa.select(*dim.c).where(dim.c.key_cliente_login != DEFAULT_KEY), engine)
    logins["fecha_login"] = logins["fecha_login"].astype("datetime64[ns]")
    logins = logins.rename(columns={"key_cliente_login": "key_cliente_llamada"}).sort_values(
        ["fecha_login", "id_login"]
    )
    calls = df[["Fecha", "key_cliente_llamada"]].assign(row=range(len(df)), Fecha=df["Fecha"].astype("datetime64[ns]"))
    merged = pd.merge_asof(
        calls.sort_values("Fecha"),
        logins,
        left_on="Fecha",
        right_on="fecha_login",
        by="key_cliente_llamada",
        direction="forward",
        tolerance=pd.Timedelta(METRIC_WINDOW - timedelta(seconds=1)),
    )
    found = merged.set_index("row")["key_login"].reindex(range(len(df))).to_numpy()
    qualifies = (df["segundos_hablados"] >= TALK_THRESHOLD_SECONDS) & (df["key_cliente_llamada"] != DEFAULT_KEY)
    df["key_login_post_llamada"] = pd.Series(found, index=df.index).where(qualifies).astype("Int64")


def fact_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of fact_llamadas, with key_llamada from a simple range."""
    import pandas as pd

    midnight = pd.Timestamp("1900-01-01")
    return pd.DataFrame(
        {
            "key_llamada": range(1, len(df) + 1),
            "fecha_llamada": df["Fecha"],
            "campania_llamada": df["Campania"],
            "telefono_llamada": df["Telefono"],
            "tiempo_hablado_llamada": (midnight + df["talk"]).dt.time,
            "tiempo_total_llamada": (midnight + df["total"]).dt.time,
            "segundos_hablados_llamada": df["segundos_hablados"],
            "segundos_totales_llamada": df["segundos_totales"],
            "key_cliente_llamada": df["key_cliente_llamada"],
            "key_agente_llamada": df["key_agente_llamada"],
            "key_login_post_llamada": df["key_login_post_llamada"],
        }
    )


def replace_period(frame: pd.DataFrame, engine: sa.Engine, first: datetime, last: datetime) -> int:
    """DELETE the period's facts, then append the frame; return rows appended."""
    import sqlalchemy as sa

    fact = sa.table(FACT, sa.column("fecha_llamada"))
    with engine.begin() as conn:
        conn.execute(sa.delete(fact).where(fact.c.fecha_llamada >= first, fact.c.fecha_llamada < last))
    chunksize = multi_chunksize(len(frame.columns))
    frame.to_sql(FACT, engine, if_exists="append", index=False, method="multi", chunksize=chunksize)
    return len(frame)
