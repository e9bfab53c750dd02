"""End-to-end loads on both engines: the seed sample, the metric, inferred members, incremental, idempotent."""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from callmart import Callmart, RunSummary, backfill, extract, fact
from callmart.cli import cli
from callmart.engines.postgres.partitions import PartitionSwap
from callmart.engines.sql.replace import DeleteInsert
from callmart.mart.sample import generate
from callmart.status import Status
from conftest import ON_SPARK, WITH_POOLER, WITH_SPARK
from marts import business_dump, count_rows, drawn, full_dump, query, select, write_extracts


def load(url: str, source: Path, first: date, last: date, force: bool = False) -> RunSummary:
    """init, enqueue [first, last) and run, as the CLI does, the extracts complete through the last day."""
    with Callmart(url, source) as mart:
        mart.init()
        mart.enqueue(first, last, force=force)
        summary = mart.run(complete_through=last - timedelta(days=1))
    assert summary.ok, [s.error for s in summary.failed]
    return summary


def run_again(url: str, source: Path) -> RunSummary:
    """One more run, with nothing newly queued."""
    with Callmart(url, source) as mart:
        return mart.run()


def expected_metric(seed: Path) -> dict[tuple[str, str, str, str], int | None]:
    """An independent computation of key_login_post_llamada by business values, from the raw files."""
    logins: dict[int, list[tuple[datetime, int]]] = {}
    for row in json.loads((seed / "logins_2024.json").read_text(encoding="latin-1")):
        when = datetime.strptime(row["logindate"], "%m/%d/%Y %H:%M:%S")
        logins.setdefault(row["customerid"], []).append((when, row["callid"]))
    expected = {}
    with (seed / "Llamadas_2024.csv").open(encoding="latin-1", newline="") as handle:
        for row in csv.DictReader(handle):
            when = datetime.strptime(row["Fecha"], "%m/%d/%Y %H:%M")
            h, m, s = map(int, row["Tiempohablado"].split(":"))
            hit = None
            if row["IDCliente"] != "-1" and h * 3600 + m * 60 + s >= 30:
                hits = sorted(
                    x for x in logins.get(int(row["IDCliente"]), []) if when <= x[0] < when + timedelta(hours=48)
                )
                hit = hits[0][1] if hits else None
            expected[(row["Fecha"], row["IDCliente"], row["Telefono"], row["Tiempohablado"])] = hit
    return expected


@pytest.mark.parametrize("new_database", WITH_POOLER, indirect=True)
def test_seed_sample_end_to_end(database_url: str, seed_dir: Path) -> None:
    load(database_url, seed_dir, date(2023, 6, 1), date(2023, 9, 1))

    tables = ["fact_llamadas", "dim_clientes", "dim_agentes", "dim_canales_digitales", "dim_logins"]
    counts = {t: count_rows(database_url, t) for t in tables}
    # Every source row plus the default member in each dimension.
    assert counts == {
        "fact_llamadas": 1326,
        "dim_clientes": 783,
        "dim_agentes": 11,
        "dim_canales_digitales": 3,
        "dim_logins": 130,
    }
    statuses = query(database_url, "SELECT status, count(*) FROM dm_processes GROUP BY status")
    assert statuses == [("exitoso", 92)]

    names = query(
        database_url,
        "SELECT agente, nombre_agente, apellido_agente FROM dim_agentes "
        "WHERE agente IN ('glopez', 'pe_jborrero', 'pe_lchavez') ORDER BY agente",
    )
    assert names == [
        ("glopez", "Graciela", "López"),
        ("pe_jborrero", "Julián", "Borrero"),
        ("pe_lchavez", "Laura", "Chávez"),
    ]

    for table, key, business in [
        ("dim_clientes", "key_cliente", "id_cliente"),
        ("dim_agentes", "key_agente", "id_agente"),
        ("dim_canales_digitales", "key_canal_digital", "id_canal_digital"),
        ("dim_logins", "key_login", "id_login"),
    ]:
        assert select(database_url, table, key, business, "is_inferred", **{key: -999}) == [(-999, -999, False)]
        keys = select(database_url, table, key)
        assert len(set(keys)) == len(keys) == count_rows(database_url, table)
    assert query(database_url, "SELECT count(*) FROM dim_clientes WHERE is_inferred") == [(0,)]

    # IDCliente -1 (not a customer yet) points at the default member.
    assert query(database_url, "SELECT count(*) FROM fact_llamadas WHERE key_cliente_llamada = -999") == [(253,)]
    assert query(database_url, "SELECT count(*) FROM dim_clientes WHERE genero_cliente = 'unknown'") == [(118,)]
    assert query(database_url, "SELECT count(DISTINCT key_llamada) FROM fact_llamadas") == [(1326,)]

    rows = query(
        database_url,
        """
        SELECT f.fecha_llamada, c.id_cliente, f.telefono_llamada, f.segundos_hablados_llamada, l.id_login
        FROM fact_llamadas f JOIN dim_clientes c ON c.key_cliente = f.key_cliente_llamada
        LEFT JOIN dim_logins l ON l.key_login = f.key_login_post_llamada""",
    )
    expected = expected_metric(seed_dir)
    got = {}
    for when, customer, phone, seconds, login in rows:
        source_customer = "-1" if customer == -999 else str(customer)
        talk = f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        got[(f"{when.month}/{when.day}/{when.year} {when.hour}:{when.minute:02d}", source_customer, phone, talk)] = (
            login
        )
    assert got == expected
    assert sum(v is not None for v in got.values()) == 92


CALLS_FOR_METRIC = """
| case                         | Fecha           | IDCliente | Tiempohablado |
|------------------------------|-----------------|-----------|---------------|
| login at the call's minute   | 3/4/2024 9:00   | 101       | 0:00:30       |
| login 47:59:59 later         | 3/4/2024 10:00  | 102       | 0:01:00       |
| login exactly 48 h later     | 3/4/2024 11:00  | 103       | 0:01:00       |
| login a second before        | 3/4/2024 12:00  | 104       | 0:01:00       |
| talk 29 s                    | 3/4/2024 13:00  | 105       | 0:00:29       |
| two logins, first one wins   | 3/4/2024 14:00  | 106       | 0:02:00       |
| not a customer (-1)          | 3/4/2024 15:00  | -1        | 0:05:00       |
| another customer's login     | 3/4/2024 16:00  | 108       | 0:05:00       |
"""

LOGINS_FOR_METRIC = """
| callid | customerid | logindate           |
|--------|------------|---------------------|
| 1      | 101        | 3/4/2024 9:00:00    |
| 2      | 102        | 3/6/2024 9:59:59    |
| 3      | 103        | 3/6/2024 11:00:00   |
| 4      | 104        | 3/4/2024 11:59:59   |
| 5      | 105        | 3/4/2024 13:05:00   |
| 6      | 106        | 3/5/2024 8:00:00    |
| 7      | 106        | 3/4/2024 14:30:00   |
| 8      | 109        | 3/4/2024 16:10:00   |
"""

EXPECTED_METRIC = """
| IDCliente | first login after the call |
|-----------|----------------------------|
| 101       | 1                          |
| 102       | 2                          |
| 103       |                            |
| 104       |                            |
| 105       |                            |
| 106       | 7                          |
| -1        |                            |
| 108       |                            |
"""


def metric_extracts(folder: Path) -> Path:
    calls = [(f, c, "CAMP", "5550000000", "ana.lopez", talk, "0:09:00") for _, f, c, talk in drawn(CALLS_FOR_METRIC)]
    logins = [(int(i), int(c), d, 1) for i, c, d in drawn(LOGINS_FOR_METRIC)]
    customers = [(c, "F", "GEM") for c in range(101, 110)]
    return write_extracts(folder, calls=calls, customers=customers, logins=logins)


def metric_by_customer(url: str) -> list[tuple[str, str]]:
    rows = query(
        url,
        """
        SELECT c.id_cliente, l.id_login FROM fact_llamadas f
        JOIN dim_clientes c ON c.key_cliente = f.key_cliente_llamada
        LEFT JOIN dim_logins l ON l.key_login = f.key_login_post_llamada ORDER BY f.fecha_llamada""",
    )
    return [("-1" if c == -999 else str(c), "" if login is None else str(login)) for c, login in rows]


@pytest.mark.parametrize("new_database", WITH_SPARK, indirect=True)
def test_metric_hand_worked_cases(database_url: str, tmp_path: Path) -> None:
    load(database_url, metric_extracts(tmp_path / "src"), date(2024, 3, 4), date(2024, 3, 5))
    assert metric_by_customer(database_url) == drawn(EXPECTED_METRIC)


@pytest.mark.parametrize("new_database", WITH_SPARK, indirect=True)
def test_logins_arriving_after_the_calls_update_the_metric(database_url: str, tmp_path: Path) -> None:
    folder = metric_extracts(tmp_path / "src")
    logins_file = folder / "logins_t.json"
    all_logins = logins_file.read_text()
    logins_file.write_text("[]")
    load(database_url, folder, date(2024, 3, 4), date(2024, 3, 5))
    assert all(login == "" for _, login in metric_by_customer(database_url))

    # The next day's run brings the logins; the loaded period is not queued again.
    logins_file.write_text(all_logins)
    summary = run_again(database_url, folder)
    assert [s.table for s in summary.steps] == ["dim_clientes", "dim_agentes", "dim_canales_digitales", "dim_logins"]
    assert summary.steps[-1].metric_updated > 0
    assert metric_by_customer(database_url) == drawn(EXPECTED_METRIC)


@pytest.mark.parametrize("new_database", WITH_SPARK, indirect=True)
def test_a_changed_login_moves_the_metric(database_url: str, tmp_path: Path) -> None:
    folder = metric_extracts(tmp_path / "src")
    load(database_url, folder, date(2024, 3, 4), date(2024, 3, 5))
    logins = json.loads((folder / "logins_t.json").read_text())
    logins[6]["logindate"] = "3/6/2024 8:00:00"  # login 7 now comes after login 6
    logins[0]["customerid"] = 109  # login 1 now belongs to someone else
    (folder / "logins_t.json").write_text(json.dumps(logins))
    run_again(database_url, folder)
    got = dict(metric_by_customer(database_url))
    assert got["101"] == "" and got["106"] == "6"


def test_inferred_members_are_completed_in_place(database_url: str, tmp_path: Path) -> None:
    calls = [
        ("3/4/2024 9:00", 500, "CAMP", "5550000000", "nuevo.agente", "0:00:40", "0:01:00"),
        ("3/4/2024 9:05", 101, "CAMP", "5550000001", "ana.lopez", "0:00:10", "0:01:00"),
        ("3/4/2024 9:06", "", "CAMP", "5550000002", "", "0:00:10", "0:01:00"),
    ]
    folder = write_extracts(tmp_path / "src", calls=calls, customers=[(101, "M", "REGULAR")])
    load(database_url, folder, date(2024, 3, 4), date(2024, 3, 5))
    inferred = query(
        database_url,
        "SELECT key_cliente, id_cliente, genero_cliente, tipo_cliente, is_inferred "
        "FROM dim_clientes WHERE id_cliente = 500",
    )
    key_cliente = inferred[0][0]
    assert inferred == [(key_cliente, 500, "unknown", "unknown", True)]
    agent = query(
        database_url,
        "SELECT key_agente, id_agente, agente, nombre_agente, is_inferred "
        "FROM dim_agentes WHERE agente = 'nuevo.agente'",
    )
    key_agente = agent[0][0]
    assert agent == [(key_agente, None, "nuevo.agente", "unknown", True)]
    # Empty business ids point at the default members.
    assert query(
        database_url,
        "SELECT key_cliente_llamada, key_agente_llamada FROM fact_llamadas WHERE telefono_llamada = '5550000002'",
    ) == [(-999, -999)]
    facts_before = full_dump(database_url, ["fact_llamadas"])

    # The real rows arrive: the same members are completed, and the facts keep their keys.
    write_extracts(
        folder,
        calls=calls,
        customers=[(101, "M", "REGULAR"), (500, "F", "GEM")],
        agents=[(1, "ana.lopez", 1, "Ana", "López"), (7, "Nuevo.Agente", 3, "Nuria", "Peña")],
    )
    run_again(database_url, folder)
    assert query(
        database_url,
        "SELECT key_cliente, id_cliente, genero_cliente, tipo_cliente, is_inferred "
        "FROM dim_clientes WHERE id_cliente = 500",
    ) == [(key_cliente, 500, "F", "GEM", False)]
    assert query(
        database_url,
        "SELECT key_agente, id_agente, agente, nombre_agente, apellido_agente, is_inferred "
        "FROM dim_agentes WHERE agente = 'nuevo.agente'",
    ) == [(key_agente, 7, "nuevo.agente", "Nuria", "Peña", False)]
    assert full_dump(database_url, ["fact_llamadas"]) == facts_before


def test_type_1_change_overwrites_in_place(database_url: str, tmp_path: Path) -> None:
    folder = write_extracts(tmp_path / "src", customers=[(101, "M", "REGULAR"), (102, "NA", "gem")])
    load(database_url, folder, date(2024, 3, 4), date(2024, 3, 5))
    before = query(
        database_url,
        "SELECT key_cliente, id_cliente, genero_cliente, tipo_cliente FROM dim_clientes "
        "WHERE id_cliente > 0 ORDER BY id_cliente",
    )
    assert [r[1:] for r in before] == [(101, "M", "REGULAR"), (102, "unknown", "GEM")]
    write_extracts(folder, customers=[(101, "M", "GEM"), (102, "NA", "GEM"), (101, "M", "GEM")])
    summary = run_again(database_url, folder)
    assert summary.steps[0].updated == 1 and summary.steps[0].inserted == 0
    after = query(
        database_url,
        "SELECT key_cliente, id_cliente, genero_cliente, tipo_cliente FROM dim_clientes "
        "WHERE id_cliente > 0 ORDER BY id_cliente",
    )
    assert after == [(before[0][0], 101, "M", "GEM"), before[1]]


def growing_extracts(seed: Path, folder: Path, last_day: date) -> Path:
    """The seed as it would have been exported at the end of last_day: only what had happened by then."""
    cutoff = datetime.combine(last_day + timedelta(days=1), datetime.min.time())
    folder.mkdir(parents=True, exist_ok=True)
    with (seed / "Llamadas_2024.csv").open(encoding="latin-1", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        calls = [r for r in reader if datetime.strptime(r[0], "%m/%d/%Y %H:%M") < cutoff]
    logins = [
        row
        for row in json.loads((seed / "logins_2024.json").read_text())
        if datetime.strptime(row["logindate"], "%m/%d/%Y %H:%M:%S") < cutoff
    ]
    called = {r[1] for r in calls} | {str(r["customerid"]) for r in logins}
    with (seed / "Customers_2024.csv").open(encoding="latin-1", newline="") as handle:
        reader = csv.reader(handle)
        customer_header = next(reader)
        # Customers known so far: half of those already seen (the rest arrive later, inferred meanwhile).
        customers = [r for r in reader if r[0] in called and int(r[0]) % 2 == 0]
    for name, head, rows in [("Llamadas_x.csv", header, calls), ("Customers_x.csv", customer_header, customers)]:
        with (folder / name).open("w", encoding="latin-1", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(head)
            writer.writerows(rows)
    (folder / "logins_x.json").write_text(json.dumps(logins))
    for name in ["Agentes_2024.csv", "CanalDigital_2024.csv"]:
        (folder / name).write_bytes((seed / name).read_bytes())
    return folder


def test_incremental_equals_full(new_database: Callable[[], str], seed_dir: Path, tmp_path: Path) -> None:
    days = [
        date(2023, 6, 27),
        date(2023, 6, 28),
        date(2023, 7, 25),
        date(2023, 7, 27),
        date(2023, 7, 28),
        date(2023, 8, 25),
        date(2023, 8, 28),
    ]
    assert incremental_equals_full(new_database, seed_dir, tmp_path, days) == 1326


@pytest.mark.parametrize("new_database", [ON_SPARK], indirect=True)
def test_incremental_equals_full_on_spark(new_database: Callable[[], str], seed_dir: Path, tmp_path: Path) -> None:
    # Fewer days than on the SQL engines (each run of a local Spark session takes a while), up to the extracts'
    # last one, so that the full load sees no login the daily runs could not.
    days = [date(2023, 7, 28), date(2023, 8, 25), date(2023, 8, 28)]
    assert incremental_equals_full(new_database, seed_dir, tmp_path, days) > 100


def incremental_equals_full(new_database: Callable[[], str], seed_dir: Path, tmp_path: Path, days: list[date]) -> int:
    """Loading `days` one run each, every run seeing the extracts as they stood that evening, then a last run with
    every customer, gives the mart one load of them all gives; how many calls it holds."""
    # Day by day, each run seeing the extracts as they stood that evening; a last run sees every customer.
    incremental_url, folder = new_database(), tmp_path / "daily"
    for day in days:
        load(incremental_url, growing_extracts(seed_dir, folder, day), day, day + timedelta(days=1))
    (folder / "Customers_x.csv").unlink()
    (folder / "Customers_2024.csv").write_bytes((seed_dir / "Customers_2024.csv").read_bytes())
    run_again(incremental_url, folder)

    # The same days in one run, from the whole extracts.
    full_url = new_database()
    with Callmart(full_url, seed_dir) as mart:
        mart.init()
        for day in days:
            mart.enqueue(day, day + timedelta(days=1))
        assert mart.run().ok
    incremental, full = business_dump(incremental_url), business_dump(full_url)
    assert incremental == full
    assert query(incremental_url, "SELECT count(*) FROM dim_clientes WHERE is_inferred") == [(0,)]
    return len(incremental["fact_llamadas"])


@pytest.mark.parametrize("new_database", [*WITH_POOLER, ON_SPARK], indirect=True)
def test_rerunning_a_period_leaves_the_mart_identical(database_url: str, seed_dir: Path) -> None:
    load(database_url, seed_dir, date(2023, 6, 27), date(2023, 6, 29))
    tables = ["dim_clientes", "dim_agentes", "dim_canales_digitales", "dim_logins", "fact_llamadas"]
    before = full_dump(database_url, tables)
    load(database_url, seed_dir, date(2023, 6, 28), date(2023, 6, 29), force=True)
    assert full_dump(database_url, tables) == before
    load(database_url, seed_dir, date(2023, 6, 27), date(2023, 6, 29), force=True)
    assert full_dump(database_url, tables) == before


@pytest.mark.parametrize("damage", ["missing calls file", "failure after the delete"])
def test_a_failed_period_is_left_as_it_was(
    database_url: str, seed_dir: Path, tmp_path: Path, damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    for f in seed_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    load(database_url, folder, date(2023, 6, 27), date(2023, 6, 29))
    if damage == "missing calls file":
        (folder / "Llamadas_2024.csv").unlink()
        expected = ["fallido", "fallido"]
    else:
        # The period's rows are already replaced, in the database, when what follows fails.
        def replace_then_fail(replaced: Any) -> Any:
            def finish(replace: Any, rows: Any) -> tuple[int, int]:
                removed, added = replaced(replace, rows)
                assert removed > 0
                # Whether the day is loaded alone or with the day before it, as one span.
                if replace.start <= datetime(2023, 6, 28) < replace.end:
                    raise RuntimeError("the disk is full")
                return removed, added

            return finish

        for kind in (DeleteInsert, PartitionSwap):
            monkeypatch.setattr(kind, "finish", replace_then_fail(kind.finish))
        expected = ["exitoso", "fallido"]
    before = full_dump(database_url, ["fact_llamadas"])
    with Callmart(database_url, folder) as mart:
        mart.enqueue(date(2023, 6, 27), date(2023, 6, 29), force=True)
        summary = mart.run()
    # Both periods were tried: a failure does not stop the run.
    assert [s.status for s in summary.steps[4:]] == expected
    assert not summary.ok
    assert full_dump(database_url, ["fact_llamadas"]) == before
    statuses = query(database_url, "SELECT start_date, status, error_message FROM dm_processes ORDER BY start_date")
    assert [s for _, s, _ in statuses] == expected
    message = statuses[1][2]
    assert isinstance(message, str) and "\n" not in message
    assert ("Llamadas" in message) if damage == "missing calls file" else ("the disk is full" in message)


def test_exact_duplicates_are_found_however_many_hashes_repeat(
    database_url: str, seed_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    for f in seed_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    calls = folder / "Llamadas_2024.csv"
    lines = calls.read_bytes().splitlines(keepends=True)
    calls.write_bytes(b"".join([*lines, lines[1], lines[1]]))
    day = datetime.strptime(lines[1].decode("latin-1").split(",")[0], "%m/%d/%Y %H:%M").date()
    duplicates = (
        "SELECT line_number FROM dm_rejects WHERE reason = 'exact duplicate of an earlier row of the extract' "
        "AND id_run = (SELECT max(id_run) FROM dm_runs) ORDER BY line_number"
    )

    load(database_url, folder, day, day + timedelta(days=1))
    listed = query(database_url, duplicates)
    # Beyond the limit, the repeated hashes are found again by a subquery instead of passed as values.
    monkeypatch.setattr(fact, "MAX_LISTED_HASHES", 0)
    load(database_url, folder, day, day + timedelta(days=1), force=True)
    assert query(database_url, duplicates) == listed
    monkeypatch.undo()
    # Every row's prefix taken for a repeated one: rows that merely share a prefix are compared, not warned.
    everyone = fact.RepeatedHashes.repeated
    monkeypatch.setattr(fact.RepeatedHashes, "repeated", lambda self: sorted(set(everyone(self)) | set(self.seen)))
    monkeypatch.setattr(fact.RepeatedHashes, "add", _keeping_every_prefix(fact.RepeatedHashes.add))
    load(database_url, folder, day, day + timedelta(days=1), force=True)
    assert query(database_url, duplicates) == listed
    assert [len(lines) + 1, len(lines) + 2] == [n for (n,) in listed][-2:]


def _keeping_every_prefix(add: Callable[..., Any]) -> Callable[..., Any]:
    def keeping(self: Any, batch: Any) -> Any:
        hashes = batch.column("row_hash").to_pylist()
        self.seen = getattr(self, "seen", set()) | {h >> 32 for h in hashes}
        return add(self, batch)

    return keeping


def test_a_dimension_is_merged_again_only_when_its_extract_changes(
    database_url: str, seed_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    for f in seed_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    day = date(2023, 6, 27)
    load(database_url, folder, day, day + timedelta(days=1))
    dimensions = ["dim_clientes", "dim_agentes", "dim_canales_digitales", "dim_logins"]

    unchanged = run_again(database_url, folder)
    assert [(s.table, s.read, s.note) for s in unchanged.steps] == [
        (d, 0, "source unchanged since its last merge") for d in dimensions
    ]

    # One customer's type changes: only the customers are merged again, and the change lands.
    customers = folder / "Customers_2024.csv"
    header, first, *rest = customers.read_text(encoding="latin-1").splitlines(keepends=True)
    fields = first.rstrip("\r\n").split(",")
    fields[2] = "MOVED"
    customers.write_text("".join([header, ",".join(fields) + "\n", *rest]), encoding="latin-1")
    changed = run_again(database_url, folder)
    assert [(s.table, s.note is None) for s in changed.steps] == [
        ("dim_clientes", True),
        *((d, False) for d in dimensions[1:]),
    ]
    assert changed.steps[0].read == len(rest) + 1 and changed.steps[0].updated == 1
    moved = query(database_url, "SELECT tipo_cliente FROM dim_clientes WHERE id_cliente = :i", i=int(fields[0]))
    assert moved == [("MOVED",)]

    with Callmart(database_url, folder) as mart:
        forced = mart.run(reload_dimensions=True)
    assert all(s.note is None and s.read > 0 for s in forced.steps)


class RowsRead:
    """A reporter adding up the source rows each step reads."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.failed_spans: list[tuple[str, str]] = []

    def step_started(self, name: str) -> None:
        self.rows[name] = 0

    def rows_read(self, name: str, rows: int) -> None:
        self.rows[name] += rows

    def step_finished(self, result: Any) -> None:
        pass

    def span_failed(self, name: str, error: str) -> None:
        self.failed_spans.append((name, error))


def two_calls_files(folder: Path) -> int:
    """Split the generated calls extract in two files, the second with its columns in another order, and add calls
    on either side of midnight; return the calls."""
    path = folder / "Llamadas_sample.csv"
    with path.open(encoding="latin-1", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    path.unlink()
    rows[1:1] = [[when, *rows[0][1:]] for when in ("3/4/2024 23:59", "3/5/2024 0:00", "3/6/2024 0:00")]
    half = len(rows) // 2
    order = [*range(1, len(header)), 0]  # Fecha last
    for name, head, part in [
        ("Llamadas_a.csv", header, rows[:half]),
        ("Llamadas_b.csv", [header[i] for i in order], [[r[i] for i in order] for r in rows[half:]]),
    ]:
        with (folder / name).open("w", encoding="latin-1", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows([head, *part])
    return len(rows)


def test_a_backfill_reads_its_extract_once_and_loads_what_each_day_would(
    new_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "extract"
    generate(folder, calls=3000, days=5, customers=400, dirty_share=0.05, seed=11)
    total = two_calls_files(folder)
    # Six days: the last has no call in the extract. Spans of at most 1,500 rows: about two days each.
    days = [date(2024, 3, 4) + timedelta(days=i) for i in range(6)]
    monkeypatch.setattr(backfill, "SPAN_ROWS", 1500)
    # The split writes the days' rows as they come, a few at a time, rather than holding them all, in files of a
    # day's rows or of several days'.
    monkeypatch.setattr(backfill, "SPLIT_HELD_BYTES", 4096)
    monkeypatch.setattr(backfill, "FILE_ROWS", 5)
    steps = ["read", "loaded", "rejected", "warned", "inserted", "inferred"]

    backfill_url, reporter = new_database(), RowsRead()
    with Callmart(backfill_url, folder, reporter=reporter) as mart:
        mart.init()
        mart.enqueue(days[0], days[-1] + timedelta(days=1))
        loaded = mart.run(complete_through=days[-1])
    assert loaded.ok
    # The run's time holds its steps' and what lies between them (claims, the final refresh of the aggregates).
    assert loaded.seconds >= sum(s.seconds for s in loaded.steps) > 0
    claimed, *spans = [name for name in reporter.rows if name.startswith("fact_")]
    assert claimed == f"fact_llamadas {days[0]:%Y-%m-%d} to {days[-1]:%Y-%m-%d}" and len(spans) >= 2
    # The whole extract is read once, to set each day's rows apart; each span then reads only its days' rows.
    assert reporter.rows[claimed] == total
    assert all(0 < reporter.rows[span] < total / 2 for span in spans)

    daily_url, daily = new_database(), []
    for day in days:
        daily.append(load(daily_url, folder, day, day + timedelta(days=1)))

    tables = ["dim_clientes", "dim_agentes", "fact_llamadas"]
    assert full_dump(backfill_url, tables) == full_dump(daily_url, tables)
    periods = [s for s in loaded.steps if s.period is not None]
    each_day = [s for summary in daily for s in summary.steps if s.period is not None]
    assert [[getattr(s, c) for c in steps] for s in periods] == [[getattr(s, c) for c in steps] for s in each_day]
    assert sum(s.rejected for s in periods) > 0 and sum(s.warned for s in periods) > 0
    found = (
        "SELECT DISTINCT table_name, period_start, source_file, line_number, column_name, raw_value, raw_line, "
        "reason, severity FROM dm_rejects"
    )
    rejected = set(query(backfill_url, found))
    assert rejected == set(query(daily_url, found))
    # Rows without a readable date, from both files, are reported once, as no period's.
    undated = {r for r in rejected if r[1] is None and r[2].startswith("Llamadas")}
    assert {r[2] for r in undated} == {"Llamadas_a.csv", "Llamadas_b.csv"}


def test_a_span_is_consecutive_pending_days_of_one_table(database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "extract"
    generate(folder, calls=1000, days=6, customers=200, seed=2)
    days = [date(2024, 3, 4) + timedelta(days=i) for i in range(6)]
    reporter = RowsRead()
    with Callmart(database_url, folder, reporter=reporter) as mart:
        mart.init()
        # The third day is not queued: the days on either side of it are two spans.
        mart.enqueue(days[0], days[2])
        mart.enqueue(days[3], days[-1] + timedelta(days=1))
        assert mart.run(complete_through=days[-1]).ok
    loads = [name for name in reporter.rows if name.startswith("fact_")]
    assert loads == ["fact_llamadas 2024-03-04 to 2024-03-05", "fact_llamadas 2024-03-07 to 2024-03-09"]


def test_a_reloaded_span_counts_the_rows_each_day_held(database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "extract"
    generate(folder, calls=1200, days=4, customers=200, seed=4)
    first, end = date(2024, 3, 4), date(2024, 3, 8)
    reporter = RowsRead()
    with Callmart(database_url, folder, reporter=reporter) as mart:
        mart.init()
        mart.enqueue(first, end)
        assert mart.run(complete_through=end - timedelta(days=1)).ok
        held = query(
            database_url,
            "SELECT CAST(fecha_llamada AS DATE), count(*) FROM fact_llamadas GROUP BY 1 ORDER BY 1",
        )
        mart.enqueue(first, end, force=True)
        reloaded = mart.run(complete_through=end - timedelta(days=1))
    assert reloaded.ok
    # One span, no day loaded alone (as after a span that failed).
    assert [name for name in reporter.rows if name.startswith("fact_")] == ["fact_llamadas 2024-03-04 to 2024-03-07"]
    days = [s for s in reloaded.steps if s.period is not None]
    assert len({count for _, count in held}) > 1  # days of different sizes: a count given to the wrong day shows
    assert [(s.period[0].date(), s.deleted, s.inserted) for s in days] == [(day, count, count) for day, count in held]


def fail_replacing(broken: datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every replace of a period holding `broken` fail as its rows are written (a full disk)."""

    def fails_on_broken_day(replaced: Any) -> Any:
        def finish(replace: Any, rows: Any) -> tuple[int, int]:
            done = replaced(replace, rows)
            if replace.start <= broken < replace.end:
                raise RuntimeError("the disk is full")
            return done

        return finish

    for kind in (DeleteInsert, PartitionSwap):
        monkeypatch.setattr(kind, "finish", fails_on_broken_day(kind.finish))


def test_a_span_that_fails_is_loaded_again_day_by_day(
    new_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "extract"
    generate(folder, calls=2000, days=5, customers=300, dirty_share=0.02, seed=3)
    days = [date(2024, 3, 4) + timedelta(days=i) for i in range(5)]
    broken = datetime(2024, 3, 6)
    fail_replacing(broken, monkeypatch)
    url = new_database()
    reporter = RowsRead()
    with Callmart(url, folder, reporter=reporter) as mart:
        mart.init()
        mart.enqueue(days[0], days[-1] + timedelta(days=1))
        summary = mart.run(complete_through=days[-1])
    # The span's failure is reported, with its cause, before its days load one at a time.
    assert reporter.failed_spans == [("fact_llamadas 2024-03-04 to 2024-03-08", "RuntimeError: the disk is full")]
    assert [name for name in reporter.rows if name.startswith("fact_llamadas 2024-03-0")][-5:] == [
        f"fact_llamadas {d:%Y-%m-%d}" for d in days
    ]
    statuses = query(url, "SELECT start_date, status FROM dm_processes ORDER BY start_date")
    assert statuses == [
        (datetime.combine(d, datetime.min.time()), "fallido" if d == broken.date() else "exitoso") for d in days
    ]
    assert [(s.period[0], s.status) for s in summary.steps if s.period is not None] == [
        (start, Status(status)) for start, status in statuses
    ]
    monkeypatch.undo()
    # Every other day is loaded as if alone; the broken day holds nothing.
    daily_url = new_database()
    for day in days:
        if day != broken.date():
            load(daily_url, folder, day, day + timedelta(days=1))
    tables = ["dim_clientes", "dim_agentes", "fact_llamadas"]
    assert full_dump(url, tables) == full_dump(daily_url, tables)
    steps = (
        "SELECT period_start, rows_read, rows_loaded, rows_rejected, rows_warned, inferred_members FROM dm_run_steps"
    )
    ok = " WHERE status = 'exitoso' AND period_start IS NOT NULL ORDER BY 1"
    assert query(url, steps + ok) == query(daily_url, steps + ok)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_command_line_says_why_a_span_is_loaded_day_by_day(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_format: str
) -> None:
    folder = tmp_path / "extract"
    generate(folder, calls=600, days=3, customers=100, seed=5)
    fail_replacing(datetime(2024, 3, 5), monkeypatch)
    env = {"CALLMART_DATABASE_URL": database_url, "CALLMART_SOURCE_DIR": str(folder)}
    for args in (
        ["init"],
        ["enqueue", "--from", "2024-03-04", "--to", "2024-03-07"],
        ["run", "--complete-through", "2024-03-06"],
    ):
        done = CliRunner().invoke(cli, ["--log-format", log_format, *args], env=env, catch_exceptions=False)
    assert done.exit_code == 1, done.output
    said = [line for line in done.stderr.splitlines() if "2024-03-04 to 2024-03-06" in line]
    if log_format == "json":
        said = [line for line in said if json.loads(line)["event"] == "span_failed"]
        assert [json.loads(line)["error"] for line in said] == ["RuntimeError: the disk is full"]
    else:
        assert said == [
            "  fact_llamadas 2024-03-04 to 2024-03-06: failed as one span, loading its days one at a time: "
            "RuntimeError: the disk is full"
        ]


def test_a_backfill_without_room_for_its_split_reads_the_extract_for_each_day(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "extract"
    generate(folder, calls=600, days=3, customers=100, seed=5)
    nowhere = tmp_path / "not-a-folder"
    nowhere.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(nowhere))
    reporter = RowsRead()
    with Callmart(database_url, folder, reporter=reporter) as mart:
        mart.init()
        mart.enqueue(date(2024, 3, 4), date(2024, 3, 7))
        summary = mart.run(complete_through=date(2024, 3, 6))
    assert summary.ok
    assert sum(s.inserted for s in summary.steps if s.period is not None) == 600
    assert [reporter.rows[f"fact_llamadas 2024-03-0{day}"] for day in (4, 5, 6)] == [600] * 3


def test_both_engines_give_every_row_the_same_keys(
    new_postgres_database: Callable[[], str], seed_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Day by day with half the customers known, so that calls and logins infer members, then every customer; the
    # extracts read in blocks of a few rows, so that a day's ids to infer arrive in many batches.
    monkeypatch.setattr(extract, "BLOCK_SIZE", 2048)
    days = [date(2023, 6, 27), date(2023, 7, 25), date(2023, 8, 28)]
    urls = {"duckdb": f"duckdb:///{tmp_path / 'mart.duckdb'}", "postgresql": new_postgres_database()}
    inferred = {}
    for engine, url in urls.items():
        folder = tmp_path / engine
        for day in days:
            load(url, growing_extracts(seed_dir, folder, day), day, day + timedelta(days=1))
        inferred[engine] = query(url, "SELECT id_cliente, key_cliente FROM dim_clientes WHERE is_inferred ORDER BY 1")
        (folder / "Customers_x.csv").unlink()
        (folder / "Customers_2024.csv").write_bytes((seed_dir / "Customers_2024.csv").read_bytes())
        run_again(url, folder)
    assert len(inferred["duckdb"]) > 10
    assert inferred["duckdb"] == inferred["postgresql"]
    tables = ["dim_clientes", "dim_agentes", "dim_canales_digitales", "dim_logins", "fact_llamadas"]
    assert full_dump(urls["duckdb"], tables) == full_dump(urls["postgresql"], tables)
