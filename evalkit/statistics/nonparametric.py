"""Nonparametric checks and effect sizes (scipy).

A persona is a cluster: its sessions share the persona and, within one model, how that model suits it. So the tests
that compare read a persona as one unit: Friedman's blocks are personas (each condition's sessions averaged within
persona), and the rating-count chi-square takes its p from permuting condition labels of whole persona x condition
cells within persona. Kruskal-Wallis treats conditions as independent groups of independent sessions; compare does
not use it (its runs share personas). Effect sizes are descriptive, over sessions, with no test attached.

Each test returns a result object; when it cannot be computed the object says why in `absent_reason`
(and is falsy) instead of silently returning nothing.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

from evalkit.statistics.results import EffectSize, FriedmanResult, KruskalWallisResult, RatingChi2Result

FRIEDMAN = ("Friedman chi-square with personas as blocks: each condition's valid sessions averaged within persona, personas "
            "scored in every condition (scipy friedmanchisquare, chi-square reference)")
KRUSKAL = "Kruskal-Wallis H over all valid sessions, conditions as independent groups (scipy kruskal, tie-corrected)"
RATING = ("Pearson chi-square on condition x modal-rating counts; p from {n} random permutations of condition labels of "
          "whole persona x condition cells within persona (scipy permutation_test, permutation_type='samples')")


def _empty(data: pd.DataFrame, conditions: list[str]) -> list[str]:
    scored = set(data.loc[data["value"].notna(), "condition"])
    return [c for c in conditions if c not in scored]


def friedman(data: pd.DataFrame, conditions: list[str]) -> FriedmanResult:
    """Friedman chi-square with personas as blocks: each condition's valid sessions averaged within persona (columns
    condition, persona, value). Replicates of a persona are one block, not several, so the test keeps its level when a
    persona's sessions agree within a model."""
    df = len(conditions) - 1
    if len(conditions) < 3:
        return FriedmanResult(method=FRIEDMAN, df=df, absent_reason="Friedman needs three or more conditions "
                              "(with two, the sign test in head_to_head is the matched-pairs check)")
    empty = _empty(data, conditions)
    if empty:
        return FriedmanResult(method=FRIEDMAN, df=df, absent_reason=f"no valid scores for {', '.join(empty)}")
    valid = data[data["value"].notna() & data["condition"].isin(conditions)]
    persona, names = pd.factorize(valid["persona"])
    condition = pd.Categorical(valid["condition"], categories=conditions).codes
    totals, counts = np.zeros((len(names), len(conditions))), np.zeros((len(names), len(conditions)))
    np.add.at(totals, (persona, condition), valid["value"].to_numpy(float))
    np.add.at(counts, (persona, condition), 1.0)
    wide = pd.DataFrame(totals[(counts > 0).all(axis=1)] / counts[(counts > 0).all(axis=1)], columns=conditions)
    if len(wide) < 2:
        return FriedmanResult(method=FRIEDMAN, df=df, blocks=len(wide),
                              absent_reason=f"{len(wide)} persona(s) scored validly in every condition; 2 or more needed")
    values = wide.to_numpy()
    if np.all(values == values[:, :1]):
        return FriedmanResult(method=FRIEDMAN, df=df, blocks=len(wide),
                              absent_reason="every persona ties all conditions: the statistic is undefined")
    statistic, p = stats.friedmanchisquare(*values.T)
    if not np.isfinite(statistic):
        return FriedmanResult(method=FRIEDMAN, df=df, blocks=len(wide),
                              absent_reason="every persona ties all conditions: the statistic is undefined")
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


def _pearson_chi2(table: np.ndarray) -> np.ndarray:
    """Pearson chi-square of independence of (..., conditions, levels) count tables; levels never used count nothing."""
    rows, cols = table.sum(axis=-1, keepdims=True), table.sum(axis=-2, keepdims=True)
    expected = rows * cols / table.sum(axis=(-2, -1), keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(expected > 0, (table - expected) ** 2 / expected, 0.0)
    return terms.sum(axis=(-2, -1))


def rating_counts_chi2(ratings: pd.DataFrame, conditions: list[str], permutations: int = 999, seed: int = 0) -> RatingChi2Result:
    """Chi-square of independence on condition x rating-level counts (the judge's modal rating per session; columns
    condition, persona, rating), with its p from permuting condition labels within persona.

    The chi-square reference would count sessions as independent; under "no difference between conditions" the
    conditions are exchangeable within a persona (whole cells, replicates together), so permuting them there gives a
    p-value that keeps its level however strongly a persona's sessions agree."""
    method = RATING.format(n=permutations)
    known = ratings[ratings["condition"].isin(conditions)]
    levels = sorted(int(v) for v in pd.unique(known["rating"]))
    condition = pd.Categorical(known["condition"], categories=conditions).codes
    level = np.searchsorted(levels, known["rating"].to_numpy(int))
    observed = np.zeros((len(conditions), len(levels)))
    np.add.at(observed, (condition, level), 1.0)
    empty = [c for c, total in zip(conditions, observed.sum(axis=1), strict=True) if total == 0]
    if empty:
        return RatingChi2Result(method=method, absent_reason=f"no valid ratings for {', '.join(map(str, empty))}")
    if len(levels) < 2:
        return RatingChi2Result(method=method, levels=levels, counts=observed.astype(int).tolist(),
                                absent_reason="every rating is at one level: nothing to compare")
    persona, names = pd.factorize(known["persona"]) if "persona" in known else (np.zeros(len(known), int), ["?"])
    cells = np.zeros((len(names), len(conditions), len(levels)))  # persona x condition x level counts
    np.add.at(cells, (persona, condition, level), 1.0)
    statistic = float(_pearson_chi2(observed))
    expected = observed.sum(1, keepdims=True) * observed.sum(0, keepdims=True) / observed.sum()
    # Only personas rated in every condition can be permuted; the others' counts stay where they are.
    complete = (cells.sum(axis=2) > 0).all(axis=1)
    fields = dict(method=method, chi2=statistic, df=(len(conditions) - 1) * (len(levels) - 1), levels=levels,
                  counts=observed.astype(int).tolist(), min_expected=float(expected.min()))
    if complete.sum() < 2:
        return RatingChi2Result(**fields, absent_reason=f"{int(complete.sum())} persona(s) rated in every condition; the "
                                "within-persona permutation needs 2 or more")
    samples = tuple(cells[complete, j, :].T for j in range(len(conditions)))  # per condition: levels x personas
    rest = observed - cells[complete].sum(axis=0)

    def chi2(*drawn, axis):
        return _pearson_chi2(np.stack([d.sum(axis=axis) for d in drawn], axis=-2) + rest)

    # 'samples' permutes the conditions' cells within each persona (the last axis).
    result = stats.permutation_test(samples, chi2, permutation_type="samples", vectorized=True, n_resamples=permutations,
                                    alternative="greater", axis=-1, random_state=np.random.default_rng(seed))
    return RatingChi2Result(**fields, p_value=float(result.pvalue), permutations=permutations)


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Standardised mean difference with the pooled SD (independent groups)."""
    na, nb = len(a), len(b)
    pooled = np.sqrt(((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2))
    return float((np.mean(a) - np.mean(b)) / pooled) if pooled > 0 else float("nan")


def rank_biserial(a: np.ndarray, b: np.ndarray) -> float:
    """Rank-biserial correlation from Mann-Whitney U: P(a > b) - P(a < b)."""
    u = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic").statistic  # U only; its p is not used
    return float(2 * u / (len(a) * len(b)) - 1)


def effect_sizes(data: pd.DataFrame, conditions: list[str]) -> list[EffectSize]:
    """Cohen's d and rank-biserial for every pair of conditions with two or more valid scores each."""
    method = ("Cohen's d (pooled SD) and rank-biserial (Mann-Whitney U) over sessions: descriptive effect sizes, no test "
              "(sessions of one persona are not independent)")
    valid = data[data["value"].notna()]
    values, labels = valid["value"].to_numpy(float), valid["condition"].to_numpy()
    groups = {c: values[labels == c] for c in conditions}
    out = []
    for a, b in itertools.combinations(conditions, 2):
        x, y = groups.get(a, np.empty(0)), groups.get(b, np.empty(0))
        if len(x) < 2 or len(y) < 2:
            continue
        out.append(EffectSize(a=a, b=b, n_a=len(x), n_b=len(y), cohens_d=cohens_d(x, y), rank_biserial=rank_biserial(x, y),
                              method=method))
    return out
