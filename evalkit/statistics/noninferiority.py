"""Non-inferiority on paired per-session differences, and the sessions a margin needs.

d_i = baseline_i - candidate_i, oriented so that a positive d means the candidate is worse. The
candidate is non-inferior when the one-sided upper (1 - alpha) confidence bound of mean(d) lies below
the margin (a paired t-test of H0: mean(d) >= margin). Sample sizes come from statsmodels' power
analysis for a one-sided paired t-test that must detect a true worsening of one margin.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from statsmodels.stats.power import TTestPower


def upper_bound(d: np.ndarray, alpha: float) -> float:
    n = len(d)
    if n < 2:
        return math.inf
    return float(d.mean() + stats.t.ppf(1 - alpha, n - 1) * d.std(ddof=1) / math.sqrt(n))


def sessions_needed(sd: float, margin: float, alpha: float, power: float, most: int = 10**7) -> int:
    """The fewest sessions for a one-sided paired t-test at `alpha` to detect a mean difference of `margin`
    with `power`: statsmodels' power function, searched over whole numbers (its root finder fails to
    converge when the SD is tiny, e.g. for replayed, near-identical sessions)."""
    if not math.isfinite(sd) or sd <= 0:
        return 2
    analysis, effect = TTestPower(), margin / sd

    def enough(n: int) -> bool:
        return analysis.power(effect_size=effect, nobs=n, alpha=alpha, alternative="larger") >= power

    if enough(2):
        return 2
    low, high = 2, 4
    while not enough(high):
        if high >= most:
            return most
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def decide(d: np.ndarray, margin: float, alpha: float, power: float) -> dict:
    """'pass', 'regression' or 'undecided' for one metric, with the numbers behind it."""
    n = len(d)
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    bound = upper_bound(d, alpha)
    needed = sessions_needed(sd, margin, alpha, power) if n > 1 else 2
    if n >= 2 and bound < margin:
        verdict, why = "pass", f"upper bound {bound:.3f} < margin {margin:g}"
    elif n >= needed:
        verdict, why = "regression", f"upper bound {bound:.3f} >= margin {margin:g} (mean drop {d.mean():.3f})"
    else:
        verdict, why = "undecided", f"bound {bound:.3f} is not below margin {margin:g} and {n} sessions are too few: {needed} needed"
    return {"verdict": verdict, "reason": why, "n": n, "mean_drop": float(d.mean()) if n else None, "sd": sd,
            "upper_bound": bound, "margin": margin, "alpha": alpha, "power": power, "sessions_needed": needed}
