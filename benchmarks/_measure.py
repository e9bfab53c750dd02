"""Measuring one benchmark phase: the job a child process runs, its wall time and its peak resident memory."""

from __future__ import annotations

import re
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = [
    "CALLS_FILE",
    "DEFAULT_KEY",
    "FACT",
    "START",
    "TARGET_ENV",
    "Job",
    "Meter",
    "Timed",
    "fact_census",
    "lap",
    "proc_meminfo_kb",
]

START = date(2024, 3, 4)
CALLS_FILE = "Llamadas_sample.csv"
FACT = "fact_llamadas"
DEFAULT_KEY = -999  # the dimensions' default member, for a missing or unknown business id
TARGET_ENV = "CALLMART_BENCH_TARGET"  # the child's database URL: kept out of argv, where `ps` would show a password


@dataclass
class Job:
    """What a child process is asked to do."""

    phase: str
    database: str
    source: Path
    days: int

    @property
    def first(self) -> datetime:
        """Start of the loaded period."""
        return datetime.combine(START, datetime.min.time())

    @property
    def last(self) -> datetime:
        """End of the loaded period, exclusive."""
        return self.first + timedelta(days=self.days)


@dataclass
class Timed:
    """A phase's wall seconds, rows loaded, memory and details."""

    seconds: float
    rows: int = 0
    peak_rss_mb: float | None = None
    base_rss_mb: float | None = None
    peak_is_lifetime: bool = False
    details: dict[str, Any] = field(default_factory=dict)


def proc_status_mb(key: str) -> float | None:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in MB."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def lifetime_peak_mb() -> float:
    """Peak RSS of this process since it started, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Meter:
    """Wall time and peak resident memory of the code run inside it."""

    def __enter__(self) -> Meter:
        self.base_mb = proc_status_mb("VmRSS")
        self.reset = reset_peak_rss()
        self.began = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.began
        peak = proc_status_mb("VmHWM") if self.reset else None
        self.peak_mb = peak if peak is not None else lifetime_peak_mb()

    def result(self, rows: int, details: dict[str, Any]) -> Timed:
        """The measurement as a Timed."""
        return Timed(self.seconds, rows, self.peak_mb, self.base_mb, not self.reset, details)


@contextmanager
def lap(laps: dict[str, float], name: str) -> Iterator[None]:
    """Add the seconds spent inside to laps[name]."""
    began = time.perf_counter()
    try:
        yield
    finally:
        laps[name] = round(laps.get(name, 0.0) + time.perf_counter() - began, 3)


def proc_meminfo_kb(key: str) -> int:
    """A figure of /proc/meminfo in kB, 0 where unknown."""
    try:
        found = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    except OSError:
        return 0
    return int(found.group(1)) if found else 0


def fact_census(engine: sa.Engine, job: Job) -> dict[str, int]:
    """What a contender left in the period of fact_llamadas: rows, calls with a login after, unknown customers."""
    import sqlalchemy as sa

    fact = sa.table(FACT, *(sa.column(c) for c in ("fecha_llamada", "key_cliente_llamada", "key_login_post_llamada")))
    query = sa.select(
        sa.func.count(),
        sa.func.count(fact.c.key_login_post_llamada),
        sa.func.count().filter(fact.c.key_cliente_llamada == DEFAULT_KEY),
    ).where(fact.c.fecha_llamada >= job.first, fact.c.fecha_llamada < job.last)
    with engine.connect() as conn:
        rows, with_login, unknown = conn.execute(query).one()
    return {"rows": rows, "with_login_after": with_login, "default_customer": unknown}
