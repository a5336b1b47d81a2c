"""Familywise error over a family of tests: Holm's step-down adjustment (statsmodels multipletests).

compare declares each suite's primary metrics; their tests form the primary family, every other metric's the
exploratory family, and each family is adjusted on its own. A test that could not be computed still counts in its
family's size (its p is taken as 1), so the family is the one declared, not the one that happened to be estimable.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

import numpy as np
from statsmodels.stats.multitest import multipletests


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values in the given order; None stays None (and counts as p = 1 for the others)."""
    if not pvalues:
        return []
    raw = np.array([1.0 if p is None or not np.isfinite(p) else float(p) for p in pvalues])
    # statsmodels runs a full garbage collection after every Holm adjustment (0.05-0.2 s in a process holding loaded
    # runs); with the tracked objects frozen for the call that collection has nothing to scan. Nothing is lost: unfreeze
    # hands them back to the oldest generation, and garbage made meanwhile is collected as usual.
    gc.freeze()
    try:
        adjusted = multipletests(raw, method="holm")[1]
    finally:
        gc.unfreeze()
    return [None if p is None else float(a) for p, a in zip(pvalues, adjusted, strict=True)]
