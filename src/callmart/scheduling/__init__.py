"""What the scheduler adapters share: settings from the environment, one log line per step, failing on failures."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .._errors import CallmartError
from ..api import Callmart, RunSummary
from ..console import step_name
from ..progress import StepResult

__all__ = ["LogReporter", "PeriodsFailed", "check", "open_mart"]

log = logging.getLogger("callmart")


class PeriodsFailed(CallmartError):
    """Some periods of a scheduled run did not load; the others did."""


class LogReporter:
    """Reports each step as one log line, for schedulers that collect logging output."""

    def step_started(self, name: str) -> None:
        """Log the start of a step."""
        log.info("%s: started", name)

    def rows_read(self, name: str, rows: int) -> None:
        """Progress is not logged: one line per step is enough."""

    def step_finished(self, result: StepResult) -> None:
        """Log a step's counts and outcome."""
        level = logging.INFO if result.error is None else logging.ERROR
        log.log(
            level,
            "%s: %s, %d read, %d loaded, %d rejected, %d inserted, %d updated, %.1f s%s",
            step_name(result),
            result.status,
            result.read,
            result.loaded,
            result.rejected,
            result.inserted,
            result.updated,
            result.seconds,
            f": {result.error}" if result.error else "",
        )


def open_mart(database_url: str | None = None) -> Callmart:
    """The mart named by `database_url` or CALLMART_DATABASE_URL, fed from CALLMART_SOURCE_DIR, logging its steps."""
    source = os.environ.get("CALLMART_SOURCE_DIR") or None
    return Callmart(database_url, Path(source) if source else None, reporter=LogReporter())


def check(summary: RunSummary) -> RunSummary:
    """The summary of a run where every period loaded; otherwise PeriodsFailed, so the scheduler records a failure."""
    if summary.ok:
        return summary
    failed = "; ".join(f"{step_name(s)}: {s.error}" for s in summary.failed)
    raise PeriodsFailed(f"{len(summary.failed)} step(s) failed (the others loaded): {failed}")
