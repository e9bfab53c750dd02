"""The callmart DAG for Airflow 3: each run loads the days of its data interval, then anything else pending."""

# Put a one-line file in the DAGs folder: `from callmart.scheduling.airflow import dag`.
# The Airflow SDK is untyped wherever Airflow is not installed (callmart's own checks run without it).
# mypy: allow-untyped-decorators

from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from airflow.sdk import Connection, CronDataIntervalTimetable, get_current_context, task
from airflow.sdk import dag as airflow_dag
from airflow.sdk.exceptions import AirflowNotFoundException

from . import check, open_mart

__all__ = ["CONN_ID", "DAG_ID", "dag", "database_url", "interval_days"]

DAG_ID = "callmart_daily"
CONN_ID = "callmart_mart"
SCHEDULE = os.environ.get("CALLMART_AIRFLOW_SCHEDULE", "0 0 * * *")
TIMEZONE = os.environ.get("CALLMART_AIRFLOW_TIMEZONE", "UTC")
START_DATE = os.environ.get("CALLMART_AIRFLOW_START_DATE", "2000-01-01")
"""The first day the DAG may run for: early, so that any day of history can be replayed (a run for a day before
the start date ends `success` without running its task). Catch-up is off, so an early start runs nothing by itself."""


def database_url() -> str | None:
    """The URI of the Airflow connection `callmart_mart`; None (CALLMART_DATABASE_URL, then the default) without it."""
    try:
        connection = Connection.get(CONN_ID)
    except AirflowNotFoundException:
        return None
    return str(connection.get_uri())


def interval_days(start: datetime, end: datetime) -> tuple[date, date]:
    """The days [first, last) a data interval covers, in the schedule's time zone."""
    zone = ZoneInfo(TIMEZONE)
    first, last = start.astimezone(zone).date(), end.astimezone(zone).date()
    return first, max(last, first + timedelta(days=1))


@task(task_id="load", retries=2, retry_delay=timedelta(minutes=10))
def load() -> dict[str, Any]:
    """Queue the interval's days and any day missed since the last load, load them all, fail if a period failed."""
    context = get_current_context()
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    with open_mart(database_url()) as mart:
        mart.init()
        if start is None or end is None:
            # A run triggered without a logical date does what `callmart run --daily` does.
            mart.catch_up()
        else:
            first, last = interval_days(start, end)
            mart.catch_up(as_of=last)
            mart.enqueue(first, last, force=True)
        summary = check(mart.run())
    periods = [s for s in summary.steps if s.period is not None]
    return {
        "periods": [s.period[0].date().isoformat() for s in periods if s.period is not None],
        "rows_loaded": sum(s.inserted for s in periods),
    }


@airflow_dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable(SCHEDULE, timezone=TIMEZONE),
    start_date=datetime.combine(date.fromisoformat(START_DATE), datetime.min.time(), tzinfo=ZoneInfo(TIMEZONE)),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=1,
    tags=["callmart"],
    doc_md=__doc__,
)
def callmart_daily() -> None:
    """Load the call-center mart: dimensions first, then the data interval's days and any other pending period."""
    load()


dag = callmart_daily()
