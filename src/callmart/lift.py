"""The lift aggregates' declarations: the conversion of effective calls set against two baselines (calls that
reached the customer but were short, customers not called), by day, by day and campaign, by day and agent, with
the interval of each difference; and how every engine makes the tables' rows from the counts it made."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from .aggregates import (
    AGENT,
    CAMPAIGN,
    GRAIN,
    Aggregate,
    Measure,
    Settings,
    aggregate_rows,
    aggregate_table,
    day_ranges,
)
from .stats import newcombe, proportion

__all__ = [
    "AGG_LIFT_AGENT",
    "AGG_LIFT_CAMPAIGN",
    "AGG_LIFT_DAILY",
    "BASELINES",
    "COUNTED",
    "COUNTS",
    "CUSTOMERS",
    "EFFECTIVE_CALLS",
    "FINEST_GRAIN",
    "LIFTS",
    "NOT_CALLED",
    "SHORT_CALLS",
    "TOO_FEW",
    "affected_days",
    "Baseline",
    "days_spanned",
    "groups_table",
    "lift_rebased_days",
    "lift_rows",
    "lift_rows_of",
    "lift_tables",
    "lift_values",
    "rebased",
    "Share",
]

AGG_LIFT_DAILY = "agg_lift_diaria"
AGG_LIFT_CAMPAIGN = "agg_lift_campania_diaria"
AGG_LIFT_AGENT = "agg_lift_agente_diaria"

TOO_FEW = 30
"""Fewer effective calls than this, or fewer calls (or customers) in the baseline: a group too small to tell."""


@dataclass(frozen=True)
class Share:
    """A proportion's columns: how many were counted, how many of them converted, and the rate."""

    counted: str
    converted: str
    rate: str
    counted_doc: str
    converted_doc: str


@dataclass(frozen=True)
class Baseline:
    """Who had no effective call, set against the effective calls: `of_day` when it is the day's (customers have no
    campaign or agent) rather than each group's own."""

    name: str
    share: Share
    of_day: bool
    label: str

    @property
    def lift(self) -> str:
        """Column of the difference: the effective calls' rate minus the baseline's."""
        return f"lift_vs_{self.name}"

    @property
    def low(self) -> str:
        """Column of the interval's lower bound."""
        return f"{self.lift}_ic_inf"

    @property
    def high(self) -> str:
        """Column of the interval's upper bound."""
        return f"{self.lift}_ic_sup"


EFFECTIVE_CALLS = Share(
    "llamadas_efectivas",
    "conversiones_efectivas",
    "tasa_efectiva",
    "calls to a known customer (not the default member) with talk time >= the threshold; unlike "
    "agg_conversion_diaria.contactos_efectivos, calls to non-customers are left out",
    "effective calls followed by the customer's login within the window (fact_llamadas.key_login_post_llamada set)",
)
SHORT_CALLS = Baseline(
    "cortas",
    Share(
        "llamadas_cortas",
        "conversiones_cortas",
        "tasa_cortas",
        "calls to a known customer with talk time above 0 and under the threshold: reached, no real conversation",
        "short calls followed by a login of the customer at or after the call and within the window (the metric's "
        "rule without its threshold)",
    ),
    of_day=False,
    label="calls reached but short",
)
NOT_CALLED = Baseline(
    "sin_llamada",
    Share(
        "clientes_sin_llamada",
        "conversiones_sin_llamada",
        "tasa_sin_llamada",
        "customers (of clientes) with no call in the window before the day's midnight; the day's figure, the same on "
        "each row of a day",
        "customers not called with a login from the day's midnight to the window after it; the day's figure",
    ),
    of_day=True,
    label="customers not called",
)
BASELINES = (SHORT_CALLS, NOT_CALLED)
CUSTOMERS = "clientes"
"""Column of the customers the day's not called are counted among (`rebased` brings it to the present number)."""
COUNTS = tuple(name for s in (EFFECTIVE_CALLS, *(b.share for b in BASELINES)) for name in (s.counted, s.converted))
"""The counts every lift row is computed from."""


def _picked(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda row: row[name]


Columns = list[tuple[str, Callable[[], sa.types.TypeEngine[Any]], str]]
"""Columns by name, type and meaning."""


def _share_columns(share: Share, whose: str) -> Columns:
    rate = f"{share.converted} / {share.counted}: conversion rate of {whose} (NULL without)"
    return [
        (share.counted, sa.BigInteger, share.counted_doc),
        (share.converted, sa.BigInteger, share.converted_doc),
        (share.rate, sa.Double, rate),
    ]


def _lift_columns(b: Baseline) -> Columns:
    interval = (
        f"95 % interval of {b.lift} (Newcombe's hybrid score method, from the two rates' Wilson intervals; NULL when "
        "either side has none)"
    )
    lift = (
        f"{EFFECTIVE_CALLS.rate} - {b.share.rate}: conversion of effective calls over that of {b.label} (NULL when "
        "either side has none); an observed difference, not the effect of a call"
    )
    return [
        (b.lift, sa.Double, lift),
        (b.low, sa.Double, f"lower bound of the {interval}"),
        (b.high, sa.Double, f"upper bound of the {interval}"),
    ]


def _measures() -> tuple[Measure, ...]:
    """The lift tables' columns after their grain and settings, each read from a row's values by name."""
    customers = (
        "customers of the mart (members of dim_clientes but the default member, each business id once), as many as "
        "it holds now: each refresh brings every day to the present number; the day's figure"
    )
    columns = [
        *_share_columns(EFFECTIVE_CALLS, "effective calls"),
        *_share_columns(SHORT_CALLS.share, SHORT_CALLS.label),
        (CUSTOMERS, sa.BigInteger, customers),
        *_share_columns(NOT_CALLED.share, NOT_CALLED.label),
        *(column for b in BASELINES for column in _lift_columns(b)),
    ]
    return tuple(Measure(name, type_, doc, (), _picked(name)) for name, type_, doc in columns)


MEASURES = _measures()
_DAY, _CAMPAIGN, _AGENT = (next(g for g in GRAIN if g.name == name) for name in ("dia", CAMPAIGN, AGENT))
_ROLL_UP = "To roll up (a week, a campaign over days), add the counts and compute rates and intervals again."
_OBSERVED = (
    "An observational comparison, not the effect of calls: who is called, and who talks, is not random. Filter on "
    "umbral_segundos and ventana_segundos."
)
LIFTS = (
    Aggregate(
        AGG_LIFT_DAILY,
        (_DAY,),
        MEASURES,
        False,
        "Per day with calls: the conversion of effective calls against two baselines, calls that reached the "
        f"customer but were short and customers not called, their differences (lift) and 95 % intervals. {_OBSERVED} "
        f"{_ROLL_UP}",
    ),
    Aggregate(
        AGG_LIFT_CAMPAIGN,
        (_DAY, _CAMPAIGN),
        MEASURES,
        False,
        "Per day and campaign with calls: as agg_lift_diaria, the effective and short calls the campaign's, the "
        f"customers not called the day's (never add them across the campaigns of a day). {_OBSERVED} {_ROLL_UP}",
    ),
    Aggregate(
        AGG_LIFT_AGENT,
        (_DAY, _AGENT),
        MEASURES,
        False,
        "Per day and agent with calls: as agg_lift_diaria, the effective and short calls the agent's, the customers "
        f"not called the day's (never add them across the agents of a day). {_OBSERVED} {_ROLL_UP}",
    ),
)


def lift_tables(metadata: sa.MetaData) -> list[sa.Table]:
    """The lift tables, declared on metadata (the mart's schema adds them to its own)."""
    return [aggregate_table(metadata, aggregate) for aggregate in LIFTS]


def _value(number: float) -> float | None:
    return None if np.isnan(number) else float(number)


def lift_values(groups: Sequence[Mapping[Any, Any]]) -> list[dict[str, Any]]:
    """Each group with its rates, lifts and intervals, computed from its COUNTS (a missing count is 0)."""
    counts = {name: np.array([int(group.get(name) or 0) for group in groups], dtype=np.int64) for name in COUNTS}
    effective = EFFECTIVE_CALLS
    computed: dict[str, np.ndarray] = {
        share.rate: proportion(counts[share.converted], counts[share.counted])
        for share in (effective, *(b.share for b in BASELINES))
    }
    for b in BASELINES:
        lift = newcombe(
            counts[effective.converted], counts[effective.counted], counts[b.share.converted], counts[b.share.counted]
        )
        computed.update({b.lift: lift.estimate, b.low: lift.low, b.high: lift.high})
    return [
        {
            **group,
            **{name: int(values[i]) for name, values in counts.items()},
            **{name: _value(values[i]) for name, values in computed.items()},
        }
        for i, group in enumerate(groups)
    ]


def rebased(groups: Sequence[Mapping[Any, Any]], customers: int) -> list[dict[str, Any]]:
    """Groups counted among another number of customers, counted among `customers`: a customer new to the mart had
    no call and no login on a day the refresh does not count again, so the customers not called grow by as many
    and their conversions stay."""
    counted = NOT_CALLED.share.counted
    return [
        {**group, CUSTOMERS: customers, counted: int(group[counted]) + customers - int(group[CUSTOMERS])}
        for group in groups
    ]


def lift_rows(
    aggregate: Aggregate, settings: Settings, groups: Sequence[Mapping[Any, Any]], at: datetime
) -> list[dict[str, Any]]:
    """The lift table's rows of groups given by their grain and COUNTS."""
    return aggregate_rows(aggregate, settings, lift_values(groups), at)


FINEST_GRAIN = ("dia", CAMPAIGN, AGENT)
"""The finest grain counted in the database; the lift tables' grains are summed from it."""
_CALL_COUNTS = (EFFECTIVE_CALLS, SHORT_CALLS.share)
COUNTED = (*FINEST_GRAIN, *(name for s in _CALL_COUNTS for name in (s.counted, s.converted)))
"""What the database counts per day, campaign and agent."""
_OF_DAY = (CUSTOMERS, NOT_CALLED.share.counted, NOT_CALLED.share.converted)
"""The day's counts, the same on each of its rows."""


def affected_days(start: datetime, end: datetime, window: timedelta) -> list[date]:
    """The days whose lift calls of [start, end) count in: their own days (effective and short calls), and the days
    whose midnight falls within the window after one of them (customers not called)."""
    last = end - timedelta(microseconds=1) + window
    return [start.date() + timedelta(days=n) for n in range((last.date() - start.date()).days + 1)]


def days_spanned(window: timedelta) -> int:
    """The most midnights a window can hold: its length in days, rounded up."""
    return -(-window // timedelta(days=1))


def groups_table(
    counted: Sequence[Mapping[Any, Any]], present: int, per_day: Mapping[date, tuple[int, int]]
) -> pa.Table:
    """The finest grain's rows as the lift tables are summed from: the calls counted per day, campaign and agent
    (COUNTED's columns), each with its day's customers among the `present` ones, not called and converted
    (`per_day`: the customers called in the window before the day's midnight, and the conversions of those not
    called; a day missing from it has none)."""
    columns: dict[str, list[Any]] = {name: [row[name] for row in counted] for name in COUNTED}
    days = [per_day.get(row["dia"], (0, 0)) for row in counted]
    columns[CUSTOMERS] = [present] * len(counted)
    columns[NOT_CALLED.share.counted] = [present - called for called, _ in days]
    columns[NOT_CALLED.share.converted] = [converted for _, converted in days]
    return _table(columns, len(counted))


def _table(columns: dict[str, list[Any]], rows: int) -> pa.Table:
    """The counts as an Arrow table of the finest grain (no rows when `columns` is empty)."""
    types = {"dia": pa.date32(), CAMPAIGN: pa.string(), AGENT: pa.int32()}
    return pa.table(
        {n: pa.array(columns.get(n, [None] * rows), types.get(n, pa.int64())) for n in (*COUNTED, *_OF_DAY)}
    )


def _summed(groups: pa.Table, grain: Iterable[str]) -> list[dict[str, Any]]:
    """The groups' counts summed to a coarser grain; the day's customers not called stay the day's."""
    keys = list(grain)
    summed = [(n, "sum") for s in _CALL_COUNTS for n in (s.counted, s.converted)]
    # The day's figure is on each of its rows: any of them is it.
    kept = [(n, "max") for n in _OF_DAY]
    table = groups.group_by(keys, use_threads=False).aggregate([*summed, *kept])
    rows: list[dict[str, Any]] = table.rename_columns(
        [n.removesuffix("_sum").removesuffix("_max") for n in table.column_names]
    ).to_pylist()
    return rows


def lift_rows_of(groups: pa.Table, settings: Settings, at: datetime) -> list[list[dict[str, Any]]]:
    """The rows of each lift table, in LIFTS order, from the finest grain's counts (groups_table)."""
    return [
        lift_rows(aggregate, settings, _summed(groups, (g.name for g in aggregate.grain)), at) for aggregate in LIFTS
    ]


def lift_rebased_days(
    name: str, settings: Settings, stale: Sequence[Mapping[Any, Any]], present: int, at: datetime
) -> list[tuple[date, date, list[dict[str, Any]]]]:
    """The stored rows of the lift table `name` counted among another number of customers, counted again among
    `present`, as (first day, day after the last, rows) for each run of consecutive days."""
    aggregate = next(a for a in LIFTS if a.name == name)
    rows = rebased(stale, present)
    found = []
    for start, end in day_ranges(row["dia"] for row in rows):
        of_days = [row for row in rows if start <= row["dia"] < end]
        found.append((start, end, lift_rows(aggregate, settings, of_days, at)))
    return found
