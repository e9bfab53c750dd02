"""Generated extracts with random damage, on both engines: every step balances, every call line is loaded or
rejected exactly once, and every foreign key resolves."""

from __future__ import annotations

import codecs
import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import NamedTuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callmart import Callmart
from marts import AGENT_HEADER, CALL_HEADER, CHANNEL_HEADER, CUSTOMER_HEADER, query

BAD_DATES = ["2024-03-04 9:00", "13/45/2023 9:00", "", "2/30/2024 9:00", "3/4/24 9:00", "ayer", "3/4/2024"]
BAD_DURATIONS = ["abc", "0:75:00", "-0:00:05", "25:00:00", "", "1:00", "0:00:60"]
BAD_IDS = ["abc", "99999999999", "1.5", "--1"]
AGENT_NAMES = ["ana.lopez", "beto.diaz", "carla.pena"]
CAMPAIGNS = {"VENTAS": "VENTAS", "ventas": "VENTAS", "Promoción": "PROMOCIÓN", "": "unknown"}


def duration(seconds: int) -> str:
    """Seconds as the exports write them: H:MM:SS."""
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class CallLine:
    """One data line of the calls extract and what should become of it."""

    text: str
    phone: str
    day: int  # 4 or 5: its period, when its date can be read
    error: bool = False  # rejected
    undated: bool = False  # rejected with no period: its date cannot be read or its fields cannot be split
    copy_of: int | None = None  # line number of the line it repeats


@dataclass
class Extract:
    """A folder's files and what the calls should come to."""

    files: dict[str, bytes]
    calls: list[CallLine]
    lines: dict[str, int] = field(default_factory=dict)  # data lines (or JSON elements) per dimension


@st.composite
def damaged_call(draw: st.DrawFn, fields: list[str]) -> tuple[list[str], bool, bool]:
    """A call's fields after at most one kind of damage: (fields, is an error, has no period)."""
    kind = draw(st.sampled_from(["none", "none", "none", "date", "talk", "total", "id", "fewer", "more", "doubt"]))
    fields = list(fields)
    if kind == "date":
        fields[0] = draw(st.sampled_from(BAD_DATES))
    elif kind in ("talk", "total"):
        fields[5 if kind == "talk" else 6] = draw(st.sampled_from(BAD_DURATIONS))
    elif kind == "id":
        fields[1] = draw(st.sampled_from(BAD_IDS))
    elif kind == "fewer":
        fields = fields[: -draw(st.integers(1, 3))]
    elif kind == "more":
        fields = [*fields, *draw(st.lists(st.sampled_from(["x", "", "0:00:01"]), min_size=1, max_size=2))]
    elif kind == "doubt":  # warnings only: talk over total, over 4 hours
        fields[5], fields[6] = draw(st.sampled_from([("0:05:00", "0:01:00"), ("4:30:00", "5:00:00")]))
    if draw(st.booleans()):
        fields = [f + draw(st.sampled_from([" ", "  "])) for f in fields]
    error = kind not in ("none", "doubt")
    return fields, error, error and kind in ("date", "fewer", "more")


@st.composite
def extracts(draw: st.DrawFn) -> Extract:
    """A few customers, agents, logins and calls over two days, some lines damaged, some calls exported twice."""
    customer_ids = [str(101 + i) for i in range(draw(st.integers(1, 4)))]
    agent_count = draw(st.integers(1, 3))

    customers = []
    for cid in customer_ids + draw(st.lists(st.sampled_from(customer_ids), max_size=2)):  # some ids twice
        line = [cid, draw(st.sampled_from(["F", "M", "NA", ""])), draw(st.sampled_from(["GEM", "regular", ""]))]
        damage = draw(st.sampled_from(["none", "none", "none", "empty id", "bad id", "fewer"]))
        if damage == "empty id":
            line[0] = ""
        elif damage == "bad id":
            line[0] = draw(st.sampled_from(BAD_IDS))
        elif damage == "fewer":
            line = line[:2]
        customers.append(",".join(line))

    agents = []
    for i in [*range(agent_count), *draw(st.lists(st.integers(0, agent_count - 1), max_size=1))]:  # one twice
        line = [
            str(i + 1),
            AGENT_NAMES[i],
            str(draw(st.integers(1, 3))),
            "Nombre",
            draw(st.sampled_from(["López", ""])),
        ]
        damage = draw(st.sampled_from(["none", "none", "none", "empty name", "bad level", "more"]))
        if damage == "empty name":
            line[1] = ""
        elif damage == "bad level":
            line[2] = "alto"
        elif damage == "more":
            line.append("x")
        agents.append(",".join(line))

    logins: list[dict[str, object]] = []
    for i in range(draw(st.integers(0, 5))):
        login: dict[str, object] = {
            "callid": draw(st.sampled_from([i + 1, i + 1, i + 1, 1, "x", None])),  # some repeated or bad
            "customerid": draw(st.sampled_from([int(c) for c in customer_ids] + [None, 999])),
            "logindate": f"3/{draw(st.integers(4, 6))}/2024 {draw(st.integers(0, 23))}:{draw(st.integers(0, 59))}:00",
            "channel": draw(st.sampled_from([1, 2, None, 9])),
        }
        if draw(st.integers(0, 5)) == 0:
            login["logindate"] = draw(st.sampled_from(BAD_DATES))
        logins.append(login)

    calls: list[CallLine] = []
    for i in range(draw(st.integers(1, 10))):
        day = draw(st.sampled_from([4, 5]))
        talk = draw(st.integers(0, 1800))
        fields = [
            f"3/{day}/2024 {draw(st.integers(0, 23))}:{draw(st.integers(0, 59)):02d}",
            draw(st.sampled_from([*customer_ids, "-1", "", "999"])),
            draw(st.sampled_from(sorted(CAMPAIGNS))),
            f"555{i:04d}",
            draw(st.sampled_from([*AGENT_NAMES[:agent_count], "", "nuevo.agente", "ANA.LOPEZ"])),
            duration(talk),
            duration(talk + draw(st.integers(0, 600))),
        ]
        fields, error, undated = draw(damaged_call(fields))
        calls.append(CallLine(",".join(fields), f"555{i:04d}", day, error, undated))
    for i in draw(st.lists(st.integers(0, len(calls) - 1), max_size=3, unique=True)):  # exported twice
        original = calls[i]
        calls.append(CallLine(original.text, original.phone, original.day, original.error, original.undated, i + 2))

    encoding, bom = draw(st.sampled_from([("latin-1", False), ("utf-8", False), ("utf-8", True)]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))

    def csv_file(header: str, lines: list[str]) -> bytes:
        data = "".join(line + newline for line in [header, *lines]).encode(encoding)
        return codecs.BOM_UTF8 + data if bom else data

    files = {
        "Llamadas_p.csv": csv_file(CALL_HEADER, [c.text for c in calls]),
        "Customers_p.csv": csv_file(CUSTOMER_HEADER, customers),
        "Agentes_p.csv": csv_file(AGENT_HEADER, agents),
        "CanalDigital_p.csv": csv_file(CHANNEL_HEADER, ["1,Whatsapp", "2,AppCallCore"]),
        "logins_p.json": json.dumps(logins).encode(),
    }
    lines = {
        "dim_clientes": len(customers),
        "dim_agentes": len(agents),
        "dim_canales_digitales": 2,
        "dim_logins": len(logins),
    }
    return Extract(files, calls, lines)


class Step(NamedTuple):
    """A row of dm_run_steps."""

    table: str
    read: int
    loaded: int
    rejected: int
    status: str


ORPHANS = {
    "fact_llamadas.key_cliente_llamada": "SELECT count(*) FROM fact_llamadas f WHERE NOT EXISTS "
    "(SELECT 1 FROM dim_clientes d WHERE d.key_cliente = f.key_cliente_llamada)",
    "fact_llamadas.key_agente_llamada": "SELECT count(*) FROM fact_llamadas f WHERE NOT EXISTS "
    "(SELECT 1 FROM dim_agentes d WHERE d.key_agente = f.key_agente_llamada)",
    "fact_llamadas.key_login_post_llamada": "SELECT count(*) FROM fact_llamadas f "
    "WHERE f.key_login_post_llamada IS NOT NULL AND NOT EXISTS "
    "(SELECT 1 FROM dim_logins d WHERE d.key_login = f.key_login_post_llamada)",
    "dim_logins.key_cliente_login": "SELECT count(*) FROM dim_logins l WHERE NOT EXISTS "
    "(SELECT 1 FROM dim_clientes d WHERE d.key_cliente = l.key_cliente_login)",
    "dim_logins.key_canal_digital_login": "SELECT count(*) FROM dim_logins l WHERE NOT EXISTS "
    "(SELECT 1 FROM dim_canales_digitales d WHERE d.key_canal_digital = l.key_canal_digital_login)",
}
NULL_KEYS = (
    "SELECT count(*) FROM fact_llamadas WHERE key_cliente_llamada IS NULL OR key_agente_llamada IS NULL "
    "UNION ALL SELECT count(*) FROM dim_logins WHERE key_cliente_login IS NULL OR key_canal_digital_login IS NULL"
)


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extract=extracts())
def test_every_call_line_is_loaded_or_rejected_once(
    extract: Extract, new_database: Callable[[], str], tmp_path: Path
) -> None:
    url, folder = new_database(), tmp_path / uuid.uuid4().hex
    folder.mkdir()
    for name, data in extract.files.items():
        (folder / name).write_bytes(data)
    with Callmart(url, folder) as mart:
        mart.init()
        mart.enqueue(date(2024, 3, 4), date(2024, 3, 6))
        summary = mart.run()
    assert summary.ok, [s.error for s in summary.failed]

    steps = [
        Step(str(table), int(str(read)), int(str(loaded)), int(str(rejected)), str(status))
        for table, read, loaded, rejected, status in query(
            url, "SELECT table_name, rows_read, rows_loaded, rows_rejected, status FROM dm_run_steps ORDER BY step"
        )
    ]
    for step in steps:
        assert step.read == step.loaded + step.rejected, step
        assert step.status == "exitoso", step
    # Every line of every dimension extract was read, once.
    assert {s.table: s.read for s in steps if s.table != "fact_llamadas"} == extract.lines

    fact_steps = [s for s in steps if s.table == "fact_llamadas"]
    numbered = dict(enumerate(extract.calls, start=2))  # the header is line 1
    bad = {n for n, c in numbered.items() if c.error}
    assert sum(s.read for s in fact_steps) == len(numbered)
    assert sum(s.loaded for s in fact_steps) == len(numbered) - len(bad)
    assert sum(s.rejected for s in fact_steps) == len(bad)

    # Each rejected line has its errors in one step: its period's, or the step of rows with no readable date.
    errors = query(
        url,
        "SELECT DISTINCT line_number, period_start FROM dm_rejects "
        "WHERE table_name = 'fact_llamadas' AND severity = 'error' AND source_file = 'Llamadas_p.csv'",
    )
    periods = {n: p for n, p in errors}
    assert len(periods) == len(errors)
    expected_periods = {n: None if numbered[n].undated else datetime(2024, 3, numbered[n].day) for n in bad}
    assert periods == expected_periods

    # The other lines are in the fact table: each phone as many times as its lines.
    phones = Counter(str(p) for (p,) in query(url, "SELECT telefono_llamada FROM fact_llamadas"))
    assert phones == Counter(c.phone for n, c in numbered.items() if n not in bad)
    duplicates = query(
        url,
        "SELECT line_number FROM dm_rejects WHERE table_name = 'fact_llamadas' "
        "AND reason = 'exact duplicate of an earlier row of the extract'",
    )
    assert sorted(int(str(n)) for (n,) in duplicates) == [n for n, c in numbered.items() if c.copy_of and not c.error]
    campaigns = {c for (c,) in query(url, "SELECT DISTINCT campania_llamada FROM fact_llamadas")}
    assert campaigns <= set(CAMPAIGNS.values())  # accents read in every encoding

    for name, text in ORPHANS.items():
        assert query(url, text) == [(0,)], name
    assert query(url, NULL_KEYS) == [(0,), (0,)]
