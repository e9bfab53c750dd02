"""How a period, a run or a run step stands, as the control table and the run log store it."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["PERIOD_STATUSES", "RUN_STATUSES", "Status", "queued_again"]


class Status(StrEnum):
    """A status; each value is the text stored in the database, so it is what SQL and JSON see."""

    PENDING = "pendiente"
    """A period queued to load (dm_processes)."""
    WAITING = "esperando"
    """A period its extracts do not cover yet (a late export): each run tries it again (dm_processes, dm_run_steps)."""
    RUNNING = "corriendo"
    """A period being loaded, or a run under way (dm_processes, dm_runs)."""
    DONE = "exitoso"
    """A period loaded, a run or a step that ended well (dm_processes, dm_runs, dm_run_steps)."""
    FAILED = "fallido"
    """A period, a run or a step that did not load (dm_processes, dm_runs, dm_run_steps)."""
    INTERRUPTED = "interrumpido"
    """A run stopped by a signal: its period under way was queued again (dm_runs)."""
    ABANDONED = "abandonado"
    """A run that stopped without a word (killed, its machine lost): when it ended is not known (dm_runs)."""


PERIOD_STATUSES = (Status.PENDING, Status.WAITING, Status.RUNNING, Status.DONE, Status.FAILED)
"""The statuses of dm_processes."""

RUN_STATUSES = (Status.RUNNING, Status.DONE, Status.FAILED, Status.INTERRUPTED, Status.ABANDONED)
"""The statuses of dm_runs."""


def queued_again(status: str, force: bool) -> bool:
    """Whether queueing a period that the control table already holds with `status` makes it pending again: a
    failed one always, any other but a running one when forced; the rest are skipped."""
    return status == Status.FAILED or (force and status != Status.RUNNING)
