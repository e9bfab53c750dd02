"""The synthetic extracts: deterministic, in the exact source formats, realistic enough for the mart."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from callmart.config import sample_dir
from callmart.mart import sample as generate_module
from callmart.mart.sample import generate

CALL_TIME = "%m/%d/%Y %H:%M"
LOGIN_TIME = "%m/%d/%Y %H:%M:%S"
UNPADDED_CALL_TIME = re.compile(r"^[1-9]\d?/[1-9]\d?/\d{4} [1-9]\d?:[0-5]\d$")
UNPADDED_LOGIN_TIME = re.compile(r"^[1-9]\d?/[1-9]\d?/\d{4} (0|[1-9]\d?):[0-5]\d:[0-5]\d$")
DURATION = re.compile(r"^(0|[1-9]\d*):[0-5]\d:[0-5]\d$")
HEADERS = {
    "Llamadas": "Fecha,IDCliente,Campania,Telefono,Agente,Tiempohablado,Tiempototal",
    "Customers": "CustomerID,Gender,Type",
    "Agentes": "idagente,agente,nivelexpertise,nombre,apellido",
    "CanalDigital": "idcanal,desc_canal",
}
SAMPLE_FILES = {
    "Llamadas_sample.csv",
    "Customers_sample.csv",
    "Agentes_sample.csv",
    "CanalDigital_sample.csv",
    "logins_sample.json",
}


@pytest.fixture(scope="module")
def extracts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One clean extract set with the default arguments."""
    folder = tmp_path_factory.mktemp("extracts")
    generate(folder)
    return folder


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a latin-1 CSV extract."""
    return list(csv.DictReader(io.StringIO(path.read_bytes().decode("latin-1"), newline="")))


def seconds(duration: str) -> int:
    """Seconds of an H:MM:SS duration."""
    hours, minutes, secs = (int(part) for part in duration.split(":"))
    return hours * 3600 + minutes * 60 + secs


def calls_of(folder: Path, tag: str = "sample") -> list[dict[str, str]]:
    """Rows of the calls extract."""
    return read_csv(folder / f"Llamadas_{tag}.csv")


def logins_of(folder: Path, tag: str = "sample") -> list[dict[str, object]]:
    """Objects of the logins extract."""
    loaded: list[dict[str, object]] = json.loads((folder / f"logins_{tag}.json").read_text("utf-8"))
    return loaded


def faults(row: list[str], previous: list[str] | None) -> set[str]:
    """The ways a raw calls row departs from a clean one."""
    found = set()
    if not UNPADDED_CALL_TIME.match(row[0]):
        found.add("date")
    else:
        try:
            datetime.strptime(row[0], CALL_TIME)
        except ValueError:
            found.add("date")
    if not (DURATION.match(row[5]) and DURATION.match(row[6])):
        found.add("duration")
    if row[1] == "":
        found.add("customer")
    if any(field != field.strip() for field in row):
        found.add("spaces")
    if row == previous:
        found.add("duplicate")
    return found


def all_faults(folder: Path, tag: str) -> Counter[str]:
    """How many calls rows show each fault."""
    text = (folder / f"Llamadas_{tag}.csv").read_bytes().decode("latin-1")
    rows = list(csv.reader(io.StringIO(text, newline="")))[1:]
    found: Counter[str] = Counter()
    for index, row in enumerate(rows):
        found.update(faults(row, rows[index - 1] if index else None))
    return found


def test_same_arguments_give_byte_identical_files(tmp_path: Path, extracts: Path) -> None:
    generate(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == SAMPLE_FILES
    for name in SAMPLE_FILES:
        assert (tmp_path / name).read_bytes() == (extracts / name).read_bytes(), name


def test_another_seed_gives_other_calls(tmp_path: Path, extracts: Path) -> None:
    generate(tmp_path, seed=8)
    assert (tmp_path / "Llamadas_sample.csv").read_bytes() != (extracts / "Llamadas_sample.csv").read_bytes()


def test_returned_counts_are_the_rows_written(tmp_path: Path) -> None:
    written = generate(tmp_path, calls=500, customers=80, agents=5, tag="t1")
    assert written["Llamadas_t1.csv"] == len(calls_of(tmp_path, "t1")) == 500
    assert written["Customers_t1.csv"] == len(read_csv(tmp_path / "Customers_t1.csv")) == 80
    assert written["Agentes_t1.csv"] == len(read_csv(tmp_path / "Agentes_t1.csv")) == 5
    assert written["CanalDigital_t1.csv"] == 2
    assert written["logins_t1.json"] == len(logins_of(tmp_path, "t1")) > 0


@pytest.mark.parametrize("kind", sorted(HEADERS))
def test_csv_header_and_line_ends_match_the_exports(extracts: Path, kind: str) -> None:
    raw = (extracts / f"{kind}_sample.csv").read_bytes()
    assert b"\r" not in raw
    assert raw.endswith(b"\n") and not raw.endswith(b"\n\n")
    assert raw.decode("latin-1").split("\n", 1)[0] == HEADERS[kind]


def test_every_call_parses_with_the_source_formats(extracts: Path) -> None:
    rows = calls_of(extracts)
    assert len(rows) == 2000
    for row in rows:
        when = datetime.strptime(row["Fecha"], CALL_TIME)
        assert date(2024, 3, 4) <= when.date() < date(2024, 3, 11)
        assert 8 <= when.hour <= 20
        assert DURATION.match(row["Tiempohablado"]) and DURATION.match(row["Tiempototal"])
        assert re.fullmatch(r"-1|[1-9]\d*", row["IDCliente"])
        assert re.fullmatch(r"\d{9,10}", row["Telefono"])
        assert re.fullmatch(r"[a-z0-9_.]+", row["Agente"])


def test_dates_have_no_zero_padding(extracts: Path) -> None:
    rows = calls_of(extracts)
    assert all(UNPADDED_CALL_TIME.match(row["Fecha"]) for row in rows)
    assert any(row["Fecha"].split(" ")[1].startswith("9:") for row in rows)
    assert all(UNPADDED_LOGIN_TIME.match(str(login["logindate"])) for login in logins_of(extracts))


def test_durations_are_h_mm_ss(extracts: Path) -> None:
    rows = calls_of(extracts)
    assert "0:00:00" in {row["Tiempohablado"] for row in rows}
    assert any(seconds(row["Tiempototal"]) >= 60 for row in rows)


def test_about_a_fifth_of_calls_are_to_prospects(extracts: Path) -> None:
    rows = calls_of(extracts)
    share = sum(row["IDCliente"] == "-1" for row in rows) / len(rows)
    assert 0.16 <= share <= 0.24


def test_talk_time_is_mostly_short_with_a_long_tail(extracts: Path) -> None:
    rows = calls_of(extracts)
    talk = sorted(seconds(row["Tiempohablado"]) for row in rows)
    assert talk[len(talk) // 2] <= 10
    assert 0.20 <= sum(t >= 30 for t in talk) / len(talk) <= 0.32
    assert talk[-1] >= 600
    over = sum(seconds(row["Tiempohablado"]) > seconds(row["Tiempototal"]) for row in rows)
    assert 1 <= over <= len(rows) // 100


def test_calls_are_grouped_by_agent_not_sorted_by_time(extracts: Path) -> None:
    rows = calls_of(extracts)
    same_agent = sum(a["Agente"] == b["Agente"] for a, b in zip(rows, rows[1:], strict=False))
    assert same_agent > len(rows) * 0.7
    times = [datetime.strptime(row["Fecha"], CALL_TIME) for row in rows]
    assert times != sorted(times)


def test_campaign_names_mix_case(extracts: Path) -> None:
    names = {row["Campania"] for row in calls_of(extracts)}
    spellings = Counter(name.upper() for name in names)
    assert any(count > 1 for count in spellings.values())
    assert any(name.isupper() for name in names) and any(name.islower() for name in names)


def test_customers_have_gender_with_na_and_a_type(extracts: Path) -> None:
    customers = read_csv(extracts / "Customers_sample.csv")
    ids = [row["CustomerID"] for row in customers]
    assert len(set(ids)) == len(ids) == 600
    genders = Counter(row["Gender"] for row in customers)
    assert set(genders) == {"F", "M", "NA"}
    assert 0.10 <= genders["NA"] / len(customers) <= 0.20
    assert {row["Type"] for row in customers} == {"GEM", "REGULAR"}


def test_accented_agent_names_are_latin1(extracts: Path) -> None:
    raw = (extracts / "Agentes_sample.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    agents = read_csv(extracts / "Agentes_sample.csv")
    names = " ".join(f"{row['nombre']} {row['apellido']}" for row in agents)
    assert set(names) & set("áéíóúñÁÉÍÓÚÑ")
    assert names.encode("latin-1").decode("latin-1") == names
    assert [row["idagente"] for row in agents] == [str(i) for i in range(1, 13)]
    assert all(row["agente"].isascii() for row in agents)
    assert {row["nivelexpertise"] for row in agents} <= {"1", "2", "3"}


def test_channels_are_the_two_digital_channels(extracts: Path) -> None:
    text = (extracts / "CanalDigital_sample.csv").read_bytes().decode("latin-1")
    assert text == "idcanal,desc_canal\n2,AppCallCore\n1,Whatsapp\n"


def test_a_few_calls_point_outside_the_dimensions(extracts: Path) -> None:
    rows = calls_of(extracts)
    customers = {row["CustomerID"] for row in read_csv(extracts / "Customers_sample.csv")}
    agents = {row["agente"] for row in read_csv(extracts / "Agentes_sample.csv")}
    of_customers = [row for row in rows if row["IDCliente"] != "-1"]
    unknown = sum(row["IDCliente"] not in customers for row in of_customers) / len(of_customers)
    assert 0.005 <= unknown <= 0.05
    unknown_agent = sum(row["Agente"] not in agents for row in rows)
    assert 1 <= unknown_agent <= len(rows) // 50
    assert calls_of(extracts)[199]["Agente"] not in agents


def test_logins_are_a_json_array_laid_out_like_the_export(extracts: Path) -> None:
    text = (extracts / "logins_sample.json").read_text("utf-8")
    logins = json.loads(text)
    assert text == json.dumps(logins, indent=2)
    assert logins and all(list(login) == ["callid", "customerid", "logindate", "channel"] for login in logins)
    for login in logins:
        assert isinstance(login["callid"], int) and isinstance(login["customerid"], int)
        assert login["channel"] in (1, 2)
        datetime.strptime(login["logindate"], LOGIN_TIME)
    callids = [login["callid"] for login in logins]
    assert len(set(callids)) == len(callids)


def test_logins_reference_customers_mostly_in_the_file(extracts: Path) -> None:
    customers = {int(row["CustomerID"]) for row in read_csv(extracts / "Customers_sample.csv")}
    logins = logins_of(extracts)
    known = sum(login["customerid"] in customers for login in logins) / len(logins)
    assert 0.9 <= known < 1.0


def test_post_call_logins_have_hits_and_misses(extracts: Path) -> None:
    long_calls: dict[int, list[datetime]] = {}
    called: set[int] = set()
    for row in calls_of(extracts):
        if row["IDCliente"] != "-1":
            called.add(int(row["IDCliente"]))
            if seconds(row["Tiempohablado"]) >= 30:
                when = datetime.strptime(row["Fecha"], CALL_TIME)
                long_calls.setdefault(int(row["IDCliente"]), []).append(when)
    window = timedelta(hours=48)
    outcomes: Counter[str] = Counter()
    for login in logins_of(extracts):
        at = datetime.strptime(str(login["logindate"]), LOGIN_TIME)
        customer = int(str(login["customerid"]))
        hit = any(call <= at < call + window for call in long_calls.get(customer, []))
        outcomes["hit" if hit else "miss"] += 1
        outcomes["never called"] += customer not in called
    assert outcomes["hit"] >= 50
    assert outcomes["miss"] >= 10
    assert outcomes["never called"] >= 1


def test_clean_by_default(extracts: Path) -> None:
    assert all_faults(extracts, "sample") == Counter()


def test_dirty_share_spoils_rows_in_every_way(tmp_path: Path) -> None:
    generate(tmp_path, dirty_share=0.2, tag="dirty")
    found = all_faults(tmp_path, "dirty")
    assert set(found) == {"date", "duration", "customer", "spaces", "duplicate"}
    assert 200 <= sum(found.values()) <= 600
    assert len(calls_of(tmp_path, "dirty")) == 2000


def test_calls_and_logins_stream_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generate_module, "CHUNK_ROWS", 300)
    written = generate(tmp_path, calls=1000, tag="chunks")
    assert len(calls_of(tmp_path, "chunks")) == 1000
    text = (tmp_path / "logins_chunks.json").read_text("utf-8")
    logins = json.loads(text)
    assert text == json.dumps(logins, indent=2)
    assert len(logins) == written["logins_chunks.json"]
    assert len({login["callid"] for login in logins}) == len(logins)


def test_no_calls_still_writes_every_file(tmp_path: Path) -> None:
    written = generate(tmp_path, calls=0, customers=1, agents=1, days=1, tag="empty")
    assert (tmp_path / "Llamadas_empty.csv").read_bytes().decode("latin-1") == HEADERS["Llamadas"] + "\n"
    assert json.loads((tmp_path / "logins_empty.json").read_text("utf-8")) == []
    assert written["Llamadas_empty.csv"] == 0


@pytest.mark.parametrize(
    "arguments",
    [{"calls": -1}, {"days": 0}, {"customers": 0}, {"agents": 0}, {"dirty_share": 1.5}, {"tag": "../x"}],
)
def test_bad_arguments_are_refused(tmp_path: Path, arguments: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, **arguments)  # type: ignore[arg-type]


def test_shipped_sample_is_what_the_generator_writes(tmp_path: Path) -> None:
    shipped = sample_dir()
    generate(tmp_path)
    assert {p.name for p in shipped.iterdir()} == SAMPLE_FILES
    for name in SAMPLE_FILES:
        assert (shipped / name).read_bytes() == (tmp_path / name).read_bytes(), f"regenerate {name}"
    assert sum((shipped / name).stat().st_size for name in SAMPLE_FILES) < 300_000
