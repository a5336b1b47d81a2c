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

Sample sizes are in personas, each run with r replicates, because the gate tests persona means. The SD of a
persona-mean difference at r replicates is sqrt(var_between + var_within / r): var_between is the variance of
personas' true drops (twice the persona x model variance when the two runs are of different models) and
var_within that of one session's difference around its persona's (twice the residual variance).
`variance_components` estimates both by REML from two runs' matched differences (d ~ 1 + (1|persona));
`plan` turns them into `sessions_needed` (personas for an equal candidate to pass with probability `power`,
statsmodels' one-sided t power) and `units_to_detect` (personas for a true drop of a given size to exit
'regression' with probability `power`: the exact probability of the joint event under the normal model,
integrated over the sample SD). Two runs of the same model cancel the persona x model part of var_between,
so a plan from them is too small (analysis/plan.py refuses them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import integrate, special, stats
from statsmodels.stats.power import TTestPower

from evalkit.statistics.results import DesignOption, NoninferiorityDecision, PlanResult
from evalkit.statistics.winrate import persona_of

__all__ = ["cluster_means", "decide", "pass_probability", "persona_of", "plan", "plan_from_differences",
           "regression_probability", "sessions_needed", "units_to_detect", "variance_components"]


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
    log_norm = (df / 2) * math.log(2) + special.gammaln(df / 2)  # chi2(df) density, through scipy.special for speed

    def conditional(v: float) -> float:
        s = sd * math.sqrt(v / df)
        density = math.exp((df / 2 - 1) * math.log(v) - v / 2 - log_norm) if v > 0 else 0.0
        return special.ndtr(-(max(c * s, margin - c * s) - drop) * root_n / sd) * density

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
        verdict=verdict, reason=why, method=method, unit="persona" if personas is not None else "session", n=n, personas=g,
        replicates=replicates, mean_drop=mean, sd=sd,
        se=se, df=max(g - 1, 0), upper_bound=upper, lower_bound=lower, margin=margin, alpha=alpha, power=power,
        personas_needed=needed, sessions_needed=needed * per)


def variance_components(d: np.ndarray, personas: Sequence) -> tuple[float, float, bool, float]:
    """(var_between, var_within, within_known, mean replicates) of paired differences d by persona, by REML on
    d ~ 1 + (1|persona) (statsmodels MixedLM at the located REML optimum, statistics/reml.py).

    var_between: variance of personas' true mean drops; var_within: variance of one session's drop around its
    persona's. Without any persona holding two sessions the two cannot be told apart: the variance of the
    differences is then returned as var_between with var_within 0 and within_known False (conservative: more
    replicates are then assumed not to help)."""
    from statsmodels.regression.mixed_linear_model import MixedLM

    from evalkit.statistics.reml import reml_fit

    d = np.asarray(d, float)
    labels = np.asarray([str(p) for p in personas])
    if len(labels) != len(d):
        raise ValueError(f"{len(labels)} persona labels for {len(d)} differences")
    sizes = pd.Series(labels).value_counts()
    if len(sizes) < 2:
        raise ValueError("the variance components need differences from two or more personas")
    replicates = len(d) / len(sizes)
    if (sizes < 2).all():
        return float(np.var(d, ddof=1)), 0.0, False, replicates
    result = reml_fit(MixedLM(d, np.ones((len(d), 1)), groups=labels))[0]
    return float(np.asarray(result.cov_re)[0, 0]), float(result.scale), True, replicates


def plan(margin: float, *, var_between: float, var_within: float = 0.0, replicates: int = 1, alpha: float = 0.05,
         power: float = 0.8, drop: float | None = None, within_known: bool = True, source: str = "given",
         options: Sequence[int] = (1, 2, 3, 5)) -> PlanResult:
    """Personas a gate on one metric needs at `replicates` sessions per persona: for an equal candidate to pass with
    probability `power`, and for a true drop of `drop` (default one margin) to exit 'regression' with it.

    The SD is of persona-mean differences at those replicates, sqrt(var_between + var_within / replicates): what the
    gate tests. `options` lists the personas needed at other replicate counts (more replicates shrink only the
    within part: past a few, add personas)."""
    drop = margin if drop is None else drop
    if not (var_between >= 0 and var_within >= 0) or var_between + var_within <= 0:
        raise ValueError("the variance components must be non-negative and not both 0")

    def sd_at(r: int) -> float:
        return math.sqrt(var_between + var_within / r)

    sd = sd_at(replicates)
    n_pass = sessions_needed(sd, margin, alpha, power)
    n_detect = units_to_detect(sd, margin, alpha, power, drop)
    note = None
    if n_detect is None:
        note = (f"no number of personas gives 'regression' with probability {power:g} at a true drop of {drop:g}: "
                + ("at a drop equal to the margin it tends to 1 - alpha" if drop == margin else
                   "below the margin the gate tends to pass as data grow"))
    rows = []
    for r in sorted({*options, replicates}):
        personas_pass = sessions_needed(sd_at(r), margin, alpha, power)
        # Unreachable at one replicate count means unreachable at all (it is the drop and power, not the SD).
        personas_detect = (n_detect if r == replicates else
                           None if n_detect is None else units_to_detect(sd_at(r), margin, alpha, power, drop))
        rows.append(DesignOption(replicates=r, sd=sd_at(r), personas_pass=personas_pass, sessions_pass=personas_pass * r,
                                 personas_detect=personas_detect,
                                 sessions_detect=None if personas_detect is None else personas_detect * r))
    method = (f"one-sided t at alpha {alpha:g} over persona means of {replicates} session(s) each, sd = sqrt(var_between + "
              "var_within / replicates); pass: statsmodels TTestPower at effect margin/sd; detect: exact P(regression) "
              "under normal differences, integrated over the sample SD")
    return PlanResult(
        method=method, var_between=var_between, var_within=var_within, within_known=within_known, source=source, sd=sd,
        replicates=replicates, margin=margin, drop=drop, alpha=alpha, power=power, n_pass=n_pass, n_detect=n_detect,
        sessions_pass=n_pass * replicates, sessions_detect=None if n_detect is None else n_detect * replicates,
        power_pass_at_n_pass=pass_probability(n_pass, sd, margin, alpha),
        power_detect_at_n_detect=None if n_detect is None else regression_probability(n_detect, sd, margin, alpha, drop),
        options=rows, note=note)


def plan_from_differences(d: np.ndarray, margin: float, alpha: float = 0.05, power: float = 0.8, drop: float | None = None,
                          personas: Sequence | None = None, replicates: int | None = None) -> PlanResult:
    """`plan` with the variance components estimated from two runs' matched differences (`variance_components`); the
    plan is for `replicates` sessions per persona (default: as many as the runs have, rounded)."""
    d = np.asarray(d, float)
    if personas is None:
        raise ValueError("plan needs the persona of each difference: the gate's unit is the persona")
    var_between, var_within, known, seen = variance_components(d, personas)
    r = replicates if replicates is not None else max(1, round(seen))
    source = (f"REML on {len(d)} matched differences of {len(set(map(str, personas)))} personas (d ~ 1 + (1|persona))"
              if known else f"variance of {len(d)} matched differences, one per persona: the within-persona part cannot "
              "be separated and is counted as between-persona (conservative)")
    return plan(margin, var_between=var_between, var_within=var_within, replicates=r, alpha=alpha, power=power, drop=drop,
                within_known=known, source=source)
