"""Intervals of proportions: Wilson's score interval of one, Newcombe's hybrid score interval of a difference of two."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["Z95", "Difference", "Interval", "newcombe", "proportion", "wilson"]

Z95 = 1.959963984540054
"""The standard normal quantile of 0.975: two-sided 95 % intervals."""


class Interval(NamedTuple):
    """Lower and upper bounds, one per proportion; NaN where a proportion has no trials."""

    low: np.ndarray
    high: np.ndarray


class Difference(NamedTuple):
    """Differences p1 - p2 and their interval's bounds; NaN where either side has no trials."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _counts(values: Any) -> np.ndarray:
    """Counts (any array-like: a list, a NumPy or Arrow array) as floats."""
    return np.asarray(values, dtype=np.float64)


def proportion(successes: Any, trials: Any) -> np.ndarray:
    """successes / trials, NaN where there are no trials."""
    x, n = _counts(successes), _counts(trials)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, x / np.where(n > 0, n, 1.0), np.nan)


def wilson(successes: Any, trials: Any, z: float = Z95) -> Interval:
    """Wilson's score interval of each proportion successes / trials (without continuity correction)."""
    x, n = _counts(successes), _counts(trials)
    given = n > 0
    safe = np.where(given, n, 1.0)
    z2 = z * z
    centre = (x + z2 / 2) / (safe + z2)
    spread = z / (safe + z2) * np.sqrt(np.maximum(x * (safe - x) / safe, 0.0) + z2 / 4)
    # With no success the lower bound is 0, with all successes the upper bound is 1, exactly: rounding must not move
    # them a hair, nor put another bound beyond [0, 1].
    low = np.where(given, np.where(x <= 0, 0.0, np.clip(centre - spread, 0.0, 1.0)), np.nan)
    high = np.where(given, np.where(x >= n, 1.0, np.clip(centre + spread, 0.0, 1.0)), np.nan)
    return Interval(low, high)


def newcombe(successes1: Any, trials1: Any, successes2: Any, trials2: Any, z: float = Z95) -> Difference:
    """The difference of two independent proportions p1 - p2 and its interval by Newcombe's hybrid score method
    (method 10 of Newcombe, Statistics in Medicine 1998): each bound adds the distances of the two Wilson
    intervals' bounds from their proportions in quadrature."""
    p1, p2 = proportion(successes1, trials1), proportion(successes2, trials2)
    one, two = wilson(successes1, trials1, z), wilson(successes2, trials2, z)
    estimate = p1 - p2
    low = estimate - np.sqrt((p1 - one.low) ** 2 + (two.high - p2) ** 2)
    high = estimate + np.sqrt((one.high - p1) ** 2 + (p2 - two.low) ** 2)
    return Difference(estimate, np.clip(low, -1.0, 1.0), np.clip(high, -1.0, 1.0))
