"""Nonparametric checks and effect sizes (scipy)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats


def friedman(data: pd.DataFrame, conditions: list[str]) -> dict | None:
    """Friedman chi-square over sessions scored in every condition (blocks = matched sessions)."""
    wide = data.pivot_table(index="session", columns="condition", values="value", aggfunc="first")
    wide = wide.reindex(columns=conditions).dropna()
    if len(wide) < 2 or len(conditions) < 3 and len(wide) < 2:
        return None
    if len(conditions) < 3:
        return None  # scipy's Friedman needs three or more conditions; the sign test covers two
    statistic, p = stats.friedmanchisquare(*(wide[c].to_numpy() for c in conditions))
    return {"chi2": float(statistic), "df": len(conditions) - 1, "p_value": float(p), "blocks": len(wide)}


def kruskal_wallis(data: pd.DataFrame, conditions: list[str]) -> dict | None:
    groups = [data.loc[data["condition"] == c, "value"].to_numpy() for c in conditions]
    if any(len(g) == 0 for g in groups) or np.ptp(np.concatenate(groups)) == 0:
        return None
    statistic, p = stats.kruskal(*groups)
    return {"h": float(statistic), "df": len(conditions) - 1, "p_value": float(p), "n": int(sum(map(len, groups)))}


def rating_counts_chi2(ratings: pd.DataFrame, conditions: list[str]) -> dict | None:
    """Chi-square of independence on condition x rating-level counts (the judge's modal rating per session)."""
    table = pd.crosstab(ratings["condition"], ratings["rating"]).reindex(index=conditions, fill_value=0)
    table = table.loc[:, table.sum() > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return None
    statistic, p, dof, expected = stats.chi2_contingency(table.to_numpy(), correction=False)
    return {"chi2": float(statistic), "df": int(dof), "p_value": float(p),
            "levels": [int(c) for c in table.columns], "counts": table.to_numpy().tolist(),
            "min_expected": float(expected.min())}


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Standardised mean difference with the pooled SD (independent groups)."""
    na, nb = len(a), len(b)
    pooled = np.sqrt(((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2))
    return float((np.mean(a) - np.mean(b)) / pooled) if pooled > 0 else float("nan")


def rank_biserial(a: np.ndarray, b: np.ndarray) -> float:
    """Rank-biserial correlation from Mann-Whitney U: P(a > b) - P(a < b)."""
    u = stats.mannwhitneyu(a, b, alternative="two-sided").statistic
    return float(2 * u / (len(a) * len(b)) - 1)


def effect_sizes(data: pd.DataFrame, conditions: list[str]) -> list[dict]:
    out = []
    for a, b in itertools.combinations(conditions, 2):
        x = data.loc[data["condition"] == a, "value"].to_numpy()
        y = data.loc[data["condition"] == b, "value"].to_numpy()
        if len(x) < 2 or len(y) < 2:
            continue
        out.append({"a": a, "b": b, "cohens_d": cohens_d(x, y), "rank_biserial": rank_biserial(x, y)})
    return out
