"""What generic code tells the engines about a table, as keys of its `info`: each engine acts on those it can."""

from __future__ import annotations

__all__ = ["ANALYZED", "PARTITIONED_BY_DAY", "PRIMARY_KEY", "UNLOGGED"]

UNLOGGED = "unlogged"
"""Flag: scratch data, which an engine with a write-ahead log need not write to it."""

PARTITIONED_BY_DAY = "partitioned_by_day"
"""The timestamp column by whose day an engine with day partitions partitions the table."""

ANALYZED = "analyzed"
"""The columns whose statistics a load refreshes at once (joins, filters, groups), where the engine keeps them."""

PRIMARY_KEY = "primary_key"
"""The columns of a primary key that only engines with ENFORCED_FACT_KEYS enforce."""
