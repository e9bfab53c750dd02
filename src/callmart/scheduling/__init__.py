"""What the scheduler adapters share: settings from the environment, one log line per step, failing on failures."""

from __future__ import annotations

import logging
from pathlib import Path

from .._errors import CallmartError, ConfigError
from ..api import Callmart, RunSummary
from ..config import check_settings, setting
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

    def span_failed(self, name: str, error: str) -> None:
        """Log, as a warning, that a span's days load one at a time, and why."""
        log.warning("%s: failed as one span, loading its days one at a time: %s", name, error)


def open_mart(database_url: str | None = None) -> Callmart:
    """The mart named by `database_url` or CALLMART_DATABASE_URL, fed from CALLMART_SOURCE_DIR, logging its steps.

    A scheduled run never falls back to a default: without a mart and a folder of extracts it refuses to start,
    naming the setting (a secret or variable the scheduler left unset arrives empty, or not at all)."""
    check_settings()
    url = database_url or setting("CALLMART_DATABASE_URL")
    if not url:
        raise ConfigError("no mart to load: set CALLMART_DATABASE_URL (or the scheduler's connection for callmart)")
    source = setting("CALLMART_SOURCE_DIR")
    if not source:
        raise ConfigError("no extracts to load: set CALLMART_SOURCE_DIR to the folder the exports arrive in")
    return Callmart(url, Path(source), reporter=LogReporter())


def check(summary: RunSummary) -> RunSummary:
    """The summary of a run where every period loaded; otherwise PeriodsFailed, so the scheduler records a failure."""
    if summary.ok:
        return summary
    failed = "; ".join(f"{step_name(s)}: {s.error}" for s in summary.failed)
    raise PeriodsFailed(f"{len(summary.failed)} step(s) failed (the others loaded): {failed}")
