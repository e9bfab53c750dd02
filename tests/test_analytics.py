"""Conversion aggregates by day, campaign and agent: hand-worked expectations on both engines, refreshed by day."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from callmart import Callmart, RunSummary, control, streamed_aggregates
from callmart.aggregates import AGG_CHANNEL, AGG_DAILY, Settings, aggregate_tables, settings_of
from callmart.analytics import (
    Touched,
    create_aggregate_tables,
    day_ranges,
    landed_events,
    rebuild_aggregates,
    refresh_aggregates,
)
from callmart.declare import Mart
from callmart.mart import CALLS, MART
from callmart.mart.sample import generate
from callmart.schema import Schema
from marts import drawn, query, write_extracts

AGENTS = ((1, "ana.lopez", 1, "Ana", "López"), (2, "beto.diaz", 2, "Beto", "Díaz"))
CUSTOMERS = ((101, "F", "REGULAR"), (102, "M", "GEM"))

# The tiny extract of two days. Threshold 30 s, window 48 h.
CALLS_DRAWN = """
| Fecha          | IDCliente | Campania | Agente    | talk    | total   | why                                   |
| 3/4/2024 9:00  | 101       | ventas   | ana.lopez | 0:01:00 | 0:01:30 | effective; login 1 three hours later  |
| 3/4/2024 10:00 | 102       | VENTAS   | ana.lopez | 0:00:20 | 0:00:40 | a contact, too short to count         |
| 3/4/2024 11:00 | -1        | VENTAS   | ana.lopez | 0:00:45 | 0:01:00 | effective, but not a customer         |
| 3/4/2024 15:00 | 102       | COBRO    | beto.diaz | 0:00:00 | 0:00:15 | no contact                            |
| 3/4/2024 16:00 | 102       | COBRO    | beto.diaz | 0:00:30 | 0:00:50 | effective (exactly 30 s); login 3     |
| 3/5/2024 9:00  | 101       | VENTAS   | ana.lopez | 0:02:00 | 0:02:10 | effective; login 4 is exactly 48 h on |
"""
LOGINS_DRAWN = """
| callid | customerid | logindate         | channel |
| 1      | 101        | 3/4/2024 12:00:00 | 1       |
| 2      | 102        | 3/4/2024 11:00:00 | 1       |
| 3      | 102        | 3/5/2024 2:00:00  | 2       |
| 4      | 101        | 3/7/2024 9:00:00  | 2       |
"""
# Expected rows: counts, rate = conversions / effective contacts, seconds, averages, hours from call to login.
EXPECTED_DAILY = """
| day        | campaign | agent     | calls | cont | eff | conv | rate | talk | total | avg talk | avg tot | h login |
| 2024-03-04 | COBRO    | beto.diaz | 2     | 1    | 1   | 1    | 1.00 | 30   | 65    | 15.00    | 32.50   | 10.00   |
| 2024-03-04 | VENTAS   | ana.lopez | 3     | 3    | 2   | 1    | 0.50 | 125  | 190   | 41.67    | 63.33   | 3.00    |
| 2024-03-05 | VENTAS   | ana.lopez | 1     | 1    | 1   | 0    | 0.00 | 120  | 130   | 120.00   | 130.00  |         |
"""
PHONE = "5550000001"
DECLARED = settings_of(MART)


def calls(table: str) -> list[tuple[str, ...]]:
    return [
        (when, who, campaign, PHONE, agent, talk, total) for when, who, campaign, agent, talk, total, *_ in drawn(table)
    ]


def logins(table: str) -> list[tuple[int, int | None, str, int | None]]:
    return [(int(c), int(cu), when, int(ch)) for c, cu, when, ch in drawn(table)]


def touched_by(conn: sa.Connection, mart: Callmart, summary: RunSummary) -> Touched:
    """What the run changed: its loaded periods and the logins that landed (still in the staging table)."""
    touched = Touched()
    for step in summary.steps:
        if step.period is not None and step.status == "exitoso":
            touched.add_period(*step.period)
    for dim in mart.schema.mart.dimensions:
        touched.add_events(landed_events(conn, mart.schema, dim))
    return touched


def load(url: str, folder: Path, first: date, end: date, mart: Mart = MART) -> int:
    """Load the days [first, end) and refresh the aggregates of what the run touched; return daily rows written."""
    with Callmart(url, folder, mart=mart) as callmart:
        callmart.init()
        callmart.enqueue(first, end, force=True)
        summary = callmart.run()
        assert summary.ok, [s.error for s in summary.failed]
        with callmart.engine.begin() as conn:
            create_aggregate_tables(conn, callmart.schema)
            return refresh_aggregates(conn, callmart.schema, touched_by(conn, callmart, summary))


def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def daily(url: str, settings: Settings = DECLARED) -> list[tuple[str, ...]]:
    rows = query(
        url,
        "SELECT a.dia, a.campania_llamada, g.agente, a.llamadas, a.contactos, a.contactos_efectivos, "
        "a.conversiones, a.tasa_conversion, a.segundos_hablados, a.segundos_totales, a.promedio_segundos_hablados, "
        "a.promedio_segundos_totales, a.horas_hasta_login_promedio "
        "FROM agg_conversion_diaria a JOIN dim_agentes g ON g.key_agente = a.key_agente_llamada "
        "WHERE a.umbral_segundos = :threshold AND a.ventana_segundos = :window",
        threshold=settings.threshold,
        window=settings.window_seconds,
    )
    return sorted(tuple(cell(v) for v in row) for row in rows)


def by_channel(url: str, settings: Settings = DECLARED) -> list[tuple[str, ...]]:
    rows = query(
        url,
        "SELECT a.dia, a.campania_llamada, g.agente, c.descripcion_canal_digital, a.conversiones, "
        "a.horas_hasta_login_promedio "
        "FROM agg_conversion_canal_diaria a JOIN dim_agentes g ON g.key_agente = a.key_agente_llamada "
        "JOIN dim_canales_digitales c ON c.key_canal_digital = a.key_canal_digital "
        "WHERE a.umbral_segundos = :threshold AND a.ventana_segundos = :window",
        threshold=settings.threshold,
        window=settings.window_seconds,
    )
    return sorted(tuple(cell(v) for v in row) for row in rows)


def test_aggregates_of_a_tiny_extract(database_url: str, tmp_path: Path) -> None:
    folder = write_extracts(tmp_path / "src", calls(CALLS_DRAWN), CUSTOMERS, AGENTS, logins=logins(LOGINS_DRAWN))
    load(database_url, folder, date(2024, 3, 4), date(2024, 3, 6))
    assert daily(database_url) == drawn(EXPECTED_DAILY)
    assert by_channel(database_url) == drawn(
        """
        | dia        | campaign | agent     | channel     | conversions | hours to login |
        | 2024-03-04 | COBRO    | beto.diaz | AppCallCore | 1           | 10.00          |
        | 2024-03-04 | VENTAS   | ana.lopez | Whatsapp    | 1           | 3.00           |
        """
    )
    parameters = query(database_url, "SELECT DISTINCT umbral_segundos, ventana_segundos FROM agg_conversion_diaria")
    assert parameters == [(30, 48 * 3600)]


def test_a_late_login_recomputes_the_day_of_its_call_and_no_other(database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    monday = [("3/1/2024 9:00", 101, "VENTAS", PHONE, "ana.lopez", "0:01:00", "0:01:00")]
    tuesday = [("3/4/2024 9:00", 101, "VENTAS", PHONE, "ana.lopez", "0:01:00", "0:01:00")]
    write_extracts(folder, [*monday, *tuesday], CUSTOMERS, AGENTS)
    assert load(database_url, folder, date(2024, 3, 1), date(2024, 3, 5)) == 2
    # A day outside what the next run touches is left alone: marked here, it must keep the mark.
    query(database_url, "UPDATE agg_conversion_diaria SET llamadas = 999 WHERE dia = :day", day=date(2024, 3, 1))

    wednesday = [("3/5/2024 9:00", 102, "COBRO", PHONE, "ana.lopez", "0:00:10", "0:00:20")]
    late_login = [(1, 101, "3/5/2024 8:00:00", 2)]  # 23 h after Tuesday's call: it converts it
    write_extracts(folder, [*monday, *tuesday, *wednesday], CUSTOMERS, AGENTS, logins=late_login)
    written = load(database_url, folder, date(2024, 3, 5), date(2024, 3, 6))

    assert written == 2  # Tuesday (the login's window) and Wednesday (the loaded period)
    assert [row[:7] for row in daily(database_url)] == drawn(
        """
        | dia        | campaign | agent     | calls | contacts | effective | conversions |
        | 2024-03-01 | VENTAS   | ana.lopez | 999   | 1        | 1         | 0           |
        | 2024-03-04 | VENTAS   | ana.lopez | 1     | 1        | 1         | 1           |
        | 2024-03-05 | COBRO    | ana.lopez | 1     | 1        | 0         | 0           |
        """
    )


def test_history_with_other_parameters_is_kept_apart(database_url: str, tmp_path: Path) -> None:
    folder = write_extracts(tmp_path / "src", calls(CALLS_DRAWN), CUSTOMERS, AGENTS, logins=logins(LOGINS_DRAWN))
    load(database_url, folder, date(2024, 3, 4), date(2024, 3, 6))
    before = daily(database_url)

    # The business moves to 60 s and 24 h: reloading the days recomputes the metric and adds aggregates for these.
    metric = dataclasses.replace(CALLS.metrics[0], threshold=60, window=timedelta(hours=24))
    stricter = dataclasses.replace(MART, facts=(dataclasses.replace(CALLS, metrics=(metric,)),))
    load(database_url, folder, date(2024, 3, 4), date(2024, 3, 6), mart=stricter)

    assert daily(database_url) == before
    assert [row[:8] for row in daily(database_url, settings_of(stricter))] == drawn(
        """
        | dia        | campaign | agent     | calls | contacts | effective | conversions | rate |
        | 2024-03-04 | COBRO    | beto.diaz | 2     | 1        | 0         | 0           |      |
        | 2024-03-04 | VENTAS   | ana.lopez | 3     | 3        | 1         | 1           | 1.00 |
        | 2024-03-05 | VENTAS   | ana.lopez | 1     | 1        | 1         | 0           | 0.00 |
        """
    )


def test_the_first_refresh_computes_every_day(database_url: str, tmp_path: Path) -> None:
    folder = write_extracts(tmp_path / "src", calls(CALLS_DRAWN), CUSTOMERS, AGENTS, logins=logins(LOGINS_DRAWN))
    with Callmart(database_url, folder) as callmart:
        callmart.init()
        callmart.enqueue(date(2024, 3, 4), date(2024, 3, 6))
        assert callmart.run().ok
        with callmart.engine.begin() as conn:
            create_aggregate_tables(conn, callmart.schema)
            conn.execute(sa.delete(sa.table(AGG_DAILY)))
            conn.execute(sa.delete(sa.table(AGG_CHANNEL)))
            # A mart loaded before it had aggregates: a refresh that touched nothing still computes them all.
            assert refresh_aggregates(conn, callmart.schema, Touched()) == 3
            assert refresh_aggregates(conn, callmart.schema, Touched()) == 0
    assert len(daily(database_url)) == 3


def test_each_run_refreshes_the_aggregates(database_url: str, tmp_path: Path) -> None:
    if AGG_DAILY not in Schema(MART).tables:
        pytest.skip("the aggregates are not wired into the schema and Callmart.run yet")
    folder = tmp_path / "src"
    tuesday = [("3/4/2024 9:00", 101, "VENTAS", PHONE, "ana.lopez", "0:01:00", "0:01:00")]
    for day, found, extract_logins in [(4, "0", []), (5, "1", [(1, 101, "3/5/2024 8:00:00", 2)])]:
        write_extracts(folder, tuesday, CUSTOMERS, AGENTS, logins=extract_logins)
        with Callmart(database_url, folder) as callmart:
            callmart.init()
            callmart.enqueue(date(2024, 3, day), date(2024, 3, day + 1))
            assert callmart.run().ok
        # Wednesday's run loads no call of Tuesday, but its login converts Tuesday's call.
        assert [row[6] for row in daily(database_url)] == [found]


def test_touched_days() -> None:
    window = timedelta(hours=48)
    touched = Touched()
    touched.add_period(datetime(2024, 3, 10), datetime(2024, 3, 11))
    touched.add_events(None)
    assert touched.days(window) == [date(2024, 3, 10)]
    touched.add_events((datetime(2024, 3, 5, 8), datetime(2024, 3, 6, 1)))
    assert touched.days(window) == [date(2024, 3, d) for d in (3, 4, 5, 6, 10)]
    assert day_ranges(touched.days(window)) == [
        (date(2024, 3, 3), date(2024, 3, 7)),
        (date(2024, 3, 10), date(2024, 3, 11)),
    ]
    touched.add_period(datetime(2024, 3, 12, 6), datetime(2024, 3, 12, 18))
    assert touched.days(window)[-1] == date(2024, 3, 12)


def test_days_a_load_wrote_are_not_refreshed_again() -> None:
    window = timedelta(hours=48)
    touched = Touched()
    touched.add_events((datetime(2024, 3, 12, 8), datetime(2024, 3, 12, 9)))
    touched.add_period(datetime(2024, 3, 11), datetime(2024, 3, 13), settled=[date(2024, 3, 11), date(2024, 3, 12)])
    # The 10th: only the logins' window. The 11th and 12th: written by their load, after the logins landed.
    assert touched.days(window) == [date(2024, 3, 10)]
    # Another period of the run loaded calls of the 12th: the load's sums lack them, the day is refreshed.
    touched.add_period(datetime(2024, 3, 12, 18), datetime(2024, 3, 13))
    assert touched.days(window) == [date(2024, 3, 10), date(2024, 3, 12)]


def test_aggregate_tables_carry_their_parameters_in_the_key() -> None:
    daily_table, channel_table = aggregate_tables(sa.MetaData())
    assert daily_table.name == AGG_DAILY and channel_table.name == AGG_CHANNEL
    assert [c.name for c in daily_table.primary_key] == [
        "umbral_segundos",
        "ventana_segundos",
        "dia",
        "campania_llamada",
        "key_agente_llamada",
    ]
    assert "key_canal_digital" in channel_table.primary_key.columns
    assert all(c.comment for c in daily_table.columns if c.name in ("conversiones", "tasa_conversion"))


def aggregate_rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every aggregate row but the time it was computed, in a stable order."""
    found = {}
    for table in (AGG_DAILY, AGG_CHANNEL):
        columns = [c.name for c in Schema(MART)[table].columns if c.name != "calculado_en"]
        found[table] = sorted(query(url, f"SELECT {', '.join(columns)} FROM {table}"), key=repr)  # noqa: S608
    return found


def test_a_run_writes_the_aggregates_the_database_computes_from_the_loaded_calls(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Calls grouped a few times a day, and the groups summed into one as they pile up, as at scale.
    monkeypatch.setattr(streamed_aggregates, "GROUP_EVERY", 300)
    monkeypatch.setattr(streamed_aggregates, "COMPACT_AFTER", 2)
    # Generated days with logins after calls, unknown and -1 customers, dirty rows. Periods: a day, two days, and
    # a day in two halves loaded by two runs (that day is left to each run's refresh, which sees all its calls).
    generate(tmp_path / "src", calls=6000, days=5, customers=300, start=date(2024, 3, 4), dirty_share=0.02)
    runs = [
        [(datetime(2024, 3, 4), datetime(2024, 3, 5)), (datetime(2024, 3, 5), datetime(2024, 3, 7))],
        [(datetime(2024, 3, 7), datetime(2024, 3, 7, 12))],
        [(datetime(2024, 3, 7, 12), datetime(2024, 3, 8))],
    ]
    settled = []
    with Callmart(database_url, tmp_path / "src") as callmart:
        callmart.init()
        assert callmart.run().ok  # the dimensions, and the aggregates of an empty fact table
        for periods in runs:
            with callmart.engine.begin() as conn:
                control.enqueue(conn, callmart.schema, CALLS.name, periods, force=False)
            summary = callmart.run()
            assert summary.ok and len([s for s in summary.steps if s.period is not None]) == len(periods)
            settled.append(summary.touched.settled)
        written = aggregate_rows(database_url)
        with callmart.engine.begin() as conn:
            rebuild_aggregates(conn, callmart.schema)
    assert {row[0] for row in written[AGG_DAILY]} == {date(2024, 3, d) for d in range(4, 8)}
    assert written[AGG_CHANNEL]
    assert written == aggregate_rows(database_url)
    # On PostgreSQL the rows are made in the client as they stream, and so are the aggregates of whole days.
    whole_days = {date(2024, 3, d) for d in (4, 5, 6)} if database_url.startswith("postgresql") else set()
    assert settled == [whole_days, set(), set()]


def test_a_reload_writes_its_days_aggregates_again(database_url: str, tmp_path: Path) -> None:
    folder = write_extracts(tmp_path / "src", calls(CALLS_DRAWN), CUSTOMERS, AGENTS, logins=logins(LOGINS_DRAWN))
    load(database_url, folder, date(2024, 3, 4), date(2024, 3, 6))
    query(database_url, "UPDATE agg_conversion_diaria SET llamadas = 999")
    query(database_url, "DELETE FROM agg_conversion_canal_diaria")
    with Callmart(database_url, folder) as callmart:
        callmart.enqueue(date(2024, 3, 4), date(2024, 3, 6), force=True)
        assert callmart.run().ok
    assert daily(database_url) == drawn(EXPECTED_DAILY)
    assert len(by_channel(database_url)) == 2
