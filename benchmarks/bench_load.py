"""Time callmart's load of generated calls against each engine's bulk-load floor and the usual pandas notebook: by
default a year's backfill of daily periods beside the same rows as one period; with --days 1, one day.

    python benchmarks/bench_load.py --calls 1000000 [--backend postgresql|duckdb|both] [--days 365] [--skip-pandas]
    python benchmarks/bench_load.py --calls 1000000 --backend spark [--spark-master local[2]|cluster]

One extract is generated; every contender then loads that same file in a child process of its own
(_contenders.py), so that its wall time and peak resident memory are its own. benchmarks/README.md says what each
contender does. The last line of output is `ratio_to_copy=X`: callmart's PostgreSQL load over raw COPY.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from _measure import CALLS_FILE, FACT, START, TARGET_ENV, proc_meminfo_kb
from _notebook import NOTES as PANDAS_NOTES
from psycopg import sql

from callmart import allocator
from callmart.engines.spark.standalone import LOOPBACK, loopback_environment, standalone_cluster

PG_URL_ENV = "CALLMART_BENCH_PG_URL"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRESQL, DUCKDB, SPARK = "postgresql", "duckdb", "spark"
BACKENDS = (POSTGRESQL, DUCKDB, SPARK)
LOCAL_MASTER, CLUSTER = "local[2]", "cluster"
CLUSTER_WORKERS = 2
"""Workers of the standalone cluster the benchmark starts on 127.0.0.1, one core each."""
WORKER_MEMORY, EXECUTOR_MEMORY, LOCAL_DRIVER_MEMORY = "2g", "1536m", "3g"
"""A cluster worker's memory and its executor's share of it; a local session's one JVM (driver and executors)."""
SEED = 7
HERE = Path(__file__).resolve().parent
CHILD = HERE / "_contenders.py"
RESULTS_DIR = HERE / "results"
TABLE_COLUMNS = (  # heading, result key, width, number format ('' for text)
    ("contender", "contender", 18, ""),
    ("backend", "backend", 11, ""),
    ("seconds", "seconds", 9, ".2f"),
    ("rows/s", "rows_per_s", 11, ",d"),
    ("peak RSS MB", "peak_rss_mb", 12, ".0f"),
    ("at start MB", "base_rss_mb", 12, ".0f"),
    ("ratio", "ratio_to_floor", 7, ".2f"),
)
PER_CORE_COLUMN = ("rows/s/core", "rows_per_s_per_core", 12, ",d")
"""Shown when a Spark contender ran: its rows/s over the cores its executors had."""
NOTES = {
    "callmart timing": (
        "enqueue + run(), as a scheduled run does: each dimension's extract is checked first, and skipped since it "
        "is unchanged since the (untimed) setup run; then the period"
    ),
    "duckdb memory": (
        "DuckDB runs inside the client process: its RSS includes the engine's memory; callmart caps DuckDB's at 64 MB "
        "per thread (128 MB at least), DuckDB read_csv runs with DuckDB's default (80% of the machine's memory)"
    ),
    "postgresql memory": "PostgreSQL contenders' RSS is the client's only; the server works in its own processes",
    "peak RSS": "VmHWM reset at the start of the timed part (/proc/self/clear_refs), read at its end",
}
SPARK_NOTES = {
    "spark timing": (
        "each Spark contender opens its session first (JVM start, catalog, Delta's classes; on the cluster, its two "
        "executors registered), then is timed; the session's start is in neither timing. callmart on Spark: "
        "SparkLoad's init and a run (untimed) for the dimensions, then enqueue + run timed, as on the SQL engines; "
        "its dimensions are skipped when unchanged where the run takes their digests (RunOptions), its executors "
        "start Python workers for the reader, and it writes the day's conversion aggregates and lift before its "
        "status"
    ),
    "spark memory": "Spark works in JVMs (the driver's, the executors'): the Python client's peak RSS says nothing",
    "spark cores": "rows/s per core: over the executors' cores, local[N]: N; cluster: workers x 1 core",
}


@dataclass(frozen=True)
class Scenario:
    """One scratch database and the phases run on it; a phase with a label is a timed contender."""

    backend: str
    name: str
    phases: tuple[tuple[str, str | None], ...]


FLOORS = {POSTGRESQL: "raw COPY", DUCKDB: "DuckDB read_csv", SPARK: "Spark CSV → Delta"}
STORED = "stored rows"
BACKFILL_DAYS = 365
DAILY_RUN = "callmart run --daily"
"""The last day loaded by the command line in a process of its own, the days before it loaded already."""
ONE_PERIOD = "callmart, one period"
"""The same rows as the daily periods, loaded as one period of all their days: what a backfill is held to."""
"""Storing the rows a load leaves (staging, the period's fact rows, its key) without computing them: the floor of
the mart's design. The staging table holds the last period only, so it runs with one-day periods."""
# Each floor is timed before and after callmart's runs, in every round: a one-second load catches whatever else
# the machine does at that moment, and the median of several moments is a steadier denominator.
SCENARIOS = (
    Scenario(POSTGRESQL, "copy", (("pg-copy", "raw COPY"),)),
    Scenario(
        POSTGRESQL,
        "callmart",
        (
            ("callmart-setup", None),
            ("callmart-load", "callmart"),
            ("callmart-reload", "callmart reload"),
            ("pg-stored-rows", STORED),
        ),
    ),
    Scenario(POSTGRESQL, "one-period", (("callmart-setup", None), ("callmart-one-period", ONE_PERIOD))),
    Scenario(
        POSTGRESQL,
        "daily",
        (("callmart-setup", None), ("callmart-all-but-last", None), ("callmart-daily", DAILY_RUN)),
    ),
    Scenario(POSTGRESQL, "copy-after", (("pg-copy", "raw COPY"),)),
    Scenario(POSTGRESQL, "pandas", (("pandas-setup", None), ("pandas-load", "pandas notebook"))),
    Scenario(DUCKDB, "read_csv", (("duckdb-read-csv", "DuckDB read_csv"),)),
    Scenario(
        DUCKDB,
        "callmart",
        (
            ("callmart-setup", None),
            ("callmart-load", "callmart"),
            ("callmart-reload", "callmart reload"),
            ("duckdb-stored-rows", STORED),
        ),
    ),
    Scenario(DUCKDB, "one-period", (("callmart-setup", None), ("callmart-one-period", ONE_PERIOD))),
    Scenario(
        DUCKDB,
        "daily",
        (("callmart-setup", None), ("callmart-all-but-last", None), ("callmart-daily", DAILY_RUN)),
    ),
    Scenario(DUCKDB, "read_csv-after", (("duckdb-read-csv", "DuckDB read_csv"),)),
    Scenario(SPARK, "csv", (("spark-csv", FLOORS[SPARK]),)),
    Scenario(
        SPARK,
        "callmart",
        (("spark-setup", None), ("spark-load", "callmart"), ("spark-reload", "callmart reload")),
    ),
    Scenario(SPARK, "csv-after", (("spark-csv", FLOORS[SPARK]),)),
)


@dataclass
class Outcome:
    """Every measurement of one contender on one backend, over the rounds."""

    label: str
    backend: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> list[dict[str, Any]]:
        """The runs that succeeded."""
        return [r for r in self.runs if "error" not in r]

    @property
    def seconds(self) -> float | None:
        """Median wall seconds of the successful runs."""
        return statistics.median(r["seconds"] for r in self.ok) if self.ok else None

    def summary(self, floor: Outcome | None, cores: int | None) -> dict[str, Any]:
        """The contender's row of the results table; rows/s per core where its backend's cores are counted."""
        seconds, rows = self.seconds, max((r["rows"] for r in self.ok), default=0)
        floor_seconds = floor.seconds if floor else None
        peaks = [r["peak_rss_mb"] for r in self.ok if r["peak_rss_mb"] is not None]
        per_second = round(rows / seconds) if seconds else None
        return {
            "contender": self.label,
            "backend": self.backend,
            "seconds": round(seconds, 3) if seconds is not None else None,
            "rows": rows,
            "rows_per_s": per_second,
            "cores": cores,
            "rows_per_s_per_core": round(per_second / cores) if per_second and cores else None,
            "peak_rss_mb": round(max(peaks), 1) if peaks else None,
            "base_rss_mb": round(max(r["base_rss_mb"] or 0 for r in self.ok), 1) if peaks else None,
            "ratio_to_floor": round(seconds / floor_seconds, 2) if seconds and floor_seconds else None,
            "errors": [r["error"] for r in self.runs if "error" in r],
        }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=positive, required=True, help="calls in the generated extract")
    parser.add_argument(
        "--backend", choices=(*BACKENDS, "both"), default="both", help="both: postgresql and duckdb (default)"
    )
    parser.add_argument(
        "--spark-master",
        choices=(LOCAL_MASTER, CLUSTER),
        default=LOCAL_MASTER,
        help=f"Spark: a local session, or a standalone cluster of {CLUSTER_WORKERS} one-core workers on {LOOPBACK} "
        "that the benchmark starts and stops",
    )
    parser.add_argument(
        "--days",
        type=positive,
        help=f"days the calls span, one period each (default {BACKFILL_DAYS}, a year's backfill, beside the same rows "
        "as one period; Spark: 1); 1: the calls of one day, beside storing its rows",
    )
    parser.add_argument("--out", type=Path, help="JSON results file (default benchmarks/results/bench_<calls>.json)")
    parser.add_argument("--skip-pandas", action="store_true", help="skip the pandas notebook (slow at 1M calls)")
    parser.add_argument("--repeat", type=positive, default=1, help="rounds of every contender; medians reported")
    parser.add_argument("--workdir", type=Path, help="where the extract and DuckDB files go (default: temp dir)")
    parser.add_argument(
        "--extract",
        type=Path,
        help="keep the extract in this folder and reuse it on the next run (same --calls and --days): generated "
        "once when the folder holds none",
    )
    args = parser.parse_args(argv)
    if args.days is None:
        args.days = 1 if args.backend == SPARK else BACKFILL_DAYS
    return args


def positive(text: str) -> int:
    """An integer >= 1, for argparse."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def admin_url() -> str:
    """The PostgreSQL URL through which scratch databases are created and dropped."""
    return os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)


def masked(url: str) -> str:
    """A URL with its password hidden."""
    return sa.make_url(url).render_as_string(hide_password=True)


@contextmanager
def scratch_database(scenario: Scenario, workdir: Path, spark_master: str | None) -> Iterator[str]:
    """A new empty database for the scenario (a warehouse folder on Spark), dropped (or deleted) afterwards."""
    name = f"callmart_bench_{os.getpid()}_{scenario.name.replace('-', '_')}"
    if scenario.backend == SPARK:
        assert spark_master is not None
        warehouse = workdir / f"{name}_warehouse"
        try:
            yield spark_url(spark_master, warehouse)
        finally:
            shutil.rmtree(warehouse, ignore_errors=True)
        return
    if scenario.backend == DUCKDB:
        path = workdir / f"{name}.duckdb"
        try:
            yield f"duckdb:///{path}"
        finally:
            for leftover in (path, path.with_name(path.name + ".wal")):
                leftover.unlink(missing_ok=True)
        return
    with psycopg.connect(admin_url(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        # callmart keeps a PostgreSQL mart in its own schema; the contenders' checks name the tables bare.
        admin.execute(sql.SQL("ALTER DATABASE {} SET search_path TO callmart, public").format(sql.Identifier(name)))
    try:
        yield sa.make_url(admin_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def spark_url(master: str, warehouse: Path) -> str:
    """The URL of a session on `master` (local[N], or a standalone master's HOST:PORT) with its tables in
    `warehouse`: shuffles in as many partitions as there are cores (Spark's 200 only cost time at this size)."""
    cores = spark_cores(master)
    settings = {
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": str(cores),
        "spark.databricks.delta.snapshotPartitions": str(cores),
    }
    if master.startswith("local"):
        settings["spark.driver.memory"] = LOCAL_DRIVER_MEMORY
    else:
        settings |= {
            "spark.driver.host": LOOPBACK,
            "spark.driver.bindAddress": LOOPBACK,
            "spark.cores.max": str(cores),
            "spark.executor.memory": EXECUTOR_MEMORY,
            # The session waits for every executor before its first job, so that its start is not timed.
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s",
        }
    query = "&".join(f"{key}={value}" for key, value in settings.items())
    return f"spark://{master}?warehouse={warehouse}&{query}"


def spark_cores(master: str) -> int:
    """The cores a session's executors have: local[N]'s N, or the cluster's one-core workers."""
    if master.startswith("local["):
        return int(master.removeprefix("local[").removesuffix("]"))
    return CLUSTER_WORKERS


def run_child(phase: str, database: str, source: Path, days: int) -> dict[str, Any]:
    """Run one phase in a fresh Python process; return its measurement or its error."""
    command = [sys.executable, str(CHILD), phase, "--source", str(source), "--days", str(days)]
    env = {**(loopback_environment() if phase.startswith("spark") else os.environ), TARGET_ENV: database}
    if phase.startswith("callmart"):
        # As the `callmart` command's process has it: Arrow's allocator and its settings named before Arrow loads.
        env = {**allocator.process_settings(), **env}
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=False)
    lines = done.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        result = {"error": f"{phase} exited {done.returncode} without a result"}
    return result


def run_round(
    scenarios: list[Scenario], work: Path, source: Path, days: int, master: str | None, outcomes: dict[str, Outcome]
) -> None:
    """Every scenario once, one after the other, each on its own scratch database (master: Spark's, if any)."""
    for scenario in scenarios:
        with scratch_database(scenario, work, master) as database:
            for phase, label in scenario.phases:
                say(f"  {scenario.backend} {phase} …")
                result = run_child(phase, database, source, days)
                say(f"    {describe(result)}")
                if label is not None:
                    key = f"{scenario.backend}/{label}"
                    outcomes.setdefault(key, Outcome(label, scenario.backend)).runs.append(result)
                if "error" in result:
                    break


def describe(result: dict[str, Any]) -> str:
    """One line about a child's result, for progress output."""
    if "error" in result:
        return f"failed: {result['error']}"
    peak = result.get("peak_rss_mb")
    memory = f", peak RSS {peak:.0f} MB" if peak is not None else ""
    return f"{result['seconds']:.2f} s, {result['rows']:,} rows{memory}"


def say(text: str) -> None:
    """Progress, to stderr so that stdout holds the report."""
    print(text, file=sys.stderr, flush=True)


def make_extract(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Generate the one extract every contender loads."""
    from callmart.mart.sample import generate

    customers = max(1000, args.calls // 5)
    began = time.perf_counter()
    written = generate(folder, calls=args.calls, days=args.days, customers=customers, start=START, seed=SEED)
    return {
        "calls": args.calls,
        "days": args.days,
        "customers": customers,
        "rows": written,
        "calls_file_mb": round((folder / CALLS_FILE).stat().st_size / 2**20, 1),
        "generate_seconds": round(time.perf_counter() - began, 2),
    }


def machine(backends: list[str]) -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "ram_gb": round(proc_meminfo_kb("MemTotal") / 2**20, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for package in ("callmart", "duckdb", "pyarrow", "sqlalchemy", "psycopg", "pandas", "pyspark", "delta-spark"):
        info[package] = package_version(package)
    info["callmart_commit"] = source_commit()
    if POSTGRESQL in backends:
        with psycopg.connect(admin_url()) as conn:
            found = conn.execute("SHOW server_version").fetchone()
        info["postgresql"] = found[0] if found else None
    return info


def source_commit() -> str | None:
    """The commit of the callmart source measured (the one imported, which PYTHONPATH may choose), marked '+dirty'
    when it has uncommitted changes; None outside a checkout."""
    source = Path(allocator.__file__).resolve().parent

    def git(*args: str) -> str | None:
        done = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit is None:
        return None
    return commit + ("+dirty" if git("status", "--porcelain", "--", ".") else "")


def package_version(name: str) -> str | None:
    """An installed package's version, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def summarize(outcomes: dict[str, Outcome], cores: dict[str, int]) -> list[dict[str, Any]]:
    """One row per contender, ratios against its backend's floor; rows/s per core where the cores are known."""
    rows = []
    for outcome in outcomes.values():
        floor = outcomes.get(f"{outcome.backend}/{FLOORS[outcome.backend]}")
        rows.append(outcome.summary(floor, cores.get(outcome.backend)))
    return rows


def reload_ratios(outcomes: dict[str, Outcome]) -> dict[str, float]:
    """Per backend: callmart's reload time over its first load time."""
    ratios = {}
    for backend in BACKENDS:
        first = outcomes.get(f"{backend}/callmart")
        again = outcomes.get(f"{backend}/callmart reload")
        if first and again and first.seconds and again.seconds:
            ratios[backend] = round(again.seconds / first.seconds, 2)
    return ratios


def period_ratios(outcomes: dict[str, Outcome]) -> dict[str, float]:
    """Per backend: callmart's period steps alone (extract to metric, without the run's other steps: dimension
    checks, run log, aggregates) over the backend's floor, medians over the rounds."""
    ratios = {}
    for backend in BACKENDS:
        load, floor = outcomes.get(f"{backend}/callmart"), outcomes.get(f"{backend}/{FLOORS[backend]}")
        if not (load and load.ok and floor and floor.seconds):
            continue
        steps = [
            sum(s["seconds"] for s in run["details"].get("steps", []) if s["table"] == FACT and s["period"])
            for run in load.ok
        ]
        ratios[backend] = round(statistics.median(steps) / floor.seconds, 2)
    return ratios


def over_contender(outcomes: dict[str, Outcome], label: str) -> dict[str, float]:
    """Per backend: callmart's load over the contender of that label, medians over the rounds."""
    ratios = {}
    for backend in BACKENDS:
        load, other = outcomes.get(f"{backend}/callmart"), outcomes.get(f"{backend}/{label}")
        if load and other and load.seconds and other.seconds:
            ratios[backend] = round(load.seconds / other.seconds, 2)
    return ratios


def last_day_ratios(outcomes: dict[str, Outcome]) -> dict[str, dict[str, Any]]:
    """Per callmart contender with three periods or more: the load time of its last days over that of as many
    early days (a week each, with fewer periods fewer), the first third of the days left out: the first load also
    reads the whole extract once, setting every day's rows apart. The days of a span share its time
    by their rows; one day alone is too short to time."""
    ratios = {}
    for key, outcome in outcomes.items():
        if not outcome.ok or "callmart" not in outcome.label:
            continue
        steps = [s for s in outcome.ok[0]["details"].get("steps", []) if s["table"] == FACT and s["period"]]
        skipped = max(1, len(steps) // 3)
        width = min(7, (len(steps) - skipped) // 2)
        if width >= 1:
            early, late = steps[skipped : skipped + width], steps[-width:]
            early_seconds, late_seconds = sum(s["seconds"] for s in early), sum(s["seconds"] for s in late)
            ratios[key] = {
                "first": f"{early[0]['period']} to {early[-1]['period']}",
                "last": f"{late[0]['period']} to {late[-1]['period']}",
                "first_seconds": round(early_seconds, 3),
                "last_seconds": round(late_seconds, 3),
                "ratio": round(late_seconds / early_seconds, 2),
            }
    return ratios


def cell(value: Any, spec: str) -> str:
    """A table cell; '-' for a missing value."""
    return "-" if value is None else format(value, spec)


def table_line(cells: list[str], columns: tuple[tuple[str, str, int, str], ...] = TABLE_COLUMNS) -> str:
    """One line of the results table: text columns left-aligned, numbers right-aligned."""
    return " ".join(
        f"{text:<{width}}" if not spec else f"{text:>{width}}"
        for text, (_, _, width, spec) in zip(cells, columns, strict=True)
    )


def print_table(rows: list[dict[str, Any]]) -> None:
    """The results table (with rows/s per core when a Spark contender ran)."""
    columns = table_columns(rows)
    head = table_line([heading for heading, _, _, _ in columns], columns)
    print(head)
    print("-" * len(head))
    for row in rows:
        print(table_line([cell(row[key], spec) for _, key, _, spec in columns], columns))
        for error in row["errors"]:
            print(f"    failed: {error}")
    print("ratio: seconds over the backend's floor (PostgreSQL: raw COPY; DuckDB: DuckDB read_csv; Spark: CSV → Delta)")
    print("peak RSS: the client process during the timed part; at start: its RSS when the timed part began")


def table_columns(rows: list[dict[str, Any]]) -> tuple[tuple[str, str, int, str], ...]:
    """The table's columns: rows/s per core after rows/s when any row has it."""
    if not any(row.get("rows_per_s_per_core") for row in rows):
        return TABLE_COLUMNS
    return (*TABLE_COLUMNS[:4], PER_CORE_COLUMN, *TABLE_COLUMNS[4:])


def print_breakdown(outcomes: dict[str, Outcome]) -> None:
    """Where the time went and what was loaded, for the first successful run of each contender."""
    print("where the time went (first run of each):")
    for key, outcome in outcomes.items():
        if outcome.ok:
            details = outcome.ok[0]["details"]
            print(f"  {key}: {breakdown(details)}")
            for statement in details.get("top_sql", [])[:2]:
                print(f"      sql {statement['seconds']:.2f} s x{statement['calls']}: {statement['sql'][:90]}")


def breakdown(details: dict[str, Any]) -> str:
    """One line of a contender's details."""
    parts = []
    if "copy" in details:
        parts.append(f"COPY from {details['copy']}")
    if "binary COPY" in details:
        sizes = ", ".join(f"{table} {size}" for table, size in details["binary COPY"].items())
        parts.append(f"binary COPY of {sizes}, then the primary key ({details['primary key']})")
    if "from Arrow" in details:
        counts = ", ".join(f"{table} {rows:,} rows" for table, rows in details["from Arrow"].items())
        parts.append(f"inserted from Arrow: {counts}")
    if "threads" in details:
        parts.append(f"DuckDB threads {details['threads']}")
    steps = details.get("steps", [])
    if steps:
        dims = sum(s["seconds"] for s in steps if s["period"] is None and s["table"] != FACT)
        parts.append(f"dimensions {dims:.2f} s")
    for name, split in details.get("splits", {}).items():
        if name.startswith(FACT):
            seconds = split["until_last_batch_read_s"] + split["after_last_batch_read_s"]
            parts.append(
                f"{name} {seconds:.2f} s (until its last batch was read {split['until_last_batch_read_s']:.2f} s, "
                f"then keys + replace + metric {split['after_last_batch_read_s']:.2f} s)"
            )
    parts.extend(f"{name} {seconds:.2f} s" for name, seconds in details.get("laps", {}).items())
    census = details.get("census")
    if census:
        parts.append(
            f"loaded {census['rows']:,} calls, {census['with_login_after']:,} with a login after, "
            f"{census['default_customer']:,} with the default customer"
        )
    return "; ".join(parts)


def print_report(report: dict[str, Any]) -> None:
    """The human-readable report on stdout."""
    m = report["machine"]
    print(
        f"machine: nproc={m['nproc']} ram={m['ram_gb']} GB postgresql={m.get('postgresql', '-')} "
        f"duckdb={m['duckdb']} python={m['python']} pandas={m['pandas'] or '-'} load={m['load_average']} "
        f"callmart={m['callmart']} ({m['callmart_commit'] or 'unknown commit'})"
    )
    extract = report["extract"]
    print(
        f"extract: {extract['calls']:,} calls over {extract['days']} day(s), {extract['customers']:,} customers, "
        f"calls file {extract['calls_file_mb']} MB; {report['repeat']} round(s), medians"
    )
    print()
    print_table(report["results"])
    for backend, ratio in report["reload_ratios"].items():
        print(f"reload (enqueue force=True + run) over first load, {backend}: {ratio:.2f}")
    for backend, ratio in report["period_ratios"].items():
        print(f"period steps alone (extract to metric, no aggregates) over the floor, {backend}: {ratio:.2f}")
    for backend, ratio in report.get("over_stored_rows", {}).items():
        print(f"callmart over storing its rows alone ({STORED}), {backend}: {ratio:.2f}")
    for backend, ratio in report.get("backfill_ratios", {}).items():
        print(f"daily periods over the same rows as one period ({ONE_PERIOD}), {backend}: {ratio:.2f}")
    for key, days in report["last_day_ratios"].items():
        print(
            f"{key}: periods {days['last']} took {days['last_seconds']:.2f} s, periods {days['first']} "
            f"{days['first_seconds']:.2f} s: {days['ratio']:.2f}x"
        )
    print()
    print_breakdown(report["outcomes"])
    for name, note in report["notes"].items():
        print(f"note ({name}): {note}")


def ratio_line(results: list[dict[str, Any]]) -> str:
    """The last line: callmart's full PostgreSQL load over raw COPY."""
    for row in results:
        if row["backend"] == POSTGRESQL and row["contender"] == "callmart":
            ratio = row["ratio_to_floor"]
            return f"ratio_to_copy={ratio:.2f}" if ratio is not None else "ratio_to_copy=nan"
    return "ratio_to_copy=nan"


def selected(args: argparse.Namespace) -> list[Scenario]:
    """The scenarios the options ask for."""
    backends = (POSTGRESQL, DUCKDB) if args.backend == "both" else (args.backend,)
    chosen = [s for s in SCENARIOS if s.backend in backends and not (args.skip_pandas and s.name == "pandas")]
    if args.days == 1:
        return [s for s in chosen if s.name not in ("one-period", "daily")]
    return [replace(s, phases=tuple(p for p in s.phases if p[1] != STORED)) for s in chosen]


def check_ready(scenarios: list[Scenario]) -> str | None:
    """Why the benchmark cannot run, if it cannot."""
    if any(s.backend == SPARK for s in scenarios) and find_spec("pyspark") is None:
        return "the Spark contenders need callmart's Spark extra: pip install -e '.[spark]'"
    if any(s.name == "pandas" for s in scenarios) and find_spec("pandas") is None:
        return "the pandas contender needs pandas: pip install pandas (or pass --skip-pandas)"
    if any(s.backend == POSTGRESQL for s in scenarios):
        try:
            psycopg.connect(admin_url(), connect_timeout=5).close()
        except psycopg.OperationalError as error:
            return f"cannot reach PostgreSQL at {masked(admin_url())} (set {PG_URL_ENV}): {error}".splitlines()[0]
    return None


def write_json(report: dict[str, Any], out: Path) -> None:
    """Save the report, outcomes included, as JSON."""
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = {**report, "outcomes": {k: asdict(v) for k, v in report["outcomes"].items()}}
    out.write_text(json.dumps(saved, indent=2, default=str) + "\n")


def benchmark(args: argparse.Namespace, scenarios: list[Scenario], work: Path) -> dict[str, Any]:
    """Generate the extract (or reuse a kept one), run every round, and gather the report."""
    backends = sorted({s.backend for s in scenarios})
    info = machine(backends)
    source = args.extract.resolve() if args.extract else work / "extract"
    extract = reused_extract(args, source) or generated_extract(args, source)
    outcomes: dict[str, Outcome] = {}
    with spark_master(args, work, backends) as master:
        for number in range(1, args.repeat + 1):
            say(f"round {number} of {args.repeat}")
            run_round(scenarios, work, source, args.days, master, outcomes)
    cores = {SPARK: spark_cores(args.spark_master)} if SPARK in backends else {}
    results = summarize(outcomes, cores)
    if SPARK in backends:
        info["spark_master"] = args.spark_master
        info["spark_cores"] = cores[SPARK]
    sql_notes = NOTES if {POSTGRESQL, DUCKDB} & set(backends) else {}
    spark_notes = SPARK_NOTES if SPARK in backends else {}
    pandas_notes = PANDAS_NOTES if any(s.name == "pandas" for s in scenarios) else {}
    return {
        "when": datetime.now().isoformat(timespec="seconds"),
        "command": sys.argv,
        "repeat": args.repeat,
        "machine": info,
        "extract": extract,
        "results": results,
        "reload_ratios": reload_ratios(outcomes),
        "period_ratios": period_ratios(outcomes),
        # What computing the rows (reading, cleaning, keys, checks, statistics, metric, aggregates) adds to storing
        # them, the design's floor; and daily periods over the same rows as one period (a backfill's target: 1.5).
        "over_stored_rows": over_contender(outcomes, STORED),
        "backfill_ratios": over_contender(outcomes, ONE_PERIOD),
        "last_day_ratios": last_day_ratios(outcomes),
        "notes": {**sql_notes, **pandas_notes, **spark_notes},
        "outcomes": outcomes,
    }


EXTRACT_NOTE = "extract.json"
"""What a kept extract holds, beside it, so a later run reuses it only for the same --calls and --days."""


def reused_extract(args: argparse.Namespace, source: Path) -> dict[str, Any] | None:
    """The description of an extract kept by an earlier run with the same --calls and --days, if any."""
    note = source / EXTRACT_NOTE
    if not note.exists():
        return None
    extract: dict[str, Any] = json.loads(note.read_text())
    if (extract["calls"], extract["days"]) != (args.calls, args.days):
        raise SystemExit(f"error: {source} holds {extract['calls']:,} calls over {extract['days']} day(s)")
    say(f"reusing the extract in {source}")
    return extract


def generated_extract(args: argparse.Namespace, source: Path) -> dict[str, Any]:
    """Generate the extract, noting what it holds beside it."""
    say(f"generating {args.calls:,} calls over {args.days} day(s) in {source} …")
    extract = make_extract(args, source)
    (source / EXTRACT_NOTE).write_text(json.dumps(extract) + "\n")
    return extract


@contextmanager
def spark_master(args: argparse.Namespace, work: Path, backends: list[str]) -> Iterator[str | None]:
    """The Spark master the Spark contenders use: local[N], or a standalone cluster started here and stopped after."""
    if SPARK not in backends:
        yield None
    elif args.spark_master != CLUSTER:
        yield args.spark_master
    else:
        say(f"starting a Spark master and {CLUSTER_WORKERS} workers of one core on {LOOPBACK} …")
        with standalone_cluster(work / "cluster", CLUSTER_WORKERS, WORKER_MEMORY) as cluster:
            yield cluster.master


@contextmanager
def workdir(parent: Path | None) -> Iterator[Path]:
    """A scratch folder that the PostgreSQL server can read, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="callmart_bench_", dir=parent))
    try:
        path.chmod(0o755)  # a local server reads the calls file itself, as another user
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and report it."""
    args = parse_args(argv)
    scenarios = selected(args)
    problem = check_ready(scenarios)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    with workdir(args.workdir) as work:
        report = benchmark(args, scenarios, work)
    write_json(report, args.out or RESULTS_DIR / f"bench_{args.calls}.json")
    print_report(report)
    failed = any(row["errors"] for row in report["results"])
    if any(s.backend == POSTGRESQL for s in scenarios):
        print(ratio_line(report["results"]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
