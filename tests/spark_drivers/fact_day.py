"""A driver of its own for the Spark tests that need one (another master, a process to kill): it opens the
session of the URL given, runs the steps given as JSON, and prints one JSON line per step.

    python fact_day.py URL '[["create"], ["replace", "2024-03-05", 0, 40, 4], ["read", "2024-03-05"]]'

Steps: create (the fact table), replace DAY FIRST COUNT PARTITIONS (the day's rows become keys FIRST.. of
rows_of_day, built on the executors), replace_slowly DAY FIRST COUNT (the same, each row taking 50 ms: prints
that it started, then writes), read DAY (the day's rows, and the table's version; any step whose name starts
with read, so that a run can read twice)."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timedelta
from typing import Any

from callmart import dictionary
from callmart.engines.spark import Spark
from callmart.engines.spark.replace import wall_clock
from callmart.engines.spark.sql import qualified
from callmart.engines.spark.tables import day_column
from callmart.mart import MART
from callmart.schema import Schema

ENGINE = Spark()
FACT = MART.facts[0]
SLOW_ROW = 0.05
"""Seconds each row of a slow replace takes."""


def rows_of_day(spark: Any, day: datetime, first: int, count: int, partitions: int, slow: bool = False) -> Any:
    """Fact rows computed by the executors: key k at k seconds (mod a day) past midnight, client k % 100, agent
    k % 7; campania_llamada names the executor's JVM and that JVM's parent process, as 'pid:parent'."""
    from pyspark.sql import functions as F

    key = F.col("id") + F.lit(first)
    client = F.udf(_slowly if slow else _at_once, "int", useArrow=False)((key % 100).cast("int"))
    return spark.range(0, count, numPartitions=partitions).select(
        key.alias(FACT.key),
        F.timestamp_add("SECOND", key % 86400, wall_clock(day)).alias(FACT.time_column),
        F.udf(_executor_jvm, "string", useArrow=False)(key).alias("campania_llamada"),
        client.alias("key_cliente_llamada"),
        (key % 7).cast("int").alias("key_agente_llamada"),
    )


def _at_once(value: int) -> int:
    return value


def _slowly(value: int) -> int:
    time.sleep(SLOW_ROW)
    return value


def _executor_jvm(_: int) -> str:
    """'pid:parent' of the Java process running this Python worker (its nearest java ancestor)."""
    pid = os.getpid()
    while pid > 1:
        name, parent = _process(pid)
        if name == "java":
            return f"{pid}:{parent}"
        pid = parent
    return "none"


def _process(pid: int) -> tuple[str, int]:
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    return text[text.index("(") + 1 : text.rindex(")")], int(text[text.rindex(")") + 2 :].split()[1])


def main(url_text: str, steps: list[list[Any]]) -> None:
    url = ENGINE.parse(url_text)
    spark = ENGINE.open_session(url)
    schema = Schema(MART)
    dictionary.annotate(schema)
    table = schema[FACT.name]
    name = qualified(url.catalog, url.database, FACT.name)
    for step, *args in steps:
        if step == "create":
            said: Any = ENGINE.create_tables(spark, [table], url).created
        elif step in ("replace", "replace_slowly"):
            day = datetime.fromisoformat(args[0])
            slow = step == "replace_slowly"
            rows = rows_of_day(spark, day, args[1], args[2], args[3] if not slow else 2, slow)
            if slow:
                _say(step, "started")
            ENGINE.replace_period(rows, table, url, day, day + timedelta(days=1))
            said = "done"
        elif step.startswith("read"):
            said = _read(spark, name, str(day_column(table)), datetime.fromisoformat(args[0]))
        else:
            raise SystemExit(f"unknown step {step}")
        _say(step, said)
    spark.stop()


def _read(spark: Any, name: str, day_of: str, day: datetime) -> dict[str, Any]:
    from pyspark.sql import functions as F

    version = spark.sql(f"DESCRIBE HISTORY {name} LIMIT 1").first()["version"]
    columns = [FACT.key, FACT.time_column, "key_cliente_llamada", "key_agente_llamada", "campania_llamada"]
    found = spark.table(name).filter(F.col(day_of) == F.lit(day.date())).select(*columns)
    rows = [[r[0], r[1].isoformat(sep=" "), r[2], r[3], r[4]] for r in found.orderBy(FACT.key).collect()]
    return {"version": version, "rows": rows}


def _say(step: str, said: Any) -> None:
    print(json.dumps({"step": step, "said": said}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
