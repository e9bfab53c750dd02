"""Operating the load: killed runs, runs at the same time, a busy mart, catch-up, retries and the run log."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from click.testing import CliRunner

from callmart import Callmart, allocator
from callmart import cli as command_line
from callmart.console import ConsoleReporter
from callmart.mart.sample import generate
from callmart.progress import StepResult
from conftest import WITH_POOLER
from marts import business_dump, full_dump, query

DIMENSIONS = ["dim_clientes", "dim_agentes", "dim_canales_digitales", "dim_logins"]
START = date(2024, 3, 4)


@pytest.fixture(scope="module")
def extracts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six days of generated extracts, some rows dirty: enough work for a run to be caught mid-step."""
    folder = tmp_path_factory.mktemp("extracts")
    generate(folder, calls=12_000, days=6, customers=2_000, start=START, seed=11, dirty_share=0.01)
    return folder


def callmart(url: str, source: Path, *args: str) -> subprocess.Popen[str]:
    """The command line in a process of its own."""
    env = {**os.environ, "CALLMART_DATABASE_URL": url, "CALLMART_SOURCE_DIR": str(source)}
    return subprocess.Popen(
        [sys.executable, "-m", "callmart", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def _started_event(line: str) -> bool:
    """Whether a line of `--log-format json` output is a step_started event."""
    try:
        return bool(json.loads(line).get("event") == "step_started")
    except json.JSONDecodeError:
        return False


def mart_contents(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the dimensions and the fact, and each period's outcome: what a load must make of the sources."""
    contents = full_dump(url, [*DIMENSIONS, "fact_llamadas"])
    contents["periods"] = query(
        url, "SELECT fact_table, start_date, end_date, status, rows_loaded FROM dm_processes ORDER BY start_date"
    )
    return contents


def clean_load(url: str, source: Path, days: int = 6) -> None:
    with Callmart(url, source) as mart:
        mart.init()
        mart.enqueue(START, date(2024, 3, 4 + days))
        assert mart.run().ok


@pytest.mark.parametrize("new_database", WITH_POOLER, indirect=True)
def test_killed_runs_leave_no_trace(new_database: Callable[[], str], extracts: Path) -> None:
    """Kill the loading process at random moments, 20 times, then run to the end: the mart equals a clean one."""
    clean = new_database()
    with Callmart(clean, extracts) as mart:
        mart.init()
        mart.enqueue(START, date(2024, 3, 10))
    began = time.perf_counter()
    code, _, err = finish(callmart(clean, extracts, "run"))
    assert code == 0, err
    # The kills fall anywhere in such a run, from the process's start to its last period.
    whole = time.perf_counter() - began
    expected = mart_contents(clean)

    url = new_database()
    with Callmart(url, extracts) as mart:
        mart.init()
        mart.enqueue(START, date(2024, 3, 10))
    chance = random.Random(20241125)
    kills = 0
    while kills < 20:
        process = callmart(url, extracts, "run")
        time.sleep(chance.uniform(0.2, 1.0) * whole)
        if process.poll() is not None:
            # It finished before the kill: start over with every period queued again.
            assert process.returncode == 0, process.stderr.read() if process.stderr else ""
            finish(process)
            with Callmart(url, extracts) as mart:
                mart.enqueue(START, date(2024, 3, 10), force=True)
            continue
        process.send_signal(signal.SIGKILL)
        finish(process)
        kills += 1
    code, _, err = finish(callmart(url, extracts, "run"))
    assert code == 0, err
    assert mart_contents(url) == expected
    statuses = query(url, "SELECT DISTINCT status FROM dm_runs WHERE finished_at IS NOT NULL")
    assert statuses == [("exitoso",)]
    # Each run killed after it started was found dead by a later one; none is left running.
    unfinished = query(url, "SELECT status, count(*) FROM dm_runs WHERE finished_at IS NULL GROUP BY status")
    assert [status for status, _ in unfinished] == ["abandonado"] and 0 < unfinished[0][1] <= kills


@pytest.mark.parametrize("new_database", WITH_POOLER, indirect=True)
def test_a_period_running_in_a_live_run_is_left_alone(database_url: str, extracts: Path) -> None:
    clean_load(database_url, extracts, days=1)
    with Callmart(database_url, extracts) as mart:
        mart.enqueue(date(2024, 3, 5), date(2024, 3, 7))
    # A run that died while loading 3/5 (its lock is gone), and one that still loads 3/6 (it holds its lock).
    query(
        database_url,
        "UPDATE dm_processes SET status = 'corriendo', id_run = 990 WHERE start_date = :d",
        d=datetime(2024, 3, 5),
    )
    query(
        database_url,
        "UPDATE dm_processes SET status = 'corriendo', id_run = 991 WHERE start_date = :d",
        d=datetime(2024, 3, 6),
    )
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    from callmart import locking

    with locking.run_alive(engine, 991):
        if database_url.startswith("postgresql"):
            with Callmart(database_url, extracts) as mart:
                summary = mart.run()
            assert summary.freed == 1
            statuses = dict(query(database_url, "SELECT start_date, status FROM dm_processes"))
            assert statuses[datetime(2024, 3, 5)] == "exitoso"
            assert statuses[datetime(2024, 3, 6)] == "corriendo"
    engine.dispose()
    if database_url.startswith("duckdb"):
        # DuckDB lets one process write the file: whoever opens it knows no other run is alive.
        with Callmart(database_url, extracts) as mart:
            summary = mart.run()
        assert summary.freed == 2
        assert {s for _, s in query(database_url, "SELECT start_date, status FROM dm_processes")} == {"exitoso"}


@pytest.mark.parametrize("new_postgres_database", ["postgresql", "pooler"], indirect=True)
def test_two_runs_at_once_load_each_period_once(new_postgres_database: Callable[[], str], extracts: Path) -> None:
    """PostgreSQL: two runs share the periods. (DuckDB allows one writer: see the busy test below.)"""
    url = new_postgres_database()
    with Callmart(url, extracts) as mart:
        mart.init()
        # 24 periods: each day split in four.
        mart.enqueue(START, date(2024, 3, 10))
    query(url, "DELETE FROM dm_processes")
    bounds = [datetime(2024, 3, 4 + n // 4, n % 4 * 6) for n in range(25)]
    for n, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False), start=1):
        query(
            url,
            "INSERT INTO dm_processes (id_process, fact_table, start_date, end_date, status) "
            "VALUES (:i, 'fact_llamadas', :s, :e, 'pendiente')",
            i=n,
            s=start,
            e=end,
        )
    first, second = callmart(url, extracts, "run"), callmart(url, extracts, "run")
    results = [finish(first), finish(second)]
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    loads = query(
        url,
        "SELECT period_start, count(*) FROM dm_run_steps WHERE period_start IS NOT NULL "
        "AND status = 'exitoso' GROUP BY period_start",
    )
    assert len(loads) == 24 and all(n == 1 for _, n in loads)
    assert len(query(url, "SELECT DISTINCT id_run FROM dm_run_steps")) == 2
    # Inferred members get their keys in the order the runs met them: compare by business values.
    clean = new_postgres_database()
    clean_load(clean, extracts)
    assert business_dump(url) == business_dump(clean)


def test_a_second_run_on_a_busy_duckdb_mart_exits_3(tmp_path: Path, extracts: Path) -> None:
    url = f"duckdb:///{tmp_path / 'busy.duckdb'}"
    clean_load(url, extracts, days=1)
    holder = duckdb.connect(str(tmp_path / "busy.duckdb"))
    try:
        code, _, err = finish(callmart(url, extracts, "run"))
    finally:
        holder.close()
    assert code == 3
    assert err.splitlines()[-1].startswith("Error: another process holds the mart")
    assert "Traceback" not in err


def test_daily_runs_catch_up_missed_days(database_url: str, extracts: Path) -> None:
    with Callmart(database_url, extracts) as mart:
        mart.init()
    code, _, err = finish(callmart(database_url, extracts, "run", "--daily", "--as-of", "2024-03-06"))
    assert code == 0, err
    assert query(database_url, "SELECT start_date, status FROM dm_processes") == [(datetime(2024, 3, 5), "exitoso")]
    # The scheduler missed three days: the next run loads every day since the last one.
    code, _, err = finish(callmart(database_url, extracts, "run", "--daily", "--as-of", "2024-03-09"))
    assert code == 0, err
    assert query(database_url, "SELECT start_date, status FROM dm_processes ORDER BY start_date") == [
        (datetime(2024, 3, day), "exitoso") for day in (5, 6, 7, 8)
    ]
    code, _, _ = finish(callmart(database_url, extracts, "run", "--daily", "--as-of", "2024-03-09"))
    assert code == 0
    assert len(query(database_url, "SELECT * FROM dm_processes")) == 4


def test_failed_periods_are_queued_again_in_one_command(database_url: str, extracts: Path, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    for f in extracts.iterdir():
        if not f.name.startswith("Llamadas"):
            (folder / f.name).write_bytes(f.read_bytes())
    with Callmart(database_url, folder) as mart:
        mart.init()
        mart.enqueue(START, date(2024, 3, 6))
    code, _, _ = finish(callmart(database_url, folder, "run"))
    assert code == 1
    calls = next(extracts.glob("Llamadas*"))
    (folder / calls.name).write_bytes(calls.read_bytes())
    code, out, _ = finish(callmart(database_url, folder, "enqueue", "--failed"))
    assert code == 0 and out.startswith("2 failed period(s) queued again")
    code, _, err = finish(callmart(database_url, folder, "run"))
    assert code == 0, err
    assert {s for (s,) in query(database_url, "SELECT status FROM dm_processes")} == {"exitoso"}


def test_the_run_log_answers_what_ran_and_why_it_failed(database_url: str, extracts: Path, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    for f in extracts.iterdir():
        if not f.name.startswith("Llamadas"):
            (folder / f.name).write_bytes(f.read_bytes())
    with Callmart(database_url, folder) as mart:
        mart.init()
        mart.enqueue(START, date(2024, 3, 5))
    code, _, err = finish(callmart(database_url, folder, "--log-format", "json", "run"))
    assert code == 1
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    finished = [r for r in records if r["event"] == "step_finished"]
    assert [r["table"] for r in finished] == [*DIMENSIONS, "fact_llamadas"]
    assert finished[-1]["status"] == "fallido" and "no file matches Llamadas" in finished[-1]["error"]
    runs = query(database_url, "SELECT id_run, status, finished_at IS NOT NULL FROM dm_runs")
    assert runs == [(1, "fallido", True)]
    steps = query(database_url, "SELECT table_name, status, rows_read, error_message FROM dm_run_steps ORDER BY step")
    assert [s[:2] for s in steps] == [(d, "exitoso") for d in DIMENSIONS] + [("fact_llamadas", "fallido")]
    assert "no file matches Llamadas" in str(steps[-1][3])


class PoolSeen:
    """A reporter noting the Arrow allocator in use when each step starts."""

    def __init__(self) -> None:
        self.pools: set[str] = set()

    def step_started(self, name: str) -> None:
        self.pools.add(pa.default_memory_pool().backend_name)

    def rows_read(self, name: str, rows: int) -> None:
        pass

    def step_finished(self, result: StepResult) -> None:
        pass

    def span_failed(self, name: str, error: str) -> None:
        pass


@pytest.mark.parametrize("chosen", [None, "system"])
def test_a_run_loads_with_an_allocator_that_returns_memory(
    database_url: str, extracts: Path, monkeypatch: pytest.MonkeyPatch, chosen: str | None
) -> None:
    # Opted in: Arrow's own setting, where given, is kept; otherwise jemalloc (where Arrow has it) within the block.
    if chosen is None:
        monkeypatch.delenv(allocator.CHOICE_ENV, raising=False)
    else:
        monkeypatch.setenv(allocator.CHOICE_ENV, chosen)
    before = pa.default_memory_pool().backend_name
    seen = PoolSeen()
    with Callmart(database_url, extracts, reporter=seen) as mart:
        mart.init()
        mart.enqueue(START, START + timedelta(days=1))
        with allocator.returning_memory():
            assert mart.run().ok
    assert seen.pools == {"jemalloc" if chosen is None and _has_jemalloc() else before}
    assert pa.default_memory_pool().backend_name == before


def test_a_run_through_the_api_leaves_the_allocator_alone(
    database_url: str, extracts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A host that stays up (a scheduler's worker) keeps the allocators it has: the library does not change them.
    monkeypatch.delenv(allocator.CHOICE_ENV, raising=False)
    before = pa.default_memory_pool().backend_name
    seen = PoolSeen()
    with Callmart(database_url, extracts, reporter=seen) as mart:
        mart.init()
        mart.enqueue(START, START + timedelta(days=1))
        assert mart.run().ok
    assert seen.pools == {before}


def test_the_command_line_runs_with_an_allocator_that_returns_memory(
    database_url: str, extracts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(allocator.CHOICE_ENV, raising=False)
    before = pa.default_memory_pool().backend_name
    seen = PoolSeen()

    class SeeingReporter(ConsoleReporter):
        def step_started(self, name: str) -> None:
            seen.step_started(name)
            super().step_started(name)

    monkeypatch.setattr(command_line, "ConsoleReporter", SeeingReporter)
    env = {"CALLMART_DATABASE_URL": database_url, "CALLMART_SOURCE_DIR": str(extracts)}
    day, next_day = START.isoformat(), (START + timedelta(days=1)).isoformat()
    for args in (["init"], ["enqueue", "--from", day, "--to", next_day], ["run"]):
        done = CliRunner().invoke(command_line.cli, args, env=env, catch_exceptions=False)
        assert done.exit_code == 0, done.output
    assert seen.pools == {"jemalloc" if _has_jemalloc() else before}
    assert pa.default_memory_pool().backend_name == before


def _has_jemalloc() -> bool:
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        return False
    return True


def fresh_process(script: str, *args: str) -> str:
    """The last line a script prints in a Python process of its own (process-wide settings start afresh there)."""
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1]


FREED_BLOCKS = """
import sys
import tempfile
from callmart import allocator

def resident_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))

def blocks_left_resident():
    big = b"x" * (8 << 20)  # freed: glibc would take 8 MB as its new mmap threshold
    del big
    before = resident_mb()
    blocks = [b"x" * (2 << 20) for _ in range(50)]
    pin = b"z" * (1 << 19)  # a live block after them: freed heap below it cannot be trimmed
    del blocks
    return resident_mb() - before

if sys.argv[1] == "run":
    with allocator.returning_memory():
        print(blocks_left_resident())
else:
    print(blocks_left_resident())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_run_does_not_keep_freed_large_blocks_resident(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each in a fresh process, since the threshold stays fixed for the rest of one.
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)

    assert int(fresh_process(FREED_BLOCKS, "plain")) > 80  # what glibc does by default: the test can tell
    assert int(fresh_process(FREED_BLOCKS, "run")) < 20


REUSED_HEAP_TOP = """
import resource
from callmart import allocator

with allocator.returning_memory():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):
        scratch = b"x" * (900 << 10)  # under the mmap threshold: from the heap's top, then freed
        del scratch
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_run_reuses_the_top_of_the_heap_for_each_batch_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    # 900 KB a round: 225 pages faulted afresh each time the heap hands its top back to the system.
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)

    def faults(top_pad: str | None) -> int:
        if top_pad is None:
            monkeypatch.delenv("MALLOC_TOP_PAD_", raising=False)
        else:
            monkeypatch.setenv("MALLOC_TOP_PAD_", top_pad)
        return int(fresh_process(REUSED_HEAP_TOP))

    assert faults("0") > 10_000  # glibc's own choice, kept where set: no pad, and the test can tell
    assert faults(None) < 2_000


AS_THE_COMMAND = """
import sys
import callmart.__main__ as command

assert "pyarrow" not in sys.modules, "importing callmart loaded Arrow"
if sys.argv[1] == "command":  # the process set up as the `callmart` command sets up its own
    sys.argv = ["callmart", "--help"]
    try:
        command.main()
    except SystemExit:
        pass
"""

COMMAND_PROCESS = (
    AS_THE_COMMAND
    + """
import pyarrow as pa

table = pa.table({"n": list(range(200_000))})
sink = pa.BufferOutputStream()
with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
    writer.write_table(table)
print(pa.default_memory_pool().backend_name, pa.mimalloc_memory_pool().max_memory())
"""
)


@pytest.mark.skipif(sys.platform == "win32", reason="Arrow has no jemalloc on Windows")
def test_the_command_chooses_arrows_allocator_before_arrow_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Arrow's C++ internals (here an IPC stream's compression) use the allocator named as Arrow loads.
    monkeypatch.delenv(allocator.CHOICE_ENV, raising=False)

    def process(mode: str) -> tuple[str, int]:
        backend, most = fresh_process(COMMAND_PROCESS, mode).split()
        return backend, int(most)

    backend, most = process("library")
    assert backend != allocator.PROCESS_POOL and most > 0  # a program using the API keeps Arrow's default
    assert process("command") == (allocator.PROCESS_POOL, 0)


FREED_ARROW_PAGES = (
    AS_THE_COMMAND
    + """
import time
import pyarrow as pa

def resident_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))

pool = pa.jemalloc_memory_pool()
before = resident_mb()
batches = [pa.allocate_buffer(4 << 20, memory_pool=pool) for _ in range(16)]
for batch in batches:
    memoryview(batch).cast("B")[::4096] = b"x" * (len(batch) // 4096)  # a byte a page: every page resident
del batches
began = time.monotonic()
while time.monotonic() - began < 0.5:  # a load goes on allocating: jemalloc hands pages back as it does
    pa.allocate_buffer(1 << 16, memory_pool=pool)
    time.sleep(0.001)
print(resident_mb() - before)
"""
)


@pytest.mark.skipif(sys.platform == "win32", reason="Arrow has no jemalloc on Windows")
def test_the_command_hands_arrows_freed_pages_back_within_a_tenth_of_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    # 64 MB of batches written and freed, then half a second of small allocations: Arrow's own jemalloc settings
    # keep the freed pages longer.
    monkeypatch.delenv(allocator.JEMALLOC_ENV, raising=False)

    assert int(fresh_process(FREED_ARROW_PAGES, "library")) > 16  # Arrow's default: the test can tell
    assert int(fresh_process(FREED_ARROW_PAGES, "command")) < 10


ONE_RUN = """
import sys
from datetime import date
from callmart import Callmart

with Callmart(sys.argv[1], sys.argv[2]) as mart:
    mart.init()
    mart.enqueue(date(2024, 3, 4), date(2024, 3, 6))
    assert mart.run().ok
print(sorted(name for name in ("duckdb", "psycopg", "pyspark") if name in sys.modules))
"""


def test_a_run_loads_no_other_engines_driver(database_url: str, extracts: Path) -> None:
    # A mart's process keeps the other engines' drivers out of its memory (DuckDB's library alone keeps some 33 MB
    # resident once used, psycopg some 23 MB), its JSON extracts included.
    own = {"duckdb": "duckdb", "postgresql": "psycopg"}[database_url.split(":")[0].split("+")[0]]
    assert fresh_process(ONE_RUN, database_url, str(extracts)) == str([own])


MALLOC_ARENAS = """
import ctypes, sys, threading
from callmart import allocator

if sys.argv[1] == "run":
    allocator._tune_malloc()
libc = ctypes.CDLL(None)
ready = threading.Barrier(8)
held = []

def allocate():
    held.append(bytearray(200 << 10))  # below the mmap threshold: from the thread's arena
    ready.wait()

threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc.open_memstream.restype = ctypes.c_void_p
text, size = ctypes.c_char_p(), ctypes.c_size_t()
stream = libc.open_memstream(ctypes.byref(text), ctypes.byref(size))
libc.malloc_info(0, ctypes.c_void_p(stream))
libc.fclose(ctypes.c_void_p(stream))
print(text.value.decode().count("<heap nr="))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_run_keeps_few_malloc_arenas(monkeypatch: pytest.MonkeyPatch) -> None:
    # glibc gives each new thread an arena of its own (up to 8 per core); a run keeps ARENA_MAX.
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)

    assert int(fresh_process(MALLOC_ARENAS, "plain")) > allocator.ARENA_MAX + 2  # glibc's default: the test can tell
    assert int(fresh_process(MALLOC_ARENAS, "run")) <= allocator.ARENA_MAX


KILLED_IN_BACKFILL = """
import glob, os, signal, sys, tempfile
from datetime import date
from callmart import Callmart

class KillOnceSplit:
    def step_started(self, name):
        pass
    def rows_read(self, name, rows):
        if glob.glob(os.path.join(tempfile.gettempdir(), "callmart-backfill-*", "*", "*.arrow")):
            os.kill(os.getpid(), signal.SIGKILL)
    def step_finished(self, result):
        pass
    def span_failed(self, name, error):
        pass

with Callmart(sys.argv[1], sys.argv[2], reporter=KillOnceSplit()) as mart:
    mart.init()
    mart.enqueue(date(2024, 3, 4), date(2024, 3, 7))
    mart.run()
"""

HOLDS_A_SPLIT = """
import fcntl, os, sys, time
os.mkdir(sys.argv[1])
handle = os.open(os.path.join(sys.argv[1], "owner.lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(handle, fcntl.LOCK_EX)
print("holding", flush=True)
time.sleep(300)
"""


def test_the_next_run_removes_what_a_run_killed_in_a_backfill_left_on_disk(
    new_database: Callable[[], str], extracts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "TMPDIR": str(temporary)}
    url = new_database()
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_IN_BACKFILL, url, str(extracts)], env=env, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    abandoned = list(temporary.glob("callmart-backfill-*"))
    assert len(abandoned) == 1 and list(abandoned[0].glob("fact_llamadas*/*.arrow"))
    # A live run's folder (its lock held by another process) must stay.
    live = temporary / "callmart-backfill-live"
    holder = subprocess.Popen([sys.executable, "-c", HOLDS_A_SPLIT, str(live)], env=env, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"holding\n"
        monkeypatch.setattr(tempfile, "tempdir", str(temporary))
        with Callmart(url, extracts) as mart:
            mart.enqueue(START, date(2024, 3, 7), force=True)
            assert mart.run().ok
        assert list(temporary.iterdir()) == [live]
    finally:
        holder.kill()
        holder.communicate()
    # Killed, its lock is released: the next run removes it.
    with Callmart(url, extracts) as mart:
        mart.enqueue(START, date(2024, 3, 5), force=True)
        assert mart.run().ok
    assert list(temporary.iterdir()) == []


@pytest.fixture(scope="module")
def big_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two days of 200,000 calls each: a period's load lasts long enough to be stopped in the middle."""
    folder = tmp_path_factory.mktemp("big_days")
    generate(folder, calls=400_000, days=2, customers=20_000, start=START, seed=5)
    return folder


@pytest.mark.parametrize("new_database", WITH_POOLER, indirect=True)
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_rolls_back_its_period_and_queues_it_again(
    new_database: Callable[[], str], big_days: Path, signal_number: int
) -> None:
    """Scenario: two days queued; the run is stopped while it loads the first fact period. Then `status` shows
    both days pending, the run interrumpido; the next run loads both, equal to a load never stopped."""
    url = new_database()
    with Callmart(url, big_days) as mart:
        mart.init()
        mart.enqueue(START, START + timedelta(days=2))
    process = callmart(url, big_days, "--log-format", "json", "run")
    assert process.stderr is not None
    for line in process.stderr:
        event = json.loads(line)
        if event.get("event") == "step_started" and event["step"].startswith("fact_llamadas"):
            break
    time.sleep(0.3)
    stopped_at = time.monotonic()
    process.send_signal(signal_number)
    code, out, err = finish(process)
    assert time.monotonic() - stopped_at < 10
    assert code == 128 + signal_number, err
    name = signal.Signals(signal_number).name
    # The days may have started as a span, then one at a time: steps may have started since, none finished.
    assert [line for line in err.strip().splitlines() if not _started_event(line)] == [
        f"Stopped: stopped by {name}; the period being loaded rolled back and is queued again"
    ]
    assert "Traceback" not in out + err
    assert query(url, "SELECT status, error_message FROM dm_runs") == [("interrumpido", f"stopped by {name}")]
    periods = query(url, "SELECT status, rows_loaded, error_message FROM dm_processes ORDER BY start_date")
    assert [status for status, _, _ in periods] == ["pendiente", "pendiente"]
    assert periods[0][2] == f"queued again: run 1 was stopped by {name}"
    assert query(url, "SELECT count(*) FROM fact_llamadas") == [(0,)]

    code, _, err = finish(callmart(url, big_days, "run"))
    assert code == 0, err
    clean = new_database()
    clean_load(clean, big_days, days=2)
    assert mart_contents(url) == mart_contents(clean)
