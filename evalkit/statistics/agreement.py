"""Agreement between raters (a judge and humans, or humans among themselves), from well-kept libraries:
ICC from pingouin (two-way, absolute agreement: ICC(A,1) and ICC(A,k)), quadratic-weighted kappa from
scikit-learn, Spearman from scipy, Krippendorff's alpha from `krippendorff`; bootstrap CIs resample the
rated units (materials)."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable

import krippendorff
import numpy as np
import pandas as pd
import pingouin as pg
from scipy import stats
from sklearn.metrics import cohen_kappa_score


def icc_absolute(matrix: np.ndarray) -> tuple[float, float]:
    """(ICC(A,1), ICC(A,k)) for a units x raters matrix with no missing values."""
    units, raters = matrix.shape
    long = pd.DataFrame({"unit": np.repeat(np.arange(units), raters), "rater": np.tile(np.arange(raters), units),
                         "score": matrix.ravel()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = pg.intraclass_corr(long, targets="unit", raters="rater", ratings="score").set_index("Type")["ICC"]
    return float(table["ICC(A,1)"]), float(table["ICC(A,k)"])


def qwk(a: np.ndarray, b: np.ndarray, levels: list[int]) -> float:
    return float(cohen_kappa_score(np.rint(a).astype(int), np.rint(b).astype(int), labels=levels, weights="quadratic"))


def kripp_alpha(matrix: np.ndarray, level: str, levels: list[int] | None = None) -> float:
    """`matrix`: raters x units, NaN where a rater did not rate a unit."""
    domain = levels if level == "ordinal" else None
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level, value_domain=domain))


def judge_human(judge: np.ndarray, human_mean: np.ndarray, levels: list[int] | None) -> dict[str, float | None]:
    """The judge against the human consensus (mean of raters) on the same units."""
    single, average = icc_absolute(np.column_stack([judge, human_mean]))
    out: dict[str, float | None] = {
        "icc_a1": single, "icc_ak": average,
        "spearman": float(stats.spearmanr(judge, human_mean).statistic),
        "mae": float(np.mean(np.abs(judge - human_mean))),
    }
    if levels:  # categorical statistics on the nearest scale level
        j, h = np.rint(judge), np.rint(human_mean)
        out.update(qwk=qwk(judge, human_mean, levels), exact=float(np.mean(j == h)), adjacent=float(np.mean(np.abs(j - h) <= 1)),
                   krippendorff_alpha=kripp_alpha(np.vstack([j, h]), "ordinal", levels))
    else:
        out.update(qwk=None, exact=None, adjacent=None,
                   krippendorff_alpha=kripp_alpha(np.vstack([judge, human_mean]), "interval"))
    return out


def human_human(ratings: np.ndarray, levels: list[int] | None) -> dict[str, float | None] | None:
    """Agreement among human raters; `ratings`: units x raters with NaN for missing. None with fewer than two raters."""
    if ratings.shape[1] < 2:
        return None
    complete = ratings[~np.isnan(ratings).any(axis=1)]
    single, average = icc_absolute(complete) if len(complete) >= 3 else (None, None)
    pairs = [(ratings[:, a], ratings[:, b]) for a, b in itertools.combinations(range(ratings.shape[1]), 2)]
    pairs = [(x[m], y[m]) for x, y in pairs for m in [~np.isnan(x) & ~np.isnan(y)] if m.sum() >= 2]
    out: dict[str, float | None] = {
        "icc_a1": single, "icc_ak": average,
        "spearman": float(np.mean([stats.spearmanr(x, y).statistic for x, y in pairs])) if pairs else None,
        "mae": float(np.mean([np.mean(np.abs(x - y)) for x, y in pairs])) if pairs else None,
        "krippendorff_alpha": kripp_alpha(ratings.T, "ordinal" if levels else "interval", levels),
    }
    if levels and pairs:
        out.update(qwk=float(np.mean([qwk(x, y, levels) for x, y in pairs])),
                   exact=float(np.mean([np.mean(np.rint(x) == np.rint(y)) for x, y in pairs])),
                   adjacent=float(np.mean([np.mean(np.abs(np.rint(x) - np.rint(y)) <= 1) for x, y in pairs])))
    else:
        out.update(qwk=None, exact=None, adjacent=None)
    return out


def bootstrap_ci(compute: Callable[[np.ndarray], dict[str, float | None]], units: int, rounds: int, seed: int,
                 level: float = 0.95) -> dict[str, tuple[float, float] | None]:
    """Percentile CIs for every statistic `compute(indices)` returns, resampling units with replacement."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(rounds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                result = compute(rng.integers(0, units, units))
            except (ValueError, ZeroDivisionError, np.linalg.LinAlgError, AssertionError):
                continue
        for key, value in result.items():
            if value is not None and np.isfinite(value):
                draws.setdefault(key, []).append(value)
    tail = (1 - level) / 2 * 100
    return {key: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) if len(v) >= 10 else None
            for key, v in draws.items()}
