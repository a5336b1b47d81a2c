"""Non-inferiority of a candidate run against a baseline run on paired per-session differences.

d = baseline - candidate per matched session, oriented so that a positive d means the candidate is worse.
Sessions of one persona share that persona's heterogeneity (a persona x model interaction), so the unit of
replication is the persona: the differences are averaged within persona and the G persona means are
tested with a one-sample t on G - 1 df. (Treating sessions as independent passed a candidate whose true
drop equals the margin 9-12% of the time at alpha 0.05 when drops vary by persona; see docs/statistics.md.)

    pass        the one-sided (1 - alpha) upper bound of the mean drop is below the margin
                (a t-test of H0: drop >= margin at level alpha)
    regression  not a pass, and the one-sided (1 - alpha) lower bound is above 0: the candidate is shown
                worse than the baseline at level alpha (an equal candidate gets here with probability
                <= alpha), while non-inferiority could not be shown
    undecided   otherwise; the personas (and sessions) an equal candidate needs to pass with `power`
                are reported

Sample sizes: `sessions_needed` (an equal candidate passes with probability `power`, statsmodels'
one-sided t power) and `units_to_detect` (a true drop of a given size exits 'regression' with probability
`power`: the exact probability of the joint event under the normal model, integrated over the sample SD).
With persona labels the SD that enters both is the SD of persona-mean differences at the replicates the
gate will see, and the unit is a persona.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import integrate, stats
from statsmodels.stats.power import TTestPower

from evalkit.statistics.results import NoninferiorityDecision, PlanResult


def persona_of(session_key: str) -> str:
    """The persona of a matched-session key "persona#replicate"."""
    return session_key.rsplit("#", 1)[0]


def cluster_means(d: np.ndarray, personas: Sequence | None) -> tuple[np.ndarray, float]:
    """Per-persona mean differences (each session its own cluster without labels) and mean sessions per persona."""
    d = np.asarray(d, float)
    if personas is None:
        return d, 1.0
    if len(personas) != len(d):
        raise ValueError(f"{len(personas)} persona labels for {len(d)} differences")
    means = pd.Series(d).groupby(np.asarray(personas), sort=True).mean().to_numpy()
    return means, (len(d) / len(means) if len(means) else 0.0)


def upper_bound(d: np.ndarray, alpha: float) -> float:
    """One-sided (1 - alpha) upper t bound of mean(d) (d: one value per independent unit)."""
    n = len(d)
    if n < 2:
        return math.inf
    return float(d.mean() + stats.t.ppf(1 - alpha, n - 1) * d.std(ddof=1) / math.sqrt(n))


def pass_probability(n: int, sd: float, margin: float, alpha: float, drop: float = 0.0) -> float:
    """P(upper bound < margin) with n units, true mean drop `drop`: statsmodels' one-sided t power."""
    if n < 2:
        return 0.0
    if not math.isfinite(sd) or sd <= 0:
        return 1.0 if drop < margin else 0.0
    return float(TTestPower().power(effect_size=(margin - drop) / sd, nobs=n, alpha=alpha, alternative="larger"))


def regression_probability(n: int, sd: float, margin: float, alpha: float, drop: float) -> float:
    """P(verdict 'regression') with n units whose differences are N(drop, sd^2).

    Regression <=> mean > max(c s, margin - c s) with c = t(1-alpha, n-1)/sqrt(n): the lower bound above 0
    and the upper bound not below the margin. The mean is N(drop, sd^2/n) independent of s^2 ~ sd^2
    chi2(n-1)/(n-1); the probability is integrated over chi2(n-1) with scipy."""
    if n < 2:
        return 0.0
    if not math.isfinite(sd) or sd <= 0:
        return 1.0 if drop >= margin and drop > 0 else 0.0
    df = n - 1
    c = stats.t.ppf(1 - alpha, df) / math.sqrt(n)
    root_n = math.sqrt(n)

    def conditional(v: float) -> float:
        s = sd * math.sqrt(v / df)
        return stats.norm.sf((max(c * s, margin - c * s) - drop) * root_n / sd) * stats.chi2.pdf(v, df)

    low, high = stats.chi2.ppf(1e-12, df), stats.chi2.isf(1e-12, df)
    switch = df * (margin / (2 * c * sd)) ** 2  # where c s = margin - c s
    points = [p for p in (switch, df) if low < p < high]
    value, _ = integrate.quad(conditional, low, high, points=points or None, limit=200, epsabs=1e-10, epsrel=1e-8)
    return float(min(max(value, 0.0), 1.0))


def _smallest(enough, most: int) -> int | None:
    """The smallest n >= 2 with enough(n), by doubling then bisection (enough assumed monotone); None if > most."""
    if enough(2):
        return 2
    low, high = 2, 4
    while not enough(high):
        if high >= most:
            return None
        low, high = high, min(high * 2, most)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def sessions_needed(sd: float, margin: float, alpha: float, power: float, most: int = 10**7) -> int:
    """The fewest units for an equal candidate (true drop 0) to pass with probability `power`: statsmodels'
    one-sided t power at effect margin/sd, searched over whole numbers (its root finder fails to converge when
    the SD is tiny, e.g. for replayed, near-identical sessions). A unit is a session, or a persona when `sd` is
    the SD of persona-mean differences."""
    if not math.isfinite(sd) or sd <= 0:
        return 2
    found = _smallest(lambda n: pass_probability(n, sd, margin, alpha) >= power, most)
    return most if found is None else found


def units_to_detect(sd: float, margin: float, alpha: float, power: float, drop: float, most: int = 10**6) -> int | None:
    """The fewest units for a true drop of `drop` to exit 'regression' with probability `power`; None when
    no n reaches it (e.g. drop <= margin with power >= 1 - alpha: the probability tends to 1 - alpha at
    drop = margin and to 0 below it)."""
    if not math.isfinite(sd) or sd <= 0:
        return 2 if drop >= margin and drop > 0 else None
    if drop < margin or (drop == margin and power >= 1 - alpha):
        # Not monotone below the margin (passing takes over as n grows): scan for the first n that reaches it.
        n, previous = 2, 1
        while n <= min(most, 20000):
            if regression_probability(n, sd, margin, alpha, drop) >= power:
                while n - 1 > previous and regression_probability(n - 1, sd, margin, alpha, drop) >= power:
                    n -= 1
                return n
            previous, n = n, n + max(1, n // 10)
        return None
    return _smallest(lambda n: regression_probability(n, sd, margin, alpha, drop) >= power, most)


def decide(d: np.ndarray, margin: float, alpha: float, power: float, personas: Sequence | None = None) -> NoninferiorityDecision:
    """'pass', 'regression' or 'undecided' for one metric, with the numbers behind it.

    `d`: paired differences baseline - candidate (positive = candidate worse), one per matched session.
    `personas`: the persona of each difference (e.g. `persona_of(session_key)`); without it every session
    is its own cluster (the analysis is then only valid if sessions are independent)."""
    d = np.asarray(d, float)
    means, replicates = cluster_means(d, personas)
    n, g = len(d), len(means)
    sd = float(means.std(ddof=1)) if g > 1 else float("nan")
    se = sd / math.sqrt(g) if g > 1 else float("nan")
    mean = float(means.mean()) if g else None
    if g > 1:
        q = stats.t.ppf(1 - alpha, g - 1)
        upper, lower = mean + q * se, mean - q * se
    else:
        upper, lower = math.inf, -math.inf
    needed = sessions_needed(sd, margin, alpha, power) if g > 1 else 2
    per = max(1, round(replicates))
    unit = "personas" if personas is not None else "sessions"
    if g >= 2 and upper < margin:
        verdict, why = "pass", f"upper bound {upper:.3f} < margin {margin:g}"
    elif g >= 2 and lower > 0:
        verdict, why = "regression", (f"upper bound {upper:.3f} >= margin {margin:g} and the drop is above 0 "
                                      f"(mean drop {mean:.3f}, lower bound {lower:.3f})")
    elif g < needed:
        verdict = "undecided"
        why = (f"bound {upper:.3f} is not below margin {margin:g} and {g} {unit} are too few: {needed} {unit}"
               + (f" ({needed * per} sessions at {per} per persona)" if personas is not None else "") + " needed")
    else:
        verdict = "undecided"
        why = (f"bound {upper:.3f} is not below margin {margin:g}, yet the drop ({mean:.3f}, lower bound {lower:.3f}) "
               f"is not shown above 0; more {unit} would decide it")
    if personas is not None:
        method = (f"paired differences averaged within persona; one-sample t on {g} persona means ({g - 1} df); "
                  f"pass: one-sided {1 - alpha:.0%} upper bound < margin; regression: not a pass and lower bound > 0")
    else:
        method = (f"paired t on {n} session differences ({n - 1} df), sessions treated as independent (no persona "
                  f"labels); pass: one-sided {1 - alpha:.0%} upper bound < margin; regression: not a pass and lower bound > 0")
    return NoninferiorityDecision(
        verdict=verdict, reason=why, method=method, n=n, personas=g, replicates=replicates, mean_drop=mean, sd=sd,
        se=se, df=max(g - 1, 0), upper_bound=upper, lower_bound=lower, margin=margin, alpha=alpha, power=power,
        personas_needed=needed, sessions_needed=needed * per)


def plan(sd: float, margin: float, alpha: float = 0.05, power: float = 0.8, drop: float | None = None,
         replicates: int = 1, unit: str = "sessions") -> PlanResult:
    """Both sample sizes for a gate on one metric.

    `sd`: SD of the paired differences of one unit: of session differences (unit="sessions"), or of
    persona-mean differences at `replicates` sessions per persona (unit="personas"; what the gate tests).
    `drop`: the true drop the 'detect' figure is for (default: one margin)."""
    drop = margin if drop is None else drop
    n_pass = sessions_needed(sd, margin, alpha, power)
    n_detect = units_to_detect(sd, margin, alpha, power, drop)
    note = None
    if n_detect is None:
        note = (f"no number of {unit} gives 'regression' with probability {power:g} at a true drop of {drop:g}: "
                + ("at a drop equal to the margin it tends to 1 - alpha" if drop == margin else
                   "below the margin the gate tends to pass as data grow"))
    per = replicates if unit == "personas" else 1
    method = (f"one-sided t at alpha {alpha:g} on {unit}"
              + (f" (persona means of {replicates} sessions)" if unit == "personas" else "")
              + "; pass: statsmodels TTestPower at effect margin/sd; detect: exact P(regression) under normal "
                "differences, integrated over the sample SD")
    return PlanResult(
        method=method, unit=unit, sd=sd, replicates=per, margin=margin, drop=drop, alpha=alpha, power=power,
        n_pass=n_pass, n_detect=n_detect, sessions_pass=n_pass * per,
        sessions_detect=None if n_detect is None else n_detect * per,
        power_pass_at_n_pass=pass_probability(n_pass, sd, margin, alpha),
        power_detect_at_n_detect=None if n_detect is None else regression_probability(n_detect, sd, margin, alpha, drop),
        note=note)


def plan_from_differences(d: np.ndarray, margin: float, alpha: float = 0.05, power: float = 0.8, drop: float | None = None,
                          personas: Sequence | None = None) -> PlanResult:
    """`plan` with the SD taken from two runs' matched differences: of persona means when `personas` is given
    (the gate's unit), else of sessions."""
    means, replicates = cluster_means(np.asarray(d, float), personas)
    if len(means) < 2:
        raise ValueError("plan needs differences from at least two personas (or sessions)")
    sd = float(means.std(ddof=1))
    if personas is None:
        return plan(sd, margin, alpha, power, drop)
    return plan(sd, margin, alpha, power, drop, replicates=max(1, round(replicates)), unit="personas")
