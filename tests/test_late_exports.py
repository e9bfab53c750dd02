"""Late and missing exports: a period loads only once its extract covers it, and waits meanwhile."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from callmart.cli import cli
from marts import CALL_HEADER, drawn, query, write_csv, write_extracts

CUSTOMERS = [(c, "F", "GEM") for c in (1, 2, 3)]


@pytest.fixture(autouse=True)
def late_exports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Here the extracts are not known to be complete: whether they cover a period is what is tried."""
    monkeypatch.delenv("CALLMART_COMPLETE_THROUGH", raising=False)


# Which calls each run's extract holds (the export grows, day by day, or arrives late), and what the control
# table must say after that run. Four days are queued: Monday 3/4 to Thursday 3/7.
SCENARIO = """
| run | the calls extract holds                    | exit | 3/4       | 3/5       | 3/6       | 3/7       |
|-----|--------------------------------------------|------|-----------|-----------|-----------|-----------|
| 1   | 3/4 9:00, 3/5 10:00                        | 0    | exitoso   | esperando | esperando | esperando |
| 2   | 3/4 9:00, 3/5 10:00 (the export is late)   | 4    | exitoso   | esperando | esperando | esperando |
| 3   | 3/4 9:00, 3/5 10:00, 3/6 8:00              | 0    | exitoso   | exitoso   | esperando | esperando |
| 4   | 3/4 9:00, 3/5 10:00, 3/6 8:00, 3/8 9:00    | 0    | exitoso   | exitoso   | exitoso   | exitoso   |
"""


def calls(times: str) -> list[tuple[object, ...]]:
    moments = [t.strip() for t in times.split("(")[0].split(",")]
    return [
        (
            f"{moment.split()[0]}/2024 {moment.split()[1]}",
            1 + n % 3,
            "CAMP",
            "5550000000",
            "ana.lopez",
            "0:01:00",
            "0:02:00",
        )
        for n, moment in enumerate(moments)
    ]


def cli_run(url: str, folder: Path, *options: str) -> Result:
    env = {"CALLMART_DATABASE_URL": url, "CALLMART_SOURCE_DIR": str(folder)}
    return CliRunner().invoke(cli, ["run", *options], env=env)


def statuses(url: str) -> list[str]:
    return [s for (s,) in query(url, "SELECT status FROM dm_processes ORDER BY start_date")]


def test_a_period_waits_for_its_extract_and_loads_when_it_arrives(database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    write_extracts(folder, customers=CUSTOMERS)
    env = {"CALLMART_DATABASE_URL": database_url, "CALLMART_SOURCE_DIR": str(folder)}
    runner = CliRunner()
    assert runner.invoke(cli, ["init"], env=env).exit_code == 0
    assert runner.invoke(cli, ["enqueue", "--from", "2024-03-04", "--to", "2024-03-08"], env=env).exit_code == 0
    for run, holds, code, *expected in drawn(SCENARIO):
        write_csv(folder / "Llamadas_t.csv", CALL_HEADER, calls(holds))
        result = cli_run(database_url, folder, "--max-wait", "never")
        assert result.exit_code == int(code), (run, result.output)
        assert statuses(database_url) == expected, run
        if "esperando" in expected:
            assert "wait for their extracts" in result.output
    # Each day holds its own calls, the Thursday none: an empty day inside what the extract covers.
    loaded = query(database_url, "SELECT start_date, rows_loaded FROM dm_processes ORDER BY start_date")
    assert [rows for _, rows in loaded] == [1, 1, 1, 0]


def monday_queued(url: str, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A mart with Monday 3/4 queued, and an extract whose last call is that Monday at 9:00; its folder and env."""
    folder = write_extracts(tmp_path / "exports", customers=CUSTOMERS, calls=calls("3/4 9:00"))
    env = {"CALLMART_DATABASE_URL": url, "CALLMART_SOURCE_DIR": str(folder)}
    for command in (["init"], ["enqueue", "--from", "2024-03-04", "--to", "2024-03-05"]):
        assert CliRunner().invoke(cli, command, env=env).exit_code == 0
    return folder, env


def test_status_says_why_a_period_waits(database_url: str, tmp_path: Path) -> None:
    folder, env = monday_queued(database_url, tmp_path)
    runner = CliRunner()
    assert cli_run(database_url, folder, "--max-wait", "never").exit_code == 4
    shown = runner.invoke(cli, ["status"], env=env).output
    assert "esperando" in shown
    assert "waiting for the extract: it reaches 2024-03-04 09:00, not the period's end 2024-03-05 00:00" in shown


def test_a_period_still_uncovered_after_the_longest_wait_fails_loudly(database_url: str, tmp_path: Path) -> None:
    folder, env = monday_queued(database_url, tmp_path)
    runner = CliRunner()
    # 2024-03-05 is long past: three days (the default) are over.
    result = cli_run(database_url, folder)
    assert result.exit_code == 1
    assert statuses(database_url) == ["fallido"]
    (message,) = query(database_url, "SELECT error_message FROM dm_processes")[0]
    assert str(message).endswith("still so 3 days after the period ended (--max-wait)")
    # The next export covers it: queued again, it loads.
    write_csv(folder / "Llamadas_t.csv", CALL_HEADER, calls("3/4 9:00, 3/5 7:00"))
    assert runner.invoke(cli, ["enqueue", "--failed"], env=env).exit_code == 0
    assert cli_run(database_url, folder).exit_code == 0
    assert statuses(database_url) == ["exitoso"]


def test_a_day_with_a_file_of_its_own_is_covered(database_url: str, tmp_path: Path) -> None:
    folder = write_extracts(tmp_path / "exports", customers=CUSTOMERS)
    (folder / "Llamadas_t.csv").unlink()
    write_csv(folder / "Llamadas_20240304.csv", CALL_HEADER, calls("3/4 9:00, 3/4 17:30"))
    env = {"CALLMART_DATABASE_URL": database_url, "CALLMART_SOURCE_DIR": str(folder)}
    runner = CliRunner()
    runner.invoke(cli, ["init"], env=env)
    runner.invoke(cli, ["enqueue", "--from", "2024-03-04", "--to", "2024-03-06"], env=env)
    assert cli_run(database_url, folder, "--max-wait", "never").exit_code == 0
    assert statuses(database_url) == ["exitoso", "esperando"]
    # A Tuesday without calls, exported as an empty file of its own, loads as an empty day.
    write_csv(folder / "Llamadas_2024-03-05.csv", CALL_HEADER, [])
    assert cli_run(database_url, folder, "--max-wait", "never").exit_code == 0
    assert statuses(database_url) == ["exitoso", "exitoso"]
    assert query(database_url, "SELECT rows_loaded FROM dm_processes ORDER BY start_date") == [(2,), (0,)]
