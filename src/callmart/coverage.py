"""When the extracts cover a period: a late or missing export makes the period wait, never load as an empty day.

A period [start, end) is covered when the fact's extract holds a row at or after `end` (the export has moved past
the period: whatever it lacks before that point, it lacks because there was nothing), or when every day of the
period has a file of its own (a name holding the day, as `Llamadas_20240305.csv` or `Llamadas_2024-03-05.csv`).
A day inside the covered range without rows, a Sunday, loads as an empty day."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .declare import Fact

__all__ = ["Coverage", "LatestTime", "dated_days"]

_DATED_NAME = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")


def dated_days(source_dir: Path, fact: Fact) -> frozenset[date]:
    """The days that have a file of their own among the fact's extracts."""
    days = set()
    for path in source_dir.glob(fact.source.pattern):
        for match in _DATED_NAME.finditer(path.stem):
            try:
                days.add(date(int(match[1]), int(match[2]), int(match[3])))
            except ValueError:
                continue
    return frozenset(days)


class LatestTime:
    """The latest time among the rows a load reads, noted in the thread that reads them."""

    def __init__(self, fact: Fact) -> None:
        self.column = fact.time_column
        self.value: datetime | None = None
        self._lock = threading.Lock()

    def note(self, batch: pa.RecordBatch) -> None:
        """Note the latest time of a batch the load reads."""
        latest = pc.max(batch.column(self.column)).as_py()
        if latest is not None:
            with self._lock:
                self.value = latest if self.value is None else max(self.value, latest)


@dataclass(frozen=True)
class Coverage:
    """What the extracts hold: the latest row's time, and the days with a file of their own."""

    latest: datetime | None
    dated: frozenset[date] = frozenset()

    def covers(self, start: datetime, end: datetime) -> bool:
        """Whether [start, end) is covered (see the module's docstring)."""
        if self.latest is not None and self.latest >= end:
            return True
        days = _days(start, end)
        return bool(days) and all(day in self.dated for day in days)

    def why_not(self, start: datetime, end: datetime) -> str:
        """Why [start, end) is not covered, in one line."""
        reached = "holds no dated row" if self.latest is None else f"reaches {self.latest:%Y-%m-%d %H:%M}"
        return f"waiting for the extract: it {reached}, not the period's end {end:%Y-%m-%d %H:%M}"


def _days(start: datetime, end: datetime) -> list[date]:
    days, day = [], start.date()
    while datetime.combine(day, datetime.min.time()) < end:
        days.append(day)
        day += timedelta(days=1)
    return days
