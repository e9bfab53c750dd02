"""What each load step reports: its counts as it ends, and progress while it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import pyarrow as pa

__all__ = ["Reporter", "SilentReporter", "StepResult"]


@dataclass
class StepResult:
    """Counts of one dimension load or one fact period load."""

    table: str
    period: tuple[datetime, datetime] | None = None
    read: int = 0
    staged: int = 0
    rejected: int = 0
    unplaced: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    inferred: int = 0
    completed: int = 0
    duplicates: int = 0
    metric_updated: int = 0
    seconds: float = 0.0
    status: str = "exitoso"
    error: str | None = None
    rejects: pa.Table | None = field(default=None, repr=False)

    @property
    def loaded(self) -> int:
        """Rows written to the target table."""
        return self.inserted + self.updated


class Reporter(Protocol):
    """Receives progress events; the CLI prints them, a scheduler may log them."""

    def step_started(self, name: str) -> None:
        """A step begins."""

    def rows_read(self, name: str, rows: int) -> None:
        """More source rows of the running step were read."""

    def step_finished(self, result: StepResult) -> None:
        """A step ended, well or badly."""


class SilentReporter:
    """A reporter that reports nothing, for library use and tests."""

    def step_started(self, name: str) -> None:
        """Ignore."""

    def rows_read(self, name: str, rows: int) -> None:
        """Ignore."""

    def step_finished(self, result: StepResult) -> None:
        """Ignore."""
