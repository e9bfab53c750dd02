"""Bad extracts, one case a row, on both engines: the exact rejects and warnings, each step's counts and what the
mart holds afterwards; for a file-level problem, the one-line message, the failed step and a mart left as it was."""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from click.testing import CliRunner, Result

from callmart import Callmart, RunSummary, SourceError
from callmart.cli import cli
from callmart.fingerprint import fingerprint
from callmart.mart import MART
from conftest import ON_SPARK, WITH_SPARK
from marts import AGENT_HEADER, CALL_HEADER, CHANNEL_HEADER, CUSTOMER_HEADER, full_dump, query

FIRST, LAST = date(2024, 3, 4), date(2024, 3, 6)
DAY_1, DAY_2 = "3/4", "3/5"  # the two periods' steps
UNDATED = "undated"  # the step of call rows with no readable date
PERIODS = {datetime(2024, 3, 4): DAY_1, datetime(2024, 3, 5): DAY_2}
DIMENSIONS = ["dim_clientes", "dim_agentes", "dim_canales_digitales", "dim_logins"]
MART_TABLES = [*DIMENSIONS, "fact_llamadas"]

CALLS, CUSTOMERS, AGENTS, CHANNELS, LOGINS = (
    "Llamadas_t.csv",
    "Customers_t.csv",
    "Agentes_t.csv",
    "CanalDigital_t.csv",
    "logins_t.json",
)

# The good extract: every case adds to it or replaces one file. Call lines 2 and 3; added lines start at 4.
GOOD_CALLS = [
    "3/4/2024 9:00,101,VENTAS,5550001,ana.lopez,0:00:40,0:01:00",
    "3/5/2024 10:00,102,VENTAS,5550002,beto.diaz,0:02:00,0:03:00",
]
GOOD_CUSTOMERS = ["101,F,GEM", "102,M,REGULAR"]
GOOD_AGENTS = ["1,ana.lopez,1,Ana,López", "2,beto.diaz,2,Beto,Díaz"]
GOOD_CHANNELS = ["1,Whatsapp", "2,AppCallCore"]
GOOD_LOGINS: list[dict[str, object]] = [{"callid": 1, "customerid": 101, "logindate": "3/4/2024 9:30:00", "channel": 1}]
LATE_LATIN_1 = json.dumps([{**GOOD_LOGINS[0], "nota": "x" * (1 << 20) + "Peña"}], ensure_ascii=False).encode("latin-1")
"""Logins whose first byte that is not UTF-8 lies past what is sampled to detect the encoding."""


def csv_file(header: str, lines: list[str], encoding: str = "latin-1", newline: str = "\n", bom: bool = False) -> bytes:
    """A CSV extract's bytes: header, lines, each ended by newline."""
    data = "".join(line + newline for line in [header, *lines]).encode(encoding)
    return codecs.BOM_UTF8 + data if bom else data


def calls(*added: str, **how: Any) -> dict[str, bytes | None]:
    """The good call lines and more."""
    return {CALLS: csv_file(CALL_HEADER, [*GOOD_CALLS, *added], **how)}


def customers(*added: str) -> dict[str, bytes | None]:
    """The good customer lines and more."""
    return {CUSTOMERS: csv_file(CUSTOMER_HEADER, [*GOOD_CUSTOMERS, *added])}


def agents(*added: str, **how: Any) -> dict[str, bytes | None]:
    """The good agent lines and more."""
    return {AGENTS: csv_file(AGENT_HEADER, [*GOOD_AGENTS, *added], **how)}


LATE_LATIN_1_AGENTS = csv_file(
    AGENT_HEADER, [*GOOD_AGENTS, *(f"{n},agente{n},1,Nombre,Apellido" for n in range(3, 40_000))], encoding="utf-8"
) + "40000,carla.pena,1,Carla,Peña\n".encode("latin-1")
"""Agents in UTF-8 but for a last line in latin-1, past what is sampled to detect the encoding."""


def logins(*added: dict[str, object]) -> dict[str, bytes | None]:
    """The good logins and more, as a JSON array."""
    return {LOGINS: json.dumps([*GOOD_LOGINS, *added], indent=2).encode()}


def write_folder(folder: Path, files: dict[str, bytes | None]) -> Path:
    """The good extract with files replaced (None removes one)."""
    folder.mkdir(parents=True)
    good: dict[str, bytes | None] = {
        **calls(),
        **customers(),
        **agents(),
        CHANNELS: csv_file(CHANNEL_HEADER, GOOD_CHANNELS),
        **logins(),
    }
    for name, data in {**good, **files}.items():
        if data is not None:
            (folder / name).write_bytes(data)
    return folder


LINE = "<the line as written>"
"""raw_line of a reject that holds its source line, as the file has it (without the line end)."""


class Reject(NamedTuple):
    """One row of dm_rejects: the step it belongs to, where the row is, which field, why."""

    step: str
    file: str
    line: int
    column: str | None
    value: str | None
    reason: str
    severity: str = "error"
    raw_line: str | None = LINE


Counts = tuple[int, int, int, int]  # read, loaded, rejected, warned

GOOD_STEPS: dict[str, Counts] = {
    "dim_clientes": (2, 2, 0, 0),
    "dim_agentes": (2, 2, 0, 0),
    "dim_canales_digitales": (2, 2, 0, 0),
    "dim_logins": (1, 1, 0, 0),
    DAY_1: (1, 1, 0, 0),
    DAY_2: (1, 1, 0, 0),
}

MART_QUERIES = {
    "customers": "SELECT id_cliente, genero_cliente, tipo_cliente, is_inferred FROM dim_clientes "
    "WHERE key_cliente <> -999 ORDER BY id_cliente",
    "agents": "SELECT id_agente, agente, nivel_expertise_agente, nombre_agente, apellido_agente, is_inferred "
    "FROM dim_agentes WHERE key_agente <> -999 ORDER BY agente",
    "channels": "SELECT id_canal_digital, descripcion_canal_digital, is_inferred FROM dim_canales_digitales "
    "WHERE key_canal_digital <> -999 ORDER BY id_canal_digital",
    "logins": "SELECT l.id_login, l.fecha_login, c.id_cliente, d.id_canal_digital, l.is_inferred FROM dim_logins l "
    "JOIN dim_clientes c ON c.key_cliente = l.key_cliente_login "
    "JOIN dim_canales_digitales d ON d.key_canal_digital = l.key_canal_digital_login "
    "WHERE l.key_login <> -999 ORDER BY l.id_login",
    "calls": "SELECT f.telefono_llamada, f.fecha_llamada, c.id_cliente, f.campania_llamada, a.agente, "
    "f.segundos_hablados_llamada, f.segundos_totales_llamada, l.id_login FROM fact_llamadas f "
    "JOIN dim_clientes c ON c.key_cliente = f.key_cliente_llamada "
    "JOIN dim_agentes a ON a.key_agente = f.key_agente_llamada "
    "LEFT JOIN dim_logins l ON l.key_login = f.key_login_post_llamada "
    "ORDER BY f.telefono_llamada, f.fecha_llamada",
}

CALL_1 = ("5550001", datetime(2024, 3, 4, 9, 0), 101, "VENTAS", "ana.lopez", 40, 60, 1)
CALL_2 = ("5550002", datetime(2024, 3, 5, 10, 0), 102, "VENTAS", "beto.diaz", 120, 180, None)
GOOD_MART: dict[str, list[tuple[object, ...]]] = {
    "customers": [(101, "F", "GEM", False), (102, "M", "REGULAR", False)],
    "agents": [(1, "ana.lopez", 1, "Ana", "López", False), (2, "beto.diaz", 2, "Beto", "Díaz", False)],
    "channels": [(1, "Whatsapp", False), (2, "AppCallCore", False)],
    "logins": [(1, datetime(2024, 3, 4, 9, 30), 101, 1, False)],
    "calls": [CALL_1, CALL_2],
}


def call_5550003(campaign: str = "VENTAS", talk: int = 40, total: int = 60) -> tuple[object, ...]:
    """The call of the usual added line 4 as the mart holds it (customer 101 logs in at 9:30: the metric is 1)."""
    return ("5550003", datetime(2024, 3, 4, 9, 5), 101, campaign, "ana.lopez", talk, total, 1 if talk >= 30 else None)


def line_4(**fields: str) -> str:
    """Call line 4: a good call on 3/4/2024 at 9:05 by customer 101, with some fields replaced."""
    values = {
        "Fecha": "3/4/2024 9:05",
        "IDCliente": "101",
        "Campania": "VENTAS",
        "Telefono": "5550003",
        "Agente": "ana.lopez",
        "Tiempohablado": "0:00:40",
        "Tiempototal": "0:01:00",
        **fields,
    }
    return ",".join(values.values())


def unparsable(column: str, value: str, step: str = DAY_1) -> Reject:
    """The reject of line 4 of the calls, whose `column` holds `value`."""
    expected = {
        "Fecha": "a date like M/D/YYYY H:MM",
        "IDCliente": "a whole number",
        "Tiempohablado": "a duration H:MM:SS under 24 hours",
        "Tiempototal": "a duration H:MM:SS under 24 hours",
    }[column]
    return Reject(step, CALLS, 4, column, value, f"unparsable {column}: expected {expected}")


@dataclass(frozen=True)
class Case:
    """A bad extract and its exact outcome. Steps, rejects and mart contents are those of the good extract but
    where the case says otherwise; `error` is the one-line message of a file-level problem, which fails
    `failing` (a dimension, or the periods)."""

    name: str
    files: dict[str, bytes | None]
    steps: dict[str, Counts] = field(default_factory=dict)
    rejects: tuple[Reject, ...] = ()
    mart: dict[str, list[tuple[object, ...]]] = field(default_factory=dict)
    error: str | None = None
    failing: str | None = None


PERIODS_FAIL = "periods"

ROW_CASES = [
    # Dates: a call whose date cannot be read belongs to no period.
    Case(
        "date in ISO format",
        calls(line_4(Fecha="2024-03-04 9:05")),
        {UNDATED: (1, 0, 1, 0)},
        (unparsable("Fecha", "2024-03-04 9:05", UNDATED),),
    ),
    Case(
        "date 13/45/2023",
        calls(line_4(Fecha="13/45/2023 9:05")),
        {UNDATED: (1, 0, 1, 0)},
        (unparsable("Fecha", "13/45/2023 9:05", UNDATED),),
    ),
    Case(
        "empty date",
        calls(line_4(Fecha="")),
        {UNDATED: (1, 0, 1, 0)},
        (Reject(UNDATED, CALLS, 4, "Fecha", "", "missing Fecha"),),
    ),
    Case(
        "February 30 is not March 1",
        calls(line_4(Fecha="2/30/2024 9:05")),
        {UNDATED: (1, 0, 1, 0)},
        (unparsable("Fecha", "2/30/2024 9:05", UNDATED),),
    ),
    Case(
        "two-digit year of a spreadsheet re-save",
        calls(line_4(Fecha="3/4/24 9:05")),
        {UNDATED: (1, 0, 1, 0)},
        (unparsable("Fecha", "3/4/24 9:05", UNDATED),),
    ),
    Case(
        "date with zero padding is fine",
        calls(line_4(Fecha="03/04/2024 09:05")),
        {DAY_1: (2, 2, 0, 0)},
        mart={"calls": [CALL_1, CALL_2, call_5550003()]},
    ),
    # Durations.
    Case(
        "talk time abc",
        calls(line_4(Tiempohablado="abc")),
        {DAY_1: (2, 1, 1, 0)},
        (unparsable("Tiempohablado", "abc"),),
    ),
    Case(
        "talk time 0:75:00",
        calls(line_4(Tiempohablado="0:75:00")),
        {DAY_1: (2, 1, 1, 0)},
        (unparsable("Tiempohablado", "0:75:00"),),
    ),
    Case(
        "talk time -0:00:05",
        calls(line_4(Tiempohablado="-0:00:05")),
        {DAY_1: (2, 1, 1, 0)},
        (unparsable("Tiempohablado", "-0:00:05"),),
    ),
    Case(
        "talk time with second 60",
        calls(line_4(Tiempohablado="0:00:60")),
        {DAY_1: (2, 1, 1, 0)},
        (unparsable("Tiempohablado", "0:00:60"),),
    ),
    Case(
        "total time 25:00:00",
        calls(line_4(Tiempototal="25:00:00")),
        {DAY_1: (2, 1, 1, 0)},
        (unparsable("Tiempototal", "25:00:00"),),
    ),
    # Ids.
    Case(
        "IDCliente abc",
        calls(line_4(IDCliente="abc")),
        {DAY_1: (2, 1, 1, 0)},
        (unparsable("IDCliente", "abc"),),
    ),
    Case(
        "IDCliente 99999999999 out of range",
        calls(line_4(IDCliente="99999999999")),
        {DAY_1: (2, 1, 1, 0)},
        (unparsable("IDCliente", "99999999999"),),
    ),
    Case(
        "empty CustomerID",
        customers(",F,GEM"),
        {"dim_clientes": (3, 2, 1, 0)},
        (Reject("dim_clientes", CUSTOMERS, 4, "CustomerID", "", "missing CustomerID"),),
    ),
    Case(
        "empty agent login name",
        agents("3,,1,Carla,Peña"),
        {"dim_agentes": (3, 2, 1, 0)},
        (Reject("dim_agentes", AGENTS, 4, "agente", "", "missing agente"),),
    ),
    Case(
        "nivelexpertise alto",
        agents("3,carla.pena,alto,Carla,Peña"),
        {"dim_agentes": (3, 2, 1, 0)},
        (
            Reject(
                "dim_agentes", AGENTS, 4, "nivelexpertise", "alto", "unparsable nivelexpertise: expected a whole number"
            ),
        ),
    ),
    # Lines that cannot be split into the header's fields.
    Case(
        "call line with too few fields",
        calls("3/4/2024 9:05,101,VENTAS,5550003,ana.lopez,0:00:40"),
        {UNDATED: (1, 0, 1, 0)},
        (Reject(UNDATED, CALLS, 4, None, None, "expected 7 fields, found 6"),),
    ),
    Case(
        "call line with too many fields",
        calls(line_4() + ",sobra"),
        {UNDATED: (1, 0, 1, 0)},
        (Reject(UNDATED, CALLS, 4, None, None, "expected 7 fields, found 8"),),
    ),
    Case(
        "customer line with too few fields",
        customers("103,F"),
        {"dim_clientes": (3, 2, 1, 0)},
        (Reject("dim_clientes", CUSTOMERS, 4, None, None, "expected 3 fields, found 2"),),
    ),
    # Shapes that are fine.
    Case(
        "quoted Campania with commas",
        calls(line_4(Campania='"Ventas, Norte, 2"')),
        {DAY_1: (2, 2, 0, 0)},
        mart={"calls": [CALL_1, CALL_2, call_5550003("VENTAS, NORTE, 2")]},
    ),
    Case(
        "CRLF line ends",
        calls(line_4(IDCliente="abc"), "3/4/2024 9:06,101,VENTAS,5550004,ana.lopez,0:00:10,0:01:00", newline="\r\n"),
        {DAY_1: (3, 2, 1, 0)},
        (unparsable("IDCliente", "abc"),),
        {
            "calls": [
                *GOOD_MART["calls"],
                ("5550004", datetime(2024, 3, 4, 9, 6), 101, "VENTAS", "ana.lopez", 10, 60, None),
            ]
        },
    ),
    Case(
        "trailing spaces",
        calls("3/4/2024 9:05 ,101  ,ventas ,5550003 ,Ana.Lopez   ,0:00:40 ,0:01:00  "),
        {DAY_1: (2, 2, 0, 0)},
        mart={"calls": [CALL_1, CALL_2, call_5550003()]},
    ),
    Case(
        "spaces around header names",
        {
            CALLS: csv_file(
                " Fecha ,IDCliente ,Campania,Telefono,Agente,Tiempohablado,Tiempototal ", [*GOOD_CALLS, line_4()]
            )
        },
        {DAY_1: (2, 2, 0, 0)},
        mart={"calls": [CALL_1, CALL_2, call_5550003()]},
    ),
    Case(
        "UTF-8 with BOM",
        calls(line_4(Campania="Campaña"), encoding="utf-8", bom=True),
        {DAY_1: (2, 2, 0, 0)},
        mart={"calls": [CALL_1, CALL_2, call_5550003("CAMPAÑA")]},
    ),
    Case(
        "UTF-8 without BOM: López arrives as López",
        agents("3,carla.pena,1,Carla,Peña Núñez", encoding="utf-8"),
        {"dim_agentes": (3, 3, 0, 0)},
        mart={"agents": [*GOOD_MART["agents"], (3, "carla.pena", 1, "Carla", "Peña Núñez", False)]},
    ),
    Case(
        "latin-1 accents",
        calls(line_4(Campania="Promoción"), encoding="latin-1"),
        {DAY_1: (2, 2, 0, 0)},
        mart={"calls": [CALL_1, CALL_2, call_5550003("PROMOCIÓN")]},
    ),
    Case(
        "empty calls file",
        {CALLS: b""},
        {DAY_1: (0, 0, 0, 0), DAY_2: (0, 0, 0, 0)},
        mart={"calls": []},
    ),
    Case(
        "header-only calls file",
        {CALLS: csv_file(CALL_HEADER, [])},
        {DAY_1: (0, 0, 0, 0), DAY_2: (0, 0, 0, 0)},
        mart={"calls": []},
    ),
    # Warnings: the row loads.
    Case(
        "unknown extra columns",
        {CALLS: csv_file(CALL_HEADER + ",Sucursal,Notas", [line + ",Norte,ok" for line in GOOD_CALLS])},
        {DAY_1: (1, 1, 0, 1), DAY_2: (1, 1, 0, 1)},
        tuple(
            Reject(day, CALLS, 1, "Sucursal,Notas", None, "unknown column(s) ignored", "warning", None)
            for day in (DAY_1, DAY_2)
        ),
    ),
    Case(
        "talk time greater than total time",
        calls(line_4(Tiempohablado="0:02:00")),
        {DAY_1: (2, 2, 0, 1)},
        (Reject(DAY_1, CALLS, 4, "Tiempohablado", "0:02:00", "talk time greater than total time", "warning"),),
        {"calls": [CALL_1, CALL_2, call_5550003(talk=120)]},
    ),
    Case(
        "absurd durations",
        calls(line_4(Tiempohablado="5:00:00", Tiempototal="6:00:00")),
        {DAY_1: (2, 2, 0, 2)},
        (
            Reject(DAY_1, CALLS, 4, "Tiempohablado", "5:00:00", "talk time over 4 hours", "warning"),
            Reject(DAY_1, CALLS, 4, "Tiempototal", "6:00:00", "total time over 4 hours", "warning"),
        ),
        {"calls": [CALL_1, CALL_2, call_5550003(talk=18000, total=21600)]},
    ),
    Case(
        "exact duplicate call row",
        calls(GOOD_CALLS[0]),
        {DAY_1: (2, 2, 0, 1)},
        (Reject(DAY_1, CALLS, 4, None, None, "exact duplicate of an earlier row of the extract", "warning", None),),
        {"calls": [CALL_1, CALL_1, CALL_2]},
    ),
    Case(
        "the same call in two call files",
        {**calls(), "Llamadas_u.csv": csv_file(CALL_HEADER, [GOOD_CALLS[0]])},
        {DAY_1: (2, 2, 0, 1)},
        (
            Reject(
                DAY_1,
                "Llamadas_u.csv",
                2,
                None,
                None,
                "exact duplicate of an earlier row of the extract",
                "warning",
                None,
            ),
        ),
        {"calls": [CALL_1, CALL_1, CALL_2]},
    ),
    # Duplicate business keys in a dimension extract: the last row wins.
    Case(
        "duplicate customer id",
        customers("101,M,REGULAR"),
        {"dim_clientes": (3, 2, 1, 0)},
        (
            Reject(
                "dim_clientes",
                CUSTOMERS,
                2,
                "CustomerID",
                "101",
                "duplicate CustomerID: a later row of the extract has the same one",
                raw_line=None,
            ),
        ),
        {"customers": [(101, "M", "REGULAR", False), (102, "M", "REGULAR", False)]},
    ),
    Case(
        "duplicate agent id",
        agents("1,ana.lopez,3,Ana María,López"),
        {"dim_agentes": (3, 2, 1, 0)},
        (
            Reject(
                "dim_agentes",
                AGENTS,
                2,
                "idagente",
                "1",
                "duplicate idagente: a later row of the extract has the same one",
                raw_line=None,
            ),
        ),
        {"agents": [(1, "ana.lopez", 3, "Ana María", "López", False), GOOD_MART["agents"][1]]},
    ),
    # Logins.
    Case(
        "logins with a null customerid and a bad logindate",
        logins(
            {"callid": 2, "customerid": None, "logindate": "3/4/2024 9:40:00", "channel": 2},
            {"callid": 3, "customerid": 102, "logindate": "2024-03-04 09:50", "channel": 1},
        ),
        {"dim_logins": (3, 2, 1, 0)},
        (
            Reject(
                "dim_logins",
                LOGINS,
                3,
                "logindate",
                "2024-03-04 09:50",
                "unparsable logindate: expected a date like M/D/YYYY H:MM:SS",
                raw_line="3,2024-03-04 09:50,102,1",
            ),
        ),
        # A null customer is the default member's.
        {"logins": [*GOOD_MART["logins"], (2, datetime(2024, 3, 4, 9, 40), -999, 2, False)]},
    ),
    Case(
        "a period with every row rejected",
        {
            CALLS: csv_file(
                CALL_HEADER,
                [
                    GOOD_CALLS[0],
                    "3/5/2024 10:00,102,VENTAS,5550002,beto.diaz,0:02:00,3 min",
                    "3/5/2024 11:00,cliente,VENTAS,5550004,beto.diaz,0:02:00,0:03:00",
                ],
            )
        },
        {DAY_2: (2, 0, 2, 0)},
        (
            Reject(
                DAY_2,
                CALLS,
                3,
                "Tiempototal",
                "3 min",
                "unparsable Tiempototal: expected a duration H:MM:SS under 24 hours",
            ),
            Reject(DAY_2, CALLS, 4, "IDCliente", "cliente", "unparsable IDCliente: expected a whole number"),
        ),
        {"calls": [CALL_1]},
    ),
]

FILE_CASES = [
    Case(
        "no calls file",
        {CALLS: None},
        error="no file matches Llamadas*.csv in ",
        failing=PERIODS_FAIL,
    ),
    Case(
        "calls file in UTF-16",
        {CALLS: csv_file(CALL_HEADER, GOOD_CALLS, encoding="utf-16")},
        error="Llamadas_t.csv looks like UTF-16 text; save it as UTF-8 or latin-1 (ISO-8859-1)",
        failing=PERIODS_FAIL,
    ),
    Case(
        "calls file without Tiempototal and Telefono",
        {
            CALLS: csv_file(
                "Fecha,IDCliente,Campania,Agente,Tiempohablado", ["3/4/2024 9:00,101,VENTAS,ana.lopez,0:00:40"]
            )
        },
        error="Llamadas_t.csv lacks the column(s) Telefono, Tiempototal; "
        "its header is Fecha,IDCliente,Campania,Agente,Tiempohablado",
        failing=PERIODS_FAIL,
    ),
    Case(
        "no customers file",
        {CUSTOMERS: None},
        error="no file matches Customers*.csv in ",
        failing="dim_clientes",
    ),
    Case(
        "customers file in UTF-16",
        {CUSTOMERS: csv_file(CUSTOMER_HEADER, GOOD_CUSTOMERS, encoding="utf-16")},
        error="Customers_t.csv looks like UTF-16 text",
        failing="dim_clientes",
    ),
    Case(
        "customers file with CustomerID twice",
        {CUSTOMERS: csv_file(CUSTOMER_HEADER + ",CustomerID", ["101,F,GEM,101", "102,M,REGULAR,102"])},
        error="Customers_t.csv has the column(s) CustomerID more than once; "
        "its header is CustomerID,Gender,Type,CustomerID",
        failing="dim_clientes",
    ),
    Case(
        "malformed JSON logins",
        {
            LOGINS: b'[\n  {"callid": 1, "customerid": 101, "logindate": "3/4/2024 9:30:00", "channel": 1}\n'
            b'  {"callid": 2}\n]'
        },
        error="logins_t.json is not a JSON array of objects: Expecting ',' delimiter at line 3, column 3",
        failing="dim_logins",
    ),
    Case(
        "JSON logins with an element that is not an object",
        {LOGINS: b'[{"callid": 1, "customerid": 101, "logindate": "3/4/2024 9:30:00", "channel": 1}, 7]'},
        error="logins_t.json is not a JSON array of objects: element 2 is not an object",
        failing="dim_logins",
    ),
    Case(
        "JSON logins in UTF-16",
        {LOGINS: json.dumps(GOOD_LOGINS).encode("utf-16")},
        error="logins_t.json looks like UTF-16 text",
        failing="dim_logins",
    ),
    Case(
        "JSON logins in latin-1",
        {LOGINS: json.dumps([{**GOOD_LOGINS[0], "nota": "Peña"}], ensure_ascii=False).encode("latin-1")},
        error="logins_t.json is not valid UTF-8 (byte 0xf1 at offset 92)",
        failing="dim_logins",
    ),
    Case(
        "agents in UTF-8, then latin-1 past the first megabyte",
        {AGENTS: LATE_LATIN_1_AGENTS},
        error=(
            f"Agentes_t.csv is not valid UTF-8 (byte 0xf1 at offset {LATE_LATIN_1_AGENTS.index(0xF1)}); its start "
            "reads as UTF-8: save the whole file in one encoding (UTF-8 or latin-1)"
        ),
        failing="dim_agentes",
    ),
    Case(
        "JSON logins in latin-1 past the first megabyte",
        {LOGINS: LATE_LATIN_1},
        error=f"logins_t.json is not valid UTF-8 (byte 0xf1 at offset {LATE_LATIN_1.index(0xF1)})",
        failing="dim_logins",
    ),
]

KNOWN_BUGS = [
    pytest.param(
        Case(
            "one call row with two bad durations",
            calls(line_4(Tiempohablado="abc", Tiempototal="xyz")),
            {DAY_1: (2, 1, 1, 0)},
            (unparsable("Tiempohablado", "abc"), unparsable("Tiempototal", "xyz")),
        ),
        id="one call row with two bad durations",
    ),
    pytest.param(
        Case(
            "a blank line before a bad line",
            {CALLS: csv_file(CALL_HEADER, [*GOOD_CALLS, "", line_4(IDCliente="abc")])},
            {DAY_1: (2, 1, 1, 0), UNDATED: (1, 0, 1, 0)},
            (
                Reject(UNDATED, CALLS, 4, None, None, "blank line (no field has a value)"),
                Reject(DAY_1, CALLS, 5, "IDCliente", "abc", "unparsable IDCliente: expected a whole number"),
            ),
        ),
        id="a blank line before a bad line",
    ),
]


def load(url: str, folder: Path, force: bool = False) -> RunSummary:
    """init, enqueue the two days and run."""
    with Callmart(url, folder) as mart:
        mart.init()
        mart.enqueue(FIRST, LAST, force=force)
        return mart.run()


def step_label(table: str, period: object) -> str:
    """A step's name in the cases: the dimension, the period's day, or UNDATED."""
    if table != "fact_llamadas":
        return table
    if period is None:
        return UNDATED
    assert isinstance(period, datetime)
    return PERIODS[period]


def text(value: object) -> str | None:
    """A nullable text column's value."""
    return None if value is None else str(value)


def recorded_steps(url: str, folder: Path) -> list[dict[str, object]]:
    """The latest run's steps, through the API."""
    with Callmart(url, folder) as mart:
        return mart.last_run()


def recorded_rejects(url: str, folder: Path) -> list[Reject]:
    """The latest run's rows of dm_rejects, through the API, sorted."""
    with Callmart(url, folder) as mart:
        rows = mart.rejects(limit=1000)
    found = [
        Reject(
            step_label(str(r["table_name"]), r["period_start"]),
            str(r["source_file"]),
            int(str(r["line_number"])),
            text(r["column_name"]),
            text(r["raw_value"]),
            str(r["reason"]),
            str(r["severity"]),
            text(r["raw_line"]),
        )
        for r in rows
    ]
    return sorted(found, key=repr)


def written_line(folder: Path, name: str, line: int) -> str:
    """A line of an extract as written, whatever its encoding and line ends."""
    data = (folder / name).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.splitlines()[line - 1]


def mart_contents(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every table of the mart by business values, default members left out."""
    return {name: query(url, q) for name, q in MART_QUERIES.items()}


def check_row_case(url: str, folder: Path, case: Case) -> None:
    """One run from an empty mart: the steps' counts, every reject and warning, the mart's rows."""
    summary = load(url, folder)
    assert summary.ok, [s.error for s in summary.failed]

    steps = recorded_steps(url, folder)
    got = {
        step_label(str(s["table_name"]), s["period_start"]): (
            s["rows_read"],
            s["rows_loaded"],
            s["rows_rejected"],
            s["rows_warned"],
        )
        for s in steps
    }
    assert len(got) == len(steps)
    assert got == {**GOOD_STEPS, **case.steps}
    assert all(s["status"] == "exitoso" and s["error_message"] is None for s in steps)
    # The summary tells the same story; the step of undated rows says so.
    assert [(s.read, s.loaded, s.rejected, s.warned) for s in summary.steps] == list(got.values())
    assert [s.note for s in summary.steps if s.period is None and s.table == "fact_llamadas"] == (
        ["no readable date"] if UNDATED in got else []
    )

    expected = [
        r._replace(raw_line=written_line(folder, r.file, r.line)) if r.raw_line == LINE else r for r in case.rejects
    ]
    assert recorded_rejects(url, folder) == sorted(expected, key=repr)
    assert mart_contents(url) == {**GOOD_MART, **case.mart}


def check_file_case(url: str, tmp_path: Path, folder: Path, case: Case) -> None:
    """A good load, then a run on the bad extract: the message, the failed step, and the mart as it was."""
    assert case.error is not None
    good = write_folder(tmp_path / "good", {})
    assert load(url, good).ok
    loaded = mart_contents(url)
    assert loaded == GOOD_MART

    with Callmart(url, folder) as mart:
        mart.enqueue(FIRST, LAST, force=True)
        before = full_dump(url, [*MART_TABLES, "dm_processes"])
        if case.failing == PERIODS_FAIL:
            summary = mart.run()
            assert [(s.table, s.status) for s in summary.steps] == [
                *((d, "exitoso") for d in DIMENSIONS),
                ("fact_llamadas", "fallido"),
                ("fact_llamadas", "fallido"),
            ]
            for step in summary.steps[4:]:
                assert step.error is not None and case.error in step.error and "\n" not in step.error
            processes = query(url, "SELECT status, error_message FROM dm_processes ORDER BY start_date")
            assert [s for s, _ in processes] == ["fallido", "fallido"]
            assert all(case.error in str(m) for _, m in processes)
            recorded = [(s["table_name"], s["status"], s["rows_read"], s["error_message"]) for s in mart.last_run()]
            # The dimension extracts are those of the good load: not merged again.
            assert recorded[:4] == [(d, "exitoso", 0, None) for d in DIMENSIONS]
            assert all(s.note == "source unchanged since its last merge" for s in summary.steps[:4])
            assert [(t, s, r) for t, s, r, _ in recorded[4:]] == [("fact_llamadas", "fallido", 0)] * 2
            # The failed periods keep the rows of the good load.
            assert full_dump(url, MART_TABLES) == {t: before[t] for t in MART_TABLES}
        else:
            with pytest.raises(SourceError) as raised:
                mart.run()
            message = str(raised.value)
            assert case.error in message and "\n" not in message
            # The dimensions before the failing one loaded (unchanged); the failing one and the periods did not.
            done = DIMENSIONS[: DIMENSIONS.index(str(case.failing))]
            steps = query(
                url,
                "SELECT table_name, status FROM dm_run_steps WHERE id_run = (SELECT max(id_run) FROM dm_runs) "
                "ORDER BY step",
            )
            assert steps == [(d, "exitoso") for d in done]
            assert query(url, "SELECT status, error_message FROM dm_runs ORDER BY id_run") == [
                ("exitoso", None),
                ("fallido", message),
            ]
            assert full_dump(url, [*MART_TABLES, "dm_processes"]) == before
    assert mart_contents(url) == loaded


@pytest.mark.parametrize("case", [*(pytest.param(c, id=c.name) for c in ROW_CASES + FILE_CASES), *KNOWN_BUGS])
def test_bad_input(case: Case, database_url: str, tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "src", case.files)
    if case.error is None:
        check_row_case(database_url, folder, case)
    else:
        check_file_case(database_url, tmp_path, folder, case)


def invoke(*args: str, env: dict[str, str]) -> Result:
    """Run the command line as a user would, exceptions included."""
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.mark.parametrize(
    ("files", "exit_code", "message"),
    [
        pytest.param({CUSTOMERS: None}, 2, "Error: no file matches Customers*.csv in ", id="no customers file"),
        pytest.param(
            {LOGINS: b'[{"callid": 1,'},
            2,
            "Error: logins_t.json is not a JSON array of objects: Expecting property name enclosed in double quotes "
            "at line 1, column 15",
            id="malformed JSON",
        ),
        pytest.param({CALLS: None}, 1, "2 period(s) failed; see `callmart status`", id="no calls file"),
    ],
)
def test_bad_input_through_the_cli(
    files: dict[str, bytes | None], exit_code: int, message: str, database_url: str, tmp_path: Path
) -> None:
    env = {"CALLMART_DATABASE_URL": database_url, "CALLMART_SOURCE_DIR": str(write_folder(tmp_path / "src", files))}
    assert invoke("init", env=env).exit_code == 0
    invoke("enqueue", "--from", "2024-03-04", "--to", "2024-03-06", env=env)
    ran = invoke("run", env=env)
    assert ran.exit_code == exit_code
    if exit_code == 2:
        # After the progress lines, one line of error.
        errors = [line for line in ran.output.splitlines() if "Error" in line]
        assert len(errors) == 1 and errors[0] == ran.output.splitlines()[-1]
        assert errors[0].startswith(message)
    else:
        assert message in ran.output
        assert "no file matches Llamadas*.csv" in invoke("status", env=env).output


def test_rejects_are_those_of_the_latest_run(database_url: str, tmp_path: Path) -> None:
    bad = write_folder(tmp_path / "bad", calls(line_4(IDCliente="abc")))
    load(database_url, bad)
    assert len(recorded_rejects(database_url, bad)) == 1
    # The export is fixed and the day reprocessed: the latest run rejected nothing.
    good = write_folder(tmp_path / "good", {})
    assert load(database_url, good, force=True).ok
    assert recorded_rejects(database_url, good) == []


def test_last_run_is_the_run_that_failed(database_url: str, tmp_path: Path) -> None:
    good = write_folder(tmp_path / "good", {})
    assert load(database_url, good).ok
    broken = write_folder(tmp_path / "broken", {CUSTOMERS: None})
    with pytest.raises(SourceError):
        load(database_url, broken)
    with Callmart(database_url, broken) as mart:
        assert mart.last_run() == []


@pytest.mark.parametrize("new_database", WITH_SPARK, indirect=True)
def test_a_run_stopped_by_a_dimension_keeps_what_those_before_it_were_merged_from(
    database_url: str, tmp_path: Path
) -> None:
    # No agents' extract: the customers merge, then the run stops at the agents. The customers' digest is kept, so
    # that the next run skips their unchanged extract (as the failed periods' case shows).
    folder = write_folder(tmp_path / "src", {AGENTS: None})
    with pytest.raises(SourceError):
        load(database_url, folder)
    customers = fingerprint(folder, MART.dimension("dim_clientes"))
    assert query(database_url, "SELECT table_name, fingerprint FROM dm_sources") == [("dim_clientes", customers)]


SPARK_CASES = [
    "date 13/45/2023",
    "IDCliente abc",
    "exact duplicate call row",
    "logins with a null customerid and a bad logindate",
    "no calls file",
]
"""The cases the Spark engine also runs (each takes it a few runs of a local session): a bad date and id, a
duplicate, undated rows of an events dimension, a missing file."""


@pytest.mark.parametrize("new_database", [ON_SPARK], indirect=True)
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in ROW_CASES + FILE_CASES if c.name in SPARK_CASES])
def test_bad_input_on_spark(case: Case, database_url: str, tmp_path: Path) -> None:
    test_bad_input(case, database_url, tmp_path)
