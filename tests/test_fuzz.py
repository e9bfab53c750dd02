"""Corrupted extracts never show a traceback: each kind of extract is cut short, has bytes flipped or NULs put in
at random places, and the run either stops with one line and the mart as it was, or loads what it can with every
row it read loaded or rejected."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from callmart.cli import cli
from callmart.config import sample_dir
from marts import full_dump, query

KINDS = {
    "calls": "Llamadas_sample.csv",
    "customers": "Customers_sample.csv",
    "agents": "Agentes_sample.csv",
    "channels": "CanalDigital_sample.csv",
    "logins": "logins_sample.json",
}
TABLES = ["dim_clientes", "dim_agentes", "dim_canales_digitales", "dim_logins", "fact_llamadas", "dm_processes"]


def truncated(data: bytes, chance: random.Random) -> bytes:
    return data[: chance.randrange(1, len(data))]


def flipped(data: bytes, chance: random.Random) -> bytes:
    mutable = bytearray(data)
    for _ in range(max(1, len(data) // 500)):
        place = chance.randrange(len(mutable))
        mutable[place] ^= 1 << chance.randrange(8)
    return bytes(mutable)


def with_nuls(data: bytes, chance: random.Random) -> bytes:
    mutable = bytearray(data)
    for _ in range(3):
        mutable.insert(chance.randrange(len(mutable)), 0)
    return bytes(mutable)


MUTATIONS = {"truncated": truncated, "flipped": flipped, "nuls": with_nuls}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_corrupted_extract_is_one_line_or_a_balanced_load(
    kind: str, mutation: str, database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "exports"
    shutil.copytree(sample_dir(), folder)
    env = {"CALLMART_DATABASE_URL": database_url, "CALLMART_SOURCE_DIR": str(folder)}
    runner = CliRunner()
    days = ["enqueue", "--from", "2024-03-04", "--to", "2024-03-07", "--force"]
    for command in (["init"], days, ["run"]):
        assert runner.invoke(cli, command, env=env).exit_code == 0
    before = full_dump(database_url, TABLES)

    path = folder / KINDS[kind]
    chance = random.Random(f"{kind}-{mutation}")
    path.write_bytes(MUTATIONS[mutation](path.read_bytes(), chance))
    assert runner.invoke(cli, days, env=env).exit_code == 0
    result = runner.invoke(cli, ["run", "--reload-dimensions"], env=env)

    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code == 2:
        # A whole-file problem: one line naming the file, and the mart as it was (the periods queued again).
        assert len(errors) == 1 and KINDS[kind] in errors[0], result.output
        after = full_dump(database_url, TABLES[:-1])
        assert after == {t: before[t] for t in TABLES[:-1]}
        return
    # Loaded: every row read was loaded or rejected, in every step of the run.
    steps = query(
        database_url,
        "SELECT table_name, rows_read, rows_loaded, rows_rejected, status, error_message FROM dm_run_steps "
        "WHERE id_run = (SELECT max(id_run) FROM dm_runs)",
    )
    for table, read, loaded, rejected, status, message in steps:
        if status == "exitoso":
            assert read == loaded + rejected, (table, read, loaded, rejected)
        else:
            # A period that failed: one line naming the file, and the day keeps the rows it had.
            assert status == "fallido" and "\n" not in str(message) and KINDS[kind] in str(message), message
    if result.exit_code == 1:
        failed = query(database_url, "SELECT start_date FROM dm_processes WHERE status = 'fallido'")
        assert failed
        days = {day.date() for (day,) in failed}
        kept = [row for row in full_dump(database_url, ["fact_llamadas"])["fact_llamadas"] if row[1].date() in days]
        assert kept == [row for row in before["fact_llamadas"] if row[1].date() in days]
