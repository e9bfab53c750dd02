"""The lift over two baselines (calls reached but short, customers not called) by day, campaign and agent: hand-worked
extracts on both engines, the intervals' statistics, and incremental refreshes that equal a rebuild."""

from __future__ import annotations

import json
import math
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from callmart import Callmart, engines
from callmart.aggregates import COMPUTED_AT
from callmart.analytics import Touched, rebuild_aggregates
from callmart.declare import Mart
from callmart.lift import (
    AGG_LIFT_AGENT,
    AGG_LIFT_CAMPAIGN,
    AGG_LIFT_DAILY,
    LIFTS,
    affected_days,
    lift_tables,
    lift_values,
)
from callmart.lift_analytics import lift_tables_of
from callmart.mart import MART
from callmart.mart.sample import generate
from callmart.schema import Schema
from callmart.settings import apply_scd
from callmart.stats import newcombe, proportion, wilson
from marts import drawn, query, write_extracts
from test_analytics import AGENTS, PHONE, cell

CUSTOMERS = [(i, "F", "REGULAR") for i in range(101, 107)]
# Six customers and four days; threshold 30 s, window 48 h. The 6th has logins but no call: it has no lift row.
CALLS_DRAWN = """
| Fecha          | IDCliente | Campania | Agente    | talk    | why                                                  |
| 3/4/2024 9:00  | 101       | VENTAS   | ana.lopez | 0:01:00 | effective; login 1 three hours later                 |
| 3/4/2024 10:00 | 102       | VENTAS   | ana.lopez | 0:00:20 | short; login 2 one hour later: a short conversion    |
| 3/4/2024 11:00 | 103       | VENTAS   | beto.diaz | 0:00:10 | short; no login                                      |
| 3/4/2024 15:00 | 104       | COBRO    | beto.diaz | 0:00:05 | short; login 3 is 49 h later: too late               |
| 3/4/2024 16:00 | -1        | VENTAS   | ana.lopez | 0:00:45 | effective, but not a customer: in no count           |
| 3/4/2024 17:00 | 105       | COBRO    | beto.diaz | 0:00:00 | nobody picked up: neither effective nor short        |
| 3/5/2024 9:00  | 101       | VENTAS   | ana.lopez | 0:02:00 | effective; login 5 exactly 48 h later: not converted |
| 3/5/2024 10:00 | 106       | COBRO    | beto.diaz | 0:00:25 | short; login 4 at the call's very minute: converted  |
| 3/7/2024 10:00 | 102       | VENTAS   | ana.lopez | 0:00:40 | effective; login 6 23 h later                        |
"""
LOGINS_DRAWN = """
| callid | customerid | logindate         | channel |
| 1      | 101        | 3/4/2024 12:00:00 | 1       |
| 2      | 102        | 3/4/2024 11:00:00 | 1       |
| 3      | 104        | 3/6/2024 16:00:00 | 2       |
| 4      | 106        | 3/5/2024 10:00:00 | 2       |
| 5      | 101        | 3/7/2024 9:00:00  | 2       |
| 6      | 102        | 3/8/2024 9:00:00  | 1       |
| 7      | 105        | 3/4/2024 8:00:00  | 1       |
"""
# Customers not called on a day: of the six, those with no call in the 48 h before its midnight; converted: those
# of them with a login from midnight to 48 h later. 4 March: nobody was called before, and 101, 102, 105 and 106 log
# in by the 6th. 5 March: only 106 was not called on the 4th, and logs in on the 5th. 7 March: 102, 103, 104 and
# 105 were not called on the 5th or 6th; 102 logs in on the 8th (101's login of the 7th is a called customer's).
EXPECTED_COUNTS = {
    AGG_LIFT_DAILY: """
    | dia        | group  | effective | converted | rate | short | converted | rate | not called | converted | rate |
    | 2024-03-04 |        | 1         | 1         | 1.00 | 3     | 1         | 0.33 | 6          | 4         | 0.67 |
    | 2024-03-05 |        | 1         | 0         | 0.00 | 1     | 1         | 1.00 | 1          | 1         | 1.00 |
    | 2024-03-07 |        | 1         | 1         | 1.00 | 0     | 0         |      | 4          | 1         | 0.25 |
    """,
    # COBRO on the 4th: only short calls, so no effective rate and no lift.
    AGG_LIFT_CAMPAIGN: """
    | dia        | group  | effective | converted | rate | short | converted | rate | not called | converted | rate |
    | 2024-03-04 | COBRO  | 0         | 0         |      | 1     | 0         | 0.00 | 6          | 4         | 0.67 |
    | 2024-03-04 | VENTAS | 1         | 1         | 1.00 | 2     | 1         | 0.50 | 6          | 4         | 0.67 |
    | 2024-03-05 | COBRO  | 0         | 0         |      | 1     | 1         | 1.00 | 1          | 1         | 1.00 |
    | 2024-03-05 | VENTAS | 1         | 0         | 0.00 | 0     | 0         |      | 1          | 1         | 1.00 |
    | 2024-03-07 | VENTAS | 1         | 1         | 1.00 | 0     | 0         |      | 4          | 1         | 0.25 |
    """,
    AGG_LIFT_AGENT: """
    | dia        | group     | effective | converted | rate | short | converted | rate | not called | converted | rate |
    | 2024-03-04 | ana.lopez | 1         | 1         | 1.00 | 1     | 1         | 1.00 | 6          | 4         | 0.67 |
    | 2024-03-04 | beto.diaz | 0         | 0         |      | 2     | 0         | 0.00 | 6          | 4         | 0.67 |
    | 2024-03-05 | ana.lopez | 1         | 0         | 0.00 | 0     | 0         |      | 1          | 1         | 1.00 |
    | 2024-03-05 | beto.diaz | 0         | 0         |      | 1     | 1         | 1.00 | 1          | 1         | 1.00 |
    | 2024-03-07 | ana.lopez | 1         | 1         | 1.00 | 0     | 0         |      | 4          | 1         | 0.25 |
    """,
}
# The interval of 4 March's lift over short calls, 1/1 - 1/3, by hand (z = 1.96, z² = 3.8415). Wilson's interval of
# x/n: centre (x + z²/2) / (n + z²), half-width z / (n + z²) * sqrt(x (n - x) / n + z²/4).
#   1/1: centre 2.9207 / 4.8415 = 0.6033, half-width 0.4048 * 0.9800 = 0.3967: [0.2065, 1]
#   1/3: centre 2.9207 / 6.8415 = 0.4269, half-width 0.2865 * 1.2756 = 0.3654: [0.0615, 0.7923]
#   lift 1 - 0.3333 = 0.6667; low 0.6667 - sqrt((1 - 0.2065)² + (0.7923 - 0.3333)²) = 0.6667 - 0.9167 = -0.2500;
#   high 0.6667 + sqrt((1 - 1)² + (0.3333 - 0.0615)²) = 0.6667 + 0.2718 = 0.9385.
EXPECTED_LIFTS = {
    AGG_LIFT_DAILY: """
    | dia        | group  | vs short | low   | high | vs not called | low   | high |
    | 2024-03-04 |        | 0.67     | -0.25 | 0.94 | 0.33          | -0.49 | 0.70 |
    | 2024-03-05 |        | -1.00    | -1.00 | 0.12 | -1.00         | -1.00 | 0.12 |
    | 2024-03-07 |        |          |       |      | 0.75          | -0.16 | 0.95 |
    """,
    AGG_LIFT_CAMPAIGN: """
    | dia        | group  | vs short | low   | high | vs not called | low   | high |
    | 2024-03-04 | COBRO  |          |       |      |               |       |      |
    | 2024-03-04 | VENTAS | 0.50     | -0.39 | 0.91 | 0.33          | -0.49 | 0.70 |
    | 2024-03-05 | COBRO  |          |       |      |               |       |      |
    | 2024-03-05 | VENTAS |          |       |      | -1.00         | -1.00 | 0.12 |
    | 2024-03-07 | VENTAS |          |       |      | 0.75          | -0.16 | 0.95 |
    """,
    AGG_LIFT_AGENT: """
    | dia        | group     | vs short | low   | high | vs not called | low   | high |
    | 2024-03-04 | ana.lopez | 0.00     | -0.79 | 0.79 | 0.33          | -0.49 | 0.70 |
    | 2024-03-04 | beto.diaz |          |       |      |               |       |      |
    | 2024-03-05 | ana.lopez |          |       |      | -1.00         | -1.00 | 0.12 |
    | 2024-03-05 | beto.diaz |          |       |      |               |       |      |
    | 2024-03-07 | ana.lopez |          |       |      | 0.75          | -0.16 | 0.95 |
    """,
}
GROUP = {AGG_LIFT_DAILY: "''", AGG_LIFT_CAMPAIGN: "a.campania_llamada", AGG_LIFT_AGENT: "g.agente"}
COUNTS = (
    "llamadas_efectivas, conversiones_efectivas, tasa_efectiva, llamadas_cortas, conversiones_cortas, tasa_cortas, "
    "clientes_sin_llamada, conversiones_sin_llamada, tasa_sin_llamada"
)
LIFTS_OF = (
    "lift_vs_cortas, lift_vs_cortas_ic_inf, lift_vs_cortas_ic_sup, "
    "lift_vs_sin_llamada, lift_vs_sin_llamada_ic_inf, lift_vs_sin_llamada_ic_sup"
)


def drawn_calls(table: str) -> list[tuple[object, ...]]:
    return [
        (when, who, campaign, PHONE, agent, talk, "0:05:00") for when, who, campaign, agent, talk, _ in drawn(table)
    ]


def drawn_logins(table: str) -> list[tuple[int, int | None, str, int | None]]:
    return [(int(c), int(cu), when, int(ch)) for c, cu, when, ch in drawn(table)]


def lift_of(url: str, table: str, columns: str) -> list[tuple[str, ...]]:
    """The table's rows for the declared settings: day, group (campaign, agent login, or none), columns."""
    agents = " JOIN dim_agentes g ON g.key_agente = a.key_agente_llamada" if table == AGG_LIFT_AGENT else ""
    rows = query(
        url,
        f"SELECT a.dia, {GROUP[table]}, {columns} FROM {table} a{agents} "  # noqa: S608
        "WHERE a.umbral_segundos = 30 AND a.ventana_segundos = 172800",
    )
    return sorted(tuple(cell(v) for v in row) for row in rows)


def load_days(url: str, folder: Path, first: date, end: date, mart: Mart = MART) -> None:
    with Callmart(url, folder, mart=mart) as callmart:
        callmart.init()
        callmart.enqueue(first, end, force=True)
        summary = callmart.run()
    assert summary.ok, [s.error for s in summary.failed]


@pytest.mark.parametrize("table", [AGG_LIFT_DAILY, AGG_LIFT_CAMPAIGN, AGG_LIFT_AGENT])
def test_lift_of_a_drawn_extract(database_url: str, tmp_path: Path, table: str) -> None:
    folder = write_extracts(
        tmp_path / "src", drawn_calls(CALLS_DRAWN), CUSTOMERS, AGENTS, logins=drawn_logins(LOGINS_DRAWN)
    )
    load_days(database_url, folder, date(2024, 3, 4), date(2024, 3, 8))
    # 6 March has logins but no call: no row. Rates and lifts are NULL where a side counted nobody.
    assert lift_of(database_url, table, COUNTS) == drawn(EXPECTED_COUNTS[table])
    assert lift_of(database_url, table, LIFTS_OF) == drawn(EXPECTED_LIFTS[table])


def test_the_lift_counted_a_few_days_at_a_time_is_that_of_the_whole_span(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A call's window reaches into the next statement's days, and a day without calls lies between two.
    monkeypatch.setattr(engines.for_url(sa.make_url(database_url)), "COUNTED_DAYS", 2)
    folder = write_extracts(
        tmp_path / "src", drawn_calls(CALLS_DRAWN), CUSTOMERS, AGENTS, logins=drawn_logins(LOGINS_DRAWN)
    )
    load_days(database_url, folder, date(2024, 3, 4), date(2024, 3, 8))
    for table in (AGG_LIFT_DAILY, AGG_LIFT_CAMPAIGN, AGG_LIFT_AGENT):
        assert lift_of(database_url, table, COUNTS) == drawn(EXPECTED_COUNTS[table]), table


def test_customers_keeping_history_count_once_and_match_by_business_id(database_url: str, tmp_path: Path) -> None:
    """Customer 101 changes type after the 5th: its call of the 4th points at its first version, its login of the
    6th (landing on the 6th's run) at its second; still one customer, whose short call converts."""
    history = apply_scd(MART, {"dim_clientes": {"tipo_cliente": "historical"}})
    customers = [(101, "F", "REGULAR"), (102, "M", "REGULAR"), (103, "F", "REGULAR")]
    calls = drawn_calls(
        """
        | Fecha          | IDCliente | Campania | Agente    | talk    | why                                      |
        | 3/4/2024 10:00 | 101       | VENTAS   | ana.lopez | 0:00:20 | short, to 101's first version            |
        | 3/4/2024 11:00 | 102       | VENTAS   | ana.lopez | 0:01:00 | effective, no login                      |
        | 3/5/2024 9:00  | 103       | VENTAS   | ana.lopez | 0:01:00 | effective; login 3 h later               |
        | 3/6/2024 12:00 | 101       | VENTAS   | ana.lopez | 0:01:00 | effective, to 101's second version       |
        | 3/7/2024 10:00 | 102       | VENTAS   | ana.lopez | 0:01:00 | effective, no login                      |
        """
    )
    late = (1, 101, "3/6/2024 8:00:00", 1)  # 46 h after the short call of the 4th, to 101's second version
    folder = tmp_path / "src"
    for day in (4, 5, 6, 7):
        kinds = {4: "REGULAR", 5: "GEM", 6: "GEM", 7: "GEM"}
        logins = [(2, 103, "3/5/2024 12:00:00", 1), *([late] if day >= 6 else [])]
        write_extracts(folder, calls, [(101, "F", kinds[day]), *customers[1:]], AGENTS, logins=logins)
        load_days(database_url, folder, date(2024, 3, day), date(2024, 3, day + 1), mart=history)
    versions = query(database_url, "SELECT count(*) FROM dim_clientes WHERE id_cliente = 101")
    assert versions == [(2,)]
    login_version = query(
        database_url,
        "SELECT c.version FROM dim_logins l JOIN dim_clientes c ON c.key_cliente = l.key_cliente_login "
        "WHERE l.id_login = 1",
    )
    assert login_version == [(2,)]
    # Counting versions as customers would make 4 customers, 4 not called on the 4th and 2 on the 7th.
    assert [row[:9] for row in lift_of(database_url, AGG_LIFT_DAILY, f"clientes, {COUNTS}")] == drawn(
        """
        | dia        | group | customers | effective | converted | rate | short | converted | rate |
        | 2024-03-04 |       | 3         | 1         | 0         | 0.00 | 1     | 1         | 1.00 |
        | 2024-03-05 |       | 3         | 1         | 1         | 1.00 | 0     | 0         |      |
        | 2024-03-06 |       | 3         | 1         | 0         | 0.00 | 0     | 0         |      |
        | 2024-03-07 |       | 3         | 1         | 0         | 0.00 | 0     | 0         |      |
        """
    )
    not_called = query(database_url, "SELECT dia, clientes_sin_llamada FROM agg_lift_diaria ORDER BY dia")
    assert [n for _, n in not_called] == [3, 1, 0, 1]


def lift_rows(conn: sa.Connection, schema: Schema) -> dict[str, list[tuple[object, ...]]]:
    """Every lift row but the time it was computed, sorted."""
    return {
        table.name: sorted(
            (tuple(r) for r in conn.execute(sa.select(*(c for c in table.c if c.name != COMPUTED_AT)))), key=repr
        )
        for table in lift_tables_of(schema)
    }


def test_an_incremental_refresh_equals_a_rebuild(database_url: str, tmp_path: Path) -> None:
    """Days loaded one at a time, each run's export holding the logins up to that evening (later ones land in later
    runs), one day's export late, then that day reloaded from a corrected export: after each run the lift equals the
    lift rebuilt from scratch. A day's calls count in the customers not called of the two days after it."""
    source = tmp_path / "generated"
    generate(source, calls=1500, days=5, customers=120, start=date(2024, 3, 4))
    folder = tmp_path / "src"
    folder.mkdir()
    for extract in source.iterdir():
        if not extract.name.startswith("logins"):
            shutil.copy(extract, folder)
    logins = json.loads((source / "logins_sample.json").read_text())
    header, *calls = (source / "Llamadas_sample.csv").read_text(encoding="latin-1").splitlines()
    fifth = [line for line in calls if line.startswith("3/5/2024")]
    corrected = [line for line in calls if line not in fifth[::3]]

    def export(evening: datetime, calls: list[str]) -> None:
        kept = [row for row in logins if datetime.strptime(row["logindate"], "%m/%d/%Y %H:%M:%S") < evening]
        (folder / "logins_sample.json").write_text(json.dumps(kept))
        (folder / "Llamadas_sample.csv").write_text("\n".join([header, *calls]) + "\n", encoding="latin-1")

    runs = [
        (4, datetime(2024, 3, 4, 20), calls),
        (6, datetime(2024, 3, 6, 20), calls),  # the 5th's export is late
        (5, datetime(2024, 3, 6, 21), calls),
        (7, datetime(2024, 3, 7, 20), calls),
        (8, datetime(2024, 3, 8, 20), calls),
        (5, datetime(2024, 3, 10), corrected),  # the 5th again, a third of its calls gone, every login in
    ]
    with Callmart(database_url, folder) as mart:
        mart.init()
        for day, evening, extract in runs:
            export(evening, extract)
            mart.enqueue(date(2024, 3, day), date(2024, 3, day + 1), force=True)
            summary = mart.run()
            assert summary.ok and summary.loaded, [s.error for s in summary.failed]
            with mart.engine.connect() as conn:
                rebuild = conn.begin()
                try:
                    incremental = lift_rows(conn, mart.schema)
                    rebuild_aggregates(conn, mart.schema)
                    rebuilt = lift_rows(conn, mart.schema)
                finally:
                    rebuild.rollback()
            assert incremental == rebuilt, day
    daily = incremental[AGG_LIFT_DAILY]
    assert [row[0] for row in daily] == [date(2024, 3, d) for d in range(4, 9)]
    assert all(row[3] > 0 and row[6] > 0 and row[10] > 0 for row in daily), daily  # effective, short, not called


def test_the_days_a_load_and_a_login_touch() -> None:
    window = timedelta(hours=48)
    # Calls of the 10th count in the 10th, and in the customers not called of the 11th and 12th.
    assert affected_days(datetime(2024, 3, 10), datetime(2024, 3, 11), window) == [
        date(2024, 3, d) for d in (10, 11, 12)
    ]
    touched = Touched()
    touched.add_period(datetime(2024, 3, 10), datetime(2024, 3, 11))
    assert touched.lift_days(window) == [date(2024, 3, d) for d in (10, 11, 12)]
    # A login at 8:00 on the 5th: the calls of the 3rd to the 5th, and the customers not called of those days.
    touched.add_events((datetime(2024, 3, 5, 8), datetime(2024, 3, 5, 8)))
    assert touched.lift_days(window) == [date(2024, 3, d) for d in (3, 4, 5, 10, 11, 12)]


def test_a_load_that_wrote_its_lift_settles_it_unless_a_later_load_counts_in_it() -> None:
    window = timedelta(hours=48)
    touched = Touched()
    affected = affected_days(datetime(2024, 3, 10), datetime(2024, 3, 11), window)
    touched.add_period(datetime(2024, 3, 10), datetime(2024, 3, 11), lift_settled=affected)
    assert touched.lift_days(window) == []
    # The next day, loaded after: the 11th and 12th it wrote too; the 13th as well. Nothing left.
    touched.add_period(
        datetime(2024, 3, 11), datetime(2024, 3, 12), lift_settled=[date(2024, 3, d) for d in (11, 12, 13)]
    )
    assert touched.lift_days(window) == []
    # An earlier day loaded last, without writing its lift (DuckDB's load): the 9th to the 11th are refreshed.
    touched.add_period(datetime(2024, 3, 9), datetime(2024, 3, 10))
    assert touched.lift_days(window) == [date(2024, 3, d) for d in (9, 10, 11)]


def test_the_lift_tables_are_declared_as_data() -> None:
    daily, campaign, agent = lift_tables(sa.MetaData())
    assert [t.name for t in (daily, campaign, agent)] == [a.name for a in LIFTS]
    assert [c.name for c in daily.primary_key] == ["umbral_segundos", "ventana_segundos", "dia"]
    assert [c.name for c in campaign.primary_key][-1] == "campania_llamada"
    assert [c.name for c in agent.primary_key][-1] == "key_agente_llamada"
    assert all(c.comment for t in (daily, campaign, agent) for c in t.columns) and daily.comment
    assert "not the effect" in str(daily.comment) and "Newcombe" in str(daily.c.lift_vs_cortas_ic_inf.comment)


# Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10: two of its worked examples.
PUBLISHED = [((56, 70, 48, 80), (0.2, 0.0524, 0.3339)), ((9, 10, 3, 10), (0.6, 0.1705, 0.8090))]


@pytest.mark.parametrize(("counts", "expected"), PUBLISHED)
def test_newcombes_published_examples(counts: tuple[int, int, int, int], expected: tuple[float, ...]) -> None:
    x1, n1, x2, n2 = counts
    found = newcombe([x1], [n1], [x2], [n2])
    assert [round(float(v[0]), 4) for v in found] == list(expected)
    # Arrow arrays, as grouped counts come, give the same.
    arrow = newcombe(*(pa.array([v], pa.int64()) for v in counts))
    assert [float(v[0]) for v in arrow] == [float(v[0]) for v in found]


def test_intervals_at_the_edges() -> None:
    # Wilson at 0 and at all successes: bounds exactly 0 and 1; no trials: no interval, no rate, no difference.
    low, high = wilson([0, 10, 0], [10, 10, 0])
    assert (low[0], high[1]) == (0.0, 1.0) and math.isnan(low[2]) and math.isnan(high[2])
    assert math.isnan(proportion([0], [0])[0])
    assert all(math.isnan(v[0]) for v in newcombe([1], [2], [0], [0]))


def test_lift_values_of_counts() -> None:
    (row,) = lift_values(
        [
            {
                "dia": date(2024, 3, 4),
                "llamadas_efectivas": 70,
                "conversiones_efectivas": 56,
                "llamadas_cortas": 80,
                "conversiones_cortas": 48,
            }
        ]
    )
    assert row["tasa_efectiva"] == 0.8 and row["tasa_cortas"] == 0.6
    assert (round(row["lift_vs_cortas_ic_inf"], 4), round(row["lift_vs_cortas_ic_sup"], 4)) == (0.0524, 0.3339)
    # No customer not called counted: no rate, no lift over them.
    assert row["clientes_sin_llamada"] == 0 and row["tasa_sin_llamada"] is None and row["lift_vs_sin_llamada"] is None


proportions = st.integers(1, 2000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))


@settings(max_examples=300, deadline=None)
@given(one=proportions, two=proportions, times=st.integers(2, 50))
def test_the_interval_holds_the_difference_within_bounds_and_narrows_with_more_calls(
    one: tuple[int, int], two: tuple[int, int], times: int
) -> None:
    (x1, n1), (x2, n2) = one, two
    estimate, low, high = (float(v[0]) for v in newcombe([x1], [n1], [x2], [n2]))
    assert estimate == pytest.approx(x1 / n1 - x2 / n2)
    assert -1.0 <= low <= estimate <= high <= 1.0
    # The same proportions out of k times the calls: a narrower interval, still around the difference.
    _, low_k, high_k = (float(v[0]) for v in newcombe([x1 * times], [n1 * times], [x2 * times], [n2 * times]))
    assert high_k - low_k < high - low
    assert low_k <= estimate <= high_k
    wilson_low, wilson_high = wilson(np.array([x1]), np.array([n1]))
    assert 0.0 <= wilson_low[0] <= x1 / n1 <= wilson_high[0] <= 1.0
