"""Stopping a run when asked: the database's current statement is cut short, the run ends at its next batch or
step, and the period it was loading rolls back and is queued again.

Schedulers stop a job with SIGTERM (a timeout, a cancel); a person with Ctrl-C. `on_signals` turns both into a
stop request, for the program's entry point only: signal handlers belong to the whole process."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["RunStopped", "StopRequest", "on_signals", "reason_of"]


class RunStopped(BaseException):
    """The run was asked to stop. A BaseException, as KeyboardInterrupt is: the handlers that fail one period and
    go on with the next must let it through."""

    def __init__(self, reason: str, signal_number: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.signal_number = signal_number


def reason_of(stopped: RunStopped | KeyboardInterrupt) -> str:
    """Why a run stopped, as the run log and the control table say it."""
    return stopped.reason if isinstance(stopped, RunStopped) else "stopped by SIGINT"


class StopRequest:
    """A request to stop, and the ways to cut short what the database is doing for the run."""

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._lock = threading.Lock()
        self._cancels: list[Callable[[], None]] = []
        self.reason = ""
        self.signal_number: int | None = None

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self._requested.is_set()

    def request(self, reason: str, signal_number: int | None = None) -> None:
        """Ask the run to stop, and cut short the statements under way (from a thread of its own: this may be
        called from a signal handler, in the middle of the very driver call it cancels)."""
        if self.requested:
            return
        self.reason, self.signal_number = reason, signal_number
        self._requested.set()
        threading.Thread(target=self._cancel_all, name="callmart-stop", daemon=True).start()

    def check(self) -> None:
        """Raise RunStopped if a stop was asked for."""
        if self.requested:
            raise RunStopped(self.reason, self.signal_number)

    @contextmanager
    def cancelling(self, cancel: Callable[[], None]) -> Iterator[None]:
        """Within the block, a stop request calls `cancel` (it cuts short one connection's statement)."""
        with self._lock:
            self._cancels.append(cancel)
        try:
            if self.requested:
                cancel()
            yield
        finally:
            with self._lock:
                self._cancels.remove(cancel)

    def _cancel_all(self) -> None:
        with self._lock:
            cancels = list(self._cancels)
        for cancel in cancels:
            # A connection already closed has nothing left to cancel.
            with contextlib.suppress(Exception):
                cancel()


@contextmanager
def on_signals(
    stop: StopRequest, signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM ask `stop` to stop; a second one ends the process at once."""
    previous = {number: signal.getsignal(number) for number in signals}

    def handle(number: int, frame: FrameType | None) -> None:
        if stop.requested:
            signal.signal(number, signal.SIG_DFL)
            signal.raise_signal(number)
        stop.request(f"stopped by {signal.Signals(number).name}", number)

    for number in signals:
        signal.signal(number, handle)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
