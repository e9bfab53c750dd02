"""What each load step reports: its counts as it ends, and progress while it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import pyarrow as pa

from .status import Status

__all__ = ["Reporter", "SilentReporter", "StepResult"]


@dataclass
class StepResult:
    """Counts of one dimension load or one fact period load; read = loaded + rejected when it balances."""

    table: str
    period: tuple[datetime, datetime] | None = None
    note: str | None = None
    read: int = 0
    loaded: int = 0
    rejected: int = 0
    warned: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    inferred: int = 0
    completed: int = 0
    metric_updated: int = 0
    seconds: float = 0.0
    status: Status = Status.DONE
    error: str | None = None
    source_latest: datetime | None = None
    """The latest time among the rows the step read from the extract (a fact period's load reads all of it)."""
    rejects: pa.Table | None = field(default=None, repr=False)
    unplaced: pa.Table | None = field(default=None, repr=False)

    def run_step(self, id_run: int, step: int) -> dict[str, object]:
        """The step's row of the run log (dm_run_steps)."""
        start, end = self.period or (None, None)
        return {
            "id_run": id_run,
            "step": step,
            "table_name": self.table,
            "period_start": start,
            "period_end": end,
            "rows_read": self.read,
            "rows_loaded": self.loaded,
            "rows_rejected": self.rejected,
            "rows_warned": self.warned,
            "rows_inserted": self.inserted,
            "rows_updated": self.updated,
            "inferred_members": self.inferred,
            "seconds": round(self.seconds, 3),
            "status": self.status.value,
            "error_message": self.error,
        }

    @property
    def balanced(self) -> bool:
        """Whether every row read was either loaded or rejected."""
        return self.read == self.loaded + self.rejected


class Reporter(Protocol):
    """Receives progress events; the CLI prints them, a scheduler may log them."""

    def step_started(self, name: str) -> None:
        """A step begins."""

    def rows_read(self, name: str, rows: int) -> None:
        """More source rows of the running step were read."""

    def step_finished(self, result: StepResult) -> None:
        """A step ended, well or badly."""

    def span_failed(self, name: str, error: str) -> None:
        """A span of periods failed as one load: nothing of it was written, and its periods now load one at a time."""


class SilentReporter:
    """A reporter that reports nothing, for library use and tests."""

    def step_started(self, name: str) -> None:
        """Ignore."""

    def rows_read(self, name: str, rows: int) -> None:
        """Ignore."""

    def step_finished(self, result: StepResult) -> None:
        """Ignore."""

    def span_failed(self, name: str, error: str) -> None:
        """Ignore."""
