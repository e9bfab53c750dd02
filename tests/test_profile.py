"""The profile of the extracts: columns, candidate keys and foreign-key coverage, from files drawn as tables."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from callmart.analytics_cli import profile
from callmart.config import sample_dir
from callmart.mart import MART
from callmart.profile import FileProfile, SourceProfile, profile_source
from marts import drawn, write_extracts

CALLS = """
| Fecha          | IDCliente | Campania | Telefono   | Agente    | Tiempohablado | Tiempototal |
| 3/4/2024 9:00  | 101       | VENTAS   | 5550000001 | ana.lopez | 0:01:00       | 0:01:30     |
| 3/4/2024 9:00  | 999       | VENTAS   | 5550000002 | ANA.LOPEZ | 0:00:20       | 0:01:30     |
| 3/4/2024 10:00 | -1        | ventas   | 5550000001 | zeta      | 0:01:00       | 0:01:00     |
| 3/5/2024 11:00 | 101       | COBRO    | 5550000003 | beto.diaz | x:00          | 0:00:15     |
| 3/5/2024 11:00 | 101       | COBRO    | 5550000003 | beto.diaz | x:00          | 0:00:15     |
"""
CUSTOMERS = """
| CustomerID | Gender | Type    |
| 101        | F      | REGULAR |
| 102        | NA     | GEM     |
| 103        |        | regular |
| 104        | M      | GEM     |
"""
# "odd": present values not of the guessed type; "none": missing values; "dist": distinct values.
CALL_COLUMNS = """
| column        | loads into             | type     | odd | none | dist | range                          |
| Fecha         | fecha_llamada          | datetime | 0   | 0    | 3    | 3/4/2024 9:00 … 3/5/2024 11:00 |
| IDCliente     | key_cliente_llamada    | integer  | 0   | 0    | 3    | -1 … 999                       |
| Campania      | campania_llamada       | text     | 0   | 0    | 3    |                                |
| Telefono      | telefono_llamada       | integer  | 0   | 0    | 3    | 5550000001 … 5550000003        |
| Agente        | key_agente_llamada     | text     | 0   | 0    | 4    |                                |
| Tiempohablado | tiempo_hablado_llamada | duration | 2   | 0    | 3    | 0:00:20 … 0:01:00              |
| Tiempototal   | tiempo_total_llamada   | duration | 0   | 0    | 3    | 0:00:15 … 0:01:30              |
"""
AGENTS = ((1, "ana.lopez", 1, "Ana", "López"), (2, "beto.diaz", 2, "Beto", "Díaz"))
LOGINS = [(1, 101, "3/4/2024 12:00:00", 1), (2, 555, "3/4/2024 13:00:00", 1), (3, 102, "3/5/2024 8:00:00", 7)]
LOGINS.append((4, None, "3/6/2024 8:00:00", 2))


def extracts(folder: Path) -> Path:
    return write_extracts(folder, drawn(CALLS), drawn(CUSTOMERS), AGENTS, logins=LOGINS)


def columns(found: FileProfile) -> list[tuple[str, ...]]:
    return [
        (
            c.name,
            c.loads_into or "",
            c.type_guess,
            str(c.present - c.conforming),
            str(c.missing),
            str(c.distinct),
            f"{c.minimum} … {c.maximum}" if c.minimum else "",
        )
        for c in found.columns
    ]


def file(found: SourceProfile, name: str) -> FileProfile:
    return next(f for f in found.files if f.file == name)


def test_columns_types_and_keys(tmp_path: Path) -> None:
    found = profile_source(extracts(tmp_path), MART)

    calls = file(found, "Llamadas_t.csv")
    assert (calls.table, calls.rows, calls.encoding) == ("fact_llamadas", 5, "latin-1")
    assert columns(calls) == drawn(CALL_COLUMNS)
    # The last two calls are the same row: no column, nor pair of columns, tells every call apart.
    assert (calls.candidate_keys, calls.duplicate_rows) == ((), 1)

    customers = file(found, "Customers_t.csv")
    assert columns(customers) == drawn(
        """
        | column     | loads into     | type    | odd | none | dist | range     |
        | CustomerID | id_cliente     | integer | 0   | 0    | 4    | 101 … 104 |
        | Gender     | genero_cliente | text    | 0   | 2    | 2    |           |
        | Type       | tipo_cliente   | text    | 0   | 0    | 3    |           |
        """
    )
    assert customers.candidate_keys == (("CustomerID",),)
    # Latin-1 is read as the load reads it.
    agents = file(found, "Agentes_t.csv")
    assert next(c for c in agents.columns if c.name == "apellido").top[0] == ("Díaz", 1)
    assert found.errors == ()


def test_foreign_key_coverage_between_extracts(tmp_path: Path) -> None:
    found = profile_source(extracts(tmp_path), MART)
    coverage = [
        (c.table, c.column, f"{c.refers_to}.{c.by}", str(c.rows), str(c.missing), str(c.found), str(c.not_found))
        + (", ".join(c.examples),)
        for c in found.coverage
    ]
    # Agents are matched ignoring case, as the load does; -1 and an empty customer are "not given", not unknown.
    assert coverage == drawn(
        """
        | table         | column     | refers to                     | rows | not given | found | not found | e.g. |
        | dim_logins    | customerid | dim_clientes.CustomerID       | 4    | 1         | 2     | 1         | 555  |
        | dim_logins    | channel    | dim_canales_digitales.idcanal | 4    | 0         | 3     | 1         | 7    |
        | fact_llamadas | IDCliente  | dim_clientes.CustomerID       | 5    | 1         | 3     | 1         | 999  |
        | fact_llamadas | Agente     | dim_agentes.agente            | 5    | 0         | 4     | 1         | zeta |
        """
    )
    assert [c.coverage for c in found.coverage] == [2 / 3, 3 / 4, 3 / 4, 4 / 5]


def test_missing_and_extra_columns_and_files_are_reported(tmp_path: Path) -> None:
    folder = extracts(tmp_path)
    (folder / "Customers_t.csv").write_text("CustomerID,Type,Region\n101,GEM,north\n", encoding="latin-1")
    (folder / "Agentes_t.csv").unlink()
    found = profile_source(folder, MART)
    assert file(found, "Customers_t.csv").problems == (
        "lacks the column(s) Gender: the load stops on this file",
        "column(s) the load ignores: Region",
    )
    assert [c.loads_into for c in file(found, "Customers_t.csv").columns] == ["id_cliente", "tipo_cliente", None]
    assert len(found.errors) == 1 and found.errors[0].startswith("dim_agentes: no file matches Agentes*.csv")
    # Without an agents file there is nothing to check calls' agents against; the other keys are still checked.
    assert [(c.table, c.column) for c in found.coverage] == [
        ("dim_logins", "customerid"),
        ("dim_logins", "channel"),
        ("fact_llamadas", "IDCliente"),
    ]


def test_the_packaged_sample(tmp_path: Path) -> None:
    found = profile_source(sample_dir(), MART)
    assert [f.table for f in found.files] == [
        "dim_clientes",
        "dim_agentes",
        "dim_canales_digitales",
        "dim_logins",
        "fact_llamadas",
    ]
    assert found.errors == ()
    assert all(c.missing + c.found + c.not_found == c.rows for c in found.coverage)
    calls = file(found, "Llamadas_sample.csv")
    assert calls.rows == 2000 and {c.name: c.type_guess for c in calls.columns}["Fecha"] == "datetime"


def test_profile_command(tmp_path: Path) -> None:
    folder = extracts(tmp_path)
    runner = CliRunner()
    result = runner.invoke(profile, ["--source-dir", str(folder)], obj={"source_dir": None})
    assert result.exit_code == 0, result.output
    assert "Llamadas_t.csv → fact_llamadas: 5 rows, latin-1" in result.output
    assert "candidate keys: none; exact duplicate rows: 1" in result.output
    assert "fact_llamadas  Agente      dim_agentes.agente" in result.output

    as_json = runner.invoke(profile, ["--json"], obj={"source_dir": folder})
    assert as_json.exit_code == 0
    document = json.loads(as_json.output)
    assert [f["file"] for f in document["files"]][-1] == "Llamadas_t.csv"


def test_profile_command_on_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    result = CliRunner().invoke(profile, ["--source-dir", str(tmp_path / "nowhere")], obj={})
    assert result.exit_code == 2
    assert "Error: dim_clientes: source folder" in result.output


def test_profile_command_has_help() -> None:
    result = CliRunner().invoke(profile, ["--help"])
    assert result.exit_code == 0 and "Usage: " in result.output and "--source-dir" in result.output
    assert profile.help
