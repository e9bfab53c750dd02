"""What the command line prints: step progress as text or JSON lines, and plain text tables."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime
from functools import wraps
from typing import Any, TypeVar

import click

from ._errors import CallmartError, MartBusy
from .progress import StepResult

__all__ = [
    "DAY",
    "Id",
    "EXIT_BUSY",
    "EXIT_ERROR",
    "EXIT_FAILED_PERIODS",
    "EXIT_NOTHING_READY",
    "EXIT_OK",
    "handle_errors",
    "ConsoleReporter",
    "JsonReporter",
    "step_name",
    "table",
]


EXIT_OK, EXIT_FAILED_PERIODS, EXIT_ERROR, EXIT_BUSY, EXIT_NOTHING_READY = 0, 1, 2, 3, 4
F = TypeVar("F", bound=Callable[..., Any])


class Day(click.ParamType):  # type: ignore[type-arg]
    """A day typed as YYYY-MM-DD, told apart from a day that does not exist."""

    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        text = str(value).strip()
        try:
            return date.fromisoformat(text)
        except ValueError:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                self.fail(f"{text!r} is not a valid date (no such day)", param, ctx)
            self.fail(f"{text!r} is not a date: write it as YYYY-MM-DD", param, ctx)


DAY = Day()


def handle_errors(command: F) -> F:
    """Turn callmart's own errors into one red line and exit code 2 (3 when another process holds the mart);
    --debug shows the traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CallmartError as error:
            if click.get_current_context().find_root().params.get("debug"):
                raise
            click.echo(click.style("Error: ", fg="red", bold=True) + str(error), err=True)
            sys.exit(EXIT_BUSY if isinstance(error, MartBusy) else EXIT_ERROR)

    return wrapper  # type: ignore[return-value]


class ConsoleReporter:
    """Prints each step as it runs, with a live row count on a terminal, to standard error."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.rows: dict[str, int] = {}
        self.empty_days = 0

    def step_started(self, name: str) -> None:
        """Show the step's name."""
        self.rows[name] = 0
        if self.live:
            click.echo(f"  {name} …", err=True, nl=False)

    def rows_read(self, name: str, rows: int) -> None:
        """Show the rows read so far."""
        self.rows[name] = self.rows.get(name, 0) + rows
        if self.live:
            click.echo(f"\r  {name} … {self.rows[name]:,} rows read", err=True, nl=False)

    def step_finished(self, result: StepResult) -> None:
        """Show how the step ended; consecutive days that held no row as one line."""
        prefix = "\r\x1b[2K" if self.live else ""
        name = step_name(result)
        if result.period is not None and result.error is None and result.read == 0 and result.note is None:
            self.empty_days += 1
            if self.live:
                click.echo(f"{prefix}  {result.table}: {self.empty_days} empty day(s)", err=True, nl=False)
            return
        self._fold(result.table, prefix)
        if result.error:
            click.echo(f"{prefix}  {name}: {click.style('failed', fg='red')}: {result.error}", err=True)
        else:
            click.echo(
                f"{prefix}  {name}: {result.read:,} read, {result.loaded:,} loaded ({result.seconds:.1f}s)", err=True
            )

    def span_failed(self, name: str, error: str) -> None:
        """Say that a span's days load one at a time, and why."""
        prefix = "\r\x1b[2K" if self.live else ""
        warning = click.style("failed as one span", fg="yellow")
        click.echo(f"{prefix}  {name}: {warning}, loading its days one at a time: {error}", err=True)

    def _fold(self, table: str, prefix: str) -> None:
        if self.empty_days:
            click.echo(f"{prefix}  {table}: {self.empty_days} empty day(s)", err=True)
            self.empty_days = 0


def step_name(result: StepResult) -> str:
    if result.note:
        return f"{result.table} ({result.note})"
    if result.period is None:
        return result.table
    start, end = result.period
    return f"{result.table} [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M})"


class JsonReporter:
    """Prints one JSON object per event to standard error, for log collectors."""

    def step_started(self, name: str) -> None:
        """Log the start of a step."""
        self._emit({"event": "step_started", "step": name})

    def rows_read(self, name: str, rows: int) -> None:
        """Progress is not logged: one line per step is what collectors want."""

    def step_finished(self, result: StepResult) -> None:
        """Log a step's counts and outcome."""
        start, end = result.period or (None, None)
        self._emit(
            {
                "event": "step_finished",
                "table": result.table,
                "period_start": start.isoformat() if start else None,
                "period_end": end.isoformat() if end else None,
                "note": result.note,
                "read": result.read,
                "loaded": result.loaded,
                "rejected": result.rejected,
                "warned": result.warned,
                "inserted": result.inserted,
                "updated": result.updated,
                "inferred": result.inferred,
                "seconds": round(result.seconds, 3),
                "status": result.status,
                "error": result.error,
            }
        )

    def span_failed(self, name: str, error: str) -> None:
        """Log that a span's days load one at a time, and why."""
        self._emit({"event": "span_failed", "step": name, "error": error})

    def _emit(self, record: dict[str, object]) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "logger": "callmart", **record}
        click.echo(json.dumps(record, ensure_ascii=False), err=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table: text left-aligned, numbers right-aligned."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)]).rstrip()


class Id(int):
    """A number to be typed back (a run id, a line number): shown without thousands separators."""

    @classmethod
    def of(cls, value: object) -> object:
        """The value as an Id, if it is a number."""
        return cls(value) if isinstance(value, int) else value


def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Id):
        return str(int(value))
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}" if value.second == 0 else f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
