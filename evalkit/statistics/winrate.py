"""Win rates against a baseline, and Bradley-Terry strengths for several models.

Head-to-head: per matched session, the candidate wins when its score is better than the baseline's
(direction per metric), loses when worse, ties when equal. Exact two-sided sign test with ties
dropped (scipy binomtest), Wilson 95% interval on the win rate (statsmodels).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.proportion import proportion_confint


def win_summary(wins: int, losses: int, ties: int, level: float = 0.95) -> dict:
    decided = wins + losses
    out = {"wins": wins, "losses": losses, "ties": ties, "n": decided + ties}
    if decided:
        low, high = proportion_confint(wins, decided, alpha=1 - level, method="wilson")
        out.update(win_rate=wins / decided, ci_low=float(low), ci_high=float(high),
                   sign_test_p=float(stats.binomtest(wins, decided, 0.5).pvalue))
    else:
        out.update(win_rate=None, ci_low=None, ci_high=None, sign_test_p=None)
    total = decided + ties
    out["win_rate_ties_half"] = (wins + 0.5 * ties) / total if total else None
    return out


def head_to_head(candidate: pd.Series, baseline: pd.Series, better: str, tie_margin: float = 0.0) -> dict:
    """`candidate`, `baseline`: scores indexed by matched session key."""
    both = pd.concat([candidate.rename("c"), baseline.rename("b")], axis=1).dropna()
    diff = (both["c"] - both["b"]) * (1 if better == "higher" else -1)
    wins, losses = int((diff > tie_margin).sum()), int((diff < -tie_margin).sum())
    return {**win_summary(wins, losses, len(diff) - wins - losses), "matched": len(both)}


def length_controlled_win_rate(outcomes: np.ndarray, length_diff: np.ndarray) -> dict | None:
    """P(win) at zero length difference from a logistic model of win ~ length difference (ties excluded).

    Length in characters, scaled to thousands so the slope is readable.
    """
    if len(outcomes) < 3 or len(set(outcomes.tolist())) < 2:
        return None
    x = sm.add_constant(np.asarray(length_diff, float) / 1000.0)
    try:
        fit = sm.Logit(np.asarray(outcomes, float), x).fit(disp=0)
    except (np.linalg.LinAlgError, sm.tools.sm_exceptions.PerfectSeparationError):
        return None
    intercept, slope = fit.params
    return {"win_rate_at_equal_length": float(1 / (1 + np.exp(-intercept))), "intercept": float(intercept),
            "slope_per_1000_chars": float(slope), "n": int(len(outcomes))}


def bradley_terry(outcomes: pd.DataFrame, models: list[str]) -> dict[str, float]:
    """Strengths (log-odds scale, first model fixed at 0) by maximum likelihood.

    `outcomes`: rows with columns winner, loser. Fitted as a logistic regression without intercept on
    +1/-1 indicators (statsmodels GLM, binomial).
    """
    index = {m: i for i, m in enumerate(models)}
    x = np.zeros((len(outcomes), len(models)))
    for row, (w, loser) in enumerate(zip(outcomes["winner"], outcomes["loser"], strict=True)):
        x[row, index[w]], x[row, index[loser]] = 1.0, -1.0
    fit = sm.GLM(np.ones(len(outcomes)), x[:, 1:], family=sm.families.Binomial()).fit()
    return {models[0]: 0.0, **{m: float(b) for m, b in zip(models[1:], fit.params, strict=True)}}


def bradley_terry_bootstrap(outcomes: pd.DataFrame, models: list[str], *, groups: str = "session",
                            rounds: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, dict[str, float]]:
    """Bradley-Terry strengths with percentile CIs from resampling sessions (all their comparisons together)."""
    point = bradley_terry(outcomes, models)
    rng = np.random.default_rng(seed)
    sessions = outcomes[groups].unique()
    by_session = {s: outcomes[outcomes[groups] == s] for s in sessions}
    draws = []
    for _ in range(rounds):
        sample = pd.concat([by_session[s] for s in rng.choice(sessions, size=len(sessions), replace=True)])
        try:
            draws.append(bradley_terry(sample, models))
        except (np.linalg.LinAlgError, ValueError, sm.tools.sm_exceptions.PerfectSeparationError):
            continue
    tail = (1 - level) / 2 * 100
    out = {}
    for m in models:
        values = np.array([d[m] for d in draws if np.isfinite(d[m])])
        low, high = np.percentile(values, [tail, 100 - tail]) if len(values) else (np.nan, np.nan)
        out[m] = {"strength": point[m], "ci_low": float(low), "ci_high": float(high)}
    out["_bootstrap"] = {"rounds": rounds, "usable": len(draws), "seed": seed}  # type: ignore[assignment]
    separated = sorted(m for m in models if (outcomes["winner"] == m).all() or (outcomes["loser"] == m).all()
                       or m not in set(outcomes["winner"]) or m not in set(outcomes["loser"]))
    if separated:  # the likelihood has no finite maximum for these models: their strengths are not estimates
        out["_warning"] = {"separated": separated,  # type: ignore[assignment]
                           "note": "won or lost every comparison; strengths and CIs for these models are unbounded"}
    return out


def pairwise_outcomes(table: pd.DataFrame, conditions: list[str], better: str, tie_margin: float = 0.0) -> pd.DataFrame:
    """Every matched session x pair of conditions as a winner/loser row (ties dropped)."""
    wide = table.pivot_table(index="session", columns="condition", values="value", aggfunc="first")
    rows = []
    sign = 1 if better == "higher" else -1
    for a, b in itertools.combinations(conditions, 2):
        if a not in wide or b not in wide:
            continue
        pair = wide[[a, b]].dropna()
        for session, (va, vb) in pair.iterrows():
            d = (va - vb) * sign
            if d > tie_margin:
                rows.append({"session": session, "winner": a, "loser": b})
            elif d < -tie_margin:
                rows.append({"session": session, "winner": b, "loser": a})
    return pd.DataFrame(rows, columns=["session", "winner", "loser"])
