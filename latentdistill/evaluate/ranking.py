"""Rank statistics for comparing two orderings of the same candidates (``rank-nets``): Spearman's rho on
average ranks and Kendall's tau-b, written out by hand (no scipy) and tested against hand-computed values.

Both return ``None`` where the statistic is undefined: fewer than two candidates, or one side constant
(every candidate tied), since then no ordering exists to agree with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ascending; tied values share the mean of the ranks they span (``[10, 20, 20, 30]`` ->
    ``[1, 2.5, 2.5, 4]``)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _check(a: Sequence[float], b: Sequence[float]) -> None:
    if len(a) != len(b):
        raise ValueError(f"rank statistics compare two lists of one length, got {len(a)} and {len(b)}")


def pearson(a: Sequence[float], b: Sequence[float]) -> float | None:
    _check(a, b)
    if len(a) < 2:
        return None
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    da, db = [x - mean_a for x in a], [y - mean_b for y in b]
    norm = math.sqrt(sum(x * x for x in da) * sum(y * y for y in db))
    return None if norm == 0 else sum(x * y for x, y in zip(da, db)) / norm


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho: the Pearson correlation of the average ranks (ties share their mean rank)."""
    _check(a, b)
    return pearson(average_ranks(a), average_ranks(b))


def kendall_tau_b(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties in a) (n0 - ties in b)), n0 = n(n-1)/2
    pairs; a pair tied in a or in b is neither concordant nor discordant."""
    _check(a, b)
    concordant = discordant = tied_a = tied_b = 0
    n = len(a)
    for i in range(n):
        for j in range(i + 1, n):
            sign_a = (a[i] > a[j]) - (a[i] < a[j])
            sign_b = (b[i] > b[j]) - (b[i] < b[j])
            tied_a += sign_a == 0
            tied_b += sign_b == 0
            if sign_a * sign_b > 0:
                concordant += 1
            elif sign_a * sign_b < 0:
                discordant += 1
    pairs = n * (n - 1) // 2
    denominator = math.sqrt((pairs - tied_a) * (pairs - tied_b))
    return None if denominator == 0 else (concordant - discordant) / denominator


def best(names: Sequence[str], values: Sequence[float]) -> list[str]:
    """Every name at the highest value, in the given order (several on a tie)."""
    _check(names, values)
    top = max(values)
    return [name for name, value in zip(names, values) if value == top]
