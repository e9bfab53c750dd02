"""The lift aggregates' declarations: the conversion of effective calls set against two baselines (calls that
reached the customer but were short, customers not called), by day, by day and campaign, by day and agent, with
the interval of each difference."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from .aggregates import AGENT, CAMPAIGN, GRAIN, Aggregate, Measure, Settings, aggregate_rows, aggregate_table
from .declare import FirstEventWithin
from .stats import newcombe, proportion

__all__ = [
    "AGG_LIFT_AGENT",
    "AGG_LIFT_CAMPAIGN",
    "AGG_LIFT_DAILY",
    "BASELINES",
    "COUNTS",
    "CUSTOMERS",
    "EFFECTIVE_CALLS",
    "LIFTS",
    "NOT_CALLED",
    "SHORT_CALLS",
    "TOO_FEW",
    "Baseline",
    "Share",
    "lift_rows",
    "lift_tables",
    "lift_values",
    "rebased",
    "short_call_metric",
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


def short_call_metric(metric: FirstEventWithin) -> FirstEventWithin:
    """The conversion metric for calls of any talk time: same events, window and matching of customers. The short
    calls' baseline keeps the calls under the metric's threshold."""
    return dataclasses.replace(metric, threshold=0)


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
