"""Notes for the report where a statistic is degenerate or at its resolution limit, so a reader
does not take a floor p-value or a zero-width interval for evidence."""

from __future__ import annotations

import numpy as np
import pandas as pd


def wilcoxon_floor_note(n_repeats: int) -> str | None:
    """The exact two-sided Wilcoxon signed-rank p over ``n`` pairs cannot go below 2 / 2^n."""
    if n_repeats < 1 or n_repeats >= 6:
        return None
    floor = 2.0 / 2**n_repeats
    return (f"The Wilcoxon p over repeats rests on {n_repeats} repeat(s): its smallest "
            f"attainable two-sided value is {min(floor, 1.0):.3g}, so a p of {min(floor, 1.0):.3g}"
            " or above says nothing about a difference; use more repeats for this test.")


def permutation_floor_note(methods: pd.DataFrame, n_permutations: int) -> str | None:
    """Methods whose permutation p sits at its floor 1 / (n + 1): the true p may be smaller."""
    floor = 1.0 / (n_permutations + 1)
    at_floor = methods.loc[np.isclose(methods["p_value"].astype(float), floor), "method"]
    if at_floor.empty:
        return None
    return (f"Permutation p at its floor 1/(n+1) = {floor:.3g} with {n_permutations} "
            f"permutations for {', '.join(map(str, at_floor))}: no permuted label set did as "
            "well, and the true p may be smaller; more permutations lower the floor.")


def degenerate_interval_note(table: pd.DataFrame, label: str, low: str, high: str,
                             what: str) -> str | None:
    """Rows whose interval has zero width (e.g. a DeLong CI of 1.00-1.00 at AUC 1): the
    variance estimate is 0 at perfect separation, which is not certainty."""
    width = table[high].astype(float) - table[low].astype(float)
    rows = table.loc[np.isclose(width, 0.0, atol=5e-4), label]
    if rows.empty:
        return None
    return (f"{what} of zero width for {', '.join(map(str, rows))}: at perfect separation (or "
            "a constant score) the variance estimate is 0, so the interval is degenerate and "
            "says nothing about the uncertainty at this sample size.")


__all__ = ["degenerate_interval_note", "permutation_floor_note", "wilcoxon_floor_note"]
