"""Azure Functions app (Python v2 model): a timer loads the callmart mart every day and catches up missed days."""

from __future__ import annotations

import logging
from datetime import date

import azure.functions as func

from callmart.scheduling import check, open_mart

app = func.FunctionApp()
log = logging.getLogger("callmart")


def today() -> date:
    """The day taken as today: the run loads every day the mart still owes before it."""
    return date.today()


@app.timer_trigger(schedule="%CALLMART_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
@app.retry(strategy="fixed_delay", max_retry_count="2", delay_interval="00:10:00")
def callmart_daily(timer: func.TimerRequest) -> None:
    """Queue yesterday, or every day missed since the last loaded period, then load; raise if a period failed."""
    if timer.past_due:
        log.warning("the timer is past due: catching up every day since the last loaded period")
    with open_mart() as mart:
        mart.init()
        counts = mart.catch_up(as_of=today())
        log.info("%d period(s) queued", counts["added"] + counts["requeued"])
        summary = check(mart.run())
    loaded = [s for s in summary.steps if s.period is not None]
    log.info("%d period(s) loaded, %d rows", len(loaded), sum(s.inserted for s in loaded))
