"""Nonparametric checks and effect sizes (scipy).

Each test returns a result object; when it cannot be computed the object says why in `absent_reason`
(and is falsy) instead of silently returning nothing.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

from evalkit.statistics.results import EffectSize, FriedmanResult, KruskalWallisResult, RatingChi2Result

FRIEDMAN = "Friedman chi-square over matched sessions scored in every condition (scipy friedmanchisquare; blocks = sessions)"
KRUSKAL = "Kruskal-Wallis H over all valid sessions, conditions as independent groups (scipy kruskal, tie-corrected)"
RATING = "Pearson chi-square of independence on condition x modal-rating counts (scipy chi2_contingency, no continuity correction)"


def _empty(data: pd.DataFrame, conditions: list[str]) -> list[str]:
    valid = data.dropna(subset=["value"])
    return [c for c in conditions if not (valid["condition"] == c).any()]


def friedman(data: pd.DataFrame, conditions: list[str]) -> FriedmanResult:
    """Friedman chi-square over sessions scored in every condition (blocks = matched sessions)."""
    df = len(conditions) - 1
    if len(conditions) < 3:
        return FriedmanResult(method=FRIEDMAN, df=df, absent_reason="Friedman needs three or more conditions "
                              "(with two, the sign test in head_to_head is the matched-pairs check)")
    empty = _empty(data, conditions)
    if empty:
        return FriedmanResult(method=FRIEDMAN, df=df, absent_reason=f"no valid scores for {', '.join(empty)}")
    wide = data.dropna(subset=["value"]).pivot_table(index="session", columns="condition", values="value", aggfunc="first")
    wide = wide.reindex(columns=conditions).dropna()
    if len(wide) < 2:
        return FriedmanResult(method=FRIEDMAN, df=df, blocks=len(wide),
                              absent_reason=f"{len(wide)} session(s) scored validly in every condition; 2 or more needed")
    statistic, p = stats.friedmanchisquare(*(wide[c].to_numpy() for c in conditions))
    if not np.isfinite(statistic):
        return FriedmanResult(method=FRIEDMAN, df=df, blocks=len(wide),
                              absent_reason="every session ties all conditions: the statistic is undefined")
    return FriedmanResult(method=FRIEDMAN, chi2=float(statistic), df=df, p_value=float(p), blocks=len(wide))


def kruskal_wallis(data: pd.DataFrame, conditions: list[str]) -> KruskalWallisResult:
    df = len(conditions) - 1
    empty = _empty(data, conditions)
    if empty:
        return KruskalWallisResult(method=KRUSKAL, df=df, absent_reason=f"no valid scores for {', '.join(empty)}")
    groups = [data.loc[data["condition"] == c, "value"].dropna().to_numpy() for c in conditions]
    n = int(sum(map(len, groups)))
    if np.ptp(np.concatenate(groups)) == 0:
        return KruskalWallisResult(method=KRUSKAL, df=df, n=n, absent_reason="every score is identical: H is undefined")
    statistic, p = stats.kruskal(*groups)
    return KruskalWallisResult(method=KRUSKAL, h=float(statistic), df=df, p_value=float(p), n=n)


def rating_counts_chi2(ratings: pd.DataFrame, conditions: list[str]) -> RatingChi2Result:
    """Chi-square of independence on condition x rating-level counts (the judge's modal rating per session)."""
    table = pd.crosstab(ratings["condition"], ratings["rating"]).reindex(index=conditions, fill_value=0)
    table = table.loc[:, table.sum() > 0]
    empty = [c for c, total in table.sum(axis=1).items() if total == 0]
    if empty:
        return RatingChi2Result(method=RATING, absent_reason=f"no valid ratings for {', '.join(map(str, empty))}")
    if table.shape[1] < 2:
        return RatingChi2Result(method=RATING, levels=[int(c) for c in table.columns], counts=table.to_numpy().tolist(),
                                absent_reason="every rating is at one level: nothing to compare")
    statistic, p, dof, expected = stats.chi2_contingency(table.to_numpy(), correction=False)
    return RatingChi2Result(method=RATING, chi2=float(statistic), df=int(dof), p_value=float(p),
                            levels=[int(c) for c in table.columns], counts=table.to_numpy().tolist(),
                            min_expected=float(expected.min()))


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Standardised mean difference with the pooled SD (independent groups)."""
    na, nb = len(a), len(b)
    pooled = np.sqrt(((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2))
    return float((np.mean(a) - np.mean(b)) / pooled) if pooled > 0 else float("nan")


def rank_biserial(a: np.ndarray, b: np.ndarray) -> float:
    """Rank-biserial correlation from Mann-Whitney U: P(a > b) - P(a < b)."""
    u = stats.mannwhitneyu(a, b, alternative="two-sided").statistic
    return float(2 * u / (len(a) * len(b)) - 1)


def effect_sizes(data: pd.DataFrame, conditions: list[str]) -> list[EffectSize]:
    """Cohen's d and rank-biserial for every pair of conditions with two or more valid scores each."""
    method = "Cohen's d (pooled SD) and rank-biserial (Mann-Whitney U), sessions as independent observations"
    out = []
    for a, b in itertools.combinations(conditions, 2):
        x = data.loc[data["condition"] == a, "value"].dropna().to_numpy()
        y = data.loc[data["condition"] == b, "value"].dropna().to_numpy()
        if len(x) < 2 or len(y) < 2:
            continue
        out.append(EffectSize(a=a, b=b, n_a=len(x), n_b=len(y), cohens_d=cohens_d(x, y), rank_biserial=rank_biserial(x, y),
                              method=method))
    return out
